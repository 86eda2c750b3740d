"""`credittwin audit`: a tenant's lineage from its upload to its latest certificate, and whether its chain holds.

The lineage audit trail (`resources.lineage`) holds one hash-chained record per
stored output, written by the IO manager (`resources.lineage_recording`). A
reviewer asks two questions of it:

- "Show me how the current certificate was made, and prove the log was not
  altered": `audit_tenant` verifies the tenant's chain — every record's hash,
  the links, the head, and the anchors Dagster recorded outside the lineage
  database (each materialization's ``lineage_seq`` / ``lineage_record_hash``
  metadata) — and walks from the latest ``privacy_certificate`` record
  upstream to the upload.
- "Where did this released file come from?": with a file, it hashes the file,
  finds the records that wrote it, walks upstream (the upload, the runs, the
  models: ``fitted_copula``, ``lstm_cascade``, ``risk_model``) and downstream
  (the certificate that covers it; or the file is a certificate's own file).

`format_audit` renders the answer as text, `AuditResult.to_dict` as JSON. The
command exits 0 when the chain verifies (and the file was found), 1 otherwise;
a tenant with no trail at all is a `LineageError` (exit 2, like other bad input).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.tape.tenant import validate_tenant_id
from resources.lineage import ChainReport, LineageError, LineageRecord, LineageTrail, format_lineage
from resources.lineage_recording import UPLOAD_INPUT

UPLOAD_ASSET = "raw_loan_tape"
CERTIFICATE_ASSET = "privacy_certificate"
MODEL_ASSETS = ("fitted_copula", "lstm_cascade", "risk_model")
ANCHORS_PER_ASSET = 500
"""How many of each asset's newest Dagster materializations are read for anchors."""


@dataclass
class FileAnswer:
    """Which upload, runs, models and certificate produced one file.

    Attributes:
        path: the file asked about; sha256: its SHA-256.
        producers: the records that wrote a file with these bytes (oldest first).
        upstream: the records those derive from, up to the upload (oldest first).
        downstream: the records that consumed them (e.g. the certificate).
        uploads: the upload SHA-256s at the root.
        runs: the run ids of the producers and their upstream.
        models: the model records upstream (`MODEL_ASSETS`).
        certificates: certificate records among the producers and downstream, with their ids.
    """

    path: str
    sha256: str
    producers: list[LineageRecord]
    upstream: list[LineageRecord]
    downstream: list[LineageRecord]
    uploads: list[str]
    runs: list[str]
    models: list[LineageRecord]
    certificates: list[tuple[LineageRecord, str | None]]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "found": bool(self.producers),
            "written_by": [_brief(r, file_hash=self.sha256) for r in self.producers],
            "uploads": self.uploads,
            "runs": self.runs,
            "models": [_brief(r) for r in self.models],
            "certificates": [{**_brief(r), "certificate_id": cid} for r, cid in self.certificates],
            "upstream": [r.to_dict() for r in self.upstream],
            "downstream": [r.to_dict() for r in self.downstream],
        }


