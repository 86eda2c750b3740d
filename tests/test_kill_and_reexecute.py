"""Runs killed with SIGKILL, then run again: nothing is charged twice, nothing half-written is CURRENT, the
lineage chain verifies, stored DP outputs are re-released, and no one frees anything by hand.

Each run is a real Dagster run in a separate process against a file-backed
DAGSTER_HOME with the project's dagster.yaml (one `training` pool slot). A
killed run stays STARTED and keeps its slot; the next run proceeds only because
`pipelines.recovery.fail_dead_runs` (run by `credittwin` before every run) sees
that the run's owning process is gone, marks it failed and frees its slots.

`test_credittwin_materialize_killed_at_the_charge_in_training_and_mid_write_recovers`
kills `credittwin materialize` at three points. The kill is injected in the
killed process itself (it wraps one function and sends itself SIGKILL right
there), so it lands exactly at the point on any machine, however busy; the test
waits on the process's death and on run records, never on a guessed sleep.
"""

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from pipelines.cli import ensure_dagster_home, main, materialize_tenant
from pipelines.recovery import fail_dead_runs, owner_tags
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
            _reconstructable(), instance, run_config=RUN_CONFIG, tags={"dagster/partition": TENANT, **owner_tags()},
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

        # run: the dead run is failed and its training slot freed by CreditTwin, then re-executed from the failure
        (dead,) = fail_dead_runs(instance, free_ended=True)
        assert dead.run_id == killed.run_id and dead.pid == process.pid
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
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


# ------------------------------------------------------------------ `credittwin materialize` killed at three points

KILL_POINTS = ("charge", "training", "write")
RUN_DEADLINE_S = 900  # one run of the whole graph, training included, on a busy 2-core machine


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def materialize_and_die(tenant: str, point: str) -> None:
    """`credittwin materialize <tenant>` in this process, which SIGKILLs itself at `point`:

    - "charge": as the first privacy charge returns (committed to the ledger, nothing computed under it yet);
    - "training": at the end of the first DP-SGD epoch of ``lstm_cascade``;
    - "write": while ``lstm_cascade``'s trained model is being written (files staged, not yet renamed into place).
    """
    if point == "charge":
        from resources.ledger import PrivacyLedger

        charge = PrivacyLedger.charge

        def charge_then_die(self, *args, **kwargs):
            charge(self, *args, **kwargs)
            _die()

        PrivacyLedger.charge = charge_then_die
    elif point == "training":
        from models.twin.dp import OpacusDPHook

        epoch_end = OpacusDPHook.on_epoch_end

        def first_epoch_then_die(self, epoch):
            epoch_end(self, epoch)
            _die()

        OpacusDPHook.on_epoch_end = first_epoch_then_die
    else:
        import resources.storage as storage

        digest = storage.sha256_file

        def die_while_writing_the_cascade(path):
            parts = Path(path).parts
            if "lstm_cascade" in parts and any(part.startswith(".v") for part in parts):  # a staging folder
                _die()
            return digest(path)

        storage.sha256_file = die_while_writing_the_cascade
    sys.exit(main(["materialize", tenant]))


def _run_until_killed(settings: Settings, point: str) -> str:
    """Start `credittwin materialize` that kills itself at `point`; wait for its death; return its output."""
    log = settings.data_dir.parent / f"killed_at_{point}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", f"from {__name__} import materialize_and_die; materialize_and_die({TENANT!r}, {point!r})"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
            stdout=output, stderr=subprocess.STDOUT,
        )
    try:
        process.wait(timeout=RUN_DEADLINE_S)  # the event: the process died at its kill point (or ended without it)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
    text = log.read_text(errors="replace")
    assert process.returncode == -signal.SIGKILL, f"`credittwin materialize` was not killed at {point}:\n{text[-4000:]}"
    return text


def _staged(settings: Settings, asset: str) -> list[Path]:
    store = VersionedStore(settings.data_dir, [asset], TENANT)
    return [p for p in store.dir.iterdir() if p.name.startswith(".")] if store.dir.exists() else []


def test_credittwin_materialize_killed_at_the_charge_in_training_and_mid_write_recovers(dp_tenant):
    settings = dp_tenant
    started = time.monotonic()
    outputs, charges_after, runs = {}, {}, []
    for point in KILL_POINTS:
        # run: the tenant's next run; it gets the training slot only if the run killed before it was recovered
        outputs[point] = _run_until_killed(settings, point)
        charges_after[point] = [(c.asset, c.id, c.idempotency_hash) for c in _charges(settings)]
        with dg.DagsterInstance.get() as instance:
            (latest,) = instance.get_runs(limit=1)
        assert latest.status == dg.DagsterRunStatus.STARTED  # its process just vanished
        runs.append(latest.run_id)
        _assert_storage_consistent(settings)
        if point == "write":  # killed half way through writing the trained model: staged files, nothing CURRENT
            assert _staged(settings, "lstm_cascade")
            assert VersionedStore(settings.data_dir, ["lstm_cascade"], TENANT).current() is None
    killed_at = time.monotonic() - started

    # run: the rerun, as a user types it
    printed = io.StringIO()
    succeeded = materialize_tenant(TENANT, settings, out=printed)  # what `credittwin materialize dpbank` runs
    out = printed.getvalue()
    total = time.monotonic() - started

    # assert: each run recovered the one killed before it, and the rerun the last one
    for previous, point in zip(runs, KILL_POINTS[1:]):
        assert f"run {previous} of tenant '{TENANT}': its process" in outputs[point], outputs[point][-3000:]
    assert f"run {runs[-1]} of tenant '{TENANT}': its process" in out
    with dg.DagsterInstance.get() as instance:
        for run_id in runs:
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
        (rerun,) = instance.get_runs(limit=1)
        assert rerun.is_finished and rerun.run_id not in runs
        storage = instance.event_log_storage
        assert not storage.supports_global_concurrency_limits or not storage.get_concurrency_run_ids()
    assert f"run {rerun.run_id} for tenant '{TENANT}'" in out

    # the ledger: the charge made at the first kill and the DP-SGD charge made before training are kept, never
    # repeated; in the end exactly one charge per DP asset
    assert len(charges_after["charge"]) == 1
    assert "lstm_cascade" in {a for a, _, _ in charges_after["training"]}
    final = [(c.asset, c.id, c.idempotency_hash) for c in _charges(settings)]
    assert set(charges_after["charge"]) <= set(charges_after["training"]) <= set(charges_after["write"]) <= set(final)
    assert sorted(a for a, _, _ in final) == ["fitted_copula", "lstm_cascade"]

    # the rerun trained the cascade afresh under its earlier charge (the killed write released nothing) and made it CURRENT
    assert "materialized lstm_cascade" in out and "step lstm_cascade failed" not in out, out
    cascade = VersionedStore(settings.data_dir, ["lstm_cascade"], TENANT).read()
    assert cascade.manifest["run_id"] == rerun.run_id
    assert cascade.document("privacy")["ledger_charge_id"] == next(i for a, i, _ in final if a == "lstm_cascade")
    _assert_storage_consistent(settings)
    with LineageTrail(settings.lineage) as trail:
        report = trail.verify(TENANT)
    assert report.ok, report.reason
    print(f"three kills after {killed_at:.0f}s; the rerun {'succeeded' if succeeded else 'failed'} at {total:.0f}s")
