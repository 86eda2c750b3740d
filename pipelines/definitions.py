"""The CreditTwin code location: every asset, check, job, sensor and resource.

Read this file and the README and the whole system is in view. The environment
is decided once, in `resources.settings.Settings.from_env()`.
"""

from __future__ import annotations

import dagster as dg

from assets import cascade, ingest, privacy, twin
from pipelines.jobs import tenant_pipeline
from pipelines.sensors import landing_sensor
from resources.dagster_resources import CreditTwinSettings, ExpectationsResource
from resources.ledger import PrivacyLedgerResource
from resources.settings import Settings
from resources.storage import TenantStorageIOManager


def build_resources(settings: Settings) -> dict[str, object]:
    """The resources for a deployment described by `settings`."""
    return {
        "settings": CreditTwinSettings(
            data_dir=str(settings.data_dir),
            environment=settings.environment,
            sensor_settle_seconds=settings.sensor_settle_seconds,
        ),
        "io_manager": TenantStorageIOManager(data_dir=str(settings.data_dir)),
        "expectations": ExpectationsResource(),
        "privacy_ledger": PrivacyLedgerResource(url=settings.ledger),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    """All definitions, wired to `settings` (tests pass their own)."""
    return dg.Definitions(
        assets=dg.load_assets_from_modules([ingest, twin, cascade, privacy]),
        jobs=[tenant_pipeline],
        sensors=[landing_sensor],
        resources=build_resources(settings),
    )


defs = build_definitions(Settings.from_env())
