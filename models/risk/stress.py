"""Stress testing of a credit book: scenarios through the PD model to losses and band migration.

A stress test asks how much a lender would lose if the economy turned: rates
up, incomes down, collateral worth less. `run_stress` answers it per scenario
and segment for any PD model, given as a plain callable (`predict_pd`: a
feature frame in, one PD per row out), so it works with whichever model the
tenant's `risk_model` asset trained.

For each scenario:

1. **Feature shocks** change the book's columns before the model sees them:
   ``add``, ``multiply`` or ``set`` a column, optionally on a segment only
   (``unit: pp`` adds percentage points on either a percent or a fraction
   scale). Linked ratios follow: an income shock moves DTI
   (``dti * income_before / income_after``, i.e. ``dti / (1 - shock)`` for a
   relative fall), and a collateral haircut moves LTV (``ltv / (1 - haircut)``).
2. **The model** gives each loan's stressed PD from the shocked features.
3. **PD multipliers** by segment (``"all"`` or ``{column: value or [values]}``)
   scale it, for effects the model's features cannot carry; a PD pushed above
   1 is capped at 1, and the count and share of capped loans are reported.
4. **LGD**: the base LGD (0.45, or per segment) or the scenario's override,
   raised by the collateral haircut ``h`` (collateral value falls by the share
   ``h``, so recoveries fall by ``h`` too): ``LGD' = LGD + (1 - LGD) * h``. The
   haircut applies to secured loans (a non-null LTV) when the book has an LTV
   column, otherwise to every loan.
5. **EAD** = exposure x (1 + ead_change), by segment if wanted (drawn-down lines).
   The exposure column is found by name and type (`find_exposure`); a book
   without one runs count-based (each loan an exposure of 1), and the result,
   its warnings and its PDF say so.
6. **Expected loss** EL = PD x LGD x EAD; per scenario and segment (and
   ``all``): loans, exposure, stressed EAD, mean PD (the default rate),
   expected loss and loss rate (EL / current exposure, so an EAD increase
   shows in the rate); the migration matrix between risk bands, from each
   loan's baseline band (the model on the unshocked book) to its scenario band.

Built-in scenarios (`builtin_scenarios`) are *illustrative defaults*: their
shape follows the supervisory exercises (the EBA EU-wide stress test's adverse
scenario and the Federal Reserve's DFAST/CCAR severely adverse scenario: higher
rates, lower incomes, falling house and collateral prices, more defaults), but
their sizes are round numbers chosen for a demonstration, not taken from either
publication. Calibrate your own scenarios to your macro forecasts and add them
to ``tenant.yaml`` under ``stress.scenarios``. A built-in shock on a column the
book lacks is skipped and listed; the same in a tenant scenario is an error.

Everything is vectorised (NumPy, polars): per scenario one model call, a few
array operations and `np.bincount` aggregations, so the cost is the model's
predict time plus a few milliseconds per 100k loans. Charts are rendered only
when asked (`StressResult.render_charts`), keeping the numbers path fast.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.errors import InvalidDataError
from models.tape.names import is_income_name, is_interest_rate_name, name_words
from models.tape.schema import TENANT_FILE

if TYPE_CHECKING:  # reports imports nothing heavy, but keep the dependency explicit
    from models.reports.pdf import PdfReport

ALL = "all"
DEFAULT_LGD = 0.45
DEFAULT_BANDS: tuple[tuple[str, float], ...] = (("LOW", 0.2), ("MEDIUM", 0.5), ("HIGH", 1.0))
BUILTIN_SCENARIO_NAMES: tuple[str, ...] = ("baseline", "adverse", "severely_adverse")
SEGMENT_CANDIDATES: tuple[str, ...] = ("product", "grade")
# Canonical names of an exposure (matched with their aliases in models.tape.features.CANONICAL_ALIASES).
EXPOSURE_CANDIDATES: tuple[str, ...] = ("loan_amount", "funded_amount", "balance")
# Name hints of an exposure column, strongest first ("amt"/"amnt" abbreviate amount); "ead" is matched as a
# whole word only, since it sits inside ordinary words (lead, head).
EXPOSURE_HINTS: tuple[str, ...] = ("exposure", "ead", "upb", "balance", "principal", "amount", "amnt", "amt", "limit")
COUNT_BASED = "count-based: each loan an exposure of 1"
RATE_CANDIDATES: tuple[str, ...] = ("interest_rate", "int_rate", "rate")
INCOME_CANDIDATES: tuple[str, ...] = ("annual_income", "income", "monthly_income")
DTI_CANDIDATES: tuple[str, ...] = ("dti",)
LTV_CANDIDATES: tuple[str, ...] = ("ltv",)
PD_HISTOGRAM_BINS = 50
MISSING_SEGMENT = "(missing)"
_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,63}$"
_PD_TOLERANCE = 1e-9

_Scalar = str | int | float | bool
_Share = Annotated[float, Field(ge=0.0, le=1.0)]
SegmentFilter = Literal["all"] | dict[str, _Scalar | list[_Scalar]]
PredictPD = Callable[[pl.DataFrame], np.ndarray]


class _Strict(BaseModel):
    """The tenant.yaml model style (as in models.tape.tenant): unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


def _check_segment(value: Any) -> Any:
    if isinstance(value, dict):
        if not value:
            raise ValueError("a segment needs at least one column, or the word 'all'")
        for column, wanted in value.items():
            if isinstance(wanted, list) and not wanted:
                raise ValueError(f"segment column {column!r} lists no values")
    return value


class FeatureShock(_Strict):
    """One change to a feature column before the model scores the book.

    ``kind`` ``add`` adds ``value``, ``multiply`` multiplies by it, ``set``
    replaces the column by it. ``unit: pp`` (add only) reads ``value`` as
    percentage points: added as is when the column holds percents (its 95th
    percentile is above 1), divided by 100 when it holds fractions.
    ``segment`` limits the shock to matching loans (as read on the unshocked book).
    """

    column: str = Field(min_length=1)
    kind: Literal["add", "multiply", "set"]
    value: _Scalar
    unit: Literal["value", "pp"] = "value"
    segment: SegmentFilter = ALL

    @field_validator("segment")
    @classmethod
    def _segment(cls, value: Any) -> Any:
        return _check_segment(value)

    @model_validator(mode="after")
    def _numeric_value(self) -> "FeatureShock":
        if self.kind in ("add", "multiply"):
            if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not math.isfinite(self.value):
                raise ValueError(f"'{self.kind}' needs a finite number as value, got {self.value!r}")
        if self.unit == "pp" and self.kind != "add":
            raise ValueError("unit 'pp' (percentage points) goes with kind 'add' only")
        return self


