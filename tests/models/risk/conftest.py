"""The demo book and the PD models trained on it, shared by the PD model tests of this package."""

from __future__ import annotations

import polars as pl
import pytest

from models.risk.config import RiskConfig
from models.risk.training import train_pd_models
from models.tape.demo import generate_portfolio
from models.tape.schema import infer_schema
from models.tape.split import split_train_holdout

TENANT = "risk-test"


def schema_of(loans: pl.DataFrame, *, target: str | None = "default_flag"):
    return infer_schema(
        loans,
        id_columns=["loan_id", "borrower_id"],
        target=target,
        target_positive=[1] if target else None,
        column_types={"notes": "text"} if "notes" in loans.columns else None,
    )


@pytest.fixture(scope="package")
def book():
    """A demo book split like a tape: 'train' stands in for the synthetic portfolio, 'holdout' is the real holdout."""
    portfolio = generate_portfolio(3000, months=24, seed=11)
    loans = portfolio.loans
    split = split_train_holdout(loans, "loan_id", holdout_share=0.3)
    # One loan in ten was booked only eight months before the data cut: its history stops at month 8.
    recent = pl.col("loan_id").str.slice(-1) == "7"
    performance = portfolio.performance.filter(~(recent & (pl.col("period") > 8)))
    return {
        "loans": loans,
        "train": loans.filter(split == "train"),
        "holdout": loans.filter(split == "holdout"),
        "performance": performance,
        "schema": schema_of(loans),
    }


@pytest.fixture(scope="package")
def trained(book):
    return train_pd_models(
        book["train"],
        book["holdout"],
        book["schema"],
        RiskConfig(horizons=["tape", "3m", "12m"], seed=3),
        synthetic_performance=book["performance"],
        holdout_performance=book["performance"],
        tenant=TENANT,
    )
