"""Check results are recorded under the tenant's partition, after the materialization they judge."""

import dagster as dg
import pytest

from assets.common import output_unless_blocked, tenant_check
from assets.partitions import tenants
from pipelines.definitions import defs

TENANT = "acme"


def _asset(rows: int):
    """A tenant asset with a blocking and a warning check, released through `output_unless_blocked`."""

    @dg.asset(
        name="book",
        partitions_def=tenants,
        check_specs=[
            tenant_check("rows_present", asset="book", description="at least one row", blocking=True),
            tenant_check("rows_many", asset="book", description="at least ten rows"),
        ],
    )
    def book(context: dg.AssetExecutionContext):
        output = dg.Output(rows, metadata={"dagster/row_count": rows})
        checks = [
            dg.AssetCheckResult(check_name="rows_present", passed=rows > 0),
            dg.AssetCheckResult(check_name="rows_many", passed=rows >= 10, severity=dg.AssetCheckSeverity.WARN),
        ]
        yield from output_unless_blocked(context, output, checks)

    return book


def _events(instance: dg.DagsterInstance, run_id: str) -> list[tuple[int, dg.EventLogEntry]]:
    """(storage id, entry) of the run's materializations and check evaluations, in the order they were stored."""
    wanted = {dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION}
    return [
        (record.storage_id, record.event_log_entry)
        for record in instance.get_records_for_run(run_id, limit=1000).records
        if record.event_log_entry.dagster_event_type in wanted
    ]


@pytest.fixture
def instance(tmp_path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions(tenants.name, [TENANT])
        yield instance


def test_checks_carry_the_tenant_and_follow_the_materialization_they_judge(instance):
    # run
    result = dg.materialize([_asset(rows=25)], partition_key=TENANT, instance=instance)
    # assert: one materialization, then both checks, each naming the tenant and that materialization
    assert result.success
    events = _events(instance, result.run_id)
    kinds = [entry.dagster_event_type for _, entry in events]
    assert kinds == [dg.DagsterEventType.ASSET_MATERIALIZATION] + [dg.DagsterEventType.ASSET_CHECK_EVALUATION] * 2
    (materialization_id, materialization), *checks = events
    assert materialization.dagster_event.partition == TENANT
    for storage_id, entry in checks:
        evaluation = entry.dagster_event.event_specific_data
        assert evaluation.partition == TENANT and evaluation.passed
        assert storage_id > materialization_id and entry.timestamp >= materialization.timestamp
        target = evaluation.target_materialization_data  # (storage ids differ between SQLite's run and index shards)
        assert target.run_id == result.run_id and target.timestamp == materialization.timestamp
    # assert: the check's execution history, which the UI's check pages read, is kept per tenant
    key = dg.AssetCheckKey(dg.AssetKey("book"), "rows_present")
    record = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)[0]
    assert record.partition == TENANT and record.run_id == result.run_id


def test_a_failed_blocking_check_is_recorded_for_the_tenant_and_nothing_is_stored(instance):
    # run
    result = dg.materialize([_asset(rows=0)], partition_key=TENANT, instance=instance, raise_on_error=False)
    # assert: the step failed, no materialization, and both verdicts recorded under the tenant
    assert not result.success
    events = _events(instance, result.run_id)
    assert all(entry.dagster_event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION for _, entry in events)
    verdicts = {e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data for _, e in events}
    assert set(verdicts) == {"rows_present", "rows_many"}
    assert not verdicts["rows_present"].passed and all(v.partition == TENANT for v in verdicts.values())
    assert "Nothing was stored" in result.get_step_failure_events()[0].event_specific_data.error.message


def test_every_check_of_the_code_location_is_partitioned_by_tenant():
    graph = defs.resolve_asset_graph()
    specs = [spec for assets_def in graph.assets_defs for spec in assets_def.check_specs]
    assert len(specs) >= 14
    assert all(spec.partitions_def == tenants for spec in specs), [s.key for s in specs if s.partitions_def is None]
