"""Recording every stored asset output in the lineage audit trail (the IO manager's side of `resources.lineage`).

Where: `resources.storage.TenantStorageIOManager` stores every output of every
run — a `credittwin materialize`, a sensor run, an automation run, a backfill,
a re-execution — so it is the one place no asset can forget. Its
``handle_output`` writes the version, moves ``CURRENT`` and only then calls
`LineageRecorder.record_output`, so a record never names an output that is not
stored. A failed append fails the step *after* the output is stored: the
retry (or re-execution) stores the same content again and appends with the
same (tenant, asset, run id, output hash), which `LineageTrail.append` turns
into the first record when it had in fact committed, so nothing is duplicated.
A DP asset that re-releases its stored output under an existing charge goes
through ``handle_output`` too: a new record with the same output hash, the new
run and the charge it re-uses.

What a record holds (`output_entry`):

- ``output_hash`` and ``data_version``: the manifest's ``content_sha256``.
  Dagster's own data version of an output is only computed after the IO
  manager returns (and a user-provided one is not visible to it), so the
  content hash is the version the trail can state exactly.
- ``output_files``: every stored file's SHA-256 from the manifest (relative
  names such as ``release/loans.csv`` and ``certificate.json``), so
  ``credittwin audit <tenant> --file`` finds a released file.
- ``input_hashes``: the ``content_sha256`` of each upstream output this step
  actually loaded (`note_input`, per run and step), plus, for an output that
  carries an ``ingest`` document (``raw_loan_tape``), the upload's SHA-256 as
  the input ``"upload"``. ``input_versions``: Dagster's data version of the
  upstream materialization whose recorded ``content_sha256`` is the one
  loaded, when the instance has it, else the content hash.
- ``code_version``: the asset's ``code_version`` and the code's version
  (`resources.settings.code_version`, the git commit), as ``"<asset>+<code>"``.
- ``privacy_charged``: the ledger charge named by the output's ``privacy``
  document when this asset made that charge (downstream assets copy the
  document; they charged nothing), with whether this run made it or re-used it.

The trail lives in the ledger's database (``settings.ledger``), so the charge
is read from the same URL.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from resources.lineage import LineageEntry, LineageRecord, LineageTrail
from resources.settings import code_version

logger = logging.getLogger(__name__)

UPLOAD_INPUT = "upload"
"""The input name under which a raw tape's record holds the upload's SHA-256."""


def output_files(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Relative file name -> SHA-256 of every file a manifest lists."""
    return {name: info["sha256"] for name, info in manifest.get("files", {}).items() if info.get("sha256")}


def upload_sha256(documents: Mapping[str, Any]) -> str | None:
    """The upload's SHA-256 recorded in an ``ingest`` document (``raw_loan_tape``), or None."""
    ingest = documents.get("ingest")
    value = ingest.get("upload_sha256") if isinstance(ingest, Mapping) else None
    return value if isinstance(value, str) and value else None


def combined_code_version(asset_code_version: str | None) -> str:
    """``"<asset code version>+<code version>"``, e.g. ``"2+git:4991f9b...-dirty"``."""
    return f"{asset_code_version or '-'}+{code_version()}"


def privacy_charged(ledger_url: str, tenant: str, asset: str, run_id: str, documents: Mapping[str, Any]) -> dict | None:
    """The ledger charge this asset made for its output, as stored in the record; None when it charged nothing.

    Args:
        ledger_url: the ledger's database (the trail's).
        tenant, asset, run_id: the materialization being recorded.
        documents: the output's JSON documents; ``privacy.ledger_charge_id`` names the charge.

    Returns:
        ``{"ledger_charge_id", "epsilon", "delta", "accountant", "idempotency_hash", "charged_in_run",
        "new_charge"}`` (``new_charge`` False when this run re-released an output charged before), or None
        when the output names no charge or the charge belongs to an upstream asset.

    Raises:
        LedgerUnavailableError: the ledger could not be read.
    """
    from resources.ledger import PrivacyLedger

    privacy = documents.get("privacy")
    charge_id = privacy.get("ledger_charge_id") if isinstance(privacy, Mapping) else None
    if charge_id is None:
        return None
    with PrivacyLedger(ledger_url) as ledger:
        charges = ledger.status(tenant).charges
    charge = next((c for c in charges if c.id == charge_id), None)
    if charge is None:
        # the document names a charge the ledger does not hold: record what the output claims, visibly
        return {
            "ledger_charge_id": charge_id,
            "idempotency_hash": privacy.get("idempotency_hash"),
            "found_in_ledger": False,
        }
    if charge.asset != asset:
        return None
    return {
        "ledger_charge_id": charge.id,
        "epsilon": charge.epsilon,
        "delta": charge.delta,
        "accountant": charge.accountant,
        "idempotency_hash": charge.idempotency_hash,
        "charged_in_run": charge.run_id,
        "new_charge": charge.run_id == run_id,
    }


