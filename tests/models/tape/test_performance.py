"""Tests for models.tape.performance: performance histories read into canonical form and checked against the loans."""

from __future__ import annotations

import datetime as dt
import re

import polars as pl
import pytest

from models.errors import InvalidDataError, TenantConfigError
from models.tape.performance import read_performance

TENANT = "acme-bank"


def test_performance_ids_missing_from_loans_are_refused() -> None:
    # setup
    loans = pl.DataFrame({"loan_id": ["L1", "L2"]})
    perf = pl.DataFrame({"loan_id": ["L1", "L9", "L8", "L9"], "period": [1, 1, 1, 2], "status": ["current"] * 4})
    # run / assert
    with pytest.raises(
        InvalidDataError,
        match=r"tenant 'acme-bank', file 'performance.csv', column 'loan_id': 2 loan id\(s\) in the performance file are not in the loans file, e\.g\. 'L9', 'L8'\. Fix: upload the loans file",
    ):
        read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="loan_id", mapping={})


def test_performance_aliases_are_mapped_to_canonical_columns() -> None:
    # setup
    loans = pl.DataFrame({"LoanNumber": [1, 2]})
    perf = pl.DataFrame(
        {
            "LoanNumber": [2, 1, 1],
            "Month": [1, 2, 1],
            "Delinquency Status": ["Current", "30", "C"],
            "DPD": [0, 35, 0],
            "Outstanding_Balance": [100.0, 90.5, 95.0],
            "comment": ["x", "y", "z"],
        }
    )
    # run
    out = read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="LoanNumber", mapping={}).frame
    # assert
    assert out.columns == ["loan_id", "period", "status", "days_past_due", "balance"]
    assert out.rows() == [("1", 1, "current", 0, 95.0), ("1", 2, "dpd30", 35, 90.5), ("2", 1, "current", 0, 100.0)]


def test_performance_mapping_dates_and_status_from_days_past_due() -> None:
    # setup
    loans = pl.DataFrame({"loan_id": ["A", "B"]})
    perf = pl.DataFrame(
        {
            "acct": ["A", "A", "A", "B"],
            "as_of": [dt.date(2024, 1, 31), dt.date(2024, 2, 29), dt.date(2024, 3, 31), dt.date(2024, 3, 31)],
            "arrears_days": [0, 65, 120, 10],
            "paid": [10.0, 0.0, 0.0, 5.0],
        }
    )
    mapping = {"loan_id": "acct", "period": "as_of", "days_past_due": "arrears_days", "payment": "paid"}
    # run
    out = read_performance(perf, loans, tenant=TENANT, file="performance.parquet", loan_id_column="loan_id", mapping=mapping).frame
    # assert
    assert out.columns == ["loan_id", "period", "reporting_month", "status", "days_past_due", "payment"]
    assert out.get_column("period").to_list() == [1, 2, 3, 1]
    assert out.get_column("status").to_list() == ["current", "dpd60", "dpd90", "current"]
    assert out.get_column("reporting_month").to_list()[0] == dt.date(2024, 1, 1)


def test_performance_without_days_past_due_gets_them_from_status() -> None:
    # setup
    loans = pl.DataFrame({"loan_id": ["A"]})
    perf = pl.DataFrame({"loan_id": ["A", "A", "A"], "mob": [1, 2, 3], "state": ["current", "60", "charged off"]})
    # run
    out = read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="loan_id", mapping={}).frame
    # assert
    assert out.rows() == [("A", 1, "current", 0), ("A", 2, "dpd60", 60), ("A", 3, "default", None)]


def test_performance_unknown_status_labels_are_named() -> None:
    # setup
    loans = pl.DataFrame({"loan_id": ["A"]})
    perf = pl.DataFrame({"loan_id": ["A", "A", "A"], "period": [1, 2, 3], "status": ["current", "Frozen", "legal"]})
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'status': unknown status label\(s\): 'Frozen', 'legal'\. Fix: say what each means under performance\.status_labels"):
        read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="loan_id", mapping={})


