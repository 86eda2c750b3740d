"""`risk_model`, `portfolio_scores` and `stress_test`: a PD model trained on the release, and what it says of the real book."""

import dagster as dg

from assets.common import metadata_table, output_unless_blocked, png_markdown, tenant_check, tenant_errors
from assets.policies import EXTERNAL_SERVICE_RETRY, TRAINING_OP_TAGS, TRAINING_POOL
from assets.partitions import tenants
from models.results import PdModel, PortfolioScores, Release, StressOutcome, TapeSplit
from resources.settings import code_version
from resources.tracking import MlflowTracking

GATE_CHECK = "registration_gate"
SKIPPED = "skipped"  # the metadata key of the observation that says why an asset was not materialized


def _skip(context: dg.AssetExecutionContext, asset: str, reason: str) -> dg.AssetObservation:
    """Log why `asset` is not materialized for this tenant and record it as an observation the UI shows.

    The asset then yields no output (``output_required=False``): nothing
    stale or empty is stored, the run succeeds, and Dagster skips what depends
    on it (`pipelines.cli` prints the reason).
    """
    context.log.info(f"tenant '{context.partition_key}': {asset} skipped: {reason}")
    return dg.AssetObservation(asset_key=asset, partition=context.partition_key, metadata={SKIPPED: reason})


def _folder_bytes(folder) -> dict[str, bytes]:
    return {
        f"{PdModel.MODEL_DIR}/{path.relative_to(folder)}": path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()
    }


@dg.asset(
    partitions_def=tenants,
    group_name="risk",
    kinds={"lightgbm", "mlflow"},
    code_version="2",
    pool=TRAINING_POOL,
    op_tags=TRAINING_OP_TAGS,  # the Celery queue of the training workers
    retry_policy=EXTERNAL_SERVICE_RETRY,
    output_required=False,  # a tape without a default definition has no PD model: skipped, see _skip
    check_specs=[
        tenant_check(
            GATE_CHECK,
            asset="risk_model",
            blocking=True,
            description="The model is registered only when, on the real holdout, its TSTR AUC beats chance and can "
            "reach the tenant's floor (default 0.65, or 0.9 x what the same training on the real data reaches, if "
            "lower), both judged on the AUC's 95 % interval, and its calibration error is not shown above the "
            "tolerance (default 0.05) beyond what a holdout of its size can tell apart. Not evaluated (a warning) "
            "when the tape has no default flag.",
        )
    ],
    description="Probability-of-default models (LightGBM and a binned logistic scorecard, both calibrated) trained on "
    "the anonymized synthetic portfolio only and evaluated on the real holdout, for the tape's default flag and the "
    "3- and 12-month horizons of the histories; tracked in MLflow and registered as credittwin-<tenant>-pd.",
)
def risk_model(
    context: dg.AssetExecutionContext,
    mlflow: MlflowTracking,
    raw_loan_tape: TapeSplit,
    anonymized_portfolio: Release,
):
    """Train on the release, test on the real holdout, track the run and register the chosen model when its gate passes."""
    import tempfile
    from pathlib import Path

    from models.risk.model_set import calibration_plot_png
    from models.risk.training import NoTargetError, RareTargetError, train_pd_models

    tenant = context.partition_key
    schema, config = raw_loan_tape.schema, raw_loan_tape.tenant_config
    synthetic = anonymized_portfolio.typed_loans(schema)
    holdout, real_train = raw_loan_tape.holdout, raw_loan_tape.train
    synthetic_perf = anonymized_portfolio.performance
    holdout_perf, real_train_perf = raw_loan_tape.history_of(holdout), raw_loan_tape.history_of(real_train)
    try:
        with tenant_errors(tenant):
            training = train_pd_models(
                synthetic, holdout, schema, config.risk,
                synthetic_performance=synthetic_perf, holdout_performance=holdout_perf,
                real_train=real_train, real_train_performance=real_train_perf, tenant=tenant,
            )
    except dg.Failure as failure:
        if not isinstance(failure.__cause__, (NoTargetError, RareTargetError)):
            raise
        reason = str(failure.__cause__)
        yield _skip(context, "risk_model", reason)
        # Not measured is a warning with its reason, never a pass.
        yield dg.AssetCheckResult(
            check_name=GATE_CHECK, passed=False, severity=dg.AssetCheckSeverity.WARN,
            metadata={"not_evaluated": reason}, description=f"not evaluated: {reason}",
        )
        return
    model, gate = training.primary, training.primary.gate()
    calibration_png = calibration_plot_png(model)
    with tempfile.TemporaryDirectory(prefix="credittwin-pd-") as tmp:
        folder = Path(tmp) / PdModel.MODEL_DIR
        model.save(folder)
        with tenant_errors(tenant):
            logged = _track(context, mlflow, training, folder, synthetic, gate, calibration_png,
                            sources=(raw_loan_tape, anonymized_portfolio))
        files = _folder_bytes(folder)
    files["plots/calibration.png"] = calibration_png
    output = dg.Output(PdModel(summary={**training.summary(), "mlflow": logged, "gate": gate}, files=files),
                       metadata=_model_metadata(training, gate, logged, calibration_png))
    # a model that fails the gate is tracked in MLflow but not stored: the last good model stays current for scoring
    yield from output_unless_blocked(context, output, [_gate_check(gate)], fix=_gate_fix(gate, config.holdout_share))


