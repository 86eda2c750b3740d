"""File and JSON primitives without Dagster: atomic writes, streamed SHA-256, and the JSON encodings.

Every file CreditTwin writes goes through `atomic_write_bytes`, `atomic_write_text`
or `atomic_directory`: a reader sees the old content or the new, never half of
it, and a write that fails leaves the old content in place. Every hash or
signature over a JSON value is taken over `canonical_json` (RFC 8785), so the
same value hashes the same in every module and on every platform.

They live in `models/` because `models/` must not import `resources/` (which
imports Dagster), and both use them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

from models.errors import JsonValueError

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer a JSON number holds exactly everywhere (RFC 8785 refuses larger ones)."""


# --------------------------------------------------------------------------- atomic writes


def _fsync_folder(folder: Path) -> None:
    # a rename is durable only once the folder holding the new name is synced
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, *, replace: bool = True) -> bool:
    """Write `data` to `path` via a temporary file (mode 0600) in the same folder, fsync and a rename.

    Args:
        path: the file to write; its folder is created when missing.
        data: the bytes.
        replace: False publishes only when `path` does not exist yet (a hard link
            of the temporary file, which fails when another process got there
            first; where links are unsupported, an ``O_EXCL`` create).

    Returns:
        True when `path` now holds `data`; False only when `replace` is False and `path` already existed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if replace:
            os.replace(tmp, path)
        elif not _publish_exclusively(Path(tmp), path, data):
            return False
        _fsync_folder(path.parent)
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _publish_exclusively(tmp: Path, path: Path, data: bytes) -> bool:
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        return True


def atomic_write_text(path: Path, text: str, *, replace: bool = True) -> bool:
    """`atomic_write_bytes` of `text` in UTF-8."""
    return atomic_write_bytes(path, text.encode("utf-8"), replace=replace)


@contextmanager
def atomic_directory(path: Path, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; when the block succeeds it becomes `path` whole.

    Write the folder's files into the yielded folder; they are fsynced before
    the swap, so `path` never names a half-written folder, even after a crash.
    When the block raises, the temporary folder is removed and `path` is left as
    it was. An existing `path` is replaced by two renames (it steps aside, the
    new folder takes its name) and then removed; a crash between the two leaves
    `path` missing with the old folder kept beside it as ``.<name>.old-*``.

    Args:
        path: the folder to write.
        replace: False keeps a folder already at `path` (another process
            published first) and discards this one; look at `path` afterwards.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    tmp = path.parent / f".{path.name}.tmp-{token}"
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if not replace:
            try:
                os.rename(tmp, path)
            except OSError:
                if not path.exists():
                    raise
        elif path.exists():
            old = path.parent / f".{path.name}.old-{token}"
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            shutil.rmtree(old)
        else:
            os.rename(tmp, path)
        _fsync_folder(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for root, _, names in os.walk(folder):
        for name in names:
            fd = os.open(Path(root) / name, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_folder(Path(root))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a file, read in chunks (bounded memory on large files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- JSON


def json_default(value: Any) -> Any:
    """JSON encoding for the values our documents hold (NumPy scalars and arrays, dates, paths); for ``json.dumps``."""
    import numpy as np

    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a JSON document")


def dumps(document: Any) -> str:
    """A stored JSON document: sorted keys, two-space indent, no NaN (for people and diffs, not for hashing)."""
    return json.dumps(document, indent=2, sort_keys=True, default=json_default, allow_nan=False)


def json_value(value: Any, where: str = "value") -> Any:
    """`value` as plain JSON types: NumPy values, dates and paths as `json_default` writes them, tuples as lists.

    Args:
        value: the value to convert.
        where: what `value` is, named in errors (``"certificate"``, ``"privacy_charged"``).

    Raises:
        JsonValueError: NaN, an infinity, an integer beyond `MAX_SAFE_INTEGER`, a
            non-text key or a value of another type; the message says where.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise JsonValueError(
                f"{where} is the integer {value}, beyond what JSON numbers hold exactly (2^53 - 1).",
                fix="store it as text.",
            )
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise JsonValueError(
                f"{where} is {value!r}; JSON holds only finite numbers.",
                fix="record an unmeasured figure as None (null).",
            )
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise JsonValueError(f"{where} has the non-text key {key!r}.", fix="use text keys only.")
            out[str(key)] = json_value(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [json_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    try:
        converted = json_default(value)
    except TypeError:
        raise JsonValueError(
            f"{where} is a {type(value).__name__}, which JSON cannot hold.",
            fix="pass text, numbers, true/false, null, lists and objects with text keys.",
        ) from None
    return json_value(converted, where)


def canonical_json(value: Any, where: str = "value") -> bytes:
    """The RFC 8785 (JCS) canonical UTF-8 bytes of `value`: what every hash and signature is taken over.

    Keys are sorted by their UTF-16 code units, numbers written as ECMAScript
    does (``1.0`` is ``1``, ``1e21`` is ``1e+21``), text as UTF-8 without
    escapes beyond the required ones, and no white space: one value, one byte
    string, whatever the platform or the order it was built in.

    Raises:
        JsonValueError: `value` holds something JSON cannot hold exactly (see
            `json_value`), or text that is not valid Unicode.
    """
    import rfc8785

    try:
        return rfc8785.dumps(json_value(value, where))
    except rfc8785.CanonicalizationError as error:
        raise JsonValueError(f"{where} cannot be canonicalised: {error}.", fix="pass valid Unicode text.") from None
