"""Small helpers the asset modules share: reading a stored tape, images as metadata, releasing past blocking checks."""

import base64
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import dagster as dg

from models.errors import CreditTwinError
from models.tape.schema import TableSchema
from models.tape.loan_tape import SPLIT_COLUMN
from models.tape.tenant import TenantConfig
from resources.storage import Artifact


def split_of(tape: Artifact, name: str):
    """The "train" or "holdout" loans of a stored raw tape, without the split column."""
    import polars as pl

    return tape.table("loans").filter(pl.col(SPLIT_COLUMN) == name).drop(SPLIT_COLUMN)


def train_split(tape: Artifact):
    return split_of(tape, "train")


def tape_schema(tape: Artifact) -> TableSchema:
    return TableSchema.from_dict(tape.document("schema"))


def tape_config(tape: Artifact) -> TenantConfig:
    return TenantConfig.model_validate(tape.document("tenant_config"))


def upload_file(tape: Artifact, stem: str) -> str | None:
    """The name of the uploaded file (loans.csv, performance.parquet, ...) a stored tape was read from."""
    return next((name for name in tape.document("ingest", {}).get("files", []) if name.startswith(stem + ".")), None)


def history_of(loans, performance, id_column: str):
    """The rows of `performance` that belong to `loans` (joined on the canonical `loan_id`)."""
    import polars as pl

    return performance.filter(pl.col("loan_id").is_in(loans.get_column(id_column).cast(pl.String).implode()))


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    """An image as Markdown metadata, which the Dagster UI renders inline."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


@contextmanager
def tenant_errors(tenant: str, file: str | None = None):
    """Turn a CreditTwin error into a Dagster failure that names the tenant (and file)."""
    try:
        yield
    except CreditTwinError as error:
        error.with_context(tenant=tenant, file=file)
        raise dg.Failure(
            description=str(error),
            metadata={"tenant": tenant, "file": error.file or "", "column": error.column or "", "fix": error.fix or ""},
            # bad input or configuration fails at once; only an unreachable service is worth a retry
            allow_retries=error.transient,
        ) from error


def _reasons(check: dg.AssetCheckResult) -> list[str]:
    """What a failed check says about why: its description, else the reasons its metadata lists."""
    if check.description:
        return [check.description]
    for key in ("failed_rules", "failures", "reasons"):  # where the checks record their reasons
        value = check.metadata.get(key)
        if value is not None:
            listed = getattr(value, "value", value)
            return [str(item) for item in (listed if isinstance(listed, (list, tuple)) else [listed])]
    return []


def output_unless_blocked(
    context: dg.AssetExecutionContext, output: dg.Output, checks: Sequence[dg.AssetCheckResult], *,
    fix: str | None = None,
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Yield `output` then `checks`; when a blocking check of the asset fails with ERROR, only the checks, then fail.

    Dagster stores an output (and records it as the latest materialization)
    as soon as it is yielded, and fails the step for a blocking check only
    after that: the failed output would become CURRENT and the next run
    downstream would read it. Judging the checks first and yielding no output
    keeps the last good version current, as `raw_loan_tape` does for its
    expectations; the checks are still recorded, so the UI shows the failure
    and its reasons, and the refused output's figures travel in the failure.

    `fix` replaces the generic advice when the asset knows the likelier cause.

    Raises:
        dagster.Failure: a blocking check failed (not retried: the same inputs fail the same way).
    """
    blocking = {spec.name for spec in context.assets_def.check_specs if spec.blocking}
    failed = [
        check for check in checks
        if check.check_name in blocking and not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    ]
    if not failed:
        yield output
        yield from checks
        return
    yield from checks
    asset = context.assets_def.key.to_user_string()
    reasons = [f"{check.check_name}: {reason}" for check in failed for reason in (_reasons(check) or ["failed"])]
    raise dg.Failure(
        description=f"tenant '{context.partition_key}': {asset} failed its blocking check(s) "
        f"{', '.join(check.check_name for check in failed)} ({'; '.join(reasons[:5])}). Nothing was stored: the last "
        f"good version of {asset} stays current and what reads it keeps reading that one. Fix: "
        + (fix or "address the reasons above (the check's metadata lists them) and materialize the asset again."),
        metadata={**output.metadata, "failed_checks": dg.MetadataValue.json(reasons)},
        allow_retries=False,
    )


