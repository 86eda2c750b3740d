"""The landing zone: tenant folders of uploads, on local disk or on object storage, and readable rejection notes.

`LandingZone` is the one way the landing sensor, the `raw_loan_tape` asset and
the `credittwin` command see the landing zone, wherever it lives:

- **local disk** (`CREDITTWIN_DATA_DIR/landing`, the default): a tenant folder
  is a real folder (never a link) and an upload is read where it lies
  (`models.tape.loan_tape.find_upload`);
- **object storage** (``<CREDITTWIN_DATA_URL>/landing``, or
  ``CREDITTWIN_LANDING_URL``): a tenant folder is the key prefix
  ``landing/<tenant>/``. A lender uploads with any S3 client; each object
  appears whole or not at all (one PUT, or a multipart upload completed in
  one call). The sensor lists the prefix (names, sizes, ETags, last-modified
  times: no data is read to notice a change), and an upload to be read is
  first *staged*: its files are downloaded into a local folder named after the
  listing (``<cache>/landing/<tenant>/<listing hash>/``), published whole, so a
  step reads a complete, unchanging copy while the lender may already be
  uploading the next one. Its fingerprint is computed from the downloaded
  bytes, exactly as on local disk, so a run key and the ``input_sha256`` of the
  tape name the same upload wherever it was read.

A rejection note (``<file>.rejected.txt``) is written next to the upload that
caused it, so the lender sees why without access to Dagster; a later accepted
upload removes the stale notes. Tenant folder names are untrusted: a name that
is not a valid tenant id is never used in a path or a key beyond a rejection
note in that folder, and only when the name is a safe key segment.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from models.errors import CreditTwinError, InvalidDataError, UnsafePathError
from models.files import atomic_directory, atomic_write_text
from models.tape.loan_tape import (
    EXTENSIONS, LOAN_STEMS, PERFORMANCE_STEMS, Upload, check_upload_names, find_upload, landing_folder,
)
from models.tape.schema import TENANT_FILE
from models.tape.tenant import validate_tenant_id
from resources.objectstore import LocalRoot, ObjectRoot, open_root

REJECTED_SUFFIX = ".rejected.txt"
UPLOAD_FILES = frozenset(
    [f"{stem}{ext}" for stem in (*LOAN_STEMS, *PERFORMANCE_STEMS) for ext in EXTENSIONS] + [TENANT_FILE]
)
"""The only names read from a tenant folder; anything else there is ignored."""
KEEP_STAGED = 2
"""Staged copies kept per tenant: the newest, and the one a running step may still be reading."""


def _note_text(message: str) -> str:
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    return (
        f"CreditTwin rejected this upload at {stamp}.\n\n{message}\n\n"
        "Fix the file and upload it again; the landing sensor retries on the next change.\n"
    )


def _clear_local_notes(folder: Path) -> None:
    """Remove stale rejection notes from a local tenant folder (files only, never through a link)."""
    for note in folder.glob("*" + REJECTED_SUFFIX):
        if note.is_file() and not note.is_symlink():
            note.unlink(missing_ok=True)


@dataclass(frozen=True)
class FolderEntry:
    """One name listed at the top of the landing zone (untrusted: it may not be a valid tenant id)."""

    name: str
    is_folder: bool  # a real folder (local: not a link) or a key prefix; a lone file or a link is not


@dataclass(frozen=True)
class UploadStamp:
    """What a listing says of a tenant's upload, without reading it: a key that changes with any file, and its age."""

    key: str
    youngest_age_s: float


def _modified(info: dict) -> float | None:
    """An object's last-modified time (POSIX seconds) from an fsspec listing entry, whatever the backend calls it."""
    for field in ("LastModified", "last_modified", "mtime", "updated", "created"):
        value = info.get(field)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str) and value:
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


