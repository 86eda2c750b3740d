"""Safe file storage under the data root, and the IO manager that uses it.

Every asset output is written into a fresh version directory
``<data>/assets/<asset>/<tenant>/<version>/`` with a ``manifest.json`` listing
each file's SHA-256; only when every file is on disk does the ``CURRENT`` pointer
move to it (an atomic rename). A step that fails, or a write that breaks half way,
therefore never replaces the last good output. Paths are built with `safe_join`,
which refuses anything that resolves outside the root.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from models.files import atomic_write_text, dumps, sha256_file
from models.errors import UnsafePathError
from models.results import Parts, Result, as_result
from models.tape.tenant import validate_tenant_id

MANIFEST = "manifest.json"
POINTER = "CURRENT"
KEEP_VERSIONS = 3


def safe_join(root: Path, *parts: str) -> Path:
    """Join `parts` under `root`, refusing a result outside `root` (after resolving links) or through a link.

    A link that stays inside the root is refused too: resolved, a landing folder
    ``evil-in -> good`` would silently become ``good``, and a caller would read or
    write another tenant's files under the first tenant's name.
    """
    base = Path(root).resolve()
    for part in parts:
        if not part or "\x00" in part or Path(part).is_absolute():
            raise UnsafePathError(f"path part {part!r} is empty, absolute or contains NUL.", fix="use a plain relative name.")
    joined = base.joinpath(*parts)
    target = joined.resolve()
    if target != base and not target.is_relative_to(base):
        raise UnsafePathError(
            f"path {'/'.join(parts)!r} resolves outside the data root {str(base)!r}.",
            fix="use names without '..', absolute paths or links that leave the data root.",
        )
    step = base
    for name in joined.relative_to(base).parts:
        step = step / name
        if step.is_symlink():
            raise UnsafePathError(
                f"path {'/'.join(parts)!r} goes through the symbolic link {str(step.relative_to(base))!r} under the "
                f"data root {str(base)!r}; CreditTwin follows no link there.",
                fix="replace the link by a real folder or file.",
            )
    return target


class VersionedStore:
    """Version directories with an atomic CURRENT pointer, for one (asset, tenant)."""

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
            content = hashlib.sha256(
                "".join(f"{rel}\0{files[rel]['sha256']}\n" for rel in sorted(files)).encode()
            ).hexdigest()
            manifest = {
                "kind": kind,
                "tenant": self.tenant,
                "version": name,
                "run_id": run_id,
                "written_at": datetime.now().astimezone().isoformat(timespec="seconds"),
                "tables": sorted(artifact.tables),
                "documents": sorted(artifact.documents),
                "files": files,
                "content_sha256": content,
                **(extra or {}),
            }
            (staging / MANIFEST).write_text(dumps(manifest), encoding="utf-8")
            final = self.dir / name
            os.replace(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        atomic_write_text(self.dir / POINTER, name + "\n")
        self._prune(keep=name)
        return final, manifest

    def read(self) -> Parts:
        import polars as pl

        version = self.current()
        if version is None:
            raise FileNotFoundError(
                f"no stored output for tenant '{self.tenant}' under {self.dir}; materialize the upstream asset first."
            )
        manifest = json.loads((version / MANIFEST).read_text(encoding="utf-8"))
        artifact = Parts(path=version, manifest=manifest)
        for name in manifest.get("tables", []):
            artifact.tables[name] = pl.read_parquet(safe_join(version, f"{name}.parquet"))
        for name in manifest.get("documents", []):
            artifact.documents[name] = json.loads(safe_join(version, f"{name}.json").read_text(encoding="utf-8"))
        return artifact

    def _prune(self, keep: str) -> None:
        versions = sorted(p for p in self.dir.iterdir() if p.is_dir() and p.name.startswith("v"))
        for stale in versions[:-KEEP_VERSIONS]:
            if stale.name != keep:
                shutil.rmtree(stale, ignore_errors=True)
        for leftover in self.dir.glob(".v*"):
            # staging folders of writes that died; older than a day means nobody is writing them
            if leftover.is_dir() and time.time() - leftover.stat().st_mtime > 86_400:
                shutil.rmtree(leftover, ignore_errors=True)


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

    data_dir: str = Field(description="Data root; outputs go under <data_dir>/assets/<asset>/<tenant>/.")
    lineage_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the lineage audit trail, the privacy ledger's database "
        "(default: the ledger's SQLite file under data_dir).",
    )
    _lineage: Any = PrivateAttr(default=None)

    def _recorder(self):
        from resources.ledger import default_ledger_url
        from resources.lineage_recording import LineageRecorder

        if self._lineage is None:
            self._lineage = LineageRecorder(self.lineage_url or default_ledger_url(self.data_dir))
        return self._lineage

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._lineage is not None:
            self._lineage.close()

    def _store(self, context: dg.OutputContext | dg.InputContext) -> VersionedStore:
        tenant = context.asset_partition_key
        return VersionedStore(Path(self.data_dir), list(context.asset_key.path), tenant)

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


def read_current(data_dir: Path, asset: str, tenant: str) -> Result | Parts | None:
    """The latest stored output of `asset` for `tenant`, typed, or None (for the CLI and sensors)."""
    store = VersionedStore(data_dir, [asset], tenant)
    return as_result(asset, store.read()) if store.current() is not None else None
