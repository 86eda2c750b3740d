"""`anonymized_portfolio`: the synthetic portfolio generalized to k-anonymity and l-diversity before release."""

import dagster as dg

from assets.common import tenant_check, tenant_errors
from assets.partitions import tenants
from models.results import Release, SyntheticBook, TapeSplit, history_of


@dg.asset(
    partitions_def=tenants,
    group_name="privacy",
    kinds={"polars", "parquet"},
    code_version="2",
    check_specs=[
        tenant_check(
            "k_anonymity",
            asset="anonymized_portfolio",
            blocking=True,
            description="An independent group-by re-verifies k-anonymity and distinct l-diversity of the released "
            "table, l on the target and on each of tenant.yaml's sensitive_columns.",
        )
    ],
    description="The synthetic portfolio generalized (Mondrian ranges and category groups) and, where unavoidable, "
    "suppressed so every quasi-identifier combination is shared by k loans with l distinct values of the default flag "
    "and of each sensitive column.",
)
def anonymized_portfolio(
    context: dg.AssetExecutionContext, raw_loan_tape: TapeSplit, synthetic_portfolio: SyntheticBook
):
    """Generalize the released portfolio to the tenant's k and l; never release a table that fails the re-check."""
    from models.privacy.anonymize import AnonymizationPolicy, anonymize, verify_k_anonymity

    tenant = context.partition_key
    schema, config = raw_loan_tape.schema, raw_loan_tape.tenant_config
    policy = AnonymizationPolicy(
        k=config.privacy.k,
        l=config.privacy.l,
        quasi_identifiers=list(config.quasi_identifiers),
        max_suppression=config.privacy.max_suppression,
    )
    with tenant_errors(tenant):
        result = anonymize(synthetic_portfolio.loans, schema, policy, tenant=tenant)
    # l is re-checked on every sensitive column it was enforced on; without one it does not apply.
    scope = result.l_scope
    verification = verify_k_anonymity(result.table, result.quasi_identifiers, list(scope.columns), policy.k,
                                      scope.enforced_l)
    not_measured = scope.not_applicable
    check = dg.AssetCheckResult(
        check_name="k_anonymity",
        # An l the policy asks for but nothing could measure is a warning with its reason, never a pass.
        passed=verification.passed and not_measured is None,
        severity=dg.AssetCheckSeverity.ERROR if not verification.passed else dg.AssetCheckSeverity.WARN,
        description=not_measured and f"k-anonymity holds; l-diversity (l={policy.l}) {not_measured}.",
        metadata={
            "k_required": policy.k,
            "l_required": policy.l,
            "k_min": verification.k_min,
            "l_min": verification.l_min if verification.l_min is not None else (not_measured or "l not required"),
            "l_by_column": dg.MetadataValue.json(verification.l_by_column),
            "violating_classes": verification.violating_classes,
            "examples": dg.MetadataValue.json(verification.to_dict()["examples"]),
        },
    )
    if not verification.passed:
        # Record why, and store nothing: a table below the policy is never released.
        yield check
        raise dg.Failure(
            description=f"tenant '{tenant}': the anonymized portfolio fails the independent k/l re-check "
            f"(k_min={verification.k_min}, l_min={verification.l_min}); nothing was released.",
        )
    performance = synthetic_portfolio.performance
    release = Release(
        loans=result.table,
        # the histories of the loans released (suppressed loans take theirs with them)
        performance=history_of(result.table, performance, schema.id_column) if performance is not None else None,
        anonymization=result.to_dict(), verification=verification.to_dict(), privacy=synthetic_portfolio.privacy,
    )
    yield dg.Output(
        release,
        metadata={
            "dagster/row_count": result.table.height,
            "privacy": release.privacy_label,
            "k_achieved": result.k_achieved,
            "l_achieved": result.l_achieved if result.l_achieved is not None else result.l_not_measured or "l not required",
            "l_by_column": dg.MetadataValue.json(result.l_by_column),
            "sensitive_not_released": dg.MetadataValue.json(result.sensitive_not_released),
            "quasi_identifiers": dg.MetadataValue.json(result.quasi_identifiers),
            "rows_suppressed": result.rows_suppressed,
            "suppression_rate": dg.MetadataValue.float(result.suppression_rate),
            "information_loss": dg.MetadataValue.float(result.information_loss),
            "equivalence_class_sizes": dg.MetadataValue.json(result.class_sizes),
        },
    )
    yield check
