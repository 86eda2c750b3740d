"""Monthly performance histories: validation, path arrays and sequence fidelity measures.

A performance table holds one row per loan and month on book with the canonical
columns ``loan_id`` (str), ``period`` (months on book from 1, consecutive),
``status`` (one of `models.sequences.states.STATES`), ``days_past_due``, ``balance`` and
``payment`` (and optionally ``reporting_month``).

Three groups of functions live here:

- `validate_histories` checks a table before any model reads it and reports
  every problem together, naming the tenant, the file, the column, example loan
  ids and the fix.
- `loan_paths`, `loan_terms` and `paths_to_frame` turn tables into loan x month
  arrays and back; the Markov baseline and the LSTM cascade share them so both
  models see exactly the same transitions.
- The fidelity measures (`transition_matrix`, `transition_distance`,
  `roll_rates`, `cumulative_default_curve`, `time_to_default`,
  `prepayment_curve`, `compare_sequences`) compare a synthetic book with the
  real one; the cascade asset and the validation report both use them.
"""

from __future__ import annotations

import math
from datetime import date
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np
import polars as pl

from models.errors import CreditTwinError, InvalidDataError, ValidationErrors
from models.sequences.states import ABSORBING, STATE_ALIASES, STATE_INDEX, STATES
from models.tape.names import name_words
from models.tape.schema import normalise_column_name
from models.tape.vocabulary import int_if_lossless

N_STATES = len(STATES)
REQUIRED_COLUMNS = ("loan_id", "period", "status")
# Loans-table names of the term, original amount and rate, matched as `normalise_column_name` reads them
# (case ignored, spaces and dashes read as underscores). The agency loan-level layouts spell them their own
# way: Freddie Mac ORIGINAL_LOAN_TERM, ORIGINAL_UPB, ORIGINAL_INTEREST_RATE; Fannie Mae ORIG_TRM (or ORIG_TERM),
# ORIG_UPB, ORIG_RATE. "upb" alone is left out: in a history it is the current, not the original, balance.
TERM_ALIASES = (
    "term_months", "term", "term_length", "original_loan_term", "orig_loan_term", "original_term", "orig_term",
    "orig_trm", "loan_term",
)
AMOUNT_COLUMNS = (
    "loan_amount", "funded_amount", "amount", "principal", "original_balance", "loan_amnt", "original_upb",
    "orig_upb", "original_loan_amount", "orig_loan_amount", "original_amount", "orig_amt", "loan_amt",
    "original_principal_balance",
)
RATE_COLUMNS = (
    "interest_rate", "int_rate", "rate", "apr", "original_interest_rate", "orig_interest_rate", "orig_rate",
    "orig_int_rt", "int_rt", "note_rate",
)
INSTALLMENT_COLUMNS = ("installment", "monthly_payment", "scheduled_payment")
# The upload the loans table comes from (either spelling), named in errors about its columns.
LOANS_FILE = "loans.csv or loans.parquet"
TRANSIENT = tuple(s for s in STATES if s not in ABSORBING)
ABSORBING_CODES = np.array([STATE_INDEX[s] for s in STATES if s in ABSORBING], dtype=np.int64)
CLOSING_CODES = np.array([STATE_INDEX["prepaid"], STATE_INDEX["matured"]], dtype=np.int64)
# The amount columns a history may carry; a model learns and samples those its training history has.
AMOUNTS = ("balance", "payment")
# Representative days past due per state, used when a tape carries no days_past_due column.
DEFAULT_DPD = (0.0, 30.0, 60.0, 90.0, 120.0, 0.0, 0.0)
CDR_THRESHOLD = 0.10
# Under DP the reporting offset is not learned from the tape: period 1 is taken to be reported the month after
# origination (the common servicing convention, and the demo generator's), a public constant.
PUBLIC_REPORTING_OFFSET = 1
ROW_THRESHOLD = 0.02
_EXAMPLES = 5


# --------------------------------------------------------------------------- validation


@dataclass
class HistoryReport:
    """What `validate_histories` found in a valid performance table.

    Attributes:
        n_loans: loans with at least one row.
        n_rows: rows in the table.
        n_transitions: month-to-month transitions out of a non-absorbing state,
            the units the models are trained and scored on.
        one_month_loans: loans with a single row (valid, but no transition).
        max_period: the longest history, in months.
        state_counts: rows per state.
        loans_without_static: loans in the history but not in the loans table
            (they are left out of training); 0 when no loans table was given.
        term_column: the loans column read as the term, or None.
    """

    n_loans: int
    n_rows: int
    n_transitions: int
    one_month_loans: int
    max_period: int
    state_counts: dict[str, int]
    loans_without_static: int = 0
    term_column: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready values."""
        return {
            "n_loans": self.n_loans,
            "n_rows": self.n_rows,
            "n_transitions": self.n_transitions,
            "one_month_loans": self.one_month_loans,
            "max_period": self.max_period,
            "state_counts": dict(self.state_counts),
            "loans_without_static": self.loans_without_static,
            "term_column": self.term_column,
        }


def _examples(frame: pl.DataFrame, column: str = "loan_id") -> str:
    values = frame.get_column(column).unique(maintain_order=True).head(_EXAMPLES).to_list()
    return ", ".join(repr(v) for v in values)


def resolve_term_column(loans: pl.DataFrame | None, term_column: str | None = "term_months") -> str | None:
    """The loans column holding the term in months: `term_column`, else a known alias, else None.

    `term_column` is taken as spelled first; the aliases match whatever their
    case and separators (Freddie Mac's ORIGINAL_LOAN_TERM, Fannie Mae's
    ORIG_TRM), as the amount and rate columns do.
    """
    if loans is None:
        return None
    if term_column and term_column in loans.columns:
        return term_column
    candidates = ((term_column,) if term_column else ()) + tuple(c for c in TERM_ALIASES if c != term_column)
    return _first_present(loans, candidates)


def _term_values(series: pl.Series) -> pl.Series:
    """Terms as Int64 months; text such as ' 36 months' (LendingClub) is read by its number."""
    if series.dtype == pl.String or series.dtype == pl.Categorical:
        return series.cast(pl.String).str.extract(r"(\d+)", 1).cast(pl.Int64, strict=False)
    return series.cast(pl.Float64, strict=False).round(0).cast(pl.Int64, strict=False)


def _canonical(performance: pl.DataFrame) -> pl.DataFrame:
    """Loan ids and statuses as strings, periods as Int64, sorted by loan and period."""
    casts = [
        pl.col("loan_id").cast(pl.String),
        pl.col("status").cast(pl.String),
        pl.col("period").cast(pl.Int64, strict=False),
    ]
    return performance.with_columns(casts).sort(["loan_id", "period"])


def validate_histories(
    performance: pl.DataFrame,
    loans: pl.DataFrame | None = None,
    *,
    tenant: str | None = None,
    file: str | None = None,
    term_column: str | None = "term_months",
    id_column: str = "loan_id",
) -> HistoryReport:
    """Check a performance table and report every problem together.

    Args:
        performance: the monthly history (canonical columns, see the module doc).
        loans: the loans table, used to check that no history runs past the
            loan's term; optional.
        tenant: the tenant the table belongs to, named in errors.
        file: the file it came from, named in errors.
        term_column: the loans column holding the term in months; when absent,
            the aliases ``term``/``term_length`` are tried, and the check is
            skipped when none exists.
        id_column: the loan id column of `loans`.

    Returns:
        A `HistoryReport` with counts, including one-month histories (valid but
        carrying no transition).

    Raises:
        InvalidDataError: a required column is missing, or exactly one problem
            was found; `ValidationErrors` (a subclass) when several were. The
            problems checked are null keys, unknown state labels, duplicate
            months, gaps in periods, leaving an absorbing state, negative
            balances or payments, histories longer than the term, and a table
            in which no loan has a transition.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in performance.columns]
    if missing:
        raise InvalidDataError(
            f"the performance table lacks the column(s) {missing}; it has {performance.columns[:12]}.",
            tenant=tenant,
            file=file,
            column=missing[0],
            fix="map the tape's columns to loan_id, period, status, days_past_due, balance, payment in tenant.yaml.",
        )
    if performance.height == 0:
        raise InvalidDataError(
            "the performance table has no rows.",
            tenant=tenant,
            file=file,
            fix="upload a history with one row per loan and month, or leave the performance file out.",
        )
    perf = _canonical(performance)
    problems: list[CreditTwinError] = []

    def problem(message: str, column: str, fix: str) -> None:
        problems.append(InvalidDataError(message, tenant=tenant, file=file, column=column, fix=fix))

    for column in REQUIRED_COLUMNS:
        nulls = perf.filter(pl.col(column).is_null())
        if nulls.height:
            problem(
                f"{nulls.height} row(s) have no {column} (rows of loans {_examples(nulls)}).",
                column,
                f"fill in {column} on every row or drop those rows.",
            )
    perf = perf.drop_nulls(list(REQUIRED_COLUMNS))

    unknown = perf.filter(~pl.col("status").is_in(list(STATES)))
    if unknown.height:
        labels = unknown.get_column("status").unique(maintain_order=True).head(_EXAMPLES).to_list()
        hints = [f"'{lab}' -> '{STATE_ALIASES[lab.lower()]}'" for lab in labels if lab.lower() in STATE_ALIASES]
        hint = f" Known aliases among them: {', '.join(hints)}." if hints else ""
        problem(
            f"{unknown.height} row(s) carry state labels the schema does not know: {labels} "
            f"(loans {_examples(unknown)}); known states are {list(STATES)}.{hint}",
            "status",
            "map the tape's status labels to the canonical states in tenant.yaml (status map) and re-upload.",
        )

    duplicated = perf.filter(pl.struct(["loan_id", "period"]).is_duplicated())
    if duplicated.height:
        problem(
            f"{duplicated.height} row(s) repeat a month of the same loan (loans {_examples(duplicated)}).",
            "period",
            "keep one row per loan and period.",
        )

    spans = perf.group_by("loan_id", maintain_order=True).agg(
        pl.col("period").min().alias("first"),
        pl.col("period").max().alias("last"),
        pl.col("period").n_unique().alias("months"),
        pl.len().alias("rows"),
    )
    gaps = spans.filter((pl.col("first") != 1) | (pl.col("last") - pl.col("first") + 1 != pl.col("months")))
    if gaps.height:
        problem(
            f"{gaps.height} loan(s) have gaps in their periods, which must run 1, 2, 3, ... without a missing "
            f"month (loans {_examples(gaps)}).",
            "period",
            "add the missing months (a month with no payment is still a row) or drop those loans.",
        )

    stepped = perf.with_columns(pl.col("status").shift(1).over("loan_id").alias("_previous"))
    left = stepped.filter(pl.col("_previous").is_in(list(ABSORBING)) & (pl.col("status") != pl.col("_previous")))
    if left.height:
        moves = left.select(pl.format("{}->{}", "_previous", "status")).to_series().unique().head(3).to_list()
        problem(
            f"{left.get_column('loan_id').n_unique()} loan(s) leave an absorbing state ({', '.join(moves)}); "
            f"default, prepaid and matured end a path (loans {_examples(left)}).",
            "status",
            "end each history at its first default, prepaid or matured month, or correct the status labels.",
        )

    for column in ("balance", "payment", "days_past_due"):
        if column not in perf.columns:
            continue
        negative = perf.filter(pl.col(column).cast(pl.Float64, strict=False) < 0)
        if negative.height:
            problem(
                f"{negative.height} row(s) have a negative {column} (loans {_examples(negative)}).",
                column,
                f"correct the sign of {column} in the tape (amounts owed and paid are never negative).",
            )

    resolved_term = resolve_term_column(loans, term_column)
    loans_without_static = 0
    if loans is not None and id_column in loans.columns:
        keys = loans.select(pl.col(id_column).cast(pl.String).alias("loan_id"))
        if resolved_term:
            keys = keys.with_columns(_term_values(loans.get_column(resolved_term)).alias("_term"))
        joined = spans.join(keys.unique("loan_id"), on="loan_id", how="left", coalesce=True)
        if resolved_term:
            too_long = joined.filter(pl.col("_term").is_not_null() & (pl.col("last") > pl.col("_term")))
            if too_long.height:
                problem(
                    f"{too_long.height} loan(s) have a history longer than their term "
                    f"(loans {_examples(too_long)}).",
                    resolved_term,
                    f"check the loans' {resolved_term} (months) or drop the months after the term.",
                )
        loans_without_static = spans.join(keys, on="loan_id", how="anti").height

    transitions = stepped.filter(
        pl.col("_previous").is_not_null() & ~pl.col("_previous").is_in(list(ABSORBING))
    ).height
    if transitions == 0 and not problems:
        problem(
            f"no loan has a transition: all {spans.height} histories are one month long.",
            "period",
            "upload at least two consecutive months for some loans, or leave the performance file out.",
        )

    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ValidationErrors(problems, tenant=tenant, file=file)
    counts = perf.get_column("status").value_counts()
    state_counts = {s: 0 for s in STATES}
    state_counts.update(dict(zip(counts.get_column("status").to_list(), counts.get_column("count").to_list())))
    return HistoryReport(
        n_loans=spans.height,
        n_rows=perf.height,
        n_transitions=transitions,
        one_month_loans=spans.filter(pl.col("rows") == 1).height,
        max_period=int(spans.get_column("last").max()),
        state_counts=state_counts,
        loans_without_static=loans_without_static,
        term_column=resolved_term,
    )


