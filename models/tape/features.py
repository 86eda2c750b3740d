"""Loan-level features derived from a tape and its monthly performance history.

A tape's columns are found by name, never by position: each canonical input
(`annual_income`, `loan_amount`, `days_past_due`, ...) has a list of accepted
aliases, matched case-insensitively with spaces and dashes read as underscores.
A feature whose inputs a tape lacks is skipped, and `FeatureReport` says why, so
the Dagster asset can show which features a tenant gets and what to upload to
get the others.

A tape that spells an input its own way (``appinc``, ``LoanAmount``,
``Limit``, ``Price``) still gets it when a numeric column's name matches the
input's pattern in `NAME_HINTS`; the report says which were found that way.
Every loan keeps its row, keyed by its id or, without one, by its row number
in the tape, even when no feature can be built.

Units: `debt_to_income` and `loan_to_value` are percentages (the convention of
most tapes); `credit_utilisation`, `payment_to_income`, `loan_to_income` and
`current_balance_ratio` are plain ratios. A division by zero or by a negative
denominator gives null, never inf.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from models.errors import InvalidDataError
from models.tape.schema import resolve_aliases
from models.sequences.states import ABSORBING, STATE_ALIASES, STATES

CANONICAL_ALIASES: dict[str, tuple[str, ...]] = {
    # identifiers and loan terms (tape)
    "loan_id": ("loan_id", "id", "loan_number", "loan_no", "account_id", "loan_key"),
    "annual_income": ("annual_income", "income", "annual_inc", "yearly_income", "annual_income_amount"),
    "monthly_income": ("monthly_income", "monthly_inc", "income_monthly"),
    "monthly_debt": ("monthly_debt", "monthly_debt_payments", "debt_payments", "monthly_obligations"),
    "installment": ("installment", "instalment", "monthly_payment", "emi", "scheduled_payment"),
    "loan_amount": ("loan_amount", "loan_amnt", "amount", "principal", "loan_amt", "original_amount"),
    "funded_amount": ("funded_amount", "funded_amnt", "funded_amt", "disbursed_amount"),
    "property_value": ("property_value", "home_value", "appraised_value", "house_value"),
    "collateral_value": ("collateral_value", "collateral", "vehicle_value", "asset_value"),
    "revolving_balance": ("revolving_balance", "revol_bal", "revolving_bal"),
    "credit_limit": ("credit_limit", "total_rev_hi_lim", "credit_line", "revolving_limit"),
    "dti": ("dti", "debt_to_income", "debt_to_income_ratio", "dti_ratio"),
    "ltv": ("ltv", "loan_to_value", "ltv_ratio"),
    "interest_rate": ("interest_rate", "int_rate", "rate", "apr", "note_rate"),
    "employment_years": ("employment_years", "emp_length", "employment_length", "years_employed", "emp_years"),
    "income_verified": ("income_verified", "verification_status", "income_verification", "is_income_verified"),
    # monthly performance history (see models/sequences/states.py)
    "period": ("period", "month", "reporting_period", "report_month", "as_of_month", "as_of_date", "snapshot_date"),
    "status": ("status", "loan_status", "state", "performance_status"),
    "days_past_due": ("days_past_due", "dpd", "days_delinquent", "days_late"),
    "balance": ("balance", "outstanding_balance", "current_balance", "upb", "principal_balance"),
    "payment": ("payment", "payment_amount", "amount_paid", "paid_amount"),
}

# Inputs a tape may spell its own way: a numeric column no alias claims is taken for the input when its
# name (lower case, separators removed) matches the pattern; the first in sorted order wins, so column
# positions never matter. Income ends in "income"/"inc" (appinc, Income), a loan amount names the loan
# (LoanAmount, loanamt), a limit ends in "limit"/"lim", a price or value is what secures or buys the loan.
NAME_HINTS: dict[str, str] = {
    "annual_income": r"(income|inc)$",
    "loan_amount": r"loan(amount|amt|amnt)|(amount|amt|amnt)loan",
    "credit_limit": r"(limit|lim)$",
    "property_value": r"(price|value)$",
}
# The column that keys each row when the tape has no loan id: its 1-based row number in the tape.
ROW_KEY = "tape_row"

# Severity of each canonical state, so "ever 60+" is one comparison; the
# non-delinquent absorbing states rank below current.
_SEVERITY: dict[str, int] = {
    "current": 0, "dpd30": 1, "dpd60": 2, "dpd90": 3, "default": 4, "prepaid": -1, "matured": -1,
}
_DELINQUENT_STATES = tuple(s for s in STATES if s not in ABSORBING and s != "current")
# A DTI at or under this maximum is read as a fraction (0.25) and shown as a percent.
_DTI_FRACTION_MAX = 1.0
# LTV can exceed 100 %, so a fraction tape may reach 1.5 or so; percents never sit this low.
_LTV_FRACTION_MAX = 2.0
_VERIFIED_TRUE = {"verified", "source verified", "source_verified", "yes", "y", "true", "t", "1"}
_VERIFIED_FALSE = {"not verified", "not_verified", "unverified", "no", "n", "false", "f", "0"}

PERFORMANCE_FEATURES: tuple[str, ...] = (
    "max_days_past_due",
    "months_delinquent",
    "ever_30",
    "ever_60",
    "ever_90",
    "months_on_book",
    "current_balance_ratio",
)


@dataclass
class FeatureReport:
    """Which features were built (with the formula and inputs) and which were skipped.

    Attributes:
        built: feature name -> the formula, naming the actual input columns.
        skipped: feature name -> why it was not built (which inputs are missing).
        key: what identifies each row (the loan id column, or the row number).
        hinted: input -> the column taken for it by a name hint (`NAME_HINTS`), not an alias.
    """

    built: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    key: str = ""
    hinted: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe copy, for Dagster metadata and run reports."""
        return {"built": dict(self.built), "skipped": dict(self.skipped), "key": self.key, "hinted": dict(self.hinted)}

    @property
    def note(self) -> str:
        """One line for the UI and the log: what keys the rows and how many features were built."""
        if self.built:
            return f"{len(self.built)} feature(s) built, {len(self.skipped)} skipped; rows keyed by {self.key}"
        return (
            f"no feature could be derived from this tape's columns (each skipped feature says which inputs it "
            f"needs); one row per loan is kept, keyed by {self.key}"
        )


