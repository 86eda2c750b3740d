"""`privacy_certificate`: the signed statement of what was released, from what, at what privacy cost, and that it passed."""

import dagster as dg

from assets.common import code_version, markdown_list, tape_config, tape_schema, upstream_versions
from assets.partitions import tenants
from resources.dagster_resources import CreditTwinSettings
from resources.storage import Artifact

RELEASE_DIR = "release"
CERTIFICATE_JSON = "certificate.json"
CERTIFICATE_PDF = "certificate.pdf"
# The assets a release is made from, recorded with their data versions in the certificate.
SOURCES = ("raw_loan_tape", "fitted_copula", "lstm_cascade", "synthetic_portfolio", "anonymized_portfolio", "privacy_audit")


def release_files(anonymized_portfolio: Artifact, raw_loan_tape: Artifact) -> dict[str, bytes]:
    """The released tables as Parquet and CSV bytes, named as they are certified and exported.

    Both tables are spelled in the tape's own vocabulary, so the release compares
    cleanly with the lender's files: the loans by the tape's schema (a Yes/No
    flag comes back Yes/No, integers as integers, dates in their own format,
    numbers with the file's decimals), the histories by what ingest recorded of
    the performance file (its column names, its status codes, its period form).

    The CSV, meant to be opened in a spreadsheet, has formula-like text cells
    neutralised (`formula_safe_csv`); the Parquet keeps every value exact. Both
    are neutralised here, before the certificate hashes them, so that the bytes
    `credittwin verify` re-hashes are the ones exported.
    """
    import io

    from models.tape.ingest import formula_safe_csv
    from models.sequences.histories import render_history
    from models.tape.vocabulary import render_release

    history_vocabulary = raw_loan_tape.document("ingest", {}).get("performance", {}).get("vocabulary")
    files: dict[str, bytes] = {}
    for name in ("loans", "performance"):
        if name not in anonymized_portfolio.tables:
            continue
        frame = anonymized_portfolio.table(name)
        if name == "loans":
            frame = render_release(frame, tape_schema(raw_loan_tape))
        elif history_vocabulary:
            frame = render_history(frame, history_vocabulary, seed=0)
        parquet = io.BytesIO()
        frame.write_parquet(parquet, compression="zstd", statistics=True)
        files[f"{name}.parquet"], files[f"{name}.csv"] = parquet.getvalue(), formula_safe_csv(frame)
    return files