# --------------------------------------------------------------------------- path arrays


@dataclass
class LoanPaths:
    """Histories as loan x month arrays, each cut at its first absorbing month.

    Row i is ``loan_ids[i]``; column t is month on book t + 1. Months after the
    end of a path hold state -1 and NaN amounts.
    """

    loan_ids: np.ndarray
    states: np.ndarray  # int64 (n, months), -1 after the end
    balance: np.ndarray  # float64 (n, months)
    payment: np.ndarray  # float64 (n, months)
    lengths: np.ndarray  # int64 (n,)

    def transitions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every month-to-month transition as (loan row, month index of the to-state, from, to)."""
        valid = (self.states[:, 1:] >= 0) & (self.states[:, :-1] >= 0)
        rows, cols = np.nonzero(valid)
        return rows, cols + 1, self.states[rows, cols], self.states[rows, cols + 1]


def training_paths(
    performance: pl.DataFrame, loan_ids: np.ndarray, months: int, *, tenant: str | None, file: str | None
) -> tuple[LoanPaths, np.ndarray]:
    """`loan_paths` for model training, with the mask of loans that have history.

    Raises `InvalidDataError` when no loan has any: there is nothing to learn.
    """
    paths = loan_paths(performance, loan_ids, months)
    keep = paths.lengths > 0
    if not keep.any():
        raise InvalidDataError(
            f"none of the {len(loan_ids)} loans has a history in the performance table.",
            tenant=tenant,
            file=file,
            column="loan_id",
            fix="check that the performance table's loan_id values match the loans table's ids.",
        )
    return paths, keep


def loan_paths(performance: pl.DataFrame, loan_ids: np.ndarray | list[str], months: int) -> LoanPaths:
    """Arrange `performance` as arrays in the order of `loan_ids`, at most `months` long.

    Each path is cut after its first absorbing month, so both models learn and
    are scored on the same transitions. Loans without rows get length 0; rows
    of loans not in `loan_ids` are ignored.
    """
    ids = np.asarray(loan_ids, dtype=object)
    order = pl.DataFrame({"loan_id": pl.Series(ids, dtype=pl.String), "_row": np.arange(len(ids), dtype=np.int64)})
    perf = _canonical(performance)
    for column in ("balance", "payment"):
        if column not in perf.columns:
            perf = perf.with_columns(pl.lit(None, dtype=pl.Float64).alias(column))
    first_absorbing = (
        pl.when(pl.col("status").is_in(list(ABSORBING))).then(pl.col("period")).otherwise(None).min().over("loan_id")
    )
    perf = (
        perf.with_columns(first_absorbing.alias("_end"))
        .filter((pl.col("_end").is_null() | (pl.col("period") <= pl.col("_end"))) & (pl.col("period") <= months))
        .filter(pl.col("period") >= 1)
        .join(order, on="loan_id", how="inner")
    )
    rows = perf.get_column("_row").to_numpy()
    cols = perf.get_column("period").to_numpy() - 1
    codes = perf.get_column("status").replace_strict(STATE_INDEX, default=-1, return_dtype=pl.Int64).to_numpy()
    states = np.full((len(ids), months), -1, dtype=np.int64)
    balance = np.full((len(ids), months), np.nan)
    payment = np.full((len(ids), months), np.nan)
    states[rows, cols] = codes
    balance[rows, cols] = perf.get_column("balance").cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
    payment[rows, cols] = perf.get_column("payment").cast(pl.Float64, strict=False).fill_null(np.nan).to_numpy()
    # A path ends at its first missing month; validated tables have none, synthetic ones neither.
    alive = np.cumprod(states >= 0, axis=1).astype(bool)
    states[~alive] = -1
    balance[~alive] = np.nan
    payment[~alive] = np.nan
    return LoanPaths(ids, states, balance, payment, alive.sum(axis=1).astype(np.int64))


@dataclass
class LoanTerms:
    """Per-loan contract figures the models need to turn ratios into amounts."""

    term: np.ndarray  # int64 months
    amount: np.ndarray  # float64 original amount
    installment: np.ndarray  # float64 scheduled monthly payment


def _first_present(loans: pl.DataFrame, names: tuple[str, ...]) -> str | None:
    """The loans column answering to the first of `names` (compared as `normalise_column_name` does: "Amount" is amount)."""
    from models.tape.schema import normalise_column_name

    by_name: dict[str, str] = {}
    for column in loans.columns:
        by_name.setdefault(normalise_column_name(column), column)
    return next((by_name[n] for n in names if n in by_name), None)


def loan_terms(
    loans: pl.DataFrame,
    *,
    term_column: str | None = "term_months",
    fallback_term: int,
    need_amount: bool = True,
    tenant: str | None = None,
    file: str | None = None,
) -> LoanTerms:
    """Term, original amount and scheduled installment of each loan, in table order.

    The term comes from `term_column` or an alias (text like '36 months' is
    read by its number), else `fallback_term`. The installment comes from an
    installment column, else the annuity of amount, rate and term, else
    amount / term. Column names match whatever their case ("Amount").
    Without `need_amount` (a history with neither balance nor payment, where
    amounts scale nothing) a missing amount column reads as amounts of 1.

    `file` is the performance history's name, which callers pass for their
    own errors; a missing amount is a fault of the loans upload, so that
    error names the loans file (`LOANS_FILE`) and mentions the history only
    as the reason the amount is needed.

    Raises:
        InvalidDataError: the loans table has no amount column and `need_amount`.
    """
    amount_column = _first_present(loans, AMOUNT_COLUMNS)
    if amount_column is None and need_amount:
        history = f"the performance history ({file})" if file else "the performance history"
        # The file is set to the loans upload here, so a caller's context (which fills an unset file with the
        # history's name) cannot point the lender at the wrong file. tenant.yaml maps history columns only
        # (performance:), so renaming the column in the loans file is the one fix there is.
        raise InvalidDataError(
            f"the loan tape (loans file) has no original loan amount column, which {history} needs to scale "
            f"balances and payments; none of its columns is named {', '.join(AMOUNT_COLUMNS)} "
            "(case, spaces and dashes ignored).",
            tenant=tenant,
            file=LOANS_FILE,
            column="loan_amount",
            fix="rename the original loan amount column of the loans file to 'loan_amount' (or to one of the "
            "names above, e.g. Freddie Mac's ORIGINAL_UPB or Fannie Mae's ORIG_UPB) and upload it again; "
            "tenant.yaml cannot map loans columns.",
        )
    if amount_column is None:
        amount = np.ones(loans.height)
    else:
        amount = loans.get_column(amount_column).cast(pl.Float64, strict=False).to_numpy().astype(np.float64)
    positive = amount[np.isfinite(amount) & (amount > 0)]
    amount = np.where(np.isfinite(amount) & (amount > 0), amount, np.median(positive) if positive.size else 1.0)

    resolved = resolve_term_column(loans, term_column)
    if resolved:
        term = _term_values(loans.get_column(resolved)).fill_null(fallback_term).to_numpy().astype(np.int64)
        term = np.where(term > 0, term, fallback_term)
    else:
        term = np.full(loans.height, fallback_term, dtype=np.int64)

    rate_column = _first_present(loans, RATE_COLUMNS)
    monthly = np.zeros(loans.height)
    if rate_column:
        rate = loans.get_column(rate_column).cast(pl.Float64, strict=False).fill_null(strategy="mean").to_numpy()
        rate = np.nan_to_num(rate.astype(np.float64), nan=0.0)
        # Rates arrive as 0.12 or as 12 (per cent); a median above 1 can only be per cent.
        if rate.size and np.median(rate) > 1.0:
            rate = rate / 100.0
        monthly = np.clip(rate, 0.0, 1.0) / 12.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        annuity = np.where(monthly > 0, amount * monthly / (1.0 - (1.0 + monthly) ** (-term)), amount / term)
    installment = annuity
    installment_column = _first_present(loans, INSTALLMENT_COLUMNS)
    if installment_column:
        given = loans.get_column(installment_column).cast(pl.Float64, strict=False).to_numpy().astype(np.float64)
        installment = np.where(np.isfinite(given) & (given > 0), given, annuity)
    installment = np.where(np.isfinite(installment) & (installment > 0), installment, amount / np.maximum(term, 1))
    return LoanTerms(term=term, amount=amount, installment=installment)


def history_amounts(performance: pl.DataFrame) -> list[str]:
    """The amount columns (balance, payment) `performance` carries with at least one value."""
    return [c for c in AMOUNTS if c in performance.columns and performance.get_column(c).null_count() < performance.height]


def observed_states(performance: pl.DataFrame) -> list[bool]:
    """Per state of `STATES`, whether `performance` holds it at all; a model never samples a state its tape never had."""
    present = set(performance.get_column("status").cast(pl.String).unique().to_list())
    return [s in present for s in STATES]


def state_days_past_due(performance: pl.DataFrame) -> list[float]:
    """Median days past due of each state in `performance` (defaults where unobserved)."""
    if "days_past_due" not in performance.columns:
        return list(DEFAULT_DPD)
    medians = (
        performance.select(pl.col("status").cast(pl.String), pl.col("days_past_due").cast(pl.Float64, strict=False))
        .group_by("status")
        .agg(pl.col("days_past_due").median())
    )
    found = dict(zip(medians.get_column("status").to_list(), medians.get_column("days_past_due").to_list()))
    return [float(found[s]) if found.get(s) is not None else DEFAULT_DPD[i] for i, s in enumerate(STATES)]


def month_index(column: pl.Expr) -> pl.Expr:
    """Months since year 0 (year * 12 + month - 1) of a Date expression: consecutive months differ by 1."""
    return column.dt.year().cast(pl.Int64) * 12 + column.dt.month().cast(pl.Int64) - 1


ORIGINATION = "origination_date"
# Names tapes give the date a loan starts (normalised: lower case, '_' for spaces and dashes), best first: Lending
# Club's issue_d, servicers' open and disbursement dates, the agencies' first payment date (a month after origination;
# `reporting_offset` measures whatever gap the tape has).
_ORIGINATION_NAMES = (
    "origination_date", "orig_date", "origination", "date_of_origination", "origination_month", "orig_month",
    "loan_origination_date", "issue_d", "issue_date", "issued_date", "date_issued", "issued", "funded_date",
    "funding_date", "date_funded", "disbursement_date", "disbursal_date", "disbursed_date", "date_disbursed",
    "open_date", "opened_date", "date_opened", "account_open_date", "opening_date", "loan_start_date", "start_date",
    "booking_date", "booked_date", "contract_date", "loan_date", "first_payment_date", "first_pay_date",
)
# ... else the first date column whose name has one of these words (or "first" with a payment word), and none of the
# words after them (`models.tape.names.name_words`: "LoanOrigDt" is loan, orig, dt).
# The words come in tiers, strongest first (an origination outranks an opening or a start anywhere in the table).
_ORIGINATION_TIERS = (
    frozenset({"orig", "origination", "originated", "issue", "issued", "disbursement", "disbursed", "disbursal",
               "funded", "funding", "fund", "booked", "booking", "inception"}),
    frozenset({"open", "opened", "opening", "start", "started", "vintage"}),
)
_PAYMENT_WORDS = frozenset({"payment", "pay", "pmt", "instalment", "installment", "due"})
_NOT_ORIGINATION = frozenset({"maturity", "mature", "matures", "last", "next", "end", "close", "closed", "closing",
                              "earliest", "birth", "dob", "default", "chargeoff", "charge", "payoff", "settlement",
                              "report", "reporting", "as", "asof", "snapshot", "refund", "exit", "termination",
                              "hardship", "forbearance", "deferral", "deferment", "promo", "promotion", "plan",
                              "modification", "mod", "oldest", "trade", "recent", "review", "rate", "reset"})




def _is_date(dtype: pl.DataType) -> bool:
    return dtype == pl.Date or isinstance(dtype, pl.Datetime)


def origination_column(loans: pl.DataFrame) -> str | None:
    """The date column of `loans` that says when each loan started, by name (`ORIGINATION` itself first); None
    when there is none. Only Date and Datetime columns count; the synthetic loans, with the tape's names and
    types, resolve to the same column as the real ones. After the known names, a column's words decide, in
    tiers (an origination or funding date before an opening or start date, then a first payment date), and a
    word of another event (maturity, hardship, the oldest trade) rules a column out."""
    dated = [c for c, t in loans.schema.items() if _is_date(t)]
    names = {normalise_column_name(c): c for c in reversed(dated)}
    for name in _ORIGINATION_NAMES:
        if name in names:
            return names[name]
    candidates = [(c, set(name_words(c))) for c in dated]
    candidates = [(c, words) for c, words in candidates if not words & _NOT_ORIGINATION]
    for tier in _ORIGINATION_TIERS:
        found = next((c for c, words in candidates if words & tier), None)
        if found is not None:
            return found
    return next((c for c, _ in candidates if names_first_payment(c)), None)


def names_first_payment(column: str) -> bool:
    """Whether a start-date column is a first payment date (FIRST_PAYMENT_DATE): a month after origination."""
    words = set(name_words(column))
    return "first" in words and bool(words & _PAYMENT_WORDS)


def dated_loans(loans: pl.DataFrame | None) -> pl.DataFrame | None:
    """`loans` with their start dates under `ORIGINATION` (as Date), from the column `origination_column` finds
    when the tape names it otherwise ("issue_d", "Disbursement Date"); as they are when there is none."""
    if loans is None or (ORIGINATION in loans.columns and _is_date(loans.schema[ORIGINATION])):
        return loans
    column = origination_column(loans)
    if column is None:
        return loans.drop(ORIGINATION) if ORIGINATION in loans.columns else loans
    return loans.with_columns(pl.col(column).cast(pl.Date).alias(ORIGINATION))


def _first_months(performance: pl.DataFrame) -> pl.DataFrame:
    """Per loan (``loan_id`` as text), ``_first``: the month index (`month_index`) its period 1 was reported in."""
    return performance.select(
        pl.col("loan_id").cast(pl.String),
        (month_index(pl.col("reporting_month").cast(pl.Date)) - pl.col("period").cast(pl.Int64) + 1).alias("_first"),
    ).group_by("loan_id").agg(pl.col("_first").min())


def draw_from_counts(counts: Mapping[Any, int], size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` values (int64) drawn from {value: count} in proportion to the counts (values in ascending order)."""
    ordered = sorted((int(k), int(v)) for k, v in counts.items())
    values = np.array([k for k, _ in ordered], dtype=np.int64)
    weights = np.array([v for _, v in ordered], dtype=np.float64)
    return rng.choice(values, size=size, p=weights / weights.sum())


