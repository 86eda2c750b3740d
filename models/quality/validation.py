"""The validation report: how faithful and how useful a synthetic loan book is, with pass/fail.

`build_validation_report` compares the (expanded) synthetic book with the real
train split it imitates and the real holdout it never saw, and gathers in one
`ValidationReport` everything a model-risk reviewer asks of a twin:

* **Fidelity.** Per column, the Kolmogorov-Smirnov statistic (numeric, integer,
  datetime) or total-variation distance (categorical, boolean) and the missing
  rates, from `models.quality.metrics.compare_tables`; Kullback-Leibler and
  Jensen-Shannon divergences of the binned distributions; the rank-correlation
  matrices and their mean difference; and per column pair an association
  (Pearson r, or Cramér's V when a discrete column is involved) real vs
  synthetic, so a lost dependence is named pair by pair. A pair is shown but
  not judged when its contingency table is too sparse for Cramér's V or its
  association rests on a handful of loans; the pair says why.
* **Quality score.** Our own implementation of SDMetrics' QualityReport score
  (`quality_score`), because the SDMetrics package pulls in a
  Business-Source-licensed dependency and is not a runtime requirement. It
  follows SDMetrics 0.32 exactly: Column Shapes is the mean of KSComplement
  (numerical, datetime) and TVComplement (categorical, boolean) over the
  columns; Column Pair Trends the mean of CorrelationSimilarity (Pearson,
  1 - |r_real - r_synth| / 2) over continuous pairs and ContingencySimilarity
  (1 - total variation of the joint table, missing values a category of their
  own) over the other pairs, a continuous column of a mixed pair being cut
  into 10 equal-width bins of its own table; only pairs with a trend in the
  real data count (|r| > 0.5, Cramér's V > 0.3, SDMetrics' defaults since
  issue #815); the score is the mean of the two properties. One departure:
  a pair whose contingency table holds fewer than 5 rows per cell
  (`MIN_PAIR_ROWS_PER_CELL`) is not counted, since both its V and its
  similarity are chance there (two disjoint samples of 2,500 real Lending Club
  loans score 0.67 on Column Pair Trends under SDMetrics' rule, their
  emp_title pairs 0.16 to 0.26, and 0.97 under ours); and a pair's Cramér's V
  is read without the levels fewer than `MIN_LEVEL_ROWS` rows hold (a
  category of one loan in a tail bin of three made V 0.29 of no association).
  `min_rows_per_cell=0` gives SDMetrics' figure. When SDMetrics is importable
  its own score is reported beside ours.
* **Credit metrics.** Default rate overall and by grade and product (or the
  two categorical columns most informative of default), the distributions of
  interest rate, DTI and LTV, and the Gini of one fixed scorecard (a logistic
  regression fitted once on the real train split) applied unchanged to the
  real holdout and to the synthetic book.
* **Utility.** Train-synthetic-test-real against train-real-test-real: the
  same deterministic LightGBM model trained on each book and tested on the
  real holdout, with AUC, Gini, KS and Brier score, and the AUC ratio with
  its 95 % interval. Both models are scored on the same holdout loans, so
  their AUCs are correlated: the interval comes from DeLong's paired
  covariance of the two AUCs and the delta method for their ratio. It is
  the holdout's sampling noise for the two models fitted here (this release
  and this train split), the uncertainty a reviewer of this release faces.
* **Sequences**, when both books carry monthly histories: transition
  matrices, roll rates, default and vintage curves and time to default from
  `models.sequences.histories.compare_sequences`.
* **Charts** (PNG bytes): distributions of the main columns, correlation
  heatmaps side by side, vintage default curves, ROC curves.
* An overall **score** with its formula, a verdict per threshold
  (`ValidationThresholds`): pass, warn or fail, the failures and warnings as
  readable lines and recommendations that name what was found (the columns,
  pairs and drivers, and whether a column is a generalised quasi-identifier).
  The utility ratio is judged on its interval, like the risk model's
  registration gate and the privacy audit's attack rules: it fails when the
  whole interval lies below `min_utility_ratio` (the holdout shows the release
  is less useful than required), passes when the whole interval reaches it,
  and is a warning when the holdout is too small to tell; a warning never
  shows as a pass, and does not fail the report.
  `models.quality.validation_pdf.render_validation_pdf` lays it all out as a PDF.

Absent inputs never stop the report: without a target the utility and
scorecard parts say why they are absent; a holdout with one class makes
utility "not evaluable" with the reason. Large books are sampled (seeded) to
`sample_rows` for the pairwise and model parts, so a 200k-row book runs in
seconds; the per-column figures use every row.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from models.errors import InvalidDataError
from models.quality.metrics import (
    compare_tables,
    contingency_shape,
    contingency_tv_distance,
    cramers_v,
    joint_counts,
    ks_location,
    ks_statistic,
    pearson_matrix,
    sample_size_thresholds,
    sdmetrics_quality,
    tv_distance,
    without_sparse_levels,
)
from models.tape.schema import ColumnType, TableSchema, resolve_aliases
from models.tape.vocabulary import as_truths

_CONTINUOUS = (ColumnType.NUMERIC, ColumnType.INTEGER, ColumnType.DATETIME)
_DISCRETE = (ColumnType.CATEGORICAL, ColumnType.BOOLEAN)
_MODELLED = _CONTINUOUS + _DISCRETE

CREDIT_ALIASES: dict[str, tuple[str, ...]] = {
    "interest_rate": ("interest_rate", "int_rate", "rate", "apr", "interest"),
    "dti": ("dti", "debt_to_income", "dti_ratio"),
    "ltv": ("ltv", "loan_to_value", "ltv_ratio"),
}
SEGMENT_ALIASES: dict[str, tuple[str, ...]] = {
    "grade": ("grade", "loan_grade", "risk_grade", "rating"),
    "product": ("product", "product_type", "loan_product", "loan_type"),
}
QUALITY_WEIGHT, UTILITY_WEIGHT, SEQUENCE_WEIGHT = 0.5, 0.3, 0.2
# SDMetrics' QualityReport defaults (sdmetrics.reports.utils): a pair counts only when the real data shows a trend.
SDMETRICS_CORRELATION_THRESHOLD = 0.5
SDMETRICS_ASSOCIATION_THRESHOLD = 0.3
_SDMETRICS_BINS = 10
# A pair is judged only when each column holds values other than its most common one in at least this many real
# rows: below it the association rests on a handful of loans, which the twin pools for privacy anyway.
MIN_PAIR_MINORITY_ROWS = 10
# Cramér's V of a pair is measured without the levels (categories or bins) that fewer than this many rows of the table
# hold: a level of one or two loans adds a chi-square term of hundreds that is no association (`without_sparse_levels`).
MIN_LEVEL_ROWS = 10
# A Cramér's V pair is judged, and counted in Column Pair Trends, only when its contingency table holds at least this
# many rows per cell (rows / (levels_a x levels_b), chi-square's usual condition): below it V, even bias-corrected,
# measures how sparse the table is (emp_title, 1,511 titles in 2,500 Lending Club loans, x total_credit_lines:
# V 0.34 against 0.05 in another 2,500 real loans).
MIN_PAIR_ROWS_PER_CELL = 5.0
_DIVERGENCE_BINS = 20
_MAX_SEGMENT_LEVELS = 12
_MAX_PANELS = 9
_ROC_POINTS = 101
LIGHTGBM_ROUNDS = 200
# Small, strongly regularised trees: the yardstick must be stable on books of a few thousand loans.
LIGHTGBM_PARAMS: dict[str, Any] = {
    "objective": "binary", "learning_rate": 0.05, "num_leaves": 7, "min_data_in_leaf": 100, "lambda_l2": 10.0,
    "feature_fraction": 0.8, "max_cat_to_onehot": 8, "cat_smooth": 10.0, "min_data_per_group": 100,
    "deterministic": True, "force_row_wise": True, "verbose": -1,
}


class ValidationThresholds(BaseModel):
    """A tenant's fidelity and utility thresholds (``validation:`` in tenant.yaml).

    Every threshold below gates the report (`ValidationReport.passed`):

    * `min_quality`: our SDMetrics-style quality score must reach it.
    * `min_utility_ratio`: TSTR AUC / TRTR AUC on the real holdout must reach
      it (skipped, not failed, without a target or when not evaluable).
    * `max_column_ks` / `max_column_tv`: each column's KS statistic or total
      variation distance; `max_missing_diff`: each column's missing-rate gap.
    * `max_correlation_diff`: mean absolute difference of the rank-correlation
      matrices; `max_pair_association_diff`: each column pair's association
      gap (Pearson r, or Cramér's V when a discrete column is involved).
    * `max_default_rate_diff`: relative gap of the default rate.
    * `sequence_cdr_threshold` / `sequence_row_threshold`: passed to
      `models.sequences.histories.compare_sequences` when histories are given.

    With `noise_allowance` each per-column, correlation and default-rate
    threshold is widened to what sampling noise alone reaches at the book
    sizes (95 %), so a small book is not failed for chance differences.
    `sample_rows` caps the rows used by the pairwise and model parts.
    Strict like every tenant.yaml section: unknown keys and out-of-range values are errors.
    """

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

    min_quality: float = Field(default=0.85, ge=0.0, le=1.0)
    min_utility_ratio: float = Field(default=0.95, gt=0.0, le=2.0)
    max_column_ks: float = Field(default=0.10, ge=0.0, le=1.0)
    max_column_tv: float = Field(default=0.10, ge=0.0, le=1.0)
    max_missing_diff: float = Field(default=0.05, ge=0.0, le=1.0)
    max_correlation_diff: float = Field(default=0.10, ge=0.0, le=1.0)
    max_pair_association_diff: float = Field(default=0.20, ge=0.0, le=2.0)
    max_default_rate_diff: float = Field(default=0.15, ge=0.0, le=10.0)
    sequence_cdr_threshold: float = Field(default=0.10, ge=0.0, le=10.0)
    sequence_row_threshold: float = Field(default=0.02, ge=0.0, le=1.0)
    noise_allowance: bool = True
    sample_rows: int = Field(default=50_000, ge=500, le=5_000_000)


@dataclass
class Check:
    """One line of the summary: `value` `op` `threshold` and its verdict.

    `passed` is False only for a failed check (None when not evaluated); a
    warning (`warning` True: the data cannot show the check met or missed) has
    `passed` True, since it does not fail the report, but its `verdict` is "warn".
    """

    name: str
    label: str
    value: float | None
    threshold: float | None
    op: str
    passed: bool | None
    detail: str = ""
    warning: bool = False

    @property
    def verdict(self) -> str:
        """"pass", "warn", "fail" or "not evaluated"."""
        if self.passed is None:
            return "not evaluated"
        return "fail" if not self.passed else ("warn" if self.warning else "pass")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "label": self.label, "value": self.value, "threshold": self.threshold,
            "op": self.op, "passed": self.passed, "verdict": self.verdict, "detail": self.detail,
        }


@dataclass
class QualityScore:
    """Our implementation of SDMetrics' QualityReport score (see the module docstring).

    Attributes:
        score: mean of the two properties (of the one present when a table has no counted pair).
        column_shapes: mean KSComplement / TVComplement over the columns.
        column_pair_trends: mean CorrelationSimilarity / ContingencySimilarity
            over the counted pairs, None when no pair has a real trend.
        columns: per column ``column``, ``metric``, ``score``.
        pairs: per pair ``columns``, ``metric``, ``score`` (CorrelationSimilarity
            or ContingencySimilarity), ``real`` / ``synthetic`` (Pearson r,
            continuous pairs), ``real_association`` (Cramér's V of the real
            contingency table), ``rows_per_cell`` and ``contingency`` (rows and
            levels of the sparser of the two contingency tables: the table
            Cramér's V is read from), ``counted`` (the pair shows a real trend,
            on a table dense enough to show one, and enters Column Pair Trends), and the
            association gap used for pass/fail: ``association`` ("pearson" or
            "cramers_v"), ``association_real``, ``association_synthetic``,
            ``association_diff``.
        rows: rows of each table used for the pairs (after sampling).
    """

    score: float
    column_shapes: float
    column_pair_trends: float | None
    columns: list[dict[str, Any]]
    pairs: list[dict[str, Any]]
    rows: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return _jsonable({
            "score": self.score, "column_shapes": self.column_shapes, "column_pair_trends": self.column_pair_trends,
            "columns": self.columns, "pairs": self.pairs, "rows": self.rows,
        })


@dataclass
class ValidationReport:
    """Everything `build_validation_report` measured, JSON-ready through `to_dict`.

    Attributes:
        tenant: the tenant, or None.
        rows: rows of real_train, real_holdout and synthetic.
        sampling: rows used by the pairwise and model parts.
        thresholds: the configured thresholds; `effective_thresholds` those
            applied after the noise allowance.
        fidelity: per-column table, correlation matrices and differences.
        quality: our quality score, its properties and SDMetrics' own score
            (``sdmetrics_quality``, None when SDMetrics is not importable).
        pairs: per column pair association real vs synthetic.
        credit: default rates, segments, distributions, scorecard Gini.
        utility: TSTR vs TRTR (``status`` evaluated / absent / not_evaluable, ``reason``).
        sequences: the sequence measures (same ``status`` / ``reason``).
        checks: the pass/fail table.
        recommendations: plain sentences, one per failing column or metric.
        score, score_formula, components: the overall score, its formula and its inputs.
        charts: name -> PNG bytes (distributions, correlations, roc_curves, vintage_curves).
        timings: seconds per part (not in `to_dict`, so the JSON is reproducible).
    """

    tenant: str | None
    rows: dict[str, int]
    sampling: dict[str, Any]
    thresholds: dict[str, Any]
    effective_thresholds: dict[str, Any]
    fidelity: dict[str, Any]
    quality: dict[str, Any]
    pairs: list[dict[str, Any]]
    credit: dict[str, Any]
    utility: dict[str, Any]
    sequences: dict[str, Any]
    checks: list[Check]
    recommendations: list[str]
    score: float
    score_formula: str
    components: dict[str, float | None]
    failure_lines: list[str] = field(default_factory=list)
    charts: dict[str, bytes] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when no evaluated check failed (a warning does not fail the report)."""
        return all(c.passed is not False for c in self.checks)

    @property
    def verdict(self) -> str:
        """"fail" when a check failed, "warn" when none failed but one is a warning, else "pass"."""
        if not self.passed:
            return "fail"
        return "warn" if any(c.verdict == "warn" for c in self.checks) else "pass"

    @property
    def verdict_label(self) -> str:
        """The verdict as the PDF and the command print it: PASS, PASS WITH WARNINGS or FAIL."""
        return {"pass": "PASS", "warn": "PASS WITH WARNINGS", "fail": "FAIL"}[self.verdict]

    @property
    def failures(self) -> list[str]:
        """One readable line per failed check and per failing column or pair."""
        return list(self.failure_lines)

    @property
    def warnings(self) -> list[str]:
        """One readable line per check that is a warning."""
        return [f"{c.label}: {c.detail}" for c in self.checks if c.verdict == "warn"]

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (non-finite numbers as None; charts listed by name only)."""
        return _jsonable({
            "tenant": self.tenant,
            "passed": self.passed,
            "verdict": self.verdict,
            "warnings": self.warnings,
            "score": self.score,
            "score_formula": self.score_formula,
            "components": self.components,
            "checks": [c.to_dict() for c in self.checks],
            "failures": self.failures,
            "recommendations": self.recommendations,
            "rows": self.rows,
            "sampling": self.sampling,
            "thresholds": self.thresholds,
            "effective_thresholds": self.effective_thresholds,
            "fidelity": self.fidelity,
            "quality": self.quality,
            "pairs": self.pairs,
            "credit": self.credit,
            "utility": self.utility,
            "sequences": self.sequences,
            "charts": sorted(self.charts),
        })


# --------------------------------------------------------------------------- small helpers


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars and arrays unwrapped, non-finite floats as None, dates as ISO text."""
    if isinstance(value, pl.DataFrame):
        return [_jsonable(row) for row in value.to_dicts()]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _to_float(series: pl.Series) -> np.ndarray:
    """A column as float64 with NaN for missing: dates as days since 1970, booleans as 0/1, text parsed."""
    dtype = series.dtype
    if dtype == pl.Date:
        series = series.cast(pl.Int32)
    elif isinstance(dtype, pl.Datetime):
        series = series.dt.epoch("ms").cast(pl.Float64) / 86_400_000.0
    elif dtype == pl.Boolean:
        series = series.cast(pl.Int8)
    elif dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum):
        series = series.cast(pl.String).cast(pl.Float64, strict=False)
    return series.cast(pl.Float64, strict=False).fill_nan(None).to_numpy().astype(np.float64, copy=False)


