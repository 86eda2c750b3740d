"""The deployment end to end: `dagster-daemon run` on a PostgreSQL-backed instance picks up uploads by itself.

A demo upload is dropped into the landing zone; the daemon's landing sensor
registers the tenant and requests a run, the run queue launches it, and the
whole graph materializes through the project's code location (loaded from a
workspace file, as `dagster dev` would), each step in its own process. The
upload is then changed, the daemon is started afresh (its runs in process this
time) and the sensor requests the regeneration. Finally `credittwin audit` verifies the
lineage chain, which lives in the same PostgreSQL database as the privacy
ledger, against the anchors in Dagster's PostgreSQL event log.

The test waits on events, not on a guessed total time: each wait is bounded by
how long nothing happens (no run for the upload yet, or no new event in its
run), so a busy machine that runs slowly but steadily passes, and a stuck run
fails within STALL_S with the daemon's log and the failures of the runs it
launched. The daemon is always killed (its whole process group: the code
server and run workers too).
"""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import yaml

from models.tape.demo import generate_portfolio, write_landing
from models.tape.loan_tape import find_upload, fingerprint
from pipelines.cli import ensure_dagster_home, main
from pipelines.jobs import TRIGGER_TAG, UPLOAD_TAG
from resources.lineage import LineageTrail
from resources.settings import Settings
from resources.storage import VersionedStore

REPO = Path(__file__).resolve().parents[1]
TENANT = "harbor"
# 1,500 loans: the holdout (by borrower) then holds enough defaults for the registration gate to show the PD model
# beats chance (700 loans left 15-18 defaults in it, where an honest AUC interval reaches 0.5).
# Few attacks keep the book fast (as tests/assets/test_privacy_release.py does); every other setting,
# the policy's margins included, is the production default.
AUDIT = {"n_attacks": 200, "anonymeter_sample_size": 400}
STALL_S = 300  # the longest quiet spell: the sensor's 30 s interval plus one step's work on a busy 2-core machine
CAP_S = 1800  # a run that keeps logging events but never ends still fails
POLL_S = 1.0


def _upload(folder: Path, seed: int) -> str:
    """Write a demo upload into `folder`; return its fingerprint (the sensor's run tag)."""
    write_landing(generate_portfolio(1500, months=6, seed=seed), folder, fmt="csv")
    config = yaml.safe_load((folder / "tenant.yaml").read_text())
    (folder / "tenant.yaml").write_text(yaml.safe_dump({**config, "audit": AUDIT}))
    return fingerprint(find_upload(folder, TENANT))


def _failures(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str:
    records = instance.get_records_for_run(run.run_id, of_type={
        dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE,
    }).records
    return "\n".join(f"  {r.event_log_entry.message}" for r in records)


def _diagnosis(instance: dg.DagsterInstance, log: Path) -> str:
    lines = ["runs:"]
    for run in instance.get_runs():
        lines.append(f" {run.run_id} {run.status.value} tags={dict(run.tags)}")
        if run.status == dg.DagsterRunStatus.FAILURE:
            lines.append(_failures(instance, run))
    lines.append("daemon log (tail):")
    lines.append(log.read_text(errors="replace")[-6000:] if log.exists() else "(none)")
    return "\n".join(lines)


def _last_event(instance, runs) -> tuple:
    """The newest event of each run: it moves while the runs make progress."""
    return tuple(
        (run.run_id, run.status.value, [r.storage_id for r in instance.get_records_for_run(
            run.run_id, limit=1, ascending=False).records])
        for run in runs
    )


def _wait_for_run(instance, upload_sha: str, daemon: subprocess.Popen, log: Path) -> dg.DagsterRun:
    """Poll until the sensor's run for `upload_sha` succeeds; fail with the diagnosis when nothing moves for
    STALL_S (no run for the upload yet, or no new event in it), or after CAP_S in all."""
    started = last_progress = time.monotonic()
    progress = None
    while True:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={UPLOAD_TAG: upload_sha}))
        for run in runs:
            if run.status == dg.DagsterRunStatus.SUCCESS:
                return run
            assert run.status != dg.DagsterRunStatus.FAILURE, (
                f"run {run.run_id} failed:\n{_failures(instance, run)}\n{_diagnosis(instance, log)}"
            )
        assert daemon.poll() is None, f"the daemon exited with {daemon.returncode}\n{_diagnosis(instance, log)}"
        now, seen = time.monotonic(), _last_event(instance, runs)
        if seen != progress:
            progress, last_progress = seen, now
        assert now - last_progress < STALL_S, (
            f"upload {upload_sha[:16]}: nothing happened for {STALL_S}s ({'its run is stuck' if runs else 'no run'})"
            f"\n{_diagnosis(instance, log)}"
        )
        assert now - started < CAP_S, f"upload {upload_sha[:16]}: no successful run within {CAP_S}s\n{_diagnosis(instance, log)}"
        time.sleep(POLL_S)


