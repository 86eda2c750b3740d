"""Shared fixtures and helpers: isolated data roots, small tapes, tenant runs, the CLI, a real PostgreSQL database."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

# Steps that touch a database or MLflow retry with backoff (pipelines/jobs.py); tests keep the retries but not
# the production delays. Set before any CreditTwin module is imported.
os.environ.setdefault("CREDITTWIN_RETRY_DELAY_SECONDS", "0.2")
from pathlib import Path

import pytest

from resources.settings import Settings

# The modules whose tests run longest (a daemon, Celery workers, whole graphs on real tapes), longest first. They
# are collected first, so that `pytest -n 2` (with --maxschedchunk=2 in pyproject.toml: each worker holds at most
# two tests ahead) starts them while the other worker still has hundreds of short tests to run beside them. In the
# default order they came last and one worker ran them alone: the suite then spent about a third of its time on
# one core. The order of tests inside a module, and of the other modules, is left as collected.
LONGEST_FIRST = (
    "tests/test_daemon_e2e.py",
    "tests/test_scale_out.py",
    "tests/test_kill_and_reexecute.py",
    "tests/test_corpus.py",
    "tests/pipelines/test_cli.py",
    "tests/models/tape/test_fuzz.py",
    "tests/models/privacy/test_dp_falsification.py",
    "tests/assets/test_dp_release.py",
    "tests/test_end_to_end.py",
    "tests/pipelines/test_landing_object_storage.py",
)


def pytest_configure(config) -> None:
    # The thresholds of the `credittwin` command (pipelines/cli.py, `run`): each test process holds Dagster, torch,
    # Great Expectations and MLflow, and the tests that run commands in process (the corpus) grow that heap further;
    # with CPython's defaults the cyclic collector walks it again and again (the corpus tapes took 8% more CPU).
    import gc

    gc.set_threshold(20_000, 20, 100)


def pytest_collection_modifyitems(config, items) -> None:
    rank = {module: i for i, module in enumerate(LONGEST_FIRST)}

    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the collected order is kept within each rank


PG_URL = os.environ.get("CREDITTWIN_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REPO = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "credittwin")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    data = tmp_path / "data"
    (data / "landing").mkdir(parents=True)
    return Settings(data_dir=data, sensor_settle_seconds=0)


# Books of a few hundred loans leave a holdout of a few dozen: the audit's intervals are then too wide for the
# default policy, which refuses to certify on them. Tests whose subject is not the audit policy use this one:
# every figure is still measured and recorded, exact copies and k/l are still enforced.
SMALL_BOOK_AUDIT = {
    "n_attacks": 100,
    "anonymeter_sample_size": 300,
    "max_dcr_share": 0.9,
    "max_mia_auc": 0.95,
    "max_anonymeter_risk": 1.0,
    "max_inference_risk": 1.0,
    "require_measured": False,
}


# Likewise the PD model's registration gate: on a holdout of a hundred loans a decile calibration table has ten
# loans a bin and the AUC interval is wide.
SMALL_BOOK_RISK = {"auc_floor": 0.55, "max_calibration_error": 0.2}


def relax_audit(folder: Path, **changes) -> None:
    """Give the tenant.yaml in `folder` the small-book audit policy and risk gate (and any other top-level `changes`)."""
    import yaml

    path = folder / "tenant.yaml"
    config = yaml.safe_load(path.read_text()) or {}
    config.update({"audit": dict(SMALL_BOOK_AUDIT), "risk": dict(SMALL_BOOK_RISK), **changes})
    path.write_text(yaml.safe_dump(config))


def write_small_tape(folder: Path, *, rows: int = 120, performance: bool = True, config: str | None = None) -> Path:
    """A small, valid CSV upload (loans, performance, tenant.yaml) written into `folder`."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    regions = ["north", "south", "east", "west"]
    lines = ["loan_id,age,region,annual_income,loan_amount,interest_rate,term_months,default_flag"]
    for i in range(rows):
        lines.append(
            f"L{i:05d},{rng.integers(21, 70)},{regions[i % 4]},{rng.uniform(20e3, 150e3):.2f},"
            f"{rng.uniform(1e3, 40e3):.2f},{rng.uniform(3, 25):.2f},{(36, 60)[i % 2]},{int(rng.random() < 0.15)}"
        )
    (folder / "loans.csv").write_text("\n".join(lines) + "\n")
    if performance:
        perf = ["loan_id,period,status,days_past_due,balance,payment"]
        for i in range(rows):
            for period in range(1, 4):
                perf.append(f"L{i:05d},{period},current,0,{1000 - period * 10:.2f},10.00")
        (folder / "performance.csv").write_text("\n".join(perf) + "\n")
    (folder / "tenant.yaml").write_text(
        config
        if config is not None
        else "target: {column: default_flag, positive: 1}\nid_columns: [loan_id]\nquasi_identifiers: [age, region]\n"
    )
    if config is None:
        relax_audit(folder)
    return folder