def resolve_columns(columns: list[str]) -> dict[str, str]:
    """Map each canonical input name to the column of `columns` that holds it.

    Matching ignores case and reads spaces and dashes as underscores. When
    several columns match one canonical name, the earliest alias in
    `CANONICAL_ALIASES` wins (never the column's position), so shuffling a
    tape's columns never changes the result. A column serves one canonical name
    at most: the first one, in `CANONICAL_ALIASES` order, that claims it.

    Args:
        columns: the column names of one table.

    Returns:
        canonical name -> actual column name, only for the names found.
    """
    return resolve_aliases(columns, CANONICAL_ALIASES)


def _is_numeric(frame: pl.DataFrame, column: str) -> bool:
    return frame.schema[column].is_numeric()


def _num(column: str) -> pl.Expr:
    return pl.col(column).cast(pl.Float64)


def _safe_ratio(numerator: pl.Expr, denominator: pl.Expr) -> pl.Expr:
    """numerator / denominator; null where the denominator is not positive or an input is not finite."""
    usable = (denominator > 0) & denominator.is_finite() & numerator.is_finite()
    return pl.when(usable).then(numerator / denominator).otherwise(None)


class _Inputs:
    """The resolved, numeric-checked inputs of one table, with the reasons others are unusable."""

    def __init__(self, frame: pl.DataFrame, *, exclude: set[str], hints: dict[str, str] | None = None) -> None:
        self.frame = frame
        candidates = [c for c in frame.columns if c not in exclude]
        resolved = resolve_columns(candidates)
        self.hinted: dict[str, str] = {}
        for canonical, pattern in (hints or {}).items():
            if canonical in resolved:
                continue
            claimed = set(resolved.values())
            match = next(
                (c for c in sorted(candidates) if c not in claimed and frame.schema[c].is_numeric()
                 and re.search(pattern, re.sub(r"[^a-z0-9]", "", c.lower()))),
                None,
            )
            if match is not None:
                resolved[canonical] = self.hinted[canonical] = match
        self.columns: dict[str, str] = {}
        self.unusable: dict[str, str] = {}
        for canonical, actual in resolved.items():
            if canonical in ("employment_years", "income_verified", "status", "period", "loan_id"):
                self.columns[canonical] = actual
            elif _is_numeric(frame, actual):
                self.columns[canonical] = actual
            else:
                self.unusable[canonical] = f"column '{actual}' is {frame.schema[actual]}, not numeric"

    def has(self, *canonical: str) -> bool:
        return all(c in self.columns for c in canonical)

    def missing(self, *canonical: str) -> str:
        """Say which of `canonical` are missing or unusable, with the aliases that would do."""
        parts = []
        for name in canonical:
            if name in self.columns:
                continue
            if name in self.unusable:
                parts.append(f"{name}: {self.unusable[name]}")
            else:
                parts.append(f"{name} (none of: {', '.join(CANONICAL_ALIASES[name])})")
        return "missing input " + "; ".join(parts)

    def __getitem__(self, canonical: str) -> str:
        return self.columns[canonical]

    def max_of(self, canonical: str) -> float | None:
        value = self.frame.get_column(self[canonical]).cast(pl.Float64).max()
        return None if value is None else float(value)


