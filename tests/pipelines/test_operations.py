"""Operations wiring on real Dagster instances: instance config, automation, schedules, drift and failure sensors."""

import datetime
import http.server
import json
import logging
import multiprocessing
import threading
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from models.errors import CreditTwinError
from pipelines.automation import (
    AUTOMATION_SENSOR_NAME,
    apply_automation,
    freshness_policy,
    regenerate_on_data_change,
)
from pipelines.definitions import build_definitions
from pipelines.jobs import SCOPE_TAG, WHOLE_GRAPH
from pipelines.ops_sensors import append_jsonl, drift_sensor, failure_log_path, run_failure_alerts
from pipelines.schedules import REGENERATION_SCHEDULE, STRESS_REFRESH_SCHEDULE, build_schedules
from resources.dagster_resources import CreditTwinSettings
from resources.settings import Settings
from tests.conftest import REPO, daemon_workspace, materialize_tenant, write_small_tape

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
LABEL = regenerate_on_data_change().get_label()


def _materialize(settings, instance, tenant, assets):
    return materialize_tenant(settings, instance, tenant, assets, run_config=QUIET)


def _instance_from(home: Path, config: dict) -> dg.DagsterInstance:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return dg.DagsterInstance.from_config(str(home))


# ------------------------------------------------------------------------------- instance config


def _assert_operations_config(instance, *, max_runs):
    assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    config = instance.get_concurrency_config()
    queue = config.run_queue_config
    assert queue.max_concurrent_runs == max_runs
    limits = {(limit["key"], json.dumps(limit.get("value"), sort_keys=True)): limit["limit"] for limit in queue.tag_concurrency_limits}
    assert limits[("dagster/partition", '{"applyLimitPerUniqueValue": true}')] == 1
    assert 1 <= limits[("credittwin/trigger", '"regeneration"')] < max_runs  # room is left for other runs
    assert limits[("dagster/backfill", '{"applyLimitPerUniqueValue": true}')] >= 1
    assert config.pool_config.default_pool_limit >= 1
    assert config.pool_config.pool_granularity.value == "op"
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert not instance.run_retries_retry_on_asset_or_op_failure  # data errors are not re-run whole
    assert instance.run_monitoring_enabled and instance.run_monitoring_start_timeout_seconds == 300
    # a crashed step's pool slot comes back within about a minute of its run's end, checked every 30 s
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] == 60
    assert instance.run_monitoring_settings["poll_interval_seconds"] == 30


def test_embedded_instance_config_parses_with_limits_pools_and_retries(tmp_path):
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    with _instance_from(tmp_path / "home", config) as instance:
        _assert_operations_config(instance, max_runs=4)


def test_postgres_instance_config_parses_and_connects(tmp_path, pg_database, monkeypatch):
    monkeypatch.setenv("DAGSTER_PG_URL", pg_database)
    config = yaml.safe_load((REPO / "pipelines" / "deploy" / "dagster.postgres.yaml").read_text())
    with _instance_from(tmp_path / "home", config) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        _assert_operations_config(instance, max_runs=8)
        instance.add_dynamic_partitions("tenants", ["acme"])  # the storage answers
        assert instance.get_dynamic_partitions("tenants") == ["acme"]


# ------------------------------------------------------------------------------------ definitions


def test_definitions_attach_automation_freshness_schedules_and_sensors(tmp_path):
    settings = Settings(data_dir=tmp_path / "data", regeneration_cron="0 5 * * 2", freshness_days=10)
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        condition = node.automation_condition
        if key.to_user_string() == "raw_loan_tape":
            assert condition is None  # its runs come from the landing sensor, not from automation
        else:
            assert condition is not None and condition.get_label() == LABEL, key
    present = [k for k in ("privacy_certificate", "risk_model") if dg.AssetKey(k) in graph.get_all_asset_keys()]
    assert present, "neither freshness asset exists"
    for name in present:
        policy = graph.get(dg.AssetKey(name)).freshness_policy
        assert policy.fail_window.to_timedelta() == datetime.timedelta(days=10)
        assert policy.warn_window.to_timedelta() == datetime.timedelta(days=5)
    assert graph.get(dg.AssetKey("loan_features")).freshness_policy is None
    schedule = defs.resolve_schedule_def(REGENERATION_SCHEDULE)
    assert schedule.cron_schedule == "0 5 * * 2" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    has_stress = dg.AssetKey("stress_test") in graph.get_all_asset_keys()
    assert any(s.name == STRESS_REFRESH_SCHEDULE for s in defs.schedules) == has_stress
    sensors = {s.name: s for s in defs.sensors}
    assert {"landing_sensor", AUTOMATION_SENSOR_NAME, "drift_sensor", "dead_run_sensor", "run_failure_alerts"} <= set(sensors)
    for name in (AUTOMATION_SENSOR_NAME, "drift_sensor", "dead_run_sensor", "run_failure_alerts"):
        assert sensors[name].default_status == dg.DefaultSensorStatus.RUNNING, name
    assert isinstance(sensors[AUTOMATION_SENSOR_NAME], dg.AutomationConditionSensorDefinition)
    assert defs.resolve_job_def("tenant_pipeline") is not None


