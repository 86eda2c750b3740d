"""The versioned store and the paid-release store behave the same on local disk and on S3 (a real moto server).

The behaviour tests run on both backends: the data root as a local folder, and
as ``s3://<bucket>/data`` on the S3-compatible server tests/conftest.py starts.
Then the storage settings, and the IO manager and the tenant graph on S3.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

import resources.storage as storage
from models.errors import InvalidTenantError, UnsafePathError
from models.privacy.accounting import MechanismSpec
from models.results import Parts, StressOutcome, TwinModel, as_result
from resources.ledger import IdempotencyKey, PrivacyLedger, default_ledger_url
from resources.objectstore import LocalRoot, ObjectRoot, StorageConfigError, check_data_url
from resources.paid import PAID_DIR, paid_release, store_paid_release
from resources.settings import Settings
from resources.storage import MANIFEST, POINTER, ObjectVersionedStore, TenantStorageIOManager, open_store
from tests.conftest import DP_DOMAINS, failure_text, materialize_tenant, write_dp_landing

TENANT = "acme"
DAY_NS = 86_400 * 10**9


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path: Path) -> LocalRoot | ObjectRoot:
    """The data root on one backend."""
    if request.param == "local":
        return LocalRoot(tmp_path / "data")
    url, options = request.getfixturevalue("s3_bucket")
    return ObjectRoot(url, options, cache_dir=tmp_path / "cache")


def _parts(value: int) -> Parts:
    return Parts(tables={"t": pl.DataFrame({"i": [value]})}, documents={"doc": {"value": value}},
                 files={"model/weights.bin": bytes([value]) * 16})


def _rel(root, store) -> str:
    """The store's folder as a key of `root`."""
    return store.dir.relative_to(root.base).as_posix() if isinstance(root, LocalRoot) else store.dir


def _complete_versions(root, store) -> list[str]:
    rel = _rel(root, store)
    return [n for n in root.names(rel) if n.startswith("v") and root.exists(root.key(rel, n, MANIFEST))]


def _on_pointer_write(monkeypatch, root, store, before=None, after=None) -> list[str]:
    """Call `before()` / `after()` around each write of CURRENT by `store`; returns the keys it puts, in order."""
    written: list[str] = []
    if isinstance(root, LocalRoot):
        original = storage.atomic_write_text

        def write_text(path, text, **kwargs):
            if Path(path).name == POINTER and before:
                before()
            done = original(path, text, **kwargs)
            if Path(path).name == POINTER and after:
                after()
            return done

        monkeypatch.setattr(storage, "atomic_write_text", write_text)
    else:
        put = root.put

        def recording_put(key, data):
            written.append(key)
            if key.endswith("/" + POINTER) and before:
                before()
            put(key, data)
            if key.endswith("/" + POINTER) and after:
                after()

        monkeypatch.setattr(root, "put", recording_put)
    return written


def test_a_typed_result_round_trips(root):
    # setup
    store = open_store(root, ["stress_test"], TENANT)
    result = StressOutcome(results=pl.DataFrame({"scenario": ["base", "severe"], "loss": [0.01, 0.07]}),
                           stress={"scenarios": 2}, files={"charts/loss.png": b"\x89PNG fake", "stress.pdf": b"%PDF"})
    # run
    location, manifest = store.write(result.to_parts(), run_id="run12345", kind="StressOutcome")
    loaded = as_result("stress_test", store.read())
    # assert
    assert isinstance(loaded, StressOutcome)
    assert loaded.results.equals(result.results)
    assert loaded.stress == {"scenarios": 2}
    assert (loaded.path / "charts" / "loss.png").read_bytes() == b"\x89PNG fake"
    assert (loaded.path / "stress.pdf").read_bytes() == b"%PDF"
    assert loaded.content_sha256 == manifest["content_sha256"]
    assert set(manifest["files"]) == {"results.parquet", "stress.json", "charts/loss.png", "stress.pdf"}
    assert str(location).endswith(store.current_version())
    assert str(location).startswith("s3://" if isinstance(root, ObjectRoot) else str(root.base))