class PdMultiplier(_Strict):
    """Multiply the model's PD by ``multiplier`` on a segment (``"all"`` or ``{column: value or [values]}``)."""

    segment: SegmentFilter = ALL
    multiplier: float = Field(gt=0.0)

    @field_validator("segment")
    @classmethod
    def _segment(cls, value: Any) -> Any:
        return _check_segment(value)

    @field_validator("multiplier")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number greater than 0")
        return value


class EadChange(_Strict):
    """Relative change of exposure at default on a segment: +0.1 means 10 % more drawn."""

    segment: SegmentFilter = ALL
    change: float = Field(gt=-1.0, le=10.0)

    @field_validator("segment")
    @classmethod
    def _segment(cls, value: Any) -> Any:
        return _check_segment(value)


class ScenarioSpec(_Strict):
    """One stress scenario, built in or from ``tenant.yaml`` (``stress.scenarios``).

    Attributes:
        name: shown in tables and charts (letters, digits, space, ``_.+-``).
        description: one line for the report.
        feature_shocks: changes to model inputs, applied in order.
        pd_multipliers: PD scalings by segment; overlapping ones multiply.
        lgd: LGD override for this scenario, one share or per value of the
            segmentation column (``"*"`` for the rest); None keeps the base LGD.
        lgd_haircut: collateral value falls by this share: LGD rises to
            ``LGD + (1 - LGD) * h`` and LTV to ``ltv / (1 - h)``.
        haircut_secured_only: apply the haircut's LGD effect only to loans with
            a non-null LTV (when the book has an LTV column).
        ead_change: relative exposure change, for all loans or by segment.
    """

    name: str = Field(pattern=_NAME_PATTERN)
    description: str = Field(default="", max_length=500)
    feature_shocks: list[FeatureShock] = Field(default_factory=list)
    pd_multipliers: list[PdMultiplier] = Field(default_factory=list)
    lgd: _Share | dict[str, _Share] | None = None
    lgd_haircut: float = Field(default=0.0, ge=0.0, lt=1.0)
    haircut_secured_only: bool = True
    ead_change: Annotated[float, Field(gt=-1.0, le=10.0)] | list[EadChange] = 0.0


class StressConfig(_Strict):
    """The ``stress:`` section of ``tenant.yaml``; every key is optional.

    Attributes:
        scenarios: the tenant's scenarios, run after the built-ins.
        replace_builtin: run only the tenant's scenarios (the baseline bands
            still come from the model on the unshocked book).
        segment_by: the segmentation column; "auto" picks ``product`` when
            present, else ``grade``, else none; null means no segments.
        exposure_column: exposure (EAD base); default detected (see
            `find_exposure`): a column named as an exposure (loan_amount,
            funded_amount, balance or one of their aliases, else a name with
            exposure, ead, upb, balance, principal, amount or limit in it) that
            is numeric, present and non-negative on every loan; with none, the
            test runs count-based (each loan an exposure of 1) and says so.
        lgd_base: the base LGD, one share or per value of ``segment_by``
            (``"*"`` covers values not listed).
        bands: risk bands as (name, max PD), increasing, the last max 1.0.
        rate_column, income_column, dti_column, ltv_column: the columns the
            built-in shocks and the linked ratios use; default detected by
            name (interest_rate, annual_income, dti, ltv and aliases).
    """

    scenarios: list[ScenarioSpec] = Field(default_factory=list)
    replace_builtin: bool = False
    segment_by: str | None = "auto"
    exposure_column: str | None = None
    lgd_base: _Share | dict[str, _Share] = DEFAULT_LGD
    bands: list[tuple[str, float]] = Field(default_factory=lambda: list(DEFAULT_BANDS))
    rate_column: str | None = None
    income_column: str | None = None
    dti_column: str | None = None
    ltv_column: str | None = None

    @field_validator("bands")
    @classmethod
    def _bands(cls, bands: list[tuple[str, float]]) -> list[tuple[str, float]]:
        if not bands:
            raise ValueError("needs at least one band")
        names = [name for name, _ in bands]
        if len(set(names)) != len(names) or any(not name for name in names):
            raise ValueError("band names must be non-empty and distinct")
        limits = [limit for _, limit in bands]
        if any(not math.isfinite(x) or x <= 0.0 for x in limits) or any(b <= a for a, b in zip(limits, limits[1:])):
            raise ValueError("band maxima must be increasing numbers above 0")
        if limits[-1] != 1.0:
            raise ValueError("the last band's maximum must be 1.0 so every PD falls in a band")
        return bands

    @model_validator(mode="after")
    def _names(self) -> "StressConfig":
        names = [s.name for s in self.scenarios]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"scenario name(s) {duplicated} appear more than once")
        if not self.replace_builtin:
            clash = sorted(set(names) & set(BUILTIN_SCENARIO_NAMES))
            if clash:
                raise ValueError(
                    f"scenario name(s) {clash} are built in; rename them or set replace_builtin: true"
                )
        if self.replace_builtin and not self.scenarios:
            raise ValueError("replace_builtin: true needs at least one scenario under 'scenarios'")
        return self

    def named_columns(self) -> dict[str, list[str]]:
        """Every loans-table column this config names, keyed by the config key naming it.

        For `TenantConfig.loan_columns`-style checks at upload time; `run_stress`
        checks the same against the book it is given.
        """
        named: dict[str, list[str]] = {}
        if self.segment_by not in (None, "auto"):
            named["stress.segment_by"] = [self.segment_by]
        for key in ("exposure_column", "rate_column", "income_column", "dti_column", "ltv_column"):
            if getattr(self, key) is not None:
                named[f"stress.{key}"] = [getattr(self, key)]
        for i, spec in enumerate(self.scenarios):
            columns: list[str] = []
            segments = [s.segment for s in spec.feature_shocks] + [m.segment for m in spec.pd_multipliers]
            if isinstance(spec.ead_change, list):
                segments += [c.segment for c in spec.ead_change]
            columns += [shock.column for shock in spec.feature_shocks]
            columns += [c for segment in segments if isinstance(segment, dict) for c in segment]
            if columns:
                named[f"stress.scenarios[{i}]"] = list(dict.fromkeys(columns))
        return named

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def builtin_scenarios(rate_column: str = "interest_rate", income_column: str = "annual_income") -> list[ScenarioSpec]:
    """The built-in baseline, adverse and severely adverse scenarios (illustrative defaults).

    Shaped like the EBA adverse and the Fed severely adverse scenarios (rates
    up, incomes down, collateral down, a PD overlay), with round sizes of our
    own: adverse +2 pp rate, -5 % income, -10 % collateral, PD x1.3; severely
    adverse +4 pp, -12 %, -25 %, PD x1.8. Calibrate to your own macro scenarios.

    Args:
        rate_column: the interest-rate column the rate shock applies to.
        income_column: the income column the income shock applies to.
    """
    note = "Illustrative default, not a supervisory scenario; calibrate to your own macro scenarios."
    return [
        ScenarioSpec(name="baseline", description=f"No shock: the model's PD on the current book. {note}"),
        ScenarioSpec(
            name="adverse",
            description=f"EBA-style adverse: rates +2 pp, income -5 %, collateral -10 %, PD x1.3. {note}",
            feature_shocks=[
                FeatureShock(column=rate_column, kind="add", value=2.0, unit="pp"),
                FeatureShock(column=income_column, kind="multiply", value=0.95),
            ],
            pd_multipliers=[PdMultiplier(multiplier=1.3)],
            lgd_haircut=0.10,
        ),
        ScenarioSpec(
            name="severely_adverse",
            description=f"Fed-style severely adverse: rates +4 pp, income -12 %, collateral -25 %, PD x1.8. {note}",
            feature_shocks=[
                FeatureShock(column=rate_column, kind="add", value=4.0, unit="pp"),
                FeatureShock(column=income_column, kind="multiply", value=0.88),
            ],
            pd_multipliers=[PdMultiplier(multiplier=1.8)],
            lgd_haircut=0.25,
        ),
    ]


