"""Turn a released (k-anonymized) table back into plain typed columns for modelling and comparison.

`models.privacy.anonymize` releases each quasi-identifier as a label: a numeric range
(``"[30, 45)"``, ``"< 30"``, ``">= 45"``), a category group (``"north|south"``,
or ``"<n> values #<hash>"`` with its members in the generalisations), ``"*"``
(any value) or ``"(missing)"``. A risk model, a fidelity measure or a utility
test needs values of the column's own type, so `expand_release` draws one:

* a numeric range becomes a seeded uniform draw inside it. The open ends of
  ``"< a"`` and ``">= b"`` are closed at the nearest released cut minus (plus)
  the median width of the closed ranges of that column, so the draw never
  reaches the real extremes, which the release does not publish either. An
  integer column draws uniformly among the integers its range holds (``"< 1.5"``
  of a 1/2-coded column is 1, ``"[2, 2.5)"`` is 2), the open ends spanning the
  median number of integers of the closed ranges and at least one: a uniform
  real draw rounded down would turn half the 1s of ``"< 1.5"`` into 0s;
* a category group becomes a seeded draw among its members (uniform: the
  release says nothing about their mix inside a class);
* ``"*"`` becomes a draw from the column's other released values (the
  marginal of the release), ``"(missing)"`` a null.

Datetime columns get the day back as a date;
a flag's drawn members get the dtype the tape was read as (Boolean, Int64).
Columns that are not generalised pass through untouched. The draw depends only
on the table, the generalisations and the seed, so the same release expands to
the same frame every time.
"""

from __future__ import annotations

import math
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from models.privacy.anonymize import ANY_LABEL, ANY_OR_MISSING_LABEL, MISSING_LABEL
from models.tape.schema import ColumnType, TableSchema
from models.tape.vocabulary import as_truths

if TYPE_CHECKING:
    from models.privacy.labels import NumericRange

_NUMERIC = (ColumnType.NUMERIC, ColumnType.INTEGER, ColumnType.DATETIME)
_EPOCH = date(1970, 1, 1)


def generalised_columns(released: pl.DataFrame, schema: TableSchema, generalisations: dict[str, Any] | None) -> list[str]:
    """The columns of `released` that hold generalisation labels instead of values."""
    names = set(generalisations or {})
    out = []
    for name in released.columns:
        declared = name in schema and schema[name].type in _NUMERIC
        if name in names or (declared and released.schema[name] == pl.String):
            out.append(name)
    return out


def _column_type(schema: TableSchema, name: str) -> ColumnType | None:
    return schema[name].type if name in schema else None


def _expand_numeric(labels: pl.Series, kind: ColumnType | None, rng: np.random.Generator) -> pl.Series:
    from models.privacy.labels import NumericRange, parse_generalised_label

    uniques = labels.unique().to_list()
    parsed: dict[str, Any] = {}  # label -> NumericRange, "any", or None when it reads as neither
    for label in uniques:
        if label is None or label == MISSING_LABEL:
            continue
        if label in (ANY_LABEL, ANY_OR_MISSING_LABEL):
            parsed[label] = "any"
            continue
        value = parse_generalised_label(label)
        if isinstance(value, NumericRange):
            parsed[label] = value
        else:
            try:  # a plain value the anonymizer left as it was
                number = _to_number(label, kind)
                parsed[label] = NumericRange(number, number, True, True)
            except (TypeError, ValueError):
                parsed[label] = None
    ranges = {label: value for label, value in parsed.items() if isinstance(value, NumericRange)}
    if kind == ColumnType.INTEGER:
        bounds = _integer_bounds(ranges)
    else:
        bounds = _real_bounds(ranges)
    low_of = {label: b[0] for label, b in bounds.items()}
    high_of = {label: b[1] for label, b in bounds.items()}
    low = labels.replace_strict(low_of, default=None, return_dtype=pl.Float64).fill_null(np.nan).to_numpy()
    high = labels.replace_strict(high_of, default=None, return_dtype=pl.Float64).fill_null(np.nan).to_numpy()
    any_labels = [label for label, value in parsed.items() if value == "any"]
    anys = labels.is_in(any_labels).fill_null(False).to_numpy() if any_labels else np.zeros(labels.len(), dtype=bool)
    values = low + (high - low) * rng.random(labels.len())
    if kind == ColumnType.INTEGER:
        # bounds are [first, last + 1): rounding down gives each integer of the range the same chance
        values = np.minimum(np.floor(values), high - 1.0)
    known = np.flatnonzero(~np.isnan(values))
    if anys.any() and known.size:
        values[anys] = values[known[rng.integers(0, known.size, int(anys.sum()))]]
    if kind == ColumnType.DATETIME:
        days = pl.Series(labels.name, np.floor(values), dtype=pl.Float64).fill_nan(None).cast(pl.Int32)
        return days.cast(pl.Date)
    series = pl.Series(labels.name, values, dtype=pl.Float64).fill_nan(None)
    return series.cast(pl.Int64) if kind == ColumnType.INTEGER else series


def _real_bounds(ranges: dict[str, "NumericRange"]) -> dict[str, tuple[float, float]]:
    """[low, high) of the uniform draw for each range label of a real-valued (or date) column."""
    closed = [r.high - r.low for r in ranges.values()
              if math.isfinite(r.low) and math.isfinite(r.high) and r.high > r.low]
    width = float(np.median(closed)) if closed else 1.0
    finite_edges = [e for r in ranges.values() for e in (r.low, r.high) if math.isfinite(e)]
    lo_all, hi_all = (min(finite_edges), max(finite_edges)) if finite_edges else (0.0, 1.0)
    bounds: dict[str, tuple[float, float]] = {}
    for label, r in ranges.items():
        a = r.low if math.isfinite(r.low) else min(lo_all, r.high) - width
        b = r.high if math.isfinite(r.high) else max(hi_all, a) + width
        bounds[label] = (a, b)
    return bounds


