"""`privacy_audit`: what an attacker could learn from the released portfolio, measured, against the tenant's policy."""

import dagster as dg

from assets.common import (
    markdown_table,
    output_unless_blocked,
    split_of,
    tape_config,
    tape_schema,
    tenant_errors,
    train_split,
)
from assets.policies import EXTERNAL_SERVICE_RETRY
from assets.partitions import tenants
from resources.ledger import PrivacyLedgerResource
from resources.storage import Artifact

POLICY_CHECK = "privacy_policy"


def release_charges(privacy_ledger: PrivacyLedgerResource, tenant: str, *artifacts: Artifact) -> list:
    """The ledger charges that paid for a release: those named by the `privacy` documents of its sources."""
    ids = {
        doc.get("ledger_charge_id")
        for doc in (a.document("privacy", {}) or {} for a in artifacts)
        if doc.get("ledger_charge_id") is not None
    }
    if not ids:
        return []
    with privacy_ledger.ledger() as ledger:
        status = ledger.status(tenant)
    return [charge for charge in status.charges if charge.id in ids]


def dp_spent_of(charges: list):
    """The composed (epsilon, delta) of `charges` (dp-accounting RDP), or None when nothing was charged."""
    if not charges:
        return None
    from models.privacy.accounting import compose

    return compose([charge.mechanism for charge in charges])


def audit_policy(tenant_config):
    """The `AuditPolicy` of a tenant's `audit:` settings and its enforced k and l."""
    from models.privacy.audit import AuditPolicy

    spec = tenant_config.audit
    return AuditPolicy(
        max_exact_match_rate=spec.max_exact_match_rate,
        max_dcr_share=spec.max_dcr_share,
        max_mia_auc=spec.max_mia_auc,
        max_anonymeter_risk=spec.max_anonymeter_risk,
        max_inference_risk=spec.max_inference_risk,
        k=tenant_config.privacy.k,
        l=tenant_config.privacy.l,
        require_measured=spec.require_measured,
    )


def policy_document(tenant_config) -> dict:
    """The audit policy as the stored audit records it: tenant.yaml's `audit:` settings and the enforced k and l.

    `privacy_certificate` compares it with the tenant's current one: since a
    failed audit stores nothing, the current audit may be the last one that
    passed, under a policy the tenant has since changed.
    """
    policy = audit_policy(tenant_config)
    return {**tenant_config.audit.model_dump(mode="json"), "k": policy.k, "l": policy.l}


def _rules_table(rules: list[dict]) -> dg.MetadataValue:
    return markdown_table(
        ["rule", "value", "limit", "verdict", "criterion"],
        [[rule["rule"], rule["value"], rule["threshold"], rule["verdict"].upper(), rule["criterion"]] for rule in rules],
    )


