"""Schedules (weekly regeneration, monthly stress refresh) and partition backfills.

`regeneration_schedule` (cron ``CREDITTWIN_REGENERATION_CRON``, default
``0 3 * * 1``, Mondays 03:00 UTC) requests one run of the tenant graph per
registered tenant that still has a landing folder. Batching is left to
Dagster's run queue rather than done by the schedule: every run is tagged
``credittwin/trigger: regeneration`` and ``dagster/priority: -1``, and the
instance (``dagster.yaml``) caps the runs carrying that tag that may be in
progress at once (``tag_concurrency_limits``), next to the global
``max_concurrent_runs`` and the one-run-per-tenant limit. So 500 tenants make
500 queued runs, of which only the cap (2 on the embedded instance, 6 on
PostgreSQL) execute at a time, in a sliding window; landing, drift and
automation runs, at the default priority 0, overtake the queued regeneration
runs. Why not a rotating batch per tick: schedules have no cursor, and 25
tenants per weekly tick would take 20 weeks to get round 500 tenants; a
frequent tick with a rotating cursor would be a home-made scheduler next to
Dagster's queue. The run key (tenant and tick time) makes a re-evaluated
tick idempotent.

`stress_refresh_schedule` (cron ``CREDITTWIN_STRESS_REFRESH_CRON``, default
``0 4 1 * *``) re-materializes ``stress_test`` for each tenant that has a risk
model; it exists only when the code location defines a ``stress_test`` asset.

Both schedules default to RUNNING: the platform runs unattended, and the
freshness policies (30 days) expect releases to be refreshed without someone
toggling schedules on. Stop them in the UI (Automation) to pause.

Backfills: `launch_backfill` creates a Dagster asset backfill over all or some
tenants (and all or some assets), exactly as the UI's "Materialize ->
partitions" dialog does; the daemon (``dagster dev`` or ``dagster-daemon
run``) submits its runs through the same queue and limits, and the UI shows
its progress under Overview -> Backfills. `backfill_in_process` runs the same
selection here, one tenant after another, for a machine without a daemon.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import dagster as dg

from models.errors import CreditTwinError, InvalidTenantError
from models.tape.tenant import validate_tenant_id
from pipelines.jobs import SCOPE_TAG, TENANT_TAG, TRIGGER_TAG, WHOLE_GRAPH, tenant_pipeline
from assets.partitions import tenants
from resources.dagster_resources import CreditTwinSettings

REGENERATION_SCHEDULE = "regeneration_schedule"
STRESS_REFRESH_SCHEDULE = "stress_refresh_schedule"
REGENERATION_TRIGGER = "regeneration"
STRESS_ASSET = dg.AssetKey("stress_test")
RISK_MODEL = dg.AssetKey("risk_model")
BACKFILL_TAG = "credittwin/backfill"
PRIORITY_TAG = "dagster/priority"
SCHEDULE_TIMEZONE = "UTC"


def _check_cron(cron: str, variable: str) -> str:
    from dagster._utils.schedules import is_valid_cron_string

    if not isinstance(cron, str) or not is_valid_cron_string(cron):
        raise CreditTwinError(
            f"{variable}={cron!r} is not a valid cron expression.",
            fix=f"set {variable} to five cron fields, e.g. '0 3 * * 1' (Mondays 03:00 UTC).",
        )
    return cron


def regeneration_requests(
    tenant_ids: Sequence[str], tick: str, has_upload: Callable[[str], bool] = lambda _t: True
) -> list[dg.RunRequest]:
    """One run request per tenant (sorted), keyed by tenant and tick, tagged for the run queue's regeneration cap."""
    requests = []
    for tenant in sorted(tenant_ids):
        if not has_upload(tenant):
            continue
        requests.append(
            dg.RunRequest(
                run_key=f"{REGENERATION_TRIGGER}:{tenant}:{tick}",
                partition_key=tenant,
                tags={TENANT_TAG: tenant, TRIGGER_TAG: REGENERATION_TRIGGER, PRIORITY_TAG: "-1", SCOPE_TAG: WHOLE_GRAPH},
            )
        )
    return requests


def _tick_of(context: dg.ScheduleEvaluationContext) -> str:
    when = context.scheduled_execution_time
    return when.isoformat(timespec="minutes") if when is not None else "manual"


