"""Safe file storage under the data root, and the IO manager that uses it.

Every asset output is written into a fresh version ``<root>/assets/<asset>/<tenant>/<version>/``
with a ``manifest.json`` listing each file's SHA-256; only when every file is
stored does the ``CURRENT`` pointer move to it. A step that fails, or a write
that breaks half way, therefore never replaces the last good output.

The root is a local folder (the default, ``CREDITTWIN_DATA_DIR``) or, for
workers on several machines, an fsspec URL such as ``s3://bucket/prefix``
(``CREDITTWIN_DATA_URL``):

- on local disk (`VersionedStore`) the version is written into a hidden staging
  folder and renamed into place whole, then CURRENT is replaced by an atomic rename;
- on object storage (`ObjectVersionedStore`), which has no rename, the files go
  under a fresh version prefix, the manifest last (a version without one is
  incomplete and never read), then CURRENT is rewritten in one PUT, which S3
  makes visible whole or not at all (`resources.objectstore`, docs/storage.md).

Pruning keeps the newest versions and never the one CURRENT names. Paths are
built with `safe_join` (local) or `ObjectRoot.key` (URLs), which refuse anything
that leaves the root.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from models.files import atomic_write_text, dumps, sha256_file
from models.results import Parts, Result, as_result
from models.tape.tenant import validate_tenant_id
from resources.objectstore import LocalRoot, ObjectRoot, StorageError, configured_root, open_root, safe_join

MANIFEST = "manifest.json"
POINTER = "CURRENT"
KEEP_VERSIONS = 3
_VERSION_NAME = re.compile(r"^v[0-9]+-[A-Za-z0-9-]+$")
"""A version's name: ``v<nanoseconds>-<run>[-<random>]``; anything else under a store is not a version."""
STALE_WRITE_NS = 86_400 * 10**9
"""A version still without a manifest this long after it was started is a dead write, safe to delete."""


def _wanted(names: list[str], parts: Collection[str] | None) -> list[str]:
    """The stored `names` a read asked for: all of them, or those in `parts`."""
    return list(names) if parts is None else [name for name in names if name in parts]


def _manifest(artifact: Parts, files: dict[str, dict[str, Any]], *, kind: str, tenant: str, name: str, run_id: str,
              extra: dict | None) -> dict:
    """The manifest of version `name`: what it holds, each file's SHA-256 and size, and one hash over them all."""
    content = hashlib.sha256("".join(f"{rel}\0{files[rel]['sha256']}\n" for rel in sorted(files)).encode()).hexdigest()
    return {
        "kind": kind,
        "tenant": tenant,
        "version": name,
        "run_id": run_id,
        "written_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "tables": sorted(artifact.tables),
        "documents": sorted(artifact.documents),
        "files": files,
        "content_sha256": content,
        **(extra or {}),
    }


