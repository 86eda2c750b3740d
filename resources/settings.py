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
    CREDITTWIN_SIGNING_KEY_FILE
                          PEM file of the Ed25519 key that signs privacy
                          certificates. Required in production; in
                          development a key is generated on first use under
                          ``$CREDITTWIN_DATA_DIR/keys`` and certificates say so.
    CREDITTWIN_TRUSTED_KEYS_FILE
                          the trust store of certificate-signing keys that
                          ``credittwin verify`` accepts besides the
                          deployment's own (JSON, ``credittwin keys``; default
                          ``$CREDITTWIN_DATA_DIR/keys/trusted.json``).
    CREDITTWIN_ALERT_WEBHOOK_URL
                          http(s) URL the run-failure sensor POSTs each
                          failure to as JSON (default: none, failures are
                          only logged and written to ``ops/failures/``).
    CREDITTWIN_REGENERATION_CRON
                          cron of the schedule that regenerates every tenant
                          (default ``0 3 * * 1``: Mondays 03:00 UTC).
    CREDITTWIN_STRESS_REFRESH_CRON
                          cron of the monthly stress-test refresh (default
                          ``0 4 1 * *``: the 1st, 04:00 UTC).
    CREDITTWIN_FRESHNESS_DAYS
                          the privacy certificate and the risk model are
                          shown stale after this many days (default 30).
    CREDITTWIN_MLFLOW_TRACKING_URI
                          MLflow tracking URI (default: SQLite file
                          ``$CREDITTWIN_DATA_DIR/mlflow.db`` with artifacts under
                          ``$CREDITTWIN_DATA_DIR/mlartifacts``; production:
                          ``postgresql+psycopg2://...`` or an ``http(s)://``
                          MLflow server).
    CREDITTWIN_STEP_RETRIES / CREDITTWIN_RETRY_DELAY_SECONDS
                          retries of a step that failed on the ledger, lineage
                          or MLflow database, and the first delay (defaults 3
                          and 5; 0 retries turns retrying off).
    CREDITTWIN_CODE_VERSION
                          the code version recorded in lineage, certificates and
                          MLflow (default: the git commit of the checkout,
                          "-dirty" when it has uncommitted changes, else the
                          installed package version); see `code_version`.
    DAGSTER_HOME          Dagster's instance directory (default
                          ``$CREDITTWIN_DATA_DIR/dagster_home``); the ``credittwin``
                          command opens the instance there.

Libraries read their own variables (MLflow ``MLFLOW_DISABLE_TELEMETRY``, Dagster's
instance configuration); CreditTwin neither reads nor sets them, so they are
set where the deployment's environment is: its shell, container or Helm values.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ENVIRONMENTS = ("development", "production")