def test_a_bad_cron_setting_names_the_variable(tmp_path):
    with pytest.raises(CreditTwinError, match="CREDITTWIN_REGENERATION_CRON='every monday'"):
        build_definitions(Settings(data_dir=tmp_path, regeneration_cron="every monday"))
    with pytest.raises(ValueError, match="CREDITTWIN_FRESHNESS_DAYS"):
        Settings.from_env({"CREDITTWIN_FRESHNESS_DAYS": "0"})
    parsed = Settings.from_env({"CREDITTWIN_ALERT_WEBHOOK_URL": " https://hooks.example/x ", "CREDITTWIN_FRESHNESS_DAYS": "45"})
    assert parsed.alert_webhook_url == "https://hooks.example/x" and parsed.freshness_days == 45
    assert parsed.regeneration_cron == "0 3 * * 1" and parsed.stress_refresh_cron == "0 4 1 * *"


def test_apply_automation_applies_to_whichever_assets_exist_and_keeps_their_own():
    own = dg.AutomationCondition.on_cron("0 0 * * *")
    specs = [
        dg.AssetSpec("raw_loan_tape"),
        dg.AssetSpec("loan_features", deps=["raw_loan_tape"]),
        dg.AssetSpec("fitted_copula", deps=["raw_loan_tape"]),
        dg.AssetSpec("risk_model", deps=["loan_features"]),
        dg.AssetSpec("stress_test", deps=["risk_model"], automation_condition=own),
    ]
    mapped = {s.key.to_user_string(): s for s in apply_automation(specs, freshness_days=30, without_automation=["fitted_copula"])}
    assert mapped["raw_loan_tape"].automation_condition is None
    assert mapped["fitted_copula"].automation_condition is None
    assert mapped["loan_features"].automation_condition.get_label() == LABEL
    assert mapped["stress_test"].automation_condition == own
    assert mapped["risk_model"].freshness_policy == freshness_policy(30)
    assert mapped["loan_features"].freshness_policy is None
    assert freshness_policy(7).warn_window.to_timedelta() == datetime.timedelta(days=3.5)
    schedules = {s.name for s in build_schedules(Settings(data_dir=Path("/nowhere")), mapped.values())}
    assert schedules == {REGENERATION_SCHEDULE, STRESS_REFRESH_SCHEDULE}
    assert {s.name for s in build_schedules(Settings(data_dir=Path("/nowhere")), specs[:2])} == {REGENERATION_SCHEDULE}


# ------------------------------------------------------------------------------------ automation


def _true_labels(result, instance) -> set[str]:
    """Labels of every sub-condition that held, from the serialized evaluation the UI shows."""
    from dagster._core.definitions.partitions.context import partition_loading_context

    labels, stack = set(), [result.serializable_evaluation]
    with partition_loading_context(datetime.datetime.now(datetime.UTC), instance):
        while stack:
            node = stack.pop()
            if node.true_subset.size and node.condition_snapshot.label:
                labels.add(node.condition_snapshot.label)
            stack.extend(node.child_evaluations)
    return labels


