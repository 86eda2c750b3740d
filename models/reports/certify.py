"""Certify a release: the rendered files, the gates a certificate must pass, and the signed certificate as a result.

`certify_release` is what `privacy_certificate` does, without Dagster: it
refuses a release whose audit failed, was made under another audit policy than
the tenant's current one, or judged another release than the current one; it
renders the released tables in the tape's own vocabulary; and it issues the
signed certificate over exactly those bytes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.errors import CertificateError
from models.reports.certificate import IssuedCertificate, SigningKey, issue_certificate
from models.results import AuditResult, Certificate, Release, SyntheticBook, TapeSplit, TwinModel


def release_files(release: Release, tape: TapeSplit) -> dict[str, bytes]:
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

    from models.sequences.histories import render_history
    from models.tape.formulas import formula_safe_csv
    from models.tape.vocabulary import fixed_point_text, render_release

    history_vocabulary = tape.ingest.get("performance", {}).get("vocabulary")
    files: dict[str, bytes] = {}
    for name, frame in (("loans", release.loans), ("performance", release.performance)):
        if frame is None:
            continue
        if name == "loans":
            frame = render_release(frame, tape.schema)
        elif history_vocabulary:
            config = tape.tenant_config
            frame = render_history(frame, history_vocabulary, seed=0, private=config.privacy.epsilon is not None,
                                   as_of=config.performance.as_of)
        parquet = io.BytesIO()
        frame.write_parquet(parquet, compression="zstd", statistics=True)
        # the CSV in the file's own delimiter and decimal mark, as the lender's spreadsheet reads it
        written = tape.ingest.get(name) or {}
        decimal = written.get("decimal") or "."
        text = fixed_point_text(frame, tape.schema, decimal=decimal) if name == "loans" else frame
        files[f"{name}.parquet"], files[f"{name}.csv"] = parquet.getvalue(), formula_safe_csv(
            text, delimiter=written.get("delimiter") or ",", decimal=decimal)
    legend = generalisation_legend(release)
    if legend is not None:
        files[LEGEND] = legend
    return files


LEGEND = "generalisations.json"


def generalisation_legend(release: Release) -> bytes | None:
    """What each generalised quasi-identifier label of the release stands for, as canonical JSON; None when the
    release generalised nothing.

    A group of more than 12 categories is released under a short name ("14 values #3f2a9c"): without this file a
    risk team reading the CSV cannot tell which categories it holds. Per column: ``kind`` ("range" or "group"),
    and for a group each released label with its members; for a range the released labels with their bounds.
    Everything in it is read off the released table's own labels and the anonymizer's cuts on the synthetic
    portfolio, so it adds nothing about a real borrower.
    """
    from models.files import canonical_json

    generalisations = (getattr(release, "anonymization", None) or {}).get("generalisations") or {}
    if not generalisations:
        return None
    columns = {}
    for name, spec in generalisations.items():
        entry: dict[str, Any] = {"kind": spec.get("kind")}
        if spec.get("kind") == "group":
            used = set((spec.get("labels") or {}).keys())
            entry["groups"] = {label: list(members) for label, members in (spec.get("groups") or {}).items()
                               if not used or label in used}
        else:
            entry.update({key: value for key, value in spec.items() if key not in ("labels", "kind")})
        entry["released_labels"] = sorted((spec.get("labels") or {}).keys())
        columns[name] = entry
    return canonical_json({
        "about": "the quasi-identifier labels of loans.csv and loans.parquet: each group label with the categories "
                 "it stands for, and each range label",
        "columns": columns,
    }, where=LEGEND)


_PERIOD_HINTS = ("orig", "issue", "open", "start", "disburs", "book")


def tape_scope(tape: TapeSplit) -> dict[str, Any]:
    """What the release was made from, for the certificate's executive summary.

    The uploaded files (tenant.yaml aside), the loans that trained the twin
    and those held out to audit it, and the period the loans span: the first
    and last month of the tape's origination date (the first date column
    named like one, else the first date column), or None without a date
    column. Months, not days: the exact first and last dates would describe
    single borrowers. Under differential privacy the period is withheld: the
    data's own extremes are never published there (`models.twin.dp`), and the
    number of loans is public by the neighbour definition.
    """
    import polars as pl

    from models.tape.schema import TENANT_FILE, ColumnType

    loans = tape.book
    dates = [c.name for c in tape.schema.columns
             if c.type == ColumnType.DATETIME and c.name in loans.columns and loans.schema[c.name].is_temporal()]
    named = [name for name in dates if any(hint in name.lower() for hint in _PERIOD_HINTS)]
    period: dict[str, Any] | None = None
    if dates and tape.tenant_config.privacy.epsilon is not None:
        period = {"column": (named or dates)[0], "withheld": "under differential privacy the tape's own first and "
                  "last dates are not published"}
    elif dates:
        column = (named or dates)[0]
        months = loans.select(pl.col(column).dt.strftime("%Y-%m").drop_nulls().unique().sort()).to_series()
        if months.len():
            period = {"column": column, "first": months[0], "last": months[-1]}
    return {
        "input_files": [name for name in tape.ingest.get("files", []) if name != TENANT_FILE],
        "train_rows": tape.train.height,
        "holdout_rows": tape.holdout.height,
        "period": period,
    }


def check_certifiable(audit: AuditResult, release: Release, current_policy: dict[str, Any]) -> None:
    """Refuse a certificate for a release its audit does not vouch for.

    A failed audit stores nothing, so the current audit may be the last one that
    passed: under a policy tenant.yaml no longer sets, or on an earlier release.

    Raises:
        CertificateError: the audit failed, ran under another policy, or judged another release.
    """
    if not audit.passed:
        raise CertificateError(
            f"no certificate issued: the privacy audit failed ({'; '.join(audit.failed_rules) or 'no rules recorded'}). "
            "The previous certificate, if any, stays current.",
            fix="address the failed rules (see privacy_audit's metadata) and re-run the graph.",
        )
    if audit.audit.get("policy") != current_policy:
        raise CertificateError(
            "no certificate issued: the last passed privacy audit was made under another audit policy than "
            "tenant.yaml's current one; under the current policy the privacy audit failed or has not run yet. The "
            "previous certificate, if any, stays current.",
            fix="materialize privacy_audit (see its failed rules), then privacy_certificate.",
        )
    if audit.audited_release != release.content_sha256:
        raise CertificateError(
            f"no certificate issued: the privacy audit was run on release {audit.audited_release}, but the current "
            f"anonymized portfolio is {release.content_sha256}.",
            fix="materialize privacy_audit, then privacy_certificate.",
        )


def certify_release(
    key: SigningKey, *, tenant: str, tape: TapeSplit, twin: TwinModel, book: SyntheticBook, release: Release,
    audit: AuditResult, current_policy: dict[str, Any], source: dict[str, Any], issued_at: datetime,
) -> tuple[Certificate, IssuedCertificate]:
    """Check the release may be certified, render its files and issue the signed certificate over them.

    `source` is the provenance the caller knows (data versions, runs, code
    version); the input upload's SHA-256 and the scope of the executive
    summary (`tape_scope`) are added from the tape.

    Raises:
        CertificateError: a gate of `check_certifiable`, or a rule of `build_certificate`.
    """
    import hashlib

    check_certifiable(audit, release, current_policy)
    config, report = tape.tenant_config, audit.audit
    files = release_files(release, tape)
    tables = {"loans": release.loans, "performance": release.performance}
    released = [
        {"name": name, "rows": tables[name.rsplit(".", 1)[0]].height if name.rsplit(".", 1)[0] in tables else None,
         "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
        for name, payload in files.items()
    ]
    anonymization = release.anonymization
    dp = report.get("dp", {})
    spent = dp.get("spent")
    issued = issue_certificate(
        key,
        tenant=tenant,
        display_name=config.display_name,
        released_files=released,
        source={"input_sha256": tape.upload_sha256, **source},
        generator={
            "engine": twin.engine_name,
            "privacy": twin.privacy.get("label"),
            "sampling": book.sampling,
            "columns_modelled": len(twin.summary.get("columns_modelled", [])),
            "segmentation": twin.summary.get("segmentation"),
            "anonymization": {
                "method": "Mondrian k-anonymity with distinct l-diversity",
                "information_loss": anonymization.get("information_loss"),
                "class_count": anonymization.get("class_count"),
            },
        },
        privacy={"dp": None if spent is None else {
            "epsilon": spent["epsilon"], "delta": spent["delta"], "accountant": spent["accountant"],
            "ledger_entries": dp.get("charges", []),
        }},
        anonymity={
            "k_required": config.privacy.k,
            "k_achieved": anonymization.get("k_achieved"),
            "l_required": config.privacy.l,
            "l_achieved": anonymization.get("l_achieved"),
            "l_by_column": anonymization.get("l_by_column", {}),
            "suppression": anonymization.get("suppression_rate"),
            "quasi_identifiers": anonymization.get("quasi_identifiers", []),
        },
        audit=report["report"],
        rules=report["rules"],
        policy=report.get("policy"),
        scope=tape_scope(tape),
        issued_at=issued_at,
        validity_days=config.certificate.validity_days,
    )
    document = issued.document
    stored = {f"{Certificate.RELEASE_DIR}/{name}": payload for name, payload in files.items()}
    stored[Certificate.JSON], stored[Certificate.PDF] = issued.json_bytes, issued.pdf_bytes
    certificate = Certificate(files=stored, summary={
        "certificate_id": issued.certificate_id,
        "payload_sha256": issued.payload_sha256,
        "issued_at": document["issued_at"],
        "valid_until": document["valid_until"],
        "released_files": released,
        "development_key": document["signature"].get("development_key", False),
    })
    return certificate, issued
