"""`privacy_audit`: what an attacker could learn from the released portfolio, measured, against the tenant's policy."""

import dagster as dg

from assets.common import metadata_table, output_unless_blocked, tenant_check, tenant_errors
from assets.partitions import tenants
from assets.policies import EXTERNAL_SERVICE_RETRY
from models.results import AuditResult, CascadeModel, Release, TapeSplit, TwinModel
from resources.ledger import PrivacyLedgerResource

POLICY_CHECK = "privacy_policy"


def release_charges(privacy_ledger: PrivacyLedgerResource, tenant: str, *sources: TwinModel | CascadeModel) -> list:
    """The ledger charges that paid for a release: those named by the privacy labels of its sources."""
    ids = {
        doc.get("ledger_charge_id")
        for doc in (source.privacy or {} for source in sources)
        if doc.get("ledger_charge_id") is not None
    }
    if not ids:
        return []
    with privacy_ledger.ledger() as ledger:
        status = ledger.status(tenant)
    return [charge for charge in status.charges if charge.id in ids]


def _rules_table(rules: list[dict]) -> dg.TableMetadataValue:
    return metadata_table(
        [{"rule": rule["rule"], "value": rule["value"], "limit": rule["threshold"], "verdict": rule["verdict"].upper(),
          "criterion": rule["criterion"]} for rule in rules],
        descriptions={"value": "measured on the release", "limit": "the tenant's policy (audit: in tenant.yaml)"},
    )


@dg.asset(
    partitions_def=tenants,
    group_name="privacy",
    kinds={"python"},
    code_version="1",
    retry_policy=EXTERNAL_SERVICE_RETRY,  # the privacy ledger
    check_specs=[
        tenant_check(
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
    raw_loan_tape: TapeSplit,
    anonymized_portfolio: Release,
    fitted_copula: TwinModel,
    lstm_cascade: CascadeModel,
):
    """Audit the release; a failed rule fails the blocking check and stores nothing, so the last passed audit stays."""
    from models.privacy.release_audit import audit_release

    tenant = context.partition_key
    charges = release_charges(privacy_ledger, tenant, fitted_copula, lstm_cascade)
    with tenant_errors(tenant):
        result = audit_release(anonymized_portfolio, raw_loan_tape, charges=charges, tenant=tenant)
    rules = result.audit["rules"]
    failed = [rule["message"] for rule in rules if not rule["passed"]]
    warned = [rule["message"] for rule in rules if rule["verdict"] == "warn"]
    output = dg.Output(result, metadata=_metadata(result, failed, warned))
    check = dg.AssetCheckResult(
        check_name=POLICY_CHECK,
        passed=not failed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "failed_rules": dg.MetadataValue.json(failed),
            "warned_rules": dg.MetadataValue.json(warned),
            "rules": _rules_table(rules),
        },
        description=(
            (f"{len(failed)} rule(s) failed: " + "; ".join(failed)) if failed
            else "no rule failed" + (f"; {len(warned)} warning(s): " + "; ".join(warned) if warned else "")
        ),
    )
    # a failed audit stores nothing: the last passed audit stays current, and its certificate with it
    yield from output_unless_blocked(context, output, [check])


def _metadata(result: AuditResult, failed: list[str], warned: list[str]) -> dict:
    """The audit's figures for the UI: the verdict, each attack's headline figure, k and l, what was not measured."""
    report = result.audit["report"]
    mia, dcr, anonymeter, anonymity = report["mia"], report["dcr"], report["anonymeter"], report["anonymity"]
    metadata = {
        "passed": not failed,
        "failed_rules": dg.MetadataValue.json(failed),
        "warned_rules": dg.MetadataValue.json(warned),
        "policy": _rules_table(result.audit["rules"]),
        "dcr_share_closer_to_train": dcr.get("share_closer_to_train"),
        "exact_match_rate": dcr.get("exact_match_rate"),
        "mia_auc": mia.get("auc"),
        "mia_auc_ci": dg.MetadataValue.json(mia.get("auc_ci")),
        "mia_tpr_at_0.1pct_fpr": mia.get("tpr_at_fpr"),
        "inference": dg.MetadataValue.json(report["inference"]),
        "anonymeter": dg.MetadataValue.json(
            {k: v for k, v in anonymeter.items() if k in ("singling_out", "linkability", "inference", "skipped")}
        ),
        "dp_auc_bound": report["dp"]["auc_bound"] if report["dp"] else "not differentially private",
        "k_achieved": anonymity.get("k"),
        "l_achieved": anonymity.get("l"),
        "l_by_column": dg.MetadataValue.json(anonymity.get("l_by_column") or {}),
        "warnings": dg.MetadataValue.json(report["warnings"]),
        "sizes": dg.MetadataValue.json(report["sizes"]),
    }
    return {key: value for key, value in metadata.items() if value is not None}
