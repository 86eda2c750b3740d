"""`fitted_copula` and `synthetic_portfolio`: the digital twin of a tenant's loans and its samples."""

import tempfile
from pathlib import Path
from typing import Optional

import dagster as dg
from pydantic import Field

from assets.common import metadata_table, not_measured, output_unless_blocked, png_markdown, tenant_check, tenant_errors
from assets.partitions import tenants
from assets.policies import EXTERNAL_SERVICE_RETRY, TRAINING_OP_TAGS, TRAINING_POOL
from models.errors import InvalidDataError
from models.results import NON_DP_LABEL, CascadeModel, SyntheticBook, TapeSplit, TwinModel
from models.tape.schema import ColumnType, TableSchema
from models.tape.vocabulary import target_indicator
from resources.dagster_resources import CreditTwinSettings
from resources.ledger import PrivacyLedgerResource
from resources.paid import charged_release

DP_ENGINE = "credittwin-dp"


def _plan_mechanism(plan):
    """The DP copula plan's composed spend as one ledger charge (its releases are all pure-epsilon)."""
    from models.privacy.accounting import MechanismSpec, compose

    composition = plan.composition()
    return MechanismSpec(
        kind="pure",
        epsilon=composition.epsilon,
        delta=composition.delta,
        # Each release and its epsilon (the private bounds of undeclared columns included) reaches the ledger.
        description=f"DP copula, composed by {composition.accountant}: "
        + "; ".join(f"{m.description} (epsilon {compose([m]).epsilon:.4g})" for m in plan.mechanisms),
    )


COLUMNS_CHECK = "columns_released"


def _twin_model(twin, engine: str, tenant: str, charge=None) -> TwinModel:
    """A fitted engine as the stored result: its saved files, a correlation heatmap, its summary and privacy label."""
    from models.reports.plots import correlation_heatmap_png

    with tempfile.TemporaryDirectory() as tmp:
        twin.save(Path(tmp) / TwinModel.MODEL_DIR)
        files = {str(p.relative_to(tmp)): p.read_bytes() for p in Path(tmp).rglob("*") if p.is_file()}
    summary = twin.summary()
    files["plots/correlation.png"] = correlation_heatmap_png(twin.correlation, twin.latent_columns,
                                                             f"{tenant}: latent correlation")
    privacy = summary.get("differential_privacy") or {"label": NON_DP_LABEL}
    if charge is not None:
        privacy = {**privacy, "ledger_charge_id": charge.id, "idempotency_hash": charge.idempotency_hash}
    return TwinModel(summary=summary, engine={"name": engine}, privacy=privacy, files=files)