# Past this width, the TSTR AUC's 95 % interval says more about the holdout's size than about the model.
WIDE_INTERVAL = 0.2


def _gate_fix(gate: dict, holdout_share: float) -> str | None:
    """The fix of a failed gate whose AUC interval is too wide to judge: a bigger holdout, not a better model."""
    low, high = gate.get("auc_interval") or [None, None]
    if gate["passed"] or low is None or high is None or high - low <= WIDE_INTERVAL:
        return None
    return (f"the real holdout holds {gate.get('holdout_defaults')} defaults in {gate.get('holdout_rows')} loans, so "
            f"the TSTR AUC's 95 % interval is {high - low:.2f} wide: too wide to show a model better than chance or "
            f"at its floor. A larger holdout_share in tenant.yaml (now {holdout_share:g}) or a larger tape lets the "
            "gate judge; the release and its certificate do not depend on the PD model.")


def _track(context, mlflow: MlflowTracking, training, folder, synthetic, gate: dict, calibration_png: bytes,
           sources) -> dict:
    """Log the training run to MLflow with its lineage tags and artifacts; register the model when the gate passed."""
    import json

    from models.tape.formulas import formula_safe_csv

    model, tenant = training.primary, context.partition_key
    return mlflow.log_and_register(
        tenant,
        folder,
        metrics=training.metrics(),
        params=model.params(),
        tags={
            **{f"credittwin.{source.ASSET}.content_sha256": source.content_sha256 or "" for source in sources},
            "credittwin.code_version": code_version(),
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": "risk_model",
            "dagster.partition": tenant,
            "credittwin.gate_passed": str(gate["passed"]),
        },
        artifacts={
            "calibration.png": calibration_png,
            "calibration.csv": formula_safe_csv(model.calibration_frame()),
            "summary.json": json.dumps(training.summary(), default=str, indent=2).encode(),
        },
        input_example=model.input_example(synthetic),
        register=bool(gate["passed"]),
    )


def _or(value, missing: str):
    return value if value is not None else missing


def _model_metadata(training, gate: dict, logged: dict, calibration_png: bytes) -> dict:
    model = training.primary
    holdout_eval = model.summary()["holdout"][model.chosen]
    return {
        "horizon": model.horizon,
        "chosen_model": model.chosen,
        "tstr_auc": _or(gate["tstr_auc"], "not evaluable"),
        "gini": _or(holdout_eval.get("gini"), "not evaluable"),
        "ks": _or(holdout_eval.get("ks"), "not evaluable"),
        "brier": _or(holdout_eval.get("brier"), "not evaluable"),
        "calibration_error": _or(gate["ece"], "not evaluable"),
        "trtr_auc": _or(gate["trtr_auc"], "not measured"),
        "gate_rules": dg.MetadataValue.json(gate["rules"]),
        "horizons_trained": dg.MetadataValue.json(list(training.models)),
        "horizons_skipped": dg.MetadataValue.json(training.skipped),
        "mlflow_run_id": logged["run_id"],
        "mlflow_experiment": logged["experiment_name"],
        "mlflow_tracking_uri": logged["tracking_uri"],
        "mlflow_model_uri": logged["model_uri"],
        "registered_version": _or(logged["registered_version"], "not registered (gate failed)"),
        "calibration": png_markdown(calibration_png, "calibration on the real holdout"),
    }


