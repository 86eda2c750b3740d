"""validation_report, risk_model (real MLflow tracking and registry), portfolio_scores and stress_test through Dagster."""

import json

import dagster as dg
import mlflow
import polars as pl
import pytest
import yaml

from models.tape.demo import generate_portfolio, write_landing
from models.tape.split import split_by_unit
from models.reports.pdf import fmt, pdf_text
from pipelines.definitions import build_definitions
from resources.settings import Settings
from models.results import PdModel, TapeSplit
from resources.storage import VersionedStore
from tests.conftest import materialize_tenant, relax_audit

RUN_CONFIG = {"lstm_cascade": {"config": {"epochs": 4, "hidden_size": 16}}}
DOWNSTREAM = ["raw_loan_tape", "fitted_copula", "lstm_cascade", "synthetic_portfolio", "anonymized_portfolio",
              "validation_report", "risk_model", "portfolio_scores", "stress_test"]


def _materialize(settings, instance, tenant, only=DOWNSTREAM):
    return materialize_tenant(settings, instance, tenant, only, run_config={"ops": RUN_CONFIG})


def _failures(result) -> str:
    """Every message of every step failure, causes included (a retried step fails with "Exceeded max_retries")."""
    messages = []
    for event in result.get_step_failure_events():
        error = event.event_specific_data.error
        while error is not None:
            messages.append(error.message)
            error = error.cause
    return " ".join(messages)


def _metadata(instance, asset, tenant):
    record = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[tenant]), limit=1
    ).records[0]
    return record.asset_materialization.metadata


def _current(settings, asset, tenant):
    store = VersionedStore(settings.data_dir, [asset], tenant)
    return store.read() if store.current() is not None else None


# 180 holdout loans: a decile calibration table has 18 loans a bin, so its ECE is noisy; the small book's gate
# allows 0.15 (the default 0.05 is met on the 5,000-loan demo book).
SMALL_BOOK_RISK = {"max_calibration_error": 0.15}


def _landing(data, tenant, rows=900, **config):
    folder = data / "landing" / tenant
    write_landing(generate_portfolio(rows, months=12, seed=11), folder, fmt="parquet")
    relax_audit(folder, **{"risk": SMALL_BOOK_RISK, **config})
    return folder


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    data = tmp_path_factory.mktemp("risk") / "data"
    settings = Settings(data_dir=data, sensor_settle_seconds=0)
    _landing(data, "bank", stress={"scenarios": [
        {"name": "card_crunch", "pd_multipliers": [{"segment": {"product": "card"}, "multiplier": 50.0}]},
    ]})
    with dg.instance_for_test() as instance:
        result = _materialize(settings, instance, "bank")
        assert result.success, _failures(result)
        yield settings, instance, result


def test_validation_report_pdf_carries_the_json_figures(book):
    settings, instance, _ = book
    report = _current(settings, "validation_report", "bank")
    document = report.document("validation_report")
    assert {"fidelity", "quality", "credit", "utility", "sequences", "score_formula", "recommendations"} <= set(document)
    assert document["utility"]["status"] == "evaluated"
    assert document["sequences"]["status"] == "evaluated"
    text = pdf_text((report.path / "validation_report.pdf").read_bytes())
    assert fmt(document["score"]) in text
    assert fmt(document["quality"]["score"]) in text
    metadata = _metadata(instance, "validation_report", "bank")
    assert "data:image/png;base64," in metadata["distributions"].value
    assert metadata["score"].value == pytest.approx(document["score"])


def test_risk_model_is_tracked_and_registered_and_links_both_ways(book):
    settings, instance, result = book
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["registration_gate"].passed
    metadata = _metadata(instance, "risk_model", "bank")
    run_id = metadata["mlflow_run_id"].value
    uri = f"sqlite:///{settings.data_dir / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.get_run(run_id)
    assert run.data.tags["dagster.run_id"] == result.run_id and run.data.tags["dagster.partition"] == "bank"
    raw_sha = _current(settings, "raw_loan_tape", "bank").manifest["content_sha256"]
    assert run.data.tags["credittwin.raw_loan_tape.content_sha256"] == raw_sha
    assert "tape.lightgbm.holdout.auc" in run.data.metrics or any(k.endswith("holdout.auc") for k in run.data.metrics)
    versions = client.search_model_versions("name = 'credittwin-bank-pd'")
    assert [v.run_id for v in versions] == [run_id]
    assert metadata["registered_version"].value == versions[0].version or str(metadata["registered_version"].value) == str(versions[0].version)


def test_portfolio_scores_equal_the_registered_model_loaded_back(book):
    settings, _, _ = book
    scores = _current(settings, "portfolio_scores", "bank").table("scores")
    raw = _current(settings, "raw_loan_tape", "bank")
    assert scores.height == raw.table("loans").height
    assert {"loan_id", "pd", "band", "reason_1", "reason_2", "reason_3"} <= set(scores.columns)
    assert scores.get_column("pd").is_between(0, 1).all()

    uri = f"sqlite:///{settings.data_dir / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    served = mlflow.pyfunc.load_model("models:/credittwin-bank-pd/1")
    book_frame = TapeSplit.from_parts(raw).book
    model = PdModel.from_parts(_current(settings, "risk_model", "bank")).load()
    request = model.pipeline.serving_frame(book_frame.head(50))
    again = served.predict(request.to_pandas())
    assert again["pd"].tolist() == pytest.approx(scores.get_column("pd").head(50).to_list())


