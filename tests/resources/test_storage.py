import json

import polars as pl
import pytest

from models.errors import InvalidTenantError, UnsafePathError
from models.results import Parts
from resources.storage import VersionedStore, safe_join


def test_safe_join_refuses_paths_outside_the_root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    assert safe_join(root, "assets", "x") == (root / "assets" / "x").resolve()
    for parts in (["..", "etc"], ["/etc/passwd"], ["link", "file"], ["a", "..", "..", "b"]):
        with pytest.raises(UnsafePathError, match="outside the data root|absolute"):
            safe_join(root, *parts)


def test_store_round_trip_and_manifest(tmp_path):
    store = VersionedStore(tmp_path, ["raw_loan_tape"], "acme")
    frame = pl.DataFrame({"a": [1, 2, 3]})
    path, manifest = store.write(
        Parts(tables={"loans": frame}, documents={"schema": {"x": 1}}, files={"model/m.json": b"{}"}),
        run_id="run12345",
        kind="artifact",
    )
    loaded = store.read()
    assert loaded.table("loans").equals(frame)
    assert loaded.document("schema") == {"x": 1}
    assert (loaded.path / "model" / "m.json").read_bytes() == b"{}"
    on_disk = json.loads((path / "manifest.json").read_text())
    assert on_disk["content_sha256"] == manifest["content_sha256"]
    assert set(on_disk["files"]) == {"loans.parquet", "schema.json", "model/m.json"}


def test_failed_write_keeps_the_last_good_output(tmp_path):
    # setup
    store = VersionedStore(tmp_path, ["raw_loan_tape"], "acme")
    store.write(Parts(tables={"loans": pl.DataFrame({"a": [1]})}), run_id="good", kind="artifact")
    # run: a document that cannot be encoded fails half way through the write
    with pytest.raises(TypeError):
        store.write(
            Parts(tables={"loans": pl.DataFrame({"a": [2]})}, documents={"bad": {"x": object()}}),
            run_id="bad",
            kind="artifact",
        )
    # assert
    assert store.read().table("loans")["a"].to_list() == [1]
    assert not [p for p in store.dir.iterdir() if p.name.startswith(".v")]


def test_store_keeps_three_versions(tmp_path):
    store = VersionedStore(tmp_path, ["a"], "acme")
    for i in range(5):
        store.write(Parts(tables={"t": pl.DataFrame({"i": [i]})}), run_id=f"r{i}", kind="artifact")
    versions = [p for p in store.dir.iterdir() if p.is_dir()]
    assert len(versions) == 3
    assert store.read().table("t")["i"].to_list() == [4]


def test_store_refuses_invalid_tenant(tmp_path):
    with pytest.raises(InvalidTenantError):
        VersionedStore(tmp_path, ["a"], "../evil")