@dataclass
class ScenarioOutcome:
    """What one scenario did and gave.

    Attributes:
        name, description, builtin: the scenario.
        segments: one dict per segment and ``all`` (loans, exposure, ead,
            default_rate, expected_loss, loss_rate, mean_lgd).
        migration: ``counts`` and row ``shares`` (baseline band -> scenario band).
        migration_by_segment: the same per segment value.
        capped_loans, capped_share: loans whose PD x multipliers exceeded 1.
        applied: the shocks applied (column, kind, value, rows, source).
        skipped: built-in shocks skipped (column, reason).
        warnings: lines for the log and the report.
        pd_histogram: loans per PD bin (`PD_HISTOGRAM_BINS` equal bins on [0, 1]).
        model_called: False when the scenario changes no feature (baseline PD reused).
    """

    name: str
    description: str
    builtin: bool
    segments: list[dict[str, Any]]
    migration: dict[str, Any]
    migration_by_segment: dict[str, dict[str, Any]]
    capped_loans: int
    capped_share: float
    applied: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    warnings: list[str]
    pd_histogram: list[int]
    model_called: bool

    def segment(self, name: str = ALL) -> dict[str, Any]:
        """The figures of one segment (``all`` by default)."""
        for row in self.segments:
            if row["segment"] == name:
                return row
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "builtin": self.builtin,
            "segments": self.segments,
            "migration": self.migration,
            "migration_by_segment": self.migration_by_segment,
            "capped_loans": self.capped_loans,
            "capped_share": self.capped_share,
            "applied": self.applied,
            "skipped": self.skipped,
            "warnings": self.warnings,
            "pd_histogram": self.pd_histogram,
            "model_called": self.model_called,
        }


@dataclass
class StressResult:
    """The outcome of `run_stress`: figures per scenario and segment, JSON-ready, charts on demand.

    Attributes:
        tenant: the tenant id (for reports).
        loans: loans in the book.
        segment_by: the segmentation column, or None.
        segment_labels: the segment values, in table order (without ``all``).
        exposure_column: the exposure column, None when the test is count-based.
        exposure_note: how the exposure was chosen (and which columns were passed over, and why).
        bands: (name, max PD) per risk band.
        scenarios: one `ScenarioOutcome` per scenario, in run order.
        config: the effective `StressConfig` as a dict.
        columns: the role columns used (rate, income, dti, ltv; None when absent).
        warnings: every warning line, scenario by scenario.
        timings: seconds spent in the model (``model_s``) and in total (``total_s``).
        loan_pd: per-loan stressed PD by scenario, only when `run_stress(keep_loan_pd=True)`.
    """

    tenant: str | None
    loans: int
    segment_by: str | None
    segment_labels: list[str]
    exposure_column: str | None
    bands: list[tuple[str, float]]
    scenarios: list[ScenarioOutcome]
    config: dict[str, Any]
    columns: dict[str, str | None]
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    loan_pd: dict[str, np.ndarray] | None = None
    exposure_note: str = ""
    _charts: dict[str, bytes] | None = field(default=None, repr=False)

    def scenario(self, name: str) -> ScenarioOutcome:
        for outcome in self.scenarios:
            if outcome.name == name:
                return outcome
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """Every figure as plain JSON types (no per-loan arrays, no charts)."""
        return {
            "tenant": self.tenant,
            "loans": self.loans,
            "segment_by": self.segment_by,
            "segments": list(self.segment_labels),
            "exposure_column": self.exposure_column,
            "exposure_basis": "column" if self.exposure_column else "count",
            "exposure_note": self.exposure_note,
            "bands": [{"name": name, "max_pd": limit} for name, limit in self.bands],
            "columns": dict(self.columns),
            "config": self.config,
            "scenarios": [s.to_dict() for s in self.scenarios],
            "warnings": list(self.warnings),
            "timings": dict(self.timings),
            "pd_histogram_edges": np.linspace(0.0, 1.0, PD_HISTOGRAM_BINS + 1).round(6).tolist(),
        }

    def table(self) -> pl.DataFrame:
        """One row per scenario and segment (``all`` first): the table for the Dagster metadata."""
        rows = [
            {
                "scenario": outcome.name,
                "segment": row["segment"],
                "loans": row["loans"],
                "exposure": row["exposure"],
                "default_rate": row["default_rate"],
                "expected_loss": row["expected_loss"],
                "loss_rate": row["loss_rate"],
            }
            for outcome in self.scenarios
            for row in outcome.segments
        ]
        schema = {
            "scenario": pl.String, "segment": pl.String, "loans": pl.Int64, "exposure": pl.Float64,
            "default_rate": pl.Float64, "expected_loss": pl.Float64, "loss_rate": pl.Float64,
        }
        return pl.DataFrame(rows, schema=schema)

    def render_charts(self) -> dict[str, bytes]:
        """Render (once) and return the PNG charts: ``loss_rate``, ``pd_distribution``, ``migration``."""
        if self._charts is None:
            from models.reports.plots import migration_heatmap_png, pd_distribution_png, stress_loss_rate_png

            segments = [ALL, *self.segment_labels]
            names = [s.name for s in self.scenarios]
            rates = np.array([[_nan(s.segment(g)["loss_rate"]) for g in segments] for s in self.scenarios], dtype=np.float64)
            edges = np.linspace(0.0, 1.0, PD_HISTOGRAM_BINS + 1)
            histograms = {s.name: np.asarray(s.pd_histogram) for s in self.scenarios}
            band_names = [name for name, _ in self.bands]
            # The built-in baseline's matrix is the identity; leave it out unless it is all there is.
            matrices = {s.name: np.asarray(s.migration["counts"]) for s in self.scenarios
                        if not (s.builtin and s.name == "baseline")}
            if not matrices:
                matrices = {s.name: np.asarray(s.migration["counts"]) for s in self.scenarios}
            self._charts = {
                "loss_rate": stress_loss_rate_png(names, segments, rates, "Loss rate (EL / exposure) by scenario and segment"),
                "pd_distribution": pd_distribution_png(edges, histograms, "PD distribution per scenario"),
                "migration": migration_heatmap_png(matrices, band_names, "Risk band migration from baseline"),
            }
        return self._charts

    @property
    def charts(self) -> dict[str, bytes]:
        """The charts as PNG bytes, rendered on first access (see `render_charts`)."""
        return self.render_charts()


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


