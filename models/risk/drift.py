"""Drift between the loan tape a twin was fitted on and a tenant's newest tape.

A twin stays useful while the population it imitates stays the same. The
drift sensor compares the reference tape (the one the twin was fitted on) with
the newest upload and requests regeneration when either figure passes the
tenant's `DriftConfig`:

* **Population stability index** (PSI) per column,
  ``sum_b (c_b - r_b) * ln(c_b / r_b)`` over bins ``b`` with ``r_b`` and
  ``c_b`` the reference and current shares, each floored at a small epsilon
  so an empty bin counts as rare rather than infinite. Numeric, integer and
  datetime columns are binned at the reference deciles (duplicate edges merged,
  so a discrete column gets one bin per value); categorical and boolean
  columns use the reference's most frequent categories (at most
  ``max_categories``) plus an "other" bucket, which also takes categories the
  reference never had. Nulls (and NaN) are a bin of their own in both, so a
  column that starts arriving empty drifts. The usual reading: below 0.1
  stable, 0.1-0.25 moderate, above 0.25 a shift (the default threshold is 0.2).
* **Default-rate shift**: the share of loans whose target is one of the
  positive values, current minus reference, in absolute terms (0.02 = 2
  percentage points) and relative to the reference rate.

Identifier and free-text columns are left out (they differ between any two
tapes by construction), as are the target (its shift is the default-rate
shift) and ignored columns. Columns the reference has and the current tape
lacks are a schema change, which also asks for regeneration.

Everything is vectorised (NumPy quantiles and searchsorted, polars value
counts): a million rows by 30 columns takes about a second.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from models.errors import InvalidDataError
from models.tape.schema import SPLIT_COLUMN

if TYPE_CHECKING:
    from models.tape.schema import TableSchema

PSI_EPSILON = 1e-4
"""The floor of a bin's share, so an empty bin adds a large but finite term."""
DEFAULT_BINS = 10
DEFAULT_MAX_CATEGORIES = 50
_QUANTILE_SAMPLE = 200_000
_TAG_PREFIX = "credittwin/drift"


class DriftConfig(BaseModel):
    """When a tenant's newest tape has drifted enough to regenerate its twin (``drift:`` in tenant.yaml).

    Attributes:
        psi_threshold: regenerate when a column's PSI exceeds this.
        default_rate_shift: regenerate when the default rate moves by more than
            this, in absolute terms (0.02 = 2 percentage points).
        ignore_columns: columns never compared.
    """

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

    psi_threshold: float = Field(default=0.2, gt=0.0)
    default_rate_shift: float = Field(default=0.02, gt=0.0, lt=1.0)
    ignore_columns: list[str] = Field(default_factory=list)

    @field_validator("psi_threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number greater than 0")
        return value


@dataclass(frozen=True)
class ColumnDrift:
    """The PSI of one column and what it was computed over."""

    column: str
    kind: Literal["numeric", "categorical"]
    psi: float
    bins: int  # including the null bin (and "other" for categories)
    reference_null_rate: float
    current_null_rate: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "kind": self.kind,
            "psi": round(self.psi, 6),
            "bins": self.bins,
            "reference_null_rate": round(self.reference_null_rate, 6),
            "current_null_rate": round(self.current_null_rate, 6),
        }