def build_regeneration_schedule(cron: str) -> dg.ScheduleDefinition:
    """The weekly (by default) schedule that regenerates every registered tenant's graph."""

    @dg.schedule(
        name=REGENERATION_SCHEDULE,
        cron_schedule=_check_cron(cron, "CREDITTWIN_REGENERATION_CRON"),
        execution_timezone=SCHEDULE_TIMEZONE,
        job=tenant_pipeline,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Regenerates every registered tenant; the run queue's cap on regeneration runs batches them "
        "(dagster.yaml, credittwin/trigger=regeneration).",
    )
    def regeneration_schedule(context: dg.ScheduleEvaluationContext, settings: CreditTwinSettings):
        registered = context.instance.get_dynamic_partitions(tenants.name)
        if not registered:
            return dg.SkipReason("no tenants registered yet")

        def has_upload(tenant: str) -> bool:
            try:
                present = settings.landing().has_folder(tenant)
            except CreditTwinError:
                present = False
            if not present:
                context.log.warning(f"tenant '{tenant}': no landing folder; not regenerated")
            return present

        requests = regeneration_requests(registered, _tick_of(context), has_upload)
        return requests or dg.SkipReason("no registered tenant has a landing folder")

    return regeneration_schedule


def build_stress_refresh_schedule(cron: str) -> dg.ScheduleDefinition:
    """The monthly (by default) refresh of `stress_test` for every tenant that has a risk model."""

    @dg.schedule(
        name=STRESS_REFRESH_SCHEDULE,
        cron_schedule=_check_cron(cron, "CREDITTWIN_STRESS_REFRESH_CRON"),
        execution_timezone=SCHEDULE_TIMEZONE,
        target=dg.AssetSelection.assets(STRESS_ASSET),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Refreshes every tenant's stress test against its current risk model.",
    )
    def stress_refresh_schedule(context: dg.ScheduleEvaluationContext):
        ready = context.instance.get_materialized_partitions(RISK_MODEL)
        registered = set(context.instance.get_dynamic_partitions(tenants.name))
        tick = _tick_of(context)
        requests = [
            dg.RunRequest(
                run_key=f"stress-refresh:{tenant}:{tick}",
                partition_key=tenant,
                asset_selection=[STRESS_ASSET],
                tags={TENANT_TAG: tenant, TRIGGER_TAG: "stress-refresh", PRIORITY_TAG: "-1"},
            )
            for tenant in sorted(ready & registered)
        ]
        return requests or dg.SkipReason("no tenant has a risk model yet")

    return stress_refresh_schedule


def _keys_of(assets: Iterable[dg.AssetsDefinition | dg.AssetSpec | dg.AssetKey]) -> set[dg.AssetKey]:
    keys: set[dg.AssetKey] = set()
    for item in assets:
        if isinstance(item, dg.AssetKey):
            keys.add(item)
        elif isinstance(item, dg.AssetSpec):
            keys.add(item.key)
        else:
            keys.update(item.keys)
    return keys


def build_schedules(
    settings, assets: Iterable[dg.AssetsDefinition | dg.AssetSpec | dg.AssetKey]
) -> list[dg.ScheduleDefinition]:
    """The schedules for these settings; the stress refresh only when a `stress_test` asset exists.

    Args:
        settings: `resources.settings.Settings` (its ``regeneration_cron`` and ``stress_refresh_cron``).
        assets: the code location's assets (definitions, specs or keys).

    Raises:
        CreditTwinError: a cron setting that is not a valid cron expression.
    """
    schedules = [build_regeneration_schedule(settings.regeneration_cron)]
    if STRESS_ASSET in _keys_of(assets):
        schedules.append(build_stress_refresh_schedule(settings.stress_refresh_cron))
    return schedules


# ------------------------------------------------------------------------------------------ backfills


def _selection(asset_graph, assets: Sequence[str] | None) -> list[dg.AssetKey]:
    known = sorted(
        key for key in asset_graph.get_all_asset_keys() if asset_graph.get(key).is_materializable
    )
    if not assets:
        return known
    wanted = [dg.AssetKey.from_user_string(a.strip()) for a in assets if a.strip()]
    unknown = [k.to_user_string() for k in wanted if k not in set(known)]
    if unknown or not wanted:
        raise CreditTwinError(
            f"unknown asset(s) {unknown or assets} for a backfill.",
            fix="choose from: " + ", ".join(k.to_user_string() for k in known),
        )
    return wanted


