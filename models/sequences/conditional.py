"""Conditional fidelity of synthetic monthly histories: per risk segment, not only for the whole book.

A synthetic book can match the book's 12-month default rate while its low-risk
loans default too rarely and its high-risk loans too often; the book-level
measures of `models.sequences.histories.compare_sequences` cannot see that.
`conditional_fidelity` compares real and synthetic histories of the *same*
loans (the synthetic histories sampled on the real loans' static attributes,
so each segment holds the same loans in both books) segment by segment:

- per segment of each dimension it finds (a grade, bands of a DTI-like
  column, a product; see `discover_dimensions`): the 12-month cumulative
  default rate, real against synthetic, with the relative difference, and
  each transient state's transition row, judged by its largest absolute
  difference;
- for the whole book: `compare_sequences` (roll rates, vintage curves, time
  to default, prepayment), summarised as differences in `book_summary`.

Every verdict is honest about sampling noise. Real and synthetic outcomes of
the same loans differ by chance even for a perfect model; a check is judged
against its target (10% relative for the default rate, 0.02 for a transition
row) only when the 95% band of those chance differences is narrower than the
target. A thinner segment is "inconclusive", with the band and the real
rate's Wilson interval, unless its difference passes both the target and
3.29 standard errors (chance alone gets that far once in a thousand
comparisons: a table of dozens of segments and rows would otherwise show a
few chance fails), which is a "fail" however thin the segment. A row with
fewer than `min_row_transitions` real transitions is "not measured". Neither
"inconclusive" nor "not measured" is ever a pass.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import polars as pl

from models.errors import InvalidDataError
from models.sequences.histories import (
    CDR_THRESHOLD,
    ROW_THRESHOLD,
    TRANSIENT,
    SequenceFidelity,
    _json,
    compare_sequences,
    cumulative_default_curve,
    transition_counts,
)
from models.sequences.states import STATE_INDEX, STATES
from models.tape.schema import ColumnType, TableSchema, normalise_column_name, resolve_aliases

PASS, FAIL, INCONCLUSIVE, NOT_MEASURED = "pass", "fail", "inconclusive", "not measured"
# The dimensions looked for, each with the names lenders give it (matched as `resolve_aliases` matches).
DIMENSION_ALIASES: dict[str, tuple[str, ...]] = {
    "grade": ("grade", "loan_grade", "risk_grade", "sub_grade", "rating", "risk_rating", "risk_segment",
              "risk_band", "risk_tier", "risk_class"),
    "dti": ("dti", "debt_to_income", "debt_to_income_ratio", "dti_ratio", "back_end_dti"),
    "product": ("product", "product_type", "loan_product", "loan_type", "product_code", "product_line"),
}
# Names a tape spells its own way (lower case, separators removed): "CreditGrade", "DebtToIncomePct", "ProdType".
DIMENSION_HINTS: dict[str, str] = {
    "grade": r"(grade|rating|riskband|risksegment|risktier|riskclass)",
    "dti": r"(dti|debttoincome|debtincome|debtratio)",
    "product": r"(product|prod(uct)?type|loantype|facilitytype)",
}
_CATEGORICAL_DIMENSIONS = ("grade", "product")
_MAX_LEVELS = 20
_Z = 1.96
_FAIL_Z = 3.29


@dataclass
class Dimension:
    """One way of cutting the book into segments.

    Attributes:
        name: "grade", "dti", "product" (or the caller's own name).
        column: the loans column it reads.
        kind: "categorical" (one segment per level, the rarest pooled as
            "(other)") or "bands" (quantile bands of a numeric column).
        edges: the inner band edges, from the real loans (bands only).
    """

    name: str
    column: str
    kind: str
    edges: list[float] = field(default_factory=list)

    def labels(self, loans: pl.DataFrame, levels: list[str] | None = None) -> pl.Series:
        """Each loan's segment label; `levels` (the real book's) keeps a categorical's segments alike in both books."""
        series = loans.get_column(self.column)
        if self.kind == "bands":
            values = series.cast(pl.Float64, strict=False).to_numpy()
            band = np.searchsorted(np.asarray(self.edges), values, side="right")
            names = np.asarray(self.band_names(), dtype=object)[np.minimum(band, len(self.edges))]
            return pl.Series(self.name, np.where(np.isfinite(values), names, "(missing)"), dtype=pl.String)
        text = series.cast(pl.String).fill_null("(missing)")
        if levels is None:
            return text.alias(self.name)
        return text.replace_strict({v: v for v in levels}, default="(other)").alias(self.name)

    def band_names(self) -> list[str]:
        """Labels of the bands, lowest first: "< 12.5", "[12.5, 18)", ..., ">= 31"."""
        e = [f"{v:.4g}" for v in self.edges]
        if not e:
            return ["all"]
        return [f"< {e[0]}"] + [f"[{a}, {b})" for a, b in zip(e[:-1], e[1:])] + [f">= {e[-1]}"]

    def to_dict(self) -> dict[str, Any]:
        """The dimension as JSON-ready values."""
        return {"name": self.name, "column": self.column, "kind": self.kind, "edges": list(self.edges)}


