"""Conditional fidelity: per-segment default rates and transition rows, honest about sampling noise."""

from __future__ import annotations

import math

import polars as pl
import pytest

from models.errors import InvalidDataError
from models.sequences.conditional import (
    FAIL,
    INCONCLUSIVE,
    NOT_MEASURED,
    PASS,
    conditional_fidelity,
    discover_dimensions,
    wilson_interval,
)
from tests.models.cascade_books import make_book, simulate_histories


@pytest.fixture(scope="module")
def book():
    return make_book(6000, months=12, seed=1)


def verdict_of(fidelity, dimension: str, segment: str) -> str:
    row = fidelity.segments.filter((pl.col("dimension") == dimension) & (pl.col("segment") == segment))
    return row.get_column("verdict").item(0)


def test_dimensions_are_found_by_the_lenders_names_not_ours_only(book):
    # setup: the same loans spelled another lender's way, plus a product column and an id that looks like a grade
    loans, _, schema = book
    renamed = loans.rename({"grade": "CreditGrade", "dti": "DebtToIncomePct"}).with_columns(
        pl.when(pl.col("term_months") > 12).then(pl.lit("auto")).otherwise(pl.lit("card")).alias("ProdType"),
    )
    # run
    ours = discover_dimensions(loans, schema)
    theirs = discover_dimensions(renamed)
    chosen = discover_dimensions(loans, schema, columns={"grade": "term_months"})
    # assert
    assert [(d.name, d.column, d.kind) for d in ours] == [("grade", "grade", "categorical"), ("dti", "dti", "bands")]
    assert [(d.name, d.column) for d in theirs] == [("grade", "CreditGrade"), ("dti", "DebtToIncomePct"),
                                                    ("product", "ProdType")]
    assert len(ours[1].edges) == 3 and ours[1].edges == sorted(ours[1].edges)
    assert chosen[0].column == "term_months" and chosen[0].kind == "categorical"
    with pytest.raises(InvalidDataError, match="'rating'.*not in the loans table"):
        discover_dimensions(loans, schema, columns={"grade": "rating"})


def test_wilson_interval_matches_the_textbook_values():
    # run / assert: 0 of 10 and 5 of 10 (Wilson 1927; Agresti & Coull 1998)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_a_second_draw_of_the_true_process_fails_no_segment(book):
    # setup: new histories of the same loans under the dynamics that made the real ones
    loans, perf, schema = book
    synthetic = simulate_histories(loans, months=12, seed=101)
    # run
    fidelity = conditional_fidelity(loans, perf, synthetic, schema=schema)
    # assert
    assert fidelity.failures == []
    assert fidelity.verdicts()["transition_rows"][PASS] >= 4
    # 6,000 loans hold too few defaults to resolve 10% relative in any segment: nothing failed, nothing proven
    assert fidelity.verdicts()["default_rate"][PASS] == 0 and not fidelity.passed
    grades = fidelity.segments.filter(pl.col("dimension") == "grade")
    assert grades.get_column("segment").to_list() == ["A", "B", "C"]
    assert (grades.get_column("real_loans").sum()) == fidelity.segments.filter(pl.col("dimension") == "book").item(0, "real_loans")


def test_a_wrong_low_risk_segment_fails_its_own_check_only(book):
    # setup: grade A misses payments a fifth as often as it should (the low-risk drift seen on a lender's book)
    loans, perf, schema = book
    synthetic = simulate_histories(loans, months=12, seed=101, miss_scale={"A": 0.2})
    # run
    fidelity = conditional_fidelity(loans, perf, synthetic, schema=schema)
    # assert
    assert verdict_of(fidelity, "grade", "A") == FAIL
    assert verdict_of(fidelity, "grade", "B") != FAIL and verdict_of(fidelity, "grade", "C") != FAIL
    assert not fidelity.passed
    assert any(f.startswith("grade A: 12-month default rate") for f in fidelity.failures)


def test_a_wrong_cure_rate_fails_the_segments_transition_rows(book):
    # setup: grade C cures from arrears at 30% of its real rate
    loans, perf, schema = book
    synthetic = simulate_histories(loans, months=12, seed=101, cure_scale={"C": 0.3})
    # run
    fidelity = conditional_fidelity(loans, perf, synthetic, schema=schema)
    rows = fidelity.rows.filter(pl.col("dimension") == "grade")
    # assert
    failed = rows.filter(pl.col("verdict") == FAIL)
    assert set(failed.get_column("segment").to_list()) == {"C"}
    assert set(failed.get_column("state").to_list()) == {"dpd30", "dpd60"}
    assert (failed.get_column("max_abs_diff") > 0.1).all()