def test_performance_missing_required_column_and_bad_mapping() -> None:
    # setup
    loans = pl.DataFrame({"loan_id": ["A"]})
    perf = pl.DataFrame({"loan_id": ["A"], "period": [1], "balance": [1.0]})
    # run / assert
    with pytest.raises(InvalidDataError, match=r"file 'performance.csv', column 'status': required performance column\(s\) not found: status \(or days_past_due\)\. Fix: rename"):
        read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="loan_id", mapping={})
    with pytest.raises(InvalidDataError, match=r"column 'state': performance.status in tenant.yaml names this column but the file has no such column"):
        read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="loan_id", mapping={"status": "state"})
    with pytest.raises(TenantConfigError, match=r"unknown key\(s\) arrears under performance"):
        read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="loan_id", mapping={"arrears": "x"})


def test_performance_repeated_loan_month_is_refused() -> None:
    # setup
    loans = pl.DataFrame({"loan_id": ["A"]})
    perf = pl.DataFrame({"loan_id": ["A", "A"], "period": [1, 1], "status": ["current", "current"]})
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'period': 2 rows repeat a \(loan, period\) pair, e\.g\. A month 1\. Fix: keep one row"):
        read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="loan_id", mapping={})


@pytest.mark.parametrize(
    ("months", "form"),
    [
        (["03/2019", "04/2019", "05/2019", "09/2020"], {"kind": "month", "format": "%m/%Y"}),
        (["Mar-2019", "Apr-2019", "May-2019", "Sep-2020"], {"kind": "month", "format": "%b-%Y"}),
        ([201903, 201904, 201905, 202009], {"kind": "month", "format": "%Y%m"}),
        ([0, 1, 2, 0], {"kind": "index", "offset": 0}),
        ([13, 14, 15, 40], {"kind": "calendar", "starts": {"13": 1, "40": 1}}),
    ],
    ids=["mm/yyyy", "Mon-yyyy", "yyyymm", "zero-based-index", "calendar-index"],
)
def test_performance_period_in_any_form_counts_months_on_book_from_one(months, form) -> None:
    # setup: loan A has three months, loan B one, written as a lender's file writes them
    loans = pl.DataFrame({"ID": [7, 8]})
    perf = pl.DataFrame({"ID": [7, 7, 7, 8], "month": months, "STATUS": ["C", "30", "C", "CO"]})
    # run
    history = read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="ID", mapping={})
    # assert
    assert history.frame.get_column("period").to_list() == [1, 2, 3, 1]
    assert {k: history.vocabulary["period"][k] for k in form} == form


def test_performance_status_as_a_servicer_spells_it() -> None:
    # setup: servicing codes, a "1-29 DPD" bucket, and agency months-behind codes in a second file
    loans = pl.DataFrame({"loan_id": ["A", "B"]})
    perf = pl.DataFrame(
        {
            "loan_id": ["A"] * 5 + ["B"] * 3,
            "period": [1, 2, 3, 4, 5, 1, 2, 3],
            "STATUS": ["Current", "1-29 DPD", "30-59 DPD", "90+ DPD", "CO", "C", "Current", "PIF"],
        }
    )
    behind = pl.DataFrame({"loan_id": ["A"] * 4, "period": [1, 2, 3, 4], "status": [0, 1, 2, 3]})
    # run
    history = read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="loan_id", mapping={})
    months_behind = read_performance(behind, loans, tenant=TENANT, file="performance.csv", loan_id_column="loan_id", mapping={}).frame
    # assert: states read, and the most frequent spelling of each is recorded for the release
    assert history.frame.get_column("status").to_list() == [
        "current", "current", "dpd30", "dpd90", "default", "current", "current", "prepaid"
    ]
    assert history.vocabulary["status"] == {
        "current": "Current", "dpd30": "30-59 DPD", "dpd90": "90+ DPD", "default": "CO", "prepaid": "PIF"
    }
    assert history.vocabulary["columns"] == {"loan_id": "loan_id", "period": "period", "status": "STATUS"}
    assert months_behind.get_column("status").to_list() == ["current", "dpd30", "dpd60", "dpd90"]


def test_performance_period_that_is_no_month_names_column_and_examples() -> None:
    # setup
    loans = pl.DataFrame({"loan_id": ["A"]})
    perf = pl.DataFrame({"loan_id": ["A", "A"], "month": ["first", "second"], "status": ["C", "C"]})
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'month': the period column must hold months on book .* such as 'first', 'second'\. Fix: write the period"):
        read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="loan_id", mapping={})


