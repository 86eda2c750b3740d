"""The digital-twin engine: a Gaussian copula over mixed-type loan tables.

`GaussianCopulaTwin` learns a tenant's train split (`fit`) and samples synthetic
loan tables from it (`sample`) with the same columns and types, the same
marginal shapes, the same dependence between columns, and no real row or id
copied. How a table is modelled:

- every modelled column (or pair of columns tied by a constraint) becomes one
  latent standard-normal dimension through its marginal (`models.twin.marginals`);
  a numeric column with missing values gets a second, binary dimension for its
  null pattern, so the pattern keeps its correlation with other columns, and
  the rows it keeps present are mapped through the value's distribution given
  present (`_present_row_map`), so they follow the marginal fitted on them;
- one correlation matrix over the normal scores (pairwise-complete, corrected
  for the attenuation that ties and categories cause, repaired to positive
  definite) holds the dependence; sampling is a Cholesky draw;
- categoricals and booleans are levels laid out on (0, 1), in frequency order
  or, when a numeric column explains part of their variance, in the order of
  their means on it (so the dependence is monotone, as a Gaussian copula needs);
  a category seen in fewer than `k` train rows is merged into an "other"
  bucket before anything is stored, so no rare real value survives; numeric
  columns with few distinct values keep their exact values the same way;
- a numeric column that is null exactly for some categories (LTV of unsecured
  loans) follows that rule instead of a null dimension;
- a column with one value (or null) in every row is not modelled and is
  released as it is; a free-form label column (more than `max_categories`
  values) keeps only labels seen in max(k, 5) rows and releases the rest as
  "other"; level columns where one nearly decides another (grade by
  sub-grade; the target and a flag it decides, reject and approve) become one
  categorical over their observed combinations;
- `{"type": "inequality", "low": a, "high": b}` is modelled as b and the gap
  b - a >= 0, so a <= b holds in every sampled row; `{"type":
  "fixed_combinations", "columns": [...]}` is one categorical over the observed
  combinations; `{"type": "range", "column": c, "low": x, "high": y}` declares
  bounds;
- conditional sampling (`{"target_rate": r}`, `{"fixed": {column: value}}`)
  draws the constrained dimensions from truncated normals on the allowed
  intervals and the others from the conditional normal, with no rejection loop;
  the requested rate is met exactly by allocating round(n * r) rows to it.

The fitted model is a directory with `model.json` (column plans, category
levels, bounds) and `arrays.npz` (quantile knots, level probabilities, the
correlation matrix), read back with `allow_pickle=False` and validated strictly.

`CopulaNoise` is where differential privacy plugs in: `fit` passes every
marginal's counts and the correlation matrix through it, and nowhere else uses
the data.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models.errors import CreditTwinError, InvalidDataError, NotFittedError, ValidationErrors
from models.files import atomic_directory
from models.twin.marginals import ContinuousMarginal, LevelMarginal
from models.tape.schema import ColumnType, TableSchema
from models.twin.protocol import Conditions
from models.tape.vocabulary import target_indicator

FORMAT = "credittwin.gaussian_copula"
FORMAT_VERSION = 1
# The format `models.twin.segmented.SegmentedCopulaTwin` saves (one twin per segment).
SEGMENTED_FORMAT = "credittwin.segmented_copula"
MIN_ROWS = 50
# Past this many columns the latent dimension (up to twice the columns with null
# indicators) outgrows what a loan tape of ordinary size can estimate reliably.
MAX_COLUMNS = 256
OTHER = "(other)"  # parenthesised like "(missing)": a generalisation label, never a lender's own category
# Numeric columns with at most this many distinct values keep their exact values.
DISCRETE_MAX_LEVELS = 32
# ... unless pooling their values held by fewer than k rows would move more than this share of the rows: a small
# book's 15 distinct values of which 2 are common is a spread, not a few levels, and is modelled as continuous.
DISCRETE_MAX_POOLED = 0.05
N_KNOTS = 512
SAMPLE_CHUNK = 65_536
GIBBS_SWEEPS = 8
# Rows used to choose the interval order of categories (enough for stable means).
ORDERING_ROWS = 20_000
# Rows per block of the correlation's matrix products (a float64 block of 64k rows x 100 dims is 50 MB).
CORRELATION_ROWS = 65_536
# The grid of latent values on which a column's present-row correction (`_present_row_map`) is tabulated.
PRESENT_GRID = np.linspace(-9.0, 9.0, 4097)
# Rows a column is first checked on: a category mixing nulls there rules out a structural null, and two values
# there rule out a constant column, without a pass over the whole table.
NULL_PROBE_ROWS = 20_000
CONSTANT_PROBE_ROWS = 1_000
MIN_PAIR_ROWS = 10
# A variance below this share of the mean square is rounding error: the column is constant there.
CONSTANT_VARIANCE = 1e-12
MIN_EIGENVALUE = 1e-6
# Correlations within this many standard errors (1/sqrt(rows)) of zero are treated as zero.
NOISE_FLOOR = 3.0
# ... but only for pairs the inversion magnifies more than this (rare levels); elsewhere noise stays noise-sized.
MAX_MAGNIFICATION = 12.0
# A combination is laid out by a numeric member holding at least this many values (`_order_levels`): a rate,
# not a term of 12 to 360 months beside the product.
COMBO_MEMBER_LEVELS = 10
NEAREST_ITERATIONS = 100
NEAREST_TOLERANCE = 1e-7
HERMITE_TERMS = 12
# Near-deterministic level columns (see `_dependent_groups`): the share of the rows a column's commonest value
# leaves unexplained that the other column must explain, the most levels a column may have to be considered,
# and the share of rows the group's common combinations must cover.
DEPENDENT_LAMBDA = 0.95
# The fewest rows a free-form label (a column past max_categories) needs to be released verbatim.
LABEL_MIN_ROWS = 5
MAX_DEPENDENT_LEVELS = 64
DEPENDENT_COVERAGE = 0.99
_CONSTRAINT_TYPES = {"inequality", "fixed_combinations", "range"}

_INT_DTYPES = {
    "Int8": pl.Int8, "Int16": pl.Int16, "Int32": pl.Int32, "Int64": pl.Int64,
    "UInt8": pl.UInt8, "UInt16": pl.UInt16, "UInt32": pl.UInt32, "UInt64": pl.UInt64,
}
_SIMPLE_DTYPES = {
    **_INT_DTYPES, "Float32": pl.Float32, "Float64": pl.Float64, "Boolean": pl.Boolean,
    "String": pl.String, "Categorical": pl.Categorical, "Date": pl.Date, "Null": pl.Null,
}


class CopulaNoise(ABC):
    """Where differential-privacy noise enters the fit (identity when absent).

    `GaussianCopulaTwin.fit` calls `marginal_counts` once per latent dimension
    with the counts its marginal is built from (rows per category, per discrete
    value, per null/non-null, or per quantile-knot interval of a continuous
    column), and `correlation` once with the latent correlation matrix before it
    is repaired to positive definite. The other data-dependent choices a DP
    implementation must also cover (with public bins, noisy quantiles or by
    switching them off) are the positions of the continuous quantile knots and
    their bounds, the interval order of categories (from category means), and
    the structural-null rules (from per-category null counts).

    The segmented twin (`models.twin.segmented.SegmentedCopulaTwin`, the default
    engine) passes the hook to its global model and to every segment model, so
    each is called once per model; it does not choose a segmentation column by
    itself when a hook is set, because the choice and the segment sizes read the
    data outside the hook (a DP engine segments only by an explicit `segment_by`
    whose segment counts it pays for).
    """

    @abstractmethod
    def marginal_counts(self, column: str, counts: np.ndarray) -> np.ndarray:
        """Return (noisy) non-negative counts of the same shape for `column`."""

    @abstractmethod
    def correlation(self, matrix: np.ndarray) -> np.ndarray:
        """Return a (noisy) symmetric matrix of the same shape; it is repaired after."""


# --------------------------------------------------------------------------- dtypes


def _dtype_token(dtype: pl.DataType) -> dict[str, Any]:
    if isinstance(dtype, pl.Datetime):
        return {"name": "Datetime", "unit": dtype.time_unit, "tz": dtype.time_zone}
    if isinstance(dtype, pl.Enum):
        return {"name": "String"}
    name = str(dtype.base_type()).split("(")[0]
    if name not in _SIMPLE_DTYPES:
        raise ValueError(name)
    return {"name": name}


def _dtype_from_token(token: dict[str, Any]) -> pl.DataType:
    if token["name"] == "Datetime":
        if token.get("unit") not in ("ns", "us", "ms") or not (token.get("tz") is None or isinstance(token["tz"], str)):
            raise ValueError(f"bad datetime dtype {token!r}")
        return pl.Datetime(token["unit"], token["tz"])
    if token["name"] not in _SIMPLE_DTYPES or set(token) != {"name"}:
        raise ValueError(f"unsupported dtype {token!r}")
    return _SIMPLE_DTYPES[token["name"]]


def _numeric_view(series: pl.Series) -> np.ndarray:
    """A numeric or temporal column as float64, NaN for null (dates in days, datetimes in their unit).

    Read-only: a float64 column without nulls is polars' own buffer, not a copy.
    """
    if series.dtype == pl.Date:
        series = series.cast(pl.Int32)
    elif isinstance(series.dtype, pl.Datetime):
        series = series.dt.epoch(series.dtype.time_unit)
    # Polars hands a float column's nulls over as NaN, so NaN and null need no separate pass.
    return series.cast(pl.Float64).to_numpy()


def _fill_nan(series: pl.Series) -> pl.Series:
    """NaN read as missing, as everywhere in the twin."""
    return series.fill_nan(None) if series.dtype.is_float() else series


def _granularity(values: np.ndarray, dtype: pl.DataType) -> float:
    """The step sampled values are rounded to: 1 for integers and dates, the coarsest clean unit for datetimes."""
    if isinstance(dtype, pl.Datetime):
        per_second = {"ns": 1e9, "us": 1e6, "ms": 1e3}[dtype.time_unit]
        finite = values[~np.isnan(values)]
        for step in (86_400 * per_second, 60 * per_second, per_second):
            if np.all(np.mod(finite, step) == 0):
                return step
        return 1.0
    if dtype == pl.Date or dtype.is_integer():
        return 1.0
    return 0.0


# --------------------------------------------------------------------------- validation


def _err(message: str, *, column: str | None = None, fix: str | None = None) -> InvalidDataError:
    return InvalidDataError(message, column=column, fix=fix)


def _raise_all(problems: list[CreditTwinError]) -> None:
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ValidationErrors(problems)


def _positive_levels(values: list[Any], positive: list[Any], dtype: pl.DataType) -> list[Any]:
    """The observed target values that mean "defaulted" (by `target_indicator`; none declared: the true ones)."""
    hits = target_indicator(pl.Series(values, dtype=dtype, strict=False), positive or [True]).to_list()
    return [v for v, hit in zip(values, hits) if hit]


def _validate_table(
    table: pl.DataFrame, schema: TableSchema, *, max_categories: int, constraints: list[dict]
) -> None:
    """Collect every problem with the input and raise them together."""
    if not isinstance(table, pl.DataFrame):
        raise InvalidDataError(
            f"expected a polars DataFrame, got {type(table).__name__}",
            fix="load the tape with polars (pl.read_parquet / pl.from_pandas).",
        )
    problems: list[CreditTwinError] = []
    if table.height < MIN_ROWS:
        problems.append(_err(
            f"the train split has {table.height} rows; at least {MIN_ROWS} are needed to learn a joint distribution.",
            fix=f"upload a larger loan tape: the train split is the tape less its holdout (holdout_share in tenant.yaml, "
            f"0.2 by default), so the tape needs {math.ceil(MIN_ROWS / 0.8)} loans at the default share and "
            f"{math.ceil(MIN_ROWS / 0.95)} at holdout_share 0.05.",
        ))
    if table.width > MAX_COLUMNS:
        problems.append(_err(
            f"the table has {table.width} columns; the copula models at most {MAX_COLUMNS}.",
            fix="keep the columns the twin needs (tenant.yaml `columns`) or declare the others as text.",
        ))
    missing = [n for n in schema.names if n not in table.columns]
    extra = [n for n in table.columns if n not in schema]
    for name in missing:
        problems.append(_err("is in the schema but not in the table.", column=name, fix="re-infer the schema from this table."))
    for name in extra:
        problems.append(_err("is in the table but not in the schema.", column=name, fix="re-infer the schema from this table."))
    if problems:
        _raise_all(problems)

    for spec in schema.columns:
        if spec.type in (ColumnType.IDENTIFIER, ColumnType.TEXT):
            continue
        series = table.get_column(spec.name)
        if series.dtype.is_float() and bool(series.is_infinite().any()):
            problems.append(_err(
                "holds infinite values.", column=spec.name,
                fix="replace the infinities with nulls or real figures before uploading.",
            ))
        elif _fill_nan(series).null_count() < table.height or spec.name == schema.target:
            # An all-null column is released as nulls of its own dtype, whatever that dtype is.
            try:
                _dtype_token(series.dtype)
            except ValueError:
                problems.append(_err(
                    f"has dtype {series.dtype}, which the copula cannot model.",
                    column=spec.name, fix="cast it to a number, a date or a string, or declare it as text.",
                ))
    # Constant and all-null columns are released as they are and high-cardinality labels are pooled
    # (see `GaussianCopulaTwin._fit`): lenders do not edit their exports for us, so neither refuses the tape.
    if schema.target is not None:
        problems.extend(_validate_target(table, schema))
    problems.extend(_validate_constraints(table, schema, constraints))
    _raise_all(problems)


def _validate_target(table: pl.DataFrame, schema: TableSchema) -> list[CreditTwinError]:
    name = schema.target
    if name not in schema:
        return [_err("is declared as the target but is not in the table.", column=name, fix="fix `target` in tenant.yaml.")]
    spec = schema[name]
    if spec.type not in (ColumnType.BOOLEAN, ColumnType.CATEGORICAL):
        return [_err(
            f"is the target but has type {spec.type.value}; the target must be boolean or categorical.",
            column=name, fix="declare the target as boolean or categorical.",
        )]
    series = table.get_column(name)
    values = series.drop_nulls().unique().to_list()
    positive = _positive_levels(values, schema.target_positive, series.dtype)
    if not positive or len(positive) == len(values):
        return [_err(
            "the target has one class only "
            f"({'no' if not positive else 'only'} defaulted loans); a default rate cannot be learned.",
            column=name,
            fix="upload a tape with both defaulted and non-defaulted loans, or fix `target_positive`.",
        )]
    return []


def _validate_constraints(table: pl.DataFrame, schema: TableSchema, constraints: list[dict]) -> list[CreditTwinError]:
    problems: list[CreditTwinError] = []
    modelled_numeric = set(schema.of_type(ColumnType.NUMERIC, ColumnType.INTEGER, ColumnType.DATETIME))
    levelled = set(schema.of_type(ColumnType.CATEGORICAL, ColumnType.BOOLEAN, ColumnType.INTEGER, ColumnType.NUMERIC))
    low_of: dict[str, str] = {}
    in_combo: set[str] = set()
    edges: dict[str, str] = {}
    for i, c in enumerate(constraints):
        where = f"constraint #{i + 1} ({c!r})"
        if not isinstance(c, dict) or c.get("type") not in _CONSTRAINT_TYPES:
            problems.append(_err(f"{where} has no known type.", fix=f"use one of {sorted(_CONSTRAINT_TYPES)}."))
            continue
        kind = c["type"]
        expected = {"inequality": {"type", "low", "high"}, "fixed_combinations": {"type", "columns"},
                    "range": {"type", "column", "low", "high"}}[kind]
        if set(c) != expected:
            problems.append(_err(f"{where} must have exactly the keys {sorted(expected)}.", fix="fix the constraint list."))
            continue
        if kind == "inequality":
            low, high = c["low"], c["high"]
            unknown = [x for x in (low, high) if x not in schema]
            for x in unknown:
                problems.append(_err(f"{where} names an unknown column.", column=str(x), fix="name columns of the tape."))
            if unknown:
                continue
            if low == high or low not in modelled_numeric or high not in modelled_numeric:
                problems.append(_err(
                    f"{where} must relate two different numeric, integer or date columns.",
                    column=low, fix="fix the constraint list.",
                ))
                continue
            if low in low_of:
                problems.append(_err(f"{where}: '{low}' is already the low side of another inequality.", column=low,
                                     fix="keep one inequality per low column (chains a <= b <= c are fine)."))
                continue
            dl, dh = table.get_column(low).dtype, table.get_column(high).dtype
            if (dl.is_temporal() or dh.is_temporal()) and dl != dh:
                problems.append(_err(f"{where} relates columns of different types ({dl} and {dh}).", column=low,
                                     fix="cast both columns to the same date type."))
                continue
            low_of[low] = high
            edges[low] = high
            a, b = _numeric_view(table.get_column(low)), _numeric_view(table.get_column(high))
            bad = int(np.sum(a > b))
            if bad:
                problems.append(_err(
                    f"{where} is violated by {bad} train rows.", column=low,
                    fix="correct those rows in the tape, or remove the constraint from tenant.yaml.",
                ))
        elif kind == "fixed_combinations":
            cols = c["columns"]
            if not isinstance(cols, list) or len(cols) < 2 or len(set(cols)) != len(cols):
                problems.append(_err(f"{where} needs a list of at least two distinct columns.", fix="fix the constraint list."))
                continue
            for col in cols:
                if col not in schema:
                    problems.append(_err(f"{where} names an unknown column.", column=str(col), fix="name columns of the tape."))
                elif col == schema.target or col in in_combo or col not in levelled:
                    problems.append(_err(
                        f"{where}: a combination column must be categorical, boolean or numeric, not the target, "
                        "and in one combination only.", column=col, fix="fix the constraint list.",
                    ))
            in_combo.update(x for x in cols if isinstance(x, str))
        else:
            col = c["column"]
            if col not in schema:
                problems.append(_err(f"{where} names an unknown column.", column=str(col), fix="name columns of the tape."))
                continue
            if schema[col].type not in (ColumnType.NUMERIC, ColumnType.INTEGER):
                problems.append(_err(f"{where}: ranges apply to numeric or integer columns.", column=col,
                                     fix="fix the constraint list."))
                continue
            bounds = [c["low"], c["high"]]
            if any(b is not None and (isinstance(b, bool) or not isinstance(b, (int, float))) for b in bounds) or (
                None not in bounds and bounds[0] > bounds[1]
            ):
                problems.append(_err(f"{where} needs numeric bounds with low <= high (or null).", column=col,
                                     fix="fix the constraint list."))
                continue
            values = _numeric_view(table.get_column(col))
            values = values[~np.isnan(values)]
            outside = int(np.sum((values < (bounds[0] if bounds[0] is not None else -np.inf))
                                 | (values > (bounds[1] if bounds[1] is not None else np.inf))))
            if outside:
                problems.append(_err(f"{where} is violated by {outside} train rows.", column=col,
                                     fix="correct those rows or widen the range."))
    for col in set(low_of) | set(low_of.values()):
        if col in in_combo:
            problems.append(_err("is in both an inequality and a fixed combination.", column=col, fix="keep one of the two."))
    for start in edges:
        seen, node = {start}, start
        while node in edges:
            node = edges[node]
            if node in seen:
                problems.append(_err("the inequalities form a cycle.", column=start, fix="remove one inequality of the cycle."))
                break
            seen.add(node)
    return problems


# --------------------------------------------------------------------------- constant columns and dependent groups


def _constant_plan(series: pl.Series) -> dict[str, Any] | None:
    """The plan of a column with one value in every row (or null in every row), else None.

    Such a column holds nothing to learn and nothing private (every row shares
    its value), so it is released as it is rather than refused: lenders export
    fixed fields (a single MSA, a flag that never fired) and do not edit them out.
    """
    values = _fill_nan(series)
    nulls = values.null_count()
    # Two values among the first rows settle most columns without hashing them all.
    if nulls == 0 and values[:CONSTANT_PROBE_ROWS].n_unique() == 1 and values.n_unique() == 1:
        first = values[:1]
        if first.dtype == pl.Date or isinstance(first.dtype, pl.Datetime):
            value: Any = int(_numeric_view(first)[0])
        else:
            value = _json_scalar(first.cast(pl.String).item() if isinstance(first.dtype, (pl.Categorical, pl.Enum))
                                 else first.item())
    elif nulls == series.len():
        value = None
    else:
        return None
    try:
        token = _dtype_token(series.dtype)
    except ValueError:
        # An all-null column of a type the twin does not model (a list, an object) is released as plain nulls.
        token = {"name": "Null"}
    return {"name": series.name, "kind": "constant", "dtype": token, "value": value}


def _constant_series(plan: dict[str, Any], n: int) -> pl.Series:
    """A constant column's `n` released values, in its own dtype."""
    name, value = plan["name"], plan["value"]
    dtype = _dtype_from_token(plan["dtype"])
    if value is None:
        return pl.Series(name, [None] * n, dtype=dtype)
    if dtype == pl.Date or isinstance(dtype, pl.Datetime):
        return GaussianCopulaTwin._numeric_series(name, np.full(n, float(value)), np.zeros(n, dtype=bool), dtype)
    one = pl.Series(name, [value], dtype=pl.String if dtype == pl.Categorical else dtype)
    return one.cast(dtype).gather(np.zeros(n, dtype=np.int64))