# ---------------------------------------------------------------------------
# Resolving columns and segments
# ---------------------------------------------------------------------------


def _columns_hint(columns: Sequence[str]) -> str:
    shown = sorted(columns)
    return f"{shown[:30]}{'...' if len(shown) > 30 else ''}"


def _values_hint(values: Sequence[Any]) -> str:
    shown = sorted(values, key=lambda v: (v is None, str(v)))
    return f"{shown[:30]}{' ...' if len(shown) > 30 else ''}"


def _configured_column(book: pl.DataFrame, key: str, value: str | None, candidates: Sequence[str], tenant: str | None) -> str | None:
    """The column a config key names (it must exist) or the first present of `candidates`."""
    if value is not None:
        if value not in book.columns:
            raise InvalidDataError(
                f"stress.{key} names column '{value}', which the book does not have "
                f"(it has {book.width} columns: {_columns_hint(book.columns)}).",
                tenant=tenant,
                file=TENANT_FILE,
                column=value,
                fix=f"correct stress.{key} in {TENANT_FILE} to one of the book's columns, or remove it to use the default.",
            )
        return value
    return next((c for c in candidates if c in book.columns), None)


def _named_column(book: pl.DataFrame, matcher: Callable[[str], bool]) -> str | None:
    """The first numeric column whose name `matcher` accepts (loan_int_rate, MonthlyIncome), when no usual name is
    present; the scenarios' shocks would otherwise skip such a tape's rate or income without a word in the CLI."""
    return next((c for c in book.columns if book.schema[c].is_numeric() and matcher(c)), None)


def _is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric()


def _hint_of(column: str) -> int | None:
    """The rank in `EXPOSURE_HINTS` of the strongest hint in a column's name, None without one."""
    import re

    name = column.lower()
    words = set(name_words(column))
    for rank, hint in enumerate(EXPOSURE_HINTS):
        if (hint in words) if hint == "ead" else (hint in re.sub(r"[^a-z0-9]", "", name)):
            return rank
    return None


def _unusable_exposure(book: pl.DataFrame, column: str) -> str | None:
    """Why `column` cannot be each loan's exposure, or None when it can."""
    dtype = book.schema[column]
    if not _is_numeric(dtype):
        return f"type {dtype}, not a number"
    values = book[column].cast(pl.Float64).fill_null(float("nan")).to_numpy()
    bad = int((~np.isfinite(values) | (values < 0)).sum())
    if bad:
        return f"{bad} loan(s) missing, negative or not finite"
    if not (values > 0).any():
        return "zero on every loan"
    return None


def find_exposure(book: pl.DataFrame, *, ignore: Sequence[str] = ()) -> tuple[str | None, str]:
    """The column holding each loan's exposure, found by name and type, with a note saying how.

    Candidates, in order: the canonical names and their aliases (loan_amount,
    funded_amount, balance, as `models.tape.features` resolves them, case and
    separators ignored), then any column whose name holds an exposure hint
    (`EXPOSURE_HINTS`, strongest first; between columns with the same hint, the
    larger median, since an amount owed dwarfs a fee or an arrears amount).
    The first that is numeric, present, finite and non-negative on every loan
    (and not zero throughout) wins; the candidates passed over are named
    with the reason.

    Args:
        book: one row per loan.
        ignore: columns never to take (the id, the default flag).

    Returns:
        ``(column, note)``, or ``(None, note)`` when no column qualifies: the
        test is then count-based, and the note says what to set.
    """
    from models.tape.features import resolve_columns

    columns = [c for c in book.columns if c not in set(ignore)]
    resolved = resolve_columns(columns)
    named = [resolved[c] for c in EXPOSURE_CANDIDATES if c in resolved]
    hinted = [(rank, c) for c in columns if c not in named and (rank := _hint_of(c)) is not None]

    def median(column: str) -> float:
        if not _is_numeric(book.schema[column]):
            return float("-inf")
        value = book[column].cast(pl.Float64).median()
        return float("-inf") if value is None else float(value)

    hinted.sort(key=lambda pair: (pair[0], -median(pair[1]), pair[1]))
    passed_over: list[str] = []
    for column, why in [(c, "named as an exposure") for c in named] + [
        (c, f"its name holds '{EXPOSURE_HINTS[rank]}'") for rank, c in hinted
    ]:
        problem = _unusable_exposure(book, column)
        if problem is None:
            note = f"exposure from '{column}' ({why})"
            return column, note + (f"; passed over: {'; '.join(passed_over)}" if passed_over else "")
        passed_over.append(f"'{column}' ({problem})")
    looked = (
        f"passed over: {'; '.join(passed_over)}" if passed_over
        else f"no column is named as an exposure (loan_amount, funded_amount, balance or a name with {', '.join(EXPOSURE_HINTS)})"
    )
    return None, (
        f"{COUNT_BASED}: {looked}. Expected losses are in loans, not money, and the loss rate is the mean "
        f"PD x LGD. Set stress.exposure_column in {TENANT_FILE} to a numeric, non-negative column to weigh "
        "losses by amount"
    )