@dg.asset(
    partitions_def=tenants,
    group_name="twin",
    kinds={"numpy", "json"},
    code_version="2",
    retry_policy=EXTERNAL_SERVICE_RETRY,  # the privacy ledger
    pool=TRAINING_POOL,
    op_tags=TRAINING_OP_TAGS,  # the Celery queue of the training workers
    description="A Gaussian-copula digital twin of the loan table's train split (marginals, correlation, category maps); "
    "differentially private when the tenant sets privacy.epsilon.",
)
def fitted_copula(
    context: dg.AssetExecutionContext,
    settings: CreditTwinSettings,
    privacy_ledger: PrivacyLedgerResource,
    raw_loan_tape: TapeSplit,
) -> dg.Output[TwinModel]:
    """Fit the tenant's engine on the train split and save it as JSON/NumPy with a correlation heatmap.

    Under `privacy.epsilon` the plan comes from public inputs only (the header,
    tenant.yaml, the public unit count: `models.twin.dp.plan_for_table`, the
    path the falsification tests take too), its spend is charged before anything
    reads the data, and a re-execution under the same charge re-releases the
    stored model instead of drawing new noise for free (`resources.paid`).
    """
    from models.twin.engine import make_engine

    tenant, config, train = context.partition_key, raw_loan_tape.tenant_config, raw_loan_tape.train
    charge, re_released, inferred = None, False, []
    with tenant_errors(tenant, raw_loan_tape.upload_file("loans")):
        if config.privacy.epsilon is not None:
            from models.twin.dp import fit_dp_twin, plan_for_table

            plan = plan_for_table(train, config, tenant=tenant)
            model, charge, re_released = charged_release(
                privacy_ledger, settings.storage(), tenant=tenant, run_id=context.run.run_id, result_type=TwinModel,
                mechanism=_plan_mechanism(plan), input_version=raw_loan_tape.upload_sha256, config=plan.to_dict(),
                seed=None, compute=lambda paid: _twin_model(fit_dp_twin(train, plan, tenant=tenant), DP_ENGINE, tenant, paid),
            )
        else:
            from models.twin.identities import inferred_inequalities

            declared = [c.model_dump() for c in config.constraints]
            # the amounts' orderings that hold in every train loan (funded <= requested): read from the data, so
            # never under DP (above), and named in the metadata
            inferred = inferred_inequalities(train, raw_loan_tape.schema, declared)
            twin = make_engine(config.engine, k=config.privacy.k, constraints=declared + inferred).fit(
                train, raw_loan_tape.schema)
            model = _twin_model(twin, config.engine, tenant)
    if re_released:
        context.log.info("this DP fit was already paid for (ledger charge %s); re-releasing its model byte for byte",
                         charge.id)
    summary = model.summary
    return dg.Output(
        model,
        metadata={
            "engine": model.engine_name,
            "privacy": model.privacy["label"],
            "re_released": re_released,
            "epsilon_charged": dg.MetadataValue.float(charge.epsilon) if charge is not None else "none (non-DP twin)",
            # Under DP the exact row count is not shown (the plan's public unit count is, in its config).
            "train_rows": train.height if charge is None else "not shown (differentially private twin)",
            "columns_modelled": dg.MetadataValue.json(summary["columns_modelled"]),
            "columns_left_out": dg.MetadataValue.json(summary["left_out"]),
            # Released as they are (one value, or null, in every row), not modelled and not refused.
            "constant_columns": dg.MetadataValue.json(summary.get("constant_columns", {})),
            "dependent_columns": dg.MetadataValue.json(summary.get("dependent_columns", [])),
            "identifiers_regenerated": dg.MetadataValue.json(summary.get("identifiers_regenerated", [])),
            "category_merges": dg.MetadataValue.json(summary.get("category_merges", {})),
            "constraints": dg.MetadataValue.json(summary.get("constraints", [])),
            "constraints_inferred": dg.MetadataValue.json(
                [f"{c['low']} <= {c['high']} (holds in every train loan)" for c in inferred]
                if charge is None else "none: under DP nothing is read from the data outside the plan"),
            "correlation_heatmap": png_markdown(model.files["plots/correlation.png"], "latent correlation"),
        },
    )


class SyntheticPortfolioConfig(dg.Config):
    """How many synthetic loans to sample, and under which conditions."""

    rows: Optional[int] = Field(
        default=None, description="Rows to sample; default: the tenant's synthetic_rows, else the train split's size."
    )
    seed: int = Field(default=0, description="Random seed; the same seed and model give the same portfolio.")
    target_default_rate: Optional[float] = Field(
        default=None, description="Requested share of defaulted loans (0-1); default: the train split's rate."
    )
    conditions: dict[str, str] = Field(
        default_factory=dict,
        description="Fixed values for categorical or boolean columns, e.g. {'product': 'mortgage'}.",
    )


def typed_conditions(conditions: dict[str, str], schema: TableSchema) -> dict[str, object]:
    """Run-config condition values (text) converted to each column's type."""
    typed: dict[str, object] = {}
    for column, text in conditions.items():
        spec = schema[column] if column in schema else None
        if spec is not None and spec.type is ColumnType.BOOLEAN and text.strip().lower() in {"true", "false", "1", "0"}:
            typed[column] = text.strip().lower() in {"true", "1"}
        elif spec is not None and spec.type is ColumnType.INTEGER and text.strip().lstrip("-").isdigit():
            typed[column] = int(text)
        else:
            typed[column] = text
    return typed


def comparable_reference(train, schema: TableSchema, conditions: dict):
    """The real rows a conditioned sample should resemble.

    Fixed categories filter the real rows; a requested default rate re-weights
    them (defaulted and performing loans resampled, seeded, in the requested
    shares), so the comparison holds every column, the target included, to the
    real distribution given each outcome.
    """
    import polars as pl

    reference = train
    for column, value in conditions.get("fixed", {}).items():
        reference = reference.filter(pl.col(column) == value)
    rate = conditions.get("target_rate")
    if rate is None or not schema.target or reference.height == 0:
        return reference
    positive = target_indicator(reference.get_column(schema.target), schema.target_positive)
    defaulted, performing = reference.filter(positive), reference.filter(~positive)
    n_default = round(rate * reference.height)
    if defaulted.height == 0 or performing.height == 0:
        return reference
    return pl.concat(
        [
            defaulted.sample(n_default, with_replacement=True, seed=0),
            performing.sample(reference.height - n_default, with_replacement=True, seed=1),
        ]
    )


