"""Distance to closest record: the audit's mixed-type distance, the samples every measure reads, the DCR figures.

`distance_to_closest_record` gives the share of released rows closer to train
than to holdout (0.5 is ideal, ties count one half), the exact-match rate (a
released row at distance 0 from a train row, i.e. equal to it where it is not
generalised and covering it where it is; it must be 0) among the records
unique in the tape (a row equal to values several borrowers share discloses
none of them: on real tapes with a zero-inflated balance the holdout matches
as often), the holdout exact-match rate beside it as a baseline, and the
nearest-neighbour distance ratio (closest / second closest).

`draw_samples` draws, once per audit, the rows every measure reads
(`models.privacy.membership`, `models.privacy.inference` and
`models.privacy.anonymeter_attacks` too): duplicate rows are removed from each
table, and train and holdout are sampled at the same size.

The mixed-type distance
-----------------------
The distance between two rows is the Euclidean norm of per-column distances
over the compared columns (every column of the schema except identifiers and
free text, present in all three tables):

* numeric, integer and datetime columns (datetimes as days since 1970):
  |a - b| / scale, with scale the interquartile range of train and holdout
  together (their range when the IQR is 0, else 1);
* categorical and boolean columns: 0 when equal, 1 otherwise;
* nulls: 0 between two nulls, 1 between a null and a value;
* generalised columns of the release (k-anonymity recoding, labels as
  `models.privacy.anonymize` writes them): a numeric range label such as "[30, 45)",
  "< 30" or ">= 45" is at distance 0 from a real value inside it and
  otherwise at the distance to its nearest edge, scaled as above; a category
  group "north|south" is at distance 0 from its members and 1 from others; "*"
  is at distance 0 from every value, and "(missing)" is a null.

Nearest neighbours are found block by block in two passes. A fast float32
pass writes the squared distance over the ordinary columns (numbers with or
without nulls, categories of up to 64 levels) as one matrix product of
per-row features, adds for the generalised columns a precomputed table of
distances from each combination of released labels (an equivalence class) to
each real row, and compares wider categories code by code. Each row's best
candidates, and any within float32 rounding of them, are then re-ranked with
the exact float64 distance, so exact matches and ties are decided exactly.
Exact matches are also looked up in the whole train split by a hash join on
the non-generalised columns, so a copied row is found even when its source was
not drawn into the sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from models.errors import InvalidDataError
from models.privacy.anonymize import ANY_LABEL, MISSING_LABEL
from models.privacy.labels import CategoryGroup, NumericRange, parse_generalised_label
from models.privacy.leak import CONFIDENCE, wilson_interval
from models.tape.schema import ColumnType, TableSchema
from models.tape.vocabulary import FALSE_TEXT, TRUE_TEXT

# Past this many levels a category is compared code by code rather than one-hot
# encoded: the product of two one-hot blocks would cost more than the comparison.
MAX_ONE_HOT_LEVELS = 64
# Rows of the query side processed together: a block of pairwise distances is
# BLOCK_ROWS x candidates float32 values (20 MB against 10,000 candidates).
BLOCK_ROWS = 512
# Candidates per query re-ranked with the exact float64 distance.
RERANK = 4
# Relative float32 rounding allowed for in the fast pass (about 20 ulps of
# the largest feature products); closer candidates are re-ranked exactly.
ROUNDING = 2e-6
# Two distances closer than this (relative) are a tie.
TIE_TOLERANCE = 1e-9
# The share closer to train is reported with its spread when the sampled train and holdout rows swap labels at
# random (`_null_share_spread`): this many deals, each reading a released row's nearest rows of either split (8: on a
# 4,000-row demo release 0.11 s for both splits against 0.26 s for 16, and a row whose first 8 pooled neighbours all
# fall in one group, 1 in 256 per deal, takes its next nearest listed row instead)
NULL_DEALS = 200
NULL_NEIGHBOURS = 8
MISSING = MISSING_LABEL
_TRUE = set(TRUE_TEXT)
_FALSE = set(FALSE_TEXT)
_NUMERIC_TYPES = (ColumnType.NUMERIC, ColumnType.INTEGER, ColumnType.DATETIME)


# --------------------------------------------------------------------------- column plan


@dataclass
class ColumnPlan:
    """How one compared column enters the distance (fitted on the samples)."""

    name: str
    numeric: bool
    generalised: bool = False
    center: float = 0.0
    scale: float = 1.0
    nullable: bool = False  # nulls in some table (numeric columns)
    dense: bool = True
    levels: list[str] = field(default_factory=list)  # real categories (and released plain values)
    labels: list[str] = field(default_factory=list)  # distinct released values of a categorical column
    groups: dict[str, frozenset[str] | None] = field(default_factory=dict)  # group label -> members (None: any)
    membership: np.ndarray | None = None  # released label x level: 0 when the label covers the level


def numeric_values(series: pl.Series) -> np.ndarray:
    """Float64 values (NaN for null); datetimes as days since 1970."""
    dtype = series.dtype
    if dtype == pl.Date:
        values = series.cast(pl.Int32).cast(pl.Float64)
    elif isinstance(dtype, pl.Datetime):
        values = series.dt.epoch("ms").cast(pl.Float64) / 86_400_000.0
    elif isinstance(dtype, pl.Duration):
        values = series.dt.total_milliseconds().cast(pl.Float64) / 86_400_000.0
    elif dtype == pl.Boolean:
        values = series.cast(pl.Float64)
    else:
        values = series.cast(pl.Float64, strict=False)
    return values.fill_nan(None).to_numpy(allow_copy=True).astype(np.float64, copy=False)


def category_strings(series: pl.Series, ctype: ColumnType) -> list[str | None]:
    """Values as strings; booleans in one canonical spelling whatever their dtype."""
    values = series.cast(pl.String, strict=False)
    if ctype is ColumnType.BOOLEAN:
        canonical = {v: "true" for v in _TRUE} | {v: "false" for v in _FALSE}
        values = values.str.to_lowercase().replace(canonical)
    return values.to_list()


def _is_label_column(series: pl.Series) -> bool:
    return series.dtype in (pl.String, pl.Categorical) or isinstance(series.dtype, pl.Enum)


def _released_intervals(series: pl.Series, column: str, tenant: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Low and high edges of a released numeric column (labels parsed; NaN for null)."""
    if not _is_label_column(series):
        values = numeric_values(series)
        return values, values.copy()
    text = series.cast(pl.String)
    distinct = [v for v in text.unique().to_list() if v is not None]
    edges: dict[str, tuple[float, float]] = {}
    for label in distinct:
        parsed = parse_generalised_label(label)
        if label.strip() == MISSING:
            edges[label] = (np.nan, np.nan)
        elif isinstance(parsed, NumericRange):
            edges[label] = (parsed.low, parsed.high)
        elif isinstance(parsed, CategoryGroup) and parsed.members is None:
            edges[label] = (-math.inf, math.inf)
        else:
            try:
                number = float(label)
            except ValueError:
                raise InvalidDataError(
                    f"released value {label!r} is neither a number nor a range label.",
                    tenant=tenant,
                    column=column,
                    fix="release a numeric column as numbers or as ranges written like '[30, 45)', '< 30' or '>= 45'.",
                ) from None
            edges[label] = (number, number)
    low = np.array([edges[v][0] if v is not None else np.nan for v in text.to_list()], dtype=np.float64)
    high = np.array([edges[v][1] if v is not None else np.nan for v in text.to_list()], dtype=np.float64)
    return low, high


