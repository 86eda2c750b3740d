"""`raw_loan_tape` and `loan_features`: the upload read, checked, typed, split and featurised."""

import hashlib
from contextlib import contextmanager

import dagster as dg

from models.errors import CreditTwinError
from models.files import dumps
from models.tape.loan_tape import read_tape
from models.tape.tenant import TENANT_FILE, validate_tenant_id
from assets.common import tenant_check
from assets.policies import EXTERNAL_SERVICE_RETRY
from assets.partitions import tenants
from resources.dagster_resources import CreditTwinSettings, ExpectationsResource
from resources.ledger import PrivacyLedgerResource
from models.results import LoanFeatures, TapeSplit

# Fixed check names produced by resources.expectations.validate_loan_tape; blocking ones stop the graph.
BLOCKING_CHECKS = {
    "tape_not_empty": "The loans file has at least one row.",
    "loan_ids_unique": "Every loan id appears once.",
    "target_column_present": "The declared default-flag column exists.",
    "declared_columns_present": "Every column named in tenant.yaml exists.",
}
WARNING_CHECKS = {
    "null_rates": "No column is mostly empty.",
    "non_negative_amounts": "Incomes, amounts and balances are not negative.",
    "interest_rate_in_range": "Interest rates are within the plausible range.",
    "performance_period_gaps": "Each loan's monthly history has no missing periods.",
}
# Not a Great Expectations rule: what the reader had to decide on its own, for the lender to confirm.
READING_CHECK = "reading_notes"
READING_DESCRIPTION = ("The files were read without a choice to review: no encoding fallback, no ambiguous dates, no "
                       "column of the history left out.")

def _check_specs() -> list[dg.AssetCheckSpec]:
    specs = [tenant_check(name, asset="raw_loan_tape", description=d, blocking=True) for name, d in BLOCKING_CHECKS.items()]
    specs += [tenant_check(name, asset="raw_loan_tape", description=d) for name, d in WARNING_CHECKS.items()]
    specs.append(tenant_check(READING_CHECK, asset="raw_loan_tape", description=READING_DESCRIPTION))
    return specs


def _reading_check(tape) -> dg.AssetCheckResult:
    """The reader's own warnings (loans and history) as one warning check; passes when it had none."""
    notes = [str(w) for key in ("loans", "performance") for w in (tape.reports.get(key) or {}).get("warnings") or []]
    return dg.AssetCheckResult(
        check_name=READING_CHECK, passed=not notes, severity=dg.AssetCheckSeverity.WARN,
        metadata={"reasons": notes} if notes else {}, description="; ".join(notes)[:2000] if notes else None,
    )

