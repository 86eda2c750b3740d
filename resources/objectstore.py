"""Data roots: a local folder (`LocalRoot`, paths checked by `safe_join`) or object storage (`ObjectRoot`).

Workers on several machines share outputs only through shared storage: a data
root at an fsspec URL (``s3://bucket/prefix``, ``gs://...``). An object store
has no rename and no folders, so the guarantees `resources.storage` gives on
local disk (a reader sees the old output or the new, never half of one; a
failed write leaves the last good output current) are kept with what it has:

- one PUT of one object is atomic: a reader gets the whole old object, the
  whole new one, or nothing;
- a new version's files are written under a fresh prefix
  (``assets/<asset>/<tenant>/v<ns>-<run>-<random>/``) that nothing names yet;
- its ``manifest.json`` (every file's SHA-256) is written last: a version
  without a manifest is incomplete and never read;
- only then is the pointer ``CURRENT`` rewritten, one PUT, so it never names a
  version whose files are not all there;
- a key two writers may race for (the paid-release store: one output per
  ledger charge) is created with a conditional PUT (``If-None-Match: *``,
  fsspec's ``mode="create"``): the store grants it to one writer and refuses
  the others with 412, which s3fs raises as `FileExistsError`. Each writer
  writes its files under its own attempt prefix first, so a loser never
  overwrites the winner's bytes.

The conditional PUT is atomic on S3 and S3-compatible stores that honour
``If-None-Match`` (AWS S3 since 2024, MinIO, moto); other fsspec backends
without it fall back to fsspec's check-then-write. See docs/storage.md.

Keys are built with `ObjectRoot.key`, which refuses empty, ``.`` and ``..``
segments, absolute names, backslashes and NUL, so nothing leaves the root
prefix. Files a step must open from disk (saved models, the certificate) are
downloaded once per version into a local cache, their SHA-256 checked against
the manifest; versions never change once complete, so the cache never goes stale.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from models.errors import CreditTwinError, UnsafePathError
from models.files import atomic_directory, atomic_write_bytes

LOCAL_SCHEMES = ("file", "local")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")
_EXAMPLE_OPTIONS = '{"endpoint_url": "http://minio:9000"}'


class StorageError(CreditTwinError):
    """Shared storage that cannot be used as configured, or a stored object that does not match its manifest."""


class StorageConfigError(StorageError, ValueError):
    """A data URL or storage options that are malformed (raised when the settings are read)."""


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


def is_url(location: str | Path) -> bool:
    """True for ``scheme://...`` (``file://`` included), False for a plain local path."""
    return isinstance(location, str) and _SCHEME.match(location) is not None


def local_path(location: str | Path) -> Path | None:
    """The local folder `location` names (a path or a ``file://`` URL), resolved; None for an object-store URL."""
    if isinstance(location, Path):
        return location.expanduser().resolve()
    match = _SCHEME.match(location)
    if match is None:
        return Path(location).expanduser().resolve()
    if match.group(1).lower() in LOCAL_SCHEMES:
        return Path("/" + match.group(2).lstrip("/")).resolve()
    return None


def check_data_url(url: str | None, name: str = "CREDITTWIN_DATA_URL") -> str | None:
    """`url` normalised (no trailing slash), or None when unset; raises `StorageConfigError` naming `name`.

    A plain path or a ``file://`` URL names a local folder. Any other URL must be
    ``<protocol>://<bucket>[/<prefix>]`` with a protocol fsspec knows, and no
    empty, ``.`` or ``..`` segment, query or fragment.
    """
    if url is None or not url.strip():
        return None
    url = url.strip()
    match = _SCHEME.match(url)
    if match is None or match.group(1).lower() in LOCAL_SCHEMES:
        return str(local_path(url))
    scheme, rest = match.group(1).lower(), match.group(2).rstrip("/")
    try:
        from fsspec.registry import known_implementations, registry
    except ImportError:
        raise StorageConfigError(
            f"{name}={url!r} is an object-store URL, but fsspec is not installed.",
            fix="install the storage extra: pip install 'credittwin[s3]'.",
        ) from None
    if scheme not in known_implementations and scheme not in registry:
        raise StorageConfigError(
            f"{name}={url!r} uses the protocol '{scheme}', which fsspec does not know.",
            fix="use s3://<bucket>/<prefix>, gs://<bucket>/<prefix>, a file:// URL or a local path.",
        )
    segments = rest.split("/")
    if "?" in rest or "#" in rest or not segments[0] or any(s in ("", ".", "..") for s in segments):
        raise StorageConfigError(
            f"{name}={url!r} is not <protocol>://<bucket>[/<prefix>]: it has no bucket, an empty, '.' or '..' "
            "segment, a query or a fragment.",
            fix="name the bucket and an optional prefix, e.g. s3://credittwin-data/prod.",
        )
    return f"{scheme}://{rest}"