def test_unchanged_upload_does_not_regenerate_downstream_and_a_changed_one_does(settings):
    folder = write_small_tape(settings.landing_dir / "acme")
    defs = build_definitions(settings)
    features = dg.AssetKey("loan_features")
    # a direct child, a heavy child and a grandchild of the raw tape (every asset would take 4 s per tick here)
    watched = dg.AssetSelection.assets("loan_features", "fitted_copula", "synthetic_portfolio")

    def evaluate(cursor=None):
        return dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=watched, cursor=cursor)

    with dg.instance_for_test() as instance:
        assert _materialize(settings, instance, "acme", ["raw_loan_tape", "loan_features"]).success
        first = evaluate()
        assert first.total_requested == 0

        # the same upload ingested again: a new materialization with the same data version
        assert _materialize(settings, instance, "acme", ["raw_loan_tape"]).success
        records = instance.fetch_materializations(dg.AssetKey("raw_loan_tape"), limit=2).records
        assert len(records) == 2 and len({r.asset_materialization.tags["dagster/data_version"] for r in records}) == 1
        unchanged = evaluate(first.cursor)
        assert unchanged.total_requested == 0

        # a changed upload: loan_features (and the twin) are requested for this tenant, and the UI says why
        with open(folder / "loans.csv", "a") as handle:
            handle.write("L99999,40,north,50000.00,1000.00,5.00,36,0\n")
        assert _materialize(settings, instance, "acme", ["raw_loan_tape"]).success
        changed = evaluate(unchanged.cursor)
        assert changed.get_requested_partitions(features) == {"acme"}
        assert changed.get_requested_partitions(dg.AssetKey("fitted_copula")) == {"acme"}
        why = _true_labels(next(r for r in changed.results if r.key == features), instance)
        assert {LABEL, "any upstream data version changed", "upstream data version changed (in another run)"} <= why

        # a changed upload ingested together with loan_features (the landing sensor's run): no second run
        with open(folder / "loans.csv", "a") as handle:
            handle.write("L99998,41,south,51000.00,1100.00,6.00,36,0\n")
        assert _materialize(settings, instance, "acme", ["raw_loan_tape", "loan_features"]).success
        together = evaluate(changed.cursor)
        assert together.get_requested_partitions(features) == set()


def test_a_whole_graph_run_is_not_followed_by_an_automation_run(settings):
    # setup: the tenant is materialized; its upload then changes
    folder = write_small_tape(settings.landing_dir / "acme")
    defs = build_definitions(settings)
    watched = dg.AssetSelection.assets("loan_features", "fitted_copula")
    with dg.instance_for_test() as instance:
        assert _materialize(settings, instance, "acme", ["raw_loan_tape", "loan_features"]).success
        before = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=watched)
        with open(folder / "loans.csv", "a") as handle:
            handle.write("L99999,40,north,50000.00,1000.00,5.00,36,0\n")

        # run: the changed upload is ingested by a run of the whole graph (the landing sensor's, drift's or
        # `credittwin materialize`), which Dagster records without an asset selection; an automation tick follows
        job = defs.resolve_job_def("tenant_pipeline")
        whole = job.execute_in_process(
            partition_key="acme", instance=instance, run_config=QUIET, tags={SCOPE_TAG: WHOLE_GRAPH},
            asset_selection=[dg.AssetKey("raw_loan_tape")],  # the rest of the graph is not needed to show the tick
        )
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=watched, cursor=before.cursor)

        # assert: that run regenerates what lies below; automation requests nothing on top of it
        assert whole.success
        assert after.total_requested == 0


# ------------------------------------------------------------------------------------- schedules


def test_regeneration_schedule_requests_every_tenant_and_the_queue_runs_them_in_batches(tmp_path):
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
    from dagster._scheduler.scheduler import launch_scheduled_runs

    data = tmp_path / "data"
    tenants = [f"bank-{i}" for i in range(7)]
    for tenant in tenants:
        (data / "landing" / tenant).mkdir(parents=True)
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    for limit in config["concurrency"]["runs"]["tag_concurrency_limits"]:
        if limit["key"] == "credittwin/trigger":
            limit["limit"] = 3  # the batch
    config["concurrency"]["runs"]["max_concurrent_runs"] = 5
    config["run_launcher"] = {"module": "dagster._core.test_utils", "class": "MockedRunLauncher"}  # launches nothing
    logger = logging.getLogger("test_schedule")
    with _instance_from(tmp_path / "home", config) as instance:
        instance.add_dynamic_partitions("tenants", [*tenants, "gone"])  # 'gone' has no landing folder
        with daemon_workspace(tmp_path, data, instance) as workspace:
            now = datetime.datetime.now(datetime.UTC)
            list(launch_scheduled_runs(workspace, logger, end_datetime_utc=now, iteration_times={}))
            assert instance.get_runs() == []  # RUNNING by default, but no tick has passed yet
            list(launch_scheduled_runs(workspace, logger, end_datetime_utc=now + datetime.timedelta(days=7, minutes=1), iteration_times={}))
            runs = instance.get_runs()
            assert sorted(r.tags["dagster/partition"] for r in runs) == tenants
            assert all(r.status == dg.DagsterRunStatus.QUEUED for r in runs)
            assert all(r.tags["credittwin/trigger"] == "regeneration" and r.tags["dagster/schedule_name"] == REGENERATION_SCHEDULE for r in runs)
            # a whole-graph run: the automation does not queue a second run after it
            assert all(r.tags[SCOPE_TAG] == WHOLE_GRAPH for r in runs)
            # a landing run for bank-0 arrives later, at the default priority
            remote_job = next(iter(workspace.create_request_context().get_code_location_entries().values())).code_location.get_repository("__repository__").get_full_job("tenant_pipeline")
            landing = instance.create_run_for_job(
                job_def=build_definitions(Settings(data_dir=data)).resolve_job_def("tenant_pipeline"),
                remote_job_origin=remote_job.get_remote_origin(),
                job_code_origin=remote_job.get_python_origin(),
                tags={"dagster/partition": "bank-0", "credittwin/trigger": "landing"},
            )
            instance.submit_run(landing.run_id, workspace.create_request_context())

            daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
            batches = []
            for _ in range(5):
                list(daemon.run_iteration(workspace))
                started = [r for r in instance.get_runs() if r.status == dg.DagsterRunStatus.STARTING]
                batches.append(sorted((r.tags["credittwin/trigger"], r.tags["dagster/partition"]) for r in started))
                for run in started:
                    instance.report_run_failed(run)  # finish them so the next batch can start
            # the landing run overtakes; bank-0's regeneration waits for it (one run per tenant); 3 at a time
            assert batches[0] == [("landing", "bank-0"), ("regeneration", "bank-1"), ("regeneration", "bank-2"), ("regeneration", "bank-3")]
            assert [len(b) for b in batches[1:]] == [3, 1, 0, 0]
            assert {p for b in batches for _, p in b} == set(tenants)