@dg.asset(
    partitions_def=tenants,
    group_name="twin",
    kinds={"polars", "parquet"},
    code_version="1",
    check_specs=[
        tenant_check(
            "synthetic_fidelity",
            asset="synthetic_portfolio",
            blocking=True,
            description="Per-column KS / total-variation similarity and correlation difference against the train split.",
        ),
        # Not blocking: the loans table can be released and used while its histories are judged;
        # a failure is shown as an error on the asset.
        tenant_check(
            COLUMNS_CHECK,
            asset="synthetic_portfolio",
            description="Every column of the tape is in the synthetic portfolio, or is named here with the reason "
            "it is not (free text is never modelled).",
        ),
        tenant_check(
            "sequence_fidelity",
            asset="synthetic_portfolio",
            description="Synthetic histories: 12-month cumulative default within 10% (relative) of the real book's, "
            "and every well-populated transition row within 0.02 on average.",
        ),
    ],
    description="A synthetic loan table sampled from the twin: same columns, types, marginals and dependence; no real row.",
)
def synthetic_portfolio(
    context: dg.AssetExecutionContext,
    config: SyntheticPortfolioConfig,
    raw_loan_tape: TapeSplit,
    fitted_copula: TwinModel,
    lstm_cascade: CascadeModel,
):
    """Sample the loans (optionally at a requested default rate or with fixed categories), then their monthly
    histories from the cascade, and compare both with the train split."""
    from models.quality.metrics import compare_tables
    from models.sequences.histories import compare_sequences

    schema, tenant_config, train = raw_loan_tape.schema, raw_loan_tape.tenant_config, raw_loan_tape.train
    twin = fitted_copula.load()
    # Under DP the default size is the plan's public unit count, never the exact number of train loans.
    plan = getattr(twin, "plan", None)
    rows = config.rows or tenant_config.synthetic_rows or (plan.n_units if plan is not None else train.height)
    conditions: dict[str, object] = {}
    if config.target_default_rate is not None:
        conditions["target_rate"] = config.target_default_rate
    if config.conditions:
        conditions["fixed"] = typed_conditions(config.conditions, schema)
    with tenant_errors(context.partition_key):
        synthetic = twin.sample(rows, seed=config.seed, conditions=conditions or None)
    # A conditioned portfolio is compared with the real loans that meet the same conditions.
    reference = comparable_reference(train, schema, conditions)
    # each limit no tighter than sampling noise: a column by the rows where it is present, as its statistic is
    fidelity = compare_tables(reference, synthetic, schema, noise_allowance=True)
    cascade = lstm_cascade.load()
    performance = sequence_result = None
    given_flag: dict[str, object] = {"applied": False, "reason": "no cascade: the tenant has no history"}
    cutoff: dict[str, object] = {"capped": False, "reason": "no cascade: the tenant has no history"}
    if cascade is not None:
        cutoff = cascade.observation_window.describe(synthetic)
        train_history = raw_loan_tape.history_of(train)
        flags, given_flag = _flags_to_follow(raw_loan_tape, train, train_history, synthetic, plan)
        performance = _histories(context.partition_key, cascade, synthetic, config.seed, fitted_copula, flags, given_flag)
        if "target_rate" not in conditions:
            reference_history = train_history if reference is train else raw_loan_tape.history_of(reference)
            sequence_result = compare_sequences(reference_history, performance, reference, synthetic)
    achieved = (
        float(target_indicator(synthetic.get_column(schema.target), schema.target_positive).mean())
        if schema.target and schema.target in synthetic.columns
        else None
    )
    # Under DP the comparison with the real train split is an internal gate, like the validation report: its
    # figures are functions of the real loans, not covered by epsilon, and never part of the release.
    scope = {"scope": "internal: compared with the real train split; not covered by epsilon, not released"} if plan else {}
    book = SyntheticBook(
        loans=synthetic, performance=performance, privacy=fitted_copula.privacy, fidelity=fidelity.to_dict(),
        sequence_fidelity=sequence_result.to_dict() if sequence_result is not None
        else {"not_applicable": "no performance history"},
        sampling={"rows": rows, "seed": config.seed, "conditions": conditions,
                  "model_sha256": fitted_copula.content_sha256},
    )
    output = dg.Output(
        book,
        metadata={
            "dagster/row_count": synthetic.height,
            "seed": config.seed,
            "default_rate": dg.MetadataValue.float(achieved) if achieved is not None else "no target declared",
            "requested_default_rate": config.target_default_rate if config.target_default_rate is not None else "as in train",
            "conditions": dg.MetadataValue.json(conditions),
            "model_sha256": fitted_copula.content_sha256 or "",
            "privacy": fitted_copula.privacy["label"],
            "mean_column_similarity": book.fidelity["mean_similarity"],
            "performance_rows": performance.height if performance is not None else 0,
            "histories_given_default_flag": dg.MetadataValue.json(given_flag),
            # whether the histories stop at the tape's cut-off (as the real extract stopped the real ones), and which
            "history_cutoff": dg.MetadataValue.json(cutoff),
            **scope,
        },
    )
    checks = [_fidelity_check(fidelity, scope), _columns_check(train, synthetic, fitted_copula.summary),
              _sequence_check(sequence_result, cascade is None)]
    # a failed fidelity check stores nothing: the last good portfolio stays current for anonymized_portfolio
    yield from output_unless_blocked(context, output, checks, fix=_dp_fix(plan, context.partition_key))