def test_performance_servicer_amount_names_are_read_and_unknown_columns_are_listed() -> None:
    # setup: a servicer's export, balance as 'Outstanding' and payment as 'Amount Received'
    loans = pl.DataFrame({"loan_id": ["L1", "L2"]})
    perf = pl.DataFrame({
        "loan_id": ["L1", "L1", "L2"], "period": [1, 2, 1], "status": ["Current", "30 DPD", "Current"],
        "Outstanding": [100.0, 98.0, 50.0], "Amount Received": [2.0, 0.0, 1.0], "Branch": ["N", "N", "S"],
    })
    # run
    history = read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="loan_id", mapping={})
    # assert
    assert history.frame.get_column("balance").to_list() == [100.0, 98.0, 50.0]
    assert history.frame.get_column("payment").to_list() == [2.0, 0.0, 1.0]
    assert history.vocabulary["columns"]["balance"] == "Outstanding" and history.vocabulary["left_out"] == ["Branch"]


def test_performance_status_words_the_tenant_declares_are_read_first() -> None:
    # setup: servicer words no built-in reading knows, and one ('C') the tenant reads otherwise
    loans = pl.DataFrame({"loan_id": ["L1", "L2"]})
    perf = pl.DataFrame({
        "loan_id": ["L1", "L1", "L1", "L2", "L2"], "period": [1, 2, 3, 1, 2],
        "status": ["Current", "Forbearance", "REO", "current", "forbearance "],
    })
    unknown = "unknown status label(s): 'Forbearance', 'REO', 'forbearance '"
    # run / assert: without the declaration the error names the words and the key that reads them
    with pytest.raises(InvalidDataError, match=re.escape(unknown)) as info:
        read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="loan_id", mapping={})
    assert "performance.status_labels" in info.value.fix and "{'Forbearance': current}" in info.value.fix
    history = read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="loan_id", mapping={},
                               status_labels={"Forbearance": "current", "REO": "default"})
    assert history.frame.get_column("status").to_list() == ["current", "current", "default", "current", "current"]
    assert history.vocabulary["status"] == {"current": "Current", "default": "REO"}


def test_status_labels_must_name_a_state() -> None:
    from pydantic import ValidationError

    from models.tape.tenant import PerformanceSpec

    with pytest.raises(ValidationError, match="'Forbearance' to 'paused'"):
        PerformanceSpec(status_labels={"Forbearance": "paused"})
    assert PerformanceSpec(balance="Outstanding", status_labels={"REO": "default"}).columns() == {"balance": "Outstanding"}


def test_a_status_column_of_months_behind_codes_and_words_is_read_from_the_upload(tmp_path) -> None:
    # setup: an agency-style history as a servicer exports it: months behind 0-6 beside CO and PIF in one column, and
    # account numbers with leading zeros; the reader used to refuse the column ("values are numbers but ... are not")
    from models.tape.loan_tape import find_upload, read_tape

    folder = tmp_path / "agency"
    folder.mkdir()
    (folder / "loans.csv").write_text("acct_no,amount,bad\n000123,1000,1\n000124,2000,0\n000125,1500,0\n" + "".join(
        f"{i:06d},{1000 + i},0\n" for i in range(200, 260)))
    rows = ["000123,2023-01,0", "000123,2023-02,1", "000123,2023-03,2", "000123,2023-04,6", "000123,2023-05,CO",
            "000124,2023-01,0", "000124,2023-02,PIF", "000125,2023-01,0", "000125,2023-02,0"]
    rows += [f"{i:06d},2023-01,0" for i in range(200, 260)]
    (folder / "performance.csv").write_text("acct_no,month,mb_status\n" + "\n".join(rows) + "\n")
    (folder / "tenant.yaml").write_text(
        "target: {column: bad, positive: 1}\nid_columns: [acct_no]\n"
        "performance: {loan_id: acct_no, period: month, status: mb_status}\n")
    # run
    tape = read_tape(find_upload(folder, "agency"))
    # assert: codes and words read as one status column, ids keep their zeros
    first = tape.performance.filter(pl.col("loan_id") == "000123")
    assert first.get_column("status").to_list() == ["current", "dpd30", "dpd60", "dpd90", "default"]
    assert tape.performance.filter(pl.col("loan_id") == "000124").get_column("status").to_list() == ["current", "prepaid"]
