"""A small book observed to one cut-off, as a servicing extract is: young vintages have short histories."""

from __future__ import annotations

from datetime import date

import polars as pl

from models.tape.schema import TableSchema, infer_schema
from tests.models.cascade_books import make_book

CUTOFF = date(2022, 12, 1)


def cutoff_book(n_loans: int, *, seed: int = 0, origination: bool | str = True) -> tuple[pl.DataFrame, pl.DataFrame, TableSchema]:
    """(loans, performance, schema): `make_book`'s loans, originated over 2021 and each followed for 24 months, cut at
    the extract's as-of month `CUTOFF`, so a history runs 12 to 23 months and an open one ends at the cut-off.

    The default flag is the history's, as the extract shows it; `origination` False drops the loans' origination
    dates (the history keeps its reporting months); a name keeps them under that name, as a lender's tape names them
    ("issue_d", "Disbursement Date").
    """
    loans, performance, _ = make_book(n_loans, months=24, seed=seed)
    performance = performance.filter(pl.col("reporting_month") <= CUTOFF)
    defaulted = performance.filter(pl.col("status") == "default").get_column("loan_id").unique()
    loans = loans.with_columns(pl.col("loan_id").is_in(defaulted.implode()).cast(pl.Int64).alias("default_flag"))
    if not origination:
        loans = loans.drop("origination_date")
    elif isinstance(origination, str):
        loans = loans.rename({"origination_date": origination})
    return loans, performance, infer_schema(loans, id_columns=["loan_id", "borrower_id"], target="default_flag")


def history_ends(history: pl.DataFrame) -> pl.DataFrame:
    """Per loan of a canonical history: its first and last reporting month, its months and whether its path is open."""
    from models.sequences.states import ABSORBING

    return history.group_by("loan_id").agg(
        pl.col("reporting_month").min().alias("first"),
        pl.col("reporting_month").max().alias("last"),
        pl.len().alias("months"),
        ~pl.col("status").is_in(list(ABSORBING)).any().alias("open"),
    )
