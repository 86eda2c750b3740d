"""MLflow tracking and model registry for the PD models, as a Dagster resource.

Every `risk_model` training becomes one MLflow run in the tenant's experiment
(``credittwin-<tenant>``): parameters, metrics, the calibration table and plots
as artifacts, the input data versions and the Dagster run as tags. The chosen
model is logged as an MLflow pyfunc model and registered as
``credittwin-<tenant>-pd``, with a signature and an input example, so
``mlflow models serve -m models:/credittwin-<tenant>-pd/<version>`` serves it.

How the model is logged. The model folder written by `models.risk.model_set.save_pd_model`
(JSON, a LightGBM text model, an npz of calibration knots) is logged as the
pyfunc's data with ``loader_module="models.risk.serving"`` (MLflow's documented workflow
for "pre-existing data as an MLflow model"): MLflow calls
`models.risk.serving._load_pyfunc` on the folder to serve it. Nothing is pickled, and
the `models` package travels with the model as its code path, so a serving
environment built from the logged requirements needs no CreditTwin install.

Stores. The embedded default is a SQLite tracking store,
``sqlite:///<data_dir>/mlflow.db``, with artifacts under
``<data_dir>/mlartifacts/<experiment>``; production sets `tracking_uri`
(``CREDITTWIN_MLFLOW_TRACKING_URI``) to a PostgreSQL backend
(``postgresql+psycopg2://...``) or an MLflow server. Before anything is written
the store is probed with a short timeout (MLflow itself retries an unreachable
database for about two minutes), and an unreachable store raises
`TrackingStoreError` naming the tenant and the URI with its password hidden.

Failure safety. Once a run has started, any failure ends it as FAILED, deletes
every model version the run registered (and the registered model, when this
call created it and it is left empty) and the logged model, then raises
`TrackingStoreError`: nothing half-registered remains.

URIs. Everything that can goes through an `MlflowClient` built with explicit
URIs. The fluent calls that take none (logging and registering the model,
loading it back) read MLflow's process-global URIs, so they run under one lock
with the URIs set through MLflow's own setters and put back afterwards (which
mirror them into MLflow's variables for subprocesses; this module reads and
sets none itself). System metrics are off for each run
(``log_system_metrics=False``); MLflow's telemetry is the deployment's choice
(``MLFLOW_DISABLE_TELEMETRY``, which MLflow reads itself).
"""

from __future__ import annotations

import contextlib
import math
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from models.errors import CreditTwinError
from models.tape.tenant import validate_tenant_id
from resources.storage import safe_join

EXPERIMENT_PREFIX = "credittwin-"
MODEL_ARTIFACT = "model"
REPORTS_ARTIFACT = "reports"
PROBE_TIMEOUT_S = 5
_LOCK = threading.RLock()
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")
# New embedded stores being created by child processes (`MlflowTracking.prepare_embedded_store`): the store's URI
# -> (the child, the temporary file it builds the store in).
_PREPARING: dict[str, tuple[subprocess.Popen, Path]] = {}
_PREPARING_LOCK = threading.Lock()
# The child: MLflow builds a complete store in a temporary file beside the final one, which is then linked into
# place only if no store appeared there meanwhile (os.link never replaces a file). Another process thus sees
# either no store or a whole one, never one half-way through its migrations. It runs at a lower priority, so it takes
# the core the graph leaves idle (the cascade trains on one thread) rather than slowing the step that runs meanwhile.
_CREATE_STORE = """
import os, sys
os.nice(10)  # the spare core's work: it gives way to the graph's steps whenever they want both cores
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
temporary, final, artifacts = sys.argv[1:4]
try:
    SqlAlchemyStore("sqlite:///" + temporary, artifacts).engine.dispose()
    os.link(temporary, final)
except FileExistsError:
    pass
finally:
    if os.path.exists(temporary):
        os.unlink(temporary)
"""
_SERVING_PACKAGES = ("mlflow", "lightgbm", "numpy", "pandas", "polars", "pyarrow", "pydantic")


class TrackingStoreError(CreditTwinError):
    """The MLflow tracking store or model registry could not be used; nothing was left half-registered."""

    transient = True  # a service that may come back: the step may be retried


def model_name(tenant: str) -> str:
    """The registered model name of a tenant's PD model: ``credittwin-<tenant>-pd`` (tenant validated)."""
    return f"credittwin-{validate_tenant_id(tenant)}-pd"