def _is_numeric(series: pl.Series, schema: TableSchema | None, column: str) -> bool:
    if schema is not None and column in schema:
        return schema[column].type in (ColumnType.NUMERIC, ColumnType.INTEGER)
    return series.dtype.is_numeric()


def discover_dimensions(
    loans: pl.DataFrame,
    schema: TableSchema | None = None,
    *,
    columns: Mapping[str, str] | None = None,
    dti_bands: int = 4,
) -> list[Dimension]:
    """The segment dimensions of a loans table: a grade, DTI bands and a product, whichever it has.

    A dimension's column is found by the names lenders give it
    (`DIMENSION_ALIASES`), else by a name pattern (`DIMENSION_HINTS`, first
    in sorted order), never among the schema's id and target columns. A grade
    or product must be categorical or a number with at most 20 levels; a DTI
    must be numeric and is cut into `dti_bands` quantile bands of `loans`.

    Args:
        loans: the real loans.
        schema: their schema (types, id and target roles); optional.
        columns: dimension name -> column, chosen by the caller (replaces the
            search for those names; any other name is a categorical dimension).
        dti_bands: quantile bands of the DTI-like column.

    Raises:
        InvalidDataError: a column named in `columns` is not in `loans`.
    """
    chosen = dict(columns or {})
    missing = [c for c in chosen.values() if c not in loans.columns]
    if missing:
        raise InvalidDataError(
            f"the segment column(s) {missing} are not in the loans table.",
            column=missing[0],
            fix=f"name columns of the loans table, e.g. {loans.columns[:8]}.",
        )
    excluded: set[str] = set()
    if schema is not None:
        excluded.update(c for c in (schema.target, schema.id_column) if c)
        excluded.update(c.name for c in schema.columns if "id" in c.roles)
    free = [c for c in loans.columns if c not in excluded and c not in chosen.values()]

    def fits(name: str, column: str) -> bool:
        series = loans.get_column(column)
        numeric = _is_numeric(series, schema, column)
        if name == "dti":
            return numeric
        return not numeric or series.n_unique() <= _MAX_LEVELS

    usable = {name: [c for c in free if fits(name, c)] for name in DIMENSION_ALIASES if name not in chosen}
    for name, candidates in usable.items():
        found = resolve_aliases(candidates, {name: DIMENSION_ALIASES[name]}).get(name)
        if found is None:
            pattern = re.compile(DIMENSION_HINTS[name])
            found = next((c for c in sorted(candidates) if pattern.search(normalise_column_name(c).replace("_", ""))), None)
        if found is not None and found not in chosen.values():
            chosen[name] = found
    dimensions = []
    for name in [n for n in DIMENSION_ALIASES if n in chosen] + [n for n in chosen if n not in DIMENSION_ALIASES]:
        column = chosen[name]
        series = loans.get_column(column)
        if name == "dti" or (_is_numeric(series, schema, column) and series.n_unique() > _MAX_LEVELS):
            values = series.cast(pl.Float64, strict=False).drop_nulls().to_numpy()
            values = values[np.isfinite(values)]
            quantiles = np.quantile(values, np.linspace(0, 1, dti_bands + 1)[1:-1]) if values.size else []
            dimensions.append(Dimension(name, column, "bands", np.unique(np.round(quantiles, 4)).tolist()))
        else:
            dimensions.append(Dimension(name, column, "categorical"))
    return dimensions


