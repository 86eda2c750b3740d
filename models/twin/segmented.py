"""The segmented digital twin: one Gaussian copula per segment of the loan book.

A single Gaussian copula holds one correlation matrix for the whole book, so a
column whose distribution is a mixture over a category (mortgage amounts and
LTVs against card limits, home ownership by product) is only approximated, and
sampling with that category fixed inherits the approximation. The segmented
twin splits the train split on one low-cardinality category and learns:

- a global `GaussianCopulaTwin` on every row (the fallback: it serves the rows
  of segments too small for a model of their own, conditions no segment can
  meet, and gives the `correlation`, `latent_columns` and summary the assets
  show);
- one `GaussianCopulaTwin` per segment with at least `min_segment_rows` train
  rows (default max(50, 10 k, 20 x modelled columns)); inside a segment the
  segment column is constant and left out, columns that are constant or
  entirely null there are stored as that constant (or null), and constraints
  are rewritten to the columns left (a fixed combination that loses members
  is checked against the global combinations after sampling, and repaired
  where a segment's "other" bucket broke it).

The segmentation column is `segment_by` when given; by default it is chosen
among the categorical and boolean columns (not the target) with 2 to 12
common levels, as the one whose levels explain the most of the other columns
(mean over them of eta-squared of numeric ranks and null indicators, Cramer's
V squared of categories), if that share reaches `MIN_SEGMENT_SCORE`; otherwise
the twin is the global copula alone.

Sampling draws segment counts multinomially from the train segment sizes
(times the probability each segment gives the fixed values, when conditions
fix other columns; all rows to one segment when they fix the segmentation
column). A requested target rate is met exactly over the whole sample:
round(n * rate) positives are spread over segments by tilting each segment's
train odds by a common factor (so riskier segments keep more of them), with
largest-remainder rounding, and each segment meets its share exactly.

Privacy: segment labels are levels of the global model, which already merged
every category seen in fewer than `k` rows; segments hold at least
`min_segment_rows` >= k rows, and each segment model applies the `k` merge
again within its own rows. Only counts (segment sizes and positives) are added.
A `CopulaNoise` hook is passed to the global and to every segment model; with a
hook and no explicit `segment_by` the twin does not segment, because choosing
the column and the segment sizes reads the data outside the hook: a
differentially private engine must pay for those counts before it segments.

Saved as a directory: `model.json` (segmentation, segment sizes, constants),
`global/` and `segments/<i>/` (each a `GaussianCopulaTwin` save: JSON + NPZ,
never a pickle), validated strictly on load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models.twin.copula import (
    FORMAT as TWIN_FORMAT,
    OTHER,
    SEGMENTED_FORMAT,
    CopulaNoise,
    GaussianCopulaTwin,
    _cholesky,
    _constant_series,
    _dtype_from_token,
    _json_scalar,
    _numeric_view,
    _same_value,
    _validate_table,
)
from models.errors import InvalidDataError, NotFittedError
from models.files import atomic_directory
from models.tape.schema import ColumnType, TableSchema
from models.twin.protocol import Conditions

FORMAT_VERSION = 1
MAX_SEGMENT_LEVELS = 12
MIN_SEGMENT_ROWS = 50
ROWS_PER_COLUMN = 20
# Mean share of the other columns' variation a segmentation column must explain.
MIN_SEGMENT_SCORE = 0.05
SCORE_ROWS = 5_000
SCORE_TOP_LEVELS = 30
PROBABILITY_DRAWS = 16_384
FIT_WORKERS = 2
_LEVEL_TYPES = (ColumnType.CATEGORICAL, ColumnType.BOOLEAN)
_NUMERIC_TYPES = (ColumnType.NUMERIC, ColumnType.INTEGER, ColumnType.DATETIME)
_AUTO = None


# --------------------------------------------------------------------------- choosing the column


def _group_codes(series: pl.Series, top: int | None = None) -> np.ndarray:
    """Dense codes of a column's values (null its own group); past `top` levels, one shared group."""
    if series.dtype.is_float():
        series = series.fill_nan(None)
    counts = series.value_counts(sort=True)
    values = counts.get_column(series.name).to_list()
    if top is not None and len(values) > top:
        values = values[:top]
    present = [v for v in values if v is not None]
    codes = series.replace_strict(present, list(range(len(present))), default=len(present), return_dtype=pl.Int64)
    codes = codes.fill_null(len(present) + 1)
    return np.unique(codes.to_numpy(), return_inverse=True)[1].astype(np.int64)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of `values`, ties sharing their average rank (numpy only: scipy.stats is slow to import)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    top = np.cumsum(counts)
    return (top - (counts - 1) / 2.0)[inverse]


def _eta_squared(values: np.ndarray, groups: np.ndarray) -> float:
    """Share of the variance of `values` explained by the group means."""
    if values.size < 2:
        return 0.0
    total = float(np.var(values))
    if total <= 0:
        return 0.0
    counts = np.bincount(groups)
    sums = np.bincount(groups, weights=values)
    seen = counts > 0
    means = sums[seen] / counts[seen]
    between = float(np.sum(counts[seen] * (means - values.mean()) ** 2)) / values.size
    return between / total