def _integers_inside(r: "NumericRange") -> tuple[int | None, int | None]:
    """The first and last integer of range `r` as its brackets read (None on an open end)."""
    first = None if not math.isfinite(r.low) else (math.ceil(r.low) if r.low_closed else math.floor(r.low) + 1)
    last = None if not math.isfinite(r.high) else (math.floor(r.high) if r.high_closed else math.ceil(r.high) - 1)
    return first, last


def _integer_bounds(ranges: dict[str, "NumericRange"]) -> dict[str, tuple[float, float]]:
    """[first, last + 1) of the integers each range label of an integer column stands for.

    The anonymizer cuts an integer column between two of its values ("< 1.5",
    "[2, 2.5)", ">= 2.5"), so a range's width says little about how many
    integers it holds; the open ends therefore span the median count of
    integers of the closed ranges (at least one), below the lowest released
    edge and from the highest one up, as `_real_bounds` does with widths.
    """
    counts = []
    for r in ranges.values():
        first, last = _integers_inside(r)
        if first is not None and last is not None and r.high > r.low and last >= first:
            counts.append(last - first + 1)
    span = max(1, int(np.median(counts))) if counts else 1
    finite_edges = [e for r in ranges.values() for e in (r.low, r.high) if math.isfinite(e)]
    lowest, highest = (math.ceil(min(finite_edges)), math.ceil(max(finite_edges))) if finite_edges else (0, 0)
    bounds: dict[str, tuple[float, float]] = {}
    for label, r in ranges.items():
        first, last = _integers_inside(r)
        if first is None:
            first = min(lowest, last + 1 if last is not None else lowest) - span
        if last is None:
            last = max(highest, first) + span - 1
        if first > last:  # a range between two integers ("[2.2, 2.8)", never cut so by the anonymizer): its nearest one
            first = last = math.floor((r.low + r.high) / 2.0 + 0.5)
        bounds[label] = (float(first), float(last + 1))
    return bounds


def _to_number(label: str, kind: ColumnType | None) -> float:
    if kind == ColumnType.DATETIME:
        return float((date.fromisoformat(label[:10]) - _EPOCH).days)
    return float(label)


def _expand_category(labels: pl.Series, spec: dict[str, Any] | None, rng: np.random.Generator) -> pl.Series:
    from models.privacy.labels import CategoryGroup, parse_generalised_label

    groups = dict((spec or {}).get("groups") or {})
    codes = labels.to_list()
    members: dict[str, list[str] | None] = {}
    for label in set(c for c in codes if c is not None):
        if label in groups:
            members[label] = list(groups[label])
            continue
        value = parse_generalised_label(label)
        if isinstance(value, CategoryGroup):
            members[label] = None if value.members is None else sorted(value.members)
        elif label == MISSING_LABEL:
            members[label] = []
        else:
            members[label] = [label]
    out: list[str | None] = [None] * len(codes)
    draws = rng.random(len(codes))
    anys = []
    for i, label in enumerate(codes):
        options = members.get(label) if label is not None else []
        if options is None:
            anys.append(i)
        elif options:
            choice = options[int(draws[i] * len(options))]
            out[i] = None if choice == MISSING_LABEL else choice
    known = [v for v in out if v is not None]
    for i in anys:
        out[i] = known[int(draws[i] * len(known))] if known else None
    return pl.Series(labels.name, out, dtype=pl.String)


def expand_release(
    released: pl.DataFrame,
    schema: TableSchema,
    generalisations: dict[str, Any] | None,
    *,
    seed: int = 0,
) -> pl.DataFrame:
    """`released` with every generalised quasi-identifier drawn back into its column type.

    Args:
        released: the anonymized table (`anonymized_portfolio`'s loans).
        schema: the tape's schema (gives each column's type).
        generalisations: `AnonymizationResult.generalisations` (``anonymization``
            document of the release): names the members of hashed groups.
        seed: seed of the draws.

    Returns:
        A frame with the same rows and columns; generalised columns typed as in
        the schema (Float64 / Int64 / Date / String).
    """
    rng = np.random.default_rng(seed)
    columns = []
    for name in generalised_columns(released, schema, generalisations):
        series = released.get_column(name).cast(pl.String)
        kind = _column_type(schema, name)
        if kind in _NUMERIC:
            columns.append(_expand_numeric(series, kind, rng))
        else:
            drawn = _expand_category(series, (generalisations or {}).get(name), rng)
            columns.append(_as_read(drawn, schema[name].dtype if name in schema else None))
    return released.with_columns(columns) if columns else released


def _as_read(drawn: pl.Series, dtype: str | None) -> pl.Series:
    """Drawn members (text) in the dtype ingest gave the column: a Yes/No flag is Boolean, a 0/1 flag Int64.

    The anonymizer writes every group member as text ("true", "1"); a comparison
    with the real table needs the real dtype back.
    """
    if dtype == "Boolean":
        flags = as_truths(drawn)
        if flags is not None:
            return flags
    if dtype in ("Int64", "Float64"):
        return drawn.cast(getattr(pl, dtype), strict=False)
    return drawn
