"""Tests of models.tape.features: formulas, aliases, skipped features, history aggregates."""

from __future__ import annotations

import math

import polars as pl
import pytest

from models.errors import InvalidDataError
from models.tape.features import (
    CANONICAL_ALIASES,
    ROW_KEY,
    PERFORMANCE_FEATURES,
    build_features,
    month_index,
    resolve_columns,
)


def _tape() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "loan_id": [1, 2, 3],
            "annual_income": [60_000.0, 0.0, -10.0],
            "monthly_debt": [1_000.0, 200.0, 300.0],
            "installment": [500.0, 100.0, 50.0],
            "loan_amount": [100_000.0, 50_000.0, 20_000.0],
            "property_value": [200_000.0, 0.0, -5.0],
            "revolving_balance": [300.0, 50.0, 10.0],
            "credit_limit": [1_000.0, 0.0, -1.0],
        }
    )


def _history() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "loan_id": [1, 1, 1, 1, 2, 2],
            "period": [4, 1, 2, 3, 1, 2],
            "status": ["current", "current", "30", "60-89", "current", "charged off"],
            "days_past_due": [0, 0, 35, 70, 0, 130],
            "balance": [70.0, 100.0, 90.0, 80.0, 0.0, 10.0],
        }
    )


def test_loan_level_formulas_on_hand_made_tape():
    # setup
    tape = _tape()

    # run
    features, report = build_features(tape, None, id_column="loan_id")

    # assert
    row = features.row(0, named=True)
    assert row["debt_to_income"] == pytest.approx(12 * 1_000 / 60_000 * 100)
    assert row["loan_to_value"] == pytest.approx(50.0)
    assert row["credit_utilisation"] == pytest.approx(0.3)
    assert row["payment_to_income"] == pytest.approx(0.1)
    assert "monthly_debt" in report.built["debt_to_income"]


def test_zero_or_negative_denominators_give_null_not_inf():
    # setup
    tape = _tape()

    # run
    features, _ = build_features(tape, None, id_column="loan_id")

    # assert
    for name in ("debt_to_income", "loan_to_value", "credit_utilisation", "payment_to_income"):
        assert features.get_column(name).slice(1, 2).to_list() == [None, None], name
    floats = features.select(pl.col(pl.Float64)).to_numpy()
    assert not any(math.isinf(v) for v in floats.ravel() if v == v)


def test_infinite_inputs_never_give_inf():
    # setup
    tape = pl.DataFrame({"annual_income": [math.inf, 50_000.0], "installment": [100.0, math.inf], "dti": [None, 5.0]})

    # run
    features, _ = build_features(tape, None, id_column=None)

    # assert
    assert features.get_column("payment_to_income").to_list() == [None, None]
    assert features.get_column("debt_to_income").to_list() == [None, 5.0]


def test_installment_used_when_monthly_debt_missing():
    # setup
    tape = _tape().drop("monthly_debt")

    # run
    features, report = build_features(tape, None, id_column="loan_id")

    # assert
    assert features.get_column("debt_to_income")[0] == pytest.approx(12 * 500 / 60_000 * 100)
    assert report.built["debt_to_income"] == "12*installment/annual_income*100"


def test_tape_dti_and_ltv_win_and_fractions_become_percent():
    # setup
    tape = pl.DataFrame(
        {
            "dti": [0.25, None],
            "LTV": [0.8, 1.2],
            "annual_income": [12_000.0, 12_000.0],
            "installment": [100.0, 100.0],
        }
    )

    # run
    features, report = build_features(tape, None, id_column=None)

    # assert
    assert features.get_column("debt_to_income").to_list() == pytest.approx([25.0, 10.0])
    assert features.get_column("loan_to_value").to_list() == pytest.approx([80.0, 120.0])
    assert "fraction" in report.built["debt_to_income"]
    assert "LTV" in report.built["loan_to_value"]


def test_percent_dti_is_kept_as_given():
    # setup
    tape = pl.DataFrame({"debt_to_income_ratio": [18.5, 40.0]})

    # run
    features, report = build_features(tape, None, id_column=None)

    # assert
    assert features.get_column("debt_to_income").to_list() == [18.5, 40.0]
    assert "percent" in report.built["debt_to_income"]


def test_aliases_resolve_case_and_separator_insensitively():
    # setup
    columns = ["Annual Inc", "LOAN_AMNT", "revol-bal", "total_rev_hi_lim", "emp_length", "unrelated"]

    # run
    resolved = resolve_columns(columns)

    # assert
    assert resolved == {
        "annual_income": "Annual Inc",
        "loan_amount": "LOAN_AMNT",
        "revolving_balance": "revol-bal",
        "credit_limit": "total_rev_hi_lim",
        "employment_years": "emp_length",
    }


