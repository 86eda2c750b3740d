"""A lender's servicing history written for a real corpus tape (modeldata `credit_data`).

The loans are real (the `modeldata-credit-data` corpus tape, its `rownames`
renamed `ID` as a lender's export names it); the monthly history is simulated
here and spelled the way a servicing system writes it, not the way CreditTwin
names things: columns ``ID``, ``month``, ``STATUS``, ``dpd``; statuses
``C``, ``30``, ``60``, ``90``, ``CO`` (charged off) and ``PIF`` (paid in full);
no payment column (and, unless asked, no balance either); 6 to 24 months per
loan, never past the loan's term (`Time`, in months). Loans the tape marks
``bad`` miss payments more often, so the history depends on the statics.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from tests.corpus import CORPUS

TAPE = next(t for t in CORPUS if t.tenant == "modeldata-credit-data")
STATUS_CODES = ("C", "30", "60", "90", "CO", "PIF")
# Next-month shares by current code: C, 30, 60, 90, CO, PIF (rows for C are set per loan from its risk).
_ROLL = {
    "30": (0.45, 0.15, 0.40, 0.0, 0.0, 0.0),
    "60": (0.20, 0.0, 0.15, 0.65, 0.0, 0.0),
    "90": (0.10, 0.0, 0.0, 0.35, 0.55, 0.0),
}


def servicing_book(n_loans: int = 1500, *, seed: int = 0, period: str = "text", balance: bool = False) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(loans, history) of `n_loans` real loans (seeded sample) and their simulated servicing history.

    `period` spells the month: "text" ("2019-03"), "date" (the last day of the
    month, as a date) or "index" (months on book 1, 2, ...). `balance` adds an
    outstanding ``bal`` column.
    """
    rng = np.random.default_rng(seed)
    frame = TAPE.frame().rename(columns={"rownames": "ID"})
    loans = pl.from_pandas(frame).sample(n=min(n_loans, len(frame)), seed=seed).sort("ID")
    bad = (loans.get_column("Status") == "bad").to_numpy()
    term = loans.get_column("Time").to_numpy().astype(np.int64)
    amount = loans.get_column("Amount").cast(pl.Float64).to_numpy()
    miss = np.where(bad, 0.09, 0.015)
    length = np.minimum(rng.integers(6, 25, loans.height), term)
    start = rng.integers(0, 24, loans.height)  # months after 2018-01
    rows: dict[str, list] = {"ID": [], "month": [], "STATUS": [], "dpd": [], "bal": []}
    for i, loan in enumerate(loans.get_column("ID").to_list()):
        code, owed = "C", amount[i]
        for t in range(int(length[i])):
            u = rng.random()
            if code == "C":
                code = "30" if u < miss[i] else ("PIF" if u > 0.99 else "C")
            else:
                code = STATUS_CODES[int(np.searchsorted(np.cumsum(_ROLL[code]), u, side="right").clip(max=5))]
            days = {"C": int(rng.random() < 0.1) * int(rng.integers(1, 30)), "PIF": 0, "CO": int(rng.integers(120, 181))}.get(code)
            if days is None:
                days = int(code) + int(rng.integers(0, 30))
            owed = 0.0 if code == "PIF" else owed * (0.97 if code == "C" else 1.01)
            m = int(start[i]) + t
            rows["ID"].append(loan)
            rows["month"].append(t + 1 if period == "index" else date(2018 + m // 12, m % 12 + 1, 1))
            rows["STATUS"].append(code)
            rows["dpd"].append(days)
            rows["bal"].append(round(owed, 2))
            if code in ("CO", "PIF"):
                break
    history = pl.DataFrame(rows)
    if period == "text":
        history = history.with_columns(pl.col("month").dt.strftime("%Y-%m"))
    elif period == "date":
        history = history.with_columns(pl.col("month").dt.month_end())
    return loans, history if balance else history.drop("bal")


def tenant_yaml() -> dict:
    """The tenant.yaml an analyst writes for this book: the corpus tape's, plus the loan id."""
    return {**TAPE.config, "id_columns": ["ID"]}