@dataclass(frozen=True)
class Settings:
    """Deployment settings resolved from the environment."""

    data_dir: Path
    environment: str = "development"
    sensor_settle_seconds: float = 10.0
    ledger_url: str | None = None
    signing_key_file: Path | None = None
    trusted_keys_file: Path | None = None
    alert_webhook_url: str | None = None
    regeneration_cron: str = "0 3 * * 1"
    stress_refresh_cron: str = "0 4 1 * *"
    freshness_days: int = 30
    mlflow_tracking_uri: str | None = None
    step_retries: int = 3
    retry_delay_seconds: float = 5.0
    alert_webhook_url_var: str | None = None
    """The environment variable `alert_webhook_url` was read from, so the resources pass it on as a `dg.EnvVar`
    (the UI then shows the variable, not a URL that may carry a token); None when it was set in code."""
    dagster_home_dir: Path | None = None

    @property
    def landing_dir(self) -> Path:
        return self.data_dir / "landing"

    @property
    def assets_dir(self) -> Path:
        return self.data_dir / "assets"

    @property
    def keys_dir(self) -> Path:
        """Where the development signing key is generated (and the trust store kept by default)."""
        return self.data_dir / "keys"

    @property
    def trust_store(self) -> Path:
        """The trust store of certificate-signing keys: configured, else ``keys/trusted.json`` under the data dir."""
        return self.trusted_keys_file or self.keys_dir / "trusted.json"

    @property
    def ledger(self) -> str:
        """The privacy ledger's URL: configured, else a SQLite file under the data dir."""
        from resources.ledger import default_ledger_url

        return self.ledger_url or default_ledger_url(self.data_dir)

    @property
    def lineage(self) -> str:
        """The lineage audit trail's URL: the privacy ledger's database, so one backup covers both."""
        return self.ledger

    @property
    def dagster_home(self) -> Path:
        """Dagster's instance directory: DAGSTER_HOME, else ``dagster_home`` under the data dir."""
        return (self.dagster_home_dir or self.data_dir / "dagster_home").resolve()

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
        freshness_days = env.get("CREDITTWIN_FRESHNESS_DAYS", "30").strip() or "30"
        if not freshness_days.isdigit() or int(freshness_days) < 1:
            raise ValueError(
                f"CREDITTWIN_FRESHNESS_DAYS={freshness_days!r} is not a whole number of days >= 1; set it to e.g. 30."
            )
        webhook = env.get("CREDITTWIN_ALERT_WEBHOOK_URL", "").strip() or None
        return cls(
            data_dir=data_dir,
            environment=environment,
            sensor_settle_seconds=settle,
            ledger_url=env.get("CREDITTWIN_LEDGER_URL") or None,
            mlflow_tracking_uri=env.get("CREDITTWIN_MLFLOW_TRACKING_URI", "").strip() or None,
            signing_key_file=Path(env["CREDITTWIN_SIGNING_KEY_FILE"]).expanduser()
            if env.get("CREDITTWIN_SIGNING_KEY_FILE")
            else None,
            trusted_keys_file=Path(env["CREDITTWIN_TRUSTED_KEYS_FILE"]).expanduser().resolve()
            if env.get("CREDITTWIN_TRUSTED_KEYS_FILE", "").strip()
            else None,
            alert_webhook_url=webhook,
            # a dg.EnvVar resolves to the variable's raw value, so only an unpadded one can be passed on by name
            alert_webhook_url_var="CREDITTWIN_ALERT_WEBHOOK_URL"
            if webhook and env.get("CREDITTWIN_ALERT_WEBHOOK_URL") == webhook
            else None,
            regeneration_cron=env.get("CREDITTWIN_REGENERATION_CRON", "").strip() or "0 3 * * 1",
            stress_refresh_cron=env.get("CREDITTWIN_STRESS_REFRESH_CRON", "").strip() or "0 4 1 * *",
            freshness_days=int(freshness_days),
            step_retries=int(_non_negative(env, "CREDITTWIN_STEP_RETRIES", 3)),
            retry_delay_seconds=_non_negative(env, "CREDITTWIN_RETRY_DELAY_SECONDS", 5),
            dagster_home_dir=Path(env["DAGSTER_HOME"]) if env.get("DAGSTER_HOME") else None,
        )


def _non_negative(env, name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    try:
        value = float(raw) if raw else float(default)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number; set it to e.g. {default:g}.") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r} is negative; set it to 0 or more.")
    return value


@cache
def code_version() -> str:
    """The code that made an output: $CREDITTWIN_CODE_VERSION, else the git commit of the checkout, else the package version.

    A checkout with uncommitted changes is marked "-dirty", so a certificate
    never claims a commit it was not made from. Read once per process.
    """
    from importlib.metadata import PackageNotFoundError, version

    configured = os.environ.get("CREDITTWIN_CODE_VERSION", "").strip()
    if configured:
        return configured
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
        return f"git:{commit}" + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        try:
            return f"credittwin=={version('credittwin')}"
        except PackageNotFoundError:
            return "unknown"