def _to_text(series: pl.Series) -> pl.Series:
    """A discrete column as text, numbers written alike whatever their dtype (1 and 1.0 both '1.0')."""
    dtype = series.dtype
    if dtype == pl.Boolean:
        series = series.cast(pl.Int8)
        dtype = series.dtype
    if dtype.is_numeric():
        return series.cast(pl.Float64).cast(pl.String)
    return series.cast(pl.String)


def _harmonise(frames: list[pl.DataFrame | None], schema: TableSchema, columns: list[str]) -> list[pl.DataFrame | None]:
    """Give each column one dtype across the frames (they come from different writers)."""
    present = [f for f in frames if f is not None]
    changes: dict[str, Any] = {}
    for name in columns:
        dtypes = {f.schema[name] for f in present if name in f.columns}
        categorical = any(d == pl.Categorical or isinstance(d, pl.Enum) for d in dtypes)
        if len(dtypes) <= 1 and not categorical:
            continue
        kind = schema[name].type
        if kind == ColumnType.BOOLEAN and all(as_truths(f.get_column(name)) is not None for f in present if name in f.columns):
            # A flag read as Boolean in one frame and written yes/no, 1/0 or true/false in another is the same flag.
            changes[name] = as_truths
        elif kind in _DISCRETE:
            changes[name] = _to_text
        elif kind == ColumnType.DATETIME:
            changes[name] = lambda s: pl.Series(s.name, _to_float(s)).fill_nan(None).floor().cast(pl.Int32).cast(pl.Date)
        else:
            changes[name] = lambda s: pl.Series(s.name, _to_float(s)).fill_nan(None)
    if not changes:
        return frames
    out: list[pl.DataFrame | None] = []
    for frame in frames:
        if frame is None:
            out.append(None)
            continue
        out.append(frame.with_columns([fn(frame.get_column(n)) for n, fn in changes.items() if n in frame.columns]))
    return out


def _sample(frame: pl.DataFrame, rows: int, seed: int) -> pl.DataFrame:
    return frame.sample(n=rows, seed=seed) if frame.height > rows else frame


