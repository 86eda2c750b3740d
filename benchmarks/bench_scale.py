"""Scale-out benchmark: tenants per hour in process, with the multiprocess executor, and on Celery with 1 and 2 workers.

Every mode materializes the same N demo tenants (default 12 x 5,000 loans with 24 months of history) through the
whole graph, from the upload to the certificate, the PD model and the stress test, on this machine:

- ``in_process``: one process running every tenant one after another, every step in that process (what
  ``credittwin backfill --in-process`` does; the heavy libraries are imported once); the baseline of the ratios;
- ``multiprocess``: P runs at once (--parallel-runs, default 2, the embedded instance's backfill limit), each with
  Dagster's multiprocess executor (a fresh process per step, as many at once as CPUs);
- ``celery-1`` / ``celery-2``: P runs at once, every step on 1 or 2 ``credittwin worker`` processes (each
  ``--concurrency 1``, serving both queues), started and ready before the clock starts, as in a deployment.

In the parallel modes each run is its own ``dagster job execute`` process loading ``pipelines.definitions`` from
its environment, as a launched run is. All modes share one Dagster instance made from
pipelines/deploy/dagster.celery.yaml on a fresh PostgreSQL database, with the ledger, the lineage trail and MLflow
on PostgreSQL as well, so only the executor differs; each mode and repeat has its own data root and tenant ids.
Repeats are interleaved (each repeat runs every mode, in a rotated order) and the median is reported.

Run: ``.venv/bin/python benchmarks/bench_scale.py [--quick] [--tenants N] [--loans L] [--months M] [--repeats R]
[--parallel-runs P] [--pg-url URL] [--broker-url URL]``. ``--quick``: 4 tenants x 1,000 loans x 6 months with a
small cascade (4 epochs, 16 units) and the small-book audit margins the tests use. Needs the Redis broker
(default redis://127.0.0.1:6379/0) and a PostgreSQL server where databases can be created (default
postgresql://postgres@127.0.0.1:5432/postgres); both are left as they were (the databases and Redis keys it makes
are removed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from peers import print_header  # noqa: E402
from resources.sqlstore import scratch_database  # noqa: E402
from resources.workers import scratch_key_prefix, stop_worker  # noqa: E402

BIN = Path(sys.executable).parent
MODES = ("in_process", "multiprocess", "celery-1", "celery-2")
# Fewer attacks keep the audit quick; the policy's margins stay the production defaults.
AUDIT = {"n_attacks": 200, "anonymeter_sample_size": 400}
# --quick's 1,000-loan books leave a holdout of about 200 loans, too few for the production margins (the audit's
# intervals are wide and a seed may fail the membership-inference rule, tests/conftest.py explains): the same work
# is measured under looser margins, as the tests do, so every tenant gets through to its certificate and stress test.
QUICK_POLICY = {
    "audit": {**AUDIT, "max_dcr_share": 0.9, "max_mia_auc": 0.95, "max_anonymeter_risk": 1.0,
              "max_inference_risk": 1.0, "require_measured": False},
    "risk": {"auc_floor": 0.55, "max_calibration_error": 0.2},
}
SMALL_CASCADE = {"epochs": 4, "hidden_size": 16}
READY_S = 180
RUN_CAP_S = 4 * 3600


def write_uploads(folder: Path, tenants: int, loans: int, months: int, policy: dict) -> list[Path]:
    """N demo uploads (seeds 100, 101, ...) with `policy` in their tenant.yaml, written once; every mode copies
    them byte for byte."""
    import yaml

    from models.tape.demo import generate_portfolio, write_landing

    uploads = []
    for i in range(tenants):
        upload = folder / f"upload{i:02d}"
        write_landing(generate_portfolio(loans, months=months, seed=100 + i), upload, fmt="parquet")
        config = yaml.safe_load((upload / "tenant.yaml").read_text())
        (upload / "tenant.yaml").write_text(yaml.safe_dump({**config, **policy}))
        uploads.append(upload)
    return uploads


def spawn(command: list[str], env: dict, cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as output:
        return subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)


def start_workers(count: int, env: dict, cwd: Path) -> list[subprocess.Popen]:
    """`count` workers serving both queues, one step at a time each; returns once Celery says each is ready."""
    workers, logs = [], []
    for i in range(count):
        name = f"bench{i}-{uuid.uuid4().hex[:6]}"
        logs.append((name, cwd / f"worker-{name}.log"))
        workers.append(spawn([str(BIN / "credittwin"), "worker", "--name", name, "--concurrency", "1"], env, cwd, logs[-1][1]))
    deadline = time.monotonic() + READY_S
    for worker, (name, log) in zip(workers, logs):
        while f"{name}@" not in (text := log.read_text(errors="replace")) or " ready." not in text:
            if worker.poll() is not None or time.monotonic() > deadline:
                for other in workers:
                    stop_worker(other)
                raise RuntimeError(f"worker {name} did not become ready:\n{text[-3000:]}")
            time.sleep(0.5)
    return workers


def run_mode(mode: str, repeat: int, uploads: list[Path], root: Path, base_env: dict, run_config: Path,
             parallel: int) -> dict:
    """Materialize every upload as a tenant of its own under `mode`; the wall time from the first run's start to
    the last run's end, and the tenants that failed."""
    tag = {"in_process": "ip", "multiprocess": "mp", "celery-1": "ca", "celery-2": "cb"}[mode]
    work = root / f"{mode}-{repeat}"
    data = work / "data"
    tenants = []
    for i, upload in enumerate(uploads):
        tenant = f"{tag}{repeat}-t{i:02d}"
        shutil.copytree(upload, data / "landing" / tenant)
        tenants.append(tenant)
    env = {**base_env, "CREDITTWIN_DATA_DIR": str(data),
           "CREDITTWIN_EXECUTOR": {"in_process": "in_process", "multiprocess": "multiprocess"}.get(mode, "celery")}
    register_tenants(env["DAGSTER_HOME"], tenants)
    workers = start_workers(int(mode[-1]), env, work) if mode.startswith("celery") else []
    if mode == "in_process":
        commands = {"every tenant": [sys.executable, __file__, "--in-process-runner", str(run_config), *tenants]}
    else:
        commands = {tenant: [str(BIN / "dagster"), "job", "execute", "-m", "pipelines.definitions", "-a", "defs",
                             "-j", "tenant_pipeline", "-d", str(REPO), "-c", str(run_config),
                             "--tags", json.dumps({"dagster/partition": tenant})] for tenant in tenants}
    pending, running, failed = list(commands), {}, []
    try:
        started = time.monotonic()
        while pending or running:
            while pending and len(running) < parallel:
                label = pending.pop(0)
                running[label] = spawn(commands[label], env, work, work / f"run-{label.replace(' ', '-')}.log")
            for label, process in list(running.items()):
                if process.poll() is not None:
                    if process.returncode != 0:
                        failed.append(label)
                    del running[label]
            for worker in workers:
                if worker.poll() is not None:
                    raise RuntimeError(f"a worker of {mode} exited with {worker.returncode}; logs in {work}")
            if time.monotonic() - started > RUN_CAP_S:
                raise RuntimeError(f"{mode} did not finish within {RUN_CAP_S} s; logs in {work}")
            time.sleep(0.5)
        elapsed = time.monotonic() - started
    finally:
        for process in [*running.values(), *workers]:
            stop_worker(process)
    return {"mode": mode, "repeat": repeat, "seconds": elapsed, "failed": failed, "logs": str(work)}


