"""Scale-out end to end: two tenants' graphs run on two Celery workers, and come out as an in-process run makes them.

Real components throughout: the Redis broker on 127.0.0.1:6379 (CREDITTWIN_TEST_BROKER_URL), two
`credittwin worker` processes, a Dagster instance made from pipelines/deploy/dagster.celery.yaml on a fresh
PostgreSQL database, the ledger and lineage trail in that database and MLflow in a second one. Each run is its
own `dagster job execute` process loading the production code location (`pipelines.definitions`) from its
environment, as a launched run does; the workers load the same module from theirs. One worker serves the
`training` queue and the other `default`, so the test also shows the routing: the training steps ran in the
first worker's processes, every other step in the second's, none in the process that orchestrated the run.
The reference is the same uploads run in process (CREDITTWIN_EXECUTOR=in_process) on the embedded SQLite
defaults, at the same time.

Every Redis key of this run carries a unique prefix (CREDITTWIN_CELERY_KEY_PREFIX), so parallel test runs
sharing the Redis never take each other's steps; the keys are deleted at the end. An unreachable Redis or
PostgreSQL fails the test.

The test waits on progress, not on a guessed total time: a process that exits early, or logs that stop growing
for STALL_S, fail it at once with the logs.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
import yaml

from assets.policies import DEFAULT_QUEUE, TRAINING_QUEUE
from models.results import Certificate
from models.tape.demo import generate_portfolio, write_landing
from resources.sqlstore import scratch_database
from resources.storage import read_current
from resources.workers import scratch_key_prefix, stop_worker
from tests.conftest import CLI, REPO, relax_audit

BROKER_URL = os.environ.get("CREDITTWIN_TEST_BROKER_URL", "redis://127.0.0.1:6379/0")
BIN = Path(sys.executable).parent
TENANTS = {"north": 11, "south": 12}  # tenant -> demo seed
LOANS, MONTHS = 800, 6
# Few epochs keep the cascade quick; everything else is the production path.
RUN_CONFIG = {"ops": {"lstm_cascade": {"config": {"epochs": 4, "hidden_size": 16}}}}
TRAINING_STEPS = {"fitted_copula", "lstm_cascade", "risk_model"}
STALL_S = 300  # the longest quiet spell: one step's work on a busy 2-core machine
CAP_S = 1200
# What legitimately differs between the two deployments' outputs (paths in the stored JSON documents). Everything
# else must match: floats to 1e-9 relative, since polars' parallel aggregations may sum in another order and move
# the last digit (the roll rates of the histories do), and the rest exactly, released files' SHA-256 included.
LEGITIMATE = re.compile("|".join([
    # when, by which run and with which key a certificate was issued (each data root makes its development key)
    r"^/(certificate_id|issued_at|valid_until|signing_key|signature)(/|$)",
    r"^/source/(dagster_run_id|materialized_by_run)(/|$)",
    # wall-clock durations
    r"/seconds$", r"/timings(/|$)",
    # run ids and URIs of two different MLflow stores (PostgreSQL here, SQLite for the reference)
    r"/mlflow(/|$)",
    # anonymeter's singling-out baseline is not reproducible: it picks from polars' unique() (unordered); it is
    # reported, not judged (the verdicts compare members with controls), and the anonymeter warning quoting it
    # goes too. (The linkability baseline, drawn from fresh OS entropy by anonymeter, is seeded by CreditTwin now:
    # models.privacy.anonymeter_attacks.seeded_linkability, so it must match.)
    r"/anonymeter/singling_out/baseline_rate$",
    # content hashes of outputs holding the above: training seconds (lstm_cascade), last-digit roll rates
    # (synthetic_portfolio's sequence fidelity) and the baselines (privacy_audit); released files are compared exactly
    r"^/source/content_sha256/(lstm_cascade|synthetic_portfolio|privacy_audit)$",
]))
BASELINE_NOTE = "Attack is as good or worse as baseline model"
COMPARED = {  # asset -> the stored document compared
    "privacy_certificate": None,  # the signed JSON, read from the stored files
    "risk_model": "summary",
    "stress_test": "stress",
    "validation_report": "validation_report",
}


@pytest.fixture
def redis_prefix():
    """A key prefix for this test's Celery traffic on the Redis broker, its keys deleted afterwards; a Redis that
    cannot be reached fails the test (it is never skipped)."""
    with scratch_key_prefix(BROKER_URL, "credittwin-test") as prefix:
        yield prefix


def _dagster_home(home: Path, instance_file: Path, pg_url: str | None = None) -> Path:
    """A DAGSTER_HOME with `instance_file` as its dagster.yaml; with `pg_url`, the PostgreSQL URL written in."""
    config = yaml.safe_load(instance_file.read_text())
    if pg_url is not None:
        config["storage"]["postgres"]["postgres_url"] = pg_url
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(home)) as instance:  # creates the schema before the processes start
        instance.add_dynamic_partitions("tenants", list(TENANTS))
    return home


def _spawn(command: list[str], environment: dict, cwd: Path, log: Path) -> subprocess.Popen:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(cwd), **environment}
    with open(log, "wb") as output:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _run(tenant: str, environment: dict, cwd: Path) -> subprocess.Popen:
    """One run of the tenant's whole graph, as its own process loading `pipelines.definitions` from `environment`."""
    config = cwd / "run_config.yaml"
    config.write_text(yaml.safe_dump(RUN_CONFIG))
    command = [str(BIN / "dagster"), "job", "execute", "-m", "pipelines.definitions", "-a", "defs", "-j",
               "tenant_pipeline", "-d", str(REPO), "-c", str(config), "--tags", json.dumps({"dagster/partition": tenant})]
    return _spawn(command, environment, cwd, cwd / f"run-{tenant}.log")


