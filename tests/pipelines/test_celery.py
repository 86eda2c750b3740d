"""The Celery execution engine: its settings, the executor every job gets, the queue of each step, and
`credittwin worker` against the real Redis broker (tests/test_scale_out.py runs whole graphs on workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.reconstruct import ReconstructableRepository

from pipelines.definitions import build_definitions
from pipelines.jobs import build_executor, celery_config_source
from resources.settings import Settings
from tests.conftest import CLI, REPO, run_cli

BROKER_URL = os.environ.get("CREDITTWIN_TEST_BROKER_URL", "redis://127.0.0.1:6379/0")
READY_S = 120  # a worker's start on a busy 2-core machine: importing Dagster and Celery, connecting


def _settings(tmp_path, **env) -> Settings:
    return Settings.from_env({"CREDITTWIN_DATA_DIR": str(tmp_path), **env})


# --------------------------------------------------------------------------- settings


def test_the_default_needs_no_broker(tmp_path):
    # run
    settings = _settings(tmp_path)
    # assert: Dagster's own executor, nothing Celery
    assert (settings.executor, settings.broker_url, settings.celery_key_prefix) == ("multiprocess", None, None)
    assert build_executor(settings) is None
    assert build_definitions(settings).resolve_job_def("tenant_pipeline").executor_def.name == "multi_or_in_process_executor"


def test_celery_settings_are_read_and_the_backend_defaults_to_rpc(tmp_path):
    # run
    settings = _settings(tmp_path, CREDITTWIN_EXECUTOR=" Celery ", CREDITTWIN_BROKER_URL="amqp://guest:s3cret@mq:5672//")
    # assert: the password stays out of the repr
    assert (settings.executor, settings.broker_url, settings.celery_backend) == ("celery", "amqp://guest:s3cret@mq:5672//", "rpc://")
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CREDITTWIN_EXECUTOR": "kubernetes"},
         "CREDITTWIN_EXECUTOR='kubernetes' is not one of ('multiprocess', 'in_process', 'celery'); leave it unset for "
         "the embedded default, or set it to 'celery' (with CREDITTWIN_BROKER_URL) to run steps on Celery workers."),
        ({"CREDITTWIN_EXECUTOR": "celery"},
         "CREDITTWIN_EXECUTOR=celery needs CREDITTWIN_BROKER_URL; set it to the broker the workers use, e.g. "
         "redis://127.0.0.1:6379/0 or amqp://guest:guest@127.0.0.1:5672//."),
        ({"CREDITTWIN_EXECUTOR": "celery", "CREDITTWIN_BROKER_URL": "https://user:s3cret@broker"},
         "CREDITTWIN_BROKER_URL is a https:// URL, which Celery cannot use here; set it to e.g. redis://127.0.0.1:6379/0 "
         "(Redis) or amqp://user:password@host:5672/vhost (RabbitMQ)."),
        ({"CREDITTWIN_BROKER_URL": "127.0.0.1:6379"},
         "CREDITTWIN_BROKER_URL is a URL without a scheme, which Celery cannot use here; set it to e.g. "
         "redis://127.0.0.1:6379/0 (Redis) or amqp://user:password@host:5672/vhost (RabbitMQ)."),
        ({"CREDITTWIN_BROKER_URL": "redis://h:6379/0", "CREDITTWIN_CELERY_BACKEND_URL": "db+sqlite:///r.db"},
         "CREDITTWIN_CELERY_BACKEND_URL is a db+sqlite:// URL, which Celery cannot use here; set it to e.g. rpc:// "
         "(results back through the broker) or redis://127.0.0.1:6379/1."),
        ({"CREDITTWIN_BROKER_URL": "amqp://mq//", "CREDITTWIN_CELERY_KEY_PREFIX": "prod:"},
         "CREDITTWIN_CELERY_KEY_PREFIX applies to a Redis broker only; unset it, or set CREDITTWIN_BROKER_URL to "
         "redis://host:6379/0 (keep RabbitMQ deployments apart by virtual host instead)."),
        ({"CREDITTWIN_BROKER_URL": "redis://h:6379/0", "CREDITTWIN_CELERY_KEY_PREFIX": "a b"},
         "CREDITTWIN_CELERY_KEY_PREFIX='a b' is not 1-63 letters, digits, '_', '.', ':' or '-' starting with a letter "
         "or digit; set it to e.g. credittwin-prod: or leave it unset."),
    ],
    ids=["unknown-executor", "celery-without-broker", "http-broker", "no-scheme", "db-backend", "prefix-on-rabbitmq",
         "bad-prefix"],
)
def test_a_wrong_celery_setting_names_the_variable_and_the_fix(tmp_path, env, message):
    # run / assert: the message never echoes a password
    with pytest.raises(ValueError) as caught:
        _settings(tmp_path, **env)
    assert str(caught.value) == message and "s3cret" not in str(caught.value)


# --------------------------------------------------------------------------- executor and queues


def test_celery_is_the_executor_of_every_job_with_the_settings_broker(tmp_path):
    # setup
    settings = _settings(tmp_path, CREDITTWIN_EXECUTOR="celery", CREDITTWIN_BROKER_URL="redis://h:6379/3",
                         CREDITTWIN_CELERY_BACKEND_URL="redis://h:6379/4", CREDITTWIN_CELERY_KEY_PREFIX="prod:")
    # run
    definitions = build_definitions(settings)
    # assert: tenant_pipeline and the asset job the UI, sensors and backfills use
    for job in (definitions.resolve_job_def("tenant_pipeline"), definitions.resolve_implicit_global_asset_job_def()):
        assert job.executor_def.name == "celery"
    config = build_executor(settings).config_schema.resolve_config({}).value["config"]
    assert (config["broker"], config["backend"]) == ("redis://h:6379/3", "redis://h:6379/4")
    assert config["retries"] == {"enabled": {}}  # the assets' retry policies stay in force
    options = config["config_source"]
    assert options["task_default_queue"] == "default"
    assert options["broker_transport_options"]["global_keyprefix"] == "prod:"
    assert options["broker_transport_options"]["max_retries"] == 3  # dagster-celery's own options kept


def test_training_steps_go_to_the_training_queue_and_the_rest_to_default(tmp_path):
    # setup
    settings = _settings(tmp_path, CREDITTWIN_EXECUTOR="celery", CREDITTWIN_BROKER_URL="redis://h:6379/0")
    job = build_definitions(settings).resolve_job_def("tenant_pipeline")
    # run
    queues = {node.name: node.definition.tags.get("dagster-celery/queue") for node in job.graph.nodes}
    # assert: untagged steps take the executor's default queue, which CreditTwin names "default"
    assert {name for name, queue in queues.items() if queue == "training"} == {"fitted_copula", "lstm_cascade", "risk_model"}
    assert {queue for name, queue in queues.items() if name not in ("fitted_copula", "lstm_cascade", "risk_model")} == {None}
    assert celery_config_source(settings) == {"task_default_queue": "default"}


def test_celery_without_dagster_celery_installed_says_how_to_install_it(tmp_path, monkeypatch):
    # setup: the import fails as it does where the `scale` extra is missing
    from models.errors import CreditTwinError

    monkeypatch.setitem(sys.modules, "dagster_celery", None)
    settings = _settings(tmp_path, CREDITTWIN_EXECUTOR="celery", CREDITTWIN_BROKER_URL="redis://h:6379/0")
    # run / assert
    with pytest.raises(CreditTwinError, match=r"needs dagster-celery.*pip install -e '\.\[scale\]'"):
        build_executor(settings)


def test_in_process_is_available_as_a_setting(tmp_path):
    # run / assert
    settings = _settings(tmp_path, CREDITTWIN_EXECUTOR="in_process")
    assert build_definitions(settings).resolve_job_def("tenant_pipeline").executor_def.name == "in_process"


# --------------------------------------------------------------------------- credittwin worker


def test_a_worker_without_a_broker_says_which_variable_to_set(tmp_path):
    # run
    result = run_cli(tmp_path, "worker")
    # assert
    assert result.returncode == 2
    assert "needs the Celery broker" in result.stderr and "set CREDITTWIN_BROKER_URL" in result.stderr


def test_a_worker_refuses_queue_names_celery_cannot_route(tmp_path):
    # setup / run
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "CREDITTWIN_DATA_DIR": str(tmp_path / "data"),
           "CREDITTWIN_BROKER_URL": BROKER_URL}
    result = subprocess.run([CLI, "worker", "--queues", "training;rm -rf /"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=120)
    # assert
    assert result.returncode == 2 and "is not a comma-separated list of queue names" in result.stderr


@pytest.fixture
def redis_client():
    """The Redis broker; a connection failure fails the test (it is never skipped)."""
    import redis

    client = redis.Redis.from_url(BROKER_URL, socket_connect_timeout=5)
    client.ping()
    yield client
    client.close()


def test_a_worker_serves_its_queues_under_the_key_prefix_and_stops_on_sigterm(tmp_path, redis_client):
    # setup: a worker on both queues with a unique key prefix; its temporary files go under tmp_path
    prefix = f"credittwin-test-{uuid.uuid4().hex[:12]}:"
    name = f"probe-{uuid.uuid4().hex[:6]}"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(scratch),
           "CREDITTWIN_DATA_DIR": str(tmp_path / "data"), "CREDITTWIN_EXECUTOR": "celery",
           "CREDITTWIN_BROKER_URL": BROKER_URL, "CREDITTWIN_CELERY_KEY_PREFIX": prefix}
    log = tmp_path / "worker.log"
    with open(log, "wb") as output:
        worker = subprocess.Popen([CLI, "worker", "--name", name, "--concurrency", "1"], cwd=tmp_path, env=env,
                                  stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # run: wait until Celery says the worker is ready, then stop it as a supervisor would
        deadline = time.monotonic() + READY_S
        while f"{name}@" not in (text := log.read_text(errors="replace")) or " ready." not in text:
            assert worker.poll() is None, text
            assert time.monotonic() < deadline, f"no ready worker after {READY_S}s:\n{text}"
            time.sleep(0.5)
        keys = {key.decode() for key in redis_client.scan_iter(match=f"{prefix}*")}
        (options,) = scratch.glob("credittwin-celery-*/dagster_celery_config.py")
        options_text = options.read_text()
        worker.send_signal(signal.SIGTERM)
        returncode = worker.wait(timeout=120)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        stale = list(redis_client.scan_iter(match=f"{prefix}*"))
        if stale:
            redis_client.delete(*stale)
    # assert: it bound both queues under the prefix (the executor's options reached Celery), kept the broker URL
    # (which may hold a password) out of its options file and removed the file, and shut down warm
    text = log.read_text(errors="replace")
    assert {f"{prefix}_kombu.binding.training", f"{prefix}_kombu.binding.default"} <= keys, keys
    assert prefix in options_text and BROKER_URL not in options_text
    assert list(scratch.iterdir()) == []
    assert returncode == 0 and "Warm shutdown" in text, text[-3000:]
    assert f"credittwin worker {name}@%h: queues training, default; broker {BROKER_URL}" in text


def test_a_broker_that_cannot_be_reached_fails_the_run_in_seconds_naming_it(tmp_path):
    # setup: the code location with the Celery executor on a port nothing listens on
    location = tmp_path / "location.py"
    location.write_text(
        "from pipelines.definitions import build_definitions\nfrom resources.settings import Settings\n"
        "defs = build_definitions(Settings.from_env({'CREDITTWIN_DATA_DIR': %r, 'CREDITTWIN_EXECUTOR': 'celery', "
        "'CREDITTWIN_BROKER_URL': 'redis://127.0.0.1:1/0'}))\n" % str(tmp_path / "data")
    )
    job = ReconstructableRepository.for_file(str(location), "defs", working_directory=str(REPO)) \
        .get_reconstructable_job("tenant_pipeline")
    with dg.instance_for_test() as instance:  # a persistent instance: Celery steps would open it by reference
        instance.add_dynamic_partitions("tenants", ["acme"])
        # run
        started = time.monotonic()
        result = dg.execute_job(job, instance, tags={"dagster/partition": "acme"},
                                asset_selection=[dg.AssetKey("raw_loan_tape")])
        elapsed = time.monotonic() - started
    # assert: no step ran; the error says which broker could not be reached
    errors = [e.event_specific_data.error.message for e in result.all_events
              if e.event_type == dg.DagsterEventType.ENGINE_EVENT and getattr(e.event_specific_data, "error", None)]
    assert not result.success and elapsed < 120
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]
    assert any("127.0.0.1:1" in message for message in errors), errors
