"""Tests of resources.tracking: real MLflow tracking and registry on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

from models.tape.demo import generate_portfolio
from models.errors import InvalidTenantError
from models.tape.split import split_train_holdout
from models.risk.config import RiskConfig
from models.risk.model_set import calibration_plot_png
from models.risk.serving import score_book
from models.risk.training import train_pd_models
from models.tape.schema import infer_schema
from resources.settings import Settings
from resources.tracking import MlflowTracking, TrackingStoreError, model_name, redact_uri


@pytest.fixture(scope="module")
def pd_model(tmp_path_factory):
    """A PD model trained on a small demo book, saved, with synthetic-like rows for the example and real rows to score."""
    portfolio = generate_portfolio(1500, seed=5)
    loans = portfolio.loans
    split = split_train_holdout(loans, "loan_id", holdout_share=0.3)
    schema = infer_schema(loans, id_columns=["loan_id", "borrower_id"], target="default_flag", target_positive=[1])
    train, holdout = loans.filter(split == "train"), loans.filter(split == "holdout")
    result = train_pd_models(train, holdout, schema, RiskConfig(horizons=["tape"], model="lightgbm"), tenant="acme")
    model = result.primary
    folder = model.save(tmp_path_factory.mktemp("pd") / "model")
    return {"model": model, "dir": folder, "train": train, "holdout": holdout, "metrics": result.metrics()}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> MlflowTracking:
    """One embedded (SQLite) store for the module; each test uses its own tenant."""
    return MlflowTracking(data_dir=str(tmp_path_factory.mktemp("data")))


def _client(tracking: MlflowTracking):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking.resolved_tracking_uri(), registry_uri=tracking.resolved_registry_uri())


def _log(tracking: MlflowTracking, tenant: str, pd_model: dict, register: bool = True, tags: dict | None = None) -> dict:
    model = pd_model["model"]
    return tracking.log_and_register(
        tenant,
        pd_model["dir"],
        metrics=pd_model["metrics"],
        params=model.params(),
        tags=tags or {"credittwin.upload_sha256": "f" * 64, "dagster.run_id": "run-123"},
        artifacts={"calibration.png": calibration_plot_png(model), "calibration.json": json.dumps(model.holdout[model.chosen].calibration).encode()},
        input_example=model.input_example(pd_model["train"]),
        register=register,
    )


def test_log_register_and_load_back_scores_like_score_book(store, pd_model):
    out = _log(store, "acme", pd_model)

    assert out["registered_model"] == "credittwin-acme-pd" and out["registered_version"] == 1
    assert out["model_uri"] == "models:/credittwin-acme-pd/1"
    assert out["experiment_name"] == "credittwin-acme"
    client = _client(store)
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["chosen_model"] == "lightgbm" and run.data.params["lightgbm.deterministic"] == "True"
    assert run.data.metrics["tstr_auc"] == pytest.approx(pd_model["metrics"]["tstr_auc"])
    assert run.data.tags["credittwin.upload_sha256"] == "f" * 64
    assert run.data.tags["credittwin.registered_version"] == "1"
    artifacts = {a.path for a in client.list_artifacts(out["run_id"], "reports")}
    assert artifacts == {"reports/calibration.png", "reports/calibration.json"}
    version = client.get_model_version("credittwin-acme-pd", "1")
    assert version.run_id == out["run_id"] and version.tags["dagster.run_id"] == "run-123"
    # artifacts live under the data directory
    assert out["artifact_uri"].startswith((Path(store.data_dir).resolve() / "mlartifacts").as_uri())

    loaded = store.load_registered("acme", 1)

    rows = pd_model["holdout"]
    expected = score_book(pd_model["model"], rows)
    got = loaded.predict(pd_model["model"].pipeline.serving_frame(rows).to_pandas())
    np.testing.assert_allclose(got["pd"].to_numpy(), expected["pd"].to_numpy(), rtol=0, atol=1e-12)
    assert got["band"].tolist() == expected["band"].to_list()
    for k in (1, 2, 3):
        assert got[f"reason_{k}"].tolist() == expected[f"reason_{k}"].to_list()
    assert loaded.metadata.get_input_schema().input_names() == pd_model["model"].pipeline.names


def test_the_scoring_server_path_accepts_the_serving_example(store, pd_model):
    from mlflow.pyfunc import scoring_server

    out = _log(store, "serve-me", pd_model)
    loaded = store.load_registered("serve-me")
    logged = _client(store).get_logged_model(out["logged_model_uri"].removeprefix("models:/"))
    payload = (Path(urlparse(logged.artifact_location).path) / "serving_input_example.json").read_text()

    response = scoring_server.invocations(payload, "application/json", loaded, loaded.metadata.get_input_schema())

    assert response.status == 200, response.response
    predictions = json.loads(response.response)["predictions"]
    assert len(predictions) == 5 and {"pd", "band", "reason_1"} <= set(predictions[0])
    partial = json.dumps({"dataframe_records": [{"credit_score": 540.0, "product": "card"}]})
    response = scoring_server.invocations(partial, "application/json", loaded, loaded.metadata.get_input_schema())
    assert response.status == 200, response.response  # columns left out are read as missing


def test_versions_accumulate_and_latest_is_the_newest(store, pd_model):
    _log(store, "twice", pd_model)
    second = _log(store, "twice", pd_model)

    assert second["registered_version"] == 2
    assert store.registered_versions("twice") == [1, 2]
    assert store.load_registered("twice").metadata.run_id == second["run_id"]


def test_register_false_logs_the_run_without_a_version(store, pd_model):
    out = _log(store, "gated", pd_model, register=False)

    assert out["registered_version"] is None and out["model_uri"].startswith("models:/m-")
    assert store.registered_versions("gated") == []
    with pytest.raises(TrackingStoreError, match="no version"):
        store.load_registered("gated")


def test_a_failure_after_the_run_started_leaves_nothing_registered(store, pd_model, monkeypatch):
    from mlflow import MlflowClient

    original = MlflowClient.set_tag

    def broken(self, run_id, key, value, *args, **kwargs):
        if key == "credittwin.registered_version":
            raise OSError("disk full")
        return original(self, run_id, key, value, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "set_tag", broken)

    with pytest.raises(TrackingStoreError, match="disk full") as info:
        _log(store, "broken", pd_model)

    monkeypatch.undo()
    assert "broken" in str(info.value) and "FAILED" in str(info.value)
    client = _client(store)
    assert client.search_model_versions("name = 'credittwin-broken-pd'") == []
    assert client.search_registered_models("name = 'credittwin-broken-pd'") == []
    experiment = client.get_experiment_by_name("credittwin-broken")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_unreachable_postgres_store_fails_fast_and_hides_the_password(tmp_path, pd_model):
    tracking = MlflowTracking(data_dir=str(tmp_path), tracking_uri="postgresql+psycopg2://mlflow:s3cret@127.0.0.1:1/mlflow")
    started = time.perf_counter()

    with pytest.raises(TrackingStoreError) as info:
        _log(tracking, "acme", pd_model)

    assert time.perf_counter() - started < 20
    message = str(info.value)
    assert "s3cret" not in message and "mlflow:***@127.0.0.1:1" in message
    assert "tenant 'acme'" in message and "CREDITTWIN_MLFLOW_TRACKING_URI" in message


def test_unwritable_sqlite_path_fails_clearly_and_creates_nothing(tmp_path, pd_model):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    tracking = MlflowTracking(data_dir=str(tmp_path), tracking_uri=f"sqlite:///{blocker}/mlflow.db")

    with pytest.raises(TrackingStoreError, match="cannot be reached"):
        _log(tracking, "acme", pd_model)

    assert blocker.read_text().startswith("a file")
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()


def test_invalid_tenant_never_reaches_mlflow(store, pd_model):
    with pytest.raises(InvalidTenantError):
        _log(store, "../evil", pd_model)
    with pytest.raises(InvalidTenantError):
        model_name("Acme Bank")


def test_postgresql_backend_store(pg_database, tmp_path, pd_model):
    artifacts = (tmp_path / "artifacts").as_uri()
    tracking = MlflowTracking(data_dir=str(tmp_path), tracking_uri=pg_database, artifact_location=artifacts)

    out = _log(tracking, "pg-bank", pd_model)
    loaded = tracking.load_registered("pg-bank")

    assert out["registered_version"] == 1 and out["tracking_uri"] == redact_uri(pg_database)
    assert out["artifact_uri"].startswith(artifacts)
    rows = pd_model["holdout"].head(100)
    got = loaded.predict(pd_model["model"].pipeline.serving_frame(rows).to_pandas())
    np.testing.assert_allclose(got["pd"].to_numpy(), score_book(pd_model["model"], rows)["pd"].to_numpy(), atol=1e-12)
    assert not (tmp_path / "mlflow.db").exists()


def test_settings_and_defaults(tmp_path):
    settings = Settings.from_env({"CREDITTWIN_DATA_DIR": str(tmp_path), "CREDITTWIN_MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert MlflowTracking.from_settings(settings).resolved_tracking_uri() == "http://mlflow:5000"
    embedded = MlflowTracking.from_settings(Settings.from_env({"CREDITTWIN_DATA_DIR": str(tmp_path)}))
    assert embedded.resolved_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert redact_uri("https://user:pw@host/x") == "https://user:***@host/x"


def test_logging_a_model_in_a_fresh_store_prints_nothing_on_the_terminal(tmp_path, pd_model, capfd, caplog):
    # setup: a fresh embedded store, as `credittwin demo` meets it on a new machine
    import logging

    import mlflow  # noqa: F401 - its import sets the mlflow logger's level, which the block must give back

    tracking = MlflowTracking(data_dir=str(tmp_path / "data"))
    mlflow_level = logging.getLogger("mlflow").level
    # run
    with caplog.at_level(logging.DEBUG, logger="credittwin.tracking"):
        logged = _log(tracking, "quiet", pd_model)
    # assert: MLflow's table creation, signature validation and "Registered model ... already exists" notes stay off
    # the user's stderr, kept in the debug log; the model is registered and the logger's own level is restored
    assert logged["registered_version"] == 1
    err = capfd.readouterr().err
    assert "Creating initial MLflow database tables" not in err and "already exists" not in err, err
    assert "Validating input example" not in err, err
    assert any("Created version '1'" in r.getMessage() for r in caplog.records if r.name == "credittwin.tracking")
    assert logging.getLogger("mlflow").level == mlflow_level


def test_a_store_prepared_by_a_child_process_is_the_one_the_model_is_logged_to(tmp_path, pd_model):
    # setup: a new data root, as `credittwin demo` meets it; the command starts the child before its run
    from resources import tracking as tracking_module

    tracking = MlflowTracking(data_dir=str(tmp_path / "data"))
    database = tmp_path / "data" / "mlflow.db"
    # run
    assert tracking.prepare_embedded_store() is True
    assert tracking.prepare_embedded_store() is False  # one child per store
    logged = _log(tracking, "prepared", pd_model)
    # assert: the model went into the store the child made (schema current, the run in it), no temporary file is left,
    # and nothing is started for a store that exists or for a server
    assert logged["registered_version"] == 1 and database.exists()
    assert tracking_module._PREPARING == {}
    assert [p.name for p in database.parent.iterdir() if p.name.startswith(".mlflow.db")] == []
    assert tracking.prepare_embedded_store() is False
    assert MlflowTracking(data_dir=str(tmp_path), tracking_uri="http://127.0.0.1:1").prepare_embedded_store() is False


def test_a_prepared_store_never_replaces_one_that_appeared_meanwhile_and_an_abandoned_child_leaves_nothing(tmp_path):
    import sqlite3
    import subprocess
    import sys

    from resources import tracking as tracking_module

    # run: the child finds a store already at the final path when it is done (another process made it meanwhile)
    final, temporary = tmp_path / "mlflow.db", tmp_path / ".mlflow.db.creating-test"
    sqlite3.connect(final).execute("CREATE TABLE other_process (x)").connection.commit()
    subprocess.run([sys.executable, "-c", tracking_module._CREATE_STORE, str(temporary), str(final), str(tmp_path / "a")],
                   check=True, timeout=600)
    # assert: that store is kept as it was, the child's own is removed
    tables = {r[0] for r in sqlite3.connect(final).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"other_process"} and not temporary.exists()

    # run: a command whose run ended before risk_model abandons its child
    data = tmp_path / "data"
    assert MlflowTracking(data_dir=str(data)).prepare_embedded_store() is True
    tracking_module.abandon_prepared_stores()
    # assert: no child is left and no temporary file (a child that had already finished leaves a whole store)
    assert tracking_module._PREPARING == {}
    assert [p.name for p in data.iterdir() if p.name.startswith(".mlflow.db")] == []
