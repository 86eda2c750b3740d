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