def in_process_runner(run_config: Path, tenants: list[str]) -> int:
    """The in_process mode's one process: each tenant's whole graph in turn, with the code location and the
    instance of this process's environment; 1 when a run failed."""
    import dagster as dg

    from pipelines.definitions import defs

    job = defs.resolve_job_def("tenant_pipeline")
    failed = []
    with dg.DagsterInstance.get() as instance:
        for tenant in tenants:
            result = job.execute_in_process(partition_key=tenant, instance=instance, raise_on_error=False,
                                            run_config=json.loads(run_config.read_text()))
            if not result.success:
                failed.append(tenant)
    print(f"in-process runner: {len(tenants) - len(failed)}/{len(tenants)} succeeded; failed: {failed or 'none'}")
    return 1 if failed else 0


def register_tenants(home: str, tenants: list[str]) -> None:
    import dagster as dg

    with dg.DagsterInstance.from_config(home) as instance:
        instance.add_dynamic_partitions("tenants", tenants)


def dagster_home(folder: Path, pg_url: str) -> Path:
    """DAGSTER_HOME with the Celery deployment's instance file, its PostgreSQL URL written in; schema created."""
    import dagster as dg
    import yaml

    config = yaml.safe_load((REPO / "pipelines" / "deploy" / "dagster.celery.yaml").read_text())
    config["storage"]["postgres"]["postgres_url"] = pg_url
    folder.mkdir(parents=True)
    (folder / "dagster.yaml").write_text(yaml.safe_dump(config))
    with dg.DagsterInstance.from_config(str(folder)):
        pass
    return folder


