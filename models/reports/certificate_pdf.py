"""The privacy certificate as a PDF, rendered from the signed JSON alone (`render_certificate_pdf`).

The PDF is laid out the way a model-risk or data-protection reviewer reads a
certificate:

1. **Executive summary** (page 1): tenant, scope (files, rows, period), the
   verdict, the privacy guarantee in one sentence and the strongest attack's
   result; the development-key banner above it when one signed it.
2. **Method and references**: each method the figures come from, with its
   citation.
3. **Rules and figures**: every audit rule as rule / value / limit / verdict
   (pass green, fail red, a warning unshaded), what each rule found, what the
   figures mean (the signed explanation) and the audit's caveats.
4. **Governance**: issuer, code version, signing key, payload SHA-256, how to
   verify, and blank sign-off lines for the reviewer.
5. **Appendix: technical provenance**: released files, sources, generator,
   privacy ledger, k and l, every audit figure and the policy, in tables with
   plain-language labels, and the signature.

Nested members are read in canonical (sorted) key order, so the PDF depends
only on the certificate's content, not on how its JSON was ordered:
`models.reports.certificate.verify_certificate` compares a PDF's text with the
text of one rendered afresh. Certificates issued before this layout carry a
PDF in the earlier one (`render_certificate_pdf_v1`), which verification still
accepts when it says what the JSON says.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from models.errors import CertificateError, JsonValueError
from models.files import canonical_json, json_value
from models.privacy.accounting import NEIGHBOURS
from models.reports.certificate_text import (
    DEVELOPMENT_BANNER,
    KEY_SETTING,
    REFERENCES,
    VERIFY_COMMAND,
    label,
    method_sections,
    ordered,
    plain_value,
    rule_label,
    rule_limit,
    summarize,
    verdict_of,
)
from models.reports.pdf import PdfReport, fmt

_SUMMARY_LABELS = (("scope", "Scope"), ("period", "Period"), ("verdict", "Verdict"),
                   ("guarantee", "Privacy guarantee"), ("strongest_attack", "Strongest attack"))
# the appendix's labels are long ("5th percentile of the distance to the closest train record")
APPENDIX_LABEL_CM = 7.0
_ATTACKS = {"density_ratio": "density ratio", "distance": "distance", "singling_out": "singling out",
            "linkability": "linkability"}
_AUDIT_SECTIONS = (("dcr", "Distance to closest record"), ("mia", "Membership inference"),
                   ("inference", "Attribute inference"), ("anonymeter", "Anonymeter attacks"),
                   ("dp", "Differential-privacy bound"), ("anonymity", "Measured k and l"), ("sizes", "Sample sizes"))


def _canonical(signed: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return json.loads(canonical_json(json_value(signed, "certificate")))
    except JsonValueError as error:
        raise CertificateError(error.reason, fix=error.fix) from None


def _development(signed: Mapping[str, Any]) -> bool:
    signature = signed.get("signature") or {}
    return bool(signature.get("development_key") or (signed.get("signing_key") or {}).get("development"))


def render_certificate_pdf(signed: Mapping[str, Any]) -> bytes:
    """The certificate as a PDF (`models.reports.pdf.PdfReport`), reproducibly from the signed JSON.

    The executive summary is the document's signed ``summary`` (computed from
    its figures for a certificate issued before it had one); every other
    sentence and figure is the document's own, printed with plain labels.
    """
    signed = _canonical(signed)
    signature = signed.get("signature") or {}
    report = PdfReport(
        "Privacy certificate",
        subtitle=f"{signed.get('display_name')} (tenant {signed.get('tenant')})",
        footer=f"CreditTwin privacy certificate {signed.get('certificate_id')}",
    )
    if _development(signed):
        report.heading(DEVELOPMENT_BANNER)
        report.paragraph("This certificate was signed with a development key generated on first use. It shows what "
                         "a production certificate would say, but it certifies nothing: production certificates are "
                         f"signed with the key configured by {KEY_SETTING}.")
    _executive_summary(report, signed)
    report.page_break()
    _method(report, signed)
    _rules(report, signed)
    _governance(report, signed, signature)
    report.page_break()
    _appendix(report, signed, signature)
    return report.build()


def _executive_summary(report: PdfReport, signed: Mapping[str, Any]) -> None:
    summary = signed.get("summary") or summarize(signed)
    rows = [("Tenant", f"{signed.get('display_name')} (tenant id {signed.get('tenant')})"),
            ("Certificate", f"{signed.get('certificate_id')}, issued {signed.get('issued_at')}, valid until "
                            f"{signed.get('valid_until')} (UTC)")]
    rows += [(title, summary[key]) for key, title in _SUMMARY_LABELS if summary.get(key)]
    clean = not any(verdict_of(r) != "pass" for r in signed.get("rules") or [])
    report.heading("Executive summary")
    # the verdict row is green only when every rule passed: a warning is never shown as a pass
    report.key_values(rows, header=None, label_cm=3.6,
                      highlight=[True if title == "Verdict" and clean else None for title, _ in rows])
    report.paragraph("The signed JSON file is the certificate; this PDF is its readable copy, rendered from it. The "
                     "sections that follow give the method and its references, every rule with its figure, the "
                     "governance details and sign-off, and in an appendix the full technical provenance.",
                     style="small")


def _method(report: PdfReport, signed: Mapping[str, Any]) -> None:
    report.heading("Method and references")
    sections = method_sections(signed)
    numbers: dict[str, int] = {}
    for _, _, refs in sections:
        for ref in refs:
            numbers.setdefault(ref, len(numbers) + 1)
    for title, text, refs in sections:
        report.heading(title, level=2)
        report.paragraph(text + " [" + ", ".join(str(n) for n in sorted(numbers[r] for r in refs)) + "]")
    report.heading("References", level=2)
    for ref, n in numbers.items():
        report.paragraph(f"[{n}] {REFERENCES[ref]}", style="small")


def _rules(report: PdfReport, signed: Mapping[str, Any]) -> None:
    rules = signed.get("rules") or []
    report.heading("Rules and figures")
    report.paragraph(f"Audit verdict: {str(signed.get('verdict')).upper()}. Each rule is the tenant's policy applied "
                     "to one audit figure; a warning is a rule that could not be shown to pass and is never shown as "
                     "a pass.")
    report.table(
        ["rule", "value", "limit", "verdict"],
        [[rule_label(r.get("rule")), r.get("value"), rule_limit(r), verdict_of(r).upper()] for r in rules],
        # a warning is shaded neither as a pass nor as a failure
        highlight=[{"pass": True, "fail": False}.get(verdict_of(r)) for r in rules],
    )
    report.heading("What each rule found", level=2)
    report.bullets(f"{rule_label(r.get('rule'))} ({r.get('rule')}): {r.get('message')}"
                   + (f". Rule: {r.get('criterion')}." if r.get("criterion") else "") for r in rules)
    report.heading("What these figures mean", level=2)
    report.bullets(str(sentence) for sentence in signed.get("explanation") or [])
    warnings = (signed.get("audit") or {}).get("warnings")
    if warnings:
        report.heading("Caveats recorded by the audit", level=2)
        report.bullets(str(w)[:1].upper() + str(w)[1:] for w in warnings)


def _governance(report: PdfReport, signed: Mapping[str, Any], signature: Mapping[str, Any]) -> None:
    source = signed.get("source") or {}
    development = _development(signed)
    kind = "a development key: not valid for production use" if development else "the deployment's signing key"
    report.heading("Governance")
    report.key_values([
        ("Issuer", f"the CreditTwin deployment holding signing key {signature.get('key_id')} ({kind})"),
        ("Software", f"CreditTwin, code version {source.get('code_version')}"),
        ("Signing key id", signature.get("key_id")),
        ("Signature", f"{signature.get('algorithm')} over the {signature.get('canonicalization')} canonical JSON of "
                      "the certificate without its signature"),
        ("Payload SHA-256", signature.get("payload_sha256")),
        ("Issued / valid until", f"{signed.get('issued_at')} / {signed.get('valid_until')} (UTC, "
                                 f"{signed.get('validity_days')} days)"),
        ("How to verify", VERIFY_COMMAND),
    ], header=None, label_cm=3.6)
    report.heading("Reviewer sign-off", level=2)
    report.paragraph("To be completed by the reviewer who accepts this certificate for use.", style="small")
    report.signature_lines(["Name", "Role", "Date", "Decision", "Signature"])


def _appendix(report: PdfReport, signed: Mapping[str, Any], signature: Mapping[str, Any]) -> None:
    report.heading("Appendix: technical provenance")
    report.heading("A.1 Released files", level=2)
    report.table(["file", "rows", "bytes", "SHA-256"],
                 [[f.get("name"), f.get("rows"), f.get("bytes"), f.get("sha256")]
                  for f in signed.get("released_files") or []])

    source = signed.get("source") or {}
    report.heading("A.2 Sources", level=2)
    per_asset = {key: value for key, value in source.items() if isinstance(value, Mapping)}
    _labelled(report, [(label("source", key), plain_value(value, "source")) for key, value in ordered("source", source)
                       if key not in per_asset])
    assets = sorted({asset for value in per_asset.values() for asset in value})
    if assets:
        keys = [key for key, _ in ordered("source", per_asset)]
        report.table(["upstream asset"] + [label("source", key) for key in keys],
                     [[asset] + [per_asset[key].get(asset) for key in keys] for asset in assets])

    report.heading("A.3 Generator", level=2)
    generator = dict(signed.get("generator") or {})
    segmentation = generator.pop("segmentation", None)
    _labelled(report, [(label("generator", key), plain_value(value, "generator"))
                       for key, value in ordered("generator", generator)])
    if isinstance(segmentation, Mapping):
        segments = segmentation.get("segments") or []
        rest = {k: v for k, v in segmentation.items() if k not in ("segments", "column", "pooled_rows")}
        report.paragraph(f"The generator is fitted per segment of {segmentation.get('column')}"
                         + (f"; {fmt(segmentation['pooled_rows'])} rows pooled into other segments"
                            if "pooled_rows" in segmentation else "")
                         + "".join(f"; {label('generator', k)}: {plain_value(v, 'generator')}"
                                   for k, v in ordered("generator", rest)) + ".")
        if segments:
            first = ("value", "rows", "category_merges")
            columns = sorted({key for s in segments for key in s},
                             key=lambda key: (first.index(key) if key in first else len(first), key))
            report.table([label("generator", key) for key in columns],
                         [[plain_value(s.get(key), "generator") for key in columns] for s in segments])
    elif segmentation is not None:
        report.paragraph(f"Segmentation: {plain_value(segmentation, 'generator')}.")

    dp = (signed.get("privacy") or {}).get("dp")
    report.heading("A.4 Differential privacy and the privacy ledger", level=2)
    if dp:
        _labelled(report, [
            ("epsilon spent", dp.get("epsilon")),
            ("delta spent", dp.get("delta")),
            ("accountant", dp.get("accountant")),
            ("neighbouring tapes", NEIGHBOURS),
            ("largest membership AUC it allows", dp.get("auc_bound")),
        ] + [(label("dp", k), plain_value(v, "dp")) for k, v in ordered("dp", dp)
             if k not in ("epsilon", "delta", "accountant", "auc_bound", "ledger_entries")])
        entries = dp.get("ledger_entries") or []
        if entries:
            report.table(
                ["entry", "asset", "run", "mechanism", "epsilon", "delta", "accountant", "recorded at"],
                [[e.get("id"), e.get("asset"), e.get("run_id"), (e.get("mechanism") or {}).get("kind"),
                  e.get("epsilon"), e.get("delta"), e.get("accountant"), e.get("created_at")] for e in entries],
            )
        else:
            report.paragraph("No ledger entry was recorded for this release.")
    else:
        report.paragraph("Not differentially private: no privacy budget was spent on this release.")

    report.heading("A.5 k-anonymity and l-diversity", level=2)
    _labelled(report, [(label("anonymity", k), plain_value(v, "anonymity"))
                       for k, v in ordered("anonymity", signed.get("anonymity") or {})])

    audit = signed.get("audit") or {}
    report.heading("A.6 Audit figures", level=2)
    for section, title in _AUDIT_SECTIONS:
        figures = audit.get(section)
        if figures:
            report.heading(title, level=3)
            _audit_section(report, section, figures)

    policy = signed.get("policy") or {}
    report.heading("A.7 The policy applied", level=2)
    if policy:
        _labelled(report, [(label("policy", k), plain_value(v, "policy")) for k, v in ordered("policy", policy)])
    else:
        report.paragraph("No tenant audit settings were recorded; the platform defaults applied.")

    report.heading("A.8 Signature", level=2)
    _labelled(report, _signature_rows(signature))
    _signature_values(report, signature)


def _signature_rows(signature: dict) -> list[tuple[str, Any]]:
    """The signature's scheme and key, as labelled rows (both layouts print them)."""
    return [
        ("algorithm", signature.get("algorithm")),
        ("canonical form", signature.get("canonicalization")),
        ("key id", signature.get("key_id")),
        ("development key", signature.get("development_key")),
    ]