def reporting_offset(performance: pl.DataFrame, loans: pl.DataFrame, id_column: str) -> int | None:
    """Months from the origination month to the reporting month of period 1 (the most common value).

    None when the history has no ``reporting_month`` or the loans no
    ``origination_date``, in which case synthetic histories carry no
    reporting month either.
    """
    loans = dated_loans(loans)
    if "reporting_month" not in performance.columns or ORIGINATION not in loans.columns:
        return None
    first = _first_months(performance)
    origin = loans.select(
        pl.col(id_column).cast(pl.String).alias("loan_id"), month_index(pl.col("origination_date")).alias("_origin")
    )
    offsets = first.join(origin, on="loan_id").select((pl.col("_first") - pl.col("_origin")).alias("offset"))
    if offsets.height == 0:
        return None
    return int(offsets.get_column("offset").mode().sort().item(0))


# --------------------------------------------------------------------------- the observation window

AS_OF_KEY = "performance.as_of"
# A loan whose months are not capped: longer than any modelled history.
_UNCAPPED = np.iinfo(np.int32).max


def month_label(index: int) -> str:
    """A month index (`month_index`) as 'YYYY-MM'."""
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def parse_month(text: str) -> int:
    """'YYYY-MM' (as `models.tape.tenant` validates `performance.as_of`) as a month index."""
    year, month = str(text)[:7].split("-")
    return int(year) * 12 + int(month) - 1


