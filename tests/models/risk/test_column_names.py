"""Column names read by their words, as the stress test's exposure search and the tape checks share them."""

from __future__ import annotations

import polars as pl
import pytest

from models.risk.stress import find_exposure
from models.tape.names import is_amount_name, is_interest_rate_name, name_words


@pytest.mark.parametrize(
    ("column", "words"),
    [
        ("MonthlyIncome", ["monthly", "income"]),
        ("LIMIT_BAL", ["limit", "bal"]),
        ("PAY_AMT1", ["pay", "amt", "1"]),
        ("UPBAmount", ["upb", "amount"]),
        ("loan int-rate", ["loan", "int", "rate"]),
    ],
)
def test_names_split_at_separators_camel_case_and_digits(column, words):
    assert name_words(column) == words


@pytest.mark.parametrize(
    ("column", "amount"),
    [
        ("credit_amount", True), ("MonthlyIncome", True), ("LIMIT_BAL", True), ("ORIGINAL_UPB", True),
        ("loanamt", True), ("appinc", True), ("total_rev_hi_lim", True),
        # a bill can be a credit balance below zero; ratios are no amounts; "bal" inside a word is no balance
        ("BILL_AMT1", False), ("BillApril", False), ("net_income", False), ("loan_percent_income", False),
        ("ORIGINAL_DEBT_TO_INCOME_RATIO", False), ("global_score", False),
        # counts and labels about an amount are not the amount
        ("num_cc_carrying_balance", False), ("verified_income", False), ("ZERO_BALANCE_CODE", False),
    ],
)
def test_amount_names(column, amount):
    assert is_amount_name(column) is amount


@pytest.mark.parametrize(
    ("column", "rate"),
    [
        ("loan_int_rate", True), ("ORIGINAL_INTEREST_RATE", True), ("ORIG_RATE", True), ("NoteRate", True),
        ("intrate", True), ("int_rt", True),
        # Prosper's BorrowerRate and BorrowerAPR; an APR spelled out
        ("BorrowerRate", True), ("BorrowerAPR", True), ("apr", True), ("annual_percentage_rate", True),
        ("default_rate", False), ("LenderYield", False), ("apr_change_count", False), ("unemployment_rate", False), ("interest_rate_spread", False),
        ("separate", False), ("INTEREST_BEARING_UPB", False),
    ],
)
def test_interest_rate_names(column, rate):
    assert is_interest_rate_name(column) is rate


def test_a_camel_case_ead_column_is_taken_as_the_exposure_at_default():
    # setup: "EadAmount" is the exposure at default; the arrears balance is not the exposure
    book = pl.DataFrame({"arrears_balance": [50.0, 80.0, 20.0], "EadAmount": [900.0, 1_200.0, 400.0]})

    # run
    column, note = find_exposure(book)

    # assert: EAD, the strongest hint after "exposure", is read as a word in CamelCase too
    assert column == "EadAmount"
    assert "its name holds 'ead'" in note