def _flags_to_follow(raw_loan_tape: TapeSplit, train, train_history, synthetic, plan) -> tuple[object, dict[str, object]]:
    """The synthetic loans' default flags for their histories to agree with, when the tenant's flag is the event
    "the history reaches default", with the reason either way: as tenant.yaml's ``target.from_history`` declares,
    else as measured on the train split (`default_flag_follows_history`).

    Under DP nothing is decided from the real loans outside the accounting: without the declaration the histories
    are drawn without the flag.
    """
    from models.sequences.histories import default_flag_follows_history

    schema = raw_loan_tape.schema
    target = raw_loan_tape.tenant_config.target
    declared = target.from_history if target is not None else None
    if not schema.target or schema.target not in train.columns or schema.target not in synthetic.columns:
        return None, {"applied": False, "reason": "no default flag declared (target) in the loans"}
    if declared is not None:
        decision = {"applied": declared, "reason": f"tenant.yaml declares target.from_history: {str(declared).lower()}"}
    elif plan is not None:
        decision = {"applied": False, "reason": "under DP: whether the flag follows the history is a statistic of "
                                                "the real loans, not charged; the histories are drawn without it "
                                                "(declare target.from_history: true in tenant.yaml if it does)"}
    else:
        measured = default_flag_follows_history(
            train, train_history,
            target_indicator(train.get_column(schema.target), schema.target_positive), schema.id_column or "loan_id",
        )
        decision = {"applied": measured["follows"], **measured}
    if not decision["applied"]:
        return None, decision
    return target_indicator(synthetic.get_column(schema.target), schema.target_positive).to_numpy(), decision


def _histories(tenant: str, cascade, synthetic, seed: int, fitted_copula: TwinModel, flags=None, given_flag=None):
    """The cascade's monthly histories of the synthetic loans (each drawn given its default flag when `flags` is
    given; what that took goes into `given_flag`); a column the DP twin left out is named with its fix."""
    left_out = fitted_copula.summary.get("left_out", {})
    try:
        if flags is None:
            return cascade.sample(synthetic, seed=seed)
        drawn: dict[str, object] = {}
        performance = cascade.sample(synthetic, seed=seed, defaults=flags, report=drawn)
        if given_flag is not None:
            given_flag["draws"] = drawn
        return performance
    except InvalidDataError as error:
        if error.column not in left_out:
            raise
        raise dg.Failure(
            description=f"tenant '{tenant}': the twin left out '{error.column}' ({left_out[error.column]}), which the "
            "cascade needs to generate histories. Fix: under privacy.epsilon, declare the column's public domain in "
            "tenant.yaml (privacy.domains.<column>: {categories: [...]} or {low, high, bins}).",
        ) from error


