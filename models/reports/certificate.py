"""The signed privacy certificate of a release: a JSON document, its Ed25519 signature and a PDF twin.

A certificate says, for one tenant's release, what was released (each file's
name, rows, bytes and SHA-256), what it came from (the input tape's SHA-256,
the data version of every upstream asset, the code version), how it was made
(the generator and its settings), what privacy it spent (epsilon and delta, the
accountant and the ledger entries, under differential privacy), the k and l it
achieved, every audit figure beside the policy threshold it was held to and
the rule applied to it in words (pass, warn or fail; a warning is never shown
as a pass), the tenant's audit policy, a
plain-language explanation generated from those figures, and when it was issued
and until when it is valid. It is issued only when no audit rule failed
(`build_certificate` refuses otherwise, so the caller keeps the previous
certificate in place).

Signing
-------
The document without its ``signature`` member is canonicalised with RFC 8785
(`models.files.canonical_json`, the ``rfc8785`` package: keys sorted by their
UTF-16 code units, no white space, UTF-8, numbers in ECMAScript form; NaN and
infinities are refused, and so are integers beyond 2^53 - 1) and signed with
Ed25519. The public key, its id (the first 16 hex digits of the SHA-256 of the
raw 32-byte key) and whether it is a development key are written into the
document before signing (``signing_key``), so none of them can be altered
without breaking the signature, and are repeated in the ``signature`` block
with the payload's SHA-256 and the signature value. The JSON file itself is
pretty-printed for people; verification re-canonicalises it, so white space
does not matter but any change of a value, a key or a figure does.

Keys come from a PEM (PKCS#8) Ed25519 private key file named by the
``CREDITTWIN_SIGNING_KEY_FILE`` setting. In production a missing, unreadable,
non-Ed25519 or group/world-readable key is refused. In development, without a
key file, one is generated on first use (``dev-signing-key.pem``, mode 0600,
published with an atomic hard link so two processes racing to create it end up
with the same key), and every certificate it signs says so in the JSON and,
in large letters, in the PDF.

The PDF (`models.reports.certificate_pdf`) opens with an executive summary
(scope, verdict, the privacy guarantee in one sentence, the strongest attack),
then the method with its references, the rules and figures, governance with a
sign-off block, and the technical provenance in an appendix. Its sentences are
generated from the figures (`models.reports.certificate_text`): the
explanation and the summary are written into the document and signed.

Verification (`verify_certificate`, behind ``credittwin verify``) recomputes the
payload hash, checks the signature against the embedded public key and that
the key is trusted, the validity dates and the audit verdict; given the data
folder it re-hashes every released file, given the PDF it checks that the PDF
exists, carries the payload hash and says exactly what the JSON says (its text
equals the text of the PDF rendered afresh from the JSON; a certificate issued
before the current layout is compared with the earlier one), and given an
exported bundle's ``manifest.json`` (signed at export, `sign_manifest`) it
re-hashes every file the manifest lists, checks that it lists each certified
file with the certified hash, names any file it does not list, and notes the
failing or warning verdicts it records. Each problem is one readable line.

Trust
-----
A valid signature only proves that someone holding *a* key signed the
document; anyone can re-sign a forged certificate with a key of their own. So
``credittwin verify`` accepts only keys the deployment trusts
(`deployment_trust`): its own signing key (``CREDITTWIN_SIGNING_KEY_FILE``), in
development the key generated under its data root, and the keys added to its
trust store (``<data>/keys/trusted.json``, or ``CREDITTWIN_TRUSTED_KEYS_FILE``)
with ``credittwin keys trust``, each with the reason it was trusted. A
development key is always noted, and refused under ``CREDITTWIN_ENV=production``.

Untrusted text (the display name, column names and category values, which
come from uploads) reaches the PDF only through `models.reports.pdf.PdfReport`,
which escapes everything it prints (ReportLab markup injection).

No Dagster here; ``cryptography`` and ReportLab are imported inside the
functions that use them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from models.errors import CertificateError, JsonValueError
from models.files import atomic_write_bytes, canonical_json, json_value, sha256_file
from models.reports.certificate_pdf import render_certificate_pdf, render_certificate_pdf_v1
from models.reports.certificate_text import DEVELOPMENT_BANNER, KEY_SETTING, explain, summarize, verdict_of
from models.reports.pdf import pdf_text
from models.tape.tenant import validate_tenant_id

CERTIFICATE_SCHEMA = "credittwin.privacy-certificate/v1"
SIGNATURE_ALGORITHM = "Ed25519"
CANONICALIZATION = "RFC 8785 (JCS)"
DEV_KEY_NAME = "dev-signing-key.pem"
DEFAULT_VALIDITY_DAYS = 90
KEYGEN_COMMAND = "openssl genpkey -algorithm ed25519 -out credittwin-signing.pem && chmod 600 credittwin-signing.pem"
# A certificate dated this far in the future of the verifying clock is refused (clock skew allowance).
CLOCK_SKEW = timedelta(minutes=5)
ENVIRONMENTS = ("development", "production")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------- canonical JSON


def _plain(value: Any, where: str) -> Any:
    """`value` as plain JSON types (`models.files.json_value`); what JSON cannot hold exactly is a CertificateError."""
    try:
        return json_value(value, where)
    except JsonValueError as error:
        raise CertificateError(error.reason, fix=error.fix) from None


def payload_of(document: Mapping[str, Any]) -> dict[str, Any]:
    """The signed part of a certificate: everything but ``signature``."""
    return {key: value for key, value in document.items() if key != "signature"}


def payload_sha256(document: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of the signed part of `document`."""
    return hashlib.sha256(canonical_json(_plain(payload_of(document), "certificate"))).hexdigest()


# --------------------------------------------------------------------------- keys


def key_id_of(public_raw: bytes) -> str:
    """The id of an Ed25519 public key: the first 16 hex digits of the SHA-256 of its 32 raw bytes."""
    return hashlib.sha256(public_raw).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key ready to sign certificates.

    Attributes:
        private_key: the `cryptography` Ed25519PrivateKey.
        key_id: first 16 hex digits of the SHA-256 of the raw public key.
        public_key_b64: the raw 32-byte public key, standard base64.
        development: True for a key generated on first use in development.
        source: the PEM file it was read from.
    """

    private_key: Any
    key_id: str
    public_key_b64: str
    development: bool
    source: Path | None

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of `data`."""
        return self.private_key.sign(data)


def _from_private(private_key: Any, *, development: bool, source: Path | None) -> SigningKey:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return SigningKey(
        private_key=private_key,
        key_id=key_id_of(raw),
        public_key_b64=base64.b64encode(raw).decode("ascii"),
        development=development,
        source=source,
    )


def _pem(private_key: Any) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    return private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())


