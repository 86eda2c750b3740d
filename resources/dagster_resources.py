"""ConfigurableResources built from `Settings`."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from resources.landing import LandingZone
from resources.objectstore import LocalRoot, ObjectRoot, cache_folder, configured_root, parse_storage_options


class CreditTwinSettings(dg.ConfigurableResource):
    """Deployment settings every asset needs: where data lives, and the environment."""

    data_dir: str = Field(description="Data root: landing zone, asset outputs and local stores live under it.")
    environment: str = Field(default="development", description="'development' or 'production'.")
    sensor_settle_seconds: float = Field(
        default=10.0, description="An upload must be unchanged this long before the landing sensor picks it up."
    )
    signing_key_file: str | None = Field(
        default=None,
        description="PEM file of the Ed25519 certificate-signing key; required in production, "
        "generated under <data_dir>/keys in development.",
    )
    alert_webhook_url: str | None = Field(
        default=None,
        description="http(s) URL the run-failure sensor POSTs failures to; unset: failures are only logged.",
    )
    data_url: str | None = Field(
        default=None,
        description="Shared storage for outputs and the paid-release store: an fsspec URL such as s3://bucket/prefix. "
        "Default: data_dir.",
    )
    storage_options: str | None = Field(
        default=None, description="JSON object of fsspec storage options for data_url (endpoint_url, key, secret, ...)."
    )
    cache_dir: str | None = Field(
        default=None, description="Local folder for files downloaded from data_url. Default: <data_dir>/cache."
    )
    landing_url: str | None = Field(
        default=None,
        description="The landing zone: a path or an fsspec URL. Default: landing under data_url when that is object "
        "storage, else <data_dir>/landing.",
    )

    @property
    def root(self) -> Path:
        return Path(self.data_dir).resolve()

    def landing(self) -> LandingZone:
        """The landing zone (`resources.landing.LandingZone`): local folder or object-store prefix."""
        from resources.settings import landing_location

        return LandingZone.at(
            landing_location(self.landing_url, self.data_url, self.root),
            storage_options=parse_storage_options(self.storage_options, "storage_options"),
            stage_dir=cache_folder(self.data_dir, self.cache_dir) / "landing",
        )

    def storage(self) -> LocalRoot | ObjectRoot:
        """Where outputs and paid releases are kept (`resources.objectstore.configured_root`): data_url, else data_dir."""
        return configured_root(self.data_dir, self.data_url, self.storage_options, self.cache_dir)

    def signing_key(self, tenant: str | None = None):
        """The certificate-signing key (`models.reports.certificate.load_signing_key`)."""
        from models.reports.certificate import load_signing_key

        return load_signing_key(
            self.signing_key_file, environment=self.environment, dev_key_dir=self.root / "keys", tenant=tenant
        )


class ExpectationsResource(dg.ConfigurableResource):
    """Great Expectations suites for uploaded tapes, with the warning thresholds."""

    null_rate_warn: float = Field(default=0.2, description="Warn when a column's null share exceeds this.")
    interest_rate_min: float = Field(default=0.0, description="Lowest plausible interest rate (percent).")
    interest_rate_max: float = Field(default=100.0, description="Highest plausible interest rate (percent).")

    def validate_tape(self, tape) -> list:
        from models.tape.loan_tape import SPLIT_COLUMN
        from resources.expectations import validate_loan_tape

        declared = sorted({c for names in tape.config.loan_columns().values() for c in names})
        return validate_loan_tape(
            tape.loans.drop(SPLIT_COLUMN),
            schema=tape.schema,
            declared_columns=declared,
            performance=tape.performance,
            null_rate_warn=self.null_rate_warn,
            interest_rate_range=(self.interest_rate_min, self.interest_rate_max),
        )