def charge_privacy(privacy_ledger, context, *, asset: str, mechanism, input_version: str, config: object, seed):
    """Charge `mechanism` to the tenant's ledger before the private computation of `asset` runs.

    The idempotency key is (tenant, asset, input data version, SHA-256 of
    `config`, seed): a retry or re-execution of the same computation returns
    the earlier charge instead of charging again. Over budget it raises with
    spent, requested and remaining, and nothing private has run.
    """
    import hashlib

    from resources.ledger import IdempotencyKey
    from resources.storage import dumps

    tenant = context.partition_key
    key = IdempotencyKey(
        tenant=tenant,
        asset=asset,
        input_data_version=input_version,
        config_hash=hashlib.sha256(dumps(config).encode()).hexdigest(),
        seed=seed,
    )
    with privacy_ledger.ledger() as ledger:
        return ledger.charge(tenant=tenant, asset=asset, run_id=context.run.run_id, mechanism=mechanism, idempotency=key)


PAID_DIR = ("privacy", "paid")
_PAID_MANIFEST = "paid.json"


def _paid_folder(data_root, asset: str, tenant: str, idempotency_hash: str):
    """``<root>/privacy/paid/<tenant>/<asset>/<idempotency hash>``, the tenant validated and the path kept under the root."""
    import re

    from models.tape.tenant import validate_tenant_id
    from resources.storage import safe_join

    validate_tenant_id(tenant)
    if not re.fullmatch(r"[0-9a-f]{64}", idempotency_hash or ""):
        raise CreditTwinError(
            f"asset '{asset}': {idempotency_hash!r} is not a ledger idempotency hash.",
            tenant=tenant,
            fix="pass the idempotency_hash of the ledger charge the release was made under.",
        )
    return safe_join(data_root, *PAID_DIR, tenant, asset, idempotency_hash)


def paid_release(data_root, asset: str, tenant: str, charge) -> Artifact | None:
    """The output already made and paid for under ledger `charge`, byte for byte, or None.

    Every fresh draw of noise on real data must be paid for by its own charge.
    A re-run whose idempotency key (tenant, asset, input data version, full
    mechanism configuration, seed) matches an earlier charge is not charged
    again, so it may only re-release what was made under that charge: the
    bytes kept in the paid-release store (`store_paid_release`), whatever
    other configurations ran in between. None means nothing was stored under
    the charge: the run that made it died between the charge and the store
    write, before any noisy output left the process, so computing afresh
    under the same charge releases one output for one charge.

    Raises:
        CreditTwinError: a stored file no longer matches the SHA-256 recorded when it was paid for.
    """
    import json

    from resources.storage import sha256_file

    folder = _paid_folder(data_root, asset, tenant, charge.idempotency_hash)
    manifest_path = folder / _PAID_MANIFEST
    if not manifest_path.is_file():
        return None
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    files: dict[str, bytes] = {}
    for rel, digest in manifest["files"].items():
        path = folder / "files" / rel
        if not path.is_file() or sha256_file(path) != digest:
            raise CreditTwinError(
                f"the paid release of asset '{asset}' under ledger charge {manifest['charge_id']} "
                f"has a missing or altered file '{rel}' in {folder}.",
                tenant=tenant,
                file=str(path),
                fix="restore the data root from backup; do not delete the folder to force a refit, which would "
                "release fresh noise under a charge already used (change the configuration to pay for a new fit).",
            )
        files[rel] = path.read_bytes()
    return Artifact(documents=manifest["documents"], files=files)