def test_earliest_alias_wins_over_column_position():
    # setup
    columns = ["income", "annual_income"]

    # run
    forward = resolve_columns(columns)
    backward = resolve_columns(list(reversed(columns)))

    # assert
    assert forward["annual_income"] == backward["annual_income"] == "annual_income"


def test_every_alias_list_starts_with_its_canonical_name():
    # setup / run
    firsts = {canonical: aliases[0] for canonical, aliases in CANONICAL_ALIASES.items()}

    # assert
    assert all(canonical == first for canonical, first in firsts.items())


def test_features_from_aliased_tape_match_canonical_tape():
    # setup
    canonical = _tape()
    aliased = canonical.rename(
        {"annual_income": "annual_inc", "loan_amount": "loan_amnt", "revolving_balance": "revol_bal",
         "credit_limit": "total_rev_hi_lim", "property_value": "home_value"}
    )

    # run
    expected, _ = build_features(canonical, None, id_column="loan_id")
    got, report = build_features(aliased, None, id_column="loan_id")

    # assert
    assert got.equals(expected)
    assert report.built["credit_utilisation"].startswith("revol_bal/total_rev_hi_lim")


def test_missing_inputs_are_skipped_with_reasons():
    # setup
    tape = pl.DataFrame({"loan_id": [1, 2], "grade": ["A", "B"]})

    # run
    features, report = build_features(tape, None, id_column="loan_id")

    # assert
    assert features.columns == ["loan_id"]
    assert report.built == {}
    assert "revolving_balance" in report.skipped["credit_utilisation"]
    assert "revol_bal" in report.skipped["credit_utilisation"]
    assert "employment_years" in report.skipped["employment_stability_score"]
    assert all(report.skipped[name] == "no performance history supplied" for name in PERFORMANCE_FEATURES)
    assert report.to_dict()["skipped"] == report.skipped


def test_non_numeric_input_is_skipped_with_its_dtype():
    # setup
    tape = pl.DataFrame({"revol_bal": ["$1,000"], "credit_limit": [5_000.0]})

    # run
    features, report = build_features(tape, None, id_column=None)

    # assert
    assert "credit_utilisation" not in features.columns
    assert "'revol_bal' is String, not numeric" in report.skipped["credit_utilisation"]


def test_employment_years_text_and_numbers_bucket_into_scores():
    # setup
    text = pl.DataFrame({"emp_length": ["< 1 year", "1 year", "3 years", "7 years", "10+ years", "n/a"]})
    numbers = pl.DataFrame({"years_employed": [0.5, 2.0, 4.0, 9.0, 25.0, None]})

    # run
    from_text, _ = build_features(text, None, id_column=None)
    from_numbers, _ = build_features(numbers, None, id_column=None)

    # assert
    expected = [0.0, 0.25, 0.5, 0.75, 1.0, None]
    assert from_text.get_column("employment_stability_score").to_list() == expected
    assert from_numbers.get_column("employment_stability_score").to_list() == expected


def test_income_verified_flag_from_labels():
    # setup
    tape = pl.DataFrame({"verification_status": ["Verified", "Source Verified", "Not Verified", "unknown", None]})

    # run
    features, report = build_features(tape, None, id_column=None)

    # assert
    assert features.get_column("income_verified").to_list() == [True, True, False, None, None]
    assert "verification_status" in report.built["income_verified"]


def test_history_aggregates_per_loan():
    # setup
    tape = _tape()

    # run
    features, report = build_features(tape, _history(), id_column="loan_id")

    # assert
    first, second, third = features.iter_rows(named=True)
    assert first["max_days_past_due"] == 70
    assert first["months_delinquent"] == 2
    assert (first["ever_30"], first["ever_60"], first["ever_90"]) == (True, True, False)
    assert first["months_on_book"] == 4
    assert first["current_balance_ratio"] == pytest.approx(0.7)  # period 4 over period 1, not row order
    assert second["months_delinquent"] == 0  # default is absorbing, not a delinquent month
    assert second["ever_90"] is True
    assert second["current_balance_ratio"] is None  # first balance 0
    assert set(PERFORMANCE_FEATURES) <= set(report.built)