def _signature_values(report: PdfReport, signature: dict) -> None:
    """The payload hash, the signature and the public key in full, one captioned line each (both layouts)."""
    report.paragraph("Payload SHA-256 (canonical JSON of the certificate without its signature):")
    report.paragraph(str(signature.get("payload_sha256")), style="mono")
    report.paragraph("Ed25519 signature (base64):")
    report.paragraph(str(signature.get("value")), style="mono")
    report.paragraph("Public key (base64, raw 32 bytes):")
    report.paragraph(str(signature.get("public_key")), style="mono")


def _labelled(report: PdfReport, rows: list[tuple[str, Any]]) -> None:
    """Rows of plain-language labels and values, as every table of the appendix prints them."""
    report.key_values(rows, header=None, label_cm=APPENDIX_LABEL_CM)


def _audit_section(report: PdfReport, section: str, figures: Mapping[str, Any]) -> None:
    """One audit section: its scalar figures as labelled rows, its per-attack figures as a table."""
    if section == "mia":
        attacks = figures.get("attacks") or {}
        _labelled(report, [(label("mia", k), plain_value(v)) for k, v in ordered("mia", figures)
                           if k not in ("attacks", "warnings")])
        if attacks:
            report.table(["attack", "AUC", "95% interval", "TPR", "95% interval", "at FPR", "FPR measurable"],
                         [[_ATTACKS.get(name, name), a.get("auc"), plain_value(a.get("auc_ci")), a.get("tpr_at_fpr"),
                           plain_value(a.get("tpr_ci")), a.get("fpr"), a.get("fpr_resolvable")]
                          for name, a in attacks.items()])
        return
    if section in ("anonymeter", "inference"):
        counted = {name: value for name, value in figures.items() if isinstance(value, Mapping)}
        if section == "inference":
            counted = dict(figures.get("secrets") or {})
        elif "inference" in counted:
            inner = counted.pop("inference")
            counted.update({f"inference of {secret}": risk for secret, risk in inner.items()})
        _labelled(report, [(label(section, k), plain_value(v, section)) for k, v in ordered(section, figures)
                           if k not in counted and k not in ("secrets", "inference", "warnings")])
        if counted and section == "inference":
            report.table(["secret", "members guessed", "controls guessed", "member rate", "control rate", "risk",
                          "one-sided 95% bounds"],
                         [[name, f"{fmt(r.get('members_guessed'))} of {fmt(r.get('members_attacked'))}",
                           f"{fmt(r.get('controls_guessed'))} of {fmt(r.get('controls_attacked'))}",
                           r.get("member_rate"), r.get("control_rate"), r.get("risk"),
                           f"{fmt(r.get('risk_low'))} to {fmt(r.get('risk_high'))}"] for name, r in counted.items()])
        elif counted:
            report.table(["attack", "members succeeded", "controls succeeded", "attack rate", "baseline rate",
                          "control rate", "risk", "95% interval"],
                         [[_ATTACKS.get(name, name),
                           f"{fmt(r.get('members_succeeded'))} of {fmt(r.get('members_attacked'))}",
                           f"{fmt(r.get('controls_succeeded'))} of {fmt(r.get('controls_attacked'))}",
                           r.get("attack_rate"), r.get("baseline_rate"), r.get("control_rate"), r.get("risk"),
                           plain_value(r.get("ci"))] for name, r in counted.items()])
            linked = (figures.get("linkability") or {}).get("aux_cols")
            if linked:
                report.paragraph("Linkability: the attacker holds the columns "
                                 + " and, separately, ".join("(" + ", ".join(map(str, cols)) + ")" for cols in linked)
                                 + ".", style="small")
        return
    key = "anonymity_measured" if section == "anonymity" else section
    _labelled(report, [(label(key, k), plain_value(v, key)) for k, v in ordered(key, figures) if k != "warnings"])


