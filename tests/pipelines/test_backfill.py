"""Partition backfills over tenants: through Dagster's backfill daemon on a real instance, and from the CLI."""

import logging
from functools import partial

import dagster as dg
import pytest
import yaml
from dagster._core.execution.backfill import BulkActionStatus

from models.errors import CreditTwinError, InvalidTenantError
from pipelines.definitions import build_definitions
from pipelines.schedules import launch_backfill
from resources.settings import Settings
from tests.conftest import REPO, daemon_workspace, run_cli, write_small_tape

IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def test_backfill_over_three_tenants_materializes_every_partition(tmp_path):
    from dagster._daemon.backfill import execute_backfill_iteration
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    data = tmp_path / "data"
    tenants = ["alpha", "beta", "gamma", "delta"]
    for tenant in tenants:
        write_small_tape(data / "landing" / tenant)
    # the repository's instance config (queue, per-tenant and per-backfill limits, pools); runs execute in this process
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config["run_launcher"] = {"module": "dagster._core.launcher.sync_in_memory_run_launcher", "class": "SyncInMemoryRunLauncher"}
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "dagster.yaml").write_text(yaml.safe_dump(config))
    selection = ["raw_loan_tape", "loan_features"]
    logger = logging.getLogger("test_backfill")
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        instance.add_dynamic_partitions("tenants", tenants)
        defs = build_definitions(Settings(data_dir=data, sensor_settle_seconds=0))
        backfill_id = launch_backfill(instance, defs, ["alpha", "beta", "gamma"], selection, run_config=IN_PROCESS)
        assert instance.get_backfill(backfill_id).status == BulkActionStatus.REQUESTED
        with daemon_workspace(tmp_path, data, instance) as workspace:
            queue = QueuedRunCoordinatorDaemon(interval_seconds=1)
            first_round = None
            for _ in range(10):
                list(execute_backfill_iteration(workspace, logger))
                if first_round is None:
                    first_round = sorted(r.status.value for r in instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id})))
                list(queue.run_iteration(workspace))
                if instance.get_backfill(backfill_id).status != BulkActionStatus.REQUESTED:
                    break
        backfill = instance.get_backfill(backfill_id)
        assert backfill.status == BulkActionStatus.COMPLETED_SUCCESS
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/backfill": backfill_id}))
        assert sorted(r.tags["dagster/partition"] for r in runs) == ["alpha", "beta", "gamma"]
        assert all(r.status == dg.DagsterRunStatus.SUCCESS and r.tags["credittwin/trigger"] == "backfill" for r in runs)
        assert first_round == ["QUEUED"] * 3  # submitted through the queue, whose limits apply
        for asset in selection:
            assert instance.get_materialized_partitions(dg.AssetKey(asset)) == {"alpha", "beta", "gamma"}, asset
        assert not instance.get_materialized_partitions(dg.AssetKey("fitted_copula"))  # only the selection ran


def test_launch_backfill_refuses_unknown_tenants_and_assets(tmp_path):
    defs = build_definitions(Settings(data_dir=tmp_path / "data"))
    with dg.instance_for_test() as instance:
        with pytest.raises(CreditTwinError, match="no tenants are registered"):
            launch_backfill(instance, defs)
        instance.add_dynamic_partitions("tenants", ["acme"])
        with pytest.raises(InvalidTenantError, match=r"\['beta'\] are not registered"):
            launch_backfill(instance, defs, ["acme", "beta"])
        with pytest.raises(InvalidTenantError, match="invalid tenant id"):
            launch_backfill(instance, defs, ["../etc"])
        with pytest.raises(CreditTwinError, match="unknown asset") as refused:
            launch_backfill(instance, defs, ["acme"], ["raw_loan_tape", "nope"])
        assert "loan_features" in str(refused.value)  # the fix lists the choices
        backfill_id = launch_backfill(instance, defs, None, None)
        backfill = instance.get_backfill(backfill_id)
        graph = defs.resolve_asset_graph()
        assert set(backfill.asset_selection) == {k for k in graph.get_all_asset_keys() if graph.get(k).is_materializable}
        assert backfill.tags["credittwin/trigger"] == "backfill"


_cli = partial(run_cli, timeout=300)


def test_backfill_command_requests_a_daemon_backfill_or_runs_in_process(tmp_path):
    for tenant in ("acme", "beta"):
        write_small_tape(tmp_path / "data" / "landing" / tenant)
    assert _cli(tmp_path, "init-home").returncode == 0
    home = tmp_path / "data" / "dagster_home"
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.add_dynamic_partitions("tenants", ["acme", "beta"])

    neither = _cli(tmp_path, "backfill")
    assert neither.returncode == 2 and "--all" in neither.stderr
    unknown = _cli(tmp_path, "backfill", "acme", "--assets", "raw_loan_tape,nope")
    assert unknown.returncode == 2 and "unknown asset" in unknown.stderr

    requested = _cli(tmp_path, "backfill", "acme", "--assets", "raw_loan_tape")
    assert requested.returncode == 0, requested.stderr
    assert "Overview -> Backfills" in requested.stdout
    ran = _cli(tmp_path, "backfill", "--all", "--assets", "raw_loan_tape,loan_features", "--in-process")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "2/2 tenant(s) succeeded" in ran.stdout
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (backfill,) = instance.get_backfills()
        assert backfill.status == BulkActionStatus.REQUESTED and backfill.asset_selection == [dg.AssetKey("raw_loan_tape")]
        assert instance.get_materialized_partitions(dg.AssetKey("loan_features")) == {"acme", "beta"}
        runs = instance.get_runs(filters=dg.RunsFilter(tags={"credittwin/trigger": "backfill"}))
        assert len(runs) == 2 and len({r.tags["credittwin/backfill"] for r in runs}) == 1
