"""Small loan books with known monthly dynamics, for the Markov baseline, cascade and fidelity tests.

`make_book` draws loans and simulates them month by month; `simulate_histories`
simulates new histories for loans it drew, with the same dynamics (or with one
grade's risk deliberately changed), so a test can set a second realisation of
the true process beside a wrong one.

- ``interaction=True``: the chance of missing a payment depends on an
  interaction of two static columns (DTI above 30 XOR income below 50k) while
  the grade carries no signal, so a Markov chain per grade cannot see the risk
  but a model of the statics can.
- ``nonlinear=True``: missing a payment depends on DTI x grade (DTI raises the
  risk of grade C steeply, of grade B less, of grade A not at all), and the
  chance of curing falls with the months a loan has already spent in arrears,
  which no chain over the current state can carry.
"""

from __future__ import annotations

from datetime import date
from typing import Mapping

import numpy as np
import polars as pl

from models.tape.schema import TableSchema, infer_schema

_BASE_MISS = {"A": 0.01, "B": 0.03, "C": 0.06}
_DTI_SLOPE = {"A": 0.0, "B": 0.4, "C": 0.8}


def _miss(grade: np.ndarray, dti: np.ndarray, income: np.ndarray, interaction: bool, nonlinear: bool) -> np.ndarray:
    if interaction:
        return np.where((dti > 30.0) ^ (income < 50_000.0), 0.20, 0.01)
    base = np.vectorize(_BASE_MISS.get)(grade).astype(np.float64)
    if nonlinear:
        slope = np.vectorize(_DTI_SLOPE.get)(grade).astype(np.float64)
        return np.clip(base * np.exp(slope * (dti - 30.0) / 10.0), 0.0, 0.4)
    return base


def _histories(
    rng: np.random.Generator, loan_ids: np.ndarray, miss: np.ndarray, amount: np.ndarray, rate: np.ndarray,
    installment: np.ndarray, term: np.ndarray, origination: list[date], months: int, nonlinear: bool,
    cure: np.ndarray | None = None,
) -> pl.DataFrame:
    n_loans = len(loan_ids)
    monthly = rate / 12.0
    rows: dict[str, list] = {k: [] for k in ("loan_id", "period", "status", "days_past_due", "balance", "payment")}
    state = np.array(["start"] * n_loans, dtype=object)
    balance = amount.copy()
    arrears = np.zeros(n_loans)  # months spent delinquent so far
    for period in range(1, months + 1):
        u = rng.random(n_loans)
        open_ = ~np.isin(state, ["default", "prepaid", "matured"])
        current_like = np.isin(state, ["start", "current"])
        # Each month already spent in arrears makes a cure 40% less likely (nonlinear books only).
        fade = 0.6 ** np.maximum(arrears - 1.0, 0.0) if nonlinear else np.ones(n_loans)
        if cure is not None:
            fade = fade * cure
        nxt = state.copy()
        nxt[current_like] = np.where(
            u[current_like] < miss[current_like],
            "dpd30",
            np.where(u[current_like] > 0.99, "prepaid", "current"),
        )
        in30, in60 = state == "dpd30", state == "dpd60"
        nxt[in30] = np.where(u[in30] < 0.5 * fade[in30], "current", "dpd60")
        nxt[in60] = np.where(u[in60] < 0.4 * fade[in60], "current", "default")
        at_term = (period == term) & (nxt == "current")
        nxt[at_term] = "matured"
        paying = nxt == "current"
        interest = balance * monthly
        new_balance = np.where(paying, np.maximum(balance + interest - installment, 0.0), balance)
        payment = np.where(paying, installment, 0.0)
        payment = np.where(np.isin(nxt, ["prepaid", "matured"]), balance + interest, payment)
        new_balance = np.where(np.isin(nxt, ["prepaid", "matured"]), 0.0, new_balance)
        dpd = np.select([nxt == "dpd30", nxt == "dpd60", nxt == "default"], [30, 60, 120], 0)
        emit = open_ & (period <= term)
        for key, values in (
            ("loan_id", loan_ids), ("period", np.full(n_loans, period)), ("status", nxt),
            ("days_past_due", dpd), ("balance", np.round(new_balance, 2)), ("payment", np.round(payment, 2)),
        ):
            rows[key].extend(values[emit].tolist())
        arrears = np.where(emit & np.isin(nxt, ["dpd30", "dpd60"]), arrears + 1.0, arrears)
        state = np.where(emit, nxt, state)
        balance = np.where(emit, new_balance, balance)
    performance = pl.DataFrame(rows, schema_overrides={"period": pl.Int64, "days_past_due": pl.Int64})
    origins = pl.DataFrame({"loan_id": loan_ids.tolist(), "_origin": origination})
    return (
        performance.join(origins, on="loan_id", how="left")
        .with_columns(pl.col("_origin").dt.offset_by(pl.format("{}mo", pl.col("period"))).alias("reporting_month"))
        .drop("_origin")
    )