class _Segments:
    """Integer codes of the segmentation column and masks for segment filters (cached)."""

    def __init__(self, book: pl.DataFrame, segment_by: str | None) -> None:
        self.book = book
        self.segment_by = segment_by
        self._known: dict[str, list[Any]] = {}
        self._masks: dict[tuple, np.ndarray] = {}
        if segment_by is None:
            self.codes = np.zeros(book.height, dtype=np.int64)
            self.labels: list[str] = []
            self.count = 1
            self.aliases: dict[Any, int] = {}
            return
        series = book[segment_by]
        text = series.cast(pl.String).fill_null(MISSING_SEGMENT)
        uniques = text.unique().sort()
        labels = uniques.to_list()
        self.codes = text.cast(pl.Enum(labels)).to_physical().to_numpy().astype(np.int64, copy=False)
        self.labels = [f"{label} (segment)" if label == ALL else label for label in labels]
        self.count = len(labels)
        # The column's values as text to codes, for per-segment LGD keys.
        self.aliases = {label: i for i, label in enumerate(labels)}

    def known_values(self, column: str) -> list[Any]:
        if column not in self._known:
            self._known[column] = self.book[column].unique().drop_nulls().to_list()
        return self._known[column]

    def mask(self, segment: SegmentFilter) -> np.ndarray | None:
        """Boolean mask of the loans in `segment`; None means every loan. Columns and values must be valid."""
        if segment == ALL:
            return None
        key = tuple(sorted((c, tuple(v) if isinstance(v, list) else (v,)) for c, v in segment.items()))
        if key not in self._masks:
            mask = np.ones(self.book.height, dtype=bool)
            for column, values in key:
                series = self.book[column]
                if _is_numeric(series.dtype):
                    hit = series.cast(pl.Float64).is_in([float(v) for v in values])
                else:
                    hit = series.is_in(list(values))
                mask &= hit.fill_null(False).to_numpy()
            self._masks[key] = mask
        return self._masks[key]

    def check(self, segment: SegmentFilter, *, scenario: str, where: str, tenant: str | None) -> None:
        """Raise `InvalidDataError` when `segment` names a missing column or a value the column never takes."""
        if segment == ALL:
            return
        for column, wanted in segment.items():
            if column not in self.book.columns:
                raise InvalidDataError(
                    f"stress scenario '{scenario}': {where} selects on column '{column}', which the book does not have "
                    f"(it has {self.book.width} columns: {_columns_hint(self.book.columns)}).",
                    tenant=tenant,
                    file=TENANT_FILE,
                    column=column,
                    fix=f"correct the segment column of scenario '{scenario}' in {TENANT_FILE} (stress.scenarios).",
                )
            known = self.known_values(column)
            numeric = _is_numeric(self.book.schema[column])
            for value in wanted if isinstance(wanted, list) else [wanted]:
                matches = (
                    not isinstance(value, str) and not isinstance(value, bool) and value in known
                    if numeric
                    else isinstance(value, (str, bool)) and value in known and any(type(k) is type(value) for k in known)
                )
                if not matches:
                    raise InvalidDataError(
                        f"stress scenario '{scenario}': {where} selects value {value!r} of column '{column}', "
                        f"which no loan has (known values: {_values_hint(known)}).",
                        tenant=tenant,
                        file=TENANT_FILE,
                        column=column,
                        fix=f"use one of the known values of '{column}' in scenario '{scenario}' "
                        f"(stress.scenarios in {TENANT_FILE}), or remove that segment.",
                    )

    def per_loan(self, values: float | dict[str, float], *, what: str, tenant: str | None) -> np.ndarray:
        """A per-loan share from one number or a dict keyed by segment values (``"*"`` for the rest)."""
        if not isinstance(values, dict):
            return np.full(self.book.height, float(values))
        if self.segment_by is None:
            raise InvalidDataError(
                f"{what} is given per segment, but the stress test has no segmentation column.",
                tenant=tenant,
                file=TENANT_FILE,
                fix=f"set stress.segment_by in {TENANT_FILE}, or give {what} as one number.",
            )
        table = np.full(self.count, np.nan)
        for key, share in values.items():
            if key == "*":
                continue
            code = self.aliases.get(key)
            if code is None:
                raise InvalidDataError(
                    f"{what} names segment '{key}', which column '{self.segment_by}' never takes "
                    f"(known values: {_values_hint(list(self.aliases))}).",
                    tenant=tenant,
                    file=TENANT_FILE,
                    column=self.segment_by,
                    fix=f"key {what} by values of '{self.segment_by}', with '*' for the rest.",
                )
            table[code] = share
        if "*" in values:
            table[np.isnan(table)] = values["*"]
        missing = [self.labels[i] for i in np.flatnonzero(np.isnan(table))]
        if missing:
            raise InvalidDataError(
                f"{what} gives no LGD for segment(s) {missing[:20]} of '{self.segment_by}'.",
                tenant=tenant,
                file=TENANT_FILE,
                column=self.segment_by,
                fix=f"add those segments to {what}, or a '*' entry for every segment not listed.",
            )
        return table[self.codes]


# ---------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------


@dataclass
class _Shocked:
    frame: pl.DataFrame
    applied: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    changed: bool


def _check_scenario(spec: ScenarioSpec, book: pl.DataFrame, segments: _Segments, tenant: str | None) -> None:
    """Validate a tenant scenario against the book before any model call."""
    for i, shock in enumerate(spec.feature_shocks):
        where = f"feature_shocks[{i}]"
        if shock.column not in book.columns:
            raise InvalidDataError(
                f"stress scenario '{spec.name}': {where} shocks column '{shock.column}', which the book does not have "
                f"(it has {book.width} columns: {_columns_hint(book.columns)}).",
                tenant=tenant,
                file=TENANT_FILE,
                column=shock.column,
                fix=f"correct the column of {where} in scenario '{spec.name}' (stress.scenarios in {TENANT_FILE}) "
                "to one of the book's columns, or remove the shock.",
            )
        dtype = book.schema[shock.column]
        numeric = _is_numeric(dtype)
        if shock.kind in ("add", "multiply") and not numeric:
            raise InvalidDataError(
                f"stress scenario '{spec.name}': {where} applies '{shock.kind}' to column '{shock.column}' of type "
                f"{dtype}, which is not numeric.",
                tenant=tenant,
                file=TENANT_FILE,
                column=shock.column,
                fix="use kind 'set' for a non-numeric column, or shock a numeric column.",
            )
        if shock.kind == "set" and numeric and (isinstance(shock.value, (str, bool))):
            raise InvalidDataError(
                f"stress scenario '{spec.name}': {where} sets numeric column '{shock.column}' to {shock.value!r}.",
                tenant=tenant,
                file=TENANT_FILE,
                column=shock.column,
                fix="give a number as the value.",
            )
        segments.check(shock.segment, scenario=spec.name, where=where, tenant=tenant)
    for i, mult in enumerate(spec.pd_multipliers):
        segments.check(mult.segment, scenario=spec.name, where=f"pd_multipliers[{i}]", tenant=tenant)
    if isinstance(spec.ead_change, list):
        for i, change in enumerate(spec.ead_change):
            segments.check(change.segment, scenario=spec.name, where=f"ead_change[{i}]", tenant=tenant)


