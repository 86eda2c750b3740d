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
    CREDITTWIN_DATA_URL   shared storage for asset outputs and the paid-release
                          store, so workers on several machines share them: an
                          fsspec URL such as ``s3://bucket/prefix`` (needs the
                          ``s3`` extra), ``gs://...``, ``file:///...`` or a
                          path (default: ``$CREDITTWIN_DATA_DIR``); see
                          docs/storage.md.
    CREDITTWIN_LANDING_URL
                          the landing zone, where lenders upload: a path or an
                          fsspec URL (default: ``landing`` under
                          ``$CREDITTWIN_DATA_URL`` when that is object storage,
                          else ``$CREDITTWIN_DATA_DIR/landing``); see
                          docs/storage.md.
    CREDITTWIN_STORAGE_OPTIONS
                          JSON object of fsspec storage options for
                          CREDITTWIN_DATA_URL, e.g. ``{"endpoint_url":
                          "http://minio:9000"}`` (default: none; S3 credentials
                          then come from the usual AWS chain).
    CREDITTWIN_CACHE_DIR  local folder that stored model files are downloaded
                          into from CREDITTWIN_DATA_URL (default
                          ``$CREDITTWIN_DATA_DIR/cache``).
    CREDITTWIN_EXECUTOR   how the steps of a run execute: ``multiprocess``
                          (default: Dagster's own, one process per step for
                          launched runs; the ``credittwin`` command runs in
                          its own process), ``in_process``, or ``celery`` (on
                          Celery workers through dagster-celery; see
                          docs/scale-out.md).
    CREDITTWIN_BROKER_URL the Celery broker, required with ``celery``:
                          ``redis://host:6379/0`` or
                          ``amqp://user:password@host:5672/vhost``.
    CREDITTWIN_CELERY_BACKEND_URL
                          where Celery returns step results (default
                          ``rpc://``: back through the broker).
    CREDITTWIN_CELERY_KEY_PREFIX
                          a prefix for every Redis key of the Celery traffic,
                          so deployments (or test runs) sharing one Redis never
                          take each other's steps (Redis brokers only).
    DAGSTER_HOME          Dagster's instance directory (default
                          ``$CREDITTWIN_DATA_DIR/dagster_home``); the ``credittwin``
                          command opens the instance there.

Libraries read their own variables (MLflow ``MLFLOW_DISABLE_TELEMETRY``, Dagster's
instance configuration); CreditTwin neither reads nor sets them, so they are
set where the deployment's environment is: its shell, container or Helm values.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from resources.objectstore import (
    LocalRoot,
    ObjectRoot,
    StorageConfigError,
    cache_folder,
    check_data_url,
    configured_root,
    is_url,
    local_path,
    parse_storage_options,
)

ENVIRONMENTS = ("development", "production")
EXECUTORS = ("multiprocess", "in_process", "celery")
# kombu's transports for the two brokers the platform supports: Redis and RabbitMQ.
REDIS_BROKER_SCHEMES = ("redis", "rediss")
BROKER_SCHEMES = (*REDIS_BROKER_SCHEMES, "amqp", "amqps", "pyamqp")
CELERY_BACKEND_SCHEMES = ("rpc", "redis", "rediss")
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")


