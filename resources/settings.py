"""The one place that reads the environment.

Everything else receives a `Settings` (or the `CreditTwinSettings` resource built
from it) instead of reading `os.environ` itself.

Variables:
    CREDITTWIN_DATA_DIR   data root (default ``./data``): landing zone, asset
                          outputs, the embedded Dagster home and SQL stores.
    CREDITTWIN_ENV        ``development`` (default) or ``production``.
    CREDITTWIN_SENSOR_SETTLE_SECONDS
                          how long an upload must be unchanged before the
                          landing sensor picks it up (default 10).
    CREDITTWIN_LEDGER_URL SQLAlchemy URL of the privacy ledger (default: SQLite
                          file ``$CREDITTWIN_DATA_DIR/credittwin.sqlite``;
                          production: ``postgresql://...``).
    DAGSTER_HOME          Dagster's instance directory; the CLI defaults it to
                          ``$CREDITTWIN_DATA_DIR/dagster_home``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ENVIRONMENTS = ("development", "production")


@dataclass(frozen=True)
class Settings:
    """Deployment settings resolved from the environment."""

    data_dir: Path
    environment: str = "development"
    sensor_settle_seconds: float = 10.0
    ledger_url: str | None = None

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def assets_dir(self) -> Path:
        return self.data_dir / "assets"

    @property
    def ledger(self) -> str:
        """The privacy ledger's URL: configured, else a SQLite file under the data dir."""
        from resources.ledger import default_ledger_url

        return self.ledger_url or default_ledger_url(self.data_dir)

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.data_dir / "dagster_home").resolve()

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        environment = env.get("CREDITTWIN_ENV", "development").strip().lower() or "development"
        if environment not in ENVIRONMENTS:
            raise ValueError(
                f"CREDITTWIN_ENV={environment!r} is not one of {ENVIRONMENTS}; "
                "set it to 'development' or 'production'."
            )
        settle = float(env.get("CREDITTWIN_SENSOR_SETTLE_SECONDS", "10"))
        data_dir = Path(env.get("CREDITTWIN_DATA_DIR") or "data").expanduser().resolve()
        return cls(
            data_dir=data_dir,
            environment=environment,
            sensor_settle_seconds=settle,
            ledger_url=env.get("CREDITTWIN_LEDGER_URL") or None,
        )