def _robust_scale(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0.0, 1.0
    q25, q50, q75 = np.quantile(finite, [0.25, 0.5, 0.75])
    scale = float(q75 - q25)
    if scale <= 0:
        scale = float(finite.max() - finite.min())
    return float(q50), scale if scale > 0 else 1.0


def _compared_columns(released: pl.DataFrame, train: pl.DataFrame, holdout: pl.DataFrame, schema: TableSchema) -> tuple[list[str], list[str]]:
    compared, missing = [], []
    for spec in schema.columns:
        if spec.type in (ColumnType.IDENTIFIER, ColumnType.TEXT):
            continue
        if all(spec.name in frame.columns for frame in (released, train, holdout)):
            compared.append(spec.name)
        else:
            missing.append(spec.name)
    return compared, missing


def _group_members(label: str, spec: dict[str, Any] | None) -> frozenset[str] | None | bool:
    """Members of a released category label: a frozenset, None for "any", False when not a group.

    `spec` is the column's entry of `AnonymizationResult.generalisations`, whose
    "groups" list the members of every group label (needed for the hashed names
    of large groups).
    """
    listed = (spec or {}).get("groups") or {}
    if label in listed:
        members = [str(m) for m in listed[label]]
        return None if ANY_LABEL in members else frozenset(members)
    parsed = parse_generalised_label(label)
    if isinstance(parsed, CategoryGroup):
        return parsed.members
    return False


def _plan(
    columns: list[str],
    schema: TableSchema,
    released: pl.DataFrame,
    real: list[pl.DataFrame],
    generalisations: dict[str, dict[str, Any]] | None,
) -> list[ColumnPlan]:
    """Decide, per column, its scale, its levels and whether it is embedded densely."""
    plans = []
    for name in columns:
        ctype = schema[name].type
        if ctype in _NUMERIC_TYPES:
            values = np.concatenate([numeric_values(frame.get_column(name)) for frame in real])
            center, scale = _robust_scale(values)
            generalised = _is_label_column(released.get_column(name))
            has_nulls = bool(np.isnan(values).any()) or released.get_column(name).null_count() > 0
            plans.append(ColumnPlan(name, True, generalised, center, scale, has_nulls, dense=not (generalised or has_nulls)))
            continue
        real_values: list[str | None] = []
        for frame in real:
            real_values.extend(category_strings(frame.get_column(name), ctype))
        levels = sorted({MISSING if v is None else v for v in real_values})
        released_values = {MISSING if v is None else v for v in category_strings(released.get_column(name), ctype)}
        known = set(levels)
        spec = (generalisations or {}).get(name)
        resolved = {v: _group_members(v, spec) for v in released_values if v not in known}
        groups = {v: m for v, m in resolved.items() if m is not False}
        levels.extend(sorted(v for v, m in resolved.items() if m is False))
        column = ColumnPlan(name, False, bool(groups), levels=levels, groups=groups)
        column.dense = not groups and len(levels) <= MAX_ONE_HOT_LEVELS
        if groups:
            column.labels = sorted(released_values)
            index = {level: i for i, level in enumerate(levels)}
            membership = np.ones((len(column.labels), len(levels)), dtype=np.float32)
            for row, label in enumerate(column.labels):
                if label not in groups:
                    membership[row, index[label]] = 0.0
                elif groups[label] is None:
                    membership[row, :] = 0.0
                else:
                    for member in groups[label] & known:
                        membership[row, index[member]] = 0.0
            column.membership = membership
        plans.append(column)
    return plans


# --------------------------------------------------------------------------- encoded tables and nearest neighbours


@dataclass
class EncodedTable:
    """One table encoded for the distance.

    The exact float64 distance reads `dense` (columns embedded so that the
    distance is Euclidean), `low`/`high` (numeric columns with nulls or
    released ranges) and `codes` (categories compared code by code). The fast
    approximate pass reads the bilinear features: the squared distance over the
    ordinary columns is `left[a] @ right[b]`; a released generalised column
    adds a gathered table of label-to-value distances (`label_codes`,
    `label_low`/`label_high`); between two real tables those columns are
    ordinary ones (`real_left`/`real_right`, and `gen_wide` for categories with
    many levels, compared code by code like `wide_codes`).
    """

    released: bool
    dense: np.ndarray
    low: list[np.ndarray]
    high: list[np.ndarray]
    codes: list[np.ndarray]
    left: np.ndarray
    right: np.ndarray
    real_left: np.ndarray
    real_right: np.ndarray
    wide_codes: list[np.ndarray]
    gen_wide: list[np.ndarray]
    label_codes: list[np.ndarray] = field(default_factory=list)
    label_low: list[np.ndarray | None] = field(default_factory=list)
    label_high: list[np.ndarray | None] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.dense.shape[0]


@dataclass
class _Bilinear:
    """Per-row features whose products give squared distances.

    The squared distance of rows a and b over the columns added is
    own(a) + own(b) + const + sum(left(a) * right(b)), which `matrices` lays
    out as one matrix product.
    """

    n: int
    own: np.ndarray = field(init=False)
    const: float = 0.0
    left: list[np.ndarray] = field(default_factory=list)
    right: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.own = np.zeros(self.n)

    def numeric(self, x: np.ndarray, nullable: bool) -> None:
        """Add a numeric column (NaN for null); `nullable` must be the same for every table.

        With v the value (0 where null) and m the null indicator, (x - y)^2
        between values, 1 between a null and a value and 0 between nulls
        equal v_a^2 (1 - m_b) + (1 - m_a) v_b^2 - 2 v_a v_b + m_a + m_b - 2 m_a m_b.
        """
        null = np.isnan(x)
        v = np.where(null, 0.0, x)
        self.own += v * v
        self.left.append(-2.0 * v)
        self.right.append(v)
        if nullable:
            m = null.astype(np.float64)
            self.own += m
            self.left += [v * v, -m, -2.0 * m]
            self.right += [-m, v * v, m]

    def category(self, codes: np.ndarray, width: int) -> None:
        """Add a category (codes below `width`): the products give 1 - [a == b]."""
        one_hot = np.zeros((width, codes.size))
        one_hot[codes, np.arange(codes.size)] = 1.0
        self.const += 1.0
        self.left.extend(-one_hot)
        self.right.extend(one_hot)

    def matrices(self, other: "_Bilinear | None" = None) -> tuple[np.ndarray, np.ndarray]:
        """The left and right float32 matrices of these columns (and `other`'s)."""
        own, const = self.own, self.const
        left, right = list(self.left), list(self.right)
        if other is not None:
            own, const = own + other.own, const + other.const
            left += other.left
            right += other.right
        ones = np.ones(self.n)
        stack_left = np.column_stack([own + const, ones, *left])
        stack_right = np.column_stack([ones, own, *right])
        return np.ascontiguousarray(stack_left, dtype=np.float32), np.ascontiguousarray(stack_right, dtype=np.float32)


def encode_table(frame: pl.DataFrame, plans: list[ColumnPlan], schema: TableSchema, *, released: bool, tenant: str | None) -> EncodedTable:
    n = frame.height
    dense: list[np.ndarray] = []
    lows: list[np.ndarray] = []
    highs: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    common = _Bilinear(n)
    between_real = _Bilinear(n)
    wide: list[np.ndarray] = []
    gen_wide: list[np.ndarray] = []
    side: dict[str, list] = {"label_codes": [], "label_low": [], "label_high": []}
    for column in plans:
        series = frame.get_column(column.name)
        if column.numeric:
            if released:
                low, high = _released_intervals(series, column.name, tenant)
            else:
                low = numeric_values(series)
                high = low.copy()
            low = (low - column.center) / column.scale
            high = (high - column.center) / column.scale
            if column.dense:
                dense.append(low[:, None])
            else:
                lows.append(low)
                highs.append(high)
            if not column.generalised:
                common.numeric(low, column.nullable)
            elif released:
                pairs, inverse = np.unique(np.column_stack([low, high]), axis=0, return_inverse=True)
                side["label_codes"].append(inverse.ravel().astype(np.int64))
                side["label_low"].append(pairs[:, 0])
                side["label_high"].append(pairs[:, 1])
            else:
                between_real.numeric(low, column.nullable)
            continue
        values = [MISSING if v is None else v for v in category_strings(series, schema[column.name].type)]
        if released and column.generalised:
            index = {label: i for i, label in enumerate(column.labels)}
        else:
            index = {level: i for i, level in enumerate(column.levels)}
        coded = np.fromiter((index[v] for v in values), dtype=np.int64, count=n)
        if column.dense:
            one_hot = np.zeros((n, len(column.levels)), dtype=np.float64)
            one_hot[np.arange(n), coded] = 1.0 / math.sqrt(2.0)
            dense.append(one_hot)
        else:
            codes.append(coded)
        if not column.generalised:
            if column.dense:
                common.category(coded, len(column.levels))
            else:
                wide.append(coded)
        elif released:
            side["label_codes"].append(coded)
            side["label_low"].append(None)
            side["label_high"].append(None)
        else:
            # Between two real tables a generalised category is an ordinary one.
            if len(column.levels) <= MAX_ONE_HOT_LEVELS:
                between_real.category(coded, len(column.levels))
            else:
                gen_wide.append(coded)
    left, right = common.matrices()
    real_left, real_right = common.matrices(between_real)
    return EncodedTable(
        released=released,
        dense=np.hstack(dense) if dense else np.zeros((n, 0)),
        low=lows,
        high=highs,
        codes=codes,
        left=left,
        right=right,
        real_left=real_left,
        real_right=real_right,
        wide_codes=wide,
        gen_wide=gen_wide,
        **side,
    )


def _gap(low_a: np.ndarray, high_a: np.ndarray, low_b: np.ndarray, high_b: np.ndarray, *, outer: bool) -> np.ndarray:
    """Squared gap between intervals (0 when they overlap); 1 for null vs value, 0 for two nulls."""
    if outer:
        first = np.subtract.outer(low_a, high_b)
        second = np.subtract.outer(high_a, low_b)
    else:
        first = low_a - high_b
        second = high_a - low_b
    np.negative(second, out=second)
    np.maximum(first, second, out=first)
    np.maximum(first, 0.0, out=first)
    first *= first
    null_a, null_b = np.isnan(low_a), np.isnan(low_b)
    if null_a.any() or null_b.any():
        mismatch = np.logical_xor.outer(null_a, null_b) if outer else null_a ^ null_b
        both = np.logical_and.outer(null_a, null_b) if outer else null_a & null_b
        first[mismatch] = 1.0
        first[both] = 0.0
    return first


def _category_mismatch(plans: list[ColumnPlan], a: EncodedTable, b: EncodedTable, j: int, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Category distance of sparse column j for the pairs (a[ia], b[ib]) (group membership where released)."""
    column = [c for c in plans if not c.numeric and not c.dense][j]
    code_a, code_b = a.codes[j][ia], b.codes[j][ib]
    if column.membership is not None and (a.released or b.released):
        if a.released:
            return column.membership[code_a, code_b].astype(np.float64)
        return column.membership[code_b, code_a].astype(np.float64)
    return (code_a != code_b).astype(np.float64)


def _label_tables(plans: list[ColumnPlan], released: EncodedTable, real: EncodedTable) -> tuple[np.ndarray, np.ndarray] | None:
    """Squared distances over the generalised columns of every released label combination to every real row.

    Returns the table (combinations x real rows, float32) and the combination
    of each released row, or None when no column is generalised. A release
    holds few distinct combinations of labels (its equivalence classes), so
    one gathered row per pair replaces a computation per column.
    """
    if not released.label_codes:
        return None
    combos, combo_of_row = np.unique(np.column_stack(released.label_codes), axis=0, return_inverse=True)
    table = np.zeros((combos.shape[0], real.n), dtype=np.float32)
    sparse_numeric = [c.name for c in plans if c.numeric and not c.dense]
    sparse_category = [c.name for c in plans if not c.numeric and not c.dense]
    for j, column in enumerate(c for c in plans if c.generalised):
        if column.numeric:
            values = real.low[sparse_numeric.index(column.name)]
            per_label = _gap(released.label_low[j], released.label_high[j], values, values, outer=True)
        else:
            per_label = column.membership[:, real.codes[sparse_category.index(column.name)]]
        table += per_label[combos[:, j]]
    return table, combo_of_row.ravel()


def _block_sq_distances(a: EncodedTable, b: EncodedTable, rows: slice, labels: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Approximate (float32) squared distances of a block of rows of `a` to every row of `b`."""
    if a.released or b.released:
        block = a.left[rows] @ b.right.T
    else:
        block = a.real_left[rows] @ b.real_right.T
    if labels is not None:
        table, combo = labels
        if a.released:
            block += table[combo[rows]]
        else:
            block += np.take(np.ascontiguousarray(table[:, rows].T), combo, axis=1)
    for code_a, code_b in zip(a.wide_codes, b.wide_codes):
        block += np.not_equal.outer(code_a[rows], code_b)
    if not a.released and not b.released:
        for code_a, code_b in zip(a.gen_wide, b.gen_wide):
            block += np.not_equal.outer(code_a[rows], code_b)
    return block


def pair_distances(plans: list[ColumnPlan], a: EncodedTable, b: EncodedTable, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Exact float64 distances between rows a[ia] and b[ib], pair by pair."""
    diff = a.dense[ia] - b.dense[ib]
    sq = np.einsum("ij,ij->i", diff, diff)
    for j in range(len(a.low)):
        sq += _gap(a.low[j][ia], a.high[j][ia], b.low[j][ib], b.high[j][ib], outer=False)
    for j in range(len(a.codes)):
        sq += _category_mismatch(plans, a, b, j, ia, ib)
    return np.sqrt(sq)


def _block_candidates(block: np.ndarray, k: int, tolerance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, column) pairs to re-rank exactly: the k best of each row and any within `tolerance` of the k-th.

    `block` is overwritten.
    """
    count, m = block.shape
    k = min(k, m)
    rows = np.arange(count)
    chosen = []
    for _ in range(k):
        # The block is scratch: the best found so far are masked in place.
        best = block.argmin(axis=1)
        chosen.append(best)
        kth = block[rows, best]
        if len(chosen) < k:
            block[rows, best] = np.inf
    # Rows where another column is within rounding of the k-th best are
    # ambiguous: their close columns (at most RERANK more) are re-ranked too.
    close = (block <= (kth + tolerance)[:, None]).sum(axis=1) > 1
    qi = [np.repeat(rows, 1) for _ in chosen]
    cj = list(chosen)
    ambiguous = np.flatnonzero(close)
    if ambiguous.size:
        keep = min(m, k + RERANK)
        extra = np.argpartition(block[ambiguous], keep - 1, axis=1)[:, :keep] if keep < m else np.tile(np.arange(m), (ambiguous.size, 1))
        qi.append(np.repeat(ambiguous, extra.shape[1]))
        cj.append(extra.ravel())
    pairs = np.unique(np.column_stack([np.concatenate(qi), np.concatenate(cj)]), axis=0)
    return pairs[:, 0], pairs[:, 1]


def nearest_rows(plans: list[ColumnPlan], a: EncodedTable, b: EncodedTable, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest rows of `b` for every row of `a`: exact distances (n x k, ascending) and indices.

    A float32 pass finds each row's k best candidates (and, where others lie
    within rounding of them, up to RERANK more); those are re-ranked with the
    exact float64 distance. Missing neighbours (b smaller than k) are inf.
    """
    n, m = a.n, b.n
    distances = np.full((n, k), np.inf, dtype=np.float64)
    indices = np.full((n, k), -1, dtype=np.int64)
    if m == 0 or n == 0:
        return distances, indices
    labels = None
    if a.released or b.released:
        labels = _label_tables(plans, *((a, b) if a.released else (b, a)))
        left, right = a.left, b.right
    else:
        left, right = a.real_left, b.real_right
    # float32 rounding of the expanded squares grows with the feature norms.
    norm_a = np.abs(left).sum(axis=1)
    scale_b = float(np.abs(right).sum(axis=1).max())
    for start in range(0, n, BLOCK_ROWS):
        rows = slice(start, min(start + BLOCK_ROWS, n))
        block = _block_sq_distances(a, b, rows, labels)
        qi, cj = _block_candidates(block, k, ROUNDING * (norm_a[rows] + scale_b + 1.0))
        exact = pair_distances(plans, a, b, qi + start, cj)
        order = np.lexsort((cj, exact, qi))
        qi, cj, exact = qi[order], cj[order], exact[order]
        first = np.searchsorted(qi, np.arange(block.shape[0]))
        rank = np.arange(qi.size) - first[qi]
        take = rank < k
        distances[qi[take] + start, rank[take]] = exact[take]
        indices[qi[take] + start, rank[take]] = cj[take]
    return distances, indices


# --------------------------------------------------------------------------- sampling


@dataclass
class Samples:
    """The row samples every measure of one audit reads, drawn once."""

    columns: list[str]
    plans: list[ColumnPlan]
    released: EncodedTable
    train: EncodedTable
    holdout: EncodedTable
    members: EncodedTable
    non_members: EncodedTable
    reference: EncodedTable
    sizes: dict[str, int]
    frames: dict[str, pl.DataFrame]
    warnings: list[str]


def take_rows(frame: pl.DataFrame, size: int, rng: np.random.Generator) -> pl.DataFrame:
    """`size` rows of `frame` drawn without replacement, kept in their order (all of them when it has no more)."""
    if frame.height <= size:
        return frame
    return frame[np.sort(rng.choice(frame.height, size=size, replace=False))]


def _check_inputs(released: pl.DataFrame, train: pl.DataFrame, holdout: pl.DataFrame, schema: TableSchema, tenant: str | None) -> tuple[list[str], list[str]]:
    for name, frame in (("released", released), ("train", train), ("holdout", holdout)):
        if not isinstance(frame, pl.DataFrame):
            raise InvalidDataError(
                f"the {name} table must be a polars DataFrame, got {type(frame).__name__}.",
                tenant=tenant,
                fix=f"load the {name} table with polars before auditing.",
            )
        if frame.height == 0:
            raise InvalidDataError(
                f"the {name} table is empty; the audit needs at least 1 row per table (and 30 or more for "
                "meaningful intervals).",
                tenant=tenant,
                fix=f"re-run the step that produces the {name} table, or upload a larger book.",
            )
    columns, missing = _compared_columns(released, train, holdout, schema)
    if not columns:
        raise InvalidDataError(
            "the released, train and holdout tables share no comparable column (identifiers and text are not compared).",
            tenant=tenant,
            fix="audit the released table against the train and holdout splits of the same tape and schema.",
        )
    return columns, missing


def draw_samples(
    released: pl.DataFrame,
    train: pl.DataFrame,
    holdout: pl.DataFrame,
    schema: TableSchema,
    *,
    sample_size: int,
    seed: int,
    tenant: str | None,
    generalisations: dict[str, dict[str, Any]] | None = None,
) -> Samples:
    """Deduplicate, sample at equal sizes, fit the column plan and encode every sample."""
    columns, missing = _check_inputs(released, train, holdout, schema, tenant)
    notes: list[str] = []
    if missing:
        notes.append(f"columns left out of the audit because a table lacks them: {', '.join(missing)}")
    rng = np.random.default_rng(seed)
    rel, tr, ho = (f.select(columns) for f in (released, train, holdout))
    rel_u, tr_u, ho_u = (f.unique(maintain_order=True) for f in (rel, tr, ho))
    n_side = min(sample_size, tr_u.height, ho_u.height)
    released_s = take_rows(rel_u, sample_size, rng)
    train_s, holdout_s = take_rows(tr_u, n_side, rng), take_rows(ho_u, n_side, rng)
    # Membership inference reads the tables as they are (no deduplication): a
    # row repeated across train and holdout must look the same to the attack
    # whether it is scored as a member or as a non-member.
    n_eval = min(sample_size // 2, tr.height, ho.height // 2)
    order = rng.permutation(ho.height)
    non_members = ho[np.sort(order[:n_eval])]
    reference = ho[np.sort(order[n_eval:n_eval + sample_size])]
    members = take_rows(tr, n_eval, rng)
    plans = _plan(columns, schema, released_s, [train_s, holdout_s, members, non_members, reference], generalisations)

    def enc(frame: pl.DataFrame, is_released: bool = False) -> EncodedTable:
        return encode_table(frame, plans, schema, released=is_released, tenant=tenant)

    sizes = {
        "released_rows": released.height, "train_rows": train.height, "holdout_rows": holdout.height,
        "released_unique": rel_u.height, "train_unique": tr_u.height, "holdout_unique": ho_u.height,
        "released_sample": released_s.height, "train_sample": train_s.height, "holdout_sample": holdout_s.height,
        "mia_members": members.height, "mia_non_members": non_members.height, "mia_reference": reference.height,
        "compared_columns": len(columns),
    }
    if n_side < 30:
        notes.append(
            f"only {n_side} unique rows per real table: distance figures are noisy and their intervals are wide; "
            "the audit needs at least 30 rows per table for figures worth certifying"
        )
    # A record whose compared values another borrower of the tape shares identifies no one: a released row equal
    # to it is a coincidence of common values (a zero balance, a round age), as likely against the holdout. Only
    # a copy of a record that is unique in the tape discloses a borrower, so exact matches are sought among those.
    counts = pl.concat([tr, ho], how="vertical_relaxed").group_by(columns).agg(pl.len().alias("__copies"))
    unique_records = counts.filter(pl.col("__copies") == 1).drop("__copies")

    def unique_in_tape(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.join(unique_records, on=columns, how="semi", nulls_equal=True)

    frames = {"released": released_s, "train": train_s, "holdout": holdout_s, "train_all": unique_in_tape(tr),
              "holdout_all": unique_in_tape(ho)}
    return Samples(
        columns, plans, enc(released_s, True), enc(train_s), enc(holdout_s), enc(members), enc(non_members),
        enc(reference), sizes, frames, notes,
    )


# --------------------------------------------------------------------------- distance to closest record


# Past this many candidate pairs the exact-match check against whole tables
# gives way to the check on the samples (a table of few, repeated values).
MAX_JOIN_PAIRS = 5_000_000


def _key_frame(frame: pl.DataFrame, plans: list[ColumnPlan], schema: TableSchema) -> pl.DataFrame:
    """The non-generalised columns as join keys: numbers as floats, categories as canonical strings."""
    data = {}
    for column in plans:
        if column.generalised:
            continue
        series = frame.get_column(column.name)
        if column.numeric:
            data[column.name] = pl.Series(column.name, numeric_values(series), dtype=pl.Float64, nan_to_null=True)
        else:
            data[column.name] = pl.Series(column.name, category_strings(series, schema[column.name].type), dtype=pl.String)
    return pl.DataFrame(data)


def _matches_whole_table(samples: "Samples", schema: TableSchema, table: pl.DataFrame) -> np.ndarray | None:
    """Which sampled released rows are at distance 0 from some row of the whole `table`.

    Rows at distance 0 agree exactly on every non-generalised column, so a
    hash join on those finds the candidates and the generalised columns are
    then checked for coverage. None when there is no such column or the join
    would be too large (the sample-based figure stands then).
    """
    plans = samples.plans
    keys = [c.name for c in plans if not c.generalised]
    if not keys:
        return None
    released_keys = _key_frame(samples.frames["released"], plans, schema).with_row_index("__released")
    real_keys = _key_frame(table, plans, schema).with_row_index("__real")
    counts = real_keys.group_by(keys).agg(pl.len().alias("__count"))
    pairs = released_keys.join(counts, on=keys, how="inner", nulls_equal=True).get_column("__count").sum()
    if pairs is None or pairs == 0:
        return np.zeros(samples.released.n, dtype=bool)
    if pairs > MAX_JOIN_PAIRS:
        return None
    joined = released_keys.join(real_keys, on=keys, how="inner", nulls_equal=True).select("__released", "__real")
    if joined.height == 0:
        return np.zeros(samples.released.n, dtype=bool)
    ia = joined.get_column("__released").to_numpy().astype(np.int64)
    ib = joined.get_column("__real").to_numpy().astype(np.int64)
    covered = np.ones(ia.size, dtype=bool)
    sparse_numeric = [c.name for c in plans if c.numeric and not c.dense]
    for column in plans:
        if not column.generalised:
            continue
        values = table.get_column(column.name)[ib]
        if column.numeric:
            j = sparse_numeric.index(column.name)
            x = (numeric_values(values) - column.center) / column.scale
            low, high = samples.released.low[j][ia], samples.released.high[j][ia]
            gap = _gap(low, high, x, x, outer=False)
            covered &= gap <= TIE_TOLERANCE
        else:
            index = {level: i for i, level in enumerate(column.levels)}
            strings = [MISSING if v is None else v for v in category_strings(values, schema[column.name].type)]
            level = np.array([index.get(v, -1) for v in strings], dtype=np.int64)
            label = samples.released.codes[[c.name for c in plans if not c.numeric and not c.dense].index(column.name)][ia]
            known = level >= 0
            hit = np.zeros(ia.size, dtype=bool)
            hit[known] = column.membership[label[known], level[known]] == 0.0
            covered &= hit
    matched = np.zeros(samples.released.n, dtype=bool)
    matched[ia[covered]] = True
    return matched


def _closer(d_a: np.ndarray, d_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(strictly closer to a, tied) per row: distances within `TIE_TOLERANCE` (relative) are a tie."""
    tie = np.abs(d_a - d_b) <= TIE_TOLERANCE * (1.0 + np.maximum(d_a, d_b))
    return (d_a < d_b) & ~tie, tie


def _null_share_spread(
    to_train: np.ndarray, at_train: np.ndarray, to_holdout: np.ndarray, at_holdout: np.ndarray,
    n_train: int, n_holdout: int, seed: int,
) -> float:
    """The standard deviation of the share closer to train when membership is dealt at random among the sampled real rows.

    Every released row is compared with the same two samples of real rows, so the rows' verdicts are not
    independent: where a few real rows sit among many released ones, which split holds them moves the whole share.
    A binomial interval over the released rows misses that spread. Without a leak the generator treats train and
    holdout rows alike, so dealing the pooled rows into two groups of the samples' sizes at random gives the share
    the audit would see from chance alone; its spread over `NULL_DEALS` deals (seeded) is returned. Each deal reads a
    released row's `NULL_NEIGHBOURS` nearest rows of each split (merged by distance): its nearest row of a group is the
    first of those the group holds, exact unless the nearest rows of the pooled sample fall more than
    `NULL_NEIGHBOURS` deep into one split's list, which a deal leaves to chance 2^-`NULL_NEIGHBOURS`. Rows are dealt,
    not borrowers: where a borrower has several loans the spread is somewhat understated.
    """
    pooled_at = np.concatenate([at_train, np.where(at_holdout >= 0, at_holdout + n_train, -1)], axis=1)
    distances = np.concatenate([to_train, to_holdout], axis=1)
    order = np.argsort(distances, axis=1, kind="stable")
    distances, pooled_at = np.take_along_axis(distances, order, 1), np.take_along_axis(pooled_at, order, 1)
    total = n_train + n_holdout
    rng = np.random.default_rng([int(seed), 7])
    valid = pooled_at >= 0
    rows = np.arange(distances.shape[0])
    shares = np.empty(NULL_DEALS)
    for deal in range(NULL_DEALS):
        in_group = np.zeros(total + 1, dtype=bool)  # the extra slot is where a missing neighbour (-1) looks
        in_group[rng.choice(total, size=n_train, replace=False)] = True
        group = in_group[pooled_at] & valid
        other = ~in_group[pooled_at] & valid
        d_a = np.where(group.any(axis=1), distances[rows, group.argmax(axis=1)], np.inf)
        d_b = np.where(other.any(axis=1), distances[rows, other.argmax(axis=1)], np.inf)
        closer, tie = _closer(d_a, d_b)
        shares[deal] = (closer.sum() + 0.5 * tie.sum()) / rows.size
    return float(shares.std(ddof=1))


def dcr_from_samples(samples: Samples, schema: TableSchema, *, seed: int = 0) -> dict[str, Any]:
    """`distance_to_closest_record` on samples already drawn (`draw_samples`), without its `warnings`."""
    from scipy.stats import norm

    to_train, at_train = nearest_rows(samples.plans, samples.released, samples.train, NULL_NEIGHBOURS)
    to_holdout, at_holdout = nearest_rows(samples.plans, samples.released, samples.holdout, NULL_NEIGHBOURS)
    d_train, d_holdout = to_train[:, 0], to_holdout[:, 0]
    n = d_train.size
    closer, tie = _closer(d_train, d_holdout)
    successes = float(closer.sum() + 0.5 * tie.sum())
    share = successes / n
    # The limit is held to the share itself (`models.privacy.policy`); its spread says how far chance alone moves it
    # at this size, and how unlikely the share is without a leak.
    spread = _null_share_spread(to_train, at_train, to_holdout, at_holdout, samples.train.n, samples.holdout.n, seed)
    p_value = float(norm.sf((share - 0.5) / spread)) if spread > 0 else (0.0 if share > 0.5 else 1.0)
    exact_train = d_train <= TIE_TOLERANCE
    exact_holdout = d_holdout <= TIE_TOLERANCE
    any_train = float(exact_train.mean())
    # Against the samples a copied row is missed when its source row was not
    # drawn; the hash join checks every record of the whole split that is
    # unique in the tape instead (see `draw_samples`), and replaces the sample figure.
    scope = "records unique in the tape, whole splits"
    for name in ("train_all", "holdout_all"):
        whole = _matches_whole_table(samples, schema, samples.frames[name])
        if whole is None:
            scope = "samples, any record (the join over the whole splits was too large)"
        elif name == "train_all":
            exact_train = whole
        else:
            exact_holdout = whole

    def ratio(d: np.ndarray) -> np.ndarray:
        # Two neighbours at distance 0 (possible when generalised labels cover
        # several real rows) are equally close: ratio 1.
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.where(d[:, 1] > 0, d[:, 0] / d[:, 1], 1.0)
        return out[np.isfinite(out)]

    nndr_train, nndr_holdout = ratio(to_train), ratio(to_holdout)

    def quantile(values: np.ndarray, q: float) -> float | None:
        finite = values[np.isfinite(values)]
        return float(np.quantile(finite, q)) if finite.size else None

    return {
        "metric": "euclidean norm of per-column distances (numeric |a-b|/IQR, category mismatch 1, null vs value 1, "
        "generalised labels: distance to the range / group)",
        "share_closer_to_train": share,
        "share_ci": list(wilson_interval(successes, n)),
        "share_null_sd": spread,
        "share_p_value": p_value,
        "ties": int(tie.sum()),
        "exact_match_rate": float(exact_train.mean()),
        "exact_matches": int(exact_train.sum()),
        "exact_match_rate_holdout": float(exact_holdout.mean()),
        "exact_match_rate_any_sampled_train_row": any_train,
        **_coincidences(int(exact_train.sum()), int(exact_holdout.sum()), samples, n),
        "exact_match_scope": scope,
        "median_dcr_train": quantile(d_train, 0.5),
        "median_dcr_holdout": quantile(d_holdout, 0.5),
        "p05_dcr_train": quantile(d_train, 0.05),
        "p05_dcr_holdout": quantile(d_holdout, 0.05),
        "nndr_median_train": quantile(nndr_train, 0.5),
        "nndr_median_holdout": quantile(nndr_holdout, 0.5),
        "nndr_p05_train": quantile(nndr_train, 0.05),
        "nndr_p05_holdout": quantile(nndr_holdout, 0.05),
        "n_released": n,
        "n_train": samples.train.n,
        "n_holdout": samples.holdout.n,
    }


def _coincidences(train_matches: int, holdout_matches: int, samples: Samples, n: int) -> dict[str, Any]:
    """How many exact matches coincidence explains, from the holdout's, and the copies beyond it.

    An honest generator matches a record of the train split no more often than
    one of the holdout, record for record, so the holdout's matches scaled by
    the ratio of unique records predict the train's coincidental matches. The
    holdout count is small, so its upper 95 % Poisson bound is scaled, and
    matches beyond the 95 % Poisson quantile of that prediction are copies.
    Where nothing matches the holdout, coincidence is not shown possible: the
    prediction is 0 and any match is a copy.
    """
    from scipy.stats import chi2, poisson

    unique_train, unique_holdout = samples.frames["train_all"].height, samples.frames["holdout_all"].height
    ratio = unique_train / unique_holdout if unique_holdout else 0.0
    expected = holdout_matches * ratio
    upper = chi2.ppf(CONFIDENCE, 2 * (holdout_matches + 1)) / 2 if holdout_matches else 0.0
    explained = float(poisson.ppf(CONFIDENCE, upper * ratio)) if upper * ratio > 0 else 0.0
    return {
        "unique_train_records": unique_train,
        "unique_holdout_records": unique_holdout,
        "exact_matches_holdout": holdout_matches,
        "coincidences_expected": expected,
        "coincidences_explained": explained,
        "exact_copy_rate": max(0.0, train_matches - explained) / n if train_matches > explained else 0.0,
    }


def distance_to_closest_record(
    released: pl.DataFrame,
    train: pl.DataFrame,
    holdout: pl.DataFrame,
    schema: TableSchema,
    *,
    sample_size: int = 10_000,
    seed: int = 0,
    tenant: str | None = None,
    generalisations: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Distance to closest record of the released rows, train against holdout.

    Duplicate rows are removed from each table, then `sample_size` released rows
    and min(sample_size, unique train, unique holdout) rows of each real table
    are drawn with `seed`, so train and holdout are compared at the same size.
    `generalisations` is `AnonymizationResult.generalisations` (see `models.privacy.audit.run_audit`).

    Returns:
        `share_closer_to_train` (ties count one half; 0.5 is ideal) with its
        Wilson interval `share_ci`, `exact_match_rate` (sampled released rows
        at distance 0 from a row of the whole train split, found by a hash
        join; `exact_match_scope` says "samples" where the join was not
        possible) and `exact_match_rate_holdout` as its baseline, DCR and nearest-neighbour distance ratio quantiles for train
        and holdout, the sample sizes and `warnings`.

    Raises:
        InvalidDataError: a table is empty or the tables share no comparable
            column, or a released numeric column holds a value that is neither
            a number nor a range label.
    """
    samples = draw_samples(
        released, train, holdout, schema, sample_size=sample_size, seed=seed, tenant=tenant, generalisations=generalisations
    )
    result = dcr_from_samples(samples, schema, seed=seed)
    result["warnings"] = list(samples.warnings)
    return result