@dataclass(frozen=True)
class DriftReport:
    """Per-column PSI and the default-rate shift between a reference and a current tape.

    `psi_threshold` and `default_rate_threshold` are the thresholds it was
    measured against (from `DriftConfig`); `exceeds` can be asked with others.
    """

    columns: tuple[ColumnDrift, ...]
    reference_rows: int
    current_rows: int
    reference_default_rate: float | None
    current_default_rate: float | None
    psi_threshold: float
    default_rate_threshold: float
    missing_columns: tuple[str, ...] = ()
    added_columns: tuple[str, ...] = ()
    skipped_columns: tuple[str, ...] = field(default=())

    @property
    def psi(self) -> dict[str, float]:
        """Column -> PSI."""
        return {c.column: c.psi for c in self.columns}

    @property
    def max_psi(self) -> float:
        """The largest column PSI (0.0 when no column was compared)."""
        return max((c.psi for c in self.columns), default=0.0)

    @property
    def max_psi_column(self) -> str | None:
        """The column with the largest PSI, or None."""
        return max(self.columns, key=lambda c: c.psi).column if self.columns else None

    @property
    def default_rate_shift(self) -> float | None:
        """Current minus reference default rate (absolute; 0.03 = +3 pp), or None without a target."""
        if self.reference_default_rate is None or self.current_default_rate is None:
            return None
        return self.current_default_rate - self.reference_default_rate

    @property
    def default_rate_shift_relative(self) -> float | None:
        """The shift relative to the reference rate (0.5 = +50 %), or None when the reference rate is 0 or unknown."""
        shift = self.default_rate_shift
        if shift is None or not self.reference_default_rate:
            return None
        return shift / self.reference_default_rate

    def columns_over(self, psi_threshold: float | None = None) -> list[str]:
        """Columns whose PSI exceeds the threshold, largest PSI first."""
        limit = self.psi_threshold if psi_threshold is None else psi_threshold
        return [c.column for c in sorted(self.columns, key=lambda c: -c.psi) if c.psi > limit]

    @property
    def columns_over_threshold(self) -> list[str]:
        """`columns_over` at the report's own threshold."""
        return self.columns_over()

    def exceeds(self, psi_threshold: float | None = None, default_rate_threshold: float | None = None) -> bool:
        """True when a column's PSI or the absolute default-rate shift passes its threshold, or columns went missing.

        Args:
            psi_threshold: defaults to the report's `psi_threshold`.
            default_rate_threshold: absolute shift (0.02 = 2 pp); defaults to
                the report's `default_rate_threshold`.
        """
        limit = self.default_rate_threshold if default_rate_threshold is None else default_rate_threshold
        shift = self.default_rate_shift
        return (
            bool(self.columns_over(psi_threshold))
            or (shift is not None and abs(shift) > limit)
            or bool(self.missing_columns)
        )

    def reasons(self) -> list[str]:
        """One line per threshold passed, for logs and the run's description."""
        lines = [f"PSI of '{name}' is {self.psi[name]:.3f} > {self.psi_threshold:g}" for name in self.columns_over()]
        shift = self.default_rate_shift
        if shift is not None and abs(shift) > self.default_rate_threshold:
            lines.append(
                f"default rate moved {shift * 100:+.2f} pp ({self.reference_default_rate:.2%} -> "
                f"{self.current_default_rate:.2%}) > {self.default_rate_threshold * 100:g} pp"
            )
        if self.missing_columns:
            lines.append(f"column(s) missing from the new tape: {', '.join(self.missing_columns)}")
        return lines

    def to_tags(self) -> dict[str, str]:
        """Short string tags for the regeneration run (keys under ``credittwin/drift...``)."""
        shift = self.default_rate_shift
        over = self.columns_over()
        tags = {
            f"{_TAG_PREFIX}": "true" if self.exceeds() else "false",
            f"{_TAG_PREFIX}_max_psi": f"{self.max_psi:.4f}",
            f"{_TAG_PREFIX}_max_psi_column": _short(self.max_psi_column or "-"),
            f"{_TAG_PREFIX}_columns_over": str(len(over)),
            f"{_TAG_PREFIX}_default_rate_shift_pp": "-" if shift is None else f"{shift * 100:+.2f}",
        }
        if self.missing_columns:
            tags[f"{_TAG_PREFIX}_missing_columns"] = str(len(self.missing_columns))
        return tags

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form with every figure, for asset and run metadata."""
        shift = self.default_rate_shift
        relative = self.default_rate_shift_relative
        return {
            "exceeds": self.exceeds(),
            "reasons": self.reasons(),
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "psi_threshold": self.psi_threshold,
            "default_rate_threshold": self.default_rate_threshold,
            "max_psi": round(self.max_psi, 6),
            "max_psi_column": self.max_psi_column,
            "columns_over_threshold": self.columns_over(),
            "psi": {c.column: round(c.psi, 6) for c in self.columns},
            "columns": [c.to_dict() for c in self.columns],
            "default_rate": {
                "reference": self.reference_default_rate,
                "current": self.current_default_rate,
                "shift": shift,
                "shift_pp": None if shift is None else round(shift * 100, 4),
                "relative": relative,
            },
            "missing_columns": list(self.missing_columns),
            "added_columns": list(self.added_columns),
            "skipped_columns": list(self.skipped_columns),
        }


def _short(text: str, width: int = 40) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def _psi(reference_counts: np.ndarray, current_counts: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """PSI of two histograms over the same bins (counts), with shares floored at `epsilon`."""
    reference = np.maximum(reference_counts / max(reference_counts.sum(), 1), epsilon)
    current = np.maximum(current_counts / max(current_counts.sum(), 1), epsilon)
    return float(np.sum((current - reference) * np.log(current / reference)))


def _as_float(series: pl.Series) -> np.ndarray:
    """Numbers as float64 with NaN for null (temporal values as their integer form)."""
    if series.dtype.is_temporal():
        series = series.to_physical()
    return series.cast(pl.Float64).fill_null(float("nan")).to_numpy()


def _numeric_histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin (bin i holds edges[i-1] <= x < edges[i]; ``len(edges) + 1`` bins) plus a null bin.

    One vectorised comparison per edge (there are at most ``bins - 1``), which
    is several times faster than a binary search per value on unsorted data.
    """
    missing = np.isnan(values)
    n_missing = int(np.count_nonzero(missing))
    present = values[~missing] if n_missing else values
    at_or_above = np.array([np.count_nonzero(present >= edge) for edge in edges], dtype=np.int64)
    bounds = np.concatenate([[present.size], at_or_above, [0]])
    return np.append(bounds[:-1] - bounds[1:], n_missing)