def first_reporting_months(performance: pl.DataFrame, loan_ids: np.ndarray | list[str]) -> np.ndarray | None:
    """Each loan's reporting month of period 1 as a month index (float, NaN without a history), in `loan_ids`' order;
    None when the history has no ``reporting_month``."""
    if "reporting_month" not in performance.columns:
        return None
    first = _first_months(performance)
    order = pl.DataFrame({"loan_id": pl.Series(np.asarray(loan_ids, dtype=object), dtype=pl.String)})
    joined = order.join(first, on="loan_id", how="left", maintain_order="left")
    return joined.get_column("_first").cast(pl.Float64).fill_null(np.nan).to_numpy()


@dataclass
class ObservationWindow:
    """Where the tape's observation stops each loan's history, so a synthetic history stops there too.

    A servicing extract reports every open loan up to its as-of month (the
    cut-off): a loan originated a year before it has a year of history, open
    or not, and that history is censored there, not ended. A synthetic loan's
    history holds at most ``as_of - first + 1`` months, where ``first`` is the
    reporting month of its period 1: its origination month plus `offset` when
    the loans carry ``origination_date``, else drawn from the real loans' own
    first reporting months (`starts`, the tape's mix of vintages), since a
    synthetic loan without a date has no place in time of its own. A loan
    whose first month is unknown (a null origination date) is not capped.

    Attributes:
        as_of: the cut-off as a month index (`month_index`); None leaves every
            path to its term and the longest history.
        source: where `as_of` came from, or why there is none.
        offset: months from origination to period 1 (`reporting_offset`).
        starts: {first reporting month (month index): loans}, drawn from when
            the loans carry no origination date; None under DP.
    """

    as_of: int | None
    source: str
    offset: int | None = None
    starts: dict[int, int] | None = None

    @property
    def drawn(self) -> bool:
        """Whether first months are drawn from `starts` (the loans carry no origination date)."""
        return self.offset is None and bool(self.starts)

    def placeable(self, loans: pl.DataFrame) -> bool:
        """Whether `loans` can be placed in time: by their origination dates, or by drawing their first months."""
        return (self.offset is not None and ORIGINATION in dated_loans(loans).columns) or self.drawn

    def first_months(self, loans: pl.DataFrame, rng: np.random.Generator) -> np.ndarray | None:
        """The reporting month (month index) of each loan's period 1, NaN where unknown; None when there is no way
        to place the loans in time (no reporting months in the tape, or loans without the dates they need)."""
        loans = dated_loans(loans)
        if self.offset is not None and ORIGINATION in loans.columns:
            origin = loans.select(month_index(pl.col(ORIGINATION).cast(pl.Date))).to_series()
            return origin.cast(pl.Float64).fill_null(np.nan).to_numpy() + self.offset
        if self.drawn:
            return self.draw(loans.height, rng)
        return None

    def draw(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """`size` first months drawn from `starts`, in proportion to the real loans starting in each."""
        return draw_from_counts(self.starts, size, rng).astype(np.float64)

    def limits(self, first: np.ndarray | None) -> np.ndarray | None:
        """Months each loan is observable (0 or less: none), from its first month; None when nothing is capped."""
        if self.as_of is None or first is None:
            return None
        observable = np.where(np.isfinite(first), self.as_of - np.nan_to_num(first) + 1, _UNCAPPED)
        return np.clip(observable, -1, _UNCAPPED).astype(np.int64)

    def describe(self, loans: pl.DataFrame | None = None) -> dict[str, Any]:
        """What a reviewer reads in the metadata: whether histories (of `loans`, when given) stop at a cut-off,
        which, and why."""
        if self.as_of is None:
            return {"capped": False, "reason": self.source}
        if loans is not None and not self.placeable(loans):
            # placed by origination month, but these loans carry none (a DP twin without its public range)
            return {"capped": False, "reason": "the synthetic loans carry no origination_date, so none can be placed "
                                               f"before the cut-off {month_label(self.as_of)}"}
        first = (f"its origination month + {self.offset}" if self.offset is not None
                 else "drawn from the real loans' first reporting months (the loans carry no origination date)")
        return {"capped": True, "as_of": month_label(self.as_of), "source": self.source, "first_month": first}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (`starts` keyed by text)."""
        starts = None if self.starts is None else {str(k): int(v) for k, v in self.starts.items()}
        return {"as_of": self.as_of, "source": self.source, "offset": self.offset, "starts": starts}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ObservationWindow":
        """A window from `to_dict`'s output."""
        starts = data.get("starts")
        return cls(as_of=data.get("as_of"), source=data["source"], offset=data.get("offset"),
                   starts=None if starts is None else {int(k): int(v) for k, v in starts.items()})


def check_as_of(performance: pl.DataFrame, as_of: str | None, *, private: bool = False, tenant: str | None = None) -> None:
    """Refuse a declared cut-off `as_of` ('YYYY-MM') that the canonical history contradicts (it reports later months).

    Ingest calls it when the tape is read, before any privacy budget is charged. Under DP (`private`) the refusal
    does not name the data's own last month.

    Raises:
        TenantConfigError: the history reports months after `as_of`.
    """
    from models.errors import TenantConfigError
    from models.tape.schema import TENANT_FILE

    if as_of is None or "reporting_month" not in performance.columns:
        return
    declared = parse_month(as_of)
    last = performance.select(month_index(pl.col("reporting_month").cast(pl.Date)).max()).item()
    if last is not None and last > declared:
        shown = "" if private else f" (the last is {month_label(int(last))})"
        raise TenantConfigError(
            f"key '{AS_OF_KEY}' declares the history's cut-off {month_label(declared)}, but the history reports "
            f"later months{shown}.",
            tenant=tenant,
            file=TENANT_FILE,
            fix=f"set {AS_OF_KEY} to the extract's as-of month (its last reporting month, YYYY-MM), or remove it.",
        )


def observation_window(
    performance: pl.DataFrame,
    loans: pl.DataFrame,
    offset: int | None,
    *,
    as_of: str | None = None,
    private: bool = False,
    tenant: str | None = None,
) -> ObservationWindow:
    """The window of the training histories: the cut-off a synthetic history stops at, and how to place a loan in it.

    The cut-off is `as_of` ('YYYY-MM', tenant.yaml's ``performance.as_of``)
    when declared, else the history's last reporting month. Under DP
    (`private`) the data's last month is a statistic of the borrowers the
    accountant never charged: only a declared `as_of` caps histories, and
    only with the loans' origination dates and the public `offset` (the real
    loans' first months are not drawn from either).

    Raises:
        TenantConfigError: the history reports months after the declared `as_of`.
    """
    has_months = "reporting_month" in performance.columns
    check_as_of(performance, as_of, private=private, tenant=tenant)
    declared = parse_month(as_of) if as_of is not None else None
    if not has_months:
        return ObservationWindow(None, "the history has no reporting months, so no loan can be placed before a "
                                       "cut-off: histories run to their term or the longest history", offset)
    if private:
        if declared is None:
            return ObservationWindow(None, f"under DP the history's last reporting month is an uncharged statistic of "
                                           f"the borrowers and is not read: histories are not capped (declare "
                                           f"{AS_OF_KEY} in tenant.yaml to cap them)", offset)
        if offset is None:
            return ObservationWindow(None, f"under DP a loan is placed in time only by its origination_date, which "
                                           f"the loans lack: the declared {AS_OF_KEY} cannot cap histories", None)
        return ObservationWindow(declared, f"declared in tenant.yaml ({AS_OF_KEY})", offset)
    if declared is not None:
        source = f"declared in tenant.yaml ({AS_OF_KEY})"
    else:
        last = performance.select(month_index(pl.col("reporting_month").cast(pl.Date)).max()).item()
        if last is None:
            return ObservationWindow(None, "no reporting month of the history is known: histories are not capped", offset)
        declared = int(last)
        source = "the history's last reporting month"
    if offset is not None:
        return ObservationWindow(declared, source, offset)
    counts = _first_months(performance).get_column("_first").drop_nulls().value_counts()
    if counts.height == 0:
        return ObservationWindow(None, "no loan's first reporting month is known: histories are not capped", None)
    return ObservationWindow(declared, source, None, dict(zip(counts.get_column("_first").to_list(),
                                                              counts.get_column("count").to_list())))


def paths_to_frame(
    loan_ids: np.ndarray,
    states: np.ndarray,
    balance: np.ndarray,
    payment: np.ndarray,
    days_past_due: list[float],
    *,
    origination: pl.Series | None = None,
    offset: int | None = None,
    amounts: tuple[str, ...] | list[str] = AMOUNTS,
    first_month: np.ndarray | None = None,
) -> pl.DataFrame:
    """Sampled arrays back to a canonical performance table, one row per loan and month.

    `origination` (dates, aligned with `loan_ids`) and `offset` (see
    `reporting_offset`) add a ``reporting_month`` column when both are given;
    so does `first_month`, each loan's reporting month of period 1 as a month
    index (NaN: none; see `ObservationWindow.first_months`).
    Of balance and payment, only the `amounts` columns are written: a model
    fitted on a history without them has nothing to say about them.
    """
    rows, cols = np.nonzero(states >= 0)
    codes = states[rows, cols]
    frame = pl.DataFrame(
        {
            "loan_id": pl.Series(np.asarray(loan_ids, dtype=object)[rows], dtype=pl.String),
            "period": pl.Series(cols + 1, dtype=pl.Int64),
            "status": pl.Series(np.asarray(STATES, dtype=object)[codes], dtype=pl.String),
            "days_past_due": pl.Series(np.round(np.asarray(days_past_due)[codes]).astype(np.int64), dtype=pl.Int64),
            **{
                name: pl.Series(np.round(values[rows, cols], 2), dtype=pl.Float64)
                for name, values in (("balance", balance), ("payment", payment))
                if name in amounts
            },
        }
    )
    if first_month is None and origination is not None and offset is not None:
        start = pl.DataFrame({"_origin": origination}).select(month_index(pl.col("_origin").cast(pl.Date)))
        first_month = start.get_column("_origin").cast(pl.Float64).fill_null(np.nan).to_numpy() + offset
    if first_month is not None:
        month = np.asarray(first_month, dtype=np.float64)[rows] + cols
        # a loan without an origination date (a synthetic null under DP) has no reporting month: null, not a crash
        frame = frame.with_columns(
            pl.Series("_m", month, dtype=pl.Float64, nan_to_null=True).cast(pl.Int64)
        ).with_columns(
            pl.date(pl.col("_m") // 12, pl.col("_m") % 12 + 1, 1).alias("reporting_month")
        ).drop("_m")
    return frame


def ratio_targets(paths: LoanPaths, amount: np.ndarray, installment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Balance and payment of each month as ratios the models predict (NaN where no month).

    Balance is taken against the previous month's balance (the original amount
    in month 1); payment against the scheduled installment, or against the
    previous balance in a prepaid or matured month, when the loan pays off.
    Ratios are clipped to [0, 2] and [0, 4] so a tape's outliers cannot
    dominate training.
    """
    previous = np.concatenate([amount[:, None], paths.balance[:, :-1]], axis=1)
    previous = np.where(np.isfinite(previous) & (previous > 0), previous, np.nan)
    closing = np.isin(paths.states, CLOSING_CODES)
    with np.errstate(divide="ignore", invalid="ignore"):
        balance_ratio = np.clip(paths.balance / previous, 0.0, 2.0)
        payment_ratio = np.where(closing, paths.payment / previous, paths.payment / installment[:, None])
    payment_ratio = np.clip(payment_ratio, 0.0, 4.0)
    balance_ratio = np.where(closing, 0.0, balance_ratio)
    invalid = paths.states < 0
    balance_ratio[invalid] = np.nan
    payment_ratio[invalid] = np.nan
    return balance_ratio, payment_ratio


# --------------------------------------------------------------------------- the tape's vocabulary

_RENDER_ORDER = ("loan_id", "period", "status", "days_past_due", "balance", "payment", "zero_balance_code")
# The months behind at the first month of 90+ days in arrears (state dpd90): 3 missed payments.
_MONTHS_BEHIND_AT_DPD90 = 3
# A period written as a spreadsheet's serial day number (43466 for 2019-01-01): days since this epoch.
EXCEL_EPOCH = date(1899, 12, 30)
EXCEL_SERIAL_FORMAT = "excel-serial"
# Agency zero-balance codes that need no data: 01 prepaid or matured, 09 REO disposition (a credit event).
_PUBLIC_ZERO_BALANCE = {"prepaid": "01", "default": "09"}


def _integer_dtype(name: str | None) -> bool:
    return bool(name) and name.startswith(("Int", "UInt"))


def _period_values(
    history: pl.DataFrame, form: Mapping[str, Any], seed: int, private: bool = False, as_of: str | None = None
) -> pl.Series:
    """The history's periods written as the file wrote them (see `models.tape.performance.read_performance`)."""
    period = history.get_column("period").cast(pl.Int64)
    if form["kind"] == "index":
        return period + int(form["offset"]) - 1
    if form["kind"] == "month" and "reporting_month" in history.columns:
        month = history.select(month_index(pl.col("reporting_month").cast(pl.Date))).to_series()
    elif private and (as_of is None or form["kind"] == "calendar" or history.height == 0):
        # Under DP the real loans' first months are an uncharged statistic and there is no public month to
        # place a loan at (nor a public link from a month to the file's calendar index): the month on book.
        return period
    else:
        loans = history.group_by(pl.col("loan_id").cast(pl.String)).agg(pl.col("period").max().alias("_n")).sort("loan_id")
        rng = np.random.default_rng(seed)
        if private:
            # Under DP: each loan's last month falls uniformly in the window before the declared cut-off that the
            # longest synthetic history spans; the real loans' first months are never read.
            last = parse_month(as_of)
            span = int(loans.get_column("_n").max())
            lengths = loans.get_column("_n").to_numpy()
            drawn = last - lengths + 1 - rng.integers(0, np.maximum(span - lengths, 0) + 1)
        else:
            # Synthetic loans carry no start month of their own: each draws one from the real loans' first months.
            drawn = draw_from_counts(form["starts"], loans.height, rng)
        first = pl.DataFrame({"loan_id": loans.get_column("loan_id"), "_start": pl.Series(drawn, dtype=pl.Int64)})
        start = history.select(pl.col("loan_id").cast(pl.String)).join(first, on="loan_id", how="left", maintain_order="left")
        month = start.get_column("_start") + period - 1
    if form["kind"] == "calendar":
        return month
    dates = pl.select(pl.date(month // 12, month % 12 + 1, 1)).to_series()
    if form.get("day") == "end":
        dates = dates.dt.month_end()
    elif isinstance(form.get("day"), int) and form["day"] > 1:
        # A day the month lacks (31 in April) is its last day.
        day = np.minimum(dates.dt.month_end().dt.day().to_numpy(), int(form["day"]))
        dates = pl.select(pl.date(month // 12, month % 12 + 1, pl.Series(day))).to_series()
    fmt, dtype = form.get("format"), form.get("dtype", "Date")
    if _integer_dtype(dtype):
        if fmt == "%m%Y":  # Fannie Mae's ACT_PERIOD read as an integer (022019 -> 22019): month, then year
            return dates.dt.month().cast(pl.Int64) * 10000 + dates.dt.year().cast(pl.Int64)
        if fmt == EXCEL_SERIAL_FORMAT:  # a spreadsheet's date cell exported as its day number
            return pl.select((pl.lit(dates) - pl.lit(EXCEL_EPOCH)).dt.total_days().cast(pl.Int64)).to_series()
        return dates.dt.year().cast(pl.Int64) * 100 + dates.dt.month().cast(pl.Int64)
    if fmt:
        return dates.dt.strftime(fmt)
    return dates.cast(pl.Datetime) if dtype.startswith("Datetime") else dates


def in_loan_order(history: pl.DataFrame) -> bool:
    """Whether a history's rows run by loan, then by strictly increasing period (as ingest and the samplers write them)."""
    loan, month = pl.col("loan_id"), pl.col("period")
    if history.height < 2:
        return True
    return bool(history.select(((loan > loan.shift(1)) | ((loan == loan.shift(1)) & (month > month.shift(1)))).slice(1).all()).item())


def _loan_ordered(history: pl.DataFrame, *extra: pl.Series) -> tuple[pl.DataFrame, bool]:
    """(loan_id, period, status, `extra` and the row number ``_row`` in loan and period order, whether that took a
    sort): per-loan running counts and fills read rows in that order; `_row_order` puts a result back."""
    ordered = history.select("loan_id", "period", "status").with_row_index("_row").with_columns(extra)
    if in_loan_order(ordered):
        return ordered, False
    return ordered.sort("loan_id", "period"), True


def _row_order(ordered: pl.DataFrame, column: str, sorted_: bool) -> pl.Series:
    """`column` of a `_loan_ordered` frame in the history's own row order."""
    return (ordered.sort("_row") if sorted_ else ordered).get_column(column)


def arrears_run(history: pl.DataFrame) -> pl.Series:
    """Each row's month in its loan's unbroken run in state dpd90 (1, 2, ...; 0 outside one), in the rows' order.

    A history written by loan and period (as ingest and the samplers write it) is read as it is; another order is
    sorted for the count and the result put back in the rows' order.
    """
    ordered, sorted_ = _loan_ordered(history)
    arrears = pl.col("status") == "dpd90"
    # each month out of dpd90 starts a new spell; within it the dpd90 months count 1, 2, ...
    ordered = ordered.with_columns((~arrears).cum_sum().over("loan_id").alias("_spell"))
    ordered = ordered.with_columns(arrears.cast(pl.Int64).cum_sum().over("loan_id", "_spell").alias("_run"))
    return _row_order(ordered, "_run", sorted_).alias("arrears_run")


def arrears_days(frame: pl.DataFrame) -> dict[str, int] | None:
    """How a history's days past due grow through a run in dpd90: the median on its first month, the median step
    to its second (30 where a file counts days, 0 where it writes a 90 bucket throughout) and the most it reaches
    (a file that stops counting at 180 writes no more); None without days past due or without a run of two months."""
    if "days_past_due" not in frame.columns:
        return None
    days = frame.select(arrears_run(frame), pl.col("days_past_due").cast(pl.Float64))
    first = days.filter(pl.col("arrears_run") == 1).get_column("days_past_due").median()
    second = days.filter(pl.col("arrears_run") == 2).get_column("days_past_due").median()
    most = days.filter(pl.col("arrears_run") > 0).get_column("days_past_due").max()
    if first is None or second is None:
        return None
    return {"first": int(round(first)), "step": max(int(round(second - first)), 0), "most": int(round(most))}


def _status_values(history: pl.DataFrame, vocabulary: Mapping[str, Any], coded: bool, run: pl.Series | None) -> pl.Series:
    """The history's states as the file wrote its status column (see `render_history`), in the history's row order.

    Each state takes the file's most frequent spelling of it. Where the file counts months behind (agency codes 0,
    1, 2, 3, 4, ...), a month in state dpd90 is written as the months behind it stands for: 3 on the first month of
    an unbroken run in dpd90, then 4, 5, ..., as a loan that pays nothing falls one more month behind each month
    (zero-padded to the file's width). Where the file says how a loan left it in a zero-balance-code column
    (`coded`), the month of an outcome its status column never spells repeats the status of the month before, as
    agency files write it (a payoff after a current month reads 0), and the code goes in its own column. A state
    the file never spelled otherwise keeps its canonical name.
    """
    spelling = dict(vocabulary.get("status", {}))
    form = vocabulary.get("status_form") or {}
    counts_months = form.get("kind") == "months_behind"
    silent = [s for s in sorted(ABSORBING) if s not in spelling] if coded else []
    if not counts_months and not silent:
        return history.get_column("status").replace_strict(
            {s: spelling.get(s, s) for s in STATES}, default=None, return_dtype=pl.String
        )
    ordered, sorted_ = _loan_ordered(history, *([run.alias("_run")] if run is not None else []))
    state = pl.col("status")
    written = state.replace_strict({s: spelling.get(s, s) for s in STATES}, default=None, return_dtype=pl.String)
    if counts_months:
        arrears = state == "dpd90"
        code = (pl.col("_run") + _MONTHS_BEHIND_AT_DPD90 - 1).cast(pl.String)
        width = int(form.get("width") or 0)
        if width:
            code = code.str.zfill(width)
        written = pl.when(arrears).then(code).otherwise(written)
    if silent:
        before = pl.when(state.is_in(silent)).then(None).otherwise(written).forward_fill().over("loan_id")
        written = pl.when(state.is_in(silent)).then(before.fill_null(pl.lit(spelling.get("current", "current")))).otherwise(written)
    return _row_order(ordered.with_columns(written.alias("_written")), "_written", sorted_)


def render_history(
    history: pl.DataFrame, vocabulary: Mapping[str, Any], *, seed: int = 0, private: bool = False,
    as_of: str | None = None,
) -> pl.DataFrame:
    """A canonical (synthetic) history written in the vocabulary of the file the real history came from.

    `vocabulary` is what `models.tape.performance.read_performance` recorded at ingest
    (saved in the raw tape's ``ingest`` document under
    ``performance.vocabulary``). The result has the file's own column names
    and only the columns the file had: statuses spelled as the file spelled
    them most often (``dpd30`` comes back as ``30`` when the file wrote 30, as
    an integer when the column was numeric), days past due as integers,
    balance and payment only when the file had them, periods in the file's
    form (a month-on-book index with its offset, a calendar index, or a month
    in the file's format and day), and loan ids as integers when the file's
    were and the history's ids all read as integers. Agency months-behind
    codes keep counting past 3 through a run of missed payments, and a file
    that says how a loan left through a zero-balance code gets that code
    back (`_status_values`). A synthetic loan's first
    month comes from its reporting month when it has one, else is drawn
    (seeded) from the real loans' first months. Under DP (`private`) those are
    an uncharged statistic and are never read: a loan's last month is drawn
    uniformly from the window before the declared cut-off `as_of` ('YYYY-MM',
    ``performance.as_of``) that the longest synthetic history spans, and
    without one the period is written as the month on book.
    """
    columns: Mapping[str, str] = vocabulary["columns"]
    dtypes: Mapping[str, str] = vocabulary.get("dtypes", {})
    out: dict[str, pl.Series] = {}
    loan_id = history.get_column("loan_id")
    if _integer_dtype(dtypes.get("loan_id")):
        loan_id = int_if_lossless(loan_id)
    out["loan_id"] = loan_id
    out["period"] = _period_values(history, vocabulary["period"], seed, private, as_of)
    # a vocabulary recorded before zero-balance codes were written back has no `zero_balance`: the column is left out
    coded = "zero_balance_code" in columns and vocabulary.get("zero_balance") is not None
    counts_months = (vocabulary.get("status_form") or {}).get("kind") == "months_behind"
    accrues = "days_past_due" in columns and not private and vocabulary.get("arrears_days") is not None
    run = arrears_run(history) if ("status" in columns and counts_months) or accrues else None
    if "status" in columns:
        status = _status_values(history, vocabulary, coded, run)
        if _integer_dtype(dtypes.get("status")) or (dtypes.get("status", "").startswith("Float")):
            status = int_if_lossless(status)
        out["status"] = status
    if coded:
        # The month a synthetic loan leaves the book carries the code for how (payoff or credit event): the file's
        # most frequent one, or the public agency code (01, 09) under DP and for an outcome the file never coded.
        written = vocabulary["zero_balance"]
        width = int(written.get("width") or 0)
        public = {state: code.lstrip("0").zfill(width) for state, code in _PUBLIC_ZERO_BALANCE.items()}
        chosen = public if private else {state: written.get(state, public[state]) for state in public}
        codes = {"prepaid": chosen["prepaid"], "matured": chosen["prepaid"], "default": chosen["default"]}
        code = history.get_column("status").replace_strict(codes, default=None, return_dtype=pl.String)
        numeric = _integer_dtype(dtypes.get("zero_balance_code")) or dtypes.get("zero_balance_code", "").startswith("Float")
        out["zero_balance_code"] = int_if_lossless(code) if numeric else code
    if "days_past_due" in columns:
        days = history.get_column("days_past_due").cast(pl.Int64)
        if accrues:
            # through a run in dpd90 the days grow as the file's do (90, 120, 150, ... or a 90 bucket throughout),
            # not the state's one median; under DP the file's growth is an uncharged statistic and is not read
            growth = vocabulary["arrears_days"]
            grown = int(growth["first"]) + int(growth["step"]) * (run - 1)
            if growth.get("most") is not None:
                grown = grown.clip(upper_bound=int(growth["most"]))
            days = pl.select(pl.when(run > 0).then(grown).otherwise(days)).to_series().cast(pl.Int64)
        out["days_past_due"] = days
    for name in ("balance", "payment"):
        if name in columns and name in history.columns:
            out[name] = history.get_column(name).cast(pl.Float64).round(2)
    return pl.DataFrame([out[name].alias(columns[name]) for name in _RENDER_ORDER if name in out])


# --------------------------------------------------------------------------- fidelity measures


def _pairs(performance: pl.DataFrame) -> pl.DataFrame:
    """Consecutive-month transitions out of non-absorbing states, with the from-month's balance."""
    perf = _canonical(performance)
    has_balance = "balance" in perf.columns
    stepped = perf.with_columns(
        pl.col("status").shift(1).over("loan_id").alias("from"),
        pl.col("period").shift(1).over("loan_id").alias("_from_period"),
        (pl.col("balance").cast(pl.Float64).shift(1).over("loan_id") if has_balance else pl.lit(None, pl.Float64)).alias(
            "from_balance"
        ),
    )
    return stepped.filter(
        pl.col("from").is_not_null()
        & ~pl.col("from").is_in(list(ABSORBING))
        & (pl.col("period") == pl.col("_from_period") + 1)
        & pl.col("from").is_in(list(STATES))
        & pl.col("status").is_in(list(STATES))
    ).select(pl.col("from"), pl.col("status").alias("to"), "from_balance", "period", "loan_id")


def transition_counts(performance: pl.DataFrame) -> np.ndarray:
    """7 x 7 counts of month-to-month transitions over `STATES` (absorbing rows stay 0)."""
    pairs = _pairs(performance)
    counts = np.zeros((N_STATES, N_STATES), dtype=np.int64)
    frm = pairs.get_column("from").replace_strict(STATE_INDEX, return_dtype=pl.Int64).to_numpy()
    to = pairs.get_column("to").replace_strict(STATE_INDEX, return_dtype=pl.Int64).to_numpy()
    np.add.at(counts, (frm, to), 1)
    return counts


def _normalise(counts: np.ndarray) -> np.ndarray:
    matrix = np.eye(N_STATES)
    totals = counts.sum(axis=1)
    for i, s in enumerate(STATES):
        # Absorbing rows are the identity by definition; unobserved rows too, so the matrix stays stochastic.
        if s not in ABSORBING and totals[i] > 0:
            matrix[i] = counts[i] / totals[i]
    return matrix


def transition_matrix(performance: pl.DataFrame) -> np.ndarray:
    """Row-stochastic 7 x 7 matrix of month-to-month transitions over `STATES`.

    Row i is the share of loans in state i one month that are in each state the
    next. Absorbing rows are the identity, and so is the row of a transient
    state the book never visits (reported as unobserved by `compare_sequences`).
    """
    return _normalise(transition_counts(performance))


def transition_distance(a: np.ndarray | pl.DataFrame, b: np.ndarray | pl.DataFrame) -> dict[str, Any]:
    """Mean absolute difference between two transition matrices, per from-state.

    `a` and `b` are 7 x 7 matrices or performance tables (turned into matrices
    with `transition_matrix`). Returns ``per_state`` (state -> mean over the 7
    destination states of |a - b|), ``mean`` (over the transient rows) and
    ``max`` (the worst row).
    """
    ma = transition_matrix(a) if isinstance(a, pl.DataFrame) else np.asarray(a, dtype=np.float64)
    mb = transition_matrix(b) if isinstance(b, pl.DataFrame) else np.asarray(b, dtype=np.float64)
    if ma.shape != (N_STATES, N_STATES) or mb.shape != (N_STATES, N_STATES):
        raise InvalidDataError(
            f"transition matrices must be {N_STATES} x {N_STATES}, got {ma.shape} and {mb.shape}.",
            fix="build them with models.sequences.histories.transition_matrix.",
        )
    rows = np.abs(ma - mb).mean(axis=1)
    per_state = {s: float(rows[i]) for i, s in enumerate(STATES)}
    return {
        "per_state": per_state,
        "mean": float(np.mean([per_state[s] for s in TRANSIENT])),
        "max": float(rows.max()),
    }


_ROLLS = (("current", "dpd30"), ("dpd30", "dpd60"), ("dpd60", "dpd90"), ("dpd90", "default"))
_CURES = (("dpd30", "current"), ("dpd60", "current"), ("dpd90", "current"))


def roll_rates(performance: pl.DataFrame) -> dict[str, dict[str, float | None]]:
    """Roll rates (worsening one bucket) and cure rates (back to current), month to month.

    Returns ``roll`` and ``cure`` as loan-count shares, and ``roll_balance`` as
    balance-weighted shares (the balance owed in the from-month), e.g.
    ``roll["dpd30->dpd60"]`` is the share of loans 30 days past due one month
    that are 60 days past due the next. None where the from-state never occurs.
    """
    pairs = _pairs(performance)
    by_count = pairs.group_by(["from", "to"]).agg(pl.len().alias("n"), pl.col("from_balance").sum().alias("b"))
    totals = by_count.group_by("from").agg(pl.col("n").sum().alias("N"), pl.col("b").sum().alias("B"))
    table = by_count.join(totals, on="from")
    found = {(r["from"], r["to"]): r for r in table.iter_rows(named=True)}
    present = {r["from"]: r for r in totals.iter_rows(named=True)}

    def share(frm: str, to: str, weight: str) -> float | None:
        total = present.get(frm, {}).get("N" if weight == "n" else "B")
        if not total:
            return None
        return float((found.get((frm, to), {}).get(weight) or 0.0) / total)

    return {
        "roll": {f"{f}->{t}": share(f, t, "n") for f, t in _ROLLS},
        "cure": {f"{f}->{t}": share(f, t, "n") for f, t in _CURES},
        "roll_balance": {f"{f}->{t}": share(f, t, "b") for f, t in _ROLLS},
    }


def _outcomes(performance: pl.DataFrame) -> pl.DataFrame:
    """Per loan: last observed month, first default/prepaid month, and whether its path ended."""
    perf = _canonical(performance)
    return perf.group_by("loan_id").agg(
        pl.col("period").max().alias("last"),
        pl.col("period").filter(pl.col("status") == "default").min().alias("default_at"),
        pl.col("period").filter(pl.col("status") == "prepaid").min().alias("prepaid_at"),
        pl.col("status").is_in(list(ABSORBING)).any().alias("ended"),
    )


def _event_curve(outcomes: pl.DataFrame, event: str, months: int, name: str, rate: str) -> pl.DataFrame:
    """Cumulative share of loans with `event` by each month on book, among loans observable that long.

    A loan is observable at month m when its history reaches m or it ended in
    an absorbing state earlier; a loan still open when its history stops
    (a recent vintage) drops out of the denominator instead of counting as a
    survivor.
    """
    # Counted with bincounts rather than a loans x months grid, so a large book stays cheap.
    groups = (
        outcomes.partition_by("vintage", maintain_order=True, as_dict=True)
        if "vintage" in outcomes.columns
        else {None: outcomes}
    )
    frames = []
    for key, group in sorted(groups.items(), key=lambda item: str(item[0])):
        last = group.get_column("last").to_numpy().astype(np.int64)
        ended = group.get_column("ended").to_numpy().astype(bool)
        hits = group.get_column(event).drop_nulls().to_numpy().astype(np.int64)
        open_by_last = np.bincount(np.clip(last[~ended], 0, months), minlength=months + 1)
        still_open = open_by_last[::-1].cumsum()[::-1][1:]  # open loans whose history reaches month m
        loans = still_open + int(ended.sum())
        events = np.bincount(np.clip(hits, 0, months), minlength=months + 1).cumsum()[1:]
        frame = pl.DataFrame(
            {
                "months_on_book": pl.Series(np.arange(1, months + 1), dtype=pl.Int64),
                "loans": pl.Series(loans, dtype=pl.Int64),
                name: pl.Series(events, dtype=pl.Int64),
            }
        )
        if key is not None:
            label = key[0] if isinstance(key, tuple) else key
            frame = frame.select(pl.lit(label, dtype=pl.String).alias("vintage"), pl.all())
        frames.append(frame)
    return pl.concat(frames).with_columns(
        pl.when(pl.col("loans") > 0).then(pl.col(name) / pl.col("loans")).otherwise(None).alias(rate)
    )


def _vintages(performance: pl.DataFrame, loans: pl.DataFrame | None, id_column: str) -> pl.DataFrame:
    """Origination quarter ('2021Q3') of each loan, from loans.origination_date or the reporting months."""
    loans = dated_loans(loans)
    if loans is not None and ORIGINATION in loans.columns and id_column in loans.columns:
        source = loans.select(
            pl.col(id_column).cast(pl.String).alias("loan_id"),
            month_index(pl.col(ORIGINATION).cast(pl.Date)).alias("_m"),
        )
    elif "reporting_month" in performance.columns:
        # Without origination dates, a loan's first reporting month less its period is its origination month.
        source = (
            _canonical(performance)
            .with_columns((month_index(pl.col("reporting_month").cast(pl.Date)) - pl.col("period")).alias("_m"))
            .group_by("loan_id")
            .agg(pl.col("_m").min())
        )
    else:
        raise InvalidDataError(
            "vintage curves need origination dates: the loans table has no 'origination_date' and the "
            "history no 'reporting_month'.",
            column="origination_date",
            fix="pass the loans table with an origination_date column, or call with by_vintage=False.",
        )
    return source.select(
        "loan_id", pl.format("{}Q{}", pl.col("_m") // 12, (pl.col("_m") % 12) // 3 + 1).alias("vintage")
    )


def cumulative_default_curve(
    performance: pl.DataFrame,
    loans: pl.DataFrame | None = None,
    by_vintage: bool = False,
    *,
    id_column: str = "loan_id",
) -> pl.DataFrame:
    """Cumulative default rate by month on book, for the whole book or per origination quarter.

    Columns: [``vintage``,] ``months_on_book``, ``loans`` (observable that long,
    see below), ``defaults`` (defaulted by then) and
    ``cumulative_default_rate``. Loans still open when their history stops
    leave the denominator after their last month rather than counting as
    survivors, so young vintages do not dilute the curve.

    Raises:
        InvalidDataError: `by_vintage` without origination dates.
    """
    outcomes = _outcomes(performance)
    months = int(outcomes.get_column("last").max() or 0)
    if by_vintage:
        outcomes = outcomes.join(_vintages(performance, loans, id_column), on="loan_id", how="left").with_columns(
            pl.col("vintage").fill_null("unknown")
        )
    return _event_curve(outcomes, "default_at", months, "defaults", "cumulative_default_rate")


def time_to_default(performance: pl.DataFrame) -> dict[str, Any]:
    """Months on book at default: count, share of loans, mean, quantiles and a histogram by month."""
    outcomes = _outcomes(performance)
    months = outcomes.get_column("default_at").drop_nulls().to_numpy().astype(np.float64)
    n_loans = outcomes.height
    if months.size == 0:
        return {"n_defaults": 0, "default_share": 0.0, "mean": None, "quantiles": {}, "histogram": {"months": [], "counts": []}}
    span = np.arange(1, int(months.max()) + 1)
    counts = np.bincount(months.astype(np.int64), minlength=int(months.max()) + 1)[1:]
    return {
        "n_defaults": int(months.size),
        "default_share": float(months.size / n_loans),
        "mean": float(months.mean()),
        "quantiles": {f"p{int(q * 100)}": float(np.quantile(months, q)) for q in (0.1, 0.25, 0.5, 0.75, 0.9)},
        "histogram": {"months": span.tolist(), "counts": counts.tolist()},
    }


def prepayment_curve(performance: pl.DataFrame) -> pl.DataFrame:
    """Prepayment by month on book: single-month and annualised rates plus the cumulative share.

    Columns: ``months_on_book``, ``active`` (loans with a row that month),
    ``prepaid`` (loans prepaying that month), ``smm`` (prepaid / active),
    ``cpr`` (1 - (1 - smm)^12), ``loans`` and ``prepaid_to_date`` (observable
    loans and those prepaid by then) and ``cumulative_prepaid_rate``.
    """
    perf = _canonical(performance)
    outcomes = _outcomes(perf)
    months = int(outcomes.get_column("last").max() or 0)
    monthly = (
        perf.group_by("period")
        .agg(pl.len().cast(pl.Int64).alias("active"), (pl.col("status") == "prepaid").sum().cast(pl.Int64).alias("prepaid"))
        .rename({"period": "months_on_book"})
    )
    curve = _event_curve(outcomes, "prepaid_at", months, "prepaid_to_date", "cumulative_prepaid_rate")
    return (
        curve.join(monthly, on="months_on_book", how="left")
        .with_columns(pl.col("active").fill_null(0), pl.col("prepaid").fill_null(0))
        .with_columns(
            pl.when(pl.col("active") > 0).then(pl.col("prepaid") / pl.col("active")).otherwise(0.0).alias("smm")
        )
        .with_columns((1.0 - (1.0 - pl.col("smm")) ** 12).alias("cpr"))
        .select("months_on_book", "active", "prepaid", "smm", "cpr", "loans", "prepaid_to_date", "cumulative_prepaid_rate")
        .sort("months_on_book")
    )


def _rate_at(curve: pl.DataFrame, month: int) -> float:
    row = curve.filter(pl.col("months_on_book") == month)
    value = row.get_column("cumulative_default_rate").item(0) if row.height else None
    return float(value) if value is not None else 0.0


def _json(value: Any) -> Any:
    if isinstance(value, pl.DataFrame):
        return [{k: _json(v) for k, v in row.items()} for row in value.to_dicts()]
    if isinstance(value, np.ndarray):
        return _json(value.tolist())
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


@dataclass
class SequenceFidelity:
    """How closely a synthetic book's monthly paths follow the real book's.

    `passed` needs both the 12-month cumulative default rate within
    `cdr_threshold` (relative) and every judged transition row within
    `row_threshold` (mean absolute difference). A row is judged when the real
    book has at least `min_row_transitions` transitions out of it: below that,
    sampling noise alone exceeds 0.02 and the check would judge noise.
    """

    real_transition_matrix: np.ndarray
    synthetic_transition_matrix: np.ndarray
    transition_distance: dict[str, Any]
    real_transition_counts: list[int]
    judged_states: list[str]
    real_roll_rates: dict[str, Any]
    synthetic_roll_rates: dict[str, Any]
    real_default_curve: pl.DataFrame
    synthetic_default_curve: pl.DataFrame
    real_time_to_default: dict[str, Any]
    synthetic_time_to_default: dict[str, Any]
    real_prepayment_curve: pl.DataFrame
    synthetic_prepayment_curve: pl.DataFrame
    horizon: int
    real_cdr: float
    synthetic_cdr: float
    cdr12_relative_diff: float
    passed_cdr12: bool
    passed_transitions: bool
    cdr_threshold: float = CDR_THRESHOLD
    row_threshold: float = ROW_THRESHOLD
    min_row_transitions: int = 100
    real_vintage_curve: pl.DataFrame | None = None
    synthetic_vintage_curve: pl.DataFrame | None = None
    failures: list[str] = field(default_factory=list)
    effective_thresholds: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when both the default-rate and the transition-row checks pass."""
        return self.passed_cdr12 and self.passed_transitions

    def to_dict(self) -> dict[str, Any]:
        """Every figure as JSON-ready values (tables as lists of rows, non-finite numbers as None)."""
        data = {
            name: getattr(self, name)
            for name in (
                "real_transition_matrix", "synthetic_transition_matrix", "transition_distance",
                "real_transition_counts", "judged_states", "real_roll_rates", "synthetic_roll_rates",
                "real_default_curve", "synthetic_default_curve", "real_time_to_default",
                "synthetic_time_to_default", "real_prepayment_curve", "synthetic_prepayment_curve",
                "horizon", "real_cdr", "synthetic_cdr", "cdr12_relative_diff", "passed_cdr12",
                "passed_transitions", "cdr_threshold", "row_threshold", "min_row_transitions",
                "real_vintage_curve", "synthetic_vintage_curve", "failures", "effective_thresholds",
            )
        }
        data["passed"] = self.passed
        data["states"] = list(STATES)
        return _json(data)


def compare_sequences(
    real_perf: pl.DataFrame,
    synth_perf: pl.DataFrame,
    real_loans: pl.DataFrame | None = None,
    synth_loans: pl.DataFrame | None = None,
    *,
    horizon: int = 12,
    cdr_threshold: float = CDR_THRESHOLD,
    row_threshold: float = ROW_THRESHOLD,
    min_row_transitions: int = 100,
    id_column: str = "loan_id",
    noise_allowance: bool = True,
) -> SequenceFidelity:
    """Every sequence fidelity measure of a synthetic book against the real one, with pass/fail.

    Args:
        real_perf: the real performance table.
        synth_perf: the synthetic performance table.
        real_loans: the real loans (adds vintage curves when both loans tables
            carry ``origination_date``).
        synth_loans: the synthetic loans.
        horizon: months on book of the default-rate check (12); shorter books
            are judged at their longest month.
        cdr_threshold: largest relative difference of the cumulative default
            rate at `horizon` that passes (0.10).
        row_threshold: largest mean absolute difference of a transition row
            that passes (0.02).
        min_row_transitions: real transitions a row needs to be judged.
        id_column: the loan id column of the loans tables.
        noise_allowance: widen each threshold to what sampling noise alone
            produces at these book sizes (95% band), so a small book is not
            failed for chance differences; a large book is judged by the fixed
            thresholds. The thresholds applied are in `effective_thresholds`.
    """
    real_counts = transition_counts(real_perf)
    real_matrix = _normalise(real_counts)
    synth_counts = transition_counts(synth_perf)
    synth_matrix = transition_matrix(synth_perf)
    distance = transition_distance(real_matrix, synth_matrix)
    totals = real_counts.sum(axis=1)
    synth_totals = synth_counts.sum(axis=1)
    judged = [s for i, s in enumerate(STATES) if s not in ABSORBING and totals[i] >= min_row_transitions]
    row_limits: dict[str, float] = {}
    for s in judged:
        i = STATE_INDEX[s]
        limit = row_threshold
        if noise_allowance:
            # E|p_hat_r - p_hat_s| per entry is about sqrt(2/pi) * sd of the difference; twice it bounds ~95%.
            p = real_matrix[i]
            inverse_n = 1.0 / totals[i] + 1.0 / max(synth_totals[i], 1)
            limit = max(row_threshold, float(2.0 * np.mean(np.sqrt(2.0 / np.pi * p * (1.0 - p) * inverse_n))))
        row_limits[s] = limit
    failures = [
        f"transition row '{s}' differs by {distance['per_state'][s]:.4f} on average (> {row_limits[s]:.4f})"
        for s in judged
        if distance["per_state"][s] > row_limits[s]
    ]
    real_curve = cumulative_default_curve(real_perf)
    synth_curve = cumulative_default_curve(synth_perf)
    months = int(real_curve.get_column("months_on_book").max() or 0)
    at = min(horizon, months)
    real_cdr, synth_cdr = _rate_at(real_curve, at), _rate_at(synth_curve, at)
    if real_cdr > 0:
        relative = abs(synth_cdr - real_cdr) / real_cdr
    else:
        relative = 0.0 if synth_cdr == 0 else math.inf
    cdr_limit = cdr_threshold
    if noise_allowance and real_cdr > 0:
        n_real = max(real_perf.get_column("loan_id").n_unique(), 1)
        n_synth = max(synth_perf.get_column("loan_id").n_unique(), 1)
        se = math.sqrt(real_cdr * (1 - real_cdr) / n_real + synth_cdr * (1 - synth_cdr) / n_synth)
        cdr_limit = max(cdr_threshold, 1.96 * se / real_cdr)
    passed_cdr = relative <= cdr_limit
    if not passed_cdr:
        failures.append(
            f"{at}-month cumulative default rate {synth_cdr:.4f} vs real {real_cdr:.4f} "
            f"({relative:.1%} relative, > {cdr_limit:.1%})"
        )
    vintages = (
        real_loans is not None
        and synth_loans is not None
        and ORIGINATION in dated_loans(real_loans).columns
        and ORIGINATION in dated_loans(synth_loans).columns
    )
    return SequenceFidelity(
        real_transition_matrix=real_matrix,
        synthetic_transition_matrix=synth_matrix,
        transition_distance=distance,
        real_transition_counts=totals.tolist(),
        judged_states=judged,
        real_roll_rates=roll_rates(real_perf),
        synthetic_roll_rates=roll_rates(synth_perf),
        real_default_curve=real_curve,
        synthetic_default_curve=synth_curve,
        real_time_to_default=time_to_default(real_perf),
        synthetic_time_to_default=time_to_default(synth_perf),
        real_prepayment_curve=prepayment_curve(real_perf),
        synthetic_prepayment_curve=prepayment_curve(synth_perf),
        horizon=at,
        real_cdr=real_cdr,
        synthetic_cdr=synth_cdr,
        cdr12_relative_diff=relative,
        passed_cdr12=passed_cdr,
        passed_transitions=not any(distance["per_state"][s] > row_limits[s] for s in judged),
        cdr_threshold=cdr_threshold,
        row_threshold=row_threshold,
        min_row_transitions=min_row_transitions,
        real_vintage_curve=cumulative_default_curve(real_perf, real_loans, True, id_column=id_column) if vintages else None,
        synthetic_vintage_curve=(
            cumulative_default_curve(synth_perf, synth_loans, True, id_column=id_column) if vintages else None
        ),
        failures=failures,
        effective_thresholds={"cdr12_relative": cdr_limit, "transition_rows": row_limits},
    )


# The least agreement between a tape's default flag and "the history reaches default" for the flag to be read as
# that event, and the least flagged loans for the agreement to mean anything.
FLAG_AGREEMENT = 0.99
FLAG_MIN_DEFAULTS = 10


def default_flag_follows_history(
    loans: pl.DataFrame, performance: pl.DataFrame | None, flags: pl.Series, id_column: str
) -> dict[str, Any]:
    """Whether a tape's default flag is the event "the loan's history reaches default", measured on the loans.

    Many lenders derive the flag from the servicing history; a release whose
    flag and histories disagree (a loan flagged defaulted whose history never
    misses a payment) contradicts itself. `flags` is one bool per loan of
    `loans` (`target_indicator` of the target). Loans without a history are
    left out of the comparison. Returns ``{"follows": bool, "agreement": share
    or None, "loans": compared, "flagged": flagged and compared, "reason": text}``:
    the flag follows the history when at least `FLAG_AGREEMENT` of the
    compared loans agree and at least `FLAG_MIN_DEFAULTS` of them are flagged.
    """
    if performance is None or performance.height == 0:
        return {"follows": False, "agreement": None, "loans": 0, "flagged": 0, "reason": "the tape has no history"}
    reached = performance.group_by("loan_id").agg((pl.col("status").cast(pl.String) == "default").any().alias("_reached"))
    joined = (
        pl.DataFrame({"loan_id": loans.get_column(id_column).cast(pl.String), "_flag": flags.cast(pl.Boolean).fill_null(False)})
        .join(reached, on="loan_id", how="inner")
    )
    compared, flagged = joined.height, int(joined.get_column("_flag").sum())
    if compared == 0:
        return {"follows": False, "agreement": None, "loans": 0, "flagged": 0, "reason": "no loan has a history"}
    agreement = float((joined.get_column("_flag") == joined.get_column("_reached")).mean())
    follows = agreement >= FLAG_AGREEMENT and flagged >= FLAG_MIN_DEFAULTS
    if follows:
        reason = f"{agreement:.1%} of {compared} loans: the flag is set exactly when the history reaches default"
    elif flagged < FLAG_MIN_DEFAULTS:
        reason = f"only {flagged} flagged loans with a history (fewer than {FLAG_MIN_DEFAULTS}): nothing to go by"
    else:
        reason = (f"the flag and the history's default agree on {agreement:.1%} of {compared} loans (below "
                  f"{FLAG_AGREEMENT:.0%}): the flag means something else, and the histories are drawn without it")
    return {"follows": follows, "agreement": agreement, "loans": compared, "flagged": flagged, "reason": reason}