def wilson_interval(successes: int, trials: int, z: float = _Z) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a binomial rate; (0, 1) without trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


def _default_at(performance: pl.DataFrame, horizon: int) -> tuple[int, int]:
    """(loans observable at `horizon` months, defaults by then), read off `cumulative_default_curve`."""
    if performance.height == 0:
        return 0, 0
    curve = cumulative_default_curve(performance).filter(pl.col("months_on_book") == horizon)
    if curve.height == 0:
        return 0, 0
    return int(curve.get_column("loans").item(0)), int(curve.get_column("defaults").item(0))


def _cdr_verdict(n_r: int, d_r: int, n_s: int, d_s: int, threshold: float) -> dict[str, Any]:
    """The default-rate figures and verdict of one segment (see the module doc for the rules)."""
    real = d_r / n_r if n_r else None
    synthetic = d_s / n_s if n_s else None
    low, high = wilson_interval(d_r, n_r)
    out: dict[str, Any] = {
        "real_loans": n_r, "real_defaults": d_r, "real_cdr": real, "real_cdr_low": low, "real_cdr_high": high,
        "synthetic_loans": n_s, "synthetic_defaults": d_s, "synthetic_cdr": synthetic,
        "relative_diff": None, "noise_band": None,
    }
    if not n_r or not n_s:
        which = "real" if not n_r else "synthetic"
        return {**out, "verdict": NOT_MEASURED, "reason": f"no {which} loan of the segment is observable that long"}
    if d_r + d_s == 0:
        return {**out, "verdict": NOT_MEASURED, "reason": "no default in either book: nothing to compare"}
    pooled = (d_r + d_s) / (n_r + n_s)
    noise = _Z * math.sqrt(pooled * (1 - pooled) * (1 / n_r + 1 / n_s))
    diff = abs(synthetic - real)
    relative = diff / real if real > 0 else math.inf
    allowed = threshold * real
    out.update(relative_diff=relative, noise_band=noise)
    interval = f"real {real:.4f} (95% interval {low:.4f}-{high:.4f}, {d_r} defaults of {n_r})"
    if noise <= allowed:
        ok = diff <= allowed
        return {**out, "verdict": PASS if ok else FAIL,
                "reason": f"synthetic {synthetic:.4f} vs {interval}: {relative:.1%} relative "
                          f"({'within' if ok else 'beyond'} the {threshold:.0%} target)"}
    if diff > noise * _FAIL_Z / _Z:
        return {**out, "verdict": FAIL,
                "reason": f"synthetic {synthetic:.4f} vs {interval}: {relative:.1%} relative, "
                          f"{diff / (noise / _Z):.1f} standard errors apart (the 95% chance band is +-{noise:.4f})"}
    return {**out, "verdict": INCONCLUSIVE,
            "reason": f"synthetic {synthetic:.4f} vs {interval}: too few defaults to judge {threshold:.0%}; "
                      f"chance differences reach +-{noise:.4f} ({noise / max(real, 1e-12):.0%} relative)"}


