"""Declarative automation and freshness, applied centrally to whichever assets exist.

Why declarative automation (and not a sensor) for downstream regeneration: the
Dagster docs recommend `AutomationCondition` for "run this asset when what it
depends on changed"; it is evaluated per tenant partition, coalesces many
upstream changes into one run, and the UI's Automation tab shows, for every
request, which labelled sub-condition was true. Sensors stay for what
conditions cannot see: files in the landing zone (`pipelines.sensors`), the
statistical drift of a new upload (`pipelines.ops_sensors.drift_sensor`) and
run failures.

The condition (`regenerate_on_data_change`) is Dagster's `eager()` with one
change: "an upstream updated" is replaced by "an upstream's DATA VERSION
changed". `raw_loan_tape` records `DataVersion(upload sha256)` and every other
asset gets Dagster's logical version (a hash of its code_version and its
inputs' data versions), so re-ingesting an unchanged upload, or re-running a
step on unchanged inputs, produces the same data version and triggers nothing
downstream, while a new upload or a bumped `code_version` upstream does. As in
`eager()`, an upstream that was materialized in the same run as the asset
itself does not trigger it again, and neither does one materialized by a run
of the whole graph (tag ``credittwin/scope=graph``: the landing and drift
sensors' runs, `credittwin materialize`), which regenerates every asset below
it itself: Dagster records no asset selection for a run of the whole job, so
`executed_with_root_target` alone would request a second run after it, and
nothing is requested while an upstream is missing or in progress; like the
docs' "waiting for all blocking asset checks" recipe, an upstream whose
blocking checks failed does not trigger it either.

Root assets (no upstream inside the graph: `raw_loan_tape`) get no condition:
their runs come from the landing sensor, the drift sensor and the schedules,
so a newly registered tenant is not requested twice.

`automation_sensor` evaluates the conditions. It defaults to RUNNING: the
platform is meant to run unattended, and Dagster's implicit
``default_automation_condition_sensor`` would start STOPPED (the docs tell you
to toggle it on in the UI), silently leaving stale outputs behind. Turn it off
in the UI (Automation -> credittwin_automation) to pause regeneration.

Freshness: `FreshnessPolicy.time_window` (Dagster 1.11+ API, evaluated by the
daemon's freshness loop) on the privacy certificate and the risk model, failing
after `freshness_days` (default 30) and warning a week earlier, so a stale
release shows red in the UI. Dagster evaluates a policy on an asset's latest
materialization over all partitions, so on a multi-tenant instance it flags an
asset that no tenant refreshed; a single tenant's age is what the weekly
`regeneration_schedule` bounds.

Concurrency pools cannot be set from here: `pool=` belongs to the asset's op
and Dagster 1.13 has no public way to change it on a built `AssetsDefinition`,
so `fitted_copula`, `lstm_cascade` and `risk_model` declare
``pool=TRAINING_POOL`` themselves (`assets.policies.TRAINING_POOL`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import timedelta

import dagster as dg

from pipelines.jobs import SCOPE_TAG, TRIGGER_TAG, WHOLE_GRAPH

# Assets whose releases must be renewed: a stale certificate or risk model shows in the UI.
FRESHNESS_ASSETS = ("privacy_certificate", "risk_model")
DEFAULT_FRESHNESS_DAYS = 30
FRESHNESS_WARN_BEFORE = timedelta(days=7)
AUTOMATION_SENSOR_NAME = "credittwin_automation"


def any_upstream_data_version_changed() -> dg.AutomationCondition:
    """True for a tenant partition when an upstream's data version changed since the previous tick
    (and that upstream was not updated by a run that also ran this asset), or an upstream is
    requested on this very tick."""
    return dg.AutomationCondition.any_deps_match(
        (
            dg.AutomationCondition.data_version_changed()
            & ~dg.AutomationCondition.executed_with_root_target()
            & ~dg.AutomationCondition.executed_with_tags(tag_values={SCOPE_TAG: WHOLE_GRAPH})
        ).with_label("upstream data version changed (in another run)")
        | dg.AutomationCondition.will_be_requested().with_label("upstream requested this tick")
    ).with_label("any upstream data version changed")


def regenerate_on_data_change() -> dg.AutomationCondition:
    """`eager()` triggered by upstream data-version changes instead of any upstream materialization.

    Each sub-condition carries a label, so the UI's evaluation view says which one held.
    """
    return (
        dg.AutomationCondition.eager().replace("any_deps_updated", any_upstream_data_version_changed())
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("regenerate when an upstream's data version changes")


def freshness_policy(days: int = DEFAULT_FRESHNESS_DAYS) -> dg.FreshnessPolicy:
    """Fail after `days` without a materialization; warn a week earlier (or at half time for short windows)."""
    if days < 1:
        raise ValueError(f"freshness days must be at least 1, got {days}")
    fail = timedelta(days=days)
    warn = fail - FRESHNESS_WARN_BEFORE if fail > 2 * FRESHNESS_WARN_BEFORE else fail / 2
    return dg.FreshnessPolicy.time_window(fail_window=fail, warn_window=warn)


def _has_upstream(spec: dg.AssetSpec) -> bool:
    return bool(spec.deps)


def apply_automation(
    assets: Iterable[dg.AssetsDefinition | dg.AssetSpec],
    *,
    freshness_days: int = DEFAULT_FRESHNESS_DAYS,
    freshness_assets: Collection[str] = FRESHNESS_ASSETS,
    without_automation: Collection[str] = (),
) -> Sequence[dg.AssetsDefinition | dg.AssetSpec]:
    """The same assets with automation conditions and freshness policies attached.

    Args:
        assets: asset definitions (as `dg.load_assets_from_modules` returns them) or specs.
        freshness_days: the freshness window of `freshness_assets`.
        freshness_assets: asset keys (user strings) that get the freshness policy; missing ones are skipped.
        without_automation: asset keys left without an automation condition (e.g. assets whose
            regeneration is gated by the drift sensor instead).

    Returns:
        The mapped definitions, in order. An asset that already declares an automation
        condition or a freshness policy keeps its own.
    """
    condition = regenerate_on_data_change()
    policy = freshness_policy(freshness_days)
    skip = set(without_automation)
    fresh = set(freshness_assets)

    def _map(spec: dg.AssetSpec) -> dg.AssetSpec:
        name = spec.key.to_user_string()
        if spec.automation_condition is None and _has_upstream(spec) and name not in skip:
            spec = spec.replace_attributes(automation_condition=condition)
        if name in fresh:
            spec = dg.apply_freshness_policy(spec, policy, overwrite_existing=False)
        return spec

    return dg.map_asset_specs(_map, list(assets))


automation_sensor = dg.AutomationConditionSensorDefinition(
    AUTOMATION_SENSOR_NAME,
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    run_tags={TRIGGER_TAG: "automation"},
    description="Regenerates a tenant's downstream assets when an upstream's data version changes "
    "(see pipelines/automation.py); each request shows the labelled condition that caused it.",
)