# The public categories of the demo book's categorical columns, declared under `privacy.domains` by DP test tenants.
DP_DOMAINS = {
    "product": {"categories": ["mortgage", "auto", "personal", "card"]},
    "grade": {"categories": ["A", "B", "C", "D", "E", "F", "G"]},
    "region": {"categories": ["capital", "central", "east", "north", "north-east", "north-west", "south",
                              "south-east", "south-west", "west"]},
    "home_ownership": {"categories": ["rent", "own", "mortgage"]},
}


def write_dp_landing(folder: Path, privacy: dict, *, rows: int) -> None:
    """A demo book of `rows` loans (6 months, seed 11) uploaded to `folder`, its tenant.yaml under `privacy`.

    The demo's constraints are dropped: the DP twin does not take them.
    """
    from models.tape.demo import generate_portfolio, write_landing

    portfolio = generate_portfolio(rows, months=6, seed=11)
    portfolio.tenant_config["privacy"] = privacy
    portfolio.tenant_config.pop("constraints")
    write_landing(portfolio, folder, fmt="parquet")


def failure_text(result) -> str:
    """Every failed step's message of an in-process run, joined: what a failing assertion should print."""
    return " ".join(e.event_specific_data.error.message for e in result.get_step_failure_events())


def materialize_tenant(settings, instance, tenant: str, assets=None, *, run_config: dict | None = None):
    """Execute the tenant job in process for `tenant`, adding it as a partition when `instance` lacks it.

    Args:
        settings: the `Settings` the definitions are built from.
        instance: the Dagster instance to run on.
        tenant: the partition key.
        assets: the asset names to select; None selects the whole job.
        run_config: the run config, e.g. ``{"ops": {...}}``.

    Returns:
        The `ExecuteInProcessResult`; a failed step is reported in it, not raised.
    """
    import dagster as dg

    from pipelines.definitions import build_definitions

    if not instance.has_dynamic_partition("tenants", tenant):
        instance.add_dynamic_partitions("tenants", [tenant])
    job = build_definitions(settings).resolve_job_def("tenant_pipeline")
    return job.execute_in_process(
        partition_key=tenant,
        instance=instance,
        run_config=run_config,
        asset_selection=None if assets is None else [dg.AssetKey(name) for name in assets],
        raise_on_error=False,
    )


def daemon_workspace(tmp_path: Path, data_dir: Path, instance):
    """A daemon workspace context that loads the real code location, wired to `data_dir` (a context manager)."""
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import InProcessTestWorkspaceLoadTarget, create_test_daemon_workspace_context
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

    location = tmp_path / "location.py"
    location.write_text(
        "from pathlib import Path\nfrom pipelines.definitions import build_definitions\n"
        "from resources.settings import Settings\n"
        f"defs = build_definitions(Settings(data_dir=Path({str(data_dir)!r}), sensor_settle_seconds=0))\n"
    )
    origin = LoadableTargetOrigin(executable_path=sys.executable, python_file=str(location), working_directory=str(REPO))
    target = InProcessTestWorkspaceLoadTarget(InProcessCodeLocationOrigin(origin, location_name="credittwin"))
    return create_test_daemon_workspace_context(target, instance)


def run_cli(tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed `credittwin` command in `tmp_path`, its data dir ``tmp_path/data`` and HOME `tmp_path`."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "CREDITTWIN_DATA_DIR": str(tmp_path / "data"),
        "HOME": str(tmp_path),
    }
    return subprocess.run([CLI, *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """The PostgreSQL server; a connection failure fails the test (it is never skipped)."""
    import psycopg2

    connection = psycopg2.connect(PG_URL, connect_timeout=5)
    connection.close()
    return PG_URL


@pytest.fixture
def pg_database(pg_server_url: str):
    """A fresh, empty PostgreSQL database for one test, dropped afterwards (`resources.sqlstore.scratch_database`)."""
    from resources.sqlstore import scratch_database

    with scratch_database(pg_server_url, "credittwin_test") as url:
        yield url


S3_CREDENTIALS = {"key": "credittwin-test", "secret": "credittwin-test"}


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible server (moto's S3 app) in a thread of this process, on a free port: its URL.

    It serves one request at a time. moto checks a conditional PUT (If-None-Match)
    and stores the object in two steps without a lock; served one at a time they
    are atomic, as they are on S3, so racing writers see what they would there.
    """
    import threading

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    class OneConnectionAtATime(MotoRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection, so no client holds the server

    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=False,
                         request_handler=OneConnectionAtATime)
    thread = threading.Thread(target=server.serve_forever, name="moto-s3", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def s3_admin(s3_endpoint: str):
    """An s3fs client of the S3 server, for making buckets."""
    import s3fs

    return s3fs.S3FileSystem(endpoint_url=s3_endpoint, skip_instance_cache=True, **S3_CREDENTIALS)


@pytest.fixture
def s3_bucket(s3_endpoint: str, s3_admin) -> tuple[str, dict]:
    """A fresh bucket on the S3 server: (``s3://<bucket>/data``, the storage options that reach it)."""
    bucket = f"credittwin-{uuid.uuid4().hex[:12]}"
    s3_admin.mkdir(bucket)
    return f"s3://{bucket}/data", {"endpoint_url": s3_endpoint, **S3_CREDENTIALS}