def _row_verdicts(real: np.ndarray, synthetic: np.ndarray, threshold: float, min_transitions: int) -> list[dict[str, Any]]:
    """One entry per transient from-state: the largest absolute difference of its row, the chance band, the verdict."""
    out = []
    for state in TRANSIENT:
        i = STATE_INDEX[state]
        n_r, n_s = int(real[i].sum()), int(synthetic[i].sum())
        entry: dict[str, Any] = {"state": state, "real_transitions": n_r, "synthetic_transitions": n_s,
                                 "max_abs_diff": None, "noise_band": None, "worst_to": None}
        if n_r < min_transitions or n_s == 0:
            if n_r == 0:
                reason = f"the real segment never leaves {state}"
            elif n_r < min_transitions:
                reason = f"only {n_r} real transitions out of {state} (fewer than {min_transitions})"
            else:
                reason = f"the synthetic segment never leaves {state}"
            out.append({**entry, "verdict": NOT_MEASURED, "reason": reason})
            continue
        p_r, p_s = real[i] / n_r, synthetic[i] / n_s
        pooled = (real[i] + synthetic[i]) / (n_r + n_s)
        band = _Z * np.sqrt(pooled * (1 - pooled) * (1 / n_r + 1 / n_s))
        diff = np.abs(p_r - p_s)
        worst = int(diff.argmax())
        entry.update(max_abs_diff=float(diff.max()), noise_band=float(band.max()), worst_to=STATES[worst])
        where = f"{state}->{STATES[worst]} {p_s[worst]:.4f} vs real {p_r[worst]:.4f}"
        if band.max() <= threshold:
            ok = diff.max() <= threshold
            verdict, reason = (PASS if ok else FAIL), f"largest difference {diff.max():.4f} ({where})"
        elif (diff > np.maximum(band * _FAIL_Z / _Z, threshold)).any():
            j = int(np.argmax(diff - np.maximum(band * _FAIL_Z / _Z, threshold)))
            verdict = FAIL
            reason = (f"{state}->{STATES[j]} {p_s[j]:.4f} vs real {p_r[j]:.4f}: {diff[j] / (band[j] / _Z):.1f} standard "
                      f"errors apart (the 95% chance band is +-{band[j]:.4f}) and beyond the {threshold} target")
        else:
            verdict = INCONCLUSIVE
            reason = (f"{n_r} real transitions out of {state}: chance differences reach +-{band.max():.4f}, wider than "
                      f"the {threshold} target (largest difference {diff.max():.4f})")
        out.append({**entry, "verdict": verdict, "reason": reason})
    return out


def _book_summary(book: SequenceFidelity) -> dict[str, Any]:
    """The book-level comparisons of `compare_sequences` as differences: roll rates, vintage curves, time to default."""
    rolls = {}
    for kind in ("roll", "cure", "roll_balance"):
        for key, real in book.real_roll_rates[kind].items():
            synthetic = book.synthetic_roll_rates[kind].get(key)
            rolls[f"{kind} {key}"] = {"real": real, "synthetic": synthetic,
                                      "abs_diff": None if real is None or synthetic is None else abs(synthetic - real)}
    judged = [v["abs_diff"] for v in rolls.values() if v["abs_diff"] is not None]
    vintage: dict[str, Any] = {"compared": False}
    if book.real_vintage_curve is not None and book.synthetic_vintage_curve is not None:
        joined = book.real_vintage_curve.join(
            book.synthetic_vintage_curve.select("vintage", "months_on_book", pl.col("cumulative_default_rate").alias("_s")),
            on=["vintage", "months_on_book"], how="inner",
        ).filter((pl.col("months_on_book") == book.horizon) & (pl.col("loans") > 0))
        gaps = (joined.get_column("_s") - joined.get_column("cumulative_default_rate")).abs()
        vintage = {"compared": True, "vintages": joined.height, "month": book.horizon,
                   "max_abs_diff": float(gaps.max()) if joined.height else None,
                   "mean_abs_diff": float(gaps.mean()) if joined.height else None}
    real_t, synth_t = book.real_time_to_default, book.synthetic_time_to_default
    return {
        "roll_rates": rolls,
        "roll_rates_max_abs_diff": max(judged) if judged else None,
        "vintage": vintage,
        "time_to_default": {
            "real_mean": real_t["mean"], "synthetic_mean": synth_t["mean"],
            "real_median": real_t["quantiles"].get("p50"), "synthetic_median": synth_t["quantiles"].get("p50"),
            "real_default_share": real_t["default_share"], "synthetic_default_share": synth_t["default_share"],
        },
    }


