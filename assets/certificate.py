"""`privacy_certificate`: the signed statement of what was released, from what, at what privacy cost, and that it passed."""

import dagster as dg

from assets.common import markdown_list, tenant_errors, upstream_versions
from assets.partitions import tenants
from resources.dagster_resources import CreditTwinSettings
from resources.settings import code_version
from models.results import AuditResult, Release, SyntheticBook, TapeSplit, TwinModel

# The assets a release is made from, recorded with their data versions in the certificate.
SOURCES = ("raw_loan_tape", "fitted_copula", "lstm_cascade", "synthetic_portfolio", "anonymized_portfolio", "privacy_audit")


@dg.asset(
    partitions_def=tenants,
    group_name="privacy",
    kinds={"pdf", "json"},
    code_version="1",
    description="The release (Parquet and CSV) with its privacy certificate: a JSON document signed with Ed25519 and "
    "its PDF twin. Issued only when the privacy audit passed; otherwise the previous certificate stays current.",
)
def privacy_certificate(
    context: dg.AssetExecutionContext,
    settings: CreditTwinSettings,
    raw_loan_tape: TapeSplit,
    fitted_copula: TwinModel,
    synthetic_portfolio: SyntheticBook,
    anonymized_portfolio: Release,
    privacy_audit: AuditResult,
):
    """Sign and store the certificate of the current release; refuse when its audit failed or is stale.

    `models.reports.certify.certify_release` makes the gates, the released files and the signed certificate.
    """
    from datetime import datetime, timezone

    from models.privacy.release_audit import policy_document
    from models.reports.certify import certify_release

    tenant = context.partition_key
    versions = upstream_versions(context, SOURCES, tenant)
    with tenant_errors(tenant):
        certificate, issued = certify_release(
            settings.signing_key(tenant), tenant=tenant, tape=raw_loan_tape, twin=fitted_copula,
            book=synthetic_portfolio, release=anonymized_portfolio, audit=privacy_audit,
            current_policy=policy_document(raw_loan_tape.tenant_config),
            source={
                "data_versions": {name: v["data_version"] for name, v in versions.items()},
                "content_sha256": {name: v["content_sha256"] for name, v in versions.items()},
                "materialized_by_run": {name: v["run_id"] for name, v in versions.items()},
                "code_version": code_version(),
                "asset_code_version": "1",
                "dagster_run_id": context.run.run_id,
            },
            issued_at=datetime.now(timezone.utc),
        )
    document, anonymization = issued.document, anonymized_portfolio.anonymization
    spent = privacy_audit.audit.get("dp", {}).get("spent")
    return dg.Output(
        certificate,
        metadata={
            "certificate_id": issued.certificate_id,
            "payload_sha256": issued.payload_sha256,
            "signing_key_id": document["signature"]["key_id"],
            "development_key": bool(document["signature"].get("development_key", False)),
            "valid_until": document["valid_until"],
            "released_files": dg.MetadataValue.json(certificate.summary["released_files"]),
            "epsilon_spent": spent["epsilon"] if spent else "not differentially private",
            "k_achieved": anonymization.get("k_achieved"),
            "explanation": markdown_list(document.get("explanation", [])),
        },
    )