def _tenants(instance: dg.DagsterInstance, tenant_ids: Sequence[str] | None) -> list[str]:
    registered = set(instance.get_dynamic_partitions(tenants.name))
    if tenant_ids is None:
        if not registered:
            raise CreditTwinError(
                "no tenants are registered, so there is nothing to backfill.",
                fix="drop a tape into the landing zone (the landing sensor registers it) or run `credittwin materialize`.",
            )
        return sorted(registered)
    chosen = [validate_tenant_id(t) for t in tenant_ids]
    missing = [t for t in chosen if t not in registered]
    if missing:
        raise InvalidTenantError(
            f"tenant(s) {missing} are not registered.",
            tenant=missing[0],
            fix="register a tenant first (landing sensor or `credittwin materialize <tenant>`); "
            "`credittwin tenants` lists the registered ones.",
        )
    if not chosen:
        raise CreditTwinError("no tenant given for the backfill.", fix="name tenants, or pass --all.")
    return list(dict.fromkeys(chosen))


def launch_backfill(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    tenant_ids: Sequence[str] | None = None,
    assets: Sequence[str] | None = None,
    *,
    title: str | None = None,
    run_config: dict | None = None,
) -> str:
    """Create a Dagster asset backfill over tenant partitions; return its id.

    The daemon (``dagster dev`` / ``dagster-daemon run``) executes it: it submits
    one run per tenant through the run queue and the UI tracks it under
    Overview -> Backfills, like a backfill launched there.

    Args:
        instance: the Dagster instance (DAGSTER_HOME).
        defs: the code location's definitions (for the asset graph).
        tenant_ids: tenants to backfill; None for every registered tenant.
        assets: asset keys (user strings) to materialize; None or empty for all.
        title: shown in the UI's backfill list.
        run_config: run config for every run of the backfill (e.g. an executor or op config).

    Raises:
        InvalidTenantError: an invalid or unregistered tenant id.
        CreditTwinError: an unknown asset, or no tenant at all.
    """
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id
    from dagster._time import get_current_timestamp

    asset_graph = defs.resolve_asset_graph()
    keys = _selection(asset_graph, assets)
    chosen = _tenants(instance, tenant_ids)
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(),
        asset_graph=asset_graph,
        partition_names=chosen,
        asset_selection=keys,
        backfill_timestamp=get_current_timestamp(),
        tags={TRIGGER_TAG: "backfill"},
        dynamic_partitions_store=instance,
        all_partitions=False,
        title=title or f"credittwin backfill: {len(chosen)} tenant(s), {len(keys)} asset(s)",
        description="launched by `credittwin backfill`",
        run_config=run_config,
    )
    instance.add_backfill(backfill)
    return backfill.backfill_id


@dataclass
class InProcessBackfill:
    """The outcome of `backfill_in_process`: run id and success per tenant."""

    backfill_id: str
    runs: dict[str, tuple[str, bool]] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [tenant for tenant, (_, ok) in self.runs.items() if not ok]


def backfill_in_process(
    instance: dg.DagsterInstance,
    defs: dg.Definitions,
    tenant_ids: Sequence[str] | None = None,
    assets: Sequence[str] | None = None,
    *,
    on_run: Callable[[str, str, bool], None] | None = None,
) -> InProcessBackfill:
    """Run the backfill's selection here, tenant after tenant, without a daemon.

    Each tenant is one run of ``tenant_pipeline`` (its retry policies apply),
    tagged ``credittwin/backfill=<id>`` so the runs of one backfill can be found
    together in the UI's run list. A failed tenant does not stop the next.

    Args:
        on_run: called with (tenant, run id, success) after each run.

    Raises:
        InvalidTenantError, CreditTwinError: as `launch_backfill`.
    """
    import uuid

    keys = _selection(defs.resolve_asset_graph(), assets)
    chosen = _tenants(instance, tenant_ids)
    job = defs.resolve_job_def(tenant_pipeline.name)
    outcome = InProcessBackfill(backfill_id=f"inproc-{uuid.uuid4().hex[:8]}")
    for tenant in chosen:
        result = job.execute_in_process(
            partition_key=tenant,
            instance=instance,
            asset_selection=keys,
            tags={TENANT_TAG: tenant, TRIGGER_TAG: "backfill", BACKFILL_TAG: outcome.backfill_id},
            raise_on_error=False,
        )
        outcome.runs[tenant] = (result.run_id, result.success)
        if on_run is not None:
            on_run(tenant, result.run_id, result.success)
    return outcome