@dataclass
class ConditionalFidelity:
    """Per-segment fidelity of a synthetic book, with the book-level comparison beside it.

    Attributes:
        segments: one row per (dimension, segment), the whole book first as
            dimension "book": real and synthetic loans, defaults and 12-month
            default rates, the real rate's Wilson interval, the relative
            difference, the chance band of the difference, verdict and reason.
        rows: one row per (dimension, segment, transient from-state): real and
            synthetic transitions, the row's largest absolute difference and
            its destination, the chance band, verdict and reason.
        dimensions: the dimensions used (`Dimension.to_dict`).
        book: `compare_sequences` of the whole books.
        book_summary: roll-rate, vintage-curve and time-to-default differences.
        horizon: months on book of the default rates.
    """

    segments: pl.DataFrame
    rows: pl.DataFrame
    dimensions: list[dict[str, Any]]
    book: SequenceFidelity
    book_summary: dict[str, Any]
    horizon: int
    cdr_threshold: float = CDR_THRESHOLD
    row_threshold: float = ROW_THRESHOLD

    @property
    def failures(self) -> list[str]:
        """One line per failed check, naming the dimension, the segment and why."""
        out = [f"{r['dimension']} {r['segment']}: {self.horizon}-month default rate: {r['reason']}"
               for r in self.segments.filter(pl.col("verdict") == FAIL).iter_rows(named=True)]
        out += [f"{r['dimension']} {r['segment']}: transition row: {r['reason']}"
                for r in self.rows.filter(pl.col("verdict") == FAIL).iter_rows(named=True)]
        return out

    @property
    def passed(self) -> bool:
        """True when no check failed and at least one default rate and one row were judged and passed."""
        return (not self.failures
                and (self.segments.get_column("verdict") == PASS).any()
                and (self.rows.get_column("verdict") == PASS).any())

    def verdicts(self) -> dict[str, dict[str, int]]:
        """How many default-rate and transition-row checks ended in each verdict."""
        def count(frame: pl.DataFrame) -> dict[str, int]:
            found = dict(frame.get_column("verdict").value_counts().iter_rows())
            return {v: int(found.get(v, 0)) for v in (PASS, FAIL, INCONCLUSIVE, NOT_MEASURED)}

        return {"default_rate": count(self.segments), "transition_rows": count(self.rows)}

    def to_dict(self) -> dict[str, Any]:
        """Every figure as JSON-ready values (tables as lists of rows)."""
        return _json({
            "segments": self.segments, "rows": self.rows, "dimensions": self.dimensions,
            "book": self.book.to_dict(), "book_summary": self.book_summary, "horizon": self.horizon,
            "cdr_threshold": self.cdr_threshold, "row_threshold": self.row_threshold,
            "verdicts": self.verdicts(), "failures": self.failures, "passed": self.passed,
        })