def test_thin_segments_are_inconclusive_or_not_measured_never_passed():
    # setup: a small book compared with its own histories, so no difference at all
    loans, perf, schema = make_book(300, months=12, seed=5)
    # run
    fidelity = conditional_fidelity(loans, perf, perf, schema=schema)
    # assert: identical books, yet a thin segment's default rate is not a pass, and its interval is reported
    grades = fidelity.segments.filter(pl.col("dimension") == "grade")
    assert set(grades.get_column("verdict").to_list()) <= {INCONCLUSIVE, NOT_MEASURED}
    thin = grades.filter(pl.col("verdict") == INCONCLUSIVE).row(0, named=True)
    assert thin["real_cdr_low"] < thin["real_cdr"] < thin["real_cdr_high"]
    assert "95% interval" in thin["reason"] and "too few defaults" in thin["reason"]
    few = fidelity.rows.filter(pl.col("real_transitions") < 30)
    assert few.height and (few.get_column("verdict") == NOT_MEASURED).all()
    assert fidelity.failures == []


def test_synthetic_copies_under_new_ids_are_mapped_to_their_segments(book):
    # setup: three synthetic histories per loan, under new ids
    loans, perf, schema = book
    copies = [loans.with_columns(pl.format("S{}-{}", pl.lit(k), pl.col("loan_id")).alias("loan_id")) for k in range(3)]
    synthetic = pl.concat([
        simulate_histories(copy, months=12, seed=200 + k) for k, copy in enumerate(copies)
    ])
    # run
    fidelity = conditional_fidelity(loans, perf, synthetic, synth_loans=pl.concat(copies), schema=schema)
    # assert
    book_row = fidelity.segments.filter(pl.col("dimension") == "book").row(0, named=True)
    assert book_row["synthetic_loans"] == 3 * book_row["real_loans"]
    assert fidelity.failures == []
    with pytest.raises(InvalidDataError, match="no synthetic history belongs to a loan"):
        conditional_fidelity(loans, perf, synthetic, schema=schema)


def test_book_level_rolls_vintages_and_time_to_default_are_compared(book):
    # setup
    loans, perf, schema = book
    synthetic = simulate_histories(loans, months=12, seed=101, cure_scale={"A": 0.3, "B": 0.3, "C": 0.3})
    # run
    good = conditional_fidelity(loans, perf, simulate_histories(loans, months=12, seed=101), schema=schema).book_summary
    bad = conditional_fidelity(loans, perf, synthetic, schema=schema).book_summary
    # assert
    assert good["vintage"]["compared"] and good["vintage"]["vintages"] >= 4
    assert good["roll_rates_max_abs_diff"] < 0.05 < bad["roll_rates_max_abs_diff"]
    assert bad["roll_rates"]["cure dpd30->current"]["synthetic"] < bad["roll_rates"]["cure dpd30->current"]["real"]
    assert bad["time_to_default"]["synthetic_default_share"] > 1.5 * bad["time_to_default"]["real_default_share"]
    assert good["vintage"]["max_abs_diff"] < bad["vintage"]["max_abs_diff"]
    assert math.isfinite(good["time_to_default"]["real_mean"])


def test_result_serialises_to_plain_json(book):
    # setup
    import json

    loans, perf, schema = book
    fidelity = conditional_fidelity(loans, perf, simulate_histories(loans, months=12, seed=101), schema=schema)
    # run
    data = json.loads(json.dumps(fidelity.to_dict()))
    # assert
    assert data["verdicts"] == fidelity.verdicts()
    assert {d["name"] for d in data["dimensions"]} == {"grade", "dti"}
    assert len(data["segments"]) == fidelity.segments.height


def test_a_resolvable_default_rate_is_judged_against_its_target(book):
    # setup: a 30% target is wider than the chance band of the whole book and of grade C
    loans, perf, schema = book
    good = simulate_histories(loans, months=12, seed=101)
    bad = simulate_histories(loans, months=12, seed=101, miss_scale={"C": 2.0})
    # run
    fine = conditional_fidelity(loans, perf, good, schema=schema, cdr_threshold=0.3)
    off = conditional_fidelity(loans, perf, bad, schema=schema, cdr_threshold=0.3)
    # assert
    assert verdict_of(fine, "book", "all") == PASS and verdict_of(fine, "grade", "C") == PASS
    assert verdict_of(off, "grade", "C") == FAIL
    assert any(f.startswith("grade C") and "beyond the 30% target" in f for f in off.failures)