def _columns_check(train, synthetic, summary: dict) -> dg.AssetCheckResult:
    """A warning naming each of the tape's columns missing from the synthetic book, with the twin's reason.

    A column the twin leaves out (free text such as comments, a column DP could
    not release) is otherwise missing from the release without a word.
    """
    import polars as pl

    from models.twin.copula import OTHER

    reasons = summary.get("left_out") or {}
    missing = [name for name in train.columns if not name.startswith("_") and name not in synthetic.columns]
    lines = [f"{name}: {reasons.get(name, 'not modelled by the twin')}" for name in missing]
    # A column whose every released value is the pooled label carries nothing of the tape (a timestamp or an
    # amount the reader took for text, a label column of one-off values): in the release by name only.
    pooled = [name for name in train.columns if name in synthetic.columns and synthetic.schema[name] == pl.String
              and synthetic.get_column(name).drop_nulls().len() > 0
              and (synthetic.get_column(name).drop_nulls() == OTHER).all()]
    lines += [f"{name}: every released value is '{OTHER}' (each of its values is held by too few loans to release; "
              "if it holds dates or amounts, declare its type under column_types in tenant.yaml)" for name in pooled]
    return dg.AssetCheckResult(
        check_name=COLUMNS_CHECK, passed=not lines, severity=dg.AssetCheckSeverity.WARN,
        metadata={"reasons": lines} if lines else {},
        description=(f"{len(lines)} of the tape's columns are not in the release, or only as '{OTHER}': "
                     + "; ".join(lines))[:2000] if lines else None,
    )


def _fidelity_check(fidelity, scope: dict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name="synthetic_fidelity",
        passed=fidelity.passed,
        metadata={
            "correlation_diff": fidelity.correlation_diff,
            "worst_columns": metadata_table(
                [{"column": c.name, "metric": c.metric, "similarity": c.similarity} for c in fidelity.worst(5)]
            ),
            "failures": dg.MetadataValue.json(fidelity.failures()),
            "thresholds_applied": dg.MetadataValue.json(fidelity.thresholds),
            **scope,
        },
    )


def _sequence_check(sequence_result, no_history: bool) -> dg.AssetCheckResult:
    if sequence_result is None:
        return not_measured("sequence_fidelity", "the tenant has no performance history" if no_history else
                            "a default rate was requested, so the synthetic book's default curve differs from the real "
                            "one by design")
    unjudged = None
    if sequence_result.real_cdr == 0 and sequence_result.synthetic_cdr == 0 and sequence_result.passed:
        # 0 against 0 cannot fail: with no real default, the default rate was not measured, only the transitions
        unjudged = (f"the real histories reach no default within {sequence_result.horizon} months, so the default "
                    "rate cannot be compared (a history with days past due only has no default state: give it a "
                    "status column, or set risk.default_states in tenant.yaml to what counts as default); the "
                    "transition rows were compared and pass")
    return dg.AssetCheckResult(
        check_name="sequence_fidelity",
        passed=bool(sequence_result.passed) and unjudged is None,
        severity=dg.AssetCheckSeverity.WARN if unjudged else dg.AssetCheckSeverity.ERROR,
        description=unjudged,
        metadata={
            **({"not_evaluated": unjudged} if unjudged else {}),
            "cdr12_real": sequence_result.real_cdr,
            "cdr12_synthetic": sequence_result.synthetic_cdr,
            "cdr12_relative_diff": sequence_result.cdr12_relative_diff,
            "transition_distance": dg.MetadataValue.json(sequence_result.to_dict()["transition_distance"]),
            "failures": dg.MetadataValue.json(sequence_result.failures),
            # 10% and 0.02, widened to the 95% sampling-noise band at these book sizes
            "thresholds_applied": dg.MetadataValue.json(sequence_result.to_dict()["effective_thresholds"]),
        },
    )


def _dp_fix(plan, tenant: str) -> str | None:
    """Under DP, the likelier cause of a failed fidelity check and what to do about it."""
    if plan is None:
        return None
    released = [c for c in plan.columns if c.kind != "identifier"]
    return (f"the twin is differentially private (privacy.epsilon {plan.epsilon:g}), and its budget is spread over "
            f"{len(released)} columns and {plan.n_pairs} pairs of {plan.n_units} borrowers, so the noise can outweigh "
            f"them. Declare public domains in tenant.yaml (`credittwin domains {tenant}` prints a block to edit; "
            "declared columns cost no budget for their structure), raise privacy.epsilon, or upload more rows, then "
            "materialize again.")