def landing_location(landing_url: str | None, data_url: str | None, data_dir: Path) -> str:
    """Where lenders upload: `landing_url`; else ``landing`` under `data_url` when that is object storage (workers
    on other machines must read the uploads too); else ``landing`` under the local `data_dir`."""
    if landing_url:
        return landing_url
    if data_url and is_url(data_url) and local_path(data_url) is None:
        return f"{data_url.rstrip('/')}/landing"
    return str(Path(data_dir) / "landing")


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
    executor: str = "multiprocess"
    """How run steps execute (CREDITTWIN_EXECUTOR): one of `EXECUTORS`; `pipelines.jobs.build_executor` maps it."""
    # the URLs may carry a password: kept out of the repr
    broker_url: str | None = field(default=None, repr=False)
    celery_backend_url: str | None = field(default=None, repr=False)
    celery_key_prefix: str | None = None
    process_environment: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    """The environment these settings were read from. A child process that must load the same deployment (a Celery
    worker) is started with it, so nothing else reads the process environment; empty when built in code."""
    data_url: str | None = None
    """Shared storage for outputs (an fsspec URL or a path); None: `data_dir`."""
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)  # may hold keys: kept out of the repr
    storage_options_var: str | None = None
    """The environment variable `storage_options` was read from, passed on as a `dg.EnvVar` (it may hold keys)."""
    cache_dir: Path | None = None
    landing_url: str | None = None
    """The landing zone (an fsspec URL or a path); None: see `landing_location`."""

    @property
    def storage_url(self) -> str:
        """Where asset outputs and the paid-release store live: `data_url`, else the data dir."""
        return self.data_url or str(self.data_dir)

    @property
    def storage_cache(self) -> Path:
        """The local cache of files downloaded from object storage: configured, else ``cache`` under the data dir."""
        return cache_folder(self.data_dir, self.cache_dir)

    def storage_root(self) -> LocalRoot | ObjectRoot:
        """The root outputs are read from and written to (`resources.objectstore.configured_root`)."""
        return configured_root(self.data_dir, self.data_url, self.storage_options, self.cache_dir)

    @property
    def celery_backend(self) -> str:
        """Where Celery returns step results: configured, else ``rpc://`` (back through the broker, nothing to run)."""
        return self.celery_backend_url or "rpc://"

    @property
    def landing_dir(self) -> Path:
        """The local landing folder (``landing`` under the data dir); see `landing_location` for where it is."""
        return self.data_dir / "landing"

    @property
    def landing_location(self) -> str:
        """Where lenders upload: `landing_url`, else ``landing`` under an object-store `data_url`, else `landing_dir`."""
        return landing_location(self.landing_url, self.data_url, self.data_dir)

    def landing_zone(self):
        """The landing zone (`resources.landing.LandingZone`), local or on object storage."""
        from resources.landing import LandingZone

        return LandingZone.at(self.landing_location, storage_options=self.storage_options,
                              stage_dir=self.storage_cache / "landing")

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
        data_url = check_data_url(env.get("CREDITTWIN_DATA_URL"))
        options_text = env.get("CREDITTWIN_STORAGE_OPTIONS", "").strip()
        landing_url = check_data_url(env.get("CREDITTWIN_LANDING_URL"), "CREDITTWIN_LANDING_URL")
        storage_options = parse_storage_options(options_text)
        if storage_options and not is_url(data_url or "") and not is_url(landing_url or ""):
            raise StorageConfigError(
                "CREDITTWIN_STORAGE_OPTIONS is set but neither CREDITTWIN_DATA_URL nor CREDITTWIN_LANDING_URL is an "
                "object-store URL, so nothing would use them.",
                fix="set CREDITTWIN_DATA_URL to e.g. s3://<bucket>/<prefix>, or unset CREDITTWIN_STORAGE_OPTIONS.",
            )
        executor, broker_url, backend_url, key_prefix = _celery_settings(env)
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
            executor=executor,
            broker_url=broker_url,
            celery_backend_url=backend_url,
            celery_key_prefix=key_prefix,
            process_environment=dict(env),
            data_url=data_url,
            landing_url=landing_url,
            storage_options=storage_options,
            storage_options_var="CREDITTWIN_STORAGE_OPTIONS" if options_text else None,
            cache_dir=Path(env["CREDITTWIN_CACHE_DIR"]).expanduser().resolve()
            if env.get("CREDITTWIN_CACHE_DIR", "").strip()
            else None,
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


def _celery_settings(env) -> tuple[str, str | None, str | None, str | None]:
    """CREDITTWIN_EXECUTOR, CREDITTWIN_BROKER_URL, CREDITTWIN_CELERY_BACKEND_URL and CREDITTWIN_CELERY_KEY_PREFIX,
    validated together: a wrong broker must fail when the settings load, not as steps that never start."""
    executor = env.get("CREDITTWIN_EXECUTOR", "").strip().lower() or "multiprocess"
    if executor not in EXECUTORS:
        raise ValueError(
            f"CREDITTWIN_EXECUTOR={executor!r} is not one of {EXECUTORS}; leave it unset for the embedded default, "
            "or set it to 'celery' (with CREDITTWIN_BROKER_URL) to run steps on Celery workers."
        )
    broker = env.get("CREDITTWIN_BROKER_URL", "").strip() or None
    if executor == "celery" and broker is None:
        raise ValueError(
            "CREDITTWIN_EXECUTOR=celery needs CREDITTWIN_BROKER_URL; set it to the broker the workers use, e.g. "
            "redis://127.0.0.1:6379/0 or amqp://guest:guest@127.0.0.1:5672//."
        )
    if broker is not None:
        _require_scheme("CREDITTWIN_BROKER_URL", broker, BROKER_SCHEMES,
                        "redis://127.0.0.1:6379/0 (Redis) or amqp://user:password@host:5672/vhost (RabbitMQ)")
    backend = env.get("CREDITTWIN_CELERY_BACKEND_URL", "").strip() or None
    if backend is not None:
        _require_scheme("CREDITTWIN_CELERY_BACKEND_URL", backend, CELERY_BACKEND_SCHEMES,
                        "rpc:// (results back through the broker) or redis://127.0.0.1:6379/1")
    prefix = env.get("CREDITTWIN_CELERY_KEY_PREFIX", "").strip() or None
    if prefix is not None:
        if not _KEY_PREFIX.match(prefix):
            raise ValueError(
                f"CREDITTWIN_CELERY_KEY_PREFIX={prefix!r} is not 1-63 letters, digits, '_', '.', ':' or '-' starting "
                "with a letter or digit; set it to e.g. credittwin-prod: or leave it unset."
            )
        if broker is None or urlsplit(broker).scheme.lower() not in REDIS_BROKER_SCHEMES:
            raise ValueError(
                "CREDITTWIN_CELERY_KEY_PREFIX applies to a Redis broker only; unset it, or set CREDITTWIN_BROKER_URL "
                "to redis://host:6379/0 (keep RabbitMQ deployments apart by virtual host instead)."
            )
    return executor, broker, backend, prefix


def _require_scheme(name: str, url: str, schemes: tuple[str, ...], example: str) -> None:
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if scheme not in schemes:
        # the URL may carry a password: the message names its scheme only
        shown = f"a {scheme}:// URL" if scheme else "a URL without a scheme"
        raise ValueError(f"{name} is {shown}, which Celery cannot use here; set it to e.g. {example}.")


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
