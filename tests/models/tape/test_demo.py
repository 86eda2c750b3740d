"""Tests of the demo portfolio generator (models/tape/demo.py)."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from models.tape.demo import (
    GRADES,
    PRODUCTS,
    REGIONS,
    DemoPortfolio,
    demo_tenant_config,
    generate_portfolio,
    oracle_default_probabilities,
    write_landing,
)
from models.errors import InvalidDataError
from models.sequences.states import ABSORBING, STATES
from models.tape.loan_tape import find_upload
from models.tape.tenant import load_tenant_config

LOAN_SCHEMA = {
    "loan_id": pl.String,
    "borrower_id": pl.String,
    "origination_date": pl.Date,
    "product": pl.String,
    "grade": pl.String,
    "credit_score": pl.Int64,
    "annual_income": pl.Float64,
    "employment_years": pl.Int64,
    "age": pl.Int64,
    "region": pl.String,
    "home_ownership": pl.String,
    "loan_amount": pl.Float64,
    "funded_amount": pl.Float64,
    "term_months": pl.Int64,
    "interest_rate": pl.Float64,
    "installment": pl.Float64,
    "dti": pl.Float64,
    "ltv": pl.Float64,
    "revolving_balance": pl.Float64,
    "credit_limit": pl.Float64,
    "default_flag": pl.Int64,
}
PERFORMANCE_SCHEMA = {
    "loan_id": pl.String,
    "period": pl.Int64,
    "reporting_month": pl.Date,
    "status": pl.String,
    "days_past_due": pl.Int64,
    "balance": pl.Float64,
    "payment": pl.Float64,
}
# Which status may follow which within one loan's history.
ALLOWED_NEXT = {
    "current": {"current", "dpd30", "prepaid", "matured"},
    "dpd30": {"current", "dpd30", "dpd60", "matured"},
    "dpd60": {"current", "dpd60", "dpd90", "matured"},
    "dpd90": {"current", "dpd90", "default", "matured"},
}


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney statistic, ties ranked by their average."""
    ranks = pl.Series(scores).rank("average").to_numpy()
    positives = labels.astype(bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def segment_headroom(book: DemoPortfolio, oracle: np.ndarray) -> float:
    """AUC of the exact per-loan probability minus AUC of the product x grade default rate."""
    segment_rate = book.loans.select(pl.col("default_flag").mean().over("product", "grade")).to_series().to_numpy()
    labels = book.loans["default_flag"].to_numpy()
    return auc(oracle, labels) - auc(segment_rate, labels)


@pytest.fixture(scope="module")
def book() -> DemoPortfolio:
    return generate_portfolio(3_000, months=24, seed=11, target_default_rate=0.10)


@pytest.fixture(scope="module")
def big_book() -> DemoPortfolio:
    return generate_portfolio(20_000, seed=5, target_default_rate=0.08)


@pytest.fixture(scope="module")
def nonlinear_book() -> DemoPortfolio:
    return generate_portfolio(20_000, seed=5, target_default_rate=0.08, nonlinear=True)


@pytest.fixture(scope="module")
def transitions(book: DemoPortfolio) -> pl.DataFrame:
    perf = book.performance
    return perf.with_columns(
        prev_status=pl.col("status").shift(1).over("loan_id"),
        prev_balance=pl.col("balance").shift(1).over("loan_id"),
        prev_dpd=pl.col("days_past_due").shift(1).over("loan_id"),
    )


def test_loans_have_the_contract_columns_and_types(book: DemoPortfolio) -> None:
    # setup
    loans = book.loans
    # run
    schema = dict(loans.schema)
    # assert
    assert schema == LOAN_SCHEMA
    assert list(loans.columns) == list(LOAN_SCHEMA)
    assert loans.height == 3_000


def test_performance_has_the_contract_columns_and_types(book: DemoPortfolio) -> None:
    # setup
    perf = book.performance
    # run
    schema = dict(perf.schema)
    # assert
    assert schema == PERFORMANCE_SCHEMA
    assert set(perf["status"].unique()) <= set(STATES)
    assert set(perf["loan_id"].unique()) == set(book.loans["loan_id"])


def test_ids_are_unique_and_some_borrowers_hold_two_loans(book: DemoPortfolio) -> None:
    # setup
    loans = book.loans
    # run
    per_borrower = loans.group_by("borrower_id").agg(pl.len().alias("n"), pl.col("credit_score").n_unique().alias("scores"))
    # assert
    assert loans["loan_id"].n_unique() == loans.height
    assert loans["loan_id"].str.contains(r"^L\d{8}$").all()
    assert loans["borrower_id"].str.contains(r"^B\d{8}$").all()
    assert per_borrower["n"].max() == 2
    assert (per_borrower["n"] == 2).sum() > 0.03 * loans.height
    assert (per_borrower["scores"] == 1).all()  # borrower attributes are shared across their loans


def test_same_seed_gives_identical_frames_and_another_seed_differs() -> None:
    # setup
    args = {"n_loans": 800, "months": 12, "target_default_rate": 0.06}
    # run
    first = generate_portfolio(**args, seed=42)
    second = generate_portfolio(**args, seed=42)
    other = generate_portfolio(**args, seed=43)
    # assert
    assert first.loans.equals(second.loans)
    assert first.performance.equals(second.performance)
    assert first.tenant_config == second.tenant_config
    assert not first.loans.equals(other.loans)


@pytest.mark.parametrize("target", [0.04, 0.08, 0.15])
def test_default_rate_is_calibrated_to_the_target(target: float) -> None:
    # setup
    n = 20_000
    # run
    book = generate_portfolio(n, seed=9, target_default_rate=target)
    achieved = book.loans["default_flag"].mean()
    # assert: sampling sd at 20k is below 0.26 pp, so 1 pp is about four sd
    assert abs(achieved - target) < 0.01
    assert book.calibration["expected_rate"] == pytest.approx(target, abs=1e-4)
    assert book.calibration["achieved_rate"] == pytest.approx(achieved)


def test_default_flag_marks_paths_that_reached_default(book: DemoPortfolio) -> None:
    # setup
    perf = book.performance
    # run
    reached = perf.group_by("loan_id").agg((pl.col("status") == "default").any().cast(pl.Int64).alias("reached"))
    joined = book.loans.select("loan_id", "default_flag").join(reached, on="loan_id")
    # assert
    assert joined.height == book.loans.height
    assert (joined["default_flag"] == joined["reached"]).all()
    assert 0 < book.loans["default_flag"].sum() < book.loans.height


def test_periods_are_consecutive_and_absorbing_states_end_the_path(book: DemoPortfolio) -> None:
    # setup
    perf = book.performance
    # run
    per_loan = perf.group_by("loan_id", maintain_order=True).agg(
        pl.len().alias("rows"),
        pl.col("period").min().alias("first"),
        pl.col("period").max().alias("last"),
        pl.col("status").is_in(list(ABSORBING)).sum().alias("absorbing_rows"),
        pl.col("status").last().alias("last_status"),
    )
    # assert
    assert (per_loan["first"] == 1).all()
    assert (per_loan["last"] == per_loan["rows"]).all()
    assert (per_loan["rows"] <= 24).all()
    assert (per_loan["absorbing_rows"] <= 1).all()
    # a path shorter than the window ends in an absorbing state, and only there
    short = per_loan.filter(pl.col("rows") < 24)
    assert short["last_status"].is_in(list(ABSORBING)).all()
    assert (per_loan.filter(pl.col("absorbing_rows") == 1)["last_status"].is_in(list(ABSORBING))).all()
    assert perf.equals(perf.sort("loan_id", "period"))


def test_transitions_follow_the_delinquency_ladder(transitions: pl.DataFrame) -> None:
    # setup
    pairs = transitions.filter(pl.col("prev_status").is_not_null())
    # run
    seen = pairs.group_by("prev_status", "status").len()
    # assert
    for row in seen.iter_rows(named=True):
        assert row["status"] in ALLOWED_NEXT[row["prev_status"]], row
    first_rows = transitions.filter(pl.col("prev_status").is_null())
    assert set(first_rows["status"].unique()) <= {"current", "dpd30", "prepaid"}
    observed = set(zip(seen["prev_status"], seen["status"]))
    assert {("current", "dpd30"), ("dpd30", "current"), ("dpd60", "current"), ("dpd90", "default")} <= observed


def test_days_past_due_match_the_status(book: DemoPortfolio) -> None:
    # setup
    perf = book.performance
    # run
    ranges = perf.group_by("status").agg(pl.col("days_past_due").min().alias("lo"), pl.col("days_past_due").max().alias("hi"))
    got = {r["status"]: (r["lo"], r["hi"]) for r in ranges.iter_rows(named=True)}
    # assert
    assert got["current"] == (0, 0)
    assert got["dpd30"] == (30, 30)
    assert got["dpd60"] == (60, 60)
    assert 90 <= got["dpd90"][0] and got["dpd90"][1] <= 150
    assert 120 <= got["default"][0] and got["default"][1] <= 180
    assert got["prepaid"] == (0, 0)


def test_balances_amortise_and_payments_stop_when_missed(transitions: pl.DataFrame, book: DemoPortfolio) -> None:
    # setup
    perf = transitions
    loans = book.loans.select("loan_id", "funded_amount", "installment")
    # run
    missed = perf.filter(
        (pl.col("prev_status") == "current") & (pl.col("status") == "dpd30")
        | (pl.col("prev_status") == "dpd30") & (pl.col("status") == "dpd60")
        | (pl.col("prev_status") == "dpd60") & (pl.col("status") == "dpd90")
        | (pl.col("prev_status") == "dpd90") & (pl.col("status").is_in(["dpd90", "default"]))
    )
    kept_up = perf.filter(pl.col("prev_status").is_in(["current", "dpd30", "dpd60"]) & (pl.col("status") == pl.col("prev_status")))
    kept_up = kept_up.join(loans, on="loan_id")
    closed = perf.filter(pl.col("status").is_in(["prepaid", "matured"]))
    first = perf.filter(pl.col("period") == 1, pl.col("status") == "current").join(loans, on="loan_id")
    # assert
    assert (perf["balance"] >= 0).all() and (perf["payment"] >= 0).all()
    assert ((perf["balance"] - perf["prev_balance"]).drop_nulls() <= 0.01).all()
    assert (missed["payment"] == 0).all() and missed.height > 0
    assert ((kept_up["payment"] - kept_up["installment"]).abs() < 0.01).all()
    assert (closed["balance"] == 0).all() and (closed["payment"] > 0).all()
    assert ((first["payment"] - first["installment"]).abs() < 0.01).all()
    assert (first["balance"] < first["funded_amount"]).all()
    defaulted = perf.filter(pl.col("status") == "default")
    assert ((defaulted["balance"] - defaulted["prev_balance"]).abs() < 0.01).all()


def test_loans_whose_term_ends_in_the_window_mature_at_term(book: DemoPortfolio) -> None:
    # setup
    last = book.performance.group_by("loan_id").agg(pl.col("period").max().alias("last"), pl.col("status").last().alias("end"))
    # run
    short_term = book.loans.filter(pl.col("term_months") <= 24).join(last, on="loan_id")
    matured = book.performance.filter(pl.col("status") == "matured").join(book.loans, on="loan_id")
    # assert
    assert short_term.height > 0
    survivors = short_term.filter(~pl.col("end").is_in(["default", "prepaid"]))
    assert (survivors["end"] == "matured").all()
    assert (survivors["last"] == survivors["term_months"]).all()
    assert (matured["period"] == matured["term_months"]).all()


def test_reporting_months_follow_origination(book: DemoPortfolio) -> None:
    # setup
    perf = book.performance.join(book.loans.select("loan_id", "origination_date"), on="loan_id")
    # run
    expected = pl.col("origination_date").dt.month_start().dt.offset_by(pl.format("{}mo", pl.col("period")))
    mismatched = perf.filter(pl.col("reporting_month") != expected)
    # assert
    assert mismatched.height == 0
    assert (perf["reporting_month"].dt.day() == 1).all()
    origination = book.loans["origination_date"]
    assert origination.min() >= date(2019, 1, 1) and origination.max() < date(2021, 1, 1)
    assert origination.dt.month_start().n_unique() == 24


def test_static_attributes_are_in_range(book: DemoPortfolio) -> None:
    # setup
    loans = book.loans
    terms = {"mortgage": {180, 240, 360}, "auto": {36, 48, 60, 72}, "personal": {12, 24, 36, 60}, "card": {36}}
    # run
    utilisation = loans["revolving_balance"] / loans["credit_limit"]
    terms_seen = loans.group_by("product").agg(pl.col("term_months").unique())
    # assert
    assert loans["credit_score"].is_between(300, 850).all()
    assert loans["age"].is_between(18, 85).all()
    assert loans["employment_years"].is_between(0, 40).all()
    assert (loans["employment_years"] <= loans["age"] - 18).all()
    assert (loans["annual_income"] > 0).all()
    assert (loans["funded_amount"] <= loans["loan_amount"]).all()
    assert (loans["funded_amount"] < loans["loan_amount"]).any()
    assert loans["dti"].is_between(0, 65).all()
    assert utilisation.is_between(0, 1.2).all()
    assert (loans["interest_rate"] > 0).all()
    assert set(loans["product"]) == set(PRODUCTS)
    assert set(loans["grade"]) == set(GRADES)
    assert set(loans["region"]) == set(REGIONS)
    assert set(loans["home_ownership"]) == {"rent", "own", "mortgage"}
    assert (loans.filter(pl.col("product") == "mortgage")["home_ownership"] == "mortgage").all()
    for row in terms_seen.iter_rows(named=True):
        assert set(row["term_months"]) <= terms[row["product"]]


def test_ltv_is_null_exactly_for_unsecured_products(book: DemoPortfolio) -> None:
    # setup
    loans = book.loans
    # run
    unsecured = loans["product"].is_in(["personal", "card"])
    # assert
    assert (loans["ltv"].is_null() == unsecured).all()
    assert loans.filter(~unsecured)["ltv"].is_between(20, 140).all()


def test_installment_is_the_annuity_of_the_funded_amount(book: DemoPortfolio) -> None:
    # setup
    loans = book.loans
    # run
    r = loans["interest_rate"] / 1200.0
    annuity = loans["funded_amount"] * r / (1.0 - (1.0 + r) ** (-loans["term_months"]))
    # assert
    assert ((loans["installment"] - annuity).abs() <= 0.006).all()


def test_product_mix_and_grades_follow_the_design(big_book: DemoPortfolio) -> None:
    # setup
    loans = big_book.loans
    # run
    mix = dict(loans["product"].value_counts(normalize=True).iter_rows())
    by_grade = loans.group_by("grade").agg(pl.col("default_flag").mean(), pl.col("interest_rate").mean()).sort("grade")
    # assert
    for product, share in zip(PRODUCTS, (0.25, 0.25, 0.30, 0.20)):
        assert abs(mix[product] - share) < 0.04, (product, mix[product])
    assert by_grade["default_flag"].is_sorted()
    assert by_grade["interest_rate"].is_sorted()
    assert by_grade["default_flag"][-1] > 10 * by_grade["default_flag"][0]


def test_joint_structure_has_the_expected_signs(big_book: DemoPortfolio) -> None:
    # setup
    loans = big_book.loans

    def corr(a: str, b: str) -> float:
        pair = loans.select(a, b).drop_nulls()
        return float(np.corrcoef(pair[a].cast(pl.Float64), pair[b].cast(pl.Float64))[0, 1])

    # run
    figures = {
        "score~rate": corr("credit_score", "interest_rate"),
        "score~income": corr("credit_score", "annual_income"),
        "score~dti": corr("credit_score", "dti"),
        "score~ltv": corr("credit_score", "ltv"),
        "score~default": corr("credit_score", "default_flag"),
        "dti~default": corr("dti", "default_flag"),
        "rate~default": corr("interest_rate", "default_flag"),
    }
    # assert
    assert figures["score~rate"] < -0.3
    assert figures["score~income"] > 0.2
    assert figures["score~dti"] < -0.2
    assert figures["score~ltv"] < -0.1
    assert figures["score~default"] < -0.1
    assert figures["dti~default"] > 0.05
    assert figures["rate~default"] > 0.1


def test_nonlinear_book_shares_loans_but_not_paths(big_book: DemoPortfolio, nonlinear_book: DemoPortfolio) -> None:
    # setup
    statics = [c for c in LOAN_SCHEMA if c != "default_flag"]
    # run
    same_loans = big_book.loans.select(statics).equals(nonlinear_book.loans.select(statics))
    flags_differ = (big_book.loans["default_flag"] != nonlinear_book.loans["default_flag"]).sum()
    # assert
    assert same_loans
    assert flags_differ > 500
    assert abs(nonlinear_book.loans["default_flag"].mean() - 0.08) < 0.01


def test_nonlinear_book_has_a_u_shape_in_age_that_the_linear_book_lacks(
    big_book: DemoPortfolio, nonlinear_book: DemoPortfolio
) -> None:
    # setup
    def rate(book: DemoPortfolio, low: int, high: int) -> float:
        return float(book.loans.filter(pl.col("age").is_between(low, high))["default_flag"].mean())

    # run
    linear_old, linear_mid = rate(big_book, 68, 85), rate(big_book, 40, 55)
    nonlinear_old, nonlinear_mid = rate(nonlinear_book, 68, 85), rate(nonlinear_book, 40, 55)
    # assert
    assert linear_old < linear_mid
    assert nonlinear_old > 2 * nonlinear_mid


def test_oracle_probabilities_belong_to_the_same_book(big_book: DemoPortfolio) -> None:
    # setup
    labels = big_book.loans["default_flag"].to_numpy()
    # run
    oracle = oracle_default_probabilities(20_000, seed=5, target_default_rate=0.08)
    # assert
    assert oracle.shape == (20_000,)
    assert ((oracle >= 0) & (oracle <= 1)).all()
    assert oracle.mean() == pytest.approx(big_book.calibration["expected_rate"], abs=1e-9)
    assert auc(oracle, labels) > 0.75
    assert oracle[labels == 1].mean() > 3 * oracle[labels == 0].mean()


def test_nonlinear_book_leaves_headroom_over_a_segment_model(big_book: DemoPortfolio, nonlinear_book: DemoPortfolio) -> None:
    # setup
    linear_oracle = oracle_default_probabilities(20_000, seed=5, target_default_rate=0.08)
    nonlinear_oracle = oracle_default_probabilities(20_000, seed=5, target_default_rate=0.08, nonlinear=True)
    # run
    linear_gap = segment_headroom(big_book, linear_oracle)
    nonlinear_gap = segment_headroom(nonlinear_book, nonlinear_oracle)
    # assert: a model of each loan's attributes beats product x grade averages by far more in the nonlinear book
    assert nonlinear_gap > 0.08
    assert nonlinear_gap > linear_gap + 0.05


def test_nonlinear_book_front_loads_risk_for_short_employment(big_book: DemoPortfolio, nonlinear_book: DemoPortfolio) -> None:
    # setup
    def roll_rates(book: DemoPortfolio) -> tuple[float, float]:
        perf = book.performance.join(book.loans.select("loan_id", "employment_years"), on="loan_id")
        at_risk = perf.with_columns(prev=pl.col("status").shift(1).over("loan_id").fill_null("current")).filter(
            pl.col("prev") == "current", pl.col("employment_years") < 2
        )
        rolled = pl.col("status") == "dpd30"
        early = at_risk.filter(pl.col("period") <= 3).select(rolled.mean()).item()
        later = at_risk.filter(pl.col("period").is_between(10, 15)).select(rolled.mean()).item()
        return early, later

    # run
    linear_early, linear_later = roll_rates(big_book)
    nonlinear_early, nonlinear_later = roll_rates(nonlinear_book)
    # assert: seasoning makes early months safer, unless the nonlinear book's payment shock applies
    assert linear_early < linear_later
    assert nonlinear_early > 2 * nonlinear_later


def test_other_windows_and_a_single_loan_work() -> None:
    # setup
    months = 6
    # run
    short = generate_portfolio(500, months=months, seed=1, target_default_rate=0.02, start_date=date(2023, 7, 15))
    single = generate_portfolio(1, seed=2)
    # assert
    assert short.performance.group_by("loan_id").len()["len"].max() == months
    assert short.loans["origination_date"].max() < date(2023, 7, 1)
    assert short.loans["origination_date"].min() >= date(2021, 7, 1)
    assert single.loans.height == 1 and single.loans["loan_id"][0] == "L00000001"
    assert 1 <= single.performance.height <= 24


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_loans": 0}, r"n_loans must be >= 1, got 0"),
        ({"n_loans": 2.5}, r"n_loans must be an integer"),
        ({"n_loans": True}, r"n_loans must be an integer"),
        ({"n_loans": 10, "months": 0}, r"months must be between 4 and 360, got 0"),
        ({"n_loans": 10, "months": 3}, r"needs 4 months to go current"),
        ({"n_loans": 10, "months": 361}, r"months must be between 4 and 360"),
        ({"n_loans": 10, "target_default_rate": 0.0}, r"strictly between 0 and 0.5"),
        ({"n_loans": 10, "target_default_rate": 0.5}, r"strictly between 0 and 0.5"),
        ({"n_loans": 10, "target_default_rate": math.nan}, r"strictly between 0 and 0.5"),
        ({"n_loans": 10, "target_default_rate": "8%"}, r"strictly between 0 and 0.5"),
        ({"n_loans": 10, "seed": -1}, r"seed must be >= 0"),
        ({"n_loans": 10, "start_date": "2021-01-01"}, r"start_date must be a datetime.date"),
        ({"n_loans": 10, "nonlinear": "yes"}, r"nonlinear must be True or False"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict, match: str) -> None:
    # setup
    call = dict(kwargs)
    n_loans = call.pop("n_loans")
    # run / assert
    with pytest.raises(InvalidDataError, match=match) as caught:
        generate_portfolio(n_loans, **call)
    assert "Fix:" in str(caught.value)


def test_tenant_config_is_valid_and_fresh_per_call(book: DemoPortfolio) -> None:
    # setup
    from models.tape.tenant import parse_tenant_config

    # run
    parsed = parse_tenant_config(book.tenant_config, tenant="demo")
    first = demo_tenant_config()
    first["privacy"]["k"] = 50
    # assert
    parsed.check_columns(book.loans.columns, tenant="demo", file="loans.parquet")
    assert parsed.target is not None and parsed.target.column == "default_flag"
    assert parsed.id_columns == ["loan_id", "borrower_id"]
    assert parsed.performance.days_past_due == "days_past_due"
    assert demo_tenant_config()["privacy"]["k"] == 5


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_write_landing_round_trips(book: DemoPortfolio, tmp_path: Path, fmt: str) -> None:
    # setup
    folder = tmp_path / "landing" / "demo-bank"
    # run
    written = write_landing(book, folder, fmt=fmt)
    if fmt == "parquet":
        loans = pl.read_parquet(folder / "loans.parquet")
        perf = pl.read_parquet(folder / "performance.parquet")
    else:
        loans = pl.read_csv(folder / "loans.csv", try_parse_dates=True, schema_overrides={"ltv": pl.Float64})
        perf = pl.read_csv(folder / "performance.csv", try_parse_dates=True)
    config = load_tenant_config(folder / "tenant.yaml", tenant="demo-bank")
    upload = find_upload(folder, "demo-bank")
    # assert
    assert written == [folder / f"loans.{fmt}", folder / f"performance.{fmt}", folder / "tenant.yaml"]
    assert loans.equals(book.loans)
    assert perf.equals(book.performance)
    assert config.to_dict()["id_columns"] == ["loan_id", "borrower_id"]
    assert upload.loans == folder / f"loans.{fmt}" and upload.performance == folder / f"performance.{fmt}"
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in written)