def _annual_income(inputs: _Inputs) -> tuple[pl.Expr, str] | None:
    if inputs.has("annual_income"):
        return _num(inputs["annual_income"]), inputs["annual_income"]
    if inputs.has("monthly_income"):
        return 12.0 * _num(inputs["monthly_income"]), f"12*{inputs['monthly_income']}"
    return None


def _percent_feature(
    inputs: _Inputs,
    report: FeatureReport,
    exprs: list[pl.Expr],
    name: str,
    canonical: str,
    fraction_max: float,
    computed: tuple[pl.Expr, str] | None,
    skipped_reason: str,
) -> None:
    """A percentage feature: the tape's own column (a fraction when its maximum is <= `fraction_max`),
    with `computed` filling its nulls; else `computed` alone; else recorded as skipped."""
    if inputs.has(canonical):
        as_fraction = (inputs.max_of(canonical) or 0.0) <= fraction_max
        tape = _num(inputs[canonical]) * (100.0 if as_fraction else 1.0)
        tape = pl.when(tape.is_finite()).then(tape).otherwise(None)
        formula = f"{inputs[canonical]}" + (" (a fraction)*100" if as_fraction else " (percent, as given)")
        if computed is not None:
            tape = pl.coalesce(tape, computed[0])
            formula += f", else {computed[1]}"
        exprs.append(tape.alias(name))
        report.built[name] = formula
    elif computed is not None:
        exprs.append(computed[0].alias(name))
        report.built[name] = computed[1]
    else:
        report.skipped[name] = skipped_reason