class LandingZone:
    """The landing zone at a local folder or an object-store prefix (see the module docstring).

    Args:
        root: the landing zone's root (`resources.objectstore.open_root`).
        stage_dir: local folder uploads on object storage are downloaded into before they are read.
    """

    def __init__(self, root: LocalRoot | ObjectRoot, stage_dir: Path) -> None:
        self.root = root
        self.stage_dir = Path(stage_dir)

    @classmethod
    def at(cls, location: str | Path, *, storage_options: dict | None = None, stage_dir: Path) -> "LandingZone":
        return cls(open_root(location, storage_options), stage_dir)

    @property
    def local(self) -> bool:
        return isinstance(self.root, LocalRoot)

    @property
    def url(self) -> str:
        return self.root.url

    def __repr__(self) -> str:
        return f"LandingZone({self.url!r})"

    # ------------------------------------------------------------------ listing

    def exists(self) -> bool:
        if isinstance(self.root, LocalRoot):
            return self.root.base.is_dir()
        return True  # a prefix exists as soon as an object is under it; an empty one lists as empty

    def entries(self) -> list[FolderEntry]:
        """The names at the top of the zone, sorted, without hidden names and rejection notes."""
        if isinstance(self.root, LocalRoot):
            if not self.root.base.is_dir():
                return []
            listed = [(p.name, not p.is_symlink() and p.is_dir()) for p in self.root.base.iterdir()]
        else:
            listed = [(name, info.get("type") == "directory") for name, info in self.root.listing("").items()]
        return [
            FolderEntry(name, is_folder)
            for name, is_folder in sorted(listed)
            if not name.startswith(".") and not name.endswith(REJECTED_SUFFIX)
        ]

    def require_folder(self, tenant: str) -> str:
        """The tenant's folder (a path or a URL); `InvalidDataError` when it is missing or (local disk) a link."""
        tenant = validate_tenant_id(tenant)
        if isinstance(self.root, LocalRoot):
            return str(landing_folder(self.root.base, tenant))
        folder = self.root.key(tenant)
        if not self.root.listing(folder):
            raise InvalidDataError(
                f"the landing folder {self.root.uri(folder)} is empty or missing; CreditTwin reads an upload only "
                "from the tenant's own folder.",
                tenant=tenant,
                fix=f"upload loans.csv into {self.root.uri(folder)}/.",
            )
        return self.root.uri(folder)

    def has_folder(self, tenant: str) -> bool:
        """Whether the tenant has a folder (local: a real folder, not a link; object storage: any object under it)."""
        try:
            self.require_folder(tenant)
        except CreditTwinError:
            return False
        return True

    def _object_files(self, tenant: str) -> dict[str, dict]:
        """The upload files of `tenant`'s prefix (name -> listing entry); `InvalidDataError` when there is no loans file."""
        everything = {name: info for name, info in self.root.listing(self.root.key(tenant)).items()
                      if info.get("type", "file") == "file"}
        check_upload_names(everything, self.root.uri(self.root.key(tenant)), tenant=tenant)
        return {name: info for name, info in everything.items() if name in UPLOAD_FILES}

    def stamp(self, tenant: str) -> UploadStamp:
        """The tenant's upload as its listing shows it (names, sizes, times; nothing is read).

        Raises:
            InvalidDataError: no loans file, two loans files, a linked file (local disk), ...
        """
        tenant = validate_tenant_id(tenant)
        now = time.time()
        if isinstance(self.root, LocalRoot):
            upload = find_upload(landing_folder(self.root.base, tenant), tenant)
            stats = [(p.name, p.stat()) for p in upload.files]
            return UploadStamp(
                key=";".join(f"{name}:{st.st_size}:{st.st_mtime_ns}" for name, st in stats),
                youngest_age_s=min(now - st.st_mtime for _, st in stats),
            )
        return self._object_stamp(self._object_files(tenant), now)

    @staticmethod
    def _object_stamp(files: dict[str, dict], now: float) -> UploadStamp:
        parts, ages = [], []
        for name in sorted(files):
            info = files[name]
            modified = _modified(info)
            tag = info.get("ETag") or info.get("etag") or info.get("md5Hash") or modified
            parts.append(f"{name}:{info.get('size')}:{tag}")
            if modified is not None:
                ages.append(now - modified)
        # an object store shows an object only once it is whole; without times the listing key alone decides
        return UploadStamp(key=";".join(parts), youngest_age_s=min(ages) if ages else float("inf"))

    # ------------------------------------------------------------------ reading

    def upload(self, tenant: str) -> Upload:
        """The tenant's upload as local files: where they lie on local disk, else a staged copy downloaded whole.

        Raises:
            InvalidDataError: the folder is missing or a link, no loans file, two loans files, a linked file.
        """
        tenant = validate_tenant_id(tenant)
        if isinstance(self.root, LocalRoot):
            return find_upload(landing_folder(self.root.base, tenant), tenant)
        files = self._object_files(tenant)  # one listing names the staged copy and chooses its files
        stamp = self._object_stamp(files, time.time())
        tenant_stage = self.stage_dir / tenant
        target = tenant_stage / hashlib.sha256(stamp.key.encode()).hexdigest()[:24]
        if not target.is_dir():
            with atomic_directory(target, replace=False) as staging:
                for name in sorted(files):
                    self.root.download(self.root.key(tenant, name), staging / name)
        self._trim_stage(tenant_stage, keep=target.name)
        return find_upload(target, tenant)

    def _trim_stage(self, folder: Path, keep: str) -> None:
        staged = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                        key=lambda p: p.stat().st_mtime)
        for old in staged[:-KEEP_STAGED]:
            if old.name != keep:
                shutil.rmtree(old, ignore_errors=True)

    # ------------------------------------------------------------------ writing

    def _note(self, folder_name: str, file_name: str) -> Path | str:
        """Where the rejection note of `file_name` in the listed folder `folder_name` goes (a path or a key).

        Raises:
            UnsafePathError: `folder_name` is not a plain folder of the zone (a link, ``..``, a backslash, ...).
        """
        note_name = Path(file_name).name + REJECTED_SUFFIX
        if isinstance(self.root, LocalRoot):
            folder = self.root.base / folder_name
            if Path(folder_name).name != folder_name or folder.is_symlink() or not folder.is_dir():
                raise UnsafePathError(f"{folder_name!r} is not a folder of the landing zone.",
                                      fix="use a plain folder name.")
            return folder / note_name
        return self.root.key(folder_name, note_name)

    def has_rejection(self, folder_name: str, file_name: str) -> bool:
        """Whether `file_name`'s rejection note is in the listed folder `folder_name` already."""
        note = self._note(folder_name, file_name)
        return note.exists() if isinstance(note, Path) else self.root.exists(note)

    def write_rejection(self, folder_name: str, file_name: str, message: str) -> str:
        """Write `<folder>/<file>.rejected.txt` with `message`; returns where. `folder_name` is a listed name.

        Raises:
            UnsafePathError: `folder_name` is not a safe name (a link, ``..``, a backslash, ...); nothing is written.
        """
        note = self._note(folder_name, file_name)
        if isinstance(note, Path):
            atomic_write_text(note, _note_text(message))
            return str(note)
        self.root.put(note, _note_text(message).encode("utf-8"))
        return self.root.uri(note)

    def clear_rejections(self, tenant: str) -> None:
        """Remove the tenant's stale rejection notes after an upload was accepted."""
        tenant = validate_tenant_id(tenant)
        if isinstance(self.root, LocalRoot):
            _clear_local_notes(landing_folder(self.root.base, tenant))
            return
        for name in list(self.root.listing(self.root.key(tenant))):
            if name.endswith(REJECTED_SUFFIX):
                self.root.remove(self.root.key(tenant, name))

    def publish(self, tenant: str, files: list[Path]) -> str:
        """Put local `files` into the tenant's folder (the demo writes its tape this way); returns the folder's URL.

        On object storage each file is one PUT; the loans file goes last, so the sensor never sees a loans file
        without the performance history written with it.
        """
        tenant = validate_tenant_id(tenant)
        if isinstance(self.root, LocalRoot):
            return str(landing_folder(self.root.base, tenant))
        for path in files:
            if path.name not in UPLOAD_FILES:
                raise UnsafePathError(f"{path.name!r} is not an upload file name.",
                                      fix=f"use one of {', '.join(sorted(UPLOAD_FILES))}.")
        for path in sorted(files, key=lambda p: p.name.startswith("loans.")):
            stem, ext = path.name.rsplit(".", 1)
            for other in EXTENSIONS:  # the zone refuses a folder with both a CSV and a Parquet of one file
                if other != f".{ext}" and stem in (*LOAN_STEMS, *PERFORMANCE_STEMS):
                    self.root.remove(self.root.key(tenant, stem + other))
            self.root.upload(path, self.root.key(tenant, path.name))
        return self.root.uri(self.root.key(tenant))