def _fmt_num(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"


# --------------------------------------------------------------------------- SDMetrics-style quality


def _discrete_codes(real: pl.Series, synthetic: pl.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes over the union of both columns' values; missing is code 0, a category of its own."""
    r, s = _to_text(real), _to_text(synthetic)
    values = pl.concat([r, s]).drop_nulls().unique().sort().to_list()
    mapping = {v: i + 1 for i, v in enumerate(values)}

    def code(series: pl.Series) -> np.ndarray:
        if not mapping:
            return np.zeros(series.len(), dtype=np.int64)
        return series.replace_strict(mapping, default=0, return_dtype=pl.Int64).fill_null(0).to_numpy()

    return code(r), code(s), len(values) + 1


def _binned_codes(values: np.ndarray) -> np.ndarray:
    """SDMetrics' discretisation of a continuous column: 10 equal-width bins of its own non-missing values.

    ``np.digitize`` against those edges gives 1..11; a missing value lands on 11
    with the maximum, exactly as in SDMetrics' ColumnPairTrends.
    """
    edges = np.histogram_bin_edges(values[~np.isnan(values)], bins=_SDMETRICS_BINS)
    return np.digitize(values, edges).astype(np.int64)


def quality_score(
    real: pl.DataFrame,
    synthetic: pl.DataFrame,
    schema: TableSchema,
    *,
    sample_rows: int = 50_000,
    seed: int = 0,
    real_correlation_threshold: float = SDMETRICS_CORRELATION_THRESHOLD,
    real_association_threshold: float = SDMETRICS_ASSOCIATION_THRESHOLD,
    min_rows_per_cell: float = MIN_PAIR_ROWS_PER_CELL,
) -> QualityScore:
    """SDMetrics' QualityReport score of `synthetic` against `real`, computed without SDMetrics.

    Column Shapes uses every row; Column Pair Trends uses at most
    `sample_rows` rows of each table (seeded; SDMetrics itself subsamples its
    contingency pairs to 50,000 rows). Identifier and text columns are left
    out, as in `models.quality.metrics.sdmetrics_quality`. Unlike SDMetrics,
    a pair whose contingency table is too sparse for an association to show
    (`min_rows_per_cell`) is not counted, whatever its Cramér's V.

    Args:
        real, synthetic: the two tables.
        schema: the real table's schema.
        sample_rows: rows per table for the pairs.
        seed: seed of that sampling.
        real_correlation_threshold, real_association_threshold: a continuous
            pair counts when the real |Pearson r| exceeds the first, another
            pair when the real Cramér's V exceeds the second (SDMetrics'
            defaults 0.5 and 0.3; 0 counts every pair, as SDMetrics did before issue #815).
        min_rows_per_cell: a pair scored on contingency tables counts only when
            both tables hold at least this many rows per cell (see
            `MIN_PAIR_ROWS_PER_CELL`); 0 counts them as SDMetrics does.

    Returns:
        A `QualityScore`.

    Raises:
        InvalidDataError: an empty table, or no column the two tables share.
    """
    if real.height == 0 or synthetic.height == 0:
        raise InvalidDataError("cannot score an empty table.", fix="pass the non-empty real train split and synthetic book.")
    columns = [c.name for c in schema.columns if c.type in _MODELLED and c.name in real.columns and c.name in synthetic.columns]
    if not columns:
        raise InvalidDataError("no column to score.", fix="compare tables that share modelled columns.")
    harmonised = _harmonise([real.select(columns), synthetic.select(columns)], schema, columns)
    real, synthetic = harmonised[0], harmonised[1]
    kinds = {name: schema[name].type for name in columns}

    shape_rows = []
    for name in columns:
        r, s = real.get_column(name), synthetic.get_column(name)
        if kinds[name] in _CONTINUOUS:
            a, b = _to_float(r), _to_float(s)
            if np.isnan(a).all() or np.isnan(b).all():
                score = float("nan")  # SDMetrics cannot compute it and leaves the column out of the mean
            else:
                score = 1.0 - ks_statistic(a, b)
            metric = "KSComplement"
        else:
            score = float("nan") if r.drop_nulls().len() == 0 or s.drop_nulls().len() == 0 else 1.0 - tv_distance(r, s)
            metric = "TVComplement"
        shape_rows.append({"column": name, "metric": metric, "score": score})
    shapes = [row["score"] for row in shape_rows if math.isfinite(row["score"])]
    column_shapes = float(np.mean(shapes)) if shapes else float("nan")

    real_s = _sample(real, sample_rows, seed)
    syn_s = _sample(synthetic, sample_rows, seed + 1)
    continuous = [n for n in columns if kinds[n] in _CONTINUOUS]
    real_values = np.column_stack([_to_float(real_s.get_column(n)) for n in continuous]) if continuous else np.zeros((real_s.height, 0))
    syn_values = np.column_stack([_to_float(syn_s.get_column(n)) for n in continuous]) if continuous else np.zeros((syn_s.height, 0))
    real_corr, syn_corr = pearson_matrix(real_values), pearson_matrix(syn_values)
    position = {n: i for i, n in enumerate(continuous)}

    def constant(values: np.ndarray) -> bool:
        present = values[~np.isnan(values)]
        return present.size == 0 or bool(np.all(present == present[0]))

    constant_cols = {n for n in continuous if constant(real_values[:, position[n]]) or constant(syn_values[:, position[n]])}
    codes: dict[str, tuple[np.ndarray, np.ndarray, int]] = {}
    for name in columns:
        if kinds[name] in _CONTINUOUS:
            i = position[name]
            codes[name] = (_binned_codes(real_values[:, i]), _binned_codes(syn_values[:, i]), _SDMETRICS_BINS + 2)
        else:
            codes[name] = _discrete_codes(real_s.get_column(name), syn_s.get_column(name))

    def minority(name: str) -> int:
        """Real rows holding a value other than the column's most common one (missing counts as a value)."""
        if kinds[name] in _CONTINUOUS:
            values = real_values[:, position[name]]
            _, counts = np.unique(np.where(np.isnan(values), np.inf, values), return_counts=True)
            return int(values.size - counts.max()) if counts.size else 0
        real_codes = codes[name][0]
        return int(real_codes.size - np.bincount(real_codes).max()) if real_codes.size else 0

    minorities = {name: minority(name) for name in columns}
    pairs = []
    for a_index, a in enumerate(columns):
        for b in columns[a_index + 1:]:
            row: dict[str, Any] = {"columns": [a, b], "real_minority_rows": min(minorities[a], minorities[b])}
            if kinds[a] in _CONTINUOUS and kinds[b] in _CONTINUOUS:
                r_real = float(real_corr[position[a], position[b]])
                r_syn = float(syn_corr[position[a], position[b]])
                if a in constant_cols or b in constant_cols:
                    r_real = r_syn = float("nan")
                score = 1.0 - abs(r_real - r_syn) / 2.0 if math.isfinite(r_real) and math.isfinite(r_syn) else float("nan")
                counted = math.isfinite(score) and (real_correlation_threshold <= 0 or abs(r_real) > real_correlation_threshold)
                row.update(metric="CorrelationSimilarity", score=score,
                           real=r_real, synthetic=r_syn, real_association=None, counted=bool(counted),
                           association="pearson", association_real=r_real, association_synthetic=r_syn,
                           association_diff=abs(r_real - r_syn) if math.isfinite(score) else None)
            else:
                ra, sa, _ = codes[a]
                rb, sb, kb = codes[b]
                real_cells, real_counts = joint_counts(ra, rb, kb)
                syn_cells, syn_counts = joint_counts(sa, sb, kb)
                score = 1.0 - contingency_tv_distance(real_cells, real_counts, syn_cells, syn_counts)
                real_dense = without_sparse_levels(real_cells, real_counts, kb, MIN_LEVEL_ROWS)
                syn_dense = without_sparse_levels(syn_cells, syn_counts, kb, MIN_LEVEL_ROWS)
                # SDMetrics' own rule (min_rows_per_cell 0) reads the whole table; ours leaves the sparse levels out
                v_real = cramers_v(*(real_dense if min_rows_per_cell > 0 else (real_cells, real_counts)), kb,
                                   corrected=False)
                # the sparser of the two tables decides: a V from either one is only as good as its density
                shapes = {"real": contingency_shape(real_cells, real_counts, kb),
                          "synthetic": contingency_shape(syn_cells, syn_counts, kb)}
                table, (rows, levels_a, levels_b) = min(shapes.items(), key=lambda t: t[1][0] / (t[1][1] * t[1][2]))
                per_cell = rows / (levels_a * levels_b)
                # a sparse table's V is large by chance and its similarity low by chance: neither is a trend to score
                counted = per_cell >= min_rows_per_cell and (
                    real_association_threshold <= 0 or (math.isfinite(v_real) and v_real > real_association_threshold))
                row.update(rows_per_cell=per_cell, contingency={"table": table, "rows": rows,
                                                                 "levels": [levels_a, levels_b]})
                va = cramers_v(*real_dense, kb, corrected=True)
                vb = cramers_v(*syn_dense, kb, corrected=True)
                va, vb = (0.0 if not math.isfinite(va) else va), (0.0 if not math.isfinite(vb) else vb)
                row.update(metric="ContingencySimilarity", score=score, real=None, synthetic=None,
                           real_association=v_real, counted=bool(counted), association="cramers_v",
                           association_real=va, association_synthetic=vb, association_diff=abs(va - vb))
            pairs.append(row)
    counted_scores = [p["score"] for p in pairs if p["counted"] and math.isfinite(p["score"])]
    pair_trends = float(np.mean(counted_scores)) if counted_scores else None
    parts = [x for x in (column_shapes, pair_trends) if x is not None and math.isfinite(x)]
    return QualityScore(
        score=float(np.mean(parts)) if parts else float("nan"),
        column_shapes=column_shapes,
        column_pair_trends=pair_trends,
        columns=shape_rows,
        pairs=pairs,
        rows={"real": real_s.height, "synthetic": syn_s.height},
    )


# --------------------------------------------------------------------------- per-column extras


def _bin_counts(real: pl.Series, synthetic: pl.Series, continuous: bool) -> tuple[np.ndarray, np.ndarray]:
    """Counts of both columns over shared bins: 20 quantile bins of the real values, or the categories."""
    if continuous:
        a, b = _to_float(real), _to_float(synthetic)
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        if a.size == 0 or b.size == 0:
            return np.zeros(0), np.zeros(0)
        edges = np.unique(np.quantile(a, np.linspace(0.0, 1.0, _DIVERGENCE_BINS + 1)))[1:-1]
        k = edges.size + 1
        return (np.bincount(np.searchsorted(edges, a, side="right"), minlength=k).astype(np.float64),
                np.bincount(np.searchsorted(edges, b, side="right"), minlength=k).astype(np.float64))
    ra, sa, k = _discrete_codes(real, synthetic)
    ca, cb = np.bincount(ra, minlength=k)[1:], np.bincount(sa, minlength=k)[1:]  # missing values left out
    return ca.astype(np.float64), cb.astype(np.float64)


def _divergences(real: pl.Series, synthetic: pl.Series, continuous: bool) -> tuple[float | None, float | None]:
    """KL(real || synthetic) in nats (half a count added to every bin) and Jensen-Shannon divergence (base 2)."""
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import entropy

    ca, cb = _bin_counts(real, synthetic, continuous)
    if ca.size == 0 or ca.sum() == 0 or cb.sum() == 0:
        return None, None
    p = (ca + 0.5) / (ca.sum() + 0.5 * ca.size)
    q = (cb + 0.5) / (cb.sum() + 0.5 * cb.size)
    kl = float(entropy(p, q))
    js = float(jensenshannon(ca / ca.sum(), cb / cb.sum(), base=2) ** 2)
    return kl, js


def _ks_where(real: np.ndarray, synthetic: np.ndarray) -> tuple[float, float, float]:
    """Where the KS gap is largest: (real CDF level there, real median, synthetic median)."""
    level = ks_location(real, synthetic)[1]
    if math.isnan(level):
        return level, float("nan"), float("nan")
    return level, float(np.nanmedian(real)), float(np.nanmedian(synthetic))


def _category_gap(real: pl.Series, synthetic: pl.Series) -> tuple[str, float, float] | None:
    """The category whose share differs most: (value, real share, synthetic share)."""
    ra, sa, k = _discrete_codes(real, synthetic)
    ca, cb = np.bincount(ra, minlength=k)[1:], np.bincount(sa, minlength=k)[1:]
    if ca.sum() == 0 or cb.sum() == 0:
        return None
    pa, pb = ca / ca.sum(), cb / cb.sum()
    i = int(np.argmax(np.abs(pa - pb)))
    labels = pl.concat([_to_text(real), _to_text(synthetic)]).drop_nulls().unique().sort().to_list()
    return str(labels[i]), float(pa[i]), float(pb[i])


# --------------------------------------------------------------------------- models


def _feature_columns(schema: TableSchema, frames: list[pl.DataFrame], target: str | None) -> list[str]:
    ids = set(schema.with_role("id")) | ({schema.id_column} if schema.id_column else set())
    return [
        c.name for c in schema.columns
        if c.type in _MODELLED and c.name != target and c.name not in ids and all(c.name in f.columns for f in frames)
    ]


def _design(
    frames: list[pl.DataFrame], schema: TableSchema, features: list[str], vocabulary_from: list[pl.DataFrame]
) -> tuple[list[np.ndarray], list[int]]:
    """Numeric matrices of `frames`: continuous columns as floats, discrete ones as integer codes (NaN missing).

    Codes come from the values seen in `vocabulary_from` (the training books),
    so all matrices share them; a value seen in none becomes NaN.
    """
    categorical: list[int] = []
    blocks: list[list[np.ndarray]] = [[] for _ in frames]
    for j, name in enumerate(features):
        kind = schema[name].type
        numeric_bool = kind == ColumnType.BOOLEAN and all(
            f.schema[name] == pl.Boolean or f.schema[name].is_numeric() for f in frames)
        if kind in _CONTINUOUS or numeric_bool:
            for i, frame in enumerate(frames):
                blocks[i].append(_to_float(frame.get_column(name)))
            continue
        categorical.append(j)
        values = pl.concat([_to_text(f.get_column(name)) for f in vocabulary_from]).drop_nulls().unique().sort().to_list()
        mapping = {v: float(i) for i, v in enumerate(values)}
        for i, frame in enumerate(frames):
            text = _to_text(frame.get_column(name))
            coded = text.replace_strict(mapping, default=None, return_dtype=pl.Float64) if mapping else pl.Series([None] * text.len(), dtype=pl.Float64)
            blocks[i].append(coded.fill_null(np.nan).to_numpy())
    matrices = [np.column_stack(b) if b else np.zeros((f.height, 0)) for b, f in zip(blocks, frames)]
    return matrices, categorical


def _binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """AUC, Gini (2 AUC - 1), KS, Brier score (the PD model's own measures) and a 101-point ROC curve."""
    from sklearn.metrics import roc_curve

    from models.risk.evaluation import auc_score, ks_statistic

    auc = auc_score(y, p)
    fpr, tpr, _ = roc_curve(y, p)
    grid = np.linspace(0.0, 1.0, _ROC_POINTS)
    return {
        "auc": auc,
        "gini": 2.0 * auc - 1.0,
        "ks": ks_statistic(y, p),
        "brier": float(np.mean((p - y) ** 2)),
        "roc": {"fpr": grid.round(4).tolist(), "tpr": np.interp(grid, fpr, tpr).round(4).tolist()},
    }


def auc_ratio_interval(y: np.ndarray, p_synthetic: np.ndarray, p_real: np.ndarray,
                       z: float = 1.959963984540054) -> dict[str, Any]:
    """TSTR / TRTR AUC on one holdout with its two-sided interval: DeLong's paired covariance and the delta method.

    Both models score the same loans, so their AUCs are correlated (DeLong et
    al., 1988: the covariance of two AUCs is that of the loans' placement
    values, over the class sizes). The ratio R = A_s / A_r has, to first order,
    variance g' S g with g = (1 / A_r, -A_s / A_r^2) and S that covariance.

    Returns:
        ``{"ratio", "ratio_ci": [low, high], "auc_ci": {"tstr": [..], "trtr": [..]}, "ratio_se"}``;
        None figures when the ratio is undefined (a real AUC of 0, one class).
    """
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    m, n = int(y.sum()), int((~y).sum())
    empty = {"ratio": None, "ratio_ci": [None, None], "ratio_se": None,
             "auc_ci": {"tstr": [None, None], "trtr": [None, None]}}
    if m < 2 or n < 2:
        return empty
    placements_pos, placements_neg, aucs = [], [], []
    for p in (np.asarray(p_synthetic, np.float64), np.asarray(p_real, np.float64)):
        pos, neg = p[y], p[~y]
        ranks = rankdata(np.concatenate([pos, neg]))
        v10 = (ranks[:m] - rankdata(pos)) / n
        v01 = 1.0 - (ranks[m:] - rankdata(neg)) / m
        placements_pos.append(v10)
        placements_neg.append(v01)
        aucs.append(float(v10.mean()))
    covariance = np.cov(np.vstack(placements_pos)) / m + np.cov(np.vstack(placements_neg)) / n
    a_s, a_r = aucs
    if a_r <= 0:
        return empty
    gradient = np.array([1.0 / a_r, -a_s / a_r**2])
    se = math.sqrt(max(float(gradient @ covariance @ gradient), 0.0))
    ratio = a_s / a_r

    def interval(auc: float, variance: float) -> list[float]:
        half = z * math.sqrt(max(variance, 0.0))
        return [max(0.0, auc - half), min(1.0, auc + half)]

    return {"ratio": ratio, "ratio_ci": [ratio - z * se, ratio + z * se], "ratio_se": se,
            "auc_ci": {"tstr": interval(a_s, covariance[0, 0]), "trtr": interval(a_r, covariance[1, 1])}}


def _lightgbm(x: np.ndarray, y: np.ndarray, categorical: list[int], seed: int, num_threads: int):
    import lightgbm as lgb

    params = {**LIGHTGBM_PARAMS, "num_threads": num_threads, "seed": seed}
    data = lgb.Dataset(x, label=y.astype(np.float64), categorical_feature=categorical or "auto",
                       params={"verbose": -1}, free_raw_data=True)
    return lgb.train(params, data, num_boost_round=LIGHTGBM_ROUNDS)


def _two_classes(y: np.ndarray) -> bool:
    return y.size > 0 and 0 < int(y.sum()) < y.size


def _utility(
    train: pl.DataFrame, holdout: pl.DataFrame, synthetic: pl.DataFrame, schema: TableSchema, target: str,
    y_train: np.ndarray, y_hold: np.ndarray, y_syn: np.ndarray, seed: int, num_threads: int,
) -> dict[str, Any]:
    """TSTR vs TRTR with one fixed LightGBM set-up; status and reason when it cannot be evaluated."""
    features = _feature_columns(schema, [train, holdout, synthetic], target)
    base = {"features": features, "n_train_real": train.height, "n_train_synthetic": synthetic.height,
            "n_holdout": holdout.height, "holdout_default_rate": float(y_hold.mean()) if y_hold.size else None}
    if not features:
        return {**base, "status": "not_evaluable", "reason": "no modelled feature column is shared by the three books."}
    if not _two_classes(y_train):
        return {**base, "status": "not_evaluable",
                "reason": f"the real train split holds only one class ({int(y_train.sum())} of {y_train.size} defaulted); "
                          "no model can be trained on it."}
    (x_train, x_hold, x_syn), categorical = _design([train, holdout, synthetic], schema, features, [train, synthetic])
    trtr_model = _lightgbm(x_train, y_train, categorical, seed, num_threads)
    p_real = trtr_model.predict(x_hold)
    trtr = _binary_metrics(y_hold, p_real)
    note = None
    synthetic_gain = None
    if _two_classes(y_syn):
        tstr_model = _lightgbm(x_syn, y_syn, categorical, seed, num_threads)
        p_synthetic = tstr_model.predict(x_hold)
        tstr = _binary_metrics(y_hold, p_synthetic)
        synthetic_gain = tstr_model.feature_importance(importance_type="gain")
    else:
        # A book with one class teaches a constant: its ranking of real loans is no better than chance.
        p_synthetic = np.full(y_hold.size, float(y_syn.mean()) if y_syn.size else 0.0)
        tstr = {**_binary_metrics(y_hold, p_synthetic), "auc": 0.5, "gini": 0.0}
        note = (f"the synthetic book holds only one class ({int(y_syn.sum())} of {y_syn.size} defaulted), "
                "so its model predicts a constant (AUC 0.5).")
    paired = auc_ratio_interval(y_hold, p_synthetic, p_real)
    trtr["auc_ci"], tstr["auc_ci"] = paired["auc_ci"]["trtr"], paired["auc_ci"]["tstr"]
    gain = trtr_model.feature_importance(importance_type="gain")
    total = float(gain.sum()) or 1.0
    synthetic_total = (float(synthetic_gain.sum()) or 1.0) if synthetic_gain is not None else 1.0
    order = np.argsort(-gain)[: min(5, len(features))]
    return {
        **base, "status": "evaluated", "reason": note,
        "model": {"library": "lightgbm", "rounds": LIGHTGBM_ROUNDS, **{k: v for k, v in LIGHTGBM_PARAMS.items() if k != "verbose"},
                  "num_threads": num_threads, "seed": seed},
        "trtr": trtr, "tstr": tstr,
        "auc_ratio": tstr["auc"] / trtr["auc"] if trtr["auc"] > 0 else None,
        "auc_ratio_ci": paired["ratio_ci"],
        "holdout_defaults": int(y_hold.sum()),
        "gini_ratio": tstr["gini"] / trtr["gini"] if trtr["gini"] > 0 else None,
        "top_features": [{"column": features[i], "gain_share": float(gain[i] / total),
                          "synthetic_gain_share": (float(synthetic_gain[i] / synthetic_total)
                                                   if synthetic_gain is not None else None)} for i in order],
    }


def _scorecard(
    train: pl.DataFrame, holdout: pl.DataFrame | None, synthetic: pl.DataFrame, schema: TableSchema, target: str,
    y_train: np.ndarray, y_hold: np.ndarray | None, y_syn: np.ndarray | None, seed: int,
) -> dict[str, Any]:
    """A logistic scorecard fitted once on the real train split, applied unchanged to the holdout and the synthetic book."""
    frames = [train, synthetic] + ([holdout] if holdout is not None else [])
    features = _feature_columns(schema, frames, target)
    if not features:
        return {"status": "not_evaluable", "reason": "no feature column is shared by the books."}
    if not _two_classes(y_train):
        return {"status": "not_evaluable", "reason": "the real train split holds only one class."}
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from models.risk.evaluation import auc_score
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    matrices, categorical = _design(frames, schema, features, [train])
    x_train = matrices[0]
    usable = [j for j in range(len(features)) if not np.isnan(x_train[:, j]).all()]
    numeric = [j for j in usable if j not in categorical]
    cats = [j for j in usable if j in categorical]
    steps = []
    if numeric:
        steps.append(("numeric", make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler()), numeric))
    if cats:
        steps.append(("categorical", make_pipeline(SimpleImputer(strategy="constant", fill_value=-1.0),
                                                   OneHotEncoder(handle_unknown="ignore", max_categories=20)), cats))
    model = make_pipeline(ColumnTransformer(steps), LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence and unknown-category notices concern no caller
        model.fit(x_train, y_train)

        def gini(x: np.ndarray, y: np.ndarray | None) -> tuple[float | None, str | None]:
            if y is None:
                return None, "no target values."
            if not _two_classes(y):
                return None, f"only one class ({int(y.sum())} of {y.size} defaulted)."
            return 2.0 * auc_score(y, model.predict_proba(x)[:, 1]) - 1.0, None

        g_train, _ = gini(x_train, y_train)
        g_syn, why_syn = gini(matrices[1], y_syn)
        g_hold, why_hold = gini(matrices[2], y_hold) if holdout is not None else (None, "no real holdout.")
    return {
        "status": "evaluated",
        "model": "logistic regression (median-imputed, standardised numerics; one-hot categories, 20 at most)",
        "features": [features[j] for j in usable],
        "gini_real_train": g_train, "gini_real_holdout": g_hold, "gini_synthetic": g_syn,
        "gini_ratio": g_syn / g_hold if g_syn is not None and g_hold not in (None, 0.0) else None,
        "reason": "; ".join(f"{book}: {why}" for book, why in (("holdout", why_hold), ("synthetic", why_syn)) if why) or None,
    }


# --------------------------------------------------------------------------- credit metrics


def _mutual_information(codes: np.ndarray, y: np.ndarray, k: int) -> float:
    counts = np.bincount(codes * 2 + y.astype(np.int64), minlength=2 * k).reshape(k, 2).astype(np.float64)
    n = counts.sum()
    if n == 0:
        return 0.0
    joint = counts / n
    px, py = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = joint * np.log(joint / (px * py))
    return float(np.nansum(terms))


def _segment_columns(real: pl.DataFrame, schema: TableSchema, y: np.ndarray | None, target: str | None) -> list[str]:
    """grade and product when present (by name), completed with the categoricals most informative of default."""
    candidates = [c.name for c in schema.columns
                  if c.type == ColumnType.CATEGORICAL and c.name != target and c.name in real.columns
                  and "id" not in c.roles and 1 < real.get_column(c.name).n_unique() <= 50]
    found = resolve_aliases(candidates, SEGMENT_ALIASES)
    chosen = [found[k] for k in SEGMENT_ALIASES if k in found]
    if len(chosen) < 2 and y is not None:
        scored = []
        for name in candidates:
            if name in chosen:
                continue
            codes, _, k = _discrete_codes(real.get_column(name), real.get_column(name).head(0))
            scored.append((-_mutual_information(codes, y, k), name))
        chosen += [name for _, name in sorted(scored)[: 2 - len(chosen)]]
    return chosen


def _segment_table(name: str, real: pl.DataFrame, synthetic: pl.DataFrame, y_real: np.ndarray, y_syn: np.ndarray | None) -> dict[str, Any]:
    def rates(frame: pl.DataFrame, y: np.ndarray | None) -> dict[str, tuple[int, float | None]]:
        text = _to_text(frame.get_column(name)).fill_null("(missing)")
        table = pl.DataFrame({"v": text, "y": y.astype(np.float64) if y is not None else np.full(text.len(), np.nan)})
        grouped = table.group_by("v").agg(pl.len().alias("n"), pl.col("y").mean().alias("rate"))
        return {r["v"]: (int(r["n"]), r["rate"] if y is not None else None) for r in grouped.iter_rows(named=True)}

    real_rates, syn_rates = rates(real, y_real), (rates(synthetic, y_syn) if name in synthetic.columns else {})
    levels = sorted(real_rates, key=lambda v: -real_rates[v][0])[:_MAX_SEGMENT_LEVELS]
    rows = []
    for value in sorted(levels):
        n_r, rate_r = real_rates[value]
        n_s, rate_s = syn_rates.get(value, (0, None))
        rows.append({"value": value, "real_n": n_r, "real_rate": rate_r, "synthetic_n": n_s, "synthetic_rate": rate_s})
    return {"column": name, "levels_shown": len(rows), "levels_total": len(real_rates), "rows": rows}


def _distribution_summary(series: pl.Series) -> dict[str, Any]:
    values = _to_float(series)
    present = values[~np.isnan(values)]
    out: dict[str, Any] = {"missing": float(np.isnan(values).mean()) if values.size else None}
    if present.size == 0:
        return {**out, "mean": None, **{f"p{q}": None for q in (5, 25, 50, 75, 95)}}
    out["mean"] = float(present.mean())
    for q in (5, 25, 50, 75, 95):
        out[f"p{q}"] = float(np.quantile(present, q / 100))
    return out


def _credit_metrics(
    real: pl.DataFrame, holdout: pl.DataFrame | None, synthetic: pl.DataFrame, schema: TableSchema,
    target: str | None, y_real: np.ndarray | None, y_hold: np.ndarray | None, y_syn: np.ndarray | None,
) -> dict[str, Any]:
    continuous = [c.name for c in schema.columns if c.type in (ColumnType.NUMERIC, ColumnType.INTEGER) and c.name in real.columns]
    found = resolve_aliases(continuous, CREDIT_ALIASES)
    distributions = []
    for key in CREDIT_ALIASES:
        name = found.get(key)
        if name is None:
            continue
        distributions.append({
            "metric": key, "column": name, "real": _distribution_summary(real.get_column(name)),
            "synthetic": _distribution_summary(synthetic.get_column(name)) if name in synthetic.columns else None,
        })
    out: dict[str, Any] = {"target": target, "distributions": distributions}
    if target is None or y_real is None:
        out.update(default_rate=None, segments=[], reason="no target declared: default rates by segment are not computed.")
        return out
    rate_real = float(y_real.mean())
    rate_syn = float(y_syn.mean()) if y_syn is not None and y_syn.size else None
    relative = abs(rate_syn - rate_real) / rate_real if rate_syn is not None and rate_real > 0 else (
        None if rate_syn is None else (0.0 if rate_syn == 0 else math.inf))
    out["default_rate"] = {
        "real_train": rate_real, "real_holdout": float(y_hold.mean()) if y_hold is not None and y_hold.size else None,
        "synthetic": rate_syn, "relative_diff": relative,
    }
    out["segments"] = [
        _segment_table(name, real, synthetic, y_real, y_syn) for name in _segment_columns(real, schema, y_real, target)
    ]
    out["reason"] = None if y_syn is not None else f"the synthetic book has no column '{target}'."
    return out


# --------------------------------------------------------------------------- sequences


def _sample_loans(history: pl.DataFrame, loans: int, seed: int) -> pl.DataFrame:
    """All months of at most `loans` loans (seeded), so a history of millions of rows is measured in seconds."""
    if "loan_id" not in history.columns:
        return history
    ids = history.get_column("loan_id").unique().sort()
    if ids.len() <= loans:
        return history
    return history.filter(pl.col("loan_id").is_in(ids.sample(loans, seed=seed).implode()))


def _sequences(
    real_history: pl.DataFrame | None, synthetic_history: pl.DataFrame | None,
    real_loans: pl.DataFrame, synthetic: pl.DataFrame, schema: TableSchema, thresholds: ValidationThresholds,
) -> tuple[dict[str, Any], Any]:
    if real_history is None or synthetic_history is None:
        missing = [n for n, h in (("real", real_history), ("synthetic", synthetic_history)) if h is None]
        return {"status": "absent", "reason": f"no {' and '.join(missing)} performance history given."}, None
    from models.errors import CreditTwinError
    from models.sequences.histories import ORIGINATION, STATES, compare_sequences, dated_loans

    id_column = schema.id_column or "loan_id"
    real_history = _sample_loans(real_history, thresholds.sample_rows, 11)
    synthetic_history = _sample_loans(synthetic_history, thresholds.sample_rows, 12)
    vintage_ready = all(id_column in f.columns and ORIGINATION in dated_loans(f).columns for f in (real_loans, synthetic))
    try:
        result = compare_sequences(
            real_history, synthetic_history,
            real_loans if vintage_ready else None, synthetic if vintage_ready else None,
            cdr_threshold=thresholds.sequence_cdr_threshold, row_threshold=thresholds.sequence_row_threshold,
            id_column=id_column, noise_allowance=thresholds.noise_allowance,
        )
    except CreditTwinError as exc:
        return {"status": "not_evaluable", "reason": str(exc)}, None
    per_state = result.transition_distance["per_state"]
    # per_state is the mean |difference| over the 7 destinations: 3.5 times that is the row's total variation.
    row_tv = [min(1.0, per_state[s] * len(STATES) / 2.0) for s in result.judged_states]
    parts = [1.0 - float(np.mean(row_tv))] if row_tv else []
    cdr_gap = result.cdr12_relative_diff
    parts.append(1.0 - min(1.0, cdr_gap) if math.isfinite(cdr_gap) else 0.0)
    data = result.to_dict()
    data.update(status="evaluated", reason=None, similarity=float(np.mean(parts)),
                vintage_curves=result.real_vintage_curve is not None)
    return data, result


# --------------------------------------------------------------------------- charts


def _panel(name: str, kind: ColumnType, real: pl.Series, synthetic: pl.Series) -> dict[str, Any] | None:
    few_levels = kind == ColumnType.INTEGER and real.n_unique() <= 12
    if kind in _DISCRETE or few_levels:
        r, s = _to_text(real).drop_nulls(), _to_text(synthetic).drop_nulls()
        if r.len() == 0:
            return None
        counts = r.value_counts(sort=True).head(10)
        labels = counts.get_column(counts.columns[0]).to_list()
        numeric = all(_is_number(v) for v in labels)
        labels = sorted(labels, key=float) if numeric else sorted(labels)
        share = lambda x, v: float((x == v).sum()) / max(x.len(), 1)  # noqa: E731
        shown = [v[:-2] if numeric and v.endswith(".0") else v for v in labels]
        return {"name": name, "kind": "categorical", "labels": shown,
                "real": [share(r, v) for v in labels], "synthetic": [share(s, v) for v in labels]}
    a, b = _to_float(real), _to_float(synthetic)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if a.size == 0:
        return None
    if kind == ColumnType.DATETIME:  # days since 1970 read as calendar years
        a, b = 1970.0 + a / 365.25, 1970.0 + b / 365.25
    low, high = np.quantile(a, [0.005, 0.995])
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, 31)
    hist = lambda x: (np.histogram(np.clip(x, low, high), bins=edges)[0] / max(x.size, 1)).tolist()  # noqa: E731
    return {"name": name + (" (year)" if kind == ColumnType.DATETIME else ""), "kind": "numeric",
            "edges": edges.tolist(), "real": hist(a), "synthetic": hist(b)}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _charts(
    real: pl.DataFrame, synthetic: pl.DataFrame, schema: TableSchema, target: str | None, main: list[str],
    fidelity, utility: dict[str, Any], sequences: Any,
) -> dict[str, bytes]:
    from models.reports.plots import correlation_pair_png, default_curves_png, distribution_overlays_png, roc_curves_png

    charts: dict[str, bytes] = {}
    panels = []
    for name in main:
        if name in real.columns and name in synthetic.columns:
            panel = _panel(name, schema[name].type, real.get_column(name), synthetic.get_column(name))
            if panel is not None:
                panels.append(panel)
    if panels:
        charts["distributions"] = distribution_overlays_png(panels, "Real vs synthetic: main columns")
    if len(fidelity.correlation_columns) >= 2:
        charts["correlations"] = correlation_pair_png(
            fidelity.real_correlation, fidelity.synthetic_correlation, fidelity.correlation_columns,
            "Rank correlations (Spearman)")
    if utility.get("status") == "evaluated":
        charts["roc_curves"] = roc_curves_png(
            {"train real, test real (TRTR)": {**utility["trtr"]["roc"], "auc": utility["trtr"]["auc"]},
             "train synthetic, test real (TSTR)": {**utility["tstr"]["roc"], "auc": utility["tstr"]["auc"]}},
            "ROC on the real holdout")
    if sequences is not None:
        if sequences.real_vintage_curve is not None:
            real_rows, syn_rows = sequences.real_vintage_curve.to_dicts(), sequences.synthetic_vintage_curve.to_dicts()
            title = "Cumulative default rate by vintage"
        else:
            real_rows, syn_rows = sequences.real_default_curve.to_dicts(), sequences.synthetic_default_curve.to_dicts()
            title = "Cumulative default rate"
        charts["vintage_curves"] = default_curves_png(real_rows, syn_rows, title)
    return charts


# --------------------------------------------------------------------------- the report


def _indicator(frame: pl.DataFrame | None, target: str, positive: list[Any]) -> np.ndarray | None:
    from models.tape.vocabulary import target_indicator

    if frame is None or target not in frame.columns:
        return None
    return target_indicator(frame.get_column(target), positive).to_numpy().astype(np.int64)


def build_validation_report(
    real_train: pl.DataFrame,
    real_holdout: pl.DataFrame | None,
    synthetic: pl.DataFrame,
    schema: TableSchema,
    *,
    target: str | None = None,
    positive: list[Any] | None = None,
    real_history: pl.DataFrame | None = None,
    synthetic_history: pl.DataFrame | None = None,
    thresholds: ValidationThresholds | dict[str, Any] | None = None,
    seed: int = 0,
    tenant: str | None = None,
    num_threads: int = 1,
    sdmetrics: bool | None = None,
    charts: bool = True,
) -> ValidationReport:
    """Measure a synthetic book against the real one and decide pass/fail.

    Args:
        real_train: the real train split (what the twin was fitted on), typed.
        real_holdout: the real holdout (never seen by the twin), or None.
        synthetic: the synthetic book, typed (`models.quality.release_frame.expand_release`
            turns a k-anonymized release back into typed values).
        schema: the real tape's schema.
        target: the default flag column, or None when the tenant declared none
            (then utility and the scorecard say why they are absent).
        positive: the raw values of `target` meaning "defaulted"; default
            `schema.target_positive` when `target` is the schema's target, else
            1 / true. A boolean column is read as its truth value.
        real_history, synthetic_history: monthly performance tables
            (`models.sequences.histories` canonical columns); both are needed for the
            sequence section.
        thresholds: a `ValidationThresholds` (or its dict); None gives the defaults.
        seed: seed of every sampling and model.
        tenant: named in errors and on the PDF.
        num_threads: LightGBM threads (1 by default: OpenMP threads competing with
            other assets on a small machine slow training down many times).
        sdmetrics: compute SDMetrics' own quality score beside ours (on the
            sampled tables); None does when SDMetrics is importable.
        charts: render the PNG charts (False saves about a second).

    Returns:
        A `ValidationReport`.

    Raises:
        InvalidDataError: an empty real train split or synthetic book, or a
            `target` the real train split does not have.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    th = thresholds if isinstance(thresholds, ValidationThresholds) else ValidationThresholds.model_validate(thresholds or {})
    if real_train.height == 0:
        raise InvalidDataError("the real train split is empty.", tenant=tenant,
                               fix="validate against the train split the twin was fitted on.")
    if synthetic.height == 0:
        raise InvalidDataError("the synthetic book is empty.", tenant=tenant,
                               fix="sample at least one synthetic row (synthetic_rows in tenant.yaml).")
    if target is not None and target not in real_train.columns:
        raise InvalidDataError(
            f"the target column '{target}' is not in the real train split.", tenant=tenant, column=target,
            fix="declare the default flag under target.column in tenant.yaml, or validate without a target.")
    schema = TableSchema(
        columns=[c for c in schema.columns if c.name in real_train.columns],
        id_column=schema.id_column, target=schema.target, target_positive=list(schema.target_positive),
    )
    if real_holdout is not None and real_holdout.height == 0:
        real_holdout = None
    modelled = [c.name for c in schema.columns if c.type in _MODELLED]
    real_train, real_holdout, synthetic = _harmonise([real_train, real_holdout, synthetic], schema, modelled)

    # ---- fidelity per column, with sampling-noise allowance
    n_real, n_syn = real_train.height, synthetic.height
    if th.noise_allowance:
        noise = sample_size_thresholds(n_real, n_syn, ks=th.max_column_ks, tv=th.max_column_tv, corr=th.max_correlation_diff)
    else:
        noise = {"ks_threshold": th.max_column_ks, "tv_threshold": th.max_column_tv, "corr_threshold": th.max_correlation_diff}
    ks_limit, tv_limit = min(1.0, noise["ks_threshold"]), min(1.0, noise["tv_threshold"])
    corr_limit = min(1.0, noise["corr_threshold"])
    fidelity = compare_tables(real_train, synthetic, schema, ks_threshold=ks_limit, tv_threshold=tv_limit,
                              corr_threshold=corr_limit, missing_threshold=th.max_missing_diff,
                              noise_allowance=th.noise_allowance)
    column_rows = []
    for col in fidelity.columns:
        continuous = schema[col.name].type in _CONTINUOUS
        kl, js = _divergences(real_train.get_column(col.name), synthetic.get_column(col.name), continuous)
        # with the noise allowance, widened by sampling noise: the shape by the rows where the column is present
        limit, missing_limit = col.limit, col.missing_limit
        column_rows.append({
            "column": col.name, "type": col.type, "metric": col.metric, "statistic": col.statistic,
            "similarity": col.similarity, "limit": limit, "kl": kl, "js": js,
            "missing_real": col.missing_real, "missing_synthetic": col.missing_synthetic,
            "missing_diff": col.missing_diff, "missing_limit": missing_limit,
            "passed_shape": col.statistic <= limit, "passed_missing": col.missing_diff <= missing_limit,
            "passed": col.statistic <= limit and col.missing_diff <= missing_limit,
        })
    fidelity_dict = {
        "columns": column_rows,
        "missing_columns": list(fidelity.missing_columns),
        "correlation_columns": list(fidelity.correlation_columns),
        "real_correlation": fidelity.real_correlation,
        "synthetic_correlation": fidelity.synthetic_correlation,
        "correlation_diff": fidelity.correlation_diff,
        "correlation_max_diff": fidelity.correlation_max_diff,
    }
    timings["fidelity"] = time.perf_counter() - started

    # ---- quality (ours, and SDMetrics' own when importable)
    t0 = time.perf_counter()
    quality = quality_score(real_train, synthetic, schema, sample_rows=th.sample_rows, seed=seed)
    sd_score: float | None = None
    sd_note = None
    want_sd = sdmetrics
    if want_sd is None:
        import importlib.util

        want_sd = importlib.util.find_spec("sdmetrics") is not None
    if want_sd:
        try:
            sd_score = sdmetrics_quality(_sample(real_train, th.sample_rows, seed), _sample(synthetic, th.sample_rows, seed + 1), schema)
        except InvalidDataError as exc:
            sd_note = exc.reason
    else:
        sd_note = "SDMetrics is not installed (it is an optional test dependency); our implementation of its formula is used."
    quality_dict = {**quality.to_dict(), "sdmetrics_quality": sd_score, "sdmetrics_note": sd_note}
    quality_dict.pop("pairs")
    pair_rows = quality.to_dict()["pairs"]
    pair_n = min(quality.rows["real"], quality.rows["synthetic"])
    pair_limit = max(th.max_pair_association_diff, 2.0 / math.sqrt(max(pair_n, 1))) if th.noise_allowance else th.max_pair_association_diff
    for row in pair_rows:
        diff = row.get("association_diff")
        row["limit"] = pair_limit
        row["passed"] = None if diff is None else bool(diff <= pair_limit)
        support = row.get("real_minority_rows")
        if row["passed"] is not None and support is not None and support < MIN_PAIR_MINORITY_ROWS:
            # two 0/1 columns of 10,000 loans that agree on their one 1 have a Cramer's V of 1: one loan, not a trend
            row["passed"] = None
            row["not_judged"] = (f"a column of the pair holds a value other than its most common one in {support} real "
                                 f"rows (fewer than {MIN_PAIR_MINORITY_ROWS}): its association rests on them")
        per_cell = row.get("rows_per_cell")
        if row["passed"] is not None and per_cell is not None and per_cell < MIN_PAIR_ROWS_PER_CELL:
            shape = row["contingency"]
            levels_a, levels_b = shape["levels"]
            row["passed"] = None
            row["not_judged"] = (f"its contingency table is too sparse to measure an association: {shape['rows']} "
                                 f"{shape['table']} rows over {levels_a} x {levels_b} levels, {per_cell:.1f} rows per "
                                 f"cell (fewer than {MIN_PAIR_ROWS_PER_CELL:g}), where Cramer's V, even bias-corrected, "
                                 "is large by chance; it is not counted in the quality score either")
    timings["quality"] = time.perf_counter() - t0

    # ---- target, credit metrics, utility
    t0 = time.perf_counter()
    if positive is None:
        positive = list(schema.target_positive) if target is not None and target == schema.target and schema.target_positive else [1, True]
    y_real = _indicator(real_train, target, positive) if target else None
    y_hold = _indicator(real_holdout, target, positive) if target else None
    y_syn = _indicator(synthetic, target, positive) if target else None
    credit = _credit_metrics(real_train, real_holdout, synthetic, schema, target, y_real, y_hold, y_syn)
    if target is None:
        reason = "no target declared: the risk model, utility (TSTR vs TRTR) and scorecard are skipped. Declare target.column in tenant.yaml to get them."
        utility: dict[str, Any] = {"status": "absent", "reason": reason}
        credit["scorecard"] = {"status": "absent", "reason": reason}
    else:
        real_s = _sample(real_train, th.sample_rows, seed + 2)
        syn_s = _sample(synthetic, th.sample_rows, seed + 3)
        hold_s = _sample(real_holdout, th.sample_rows, seed + 4) if real_holdout is not None else None
        ys_real = _indicator(real_s, target, positive)
        ys_syn = _indicator(syn_s, target, positive)
        ys_hold = _indicator(hold_s, target, positive)
        if hold_s is None:
            utility = {"status": "not_evaluable", "reason": "no real holdout rows: TSTR vs TRTR needs loans the twin never saw."}
        elif ys_syn is None:
            utility = {"status": "not_evaluable", "reason": f"the synthetic book has no column '{target}' to train on."}
        elif not _two_classes(ys_hold):
            defaulted = int(ys_hold.sum())
            utility = {"status": "not_evaluable",
                       "reason": f"the real holdout holds only one class ({defaulted} of {ys_hold.size} loans defaulted); "
                                 "AUC, Gini and KS need both defaulted and non-defaulted loans. Use a larger holdout_share "
                                 "or a longer history."}
        else:
            utility = _utility(real_s, hold_s, syn_s, schema, target, ys_real, ys_hold, ys_syn, seed, num_threads)
        credit["scorecard"] = _scorecard(real_s, hold_s, syn_s, schema, target, ys_real, ys_hold, ys_syn, seed)
    timings["credit_and_utility"] = time.perf_counter() - t0

    # ---- sequences
    t0 = time.perf_counter()
    real_loans = pl.concat([real_train, real_holdout], how="diagonal_relaxed") if real_holdout is not None else real_train
    sequences, seq_result = _sequences(real_history, synthetic_history, real_loans, synthetic, schema, th)
    timings["sequences"] = time.perf_counter() - t0

    # ---- checks, failures, recommendations
    checks, failures, advice = _judge(
        th, schema, target, real_train, synthetic, fidelity, column_rows, quality, pair_rows,
        {"ks": ks_limit, "tv": tv_limit, "corr": corr_limit, "pair": pair_limit}, credit, utility, sequences,
    )
    q = quality.score
    ratio = utility.get("auc_ratio") if utility.get("status") == "evaluated" else None
    default_rate = credit.get("default_rate") or {}

    # ---- overall score
    components: dict[str, float | None] = {
        "quality": q if math.isfinite(q) else None,
        "utility": min(1.0, ratio) if ratio is not None else None,
        "sequences": sequences.get("similarity") if sequences.get("status") == "evaluated" else None,
    }
    weights = {"quality": QUALITY_WEIGHT, "utility": UTILITY_WEIGHT, "sequences": SEQUENCE_WEIGHT}
    names = {"quality": "quality", "utility": "min(1, TSTR/TRTR AUC ratio)", "sequences": "sequence similarity"}
    present = [k for k, v in components.items() if v is not None]
    total = sum(weights[k] for k in present)
    score = sum(weights[k] * components[k] for k in present) / total if total else float("nan")
    formula = (
        "score = (" + " + ".join(f"{weights[k]:.2f} x {names[k]}" for k in present) + f") / {total:.2f}"
        + "; quality = mean(Column Shapes, Column Pair Trends) as in SDMetrics' QualityReport"
        + ("; sequence similarity = mean(1 - total variation of each judged transition row, "
           "1 - min(1, relative 12-month cumulative default rate gap))" if "sequences" in present else "")
        + (f"; left out: {', '.join(names[k] for k in weights if k not in present)} (not available)"
           if len(present) < len(weights) else "")
    )
    if not failures and not any(c.verdict == "warn" for c in checks):
        advice.insert(0, "every threshold is met; no change is needed.")
    elif not failures:
        advice.insert(0, "no threshold is missed; the warnings below could not be settled at this size.")

    main = _main_columns(schema, target, credit, column_rows)
    report = ValidationReport(
        tenant=tenant,
        rows={"real_train": n_real, "real_holdout": real_holdout.height if real_holdout is not None else 0, "synthetic": n_syn},
        sampling={"sample_rows": th.sample_rows, "pairs_rows": quality.rows,
                  "models_rows": {"real_train": min(n_real, th.sample_rows), "synthetic": min(n_syn, th.sample_rows),
                                  "real_holdout": min(real_holdout.height, th.sample_rows) if real_holdout is not None else 0},
                  "seed": seed},
        thresholds=th.model_dump(mode="json"),
        effective_thresholds={"column_ks": ks_limit, "column_tv": tv_limit, "correlation_diff": corr_limit,
                              "pair_association_diff": pair_limit, "default_rate_diff": default_rate.get("limit")},
        fidelity=fidelity_dict, quality=quality_dict, pairs=pair_rows, credit=credit, utility=utility, sequences=sequences,
        checks=checks, recommendations=advice, score=float(score), score_formula=formula, components=components,
        failure_lines=failures,
    )
    if charts:
        t0 = time.perf_counter()
        report.charts = _charts(real_train, synthetic, schema, target, main, fidelity, utility, seq_result)
        timings["charts"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - started
    report.timings = timings
    return report


def _judge(
    th: ValidationThresholds, schema: TableSchema, target: str | None, real_train: pl.DataFrame, synthetic: pl.DataFrame,
    fidelity: Any, column_rows: list[dict[str, Any]], quality: QualityScore, pair_rows: list[dict[str, Any]],
    limits: dict[str, float], credit: dict[str, Any], utility: dict[str, Any], sequences: dict[str, Any],
) -> tuple[list[Check], list[str], list[str]]:
    """The pass/fail checks, one failure line per failed check, column or pair, and a recommendation for each."""
    ks_limit, tv_limit, corr_limit, pair_limit = limits["ks"], limits["tv"], limits["corr"], limits["pair"]
    n_real, n_syn = real_train.height, synthetic.height
    checks: list[Check] = []
    failures: list[str] = []
    advice: list[str] = []
    q = quality.score
    qis = set(schema.with_role("quasi_identifier"))
    checks.append(Check("quality", "quality score (SDMetrics formula)", q, th.min_quality, ">=", bool(q >= th.min_quality)))
    if not q >= th.min_quality:
        weaker = "column pair trends" if (quality.column_pair_trends or 1.0) < quality.column_shapes else "column shapes"
        failures.append(f"quality score {q:.3f} < {th.min_quality:.2f} (column shapes {_fmt_num(quality.column_shapes)}, "
                        f"column pair trends {_fmt_num(quality.column_pair_trends)})")
        advice.append(f"quality {q:.3f} < {th.min_quality:.2f}: the weaker part is {weaker} "
                      f"({_lowest_scores(quality, weaker)}); those columns and pairs are discussed below.")

    ratio = utility.get("auc_ratio") if utility.get("status") == "evaluated" else None
    checks.append(_utility_check(utility, th.min_utility_ratio))
    verdict = checks[-1].verdict
    low, high = utility.get("auc_ratio_ci") or [None, None]
    if verdict == "warn" and (low is None or high is None):
        advice.append(f"utility ratio {ratio:.3f} not judged: the real holdout holds {utility.get('holdout_defaults')} "
                      f"defaults in {utility.get('n_holdout')} loans, too few to rank (at least 2 of each class); a "
                      "larger holdout_share, or a default flag that counts more outcomes as positive, would let it judge.")
    elif verdict in ("fail", "warn"):
        figures = (f"utility ratio {ratio:.3f} (95% interval {low:.3f} to {high:.3f}; AUC {utility['tstr']['auc']:.3f} "
                   f"trained on synthetic vs {utility['trtr']['auc']:.3f} trained on real)")
        drivers = _driver_findings(utility, column_rows, pair_rows, target, qis)
        if verdict == "fail":
            failures.append(f"{figures}: the whole interval is below {th.min_utility_ratio:.2f}")
            advice.append(f"{figures}, below {th.min_utility_ratio:.2f} beyond the holdout's noise: a model trained on "
                          f"the synthetic book ranks real borrowers worse than one trained on real loans. {drivers}")
        else:
            advice.append(f"{figures}: the holdout ({utility.get('holdout_defaults')} defaults in "
                          f"{utility.get('n_holdout')} loans) cannot tell this ratio from {th.min_utility_ratio:.2f} "
                          "(a warning, not a failure); more holdout loans (a larger holdout_share or a longer history) "
                          f"would settle it. {drivers}")
    elif utility.get("status") == "not_evaluable":
        advice.append(f"utility not evaluable: {utility['reason']}")

    shape_fail = [r for r in column_rows if not r["passed_shape"]]
    worst_ks = max((r["statistic"] for r in column_rows if r["metric"] == "ks"), default=None)
    worst_tv = max((r["statistic"] for r in column_rows if r["metric"] == "tv"), default=None)
    checks.append(Check("column_ks", "largest KS statistic of a numeric column", worst_ks, ks_limit, "<=",
                        None if worst_ks is None else bool(worst_ks <= ks_limit)))
    checks.append(Check("column_tv", "largest total variation of a categorical column", worst_tv, tv_limit, "<=",
                        None if worst_tv is None else bool(worst_tv <= tv_limit)))
    for r in sorted(shape_fail, key=lambda r: -r["statistic"]):
        name = r["column"]
        failures.append(f"{name}: {r['metric'].upper()} {r['statistic']:.3f} > {r['limit']:.3f}")
        if r["metric"] == "ks":
            level, med_r, med_s = _ks_where(_to_float(real_train.get_column(name)), _to_float(synthetic.get_column(name)))
            where = ("its tails are off" if level < 0.1 or level > 0.9
                     else f"its centre is shifted (median {_fmt_num(med_r)} real vs {_fmt_num(med_s)} synthetic)")
            if name in qis:
                remedy = (f"{name} is a quasi-identifier, released as ranges and drawn back uniformly inside each "
                          "range for this comparison, which flattens its distribution within the ranges; a smaller "
                          "privacy.k or fewer quasi_identifiers in tenant.yaml keep more of its shape.")
            else:
                remedy = "try more synthetic rows, a finer marginal for this column, or raise the segmentation."
            advice.append(f"{name}: KS {r['statistic']:.2f} > {r['limit']:.2f} - {where}; {remedy}")
        else:
            gap = _category_gap(real_train.get_column(name), synthetic.get_column(name))
            detail = f" - '{gap[0]}' is {gap[1]:.1%} of real rows but {gap[2]:.1%} of synthetic ones" if gap else ""
            advice.append(f"{name}: total variation {r['statistic']:.2f} > {r['limit']:.2f}{detail}; check that the anonymizer "
                          "did not merge its categories and that the twin models it per segment.")
    missing_fail = [r for r in column_rows if not r["passed_missing"]]
    worst_missing = max((r["missing_diff"] for r in column_rows), default=None)
    checks.append(Check("missing_rates", "largest missing-rate gap of a column", worst_missing, th.max_missing_diff, "<=",
                        None if worst_missing is None else not missing_fail,
                        "limits widened per column for sampling noise" if th.noise_allowance else ""))
    for r in missing_fail:
        failures.append(f"{r['column']}: missing rate {r['missing_real']:.3f} real vs {r['missing_synthetic']:.3f} synthetic "
                        f"(gap {r['missing_diff']:.3f} > {r['missing_limit']:.3f})")
        advice.append(f"{r['column']}: missing rate {r['missing_real']:.1%} real vs {r['missing_synthetic']:.1%} synthetic - "
                      "the twin does not reproduce its missingness; keep the column nullable and model its null share.")
    for name in fidelity.missing_columns:
        failures.append(f"{name}: missing from the synthetic book")
        advice.append(f"{name}: the synthetic book lacks this column; check the twin's column list and the release step.")
    if fidelity.missing_columns:
        checks.append(Check("columns_present", "modelled columns missing from the synthetic book",
                            float(len(fidelity.missing_columns)), 0.0, "<=", False, ", ".join(fidelity.missing_columns)))

    corr_ok = fidelity.correlation_diff <= corr_limit
    checks.append(Check("correlation_diff", "mean |rank-correlation difference|", fidelity.correlation_diff, corr_limit, "<=",
                        bool(corr_ok) if fidelity.correlation_columns else None))
    if not corr_ok:
        failures.append(f"mean correlation difference {fidelity.correlation_diff:.3f} > {corr_limit:.3f}")
        advice.append(f"correlations: mean difference {fidelity.correlation_diff:.3f} > {corr_limit:.3f}; the largest "
                      f"gaps are {_largest_correlation_gaps(fidelity)} (see the heatmaps).")
    judged_pairs = [p for p in pair_rows if p["passed"] is not None]
    failed_pairs = sorted((p for p in judged_pairs if not p["passed"]), key=lambda p: -p["association_diff"])
    worst_pair = max((p["association_diff"] for p in judged_pairs), default=None)
    unjudged = sum(1 for p in pair_rows if p.get("not_judged"))
    pair_detail = "; ".join(part for part in (
        f"{len(failed_pairs)} of {len(judged_pairs)} pairs fail" if judged_pairs else "",
        f"{unjudged} pairs shown but not judged: too few rows to measure their association (each pair says why)"
        if unjudged else "") if part)
    checks.append(Check("pair_association", "largest association gap of a column pair", worst_pair, pair_limit, "<=",
                        None if worst_pair is None else not failed_pairs, pair_detail))
    for p in failed_pairs:
        a, b = p["columns"]
        what = "correlation" if p["association"] == "pearson" else "Cramer's V"
        failures.append(f"{a} x {b}: {what} {p['association_real']:.3f} real vs {p['association_synthetic']:.3f} synthetic "
                        f"(gap {p['association_diff']:.3f} > {pair_limit:.3f})")
    for p in failed_pairs[:15]:
        a, b = p["columns"]
        lost = abs(p["association_synthetic"]) < abs(p["association_real"])
        what = (f"correlation {p['association_real']:.2f} real vs {p['association_synthetic']:.2f} synthetic"
                if p["association"] == "pearson" else
                f"association (Cramer's V) {p['association_real']:.2f} real vs {p['association_synthetic']:.2f} synthetic")
        generalised = [c for c in (a, b) if c in qis]
        if generalised and lost:
            named = " and ".join(generalised)
            forms = " and ".join(sorted({"ranges" if schema[c].type in _CONTINUOUS else "category groups"
                                         for c in generalised}))
            advice.append(f"{a} x {b}: {what} - their dependence is weakened in the release. {named} "
                          f"{'are quasi-identifiers' if len(generalised) > 1 else 'is a quasi-identifier'}: the release "
                          f"publishes {'them' if len(generalised) > 1 else 'it'} as {forms} for k-anonymity, and this "
                          "comparison draws values back uniformly inside them, which by itself weakens the dependence on "
                          "other columns. Check "
                          "the pair in synthetic_portfolio's synthetic_fidelity (before anonymization): if it holds there, "
                          "the loss is the price of k; a smaller privacy.k or fewer quasi_identifiers in tenant.yaml "
                          "trade privacy for this dependence.")
        elif p["association"] == "pearson":
            advice.append(f"{a} x {b}: {what} - the twin {'weakens' if lost else 'overstates'} their dependence (neither "
                          "column is generalised by the anonymizer); a heavy-tailed or zero-inflated marginal loses "
                          "correlation in a Gaussian copula, so check both columns' marginal transforms, or raise the "
                          "segmentation.")
        else:
            discrete = [c for c in (a, b) if schema[c].type in _DISCRETE]
            advice.append(f"{a} x {b}: {what} - the twin {'weakens' if lost else 'overstates'} their dependence (neither "
                          "column is generalised by the anonymizer); raise the segmentation on "
                          f"{' and '.join(discrete)} so the twin is fitted per category.")
    if len(failed_pairs) > 15:
        advice.append(f"... and {len(failed_pairs) - 15} more column pairs whose dependence is off (see the failures).")

    default_rate = credit.get("default_rate") or {}
    rel = default_rate.get("relative_diff")
    if target is not None and rel is not None:
        rate_limit = th.max_default_rate_diff
        r_real, r_syn = default_rate["real_train"], default_rate["synthetic"]
        if th.noise_allowance and r_real > 0:
            se = math.sqrt(r_real * (1 - r_real) / n_real + r_syn * (1 - r_syn) / n_syn)
            rate_limit = max(rate_limit, 1.96 * se / r_real)
        default_rate["limit"] = rate_limit
        ok = bool(rel <= rate_limit)
        checks.append(Check("default_rate", "relative default-rate gap", rel, rate_limit, "<=", ok))
        if not ok:
            failures.append(f"default rate {r_syn:.4f} synthetic vs {r_real:.4f} real ({rel:.1%} relative > {rate_limit:.1%})")
            advice.append(f"default rate {r_syn:.2%} synthetic vs {r_real:.2%} real: the twin mis-states the book's risk; "
                          f"check that '{target}' is modelled (not left out or anonymized away) and recalibrate.")

    if sequences.get("status") == "evaluated":
        limits = sequences["effective_thresholds"]
        checks.append(Check("sequence_cdr", f"relative {sequences['horizon']}-month cumulative default rate gap",
                            sequences["cdr12_relative_diff"], limits["cdr12_relative"], "<=", bool(sequences["passed_cdr12"])))
        judged = sequences["judged_states"]
        ratios = [(sequences["transition_distance"]["per_state"][s], limits["transition_rows"][s], s) for s in judged]
        worst = max(ratios, key=lambda t: t[0] / t[1] if t[1] else 0.0, default=None)
        checks.append(Check("sequence_transitions", "worst judged transition row (mean |difference|)",
                            worst[0] if worst else None, worst[1] if worst else None, "<=",
                            bool(sequences["passed_transitions"]) if worst else None, worst[2] if worst else ""))
        for line in sequences["failures"]:
            failures.append(f"sequences: {line}")
            advice.append(f"sequences: {line} - retrain the cascade (more epochs or more history) and check the "
                          "tape's status mapping.")
    elif sequences.get("status") == "not_evaluable":
        advice.append(f"sequences not evaluable: {sequences['reason']}")

    return checks, failures, advice


def _utility_check(utility: dict[str, Any], threshold: float) -> Check:
    """The utility ratio judged on its 95 % interval: fail below, pass above, a warning when the holdout cannot tell."""
    label = "TSTR / TRTR AUC on the real holdout"
    ratio = utility.get("auc_ratio") if utility.get("status") == "evaluated" else None
    if ratio is None:
        return Check("utility_ratio", label, None, threshold, ">=", None, str(utility.get("reason") or ""))
    low, high = utility.get("auc_ratio_ci") or [None, None]
    if low is None or high is None:
        # One defaulted holdout loan (or one performing) ranks a single loan: the ratio is chance, neither met nor missed.
        return Check("utility_ratio", label, ratio, threshold, ">=", True,
                     f"not judged: {utility.get('holdout_defaults')} defaults in {utility.get('n_holdout')} holdout "
                     "loans give no interval (at least 2 loans of each class are needed)", warning=True)
    interval = (f"95% interval {low:.3f} to {high:.3f} on {utility.get('holdout_defaults')} defaults in "
                f"{utility.get('n_holdout')} holdout loans")
    if high < threshold:
        return Check("utility_ratio", label, ratio, threshold, ">=", False, f"{interval}: all below the threshold")
    if low >= threshold:
        return Check("utility_ratio", label, ratio, threshold, ">=", True, interval)
    return Check("utility_ratio", label, ratio, threshold, ">=", True,
                 f"{interval}: inconclusive, the holdout cannot tell the ratio from the threshold", warning=True)


def _driver_findings(utility: dict[str, Any], column_rows: list[dict[str, Any]], pair_rows: list[dict[str, Any]],
                     target: str | None, qis: set[str]) -> str:
    """What the report measured of the real model's main drivers: their weight in both models, their dependence on
    the target real vs synthetic, their marginal fit, and whether the release generalises them."""
    rows = {r["column"]: r for r in column_rows}
    parts: list[tuple[float, str, str]] = []
    for feature in utility.get("top_features", [])[:3]:
        name = feature["column"]
        bits = [f"{feature['gain_share']:.0%} of the real model's gain"
                + (f", {feature['synthetic_gain_share']:.0%} of the synthetic one's"
                   if feature.get("synthetic_gain_share") is not None else "")]
        # a pair not judged (too sparse, or resting on a few loans) has no association to quote
        pair = next((p for p in pair_rows if set(p["columns"]) == {name, target}
                     and p["association_diff"] is not None and not p.get("not_judged")), None)
        gap = 0.0
        if pair is not None:
            measure = "correlation" if pair["association"] == "pearson" else "Cramer's V"
            bits.append(f"{measure} with {target} {pair['association_real']:.2f} real vs "
                        f"{pair['association_synthetic']:.2f} synthetic")
            gap = abs(pair["association_real"]) - abs(pair["association_synthetic"])
        if name in rows:
            bits.append(f"{rows[name]['metric'].upper()} {rows[name]['statistic']:.3f}")
        if name in qis:
            bits.append("a quasi-identifier, released as ranges or groups")
        parts.append((gap, name, f"{name} ({'; '.join(bits)})"))
    if not parts:
        return ""
    text = "The real model's main drivers: " + ", ".join(p[2] for p in parts) + "."
    gap, name, _ = max(parts)
    if gap > 0.02:
        text += (f" The dependence of {target} on {name} is the one weakened most"
                 + (": it is a quasi-identifier, so a smaller privacy.k or dropping it from quasi_identifiers would "
                    "keep more of it." if name in qis else "; segmenting the twin by a column that drives default, or "
                    "more synthetic rows, would keep more of it."))
    else:
        text += (" None of them loses its dependence on the target by more than 0.02, so the gap is spread over many "
                 "columns or within sampling noise.")
    return text


def _lowest_scores(quality: QualityScore, part: str) -> str:
    """The three columns (column shapes) or counted pairs (column pair trends) with the lowest similarity."""
    if part == "column shapes":
        worst = sorted(quality.columns, key=lambda c: c["score"])[:3]
        return ", ".join(f"{c['column']} {c['score']:.3f}" for c in worst)
    worst = sorted((p for p in quality.pairs if p.get("counted")), key=lambda p: p["score"])[:3]
    return ", ".join(f"{p['columns'][0]} x {p['columns'][1]} {p['score']:.3f}" for p in worst)


def _largest_correlation_gaps(fidelity: Any, top: int = 3) -> str:
    """The column pairs whose rank correlations differ most, real vs synthetic."""
    names = list(fidelity.correlation_columns)
    real, synthetic = np.asarray(fidelity.real_correlation), np.asarray(fidelity.synthetic_correlation)
    pairs = [(abs(real[i, j] - synthetic[i, j]), i, j) for i in range(len(names)) for j in range(i + 1, len(names))
             if np.isfinite(real[i, j]) and np.isfinite(synthetic[i, j])]
    return ", ".join(f"{names[i]} x {names[j]} ({real[i, j]:.2f} real vs {synthetic[i, j]:.2f} synthetic)"
                     for _, i, j in sorted(pairs, reverse=True)[:top])


def _main_columns(schema: TableSchema, target: str | None, credit: dict[str, Any], columns: list[dict[str, Any]]) -> list[str]:
    """The columns drawn: the target, interest rate / DTI / LTV, the segment columns, then the worst others."""
    chosen: list[str] = [target] if target and target in schema else []
    chosen += [d["column"] for d in credit.get("distributions", [])]
    chosen += [s["column"] for s in credit.get("segments", [])]
    for row in sorted(columns, key=lambda r: r["similarity"]):
        if len(chosen) >= _MAX_PANELS:
            break
        chosen.append(row["column"])
    seen: set[str] = set()
    return [c for c in chosen if not (c in seen or seen.add(c))][:_MAX_PANELS]