def test_stress_test_orders_losses_and_caps_a_pd_above_one(book):
    settings, instance, _ = book
    stress = _current(settings, "stress_test", "bank")
    table = stress.table("results").filter(pl.col("segment") == "all")
    loss = dict(zip(table.get_column("scenario").to_list(), table.get_column("loss_rate").to_list()))
    assert loss["baseline"] <= loss["adverse"] <= loss["severely_adverse"]
    document = stress.document("stress")
    assert any("capped" in w for w in document.get("warnings", []))
    assert (stress.path / "stress_test.pdf").read_bytes()[:4] == b"%PDF"
    results = _metadata(instance, "stress_test", "bank")["results"]  # a table the UI renders, with typed columns
    assert "card_crunch" in {record.data["scenario"] for record in results.records}
    assert {column.name: column.type for column in results.schema.columns}["loss_rate"] == "float"


def test_without_a_target_risk_assets_skip_and_the_report_renders(tmp_path):
    data = tmp_path / "data"
    settings = Settings(data_dir=data, sensor_settle_seconds=0)
    folder = _landing(data, "notarget", rows=500)
    config = yaml.safe_load((folder / "tenant.yaml").read_text())
    config.pop("target", None)
    config["sensitive_columns"] = []
    config["privacy"] = {"k": 5, "l": 1}  # l-diversity needs a sensitive column
    config.pop("performance", None)
    (folder / "tenant.yaml").write_text(yaml.safe_dump(config))
    (folder / "performance.parquet").unlink()
    with dg.instance_for_test() as instance:
        result = _materialize(settings, instance, "notarget")
        assert result.success, _failures(result)
        # nothing is stored for the risk assets: risk_model says why, Dagster skips what reads it
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert materialized.isdisjoint({"risk_model", "portfolio_scores", "stress_test"})
        assert {"anonymized_portfolio", "validation_report"} <= materialized
        assert {e.step_key for e in result.get_step_skipped_events()} == {"portfolio_scores", "stress_test"}
        observation = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("risk_model"), asset_partitions=["notarget"]), limit=1
        ).records[0].asset_observation
        assert "no target" in observation.metadata["skipped"].value.lower()
        assert "tenant.yaml" in observation.metadata["skipped"].value
        # the gate was not measured: a warning with its reason, never a pass
        gate = next(e for e in result.get_asset_check_evaluations() if e.check_name == "registration_gate")
        assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN
        assert "no target" in gate.metadata["not_evaluated"].value.lower()
        # the tape checks with nothing to look at are warnings that say so, not passes, and refuse nothing
        tape_checks = {e.check_name: e for e in result.get_asset_check_evaluations()
                       if e.asset_key == dg.AssetKey("raw_loan_tape")}
        for name in ("target_column_present", "performance_period_gaps"):
            check = tape_checks[name]
            assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN, name
            assert check.description.startswith("not applicable") and "not_evaluated" in check.metadata, name
        assert tape_checks["tape_not_empty"].passed
    assert _current(settings, "risk_model", "notarget") is None
    report = _current(settings, "validation_report", "notarget")
    assert report.document("validation_report")["utility"]["status"] == "absent"
    assert (report.path / "validation_report.pdf").exists()


def test_one_class_holdout_is_not_evaluable_and_nothing_is_registered(tmp_path):
    data = tmp_path / "data"
    settings = Settings(data_dir=data, sensor_settle_seconds=0)
    portfolio = generate_portfolio(900, months=12, seed=11)
    side = split_by_unit(portfolio.loans, "borrower_id", "loan_id", 0.2)  # the tape splits by borrower
    portfolio.loans = portfolio.loans.with_columns(
        pl.when(side == "holdout").then(0).otherwise(pl.col("default_flag")).alias("default_flag")
    )
    folder = data / "landing" / "oneclass"
    write_landing(portfolio, folder, fmt="parquet")
    relax_audit(folder, risk={**SMALL_BOOK_RISK, "horizons": ["tape"]})
    with dg.instance_for_test() as instance:
        result = _materialize(settings, instance, "oneclass", only=DOWNSTREAM[:-2])
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not checks["registration_gate"].passed
    assert "not evaluable" in checks["registration_gate"].description
    report = _current(settings, "validation_report", "oneclass").document("validation_report")
    assert report["utility"]["status"] == "not_evaluable"
    uri = f"sqlite:///{data / 'mlflow.db'}"
    assert mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions("name = 'credittwin-oneclass-pd'") == []