def _pp_step(book: pl.DataFrame, column: str) -> float:
    """1.0 when `column` holds percents (95th percentile above 1), 0.01 when it holds fractions."""
    q = book[column].cast(pl.Float64).drop_nans().quantile(0.95)
    return 1.0 if q is None or q > 1.0 else 0.01


def _shock(
    book: pl.DataFrame,
    spec: ScenarioSpec,
    segments: _Segments,
    columns: dict[str, str | None],
    secured: np.ndarray | None,
) -> _Shocked:
    """The book with the scenario's feature shocks and linked ratio changes applied."""
    frame = book
    applied: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    for shock in spec.feature_shocks:
        if shock.column not in book.columns:
            skipped.append({"column": shock.column, "reason": "the book has no such column (built-in shock skipped)"})
            continue
        if shock.kind in ("add", "multiply") and not _is_numeric(book.schema[shock.column]):
            skipped.append({"column": shock.column, "reason": "the column is not numeric (built-in shock skipped)"})
            continue
        value: Any = shock.value
        if shock.unit == "pp":
            value = float(value) * _pp_step(book, shock.column)
        col = pl.col(shock.column)
        new = col + value if shock.kind == "add" else col * value if shock.kind == "multiply" else pl.lit(value)
        mask = segments.mask(shock.segment)
        if mask is not None:
            new = pl.when(pl.Series(mask)).then(new).otherwise(col)
        if shock.kind == "set":
            dtype = book.schema[shock.column]
            target = dtype if not _is_numeric(dtype) or dtype.is_float() or isinstance(value, int) else pl.Float64
            new = new.cast(target, strict=False)
        frame = frame.with_columns(new.alias(shock.column))
        rows = book.height if mask is None else int(mask.sum())
        applied.append({"column": shock.column, "kind": shock.kind, "value": value, "rows": rows, "source": "shock"})
    income, dti, ltv = columns["income"], columns["dti"], columns["ltv"]
    if income and dti and frame is not book and any(a["column"] == income for a in applied):
        before = book[income].cast(pl.Float64).to_numpy()
        after = frame[income].cast(pl.Float64).to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where((before > 0) & (after > 0), before / after, 1.0)
        rows = int(np.count_nonzero(ratio != 1.0))
        frame = frame.with_columns((pl.col(dti) * pl.Series(ratio)).alias(dti))
        applied.append({"column": dti, "kind": "multiply", "value": "income before / after", "rows": rows,
                        "source": f"linked to the shock on '{income}'"})
    if spec.lgd_haircut > 0:
        if ltv:
            factor = 1.0 / (1.0 - spec.lgd_haircut)
            frame = frame.with_columns((pl.col(ltv) * factor).alias(ltv))
            rows = int(secured.sum()) if secured is not None else book.height
            applied.append({"column": ltv, "kind": "multiply", "value": factor, "rows": rows,
                            "source": f"collateral haircut {spec.lgd_haircut:g}"})
        else:
            skipped.append({"column": "ltv", "reason": "no LTV column: the collateral haircut raises LGD only"})
    return _Shocked(frame, applied, skipped, changed=frame is not book)


def _predict(predict_pd: PredictPD, frame: pl.DataFrame, tenant: str | None, scenario: str) -> np.ndarray:
    """Call the model and check its answer: one finite PD in [0, 1] per row."""
    raw = predict_pd(frame)
    pd_ = np.asarray(raw, dtype=np.float64).reshape(-1) if not isinstance(raw, pl.Series) else raw.to_numpy().astype(np.float64)
    if pd_.shape[0] != frame.height:
        raise InvalidDataError(
            f"the PD model returned {pd_.shape[0]} values for {frame.height} loans (scenario '{scenario}').",
            tenant=tenant,
            fix="pass a predict_pd that returns one PD per row of the frame it is given.",
        )
    bad = ~np.isfinite(pd_) | (pd_ < -_PD_TOLERANCE) | (pd_ > 1.0 + _PD_TOLERANCE)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise InvalidDataError(
            f"the PD model returned {int(bad.sum())} value(s) outside [0, 1] or not finite (scenario '{scenario}'; "
            f"row {first} has {pd_[first]!r}).",
            tenant=tenant,
            fix="return probabilities (e.g. predict_proba[:, 1]), not scores or log-odds, and handle missing features.",
        )
    return np.clip(pd_, 0.0, 1.0)


def _summaries(
    segments: _Segments, pd_: np.ndarray, lgd: np.ndarray, exposure: np.ndarray, ead: np.ndarray
) -> list[dict[str, Any]]:
    """Loans, exposure, EAD, default rate, EL, loss rate and mean LGD per segment, with ``all`` first."""
    k = segments.count
    codes = segments.codes
    el = pd_ * lgd * ead
    sums = {
        "loans": np.bincount(codes, minlength=k).astype(np.float64),
        "exposure": np.bincount(codes, weights=exposure, minlength=k),
        "ead": np.bincount(codes, weights=ead, minlength=k),
        "pd": np.bincount(codes, weights=pd_, minlength=k),
        "el": np.bincount(codes, weights=el, minlength=k),
        "lgd": np.bincount(codes, weights=lgd, minlength=k),
    }

    def row(name: str, loans: float, exposure_: float, ead_: float, pd_sum: float, el_: float, lgd_sum: float) -> dict[str, Any]:
        return {
            "segment": name,
            "loans": int(loans),
            "exposure": float(exposure_),
            "ead": float(ead_),
            "default_rate": float(pd_sum / loans) if loans else None,
            "expected_loss": float(el_),
            "loss_rate": float(el_ / exposure_) if exposure_ > 0 else None,  # None (JSON null): no exposure
            "mean_lgd": float(lgd_sum / loans) if loans else None,
        }

    out = [row(ALL, *(float(v.sum()) for v in sums.values()))]
    if segments.segment_by is not None:
        for i, label in enumerate(segments.labels):
            out.append(row(label, *(float(v[i]) for v in sums.values())))
    return out


def _migration(counts: np.ndarray, band_names: list[str]) -> dict[str, Any]:
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(totals > 0, counts / np.maximum(totals, 1), 0.0)
    return {"bands": band_names, "counts": counts.astype(int).tolist(), "shares": shares.round(6).tolist()}