def make_book(
    n_loans: int, *, months: int = 12, seed: int = 0, interaction: bool = False, nonlinear: bool = False
) -> tuple[pl.DataFrame, pl.DataFrame, TableSchema]:
    """(loans, performance, schema) of `n_loans` loans followed for up to `months` months."""
    rng = np.random.default_rng(seed)
    grade = rng.choice(np.array(["A", "B", "C"]), n_loans)
    dti = rng.uniform(5.0, 55.0, n_loans)
    income = rng.uniform(20_000.0, 120_000.0, n_loans)
    term = rng.choice(np.array([months, 2 * months]), n_loans)
    amount = np.round(rng.uniform(2_000.0, 20_000.0, n_loans), 2)
    rate = rng.uniform(0.05, 0.20, n_loans)
    monthly = rate / 12.0
    installment = np.round(amount * monthly / (1.0 - (1.0 + monthly) ** (-term)), 2)
    origination = [date(2021, 1 + int(m), 1) for m in rng.integers(0, 12, n_loans)]
    loan_ids = np.array([f"L{i:05d}" for i in range(n_loans)], dtype=object)
    performance = _histories(
        rng, loan_ids, _miss(grade, dti, income, interaction, nonlinear), amount, rate, installment, term,
        origination, months, nonlinear,
    )
    defaulted = set(performance.filter(pl.col("status") == "default").get_column("loan_id").to_list())
    loans = pl.DataFrame(
        {
            "loan_id": loan_ids.tolist(),
            "borrower_id": [f"B{i // 2:05d}" for i in range(n_loans)],
            "origination_date": origination,
            "grade": grade.tolist(),
            "dti": dti,
            "annual_income": income,
            "loan_amount": amount,
            "interest_rate": rate,
            "installment": installment,
            "term_months": term.astype(np.int64),
            "default_flag": [int(i in defaulted) for i in loan_ids],
        }
    )
    schema = infer_schema(loans, id_columns=["loan_id", "borrower_id"], target="default_flag")
    return loans, performance, schema


def simulate_histories(
    loans: pl.DataFrame,
    *,
    months: int = 12,
    seed: int = 0,
    interaction: bool = False,
    nonlinear: bool = False,
    miss_scale: Mapping[str, float] | None = None,
    cure_scale: Mapping[str, float] | None = None,
) -> pl.DataFrame:
    """New histories of `make_book`'s `loans` under the same dynamics, ids shared.

    `miss_scale` and `cure_scale` (grade -> factor) multiply a grade's chance
    of missing a payment or of curing: a deliberately wrong "synthetic" book
    for that segment.
    """
    grade = loans.get_column("grade").to_numpy()
    miss = _miss(grade, loans.get_column("dti").to_numpy(), loans.get_column("annual_income").to_numpy(), interaction,
                 nonlinear)
    for level, factor in (miss_scale or {}).items():
        miss = np.where(grade == level, np.clip(miss * factor, 0.0, 0.9), miss)
    cure = np.ones(len(grade))
    for level, factor in (cure_scale or {}).items():
        cure = np.where(grade == level, factor, cure)
    return _histories(
        np.random.default_rng(seed), np.asarray(loans.get_column("loan_id").to_list(), dtype=object), miss,
        loans.get_column("loan_amount").to_numpy(), loans.get_column("interest_rate").to_numpy(),
        loans.get_column("installment").to_numpy(), loans.get_column("term_months").to_numpy(),
        loans.get_column("origination_date").to_list(), months, nonlinear, cure,
    )