def test_write_landing_replaces_an_upload_of_the_other_format(book: DemoPortfolio, tmp_path: Path) -> None:
    # setup
    write_landing(book, tmp_path, fmt="csv")
    # run
    write_landing(book, tmp_path, fmt="parquet")
    # assert
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loans.parquet", "performance.parquet", "tenant.yaml"]


def test_failed_write_keeps_the_previous_upload(book: DemoPortfolio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # setup
    write_landing(book, tmp_path)
    before = (tmp_path / "loans.parquet").read_bytes()
    smaller = DemoPortfolio(book.loans.head(10), book.performance.head(10), book.tenant_config)

    def broken(self: pl.DataFrame, target) -> None:
        target.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", broken)
    # run
    with pytest.raises(OSError, match="disk full"):
        write_landing(smaller, tmp_path)
    # assert
    assert (tmp_path / "loans.parquet").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_write_landing_refuses_unknown_formats_and_files_as_folders(book: DemoPortfolio, tmp_path: Path) -> None:
    # setup
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    # run / assert
    with pytest.raises(InvalidDataError, match=r"unknown landing format 'xlsx'"):
        write_landing(book, tmp_path, fmt="xlsx")
    with pytest.raises(InvalidDataError, match=r"is a link or not a folder"):
        write_landing(book, not_a_folder)
