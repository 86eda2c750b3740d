"""`validation_report`: is the released synthetic book fit for model development? Fidelity, utility, sequences."""

import dagster as dg

from assets.common import markdown_list, metadata_table, png_markdown, tenant_check, tenant_errors
from assets.partitions import tenants
from models.results import Release, TapeSplit, ValidationResult

FIDELITY_CHECK = "fidelity_thresholds"
# Under DP the report's figures are exact statistics of real loans: it is kept as an internal artifact.
INTERNAL_NOTE = "computed on real data; not covered by the DP guarantee; not exported"


@dg.asset(
    partitions_def=tenants,
    group_name="validation",
    kinds={"pdf", "json"},
    code_version="1",
    check_specs=[
        tenant_check(
            FIDELITY_CHECK,
            asset="validation_report",
            description="The tenant's fidelity and utility thresholds (defaults: quality at least 0.85; the TSTR/TRTR "
            "AUC ratio fails only when its whole 95% interval is below 0.95 and warns when the interval straddles it; "
            "per-column and pairwise limits widened to sampling noise).",
        )
    ],
    description="Fidelity (per column, pairwise, credit metrics), utility (train-synthetic-test-real against "
    "train-real-test-real on the real holdout) and sequence measures of the released book, with an overall score, "
    "recommendations and charts, as JSON and PDF.",
)
def validation_report(context: dg.AssetExecutionContext, raw_loan_tape: TapeSplit, anonymized_portfolio: Release):
    """Compare the released book with the real one and judge it against the tenant's thresholds."""
    from models.quality.validation import build_validation_report
    from models.quality.validation_pdf import render_validation_pdf

    tenant = context.partition_key
    schema, config = raw_loan_tape.schema, raw_loan_tape.tenant_config
    train, holdout = raw_loan_tape.train, raw_loan_tape.holdout
    synthetic = anonymized_portfolio.typed_loans(schema)
    real_history = synthetic_history = None
    if anonymized_portfolio.performance is not None:
        real_history, synthetic_history = raw_loan_tape.history_of(train), anonymized_portfolio.performance
        if real_history is None:
            synthetic_history = None
    with tenant_errors(tenant):
        report = build_validation_report(
            train, holdout, synthetic, schema,
            target=schema.target, positive=schema.target_positive or None,
            real_history=real_history, synthetic_history=synthetic_history,
            thresholds=config.validation, seed=0, tenant=tenant,
        )
    document = report.to_dict()
    document["release"] = {"anonymized_portfolio_sha256": anonymized_portfolio.content_sha256}
    internal = config.privacy.epsilon is not None
    if internal:  # under DP the comparison with real loans is the tenant's own review, never part of the release
        document["scope"] = {"internal": True, "note": INTERNAL_NOTE}
    pdf = render_validation_pdf(report)
    files = {ValidationResult.PDF: pdf, **{f"charts/{name}.png": png for name, png in report.charts.items()}}
    utility = document.get("utility", {})
    metadata = {
        "score": dg.MetadataValue.float(float(report.score)),
        "score_formula": report.score_formula,
        "passed": report.passed,
        "quality": document["quality"].get("score"),
        "sdmetrics_quality": document["quality"].get("sdmetrics_quality"),
        "utility_auc_ratio": utility.get("auc_ratio") if utility.get("status") == "evaluated"
        else utility.get("reason", "absent"),
        "failures": dg.MetadataValue.json(report.failures),
        "recommendations": markdown_list(report.recommendations),
        "report_pdf": dg.MetadataValue.path(ValidationResult.PDF),
    }
    if internal:
        metadata["scope"] = f"internal: {INTERNAL_NOTE}"
    for name in ("distributions", "roc_curves", "vintage_curves"):
        if name in report.charts:
            metadata[name] = png_markdown(report.charts[name], name.replace("_", " "))
    yield dg.Output(
        ValidationResult(validation_report=document, files=files),
        metadata={key: value for key, value in metadata.items() if value is not None},
    )
    yield dg.AssetCheckResult(
        check_name=FIDELITY_CHECK,
        passed=report.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "score": float(report.score),
            "failures": dg.MetadataValue.json(report.failures),
            "checks": metadata_table([c.to_dict() for c in report.checks],
                                     ["label", "value", "op", "threshold", "verdict", "detail", "name"]),
        },
        description="every threshold met" if report.passed else "; ".join(report.failures)[:2000],
    )