def store_paid_release(data_root, asset: str, tenant: str, charge, artifact: Artifact) -> Artifact:
    """Keep `artifact`, just made under ledger `charge`, as the one output paid for by it, and return what is kept.

    Called after the private computation and before its output is returned,
    so nothing made under a charge leaves the process before it is stored.
    The folder is written beside its final place and renamed into it (atomic).
    When another run made an output under the same charge first, that one is
    kept and returned, and this one is discarded unreleased.
    """
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from resources.storage import dumps, safe_join, sha256_file

    if artifact.tables:
        raise CreditTwinError(
            f"asset '{asset}' returned tables {sorted(artifact.tables)}; the paid-release store "
            "keeps JSON documents and files only.",
            tenant=tenant,
            fix="return the model as documents and files (models are saved as JSON, NumPy and torch state dicts).",
        )
    folder = _paid_folder(data_root, asset, tenant, charge.idempotency_hash)
    if (folder / _PAID_MANIFEST).is_file():
        return paid_release(data_root, asset, tenant, charge)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".paid-"))
    try:
        digests = {}
        for rel, payload in artifact.files.items():
            target = safe_join(staging / "files", rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(payload)
            digests[rel] = sha256_file(target)
        manifest = {
            "tenant": tenant,
            "asset": asset,
            "charge_id": charge.id,
            "idempotency": charge.idempotency.to_dict(),
            "documents": artifact.documents,
            "files": digests,
        }
        (staging / _PAID_MANIFEST).write_text(dumps(manifest), encoding="utf-8")
        try:
            os.rename(staging, folder)
        except OSError:
            if not (folder / _PAID_MANIFEST).is_file():
                raise
            # another run under the same charge stored first: its output is the one paid for
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return paid_release(data_root, asset, tenant, charge)


_CODE_VERSION: list[str] = []


def code_version() -> str:
    """The code that made an output: $CREDITTWIN_CODE_VERSION, else the git commit of the checkout, else the package version.

    A checkout with uncommitted changes is marked "-dirty", so a certificate
    never claims a commit it was not made from.
    """
    import os
    import subprocess
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    if _CODE_VERSION:
        return _CODE_VERSION[0]
    configured = os.environ.get("CREDITTWIN_CODE_VERSION", "").strip()
    result = configured
    if not result:
        root = Path(__file__).resolve().parents[1]
        try:
            commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                    timeout=5, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5, check=True).stdout.strip()
            result = f"git:{commit}" + ("-dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            try:
                result = f"credittwin=={version('credittwin')}"
            except PackageNotFoundError:
                result = "unknown"
    _CODE_VERSION.append(result)
    return result


def upstream_versions(context, assets, tenant: str) -> dict[str, dict]:
    """The latest data version, run and storage id of each of `assets` for `tenant`, as the instance recorded them."""
    out: dict[str, dict] = {}
    for name in assets:
        record = context.instance.get_latest_data_version_record(dg.AssetKey(name), partition_key=tenant)
        if record is None or record.asset_materialization is None:
            continue
        materialization = record.asset_materialization
        content = materialization.metadata.get("content_sha256")
        out[name] = {
            "data_version": (materialization.tags or {}).get("dagster/data_version"),
            "content_sha256": content.value if content is not None else None,
            "run_id": record.run_id,
        }
    return out


_MARKDOWN_SPECIAL = set("\\`*_{}[]()#!|<>~")  # ". - +" matter only at a line start, which a cell or item never is


def md_text(value) -> str:
    """`value` as literal text inside Dagster's Markdown metadata.

    Column names, category values and tenant names come from uploads: escaped,
    ``![x](http://...)`` or ``<img ...>`` prints as characters instead of making
    the UI fetch an image or follow a link.
    """
    if value is None:
        return "-"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    text = text.replace("\r", " ").replace("\n", " ")
    return "".join(f"&{'lt' if ch == '<' else 'gt'};" if ch in "<>" else f"\\{ch}" if ch in _MARKDOWN_SPECIAL else ch
                   for ch in text)


def markdown_table(header, rows) -> dg.MetadataValue:
    """A Markdown table whose every cell is escaped with `md_text`."""
    lines = ["| " + " | ".join(md_text(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_text(cell) for cell in row) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def markdown_list(items) -> dg.MetadataValue:
    """A Markdown bullet list of escaped lines ("none" when empty)."""
    return dg.MetadataValue.md("\n".join(f"- {md_text(item)}" for item in items) or "none")


def not_measured(check_name: str, reason: str) -> dg.AssetCheckResult:
    """A check that measured nothing: a warning with its reason, never a pass (a check that cannot fail is a defect)."""
    return dg.AssetCheckResult(
        check_name=check_name, passed=False, severity=dg.AssetCheckSeverity.WARN,
        metadata={"not_measured": reason, "reasons": dg.MetadataValue.json([f"not measured: {reason}"])},
    )