def redact_uri(uri: str) -> str:
    """`uri` with any password replaced by ``***``, safe to show in messages."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
            return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparseable URI>"
    return uri


def _first_line(exc: BaseException) -> str:
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {text[0] if text else ''}"


def _await_prepared(uri: str) -> None:
    """Wait for the child creating the store at `uri` (`MlflowTracking.prepare_embedded_store`), if there is one.

    Its exit status is not read: a store it could not create is created (or refused with the reason) by MLflow
    in this process, as it is when no child was started.
    """
    with _PREPARING_LOCK:
        entry = _PREPARING.pop(uri, None)
    if entry is not None:
        entry[0].wait()


def abandon_prepared_stores() -> None:
    """Stop the children still creating stores that this process did not use, and remove their temporary files.

    The `credittwin` command calls it when its run is over, so that no child is left writing into a data root
    after the command has returned (a run that failed early, before `risk_model`). A child that had finished has
    left a new, empty store, which the next `risk_model` uses.
    """
    with _PREPARING_LOCK:
        entries = list(_PREPARING.values())
        _PREPARING.clear()
    for child, temporary in entries:
        if child.poll() is None:
            child.terminate()
            child.wait()
        temporary.unlink(missing_ok=True)


def _probe(uri: str, tenant: str) -> None:
    """Raise `TrackingStoreError` quickly when the store behind `uri` cannot be reached or written."""
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else "file"
    shown = redact_uri(uri)
    try:
        if scheme == "sqlite":
            import sqlite3

            path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(path, timeout=PROBE_TIMEOUT_S)
                try:
                    connection.execute("PRAGMA user_version").fetchone()
                finally:
                    connection.close()
        elif scheme.startswith(("postgresql", "mysql", "mssql")):
            from sqlalchemy import create_engine, text
            from sqlalchemy.pool import NullPool

            args = {"connect_timeout": PROBE_TIMEOUT_S} if scheme.startswith(("postgresql", "mysql")) else {}
            engine = create_engine(uri, connect_args=args, poolclass=NullPool)
            try:
                with engine.connect() as connection:
                    connection.execute(text("SELECT 1"))
            finally:
                engine.dispose()
        elif scheme in ("http", "https"):
            import urllib.request

            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PROBE_TIMEOUT_S):  # noqa: S310 - configured URI
                pass
        elif scheme == "file" or len(scheme) == 1:  # a path (or a Windows drive letter)
            Path(uri[len("file://") :] if uri.startswith("file://") else uri).mkdir(parents=True, exist_ok=True)
    except Exception as exc:  # any failure to reach the store is the same problem for the user
        raise TrackingStoreError(
            f"the MLflow tracking store {shown} cannot be reached ({_first_line(exc)}); nothing was logged or registered.",
            tenant=tenant,
            fix="start the tracking database or server, or correct CREDITTWIN_MLFLOW_TRACKING_URI "
            "(unset it to use the embedded SQLite store under the data directory).",
        ) from None


@contextlib.contextmanager
def _mlflow_notes_to_debug() -> Iterator[None]:
    """MLflow's progress notes go to this module's debug log, not to the terminal of the person running the graph.

    MLflow logs INFO lines to stderr ("Creating initial MLflow database tables...", "Validating input example
    against model signature") and prints others with its `eprint` ("Registered model ... already exists. Creating a
    new version of this model...", said of the registered model CreditTwin itself creates just before). Within
    this block the `mlflow` logger passes only warnings and errors, and what MLflow prints to stderr is re-logged
    at debug level under `credittwin.tracking` (Dagster's event log keeps it with `--verbose`). The level is set
    back afterwards; no environment variable is touched.
    """
    import importlib
    import io
    import logging

    importlib.import_module("mlflow")  # its first import configures the `mlflow` logger: done before the level is set

    mlflow_logger = logging.getLogger("mlflow")
    level = mlflow_logger.level
    mlflow_logger.setLevel(max(level, logging.WARNING))
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed):
            yield
    finally:
        mlflow_logger.setLevel(level)
        for line in printed.getvalue().splitlines():
            if line.strip():
                logging.getLogger("credittwin.tracking").debug("mlflow: %s", line)


@contextlib.contextmanager
def _global_uris(tracking_uri: str, registry_uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at these stores for the block, under the module lock, then put back what was set."""
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _LOCK:
        # the raw globals (None when unset), so "unset" is restored as unset
        previous_tracking = getattr(tracking_utils, "_tracking_uri", None)
        previous_registry = getattr(registry_utils, "_registry_uri", None)
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(registry_uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous_tracking)
            mlflow.set_registry_uri(previous_registry)


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for package in _SERVING_PACKAGES:
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            out.append(package)
    return out


def _finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


class MlflowTracking(dg.ConfigurableResource):
    """Where PD trainings are tracked and PD models registered (see the module docstring)."""

    data_dir: str = Field(description="Data root; the embedded store is <data_dir>/mlflow.db with artifacts in <data_dir>/mlartifacts.")
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI (postgresql+psycopg2://..., http://...); None: the embedded SQLite store."
    )
    registry_uri: str | None = Field(default=None, description="Model registry URI; None: the tracking URI.")
    artifact_location: str | None = Field(
        default=None, description="Artifact root for new experiments; None: <data_dir>/mlartifacts when embedded, else the server's."
    )
    experiment_prefix: str = Field(default=EXPERIMENT_PREFIX, description="Experiment name prefix; the tenant id follows.")

    @classmethod
    def from_settings(cls, settings: Any) -> "MlflowTracking":
        """The resource for a `resources.settings.Settings`."""
        return cls(data_dir=str(settings.data_dir), tracking_uri=getattr(settings, "mlflow_tracking_uri", None))

    def prepare_embedded_store(self) -> bool:
        """Start creating a new embedded store in a child process; True when one was started.

        MLflow creates a new SQLite store by running its whole chain of schema migrations: about 1.5 s of one
        core on the demo's machine, spent inside the first `risk_model` of a new data root. The `credittwin`
        command calls this before it runs a graph in process, so that the migrations run on the machine's other
        core while the graph's first steps run on this one; `log_and_register` waits for the child before it
        opens the store. The child builds the store in a temporary file and links it into place only where no
        store has appeared meanwhile, and it runs in its own session, so an interrupt of the command (Ctrl-C
        reaches the whole foreground group) does not stop it half-way. If it fails, MLflow creates the store (or
        says why it cannot) in `risk_model`, as it does when no child was started. Nothing is started for a
        server or database store, for a store that exists, or while one is being created.
        """
        if not self.embedded:
            return False
        uri = self.resolved_tracking_uri()
        final = Path(uri[len("sqlite:///"):])
        with _PREPARING_LOCK:
            if uri in _PREPARING or final.exists():
                return False
            final.parent.mkdir(parents=True, exist_ok=True)
            temporary = final.with_name(f".{final.name}.creating-{uuid.uuid4().hex[:12]}")
            child = subprocess.Popen(
                [sys.executable, "-c", _CREATE_STORE, str(temporary), str(final), str(Path(self.data_dir).resolve() / "mlartifacts")],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
            _PREPARING[uri] = (child, temporary)
        return True

    # ------------------------------------------------------------------ locations

    @property
    def embedded(self) -> bool:
        return not self.tracking_uri

    def resolved_tracking_uri(self) -> str:
        """The configured tracking URI, else ``sqlite:///<data_dir>/mlflow.db``."""
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{Path(self.data_dir).resolve() / 'mlflow.db'}"

    def resolved_registry_uri(self) -> str:
        return self.registry_uri or self.resolved_tracking_uri()

    def experiment_name(self, tenant: str) -> str:
        return f"{self.experiment_prefix}{validate_tenant_id(tenant)}"

    def _artifact_location(self, experiment: str) -> str | None:
        if self.artifact_location:
            return f"{self.artifact_location.rstrip('/')}/{experiment}"
        if self.embedded:
            return safe_join(Path(self.data_dir), "mlartifacts", experiment).as_uri()
        return None

    def _experiment_id(self, client: Any, tenant: str) -> str:
        from mlflow.exceptions import MlflowException

        name = self.experiment_name(tenant)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(name, artifact_location=self._artifact_location(name), tags={"credittwin.tenant": tenant})
            except MlflowException:  # created meanwhile by another process
                experiment = client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id

    def _run_url(self, experiment_id: str, run_id: str) -> str | None:
        uri = self.resolved_tracking_uri()
        if uri.startswith(("http://", "https://")):
            return f"{redact_uri(uri).rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
        return None

    # ------------------------------------------------------------------ logging

    def log_and_register(
        self,
        tenant: str,
        model_dir: Path | str,
        metrics: dict[str, float],
        params: dict[str, Any],
        tags: dict[str, str],
        artifacts: dict[str, bytes],
        input_example: Any,
        register: bool = True,
        *,
        run_name: str | None = None,
    ) -> dict[str, Any]:
        """Track one training as a run and (when `register`) register its model as ``credittwin-<tenant>-pd``.

        Args:
            tenant: the tenant id (validated before it names anything).
            model_dir: a folder written by `models.risk.model_set.save_pd_model`.
            metrics: numeric figures; None, NaN and non-numbers are left out.
            params: training parameters (values stored as text, at most 6,000 characters).
            tags: run tags: the input data versions and the Dagster run/materialization links.
                They are also set on the registered version.
            artifacts: extra files (name -> bytes) stored under ``reports/`` in the run.
            input_example: a few *synthetic* rows as served (polars or pandas).
            register: False logs the run and the model without registering it (gate failed).
            run_name: the run's name (default: ``pd-<tenant>``).

        Returns:
            ``run_id``, ``experiment_id``, ``experiment_name``, ``run_url`` (None unless an
            http tracking server), ``artifact_uri``, ``model_uri`` (the registered
            ``models:/<name>/<version>`` when registered, else the logged model's URI),
            ``logged_model_uri``, ``registered_model`` and ``registered_version`` (None when not registered),
            ``tracking_uri`` (password hidden).

        Raises:
            TrackingStoreError: the store is unreachable, or any step failed; the run is then
                FAILED and no version of it stays registered.
        """
        tenant = validate_tenant_id(tenant)
        uri, registry = self.resolved_tracking_uri(), self.resolved_registry_uri()
        with _mlflow_notes_to_debug():
            return self._log_and_register(tenant, uri, registry, Path(model_dir), metrics, params, tags, artifacts,
                                          input_example, register, run_name)

    def _log_and_register(self, tenant, uri, registry, model_dir: Path, metrics, params, tags, artifacts, input_example,
                          register, run_name) -> dict[str, Any]:
        _await_prepared(uri)
        _probe(uri, tenant)
        if registry != uri:
            _probe(registry, tenant)
        import mlflow
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        name = model_name(tenant)
        run_id: str | None = None
        logged_model_id: str | None = None
        created_model = False
        with _global_uris(uri, registry):
            try:
                client = MlflowClient(tracking_uri=uri, registry_uri=registry)
                experiment_id = self._experiment_id(client, tenant)
                signature, example = self._signature(model_dir, input_example)
                run_tags = {"credittwin.tenant": tenant, **{str(k): str(v) for k, v in (tags or {}).items()}}
                with mlflow.start_run(experiment_id=experiment_id, run_name=run_name or f"pd-{tenant}", tags=run_tags,
                                      log_system_metrics=False) as run:
                    run_id = run.info.run_id
                    now = int(time.time() * 1000)
                    client.log_batch(
                        run_id,
                        metrics=[Metric(k, v, now, 0) for k, v in sorted(_finite_metrics(metrics or {}).items())],
                        params=[Param(str(k), str(v)[:6000]) for k, v in sorted((params or {}).items())],
                        tags=[],
                    )
                    if artifacts:
                        with tempfile.TemporaryDirectory() as tmp:
                            for rel, payload in artifacts.items():
                                target = safe_join(Path(tmp), rel)
                                target.parent.mkdir(parents=True, exist_ok=True)
                                target.write_bytes(payload)
                            client.log_artifacts(run_id, tmp, artifact_path=REPORTS_ARTIFACT)
                    import models as models_package

                    info = mlflow.pyfunc.log_model(
                        name=MODEL_ARTIFACT,
                        loader_module="models.risk.serving",
                        data_path=str(model_dir),
                        code_paths=[str(Path(models_package.__file__).parent)],
                        signature=signature,
                        input_example=example,
                        pip_requirements=_requirements(),
                        metadata={"credittwin_tenant": tenant, "credittwin_kind": "pd"},
                    )
                    logged_model_id = getattr(info, "model_id", None)
                    version = None
                    if register:
                        created_model = self._ensure_registered_model(client, name, tenant)
                        mv = mlflow.register_model(info.model_uri, name, tags={"credittwin.run_id": run_id, **run_tags})
                        version = int(mv.version)
                        client.set_tag(run_id, "credittwin.registered_model", name)
                        client.set_tag(run_id, "credittwin.registered_version", str(version))
                    artifact_uri = run.info.artifact_uri
                return {
                    "run_id": run_id,
                    "experiment_id": experiment_id,
                    "experiment_name": self.experiment_name(tenant),
                    "run_url": self._run_url(experiment_id, run_id),
                    "artifact_uri": artifact_uri,
                    "model_uri": f"models:/{name}/{version}" if version is not None else info.model_uri,
                    "logged_model_uri": info.model_uri,
                    "registered_model": name if version is not None else None,
                    "registered_version": version,
                    "tracking_uri": redact_uri(uri),
                }
            except BaseException as exc:
                self._undo(run_id, logged_model_id, name, created_model, uri, registry)
                if isinstance(exc, CreditTwinError) or not isinstance(exc, Exception):
                    raise
                raise TrackingStoreError(
                    f"logging the PD model to MLflow at {redact_uri(uri)} failed ({_first_line(exc)}); "
                    f"the run{' ' + run_id if run_id else ''} is marked FAILED and no model version of it is registered.",
                    tenant=tenant,
                    fix="check that the tracking store and its artifact location are reachable and writable, then re-materialize risk_model.",
                ) from exc

    @staticmethod
    def _ensure_registered_model(client: Any, name: str, tenant: str) -> bool:
        """Create the registered model when missing; True when this call created it."""
        from mlflow.exceptions import MlflowException

        try:
            client.get_registered_model(name)
            return False
        except MlflowException as exc:
            if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
                raise
        client.create_registered_model(
            name, tags={"credittwin.tenant": tenant}, description=f"CreditTwin probability-of-default model of tenant {tenant}."
        )
        return True

    @staticmethod
    def _signature(model_dir: Path, input_example: Any) -> tuple[Any, Any]:
        """The pyfunc signature (every input optional) and the example as pandas, from the model's own output."""
        import pandas as pd
        import polars as pl
        from mlflow.models import infer_signature
        from mlflow.models.signature import ModelSignature
        from mlflow.types.schema import ColSpec, Schema

        from models.risk.model_set import load_pd_model
        from models.risk.serving import PyfuncPD

        if isinstance(input_example, pl.DataFrame):
            example = input_example.to_pandas()
        else:
            example = pd.DataFrame(input_example)
        output = PyfuncPD(load_pd_model(model_dir)).predict(example)
        inferred = infer_signature(example, output)
        inputs = Schema([ColSpec(spec.type, spec.name, required=False) for spec in inferred.inputs.inputs])
        return ModelSignature(inputs=inputs, outputs=inferred.outputs), example

    def _undo(
        self, run_id: str | None, logged_model_id: str | None, name: str, created_model: bool, uri: str, registry: str
    ) -> None:
        """Best-effort clean-up after a failure: versions of the run, an emptied new model, the logged model, the run."""
        try:
            from mlflow import MlflowClient

            client = MlflowClient(tracking_uri=uri, registry_uri=registry)
        except Exception:
            return
        if run_id and _RUN_ID.match(run_id):
            with contextlib.suppress(Exception):
                for mv in client.search_model_versions(f"run_id = '{run_id}'"):
                    client.delete_model_version(mv.name, mv.version)
        if created_model:
            with contextlib.suppress(Exception):
                if not client.search_model_versions(f"name = '{name}'"):
                    client.delete_registered_model(name)
        if logged_model_id:
            with contextlib.suppress(Exception):
                client.delete_logged_model(logged_model_id)
        if run_id:
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")

    # ------------------------------------------------------------------ reading back

    def registered_versions(self, tenant: str) -> list[int]:
        """The registered version numbers of the tenant's PD model, ascending (empty when none)."""
        name = model_name(tenant)
        uri, registry = self.resolved_tracking_uri(), self.resolved_registry_uri()
        _probe(registry, tenant)
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri, registry_uri=registry)
        return sorted(int(mv.version) for mv in client.search_model_versions(f"name = '{name}'"))

    def load_registered(self, tenant: str, version: int | str = "latest") -> Any:
        """Load the tenant's registered PD model as an MLflow pyfunc model (``predict(pandas) -> pandas``).

        Args:
            tenant: the tenant id.
            version: a version number, or ``"latest"`` (the highest).

        Raises:
            TrackingStoreError: the store is unreachable or holds no such version.
        """
        name = model_name(tenant)
        if version == "latest":
            versions = self.registered_versions(tenant)
            if not versions:
                raise TrackingStoreError(
                    f"no version of the model '{name}' is registered at {redact_uri(self.resolved_registry_uri())}.",
                    tenant=tenant,
                    fix="materialize risk_model for this tenant (its gate must pass for the model to be registered).",
                )
            version = versions[-1]
        number = int(version)
        uri, registry = self.resolved_tracking_uri(), self.resolved_registry_uri()
        _probe(registry, tenant)
        import mlflow

        with _global_uris(uri, registry):
            saved_path = list(sys.path)
            try:
                return mlflow.pyfunc.load_model(f"models:/{name}/{number}")
            except Exception as exc:
                raise TrackingStoreError(
                    f"cannot load version {number} of '{name}' from {redact_uri(registry)} ({_first_line(exc)}).",
                    tenant=tenant,
                    fix="check the version number and that the model's artifacts are reachable.",
                ) from exc
            finally:
                sys.path[:] = saved_path  # MLflow prepends the model's code path; `models` is already imported