def _start_daemon(workspace: Path, log: Path, **environment: str) -> subprocess.Popen:
    """`dagster-daemon run` on `workspace` in its own process group, its output appended to `log`."""
    with open(log, "ab") as output:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **environment}, start_new_session=True,
            stdout=output, stderr=subprocess.STDOUT,
        )


def _stop(daemon: subprocess.Popen) -> None:
    """Kill the daemon's whole process group (its code server and run workers too)."""
    with contextlib.suppress(ProcessLookupError):  # the group is gone already
        os.killpg(daemon.pid, signal.SIGKILL)
    daemon.wait(timeout=30)


def test_the_daemon_materializes_new_and_changed_uploads_and_the_audit_trail_verifies(
    tmp_path, pg_database, monkeypatch, capsys
):
    # setup: a PostgreSQL instance in DAGSTER_HOME, the ledger and lineage in the same database, a workspace
    data = tmp_path / "data"
    folder = data / "landing" / TENANT
    environment = {
        "CREDITTWIN_DATA_DIR": str(data),
        "CREDITTWIN_SENSOR_SETTLE_SECONDS": "0",
        "CREDITTWIN_LEDGER_URL": pg_database,
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "DAGSTER_PG_URL": pg_database,
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = Settings.from_env()
    ensure_dagster_home(settings, postgres=True)
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
        "module_name": "pipelines.definitions", "location_name": "credittwin", "working_directory": str(REPO),
    }}]}))
    first_sha = _upload(folder, seed=5)
    log = tmp_path / "daemon.log"
    started = time.monotonic()
    with dg.DagsterInstance.get() as instance:  # creates the PostgreSQL schema before the daemon starts
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        daemon = _start_daemon(workspace, log)
        try:
            # run: the sensor registers the tenant and its run materializes the graph, each step in its own process
            # (the deployment's default executor)
            first = _wait_for_run(instance, first_sha, daemon, log)
            first_done = time.monotonic() - started
            assert instance.has_dynamic_partition("tenants", TENANT)
            assert first.tags["dagster/partition"] == TENANT

            # run: a changed upload is picked up by a daemon started afresh (the sensor's cursor is in the instance)
            # and regenerates the graph. This daemon's runs execute in process (CREDITTWIN_EXECUTOR=in_process, the
            # other supported setting): the twelve step processes of a second multiprocess run, each importing
            # Dagster and its step's libraries, were about a tenth of the suite's CPU time and tested nothing the
            # first run had not.
            _stop(daemon)
            second_sha = _upload(folder, seed=6)
            assert second_sha != first_sha
            daemon = _start_daemon(workspace, log, CREDITTWIN_EXECUTOR="in_process")
            second = _wait_for_run(instance, second_sha, daemon, log)
            second_done = time.monotonic() - started
        finally:
            _stop(daemon)

        # assert: the landing runs did everything; declarative automation requested nothing after them
        redundant = instance.get_runs(filters=dg.RunsFilter(tags={TRIGGER_TAG: "automation"}))
        assert redundant == [], "automation re-ran what a landing run had just done: " + "; ".join(
            f"{r.run_id} {r.status.value} assets={sorted(k.to_user_string() for k in r.asset_selection or [])}"
            for r in redundant
        )

        # assert: the current outputs come from the changed upload, through the whole graph to a certificate
        raw = VersionedStore(settings.data_dir, ["raw_loan_tape"], TENANT).read()
        assert raw.document("ingest")["upload_sha256"] == second_sha
        assert VersionedStore(settings.data_dir, ["privacy_certificate"], TENANT).current() is not None
        events = instance.get_records_for_run(
            second.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
        ).records
        regenerated = {r.event_log_entry.dagster_event.asset_key.to_user_string() for r in events}
        assert {"raw_loan_tape", "fitted_copula", "lstm_cascade", "anonymized_portfolio", "privacy_audit",
                "privacy_certificate"} <= regenerated

    # the lineage trail holds both runs, rooted at both uploads, in the ledger's PostgreSQL database
    with LineageTrail(pg_database) as trail:
        history = trail.history(TENANT)
    assert {r.run_id for r in history} >= {first.run_id, second.run_id}
    uploads = [r.input_hashes.get("upload") for r in history if r.asset == "raw_loan_tape"]
    assert uploads[0] == first_sha and uploads[-1] == second_sha

    # `credittwin audit` verifies the chain against Dagster's anchors and shows the changed upload
    capsys.readouterr()
    assert main(["audit", TENANT]) == 0
    out = capsys.readouterr().out
    assert "verifies" in out and "anchor(s) from Dagster's event log agree" in out
    assert f"Upload: sha256 {second_sha}" in out
    print(f"first run succeeded after {first_done:.0f}s, the regeneration after {second_done:.0f}s")