def _edges(finite: np.ndarray, bins: int) -> np.ndarray:
    """The reference's quantile edges; on a large column from a fixed random sample of it.

    The edges only place the bins; both tables are then counted in full, so a
    sample of `_QUANTILE_SAMPLE` values (decile error about 0.1 % of the rows)
    loses nothing a PSI can see and saves sorting the whole column.
    """
    if finite.size == 0:
        return np.empty(0)
    if finite.size > _QUANTILE_SAMPLE:
        finite = finite[np.random.default_rng(0).integers(0, finite.size, _QUANTILE_SAMPLE)]
    return np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def numeric_psi(reference: pl.Series, current: pl.Series, *, bins: int = DEFAULT_BINS) -> tuple[float, int]:
    """PSI of a numeric (or integer, or datetime) column, binned at the reference's quantiles.

    Args:
        reference: the reference column.
        current: the current column.
        bins: number of quantile bins (10 = deciles) before equal edges merge.

    Returns:
        (psi, number of bins including the null bin).
    """
    ref = _as_float(reference)
    cur = _as_float(current)
    edges = _edges(ref[~np.isnan(ref)], bins)
    ref_counts = _numeric_histogram(ref, edges)
    cur_counts = _numeric_histogram(cur, edges)
    return _psi(ref_counts, cur_counts), len(ref_counts)


def _value_counts(series: pl.Series) -> pl.DataFrame:
    return series.cast(pl.String).alias("value").value_counts(name="n")


def _category_counts(counts: pl.DataFrame, total: int, keep: pl.Series) -> np.ndarray:
    """Counts of each kept category (in `keep`'s order), then "other", then null, from `_value_counts`."""
    nulls = int(counts.filter(pl.col("value").is_null())["n"].sum())
    kept = pl.DataFrame({"value": keep}).join(counts, on="value", how="left").get_column("n").fill_null(0).to_numpy()
    return np.concatenate([kept, [total - nulls - int(kept.sum()), nulls]])


def categorical_psi(
    reference: pl.Series, current: pl.Series, *, max_categories: int = DEFAULT_MAX_CATEGORIES
) -> tuple[float, int]:
    """PSI of a categorical (or boolean) column over the reference's categories, "other" and null.

    Args:
        reference: the reference column.
        current: the current column; categories the reference lacks fall in "other".
        max_categories: how many of the reference's most frequent categories
            keep a bin of their own; the rest share "other".

    Returns:
        (psi, number of bins including "other" and the null bin).
    """
    ref_counts = _value_counts(reference)
    top = (
        ref_counts.drop_nulls("value")
        .sort(["n", "value"], descending=[True, False])
        .head(max_categories)
        .get_column("value")
    )
    ref_hist = _category_counts(ref_counts, reference.len(), top)
    cur_hist = _category_counts(_value_counts(current), current.len(), top)
    return _psi(ref_hist, cur_hist), len(ref_hist)


def _kind(name: str, frame: pl.DataFrame, schema: "TableSchema | None") -> Literal["numeric", "categorical"] | None:
    """How to bin a column, or None to skip it (identifiers, free text, unsupported types)."""
    from models.tape.schema import ColumnType

    if schema is not None and name in schema:
        kind = schema[name].type
        if kind in (ColumnType.IDENTIFIER, ColumnType.TEXT):
            return None
        if kind in (ColumnType.NUMERIC, ColumnType.INTEGER, ColumnType.DATETIME):
            dtype = frame.schema[name]
            return "numeric" if (dtype.is_numeric() or dtype.is_temporal()) else "categorical"
        return "categorical"
    dtype = frame.schema[name]
    if dtype == pl.Boolean:
        return "categorical"
    if dtype.is_numeric() or dtype.is_temporal():
        return "numeric"
    if dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        return "categorical"
    return None


