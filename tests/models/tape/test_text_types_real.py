"""Real-shaped tapes the text typer met: grouped European amounts, two-digit years, timestamps, top-coded counts.

Each column must be read as what it holds and released back in the lender's own spelling.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from models.errors import InvalidDataError
from models.tape.ingest import read_table
from models.tape.schema import ColumnType, infer_schema
from models.tape.text_types import TextTyper
from models.tape.vocabulary import render_release

TENANT = "acme"


def _read(folder: Path, content: str, **kwargs):
    path = folder / "loans.csv"
    path.write_bytes(content.encode("utf-8"))
    return read_table(path, tenant=TENANT, **kwargs)


def _released(frame: pl.DataFrame, report) -> pl.DataFrame:
    return render_release(frame, infer_schema(frame, spellings=report.spellings))


# ------------------------------------------------------------------ grouped European amounts


@pytest.mark.parametrize("group", [" ", "\u00a0", "\u202f"], ids=["space", "nbsp", "narrow-nbsp"])
def test_amounts_grouped_by_spaces_are_numbers_released_with_the_same_grouping(tmp_path, group):
    # setup: a French/German export: ';' between fields, ',' as decimal mark, a (non-breaking) space every 3 digits
    amounts = ["1 308,81", "770,54", "12 000,00", "-1 234 567,89"]
    amounts = [a.replace(" ", group) for a in amounts]
    content = "loan_id;Amount\n" + "".join(f"L{i};{a}\n" for i, a in enumerate(amounts))
    # run
    frame, report = _read(tmp_path, content)
    released = _released(frame, report)
    # assert: numbers, and written back exactly as the file wrote them
    assert report.decimal == ","
    assert frame.schema["Amount"] == pl.Float64
    assert frame.get_column("Amount").to_list() == [1308.81, 770.54, 12000.0, -1234567.89]
    assert released.get_column("Amount").to_list() == amounts


def test_amounts_grouped_by_spaces_with_a_decimal_point_are_numbers(tmp_path):
    # setup: the SI style, a space between thousands and a decimal point
    content = "loan_id,amount\nL1,1 308.81\nL2,770.54\nL3,12 000.00\n"
    # run
    frame, report = _read(tmp_path, content)
    # assert
    assert report.decimal == "."
    assert frame.get_column("amount").to_list() == [1308.81, 770.54, 12000.0]
    assert _released(frame, report).get_column("amount").to_list() == ["1 308.81", "770.54", "12 000.00"]


def test_whole_amounts_grouped_by_spaces_are_integers_released_grouped(tmp_path):
    # setup
    content = "loan_id;limit;rate\nL1;12 000;1,5\nL2;800;2,25\nL3;1 500 000;3\n"
    # run
    frame, report = _read(tmp_path, content)
    released = _released(frame, report)
    # assert
    assert frame.schema["limit"] == pl.Int64 and frame.get_column("limit").to_list() == [12000, 800, 1500000]
    assert released.get_column("limit").to_list() == ["12 000", "800", "1 500 000"]


def test_dot_groups_with_a_decimal_comma_and_comma_groups_with_a_decimal_point_still_read(tmp_path):
    # setup
    german = "loan_id;amount\nL1;1.234,56\nL2;12,5\nL3;-7\n"
    english = 'loan_id,amount\nL1,"1,234.56"\nL2,12.50\nL3,-7.00\n'
    # run
    frame_de, report_de = _read(tmp_path, german)
    released_de = _released(frame_de, report_de)
    frame_en, report_en = _read(tmp_path, english)
    # assert: the German grouping is now written back too
    assert frame_de.get_column("amount").to_list() == [1234.56, 12.5, -7.0]
    assert released_de.get_column("amount").to_list() == ["1.234,56", "12,50", "-7,00"]
    assert frame_en.get_column("amount").to_list() == [1234.56, 12.5, -7.0]
    assert _released(frame_en, report_en).get_column("amount").to_list() == ["1,234.56", "12.50", "-7.00"]


def test_space_separated_numbers_that_are_not_thousands_groups_stay_text(tmp_path):
    # setup: '12 34' is two numbers (not 3-digit groups); one column mixes a space and a non-breaking space
    content = ("loan_id;pair;mixed;decimals\n"
               "L1;12 34;1 234,5;1 234.5678\n"
               "L2;5 6;1\u00a0234,5;12,5\n"
               "L3;7 890;7;3\n")
    # run
    frame, _ = _read(tmp_path, content)
    # assert
    assert frame.schema["pair"] == pl.String and frame.get_column("pair").to_list() == ["12 34", "5 6", "7 890"]
    assert frame.schema["mixed"] == pl.String
    assert frame.schema["decimals"] == pl.String


def test_a_space_delimited_file_has_no_space_groups():
    # setup: a quoted '1 234' in a file whose fields are separated by spaces is not a grouped number
    batch = pl.DataFrame({"amount": ["1 234", "567", "8 910"]})

    def batches():
        yield batch

    def typer(delimiter):
        return TextTyper(batches, text_columns={"amount": pl.col("amount")}, direct={}, order=["amount"],
                         decimal=".", declared={}, tenant=TENANT, file="loans.csv", first_line=2, read_fix="",
                         delimiter=delimiter)

    # run
    spaced = typer(" ").run()
    tabbed = typer("\t").run()
    # assert
    assert spaced.schema["amount"] == pl.String
    assert tabbed.get_column("amount").to_list() == [1234, 567, 8910]


# ------------------------------------------------------------------ two-digit years


@pytest.mark.parametrize(
    ("values", "expected", "date_format"),
    [
        (["1/5/16", "12/31/15", "7/4/16"], [dt.date(2016, 1, 5), dt.date(2015, 12, 31), dt.date(2016, 7, 4)], "%-m/%-d/%y"),
        (["31/12/15", "5/1/16", "4/7/16"], [dt.date(2015, 12, 31), dt.date(2016, 1, 5), dt.date(2016, 7, 4)], "%-d/%-m/%y"),
        (["31.12.15", "05.01.16"], [dt.date(2015, 12, 31), dt.date(2016, 1, 5)], "%d.%m.%y"),
        # chrono's %y pivot, which polars uses: 00-69 are 2000-2069, 70-99 are 1970-1999
        (["01/05/69", "01/05/70", "12/31/99", "01/05/00"],
         [dt.date(2069, 1, 5), dt.date(1970, 1, 5), dt.date(1999, 12, 31), dt.date(2000, 1, 5)], "%m/%d/%y"),
    ],
    ids=["month-first", "day-first", "dotted", "pivot"],
)
def test_two_digit_years_are_read_in_this_century_and_written_back_with_two_digits(tmp_path, values, expected, date_format):
    # setup
    content = "loan_id,opened\n" + "".join(f"L{i},{v}\n" for i, v in enumerate(values))
    # run
    frame, report = _read(tmp_path, content)
    released = _released(frame, report)
    # assert: never year 0016, and the release spells them as the file did
    assert frame.schema["opened"] == pl.Date
    assert frame.get_column("opened").to_list() == expected
    assert report.spellings["opened"] == {"date_format": date_format}
    assert released.get_column("opened").to_list() == values


def test_a_short_year_is_never_read_as_a_four_digit_year(tmp_path):
    # setup: '12-05' is no year-month, '1/5/7' has a one-digit year
    content = "loan_id,code,when\nL1,12-05,1/5/7\nL2,11-04,2/6/8\n"
    # run
    frame, _ = _read(tmp_path, content)
    # assert
    assert frame.schema["code"] == pl.String and frame.schema["when"] == pl.String


# ------------------------------------------------------------------ timestamps and month names


TIMESTAMPS = [
    (["2010-01-27 14:45:35.740031000", "2010-01-28 09:00:00.000000000"], pl.Datetime,
     dt.datetime(2010, 1, 27, 14, 45, 35, 740031), "%Y-%m-%d %H:%M:%S%.9f"),
    (["2010-01-27 15:51:03.740", "2010-01-28 00:00:00.001"], pl.Datetime,
     dt.datetime(2010, 1, 27, 15, 51, 3, 740000), "%Y-%m-%d %H:%M:%S%.3f"),
    (["2016-01-05 10:23", "2016-01-06 00:00"], pl.Datetime, dt.datetime(2016, 1, 5, 10, 23), "%Y-%m-%d %H:%M"),
    (["1/31/2016 0:00", "2/1/2016 13:05", "12/24/2016 9:30"], pl.Datetime, dt.datetime(2016, 1, 31), "%-m/%-d/%Y %-H:%M"),
    (["2016-01-05T10:23:00Z", "2016-01-06T00:00:00Z"], pl.Datetime, dt.datetime(2016, 1, 5, 10, 23), "%Y-%m-%dT%H:%M:%SZ"),
    (["Dec-15", "Jan-16"], pl.Date, dt.date(2015, 12, 1), "%b-%y"),
    (["01-Jan-16", "15-Feb-16"], pl.Date, dt.date(2016, 1, 1), "%d-%b-%y"),
]


@pytest.mark.parametrize(("values", "dtype", "first", "date_format"), TIMESTAMPS, ids=[t[3] for t in TIMESTAMPS])
def test_timestamps_and_short_month_dates_are_read_and_written_back_in_their_own_spelling(tmp_path, values, dtype, first,
                                                                                        date_format):
    # setup
    content = "loan_id,stamp\n" + "".join(f"L{i},{v}\n" for i, v in enumerate(values))
    # run
    frame, report = _read(tmp_path, content)
    released = _released(frame, report)
    # assert
    assert frame.schema["stamp"] == dtype
    assert frame.get_column("stamp")[0] == first
    assert report.spellings["stamp"] == {"date_format": date_format}
    assert released.get_column("stamp").to_list() == values


def test_a_column_mixing_dates_and_timestamps_reads_every_value(tmp_path):
    # setup
    values = ["2016-01-05", "2016-01-06 10:23", "2016-01-07 10:23:45.120", "07/01/2016"]
    content = "loan_id,stamp\n" + "".join(f"L{i},{v}\n" for i, v in enumerate(values))
    # run
    frame, _ = _read(tmp_path, content)
    # assert
    assert frame.get_column("stamp").to_list() == [dt.datetime(2016, 1, 5), dt.datetime(2016, 1, 6, 10, 23),
                                                   dt.datetime(2016, 1, 7, 10, 23, 45, 120000), dt.datetime(2016, 1, 7)]


def test_a_second_date_format_further_down_than_the_first_rows_is_still_read(tmp_path):
    # setup: 12,000 ISO dates, then day-first ones past the rows the reader looks at first
    values = [f"2020-01-{1 + i % 28:02d}" for i in range(12_000)] + ["25/12/2020"] * 50
    content = "loan_id,opened\n" + "".join(f"L{i},{v}\n" for i, v in enumerate(values))
    # run
    frame, report = _read(tmp_path, content)
    # assert: every format counted once over the whole file, not the first rows' twice
    assert frame.schema["opened"] == pl.Date and frame.get_column("opened").null_count() == 0
    assert frame.get_column("opened")[-1] == dt.date(2020, 12, 25)
    assert report.date_columns["opened"] == ["%Y-%m-%d", "%d/%m/%Y"]


# ------------------------------------------------------------------ top-coded counts


def _column(name: str, values: list[str]) -> str:
    return "loan_id," + name + "\n" + "".join(f"L{i},{v}\n" for i, v in enumerate(values))


def test_a_top_coded_count_is_read_as_categories_with_a_note(tmp_path):
    # setup: the loan prediction tape's Dependents: 0, 1, 2 and '3+' on 1 row in 14
    values = [["0", "1", "2", "0", "1", "0", "2"][i % 7] for i in range(140)]
    values[::14] = ["3+"] * 10
    # run
    frame, report = _read(tmp_path, _column("Dependents", values))
    schema = infer_schema(frame, spellings=report.spellings)
    # assert: every value kept as written, modelled as a category, and the reading notes say why
    assert frame.get_column("Dependents").to_list() == values
    assert schema["Dependents"].type is ColumnType.CATEGORICAL
    assert any("Dependents" in w and "'3+'" in w and "categor" in w for w in report.warnings)


def test_a_count_coded_at_both_ends_is_read_as_categories(tmp_path):
    # setup: employment length in years, '< 1 year' and '10+ years' at the ends
    values = [str(i % 10) for i in range(1, 60)] + ["10+ years", "< 1 year"] * 3
    # run
    frame, report = _read(tmp_path, _column("emp_length", values))
    # assert
    assert frame.schema["emp_length"] == pl.String and frame.get_column("emp_length").to_list() == values
    assert any("emp_length" in w and "'10+ years'" in w and "'< 1 year'" in w for w in report.warnings)


def test_a_top_coded_value_past_the_first_rows_is_found(tmp_path):
    # setup: 12,000 plain counts, then the top code
    values = [str(i % 3) for i in range(12_000)] + ["3+"] * 20
    # run
    frame, report = _read(tmp_path, _column("Dependents", values))
    # assert
    assert frame.schema["Dependents"] == pl.String and frame.get_column("Dependents")[-1] == "3+"
    assert any("Dependents" in w and "'3+'" in w for w in report.warnings)


@pytest.mark.parametrize("odd", [["see note below"], ["3+", "4+", ">=5"]], ids=["sentence", "three-codes"])
def test_numbers_mixed_with_other_text_are_still_refused(tmp_path, odd):
    # setup
    values = [str(i % 3) for i in range(60)] + odd
    # run / assert
    with pytest.raises(InvalidDataError, match=r"tenant 'acme', file 'loans.csv', column 'n': 60 of \d+ values are numbers"):
        _read(tmp_path, _column("n", values))