def _gate_check(gate: dict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=GATE_CHECK,
        passed=bool(gate["passed"]),
        metadata={
            "tstr_auc": _or(gate["tstr_auc"], "not evaluable"),
            "auc_floor": gate["auc_floor"],
            "auc_interval_95": dg.MetadataValue.json(gate["auc_interval"]),
            "trtr_auc": _or(gate["trtr_auc"], "not measured"),
            "effective_auc_floor": gate["effective_auc_floor"],
            "calibration_error": _or(gate["ece"], "not evaluable"),
            "max_calibration_error": gate["max_calibration_error"],
            "calibration_error_limit": gate["ece_limit"],
            "rules": dg.MetadataValue.json(gate["rules"]),
            "reasons": dg.MetadataValue.json(gate["reasons"]),
        },
        description="registered" if gate["passed"] else "not registered: " + "; ".join(gate["reasons"]),
    )


@dg.asset(
    partitions_def=tenants,
    group_name="risk",
    kinds={"parquet", "mlflow"},
    code_version="2",
    retry_policy=EXTERNAL_SERVICE_RETRY,
    output_required=False,  # no registered model, nothing to score with: skipped, see _skip
    description="The tenant's real current book scored with the registered PD model: PD, risk band and the top three "
    "reason codes per loan.",
)
def portfolio_scores(
    context: dg.AssetExecutionContext, mlflow: MlflowTracking, raw_loan_tape: TapeSplit, risk_model: PdModel
):
    """Score the real book with the model version `risk_model` registered (loaded back from the MLflow registry)."""
    import polars as pl

    tenant = context.partition_key
    version = risk_model.registered_version
    if version is None:
        yield _skip(context, "portfolio_scores",
                    "the risk model's registration gate failed, so no model is registered to score with")
        return
    book = raw_loan_tape.book
    with tenant_errors(tenant):
        served = mlflow.load_registered(tenant, version)
    # the registered model's signature: numbers as Float64, everything else as text
    request = risk_model.load().pipeline.serving_frame(book)
    scores = pl.from_pandas(served.predict(request.to_pandas()))
    schema = raw_loan_tape.schema
    if schema.id_column and schema.id_column in book.columns:
        scores = scores.insert_column(0, book.get_column(schema.id_column))
    bands = scores.group_by("band").agg(pl.len().alias("loans"), pl.col("pd").mean().alias("mean_pd")).sort("band")
    yield dg.Output(
        PortfolioScores(scores=scores, bands=bands.to_dicts(),
                        model={"registered_model": f"credittwin-{tenant}-pd", "version": version}),
        metadata={
            "dagster/row_count": scores.height,
            "model_version": str(version),
            "mean_pd": dg.MetadataValue.float(float(scores.get_column("pd").mean())),
            "band_distribution": metadata_table(bands.to_dicts(), ["band", "loans", "mean_pd"]),
        },
    )


@dg.asset(
    partitions_def=tenants,
    group_name="risk",
    kinds={"pdf", "json"},
    code_version="2",
    description="Baseline, adverse and severely adverse scenarios (plus the tenant's own) through the PD model on the "
    "real book: default rate, expected loss, loss rate per scenario and segment, and migration between risk bands; "
    "count-based (each loan an exposure of 1, said in its metadata and PDF) when the book has no exposure column.",
)
def stress_test(context: dg.AssetExecutionContext, raw_loan_tape: TapeSplit, risk_model: PdModel):
    """Run the scenarios; the numbers first, then charts and the PDF."""
    from models.risk.stress import render_stress_pdf, run_stress

    tenant = context.partition_key
    config, schema = raw_loan_tape.tenant_config, raw_loan_tape.schema
    model, book = risk_model.load(), raw_loan_tape.book
    stress_config = config.stress
    if "bands" not in stress_config.model_fields_set:
        stress_config = stress_config.model_copy(update={"bands": [(b["name"], float(b["max_pd"])) for b in model.bands]})
    with tenant_errors(tenant):
        result = run_stress(
            book, model.predict_pd, stress_config, tenant=tenant,
            ignore=[c for c in (schema.id_column, schema.target) if c],
        )
    charts = result.render_charts()
    table = result.table()
    return dg.Output(
        StressOutcome(
            results=table,
            stress=result.to_dict(),
            files={"stress_test.pdf": render_stress_pdf(result), **{f"charts/{k}.png": v for k, v in charts.items()}},
        ),
        metadata={
            "scenarios": dg.MetadataValue.json(sorted(set(table.get_column("scenario").to_list()))),
            "results": metadata_table(table.to_dicts(), table.columns),
            "exposure": result.exposure_note,
            "warnings": dg.MetadataValue.json(result.warnings),
            **({"loss_rate_chart": png_markdown(charts["loss_rate"], "loss rate by scenario")} if "loss_rate" in charts else {}),
        },
    )

