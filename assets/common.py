"""Small helpers the asset modules share: tenant checks, errors as failures, tables and images as metadata, releasing
past blocking checks."""

import base64
import math
import numbers
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg

from assets.partitions import tenants
from models.errors import CreditTwinError


def tenant_check(name: str, asset: str, description: str, *, blocking: bool = False) -> dg.AssetCheckSpec:
    """The spec of a check of `asset`, partitioned by tenant like the asset, so each result is recorded under its tenant.

    Dagster 1.13 gives a check evaluation the step's partition only when the check's spec declares
    ``partitions_def`` (``AssetCheckResult.to_asset_check_evaluation``); without it a tenant's result is stored
    unpartitioned and the UI shows its partition as "-". Declaring it is a preview feature in 1.13 and warns on
    every load of the code location; that one warning is silenced here, and only here, because it is deliberate.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Specifying a partitions_def on an AssetCheckSpec", category=dg.PreviewWarning
        )
        return dg.AssetCheckSpec(name, asset=asset, description=description, blocking=blocking, partitions_def=tenants)


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
    """Yield `output`, then `checks`; when a blocking check of the asset fails with ERROR, only the checks, then fail.

    The output comes first so that each check is recorded after, and judges, the materialization it was computed
    on (its evaluation names that materialization as its target).

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


_MARKDOWN_SPECIAL = set("\\`*_{}[]()#!|<>~")  # ". - +" matter only at a line start, which an item never is


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


def _cell(value: Any) -> str | int | float | bool | None:
    """One value as a table cell: fractions to six significant digits, amounts to the cent, non-finite ones empty."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            return None
        return round(number, 2) if abs(number) >= 1e4 else float(f"{number:.6g}")
    return str(value)


def _column_type(values: list) -> str:
    present = [value for value in values if value is not None]
    if present and all(isinstance(value, bool) for value in present):
        return "bool"
    if present and all(isinstance(value, int) and not isinstance(value, bool) for value in present):
        return "int"
    if present and all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in present):
        return "float"
    return "string"


def metadata_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, *,
    descriptions: Mapping[str, str] | None = None,
) -> dg.TableMetadataValue:
    """`rows` as a Dagster table (``MetadataValue.table``), which the UI renders as a real, typed table.

    Each column's type is what its values share (bool, int, float, else string; a column of mixed kinds is text).
    The UI prints every cell as plain text, never as Markdown or HTML, so upload-derived values need no escaping.

    Args:
        rows: one mapping per row.
        columns: the columns, in order (default: the keys of the first row).
        descriptions: a description per column, shown in the table's schema.
    """
    names = list(columns) if columns is not None else list(rows[0]) if rows else []
    cells = [{name: _cell(row.get(name)) for name in names} for row in rows]
    types = {name: _column_type([row[name] for row in cells]) for name in names}
    for row in cells:
        for name in names:
            if types[name] == "string" and row[name] is not None and not isinstance(row[name], str):
                row[name] = f"{row[name]:.4g}" if isinstance(row[name], float) else str(row[name])
    schema = dg.TableSchema(columns=[
        dg.TableColumn(name=name, type=types[name], description=(descriptions or {}).get(name)) for name in names
    ])
    return dg.MetadataValue.table(records=[dg.TableRecord(row) for row in cells], schema=schema)


def markdown_list(items) -> dg.MetadataValue:
    """A Markdown bullet list of escaped lines ("none" when empty)."""
    return dg.MetadataValue.md("\n".join(f"- {md_text(item)}" for item in items) or "none")


def not_measured(check_name: str, reason: str) -> dg.AssetCheckResult:
    """A check that measured nothing: a warning with its reason, never a pass (a check that cannot fail is a defect)."""
    return dg.AssetCheckResult(
        check_name=check_name, passed=False, severity=dg.AssetCheckSeverity.WARN,
        metadata={"not_measured": reason, "reasons": dg.MetadataValue.json([f"not measured: {reason}"])},
    )