def test_an_older_version_is_read_by_name_and_only_the_parts_asked_for(root):
    # setup: two versions
    store = open_store(root, ["stress_test"], TENANT)
    store.write(_parts(1), run_id="run00001", kind="Parts")
    store.write(_parts(2), run_id="run00002", kind="Parts")
    first, second = store.versions()
    # run
    old = store.read(first)
    one_document = store.read(second, parts=("doc",))
    # assert: the named version, whole; or its manifest and the one document, no table, nothing downloaded
    assert old.documents == {"doc": {"value": 1}} and old.tables["t"]["i"].to_list() == [1]
    assert one_document.documents == {"doc": {"value": 2}} and one_document.tables == {}
    assert one_document.manifest["version"] == second
    if isinstance(root, ObjectRoot):
        assert one_document.path is None
    with pytest.raises(KeyError):
        store.read("v1-not-a-version")


def test_current_moves_only_after_the_manifest(root, monkeypatch):
    # setup
    store = open_store(root, ["a"], TENANT)
    store.write(_parts(1), run_id="first", kind="artifact")
    first = store.current_version()
    seen = []
    written = _on_pointer_write(
        monkeypatch, root, store, before=lambda: seen.append((store.current_version(), _complete_versions(root, store)))
    )
    # run
    store.write(_parts(2), run_id="second", kind="artifact")
    # assert: when CURRENT was written the new version was already complete, and CURRENT still named the first
    ((current_then, complete_then),) = seen
    assert current_then == first
    assert len(complete_then) == 2 and store.current_version() in complete_then
    assert store.current_version() != first
    assert store.read().table("t")["i"].to_list() == [2]
    if written:  # on S3 every PUT is seen: the version's files, then its manifest, then CURRENT
        assert written[-1].endswith("/" + POINTER) and written[-2].endswith("/" + MANIFEST)
        assert all(key.startswith(f"{store.dir}/{store.current_version()}/") for key in written[:-1])


@pytest.mark.parametrize("failure", ["bad document", "storage fails at the manifest"])
def test_a_failed_write_leaves_the_last_good_version_current(root, monkeypatch, failure):
    # setup
    store = open_store(root, ["a"], TENANT)
    store.write(_parts(1), run_id="good", kind="artifact")
    good = store.current_version()
    bad = _parts(2)
    if failure == "bad document":
        bad.documents["broken"] = {"x": object()}
        expected = TypeError
    else:
        expected = OSError
        if isinstance(root, LocalRoot):
            def refuse(*args):
                raise OSError("disk full")

            monkeypatch.setattr(storage.os, "replace", refuse)
        else:
            put = root.put

            def put_until_the_manifest(key, data):
                if key.endswith("/" + MANIFEST):
                    raise OSError("connection reset")
                put(key, data)

            monkeypatch.setattr(root, "put", put_until_the_manifest)
    # run
    with pytest.raises(expected):
        store.write(bad, run_id="bad", kind="artifact")
    # assert: the good version is current and whole, and the failed one left nothing behind
    monkeypatch.undo()
    assert store.current_version() == good
    assert store.read().table("t")["i"].to_list() == [1]
    assert root.names(_rel(root, store)) == [POINTER, good]


def test_a_half_written_version_is_ignored_and_cleared_once_stale(root):
    # setup: a good version, then two writes that died after their files, before their manifest: one long ago,
    # one that may still be going on
    store = open_store(root, ["a"], TENANT)
    store.write(_parts(1), run_id="good", kind="artifact")
    good = store.current_version()
    rel = _rel(root, store)
    now = time.time_ns()
    if isinstance(root, LocalRoot):  # on disk a write stages its files in a hidden folder, renamed in whole
        stale, fresh = f".v{now - 2 * DAY_NS}-dead.x1", f".v{now}-live.x2"
    else:  # on S3 a write puts its files under the version's own prefix, the manifest last
        stale, fresh = f"v{now - 2 * DAY_NS}-dead-00000000", f"v{now}-live-00000000"
    for name in (stale, fresh):
        root.put(root.key(rel, name, "t.parquet"), b"not a finished table")
    if isinstance(root, LocalRoot):
        old = time.time() - 2 * 86_400
        os.utime(root.path(root.key(rel, stale)), (old, old))
    # run / assert: the readers see only the good version
    assert store.current_version() == good
    assert store.read().table("t")["i"].to_list() == [1]
    # run: the next write prunes
    store.write(_parts(2), run_id="next", kind="artifact")
    # assert: the dead write is cleared, the one that may still be running is kept
    names = root.names(rel)
    assert stale not in names and fresh in names
    assert store.read().table("t")["i"].to_list() == [2]