def _without_constants(constraints: list[dict], constants: dict[str, Any]) -> list[dict]:
    """The constraints restated over the columns left to model once the constant ones are fixed.

    a <= b with a constant becomes a lower bound on b (and the other way round);
    a fixed combination loses its constant members (and goes when fewer than two
    are left); a range on a constant column, or anything on an all-null one, goes.
    """
    out: list[dict] = []
    for c in constraints:
        if c["type"] == "inequality":
            low, high = c["low"], c["high"]
            if low in constants and high in constants:
                continue
            if low in constants:
                if constants[low] is not None:
                    out.append({"type": "range", "column": high, "low": constants[low], "high": None})
            elif high in constants:
                if constants[high] is not None:
                    out.append({"type": "range", "column": low, "low": None, "high": constants[high]})
            else:
                out.append(c)
        elif c["type"] == "fixed_combinations":
            left = [x for x in c["columns"] if x not in constants]
            if len(left) >= 2:
                out.append({"type": "fixed_combinations", "columns": left})
        elif c["column"] not in constants:
            out.append(c)
    return out


def _dense_codes(series: pl.Series) -> tuple[np.ndarray, int]:
    """Codes 0..m-1 of a column's values, null its own value."""
    values = _fill_nan(series)
    if values.dtype.is_float():
        values = values + 0.0  # -0.0 becomes 0.0: one value, as it is for the other steps of the fit
    codes = values.to_physical().rank("dense").fill_null(0).to_numpy().astype(np.int64)
    _, codes = np.unique(codes, return_inverse=True)
    return codes, int(codes.max()) + 1 if codes.size else 0


