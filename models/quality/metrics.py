"""How close a synthetic table is to the real one it imitates, and the statistics that say so.

This module is CreditTwin's one home for the comparison statistics: the
two-sample Kolmogorov-Smirnov statistic (`ks_statistic`, `ks_location`),
total variation between category frequencies (`tv_distance`) and between
contingency tables (`contingency_tv_distance`), Pearson and rank (Spearman)
correlation matrices over pairwise-complete rows (`pearson_matrix`,
`rank_correlation`), and Cramér's V of a pair of coded columns (`joint_counts`,
`cramers_v`, with `contingency_shape` to tell whether the table is dense
enough for it). The validation report (`models.quality.validation`) and the
PD models' score separation (`models.risk.evaluation`) use them from here.

`compare_tables` gives, per column, the Kolmogorov-Smirnov statistic (numeric,
integer, datetime) or the total-variation distance (categorical, boolean) of
the non-null values, the similarity 1 - statistic, and the difference in
missing rates; and, over the numeric-like columns, the mean absolute
difference between the real and synthetic rank (Spearman) correlation
matrices. Each has a threshold; the report passes when all hold and lists the
worst columns otherwise. It runs on vectorised NumPy and is fast at 100k rows.

`sdmetrics_quality` is SDMetrics' QualityReport score (the average of its
column-shape and column-pair-trend properties), with metadata built from our
schema.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl

from models.errors import InvalidDataError
from models.tape.schema import ColumnType, TableSchema

_KS_TYPES = (ColumnType.NUMERIC, ColumnType.INTEGER, ColumnType.DATETIME)
_TV_TYPES = (ColumnType.CATEGORICAL, ColumnType.BOOLEAN)
_SDMETRICS_TYPES = {
    ColumnType.NUMERIC: "numerical",
    ColumnType.INTEGER: "numerical",
    ColumnType.DATETIME: "datetime",
    ColumnType.CATEGORICAL: "categorical",
    ColumnType.BOOLEAN: "boolean",
}


@dataclass
class ColumnFidelity:
    """One column's comparison: `metric` is "ks" or "tv"; similarity = 1 - statistic.

    `limit` is the largest statistic the column may have and `missing_limit` the largest missing-rate difference:
    the thresholds given, or with a noise allowance what sampling alone explains when that is more
    (`column_noise`).
    """

    name: str
    type: str
    metric: str
    statistic: float
    similarity: float
    missing_real: float
    missing_synthetic: float
    missing_diff: float
    passed: bool
    limit: float = 1.0
    missing_limit: float = 1.0


@dataclass
class FidelityReport:
    """The result of `compare_tables`.

    Attributes:
        columns: per-column results, in table order.
        correlation_columns: the columns of the correlation matrices.
        real_correlation, synthetic_correlation: rank correlation matrices.
        correlation_diff: mean absolute difference of their off-diagonal entries.
        correlation_max_diff: the largest absolute difference.
        thresholds: the thresholds applied.
        missing_columns: modelled columns absent from the synthetic table.
        passed: every column and the correlation difference within thresholds.
    """

    columns: list[ColumnFidelity]
    correlation_columns: list[str]
    real_correlation: np.ndarray
    synthetic_correlation: np.ndarray
    correlation_diff: float
    correlation_max_diff: float
    thresholds: dict[str, float]
    missing_columns: list[str] = field(default_factory=list)
    passed: bool = True

    def worst(self, n: int = 5) -> list[ColumnFidelity]:
        """The `n` columns with the lowest similarity (missing-rate gaps count against it)."""
        return sorted(self.columns, key=lambda c: min(c.similarity, 1.0 - c.missing_diff))[:n]

    def failures(self) -> list[str]:
        """One line per failed check, worst first, for an asset check's description."""
        lines = [f"column '{c}' is missing from the synthetic table" for c in self.missing_columns]
        for col in self.worst(len(self.columns)):
            if not col.passed:
                lines.append(
                    f"column '{col.name}': {col.metric.upper()} {col.statistic:.3f} (similarity {col.similarity:.3f}, "
                    f"limit {col.limit:.3f}), missing rate {col.missing_real:.3f} real vs {col.missing_synthetic:.3f} "
                    f"synthetic (limit {col.missing_limit:.3f})"
                )
        if self.correlation_diff > self.thresholds["corr_threshold"]:
            lines.append(
                f"mean correlation difference {self.correlation_diff:.3f} exceeds {self.thresholds['corr_threshold']:.3f}"
            )
        return lines

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the matrices are left out; they are large and plotted separately)."""
        return {
            "passed": self.passed,
            "thresholds": dict(self.thresholds),
            "columns": [asdict(c) for c in self.columns],
            "missing_columns": list(self.missing_columns),
            "correlation_columns": list(self.correlation_columns),
            "correlation_diff": self.correlation_diff,
            "correlation_max_diff": self.correlation_max_diff,
            "mean_similarity": float(np.mean([c.similarity for c in self.columns])) if self.columns else 1.0,
            "worst": [c.name for c in self.worst(5)],
            "failures": self.failures(),
        }


def _as_float(series: pl.Series) -> np.ndarray:
    if series.dtype == pl.Date:
        series = series.cast(pl.Int32)
    elif isinstance(series.dtype, pl.Datetime):
        series = series.dt.epoch("us")
    elif series.dtype == pl.Boolean:
        series = series.cast(pl.Int8)
    elif series.dtype in (pl.String, pl.Categorical):
        # a flag the file spells T/F (or labels of a k-anonymised flag): its truth values, else null
        from models.tape.vocabulary import as_truths

        series = as_truths(series.cast(pl.String), strict=False).cast(pl.Int8)
    return series.cast(pl.Float64).fill_nan(None).to_numpy().astype(np.float64, copy=False)


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample Kolmogorov-Smirnov statistic of two 1-d samples (NaN ignored)."""
    return ks_location(a, b)[0]