def test_pruning_keeps_three_versions_and_never_the_current_one(root, monkeypatch):
    # setup: four versions
    store = open_store(root, ["a"], TENANT)
    for i in range(4):
        store.write(_parts(i), run_id=f"r{i}", kind="artifact")
    oldest = sorted(_complete_versions(root, store))[0]
    rel = _rel(root, store)
    assert len(_complete_versions(root, store)) == 3
    # a writer on another machine, with a clock behind, moves CURRENT to the oldest version just as this one
    # moved it to its own: the prune that follows must keep it
    put = root.put
    _on_pointer_write(monkeypatch, root, store, after=lambda: put(root.key(rel, POINTER), (oldest + "\n").encode()))
    # run
    store.write(_parts(9), run_id="r9", kind="artifact")
    # assert
    versions = _complete_versions(root, store)
    assert oldest in versions
    assert store.current_version() == oldest
    assert store.read().table("t")["i"].to_list() == [1]
    monkeypatch.undo()
    for i in range(5):
        store.write(_parts(10 + i), run_id=f"s{i}", kind="artifact")
    assert len(_complete_versions(root, store)) == 3
    assert store.read().table("t")["i"].to_list() == [14]


@pytest.mark.parametrize("parts", [["..", "etc"], ["/etc/passwd"], ["a", "..", "..", "b"], ["a/../../b"]])
def test_paths_that_leave_the_root_are_refused(root, parts):
    # run / assert
    with pytest.raises(UnsafePathError, match="outside the data root|absolute"):
        root.key(*parts)


def test_unsafe_tenants_assets_and_stored_names_are_refused(root):
    # run / assert: tenant ids are validated, asset paths and file names kept under the root
    with pytest.raises(InvalidTenantError):
        open_store(root, ["a"], "../evil")
    with pytest.raises(UnsafePathError):
        open_store(root, ["..", ".."], TENANT)
    store = open_store(root, ["a"], TENANT)
    with pytest.raises(UnsafePathError):
        store.write(Parts(files={"../../escape.bin": b"x"}), run_id="r", kind="artifact")
    # a CURRENT that names something outside the store is refused, not followed
    rel = _rel(root, store)
    root.put(root.key(rel, POINTER), b"../../../secrets\n")
    with pytest.raises(UnsafePathError):
        store.read()
    assert not root.exists(root.key("escape.bin"))


def _charge(tmp_path: Path):
    """A real charge from a real ledger (SQLite), for the paid-release store."""
    with PrivacyLedger(default_ledger_url(tmp_path / "ledger")) as ledger:
        ledger.migrate()
        ledger.ensure_budget(TENANT, 10.0, 1e-5)
        return ledger.charge(
            tenant=TENANT, asset="fitted_copula", run_id="run-1", mechanism=MechanismSpec(kind="laplace", epsilon=0.5),
            idempotency=IdempotencyKey(tenant=TENANT, asset="fitted_copula", input_data_version="dv-1",
                                       config_hash="cfg-1", seed=7),
        )