def _loan_features(inputs: _Inputs, report: FeatureReport) -> list[pl.Expr]:
    exprs: list[pl.Expr] = []
    income = _annual_income(inputs)

    # debt_to_income and loan_to_value: the tape's own figure first, computed where it is null.
    computed_dti: tuple[pl.Expr, str] | None = None
    debt = next((c for c in ("monthly_debt", "installment") if inputs.has(c)), None)
    if income is not None and debt is not None:
        computed_dti = (
            _safe_ratio(12.0 * _num(inputs[debt]), income[0]) * 100.0,
            f"12*{inputs[debt]}/{income[1]}*100",
        )
    _percent_feature(
        inputs, report, exprs, "debt_to_income", "dti", _DTI_FRACTION_MAX, computed_dti,
        "needs dti, or annual_income (or monthly_income) with monthly_debt or installment: "
        + inputs.missing("dti", "annual_income", "monthly_debt", "installment"),
    )
    computed_ltv: tuple[pl.Expr, str] | None = None
    value = next((c for c in ("property_value", "collateral_value") if inputs.has(c)), None)
    if inputs.has("loan_amount") and value is not None:
        computed_ltv = (
            _safe_ratio(_num(inputs["loan_amount"]), _num(inputs[value])) * 100.0,
            f"{inputs['loan_amount']}/{inputs[value]}*100",
        )
    _percent_feature(
        inputs, report, exprs, "loan_to_value", "ltv", _LTV_FRACTION_MAX, computed_ltv,
        "needs ltv, or loan_amount with property_value or collateral_value: "
        + inputs.missing("ltv", "loan_amount", "property_value"),
    )

    # On a card or credit-line tape (no loan amount) the current balance is the drawn amount, so it stands in
    # for a revolving balance; on an instalment-loan tape it is what is left of the loan, not a drawing.
    revolving_tape = not inputs.has("loan_amount") and not inputs.has("funded_amount")
    drawn = "revolving_balance" if inputs.has("revolving_balance") else (
        "balance" if revolving_tape and inputs.has("balance") else None
    )
    if drawn is not None and inputs.has("credit_limit"):
        exprs.append(_safe_ratio(_num(inputs[drawn]), _num(inputs["credit_limit"])).alias("credit_utilisation"))
        report.built["credit_utilisation"] = f"{inputs[drawn]}/{inputs['credit_limit']} (null where the limit <= 0)"
    else:
        report.skipped["credit_utilisation"] = (
            "needs revolving_balance (or balance) with credit_limit: " + inputs.missing("revolving_balance", "credit_limit")
        )

    amount = next((c for c in ("loan_amount", "funded_amount") if inputs.has(c)), None)
    if amount is not None and income is not None:
        exprs.append(_safe_ratio(_num(inputs[amount]), income[0]).alias("loan_to_income"))
        report.built["loan_to_income"] = f"{inputs[amount]}/{income[1]} (null where the income <= 0)"
    else:
        report.skipped["loan_to_income"] = (
            "needs loan_amount (or funded_amount) with annual_income (or monthly_income): "
            + inputs.missing("loan_amount", "annual_income")
        )

    if income is not None and inputs.has("installment"):
        exprs.append(_safe_ratio(12.0 * _num(inputs["installment"]), income[0]).alias("payment_to_income"))
        report.built["payment_to_income"] = f"12*{inputs['installment']}/{income[1]}"
    else:
        report.skipped["payment_to_income"] = inputs.missing("installment", "annual_income")

    exprs.extend(_income_stability(inputs, report))
    return exprs


def _employment_years_expr(inputs: _Inputs) -> pl.Expr:
    column = inputs["employment_years"]
    dtype = inputs.frame.schema[column]
    if dtype.is_numeric():
        return _num(column)
    # Text like "10+ years", "< 1 year", "3 years", "n/a": the first number is the
    # years; "< 1" means under a year.
    text = pl.col(column).cast(pl.String).str.to_lowercase()
    years = text.str.extract(r"(\d+(?:\.\d+)?)", 1).cast(pl.Float64, strict=False)
    return pl.when(text.str.contains(r"<\s*1")).then(0.0).otherwise(years)


def _income_stability(inputs: _Inputs, report: FeatureReport) -> list[pl.Expr]:
    exprs: list[pl.Expr] = []
    if inputs.has("employment_years"):
        years = _employment_years_expr(inputs)
        score = (
            pl.when(years.is_null() | years.is_nan() | (years < 0)).then(None)
            .when(years < 1).then(0.0)
            .when(years < 3).then(0.25)
            .when(years < 5).then(0.5)
            .when(years < 10).then(0.75)
            .otherwise(1.0)
        )
        exprs.append(score.alias("employment_stability_score"))
        report.built["employment_stability_score"] = (
            f"{inputs['employment_years']} in years bucketed: <1 -> 0, 1-2 -> 0.25, 3-4 -> 0.5, 5-9 -> 0.75, 10+ -> 1"
        )
    else:
        report.skipped["employment_stability_score"] = inputs.missing("employment_years")

    if inputs.has("income_verified"):
        column = inputs["income_verified"]
        dtype = inputs.frame.schema[column]
        if dtype == pl.Boolean:
            flag = pl.col(column)
        elif dtype.is_numeric():
            flag = pl.when(pl.col(column) == 1).then(True).when(pl.col(column) == 0).then(False).otherwise(None)
        else:
            text = pl.col(column).cast(pl.String).str.strip_chars().str.to_lowercase()
            flag = (
                pl.when(text.is_in(list(_VERIFIED_TRUE))).then(True)
                .when(text.is_in(list(_VERIFIED_FALSE))).then(False)
                .otherwise(None)
            )
        exprs.append(flag.alias("income_verified"))
        report.built["income_verified"] = (
            f"{column} read as a flag (verified / source verified / yes / true / 1 -> true; others listed -> false)"
        )
    else:
        report.skipped["income_verified"] = inputs.missing("income_verified")
    return exprs


