"""The train/holdout split keeps each privacy unit (a borrower) on one side (issue 14, defect 5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from models.errors import TenantConfigError
from models.tape.split import split_by_unit, split_train_holdout
from models.tape.loan_tape import SPLIT_COLUMN, find_upload, read_tape

TENANT = "acme"


def write_book(
    folder: Path, *, borrowers: int = 300, seed: int = 4, unit: str = "borrower_id", config: str = ""
) -> pl.DataFrame:
    """A loans.csv where borrowers hold one to four loans each (rows shuffled), and its tenant.yaml."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 5, borrowers)
    owner = np.repeat(np.arange(borrowers), counts)
    n = len(owner)
    loans = pl.DataFrame({
        "loan_id": [f"L{i:05d}" for i in range(n)],
        unit: [f"B{b:04d}" for b in owner],
        "age": rng.integers(21, 70, n),
        "annual_income": rng.uniform(20e3, 150e3, n).round(2),
        "default_flag": (rng.random(n) < 0.15).astype(np.int64),
    }).sample(fraction=1.0, shuffle=True, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    loans.write_csv(folder / "loans.csv")
    (folder / "tenant.yaml").write_text("target: {column: default_flag, positive: 1}\nid_columns: [loan_id]\n" + config)
    return loans


def sides_per_borrower(loans: pl.DataFrame, unit: str) -> pl.Series:
    return loans.group_by(unit).agg(pl.col(SPLIT_COLUMN).n_unique().alias("sides")).get_column("sides")


def test_no_borrower_has_loans_on_both_sides_of_the_split(tmp_path):
    # setup: about 750 loans of 300 borrowers; split by loan id, dozens of borrowers would straddle the split
    write_book(tmp_path / TENANT)

    # run
    tape = read_tape(find_upload(tmp_path / TENANT, TENANT))

    # assert: every borrower on one side, both sides used, the unit recorded for the ingest document
    sides = sides_per_borrower(tape.loans, "borrower_id")
    assert (sides == 1).all()
    assert tape.loans.group_by("borrower_id").len().get_column("len").max() > 1
    assert 0.1 < tape.split("holdout").height / tape.loans.height < 0.3
    assert tape.unit_column == "borrower_id"
    assert tape.reports["split"] == {"unit_column": "borrower_id", "keyed_by": "borrower_id", "holdout_share": 0.2,
                                     "loans_without_unit": 0}


def test_the_split_by_borrower_is_stable(tmp_path):
    # setup: the same book read twice, and again with its rows reversed and new borrowers appended
    loans = write_book(tmp_path / "first" / TENANT)
    first = read_tape(find_upload(tmp_path / "first" / TENANT, TENANT)).loans
    again = read_tape(find_upload(tmp_path / "first" / TENANT, TENANT)).loans
    more = write_book(tmp_path / "more" / TENANT, borrowers=60, seed=9).with_columns(
        ("N" + pl.col("loan_id")).alias("loan_id"), ("N" + pl.col("borrower_id")).alias("borrower_id"))
    pl.concat([loans.reverse(), more]).write_csv(tmp_path / "more" / TENANT / "loans.csv")

    # run
    grown = read_tape(find_upload(tmp_path / "more" / TENANT, TENANT)).loans

    # assert: the side is a function of the borrower id alone (the stable FNV-1a + fmix64 hash of split_train_holdout)
    assert first.equals(again)
    side = dict(first.select("loan_id", SPLIT_COLUMN).iter_rows())
    assert all(side[loan] == s for loan, s in grown.select("loan_id", SPLIT_COLUMN).iter_rows() if loan in side)
    expected = split_train_holdout(first, "borrower_id", holdout_share=0.2)
    assert first.get_column(SPLIT_COLUMN).equals(expected.rename(SPLIT_COLUMN))


def test_a_declared_unit_column_keys_the_split(tmp_path):
    # setup: the borrower is named `customer_no`, declared in tenant.yaml
    write_book(tmp_path / TENANT, unit="customer_no", config="privacy: {unit_column: customer_no}\n")

    # run
    tape = read_tape(find_upload(tmp_path / TENANT, TENANT))

    # assert
    assert tape.unit_column == "customer_no" and (sides_per_borrower(tape.loans, "customer_no") == 1).all()


def test_without_a_borrower_column_each_loan_is_its_own_unit(tmp_path):
    # setup: no borrower_id and no declaration: the split stays the one by loan id
    write_book(tmp_path / TENANT, unit="branch")

    # run
    tape = read_tape(find_upload(tmp_path / TENANT, TENANT))

    # assert
    assert tape.unit_column is None and tape.reports["split"]["keyed_by"] == "loan_id"
    assert tape.loans.get_column(SPLIT_COLUMN).equals(split_train_holdout(tape.loans, "loan_id").rename(SPLIT_COLUMN))


def test_a_missing_declared_unit_column_is_refused_with_the_fix(tmp_path):
    # setup
    write_book(tmp_path / TENANT, config="privacy: {unit_column: customer_no}\n")

    # run / assert
    expected = (r"tenant 'acme', file 'loans\.csv', column 'customer_no'.*privacy\.unit_column in tenant\.yaml "
                r"names 'customer_no'.*Fix: set privacy\.unit_column")
    with pytest.raises(TenantConfigError, match=expected):
        read_tape(find_upload(tmp_path / TENANT, TENANT))


def test_a_loan_without_a_borrower_is_a_unit_of_its_own():
    # setup: two loans of B1, two loans with no borrower; the loan ids of the latter collide with no borrower id
    loans = pl.DataFrame({"loan_id": ["L1", "L2", "B1", "L4"], "borrower_id": ["B1", "B1", None, None]})

    # run
    sides = split_by_unit(loans, "borrower_id", "loan_id", holdout_share=0.5)
    many = pl.DataFrame({"loan_id": [f"L{i}" for i in range(400)], "borrower_id": [None] * 400})
    spread = split_by_unit(many, "borrower_id", "loan_id", holdout_share=0.5)

    # assert: B1's loans together; loans without a borrower are spread like separate units
    assert sides[0] == sides[1]
    assert 120 < (spread == "holdout").sum() < 280
