"""A run killed with SIGKILL in the middle of a DP training step, then re-executed: nothing is charged twice,
nothing half-written is visible, the lineage chain verifies and stored DP outputs are re-released.

The run is a real Dagster run in a separate process (`dagster.execute_job`
against a file-backed DAGSTER_HOME with the project's dagster.yaml). The test
waits — by polling the privacy ledger, not by sleeping a guessed time — until
``lstm_cascade`` has charged its DP-SGD spend and is training, kills the whole
process group, marks the run failed and frees its concurrency slots (what
Dagster's run monitoring does for a dead run worker), re-executes it from
failure, and finally runs the same job and partition afresh.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from pipelines.cli import ensure_dagster_home
from resources.ledger import PrivacyLedger
from resources.lineage import LineageTrail
from resources.settings import Settings
from resources.storage import MANIFEST, POINTER, VersionedStore
from tests.conftest import DP_DOMAINS, write_dp_landing

REPO = Path(__file__).resolve().parents[1]
TENANT = "dpbank"
ASSETS = ["raw_loan_tape", "fitted_copula", "lstm_cascade"]
# enough DP-SGD epochs that the training step is still running when the test kills it
RUN_CONFIG = {
    "execution": {"config": {"in_process": {}}},
    "ops": {"lstm_cascade": {"config": {"epochs": 12, "hidden_size": 16}}},
}
PRIVACY = {"k": 5, "epsilon": 1.0, "epsilon_budget": 10.0, "delta": 1e-6, "domains": DP_DOMAINS}
KILL_DEADLINE_S = 120


def tenant_job() -> dg.JobDefinition:
    """The project's tenant job, for `dagster.build_reconstructable_job` (settings from the environment)."""
    from pipelines.definitions import build_definitions

    return build_definitions(Settings.from_env()).resolve_job_def("tenant_pipeline")


def _reconstructable():
    return dg.build_reconstructable_job(__name__, "tenant_job")


def run_in_subprocess() -> None:
    """The killed process: one run of the job for the tenant, on the instance in DAGSTER_HOME."""
    with dg.DagsterInstance.get() as instance:
        dg.execute_job(
            _reconstructable(), instance, run_config=RUN_CONFIG, tags={"dagster/partition": TENANT},
            asset_selection=[dg.AssetKey(a) for a in ASSETS],
        )


def _charges(settings: Settings) -> list:
    try:
        with PrivacyLedger(settings.ledger) as ledger:
            return list(ledger.status(TENANT).charges)
    except Exception:  # noqa: BLE001 - the ledger or the tenant's budget may not exist yet
        return []


def _assert_storage_consistent(settings: Settings) -> None:
    """CURRENT of each asset names a complete version whose files match its manifest; no partial version shows."""
    for asset in ASSETS:
        store = VersionedStore(settings.data_dir, [asset], TENANT)
        if not store.dir.exists():
            continue
        pointer = store.dir / POINTER
        if pointer.exists():
            assert store.current() is not None, f"{asset}: CURRENT names a version without a manifest"
        for version in store.dir.iterdir():
            if version.name.startswith(".") or version.name == POINTER:
                continue  # staging folders of a killed write are hidden and never read
            manifest = json.loads((version / MANIFEST).read_text())  # every visible version is complete
            for name, info in manifest["files"].items():
                digest = hashlib.sha256((version / name).read_bytes()).hexdigest()
                assert digest == info["sha256"], f"{asset}/{version.name}/{name} does not match its manifest"
            content = hashlib.sha256(
                "".join(f"{n}\0{manifest['files'][n]['sha256']}\n" for n in sorted(manifest["files"])).encode()
            ).hexdigest()
            assert content == manifest["content_sha256"]


def _records(settings: Settings, run_id: str) -> dict:
    with LineageTrail(settings.lineage) as trail:
        return {r.asset: r for r in trail.history(TENANT) if r.run_id == run_id}


def _failures(result) -> str:
    return "; ".join(
        f"{e.step_key}: {e.event_specific_data.error.to_string()[-3000:]}" for e in result.get_step_failure_events()
    ) or "no step failed"


