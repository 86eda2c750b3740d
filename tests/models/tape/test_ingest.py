"""Tests for models.tape.ingest: reading untrusted loan tapes, the split and performance checks."""

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
from models.tape.ingest import (
    ReadOptions,
    file_sha256,
    find_duplicate_ids,
    neutralise_formulas,
    read_table,
    read_performance,
    split_train_holdout,
)

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


# ----------------------------------------------------------------------- split


def test_split_is_deterministic_and_near_the_requested_share() -> None:
    # setup
    ids = pl.DataFrame({"loan_id": [f"L{i:07d}" for i in range(10_000)]})
    # run
    first = split_train_holdout(ids, "loan_id")
    again = split_train_holdout(ids.reverse(), "loan_id").reverse()
    subset = split_train_holdout(ids.head(100), "loan_id")
    other = split_train_holdout(ids, "loan_id", holdout_share=0.35)
    # assert
    assert first.name == "split" and first.dtype == pl.String
    assert set(first.unique().to_list()) == {"train", "holdout"}
    assert abs((first == "holdout").mean() - 0.2) < 0.01
    assert abs((other == "holdout").mean() - 0.35) < 0.01
    assert first.equals(again)
    assert subset.equals(first.head(100))


def _reference_unit_hash(text: str, salt: str = "credittwin") -> float:
    """FNV-1a 64 then MurmurHash3's fmix64, byte by byte from the published definitions."""
    mask = (1 << 64) - 1
    value = 0xCBF29CE484222325
    for byte in salt.encode("utf-8") + b"\x00" + text.encode("utf-8"):
        value = ((value ^ byte) * 0x100000001B3) & mask
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & mask
    value ^= value >> 33
    value = (value * 0xC4CEB9FE1A85EC53) & mask
    value ^= value >> 33
    return (value >> 11) / float(1 << 53)


def test_split_matches_the_published_hash_and_ignores_id_type() -> None:
    # setup: ids of different lengths, non-ASCII and empty
    ids = ["L0000001", "L0000002", "L0000003", "a-much-longer-loan-identifier-0004", "é-ü", "", "7"]
    expected = ["holdout" if _reference_unit_hash(i) < 0.5 else "train" for i in ids]
    # run
    split = split_train_holdout(pl.DataFrame({"loan_id": ids}), "loan_id", holdout_share=0.5).to_list()
    as_int = split_train_holdout(pl.DataFrame({"id": list(range(200))}), "id")
    as_text = split_train_holdout(pl.DataFrame({"id": [str(i) for i in range(200)]}), "id")
    salted = split_train_holdout(pl.DataFrame({"id": [str(i) for i in range(200)]}), "id", salt="other")
    # assert
    assert split == expected
    assert {"train", "holdout"} <= set(split)
    assert as_int.equals(as_text)
    assert not salted.equals(as_text)


@pytest.mark.parametrize("share", [0.0, 1.0, -0.1, float("nan")])
def test_split_refuses_a_bad_share(share: float) -> None:
    # setup
    ids = pl.DataFrame({"loan_id": ["a", "b"]})
    # run / assert
    with pytest.raises(InvalidDataError, match=r"holdout share must be strictly between 0 and 1.*Fix: set holdout_share"):
        split_train_holdout(ids, "loan_id", holdout_share=share)


def test_split_refuses_null_ids() -> None:
    # setup
    ids = pl.DataFrame({"loan_id": ["a", None]})
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'loan_id': 1 rows have no loan id"):
        split_train_holdout(ids, "loan_id")


# ----------------------------------------------------------------- performance


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
    with pytest.raises(InvalidDataError, match=r"column 'status': unknown status label\(s\): 'Frozen', 'legal'\. Fix: spell them as one of current, dpd30"):
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
    history = ingest.read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="ID", mapping={})
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
    history = ingest.read_performance(perf, loans, tenant=TENANT, file="performance.csv", loan_id_column="loan_id", mapping={})
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
