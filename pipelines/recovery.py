"""Dead runs: a run whose process was killed must never hold a tenant's run slot or a training pool slot.

A SIGKILLed `credittwin materialize` (or a crashed machine) leaves its run
STARTED for ever, still holding its `training` pool slot and its tenant's
`dagster/partition` run slot, so every later run of every tenant waits. Dagster's
run monitoring cannot see it: the default run launcher has no worker health
check, and an in-process run has no launcher at all. So each run the
`credittwin` command starts records which process owns it (`owner_tags`: host,
pid and the process's start token), and `fail_dead_runs` marks a run failed and
frees its slots when that process is gone. It runs before every `credittwin`
run and from the daemon's `dead_run_sensor` (pipelines/ops_sensors.py).

Only runs owned by a process on this host are judged: a pid means nothing on
another machine. Runs launched by the daemon are failed by Dagster itself when
their worker dies (the code server watches its run processes) and their slots
are freed by run monitoring (`free_slots_after_run_end_seconds` in dagster.yaml).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

OWNER_HOST_TAG = "credittwin/owner_host"
OWNER_PID_TAG = "credittwin/owner_pid"
# Boot id and the process's start time: a pid that the kernel reused for another process does not match it.
OWNER_PROCESS_TAG = "credittwin/owner_process"
# A run in these states claims (or may claim) slots and blocks its tenant's run queue.
UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _process_token(pid: int) -> str:
    """`<boot id>:<start time in clock ticks>` of `pid` on Linux; "" where /proc does not say (the pid alone is used)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # the command name (field 2) may hold spaces and parentheses: fields are counted after its closing ')'
    start_ticks = stat[stat.rindex(")") + 2:].split()[19]
    return f"{boot}:{start_ticks}"


def owner_tags() -> dict[str, str]:
    """Run tags naming this process as the owner of a run it executes itself."""
    pid = os.getpid()
    return {OWNER_HOST_TAG: socket.gethostname(), OWNER_PID_TAG: str(pid), OWNER_PROCESS_TAG: _process_token(pid)}


def _alive(pid: int, token: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process with this pid exists; the token decides whether it is ours
    if not token:
        return True
    return _process_token(pid) in ("", token)


@dataclass(frozen=True)
class DeadRun:
    """A run marked failed because its owning process is gone."""

    run_id: str
    tenant: str | None
    pid: int


def dead_owner(run: dg.DagsterRun, host: str) -> int | None:
    """The pid of `run`'s owning process on `host` when that process is gone; None when alive or not judged here."""
    tags = run.tags
    if tags.get(OWNER_HOST_TAG) != host:
        return None
    try:
        pid = int(tags.get(OWNER_PID_TAG, ""))
    except ValueError:
        return None
    return None if _alive(pid, tags.get(OWNER_PROCESS_TAG, "")) else pid


def fail_dead_runs(instance: dg.DagsterInstance, *, free_ended: bool) -> list[DeadRun]:
    """Mark failed every unfinished run whose owning process on this host is gone, and free its pool slots.

    With `free_ended`, also frees the pool slots still held by runs that have
    ended: only a crash leaves them behind (a run that ends normally releases its
    own). Headless nothing else would free them; under the daemon, run monitoring
    frees them after `free_slots_after_run_end_seconds`, so the sensor leaves them.
    Returns the runs it failed; safe to call from several processes at once (a
    run that another caller failed first is skipped).
    """
    host = socket.gethostname()
    dead: list[DeadRun] = []
    for record in instance.get_run_records(filters=dg.RunsFilter(statuses=UNFINISHED)):
        run = record.dagster_run
        pid = dead_owner(run, host)
        if pid is None:
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.is_finished:
            continue
        instance.report_run_failed(
            current,
            f"the process that ran it (pid {pid} on {host}) is gone (killed or crashed); marked failed by CreditTwin "
            "so its tenant and the training pool are free again. Re-run it: privacy charges are not repeated.",
        )
        dead.append(DeadRun(run_id=run.run_id, tenant=run.tags.get("dagster/partition"), pid=pid))
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return dead
    for gone in dead:
        storage.free_concurrency_slots_for_run(gone.run_id)
    if free_ended:
        holders = storage.get_concurrency_run_ids()
        if holders:
            ended = instance.get_run_records(
                filters=dg.RunsFilter(run_ids=list(holders), statuses=[
                    dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED,
                ])
            )
            for record in ended:
                storage.free_concurrency_slots_for_run(record.dagster_run.run_id)
    return dead