def _cramers_v2(a: np.ndarray, b: np.ndarray) -> float:
    """Cramer's V squared of two coded categorical columns."""
    ka, kb = int(a.max()) + 1, int(b.max()) + 1
    if ka < 2 or kb < 2:
        return 0.0
    table = np.bincount(a * kb + b, minlength=ka * kb).reshape(ka, kb).astype(np.float64)
    n = table.sum()
    expected = np.outer(table.sum(1), table.sum(0)) / n
    keep = expected > 0
    chi2 = float(np.sum((table[keep] - expected[keep]) ** 2 / expected[keep]))
    return chi2 / (n * (min(ka, kb) - 1))


def segmentation_scores(table: pl.DataFrame, schema: TableSchema, candidates: list[str]) -> dict[str, float]:
    """How much of the other modelled columns each candidate column's levels explain (0 to 1).

    Numeric, integer and date columns count by the eta-squared of their ranks
    (and of their null indicator, whichever is larger), categorical and boolean
    columns by Cramer's V squared; a candidate's score is the mean over the
    other columns. Computed on at most `SCORE_ROWS` rows.
    """
    if table.height > SCORE_ROWS:
        table = table.sample(SCORE_ROWS, seed=0)
    # A column with one value (or none) in every row explains nothing and is explained by nothing.
    others = [c for c in schema.columns if c.type in _LEVEL_TYPES + _NUMERIC_TYPES and table.get_column(c.name).n_unique() > 1]
    coded: dict[str, np.ndarray] = {}
    ranks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for spec in others:
        series = table.get_column(spec.name)
        if spec.type in _LEVEL_TYPES:
            coded[spec.name] = _group_codes(series, SCORE_TOP_LEVELS)
        else:
            values = _numeric_view(series)
            null = np.isnan(values)
            ranks[spec.name] = (_average_ranks(values[~null]), null)
    scores: dict[str, float] = {}
    for name in candidates:
        groups = _group_codes(table.get_column(name))
        parts = []
        for spec in others:
            if spec.name == name:
                continue
            if spec.name in coded:
                parts.append(_cramers_v2(groups, coded[spec.name]))
            else:
                rank, null = ranks[spec.name]
                part = _eta_squared(rank, groups[~null])
                if null.any():
                    part = max(part, _eta_squared(null.astype(np.float64), groups))
                parts.append(part)
        scores[name] = float(np.mean(parts)) if parts else 0.0
    return scores


# --------------------------------------------------------------------------- the engine


