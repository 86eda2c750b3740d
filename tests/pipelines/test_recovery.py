"""Dead runs are failed and their pool slots freed (pipelines/recovery.py), on a real file-backed instance.

A tiny pooled asset stands in for a training step: the run's process writes a
marker once its step holds the `training` slot, then waits; the test kills the
whole process with SIGKILL on that event (no guessed sleeps).
"""

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from pipelines.cli import ensure_dagster_home, recover_dead_runs
from assets.policies import TRAINING_POOL
from pipelines.ops_sensors import dead_run_sensor
from pipelines.recovery import OWNER_HOST_TAG, dead_owner, fail_dead_runs, owner_tags
from resources.settings import Settings

REPO = Path(__file__).resolve().parents[2]
EVENT_DEADLINE_S = 180  # a cold interpreter on a busy 2-core machine loads Dagster slowly

tenants = dg.DynamicPartitionsDefinition(name="tenants")


@dg.asset(partitions_def=tenants, pool=TRAINING_POOL)
def trainer(context: dg.AssetExecutionContext) -> None:
    """Holds the training slot until the release file exists; says so through the hold file."""
    Path(os.environ["CT_TEST_HOLD"]).write_text(str(os.getpid()))
    while not Path(os.environ["CT_TEST_RELEASE"]).exists():
        time.sleep(0.05)


def run_trainer(tenant: str) -> dg.ExecuteInProcessResult:
    """One in-process run of `trainer`, owned by this process (as `credittwin materialize` runs)."""
    with dg.DagsterInstance.get() as instance:
        if not instance.has_dynamic_partition(tenants.name, tenant):
            instance.add_dynamic_partitions(tenants.name, [tenant])
        return dg.materialize([trainer], partition_key=tenant, instance=instance, tags=owner_tags())


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CREDITTWIN_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.setenv("CT_TEST_HOLD", str(tmp_path / "hold"))
    monkeypatch.setenv("CT_TEST_RELEASE", str(tmp_path / "release"))
    ensure_dagster_home(Settings.from_env())  # the project's dagster.yaml: one training slot, op granularity
    return tmp_path


def _start_holder(tenant: str, log: Path) -> subprocess.Popen:
    with open(log, "wb") as output:
        return subprocess.Popen(
            [sys.executable, "-c", f"from {__name__} import run_trainer; run_trainer({tenant!r})"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
            stdout=output, stderr=subprocess.STDOUT,
        )


def _wait_for_hold(process: subprocess.Popen, hold: Path, log: Path) -> None:
    started = time.monotonic()
    while not hold.exists():
        assert process.poll() is None, "the run ended before it held the slot:\n" + log.read_text()[-3000:]
        assert time.monotonic() - started < EVENT_DEADLINE_S, "the run never reached its pooled step"
        time.sleep(0.05)


def _claimed(instance: dg.DagsterInstance) -> set[str]:
    return {slot.run_id for slot in instance.event_log_storage.get_concurrency_info(TRAINING_POOL).claimed_slots}


def _kill_a_slot_holder(home) -> subprocess.Popen:
    """Start a run of tenant acme that takes the only training slot, then SIGKILL its process."""
    process = _start_holder("acme", home / "acme.log")
    try:
        _wait_for_hold(process, home / "hold", home / "acme.log")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    return process


def test_a_killed_run_is_failed_its_slot_freed_and_other_tenants_run(home):
    # setup: a run of tenant acme holds the only training slot; its process is killed with SIGKILL
    process = _kill_a_slot_holder(home)
    with dg.DagsterInstance.get() as instance:
        (killed,) = instance.get_runs()
        assert killed.status == dg.DagsterRunStatus.STARTED and _claimed(instance) == {killed.run_id}

        # run: what `credittwin materialize` does before it starts a run
        out = io.StringIO()
        recover_dead_runs(instance, out=out)

        # assert: failed with a reason, the slot is free, and tenant beta's pooled step runs at once
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
        assert f"run {killed.run_id} of tenant 'acme': its process (pid {process.pid}) is gone" in out.getvalue()
        failure = instance.get_records_for_run(killed.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        assert "is gone (killed or crashed)" in failure[0].event_log_entry.dagster_event.message
        assert _claimed(instance) == set()
        assert fail_dead_runs(instance, free_ended=True) == []  # a second caller finds nothing left to do
    (home / "release").write_text("go")
    assert run_trainer("beta").success


def test_a_live_run_and_another_hosts_run_are_left_alone(home):
    # setup: a run holds the slot and its process is alive
    process = _start_holder("acme", home / "acme.log")
    try:
        _wait_for_hold(process, home / "hold", home / "acme.log")
        with dg.DagsterInstance.get() as instance:
            (live,) = instance.get_runs()
            # run
            dead = fail_dead_runs(instance, free_ended=True)
            # assert: nothing failed, the slot still held
            assert dead == [] and instance.get_run_by_id(live.run_id).status == dg.DagsterRunStatus.STARTED
            assert _claimed(instance) == {live.run_id}
            # a pid recorded on another machine means nothing here: the run is not judged
            elsewhere = live.with_tags({**live.tags, OWNER_HOST_TAG: socket.gethostname() + "-elsewhere"})
            assert dead_owner(elsewhere, socket.gethostname()) is None
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_the_daemons_sensor_fails_a_killed_cli_run_and_frees_its_slot(home):
    # setup: a killed run holds the training slot, and no `credittwin` command runs after it
    _kill_a_slot_holder(home)
    with dg.DagsterInstance.get() as instance:
        (killed,) = instance.get_runs()
        # run: one tick of the daemon's sensor
        result = dead_run_sensor(dg.build_sensor_context(instance=instance))
        # assert
        assert result.skip_message == "1 dead run(s) failed"
        assert instance.get_run_by_id(killed.run_id).status == dg.DagsterRunStatus.FAILURE
        assert _claimed(instance) == set()
        assert dead_run_sensor(dg.build_sensor_context(instance=instance)).skip_message == "no dead runs"