def _severity_mapping(performance: pl.DataFrame, column: str) -> tuple[dict[Any, int | None], list[str]]:
    """Raw status label -> severity of its canonical state, built from the few distinct labels only.

    Mapping the distinct labels once, instead of lower-casing every row, keeps a
    24M-row history fast.
    """
    mapping: dict[Any, int | None] = {}
    unknown: list[str] = []
    for raw in performance.get_column(column).unique().drop_nulls().to_list():
        canonical = STATE_ALIASES.get(str(raw).strip().lower())
        mapping[raw] = None if canonical is None else _SEVERITY[canonical]
        if canonical is None:
            unknown.append(str(raw))
    return mapping, sorted(unknown)


def _label_lookup(column: pl.Expr, mapping: dict[Any, int | None]) -> pl.Expr:
    """The mapped value of each label, null for unmapped ones.

    A hash lookup rather than a when/then chain: polars 1.44 collapses a
    when/then chain whose branches are all literals to one row inside
    `max_horizontal`, which broke the worst-state feature.
    """
    known = {label: value for label, value in mapping.items() if value is not None}
    if not known:
        return pl.lit(None, dtype=pl.Int8)
    return column.replace_strict(known, default=None, return_dtype=pl.Int8)


def _in_month_order(narrow: pl.DataFrame, id_column: str) -> bool:
    """True when rows already run loan by loan in month order (then sorting can be skipped)."""
    loan, month = pl.col(id_column), pl.col("_month")
    same_loan = loan == loan.shift(1)
    ordered = (loan > loan.shift(1)) | (same_loan & (month >= month.shift(1)))
    # Any null (first row aside) makes the answer False, and the caller sorts.
    return bool(narrow.select(ordered.slice(1).fill_null(False).all()).item())


def month_index(frame: pl.DataFrame, column: str) -> pl.Expr | None:
    """An integer month number for a period column, or None when the column cannot be read as one.

    Integer periods (1, 2, ... or 202401) are taken as they are; dates and
    datetimes become year*12 + month; text as "2024-01-31" or "2024-01" is
    parsed as a date. Anything else (floats, labels) gives None.
    """
    dtype = frame.schema[column]
    period = pl.col(column)
    if dtype.is_integer():
        return period.cast(pl.Int64)
    if dtype.is_temporal():
        return period.dt.year().cast(pl.Int64) * 12 + period.dt.month().cast(pl.Int64)
    if dtype == pl.String:
        parsed = pl.coalesce(
            period.str.to_date("%Y-%m-%d", strict=False),
            (period + "-01").str.to_date("%Y-%m-%d", strict=False),
        )
        return parsed.dt.year().cast(pl.Int64) * 12 + parsed.dt.month().cast(pl.Int64)
    return None


