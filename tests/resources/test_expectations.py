"""Tests of resources.expectations with real Great Expectations validations (no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from models.errors import TenantConfigError
from models.tape.schema import infer_schema
from resources.expectations import (
    BLOCKING_CHECKS,
    CHECK_NAMES,
    ExpectationOutcome,
    validate_loan_tape,
)


def _clean_tape() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "loan_id": ["L1", "L2", "L3", "L4"],
            "annual_inc": [50_000.0, 72_000.0, 38_000.0, 91_000.0],
            "loan_amnt": [10_000.0, 5_000.0, 12_000.0, 20_000.0],
            "int_rate": [7.5, 12.0, 19.9, 5.1],
            "grade": ["A", "B", "C", "A"],
            "default_flag": [0, 1, 0, 0],
        }
    )


def _clean_history() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "loan_id": ["L1", "L1", "L1", "L2", "L2", "L3"],
            "period": [1, 2, 3, 5, 6, 1],
            "balance": [100.0, 90.0, 80.0, 50.0, 40.0, 10.0],
        }
    )


def _run(
    loans: pl.DataFrame,
    *,
    target: str | None = "default_flag",
    declared: list[str] | None = None,
    performance: pl.DataFrame | None = None,
    **kwargs,
) -> dict[str, ExpectationOutcome]:
    schema = infer_schema(loans, id_columns=["loan_id"] if "loan_id" in loans.columns else [], target=target)
    outcomes = validate_loan_tape(
        loans,
        schema=schema,
        declared_columns=declared if declared is not None else ["grade", "default_flag"],
        performance=performance,
        **kwargs,
    )
    return {o.check: o for o in outcomes}


@pytest.fixture(scope="module")
def clean_outcomes() -> list[ExpectationOutcome]:
    loans = _clean_tape()
    schema = infer_schema(loans, id_columns=["loan_id"], target="default_flag")
    return validate_loan_tape(
        loans, schema=schema, declared_columns=["grade", "default_flag"], performance=_clean_history()
    )


def test_clean_tape_passes_every_check_with_stable_names(clean_outcomes):
    # setup / run: the module fixture validated a clean tape and history

    # assert
    assert [o.check for o in clean_outcomes] == list(CHECK_NAMES)
    assert CHECK_NAMES == (
        "tape_not_empty",
        "loan_ids_unique",
        "target_column_present",
        "declared_columns_present",
        "null_rates",
        "non_negative_amounts",
        "interest_rate_in_range",
        "performance_period_gaps",
    )
    assert all(o.passed for o in clean_outcomes), [o.to_metadata() for o in clean_outcomes if not o.passed]
    assert {o.check for o in clean_outcomes if o.blocking} == set(BLOCKING_CHECKS)
    assert not any(o.description.startswith("not applicable") for o in clean_outcomes)


def test_empty_tape_is_blocking():
    # setup
    loans = _clean_tape().clear()

    # run
    outcomes = _run(loans)

    # assert
    outcome = outcomes["tape_not_empty"]
    assert outcome.blocking and not outcome.passed
    assert outcome.details[0]["expectation"] == "expect_table_row_count_to_be_between"
    assert outcome.details[0]["observed_value"] == 0


def test_duplicate_loan_ids_are_blocking_with_examples():
    # setup
    loans = _clean_tape().with_columns(pl.Series("loan_id", ["L1", "L2", "L2", "L4"]))

    # run
    outcome = _run(loans)["loan_ids_unique"]

    # assert
    assert outcome.blocking and not outcome.passed
    detail = outcome.details[0]
    assert detail["expectation"] == "expect_column_values_to_be_unique"
    assert detail["column"] == "loan_id"
    assert detail["unexpected_count"] == 2
    assert detail["examples"] == ["L2", "L2"]
    assert detail["example_rows"] == [1, 2]


def test_null_loan_id_is_blocking():
    # setup
    loans = _clean_tape().with_columns(pl.Series("loan_id", ["L1", None, "L3", "L4"]))
    schema = infer_schema(loans, id_columns=["loan_id"], target="default_flag")

    # run
    outcomes = validate_loan_tape(loans, schema=schema, declared_columns=[])

    # assert
    outcome = next(o for o in outcomes if o.check == "loan_ids_unique")
    assert not outcome.passed
    assert outcome.details[0]["expectation"] == "expect_column_values_to_not_be_null"
    assert outcome.details[0]["example_rows"] == [1]


def test_missing_target_column_is_blocking():
    # setup
    loans = _clean_tape().drop("default_flag")

    # run
    outcome = _run(loans, target="default_flag", declared=["grade"])["target_column_present"]

    # assert
    assert outcome.blocking and not outcome.passed
    assert outcome.details[0] | {"similar_columns": None} == outcome.details[0] | {
        "expectation": "expect_column_to_exist",
        "column": "default_flag",
        "observed_value": "missing",
        "similar_columns": None,
    }


def test_missing_declared_column_is_blocking_and_suggests_a_close_name():
    # setup
    loans = _clean_tape().rename({"grade": "grades"})

    # run
    outcome = _run(loans, declared=["grade", "default_flag", "fico"])["declared_columns_present"]

    # assert
    assert outcome.blocking and not outcome.passed
    missing = {d["column"]: d for d in outcome.details}
    assert set(missing) == {"grade", "fico"}
    assert missing["grade"]["similar_columns"] == ["grades"]


def test_negative_income_warns_with_failing_values_and_loan_ids():
    # setup
    loans = _clean_tape().with_columns(pl.Series("annual_inc", [50_000.0, -1.0, 38_000.0, -5.0]))

    # run
    outcome = _run(loans)["non_negative_amounts"]

    # assert
    assert not outcome.blocking and not outcome.passed
    detail = outcome.details[0]
    assert detail["column"] == "annual_inc"
    assert detail["unexpected_count"] == 2
    assert detail["examples"] == [-1.0, -5.0]
    assert detail["example_loan_ids"] == ["L2", "L4"]
    assert "loan_amnt" in outcome.description


def test_interest_rate_of_250_warns():
    # setup
    loans = _clean_tape().with_columns(pl.Series("int_rate", [7.5, 250.0, 19.9, 5.1]))

    # run
    outcome = _run(loans)["interest_rate_in_range"]

    # assert
    assert not outcome.blocking and not outcome.passed
    assert outcome.details[0]["examples"] == [250.0]
    assert outcome.details[0]["expected"] == {"min_value": 0.0, "max_value": 100.0}


def test_fraction_rates_are_checked_against_zero_to_one():
    # setup
    loans = _clean_tape().with_columns(pl.Series("int_rate", [0.075, 0.12, 0.2, 0.05]))
    negative = _clean_tape().with_columns(pl.Series("int_rate", [0.075, -0.12, 0.2, 0.05]))

    # run
    clean = _run(loans)["interest_rate_in_range"]
    bad = _run(negative)["interest_rate_in_range"]

    # assert
    assert clean.passed
    assert "int_rate in [0, 1]" in clean.description
    assert not bad.passed and bad.details[0]["examples"] == [-0.12]


def test_half_null_column_warns_but_a_light_one_does_not():
    # setup
    loans = _clean_tape().with_columns(
        pl.Series("grade", ["A", None, None, "A"]), pl.Series("int_rate", [7.5, None, 19.9, 5.1])
    )

    # run
    outcome = _run(loans, null_rate_warn=0.3)["null_rates"]

    # assert
    assert not outcome.blocking and not outcome.passed
    assert [d["column"] for d in outcome.details] == ["grade"]
    assert outcome.details[0]["unexpected_percent"] == pytest.approx(50.0)
    assert outcome.details[0]["example_loan_ids"] == ["L2", "L3"]


def test_null_rate_threshold_is_configurable():
    # setup
    loans = _clean_tape().with_columns(pl.Series("int_rate", [7.5, None, 19.9, 5.1]))

    # run
    outcome = _run(loans, null_rate_warn=0.1)["null_rates"]

    # assert
    assert not outcome.passed
    assert outcome.details[0]["column"] == "int_rate"
    assert outcome.details[0]["expected"] == {"mostly": pytest.approx(0.9)}


def test_period_gaps_warn_with_failing_loan_ids():
    # setup
    history = pl.DataFrame(
        {"loan_id": ["L1", "L1", "L1", "L2", "L2", "L3", "L3"], "period": [1, 2, 4, 3, 3, 1, 2]}
    )

    # run
    outcome = _run(_clean_tape(), performance=history)["performance_period_gaps"]
    shuffled = _run(_clean_tape(), performance=history.reverse())["performance_period_gaps"]

    # assert
    assert not outcome.blocking and not outcome.passed
    detail = outcome.details[0]
    assert detail["unexpected_count"] == 2
    assert sorted(detail["examples"]) == [0, 2]
    assert sorted(detail["example_loan_ids"]) == ["L1", "L2"]
    assert shuffled.details == outcome.details  # row order of the upload does not matter


def test_monthly_dates_without_gaps_pass_and_with_gaps_fail():
    # setup
    dates = pl.DataFrame(
        {"loan_id": ["L1", "L1", "L1"], "as_of_date": ["2024-11-30", "2024-12-31", "2025-01-31"]}
    ).with_columns(pl.col("as_of_date").str.to_date())
    gap = dates.with_columns(pl.Series("as_of_date", ["2024-11", "2024-12", "2025-03"]))

    # run
    consecutive = _run(_clean_tape(), performance=dates)["performance_period_gaps"]
    with_gap = _run(_clean_tape(), performance=gap)["performance_period_gaps"]

    # assert
    assert consecutive.passed
    assert not with_gap.passed and with_gap.details[0]["examples"] == [3]  # December to March


def test_not_applicable_checks_pass_and_say_so():
    # setup
    loans = pl.DataFrame({"code": ["a", "b"], "note": ["x", "y"]})
    schema = infer_schema(loans)

    # run
    outcomes = validate_loan_tape(loans, schema=schema, declared_columns=[], performance=None)

    # assert
    assert [o.check for o in outcomes] == list(CHECK_NAMES)
    by_check = {o.check: o for o in outcomes}
    for name in (
        "loan_ids_unique",
        "target_column_present",
        "declared_columns_present",
        "non_negative_amounts",
        "interest_rate_in_range",
        "performance_period_gaps",
    ):
        assert by_check[name].passed, name
        assert by_check[name].description.startswith("not applicable"), name
    assert by_check["tape_not_empty"].passed and by_check["null_rates"].passed


def test_history_without_period_column_is_not_applicable():
    # setup
    history = _clean_history().drop("period")

    # run
    outcome = _run(_clean_tape(), performance=history)["performance_period_gaps"]

    # assert
    assert outcome.passed
    assert outcome.description.startswith("not applicable: the performance history has no period column")


def test_unreadable_period_column_fails_the_warning():
    # setup
    history = _clean_history().with_columns(pl.col("period").cast(pl.Float64) + 0.5)

    # run
    outcome = _run(_clean_tape(), performance=history)["performance_period_gaps"]

    # assert
    assert not outcome.passed
    assert "neither a whole month number nor a date" in outcome.details[0]["error"]


def test_metadata_is_json_safe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # setup
    monkeypatch.chdir(tmp_path)
    loans = _clean_tape().with_columns(
        pl.Series("loan_id", [1, 2, 2, None]),
        pl.Series("annual_inc", [float("nan"), -1.0, None, 3.0]),
        pl.Series("opened", ["2024-01-01", None, None, None]).str.to_date(),
    )

    # run
    outcomes = _run(loans)

    # assert
    text = json.dumps([o.to_metadata() for o in outcomes.values()], allow_nan=False)
    assert "expect_column_values_to_be_unique" in text
    nulls = outcomes["null_rates"].to_metadata()
    assert [d["column"] for d in nulls["details"]] == ["loan_id", "annual_inc", "opened"]  # NaN reads as null
    assert outcomes["non_negative_amounts"].details[0]["examples"] == [-1.0]
    assert list(tmp_path.iterdir()) == []  # the ephemeral context wrote nothing


def test_bad_arguments_raise_config_errors():
    # setup
    loans = _clean_tape()

    # run / assert
    with pytest.raises(TenantConfigError, match="null_rate_warn must lie in"):
        _run(loans, null_rate_warn=1.5)
    with pytest.raises(TenantConfigError, match="low < high.*Fix: give the range in percent"):
        _run(loans, interest_rate_range=(10.0, 5.0))
