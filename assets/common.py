"""Small helpers the asset modules share: reading a stored tape, images as metadata, releasing past blocking checks."""

import base64
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import dagster as dg

from models.errors import CreditTwinError
from models.schema import TableSchema
from models.tape import SPLIT_COLUMN
from models.tenant import TenantConfig
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
    context: dg.AssetExecutionContext, output: dg.Output, checks: Sequence[dg.AssetCheckResult]
) -> Iterator[dg.Output | dg.AssetCheckResult]:
    """Yield `output` then `checks`; when a blocking check of the asset fails with ERROR, only the checks, then fail.

    Dagster stores an output (and records it as the latest materialization)
    as soon as it is yielded, and fails the step for a blocking check only
    after that: the failed output would become CURRENT and the next run
    downstream would read it. Judging the checks first and yielding no output
    keeps the last good version current, as `raw_loan_tape` does for its
    expectations; the checks are still recorded, so the UI shows the failure
    and its reasons, and the refused output's figures travel in the failure.

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
        f"good version of {asset} stays current and what reads it keeps reading that one. Fix: address the reasons "
        "above (the check's metadata lists them) and materialize the asset again.",
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


def stored_release(data_root, asset: str, tenant: str, idempotency_hash: str) -> Artifact | None:
    """The stored output that was made under this charge, or None.

    A DP computation draws fresh noise each time, so re-running one under an
    existing charge would release a second noisy output nobody paid for: the
    caller re-releases this stored one instead. When nothing was stored (the
    run died between charge and store), the earlier noise was never released
    and computing afresh is safe.
    """
    from resources.storage import VersionedStore

    store = VersionedStore(data_root, [asset], tenant)
    if store.current() is None:
        return None
    previous = store.read()
    if previous.document("privacy", {}).get("idempotency_hash") != idempotency_hash:
        return None
    # Model and plot files live in sub-folders; the top level holds only the manifest, tables and documents.
    files = {
        str(p.relative_to(previous.path)): p.read_bytes()
        for p in previous.path.rglob("*")
        if p.is_file() and p.parent != previous.path
    }
    return Artifact(tables=dict(previous.tables), documents=dict(previous.documents), files=files)


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