@dataclass
class AuditResult:
    """The verdict on a tenant's chain and the lineage shown.

    Attributes:
        tenant: the tenant audited.
        report: the chain verification (`LineageTrail.verify`, with anchors).
        records: the records shown: the latest certificate's lineage, or every record.
        certificate: the latest certificate record, or None; certificate_id its id when still stored.
        uploads: the upload SHA-256s at the root of `records`.
        anchors: how many anchors from Dagster's event log were checked; anchor_note why none, if none.
        file: the answer about a file, when one was asked.
    """

    tenant: str
    report: ChainReport
    records: list[LineageRecord]
    certificate: LineageRecord | None = None
    certificate_id: str | None = None
    uploads: list[str] = field(default_factory=list)
    anchors: int = 0
    anchor_note: str | None = None
    file: FileAnswer | None = None

    @property
    def ok(self) -> bool:
        """True when the chain verifies and, if a file was asked about, the trail knows it."""
        return self.report.ok and (self.file is None or bool(self.file.producers))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (``credittwin audit --json``)."""
        return {
            "tenant": self.tenant,
            "ok": self.ok,
            "chain": self.report.to_dict(),
            "anchors_checked": self.anchors,
            "anchor_note": self.anchor_note,
            "certificate": None
            if self.certificate is None
            else {**_brief(self.certificate), "certificate_id": self.certificate_id},
            "uploads": self.uploads,
            "records": [r.to_dict() for r in self.records],
            "file": None if self.file is None else self.file.to_dict(),
        }


def _brief(record: LineageRecord, *, file_hash: str | None = None) -> dict[str, Any]:
    brief = {
        "seq": record.seq,
        "id": record.id,
        "asset": record.asset,
        "run_id": record.run_id,
        "output_hash": record.output_hash,
        "code_version": record.code_version,
        "recorded_at": record.recorded_at,
        "privacy_charged": record.privacy_charged,
    }
    if file_hash is not None:
        brief["as"] = sorted(name for name, digest in record.output_files.items() if digest == file_hash)
    return brief


def dagster_anchors(instance: Any, tenant: str, assets: Iterable[str]) -> dict[int, str]:
    """seq -> record_hash from the ``lineage_seq``/``lineage_record_hash`` metadata of the tenant's materializations.

    Dagster's event log is a second store the lineage database's owner does
    not control alone, so a chain rewritten inside the database no longer
    matches it. The newest `ANCHORS_PER_ASSET` materializations of each asset
    are read.
    """
    import dagster as dg

    anchors: dict[int, str] = {}
    for asset in sorted(set(assets)):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey.from_user_string(asset), asset_partitions=[tenant]),
            limit=ANCHORS_PER_ASSET,
        ).records
        for record in records:
            materialization = record.asset_materialization
            if materialization is None:
                continue
            seq = materialization.metadata.get("lineage_seq")
            digest = materialization.metadata.get("lineage_record_hash")
            if seq is not None and digest is not None:
                anchors.setdefault(int(seq.value), str(digest.value))
    return anchors


def certificate_id_of(storage, tenant: str, record: LineageRecord) -> str | None:
    """The certificate id of a ``privacy_certificate`` record, read from its stored version while it is kept.

    `storage` is the data root outputs are stored under (`resources.objectstore.open_root`: a local folder or
    object storage); the version is the one whose manifest's content hash is the record's output hash.
    """
    from resources.storage import open_store

    try:
        store = open_store(storage, [CERTIFICATE_ASSET], tenant)
        versions = store.versions()
    except Exception:  # noqa: BLE001 - an unusable path or unreachable store means nothing can be read there
        return None
    for version in reversed(versions):
        try:
            stored = store.read(version, parts=("summary",))  # the manifest and one small document, not the PDF
        except (OSError, ValueError, KeyError):
            continue
        if stored.manifest.get("content_sha256") != record.output_hash:
            continue
        value = stored.documents.get("summary", {}).get("certificate_id")
        return str(value) if value else None
    return None


def _uploads(records: Iterable[LineageRecord]) -> list[str]:
    return sorted({r.input_hashes[UPLOAD_INPUT] for r in records if r.asset == UPLOAD_ASSET and UPLOAD_INPUT in r.input_hashes})


def _merge(*groups: Iterable[LineageRecord]) -> list[LineageRecord]:
    merged: dict[int, LineageRecord] = {}
    for group in groups:
        for record in group:
            merged[record.seq] = record
    return [merged[seq] for seq in sorted(merged)]


def answer_file(trail: LineageTrail, storage: Any, tenant: str, path: Path) -> FileAnswer:
    """Which upload, runs, models and certificate produced the file at `path` (see `FileAnswer`).

    Raises:
        LineageError: `path` is not a file.
        LineageUnavailableError: the database failed.
    """
    from models.files import sha256_file

    if not path.is_file():
        raise LineageError(f"{str(path)!r} is not a file.", tenant=tenant, fix="pass the path of a released file.")
    digest = sha256_file(path)
    producers = trail.find_file(digest, tenant=tenant)
    upstream: list[LineageRecord] = []
    downstream: list[LineageRecord] = []
    for output in sorted({r.output_hash for r in producers}):
        upstream = _merge(upstream, trail.trace(tenant, output))
        downstream = _merge(downstream, trail.downstream(tenant, output))
    lineage = _merge(producers, upstream)
    certificates = [r for r in _merge(producers, downstream) if r.asset == CERTIFICATE_ASSET]
    return FileAnswer(
        path=str(path),
        sha256=digest,
        producers=producers,
        upstream=[r for r in upstream if r.seq not in {p.seq for p in producers}],
        downstream=downstream,
        uploads=_uploads(lineage),
        runs=sorted({r.run_id for r in lineage}),
        models=[r for r in lineage if r.asset in MODEL_ASSETS],
        certificates=[(r, certificate_id_of(storage, tenant, r)) for r in certificates],
    )


def audit_tenant(
    settings: Any,
    tenant: str,
    *,
    file: Path | None = None,
    instance: Any = None,
    show_all: bool = False,
) -> AuditResult:
    """Verify `tenant`'s lineage chain and gather the lineage to show (see the module docstring).

    Args:
        settings: `resources.settings.Settings` (the trail's URL and the data dir).
        tenant: the tenant to audit.
        file: a released file to trace, or None.
        instance: the Dagster instance to read anchors from, or None for none.
        show_all: show every record instead of the latest certificate's lineage.

    Raises:
        InvalidTenantError: an invalid tenant id.
        LineageError: the tenant has no lineage trail, or `file` is not a file.
        LineageUnavailableError: the database failed.
    """
    tenant = validate_tenant_id(tenant)
    with LineageTrail(settings.lineage) as trail:
        trail.migrate()
        history = trail.history(tenant)
        if not history and tenant not in trail.tenants():
            known = trail.tenants()
            raise LineageError(
                "has no lineage records: it was never materialized with this lineage database "
                f"({'tenants with a trail: ' + ', '.join(known[:20]) if known else 'no tenant has a trail yet'}).",
                tenant=tenant,
                fix=f"check the tenant id, or materialize it first (`credittwin materialize {tenant}`).",
            )
        anchors: dict[int, str] = {}
        note = None
        if instance is None:
            note = "no Dagster instance given: anchors not checked"
        else:
            try:
                anchors = dagster_anchors(instance, tenant, {r.asset for r in history})
            except Exception as error:  # noqa: BLE001 - the chain is still verified on its own
                note = f"anchors not checked: Dagster's event log could not be read ({type(error).__name__}: {error})"
            else:
                if not anchors:
                    note = "Dagster's event log holds no lineage anchors for this tenant"
        report = trail.verify(tenant, anchors=anchors)
        certificate = trail.latest(tenant, CERTIFICATE_ASSET)
        answer = answer_file(trail, settings.storage_root(), tenant, Path(file)) if file is not None else None
        if show_all or certificate is None:
            records = history
        else:
            records = trail.trace(tenant, certificate.output_hash)
    return AuditResult(
        tenant=tenant,
        report=report,
        records=records,
        certificate=certificate,
        certificate_id=certificate_id_of(settings.storage_root(), tenant, certificate) if certificate else None,
        uploads=_uploads(records),
        anchors=len(anchors),
        anchor_note=note,
        file=answer,
    )


def _short_charge(charged: Any) -> str:
    if not isinstance(charged, Mapping):
        return ""
    if charged.get("epsilon") is None:
        return f"  privacy: charge {charged.get('ledger_charge_id')} (not in the ledger!)"
    how = "charged in this run" if charged.get("new_charge") else f"re-used, charged in run {charged.get('charged_in_run')}"
    return (
        f"  privacy: epsilon={charged['epsilon']:.4g} delta={charged['delta']:.3g} "
        f"(ledger charge {charged['ledger_charge_id']}, {how})"
    )


def _record_line(record: LineageRecord) -> str:
    return (
        f"{record.asset} (record seq {record.seq}, run {record.run_id}, output {record.output_hash[:16]}, "
        f"code {record.code_version or '-'})"
    )


def _ascii(lines: Sequence[str]) -> str:
    return "\n".join(line.encode("ascii", "replace").decode("ascii") for line in lines)


def format_audit(result: AuditResult) -> str:
    """The text ``credittwin audit`` prints: the chain verdict, the lineage shown and the file's answer."""
    lines: list[str] = []
    report = result.report
    if report.ok:
        anchors = f", {result.anchors} anchor(s) from Dagster's event log agree" if result.anchors else ""
        lines.append(f"Chain of tenant '{result.tenant}' verifies: {report.records} record(s){anchors}.")
    else:
        where = "the chain head" if report.first_broken is None else f"record seq {report.first_broken}"
        record_id = "" if report.first_broken_id is None else f" (id {report.first_broken_id})"
        lines.append(f"Chain of tenant '{result.tenant}' is BROKEN at {where}{record_id}: {report.reason}")
    if result.anchor_note:
        lines.append(f"  note: {result.anchor_note}")
    if result.certificate is not None:
        lines.append(
            f"Latest certificate: {result.certificate_id or '(no longer stored)'} - {_record_line(result.certificate)}"
        )
    else:
        lines.append("No certificate has been issued yet; showing every record.")
    for upload in result.uploads:
        lines.append(f"Upload: sha256 {upload}")
    answer = result.file
    if answer is not None:
        lines.append("")
        lines.append(f"File {answer.path} (sha256 {answer.sha256}):")
        if not answer.producers:
            lines.append("  no lineage record of this tenant wrote a file with these bytes.")
        for record in answer.producers:
            names = ", ".join(sorted(n for n, d in record.output_files.items() if d == answer.sha256)) or "its output"
            lines.append(f"  written as {names} by {_record_line(record)}")
        for upload in answer.uploads:
            lines.append(f"  from upload sha256 {upload}")
        for run in answer.runs:
            lines.append(f"  run {run}")
        for record in answer.models:
            lines.append(f"  model {_record_line(record)}{_short_charge(record.privacy_charged)}")
        for record, cid in answer.certificates:
            lines.append(f"  certificate {cid or '(no longer stored)'}: {_record_line(record)}")
        if answer.producers and not answer.certificates:
            lines.append("  no certificate covers it yet.")
        shown = _merge(answer.upstream, answer.producers, answer.downstream)
        lines.append("")
        lines.append(format_lineage(shown))
    else:
        lines.append("")
        lines.append(format_lineage(result.records))
    return _ascii(lines)
