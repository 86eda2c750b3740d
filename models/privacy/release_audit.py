"""The privacy audit of one tenant's release, judged against the tenant's policy: what `privacy_audit` stores.

`audit_release` runs the attacks of `models.privacy.audit.run_audit` on the
released loans against the tape's train split (members) and holdout
(non-members), judges them with the tenant's `audit:` policy and its enforced
k and l, and records the DP spend that paid for the release. `policy_document`
is the policy as the stored audit records it: a certificate is refused when the
tenant's current policy is another one (a failed audit stores nothing, so the
current audit may be the last one that passed under an older policy).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from models.privacy.audit import AuditConfig, run_audit
from models.privacy.policy import AuditPolicy, evaluate_policy
from models.results import AuditResult, Release, TapeSplit
from models.tape.tenant import TenantConfig


def policy_of(config: TenantConfig) -> AuditPolicy:
    """The `AuditPolicy` of a tenant's `audit:` settings and its enforced k and l."""
    spec = config.audit
    return AuditPolicy(
        max_exact_match_rate=spec.max_exact_match_rate,
        max_dcr_share=spec.max_dcr_share,
        max_mia_auc=spec.max_mia_auc,
        max_anonymeter_risk=spec.max_anonymeter_risk,
        max_inference_risk=spec.max_inference_risk,
        k=config.privacy.k,
        l=config.privacy.l,
        require_measured=spec.require_measured,
    )


def policy_document(config: TenantConfig) -> dict[str, Any]:
    """The audit policy as the stored audit records it: tenant.yaml's `audit:` settings and the enforced k and l."""
    policy = policy_of(config)
    return {**config.audit.model_dump(mode="json"), "k": policy.k, "l": policy.l}


def audit_release(release: Release, tape: TapeSplit, *, charges: Sequence[Any], tenant: str) -> AuditResult:
    """Audit `release` against the tape's splits and judge it by the tenant's policy.

    `charges` are the ledger charges that paid for the release (each with a
    `mechanism` and `to_dict()`); their composed spend bounds what the attacks
    may achieve, and is recorded with them.

    Raises:
        InvalidDataError: as `run_audit` (too few rows to attack, unusable columns).
    """
    from models.privacy.accounting import compose

    config = tape.tenant_config
    spec = config.audit
    composition = compose([charge.mechanism for charge in charges]) if charges else None
    report = run_audit(
        release.loans, tape.train, tape.holdout, tape.schema,
        config=AuditConfig(
            sample_size=spec.sample_size, n_attacks=spec.n_attacks, seed=spec.seed,
            run_anonymeter=spec.run_anonymeter, anonymeter_sample_size=spec.anonymeter_sample_size,
        ),
        sensitive_columns=list(config.sensitive_columns),
        dp_spent=(composition.epsilon, composition.delta) if composition is not None else None,
        tenant=tenant,
        generalisations=release.anonymization.get("generalisations"),
        # k is measured on the columns the anonymizer enforced it on, declared or picked by name
        quasi_identifiers=release.anonymization.get("quasi_identifiers"),
    )
    rules = [rule.to_dict() for rule in evaluate_policy(report, policy_of(config))]
    return AuditResult(audit={
        "report": report.to_dict(),
        "rules": rules,
        "passed": all(rule["passed"] for rule in rules),
        "policy": policy_document(config),
        "dp": {
            "spent": composition.to_dict() if composition is not None else None,
            "charges": [charge.to_dict() for charge in charges],
        },
        "release": {
            "anonymized_portfolio_sha256": release.content_sha256,
            "anonymized_portfolio_version": release.manifest.get("version"),
        },
    })