def _descendants(pid: int) -> set[int]:
    """The processes below `pid` (Linux /proc): a worker's Celery process and its pool."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _logs(logs: list[Path]) -> str:
    return "\n".join(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-4000:]}" for log in logs if log.exists())


def _wait(runs: list[subprocess.Popen], workers: list[subprocess.Popen], logs: list[Path]) -> None:
    """Until every run process ends; fail when a worker exits, or when no log grows for STALL_S (or after CAP_S)."""
    started = last_progress = time.monotonic()
    progress = None
    while any(run.poll() is None for run in runs):
        for worker in workers:
            assert worker.poll() is None, f"a worker exited with {worker.returncode}\n{_logs(logs)}"
        now, seen = time.monotonic(), tuple(log.stat().st_size for log in logs if log.exists())
        if seen != progress:
            progress, last_progress = seen, now
        assert now - last_progress < STALL_S, f"nothing happened for {STALL_S}s\n{_logs(logs)}"
        assert now - started < CAP_S, f"the runs did not finish within {CAP_S}s\n{_logs(logs)}"
        time.sleep(1.0)


def _steps(home: Path, tenant: str) -> tuple[dg.DagsterRun, dict[str, int], dict[str, str]]:
    """The tenant's run in the instance at `home`: the process each step started in, and the Celery worker that
    reported running it (dagster-celery's engine event)."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": tenant}))
        events = [r.event_log_entry.dagster_event for r in instance.get_records_for_run(run.run_id, limit=100_000).records
                  if r.event_log_entry.dagster_event is not None]
    started = {e.step_key: e.pid for e in events if e.event_type == dg.DagsterEventType.STEP_START}
    workers = {e.step_key: e.event_specific_data.metadata["Celery worker"].value for e in events
               if e.event_type == dg.DagsterEventType.ENGINE_EVENT and "Celery worker" in e.event_specific_data.metadata}
    return run, started, workers


def _document(data_dir: Path, asset: str, tenant: str) -> dict:
    stored = read_current(data_dir, asset, tenant)
    field = COMPARED[asset]
    return json.loads((stored.path / Certificate.JSON).read_bytes()) if field is None else getattr(stored, field)


def _differences(a, b, path: str = "") -> list[str]:
    """The paths where two stored documents differ beyond `LEGITIMATE` (floats to 1e-9 relative)."""
    if LEGITIMATE.search(path):
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b), key=str)
                for d in _differences(a.get(key, "<missing>"), b.get(key, "<missing>"), f"{path}/{key}")]
    if isinstance(a, list) and isinstance(b, list):
        a, b = ([x for x in side if BASELINE_NOTE not in str(x)] for side in (a, b))
        if len(a) != len(b):
            return [f"{path} ({len(a)} vs {len(b)} items)"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    if isinstance(a, float) and isinstance(b, float):
        return [] if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) else [f"{path}: {a!r} vs {b!r}"]
    return [] if a == b else [f"{path}: {str(a)[:80]!r} vs {str(b)[:80]!r}"]