def _interrupted(signum, _frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    # a kill unwinds like Ctrl-C: the runs and workers are stopped and the databases and Redis keys removed
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 tenants x 1,000 loans x 6 months, small cascade")
    parser.add_argument("--tenants", type=int, help="tenants per mode (default 12; --quick 4)")
    parser.add_argument("--loans", type=int, help="loans per tenant (default 5,000; --quick 1,000)")
    parser.add_argument("--months", type=int, help="months of history (default 24; --quick 6)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every mode, interleaved; the median is shown (default 3)")
    parser.add_argument("--parallel-runs", type=int, default=2, help="runs at once in the parallel modes (default 2)")
    parser.add_argument("--pg-url", default=os.environ.get("CREDITTWIN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--broker-url", default=os.environ.get("CREDITTWIN_TEST_BROKER_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--in-process-runner", nargs="+", metavar=("RUN_CONFIG", "TENANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_process_runner:  # the in_process mode's own process, started by run_mode
        sys.exit(in_process_runner(Path(args.in_process_runner[0]), args.in_process_runner[1:]))
    tenants = args.tenants or (4 if args.quick else 12)
    loans = args.loans or (1_000 if args.quick else 5_000)
    months = args.months or (6 if args.quick else 24)
    cascade = SMALL_CASCADE if args.quick else {}

    print_header(f"bench_scale: {tenants} tenants x {loans:,} loans x {months} months per mode; {args.repeats} repeat(s)"
                 f"{' (one measurement per mode, no median)' if args.repeats == 1 else ', median shown'}; "
                 f"{args.parallel_runs} runs at once in the parallel modes; cascade {cascade or 'production defaults'}")
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="credittwin-bench-scale-")))
        pg = stack.enter_context(scratch_database(args.pg_url, "credittwin_bench_dagster"))
        mlflow = stack.enter_context(scratch_database(args.pg_url, "credittwin_bench_mlflow"))
        prefix = stack.enter_context(scratch_key_prefix(args.broker_url, "credittwin-bench"))
        uploads = write_uploads(root / "uploads", tenants, loans, months, QUICK_POLICY if args.quick else {"audit": AUDIT})
        run_config = root / "run_config.yaml"
        run_config.write_text(json.dumps({"ops": {"lstm_cascade": {"config": cascade}}} if cascade else {}))
        base_env = {
            "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": os.environ.get("HOME", str(root)),
            "DAGSTER_HOME": str(dagster_home(root / "dagster_home", pg)),
            "CREDITTWIN_LEDGER_URL": pg,
            "CREDITTWIN_MLFLOW_TRACKING_URI": mlflow,
            "CREDITTWIN_BROKER_URL": args.broker_url,
            "CREDITTWIN_CELERY_KEY_PREFIX": prefix,
        }
        results = []
        for repeat in range(args.repeats):
            order = MODES[repeat % len(MODES):] + MODES[:repeat % len(MODES)]  # interleaved, rotated each repeat
            for mode in order:
                outcome = run_mode(mode, repeat, uploads, root, base_env, run_config, args.parallel_runs)
                results.append(outcome)
                print(f"  repeat {repeat + 1} {mode:<13} {outcome['seconds']:8.1f} s", flush=True)
                if outcome["failed"]:
                    # a figure with failed tenants would flatter the mode: stop, keeping the logs (and nothing else)
                    kept = Path(tempfile.mkdtemp(prefix="credittwin-bench-scale-failed-"))
                    for log in Path(outcome["logs"]).glob("*.log"):
                        shutil.copy2(log, kept / log.name)
                    raise SystemExit(f"{mode}: tenant(s) {', '.join(outcome['failed'])} failed; logs in {kept}")
    medians = {mode: statistics.median(r["seconds"] for r in results if r["mode"] == mode) for mode in MODES}
    print()
    print(f"{'mode':<13} {'wall s':>8} {'tenants/hour':>13} {'vs in_process':>14}")
    for mode in MODES:
        print(f"{mode:<13} {medians[mode]:8.1f} {tenants * 3600 / medians[mode]:13.1f} "
              f"{medians['in_process'] / medians[mode]:13.2f}x")
    print(f"celery-2 vs celery-1: {medians['celery-1'] / medians['celery-2']:.2f}x; "
          f"celery-2 vs multiprocess: {medians['multiprocess'] / medians['celery-2']:.2f}x")
    # other work on the machine moves the figures: the load before and after says how much there was
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
