"""The landing zone: listing tenant folders and leaving readable rejection notes.

A rejection note (``<file>.rejected.txt``) is written next to the upload that
caused it, so the lender sees why without access to Dagster; a later accepted
upload removes the stale notes.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from models.files import atomic_write_text

REJECTED_SUFFIX = ".rejected.txt"


def write_rejection(folder: Path, file_name: str, message: str) -> Path:
    """Write `<folder>/<file_name>.rejected.txt` explaining the rejection; returns its path."""
    # file_name is one of our fixed upload names or a listed directory entry; never a caller's path
    note = folder / (Path(file_name).name + REJECTED_SUFFIX)
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    atomic_write_text(
        note,
        f"CreditTwin rejected this upload at {stamp}.\n\n{message}\n\n"
        "Fix the file and upload it again; the landing sensor retries on the next change.\n",
    )
    return note


def clear_rejections(folder: Path) -> None:
    """Remove stale rejection notes after an upload was accepted."""
    for note in folder.glob("*" + REJECTED_SUFFIX):
        if note.is_file() and not note.is_symlink():
            note.unlink(missing_ok=True)
