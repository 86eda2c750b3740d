"""The release bundle a model-risk reviewer takes to an auditor (`credittwin export`).

A bundle is one folder:

    loans.parquet, loans.csv                the anonymized synthetic portfolio, as certified, spelled as the
                                            lender's tape writes it (Yes/No, integers, date formats)
    performance.parquet, performance.csv    its synthetic monthly histories (when the tenant has any)
    certificate.json, certificate.pdf       the signed privacy certificate and its PDF twin
    validation_report.json, .pdf            the validation report, when one was materialized and the tenant is
                                            not under DP (under DP it is internal: computed on real loans)
    manifest.json                           SHA-256 and size of every file above, and the verdicts of the
                                            released reports, signed

The data files are the exact bytes the certificate hashed (stored beside it by
`privacy_certificate`), so `credittwin verify <dir>/certificate.json --data <dir>`
re-hashes them against the signed document. The manifest is signed with the
deployment's signing key (`models.reports.certificate.sign_manifest`), so the files the
certificate does not cover (the validation report) cannot be edited with their
hash rewritten; verify re-hashes every file it lists and names any file it does
not. The manifest also records the verdict of each released report (`report_verdicts`):
the privacy audit's (a warning rule makes it "warn", with the audit's caveats) and
the validation report's (pass, warn or fail, with its failures and warnings);
`credittwin export` prints every one that is not a pass, and `credittwin verify`
repeats them. Export refuses a tenant without a certificate, or whose stored certificate
no longer verifies or is not signed by a key this deployment trusts (tampered,
expired, files changed), and never leaves a half-written bundle: files are
written into a staging folder that is renamed into place.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

from models.reports.certificate import MANIFEST_NAME
from models.errors import CreditTwinError
from models.files import atomic_directory, atomic_write_bytes, atomic_write_text
from models.tape.tenant import validate_tenant_id

REPORT_FILES = ("validation_report.json", "validation_report.pdf")


class ExportError(CreditTwinError):
    """A release that cannot be exported (no valid certificate, destination in the way)."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def deployment_keys(settings) -> list:
    """The signing keys this deployment trusts: its own (production or development) and its trust store's."""
    from models.reports.certificate import deployment_trust

    return deployment_trust(settings.trust_store, signing_key_file=settings.signing_key_file,
                            environment=settings.environment, dev_key_dir=settings.keys_dir)


def report_verdicts(certificate: dict, validation: dict | None, *, internal: bool = False) -> dict:
    """The verdict of each released report, as the manifest records it.

    Args:
        certificate: the certificate document (its audit rules and caveats).
        validation: the validation report document, or None when there is none.
        internal: the validation report exists but is not exported (under DP).

    Returns:
        ``{"privacy audit": {verdict, findings, caveats}, "validation report": {verdict, findings}}``;
        a verdict is "pass", "warn" or "fail" ("not exported" for an internal
        report), findings one line per failed or warning rule or check.
    """
    from models.reports.certificate_text import verdict_of

    warned = [r for r in certificate.get("rules") or [] if verdict_of(r) != "pass"]
    verdicts = {"privacy audit": {
        "verdict": "fail" if any(verdict_of(r) == "fail" for r in warned) else ("warn" if warned else "pass"),
        "findings": [f"{r.get('rule')} ({verdict_of(r)}): {r.get('message')}" for r in warned],
        "caveats": [str(w) for w in (certificate.get("audit") or {}).get("warnings") or []],
    }}
    if internal:
        verdicts["validation report"] = {"verdict": "not exported", "findings": [
            "computed on real loans under differential privacy, it is kept for the tenant and not released"]}
    elif validation is not None:
        # a report written before verdicts existed has only `passed`
        verdict = validation.get("verdict") or {True: "pass", False: "fail"}.get(validation.get("passed"), "not recorded")
        verdicts["validation report"] = {"verdict": verdict, "findings": [
            *[str(f) for f in validation.get("failures") or []],
            *[f"warning: {w}" for w in validation.get("warnings") or []]]}
    return verdicts