def test_stress_refresh_schedule_targets_tenants_with_a_risk_model(tmp_path):
    from assets.partitions import tenants

    @dg.asset(partitions_def=tenants)
    def stress_test():
        return None

    defs = dg.Definitions(
        assets=[stress_test],
        schedules=build_schedules(Settings(data_dir=tmp_path), [stress_test]),
        resources={"settings": CreditTwinSettings(data_dir=str(tmp_path))},
    )
    schedule = defs.resolve_schedule_def(STRESS_REFRESH_SCHEDULE)
    assert schedule.cron_schedule == "0 4 1 * *" and schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenants", ["acme", "beta"])
        instance.report_runless_asset_event(dg.AssetMaterialization("risk_model", partition="beta"))
        context = dg.build_schedule_context(
            instance=instance,
            scheduled_execution_time=datetime.datetime(2026, 3, 1, 4, 0, tzinfo=datetime.UTC),
            repository_def=defs.get_repository_def(),
        )
        requests = schedule.evaluate_tick(context).run_requests
        assert [(r.partition_key, r.asset_selection, r.tags["credittwin/trigger"]) for r in requests] == [
            ("beta", [dg.AssetKey("stress_test")], "stress-refresh")
        ]
        assert requests[0].run_key == "stress-refresh:beta:2026-03-01T04:00+00:00"


# ------------------------------------------------------------------------------------------ drift


def _drift_tick(settings, instance, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"settings": CreditTwinSettings(data_dir=str(settings.data_dir))}
    )
    return drift_sensor(context)


def test_drift_sensor_requests_regeneration_only_for_a_shifted_population(settings):
    folder = write_small_tape(settings.landing_dir / "acme", rows=400, performance=False)
    loans = pl.read_csv(folder / "loans.csv")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tenants", ["aaa-broken", "acme"])
        assert _materialize(settings, instance, "acme", ["raw_loan_tape", "fitted_copula"]).success
        # 'aaa-broken' (evaluated first) has a twin and two stored tapes on record whose files are garbage:
        # it is logged and skipped, acme is still measured
        store = settings.data_dir / "assets" / "raw_loan_tape" / "aaa-broken"
        for version in ("v1-0", "v2-0"):
            (store / version).mkdir(parents=True)
            (store / version / "manifest.json").write_text("{}")
            (store / version / "loans.parquet").write_bytes(b"not parquet")
        for asset, version in (("raw_loan_tape", "v1-0"), ("fitted_copula", None), ("raw_loan_tape", "v2-0")):
            metadata = {"path": dg.MetadataValue.path(str(store / version))} if version else {}
            instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition="aaa-broken", metadata=metadata))
        fresh = _drift_tick(settings, instance)
        assert fresh.run_requests == []  # the twin was fitted on the newest tape

        # the same population, a slightly different upload: measured, within threshold, nothing requested
        loans.head(380).write_csv(folder / "loans.csv")
        assert _materialize(settings, instance, "acme", ["raw_loan_tape"]).success
        same = _drift_tick(settings, instance, fresh.cursor)
        assert same.run_requests == []
        assert json.loads(same.cursor)["acme"]["decision"] == "within-threshold"

        # a shifted population (incomes tripled, a quarter more defaults): one regeneration run with the figures
        loans.with_columns(
            pl.col("annual_income") * 3,
            pl.when(pl.int_range(pl.len()) % 4 == 0).then(1).otherwise(pl.col("default_flag")).alias("default_flag"),
        ).write_csv(folder / "loans.csv")
        assert _materialize(settings, instance, "acme", ["raw_loan_tape"]).success
        shifted = _drift_tick(settings, instance, same.cursor)
        assert [r.partition_key for r in shifted.run_requests] == ["acme"]
        tags = shifted.run_requests[0].tags
        assert tags["credittwin/trigger"] == "drift" and tags["credittwin/drift"] == "true"
        assert tags["credittwin/drift_max_psi_column"] == "annual_income" and float(tags["credittwin/drift_max_psi"]) > 1.0
        assert float(tags["credittwin/drift_default_rate_shift_pp"]) > 10
        assert all(isinstance(v, str) and len(v) <= 100 for v in tags.values())
        report = json.loads((settings.data_dir / tags["credittwin/drift_report"]).read_text())
        assert report["psi"]["annual_income"] > 1.0 and report["exceeds"]

        # the same drift is not requested twice
        assert _drift_tick(settings, instance, shifted.cursor).run_requests == []


