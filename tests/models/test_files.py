"""The file and JSON primitives every module writes and hashes through (models.files)."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from models.errors import CreditTwinError, JsonValueError
from models.files import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_text,
    canonical_json,
    dumps,
    json_value,
    sha256_file,
)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- atomic files


def test_atomic_write_replaces_the_file_with_a_private_one_and_leaves_no_temporary(tmp_path):
    # setup
    target = tmp_path / "sub" / "f.bin"
    # run
    first = atomic_write_bytes(target, b"old")
    second = atomic_write_text(target, "new \u00e9")
    # assert
    assert first and second
    assert target.read_text(encoding="utf-8") == "new \u00e9"
    assert target.stat().st_mode & 0o777 == 0o600
    assert _names(target.parent) == ["f.bin"]


def test_a_failed_atomic_write_leaves_the_old_content_and_no_partial_file(tmp_path):
    # setup
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    # run / assert
    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["f.bin"]


def test_an_exclusive_write_never_overwrites(tmp_path):
    # setup
    target = tmp_path / "key.pem"
    # run
    created = atomic_write_bytes(target, b"first", replace=False)
    again = atomic_write_bytes(target, b"second", replace=False)
    # assert
    assert (created, again) == (True, False)
    assert target.read_bytes() == b"first"
    assert _names(tmp_path) == ["key.pem"]


def test_atomic_directory_swaps_a_whole_folder_in(tmp_path):
    # setup
    target = tmp_path / "model"
    with atomic_directory(target) as staging:
        (staging / "a.json").write_text("1")
        (staging / "old-only.txt").write_text("x")
    # run
    with atomic_directory(target) as staging:
        assert not target.joinpath("b").exists() and staging.parent == tmp_path
        (staging / "a.json").write_text("2")
        (staging / "b").mkdir()
        (staging / "b" / "c.npz").write_bytes(b"\x00")
    # assert: the new folder replaced the old one entirely, and nothing is left beside it
    assert _names(target) == ["a.json", "b"]
    assert (target / "a.json").read_text() == "2"
    assert _names(tmp_path) == ["model"]


def test_a_failed_folder_write_keeps_the_old_folder_and_leaves_nothing_half_written(tmp_path):
    # setup
    target = tmp_path / "model"
    with atomic_directory(target) as staging:
        (staging / "a.json").write_text("good")
    # run
    with pytest.raises(RuntimeError, match="mid-write"):
        with atomic_directory(target) as staging:
            (staging / "a.json").write_text("half")
            raise RuntimeError("mid-write")
    # assert
    assert (target / "a.json").read_text() == "good"
    assert _names(tmp_path) == ["model"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    # setup: the rename that moves the new folder in fails (after the old one stepped aside)
    target = tmp_path / "model"
    with atomic_directory(target) as staging:
        (staging / "a.json").write_text("good")
    real_rename = os.rename

    def failing(source, destination):
        if Path(source).name.startswith(".model.tmp-"):
            raise OSError("disk gone")
        return real_rename(source, destination)

    monkeypatch.setattr(os, "rename", failing)
    # run
    with pytest.raises(OSError, match="disk gone"):
        with atomic_directory(target) as staging:
            (staging / "a.json").write_text("new")
    # assert
    assert (target / "a.json").read_text() == "good"
    assert _names(tmp_path) == ["model"]


def test_an_exclusive_folder_write_keeps_the_folder_published_first(tmp_path):
    # setup
    target = tmp_path / "paid"
    with atomic_directory(target, replace=False) as staging:
        (staging / "paid.json").write_text("first")
    # run
    with atomic_directory(target, replace=False) as staging:
        (staging / "paid.json").write_text("second")
    # assert
    assert (target / "paid.json").read_text() == "first"
    assert _names(tmp_path) == ["paid"]


def test_sha256_file_streams_the_file(tmp_path):
    # setup
    path = tmp_path / "f"
    path.write_bytes(b"abc" * 1000)
    # run / assert
    assert sha256_file(path, chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()


# --------------------------------------------------------------------------- JSON


def test_canonical_json_follows_rfc_8785():
    # run
    data = canonical_json({"b": 1.0, "a": "\u00e9<", "c": [1e21, 1e-7, 0.1, -0.0, 100], "\u20ac": None, "B": True})
    # assert: keys by UTF-16 code units, ES6 numbers, UTF-8 text, no white space
    assert data == '{"B":true,"a":"\u00e9<","b":1,"c":[1e+21,1e-7,0.1,0,100],"\u20ac":null}'.encode("utf-8")


def test_canonical_json_converts_what_stored_documents_hold():
    # setup: what json_default writes into stored documents
    value = {
        "n": np.int64(3),
        "x": np.float32(0.5),
        "ok": np.bool_(True),
        "arr": np.array([1.5, 2.0]),
        "day": date(2024, 1, 31),
        "at": datetime(2024, 1, 31, 12, tzinfo=timezone.utc),
        "path": Path("/data/x"),
        "pair": (1, "a"),
    }
    # run
    data = canonical_json(value)
    # assert: the same bytes as the plain values, and what json.dumps of the stored document reads back as
    plain = {"n": 3, "x": 0.5, "ok": True, "arr": [1.5, 2.0], "day": "2024-01-31",
             "at": "2024-01-31T12:00:00+00:00", "path": "/data/x", "pair": [1, "a"]}
    assert data == canonical_json(plain)
    assert json_value(value) == plain == json.loads(dumps(value)) | {"pair": [1, "a"]}


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2**60, {1: "a"}, object(), "\ud800"])
def test_canonical_json_refuses_values_json_cannot_hold_exactly(bad):
    # run / assert: a CreditTwin error naming where, and a ValueError for code that checks JSON generally
    with pytest.raises(JsonValueError, match=r"^report") as caught:
        canonical_json({"figure": bad}, "report")
    assert isinstance(caught.value, CreditTwinError) and isinstance(caught.value, ValueError)