class VersionedStore:
    """Version directories with an atomic CURRENT pointer, for one (asset, tenant) on local disk."""

    def __init__(self, root: Path, asset_path: list[str], tenant: str) -> None:
        validate_tenant_id(tenant)
        self.tenant = tenant
        self.dir = safe_join(root, "assets", *asset_path, tenant)

    def current(self) -> Path | None:
        pointer = self.dir / POINTER
        if not pointer.exists():
            return None
        name = pointer.read_text(encoding="utf-8").strip()
        version = safe_join(self.dir, name)
        return version if (version / MANIFEST).exists() else None

    def current_version(self) -> str | None:
        """The name of the version CURRENT names, when it is complete."""
        version = self.current()
        return version.name if version is not None else None

    def write(self, artifact: Parts, *, run_id: str, kind: str, extra: dict | None = None) -> tuple[Path, dict]:
        """Write `artifact` into a new version and move CURRENT to it; return (path, manifest)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"v{time.time_ns()}-{(run_id or 'local')[:8]}"
        staging = Path(tempfile.mkdtemp(dir=self.dir, prefix=f".{name}."))
        try:
            files: dict[str, dict[str, Any]] = {}
            for table_name, frame in artifact.tables.items():
                rel = f"{table_name}.parquet"
                target = safe_join(staging, rel)
                frame.write_parquet(target, compression="zstd", statistics=True)
                files[rel] = {"rows": frame.height, "columns": frame.width}
            for doc_name, document in artifact.documents.items():
                rel = f"{doc_name}.json"
                safe_join(staging, rel).write_text(dumps(document), encoding="utf-8")
                files[rel] = {}
            for rel, payload in artifact.files.items():
                target = safe_join(staging, rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(payload)
                files[rel] = {}
            for rel, info in files.items():
                path = staging / rel
                info["sha256"] = sha256_file(path)
                info["bytes"] = path.stat().st_size
            manifest = _manifest(artifact, files, kind=kind, tenant=self.tenant, name=name, run_id=run_id, extra=extra)
            (staging / MANIFEST).write_text(dumps(manifest), encoding="utf-8")
            final = self.dir / name
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        atomic_write_text(self.dir / POINTER, name + "\n")
        self._prune(keep=name)
        return final, manifest

    def versions(self) -> list[str]:
        """The names of the complete versions (those with a manifest), oldest first."""
        if not self.dir.is_dir():
            return []
        return sorted(
            p.name for p in self.dir.iterdir()
            if _VERSION_NAME.match(p.name) and p.is_dir() and not p.is_symlink() and (p / MANIFEST).is_file()
        )

    def read(self, version: str | None = None, *, parts: Collection[str] | None = None) -> Parts:
        """The current version, or the complete version named `version` (`KeyError` when there is no such one).

        `parts` names the tables and documents to read (None: all of them), so a caller that needs one document
        does not read a version's tables.
        """
        import polars as pl

        if version is not None:
            if version not in self.versions():
                raise KeyError(f"no complete version {version!r} of tenant '{self.tenant}' under {self.dir}")
            version = self.dir / version
        else:
            version = self.current()
        if version is None:
            raise FileNotFoundError(
                f"no stored output for tenant '{self.tenant}' under {self.dir}; materialize the upstream asset first."
            )
        manifest = json.loads((version / MANIFEST).read_text(encoding="utf-8"))
        artifact = Parts(path=version, manifest=manifest)
        for name in _wanted(manifest.get("tables", []), parts):
            artifact.tables[name] = pl.read_parquet(safe_join(version, f"{name}.parquet"))
        for name in _wanted(manifest.get("documents", []), parts):
            artifact.documents[name] = json.loads(safe_join(version, f"{name}.json").read_text(encoding="utf-8"))
        return artifact

    def _prune(self, keep: str) -> None:
        # CURRENT is read again: another writer may have moved it since this one did
        spare = {keep, self.current_version()}
        versions = sorted(p for p in self.dir.iterdir() if p.is_dir() and p.name.startswith("v"))
        for stale in versions[:-KEEP_VERSIONS]:
            if stale.name not in spare:
                shutil.rmtree(stale, ignore_errors=True)
        for leftover in self.dir.glob(".v*"):
            # staging folders of writes that died; older than a day means nobody is writing them
            if leftover.is_dir() and time.time() - leftover.stat().st_mtime > 86_400:
                shutil.rmtree(leftover, ignore_errors=True)


class ObjectVersionedStore:
    """Versions with a CURRENT pointer for one (asset, tenant) on object storage, where there is no rename.

    A write puts every file under a fresh version prefix (its name carries the
    start time and a random part, so two writers never share one), then the
    manifest, then CURRENT: a reader follows CURRENT to a version whose manifest
    exists, so it never sees a version half written, and a write that fails
    before CURRENT moved leaves the last good version current.
    """

    def __init__(self, root: ObjectRoot, asset_path: list[str], tenant: str) -> None:
        validate_tenant_id(tenant)
        self.tenant = tenant
        self.root = root
        self.dir = root.key("assets", *asset_path, tenant)

    def current_version(self) -> str | None:
        """The name of the version CURRENT names, when its manifest exists."""
        try:
            name = self.root.get(self.root.key(self.dir, POINTER)).decode("utf-8").strip()
        except FileNotFoundError:
            return None
        return name if self.root.exists(self.root.key(self.dir, name, MANIFEST)) else None

    def current(self) -> str | None:
        """The URL of the current version, or None."""
        name = self.current_version()
        return self.root.uri(self.root.key(self.dir, name)) if name is not None else None

    def write(self, artifact: Parts, *, run_id: str, kind: str, extra: dict | None = None) -> tuple[str, dict]:
        """Write `artifact` into a new version, its manifest last, then move CURRENT; return (URL, manifest)."""
        name = f"v{time.time_ns()}-{(run_id or 'local')[:8]}-{secrets.token_hex(4)}"
        version = self.root.key(self.dir, name)
        files: dict[str, dict[str, Any]] = {}
        try:
            for table_name, frame in artifact.tables.items():
                buffer = io.BytesIO()
                frame.write_parquet(buffer, compression="zstd", statistics=True)
                files[f"{table_name}.parquet"] = {"rows": frame.height, "columns": frame.width,
                                                  **self._put(version, f"{table_name}.parquet", buffer.getvalue())}
            for doc_name, document in artifact.documents.items():
                files[f"{doc_name}.json"] = self._put(version, f"{doc_name}.json", dumps(document).encode("utf-8"))
            for rel, payload in artifact.files.items():
                files[rel] = self._put(version, rel, payload)
            manifest = _manifest(artifact, files, kind=kind, tenant=self.tenant, name=name, run_id=run_id, extra=extra)
            self.root.put(self.root.key(version, MANIFEST), dumps(manifest).encode("utf-8"))
        except BaseException:
            self.root.remove(version)  # without its manifest it is never read; removing it only saves space
            raise
        self.root.put(self.root.key(self.dir, POINTER), (name + "\n").encode("utf-8"))
        self._prune(keep=name)
        return self.root.uri(version), manifest

    def _put(self, version: str, rel: str, data: bytes) -> dict[str, Any]:
        self.root.put(self.root.key(version, rel), data)
        return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}

    def versions(self) -> list[str]:
        """The names of the complete versions (those with a manifest), oldest first."""
        names = [n for n in self.root.names(self.dir) if _VERSION_NAME.match(n)]
        return [n for n in names if self.root.exists(self.root.key(self.dir, n, MANIFEST))]

    def read(self, version: str | None = None, *, parts: Collection[str] | None = None) -> Parts:
        """The current version, or the complete version named `version` (`KeyError` when there is no such one):
        tables and documents read and checked against the manifest; its other files in a local cached copy, which
        is the returned `path` (models load from it). `parts` names the tables and documents to read (None: all);
        with `parts` the other files are not downloaded and `path` is None."""
        import polars as pl

        if version is not None and not _VERSION_NAME.match(version):
            raise KeyError(f"{version!r} is not a version name")
        name = version or self.current_version()
        if name is None:
            raise FileNotFoundError(
                f"no stored output for tenant '{self.tenant}' under {self.root.uri(self.dir)}; "
                "materialize the upstream asset first."
            )
        version = self.root.key(self.dir, name)
        try:
            manifest = json.loads(self.root.get(self.root.key(version, MANIFEST)))
        except FileNotFoundError:  # no manifest: no such version, or one not complete
            raise KeyError(f"no complete version {name!r} of tenant '{self.tenant}' under {self.root.uri(self.dir)}") from None
        stored = manifest["files"]
        tables, documents = manifest.get("tables", []), manifest.get("documents", [])
        local = None
        if parts is None:
            read_whole = {f"{t}.parquet" for t in tables} | {f"{d}.json" for d in documents}
            local = self.root.local_copy(version, {rel: info["sha256"] for rel, info in stored.items() if rel not in read_whole})
        artifact = Parts(path=local, manifest=manifest)
        for table in _wanted(tables, parts):
            artifact.tables[table] = pl.read_parquet(io.BytesIO(self._get(version, f"{table}.parquet", stored)))
        for document in _wanted(documents, parts):
            artifact.documents[document] = json.loads(self._get(version, f"{document}.json", stored))
        if parts is None:
            self.root.trim_cache(self.dir, keep=name, count=KEEP_VERSIONS)
        return artifact

    def _get(self, version: str, rel: str, stored: dict) -> bytes:
        key = self.root.key(version, rel)
        data = self.root.get(key)
        if hashlib.sha256(data).hexdigest() != stored[rel]["sha256"]:
            raise StorageError(
                f"stored object {self.root.uri(key)} does not match the SHA-256 its manifest records.",
                tenant=self.tenant,
                file=self.root.uri(key),
                fix="restore it from the bucket's versioning or a backup, or materialize the asset again.",
            )
        return data

    def _prune(self, keep: str) -> None:
        # CURRENT is read again: a writer on another machine may have moved it since this one wrote it
        spare = {keep, self.current_version()}
        names = [n for n in self.root.names(self.dir) if n.startswith("v")]
        complete = self.versions()
        for stale in complete[:-KEEP_VERSIONS]:
            if stale not in spare:
                self.root.remove(self.root.key(self.dir, stale))
        now = time.time_ns()
        for name in sorted(set(names) - set(complete) - spare):
            started = re.match(r"v(\d+)-", name)
            # a version without a manifest may still be being written; only one started a day ago is dead
            if started is not None and now - int(started.group(1)) > STALE_WRITE_NS:
                self.root.remove(self.root.key(self.dir, name))


def open_store(root: str | Path | LocalRoot | ObjectRoot, asset_path: list[str],
               tenant: str) -> VersionedStore | ObjectVersionedStore:
    """The versioned store of (`asset_path`, `tenant`) under `root`, for its kind of storage."""
    root = open_root(root)
    if isinstance(root, LocalRoot):
        return VersionedStore(root.base, asset_path, tenant)
    return ObjectVersionedStore(root, asset_path, tenant)


class TenantStorageIOManager(dg.ConfigurableIOManager):
    """Stores each tenant partition's output under the data root, atomically and versioned.

    An asset's typed result (`models.results`) is stored as its parts (tables,
    documents, files) and loaded back as the same type, its `path` the stored
    version; a `polars.DataFrame` output is stored as one Parquet table and
    loaded back as a DataFrame.

    Every stored output is also appended to the tenant's lineage audit trail
    (`resources.lineage_recording`), after CURRENT moved: a failed append fails
    the step with the output stored, and the retry appends it once.
    """

    data_dir: str = Field(description="Data root; outputs go under <data_dir>/assets/<asset>/<tenant>/ unless "
                          "data_url is set.")
    data_url: str | None = Field(
        default=None,
        description="Shared storage for outputs, for workers on several machines: an fsspec URL such as "
        "s3://bucket/prefix (outputs go under <data_url>/assets/...). Default: data_dir.",
    )
    storage_options: str | None = Field(
        default=None,
        description="JSON object of fsspec storage options for data_url (endpoint_url, key, secret, ...); "
        "set from CREDITTWIN_STORAGE_OPTIONS, shown as the variable's name when it holds credentials.",
    )
    cache_dir: str | None = Field(
        default=None,
        description="Local folder that stored files (saved models, certificates) are downloaded into when data_url "
        "is an object store. Default: <data_dir>/cache.",
    )
    lineage_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the lineage audit trail, the privacy ledger's database "
        "(default: the ledger's SQLite file under data_dir).",
    )
    _lineage: Any = PrivateAttr(default=None)
    _storage_root: Any = PrivateAttr(default=None)

    def _recorder(self):
        from resources.ledger import default_ledger_url
        from resources.lineage_recording import LineageRecorder

        if self._lineage is None:
            self._lineage = LineageRecorder(self.lineage_url or default_ledger_url(self.data_dir))
        return self._lineage

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._lineage is not None:
            self._lineage.close()

    def storage_root(self) -> LocalRoot | ObjectRoot:
        """Where outputs go: `data_url` when set, else `data_dir`."""
        if self._storage_root is None:
            self._storage_root = configured_root(self.data_dir, self.data_url, self.storage_options, self.cache_dir)
        return self._storage_root

    def _store(self, context: dg.OutputContext | dg.InputContext) -> VersionedStore | ObjectVersionedStore:
        tenant = context.asset_partition_key
        return open_store(self.storage_root(), list(context.asset_key.path), tenant)

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        import polars as pl

        if obj is None:
            return
        if isinstance(obj, pl.DataFrame):
            artifact, kind = Parts(tables={"data": obj}), "dataframe"
        elif isinstance(obj, Result):
            artifact, kind = obj.to_parts(), type(obj).__name__
        else:
            raise TypeError(f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; expected a polars "
                            "DataFrame or a typed result of models.results.")
        path, manifest = self._store(context).write(artifact, run_id=context.run_id, kind=kind)
        record = self._record_lineage(context, artifact, manifest)
        context.add_output_metadata(
            {
                "path": dg.MetadataValue.path(str(path)),
                "content_sha256": manifest["content_sha256"],
                "stored_bytes": sum(f["bytes"] for f in manifest["files"].values()),
                # anchors of the tenant's lineage chain kept outside its database (`credittwin audit`)
                "lineage_seq": record.seq,
                "lineage_record_hash": record.record_hash,
            }
        )

    def _record_lineage(self, context: dg.OutputContext, artifact: Parts, manifest: dict):
        """Append the stored output to the lineage trail; raising fails the step (the output stays stored)."""
        from resources.lineage_recording import output_entry

        recorder = self._recorder()
        asset = context.asset_key.to_user_string()
        entry = output_entry(
            tenant=context.asset_partition_key,
            asset=asset,
            run_id=context.run_id,
            manifest=manifest,
            documents=artifact.documents,
            asset_code_version=context.asset_spec.code_version,
            inputs=recorder.inputs_of(context.run_id, context.step_key),
            ledger_url=recorder.url,
        )
        record = recorder.record_output(entry)
        context.log.debug(
            f"lineage record {record.seq} of tenant '{record.tenant}' for {asset}"
            + ("" if record.appended else " (already recorded by an earlier attempt)")
        )
        return record

    def load_input(self, context: dg.InputContext) -> Any:
        artifact = self._store(context).read()
        self._note_input(context, artifact.manifest)
        if artifact.manifest.get("kind") == "dataframe":
            return artifact.tables["data"]
        return as_result(context.asset_key.to_user_string(), artifact)

    def _note_input(self, context: dg.InputContext, manifest: dict) -> None:
        """Remember the upstream content this step loaded, for its lineage record."""
        from resources.lineage_recording import dagster_input_version

        try:
            step = context.step_context
        except dg.DagsterInvariantViolationError:  # loaded outside a run (a test harness): nothing to record
            return
        content = manifest["content_sha256"]
        version = dagster_input_version(context.instance, context.asset_key, context.asset_partition_key, content)
        self._recorder().note_input(step.run_id, step.step.key, context.asset_key.to_user_string(), version, content)


def read_current(root: Path | LocalRoot | ObjectRoot, asset: str, tenant: str) -> Result | Parts | None:
    """The latest stored output of `asset` for `tenant` under `root`, typed, or None (for the CLI and sensors)."""
    store = open_store(root, [asset], tenant)
    return as_result(asset, store.read()) if store.current_version() is not None else None