def _read_key(path: Path, *, environment: str, tenant: str | None, development: bool) -> SigningKey:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    fix_new = f"create an Ed25519 key with `credittwin keygen PATH` or `{KEYGEN_COMMAND}` and set {KEY_SETTING} to it."
    try:
        info = path.stat()
    except OSError as error:
        raise CertificateError(
            f"the signing key file {str(path)!r} named by {KEY_SETTING} cannot be read: {error.strerror or error}.",
            tenant=tenant,
            fix=f"point {KEY_SETTING} at an existing Ed25519 PEM file, or {fix_new}",
        ) from None
    if not path.is_file():
        raise CertificateError(
            f"the signing key path {str(path)!r} ({KEY_SETTING}) is not a regular file.",
            tenant=tenant,
            fix=f"point {KEY_SETTING} at an Ed25519 PEM file.",
        )
    if environment == "production" and info.st_mode & 0o077:
        raise CertificateError(
            f"the signing key file {str(path)!r} ({KEY_SETTING}) is readable by its group or by others "
            f"(mode {info.st_mode & 0o777:03o}); production refuses a key others can read.",
            tenant=tenant,
            fix=f"run `chmod 600 {path}` (and keep it owned by the account that runs CreditTwin).",
        )
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CertificateError(
            f"the signing key file {str(path)!r} ({KEY_SETTING}) cannot be read: {error.strerror or error}.",
            tenant=tenant,
            fix="give the account that runs CreditTwin read access to it (mode 600, owned by that account).",
        ) from None
    try:
        private_key = load_pem_private_key(data, password=None)
    except TypeError:
        raise CertificateError(
            f"the signing key file {str(path)!r} ({KEY_SETTING}) is encrypted with a passphrase.",
            tenant=tenant,
            fix="store the key unencrypted in a secret file readable only by CreditTwin (mode 600), "
            "e.g. from your secret manager, or " + fix_new,
        ) from None
    except (ValueError, UnsupportedAlgorithm) as error:
        raise CertificateError(
            f"the signing key file {str(path)!r} ({KEY_SETTING}) is not a PEM private key ({error}).",
            tenant=tenant,
            fix=fix_new,
        ) from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise CertificateError(
            f"the signing key file {str(path)!r} ({KEY_SETTING}) holds a {type(private_key).__name__.lstrip('_')}, "
            "not an Ed25519 key.",
            tenant=tenant,
            fix=fix_new,
        )
    return _from_private(private_key, development=development, source=path)


def load_signing_key(
    key_file: Path | str | None,
    *,
    environment: str,
    dev_key_dir: Path | str,
    tenant: str | None = None,
) -> SigningKey:
    """The key that signs certificates.

    Args:
        key_file: the PEM (PKCS#8) Ed25519 private key named by
            ``CREDITTWIN_SIGNING_KEY_FILE``, or None.
        environment: "development" or "production" (``CREDITTWIN_ENV``).
        dev_key_dir: where the development key lives (e.g. ``<data>/keys``);
            used only in development without `key_file`.
        tenant: named in errors.

    Returns:
        A `SigningKey`; `development` is True only for the generated key.

    Raises:
        CertificateError: production without `key_file` (the message names
            ``CREDITTWIN_SIGNING_KEY_FILE`` and how to create a key); a key file
            that is missing, unreadable, encrypted, not Ed25519, or (in
            production) readable by group or others; an unknown environment.
    """
    if environment not in ENVIRONMENTS:
        raise CertificateError(
            f"unknown environment {environment!r}; expected one of {ENVIRONMENTS}.",
            tenant=tenant,
            fix="set CREDITTWIN_ENV to 'development' or 'production'.",
        )
    if key_file is not None and str(key_file).strip():
        return _read_key(Path(key_file).expanduser(), environment=environment, tenant=tenant, development=False)
    if environment == "production":
        raise CertificateError(
            f"no signing key is configured: production certificates must be signed with the key named by {KEY_SETTING}.",
            tenant=tenant,
            fix=f"create an Ed25519 key with `credittwin keygen /secure/path/credittwin-signing.pem` or `{KEYGEN_COMMAND}`, "
            f"store it as a secret readable only by CreditTwin, and set {KEY_SETTING} to its path.",
        )
    folder = Path(dev_key_dir).expanduser()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / DEV_KEY_NAME
    if not path.exists():
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        # If another process published its key first, ours is dropped and theirs is read below.
        atomic_write_bytes(path, _pem(Ed25519PrivateKey.generate()), replace=False)
    return _read_key(path, environment=environment, tenant=tenant, development=True)