def ks_location(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The two-sample KS statistic and where it lies: the level of `a`'s empirical CDF at the largest gap.

    NaN are ignored. With an empty sample the statistic is 0 when both are
    empty and 1 otherwise, and the level is NaN.
    """
    a = np.sort(a[~np.isnan(a)])
    b = np.sort(b[~np.isnan(b)])
    if a.size == 0 or b.size == 0:
        return (0.0 if a.size == b.size else 1.0), float("nan")
    points = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, points, side="right") / a.size
    cdf_b = np.searchsorted(b, points, side="right") / b.size
    gaps = np.abs(cdf_a - cdf_b)
    largest = int(np.argmax(gaps))
    return float(gaps[largest]), float(cdf_a[largest])


def tv_distance(a: pl.Series, b: pl.Series) -> float:
    """Total-variation distance between the category frequencies of two series (nulls ignored)."""
    a = a.drop_nulls().cast(pl.String)
    b = b.drop_nulls().cast(pl.String)
    if a.len() == 0 or b.len() == 0:
        return 0.0 if a.len() == b.len() else 1.0
    fa = a.value_counts(normalize=True, name="p").rename({a.name: "v"})
    fb = b.value_counts(normalize=True, name="q").rename({b.name: "v"})
    joined = fa.join(fb, on="v", how="full", coalesce=True).fill_null(0.0)
    return float(0.5 * (joined.get_column("p") - joined.get_column("q")).abs().sum())


def pooled_like(real: pl.Series, synthetic: pl.Series) -> pl.Series:
    """`real` in the synthetic's vocabulary: categories the twin pooled for privacy read as its "other".

    The twin releases a category seen in fewer than k rows (and a free-form
    label past max_categories) as "other"; comparing those real labels one by
    one with a release that may never contain them would count privacy as
    infidelity. Real values the synthetic table never shows are therefore read
    as "other" when, and only when, the synthetic column holds "other".
    """
    from models.twin.copula import OTHER

    released = synthetic.drop_nulls().cast(pl.String)
    if not bool((released == OTHER).any()):
        return real
    name = real.name
    kept = released.unique().implode()
    return real.cast(pl.String).to_frame().select(
        pl.when(pl.col(name).is_in(kept) | pl.col(name).is_null()).then(pl.col(name)).otherwise(pl.lit(OTHER))
    ).to_series()


def _pairwise_correlation(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correlations of the columns of `values` over pairwise-complete rows (NaN = missing).

    Returns the matrix (NaN or inf where undefined), each pair's row count and
    the product of the two variances on those rows.
    """
    mask = ~np.isnan(values)
    z = np.where(mask, values, 0.0)
    m = mask.astype(np.float64)
    count = m.T @ m
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_x = (z.T @ m) / count  # [i, j]: mean of column i over rows where j is present too
        cov = (z.T @ z) / count - mean_x * mean_x.T
        var = (z * z).T @ m / count - mean_x**2
        corr = cov / np.sqrt(var * var.T)
    return corr, count, var * var.T


def pearson_matrix(values: np.ndarray) -> np.ndarray:
    """Pearson correlations of the columns of `values` over pairwise-complete rows (NaN = missing).

    As pandas or scipy on each pair's non-missing rows; NaN where a pair has
    fewer than 2 rows or a column is constant on them.
    """
    if values.shape[1] == 0:
        return np.zeros((0, 0))
    # Standardise first: correlations do not change and products of day counts or incomes stay well scaled.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing column has no mean; it gets NaN correlations
        centre = np.nanmean(values, axis=0)
        scale = np.nanstd(values, axis=0)
    centre = np.where(np.isfinite(centre), centre, 0.0)
    scale = np.where((scale > 0) & np.isfinite(scale), scale, 1.0)
    corr, count, variances = _pairwise_correlation((values - centre) / scale)
    corr[(count < 2) | ~(variances > 1e-12)] = np.nan  # too few rows, or constant where both are present
    return np.clip(corr, -1.0, 1.0)


def rank_correlation(frame: pl.DataFrame, names: list[str]) -> np.ndarray:
    """Spearman correlations of the columns `names` over pairwise-complete rows; 0 where undefined, 1 on the diagonal."""
    if not names:
        return np.zeros((0, 0))
    ranks = np.column_stack([
        frame.get_column(n).rank("average").cast(pl.Float64).fill_null(np.nan).to_numpy() for n in names
    ])
    corr = np.nan_to_num(_pairwise_correlation(ranks)[0])
    np.fill_diagonal(corr, 1.0)
    return corr


def joint_counts(a: np.ndarray, b: np.ndarray, kb: int) -> tuple[np.ndarray, np.ndarray]:
    """The non-empty cells of the contingency table of two code arrays (`b` below `kb`): (cell a * kb + b, count)."""
    cells = a * kb + b
    top = int(cells.max()) + 1 if cells.size else 0
    if top <= 1_000_000:  # small tables: one pass of bincount
        counts = np.bincount(cells, minlength=top)
        codes = np.flatnonzero(counts)
        return codes, counts[codes]
    return np.unique(cells, return_counts=True)  # two high-cardinality columns: never build the dense table


def cramers_v(cells: np.ndarray, counts: np.ndarray, kb: int, *, corrected: bool) -> float:
    """Cramér's V from the non-empty cells of a table (`joint_counts`); bias-corrected (Bergsma 2013) when asked.

    Uses chi2 = n (sum of O^2 / (row total x column total) - 1), which needs
    only the observed cells, so the table is never built densely. NaN with
    fewer than 2 rows, or a single category on either side.
    """
    n = float(counts.sum())
    rows, row_index = np.unique(cells // kb, return_inverse=True)
    cols, col_index = np.unique(cells % kb, return_inverse=True)
    r, k = rows.size, cols.size
    if n < 2 or min(r, k) < 2:
        return float("nan")
    row_total = np.bincount(row_index, weights=counts)
    col_total = np.bincount(col_index, weights=counts)
    chi2 = n * (float(np.sum(counts.astype(np.float64) ** 2 / (row_total[row_index] * col_total[col_index]))) - 1.0)
    phi2 = max(0.0, chi2 / n)
    if not corrected:
        return float(math.sqrt(phi2 / (min(r, k) - 1)))
    phi2 = max(0.0, phi2 - (k - 1) * (r - 1) / (n - 1))
    rc, kc = r - (r - 1) ** 2 / (n - 1), k - (k - 1) ** 2 / (n - 1)
    denominator = min(rc - 1, kc - 1)
    return float(math.sqrt(phi2 / denominator)) if denominator > 0 else 0.0


def without_sparse_levels(cells: np.ndarray, counts: np.ndarray, kb: int, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The table (`joint_counts`) less the rows and columns of the levels held by fewer than `min_rows` of its rows.

    One loan of a category seen once ('XNA' beside 'F' and 'M') sitting in a
    three-row tail bin of the other column contributes a chi-square term of
    hundreds: Cramér's V then measures that loan, not an association.
    """
    rows, row_index = np.unique(cells // kb, return_inverse=True)
    cols, col_index = np.unique(cells % kb, return_inverse=True)
    keep = (np.bincount(row_index, weights=counts)[row_index] >= min_rows) & \
        (np.bincount(col_index, weights=counts)[col_index] >= min_rows)
    return cells[keep], counts[keep]


def contingency_shape(cells: np.ndarray, counts: np.ndarray, kb: int) -> tuple[int, int, int]:
    """Rows and the levels present on each side of a table given by its non-empty cells (`joint_counts`).

    rows / (levels_a x levels_b) is the mean expected count of a cell under
    independence: the usual condition of a chi-square (hence Cramér's V) is at
    least 5, below which the statistic measures the table's sparseness rather
    than an association.
    """
    n = int(counts.sum())
    return n, int(np.unique(cells // kb).size), int(np.unique(cells % kb).size)


def contingency_tv_distance(cells_a: np.ndarray, counts_a: np.ndarray, cells_b: np.ndarray, counts_b: np.ndarray) -> float:
    """Total variation between two contingency tables given by their non-empty cells (`joint_counts`).

    A cell absent from one table counts 0 there.
    """
    union = np.union1d(cells_a, cells_b)
    p = np.zeros(union.size)
    q = np.zeros(union.size)
    p[np.searchsorted(union, cells_a)] = counts_a / counts_a.sum()
    q[np.searchsorted(union, cells_b)] = counts_b / counts_b.sum()
    return 0.5 * float(np.abs(p - q).sum())


def compare_tables(
    real: pl.DataFrame,
    synthetic: pl.DataFrame,
    schema: TableSchema,
    *,
    ks_threshold: float = 0.1,
    tv_threshold: float = 0.1,
    corr_threshold: float = 0.1,
    missing_threshold: float | None = None,
    noise_allowance: bool = False,
) -> FidelityReport:
    """Compare a synthetic table with the real train split it was fitted on.

    Args:
        real, synthetic: the two tables; identifier and text columns are skipped.
        schema: the real table's schema.
        ks_threshold: the largest KS statistic (and missing-rate difference) a
            numeric, integer or datetime column may have.
        tv_threshold: the largest total-variation distance (and missing-rate
            difference) a categorical or boolean column may have.
        corr_threshold: the largest mean absolute difference between the real
            and synthetic rank-correlation matrices of the numeric-like columns.
        missing_threshold: the largest missing-rate difference a column may
            have; None: its KS or total-variation threshold.
        noise_allowance: widen each limit to what sampling noise alone explains
            (`column_noise`): a column's shape by the rows where it is present
            in each table (a 90%-missing column is compared on a tenth of the
            rows), its missing rate and the correlations by the table sizes.

    Raises:
        InvalidDataError: an empty table or a threshold outside [0, 1].
    """
    for label, value in (("ks_threshold", ks_threshold), ("tv_threshold", tv_threshold), ("corr_threshold", corr_threshold)):
        if not 0.0 <= value <= 1.0:
            raise InvalidDataError(f"{label} must be within [0, 1], got {value!r}.", fix="use e.g. 0.1.")
    if real.height == 0 or synthetic.height == 0:
        raise InvalidDataError("cannot compare an empty table.", fix="sample at least one row and pass the non-empty train split.")
    results: list[ColumnFidelity] = []
    missing_columns: list[str] = []
    corr_names: list[str] = []
    for spec in schema.columns:
        if spec.type not in _KS_TYPES + _TV_TYPES:
            continue
        if spec.name not in synthetic.columns:
            missing_columns.append(spec.name)
            continue
        r, s = real.get_column(spec.name), synthetic.get_column(spec.name)
        if spec.type in _KS_TYPES:
            stat, metric, limit = ks_statistic(_as_float(r), _as_float(s)), "ks", ks_threshold
        else:
            stat, metric, limit = tv_distance(pooled_like(r, s), s), "tv", tv_threshold
        if spec.type in _KS_TYPES or spec.type is ColumnType.BOOLEAN:
            corr_names.append(spec.name)
        miss_r = (r.null_count() + (r.is_nan().sum() if r.dtype.is_float() else 0)) / real.height
        miss_s = (s.null_count() + (s.is_nan().sum() if s.dtype.is_float() else 0)) / synthetic.height
        diff = abs(miss_r - miss_s)
        missing_limit = limit if missing_threshold is None else missing_threshold
        if noise_allowance:
            shape_noise, missing_noise = column_noise(real.height, synthetic.height, float(miss_r), float(miss_s))
            limit, missing_limit = max(limit, shape_noise), max(missing_limit, missing_noise)
        results.append(ColumnFidelity(
            name=spec.name, type=spec.type.value, metric=metric, statistic=stat, similarity=1.0 - stat,
            missing_real=float(miss_r), missing_synthetic=float(miss_s), missing_diff=float(diff),
            passed=bool(stat <= limit and diff <= missing_limit), limit=float(min(limit, 1.0)),
            missing_limit=float(min(missing_limit, 1.0)),
        ))
    as_num = lambda frame: frame.select([pl.Series(n, _as_float(frame.get_column(n))) for n in corr_names])  # noqa: E731
    real_corr = rank_correlation(as_num(real), corr_names)
    syn_corr = rank_correlation(as_num(synthetic), corr_names)
    off = ~np.eye(len(corr_names), dtype=bool)
    delta = np.abs(real_corr - syn_corr)[off]
    if noise_allowance:
        corr_threshold = sample_size_thresholds(real.height, synthetic.height, corr=corr_threshold)["corr_threshold"]
    corr_diff = float(delta.mean()) if delta.size else 0.0
    corr_max = float(delta.max()) if delta.size else 0.0
    passed = not missing_columns and all(c.passed for c in results) and corr_diff <= corr_threshold
    return FidelityReport(
        columns=results,
        correlation_columns=corr_names,
        real_correlation=real_corr,
        synthetic_correlation=syn_corr,
        correlation_diff=corr_diff,
        correlation_max_diff=corr_max,
        thresholds={"ks_threshold": ks_threshold, "tv_threshold": tv_threshold, "corr_threshold": corr_threshold},
        missing_columns=missing_columns,
        passed=passed,
    )


def sdmetrics_metadata(schema: TableSchema, columns: list[str]) -> dict[str, Any]:
    """SDMetrics single-table metadata for `columns`, from our column types."""
    return {"columns": {c: {"sdtype": _SDMETRICS_TYPES[schema[c].type]} for c in columns}}


def sdmetrics_quality(real: pl.DataFrame, synthetic: pl.DataFrame, schema: TableSchema) -> float:
    """SDMetrics' QualityReport score of `synthetic` against `real` (0 to 1).

    Identifier and free-text columns are left out of both tables (SDMetrics
    does not score them and the twin does not emit text).
    """
    with warnings.catch_warnings():
        # The single-table report warns of its own deprecation on import; the call below is supported.
        warnings.simplefilter("ignore", FutureWarning)
        try:
            from sdmetrics.reports.single_table import QualityReport
        except ImportError as exc:
            raise InvalidDataError("SDMetrics is not installed.", fix="pip install sdmetrics (MIT licence).") from exc
    columns = [c.name for c in schema.columns if c.type in _SDMETRICS_TYPES and c.name in synthetic.columns]
    if not columns:
        raise InvalidDataError("no column to score.", fix="compare tables that share modelled columns.")
    report = QualityReport()
    with warnings.catch_warnings():
        # SDMetrics warns about its own deprecations and scipy's KS fallback; neither concerns the caller.
        warnings.simplefilter("ignore")
        report.generate(real.select(columns).to_pandas(), synthetic.select(columns).to_pandas(),
                        sdmetrics_metadata(schema, columns), verbose=False)
    return float(report.get_score())


def column_noise(n_real: int, n_synthetic: int, missing_real: float, missing_synthetic: float) -> tuple[float, float]:
    """What sampling noise alone explains in one column of two tables of `n_real` and `n_synthetic` rows.

    Returns (shape, missing): the KS (or total-variation) statistic that two samples of one distribution exceed
    only 5% of the time, 1.36 * sqrt((a + b) / (a b)), where a and b are the rows on which the column is present
    in each table (the statistic compares only those); and 1.96 standard errors of the difference of the two
    missing rates. A column present in 150 rows of each table differs by chance by up to 0.157, not the 0.044
    its 1,600-row tables would allow; with no present row on one side the shape cannot be compared (1.0) and the
    missing rates decide.
    """
    n, m = max(int(n_real), 1), max(int(n_synthetic), 1)
    a, b = n * (1.0 - missing_real), m * (1.0 - missing_synthetic)
    shape = _ks_noise(a, b) if a >= 0.5 and b >= 0.5 else 1.0
    pooled = (missing_real * n + missing_synthetic * m) / (n + m)
    missing = 1.96 * math.sqrt(pooled * (1.0 - pooled) * (1.0 / n + 1.0 / m))
    return min(shape, 1.0), missing


def _ks_noise(a: float, b: float) -> float:
    """The two-sample KS statistic that samples of `a` and `b` values of one distribution exceed only 5% of the time."""
    return 1.36 * math.sqrt((a + b) / (a * b))


def sample_size_thresholds(
    n_real: int, n_synthetic: int, *, ks: float = 0.1, tv: float = 0.1, corr: float = 0.1
) -> dict[str, float]:
    """Thresholds for `compare_tables` no tighter than sampling noise at these sizes.

    Two samples of the same distribution differ by chance: the two-sample KS
    statistic exceeds 1.36 * sqrt((n+m)/(n*m)) only 5% of the time, and the same
    bound is used for total variation; a correlation's noise is about
    1/sqrt(n), so differences up to 2/sqrt(min(n, m)) are expected. A small book
    is therefore judged by what it can show, a large one by the fixed thresholds.
    """
    n, m = max(int(n_real), 1), max(int(n_synthetic), 1)
    ks_noise = _ks_noise(n, m)
    corr_noise = 2.0 / float(np.sqrt(min(n, m)))
    return {
        "ks_threshold": max(ks, ks_noise),
        "tv_threshold": max(tv, ks_noise),
        "corr_threshold": max(corr, corr_noise),
    }