def run_stress(
    book: pl.DataFrame,
    predict_pd: PredictPD,
    config: StressConfig | None = None,
    *,
    tenant: str | None = None,
    keep_loan_pd: bool = False,
    ignore: Sequence[str] = (),
) -> StressResult:
    """Run the built-in and the tenant's scenarios through `predict_pd` and sum up losses.

    Args:
        book: one row per loan: the model's input columns plus the exposure
            column (and, where the scenarios use them, segment columns).
        predict_pd: the PD model: a frame shaped like `book` in, one PD in
            [0, 1] per row out (NumPy array or polars Series). Called once for
            the baseline and once per scenario that changes a feature.
        config: the tenant's ``stress:`` section; None for the defaults.
        tenant: the tenant id, named in errors and reports.
        keep_loan_pd: also keep each scenario's per-loan PD in `StressResult.loan_pd`.
        ignore: columns never taken as the exposure (the loan id, the default flag).

    Returns:
        A `StressResult`: `.to_dict()`, `.table()`, `.render_charts()`.

    Raises:
        InvalidDataError: an empty book; a configured column that does not
            exist; a configured exposure column that is not numeric or has a
            missing, negative or non-finite value (a detected one is passed
            over, and without one the test is count-based); a tenant
            scenario naming an unknown column or segment value, or applying
            arithmetic to a non-numeric column; per-segment LGDs that miss a
            segment; a model answer that is not one PD in [0, 1] per row.
    """
    started = time.perf_counter()
    config = config if config is not None else StressConfig()
    if book.height == 0:
        raise InvalidDataError("the book to stress has no loans.", tenant=tenant, fix="stress a book with at least one loan.")

    if config.segment_by == "auto":
        segment_by = next((c for c in SEGMENT_CANDIDATES if c in book.columns), None)
    else:
        segment_by = _configured_column(book, "segment_by", config.segment_by, (), tenant)
    columns = {
        "rate": _configured_column(book, "rate_column", config.rate_column, RATE_CANDIDATES, tenant)
        or _named_column(book, is_interest_rate_name),
        "income": _configured_column(book, "income_column", config.income_column, INCOME_CANDIDATES, tenant)
        or _named_column(book, is_income_name),
        "dti": _configured_column(book, "dti_column", config.dti_column, DTI_CANDIDATES, tenant),
        "ltv": _configured_column(book, "ltv_column", config.ltv_column, LTV_CANDIDATES, tenant),
    }
    if config.exposure_column is not None:
        # A column the tenant named must be right: an error, never a silent fallback.
        exposure_column = _configured_column(book, "exposure_column", config.exposure_column, (), tenant)
        problem = _unusable_exposure(book, exposure_column)
        if problem is not None:
            raise InvalidDataError(
                f"stress.exposure_column '{exposure_column}' cannot be each loan's exposure: {problem}.",
                tenant=tenant,
                file=TENANT_FILE,
                column=exposure_column,
                fix=f"fill or correct those exposures, or point stress.exposure_column in {TENANT_FILE} at a "
                "numeric, non-negative column (or remove it to detect one).",
            )
        exposure_note = f"exposure from '{exposure_column}' (stress.exposure_column in {TENANT_FILE})"
    else:
        exposure_column, exposure_note = find_exposure(book, ignore=ignore)
    if exposure_column is None:
        exposure = np.ones(book.height)
    else:
        exposure = book[exposure_column].cast(pl.Float64).to_numpy()
    for role in ("income", "dti", "ltv"):
        name = columns[role]
        if name is not None and not _is_numeric(book.schema[name]):
            columns[role] = None

    segments = _Segments(book, segment_by)
    base_lgd = segments.per_loan(config.lgd_base, what="stress.lgd_base", tenant=tenant)
    secured = book[columns["ltv"]].is_not_null().to_numpy() if columns["ltv"] else None
    if secured is not None and columns["ltv"] is not None and book.schema[columns["ltv"]].is_float():
        secured &= ~np.isnan(book[columns["ltv"]].fill_null(float("nan")).to_numpy())

    specs: list[tuple[ScenarioSpec, bool]] = []
    if not config.replace_builtin:
        specs += [(s, True) for s in builtin_scenarios(columns["rate"] or "interest_rate", columns["income"] or "annual_income")]
    specs += [(s, False) for s in config.scenarios]
    for spec, builtin in specs:
        if not builtin:
            _check_scenario(spec, book, segments, tenant)
            if spec.lgd is not None:
                segments.per_loan(spec.lgd, what=f"scenario '{spec.name}' lgd", tenant=tenant)

    band_names = [name for name, _ in config.bands]
    limits = np.array([limit for _, limit in config.bands], dtype=np.float64)
    nb = len(band_names)
    model_s = 0.0
    t0 = time.perf_counter()
    baseline_pd = _predict(predict_pd, book, tenant, "baseline")
    model_s += time.perf_counter() - t0
    base_band = np.minimum(np.searchsorted(limits, baseline_pd, side="left"), nb - 1)

    outcomes: list[ScenarioOutcome] = []
    warnings: list[str] = [exposure_note] if exposure_column is None else []
    loan_pd: dict[str, np.ndarray] = {}
    for spec, builtin in specs:
        shocked = _shock(book, spec, segments, columns, secured)
        if shocked.changed:
            t0 = time.perf_counter()
            pd_ = _predict(predict_pd, shocked.frame, tenant, spec.name)
            model_s += time.perf_counter() - t0
        else:
            pd_ = baseline_pd.copy()
        for mult in spec.pd_multipliers:
            mask = segments.mask(mult.segment)
            if mask is None:
                pd_ *= mult.multiplier
            else:
                pd_[mask] *= mult.multiplier
        over = pd_ > 1.0
        capped = int(np.count_nonzero(over))
        np.minimum(pd_, 1.0, out=pd_)

        lgd = base_lgd if spec.lgd is None else segments.per_loan(spec.lgd, what=f"scenario '{spec.name}' lgd", tenant=tenant)
        if spec.lgd_haircut > 0:
            raised = lgd + (1.0 - lgd) * spec.lgd_haircut
            lgd = np.where(secured, raised, lgd) if (spec.haircut_secured_only and secured is not None) else raised
        if isinstance(spec.ead_change, list):
            factor = np.ones(book.height)
            for change in spec.ead_change:
                mask = segments.mask(change.segment)
                if mask is None:
                    factor *= 1.0 + change.change
                else:
                    factor[mask] *= 1.0 + change.change
            ead = exposure * factor
        else:
            ead = exposure * (1.0 + spec.ead_change) if spec.ead_change else exposure

        scenario_warnings = [f"scenario '{spec.name}': shock on '{s['column']}' skipped: {s['reason']}." for s in shocked.skipped]
        if capped:
            scenario_warnings.append(
                f"scenario '{spec.name}': {capped} loan(s) ({capped / book.height:.2%}) had PD above 1 after the "
                "multipliers and were capped at 1."
            )
        warnings += scenario_warnings

        band = np.minimum(np.searchsorted(limits, pd_, side="left"), nb - 1)
        pair = base_band * nb + band
        counts = np.bincount(pair, minlength=nb * nb).reshape(nb, nb)
        by_segment: dict[str, dict[str, Any]] = {}
        if segment_by is not None:
            seg_counts = np.bincount(segments.codes * (nb * nb) + pair, minlength=segments.count * nb * nb)
            seg_counts = seg_counts.reshape(segments.count, nb, nb)
            by_segment = {label: _migration(seg_counts[i], band_names) for i, label in enumerate(segments.labels)}
        bins = np.minimum((pd_ * PD_HISTOGRAM_BINS).astype(np.int64), PD_HISTOGRAM_BINS - 1)
        outcomes.append(
            ScenarioOutcome(
                name=spec.name,
                description=spec.description,
                builtin=builtin,
                segments=_summaries(segments, pd_, lgd, exposure, ead),
                migration=_migration(counts, band_names),
                migration_by_segment=by_segment,
                capped_loans=capped,
                capped_share=capped / book.height,
                applied=shocked.applied,
                skipped=shocked.skipped,
                warnings=scenario_warnings,
                pd_histogram=np.bincount(bins, minlength=PD_HISTOGRAM_BINS).tolist(),
                model_called=shocked.changed,
            )
        )
        if keep_loan_pd:
            loan_pd[spec.name] = pd_

    return StressResult(
        tenant=tenant,
        loans=book.height,
        segment_by=segment_by,
        segment_labels=list(segments.labels),
        exposure_column=exposure_column,
        exposure_note=exposure_note,
        bands=[(name, float(limit)) for name, limit in config.bands],
        scenarios=outcomes,
        config=config.to_dict(),
        columns=columns,
        warnings=warnings,
        timings={"model_s": model_s, "total_s": time.perf_counter() - started},
        loan_pd=loan_pd if keep_loan_pd else None,
    )