def generate_key_file(path: Path | str, *, overwrite: bool = False) -> SigningKey:
    """Create a new Ed25519 signing key at `path` (PEM PKCS#8, mode 0600), for ``credittwin keygen``.

    Returns:
        The new `SigningKey` (not a development key); print its `key_id` and
        `public_key_b64` so verifiers can trust it.

    Raises:
        CertificateError: `path` exists (unless `overwrite`) or its folder cannot be written.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = Path(path).expanduser()
    private_key = Ed25519PrivateKey.generate()
    data = _pem(private_key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not atomic_write_bytes(path, data, replace=overwrite):
            raise CertificateError(
                f"{str(path)!r} already exists; a signing key is never overwritten by accident.",
                fix="choose another path, or remove the old key first (certificates it signed stay verifiable "
                "only while verifiers still trust its key id).",
            )
    except OSError as error:
        raise CertificateError(
            f"cannot write the signing key {str(path)!r}: {error.strerror or error}.",
            fix="choose a folder the current account can write.",
        ) from None
    return _from_private(private_key, development=False, source=path)


# --------------------------------------------------------------------------- the trust store


TRUST_STORE_SCHEMA = "credittwin.trusted-keys/v1"
TRUST_SETTING = "CREDITTWIN_TRUSTED_KEYS_FILE"
TRUST_COMMAND = "credittwin keys trust --certificate <certificate.json> --reason TEXT"


@dataclass(frozen=True)
class TrustedKey:
    """A public key whose certificates this deployment accepts.

    Attributes:
        key_id: first 16 hex digits of the SHA-256 of the raw public key.
        public_key: the raw 32-byte Ed25519 public key, standard base64.
        origin: where the trust comes from: "trust store" (``credittwin keys
            trust``), "signing key" (this deployment's ``CREDITTWIN_SIGNING_KEY_FILE``),
            "development key" (this data root's generated key) or "--trust".
        development: the key is a development key (its certificates are always flagged).
        reason, added_at, added_by, source: why, when, by whom and from what a
            stored key was trusted (None for the automatic ones).
    """

    key_id: str
    public_key: str
    origin: str
    development: bool = False
    reason: str | None = None
    added_at: str | None = None
    added_by: str | None = None
    source: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "public_key": self.public_key, "origin": self.origin,
                "development": self.development, "reason": self.reason, "added_at": self.added_at,
                "added_by": self.added_by, "source": self.source}


def _raw_public_key(public_key_b64: str, where: str, fix: str) -> bytes:
    try:
        raw = base64.b64decode(public_key_b64, validate=True)
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise CertificateError(f"{where} is not a base64 Ed25519 public key (32 raw bytes).", file=where, fix=fix)
    return raw


def read_trust_store(path: Path | str) -> list[TrustedKey]:
    """The keys trusted in the store file `path` (none when it does not exist yet).

    Each entry's key id is recomputed from its public key, so an entry edited
    by hand to pair a trusted id with another key is refused, not believed.

    Raises:
        CertificateError: the file cannot be read, is not a trust store, or an
            entry's key id is not the id of its public key.
    """
    path = Path(path)
    fix = (f"restore {path} from its backup, or move it away and trust the keys again with "
           f"`credittwin keys trust` ({TRUST_SETTING} names another file).")
    if not path.exists():
        return []
    try:
        document = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=_no_duplicates,
                              parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise CertificateError(f"the trust store {str(path)!r} cannot be read ({error}).", file=str(path), fix=fix) from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(document, dict) or document.get("schema") != TRUST_STORE_SCHEMA or not isinstance(entries, list):
        raise CertificateError(f"{str(path)!r} is not a CreditTwin trust store (schema {TRUST_STORE_SCHEMA}).",
                               file=str(path), fix=fix)
    keys = []
    for entry in entries:
        public = entry.get("public_key") if isinstance(entry, dict) else None
        if not isinstance(public, str):
            raise CertificateError(f"the trust store {str(path)!r} has an entry without a public key.",
                                   file=str(path), fix=fix)
        raw = _raw_public_key(public, str(path), fix)
        if entry.get("key_id") != key_id_of(raw):
            raise CertificateError(
                f"the trust store {str(path)!r} pairs key id {entry.get('key_id')!r} with a public key whose id is "
                f"{key_id_of(raw)}: the file was edited by hand.", file=str(path), fix=fix)
        keys.append(TrustedKey(key_id=entry["key_id"], public_key=public, origin="trust store",
                               development=bool(entry.get("development")), reason=entry.get("reason"),
                               added_at=entry.get("added_at"), added_by=entry.get("added_by"),
                               source=entry.get("source")))
    return keys


def trust_key(path: Path | str, public_key_b64: str, *, reason: str, actor: str, source: str,
              development: bool = False) -> tuple[TrustedKey, bool]:
    """Add a public key to the trust store `path` (written atomically); return (its entry, whether it was added).

    A key already in the store keeps its first entry (and reason).

    Raises:
        CertificateError: no reason given, a key that is not Ed25519, or an unreadable store.
    """
    path = Path(path)
    if not reason or not reason.strip():
        raise CertificateError("trusting a key needs a reason (who published it to you, and how you checked it).",
                               fix="pass --reason TEXT, e.g. --reason 'key id read out by Acme's model-risk team'.")
    raw = _raw_public_key(public_key_b64, "the key to trust", "pass an Ed25519 public key PEM or a certificate.")
    existing = read_trust_store(path)
    for key in existing:
        if key.key_id == key_id_of(raw):
            return key, False
    added = TrustedKey(key_id=key_id_of(raw), public_key=base64.b64encode(raw).decode("ascii"), origin="trust store",
                       development=development, reason=reason.strip(), added_by=actor, source=source,
                       added_at=datetime.now(timezone.utc).replace(microsecond=0).isoformat())
    entries = [{k: v for k, v in key.to_dict().items() if k != "origin"} for key in [*existing, added]]
    document = {"schema": TRUST_STORE_SCHEMA, "keys": entries}
    try:
        atomic_write_bytes(path, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    except OSError as error:
        raise CertificateError(f"cannot write the trust store {str(path)!r}: {error.strerror or error}.",
                               file=str(path), fix=f"choose a writable file with {TRUST_SETTING}.") from None
    return added, True


def public_key_from_pem(path: Path | str) -> str:
    """The base64 raw Ed25519 public key of a PEM file: a public key, or a private key (only its public half is kept).

    Raises:
        CertificateError: the file cannot be read or holds no Ed25519 key.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import (Encoding, PublicFormat, load_pem_private_key,
                                                              load_pem_public_key)

    path = Path(path).expanduser()
    fix = "pass the issuer's public key PEM (`openssl pkey -in key.pem -pubout`) or a certificate it signed."
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CertificateError(f"cannot read {str(path)!r}: {error.strerror or error}.", file=str(path), fix=fix) from None
    key: Any = None
    for load in (lambda: load_pem_public_key(data), lambda: load_pem_private_key(data, password=None).public_key()):
        try:
            key = load()
            break
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
    if not isinstance(key, Ed25519PublicKey):
        kind = "no PEM key" if key is None else f"a {type(key).__name__.lstrip('_')}"
        raise CertificateError(f"{str(path)!r} holds {kind}, not an Ed25519 key.", file=str(path), fix=fix)
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")


def signer_of_certificate(path: Path | str) -> tuple[str, bool]:
    """The (base64 public key, development flag) that signed the certificate at `path`.

    The certificate must verify under that key first: a key is never trusted
    from a document it did not sign.

    Raises:
        CertificateError: the certificate cannot be read or its signature does not verify.
    """
    document = read_certificate(path)
    problems: list[str] = []
    _check_signature(document, None, problems, [])
    if problems:
        raise CertificateError(f"the certificate {str(path)!r} does not verify under its own key: {problems[0]}.",
                               file=str(path), fix="trust a key only from a certificate exactly as its issuer sent it.")
    signature = document["signature"]
    return signature["public_key"], bool(signature.get("development_key"))


def deployment_trust(store: Path | str, *, signing_key_file: Path | str | None, environment: str,
                     dev_key_dir: Path | str) -> list[TrustedKey]:
    """Every key this deployment trusts: its own signing key, its development key, then the trust store.

    The deployment's own key is trusted without being stored, so a release it
    exported verifies on the same data root: the production key named by
    ``CREDITTWIN_SIGNING_KEY_FILE``, or in development the key generated under
    `dev_key_dir` (never in production, where a development key is refused).
    Nothing is generated here.

    Raises:
        CertificateError: an unreadable key file or trust store.
    """
    own: list[TrustedKey] = []
    if signing_key_file is not None and str(signing_key_file).strip():
        key = _read_key(Path(signing_key_file).expanduser(), environment=environment, tenant=None, development=False)
        own.append(TrustedKey(key_id=key.key_id, public_key=key.public_key_b64, origin="signing key",
                              source=str(key.source)))
    dev_path = Path(dev_key_dir) / DEV_KEY_NAME
    if environment != "production" and dev_path.is_file():
        key = _read_key(dev_path, environment=environment, tenant=None, development=True)
        own.append(TrustedKey(key_id=key.key_id, public_key=key.public_key_b64, origin="development key",
                              development=True, source=str(dev_path)))
    seen = {key.key_id for key in own}
    return own + [key for key in read_trust_store(store) if key.key_id not in seen]


# --------------------------------------------------------------------------- building


def _require(condition: bool, message: str, tenant: str, fix: str) -> None:
    if not condition:
        raise CertificateError(message, tenant=tenant, fix=fix)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_released(files: Sequence[Mapping[str, Any]], tenant: str) -> list[dict[str, Any]]:
    fix = "list each released file as {name, rows, sha256, bytes}, names relative to the release folder."
    _require(isinstance(files, Sequence) and len(files) > 0, "a certificate must name at least one released file.", tenant, fix)
    out, seen = [], set()
    for entry in files:
        _require(isinstance(entry, Mapping), f"released file entry {entry!r} is not a mapping.", tenant, fix)
        name = entry.get("name")
        _require(
            isinstance(name, str) and bool(name) and "\x00" not in name and not Path(name).is_absolute()
            and ".." not in Path(name).parts and "\\" not in name,
            f"released file name {name!r} must be a relative path without '..'.", tenant, fix,
        )
        _require(name not in seen, f"released file {name!r} is listed twice.", tenant, fix)
        seen.add(name)
        sha = entry.get("sha256")
        _require(isinstance(sha, str) and bool(_HEX64.match(sha)),
                 f"released file {name!r} has sha256 {sha!r}, not 64 lower-case hex digits.", tenant, fix)
        for key in ("rows", "bytes"):
            value = entry.get(key)
            _require(value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0),
                     f"released file {name!r} has {key} {value!r}, not a count.", tenant, fix)
        out.append(dict(entry))
    return out


def _failed_rule(rule: Mapping[str, Any]) -> str:
    return f"{rule.get('rule')}: {rule.get('message', '')}"


def build_certificate(
    *,
    tenant: str,
    display_name: str | None,
    released_files: Sequence[Mapping[str, Any]],
    source: Mapping[str, Any],
    generator: Mapping[str, Any],
    privacy: Mapping[str, Any],
    anonymity: Mapping[str, Any],
    audit: Mapping[str, Any],
    rules: Sequence[Mapping[str, Any]],
    issued_at: datetime,
    policy: Mapping[str, Any] | None = None,
    scope: Mapping[str, Any] | None = None,
    validity_days: int = DEFAULT_VALIDITY_DAYS,
    certificate_id: str | None = None,
) -> dict[str, Any]:
    """The (unsigned) certificate document of a release whose audit passed.

    Args:
        tenant: the tenant id (validated).
        display_name: the tenant's free-text name from tenant.yaml (may be
            hostile; printed escaped), or None.
        released_files: one ``{name, rows, sha256, bytes}`` per released file,
            names relative to the release folder (what ``verify --data`` reads).
        source: ``{input_sha256, data_versions: {asset: data version},
            code_version}`` (other keys are kept).
        generator: ``{engine, ...settings}``.
        privacy: ``{dp: None | {epsilon, delta, accountant, ledger_entries:
            [Charge.to_dict(), ...]}}``; the DP membership AUC bound is added
            as ``dp.auc_bound``.
        anonymity: ``{k_required, k_achieved, l_required, l_achieved,
            suppression}``, optionally ``l_by_column`` (each sensitive
            column's achieved l; each must reach ``l_required``);
            ``quasi_identifiers``, ``sensitive`` and ``l_by_column`` are taken
            from the audit when absent.
        audit: `AuditReport.to_dict()`.
        rules: `RuleResult.to_dict()` of every rule of `evaluate_policy`: each
            with its verdict (pass, warn, fail) and its criterion in words,
            so the rule applied is signed with the figure it judged.
        policy: the tenant's audit settings the rules were held to
            (tenant.yaml ``audit:`` with the enforced k and l), signed too.
        scope: what the release was made from, for the executive summary:
            ``{input_files: [names], train_rows, holdout_rows, period: None |
            {column, first, last} | {column, withheld}}``
            (`models.reports.certify.tape_scope`).
        issued_at: an aware datetime (stored in UTC).
        validity_days: how long the certificate is valid (tenant.yaml
            ``certificate.validity_days``).
        certificate_id: defaults to ``<tenant>-<issued UTC>-<8 hex of the released hashes>``.

    Returns:
        A JSON-ready dict (schema ``credittwin.privacy-certificate/v1``) with
        an ``explanation`` and the executive ``summary``
        (`models.reports.certificate_text`), both generated from its figures
        and signed with them; sign it with `sign_certificate`.

    Raises:
        CertificateError: a rule failed (each failed rule is listed), no rule
            was given, k or l is below what was required, or an input is
            malformed (naive datetime, bad hash, NaN figure...).
        InvalidTenantError: `tenant` is not a valid tenant id.
    """
    from models.privacy.membership import dp_auc_bound

    tenant = validate_tenant_id(tenant)
    failed = [r for r in rules if not r.get("passed")]
    _require(len(rules) > 0, "no audit rule was evaluated, so nothing can be certified.", tenant,
             "run the privacy audit and evaluate the tenant's policy (models.privacy.policy.evaluate_policy) first.")
    if failed:
        raise CertificateError(
            f"the privacy audit failed {len(failed)} rule(s), so no certificate is issued (the previous one stays "
            "in place): " + "; ".join(_failed_rule(r) for r in failed) + ".",
            tenant=tenant,
            fix="change the generator or privacy settings in tenant.yaml (stronger generalisation, a smaller "
            "epsilon, more suppression) and re-run; never relax the policy to get a certificate.",
        )
    _require(isinstance(issued_at, datetime) and issued_at.tzinfo is not None and issued_at.utcoffset() is not None,
             f"issued_at must be a timezone-aware datetime, got {issued_at!r}.", tenant,
             "pass datetime.now(timezone.utc).")
    _require(isinstance(validity_days, int) and not isinstance(validity_days, bool) and validity_days >= 1,
             f"validity_days must be a positive integer, got {validity_days!r}.", tenant,
             "set certificate.validity_days in tenant.yaml (90 by default).")
    files = _check_released(released_files, tenant)
    source = dict(source)
    _require(isinstance(source.get("input_sha256"), str) and bool(_HEX64.match(source["input_sha256"])),
             f"source.input_sha256 {source.get('input_sha256')!r} is not 64 lower-case hex digits.", tenant,
             "pass the SHA-256 of the uploaded tape as raw_loan_tape records it.")
    _require(isinstance(source.get("data_versions", {}), Mapping), "source.data_versions must map asset names to "
             "data versions.", tenant, "pass {asset: data_version} for every upstream asset.")
    source.setdefault("data_versions", {})
    _require(isinstance(source.get("code_version"), str) and bool(source["code_version"]),
             "source.code_version is missing.", tenant, "pass the code version of the asset (or the package version).")
    generator = dict(generator)
    _require(isinstance(generator.get("engine"), str), "generator.engine is missing.", tenant,
             "name the generator engine (e.g. 'credittwin' or 'copulas').")

    privacy = dict(privacy)
    dp = privacy.get("dp")
    if dp is not None:
        dp = dict(dp)
        epsilon, delta = dp.get("epsilon"), dp.get("delta")
        _require(_number(epsilon) and epsilon >= 0 and _number(delta) and 0 <= delta <= 1,
                 f"privacy.dp needs epsilon >= 0 and delta in [0, 1], got {epsilon!r} and {delta!r}.", tenant,
                 "pass the totals of the tenant's privacy ledger.")
        _require(isinstance(dp.get("accountant"), str), "privacy.dp.accountant is missing.", tenant,
                 "name the accountant that composed the charges (the ledger's).")
        dp.setdefault("ledger_entries", [])
        dp["auc_bound"] = dp_auc_bound(float(epsilon), float(delta))
    privacy["dp"] = dp

    anonymity = dict(anonymity)
    measured = audit.get("anonymity") or {}
    anonymity.setdefault("quasi_identifiers", measured.get("quasi_identifiers") or [])
    anonymity.setdefault("sensitive", measured.get("sensitive") or [])
    anonymity["l_by_column"] = dict(anonymity.get("l_by_column") or measured.get("l_by_column") or {})
    for name in ("k", "l"):
        required, achieved = anonymity.get(f"{name}_required"), anonymity.get(f"{name}_achieved")
        if name == "l" and required is not None and not anonymity["sensitive"]:
            # l protects sensitive values; a release without any (no target, none declared) has nothing for it to
            # protect, which the l_diversity rule records (`models.privacy.anonymize.LDiversityScope` decides both).
            from models.privacy.anonymize import LDiversityScope

            l_scope = LDiversityScope(int(required), ())
            anonymity["l_status"] = l_scope.not_applicable or "not required: privacy.l is 1"
            continue
        if required is not None:
            _require(achieved is not None and achieved >= required,
                     f"{name} achieved ({achieved}) is below the required {required}.", tenant,
                     "re-run anonymized_portfolio; a release below the policy is never certified.")
        if name == "l" and required is not None:
            below = {c: v for c, v in anonymity["l_by_column"].items() if v is None or v < required}
            _require(not below, f"l achieved on sensitive column(s) {below} is below the required {required}.",
                     tenant, "re-run anonymized_portfolio; a release below the policy is never certified.")

    issued = issued_at.astimezone(timezone.utc).replace(microsecond=0)
    if certificate_id is None:
        digest = hashlib.sha256("".join(sorted(f["sha256"] for f in files)).encode()).hexdigest()[:8]
        certificate_id = f"{tenant}-{issued:%Y%m%dT%H%M%SZ}-{digest}"
    document: dict[str, Any] = {
        "schema": CERTIFICATE_SCHEMA,
        "certificate_id": str(certificate_id),
        "tenant": tenant,
        "display_name": display_name if display_name is not None else tenant,
        "issued_at": issued.isoformat(),
        "valid_until": (issued + timedelta(days=validity_days)).isoformat(),
        "validity_days": validity_days,
        "verdict": "pass",
        "released_files": files,
        "source": source,
        "generator": generator,
        "privacy": privacy,
        "anonymity": anonymity,
        "audit": dict(audit),
        "rules": [dict(r) for r in rules],
        "policy": dict(policy or {}),
    }
    if scope is not None:
        document["scope"] = dict(scope)
    document["explanation"] = explain(document)
    document["summary"] = summarize(document)
    return _plain(document, "certificate")


# --------------------------------------------------------------------------- signing


def sign_certificate(document: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """Sign a certificate with Ed25519.

    ``signing_key`` ({algorithm, key_id, public_key, development}) is written
    into the document first, so it is signed too; then ``signature``
    {algorithm, canonicalization, key_id, public_key, development_key,
    payload_sha256, value} is added, `value` being the base64 Ed25519
    signature of the RFC 8785 canonical JSON of everything but ``signature``.

    Returns:
        A new dict; `document` is not changed.

    Raises:
        CertificateError: the document cannot be canonicalised.
    """
    payload = payload_of(document)
    payload["signing_key"] = {
        "algorithm": SIGNATURE_ALGORITHM,
        "key_id": key.key_id,
        "public_key": key.public_key_b64,
        "development": key.development,
    }
    payload = _plain(payload, "certificate")
    data = canonical_json(payload)
    signed = dict(payload)
    signed["signature"] = {
        "algorithm": SIGNATURE_ALGORITHM,
        "canonicalization": CANONICALIZATION,
        "key_id": key.key_id,
        "public_key": key.public_key_b64,
        "development_key": key.development,
        "payload_sha256": hashlib.sha256(data).hexdigest(),
        "value": base64.b64encode(key.sign(data)).decode("ascii"),
    }
    return signed


def certificate_json_bytes(signed: Mapping[str, Any]) -> bytes:
    """The certificate as pretty UTF-8 JSON for people (sorted keys, two-space indent, trailing newline)."""
    return (json.dumps(_plain(signed, "certificate"), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False)
            + "\n").encode("utf-8")


@dataclass(frozen=True)
class IssuedCertificate:
    """A signed certificate and its two files' contents."""

    document: dict[str, Any]
    json_bytes: bytes
    pdf_bytes: bytes

    @property
    def payload_sha256(self) -> str:
        return self.document["signature"]["payload_sha256"]

    @property
    def certificate_id(self) -> str:
        return self.document["certificate_id"]


def issue_certificate(key: SigningKey, **build_args: Any) -> IssuedCertificate:
    """`build_certificate(**build_args)`, signed with `key`, with its JSON and PDF bytes.

    Raises:
        CertificateError: as `build_certificate` (a failed rule issues nothing).
    """
    signed = sign_certificate(build_certificate(**build_args), key)
    return IssuedCertificate(document=signed, json_bytes=certificate_json_bytes(signed), pdf_bytes=render_certificate_pdf(signed))


# --------------------------------------------------------------------------- the release manifest


MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = "credittwin.release-manifest/v1"


def sign_manifest(manifest: Mapping[str, Any], key: SigningKey) -> dict[str, Any]:
    """Sign an exported bundle's manifest (the name, size and SHA-256 of each file) with Ed25519.

    The certificate covers the released data; the manifest also covers what
    travels beside it (the validation report), and without a signature whoever
    edits such a file could rewrite its hash too. ``signature`` {algorithm,
    key_id, public_key, development_key, value} signs the RFC 8785 canonical
    JSON of everything else.

    Returns:
        A new dict with ``schema`` and ``signature``.
    """
    payload = _plain({**payload_of(manifest), "schema": MANIFEST_SCHEMA}, "manifest")
    signed = dict(payload)
    signed["signature"] = {
        "algorithm": SIGNATURE_ALGORITHM,
        "key_id": key.key_id,
        "public_key": key.public_key_b64,
        "development_key": key.development,
        "value": base64.b64encode(key.sign(canonical_json(payload))).decode("ascii"),
    }
    return signed


# --------------------------------------------------------------------------- verification


@dataclass
class VerificationResult:
    """What `verify_certificate` found.

    Attributes:
        ok: True when there is no problem.
        problems: one readable line per problem.
        checked_files: per released file checked under the data folder:
            {name, expected_sha256, actual_sha256 (None when missing), ok}.
        notes: facts that are not problems (e.g. a development key signed it).
        bundle_files: per file of an exported bundle checked against its
            manifest: {name, status} with status "ok", "changed", "missing" or
            "not in the manifest".
        pdf_file: the PDF checked: {name, ok, layout} (layout "current", or
            "earlier" for a certificate issued before the current layout);
            None when no PDF was given.
        certificate_id, tenant, payload_sha256: read from the certificate (None when unreadable).
    """

    ok: bool
    problems: list[str]
    checked_files: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    certificate_id: str | None = None
    tenant: str | None = None
    payload_sha256: str | None = None
    bundle_files: list[dict[str, Any]] = field(default_factory=list)
    pdf_file: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "problems": list(self.problems), "checked_files": list(self.checked_files),
            "notes": list(self.notes), "certificate_id": self.certificate_id, "tenant": self.tenant,
            "payload_sha256": self.payload_sha256, "bundle_files": list(self.bundle_files),
            "pdf_file": self.pdf_file,
        }


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard number {name}")


def read_certificate(path: Path | str) -> dict[str, Any]:
    """Parse a certificate JSON file strictly (no duplicate keys, no NaN or Infinity).

    Raises:
        CertificateError: the file cannot be read or is not such a JSON object.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise CertificateError(f"cannot read the certificate {str(path)!r}: {error}.", file=str(path),
                               fix="pass the certificate JSON file the privacy_certificate asset wrote.") from None
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except ValueError as error:
        raise CertificateError(f"the certificate {str(path)!r} is not valid JSON ({error}).", file=str(path),
                               fix="restore the certificate file as it was issued.") from None
    if not isinstance(document, dict):
        raise CertificateError(f"the certificate {str(path)!r} is not a JSON object.", file=str(path),
                               fix="pass the certificate JSON file the privacy_certificate asset wrote.")
    return document


def _released_path(data_dir: Path, name: str) -> Path | None:
    """data_dir/name when it stays inside data_dir (after resolving links), else None."""
    base = data_dir.resolve()
    if not name or "\x00" in name or Path(name).is_absolute():
        return None
    target = base.joinpath(name).resolve()
    return target if target.is_relative_to(base) and target != base else None


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _check_signature(document: Mapping[str, Any], trusted_keys: Sequence[str | TrustedKey] | None,
                     problems: list[str], notes: list[str], environment: str = "development") -> str | None:
    """Append signature problems; return the recomputed payload hash (None when it cannot be computed)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    signature = document.get("signature")
    needed = ("algorithm", "key_id", "public_key", "payload_sha256", "value")
    if not isinstance(signature, Mapping) or any(not isinstance(signature.get(k), str) for k in needed):
        problems.append("the certificate has no complete signature block (algorithm, key_id, public_key, "
                        "payload_sha256, value): it is unsigned or was cut")
        return None
    if signature["algorithm"] != SIGNATURE_ALGORITHM:
        problems.append(f"signature algorithm is {signature['algorithm']!r}; only {SIGNATURE_ALGORITHM} is accepted")
        return None
    try:
        data = canonical_json(payload_of(document), "certificate")
    except JsonValueError as error:
        problems.append(f"the certificate content cannot be canonicalised: {error.reason}")
        return None
    actual = hashlib.sha256(data).hexdigest()
    hash_ok = actual == signature["payload_sha256"]
    if not hash_ok:
        problems.append(f"the certificate content was changed after signing: its payload SHA-256 is {actual}, "
                        f"the signature block says {signature['payload_sha256']}")
    try:
        public_raw = base64.b64decode(signature["public_key"], validate=True)
        public_key = Ed25519PublicKey.from_public_bytes(public_raw)
        value = base64.b64decode(signature["value"], validate=True)
    except (ValueError, TypeError):
        problems.append("the signature block's public key or signature value is not valid base64 Ed25519 data")
        return actual
    if key_id_of(public_raw) != signature["key_id"]:
        problems.append(f"the signature block's key_id {signature['key_id']} is not the id of its public key "
                        f"({key_id_of(public_raw)})")
    signing_key = document.get("signing_key")
    if not isinstance(signing_key, Mapping) or (signing_key.get("key_id"), signing_key.get("public_key")) != (
        signature["key_id"], signature["public_key"]
    ) or bool(signing_key.get("development")) != bool(signature.get("development_key")):
        problems.append("the signed signing_key block does not name the key (or development flag) of the signature block")
    try:
        public_key.verify(value, data)
    except InvalidSignature:
        if hash_ok:
            problems.append(f"the Ed25519 signature does not match the certificate content for key {signature['key_id']}: "
                            "the certificate was changed after signing or was signed by another key")
        else:
            problems.append(f"the Ed25519 signature of key {signature['key_id']} therefore does not verify")
    if trusted_keys is not None and not ({signature["key_id"], signature["public_key"]} & _trust_index(trusted_keys)):
        problems.append(f"the certificate is signed by key {signature['key_id']}, which is not among the trusted keys: "
                        f"if its issuer published this key id to you, trust it with `{TRUST_COMMAND}` "
                        f"(or pass --trust {signature['key_id']} for this check only)")
    if (signing_key or {}).get("development") or signature.get("development_key"):
        notes.append(f"signed with a development key ({signature['key_id']}): {DEVELOPMENT_BANNER}")
        if environment == "production":
            problems.append(f"the certificate is signed with a development key ({signature['key_id']}), which "
                            "production (CREDITTWIN_ENV=production) never accepts: have the release re-certified "
                            "with the deployment's production key")
    return actual


def _trust_index(trusted_keys: Sequence[str | TrustedKey]) -> set[str]:
    """The key ids and base64 public keys of `trusted_keys` (ids or keys as text, or `TrustedKey`s)."""
    index: set[str] = set()
    for key in trusted_keys:
        if isinstance(key, TrustedKey):
            index |= {key.key_id, key.public_key}
        else:
            index.add(str(key).strip())
    return index


def verify_certificate(
    certificate: Path | str | Mapping[str, Any],
    *,
    data_dir: Path | str | None = None,
    trusted_keys: Sequence[str | TrustedKey] | None = None,
    pdf_path: Path | str | None = None,
    manifest_path: Path | str | None = None,
    environment: str = "development",
    now: datetime | None = None,
) -> VerificationResult:
    """Check a certificate: signature, trust, validity, released files, its PDF and its bundle's manifest.

    Args:
        certificate: the certificate JSON file, or its parsed dict.
        data_dir: the folder holding the released files; each is re-hashed at
            ``data_dir/<name>`` (a name leaving the folder is a problem).
        trusted_keys: key ids, base64 public keys or `TrustedKey`s accepted as
            signers (``credittwin verify`` passes `deployment_trust`); None
            checks integrity only, against the key embedded in the certificate.
        pdf_path: the certificate's PDF; it must exist, carry the payload
            SHA-256 and say what the PDF rendered afresh from the JSON says.
        manifest_path: the ``manifest.json`` of an exported bundle: it must be
            signed by the certificate's key (or a trusted one) and name this
            certificate; every file it lists is re-hashed, and a file of its
            folder it does not list is a problem.
        environment: "production" refuses a development key.
        now: the time to check validity against (default: the current UTC time).

    Returns:
        A `VerificationResult`; `ok` is False when any problem was found. A
        development key is always a note, and a problem in production or when
        `trusted_keys` does not hold it.
    """
    problems: list[str] = []
    notes: list[str] = []
    checked: list[dict[str, Any]] = []
    if isinstance(certificate, Mapping):
        document: Mapping[str, Any] = certificate
    else:
        try:
            document = read_certificate(certificate)
        except CertificateError as error:
            return VerificationResult(ok=False, problems=[error.reason])
    result = VerificationResult(ok=False, problems=problems, checked_files=checked, notes=notes,
                                certificate_id=document.get("certificate_id"), tenant=document.get("tenant"))
    result.payload_sha256 = _check_signature(document, trusted_keys, problems, notes, environment)

    if document.get("schema") != CERTIFICATE_SCHEMA:
        problems.append(f"schema is {document.get('schema')!r}, not {CERTIFICATE_SCHEMA!r}")
    issued, until = _parse_time(document.get("issued_at")), _parse_time(document.get("valid_until"))
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    if issued is None or until is None:
        problems.append("issued_at or valid_until is missing or not an ISO time with a time zone")
    else:
        if moment > until:
            problems.append(f"the certificate expired on {until.isoformat()} (checked at {moment.isoformat(timespec='seconds')})")
        if moment + CLOCK_SKEW < issued:
            problems.append(f"the certificate is dated in the future ({issued.isoformat()})")
    rules = document.get("rules")
    if document.get("verdict") != "pass" or not isinstance(rules, list) or not rules or not all(
        isinstance(r, Mapping) and r.get("passed") is True for r in rules
    ):
        problems.append("the certificate does not record a passed audit (verdict or a rule is not 'pass')")

    if data_dir is not None:
        root = Path(data_dir)
        files = document.get("released_files")
        if not isinstance(files, list) or not files:
            problems.append("the certificate names no released file to check")
            files = []
        for entry in files:
            name = entry.get("name") if isinstance(entry, Mapping) else None
            expected = entry.get("sha256") if isinstance(entry, Mapping) else None
            path = _released_path(root, name) if isinstance(name, str) else None
            if path is None:
                problems.append(f"released file {name!r} is not a name inside {str(root)!r}")
                checked.append({"name": name, "expected_sha256": expected, "actual_sha256": None, "ok": False})
                continue
            if not path.is_file():
                problems.append(f"released file {name!r} is missing from {str(root)!r} (expected sha256 {expected})")
                checked.append({"name": name, "expected_sha256": expected, "actual_sha256": None, "ok": False})
                continue
            actual = sha256_file(path)
            ok = actual == expected
            if not ok:
                problems.append(f"released file {name!r} does not match the certificate: expected sha256 {expected}, "
                                f"found {actual}")
            checked.append({"name": name, "expected_sha256": expected, "actual_sha256": actual, "ok": ok})

    if pdf_path is not None:
        result.pdf_file = _check_pdf(Path(pdf_path), document, result.payload_sha256, problems, notes)
    if manifest_path is not None:
        # files the certificate's own check just hashed (under --data) are not read twice
        hashed = {(root / e["name"]).resolve(): e["actual_sha256"] for e in checked if e.get("actual_sha256")} if data_dir else {}
        result.bundle_files = _check_manifest(Path(manifest_path), document, result.payload_sha256, trusted_keys,
                                              problems, hashed, notes)

    result.ok = not problems
    return result


def _check_pdf(path: Path, document: Mapping[str, Any], payload_hash: str | None, problems: list[str],
               notes: list[str]) -> dict[str, Any]:
    """Append the PDF's problems; return its status {name, ok, layout}.

    The PDF must carry the payload hash and say what the JSON says: its text
    (white space aside) equals that of the PDF rendered afresh from the JSON,
    in the current layout or, for a certificate issued before it, the earlier
    one (`render_certificate_pdf_v1`).
    """
    status: dict[str, Any] = {"name": path.name, "ok": False, "layout": None}
    before = len(problems)
    if not path.exists():
        problems.append(f"the certificate's PDF {str(path)!r} is missing: a certificate is issued as its JSON and its "
                        "PDF together; put certificate.pdf back beside the JSON, or name it with --pdf")
        return {**status, "missing": True}
    try:
        text = pdf_text(path.read_bytes())
    except OSError as error:
        problems.append(f"the PDF {str(path)!r} cannot be read: {error.strerror or error}")
        return status
    except Exception as error:  # pypdf raises many types on a damaged file
        problems.append(f"the PDF {str(path)!r} is not a readable PDF ({type(error).__name__}: {error})")
        return status
    squeezed = _squeeze(text)
    if payload_hash is not None and payload_hash not in squeezed:
        problems.append(f"the PDF {str(path)!r} does not carry the certificate's payload SHA-256 {payload_hash}")
    try:
        expected = _squeeze(pdf_text(render_certificate_pdf(document)))
        layout = "current" if squeezed == expected else None
        if layout is None and "summary" not in document:
            # issued before the current layout: its PDF is in the earlier one
            layout = "earlier" if squeezed == _squeeze(pdf_text(render_certificate_pdf_v1(document))) else None
    except Exception as error:  # a damaged certificate may not render
        problems.append(f"the PDF cannot be compared: the certificate does not render ({type(error).__name__}: {error})")
        return status
    if layout is None:
        at = next((i for i, (a, b) in enumerate(zip(squeezed, expected)) if a != b), min(len(squeezed), len(expected)))
        problems.append(f"the PDF {str(path)!r} does not say what the certificate JSON says (its text differs near "
                        f"{expected[max(at - 30, 0):at + 30]!r})")
    elif layout == "earlier":
        notes.append(f"the PDF {path.name} is in the layout of certificates issued before the executive summary; it "
                     "says what the JSON says (certificates issued from now on carry the new layout)")
    return {**status, "ok": len(problems) == before, "layout": layout}


def _manifest_signer(manifest: Mapping[str, Any]) -> str | None:
    """The key id whose valid signature the manifest carries, or None."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    signature = manifest.get("signature")
    if not isinstance(signature, Mapping) or signature.get("algorithm") != SIGNATURE_ALGORITHM:
        return None
    try:
        public_raw = base64.b64decode(str(signature.get("public_key")), validate=True)
        value = base64.b64decode(str(signature.get("value")), validate=True)
        Ed25519PublicKey.from_public_bytes(public_raw).verify(value, canonical_json(payload_of(manifest), "manifest"))
    except (ValueError, TypeError, InvalidSignature, JsonValueError):
        return None
    return key_id_of(public_raw)


def recorded_verdicts(verdicts: Any) -> list[str]:
    """One line per report whose verdict a bundle's manifest records as other than a pass, and per caveat.

    `verdicts` is the manifest's ``verdicts`` member (`pipelines.release.report_verdicts`).
    """
    lines: list[str] = []
    if not isinstance(verdicts, Mapping):
        return lines
    for report, entry in verdicts.items():
        if not isinstance(entry, Mapping):
            continue
        if entry.get("verdict") != "pass":
            findings = [str(f) for f in entry.get("findings") or []]
            lines.append(f"{report} verdict {str(entry.get('verdict')).upper()}"
                         + (": " + "; ".join(findings) if findings else ""))
        lines.extend(f"{report} caveat: {caveat}" for caveat in entry.get("caveats") or [])
    return lines


def _check_manifest(path: Path, document: Mapping[str, Any], payload_hash: str | None,
                    trusted_keys: Sequence[str | TrustedKey] | None, problems: list[str],
                    hashed: Mapping[Path, str] | None = None, notes: list[str] | None = None) -> list[dict[str, Any]]:
    """Append the problems of an exported bundle against its signed manifest; return each file's status.

    Every file the manifest lists is re-hashed; a file the certificate also
    certifies must be listed with the certified hash; a file of the folder the
    manifest does not list is a problem. The failing or warning verdicts the
    manifest records are added to `notes`. `hashed` maps resolved paths to
    SHA-256s already computed by this verification.
    """
    notes = notes if notes is not None else []
    folder = path.parent
    try:
        manifest = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=_no_duplicates,
                              parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, ValueError) as error:
        problems.append(f"the bundle's {MANIFEST_NAME} cannot be read ({error}): export the bundle again")
        return []
    entries = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(entries, list) or manifest.get("schema") != MANIFEST_SCHEMA:
        # e.g. the manifest of a stored asset version, which is not signed: such a folder is no release bundle
        problems.append(f"the {MANIFEST_NAME} beside the certificate is not a release bundle's manifest "
                        f"({MANIFEST_SCHEMA}): verify the bundle `credittwin export` wrote")
        return []
    signer = _manifest_signer(manifest)
    block = document.get("signature")
    certificate_signer = block.get("key_id") if isinstance(block, Mapping) else None
    if signer is None:
        problems.append(f"the bundle's {MANIFEST_NAME} has no valid signature, so the hashes it lists could have been "
                        "rewritten with the files: export the bundle again with `credittwin export`")
    elif signer != certificate_signer and (trusted_keys is None or signer not in _trust_index(trusted_keys)):
        problems.append(f"the bundle's {MANIFEST_NAME} is signed by key {signer}, which neither signed the certificate "
                        "nor is trusted: export the bundle again")
    if payload_hash is not None and manifest.get("payload_sha256") != payload_hash:
        problems.append(f"the bundle's {MANIFEST_NAME} was written for another certificate (payload SHA-256 "
                        f"{manifest.get('payload_sha256')}, this certificate's is {payload_hash})")
    certified = {f.get("name"): f.get("sha256") for f in document.get("released_files") or [] if isinstance(f, Mapping)}
    statuses: list[dict[str, Any]] = []
    listed: set[str] = set()
    for entry in entries:
        name = entry.get("name") if isinstance(entry, Mapping) else None
        target = _released_path(folder, name) if isinstance(name, str) else None
        if target is None:
            problems.append(f"the bundle's {MANIFEST_NAME} lists {name!r}, which is not a name inside {str(folder)!r}")
            continue
        listed.add(str(target.relative_to(folder.resolve())))
        if not target.is_file():
            problems.append(f"bundle file {name!r} listed in {MANIFEST_NAME} is missing")
            statuses.append({"name": name, "status": "missing"})
            continue
        actual, size = (hashed or {}).get(target.resolve()) or sha256_file(target), target.stat().st_size
        if name in certified and entry.get("sha256") != certified[name]:
            problems.append(f"the bundle's {MANIFEST_NAME} lists {name!r} with sha256 {entry.get('sha256')}, but the "
                            f"certificate certifies sha256 {certified[name]}: export the bundle again")
            statuses.append({"name": name, "status": "not certified"})
        elif actual != entry.get("sha256") or size != entry.get("bytes"):
            problems.append(f"bundle file {name!r} was changed after export: {MANIFEST_NAME} says {entry.get('bytes')} "
                            f"bytes, sha256 {entry.get('sha256')}; found {size} bytes, sha256 {actual}")
            statuses.append({"name": name, "status": "changed"})
        else:
            statuses.append({"name": name, "status": "ok"})
    for line in recorded_verdicts(manifest.get("verdicts")):
        notes.append(f"{MANIFEST_NAME} records: {line}")
    for item in sorted(folder.resolve().rglob("*")):
        relative = str(item.relative_to(folder.resolve()))
        if item.is_file() and relative != MANIFEST_NAME and relative not in listed:
            problems.append(f"{relative!r} is in the bundle but not in its {MANIFEST_NAME}: it is not part of the "
                            "exported release; remove it, or export the bundle again")
            statuses.append({"name": relative, "status": "not in the manifest"})
    return statuses
