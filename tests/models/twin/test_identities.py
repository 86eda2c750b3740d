"""Orderings between amounts that hold in every loan are found and kept by the twin."""

import numpy as np
import polars as pl

from models.tape.schema import infer_schema
from models.twin.engine import make_engine
from models.twin.identities import inferred_inequalities


def _book(n: int = 1500, seed: int = 0) -> pl.DataFrame:
    # Lending Club's shape: the funded amount is the requested one for most loans, a little less for some; the
    # investors' share a little less again; income on another scale; a balance of a tenth of a limit
    rng = np.random.default_rng(seed)
    loan = np.round(rng.lognormal(9.5, 0.5, n), -2)
    funded = loan - np.where(rng.random(n) < 0.3, np.round(rng.uniform(0, 0.2, n) * loan, -1), 0.0)
    return pl.DataFrame({
        "loan_id": [f"L{i}" for i in range(n)],
        "loan_amnt": loan,
        "funded_amnt": funded,
        "funded_amnt_inv": funded - np.round(rng.uniform(0, 50, n)),
        "annual_inc": np.round(rng.lognormal(11, 0.4, n), -2),
        "grade": rng.choice(["A", "B", "C"], n),
    })


def test_identities_between_amounts_are_found_and_the_twin_keeps_them():
    # setup
    book = _book()
    schema = infer_schema(book, id_columns=["loan_id"])
    # run
    found = inferred_inequalities(book, schema)
    released = make_engine(k=5, constraints=found).fit(book, schema).sample(3000, seed=1)
    unconstrained = make_engine(k=5).fit(book, schema).sample(3000, seed=1)
    # assert: funded <= requested and the investors' share <= funded, every row; without them the twin broke them
    assert {(c["low"], c["high"]) for c in found} == {("funded_amnt", "loan_amnt"), ("funded_amnt_inv", "funded_amnt")}
    assert (released["funded_amnt"] <= released["loan_amnt"]).all()
    assert (released["funded_amnt_inv"] <= released["funded_amnt"]).all()
    assert (unconstrained["funded_amnt"] > unconstrained["loan_amnt"]).any()


def test_orderings_by_scale_nulls_roles_and_declared_columns_are_left_alone():
    # setup: income in thousands below a limit in dollars, a null in a pair, a quasi-identifier, a declared pair
    rng = np.random.default_rng(2)
    n = 400
    limit = rng.uniform(1000, 9000, n)
    book = pl.DataFrame({
        "Income": limit / 100 * rng.uniform(0.8, 1.0, n),
        "Limit": limit,
        "balance": [None, *(limit[1:] * 0.9)],
        "loan_amount": limit,
        "principal": limit * 0.95,
        "credit_limit_amt": limit * 1.01,
    })
    schema = infer_schema(book, quasi_identifiers=["credit_limit_amt"])
    declared = [{"type": "inequality", "low": "principal", "high": "loan_amount"}]
    # run
    found = inferred_inequalities(book, schema, declared)
    # assert: nothing: Income is 1% of Limit, balance has a null, the rest are declared or a quasi-identifier
    assert found == []


def test_columns_equal_in_every_row_are_ordered_one_way_only():
    # setup
    book = _book().with_columns(pl.col("loan_amnt").alias("loan_amount_requested"))
    schema = infer_schema(book, id_columns=["loan_id"])
    # run
    found = inferred_inequalities(book, schema)
    # assert: one edge between the equal twins, no cycle, and the twin fits them
    pairs = {(c["low"], c["high"]) for c in found}
    assert ("loan_amount_requested", "loan_amnt") in pairs and ("loan_amnt", "loan_amount_requested") not in pairs
    make_engine(k=5, constraints=found).fit(book, schema).sample(100, seed=0)