def parse_storage_options(text: str | Mapping[str, Any] | None, name: str = "CREDITTWIN_STORAGE_OPTIONS") -> dict:
    """The fsspec storage options in `text` (a JSON object, e.g. endpoint_url, key, secret, client_kwargs).

    Raises:
        StorageConfigError: `text` is not a JSON object with text keys; the message names `name`.
    """
    if text is None:
        return {}
    if isinstance(text, Mapping):
        options = dict(text)
    else:
        if not text.strip():
            return {}
        try:
            options = json.loads(text)
        except ValueError as error:
            raise StorageConfigError(
                f"{name} is not valid JSON ({error.msg} at character {error.pos}).",
                fix=f"set it to a JSON object of fsspec storage options, e.g. {_EXAMPLE_OPTIONS}.",
            ) from None
    if not isinstance(options, dict) or not all(isinstance(key, str) and key for key in options):
        raise StorageConfigError(
            f"{name} is not a JSON object with text keys.",
            fix=f"set it to a JSON object of fsspec storage options, e.g. {_EXAMPLE_OPTIONS}.",
        )
    return options


class ObjectRoot:
    """A data root at an fsspec URL: validated keys under it, atomic single-object reads and writes.

    Args:
        url: ``s3://bucket/prefix`` (or another fsspec protocol).
        storage_options: passed to the filesystem (endpoint_url, key, secret, ...).
        cache_dir: local folder that files needed on disk are downloaded into.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None, cache_dir: Path | None = None):
        checked = check_data_url(url, "data URL")
        if checked is None or not is_url(checked):
            raise StorageConfigError(f"{url!r} is not an object-store URL.", fix="pass s3://<bucket>/<prefix>.")
        self.url = checked
        self.storage_options = dict(storage_options or {})
        self.cache_dir = Path(cache_dir).expanduser().resolve() if cache_dir is not None else None
        self._fs = None
        self._base = ""

    def __repr__(self) -> str:
        return f"ObjectRoot({self.url!r})"

    @property
    def fs(self):
        """The fsspec filesystem, opened on first use (listings are never cached: other machines write too)."""
        return self._open()[0]

    def _open(self):
        if self._fs is None:
            from fsspec.core import url_to_fs

            try:
                self._fs, base = url_to_fs(self.url, **{"use_listings_cache": False, **self.storage_options})
            except ImportError as error:
                raise StorageConfigError(
                    f"the data URL {self.url!r} needs a filesystem package that is not installed ({error}).",
                    fix="install the storage extra: pip install 'credittwin[s3]'.",
                ) from None
            self._base = base.rstrip("/")
        return self._fs, self._base

    def key(self, *parts: str) -> str:
        """`parts` joined as one key relative to the root; each may hold ``/`` but no segment may leave the root.

        Raises:
            UnsafePathError: a part is empty, absolute, or has a NUL, a backslash, or an empty, ``.`` or ``..`` segment.
        """
        segments: list[str] = []
        for part in parts:
            if not isinstance(part, str) or not part or "\x00" in part or part.startswith("/") or is_url(part):
                raise UnsafePathError(f"path part {part!r} is empty, absolute or contains NUL.",
                                      fix="use a plain relative name.")
            for segment in part.split("/"):
                if segment in ("", ".", "..") or "\\" in segment:
                    raise UnsafePathError(
                        f"path {'/'.join(map(str, parts))!r} could resolve outside the data root {self.url!r}: "
                        "object keys take no empty, '.' or '..' segment and no backslash.",
                        fix="use names without '..', '.', '//' or '\\'.",
                    )
                segments.append(segment)
        return "/".join(segments)

    def _full(self, rel: str) -> str:
        base = self._open()[1]
        return f"{base}/{rel}" if rel else base

    def uri(self, rel: str = "") -> str:
        """The URL of key `rel` (for messages and asset metadata)."""
        return f"{self.url}/{rel}" if rel else self.url

    def get(self, rel: str) -> bytes:
        """The bytes of `rel`; raises `FileNotFoundError` when there is no such object."""
        return self.fs.cat_file(self._full(rel))

    def put(self, rel: str, data: bytes) -> None:
        """Write `rel` in one PUT, replacing it (atomic: readers see the old object or the new)."""
        self.fs.pipe_file(self._full(rel), data)

    def create(self, rel: str, data: bytes) -> bool:
        """Write `rel` only if it does not exist (a conditional PUT); False when another writer got there first."""
        try:
            self.fs.pipe_file(self._full(rel), data, mode="create")
        except FileExistsError:
            return False
        return True

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self._full(rel))

    def names(self, rel: str) -> list[str]:
        """The names directly under `rel` (objects and prefixes), sorted; empty when there are none."""
        try:
            listed = self.fs.ls(self._full(rel), detail=False)
        except FileNotFoundError:
            return []
        full = self._full(rel).rstrip("/")
        return sorted(PurePosixPath(p).name for p in listed if p.rstrip("/") != full)

    def listing(self, rel: str) -> dict[str, dict]:
        """name -> fsspec listing entry (``type``, ``size``, ``ETag``, ``LastModified``, ...) of what lies directly
        under `rel`; empty when there is nothing. Listings are never cached: other machines write too."""
        full = self._full(rel).rstrip("/")
        try:
            listed = self.fs.ls(full, detail=True)
        except FileNotFoundError:
            return {}
        out: dict[str, dict] = {}
        for info in listed:
            name = str(info.get("name", "")).rstrip("/")
            if name and name != full:
                out[PurePosixPath(name).name] = info
        return out

    def download(self, rel: str, target: Path) -> None:
        """Stream object `rel` into the local file `target` (not read into memory whole)."""
        self.fs.get_file(self._full(rel), str(target))

    def upload(self, source: Path, rel: str) -> None:
        """Stream the local file `source` into object `rel` (S3 shows it only once whole)."""
        self.fs.put_file(str(source), self._full(rel))

    def remove(self, rel: str) -> None:
        """Delete `rel` and everything under it; nothing there is not an error."""
        try:
            self.fs.rm(self._full(rel), recursive=True)
        except FileNotFoundError:
            pass

    def _cache_folder(self, rel: str) -> Path:
        if self.cache_dir is None:
            raise StorageConfigError(
                f"files under {self.uri(rel)} must be read from disk, but no local cache folder is configured.",
                fix="set CREDITTWIN_CACHE_DIR (default: <CREDITTWIN_DATA_DIR>/cache).",
            )
        return self.cache_dir / hashlib.sha256(self.url.encode()).hexdigest()[:16] / rel

    def local_copy(self, rel: str, files: Mapping[str, str]) -> Path:
        """A local folder holding `files` (relative name -> SHA-256) of the immutable folder `rel`.

        Downloaded once into the cache, each file checked against its SHA-256,
        and published whole (`models.files.atomic_directory`), so a folder in
        the cache is always complete.

        Raises:
            StorageError: a file does not match its SHA-256.
        """
        target = self._cache_folder(rel)
        if target.is_dir():
            return target
        with atomic_directory(target, replace=False) as staging:
            for name, digest in files.items():
                key = self.key(rel, name)
                data = self.get(key)
                if hashlib.sha256(data).hexdigest() != digest:
                    raise StorageError(
                        f"stored object {self.uri(key)} does not match the SHA-256 its manifest records.",
                        file=self.uri(key),
                        fix="restore it from the bucket's versioning or a backup, or materialize the asset again.",
                    )
                local = staging.joinpath(*name.split("/"))
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
        return target

    def trim_cache(self, rel: str, keep: str, count: int) -> None:
        """Keep the `count` newest cached folders under `rel` (by name), and `keep` whatever its age."""
        folder = self._cache_folder(rel)
        if not folder.is_dir():
            return
        cached = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        for name in cached[:-count]:
            if name != keep:
                shutil.rmtree(folder / name, ignore_errors=True)


class LocalRoot:
    """A data root on local disk with `ObjectRoot`'s interface, so the paid-release store runs one protocol on both."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base).expanduser().resolve()
        self.url = str(self.base)

    def __repr__(self) -> str:
        return f"LocalRoot({self.url!r})"

    def key(self, *parts: str) -> str:
        """`parts` joined relative to the root, through `safe_join` (no escape, no link)."""
        target = safe_join(self.base, *parts)
        return target.relative_to(self.base).as_posix() if target != self.base else ""

    def path(self, rel: str) -> Path:
        return self.base / rel if rel else self.base

    def uri(self, rel: str = "") -> str:
        return str(self.path(rel))

    def get(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    def put(self, rel: str, data: bytes) -> None:
        atomic_write_bytes(self.path(rel), data)

    def create(self, rel: str, data: bytes) -> bool:
        return atomic_write_bytes(self.path(rel), data, replace=False)

    def exists(self, rel: str) -> bool:
        return self.path(rel).exists()

    def names(self, rel: str) -> list[str]:
        folder = self.path(rel)
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def remove(self, rel: str) -> None:
        target = self.path(rel)
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
        else:
            target.unlink(missing_ok=True)

    def local_copy(self, rel: str, files: dict[str, str]) -> Path:
        return self.path(rel)


def open_root(location: str | Path | LocalRoot | ObjectRoot, storage_options: dict | None = None,
              cache_dir: Path | None = None) -> LocalRoot | ObjectRoot:
    """The data root at `location`: a local folder (a path or ``file://`` URL) or an object store (``s3://...``)."""
    if isinstance(location, (LocalRoot, ObjectRoot)):
        return location
    local = local_path(location)
    return LocalRoot(local) if local is not None else ObjectRoot(str(location), storage_options, cache_dir)


def cache_folder(data_dir: str | Path, cache_dir: str | Path | None) -> Path:
    """The local folder files from object storage are downloaded into: `cache_dir`, else ``cache`` under `data_dir`."""
    return Path(cache_dir) if cache_dir else Path(data_dir).resolve() / "cache"


def configured_root(data_dir: str | Path, data_url: str | None, storage_options: str | Mapping[str, Any] | None,
                    cache_dir: str | Path | None) -> LocalRoot | ObjectRoot:
    """The data root a deployment configures: `data_url` when set, else `data_dir`, with its storage options (JSON
    text or a mapping) and download cache (`cache_folder`); what the settings resource, the IO manager and the
    settings object all open."""
    return open_root(data_url or str(data_dir), parse_storage_options(storage_options, "storage_options"),
                     cache_folder(data_dir, cache_dir))