def conditional_fidelity(
    real_loans: pl.DataFrame,
    real_perf: pl.DataFrame,
    synth_perf: pl.DataFrame,
    *,
    synth_loans: pl.DataFrame | None = None,
    schema: TableSchema | None = None,
    dimensions: list[Dimension] | None = None,
    id_column: str = "loan_id",
    horizon: int = 12,
    cdr_threshold: float = CDR_THRESHOLD,
    row_threshold: float = ROW_THRESHOLD,
    min_row_transitions: int = 30,
    book: SequenceFidelity | None = None,
) -> ConditionalFidelity:
    """Compare synthetic histories of the real loans with their real histories, segment by segment.

    Args:
        real_loans: the real loans (static attributes), keyed by `id_column`.
        real_perf: their real monthly histories (canonical columns).
        synth_perf: synthetic histories sampled on those loans' attributes.
        synth_loans: the loans behind `synth_perf` when its ids are not the
            real ones (several copies of each loan under new ids, say); they
            need the segment columns. None: `synth_perf` shares the real ids.
        schema: the real loans' schema, so ids and the target are never a
            segment and types are the declared ones.
        dimensions: the segment dimensions; None finds them with
            `discover_dimensions`.
        id_column: the loan id column of the loans tables.
        horizon: months on book of the default rate (12); a shorter book is
            judged at its longest month.
        cdr_threshold: the relative difference of a segment's default rate
            that passes (0.10).
        row_threshold: the largest absolute difference within a transition
            row that passes (0.02).
        min_row_transitions: real transitions a row needs to be measured.
        book: `compare_sequences` of the same two books at the same horizon, when the caller has it already;
            None computes it.

    Raises:
        InvalidDataError: a loans table lacks `id_column`, or no synthetic
            history belongs to a known loan.
    """
    synth_loans = real_loans if synth_loans is None else synth_loans
    for name, frame in (("real", real_loans), ("synthetic", synth_loans)):
        if id_column not in frame.columns:
            raise InvalidDataError(
                f"the {name} loans have no id column '{id_column}'.",
                column=id_column,
                fix="pass id_column, the column keying both the loans and the histories.",
            )
    dimensions = discover_dimensions(real_loans, schema) if dimensions is None else dimensions
    real_ids = real_loans.get_column(id_column).cast(pl.String)
    synth_ids = synth_loans.get_column(id_column).cast(pl.String)
    known = synth_perf.get_column("loan_id").cast(pl.String).is_in(synth_ids.implode())
    if synth_perf.height and not known.any():
        raise InvalidDataError(
            "no synthetic history belongs to a loan of the loans table: the ids differ.",
            column="loan_id",
            fix="sample the synthetic histories on the real loans (same ids), or pass synth_loans.",
        )
    if book is None:
        book = compare_sequences(real_perf, synth_perf, real_loans, synth_loans, horizon=horizon, id_column=id_column)
    at = book.horizon

    def keyed(frame: pl.DataFrame, ids: pl.Series) -> pl.DataFrame:
        return frame.with_columns(pl.col("loan_id").cast(pl.String)).join(
            pl.DataFrame({"loan_id": ids}).with_row_index("_row"), on="loan_id", how="inner"
        )

    real_keyed, synth_keyed = keyed(real_perf, real_ids), keyed(synth_perf, synth_ids)
    groups: list[tuple[str, str | None, str, pl.DataFrame, pl.DataFrame]] = [("book", None, "all", real_keyed, synth_keyed)]
    for dim in dimensions:
        levels = None
        if dim.kind == "categorical":
            counts = dim.labels(real_loans).value_counts(sort=True)
            levels = counts.get_column(dim.name).head(_MAX_LEVELS).to_list()
        real_label = dim.labels(real_loans, levels).to_numpy()
        synth_label = dim.labels(synth_loans, levels).to_numpy()
        real_rows = real_keyed.get_column("_row").to_numpy()
        synth_rows = synth_keyed.get_column("_row").to_numpy()
        order = dim.band_names() + ["(missing)"] if dim.kind == "bands" else sorted(levels or []) + ["(other)"]
        for level in order:
            real_part = real_keyed.filter(pl.Series(real_label[real_rows] == level))
            if real_part.height == 0:
                continue
            synth_part = synth_keyed.filter(pl.Series(synth_label[synth_rows] == level))
            groups.append((dim.name, dim.column, str(level), real_part, synth_part))

    segment_rows, transition_rows = [], []
    for name, column, level, real_part, synth_part in groups:
        n_r, d_r = _default_at(real_part.drop("_row"), at)
        n_s, d_s = _default_at(synth_part.drop("_row"), at)
        head = {"dimension": name, "column": column, "segment": level}
        segment_rows.append({**head, **_cdr_verdict(n_r, d_r, n_s, d_s, cdr_threshold)})
        real_counts = transition_counts(real_part.drop("_row"))
        synth_counts = transition_counts(synth_part.drop("_row")) if synth_part.height else np.zeros_like(real_counts)
        transition_rows += [{**head, **row} for row in
                            _row_verdicts(real_counts, synth_counts, row_threshold, min_row_transitions)]
    segments = pl.DataFrame(segment_rows, infer_schema_length=None)
    rows = pl.DataFrame(transition_rows, infer_schema_length=None)
    return ConditionalFidelity(
        segments=segments,
        rows=rows,
        dimensions=[d.to_dict() for d in dimensions],
        book=book,
        book_summary=_book_summary(book),
        horizon=at,
        cdr_threshold=cdr_threshold,
        row_threshold=row_threshold,
    )