# --------------------------------------------------------------------------- the earlier layout


def _v1_text(value: Any) -> str:
    """A value as the PDF prints it: `fmt` for scalars, lists item by item."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_v1_text(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_v1_text(v)}" for k, v in value.items()) + "}"
    return fmt(value)


def _v1_flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted name, leaf) pairs of a nested mapping; lists of scalars stay whole."""
    if isinstance(value, Mapping):
        out: list[tuple[str, Any]] = []
        for key in value:
            out.extend(_v1_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in value):
        out = []
        for i, item in enumerate(value):
            out.extend(_v1_flatten(item, f"{prefix}[{i}]"))
        return out
    return [(prefix, value)]


def _v1_figure_rows(section: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(name, _v1_text(value)) for name, value in _v1_flatten(section) if name != "warnings"]


def render_certificate_pdf_v1(signed: Mapping[str, Any]) -> bytes:
    """The layout of certificates issued before the executive summary, every member listed by its JSON path.

    Kept, exactly as it was, only so that `verify_certificate` still accepts
    the PDF of a certificate issued before the current layout: its text must
    equal the text of this rendering of its JSON (pagination included, hence
    `PdfReport.legacy_tables`).
    """
    signed = _canonical(signed)
    signature = signed.get("signature") or {}
    development = bool(signature.get("development_key") or (signed.get("signing_key") or {}).get("development"))
    report = PdfReport(
        "Privacy certificate",
        legacy_tables=True,
        subtitle=f"{signed.get('display_name')} (tenant {signed.get('tenant')})",
        footer=f"CreditTwin privacy certificate {signed.get('certificate_id')}",
    )
    if development:
        report.heading(DEVELOPMENT_BANNER)
        report.paragraph("This certificate was signed with a development key generated on first use. It shows what "
                         "a production certificate would say, but it certifies nothing: production certificates are "
                         f"signed with the key configured by {KEY_SETTING}.")

    report.heading("Certificate")
    report.key_values([
        ("certificate id", signed.get("certificate_id")),
        ("tenant", signed.get("tenant")),
        ("display name", signed.get("display_name")),
        ("issued at (UTC)", signed.get("issued_at")),
        ("valid until (UTC)", signed.get("valid_until")),
        ("validity (days)", signed.get("validity_days")),
        ("audit verdict", signed.get("verdict")),
        ("schema", signed.get("schema")),
    ])

    report.heading("What was released")
    files = signed.get("released_files") or []
    report.table(["file", "rows", "bytes", "SHA-256"],
                 [[f.get("name"), f.get("rows"), f.get("bytes"), f.get("sha256")] for f in files],
                 widths_cm=[3.4, 1.5, 1.7, 10.4])

    source = signed.get("source") or {}
    report.heading("What it came from")
    report.key_values([("input tape SHA-256", source.get("input_sha256")), ("code version", source.get("code_version"))]
                      + [(k, _v1_text(v)) for k, v in _v1_flatten({key: value for key, value in source.items()
                                                             if key not in ("input_sha256", "code_version", "data_versions")})])
    versions = source.get("data_versions") or {}
    if versions:
        report.table(["upstream asset", "data version"], [[k, v] for k, v in versions.items()], widths_cm=[5.5, 11.5])

    report.heading("Generator")
    report.key_values([(name, _v1_text(value)) for name, value in _v1_flatten(signed.get("generator") or {})])

    privacy = signed.get("privacy") or {}
    dp = privacy.get("dp")
    report.heading("Differential privacy")
    if dp:
        report.key_values([
            ("epsilon spent", dp.get("epsilon")),
            ("delta spent", dp.get("delta")),
            ("accountant", dp.get("accountant")),
            ("neighbouring tapes", NEIGHBOURS),
            ("largest membership AUC it allows", dp.get("auc_bound")),
        ] + [(name, _v1_text(value)) for name, value in _v1_flatten({k: v for k, v in dp.items()
                                                             if k not in ("epsilon", "delta", "accountant", "auc_bound",
                                                                          "ledger_entries")})])
        entries = dp.get("ledger_entries") or []
        report.heading("Privacy ledger entries", level=2)
        if entries:
            report.table(
                ["id", "asset", "run", "mechanism", "epsilon", "delta", "accountant", "recorded at"],
                [[e.get("id"), e.get("asset"), e.get("run_id"), (e.get("mechanism") or {}).get("kind"),
                  e.get("epsilon"), e.get("delta"), e.get("accountant"), e.get("created_at")] for e in entries],
                widths_cm=[1.0, 2.6, 2.4, 2.2, 1.6, 1.6, 2.6, 3.4],
            )
        else:
            report.paragraph("No ledger entry was recorded for this release.")
    else:
        report.paragraph("Not differentially private: no privacy budget was spent on this release.")

    anonymity = signed.get("anonymity") or {}
    report.heading("k-anonymity and l-diversity")
    report.key_values([(name, _v1_text(value)) for name, value in _v1_flatten(anonymity)])

    report.heading("Audit rules")
    rules = signed.get("rules") or []
    report.table(
        ["rule", "value", "threshold", "result", "what it means"],
        [[r.get("rule"), r.get("value"), r.get("threshold"), verdict_of(r).upper(), r.get("message")] for r in rules],
        widths_cm=[3.6, 1.8, 1.8, 1.3, 8.9],
        # a warning is shaded neither as a pass nor as a failure
        highlight=[{"pass": True, "fail": False}.get(verdict_of(r)) for r in rules],
    )
    criteria = [r for r in rules if r.get("criterion")]
    if criteria or signed.get("policy"):
        report.heading("The policy applied", level=2)
        report.bullets(f"{r.get('rule')}: {r.get('criterion')}" for r in criteria)
        report.key_values([(name, _v1_text(value)) for name, value in _v1_flatten(signed.get("policy") or {})])

    audit = signed.get("audit") or {}
    report.heading("Audit figures")
    for section, title in (("dcr", "Distance to closest record"), ("mia", "Membership inference"),
                           ("anonymeter", "Anonymeter attacks"), ("dp", "Differential-privacy bound"),
                           ("anonymity", "Measured k and l"), ("sizes", "Sample sizes")):
        figures = audit.get(section)
        if not figures:
            continue
        report.heading(title, level=2)
        report.table(["figure", "value"], _v1_figure_rows(figures), widths_cm=[6.5, 10.5])
    if audit.get("warnings"):
        report.heading("Caveats", level=2)
        report.bullets(str(w) for w in audit["warnings"])

    report.heading("What these figures mean")
    report.bullets(str(sentence) for sentence in signed.get("explanation") or [])

    report.heading("Signature")
    report.key_values(_signature_rows(signature))
    _signature_values(report, signature)
    report.paragraph("Check it with: credittwin verify <certificate.json> --data <release folder> --pdf <this file>. "
                     "The JSON file is the certificate; this PDF is its readable copy.", style="small")
    return report.build()