def test_a_flag_too_rare_to_learn_skips_the_pd_model_and_keeps_the_release(tmp_path):
    # setup: the lender's flag marks 6 loans of 900 (a real tape read with only 'Charged Off' as positive has 7 in
    # 10,000): no PD model can learn it from the real data, so the synthetic book cannot be blamed for it
    data = tmp_path / "data"
    settings = Settings(data_dir=data, sensor_settle_seconds=0)
    portfolio = generate_portfolio(900, months=12, seed=11)
    rare = portfolio.loans.get_column("loan_id").is_in(
        portfolio.loans.filter(pl.col("default_flag") == 1).get_column("loan_id").head(6).to_list())
    portfolio.loans = portfolio.loans.with_columns(pl.when(rare).then(1).otherwise(0).alias("default_flag"))
    folder = data / "landing" / "rareflag"
    write_landing(portfolio, folder, fmt="parquet")
    relax_audit(folder, risk={**SMALL_BOOK_RISK, "horizons": ["tape"]})
    # run
    with dg.instance_for_test() as instance:
        result = _materialize(settings, instance, "rareflag")
        observation = instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("risk_model"), asset_partitions=["rareflag"]), limit=1
        ).records[0].asset_observation
    # assert: the run succeeds, the PD model is skipped with the count and the fix, the gate is a warning
    assert result.success, _failures(result)
    reason = observation.metadata["skipped"].value
    assert "tenant 'rareflag'" in reason and "default_flag" in reason and "of the real train split" in reason
    assert "target.positive" in reason
    gate = next(e for e in result.get_asset_check_evaluations() if e.check_name == "registration_gate")
    assert not gate.passed and gate.severity == dg.AssetCheckSeverity.WARN
    assert {e.step_key for e in result.get_step_skipped_events()} == {"portfolio_scores", "stress_test"}
    assert _current(settings, "risk_model", "rareflag") is None
    assert _current(settings, "validation_report", "rareflag") is not None


@pytest.mark.parametrize(
    "scenario, expected",
    [
        ({"name": "bad_col", "feature_shocks": [{"column": "salary", "kind": "multiply", "value": 0.9}]}, "salary"),
        ({"name": "bad_seg", "pd_multipliers": [{"segment": {"product": "yacht"}, "multiplier": 2.0}]}, "yacht"),
    ],
    ids=["unknown-column", "unknown-segment"],
)
def test_a_bad_tenant_scenario_fails_the_stress_test_naming_it(book, scenario, expected):
    settings, instance, _ = book
    folder = settings.data_dir / "landing" / "bank"
    config = yaml.safe_load((folder / "tenant.yaml").read_text())
    before = VersionedStore(settings.data_dir, ["stress_test"], "bank").current()
    original = json.dumps(config)
    try:
        config["stress"] = {"scenarios": [scenario]}
        (folder / "tenant.yaml").write_text(yaml.safe_dump(config))
        result = _materialize(settings, instance, "bank", only=["raw_loan_tape", "stress_test"])
        assert not result.success
        message = _failures(result)
        assert "tenant 'bank'" in message and expected in message and scenario["name"] in message
        assert VersionedStore(settings.data_dir, ["stress_test"], "bank").current() == before
    finally:
        (folder / "tenant.yaml").write_text(yaml.safe_dump(json.loads(original)))
        assert _materialize(settings, instance, "bank", only=["raw_loan_tape"]).success


def test_unreachable_mlflow_store_fails_clearly_and_registers_nothing(book, tmp_path):
    settings, instance, _ = book
    broken = Settings(data_dir=settings.data_dir, sensor_settle_seconds=0,
                      mlflow_tracking_uri="postgresql+psycopg2://postgres@127.0.0.1:1/mlflow")
    before = VersionedStore(settings.data_dir, ["risk_model"], "bank").current()
    job = build_definitions(broken).resolve_job_def("tenant_pipeline")
    result = job.execute_in_process(
        partition_key="bank", instance=instance, asset_selection=[dg.AssetKey("risk_model")], raise_on_error=False,
    )
    assert not result.success
    message = _failures(result)
    assert "tenant 'bank'" in message and "127.0.0.1:1" in message and "Fix:" in message
    assert VersionedStore(settings.data_dir, ["risk_model"], "bank").current() == before
    uri = f"sqlite:///{settings.data_dir / 'mlflow.db'}"
    assert len(mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_model_versions(
        "name = 'credittwin-bank-pd'")) == 1


def test_a_gate_failed_on_a_holdout_too_small_to_judge_says_so_in_its_fix():
    # setup: Stat2Data CreditRisk's run: TSTR AUC 0.445, interval 0.245 to 0.646 on 11 defaults in 89 holdout loans
    from assets.risk import _gate_fix

    wide = {"passed": False, "auc_interval": [0.245, 0.646], "holdout_defaults": 11, "holdout_rows": 89}
    narrow = {**wide, "auc_interval": [0.40, 0.48]}
    # run / assert: a wide interval points at the holdout's size; a narrow one keeps the generic advice
    fix = _gate_fix(wide, 0.2)
    assert "11 defaults in 89 loans" in fix and "0.40 wide" in fix and "holdout_share in tenant.yaml (now 0.2)" in fix
    assert _gate_fix(narrow, 0.2) is None and _gate_fix({**wide, "passed": True}, 0.2) is None
