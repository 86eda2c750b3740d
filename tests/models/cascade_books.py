"""Small loan books with known monthly dynamics, for the Markov baseline and cascade tests.

`make_book` simulates loans month by month. With ``interaction=True`` the
chance of missing a payment depends on an interaction of two static columns
(DTI above 30 XOR income below 50k) while the grade carries no signal, so a
Markov chain per grade cannot see the risk but a model of the statics can.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from models.tape.schema import TableSchema, infer_schema


def make_book(n_loans: int, *, months: int = 12, seed: int = 0, interaction: bool = False) -> tuple[pl.DataFrame, pl.DataFrame, TableSchema]:
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
    if interaction:
        risky = (dti > 30.0) ^ (income < 50_000.0)
        miss = np.where(risky, 0.20, 0.01)
    else:
        miss = np.select([grade == "A", grade == "B"], [0.01, 0.03], 0.06)
    origination = [date(2021, 1 + int(m), 1) for m in rng.integers(0, 12, n_loans)]
    loan_ids = np.array([f"L{i:05d}" for i in range(n_loans)], dtype=object)

    rows: dict[str, list] = {k: [] for k in ("loan_id", "period", "status", "days_past_due", "balance", "payment")}
    state = np.array(["start"] * n_loans, dtype=object)
    balance = amount.copy()
    for period in range(1, months + 1):
        u = rng.random(n_loans)
        open_ = ~np.isin(state, ["default", "prepaid", "matured"])
        current_like = np.isin(state, ["start", "current"])
        nxt = state.copy()
        nxt[current_like] = np.where(
            u[current_like] < miss[current_like],
            "dpd30",
            np.where(u[current_like] > 0.99, "prepaid", "current"),
        )
        nxt[state == "dpd30"] = np.where(u[state == "dpd30"] < 0.5, "current", "dpd60")
        nxt[state == "dpd60"] = np.where(u[state == "dpd60"] < 0.4, "current", "default")
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
        state = np.where(emit, nxt, state)
        balance = np.where(emit, new_balance, balance)
    performance = pl.DataFrame(rows, schema_overrides={"period": pl.Int64, "days_past_due": pl.Int64})
    origins = pl.DataFrame({"loan_id": loan_ids.tolist(), "_origin": origination})
    performance = (
        performance.join(origins, on="loan_id", how="left")
        .with_columns(pl.col("_origin").dt.offset_by(pl.format("{}mo", pl.col("period"))).alias("reporting_month"))
        .drop("_origin")
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