def _dependent_groups(table: pl.DataFrame, schema: TableSchema, *, exclude: set[str], k: int) -> list[list[str]]:
    """Groups of level columns where one column (almost) decides the others, such as grade by sub-grade.

    A Gaussian copula joins two category columns through one latent correlation,
    which cannot hold a near-deterministic link (sub-grade B3 always has grade B,
    reject = 1 exactly when approve = 0); the pair comes back only loosely tied.
    Such columns are modelled as one categorical over their observed
    combinations instead (as a declared fixed combination is). A pair qualifies
    when the richer column predicts the other for `DEPENDENT_LAMBDA` of the rows
    that the other's commonest value does not already explain (Goodman and
    Kruskal's lambda), with at least `2 k` such rows as evidence; pairs are
    joined into groups while the group's combinations seen in `k` or more rows
    stay few and cover `DEPENDENT_COVERAGE` of the rows.
    """
    names = [s.name for s in schema.columns
             if s.type in (ColumnType.CATEGORICAL, ColumnType.BOOLEAN, ColumnType.INTEGER, ColumnType.NUMERIC)
             and s.name not in exclude]
    sample = table.sample(ORDERING_ROWS, seed=0) if table.height > ORDERING_ROWS else table
    coded = {}
    for name in names:
        codes, levels = _dense_codes(sample.get_column(name))
        if 2 <= levels <= MAX_DEPENDENT_LEVELS:
            coded[name] = (codes, levels)
    names = list(coded)
    m = sample.height
    pairs: list[tuple[float, str, str]] = []
    for i, a in enumerate(names):
        ca, ka = coded[a]
        for b in names[i + 1:]:
            cb, kb = coded[b]
            counts = np.bincount(ca * kb + cb, minlength=ka * kb).reshape(ka, kb)
            best = 0.0
            # Rows are the predicting column's levels: how often its level's commonest partner is right.
            for by_level in (counts, counts.T):
                modal = int(by_level.sum(0).max())
                if m - modal >= 2 * k:
                    best = max(best, (int(by_level.max(1).sum()) - modal) / (m - modal))
            if best >= DEPENDENT_LAMBDA:
                pairs.append((best, a, b))
    groups: list[list[str]] = []
    group_of: dict[str, int] = {}
    for _, a, b in sorted(pairs, key=lambda p: (-p[0], p[1], p[2])):
        if a in group_of and b in group_of and group_of[a] == group_of[b]:
            continue
        members = (groups[group_of[a]] if a in group_of else [a]) + (groups[group_of[b]] if b in group_of else [b])
        combos = table.select(members).with_columns(_fill_nan(table.get_column(c)) for c in members).group_by(members).len()
        common = combos.filter(pl.col("len") >= k)
        if common.height > MAX_DEPENDENT_LEVELS * 2 or common.get_column("len").sum() < DEPENDENT_COVERAGE * table.height:
            continue
        if schema.target in members and not _keeps_each_value(combos, common, schema.target):
            continue
        for old in {group_of[x] for x in (a, b) if x in group_of}:
            groups[old] = []
        groups.append(members)
        for x in members:
            group_of[x] = len(groups) - 1
    # Table order inside a group and between groups, so the latent layout never depends on pair ranking ties.
    position = {s.name: i for i, s in enumerate(schema.columns)}
    return sorted((sorted(g, key=position.get) for g in groups if g), key=lambda g: position[g[0]])


def _keeps_each_value(combos: pl.DataFrame, common: pl.DataFrame, column: str) -> bool:
    """Whether the `common` combinations hold `DEPENDENT_COVERAGE` of the rows of each value of `column`.

    A group with the target drops its rare combinations like any other; a value of the target (the defaults,
    a few percent of the book) must not lose more of its rows to that than the whole table may.
    """
    total = combos.group_by(column).agg(pl.col("len").sum().alias("all"))
    kept = common.group_by(column).agg(pl.col("len").sum().alias("kept"))
    joined = total.join(kept, on=column, how="left", nulls_equal=True).fill_null(0)
    return bool((joined.get_column("kept") >= DEPENDENT_COVERAGE * joined.get_column("all")).all())


# --------------------------------------------------------------------------- helpers


def _level_codes(series: pl.Series, levels: list[Any]) -> np.ndarray:
    """Index of each value in `levels` (the None level matches null); -1 where absent."""
    present = [v for v in levels if v is not None]
    positions = [i for i, v in enumerate(levels) if v is not None]
    null_code = levels.index(None) if None in levels else -1
    codes = series.replace_strict(present, positions, default=-1, return_dtype=pl.Int64)
    return codes.fill_null(null_code).to_numpy().astype(np.int64)


def _same_value(level: Any, value: Any) -> bool:
    """Category equality where True never matches 1 and None never matches anything."""
    if level is None or value is None:
        return False
    if isinstance(level, bool) or isinstance(value, bool):
        return level is value
    return level == value


def _structural_null(null: np.ndarray, pending: list[tuple[int, np.ndarray]]) -> int | None:
    """The categorical dimension whose levels decide exactly when `null` holds, if one does."""
    probe = slice(0, NULL_PROBE_ROWS)
    for dim, codes in pending:
        if _mixes_nulls(null[probe], codes[probe]):
            continue
        ok = codes >= 0
        totals = np.bincount(codes[ok])
        nulls = np.bincount(codes[ok], weights=null[ok], minlength=totals.size)
        seen = totals > 0
        share = nulls[seen] / totals[seen]
        if np.all((share == 0) | (share == 1)) and share.min() == 0 and share.max() == 1 and not null[~ok].any():
            return dim
    return None


def _mixes_nulls(null: np.ndarray, codes: np.ndarray) -> bool:
    """Whether some level holds both null and present rows, or a row without a level is null (no rule then)."""
    ok = codes >= 0
    totals = np.bincount(codes[ok])
    nulls = np.bincount(codes[ok], weights=null[ok], minlength=totals.size)
    return bool(np.any((nulls > 0) & (nulls < totals)) or null[~ok].any())


def _json_scalar(value: Any) -> Any:
    """A category value as a JSON scalar (numpy and temporal values are not JSON)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return str(value)


def _normal_scores(u: np.ndarray) -> np.ndarray:
    from scipy.special import ndtri

    return ndtri(u, out=np.empty(u.shape, dtype=np.float32))


def _pairwise_correlation(columns: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of `columns` (1-d, equal length, NaN = missing) over each pair's complete rows, and those counts.

    Per block of rows, one symmetric matrix product gives every pair's cross
    products. The sums, sums of squares and row counts a pair needs depend on
    both columns only where the partner has missing values, so only the columns
    with holes enter masked products (`d` x holes, not `d` x `d`); every other
    pair takes the column's own totals. Accumulated in float64.
    """
    d = len(columns)
    n = columns[0].size if d else 0
    missing = np.array([np.count_nonzero(np.isnan(c)) for c in columns], dtype=np.float64)
    holes = np.flatnonzero(missing)
    sxy = np.zeros((d, d))
    sums, squares = np.zeros(d), np.zeros(d)
    hole_sums, hole_squares, hole_rows = (np.zeros((d, holes.size)) for _ in range(3))
    for start in range(0, n, CORRELATION_ROWS):
        stop = min(start + CORRELATION_ROWS, n)
        # Column-major, so filling a column and the product's transposed read are both contiguous.
        block = np.empty((stop - start, d), order="F")
        for j, c in enumerate(columns):
            block[:, j] = c[start:stop]
        m = ~np.isnan(block[:, holes])
        block[:, holes] = np.where(m, block[:, holes], 0.0)
        m = m.astype(np.float64)
        sxy += block.T @ block
        square = block * block
        sums += block.sum(0)
        squares += square.sum(0)
        hole_sums += block.T @ m
        hole_squares += square.T @ m
        rows = np.repeat(m.sum(0)[None, :], d, axis=0)
        rows[holes] = m.T @ m
        hole_rows += rows
    # Entry [i, j] is over the rows where column j is present: all of them unless j has holes.
    sx, sxx, cnt = (np.repeat(v[:, None], d, axis=1) for v in (sums, squares, n - missing))
    sx[:, holes], sxx[:, holes], cnt[:, holes] = hole_sums, hole_squares, hole_rows
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_x = sx / cnt
        mean_y = mean_x.T
        cov = sxy / cnt - mean_x * mean_y
        var_x = sxx / cnt - mean_x**2
        # A column constant over a pair's rows leaves only rounding in its variance (and so in the correlation).
        var_x[var_x <= CONSTANT_VARIANCE * sxx / cnt] = 0.0
        var_y = var_x.T
        corr = cov / np.sqrt(var_x * var_y)
    corr[(cnt < MIN_PAIR_ROWS) | ~np.isfinite(corr)] = 0.0
    corr = (corr + corr.T) / 2
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0), cnt


def _hermite_coefficients(cum: np.ndarray) -> np.ndarray:
    """Hermite coefficients c_n = E[m(Z) He_n(Z)] / sqrt(n!) of a dimension's tie partition.

    A row's normal score is spread uniformly inside its level's interval, so it
    equals the latent normal Z only through m(Z) = E[Z | level]. For two such
    dimensions with latent correlation rho, the correlation of the scores is
    sum_n c_n c'_n rho^n (Mehler's expansion); `_latent_correlation` inverts it.
    """
    from scipy.special import ndtri

    p = np.diff(cum)
    keep = p > 0
    lo, hi, p = ndtri(cum[:-1][keep]), ndtri(cum[1:][keep]), p[keep]
    # Infinite cut points contribute nothing (pdf is 0 there); use 0 to keep the arithmetic finite.
    a = np.where(np.isfinite(lo), lo, 0.0)
    b = np.where(np.isfinite(hi), hi, 0.0)
    pdf_lo = np.where(np.isfinite(lo), np.exp(-0.5 * a**2) / math.sqrt(2 * math.pi), 0.0)
    pdf_hi = np.where(np.isfinite(hi), np.exp(-0.5 * b**2) / math.sqrt(2 * math.pi), 0.0)
    m = (pdf_lo - pdf_hi) / p
    h_prev_a, h_prev_b = np.zeros_like(a), np.zeros_like(b)
    h_a, h_b = np.ones_like(a), np.ones_like(b)
    coef = np.empty(HERMITE_TERMS)
    for k in range(1, HERMITE_TERMS + 1):
        # E[m He_k] = sum m_level (He_{k-1}(lo) pdf(lo) - He_{k-1}(hi) pdf(hi)); h_* hold He_{k-1}.
        coef[k - 1] = float(np.sum(m * (h_a * pdf_lo - h_b * pdf_hi))) / math.sqrt(math.factorial(k))
        h_a, h_prev_a = a * h_a - (k - 1) * h_prev_a, h_a
        h_b, h_prev_b = b * h_b - (k - 1) * h_prev_b, h_b
    return coef


def _latent_correlation(
    observed: np.ndarray, partitions: dict[int, np.ndarray], rows: np.ndarray | None = None, noise_floor: float = 0.0
) -> np.ndarray:
    """Undo the attenuation of correlations involving tied or categorical dimensions.

    Dimensions without ties keep c = (1, 0, 0, ...); for each pair the latent rho
    solving sum_n c_n c'_n rho^n = observed is found by bisection on [-1, 1]
    (the series is increasing in rho for monotone m).

    The inversion magnifies a pair by about 1 / (c_1 c'_1), which is large for
    a rare level (a 0.2% null flag shows at most about 0.02 of correlation, so
    sampling noise of 0.03 would come back as a latent +-1 and leave the matrix
    far from positive definite, whose repair then shrinks the real dependences).
    Where the magnification exceeds `MAX_MAGNIFICATION`, an observed correlation within
    `noise_floor` standard errors (1 / sqrt(`rows`)) of zero is taken as zero.
    """
    d = observed.shape[0]
    if not partitions or d < 2:
        return observed
    coef = np.zeros((d, HERMITE_TERMS))
    coef[:, 0] = 1.0
    for dim, cum in partitions.items():
        coef[dim] = _hermite_coefficients(cum)
    if rows is not None and noise_floor > 0:
        with np.errstate(invalid="ignore", divide="ignore"):
            noise = (np.abs(observed) < noise_floor / np.sqrt(rows)) & (np.abs(np.outer(coef[:, 0], coef[:, 0])) < 1 / MAX_MAGNIFICATION)
        observed = np.where(noise, 0.0, observed)
        np.fill_diagonal(observed, 1.0)
    # One (d, d) slab per Hermite term, so the series is evaluated by Horner's rule without powers.
    pair = np.ascontiguousarray(np.moveaxis(coef[:, None, :] * coef[None, :, :], -1, 0))
    lo, hi = -np.ones((d, d)), np.ones((d, d))
    for _ in range(40):
        mid = (lo + hi) / 2
        value = pair[-1].copy()
        for term in pair[-2::-1]:
            value *= mid
            value += term
        value *= mid
        above = value > observed
        hi = np.where(above, mid, hi)
        lo = np.where(above, lo, mid)
    latent = (lo + hi) / 2
    latent = (latent + latent.T) / 2
    np.fill_diagonal(latent, 1.0)
    return latent