@pytest.fixture
def dp_tenant(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_dp_landing(data / "landing" / TENANT, PRIVACY, rows=1200)
    monkeypatch.setenv("CREDITTWIN_DATA_DIR", str(data))
    monkeypatch.delenv("CREDITTWIN_LEDGER_URL", raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(data / "dagster_home"))
    settings = Settings.from_env()
    ensure_dagster_home(settings)  # the project's dagster.yaml: SQLite storage in DAGSTER_HOME
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("tenants", [TENANT])
    return settings


def test_a_run_killed_mid_step_reexecutes_without_double_charges_or_broken_lineage(dp_tenant):
    settings = dp_tenant
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.monotonic()

    # run: a real run in its own process group, killed while lstm_cascade trains under its DP-SGD charge
    log = settings.data_dir.parent / "killed_run.log"
    with open(log, "wb") as output:  # a file, not a pipe: a full pipe would stall the run
        process = subprocess.Popen(
            [sys.executable, "-c", f"from {__name__} import run_in_subprocess; run_in_subprocess()"],
            cwd=REPO, env=env, start_new_session=True, stdout=output, stderr=subprocess.STDOUT,
        )
    try:
        while not any(c.asset == "lstm_cascade" for c in _charges(settings)):
            assert process.poll() is None, "the run ended before it was killed:\n" + log.read_text()[-4000:]
            assert time.monotonic() - started < KILL_DEADLINE_S, "lstm_cascade was never charged"
            time.sleep(0.05)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    killed_at = time.monotonic() - started
    assert process.returncode == -signal.SIGKILL

    # assert: the kill left a charged, unfinished step; everything stored and recorded is whole
    assert VersionedStore(settings.data_dir, ["lstm_cascade"], TENANT).current() is None, "killed too late"
    first_charges = _charges(settings)
    assert sorted(c.asset for c in first_charges) == ["fitted_copula", "lstm_cascade"]
    _assert_storage_consistent(settings)
    with LineageTrail(settings.lineage) as trail:
        assert trail.verify(TENANT).ok
    with dg.DagsterInstance.get() as instance:
        (killed,) = instance.get_runs()
        assert killed.status == dg.DagsterRunStatus.STARTED  # nobody told Dagster: the worker just vanished
        killed_records = _records(settings, killed.run_id)
        assert set(killed_records) == {"raw_loan_tape", "fitted_copula"}

        # run: recover as Dagster's run monitoring would, then re-execute from the failure
        instance.report_run_failed(killed, "run worker killed with SIGKILL (test)")
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(killed.run_id)
        options = dg.ReexecutionOptions.from_failure(killed.run_id, instance)
        # the Python API does not carry the parent's partition tag over (the daemon's and the UI's re-execution do)
        with dg.execute_job(
            _reconstructable(), instance, reexecution_options=options, tags={"dagster/partition": TENANT}
        ) as reexecution:
            assert reexecution.success, _failures(reexecution)
            reexecution_id = reexecution.run_id
            redone_assets = {e.asset_key.to_user_string() for e in reexecution.get_asset_materialization_events()}
        assert redone_assets == {"lstm_cascade"}  # only what the killed run had not finished
        assert instance.get_run_by_id(reexecution_id).parent_run_id == killed.run_id

        # run: a fresh run of the same job and partition
        fresh = tenant_job().execute_in_process(
            partition_key=TENANT, instance=instance, run_config={"ops": RUN_CONFIG["ops"]},
            asset_selection=[dg.AssetKey(a) for a in ASSETS], raise_on_error=False,
        )
        assert fresh.success, _failures(fresh)
    total = time.monotonic() - started

    # assert: one charge per (asset, idempotency key), the ones made before the kill
    charges = _charges(settings)
    assert [(c.id, c.idempotency_hash) for c in charges] == [(c.id, c.idempotency_hash) for c in first_charges]
    assert len({(c.asset, c.idempotency_hash) for c in charges}) == len(charges) == 2
    by_asset = {c.asset: c for c in charges}
    _assert_storage_consistent(settings)

    # the lineage: one record per step and run, in one verifying chain
    with LineageTrail(settings.lineage) as trail:
        report = trail.verify(TENANT)
        assert report.ok, report.reason
        history = trail.history(TENANT)
    assert [(r.run_id, r.asset) for r in history] == (
        [(killed.run_id, "raw_loan_tape"), (killed.run_id, "fitted_copula"), (reexecution_id, "lstm_cascade")]
        + [(fresh.run_id, a) for a in ("raw_loan_tape", "fitted_copula", "lstm_cascade")]
    )
    redone = _records(settings, reexecution_id)["lstm_cascade"]
    assert redone.privacy_charged["ledger_charge_id"] == by_asset["lstm_cascade"].id
    assert redone.privacy_charged["charged_in_run"] == killed.run_id and not redone.privacy_charged["new_charge"]

    # the fresh run re-released the stored DP outputs under the same charges: same bytes, no new noise
    again = _records(settings, fresh.run_id)
    assert again["fitted_copula"].output_hash == killed_records["fitted_copula"].output_hash
    assert again["lstm_cascade"].output_hash == redone.output_hash
    for asset in ("fitted_copula", "lstm_cascade"):
        assert again[asset].privacy_charged["ledger_charge_id"] == by_asset[asset].id
        assert not again[asset].privacy_charged["new_charge"]
        stored = VersionedStore(settings.data_dir, [asset], TENANT).read()
        assert stored.manifest["content_sha256"] == again[asset].output_hash
        assert stored.document("privacy")["ledger_charge_id"] == by_asset[asset].id
    re_released = {
        e.event_specific_data.materialization.asset_key.to_user_string()
        for e in fresh.get_asset_materialization_events()
        if e.event_specific_data.materialization.metadata.get("re_released")
    }
    assert re_released == {"fitted_copula", "lstm_cascade"}
    print(f"killed after {killed_at:.1f}s; killed run, re-execution and fresh run took {total:.1f}s")