def export_release(settings, tenant: str, dest: Path, *, overwrite: bool = False) -> dict:
    """Write `tenant`'s certified release into `dest`; return the manifest.

    Raises:
        ExportError: no certificate, a certificate that does not verify, or a
            non-empty destination without `overwrite`.
    """
    from models.results import Certificate
    from models.reports.certificate import load_signing_key, sign_manifest, verify_certificate
    from resources.storage import read_current

    tenant = validate_tenant_id(tenant)
    stored = read_current(settings.storage_root(), "privacy_certificate", tenant)
    if stored is None or stored.path is None:
        raise ExportError(
            "has no privacy certificate, so there is no release to export.",
            tenant=tenant,
            fix="materialize the tenant's graph (`credittwin materialize <tenant>`); a certificate is issued only "
            "when the privacy audit passes (see privacy_audit's failed rules otherwise).",
        )
    release_dir = stored.folder(Certificate.RELEASE_DIR)
    # the key that signs the manifest is the deployment's own, which its trust therefore holds
    key = load_signing_key(settings.signing_key_file, environment=settings.environment, dev_key_dir=settings.keys_dir,
                           tenant=tenant)
    trusted = deployment_keys(settings)
    result = verify_certificate(stored.path / Certificate.JSON, data_dir=release_dir, trusted_keys=trusted,
                                pdf_path=stored.path / Certificate.PDF, environment=settings.environment)
    if not result.ok:
        raise ExportError(
            f"its current certificate {result.certificate_id} does not verify: " + "; ".join(result.problems),
            tenant=tenant,
            file=str(stored.path / Certificate.JSON),
            fix="re-run privacy_audit and privacy_certificate to issue a fresh certificate.",
        )
    files: dict[str, bytes] = {}
    for entry in result.checked_files:
        files[entry["name"]] = (release_dir / entry["name"]).read_bytes()
    files[Certificate.JSON] = (stored.path / Certificate.JSON).read_bytes()
    files[Certificate.PDF] = (stored.path / Certificate.PDF).read_bytes()
    report = read_current(settings.storage_root(), "validation_report", tenant)
    validation = None
    # Under DP the validation report is internal (its figures are exact statistics of real loans): not exported.
    if report is not None and report.path is not None and not report.internal:
        for name in REPORT_FILES:
            if (report.path / name).exists():
                files[name] = (report.path / name).read_bytes()
        if REPORT_FILES[0] in files:
            try:
                validation = json.loads(files[REPORT_FILES[0]])
            except ValueError as error:
                raise ExportError(f"its stored validation report is not readable JSON ({error}).", tenant=tenant,
                                  file=str(report.path / REPORT_FILES[0]),
                                  fix="materialize validation_report again, then export.") from None
    # The data must be re-read from disk with the same hashes the certificate signed.
    for entry in result.checked_files:
        if _sha256(files[entry["name"]]) != entry["expected_sha256"]:
            raise ExportError(f"released file '{entry['name']}' changed while it was being exported.", tenant=tenant,
                              fix="run the export again.")
    document = json.loads(files[Certificate.JSON])
    manifest = {
        "tenant": tenant,
        "certificate_id": result.certificate_id,
        "payload_sha256": result.payload_sha256,
        "valid_until": document.get("valid_until"),
        "exported_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat(),
        "files": [{"name": name, "bytes": len(data), "sha256": _sha256(data)} for name, data in sorted(files.items())],
        "verdicts": report_verdicts(document, validation, internal=report is not None and report.internal),
        "notes": list(result.notes),
    }
    manifest = sign_manifest(manifest, key)
    _write_bundle(Path(dest), files, manifest, overwrite=overwrite, tenant=tenant)
    return manifest


def _write_bundle(dest: Path, files: dict[str, bytes], manifest: dict, *, overwrite: bool, tenant: str) -> None:
    dest = dest.expanduser().resolve()
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"destination {dest} is a file.", tenant=tenant, fix="name a folder.")
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise ExportError(f"destination {dest} is not empty.", tenant=tenant,
                          fix="name an empty or new folder, or pass --force to replace the bundle files in it.")
    manifest_text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    if dest.exists() and any(dest.iterdir()):
        # --force keeps the folder's other files, so the bundle's are replaced one by one, the manifest last: a
        # bundle left half written has an old manifest that no longer matches, which `credittwin verify` reports
        for name, data in files.items():
            atomic_write_bytes(dest / name, data)
        atomic_write_text(dest / MANIFEST_NAME, manifest_text)
        return
    with atomic_directory(dest) as staging:
        for name, data in files.items():
            (staging / name).write_bytes(data)
        (staging / MANIFEST_NAME).write_text(manifest_text, encoding="utf-8")