def _repair_correlation(matrix: np.ndarray) -> np.ndarray:
    """Nearest positive-definite correlation matrix (Higham 2002), then eigenvalues floored.

    Alternating projections with Dykstra's correction between the positive
    semidefinite cone and the unit-diagonal matrices find the correlation
    matrix nearest in Frobenius norm, which moves every entry a little; plain
    eigenvalue clipping followed by rescaling instead shrinks the strongest
    correlations most (a deterministic pair of flags came back at 0.6).
    """
    if matrix.size == 0:  # every column is constant, null or an identifier: nothing is modelled jointly
        return matrix
    sym = (matrix + matrix.T) / 2
    y = sym.copy()
    correction = np.zeros_like(sym)
    for _ in range(NEAREST_ITERATIONS):
        r = y - correction
        vals, vecs = np.linalg.eigh(r)
        if vals[0] >= MIN_EIGENVALUE:
            break
        x = (vecs * np.clip(vals, 0.0, None)) @ vecs.T
        correction = x - r
        previous, y = y, x.copy()
        np.fill_diagonal(y, 1.0)
        if np.linalg.norm(y - previous) <= NEAREST_TOLERANCE * max(np.linalg.norm(y), 1.0):
            break
    sym = (y + y.T) / 2
    vals, vecs = np.linalg.eigh(sym)
    fixed = (vecs * np.clip(vals, MIN_EIGENVALUE, None)) @ vecs.T
    scale = np.sqrt(np.diag(fixed))
    fixed = fixed / np.outer(scale, scale)
    np.fill_diagonal(fixed, 1.0)
    return (fixed + fixed.T) / 2


def _present_row_map(rho: float, present: tuple[float, float]) -> np.ndarray:
    """The distribution function of a value's latent score on the rows where its column is present, on `PRESENT_GRID`.

    A numeric column with missing values has a value dimension Z, fitted on the rows where it is present, and a
    null dimension W: a row is present when W's uniform lies in `present`. When the two correlate (the repair of
    the correlation matrix sets the pair, which no row observes, to what the column's other dependences imply:
    0.3 for a 90%-missing expense column of a real survey), keeping only the rows where W says present shifts
    their Z, and the released values left the fitted marginal (median 211 against 2,400 real). With (Z, W)
    standard bivariate normal, P(Z <= z | present) = integral up to z of phi(t) P(W in present | Z = t) dt / p,
    and W given Z = t is normal with mean rho t and variance 1 - rho^2. Mapping a present row's Z through this
    function gives its uniform on the fitted marginal: the kept rows follow the marginal exactly and keep their
    order, so their dependence on the other columns stays.
    """
    from scipy.special import ndtr, ndtri

    low, high = (float(ndtri(min(max(edge, 0.0), 1.0))) for edge in present)
    spread = math.sqrt(max(1.0 - rho * rho, 1e-12))
    mean = rho * PRESENT_GRID
    density = np.exp(-0.5 * PRESENT_GRID**2) * (ndtr((high - mean) / spread) - ndtr((low - mean) / spread))
    steps = np.diff(PRESENT_GRID) * (density[1:] + density[:-1]) / 2
    cdf = np.concatenate([[0.0], np.cumsum(steps)])
    return cdf / cdf[-1] if cdf[-1] > 0 else ndtr(PRESENT_GRID)


def _cholesky(matrix: np.ndarray) -> np.ndarray:
    """Cholesky factor with a growing diagonal jitter for matrices at the edge of PD."""
    if matrix.size == 0:
        return matrix.copy()
    jitter = 0.0
    for _ in range(8):
        try:
            return np.linalg.cholesky(matrix + jitter * np.eye(len(matrix)))
        except np.linalg.LinAlgError:
            jitter = max(jitter * 10, 1e-10)
    return np.linalg.cholesky(_repair_correlation(matrix))