@dg.asset(
    partitions_def=tenants,
    group_name="privacy",
    kinds={"python"},
    code_version="1",
    retry_policy=EXTERNAL_SERVICE_RETRY,  # the privacy ledger
    check_specs=[
        dg.AssetCheckSpec(
            POLICY_CHECK,
            asset="privacy_audit",
            blocking=True,
            description="The tenant's release policy: no exact copies, DCR share, membership-inference AUC, "
            "attribute inference on each secret and anonymeter's attacks (members against holdout controls: a rule "
            "fails on evidence of a leak above its margin), k and l (and, under DP, the empirical AUC within the DP "
            "bound). A failed rule blocks the certificate; a warning (not measured, not applicable, inconclusive) "
            "does not, and is shown on the certificate.",
        )
    ],
    description="Distance to closest record, membership inference (density-ratio attack), attribute inference, "
    "anonymeter's three attacks (when installed) "
    "and, under DP, the attacker-AUC bound of the epsilon spent, measured on the released portfolio against the "
    "train split (members) and the holdout (non-members).",
)
def privacy_audit(
    context: dg.AssetExecutionContext,
    privacy_ledger: PrivacyLedgerResource,
    raw_loan_tape: Artifact,
    anonymized_portfolio: Artifact,
    fitted_copula: Artifact,
    lstm_cascade: Artifact,
):
    """Audit the release; a failed rule fails the blocking check and stores nothing, so the last passed audit stays."""
    from models.privacy.audit import AuditConfig, evaluate_policy, run_audit

    tenant = context.partition_key
    schema, config = tape_schema(raw_loan_tape), tape_config(raw_loan_tape)
    spec = config.audit
    charges = release_charges(privacy_ledger, tenant, fitted_copula, lstm_cascade)
    composition = dp_spent_of(charges)
    generalisations = anonymized_portfolio.document("anonymization", {}).get("generalisations")
    with tenant_errors(tenant):
        report = run_audit(
            anonymized_portfolio.table("loans"),
            train_split(raw_loan_tape),
            split_of(raw_loan_tape, "holdout"),
            schema,
            config=AuditConfig(
                sample_size=spec.sample_size,
                n_attacks=spec.n_attacks,
                seed=spec.seed,
                run_anonymeter=spec.run_anonymeter,
                anonymeter_sample_size=spec.anonymeter_sample_size,
            ),
            sensitive_columns=list(config.sensitive_columns),
            dp_spent=(composition.epsilon, composition.delta) if composition is not None else None,
            tenant=tenant,
            generalisations=generalisations,
        )
    policy = audit_policy(config)
    rules = [rule.to_dict() for rule in evaluate_policy(report, policy)]
    failed = [rule for rule in rules if not rule["passed"]]
    warned = [rule for rule in rules if rule["verdict"] == "warn"]
    document = {
        "report": report.to_dict(),
        "rules": rules,
        "passed": not failed,
        "policy": policy_document(config),
        "dp": {
            "spent": composition.to_dict() if composition is not None else None,
            "charges": [charge.to_dict() for charge in charges],
        },
        "release": {
            "anonymized_portfolio_sha256": anonymized_portfolio.manifest.get("content_sha256"),
            "anonymized_portfolio_version": anonymized_portfolio.manifest.get("version"),
        },
    }
    mia, dcr, anonymeter = report.mia, report.dcr, report.anonymeter
    metadata = {
        "passed": not failed,
        "failed_rules": dg.MetadataValue.json([rule["message"] for rule in failed]),
        "warned_rules": dg.MetadataValue.json([rule["message"] for rule in warned]),
        "policy": _rules_table(rules),
        "dcr_share_closer_to_train": dcr.get("share_closer_to_train"),
        "exact_match_rate": dcr.get("exact_match_rate"),
        "mia_auc": mia.get("auc"),
        "mia_auc_ci": dg.MetadataValue.json(mia.get("auc_ci")),
        "mia_tpr_at_0.1pct_fpr": mia.get("tpr_at_fpr"),
        "inference": dg.MetadataValue.json(report.inference),
        "anonymeter": dg.MetadataValue.json(
            {k: v for k, v in anonymeter.items() if k in ("singling_out", "linkability", "inference", "skipped")}
        ),
        "dp_auc_bound": report.dp["auc_bound"] if report.dp else "not differentially private",
        "k_achieved": report.anonymity.get("k"),
        "l_achieved": report.anonymity.get("l"),
        "l_by_column": dg.MetadataValue.json(report.anonymity.get("l_by_column") or {}),
        "warnings": dg.MetadataValue.json(report.warnings),
        "sizes": dg.MetadataValue.json(report.sizes),
    }
    output = dg.Output(Artifact(documents={"audit": document}), metadata={k: v for k, v in metadata.items() if v is not None})
    check = dg.AssetCheckResult(
        check_name=POLICY_CHECK,
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "failed_rules": dg.MetadataValue.json([rule["message"] for rule in failed]),
            "warned_rules": dg.MetadataValue.json([rule["message"] for rule in warned]),
            "rules": _rules_table(rules),
        },
        description=(
            (f"{len(failed)} rule(s) failed: " + "; ".join(rule["message"] for rule in failed)) if failed
            else "no rule failed" + (f"; {len(warned)} warning(s): " + "; ".join(r["message"] for r in warned) if warned else "")
        ),
    )
    # a failed audit stores nothing: the last passed audit stays current, and its certificate with it
    yield from output_unless_blocked(context, output, [check])