class SegmentedCopulaTwin:
    """A Gaussian-copula twin per segment of one category, plus a global one for the rest.

    The default engine (`make_engine("credittwin")`). Same interface as
    `GaussianCopulaTwin`: `fit`, `sample`, `save`, `load`, `summary`,
    `correlation` and `latent_columns` (those of the global model).

    Args:
        k, constraints, tail_smoothing, max_categories, noise: as for
            `GaussianCopulaTwin`; given to the global and every segment model.
        segment_by: the segmentation column; None chooses one automatically
            (see the module docstring; never with a noise hook), False never
            segments.
        min_segment_rows: the fewest train rows a segment needs for a model of
            its own (default max(50, 10 k, 20 x modelled columns)); smaller
            segments are sampled from the global model.
    """

    def __init__(
        self,
        *,
        k: int = 5,
        constraints: list[dict] | None = None,
        tail_smoothing: float = 0.5,
        max_categories: int = 1000,
        noise: CopulaNoise | None = None,
        segment_by: str | bool | None = _AUTO,
        min_segment_rows: int | None = None,
    ) -> None:
        self._params = {"k": k, "constraints": [dict(c) for c in (constraints or [])], "tail_smoothing": tail_smoothing,
                        "max_categories": max_categories}
        # Validates the shared arguments once, with GaussianCopulaTwin's messages.
        GaussianCopulaTwin(**self._params, noise=noise)
        if not (segment_by is None or segment_by is False or (isinstance(segment_by, str) and segment_by)):
            raise InvalidDataError(f"segment_by must be a column name, None (automatic) or False, got {segment_by!r}.",
                                   fix="name a categorical column, or leave segment_by out.")
        if min_segment_rows is not None and (
            isinstance(min_segment_rows, bool) or not isinstance(min_segment_rows, int) or min_segment_rows < MIN_SEGMENT_ROWS
        ):
            raise InvalidDataError(f"min_segment_rows must be an integer >= {MIN_SEGMENT_ROWS}, got {min_segment_rows!r}.",
                                   fix=f"use {MIN_SEGMENT_ROWS} or more, or leave it out.")
        self.k = k
        self.constraints = self._params["constraints"]
        self.tail_smoothing = float(tail_smoothing)
        self.max_categories = max_categories
        self.noise = noise
        self.segment_by = segment_by
        self.min_segment_rows = min_segment_rows
        self._global: GaussianCopulaTwin | None = None
        self._column: str | None = None
        self._segments: list[dict[str, Any]] = []
        self._models: list[GaussianCopulaTwin] = []
        self._pooled = {"rows": 0, "positives": 0}
        self._n_train = 0

    # ------------------------------------------------------------------ attributes of the global model

    @property
    def correlation(self) -> np.ndarray | None:
        """The global model's latent correlation matrix (None before fit/load)."""
        return None if self._global is None else self._global.correlation

    @property
    def latent_columns(self) -> list[str]:
        """The global model's latent dimension names, in matrix order."""
        return [] if self._global is None else self._global.latent_columns

    @property
    def segment_column(self) -> str | None:
        """The segmentation column, or None when the twin is the global copula alone."""
        return self._column

    # ------------------------------------------------------------------ fit

    def fit(self, table: pl.DataFrame, schema: TableSchema) -> "SegmentedCopulaTwin":
        """Learn the global model, choose the segmentation column and learn one model per large segment.

        Raises:
            InvalidDataError / ValidationErrors: every input problem
                `GaussianCopulaTwin.fit` reports, and a `segment_by` that is not
                a categorical or boolean column other than the target.
        """
        _validate_table(table, schema, max_categories=self.max_categories, constraints=self.constraints)
        self._global, self._column, self._segments, self._models = None, None, [], []
        column = self._choose_column(table, schema)
        limit = self._min_rows(schema)
        chosen: list[tuple[Any, int, np.ndarray]] = []
        if column is not None:
            counts = table.get_column(column).value_counts()
            # Largest first, ties by label, so segment order (and so the samples of a seed) never depend on hashing.
            rows_of = sorted(counts.iter_rows(), key=lambda r: (-r[1], str(r[0])))
            series = table.get_column(column)
            for raw, rows in rows_of:
                if rows >= limit:
                    mask = (series.is_null() if raw is None else series == raw).fill_null(False).to_numpy()
                    chosen.append((raw, int(rows), mask))
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        # The models are independent; two workers use both cores of a small machine. A noise hook is called
        # from one thread only, in a fixed order, since a DP implementation may draw from one generator.
        workers = 1 if self.noise is not None else FIT_WORKERS
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=workers) as pool:
            glob_job = pool.submit(GaussianCopulaTwin(**self._params, noise=self.noise)._fit, table, schema)
            # Each segment's rows are copied out when its fit starts, not all up front: at most two copies at once.
            jobs = [pool.submit(lambda m: self._fit_segment(table.filter(pl.Series(m)), schema, column), mask)
                    for _, _, mask in chosen]
            glob = glob_job.result()
            fitted = [job.result() for job in jobs]
        self._global = glob
        self._n_train = table.height
        positive = self._positive_mask(table)
        self._pooled = {"rows": table.height, "positives": int(positive.sum())}
        if column is None:
            return self
        labels = self._level_values(column)
        in_segment = np.zeros(table.height, dtype=bool)
        for (raw, rows, mask), result in zip(chosen, fitted):
            label = _json_scalar(raw)
            if result is None or not any(_same_value(label, v) or (label is None and v is None) for v in labels):
                continue
            model, constants, nulls = result
            self._models.append(model)
            self._segments.append({"value": label, "rows": rows, "positives": int(positive[mask].sum()),
                                   "constants": constants, "nulls": nulls})
            in_segment |= mask
        if len(self._models) < 2 and not (self._models and (~in_segment).sum() >= limit):
            # One segment and a few stragglers is no segmentation at all: the global model alone is simpler.
            self._segments, self._models = [], []
            return self
        self._column = column
        self._pooled = {"rows": int((~in_segment).sum()), "positives": int(positive[~in_segment].sum())}
        return self

    def _positive_mask(self, table: pl.DataFrame) -> np.ndarray:
        target = self._global._target
        if target is None:
            return np.zeros(table.height, dtype=bool)
        series = table.get_column(target["column"])
        if isinstance(series.dtype, (pl.Categorical, pl.Enum)):
            series = series.cast(pl.String)
        hits = np.zeros(table.height, dtype=bool)
        values = series.to_list() if series.dtype == pl.Boolean else None
        for level in target["positive"]:
            if values is not None:
                hits |= np.array([v is level for v in values])
            else:
                hits |= (series == level).fill_null(False).to_numpy()
        return hits

    def _min_rows(self, schema: TableSchema) -> int:
        if self.min_segment_rows is not None:
            return self.min_segment_rows
        modelled = sum(1 for c in schema.columns if c.type not in (ColumnType.IDENTIFIER, ColumnType.TEXT))
        return max(MIN_SEGMENT_ROWS, 10 * self.k, ROWS_PER_COLUMN * modelled)

    def _level_values(self, column: str) -> list[Any]:
        """The values the global model keeps for `column` (after the rare-category merge)."""
        plan = next(p for p in self._global._columns if p["name"] == column)
        levels = self._global._marginals[plan["dim"]].levels
        if plan["kind"] == "combo":
            seen: list[Any] = []
            for lvl in levels:
                if not any(_same_value(lvl[plan["member"]], v) for v in seen):
                    seen.append(lvl[plan["member"]])
            return seen
        return list(levels)

    def _choose_column(self, table: pl.DataFrame, schema: TableSchema) -> str | None:
        if self.segment_by is False or (self.segment_by is None and self.noise is not None):
            return None
        plans = {c.name for c in schema.columns if c.type not in (ColumnType.IDENTIFIER, ColumnType.TEXT)}
        if isinstance(self.segment_by, str):
            name = self.segment_by
            if name not in schema or schema[name].type not in _LEVEL_TYPES or name == schema.target or name not in plans:
                raise InvalidDataError(
                    "cannot segment the book: segment_by must name a modelled categorical or boolean column that is not "
                    "the target.", column=name, fix="name such a column (for example the product), or leave segment_by out.",
                )
            return name
        limit = self._min_rows(schema)
        candidates = []
        for spec in schema.columns:
            if spec.type not in _LEVEL_TYPES or spec.name == schema.target or spec.name not in plans:
                continue
            counts = table.get_column(spec.name).value_counts().get_column("count").to_numpy()
            common = int(np.sum(counts >= self.k))
            if 2 <= common <= MAX_SEGMENT_LEVELS and int(np.sum(counts >= limit)) >= 2:
                candidates.append(spec.name)
        if not candidates:
            return None
        scores = segmentation_scores(table, schema, candidates)
        best = max(candidates, key=lambda c: scores[c])
        return best if scores[best] >= MIN_SEGMENT_SCORE else None

    def _fit_segment(self, sub: pl.DataFrame, schema: TableSchema, column: str):
        """A twin of one segment's rows, its constant and all-null columns; None when it cannot stand alone."""
        constants: dict[str, Any] = {}
        nulls: list[str] = []
        kept = []
        for spec in schema.columns:
            if spec.type in (ColumnType.IDENTIFIER, ColumnType.TEXT) or spec.name == column:
                continue
            series = sub.get_column(spec.name)
            if series.dtype.is_float():
                series = series.fill_nan(None)
            if series.null_count() == sub.height:
                nulls.append(spec.name)
            elif series.null_count() == 0 and series.n_unique() == 1:
                if spec.name == schema.target:
                    return None
                value = series.item(0)
                constants[spec.name] = (float(_numeric_view(series[:1])[0]) if spec.type in _NUMERIC_TYPES
                                        else _json_scalar(value.value if hasattr(value, "value") else value))
            else:
                kept.append(spec)
        dropped = set(constants) | set(nulls) | {column}
        rewritten = []
        for c in self.constraints:
            if c["type"] == "inequality":
                if c["low"] in constants or c["high"] in constants:
                    return None
                if c["low"] in nulls or c["high"] in nulls:
                    continue
                rewritten.append(dict(c))
            elif c["type"] == "fixed_combinations":
                left = [x for x in c["columns"] if x not in dropped]
                if len(left) >= 2:
                    rewritten.append({"type": "fixed_combinations", "columns": left})
            elif c["column"] not in dropped:
                rewritten.append(dict(c))
        sub_schema = TableSchema(columns=kept, id_column=None, target=schema.target if schema.target in
                                 [s.name for s in kept] else None, target_positive=list(schema.target_positive))
        try:
            model = GaussianCopulaTwin(**{**self._params, "constraints": rewritten}, noise=self.noise).fit(
                sub.select([s.name for s in kept]), sub_schema)
        except InvalidDataError:
            # A segment its own model cannot learn (one-class target, too many categories...) joins the pooled rows.
            return None
        return model, constants, nulls

    # ------------------------------------------------------------------ sample

    def _check_fitted(self) -> None:
        if self._global is None:
            raise NotFittedError("the copula twin is not fitted.",
                                 fix="call fit(table, schema) or load_engine(path) first.")

    def sample(self, n: int, seed: int = 0, conditions: Conditions | None = None) -> pl.DataFrame:
        """Sample `n` synthetic rows; the same seed gives the same table.

        Args:
            n: number of rows.
            seed: random seed.
            conditions: `{"target_rate": r}` (exactly round(n * r) positives
                over the whole sample) and/or `{"fixed": {column: value}}`, as
                for `GaussianCopulaTwin.sample`.

        Raises:
            NotFittedError: before `fit`/`load`.
            InvalidDataError: the condition errors of `GaussianCopulaTwin.sample`.
        """
        self._check_fitted()
        if not self._models:
            return self._global.sample(n, seed=seed, conditions=conditions)
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise InvalidDataError(f"n must be a non-negative integer, got {n!r}.", fix="pass the number of rows to sample.")
        # The global model checks every condition and gives the errors their usual wording.
        self._global._parse_conditions(conditions)
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return self._sample(int(n), seed, conditions or {})

    def _sample(self, n: int, seed: int, conditions: dict) -> pl.DataFrame:
        rng = np.random.default_rng(seed)
        fixed = dict(conditions.get("fixed") or {})
        rate = conditions.get("target_rate")
        units = self._units(fixed, rng)
        if not units:
            # No segment can produce the fixed values; the global model can (it parsed them).
            return self._global._sample(n, seed, conditions)
        weights = np.array([w for _, w, _ in units])
        counts = rng.multinomial(n, weights / weights.sum())
        positives = self._allocate_positives(n, rate, [u for u, _, _ in units], counts) if rate is not None else None
        seeds = rng.integers(0, 2**63 - 1, size=len(units))
        frames = []
        for j, ((unit, _, unit_fixed), size) in enumerate(zip(units, counts)):
            if size == 0:
                continue
            cond: dict[str, Any] = {}
            if unit_fixed:
                cond["fixed"] = unit_fixed
            if positives is not None:
                cond["target_rate"] = positives[j] / size
            if unit < 0:
                restrict = None if self._column in unit_fixed else {self._column: self._pooled_levels()}
                frame = self._global._sample(int(size), int(seeds[j]), cond or None, restrict)
                frames.append(frame.select([p["name"] for p in self._global._columns if p["kind"] != "identifier"]))
            else:
                frame = self._models[unit]._sample(int(size), int(seeds[j]), cond or None)
                frames.append(self._complete(unit, frame, rng))
        out = pl.concat(frames, how="vertical") if frames else self._global._sample(0, seed, None).drop(self._id_names())
        frames.clear()
        if out.height:
            # Shuffled column by column out of one chunk (gathering from the parts' chunks takes four times as
            # long); each column is dropped once copied, so the table is not held twice over.
            shuffle = pl.Series(rng.permutation(out.height))
            shuffled = []
            for name in out.columns:
                shuffled.append(out.get_column(name).rechunk().gather(shuffle))
                out = out.drop(name)
            out = pl.DataFrame(shuffled)
        ids = [GaussianCopulaTwin._identifiers(p, n) for p in self._global._columns if p["kind"] == "identifier"]
        return out.with_columns(ids).select([p["name"] for p in self._global._columns]) if ids else out

    def _id_names(self) -> list[str]:
        return [p["name"] for p in self._global._columns if p["kind"] == "identifier"]

    def _pooled_levels(self) -> list[Any]:
        return [v for v in self._level_values(self._column)
                if not any(_same_value(v, s["value"]) or (v is None and s["value"] is None) for s in self._segments)]

    def _units(self, fixed: dict[str, Any], rng: np.random.Generator) -> list[tuple[int, float, dict[str, Any]]]:
        """(unit, weight, fixed values for its model) per unit that can meet `fixed`; unit -1 is the pooled rows."""
        column = self._column
        if column in fixed:
            value = fixed[column]
            for i, seg in enumerate(self._segments):
                if _same_value(seg["value"], value):
                    own = self._segment_fixed(i, {c: v for c, v in fixed.items() if c != column})
                    if own is None or (own and _condition_mass(self._models[i], own, None, rng) <= 0):
                        return []
                    return [(i, 1.0, own)]
            return [(-1, 1.0, fixed)]
        units = []
        for i, seg in enumerate(self._segments):
            own = self._segment_fixed(i, fixed)
            if own is None:
                continue
            weight = seg["rows"] * (_condition_mass(self._models[i], own, None, rng) if own else 1.0)
            if weight > 0:
                units.append((i, weight, own))
        if self._pooled["rows"]:
            restrict = {column: self._pooled_levels()}
            base = _condition_mass(self._global, {}, restrict, rng)
            mass = _condition_mass(self._global, fixed, restrict, rng) if fixed else base
            if base > 0 and mass > 0:
                units.append((-1, self._pooled["rows"] * mass / base, fixed))
        return units

    def _segment_fixed(self, i: int, fixed: dict[str, Any]) -> dict[str, Any] | None:
        """The fixed values segment `i`'s model must meet, or None when the segment cannot meet them."""
        seg = self._segments[i]
        own = {}
        for column, value in fixed.items():
            if column in seg["constants"]:
                if not _same_value(seg["constants"][column], value):
                    return None
            elif column in seg["nulls"]:
                return None
            else:
                own[column] = value
        return own

    def _allocate_positives(self, n: int, rate: float, units: list[int], counts: np.ndarray) -> np.ndarray:
        """Exactly round(n * rate) positives over units: train odds tilted by a common factor, largest remainders."""
        total = int(round(n * rate))
        sizes = counts.astype(np.float64)
        stats = [self._pooled if u < 0 else self._segments[u] for u in units]
        natural = np.array([(s["positives"] + 0.5) / (s["rows"] + 1.0) for s in stats])
        logit = np.log(natural) - np.log1p(-natural)

        def expected(shift: float) -> float:
            return float(np.sum(sizes / (1.0 + np.exp(-(logit + shift)))))

        lo, hi = -60.0, 60.0
        for _ in range(100):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if expected(mid) < total else (lo, mid)
        share = sizes / (1.0 + np.exp(-(logit + (lo + hi) / 2)))
        share *= total / share.sum() if share.sum() > 0 else 0.0
        share = np.minimum(share, sizes)
        floor = np.floor(share).astype(np.int64)
        left = total - int(floor.sum())
        room = floor < counts
        order = np.argsort(-(share - floor) - room * 1.0, kind="stable")
        for j in order:
            if left <= 0:
                break
            if floor[j] < counts[j]:
                floor[j] += 1
                left -= 1
        return floor

    def _complete(self, unit: int, frame: pl.DataFrame, rng: np.random.Generator) -> pl.DataFrame:
        """A segment model's rows with the segment value, constants and nulls, in the global model's columns and dtypes."""
        seg, model = self._segments[unit], self._models[unit]
        size = frame.height
        own_plans = {p["name"]: p for p in model._columns}
        columns = []
        for plan in self._global._columns:
            name = plan["name"]
            if plan["kind"] == "identifier":
                continue
            dtype = _dtype_from_token(plan["dtype"])
            if plan["kind"] == "constant":
                columns.append(_constant_series(plan, size))
            elif name == self._column:
                columns.append(_constant(name, seg["value"], dtype, size, numeric=False))
            elif name in seg["constants"]:
                columns.append(_constant(name, seg["constants"][name], dtype, size,
                                         numeric=plan["kind"] in ("numeric", "gap")))
            elif name in seg["nulls"]:
                columns.append(pl.Series(name, [None] * size, dtype=dtype))
            else:
                series = frame.get_column(name)
                if name in model._merges and own_plans[name]["kind"] == "levels":
                    series = self._spread_other(name, series, model, own_plans[name], rng)
                columns.append(_to_dtype(series, dtype, self._level_values(name) if series.dtype != dtype else []))
        return self._repair_combinations(pl.DataFrame(columns), unit, rng)

    def _spread_other(self, name: str, series: pl.Series, model: GaussianCopulaTwin, plan: dict[str, Any],
                      rng: np.random.Generator) -> pl.Series:
        """Rows a segment model put in "other" get a global level the segment merged, by global frequency."""
        text = series.cast(pl.String)
        rows = np.flatnonzero((text == OTHER).fill_null(False).to_numpy())
        if rows.size == 0:
            return series
        own = [v for v in model._marginals[plan["dim"]].levels if v != OTHER]
        values, probs = self._global_distribution(name)
        keep = [j for j, v in enumerate(values)
                if v is not None and not any(_same_value(v, o) or str(v) == str(o) for o in own)]
        if not keep:
            return series
        p = probs[keep] / probs[keep].sum()
        drawn = rng.choice(len(keep), size=rows.size, p=p)
        labels = pl.Series(name, [str(values[keep[j]]) for j in range(len(keep))], dtype=pl.String)
        return text.scatter(rows, labels.gather(drawn))

    def _global_distribution(self, name: str) -> tuple[list[Any], np.ndarray]:
        plan = next(p for p in self._global._columns if p["name"] == name)
        marginal = self._global._marginals[plan["dim"]]
        if plan["kind"] != "combo":
            return list(marginal.levels), marginal.probs
        values: list[Any] = []
        probs: list[float] = []
        for lvl, p in zip(marginal.levels, marginal.probs):
            v = lvl[plan["member"]]
            hit = next((j for j, w in enumerate(values) if _same_value(v, w) or (v is None and w is None)), None)
            if hit is None:
                values.append(v)
                probs.append(float(p))
            else:
                probs[hit] += float(p)
        return values, np.asarray(probs)

    def _repair_combinations(self, frame: pl.DataFrame, unit: int, rng: np.random.Generator) -> pl.DataFrame:
        """Rows whose fixed combination the global model never saw get an allowed one for the segment's pinned values."""
        seg = self._segments[unit]
        pinned = {self._column, *seg["constants"], *seg["nulls"]}
        groups: dict[int, list[dict[str, Any]]] = {}
        for plan in self._global._columns:
            if plan["kind"] == "combo":
                groups.setdefault(plan["dim"], []).append(plan)
        for dim, plans in groups.items():
            plans = sorted(plans, key=lambda p: p["member"])
            cols = [p["name"] for p in plans]
            marginal = self._global._marginals[dim]
            allowed = pl.DataFrame([
                _typed([lvl[p["member"]] for lvl in marginal.levels], p["name"], frame.schema[p["name"]]) for p in plans
            ])
            key = [pl.col(c).cast(pl.String) for c in cols]
            joined = frame.select(key).with_row_index("_row").join(
                allowed.select(key).with_row_index("_code"), on=cols, how="left", nulls_equal=True).sort("_row")
            bad = np.flatnonzero(joined.get_column("_code").is_null().to_numpy())
            if bad.size == 0:
                continue
            first = frame.row(int(bad[0]), named=True)
            ok = np.ones(len(marginal.levels), dtype=bool)
            for j, p in enumerate(plans):
                if p["name"] in pinned:
                    ok &= allowed.get_column(p["name"]).cast(pl.String).eq_missing(
                        pl.Series([first[p["name"]]], dtype=frame.schema[p["name"]]).cast(pl.String)[0]).to_numpy()
            if not ok.any():
                continue
            probs = marginal.probs * ok
            pick = rng.choice(len(probs), size=bad.size, p=probs / probs.sum())
            frame = frame.with_columns([
                frame.get_column(c).scatter(bad, allowed.get_column(c).gather(pick)) for c in cols if c not in pinned
            ])
        return frame

    # ------------------------------------------------------------------ inspect / persist

    def summary(self) -> dict[str, Any]:
        """The global model's summary plus the segmentation: column, segment values and sizes (counts only)."""
        self._check_fitted()
        out = self._global.summary()
        out["segmentation"] = None if self._column is None else {
            "column": self._column,
            "segments": [{"value": s["value"], "rows": s["rows"],
                          "category_merges": dict(m._merges)} for s, m in zip(self._segments, self._models)],
            "pooled_rows": self._pooled["rows"],
        }
        return out

    def save(self, path: Path) -> None:
        """Save to directory `path`: model.json, global/ and segments/<i>/ (JSON + NPZ), atomically."""
        self._check_fitted()
        with atomic_directory(Path(path)) as tmp:
            self._global.save(tmp / "global")
            for i, model in enumerate(self._models):
                model.save(tmp / "segments" / str(i))
            model_json = {
                "format": SEGMENTED_FORMAT,
                "version": FORMAT_VERSION,
                "params": {"k": self.k, "tail_smoothing": self.tail_smoothing, "max_categories": self.max_categories,
                           "constraints": self.constraints, "segment_by": self.segment_by,
                           "min_segment_rows": self.min_segment_rows},
                "segment_column": self._column,
                "segments": self._segments,
                "pooled": self._pooled,
                "n_train": self._n_train,
            }
            (tmp / "model.json").write_bytes(json.dumps(model_json, indent=1, allow_nan=False).encode())

    @classmethod
    def load(cls, path: Path) -> "SegmentedCopulaTwin":
        """Load a model saved by `save`, validating every field; refuses anything unexpected.

        Raises:
            InvalidDataError: a missing, tampered or foreign model directory.
        """
        path = Path(path)
        file = path / "model.json"
        try:
            model = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidDataError(f"cannot read the saved copula: {exc}", file=str(path),
                                   fix="re-run fitted_copula to write it again.") from exc
        try:
            return cls._from_saved(path, model)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, StopIteration) as exc:
            raise InvalidDataError(f"the saved segmented copula is invalid: {exc}", file=str(file),
                                   fix="the file was edited or written by another version; re-run fitted_copula.") from exc

    @classmethod
    def _from_saved(cls, path: Path, model: Any) -> "SegmentedCopulaTwin":
        _expect(model, {"format", "version", "params", "segment_column", "segments", "pooled", "n_train"}, "model")
        if model["format"] != SEGMENTED_FORMAT or model["version"] != FORMAT_VERSION:
            raise ValueError(f"format {model['format']!r} version {model['version']!r} is not "
                             f"{SEGMENTED_FORMAT} v{FORMAT_VERSION}")
        params = model["params"]
        _expect(params, {"k", "tail_smoothing", "max_categories", "constraints", "segment_by", "min_segment_rows"}, "params")
        if not isinstance(params["constraints"], list) or not all(isinstance(c, dict) for c in params["constraints"]):
            raise ValueError("params.constraints must be a list of objects")
        if params["segment_by"] is True:
            raise ValueError("params.segment_by must be a column name, null or false")
        twin = cls(k=params["k"], constraints=params["constraints"], tail_smoothing=params["tail_smoothing"],
                   max_categories=params["max_categories"], segment_by=params["segment_by"],
                   min_segment_rows=params["min_segment_rows"])
        segments = model["segments"]
        if not isinstance(segments, list):
            raise ValueError("segments must be a list")
        expected_entries = {"model.json", "global"} | ({"segments"} if segments else set())
        entries = {p.name for p in path.iterdir()}
        if entries != expected_entries:
            raise ValueError(f"the model directory holds {sorted(entries ^ expected_entries)} unexpectedly")
        twin._global = _load_plain(path / "global")
        if segments and sorted(p.name for p in (path / "segments").iterdir()) != sorted(str(i) for i in range(len(segments))):
            raise ValueError("segments/ must hold one directory per segment, named 0, 1, ...")
        glob_plans = {p["name"]: p for p in twin._global._columns}
        column = model["segment_column"]
        if segments and (not isinstance(column, str) or column not in glob_plans
                         or glob_plans[column]["kind"] not in ("levels", "combo")):
            raise ValueError("segment_column must name a category column of the global model")
        if not segments and column is not None:
            raise ValueError("a segment_column needs segments")
        twin._column = column
        labels = twin._level_values(column) if segments else []
        ids = {n for n, p in glob_plans.items() if p["kind"] == "identifier"}
        glob_target = twin._global._target
        total = 0
        for i, seg in enumerate(segments):
            _expect(seg, {"value", "rows", "positives", "constants", "nulls"}, f"segment {i}")
            if not any(_same_value(seg["value"], v) or (seg["value"] is None and v is None) for v in labels):
                raise ValueError(f"segment {i}'s value is not a level of the global model")
            if not (_count(seg["rows"]) and _count(seg["positives"]) and seg["positives"] <= seg["rows"]):
                raise ValueError(f"segment {i}: rows and positives must be counts with positives <= rows")
            if not isinstance(seg["constants"], dict) or not isinstance(seg["nulls"], list):
                raise ValueError(f"segment {i}: constants must be an object and nulls a list")
            for value in seg["constants"].values():
                if not (value is None or isinstance(value, (bool, int, float, str))):
                    raise ValueError(f"segment {i}: constants must be JSON scalars")
            sub = _load_plain(path / "segments" / str(i))
            own = [p["name"] for p in sub._columns]
            if any(p["kind"] == "identifier" for p in sub._columns):
                raise ValueError(f"segment {i}'s model must not hold identifiers")
            parts = own + list(seg["constants"]) + list(seg["nulls"]) + [column]
            if sorted(parts) != sorted(set(glob_plans) - ids) or len(parts) != len(set(parts)):
                raise ValueError(f"segment {i}'s columns, constants and nulls must partition the global model's columns")
            if (sub._target is None) != (glob_target is None) or (
                sub._target is not None and sub._target["column"] != glob_target["column"]
            ):
                raise ValueError(f"segment {i}'s target differs from the global model's")
            twin._models.append(sub)
            twin._segments.append({"value": seg["value"], "rows": seg["rows"], "positives": seg["positives"],
                                   "constants": dict(seg["constants"]), "nulls": [str(x) for x in seg["nulls"]]})
            total += seg["rows"]
        pooled = model["pooled"]
        _expect(pooled, {"rows", "positives"}, "pooled")
        if not (_count(pooled["rows"]) and _count(pooled["positives"]) and pooled["positives"] <= pooled["rows"]):
            raise ValueError("pooled: rows and positives must be counts with positives <= rows")
        if not _count(model["n_train"]) or total + pooled["rows"] != model["n_train"]:
            raise ValueError("n_train must equal the segment and pooled rows")
        twin._pooled = {"rows": pooled["rows"], "positives": pooled["positives"]}
        twin._n_train = model["n_train"]
        return twin