def test_concurrent_writers_under_one_paid_charge_keep_exactly_one_output(root, tmp_path):
    # setup: eight workers made eight different noisy models under the same charge
    charge = _charge(tmp_path)
    writers = 8
    barrier = threading.Barrier(writers)
    kept: list[Parts | BaseException] = [None] * writers

    def store(i: int) -> None:
        artifact = Parts(documents={"made_by": i},
                         files={"model/weights.bin": bytes([i]) * 64, "model/meta.json": b"{}"})
        barrier.wait()
        try:
            kept[i] = store_paid_release(root, "fitted_copula", TENANT, charge, artifact)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            kept[i] = error

    threads = [threading.Thread(target=store, args=(i,)) for i in range(writers)]
    # run
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # assert: every worker got the same one output back, and only its files are left in the store
    assert all(isinstance(k, Parts) for k in kept), kept
    winner = kept[0].documents["made_by"]
    assert all(k.documents == {"made_by": winner} and k.files == kept[0].files for k in kept)
    assert kept[0].files["model/weights.bin"] == bytes([winner]) * 64
    folder = root.key(*PAID_DIR, TENANT, "fitted_copula", charge.idempotency_hash)
    manifest = json.loads(root.get(root.key(folder, "paid.json")))
    assert sorted(root.names(folder)) == sorted(["paid.json", manifest["files_dir"]])
    assert paid_release(root, "fitted_copula", TENANT, charge).files == kept[0].files


def test_a_paid_release_stored_before_attempt_folders_still_loads(tmp_path):
    # setup: the layout written before: files under files/, a manifest without files_dir
    charge = _charge(tmp_path)
    root = LocalRoot(tmp_path / "data")
    folder = root.key(*PAID_DIR, TENANT, "fitted_copula", charge.idempotency_hash)
    root.put(root.key(folder, "files", "model/w.bin"), b"old bytes")
    digest = hashlib.sha256(b"old bytes").hexdigest()
    root.put(root.key(folder, "paid.json"),
             json.dumps({"charge_id": charge.id, "documents": {"d": 1}, "files": {"model/w.bin": digest}}).encode())
    # run / assert
    assert paid_release(root, "fitted_copula", TENANT, charge).files == {"model/w.bin": b"old bytes"}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://bucket/../other", "empty, '.' or '..' segment"),
        ("s3://", "no bucket"),
        ("s3://bucket/a?versionId=1", "a query"),
        ("nosuchfs://bucket", "protocol 'nosuchfs'"),
    ],
)
def test_a_bad_data_url_is_refused_with_its_variable(tmp_path, url, message):
    # run / assert
    with pytest.raises(StorageConfigError, match="CREDITTWIN_DATA_URL") as caught:
        Settings.from_env({"CREDITTWIN_DATA_DIR": str(tmp_path), "CREDITTWIN_DATA_URL": url})
    assert message in str(caught.value)


def test_storage_settings_are_read_and_checked(tmp_path):
    # run
    settings = Settings.from_env({
        "CREDITTWIN_DATA_DIR": str(tmp_path),
        "CREDITTWIN_DATA_URL": "s3://bucket/prefix/",
        "CREDITTWIN_STORAGE_OPTIONS": '{"endpoint_url": "http://minio:9000", "key": "k", "secret": "s"}',
        "CREDITTWIN_CACHE_DIR": str(tmp_path / "cache"),
    })
    local = Settings.from_env({"CREDITTWIN_DATA_DIR": str(tmp_path)})
    # assert
    assert settings.storage_url == "s3://bucket/prefix"
    assert settings.storage_options["endpoint_url"] == "http://minio:9000"
    assert settings.storage_options_var == "CREDITTWIN_STORAGE_OPTIONS"
    assert isinstance(settings.storage_root(), ObjectRoot) and settings.storage_cache == (tmp_path / "cache").resolve()
    assert isinstance(local.storage_root(), LocalRoot) and local.storage_url == str(tmp_path.resolve())
    assert check_data_url(f"file://{tmp_path}") == str(tmp_path.resolve())
    # the landing zone follows an object-store data root (workers elsewhere read uploads), unless set on its own
    assert settings.landing_location == "s3://bucket/prefix/landing" and not settings.landing_zone().local
    assert local.landing_location == str(tmp_path.resolve() / "landing") and local.landing_zone().local
    apart = Settings.from_env({"CREDITTWIN_DATA_DIR": str(tmp_path), "CREDITTWIN_DATA_URL": "s3://bucket/prefix",
                               "CREDITTWIN_LANDING_URL": "s3://inbound/lenders"})
    assert apart.landing_location == "s3://inbound/lenders"
    with pytest.raises(StorageConfigError, match="CREDITTWIN_LANDING_URL"):
        Settings.from_env({"CREDITTWIN_LANDING_URL": "s3://inbound/../x"})
    for options, message in (("[1, 2]", "not a JSON object"), ("{oops", "not valid JSON")):
        with pytest.raises(StorageConfigError, match=message):
            Settings.from_env({"CREDITTWIN_DATA_URL": "s3://b", "CREDITTWIN_STORAGE_OPTIONS": options})
    with pytest.raises(StorageConfigError, match="nor CREDITTWIN_LANDING_URL is an object-store URL"):
        Settings.from_env({"CREDITTWIN_DATA_DIR": str(tmp_path), "CREDITTWIN_STORAGE_OPTIONS": "{\"anon\": true}"})