def test_drift_waits_for_a_tenant_with_a_run_in_flight(settings):
    folder = write_small_tape(settings.landing_dir / "acme", rows=200, performance=False)
    with dg.instance_for_test() as instance:
        assert _materialize(settings, instance, "acme", ["raw_loan_tape", "fitted_copula"]).success
        loans = pl.read_csv(folder / "loans.csv")
        loans.with_columns(pl.col("annual_income") * 5).write_csv(folder / "loans.csv")
        assert _materialize(settings, instance, "acme", ["raw_loan_tape"]).success
        job = build_definitions(settings).resolve_job_def("tenant_pipeline")
        running = instance.create_run_for_job(job_def=job, tags={"dagster/partition": "acme"}, status=dg.DagsterRunStatus.STARTED)
        waiting = _drift_tick(settings, instance)
        assert waiting.run_requests == [] and "acme" not in json.loads(waiting.cursor)
        instance.report_run_canceled(running)
        assert [r.partition_key for r in _drift_tick(settings, instance, waiting.cursor).run_requests] == ["acme"]


# ------------------------------------------------------------------------------------- failures


class _Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def _failure_context(instance, result, settings, webhook):
    run = instance.get_run_by_id(result.run_id)
    failure = next(
        e.dagster_event
        for e in instance.all_logs(result.run_id)
        if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_FAILURE
    )
    resources = {"settings": CreditTwinSettings(data_dir=str(settings.data_dir), alert_webhook_url=webhook)}
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_alerts", dagster_event=failure, dagster_instance=instance, dagster_run=run, resources=resources
    ).for_run_failure()


def test_failure_sensor_logs_each_failure_per_tenant_and_posts_it_to_the_webhook(settings):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    try:
        with dg.instance_for_test() as instance:
            # no upload for tenant 'ghost': raw_loan_tape fails with a CreditTwin error naming the tenant
            result = _materialize(settings, instance, "ghost", ["raw_loan_tape", "loan_features"])
            assert not result.success
            webhook = f"http://127.0.0.1:{server.server_port}/hooks/T000/secret"
            run_failure_alerts(_failure_context(instance, result, settings, webhook))
            run_failure_alerts(_failure_context(instance, result, settings, None))  # log only
    finally:
        server.shutdown()
    lines = failure_log_path(settings.data_dir, "ghost").read_text().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["tenant"] == "ghost" and first["run_id"] == result.run_id and first["job"] == "tenant_pipeline"
    assert first["step"] == "raw_loan_tape" and "tenant 'ghost'" in first["error"]
    assert datetime.datetime.fromisoformat(first["time"]).tzinfo is not None
    assert first["webhook_delivered"] is True and second["webhook_delivered"] is False
    assert len(_Hook.received) == 1
    posted = _Hook.received[0]
    assert posted["tenant"] == "ghost" and posted["run_id"] == result.run_id and "tenant 'ghost'" in posted["error"]


def _append_many(path, writer):
    for i in range(200):
        append_jsonl(Path(path), {"writer": writer, "i": i, "pad": "x" * 3000})


def test_failure_log_appends_whole_lines_from_concurrent_writers(tmp_path):
    path = failure_log_path(tmp_path, None)
    assert path.name == "_platform.jsonl"
    workers = [multiprocessing.get_context("fork").Process(target=_append_many, args=(str(path), w)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 800 and len({(r["writer"], r["i"]) for r in records}) == 800
