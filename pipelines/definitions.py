"""The CreditTwin code location: every asset, check, job, sensor and resource.

Read this file and the README and the whole system is in view. The environment
is decided once, in `resources.settings.Settings.from_env()`.
"""

from __future__ import annotations

import json

import dagster as dg

from assets import audit, cascade, certificate, ingest, privacy, risk, twin, validation
from pipelines.automation import apply_automation, automation_sensor
from pipelines.jobs import build_executor, tenant_pipeline
from pipelines.ops_sensors import dead_run_sensor, drift_sensor, run_failure_alerts
from pipelines.schedules import build_schedules
from pipelines.sensors import landing_sensor
from resources.dagster_resources import CreditTwinSettings, ExpectationsResource
from resources.ledger import PrivacyLedgerResource
from resources.settings import Settings
from resources.storage import TenantStorageIOManager
from resources.tracking import MlflowTracking


def build_resources(settings: Settings) -> dict[str, object]:
    """The resources for a deployment described by `settings`."""
    # storage options may hold keys: pass them as an EnvVar so the UI shows the variable, not the value
    storage = {
        "data_url": settings.data_url,
        "storage_options": dg.EnvVar(settings.storage_options_var)
        if settings.storage_options_var
        else json.dumps(settings.storage_options),
        "cache_dir": str(settings.storage_cache),
    }
    return {
        "settings": CreditTwinSettings(
            data_dir=str(settings.data_dir),
            environment=settings.environment,
            sensor_settle_seconds=settings.sensor_settle_seconds,
            signing_key_file=str(settings.signing_key_file) if settings.signing_key_file else None,
            # a webhook URL may carry a token: pass it as an EnvVar so the UI shows the variable, not the value
            alert_webhook_url=dg.EnvVar(settings.alert_webhook_url_var)
            if settings.alert_webhook_url_var
            else settings.alert_webhook_url,
            landing_url=settings.landing_url,
            **storage,
        ),
        "io_manager": TenantStorageIOManager(data_dir=str(settings.data_dir), lineage_url=settings.lineage, **storage),
        "expectations": ExpectationsResource(),
        "privacy_ledger": PrivacyLedgerResource(url=settings.ledger),
        "mlflow": MlflowTracking.from_settings(settings),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    """All definitions, wired to `settings` (tests pass their own)."""
    # automation conditions and freshness policies are attached centrally (pipelines/automation.py)
    assets = apply_automation(
        dg.load_assets_from_modules([ingest, twin, cascade, privacy, audit, certificate, validation, risk]),
        freshness_days=settings.freshness_days,
    )
    return dg.Definitions(
        assets=assets,
        jobs=[tenant_pipeline],
        schedules=build_schedules(settings, assets),
        sensors=[landing_sensor, automation_sensor, drift_sensor, dead_run_sensor, run_failure_alerts],
        resources=build_resources(settings),
        executor=build_executor(settings),
    )


defs = build_definitions(Settings.from_env())