def _default_rate(frame: pl.DataFrame, target: str, positive: Sequence[Any]) -> float:
    from models.tape.vocabulary import target_indicator

    return float(target_indicator(frame.get_column(target), list(positive)).mean())


def measure_drift(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    *,
    config: DriftConfig | None = None,
    target: str | None = None,
    target_positive: Sequence[Any] = (1,),
    schema: "TableSchema | None" = None,
    bins: int = DEFAULT_BINS,
    max_categories: int = DEFAULT_MAX_CATEGORIES,
    tenant: str | None = None,
) -> DriftReport:
    """Compare a tenant's newest loans table with the one its twin was fitted on.

    Args:
        reference: the loans table the twin was fitted on.
        current: the newest loans table.
        config: thresholds and ignored columns (defaults: `DriftConfig()`).
        target: the default flag column, for the default-rate shift (None: no shift).
        target_positive: the target's raw values that mean "defaulted".
        schema: the reference's `TableSchema`; when given, only its columns are
            compared and its types decide the binning (identifiers and text are
            skipped). Without it, polars dtypes decide.
        bins: quantile bins for numeric columns.
        max_categories: categories with a bin of their own.
        tenant: named in errors.

    Returns:
        A `DriftReport`.

    Raises:
        InvalidDataError: either table has no rows, or `bins` / `max_categories` < 1.
    """
    config = config or DriftConfig()
    for name, frame in (("reference", reference), ("current", current)):
        if not isinstance(frame, pl.DataFrame) or frame.height == 0:
            raise InvalidDataError(
                f"the {name} loans table is empty, so drift cannot be measured.",
                tenant=tenant,
                fix=f"measure drift only once the {name} tape has rows (check the tenant's latest upload).",
            )
    if bins < 1 or max_categories < 1:
        raise InvalidDataError(
            f"bins and max_categories must be at least 1, got {bins} and {max_categories}.",
            tenant=tenant,
            fix="use the defaults (10 bins, 50 categories).",
        )
    ignored = set(config.ignore_columns) | {SPLIT_COLUMN}
    if target:
        ignored.add(target)
    wanted = [n for n in (schema.names if schema is not None else reference.columns) if n in reference.columns]
    current_names = set(current.columns)
    missing = tuple(n for n in wanted if n not in current_names and n not in ignored)
    added = tuple(n for n in current.columns if n not in set(reference.columns) and n not in ignored)
    plan: list[tuple[str, Literal["numeric", "categorical"]]] = []
    skipped: list[str] = []
    for name in wanted:
        if name in ignored or name not in current_names:
            continue
        kind = _kind(name, reference, schema)
        if kind is None:
            skipped.append(name)
            continue
        dtype = current.schema[name]
        if kind == "numeric" and not (dtype.is_numeric() or dtype.is_temporal()):
            kind = "categorical"  # the new tape holds text where numbers were: compare as labels
        plan.append((name, kind))

    def one(item: tuple[str, Literal["numeric", "categorical"]]) -> ColumnDrift:
        name, kind = item
        ref, cur = reference.get_column(name), current.get_column(name)
        if kind == "numeric":
            psi, n_bins = numeric_psi(ref, cur, bins=bins)
        else:
            psi, n_bins = categorical_psi(ref, cur, max_categories=max_categories)
        return ColumnDrift(name, kind, psi, n_bins, _null_rate(ref), _null_rate(cur))

    # NumPy's comparisons and polars' value counts release the GIL, so columns run side by side
    workers = min(len(plan), os.cpu_count() or 1)
    if workers > 1 and reference.height + current.height > 100_000:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, plan))
    else:
        results = [one(item) for item in plan]
    reference_rate = current_rate = None
    if target and target in reference.columns and target in current.columns:
        reference_rate = _default_rate(reference, target, target_positive)
        current_rate = _default_rate(current, target, target_positive)
    elif target and target in reference.columns:
        missing = (*missing, target)
    return DriftReport(
        columns=tuple(results),
        reference_rows=reference.height,
        current_rows=current.height,
        reference_default_rate=reference_rate,
        current_default_rate=current_rate,
        psi_threshold=config.psi_threshold,
        default_rate_threshold=config.default_rate_shift,
        missing_columns=missing,
        added_columns=added,
        skipped_columns=tuple(skipped),
    )


def _null_rate(series: pl.Series) -> float:
    nulls = series.null_count()
    if series.dtype.is_float():
        nulls += int(series.is_nan().sum() or 0)
    return nulls / series.len() if series.len() else 0.0