def _truncated_draw(mu: np.ndarray, sigma: float, spans: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw z ~ N(mu, sigma^2) restricted to the union of u-space `spans` (k, 2), by inverse CDF.

    No rejection: each row picks a span with probability proportional to its
    mass, then a uniform inside that span's CDF range. Spans far in a tail are
    handled on the reflected side, so rare conditions keep full precision.
    """
    from scipy.special import ndtr, ndtri

    n = mu.size
    out = np.empty(n)
    k = len(spans)
    step = max(1, 4_000_000 // max(k, 1))
    lo_z = ndtri(spans[:, 0])
    hi_z = ndtri(spans[:, 1])
    for s in range(0, n, step):
        m = mu[s:s + step, None]
        a = (lo_z[None, :] - m) / sigma
        b = (hi_z[None, :] - m) / sigma
        upper = a > 0
        mass = np.where(upper, ndtr(-a) - ndtr(-b), ndtr(b) - ndtr(a))
        mass = np.clip(mass, 0.0, None)
        total = mass.sum(axis=1)
        # Rows whose mass underflows everywhere take the span nearest their mean.
        nearest = np.argmin(np.where(b < 0, -b, np.where(a > 0, a, 0.0)), axis=1)
        cdf = np.cumsum(mass, axis=1) / np.where(total > 0, total, 1.0)[:, None]
        pick = (rng.random(len(m))[:, None] > cdf).sum(axis=1)
        pick = np.where(total > 0, np.minimum(pick, k - 1), nearest)
        rows = np.arange(len(m))
        ap, bp, up = a[rows, pick], b[rows, pick], upper[rows, pick]
        v = rng.random(len(m))
        lo_c = np.where(up, ndtr(-bp), ndtr(ap))
        hi_c = np.where(up, ndtr(-ap), ndtr(bp))
        x = ndtri(lo_c + v * (hi_c - lo_c))
        x = np.where(up, -x, x)
        x = np.where(np.isfinite(x), x, np.where(np.isfinite(ap), ap, bp))
        x = np.clip(x, ap, bp)
        out[s:s + step] = m[:, 0] + sigma * x
    return out


# --------------------------------------------------------------------------- the engine


class GaussianCopulaTwin:
    """Gaussian-copula digital twin of a mixed-type loan table (numpy/scipy only).

    Args:
        k: a category seen in fewer than `k` train rows is merged into "other"
            (the tenant's k-anonymity setting).
        constraints: inequality, fixed-combination and range constraints (see
            the module docstring); unknown columns are an error at `fit`.
        tail_smoothing: how far the extreme quantile knots of a continuous
            column move outward, as a share of its outermost percentile's width.
        max_categories: a categorical column with more distinct values is a
            free-form label: only labels seen in max(k, 5) rows are kept (at
            most max_categories - 1), the rest are released as "other".
        noise: the differential-privacy hook; None leaves counts and the
            correlation as measured.

    Attributes:
        correlation: the latent correlation matrix (after `fit` or `load`).
        latent_columns: the name of each latent dimension, in matrix order.
    """

    def __init__(
        self,
        *,
        k: int = 5,
        constraints: list[dict] | None = None,
        tail_smoothing: float = 0.5,
        max_categories: int = 1000,
        noise: CopulaNoise | None = None,
    ) -> None:
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InvalidDataError(f"k must be a positive integer, got {k!r}.", fix="set privacy.k in tenant.yaml to 1 or more.")
        if not (0.0 <= float(tail_smoothing) <= 5.0):
            raise InvalidDataError(f"tail_smoothing must be within [0, 5], got {tail_smoothing!r}.", fix="use a small value such as 0.5.")
        if not isinstance(max_categories, int) or max_categories < 2:
            raise InvalidDataError(f"max_categories must be an integer >= 2, got {max_categories!r}.", fix="use e.g. 1000.")
        if noise is not None and not isinstance(noise, CopulaNoise):
            raise InvalidDataError("noise must implement CopulaNoise.", fix="subclass models.twin.copula.CopulaNoise.")
        self.k = k
        self.constraints = [dict(c) for c in (constraints or [])]
        self.tail_smoothing = float(tail_smoothing)
        self.max_categories = max_categories
        self.noise = noise
        self.correlation: np.ndarray | None = None
        self.latent_columns: list[str] = []
        self._dims: list[dict[str, Any]] = []
        self._marginals: list[ContinuousMarginal | LevelMarginal] = []
        self._columns: list[dict[str, Any]] = []
        self._left_out: dict[str, str] = {}
        self._merges: dict[str, int] = {}
        self._target: dict[str, Any] | None = None
        self._combo_dims: dict[int, int] = {}
        self._n_train = 0

    # ------------------------------------------------------------------ fit

    def fit(self, table: pl.DataFrame, schema: TableSchema) -> "GaussianCopulaTwin":
        """Learn the joint distribution of `table` (the train split) typed by `schema`.

        Constant and all-null columns are not modelled: they are released as
        they are (same value, or null, in the same dtype) and listed in
        `summary()["constant_columns"]`.

        Raises:
            InvalidDataError / ValidationErrors: too few rows, too many columns,
                infinities, a dtype the twin cannot hold, a one-class target,
                bad constraints; every problem is reported together, each
                naming its column.
        """
        _validate_table(table, schema, max_categories=self.max_categories, constraints=self.constraints)
        from threadpoolctl import threadpool_limits

        # The matrices are small (latent dims squared); one BLAS thread is fastest
        # and does not spin against the other processes of a shared machine.
        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit(table, schema)

    def _fit(self, table: pl.DataFrame, schema: TableSchema) -> "GaussianCopulaTwin":
        rng = np.random.default_rng(0)
        n = table.height
        self._reset()
        self._n_train = n
        plans: dict[str, dict[str, Any]] = {}
        for spec in schema.columns:
            if spec.type not in (ColumnType.TEXT, ColumnType.IDENTIFIER) and spec.name != schema.target:
                plan = _constant_plan(table.get_column(spec.name))
                if plan is not None:
                    plans[spec.name] = plan
        constraints = _without_constants(self.constraints, {name: plan["value"] for name, plan in plans.items()})
        low_of = {c["low"]: c["high"] for c in constraints if c["type"] == "inequality"}
        combos = [list(c["columns"]) for c in constraints if c["type"] == "fixed_combinations"]
        ranges: dict[str, tuple[Any, Any]] = {}
        for c in constraints:
            if c["type"] == "range":
                low, high = ranges.get(c["column"], (None, None))
                ranges[c["column"]] = (c["low"] if low is None else low if c["low"] is None else max(low, c["low"]),
                                       c["high"] if high is None else high if c["high"] is None else min(high, c["high"]))
        if self.noise is None:
            # Choosing the groups reads the data outside the DP hook, so a private fit never does it.
            constrained = set(low_of) | set(low_of.values()) | {x for cols in combos for x in cols} | set(ranges)
            combos += _dependent_groups(table, schema, exclude=constrained | set(plans), k=self.k)
        combo_of = {col: gi for gi, cols in enumerate(combos) for col in cols}
        # Each latent dimension's normal scores (float32, NaN where missing), one array per dimension.
        scores: dict[int, np.ndarray] = {}
        pending_levels: list[tuple[int, np.ndarray]] = []
        null_rules: list[tuple[dict[str, Any], int, np.ndarray]] = []
        partitions: dict[int, np.ndarray] = {}

        # Categorical dimensions first: numeric columns look for structural nulls among them.
        for spec in schema.columns:
            name = spec.name
            series = table.get_column(name)
            if name in plans:
                continue
            if spec.type is ColumnType.TEXT:
                self._left_out[name] = "free text: left out of the model"
            elif spec.type is ColumnType.IDENTIFIER:
                plans[name] = self._identifier_plan(series)
            elif name in combo_of:
                gi = combo_of[name]
                if gi not in self._combo_dims:
                    dim, codes = self._combo_dim(table, combos[gi], gi)
                    pending_levels.append((dim, codes))
                plans[name] = {"name": name, "kind": "combo", "dtype": _dtype_token(series.dtype),
                               "dim": self._combo_dims[gi], "member": combos[gi].index(name)}
                if name == schema.target:
                    # reject and approve, a status and its flag: the target is a member of the combination
                    member = plans[name]["member"]
                    values = list(dict.fromkeys(lvl[member] for lvl in self._marginals[plans[name]["dim"]].levels))
                    self._target = {"column": name, "dim": plans[name]["dim"], "member": member,
                                    "positive": _positive_levels(values, schema.target_positive, series.dtype)}
            elif spec.type in (ColumnType.CATEGORICAL, ColumnType.BOOLEAN):
                dim, codes, out_token = self._category_dim(series, spec.type, name == schema.target, schema)
                pending_levels.append((dim, codes))
                plans[name] = {"name": name, "kind": "levels", "dtype": out_token, "dim": dim, "null_dim": None,
                               "null_by": None, "step": 0.0}

        for spec in schema.columns:
            name = spec.name
            if name in plans or spec.type is ColumnType.TEXT:
                continue
            series = table.get_column(name)
            values = _numeric_view(series)
            plan: dict[str, Any] = {"name": name, "dtype": _dtype_token(series.dtype),
                                    "step": _granularity(values, series.dtype), "null_by": None}
            if name in low_of:
                gap = _numeric_view(table.get_column(low_of[name])) - values
                own = values[~np.isnan(values)]
                plan.update(kind="gap", high=low_of[name], low_bound=0.0 if own.min() >= 0 else None)
                values = gap
                bounds: tuple[Any, Any] = (0.0, None)
            else:
                plan["kind"] = "numeric"
                bounds = ranges.get(name, (None, None))
            null = np.isnan(values)
            present = values[~null] if null.any() else values
            ordered = np.sort(present)
            distinct = ordered[np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])] if ordered.size else ordered
            dim = self._add_dim(name if plan["kind"] == "numeric" else f"{name}#gap")
            discrete = self._discrete_levels(ordered, present, distinct, name) if distinct.size <= DISCRETE_MAX_LEVELS else None
            if discrete is not None:
                levels, counts, codes = discrete
                self._set_marginal(dim, LevelMarginal.from_counts(
                    [float(v) for v in levels], counts, counts_hook=self._hook(name), name=name))
                u = self._marginals[dim].to_uniform(codes, rng)
            else:
                marginal, u, partition = ContinuousMarginal.fit_transform(
                    present, rng, n_knots=N_KNOTS, tail_smoothing=self.tail_smoothing,
                    low=bounds[0], high=bounds[1], counts_hook=self._hook(name), name=name, pile_up=self.k,
                )
                self._set_marginal(dim, marginal)
                if partition.size < present.size + 1:
                    partitions[dim] = partition
            plan["discrete"] = discrete is not None
            if null.any():
                scores[dim] = np.full(n, np.nan, dtype=np.float32)
                scores[dim][~null] = _normal_scores(u)
            else:
                scores[dim] = _normal_scores(u)
            plan["dim"] = dim
            plan["null_dim"] = None
            rule = _structural_null(null, pending_levels) if null.any() else None
            if rule is not None:
                # Null exactly for some categories (LTV of unsecured loans): a rule, not a correlation.
                null_rules.append((plan, rule, null))
            elif null.any():
                ndim = self._add_dim(f"{name}#null")
                self._set_marginal(ndim, LevelMarginal.from_counts(
                    [False, True], np.array([(~null).sum(), null.sum()]), counts_hook=self._hook(f"{name}#null"),
                    name=f"{name}#null"))
                scores[ndim] = _normal_scores(self._marginals[ndim].to_uniform(null.astype(np.int64), rng))
                plan["null_dim"] = ndim
            plans[name] = plan
        self._columns = [plans[c.name] for c in schema.columns if c.name in plans]

        self._order_levels(scores, pending_levels, rng)
        final_codes = dict(pending_levels)
        for plan, dim, null in null_rules:
            codes = final_codes[dim]
            k = len(self._marginals[dim].levels)
            ok = codes >= 0
            share = np.bincount(codes[ok], weights=null[ok], minlength=k) / np.maximum(np.bincount(codes[ok], minlength=k), 1)
            plan["null_by"] = {"dim": dim, "levels": [bool(x > 0.5) for x in share]}
        for dim, codes in pending_levels:
            scores[dim] = _normal_scores(self._marginals[dim].to_uniform(codes, rng))
        corr, rows = _pairwise_correlation([scores[dim] for dim in range(len(self._dims))])
        del scores
        for dim, marginal in enumerate(self._marginals):
            if isinstance(marginal, LevelMarginal):
                partitions[dim] = marginal.cum
        # With a DP hook the matrix goes to it as measured: a data-dependent cut would change its sensitivity.
        corr = _latent_correlation(corr, partitions, rows, NOISE_FLOOR if self.noise is None else 0.0)
        if self.noise is not None:
            noisy = np.asarray(self.noise.correlation(corr.copy()), dtype=np.float64)
            if noisy.shape != corr.shape or not np.all(np.isfinite(noisy)):
                raise InvalidDataError("the noise hook returned a correlation matrix of the wrong shape or with non-finite values.",
                                       fix="fix the CopulaNoise implementation.")
            corr = np.clip((noisy + noisy.T) / 2, -1.0, 1.0)
            np.fill_diagonal(corr, 1.0)
        self.correlation = _repair_correlation(corr)
        return self

    def _reset(self) -> None:
        self.correlation = None
        self.latent_columns = []
        self._dims = []
        self._marginals = []
        self._columns = []
        self._left_out = {}
        self._merges = {}
        self._target = None
        self._combo_dims: dict[int, int] = {}

    def _hook(self, column: str):
        noise = self.noise
        if noise is None:
            return lambda counts: counts
        return lambda counts: noise.marginal_counts(column, counts)

    def _add_dim(self, name: str) -> int:
        self._dims.append({"name": name})
        self._marginals.append(LevelMarginal([None], np.array([1.0])))
        self.latent_columns.append(name)
        return len(self._dims) - 1

    def _set_marginal(self, dim: int, marginal: ContinuousMarginal | LevelMarginal) -> None:
        self._marginals[dim] = marginal

    @staticmethod
    def _identifier_plan(series: pl.Series) -> dict[str, Any]:
        """Fresh ids that cannot equal a real one: integers above the real range, strings with an unused prefix."""
        if series.dtype.is_integer():
            top = int(series.abs().max() or 0)
            offset = 10 ** len(str(top))
            return {"name": series.name, "kind": "identifier", "dtype": _dtype_token(series.dtype), "offset": offset,
                    "prefix": None}
        values = series.cast(pl.String).drop_nulls()
        prefix = "SYN-"
        while bool(values.str.starts_with(prefix).any()):
            prefix = "SYN" + prefix
        return {"name": series.name, "kind": "identifier", "dtype": {"name": "String"}, "offset": None, "prefix": prefix}

    def _category_dim(
        self, series: pl.Series, ctype: ColumnType, is_target: bool, schema: TableSchema
    ) -> tuple[int, np.ndarray, dict[str, Any]]:
        """Levels of a categorical/boolean column, rare ones merged into "other".

        A column with more than `max_categories` distinct values is a label a
        lender typed freely (an employer, a job title): a label held by one or
        two borrowers identifies them, so only labels seen in at least
        max(k, `LABEL_MIN_ROWS`) rows are kept, at most `max_categories` - 1 of
        the commonest, and every other label is released as "other".
        """
        name = series.name
        token = _dtype_token(series.dtype)
        if isinstance(series.dtype, (pl.Categorical, pl.Enum)):
            series = series.cast(pl.String)
        if series.dtype.is_float():
            series = series.fill_nan(None)
        # Ties in count are broken by value, so which labels are kept never depends on hashing order.
        counts = series.value_counts().sort(["count", name], descending=[True, False], nulls_last=True)
        values = [_json_scalar(v) for v in counts.get_column(name).to_list()]
        freq = counts.get_column("count").to_numpy().astype(np.int64)
        present = np.array([v is not None for v in values])
        if present.sum() > self.max_categories:
            rank = np.cumsum(present) * present
            rare = present & ((freq < max(self.k, LABEL_MIN_ROWS)) | (rank >= self.max_categories))
        else:
            rare = present & (freq < self.k)
        mergeable = ctype is ColumnType.CATEGORICAL and not is_target and rare.any()
        if mergeable:
            self._merges[name] = int(rare.sum())
            if token["name"] not in ("String", "Categorical"):
                # "other" cannot live in a numeric dtype: the column is emitted as text.
                values = [None if v is None else str(v) for v in values]
                series = series.cast(pl.String)
                token = {"name": "String"}
            kept = [(v, f) for v, f, r in zip(values, freq, rare) if not r and v != OTHER]
            other_count = int(freq[rare].sum()) + int(sum(f for v, f, r in zip(values, freq, rare) if v == OTHER and not r))
            merged_values = [v for v, _ in kept] + [OTHER]
            merged_freq = np.array([f for _, f in kept] + [other_count], dtype=np.int64)
            mapping_from = [v for v, r in zip(values, rare) if r and v is not None]
            series = series.replace(mapping_from, [OTHER] * len(mapping_from)) if mapping_from else series
            values, freq = merged_values, merged_freq
        order = np.argsort(-freq, kind="stable")
        values = [values[i] for i in order]
        freq = freq[order]
        dim = self._add_dim(name)
        self._set_marginal(dim, LevelMarginal.from_counts(values, freq, counts_hook=self._hook(name), name=name))
        codes = _level_codes(series, values)
        if is_target:
            positive = _positive_levels(values, schema.target_positive, series.dtype)
            self._target = {"column": name, "dim": dim, "positive": positive}
        return dim, codes, token

    def _combo_dim(self, table: pl.DataFrame, cols: list[str], group: int) -> tuple[int, np.ndarray]:
        """One categorical over the observed combinations of `cols`; rare combinations are dropped."""
        frame = table.select(cols)
        for c in cols:
            if frame.get_column(c).dtype.is_float():
                frame = frame.with_columns(pl.col(c).fill_nan(None))
        # Ties in count are broken by value: group_by's order varies from run to run, and the level order
        # decides the latent layout (and so the samples of a seed).
        grouped = frame.group_by(cols).len().sort(["len", *cols], descending=[True] + [False] * len(cols), nulls_last=True)
        keep = grouped.filter(pl.col("len") >= self.k)
        dropped = grouped.height - keep.height
        name = "(" + ",".join(cols) + ")"
        if dropped:
            self._merges[name] = dropped
        if keep.height == 0:
            raise InvalidDataError(
                f"no combination of {cols} occurs in {self.k} or more train rows.",
                column=cols[0], fix="remove the fixed_combinations constraint or lower privacy.k.",
            )
        levels = [[_json_scalar(v) for v in row] for row in keep.select(cols).iter_rows()]
        coded = frame.join(keep.select(cols).with_row_index("_code"), on=cols, how="left", nulls_equal=True,
                           maintain_order="left")
        codes = coded.get_column("_code").fill_null(-1).cast(pl.Int64).to_numpy()
        dim = self._add_dim("combo" + name)
        self._set_marginal(dim, LevelMarginal.from_counts(
            levels, keep.get_column("len").to_numpy(), counts_hook=self._hook(name), name=name))
        self._combo_dims[group] = dim
        return dim, codes

    def _discrete_levels(self, ordered: np.ndarray, present: np.ndarray, distinct: np.ndarray, name: str):
        """Exact values of a small-support numeric column; rare values join their nearest common value.

        `ordered` is `present` sorted. Returns None when no value is common, or when the rare values hold more than
        `DISCRETE_MAX_POOLED` of the rows (pooling them would collapse the spread: 'years' of a 78-loan book, 1 to
        28, came out as 1 to 4); the column is then modelled as continuous.
        """
        counts = np.searchsorted(ordered, distinct, side="right") - np.searchsorted(ordered, distinct, side="left")
        common = distinct[counts >= self.k]
        rare = counts < self.k
        if common.size == 0 or counts[rare].sum() > DISCRETE_MAX_POOLED * present.size:
            return None
        if rare.any():
            self._merges[name] = int(rare.sum())
        # Map each row to its nearest common value through the midpoints between common values.
        cuts = (common[1:] + common[:-1]) / 2
        nearest = np.searchsorted(cuts, present, side="left")
        merged_counts = np.bincount(nearest, minlength=common.size)
        return common, merged_counts, nearest.astype(np.int64)

    def _lay_out(self, dim: int, codes: np.ndarray, order: np.ndarray) -> np.ndarray:
        """Lay dimension `dim`'s level intervals out in `order`; `codes` renumbered to match (-1 stays missing)."""
        old_to_new = np.empty(len(order), dtype=np.int64)
        old_to_new[order] = np.arange(len(order))
        self._marginals[dim] = self._marginals[dim].reordered(order)
        return np.where(codes >= 0, old_to_new[np.clip(codes, 0, None)], -1)

    def _order_levels(self, scores: dict[int, np.ndarray], pending: list[tuple[int, np.ndarray]],
                      rng: np.random.Generator) -> None:
        """Lay each categorical's levels out in the order of its best numeric anchor (updates `pending` codes).

        Frequency order is kept unless a numeric column explains a visible share
        of the category's variance; then the intervals follow the category means
        of that column, which makes the dependence monotone and so visible to a
        Gaussian copula (sub-grades line up with interest rates, for example).
        """
        # A combination with a rich number among its columns (an interest rate decided by the sub-grade) is laid
        # out by that number: the combination's latent is then monotone in it, so its dependence on the other
        # columns (the rate on the term, on the interest paid) survives; laid out by another column's means it was
        # lost. A number of a few values (a term of 36 or 60 months beside the product) carries little of the
        # combination's order, which the best numeric anchor below lays out better.
        by_member: dict[int, int] = {}
        for c in self._columns:
            if c["kind"] == "combo" and c["dtype"]["name"].startswith(("Float", "Int", "UInt")):
                values = {lvl[c["member"]] for lvl in self._marginals[c["dim"]].levels}
                if len(values - {None}) >= COMBO_MEMBER_LEVELS:
                    by_member.setdefault(c["dim"], c["member"])
        for position, (dim, codes) in enumerate(pending):
            if dim not in by_member:
                continue
            marginal = self._marginals[dim]
            member = by_member[dim]
            key = np.array([np.inf if lvl[member] is None else float(lvl[member]) for lvl in marginal.levels])
            order = np.argsort(key, kind="stable")
            pending[position] = (dim, self._lay_out(dim, codes, order))
        numeric_dims = [c["dim"] for c in self._columns if c["kind"] in ("numeric", "gap")]
        if not numeric_dims:
            return
        n = scores[numeric_dims[0]].size
        rows = rng.choice(n, size=ORDERING_ROWS, replace=False) if n > ORDERING_ROWS else np.arange(n)
        zs = np.stack([scores[dim][rows] for dim in numeric_dims], axis=1)
        present = ~np.isnan(zs)
        zs = np.where(present, zs, 0.0)
        for position, (dim, codes) in enumerate(pending):
            marginal = self._marginals[dim]
            k = len(marginal.levels)
            if k < 3 or dim in by_member:
                continue
            c = codes[rows]
            ok = np.flatnonzero(c >= 0)
            if ok.size == 0:
                continue
            by_code = ok[np.argsort(c[ok], kind="stable")]
            sorted_codes = c[by_code]
            starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
            seen_levels = sorted_codes[starts]
            counts = np.zeros((k, zs.shape[1]))
            sums = np.zeros((k, zs.shape[1]))
            squares = np.add.reduceat(zs[by_code] ** 2, starts, axis=0).sum(0)
            counts[seen_levels] = np.add.reduceat(present[by_code].astype(np.float32), starts, axis=0)
            sums[seen_levels] = np.add.reduceat(zs[by_code], starts, axis=0)
            with np.errstate(invalid="ignore", divide="ignore"):
                totals = counts.sum(0)
                grand = sums.sum(0) / totals
                means = sums / counts
                between = np.nansum(counts * (means - grand) ** 2, axis=0) / totals
                total_var = squares / totals - grand**2
                eta2 = np.nan_to_num(np.where(total_var > 0, between / total_var, 0.0))
            best = int(np.argmax(eta2))
            if eta2[best] < 0.01:
                continue
            key = np.nan_to_num(means[:, best], nan=float(grand[best]))
            order = np.argsort(key, kind="stable")
            pending[position] = (dim, self._lay_out(dim, codes, order))

    # ------------------------------------------------------------------ sample

    def _check_fitted(self) -> None:
        if self.correlation is None:
            raise NotFittedError("the copula twin is not fitted.", fix="call fit(table, schema) or GaussianCopulaTwin.load(path) first.")

    def sample(self, n: int, seed: int = 0, conditions: Conditions | None = None) -> pl.DataFrame:
        """Sample `n` synthetic rows; the same seed gives the same table.

        Args:
            n: number of rows (0 gives an empty table with the right columns).
            seed: random seed.
            conditions: `{"target_rate": r}` for an exact share r of positive
                targets (round(n * r) rows), and/or `{"fixed": {column: value}}`
                to fix categorical, boolean or small-support numeric columns.

        Raises:
            NotFittedError: before `fit`/`load`.
            InvalidDataError: unknown condition keys or columns, a rate outside
                [0, 1] or without a target, a value that is unknown or was merged
                into "other".
        """
        self._check_fitted()
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise InvalidDataError(f"n must be a non-negative integer, got {n!r}.", fix="pass the number of rows to sample.")
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return self._sample(int(n), seed, conditions)

    def _sample(self, n: int, seed: int, conditions: dict | None, restrict: dict[str, list] | None = None) -> pl.DataFrame:
        rng = np.random.default_rng(seed)
        fixed_spans, target_spec = self._parse_conditions(conditions, restrict)
        d = len(self._dims)
        out: list[np.ndarray] = [
            np.empty(n, dtype=np.float64) if isinstance(m, ContinuousMarginal) else np.empty(n, dtype=np.int64)
            for m in self._marginals
        ]
        labels = None
        if target_spec is not None:
            positives = int(round(n * target_spec[0]))
            labels = np.zeros(n, dtype=bool)
            labels[:positives] = True
            labels = rng.permutation(labels)
        constrained = sorted({dim for dim, _ in fixed_spans} | ({self._target["dim"]} if target_spec else set()))
        plan = self._conditional_plan(constrained) if constrained else None
        chol = _cholesky(self.correlation) if not constrained else None
        from scipy.special import ndtr

        present_maps = self._present_maps()
        for start in range(0, n, SAMPLE_CHUNK):
            size = min(SAMPLE_CHUNK, n - start)
            # Latent draws are laid out one dimension per row so each marginal reads contiguous memory.
            if plan is None:
                z = chol @ rng.standard_normal((d, size))
            else:
                chunk_labels = None if labels is None else labels[start:start + size]
                z = np.ascontiguousarray(self._draw_conditional(size, plan, fixed_spans, target_spec, chunk_labels, rng).T)
            present = {dim: np.interp(z[dim], PRESENT_GRID, cdf) for dim, cdf in present_maps}
            u = ndtr(z, out=z)
            for dim, values in present.items():
                u[dim] = np.clip(values, 1e-12, 1.0 - 1e-12)
            for dim, marginal in enumerate(self._marginals):
                out[dim][start:start + size] = marginal.from_uniform(u[dim])
        self._snap_constrained(out, fixed_spans, target_spec, labels)
        return self._assemble(out, n)

    def _parse_conditions(self, conditions: dict | None, restrict: dict[str, list] | None = None):
        """Latent spans of the fixed columns and the target spec of `conditions`.

        `restrict` (column -> allowed values) narrows level columns further; the
        segmented twin uses it to sample the rows of its pooled segments.
        """
        if conditions is None and not restrict:
            return [], None
        conditions = {} if conditions is None else conditions
        if not isinstance(conditions, dict) or set(conditions) - {"target_rate", "fixed"}:
            raise InvalidDataError(
                f"unknown conditions {sorted(set(conditions or {}) - {'target_rate', 'fixed'})!r}.",
                fix='use {"target_rate": 0.1} and/or {"fixed": {"column": value}}.',
            )
        target_spec = None
        if "target_rate" in conditions:
            rate = conditions["target_rate"]
            if self._target is None:
                raise InvalidDataError("a target rate was requested but the schema has no target.",
                                       fix="declare `target` in tenant.yaml and re-fit.")
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= float(rate) <= 1.0:
                raise InvalidDataError(f"target_rate must be a number in [0, 1], got {rate!r}.",
                                       column=self._target["column"], fix="pass e.g. 0.05 for 5% defaults.")
            marginal = self._marginals[self._target["dim"]]
            member = self._target.get("member")
            values = marginal.levels if member is None else [level[member] for level in marginal.levels]
            pos = np.array([v in self._target["positive"] and v is not None for v in values])
            target_spec = (float(rate), marginal.intervals(pos), marginal.intervals(~pos))
        fixed = conditions.get("fixed") or {}
        if not isinstance(fixed, dict):
            raise InvalidDataError("`fixed` must map column names to values.", fix='pass {"fixed": {"product": "mortgage"}}.')
        by_dim: dict[int, np.ndarray] = {}
        by_name = {c["name"]: c for c in self._columns}
        for column, value in fixed.items():
            plan = by_name.get(column)
            if plan is None:
                raise InvalidDataError("is not a modelled column and cannot be fixed.", column=str(column),
                                       fix=f"fix one of {[c['name'] for c in self._columns if c['kind'] in ('levels', 'combo')]}.")
            if target_spec is not None and self._target and column == self._target["column"]:
                raise InvalidDataError("cannot be both fixed and given a target rate.", column=column, fix="use one of the two.")
            if plan["kind"] == "constant":
                if not (_same_value(plan["value"], value) or (plan["value"] is None and value is None)):
                    raise InvalidDataError(f"value {value!r} never occurs: the column holds one value in every row.",
                                           column=column, fix="leave this column out of the conditions.")
                continue
            if plan["kind"] == "combo":
                dim = plan["dim"]
                match = np.array([_same_value(lvl[plan["member"]], value) for lvl in self._marginals[dim].levels])
            elif plan["kind"] == "levels" or (plan["kind"] == "numeric" and plan["discrete"]):
                dim = plan["dim"]
                match = np.array([_same_value(lvl, value) for lvl in self._marginals[dim].levels])
            else:
                raise InvalidDataError("is continuous; fixed values apply to categorical, boolean or small-support columns.",
                                       column=column, fix="condition on a categorical column instead.")
            if not match.any():
                merged = column in self._merges or any(column in key.strip("()").split(",") for key in self._merges)
                raise InvalidDataError(
                    f"value {value!r} is not a category of the model"
                    + (f" (rare categories were merged into '{OTHER}' or dropped)" if merged else "") + ".",
                    column=column,
                    fix="use a category seen in at least k train rows; rare ones are merged for privacy.",
                )
            by_dim[dim] = by_dim.get(dim, np.ones_like(match)) & match
            if not by_dim[dim].any():
                raise InvalidDataError("the fixed values of this combination never occur together.", column=column,
                                       fix="fix values that occur together in the tape.")
        for column, allowed in (restrict or {}).items():
            plan = by_name.get(column)
            if plan is None or plan["kind"] not in ("levels", "combo"):
                raise InvalidDataError("is not a modelled category column and cannot be restricted.", column=str(column),
                                       fix="restrict a categorical or boolean column.")
            dim = plan["dim"]
            member = (lambda lvl: lvl[plan["member"]]) if plan["kind"] == "combo" else (lambda lvl: lvl)
            match = np.array([any(_same_value(member(lvl), v) for v in allowed) or (member(lvl) is None and None in allowed)
                              for lvl in self._marginals[dim].levels])
            by_dim[dim] = by_dim.get(dim, np.ones_like(match)) & match
            if not by_dim[dim].any():
                raise InvalidDataError("no level of the model is allowed by the fixed values and the restriction.",
                                       column=str(column), fix="fix values that occur in the tape.")
        spans = [(dim, self._marginals[dim].intervals(mask)) for dim, mask in by_dim.items()]
        return spans, target_spec

    def _conditional_plan(self, constrained: list[int]) -> dict[str, Any]:
        sigma = self.correlation
        d = sigma.shape[0]
        rest = [i for i in range(d) if i not in constrained]
        s_cc = sigma[np.ix_(constrained, constrained)]
        s_rc = sigma[np.ix_(rest, constrained)]
        s_rr = sigma[np.ix_(rest, rest)]
        a = s_rc @ np.linalg.inv(s_cc)
        cond = s_rr - a @ s_rc.T
        gibbs = []
        for j in range(len(constrained)):
            others = [i for i in range(len(constrained)) if i != j]
            if others:
                w = s_cc[j, others] @ np.linalg.inv(s_cc[np.ix_(others, others)])
                var = float(s_cc[j, j] - w @ s_cc[others, j])
            else:
                w, var = np.zeros(0), 1.0
            gibbs.append((others, w, math.sqrt(max(var, 1e-9))))
        return {"constrained": constrained, "rest": rest, "a": a, "chol": _cholesky((cond + cond.T) / 2), "gibbs": gibbs,
                "chol_cc": _cholesky(s_cc)}

    def _draw_conditional(self, size, plan, fixed_spans, target_spec, labels, rng) -> np.ndarray:
        constrained = plan["constrained"]
        spans_of = {dim: spans for dim, spans in fixed_spans}
        target_dim = self._target["dim"] if target_spec else None
        zc = rng.standard_normal((size, len(constrained))) @ plan["chol_cc"].T

        def draw(j: int, mu: np.ndarray, sd: float) -> np.ndarray:
            dim = constrained[j]
            if dim == target_dim:
                res = np.empty(size)
                for mask, spans in ((labels, target_spec[1]), (~labels, target_spec[2])):
                    if mask.any():
                        res[mask] = _truncated_draw(mu[mask], sd, spans, rng)
                return res
            return _truncated_draw(mu, sd, spans_of[dim], rng)

        sweeps = GIBBS_SWEEPS if len(constrained) > 1 else 1
        for sweep in range(sweeps):
            for j, (others, w, sd) in enumerate(plan["gibbs"]):
                mu = zc[:, others] @ w if others else np.zeros(size)
                if sweep == 0 and j > 0:
                    # The first sweep draws in sequence, each dim given the ones already drawn.
                    earlier = list(range(j))
                    s = self.correlation[np.ix_([constrained[i] for i in earlier], [constrained[i] for i in earlier])]
                    cross = self.correlation[constrained[j], [constrained[i] for i in earlier]]
                    wj = cross @ np.linalg.inv(s)
                    mu = zc[:, earlier] @ wj
                    sd_j = math.sqrt(max(1.0 - float(wj @ cross), 1e-9))
                    zc[:, j] = draw(j, mu, sd_j)
                elif sweep == 0:
                    zc[:, j] = draw(j, np.zeros(size), 1.0)
                else:
                    zc[:, j] = draw(j, mu, sd)
        z = np.empty((size, len(self._dims)))
        z[:, constrained] = zc
        if plan["rest"]:
            z[:, plan["rest"]] = zc @ plan["a"].T + rng.standard_normal((size, len(plan["rest"]))) @ plan["chol"].T
        return z

    def _snap_constrained(self, out, fixed_spans, target_spec, labels) -> None:
        """Guarantee every constrained row lands in an allowed level (guards float rounding at interval edges)."""
        checks = [(dim, spans, None) for dim, spans in fixed_spans]
        if target_spec is not None:
            checks += [(self._target["dim"], target_spec[1], labels), (self._target["dim"], target_spec[2], ~labels)]
        for dim, spans, rows in checks:
            marginal = self._marginals[dim]
            mids = (marginal.cum[:-1] + marginal.cum[1:]) / 2
            allowed = np.zeros(len(marginal.levels), dtype=bool)
            for lo, hi in spans:
                allowed |= (mids > lo) & (mids < hi)
            idx = out[dim]
            bad = ~allowed[idx]
            if rows is not None:
                bad &= rows
            if bad.any():
                allowed_idx = np.flatnonzero(allowed)
                nearest = allowed_idx[np.abs(mids[allowed_idx][None, :] - mids[idx[bad]][:, None]).argmin(axis=1)]
                idx[bad] = nearest

    def _assemble(self, out: list[np.ndarray], n: int) -> pl.DataFrame:
        values: dict[str, np.ndarray] = {}
        nulls: dict[str, np.ndarray] = {}
        for plan in self._columns:
            if plan["kind"] == "numeric":
                marginal = self._marginals[plan["dim"]]
                nulls[plan["name"]] = self._null_mask(plan, out, n)
                raw = self._restandardise(plan, out[plan["dim"]], nulls[plan["name"]])
                v = np.asarray(marginal.levels, dtype=np.float64)[raw] if plan["discrete"] else raw
                values[plan["name"]] = self._round(v, plan["step"])
        for plan in self._gap_order():
            high = values[plan["high"]]
            marginal = self._marginals[plan["dim"]]
            nulls[plan["name"]] = self._null_mask(plan, out, n) | nulls[plan["high"]]
            raw = self._restandardise(plan, out[plan["dim"]], self._null_mask(plan, out, n))
            gap = np.asarray(marginal.levels, dtype=np.float64)[raw] if plan["discrete"] else raw
            gap = self._round(np.clip(gap, 0.0, None), plan["step"])
            low = high - gap
            if plan["low_bound"] is not None:
                low = np.maximum(low, plan["low_bound"])
            values[plan["name"]] = np.minimum(low, high)
        series: list[pl.Series] = []
        for plan in self._columns:
            name = plan["name"]
            dtype = _dtype_from_token(plan["dtype"])
            if plan["kind"] == "identifier":
                series.append(self._identifiers(plan, n))
            elif plan["kind"] == "constant":
                series.append(_constant_series(plan, n))
            elif plan["kind"] in ("numeric", "gap"):
                series.append(self._numeric_series(name, values[name], nulls[name], dtype))
            else:
                levels = self._marginals[plan["dim"]].levels
                member = [lvl[plan["member"]] for lvl in levels] if plan["kind"] == "combo" else levels
                lookup = pl.Series(name, member, dtype=pl.String if dtype == pl.Categorical else dtype, strict=False)
                col = lookup.gather(out[plan["dim"]]).cast(dtype)
                series.append(col)
        return pl.DataFrame(series)

    def _present_maps(self) -> list[tuple[int, np.ndarray]]:
        """(value dimension, `_present_row_map`) of each numeric column whose null dimension correlates with it."""
        maps = []
        for plan in self._columns:
            if plan["kind"] not in ("numeric", "gap") or plan.get("null_dim") is None:
                continue
            dim, null_dim = plan["dim"], plan["null_dim"]
            rho = float(self.correlation[dim, null_dim])
            if abs(rho) < 1e-9:
                continue
            nulls = self._marginals[null_dim]
            i = next(i for i, level in enumerate(nulls.levels) if not level)
            maps.append((dim, _present_row_map(rho, (nulls.cum[i], nulls.cum[i + 1]))))
        return maps

    def _restandardise(self, plan: dict[str, Any], raw: np.ndarray, null: np.ndarray) -> np.ndarray:
        """Give a structurally null column its fitted marginal on the rows where it is present.

        Its values were learned on the selected categories only, but the latent
        draw of those rows is shifted by their correlation with the category, so
        the kept rows are re-spread over the marginal by rank (dependence kept).
        """
        if plan["null_by"] is None or null.all():
            return raw
        marginal = self._marginals[plan["dim"]]
        kept = np.flatnonzero(~null)
        order = np.argsort(raw[kept], kind="stable")
        u = np.empty(kept.size)
        u[order] = (np.arange(kept.size) + 0.5) / kept.size
        fixed = raw.copy()
        fixed[kept] = marginal.from_uniform(u)
        return fixed

    def _gap_order(self) -> list[dict[str, Any]]:
        """Low sides of inequalities, each after its high side (chains a <= b <= c)."""
        gaps = [p for p in self._columns if p["kind"] == "gap"]
        done = {p["name"] for p in self._columns if p["kind"] == "numeric"}
        ordered: list[dict[str, Any]] = []
        while gaps:
            ready = [p for p in gaps if p["high"] in done]
            for p in ready:
                ordered.append(p)
                done.add(p["name"])
            gaps = [p for p in gaps if p not in ready]
        return ordered

    def _null_mask(self, plan: dict[str, Any], out: list[np.ndarray], n: int) -> np.ndarray:
        if plan["null_by"] is not None:
            return np.asarray(plan["null_by"]["levels"], dtype=bool)[out[plan["null_by"]["dim"]]]
        if plan["null_dim"] is None:
            return np.zeros(n, dtype=bool)
        return out[plan["null_dim"]] == 1

    @staticmethod
    def _round(values: np.ndarray, step: float) -> np.ndarray:
        return np.round(values / step) * step if step > 0 else values

    @staticmethod
    def _numeric_series(name: str, values: np.ndarray, null: np.ndarray, dtype: pl.DataType) -> pl.Series:
        if dtype == pl.Date:
            s = pl.Series(name, values.astype(np.int32)).cast(pl.Date)
        elif isinstance(dtype, pl.Datetime):
            s = pl.Series(name, values.astype(np.int64)).cast(pl.Datetime(dtype.time_unit)).dt.replace_time_zone(dtype.time_zone)
        elif dtype.is_integer():
            info = np.iinfo(np.dtype(str(dtype).lower()))
            s = pl.Series(name, np.clip(values, info.min, info.max).astype(np.int64)).cast(dtype)
        else:
            s = pl.Series(name, values).cast(dtype)
        return s.scatter(np.flatnonzero(null), None) if null.any() else s

    @staticmethod
    def _identifiers(plan: dict[str, Any], n: int) -> pl.Series:
        name = plan["name"]
        if plan["offset"] is not None:
            return pl.Series(name, np.arange(n, dtype=np.int64) + plan["offset"]).cast(_dtype_from_token(plan["dtype"]))
        counter = pl.Series(name, np.arange(1, n + 1)).cast(pl.String).str.zfill(max(len(str(n)), 7))
        return counter.to_frame().select(pl.concat_str([pl.lit(plan["prefix"]), pl.col(name)]).alias(name)).to_series()

    # ------------------------------------------------------------------ inspect / persist

    def summary(self) -> dict[str, Any]:
        """What the model holds, for asset metadata: no real values beyond common category labels.

        Returns columns modelled, identifiers regenerated, constant and all-null
        columns (released as they are), groups of near-deterministic columns
        modelled as one categorical, columns left out (with the reason), category merges (column -> number of rare categories merged,
        never the rare values), the constraint list and the correlation shape.
        """
        self._check_fitted()
        declared = [set(c["columns"]) for c in self.constraints if c["type"] == "fixed_combinations"]
        groups: dict[int, list[str]] = {}
        for c in self._columns:
            if c["kind"] == "combo":
                groups.setdefault(c["dim"], []).append(c["name"])
        return {
            "engine": "credittwin",
            "columns_modelled": [c["name"] for c in self._columns if c["kind"] not in ("identifier", "constant")],
            "identifiers_regenerated": [c["name"] for c in self._columns if c["kind"] == "identifier"],
            "constant_columns": {
                c["name"]: "null in every row: released as null" if c["value"] is None
                else "one value in every row: released as that value"
                for c in self._columns if c["kind"] == "constant"
            },
            "dependent_columns": [cols for cols in groups.values() if not any(set(cols) <= d for d in declared)],
            "left_out": dict(self._left_out),
            "category_merges": dict(self._merges),
            "constraints": [dict(c) for c in self.constraints],
            "target": None if self._target is None else {"column": self._target["column"],
                                                         "positive": list(self._target["positive"])},
            "latent_columns": list(self.latent_columns),
            "correlation_shape": list(self.correlation.shape),
            "n_train_rows": self._n_train,
        }

    def save(self, path: Path) -> None:
        """Save to directory `path` (model.json + arrays.npz), atomically; never a pickle."""
        self._check_fitted()
        arrays: dict[str, np.ndarray] = {"correlation": self.correlation}
        marginals = []
        for i, m in enumerate(self._marginals):
            marginals.append(m.to_json())
            for key, arr in m.arrays().items():
                arrays[f"m{i}_{key}"] = arr
        model = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "params": {"k": self.k, "tail_smoothing": self.tail_smoothing, "max_categories": self.max_categories,
                       "constraints": self.constraints},
            "n_train": self._n_train,
            "latent_columns": self.latent_columns,
            "marginals": marginals,
            "columns": self._columns,
            "left_out": self._left_out,
            "merges": self._merges,
            "target": self._target,
        }
        import io

        buffer = io.BytesIO()
        np.savez(buffer, allow_pickle=False, **arrays)
        text = json.dumps(model, indent=1, allow_nan=False).encode()
        with atomic_directory(Path(path)) as folder:
            (folder / "model.json").write_bytes(text)
            (folder / "arrays.npz").write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> "GaussianCopulaTwin":
        """Load a model saved by `save`, validating every field; refuses anything unexpected.

        Raises:
            InvalidDataError: a missing, tampered or foreign model file.
        """
        path = Path(path)
        json_file = path / "model.json"
        try:
            model = json.loads(json_file.read_text())
            if cls is GaussianCopulaTwin and isinstance(model, dict) and model.get("format") == SEGMENTED_FORMAT:
                # make_engine("credittwin") saves a segmented twin; one loader dispatches on the format
                raise InvalidDataError(
                    "the saved engine is a segmented twin, not a single Gaussian copula.", file=str(json_file),
                    fix="load it with models.twin.engine.load_engine, which picks the engine that saved it.",
                )
            with np.load(path / "arrays.npz", allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except (OSError, ValueError) as exc:
            raise InvalidDataError(f"cannot read the saved copula: {exc}", file=str(path),
                                   fix="re-run fitted_copula to write it again.") from exc
        try:
            return cls._from_saved(model, arrays)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, np.linalg.LinAlgError) as exc:
            raise InvalidDataError(f"the saved copula is invalid: {exc}", file=str(json_file),
                                   fix="the file was edited or written by another version; re-run fitted_copula.") from exc

    @classmethod
    def _from_saved(cls, model: dict[str, Any], arrays: dict[str, np.ndarray]) -> "GaussianCopulaTwin":
        _expect_keys(model, {"format", "version", "params", "n_train", "latent_columns", "marginals", "columns",
                             "left_out", "merges", "target"}, "model")
        if model["format"] != FORMAT or model["version"] != FORMAT_VERSION:
            raise ValueError(f"format {model['format']!r} version {model['version']!r} is not {FORMAT} v{FORMAT_VERSION}")
        params = model["params"]
        _expect_keys(params, {"k", "tail_smoothing", "max_categories", "constraints"}, "params")
        if not isinstance(params["constraints"], list) or not all(isinstance(c, dict) for c in params["constraints"]):
            raise ValueError("params.constraints must be a list of objects")
        twin = cls(k=params["k"], constraints=params["constraints"], tail_smoothing=params["tail_smoothing"],
                   max_categories=params["max_categories"])
        twin._reset()
        names = model["latent_columns"]
        if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
            raise ValueError("latent_columns must be a list of names")
        d = len(names)
        expected_arrays = {"correlation"}
        marginals: list[ContinuousMarginal | LevelMarginal] = []
        if not isinstance(model["marginals"], list) or len(model["marginals"]) != d:
            raise ValueError("there must be one marginal per latent column")
        for i, data in enumerate(model["marginals"]):
            if not isinstance(data, dict):
                raise ValueError(f"marginal {i} must be an object")
            if data.get("kind") == ContinuousMarginal.kind:
                _expect_keys(data, {"kind", "low", "high"}, f"marginal {i}")
                keys = {"probs": f"m{i}_probs", "values": f"m{i}_values"}
                marginals.append(ContinuousMarginal.from_json(data, {k: arrays[v] for k, v in keys.items()}))
            elif data.get("kind") == LevelMarginal.kind:
                _expect_keys(data, {"kind", "levels"}, f"marginal {i}")
                keys = {"probs": f"m{i}_probs"}
                for level in data["levels"]:
                    _check_level(level)
                marginals.append(LevelMarginal.from_json(data, {k: arrays[v] for k, v in keys.items()}))
            else:
                raise ValueError(f"marginal {i} has unknown kind {data.get('kind')!r}")
            expected_arrays.update(keys.values())
        if set(arrays) != expected_arrays:
            raise ValueError(f"arrays.npz holds {sorted(set(arrays) ^ expected_arrays)} unexpectedly")
        corr = np.asarray(arrays["correlation"], dtype=np.float64)
        if corr.shape != (d, d) or not np.all(np.isfinite(corr)) or not np.allclose(corr, corr.T, atol=1e-10) or not np.allclose(np.diag(corr), 1.0):
            raise ValueError("the correlation matrix must be a finite symmetric unit-diagonal matrix over the latent columns")
        np.linalg.cholesky(corr)
        twin._columns = _check_columns(model["columns"], marginals)
        twin._marginals = marginals
        twin._dims = [{"name": x} for x in names]
        twin.latent_columns = list(names)
        twin.correlation = corr
        if not isinstance(model["left_out"], dict) or not isinstance(model["merges"], dict):
            raise ValueError("left_out and merges must be objects")
        twin._left_out = {str(k): str(v) for k, v in model["left_out"].items()}
        twin._merges = {str(k): int(v) for k, v in model["merges"].items()}
        target = model["target"]
        if target is not None:
            # "member": the target is one column of a combination (`_dependent_groups`); older models have none
            member = {"member"} & set(target) if isinstance(target, dict) else set()
            _expect_keys(target, {"column", "dim", "positive"} | member, "target")
            if "member" in target and not (isinstance(target["member"], int) and target["member"] >= 0):
                raise ValueError("target.member must be a non-negative integer")
            if not (isinstance(target["dim"], int) and 0 <= target["dim"] < d) or not isinstance(marginals[target["dim"]], LevelMarginal):
                raise ValueError("target.dim must point at a level marginal")
            if not isinstance(target["positive"], list):
                raise ValueError("target.positive must be a list")
        twin._target = target
        if not isinstance(model["n_train"], int):
            raise ValueError("n_train must be an integer")
        twin._n_train = model["n_train"]
        return twin


_PLAN_KEYS = {
    "identifier": {"name", "kind", "dtype", "offset", "prefix"},
    "numeric": {"name", "kind", "dtype", "step", "dim", "null_dim", "null_by", "discrete"},
    "gap": {"name", "kind", "dtype", "step", "dim", "null_dim", "null_by", "discrete", "high", "low_bound"},
    "levels": {"name", "kind", "dtype", "dim", "null_dim", "null_by", "step"},
    "combo": {"name", "kind", "dtype", "dim", "member"},
    "constant": {"name", "kind", "dtype", "value"},
}


def _expect_keys(data: Any, keys: set[str], where: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be an object")
    if set(data) != keys:
        unknown, missing = sorted(set(data) - keys), sorted(keys - set(data))
        raise ValueError(f"{where}: unknown keys {unknown}, missing keys {missing}")


def _check_level(level: Any) -> None:
    if isinstance(level, list):
        for item in level:
            _check_level(item)
    elif not (level is None or isinstance(level, (bool, int, float, str))):
        raise ValueError(f"category level {level!r} is not a JSON scalar")


def _check_columns(columns: Any, marginals: list[ContinuousMarginal | LevelMarginal]) -> list[dict[str, Any]]:
    """Validate every column plan of a saved model against its marginals."""
    if not isinstance(columns, list):
        raise ValueError("columns must be a list")
    d = len(marginals)
    seen: set[str] = set()

    def dim_of(value: Any, kind: type) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < d or not isinstance(marginals[value], kind):
            raise ValueError(f"dimension {value!r} does not point at a {kind.__name__}")
        return value

    for plan in columns:
        kind = plan.get("kind") if isinstance(plan, dict) else None
        if kind not in _PLAN_KEYS:
            raise ValueError(f"column plan of unknown kind {kind!r}")
        _expect_keys(plan, _PLAN_KEYS[kind], f"column {plan.get('name')!r}")
        if not isinstance(plan["name"], str) or plan["name"] in seen:
            raise ValueError(f"column name {plan['name']!r} is not a unique string")
        seen.add(plan["name"])
        _dtype_from_token(plan["dtype"])
        if kind == "constant":
            if not (plan["value"] is None or isinstance(plan["value"], (bool, int, float, str))):
                raise ValueError("a constant column's value must be a JSON scalar")
            continue
        if kind == "identifier":
            if (plan["offset"] is None) == (plan["prefix"] is None):
                raise ValueError("an identifier needs either an integer offset or a string prefix")
            if plan["offset"] is not None and (not isinstance(plan["offset"], int) or plan["offset"] < 1):
                raise ValueError("identifier offset must be a positive integer")
            if plan["prefix"] is not None and (not isinstance(plan["prefix"], str) or not plan["prefix"]):
                raise ValueError("identifier prefix must be a non-empty string")
            continue
        if kind in ("numeric", "gap"):
            if not isinstance(plan["discrete"], bool):
                raise ValueError("discrete must be a boolean")
            dim_of(plan["dim"], LevelMarginal if plan["discrete"] else ContinuousMarginal)
        elif kind == "levels":
            dim_of(plan["dim"], LevelMarginal)
        else:
            levels = marginals[dim_of(plan["dim"], LevelMarginal)].levels
            member = plan["member"]
            if not isinstance(member, int) or not all(isinstance(lvl, list) and len(lvl) > member >= 0 for lvl in levels):
                raise ValueError("combination member index does not fit the combination levels")
        if kind != "combo":
            if isinstance(plan["step"], bool) or not isinstance(plan["step"], (int, float)) or plan["step"] < 0:
                raise ValueError("step must be a non-negative number")
            if plan["null_dim"] is not None:
                null_levels = marginals[dim_of(plan["null_dim"], LevelMarginal)].levels
                if null_levels != [False, True]:
                    raise ValueError("a null dimension must have the levels [false, true]")
        if kind != "combo" and plan["null_by"] is not None:
            rule = plan["null_by"]
            _expect_keys(rule, {"dim", "levels"}, f"null_by of {plan['name']!r}")
            levels = marginals[dim_of(rule["dim"], LevelMarginal)].levels
            if not isinstance(rule["levels"], list) or len(rule["levels"]) != len(levels) or not all(
                isinstance(x, bool) for x in rule["levels"]
            ):
                raise ValueError("null_by.levels must hold one boolean per level")
        if kind == "gap":
            if plan["low_bound"] is not None and (isinstance(plan["low_bound"], bool) or not isinstance(plan["low_bound"], (int, float))):
                raise ValueError("low_bound must be a number or null")
    for plan in columns:
        if plan["kind"] == "gap":
            high = next((p for p in columns if p["name"] == plan["high"]), None)
            if high is None or high["kind"] not in ("numeric", "gap"):
                raise ValueError(f"the high side {plan['high']!r} of {plan['name']!r} is not a numeric column")
    return columns