# ------------------------------------------------------------------ the IO manager on S3

PARTITIONS = dg.StaticPartitionsDefinition([TENANT])


@dg.asset(name="fitted_copula", partitions_def=PARTITIONS)
def small_model() -> TwinModel:
    return TwinModel(summary={"columns_modelled": ["a"]}, files={"model/weights.json": b'{"w": [1, 2, 3]}'})


@dg.asset(partitions_def=PARTITIONS)
def model_size(fitted_copula: TwinModel) -> pl.DataFrame:
    # the downstream step opens the saved model from disk, as the real ones do
    weights = json.loads((fitted_copula.folder(TwinModel.MODEL_DIR) / "weights.json").read_bytes())
    return pl.DataFrame({"weights": [len(weights["w"])], "columns": [len(fitted_copula.summary["columns_modelled"])]})


def test_the_io_manager_materializes_assets_on_s3(tmp_path, s3_bucket):
    # setup: outputs on S3, credentials passed as fields (nothing read from or set in the environment)
    url, options = s3_bucket
    io_manager = TenantStorageIOManager(data_dir=str(tmp_path / "data"), data_url=url,
                                       storage_options=json.dumps(options), cache_dir=str(tmp_path / "cache"))
    # run
    with dg.instance_for_test() as instance:
        result = dg.materialize([small_model, model_size], partition_key=TENANT, instance=instance,
                                resources={"io_manager": io_manager})
        again = dg.materialize([small_model, model_size], partition_key=TENANT, instance=instance,
                               resources={"io_manager": io_manager}, selection=[model_size])
    # assert: both outputs are on S3, readable by any machine, and nothing was stored on local disk
    assert result.success and again.success
    root = ObjectRoot(url, options, cache_dir=tmp_path / "other-machine-cache")
    model = open_store(root, ["fitted_copula"], TENANT)
    size = open_store(root, ["model_size"], TENANT)
    assert isinstance(model, ObjectVersionedStore)
    assert size.read().table("data").to_dicts() == [{"weights": 3, "columns": 1}]
    loaded = as_result("fitted_copula", model.read())
    assert (loaded.folder("model") / "weights.json").read_bytes() == b'{"w": [1, 2, 3]}'
    path = result.asset_materializations_for_node("fitted_copula")[0].metadata["path"].value
    assert path == f"{url}/assets/fitted_copula/{TENANT}/{model.current_version()}"
    assert len(_complete_versions(root, size)) == 2
    assert not (tmp_path / "data" / "assets").exists()