def _performance_features(
    performance: pl.DataFrame, perf_id: str, inputs: _Inputs, report: FeatureReport
) -> tuple[pl.LazyFrame, dict[str, Any]]:
    """Aggregate the history per loan; returns the lazy per-loan table and fill values for loans without history.

    Row-level inputs (days past due, state severity, month index) are computed
    once in a narrow frame, so the group-by only runs plain aggregations.
    """
    rows: list[pl.Expr] = [pl.col(perf_id)]
    aggs: list[pl.Expr] = [pl.len().cast(pl.Int64).alias("months_on_book")]
    after: list[pl.Expr] = []
    fills: dict[str, Any] = {"months_on_book": 0}
    report.built["months_on_book"] = f"count of monthly rows per {perf_id} (0 without history)"

    has_dpd = inputs.has("days_past_due")
    if has_dpd:
        rows.append(_num(inputs["days_past_due"]).alias("_dpd"))
        aggs.append(pl.col("_dpd").max().alias("max_days_past_due"))
        report.built["max_days_past_due"] = f"max({inputs['days_past_due']}) per loan (null without history)"
    else:
        report.skipped["max_days_past_due"] = inputs.missing("days_past_due")

    status_sev: pl.Expr | None = None
    status_note = ""
    if inputs.has("status"):
        mapping, unknown = _severity_mapping(performance, inputs["status"])
        status_sev = _label_lookup(pl.col(inputs["status"]), mapping)
        if unknown:
            status_note = f"; unrecognised status labels read as unknown: {unknown[:10]}"
    dpd_sev: pl.Expr | None = None
    if has_dpd:
        days = _num(inputs["days_past_due"])
        # 0 below 30 days, 1 for 30-59, 2 for 60-89, 3 for 90+; null stays null.
        dpd_sev = (days >= 30).cast(pl.Int8) + (days >= 60).cast(pl.Int8) + (days >= 90).cast(pl.Int8)

    if status_sev is not None or dpd_sev is not None:
        sources = " and ".join(f"{inputs[c]}" for c in ("status", "days_past_due") if inputs.has(c))
        if status_sev is not None and dpd_sev is not None:
            # The status decides the month's state; days past due stand in where it is absent or
            # unknown, and count too for "ever" flags when they say worse than the status.
            state_sev = pl.coalesce(status_sev, dpd_sev)
            worst_sev = pl.max_horizontal(status_sev, dpd_sev)
        else:
            state_sev = worst_sev = status_sev if status_sev is not None else dpd_sev
        delinquent = [_SEVERITY[state] for state in _DELINQUENT_STATES]
        # Row-level flags keep the group-by on its fast path (plain sum and max).
        rows += [state_sev.is_in(delinquent).cast(pl.Int64).alias("_delinquent"), worst_sev.alias("_worst_sev")]
        aggs += [
            pl.col("_delinquent").sum().alias("months_delinquent"),
            pl.col("_worst_sev").max().alias("_worst_sev"),
        ]
        fills["months_delinquent"] = 0
        report.built["months_delinquent"] = (
            f"months in {list(_DELINQUENT_STATES)} (non-absorbing, not current) from {sources}{status_note}"
        )
        for threshold, level in ((30, 1), (60, 2), (90, 3)):
            name = f"ever_{threshold}"
            after.append((pl.col("_worst_sev") >= level).fill_null(False).alias(name))
            fills[name] = False
            report.built[name] = (
                f"any month {threshold}+ days past due (default counts as 90+) from {sources} (false without history)"
            )
    else:
        for name in ("months_delinquent", "ever_30", "ever_60", "ever_90"):
            report.skipped[name] = inputs.missing("status", "days_past_due") + " (either one is enough)"

    period = month_index(performance, inputs["period"]) if inputs.has("period") else None
    if inputs.has("balance") and period is not None:
        balance = _num(inputs["balance"])
        # A month without a date has no place in the order, so its balance is left out.
        rows += [period.alias("_month"), pl.when(period.is_not_null()).then(balance).alias("_balance")]
        present = pl.col("_balance").drop_nulls()
        # first/last run on the group-by's fast path once the rows are in month order (see below).
        aggs.append(_safe_ratio(present.last(), present.first()).alias("current_balance_ratio"))
        report.built["current_balance_ratio"] = (
            f"{inputs['balance']} at the last {inputs['period']} / at the first (null where the first <= 0)"
        )
    elif inputs.has("balance") and inputs.has("period"):
        report.skipped["current_balance_ratio"] = (
            f"period column '{inputs['period']}' is {performance.schema[inputs['period']]}, "
            "neither a whole month number nor a date"
        )
    else:
        report.skipped["current_balance_ratio"] = inputs.missing("balance", "period")

    narrow = performance.select(rows)
    if "_month" in narrow.columns and not _in_month_order(narrow, perf_id):
        narrow = narrow.sort(perf_id, "_month")
    per_loan = narrow.lazy().group_by(perf_id).agg(aggs)
    if after:
        per_loan = per_loan.with_columns(after).drop("_worst_sev")
    return per_loan, fills