def output_entry(
    *,
    tenant: str,
    asset: str,
    run_id: str,
    manifest: Mapping[str, Any],
    documents: Mapping[str, Any],
    asset_code_version: str | None,
    inputs: Mapping[str, tuple[str, str]],
    ledger_url: str,
) -> LineageEntry:
    """The `LineageEntry` of one stored output (see the module docstring for each field).

    Args:
        inputs: upstream asset -> (data version, content hash) as loaded by the step.

    Raises:
        LineageError: a field that cannot be recorded.
        LedgerUnavailableError: the ledger could not be read for the charge.
    """
    content = manifest["content_sha256"]
    input_versions = {name: version for name, (version, _) in inputs.items()}
    input_hashes = {name: digest for name, (_, digest) in inputs.items()}
    upload = upload_sha256(documents)
    if upload is not None:
        input_versions[UPLOAD_INPUT] = upload
        input_hashes[UPLOAD_INPUT] = upload
    return LineageEntry(
        tenant=tenant,
        asset=asset,
        run_id=run_id,
        output_hash=content,
        partition_key=tenant,
        data_version=content,
        input_versions=input_versions,
        input_hashes=input_hashes,
        output_files=output_files(manifest),
        code_version=combined_code_version(asset_code_version),
        privacy_charged=privacy_charged(ledger_url, tenant, asset, run_id, documents),
    )


def dagster_input_version(instance: Any, asset_key: Any, tenant: str, content_sha256: str) -> str:
    """Dagster's data version of the upstream materialization that stored `content_sha256`, else the hash.

    The latest materialization of the upstream partition is used only when its
    ``content_sha256`` metadata is the content actually loaded (another run may
    have materialized it since); any failure to read the instance falls back
    to the content hash, which the trail can always match.
    """
    try:
        record = instance.get_latest_data_version_record(asset_key, partition_key=tenant)
        materialization = record.asset_materialization if record is not None else None
        if materialization is None:
            return content_sha256
        stored = materialization.metadata.get("content_sha256")
        version = (materialization.tags or {}).get("dagster/data_version")
        if stored is not None and getattr(stored, "value", stored) == content_sha256 and version:
            return str(version)
    except Exception as error:  # noqa: BLE001 - the version is a convenience; the hash is recorded regardless
        logger.debug("no Dagster data version for %s of %s: %s", asset_key, tenant, error)
    return content_sha256


class LineageRecorder:
    """The IO manager's lineage state in one process: the trail (opened and migrated once) and the loaded inputs.

    Args:
        url: the lineage database's SQLAlchemy URL (the ledger's).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._trail: LineageTrail | None = None
        self._inputs: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}

    def trail(self) -> LineageTrail:
        """The migrated trail, opened on first use.

        Raises:
            LineageUnavailableError: the database failed.
        """
        if self._trail is None:
            trail = LineageTrail(self.url)
            try:
                trail.migrate()
            except BaseException:
                trail.close()
                raise
            self._trail = trail
        return self._trail

    def note_input(self, run_id: str, step_key: str, asset: str, version: str, content_sha256: str) -> None:
        """Remember that step `step_key` of `run_id` loaded `asset` at (data version, content hash)."""
        self._inputs.setdefault((run_id, step_key), {})[asset] = (version, content_sha256)

    def inputs_of(self, run_id: str, step_key: str) -> dict[str, tuple[str, str]]:
        """What `note_input` recorded for the step (empty when it loaded nothing)."""
        return dict(self._inputs.get((run_id, step_key), {}))

    def record_output(self, entry: LineageEntry) -> LineageRecord:
        """Append `entry` to its tenant's chain (idempotent: a retry returns the first record).

        Raises:
            LineageError / LineageUnavailableError: nothing was appended; the step must fail.
        """
        return self.trail().append(entry)

    def close(self) -> None:
        """Close the trail's connections and forget the loaded inputs."""
        if self._trail is not None:
            self._trail.close()
            self._trail = None
        self._inputs.clear()