def column_schema(schema) -> dg.TableSchema:
    """The tape's inferred schema as a Dagster table schema for the UI."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=c.type.value,
                description=", ".join(c.roles + (["declared"] if c.declared else [])) or None,
                constraints=dg.TableColumnConstraints(nullable=c.nullable),
            )
            for c in schema.columns
        ]
    )

def _ensure_budget(privacy_ledger: PrivacyLedgerResource, tenant: str, tape):
    """Register the tenant's privacy budget (tenant.yaml's, else the platform default) if it has none."""
    from models.privacy.accounting import resolve_budget

    n_records = tape.loans.height
    epsilon, delta = resolve_budget(
        tape.config.privacy.epsilon_budget, tape.config.privacy.delta, n_records, tenant=tenant
    )
    with privacy_ledger.ledger() as ledger:
        return ledger.ensure_budget(tenant, epsilon, delta, n_records=n_records)


@dg.asset(
    partitions_def=tenants,
    group_name="ingest",
    kinds={"polars", "parquet"},
    code_version="3",
    retry_policy=EXTERNAL_SERVICE_RETRY,  # the privacy ledger
    check_specs=_check_specs(),
    description="The tenant's uploaded loan tape (and performance history), typed, validated and split train/holdout.",
)
def raw_loan_tape(
    context: dg.AssetExecutionContext,
    settings: CreditTwinSettings,
    expectations: ExpectationsResource,
    privacy_ledger: PrivacyLedgerResource,
):
    """Read the upload, apply tenant.yaml, infer the schema, split by a hash of the borrower (privacy unit), run the
    expectation suite, register the privacy budget.

    Any refusal is also written as a note into the tenant's landing folder (`resources.landing`), so a lender who
    only sees the folder learns what to fix; a refused tape stores nothing and the last good one stays current.
    """
    tenant = validate_tenant_id(context.partition_key)
    zone = settings.landing()
    with _rejected_into(None, tenant, "upload"):  # no note: the folder itself is refused (missing, or a link)
        zone.require_folder(tenant)
    with _rejected_into(zone, tenant, "upload"):
        upload = zone.upload(tenant)
    with _rejected_into(zone, tenant, upload.loans.name):
        tape = read_tape(upload)
    outcomes = expectations.validate_tape(tape)
    # A check with nothing to look at (no history, no rate column, ...) was not measured: a warning with its
    # reason, never a pass, and never a refusal.
    checks = [
        dg.AssetCheckResult(
            check_name=o.check, passed=o.passed and not o.not_applicable, metadata=o.to_metadata(),
            severity=dg.AssetCheckSeverity.ERROR if o.blocking and not o.not_applicable else dg.AssetCheckSeverity.WARN,
            description=o.description if o.not_applicable else None,
        )
        for o in outcomes
    ]
    checks.append(_reading_check(tape))
    failed_blocking = [o for o in outcomes if o.blocking and not o.passed]
    if failed_blocking:
        # Record the failed checks (with their failing examples) before failing, so the UI shows them.
        yield from checks
        _refuse_unusable(zone, tenant, upload, tape, failed_blocking)
    with _rejected_into(zone, tenant, TENANT_FILE):
        if tape.config.privacy.epsilon is not None:
            # The DP copula's plan reads the header, tenant.yaml and the public unit count only, so it costs no
            # budget; a setting it refuses is refused here, before lstm_cascade charges its DP-SGD training.
            from models.twin.dp import plan_for_table

            plan_for_table(tape.split("train"), tape.config, tenant=tenant)
        budget = _ensure_budget(privacy_ledger, tenant, tape)
    zone.clear_rejections(tenant)
    split = TapeSplit(
        loans=tape.loans, performance=tape.performance, schema=tape.schema, tenant_config=tape.config,
        ingest={**tape.reports, "upload_sha256": tape.upload_sha256, "files": [p.name for p in upload.files]},
    )
    yield dg.Output(split, data_version=dg.DataVersion(tape.upload_sha256[:32]),
                    metadata=_tape_metadata(split, tape, upload, budget))
    yield from checks


@contextmanager
def _rejected_into(zone, tenant: str, file: str):
    """Turn a CreditTwin error into a failure naming the tenant and file, noted in the tenant's landing folder.

    Only into the tenant's own folder (`LandingZone` refuses links): a note written through a link would land
    in another tenant's. `zone` None: no note.
    """
    try:
        yield
    except CreditTwinError as error:
        error.with_context(tenant=tenant, file=file if file != "upload" else None)
        if zone is not None:
            zone.write_rejection(tenant, error.file or file, str(error))
        raise dg.Failure(
            description=str(error),
            metadata={"tenant": tenant, "file": error.file or file, "column": error.column or ""},
            allow_retries=error.transient,
        ) from error


def _refuse_unusable(zone, tenant: str, upload, tape, failed_blocking) -> None:
    """Fail on a tape a blocking expectation refused, with every reason, noted in the landing folder."""
    lines = [f"{o.check}: {o.description}" for o in failed_blocking]
    for key, names in tape.missing_columns.items():
        lines.append(f"tenant.yaml key '{key}' names missing column(s) {names}; correct the name or add the column")
    message = f"tenant '{tenant}', file '{upload.loans.name}': the tape is unusable: " + "; ".join(lines)
    zone.write_rejection(tenant, upload.loans.name, message)
    raise dg.Failure(
        description=message,
        metadata={"tenant": tenant, "failed_checks": [o.check for o in failed_blocking]},
        allow_retries=False,
    )


def _tape_metadata(split: TapeSplit, tape, upload, budget) -> dict:
    train_rows, default_rate = split.train.height, tape.default_rate
    return {
        "dagster/row_count": tape.loans.height,
        "dagster/column_schema": column_schema(tape.schema),
        "train_rows": train_rows,
        "holdout_rows": tape.loans.height - train_rows,
        "split_unit": tape.unit_column or f"each loan ({tape.schema.id_column or 'row number'})",
        "default_rate": dg.MetadataValue.float(default_rate) if default_rate is not None else "no target declared",
        "performance_rows": tape.performance.height if tape.performance is not None else 0,
        "input_sha256": tape.upload_sha256,
        "files": dg.MetadataValue.json({p.name: p.stat().st_size for p in upload.files}),
        "formula_cells_flagged": dg.MetadataValue.json(tape.reports["loans"].get("formula_cells", {})),
        "schema_sha256": hashlib.sha256(dumps(tape.schema.to_dict()).encode()).hexdigest(),
        "privacy_budget": dg.MetadataValue.json({"epsilon": budget.epsilon, "delta": budget.delta}),
    }


@dg.asset(
    partitions_def=tenants,
    group_name="ingest",
    kinds={"polars", "parquet"},
    code_version="2",
    description="Credit features derived from the tape's columns (by canonical name, alias, or name and type) and its "
    "performance history: one row per loan, keyed by its id (or its row number), with what was skipped and why.",
)
def loan_features(context: dg.AssetExecutionContext, raw_loan_tape: TapeSplit) -> dg.Output[LoanFeatures]:
    """Build DTI, LTV, utilisation, loan-to-income, payment-delay and stability features; record what was skipped and why."""
    from models.tape.features import build_features
    from models.tape.schema import SPLIT_COLUMN

    schema = raw_loan_tape.schema
    features, report = build_features(
        raw_loan_tape.loans, raw_loan_tape.performance, id_column=schema.id_column,
        ignore=tuple(c for c in (schema.target, SPLIT_COLUMN) if c),
    )
    if not report.built:
        context.log.warning(f"tenant '{context.partition_key}': {report.note}")
    return dg.Output(
        LoanFeatures(features=features, feature_report=report.to_dict()),
        metadata={
            "dagster/row_count": features.height,
            "note": report.note,
            "row_key": report.key,
            "features_built": dg.MetadataValue.json(report.built),
            "features_skipped": dg.MetadataValue.json(report.skipped),
            "inputs_by_name_and_type": dg.MetadataValue.json(report.hinted),
        },
    )