# ---------------------------------------------------------------------------
# The PDF section
# ---------------------------------------------------------------------------


def add_stress_section(report: "PdfReport", result: StressResult) -> "PdfReport":
    """Append the stress test (scenarios, results table, warnings, migration, charts) to `report`.

    The expected-loss and loss-rate cells are `models.reports.pdf.fmt` of the same
    floats `result.to_dict()` holds, so the PDF and its JSON twin agree.
    Text from the tenant (scenario names, segment values) is escaped by the
    report builder.

    Returns:
        `report`, for chaining.
    """
    from models.reports.pdf import fmt

    report.heading("Stress test")
    report.paragraph(
        "Each scenario shocks the loans' features, scores them with the PD model, applies the scenario's PD "
        "multipliers (PD capped at 1), and sums expected loss EL = PD x LGD x EAD. The loss rate is EL divided "
        "by the current exposure. The built-in scenarios are illustrative defaults in the shape of the EBA adverse "
        "and the Fed severely adverse scenarios, not their published figures: calibrate your own scenarios to your "
        "macro forecasts."
    )
    report.key_values(
        [
            ("loans", result.loans),
            ("segmentation", result.segment_by or "none"),
            ("exposure", result.exposure_column or COUNT_BASED),
            ("base LGD", result.config.get("lgd_base")),
            ("risk bands (max PD)", ", ".join(f"{name} <= {fmt(limit)}" for name, limit in result.bands)),
            ("linked columns", ", ".join(f"{k}: {v or '-'}" for k, v in result.columns.items())),
        ]
    )
    report.paragraph(f"Exposure: {result.exposure_note}.")
    report.heading("Scenarios", level=2)
    rows = []
    for outcome in result.scenarios:
        shocks = "; ".join(
            f"{a['column']} {a['kind']} {fmt(a['value'])} ({a['rows']} loans)" for a in outcome.applied
        ) or "none"
        rows.append([outcome.name, "built-in" if outcome.builtin else "tenant", outcome.description, shocks])
    report.table(["scenario", "source", "description", "applied shocks"], rows, widths_cm=[2.8, 1.6, 6.6, 6.4])

    report.heading("Results by scenario and segment", level=2)
    rows = []
    for outcome in result.scenarios:
        for row in outcome.segments:
            rows.append([
                outcome.name, row["segment"], row["loans"], fmt(row["exposure"]), fmt(row["default_rate"]),
                fmt(row["expected_loss"]), fmt(row["loss_rate"]),
            ])
    report.table(
        ["scenario", "segment", "loans", "exposure", "default rate (mean PD)", "expected loss", "loss rate"],
        rows,
        widths_cm=[3.0, 2.6, 1.6, 2.4, 2.6, 2.4, 2.4],
    )
    report.heading("Capping and skipped shocks", level=2)
    lines = [f"{o.name}: {o.capped_loans} loan(s) capped at PD 1 ({fmt(100 * o.capped_share, 3)} %)" for o in result.scenarios]
    lines += [f"{o.name}: shock on '{s['column']}' skipped: {s['reason']}" for o in result.scenarios for s in o.skipped]
    report.bullets(lines)

    report.heading("Risk band migration (baseline band -> scenario band, loans)", level=2)
    band_names = [name for name, _ in result.bands]
    for outcome in result.scenarios:
        counts = outcome.migration["counts"]
        shares = outcome.migration["shares"]
        report.paragraph(f"Scenario {outcome.name}", style="small")
        report.table(
            ["baseline \\ scenario", *band_names, "loans"],
            [
                [band, *(f"{fmt(c)} ({fmt(100 * s, 3)} %)" for c, s in zip(counts[i], shares[i])), sum(counts[i])]
                for i, band in enumerate(band_names)
            ],
        )
    charts = result.render_charts()
    report.image(charts["loss_rate"], width_cm=16, caption="Loss rate by scenario and segment.")
    report.image(charts["pd_distribution"], width_cm=15, caption="Distribution of stressed PDs per scenario.")
    report.image(charts["migration"], width_cm=16, caption="Share of each baseline band's loans in each scenario band.")
    return report


def render_stress_pdf(result: StressResult) -> bytes:
    """The stress test as a stand-alone PDF (reproducible bytes).

    Returns:
        The PDF document.
    """
    from models.reports.pdf import PdfReport

    subtitle = f"tenant {result.tenant}" if result.tenant else None
    report = PdfReport("CreditTwin stress test", subtitle=subtitle, footer="CreditTwin stress test")
    add_stress_section(report, result)
    return report.build()