def test_a_dp_tenant_runs_on_s3_paid_once_and_re_released_from_there(tmp_path, s3_bucket):
    # setup: the real ingest and DP twin, the data root on S3, the landing zone and the ledger local
    url, options = s3_bucket
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0, data_url=url, storage_options=options,
                        landing_url=str(tmp_path / "data" / "landing"))
    privacy = {"k": 5, "epsilon": 1.0, "epsilon_budget": 1.5, "delta": 1e-6, "domains": DP_DOMAINS}
    write_dp_landing(tmp_path / "data" / "landing" / "dpbank", privacy, rows=600)
    # run: fit, then fit again on the same upload (a re-execution on any machine)
    with dg.instance_for_test() as instance:
        first = materialize_tenant(settings, instance, "dpbank", ["raw_loan_tape", "fitted_copula"])
        again = materialize_tenant(settings, instance, "dpbank", ["fitted_copula"])
    # assert: charged once, the paid model kept on S3 and released again byte for byte
    assert first.success, failure_text(first)
    assert again.success, failure_text(again)
    with PrivacyLedger(settings.ledger) as ledger:
        (charge,) = ledger.status("dpbank").charges
    root = settings.storage_root()
    assert root.names(root.key(*PAID_DIR, "dpbank", "fitted_copula")) == [charge.idempotency_hash]
    store = open_store(root, ["fitted_copula"], "dpbank")
    versions = _complete_versions(root, store)
    assert len(versions) == 2
    sums = {json.loads(root.get(root.key(store.dir, v, MANIFEST)))["content_sha256"] for v in versions}
    assert len(sums) == 1
    model = as_result("fitted_copula", store.read())
    assert model.load() is not None  # the saved engine loads from the local cache of its S3 version
    assert not (settings.data_dir / "assets").exists() and not (settings.data_dir / "privacy").exists()


def test_a_tenant_certified_on_s3_exports_a_bundle_that_verifies(tmp_path, s3_bucket):
    # setup: the graph up to the certificate, every output on S3 (small and fast: few epochs, few attacks)
    from models.reports.certificate import verify_certificate
    from models.tape.demo import generate_portfolio, write_landing
    from pipelines.lineage_audit import audit_tenant
    from pipelines.release import deployment_keys, export_release

    url, options = s3_bucket
    settings = Settings(data_dir=tmp_path / "data", sensor_settle_seconds=0, data_url=url, storage_options=options)
    folder = tmp_path / "upload"  # the lender's machine: the tape goes up to the landing zone on S3
    write_landing(generate_portfolio(700, months=6, seed=5), folder, fmt="parquet")
    config = yaml.safe_load((folder / "tenant.yaml").read_text())
    config["audit"] = {"n_attacks": 200, "anonymeter_sample_size": 400}
    (folder / "tenant.yaml").write_text(yaml.safe_dump(config))
    settings.landing_zone().publish("bank", sorted(folder.iterdir()))
    upto = ["raw_loan_tape", "fitted_copula", "lstm_cascade", "synthetic_portfolio", "anonymized_portfolio",
            "privacy_audit", "privacy_certificate"]
    with dg.instance_for_test() as instance:
        result = materialize_tenant(settings, instance, "bank", upto,
                                    run_config={"ops": {"lstm_cascade": {"config": {"epochs": 4, "hidden_size": 16}}}})
    assert result.success, failure_text(result)
    # run: export on a machine that has none of it cached
    fresh = Settings(data_dir=settings.data_dir, sensor_settle_seconds=0, data_url=url, storage_options=options,
                     cache_dir=tmp_path / "fresh-cache")
    manifest = export_release(fresh, "bank", tmp_path / "bundle")
    # assert: the bundle's files are the certified bytes, and the certificate verifies against them
    names = {entry["name"] for entry in manifest["files"]}
    assert {"loans.parquet", "loans.csv", "certificate.json", "certificate.pdf"} <= names
    checked = verify_certificate(tmp_path / "bundle" / "certificate.json", data_dir=tmp_path / "bundle",
                                 trusted_keys=deployment_keys(fresh), environment=fresh.environment)
    assert checked.ok, checked.problems
    assert not (settings.data_dir / "assets").exists() and not (settings.data_dir / "landing").exists()
    # the lineage audit finds the certificate's id in its version on S3
    audit = audit_tenant(fresh, "bank")
    assert audit.report.ok and audit.certificate_id and audit.certificate_id.startswith("bank-")
    assert f'"{audit.certificate_id}"' in (tmp_path / "bundle" / "certificate.json").read_text()