def _history_id(performance: pl.DataFrame | None, id_column: str | None) -> tuple[str | None, str]:
    """The history's loan id column, or None with the reason history features are skipped."""
    if performance is None:
        return None, "no performance history supplied"
    if id_column is None:
        return None, "the tape has no id column to join the performance history on"
    if id_column in performance.columns:
        return id_column, ""
    perf_id = resolve_columns(performance.columns).get("loan_id")
    if perf_id is None:
        return None, (
            f"the performance history has no '{id_column}' column nor a loan id alias "
            f"({', '.join(CANONICAL_ALIASES['loan_id'])})"
        )
    return perf_id, ""


def build_features(
    loans: pl.DataFrame, performance: pl.DataFrame | None, *, id_column: str | None, ignore: tuple[str, ...] = ()
) -> tuple[pl.DataFrame, FeatureReport]:
    """Build the loan features a tape's columns allow.

    Loan-level features come from the tape (`debt_to_income`, `loan_to_value`,
    `credit_utilisation`, `payment_to_income`, `loan_to_income`,
    `employment_stability_score`, `income_verified`); payment-delay features come from the monthly
    performance history, grouped per loan and joined on the id
    (`max_days_past_due`, `months_delinquent`, `ever_30`, `ever_60`,
    `ever_90`, `months_on_book`, `current_balance_ratio`). Loans without
    history get 0 months, false flags and null figures.

    Args:
        loans: the loan tape, one row per loan.
        performance: the monthly history (one row per loan and month), or None.
        id_column: the tape's loan id column (the schema's `id_column`); the
            history is joined on a column of that name, else on its `loan_id`
            alias. None: each row is keyed by its row number in the tape
            (`ROW_KEY`) and history features are skipped.
        ignore: columns never read as a feature input (the default flag, the split).

    Returns:
        The features, one row per loan in tape order, the key (id or row
        number) first, even when no feature can be built, and the report of
        built and skipped features.

    Raises:
        InvalidDataError: `id_column` is not a column of the tape.
    """
    if id_column is not None and id_column not in loans.columns:
        raise InvalidDataError(
            "the loan id column is not in the tape.",
            column=id_column,
            fix=f"declare an id column the tape has (columns: {', '.join(loans.columns[:20])}).",
        )
    report = FeatureReport()
    exclude = {c for c in (id_column, *ignore) if c}
    inputs = _Inputs(loans, exclude=exclude, hints=NAME_HINTS)
    report.hinted = {
        canonical: f"'{column}' (by name and type: numeric, name matches {NAME_HINTS[canonical]!r})"
        for canonical, column in inputs.hinted.items()
    }
    exprs = _loan_features(inputs, report)
    if id_column:
        key = pl.col(id_column)
        report.key = f"the loan id column '{id_column}'"
    else:
        # Without a loan id every row still gets its row, keyed by its place in the tape, so no loan is lost.
        key_name = ROW_KEY
        while key_name in loans.columns:
            key_name = "_" + key_name
        key = pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias(key_name)
        report.key = f"'{key_name}', the row number in the tape (the tape has no loan id column)"
    lazy = loans.lazy().select([key, *exprs])

    perf_id, perf_reason = _history_id(performance, id_column)
    if performance is None or id_column is None or perf_id is None:
        for name in PERFORMANCE_FEATURES:
            report.skipped[name] = perf_reason
        return lazy.collect(), report

    perf_inputs = _Inputs(performance, exclude={perf_id})
    per_loan, fills = _performance_features(performance, perf_id, perf_inputs, report)
    id_dtype = loans.schema[id_column]
    if performance.schema[perf_id] != id_dtype:
        per_loan = per_loan.with_columns(pl.col(perf_id).cast(id_dtype, strict=False))
    if perf_id != id_column:
        per_loan = per_loan.rename({perf_id: id_column})
    joined = lazy.join(per_loan, on=id_column, how="left", maintain_order="left")
    joined = joined.with_columns([pl.col(name).fill_null(value) for name, value in fills.items()])
    order = [id_column, *(c for c in report.built if c not in PERFORMANCE_FEATURES)]
    order += [c for c in PERFORMANCE_FEATURES if c in report.built]
    result = joined.collect()
    return result.select([c for c in order if c in result.columns]), report