# --------------------------------------------------------------------------- helpers


def _expect(data: Any, keys: set[str], where: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be an object")
    if set(data) != keys:
        raise ValueError(f"{where}: unknown keys {sorted(set(data) - keys)}, missing keys {sorted(keys - set(data))}")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _load_plain(path: Path) -> GaussianCopulaTwin:
    """A single `GaussianCopulaTwin` (never a nested segmented model)."""
    model = json.loads((path / "model.json").read_text())
    if not isinstance(model, dict) or model.get("format") != TWIN_FORMAT:
        raise ValueError(f"{path.name}/model.json is not a {TWIN_FORMAT} model")
    return GaussianCopulaTwin.load(path)


def _condition_mass(twin: GaussianCopulaTwin, fixed: dict[str, Any], restrict: dict[str, list] | None,
                    rng: np.random.Generator) -> float:
    """Probability the twin gives rows meeting `fixed` (and `restrict`); 0 when it cannot meet them.

    Exact for one constrained latent dimension (the width of its intervals);
    for several, the share of correlated latent draws inside all intervals.
    """
    try:
        spans, _ = twin._parse_conditions({"fixed": fixed} if fixed else None, restrict)
    except InvalidDataError:
        return 0.0
    if not spans:
        return 1.0
    if len(spans) == 1:
        s = spans[0][1]
        return float(np.sum(s[:, 1] - s[:, 0]))
    from scipy.special import ndtr

    dims = [d for d, _ in spans]
    chol = _cholesky(twin.correlation[np.ix_(dims, dims)])
    u = ndtr(rng.standard_normal((PROBABILITY_DRAWS, len(dims))) @ chol.T)
    inside = np.ones(PROBABILITY_DRAWS, dtype=bool)
    for j, (_, s) in enumerate(spans):
        inside &= ((u[:, j, None] > s[None, :, 0]) & (u[:, j, None] < s[None, :, 1])).any(axis=1)
    return float(inside.mean())


def _typed(values: list[Any], name: str, dtype: pl.DataType) -> pl.Series:
    """JSON level values as a Series of `dtype`."""
    base = pl.String if dtype == pl.Categorical else dtype
    return pl.Series(name, values, dtype=base, strict=False).cast(dtype)


def _constant(name: str, value: Any, dtype: pl.DataType, size: int, *, numeric: bool) -> pl.Series:
    if numeric:
        return GaussianCopulaTwin._numeric_series(name, np.full(size, float(value)), np.zeros(size, dtype=bool), dtype)
    return _typed([value], name, dtype).gather(np.zeros(size, dtype=np.int64))


def _to_dtype(series: pl.Series, dtype: pl.DataType, levels: list[Any]) -> pl.Series:
    """A segment model's column in the global model's dtype (a segment that merged a category emits text)."""
    if series.dtype == dtype:
        return series
    if dtype in (pl.String, pl.Categorical) or not levels:
        return series.cast(pl.String).cast(dtype)
    present = [v for v in levels if v is not None]
    return series.cast(pl.String).replace_strict([str(v) for v in present], _typed(present, series.name, dtype),
                                                 default=None, return_dtype=dtype)
