"""Loans tables in the Freddie Mac / Fannie Mae loan-level layouts feed the history models as they are."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models.errors import InvalidDataError
from models.sequences.histories import loan_terms, resolve_term_column, validate_histories
from models.sequences.markov import MarkovBaseline
from models.tape.schema import infer_schema
from tests.models.cascade_books import make_book

# The canonical book's columns as each agency's origination file spells them (rates there are in per cent).
FREDDIE = {
    "loan_amount": "ORIGINAL_UPB", "interest_rate": "ORIGINAL_INTEREST_RATE", "term_months": "ORIGINAL_LOAN_TERM",
}
FANNIE = {"loan_amount": "ORIG_UPB", "interest_rate": "ORIG_RATE", "term_months": "ORIG_TRM"}


def agency_loans(loans: pl.DataFrame, names: dict[str, str]) -> pl.DataFrame:
    """`loans` in an agency layout: renamed columns, the rate in per cent, no installment column."""
    return (
        loans.with_columns(pl.col("interest_rate") * 100.0)
        .drop("installment")
        .rename(names)
    )


@pytest.mark.parametrize("names", [FREDDIE, FANNIE], ids=["freddie", "fannie"])
def test_agency_columns_give_the_same_amount_term_and_installment(names):
    # setup: the canonical book, and the same loans as an agency origination file
    loans, _, _ = make_book(50, months=12, seed=1)
    canonical = loans.drop("installment")
    agency = agency_loans(loans, names)

    # run
    expected = loan_terms(canonical, fallback_term=99, tenant="freddie", file="performance.csv")
    got = loan_terms(agency, fallback_term=99, tenant="freddie", file="performance.csv")

    # assert: amount, term and the annuity from the per-cent rate all come through
    np.testing.assert_allclose(got.amount, expected.amount)
    np.testing.assert_array_equal(got.term, expected.term)
    np.testing.assert_allclose(got.installment, expected.installment)
    assert resolve_term_column(agency) == names["term_months"]


def test_a_history_longer_than_the_agency_term_is_refused():
    # setup: Freddie Mac's term column, loan 'c' with a 3-month term and a 4-month history
    perf = pl.DataFrame(
        {"loan_id": ["c"] * 4, "period": [1, 2, 3, 4], "status": ["current"] * 4, "balance": 1.0, "payment": 1.0}
    )
    loans = pl.DataFrame({"loan_id": ["c"], "ORIGINAL_LOAN_TERM": [3]})

    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'ORIGINAL_LOAN_TERM'.*longer than their term"):
        validate_histories(perf, loans)


def test_a_markov_chain_fits_on_a_freddie_origination_file():
    # setup
    loans, perf, _ = make_book(200, months=12, seed=4)
    freddie = agency_loans(loans, FREDDIE)
    schema = infer_schema(freddie, id_columns=["loan_id", "borrower_id"], target="default_flag")

    # run
    model = MarkovBaseline().fit(freddie, perf, schema, tenant="freddie", file="performance.csv")

    # assert: the term was read from ORIGINAL_LOAN_TERM, and sampled balances are scaled by ORIGINAL_UPB
    assert model._fitted["term_column"] == "ORIGINAL_LOAN_TERM"
    sample = model.sample(freddie, seed=1)
    first = sample.filter(pl.col("period") == 1).join(freddie.select("loan_id", "ORIGINAL_UPB"), on="loan_id")
    assert (first.get_column("balance") <= first.get_column("ORIGINAL_UPB") * 1.001).all()


def test_a_missing_amount_names_the_loans_file_and_an_honest_fix():
    # setup: a loans table without any original amount, as the cascade step sees it (the history's file passed)
    loans = pl.DataFrame({"LOAN_SEQUENCE_NUMBER": ["F1"], "CREDIT_SCORE": [720], "ORIGINAL_LOAN_TERM": [360]})

    # run
    with pytest.raises(InvalidDataError) as info:
        loan_terms(loans, fallback_term=360, tenant="freddie", file="performance.csv")
    # the asset's context fills only an unset file, so it must not turn the error back to the history
    error = info.value.with_context(tenant="freddie", file="performance.csv")

    # assert
    assert error.file == "loans.csv or loans.parquet" and error.column == "loan_amount"
    assert str(error).startswith("tenant 'freddie', file 'loans.csv or loans.parquet', column 'loan_amount': ")
    assert "loan tape (loans file)" in error.reason and "performance history (performance.csv)" in error.reason
    assert "ORIGINAL_UPB" in error.reason.upper() and "orig_upb" in error.reason
    assert "rename" in error.fix and "tenant.yaml cannot map loans columns" in error.fix
    assert "map the tape's column" not in error.fix