def test_two_tenants_run_on_two_celery_workers_and_match_an_in_process_run(
    tmp_path, pg_server_url, pg_database, redis_prefix
):
    # setup: the same uploads in two data roots; a Celery deployment on PostgreSQL and an embedded one on SQLite
    celery_root, reference_root = tmp_path / "celery", tmp_path / "in_process"
    for tenant, seed in TENANTS.items():
        folder = celery_root / "data" / "landing" / tenant
        write_landing(generate_portfolio(LOANS, months=MONTHS, seed=seed), folder, fmt="parquet")
        relax_audit(folder, risk={"max_calibration_error": 0.15})
    shutil.copytree(celery_root / "data" / "landing", reference_root / "data" / "landing")
    home = _dagster_home(celery_root / "dagster_home", REPO / "pipelines" / "deploy" / "dagster.celery.yaml", pg_database)
    reference_home = _dagster_home(reference_root / "dagster_home", REPO / "dagster.yaml")
    common = {"CREDITTWIN_SENSOR_SETTLE_SECONDS": "0", "CREDITTWIN_RETRY_DELAY_SECONDS": "0.2"}
    reference = {**common, "CREDITTWIN_DATA_DIR": str(reference_root / "data"), "CREDITTWIN_EXECUTOR": "in_process",
                 "DAGSTER_HOME": str(reference_home)}
    suffix = uuid.uuid4().hex[:6]
    names = {TRAINING_QUEUE: f"trainer-{suffix}", DEFAULT_QUEUE: f"general-{suffix}"}
    # a second database: MLflow keeps its Alembic version table under the name Dagster uses
    with scratch_database(pg_server_url, "credittwin_mlflow") as mlflow_url:
        deployment = {
            **common,
            "CREDITTWIN_DATA_DIR": str(celery_root / "data"),
            "CREDITTWIN_EXECUTOR": "celery",
            "CREDITTWIN_BROKER_URL": BROKER_URL,
            "CREDITTWIN_CELERY_KEY_PREFIX": redis_prefix,
            "CREDITTWIN_LEDGER_URL": pg_database,
            "CREDITTWIN_MLFLOW_TRACKING_URI": mlflow_url,
            "DAGSTER_HOME": str(home),
        }
        workers = {queue: _spawn([CLI, "worker", "--queues", queue, "--name", name, "--concurrency", "1"],
                                 deployment, celery_root, celery_root / f"{name}.log") for queue, name in names.items()}
        runs: dict[tuple[str, str], subprocess.Popen] = {}
        try:
            # run: both tenants on the workers, and the in-process reference beside them
            started = time.monotonic()
            for tenant in TENANTS:
                runs["celery", tenant] = _run(tenant, deployment, celery_root)
                runs["in_process", tenant] = _run(tenant, reference, reference_root)
            logs = sorted(celery_root.glob("*.log")) + sorted(reference_root.glob("*.log"))
            _wait(list(runs.values()), list(workers.values()), logs)
            elapsed = time.monotonic() - started
            pools = {queue: _descendants(worker.pid) for queue, worker in workers.items()}
        finally:
            for process in [*runs.values(), *workers.values()]:
                stop_worker(process)

    # assert: every run succeeded; on Celery each step ran in a process of the worker serving its queue, never in
    # the process that orchestrated the run, and in process every step ran in the run's own process
    for (mode, tenant), process in runs.items():
        assert process.returncode == 0, f"{mode} run of {tenant} exited {process.returncode}\n{_logs(logs)}"
    for tenant in TENANTS:
        run, started_in, ran_on = _steps(home, tenant)
        assert run.status == dg.DagsterRunStatus.SUCCESS, _logs(logs)
        assert set(started_in) >= TRAINING_STEPS | {"raw_loan_tape", "privacy_certificate", "stress_test"}
        orchestrator = runs["celery", tenant].pid
        for step, pid in started_in.items():
            queue = TRAINING_QUEUE if step in TRAINING_STEPS else DEFAULT_QUEUE
            assert ran_on[step].startswith(f"{names[queue]}@"), (tenant, step, ran_on[step])
            assert pid in pools[queue] and pid != orchestrator, (tenant, step, pid, pools)
        reference_run, reference_pids, reference_workers = _steps(reference_home, tenant)
        assert reference_run.status == dg.DagsterRunStatus.SUCCESS and not reference_workers
        assert set(reference_pids) == set(started_in)
        assert set(reference_pids.values()) == {runs["in_process", tenant].pid}

    # assert: the same outputs: the certificate (released files' SHA-256, data versions, every audit figure and
    # verdict), the PD models' figures, the validation report and the stress test
    for tenant in TENANTS:
        for asset in COMPARED:
            celery, reference = (_document(root / "data", asset, tenant) for root in (celery_root, reference_root))
            assert celery and _differences(celery, reference) == [], (tenant, asset)
    print(f"two tenants of {LOANS} loans on Celery (2 workers) and in process, side by side: {elapsed:.0f}s")