def test_loans_without_history_get_nulls_and_false():
    # setup
    tape = _tape()

    # run
    features, _ = build_features(tape, _history(), id_column="loan_id")

    # assert
    third = features.row(2, named=True)
    assert third["loan_id"] == 3
    assert third["max_days_past_due"] is None
    assert third["current_balance_ratio"] is None
    assert (third["ever_30"], third["ever_60"], third["ever_90"]) == (False, False, False)
    assert (third["months_on_book"], third["months_delinquent"]) == (0, 0)


def test_status_alone_gives_delinquency_and_skips_max_dpd():
    # setup
    history = pl.DataFrame({"Loan_ID": ["a", "a", "b"], "loan_status": ["C", "dpd60", "Current"]})
    tape = pl.DataFrame({"account_id": ["a", "b"]})

    # run
    features, report = build_features(tape, history, id_column="account_id")

    # assert
    assert features.get_column("ever_60").to_list() == [True, False]
    assert features.get_column("months_delinquent").to_list() == [1, 0]
    assert "days_past_due" in report.skipped["max_days_past_due"]
    assert "period" in report.skipped["current_balance_ratio"]


def test_unknown_status_labels_fall_back_to_days_past_due_and_are_reported():
    # setup
    history = pl.DataFrame({"loan_id": [1, 1], "status": ["weird", "current"], "dpd": [65, 0]})
    tape = pl.DataFrame({"loan_id": [1]})

    # run
    features, report = build_features(tape, history, id_column="loan_id")

    # assert
    assert features.get_column("ever_60").to_list() == [True]
    assert "weird" in report.built["months_delinquent"]


def test_date_periods_order_the_balance_ratio_and_undated_months_are_left_out():
    # setup
    history = pl.DataFrame(
        {"loan_id": [1, 1, 1], "as_of_date": ["2024-02-29", None, "2024-01-31"], "balance": [50.0, 7.0, 100.0]}
    ).with_columns(pl.col("as_of_date").str.to_date())
    tape = pl.DataFrame({"loan_id": [1]})

    # run
    features, _ = build_features(tape, history, id_column="loan_id")

    # assert
    assert features.get_column("current_balance_ratio").to_list() == [0.5]


def test_balance_ratio_skips_months_without_balance():
    # setup: already in loan and month order, so the sort is skipped
    history = pl.DataFrame(
        {
            "loan_id": [1, 1, 1, 1, 2, 2],
            "period": [1, 2, 3, 4, 1, 2],
            "balance": [200.0, 150.0, 100.0, None, 80.0, None],
        }
    )
    tape = pl.DataFrame({"loan_id": [1, 2]})

    # run
    features, _ = build_features(tape, history, id_column="loan_id")

    # assert
    assert features.get_column("current_balance_ratio").to_list() == [0.5, 1.0]
    assert features.get_column("months_on_book").to_list() == [4, 2]


def test_history_skipped_without_id_column():
    # setup
    tape = _tape().drop("loan_id")

    # run
    features, report = build_features(tape, _history(), id_column=None)

    # assert
    assert "months_on_book" not in features.columns
    assert "no id column" in report.skipped["months_on_book"]


def test_history_without_loan_id_is_skipped_with_reason():
    # setup
    history = _history().rename({"loan_id": "borrower"})

    # run
    _, report = build_features(_tape(), history, id_column="loan_id")

    # assert
    assert "no 'loan_id' column" in report.skipped["ever_30"]


def test_history_id_of_other_dtype_still_joins():
    # setup
    history = _history().with_columns(pl.col("loan_id").cast(pl.String))

    # run
    features, _ = build_features(_tape(), history, id_column="loan_id")

    # assert
    assert features.get_column("months_on_book").to_list() == [4, 2, 0]


def test_column_order_does_not_change_the_result():
    # setup
    tape = _tape().with_columns(pl.Series("emp_length", ["2 years", "10+ years", None]))
    shuffled_tape = tape.select(["credit_limit", "emp_length", "loan_id", "installment", "property_value",
                                 "revolving_balance", "annual_income", "loan_amount", "monthly_debt"])
    history = _history()
    shuffled_history = history.select(["balance", "status", "loan_id", "days_past_due", "period"])

    # run
    expected, expected_report = build_features(tape, history, id_column="loan_id")
    got, report = build_features(shuffled_tape, shuffled_history, id_column="loan_id")

    # assert
    assert got.equals(expected)
    assert report.to_dict() == expected_report.to_dict()


def test_unknown_id_column_raises_with_fix():
    # setup
    tape = _tape()

    # run / assert
    with pytest.raises(InvalidDataError, match="column 'loan_ref'.*Fix: declare an id column"):
        build_features(tape, None, id_column="loan_ref")