def _rows_of(name: str, anonymized_portfolio: Artifact) -> int:
    return anonymized_portfolio.table(name.rsplit(".", 1)[0]).height


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
    raw_loan_tape: Artifact,
    fitted_copula: Artifact,
    synthetic_portfolio: Artifact,
    anonymized_portfolio: Artifact,
    privacy_audit: Artifact,
):
    """Sign and store the certificate of the current release; refuse when its audit failed or is stale."""
    import hashlib
    from datetime import datetime, timezone

    from assets.audit import policy_document
    from models.reports.certificate import CertificateError, issue_certificate

    tenant = context.partition_key
    config = tape_config(raw_loan_tape)
    audit = privacy_audit.document("audit")
    if not audit.get("passed"):
        failed = [rule["message"] for rule in audit.get("rules", []) if not rule.get("passed")]
        raise dg.Failure(
            description=f"tenant '{tenant}': no certificate issued: the privacy audit failed "
            f"({'; '.join(failed) or 'no rules recorded'}). The previous certificate, if any, stays current. "
            "Fix: address the failed rules (see privacy_audit's metadata) and re-run the graph.",
            metadata={"failed_rules": dg.MetadataValue.json(failed)},
        )
    if audit.get("policy") != policy_document(config):
        # a failed audit stores nothing, so the current one may have passed under a policy tenant.yaml no longer sets
        raise dg.Failure(
            description=f"tenant '{tenant}': no certificate issued: the last passed privacy audit was made under "
            "another audit policy than tenant.yaml's current one; under the current policy the privacy audit failed "
            "or has not run yet. The previous certificate, if any, stays current. Fix: materialize privacy_audit "
            "(see its failed rules), then privacy_certificate.",
        )
    audited = audit.get("release", {}).get("anonymized_portfolio_sha256")
    current = anonymized_portfolio.manifest.get("content_sha256")
    if audited != current:
        raise dg.Failure(
            description=f"tenant '{tenant}': no certificate issued: the privacy audit was run on release "
            f"{audited}, but the current anonymized portfolio is {current}. Fix: materialize privacy_audit, then "
            "privacy_certificate.",
        )
    files = release_files(anonymized_portfolio, raw_loan_tape)
    released = [
        {
            "name": name,
            "rows": _rows_of(name, anonymized_portfolio),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "bytes": len(payload),
        }
        for name, payload in files.items()
    ]
    anonymization = anonymized_portfolio.document("anonymization", {})
    dp = audit.get("dp", {})
    spent = dp.get("spent")
    versions = upstream_versions(context, SOURCES, tenant)
    try:
        issued = issue_certificate(
            settings.signing_key(tenant),
            tenant=tenant,
            display_name=config.display_name,
            released_files=released,
            source={
                "input_sha256": raw_loan_tape.document("ingest", {}).get("upload_sha256")
                or raw_loan_tape.manifest.get("upload_sha256"),
                "data_versions": {name: v["data_version"] for name, v in versions.items()},
                "content_sha256": {name: v["content_sha256"] for name, v in versions.items()},
                "materialized_by_run": {name: v["run_id"] for name, v in versions.items()},
                "code_version": code_version(),
                "asset_code_version": "1",
                "dagster_run_id": context.run.run_id,
            },
            generator={
                "engine": fitted_copula.document("engine", {}).get("name", "credittwin"),
                "privacy": fitted_copula.document("privacy", {}).get("label"),
                "sampling": synthetic_portfolio.document("sampling", {}),
                "columns_modelled": len(fitted_copula.document("summary", {}).get("columns_modelled", [])),
                "segmentation": fitted_copula.document("summary", {}).get("segmentation"),
                "anonymization": {
                    "method": "Mondrian k-anonymity with distinct l-diversity",
                    "information_loss": anonymization.get("information_loss"),
                    "class_count": anonymization.get("class_count"),
                },
            },
            privacy={
                "dp": None
                if spent is None
                else {
                    "epsilon": spent["epsilon"],
                    "delta": spent["delta"],
                    "accountant": spent["accountant"],
                    "ledger_entries": dp.get("charges", []),
                }
            },
            anonymity={
                "k_required": config.privacy.k,
                "k_achieved": anonymization.get("k_achieved"),
                "l_required": config.privacy.l,
                "l_achieved": anonymization.get("l_achieved"),
                "l_by_column": anonymization.get("l_by_column", {}),
                "suppression": anonymization.get("suppression_rate"),
                "quasi_identifiers": anonymization.get("quasi_identifiers", []),
            },
            audit=audit["report"],
            rules=audit["rules"],
            policy=audit.get("policy"),
            issued_at=datetime.now(timezone.utc),
            validity_days=config.certificate.validity_days,
        )
    except CertificateError as error:
        error.with_context(tenant=tenant)
        raise dg.Failure(description=str(error)) from error
    document = issued.document
    stored = {f"{RELEASE_DIR}/{name}": payload for name, payload in files.items()}
    stored[CERTIFICATE_JSON] = issued.json_bytes
    stored[CERTIFICATE_PDF] = issued.pdf_bytes
    signature = document["signature"]
    return dg.Output(
        Artifact(files=stored, documents={"summary": {
            "certificate_id": issued.certificate_id,
            "payload_sha256": issued.payload_sha256,
            "issued_at": document["issued_at"],
            "valid_until": document["valid_until"],
            "released_files": released,
            "development_key": signature.get("development_key", False),
        }}),
        metadata={
            "certificate_id": issued.certificate_id,
            "payload_sha256": issued.payload_sha256,
            "signing_key_id": signature["key_id"],
            "development_key": bool(signature.get("development_key", False)),
            "valid_until": document["valid_until"],
            "released_files": dg.MetadataValue.json(released),
            "epsilon_spent": spent["epsilon"] if spent else "not differentially private",
            "k_achieved": anonymization.get("k_achieved"),
            "explanation": markdown_list(document.get("explanation", [])),
        },
    )
