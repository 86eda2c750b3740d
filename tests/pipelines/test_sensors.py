import json

import dagster as dg

from pipelines.definitions import build_definitions
from pipelines.sensors import ingested_upload, landing_sensor
from resources.dagster_resources import CreditTwinSettings
from tests.conftest import materialize_tenant, write_small_tape

QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def _tick(settings, instance, cursor=None):
    context = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"settings": CreditTwinSettings(data_dir=str(settings.data_dir), sensor_settle_seconds=0)},
    )
    return landing_sensor(context)


def test_sensor_registers_valid_tenants_and_rejects_bad_folders_without_crashing(settings):
    # setup: one good tenant, one invalid folder name, one broken tenant.yaml, one stray file
    landing = settings.landing_dir
    write_small_tape(landing / "acme")
    write_small_tape(landing / "Bad Name")
    write_small_tape(landing / "broken", config="target: {column: default_flag}\nunknown_key: 1\n")
    (landing / "stray.csv").write_text("x\n1\n")
    with dg.instance_for_test() as instance:
        # run
        result = _tick(settings, instance)
        # assert: only acme is added and requested
        assert [r.partition_key for r in result.run_requests] == ["acme"]
        assert result.run_requests[0].run_key.startswith("acme:")
        assert result.run_requests[0].tags["credittwin/tenant"] == "acme"
        assert [req.partition_keys for req in result.dynamic_partitions_requests] == [["acme"]]
        invalid_note = landing / "Bad Name" / "tenant-id.rejected.txt"
        assert "upper-case" in invalid_note.read_text() or "white space" in invalid_note.read_text()
        broken_note = (landing / "broken" / "tenant.yaml.rejected.txt").read_text()
        assert "unknown key 'unknown_key'" in broken_note and "tenant 'broken'" in broken_note


def test_same_upload_never_runs_twice_and_a_change_runs_again(settings):
    landing = settings.landing_dir
    folder = write_small_tape(landing / "acme")
    with dg.instance_for_test() as instance:
        first = _tick(settings, instance)
        instance.add_dynamic_partitions("tenants", ["acme"])
        # an unchanged upload: no run, even after the file is touched with the same content
        (folder / "loans.csv").write_bytes((folder / "loans.csv").read_bytes())
        second = _tick(settings, instance, cursor=first.cursor)
        assert second.run_requests == []
        # a changed upload: a new run with a new key, no new partition
        with open(folder / "loans.csv", "a") as handle:
            handle.write("L99999,40,north,50000.00,1000.00,5.00,36,0\n")
        third = _tick(settings, instance, cursor=second.cursor)
        assert [r.partition_key for r in third.run_requests] == ["acme"]
        assert third.run_requests[0].run_key != first.run_requests[0].run_key
        assert third.dynamic_partitions_requests == []


def test_upload_still_being_written_waits_for_it_to_settle(settings):
    write_small_tape(settings.landing_dir / "acme")
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance,
            resources={"settings": CreditTwinSettings(data_dir=str(settings.data_dir), sensor_settle_seconds=3600)},
        )
        result = landing_sensor(context)
        assert result.run_requests == []


def test_missing_landing_zone_is_a_skip(tmp_path):
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, resources={"settings": CreditTwinSettings(data_dir=str(tmp_path / "nothing"))}
        )
        result = landing_sensor(context)
        assert isinstance(result, dg.SkipReason)


def test_an_upload_already_materialized_by_the_cli_is_not_run_again(settings):
    # setup: `credittwin materialize` (any path but the sensor) ingested the upload; the sensor has no cursor yet,
    # as when `dagster dev` starts after `credittwin demo`
    folder = write_small_tape(settings.landing_dir / "acme")
    with dg.instance_for_test() as instance:
        assert materialize_tenant(settings, instance, "acme", ["raw_loan_tape"], run_config=QUIET).success
        job = build_definitions(settings).resolve_job_def("tenant_pipeline")

        # run: a first tick, then a tick while a run of the tenant is in progress after the upload changed
        first = _tick(settings, instance)
        with open(folder / "loans.csv", "a") as handle:
            handle.write("L99999,40,north,50000.00,1000.00,5.00,36,0\n")
        running = instance.create_run_for_job(job_def=job, tags={"dagster/partition": "acme"}, status=dg.DagsterRunStatus.STARTED)
        during = _tick(settings, instance, cursor=first.cursor)
        instance.report_run_canceled(running)
        after = _tick(settings, instance, cursor=during.cursor)

        # assert: the processed upload is not requested and the cursor remembers it; the changed one waits for the
        # tenant's run in progress, then is requested
        assert first.run_requests == [] and first.dynamic_partitions_requests == []
        assert json.loads(first.cursor)["acme"]["sha"] == ingested_upload(instance, "acme")
        assert during.run_requests == [] and during.cursor == first.cursor
        assert [r.partition_key for r in after.run_requests] == ["acme"]
        assert after.run_requests[0].tags["credittwin/upload_sha256"] != ingested_upload(instance, "acme")