def test_month_index_reads_integers_dates_and_text_but_not_floats():
    # setup
    frame = pl.DataFrame(
        {
            "n": [1, 2],
            "d": pl.Series(["2024-12-31", "2025-01-01"]).str.to_date(),
            "s": ["2024-12", "2025-01-15"],
            "f": [1.0, 2.0],
        }
    )

    # run
    months = frame.select(
        month_index(frame, "n").alias("n"), month_index(frame, "d").alias("d"), month_index(frame, "s").alias("s")
    )

    # assert
    assert months.get_column("n").to_list() == [1, 2]
    assert months.get_column("d").to_list() == [2024 * 12 + 12, 2025 * 12 + 1]
    assert months.get_column("s").to_list() == [2024 * 12 + 12, 2025 * 12 + 1]
    assert month_index(frame, "f") is None


def test_single_status_label_with_days_past_due_gives_one_row_per_loan():
    # Regression: polars collapsed an all-literal when/then severity chain to one row.
    loans = pl.DataFrame({"loan_id": ["a", "b"], "loan_amount": [1000.0, 2000.0]})
    performance = pl.DataFrame(
        {
            "loan_id": ["a", "a", "b", "b"],
            "period": [1, 2, 1, 2],
            "status": ["current"] * 4,
            "days_past_due": [0, 0, 0, 95],
            "balance": [1000.0, 900.0, 2000.0, 1900.0],
            "payment": [100.0, 100.0, 100.0, 0.0],
        }
    )
    features, _ = build_features(loans, performance, id_column="loan_id")
    by_id = {row["loan_id"]: row for row in features.to_dicts()}
    assert by_id["a"]["ever_30"] is False
    assert by_id["b"]["ever_90"] is True


# --- real tapes (tests/corpus): no demo column names ----------------------------------------------


def _corpus(tenant: str):
    from tests.corpus import CORPUS

    tape = next(t for t in CORPUS if t.tenant == tenant)
    return pl.from_pandas(tape.frame()), tape


def _corpus_tenants() -> list[str]:
    from tests.corpus import CORPUS

    return [t.tenant for t in CORPUS]


@pytest.mark.parametrize("tenant", _corpus_tenants())
def test_every_real_tape_keeps_one_row_per_loan_with_a_key(tenant):
    # setup
    loans, tape = _corpus(tenant)
    target = tape.config.get("target", {}).get("column")

    # run: as a tape without a declared loan id
    features, report = build_features(loans, None, id_column=None, ignore=(target,) if target else ())

    # assert
    assert features.height == loans.height
    assert features.columns[0] == ROW_KEY
    assert features.get_column(ROW_KEY).to_list() == list(range(1, loans.height + 1))
    assert "row number" in report.key
    assert set(report.built) | set(report.skipped) >= {"debt_to_income", "loan_to_income", "credit_utilisation"}
    assert (report.note.startswith("no feature could be derived") if not report.built else "built" in report.note)


def test_inputs_spelled_their_own_way_are_found_by_name_and_type():
    # setup: wooldridge/loanapp names its amount "loanamt", its income "appinc" and the house price "price"
    loans, _ = _corpus("wooldridge-loanapp")

    # run
    features, report = build_features(loans, None, id_column="rownames", ignore=("reject",))

    # assert
    first = loans.row(0, named=True)
    row = features.row(0, named=True)
    assert row["loan_to_value"] == pytest.approx(first["loanamt"] / first["price"] * 100)
    assert row["loan_to_income"] == pytest.approx(first["loanamt"] / first["appinc"])
    assert {"loan_amount", "annual_income", "property_value"} <= set(report.hinted)
    assert "'loanamt'" in report.hinted["loan_amount"]
    assert report.key == "the loan id column 'rownames'"


def test_a_card_tape_balance_over_its_limit_is_the_utilisation():
    # setup: ISLR/Credit: card balances and limits, no loan amount
    loans, _ = _corpus("islr-credit")

    # run
    features, report = build_features(loans, None, id_column="ID")

    # assert
    expected = (loans["Balance"] / loans["Limit"]).to_list()
    assert features.get_column("credit_utilisation").to_list() == pytest.approx(expected)
    assert report.built["credit_utilisation"].startswith("Balance/Limit")


def test_the_row_key_never_overwrites_a_tape_column():
    # setup
    tape = pl.DataFrame({"tape_row": ["a", "b"], "income": [1.0, 2.0]})

    # run
    features, report = build_features(tape, None, id_column=None)

    # assert
    assert features.columns == ["_tape_row"] and features.get_column("_tape_row").to_list() == [1, 2]
    assert "'_tape_row'" in report.key and report.note.startswith("no feature could be derived")
