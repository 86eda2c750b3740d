"""Distance to closest record: the mixed-type distance, exact matches and their coincidences."""

from __future__ import annotations

import math

import polars as pl
import pytest

from models.errors import InvalidDataError
from models.privacy.distance import distance_to_closest_record
from models.privacy.policy import AuditPolicy, evaluate_policy
from models.tape.schema import infer_schema
from models.twin.copula import GaussianCopulaTwin
from tests.models.privacy.audit_books import REAL_BOOKS, audit_report, book, real_tape, schema_of


def test_exact_copies_of_train_are_all_exact_matches_and_closer_to_train():
    # setup
    train, holdout = book(300, 1), book(300, 2)
    # run
    dcr = distance_to_closest_record(train, train, holdout, schema_of(train))
    # assert
    assert dcr["exact_match_rate"] == 1.0
    assert dcr["exact_matches"] == 300
    assert dcr["share_closer_to_train"] == 1.0
    assert dcr["exact_match_rate_holdout"] == 0.0
    assert dcr["median_dcr_train"] == 0.0


def test_independent_draws_are_as_close_to_train_as_to_holdout():
    # setup
    train, holdout, released = book(600, 1), book(600, 2), book(600, 3)
    # run
    dcr = distance_to_closest_record(released, train, holdout, schema_of(train))
    # assert
    assert 0.42 <= dcr["share_closer_to_train"] <= 0.58
    assert dcr["share_ci"][0] < 0.5 < dcr["share_ci"][1]
    assert dcr["exact_match_rate"] == 0.0
    assert dcr["nndr_median_train"] == pytest.approx(dcr["nndr_median_holdout"], abs=0.1)


def test_the_shares_spread_under_random_membership_is_the_spread_chance_gives():
    # setup: released, train and holdout rows all drawn from one book (no leak), 40 times afresh
    import numpy as np

    schema = schema_of(book(300, 0))
    shares, reported = [], []
    for draw in range(40):
        train, holdout, released = book(300, 100 + 3 * draw), book(300, 101 + 3 * draw), book(300, 102 + 3 * draw)
        # run
        dcr = distance_to_closest_record(released, train, holdout, schema, seed=draw)
        shares.append(dcr["share_closer_to_train"])
        reported.append(dcr["share_null_sd"])
    # assert: the reported spread (from one draw's membership swaps) is the spread the share shows across draws
    # (with 40 draws the empirical SD is known to about +-11 %), and no share is unusually high for chance
    empirical, typical = float(np.std(shares, ddof=1)), float(np.median(reported))
    assert 0.7 * empirical <= typical <= 1.35 * empirical, (empirical, typical)
    assert 0.48 <= float(np.mean(shares)) <= 0.52


def test_a_copying_release_is_far_beyond_chance_and_the_rule_quotes_its_spread():
    # setup: a release that copies its training rows
    train, holdout = book(300, 1), book(300, 2)
    # run
    dcr = distance_to_closest_record(train, train, holdout, schema_of(train))
    rule = next(r for r in evaluate_policy(audit_report(dcr=dcr), AuditPolicy()) if r.rule == "dcr_share")
    # assert: the share is judged against the limit, and the message says how far chance alone would move it
    assert rule.verdict == "fail" and dcr["share_p_value"] < 1e-6
    assert "chance alone moves it by" in rule.message


def test_exact_matches_are_found_in_the_whole_train_split_not_only_its_sample():
    # setup: 60 train rows copied, ages generalised; the audit samples 50 of 400 train rows
    train, holdout = book(400, 1), book(400, 2)
    copies = train.sample(60, seed=4).with_columns(
        pl.when(pl.col("age") < 45).then(pl.lit("< 45")).otherwise(pl.lit(">= 45")).alias("age")
    )
    # run
    dcr = distance_to_closest_record(copies, train, holdout, schema_of(train), sample_size=50)
    # assert
    assert dcr["exact_match_scope"] == "records unique in the tape, whole splits"
    assert dcr["n_train"] == 50
    assert dcr["exact_match_rate"] == 1.0
    assert dcr["exact_match_rate_holdout"] == 0.0


def test_coincidental_matches_on_a_real_zero_inflated_tape_are_not_copies():
    # setup: real Taiwan card data (BillApril is 0 for one loan in eight, AGE an integer): an honest twin matches
    # unique train records by coincidence about as often, record for record, as holdout ones
    train, holdout, schema = real_tape(*REAL_BOOKS["credit-cards-2000"])
    twin = GaussianCopulaTwin().fit(train, schema).sample(train.height, seed=3)
    # 5 % of the rows copied: on this tape coincidences run at about 0.4 %, so a handful of copies cannot be told
    # from them by counting matches (the distance and membership rules judge wholesale copying)
    leaky = pl.concat([twin.head(train.height - 100), train.head(100)])
    # run
    honest = distance_to_closest_record(twin, train, holdout, schema)
    copied = distance_to_closest_record(leaky, train, holdout, schema)
    # assert: the honest twin's matches are explained by the holdout's; 100 copied rows are not
    assert honest["exact_matches"] > 0 and honest["exact_matches_holdout"] > 0
    assert honest["exact_copy_rate"] == 0.0
    assert copied["exact_copy_rate"] > 0.0
    assert not next(r for r in evaluate_policy(audit_report(dcr=copied), AuditPolicy()) if r.rule == "exact_match_rate").passed


def test_ties_count_one_half_and_duplicates_are_removed_first():
    # setup: the released row equals a row present in both train and holdout
    train = pl.DataFrame({"loan_id": ["a", "b", "b2"], "grade": ["A", "B", "B"], "region": ["n", "s", "s"]})
    holdout = pl.DataFrame({"loan_id": ["c", "d"], "grade": ["A", "C"], "region": ["n", "e"]})
    released = pl.DataFrame({"loan_id": ["x", "y"], "grade": ["A", "A"], "region": ["n", "n"]})
    schema = infer_schema(train, id_columns=["loan_id"])
    # run
    dcr = distance_to_closest_record(released, train, holdout, schema)
    # assert
    assert dcr["n_released"] == 1 and dcr["n_train"] == 2 and dcr["n_holdout"] == 2
    assert dcr["ties"] == 1
    assert dcr["share_closer_to_train"] == 0.5
    # a value combination two borrowers share (one in train, one in the holdout) discloses neither: no copy
    assert dcr["exact_match_rate"] == 0.0 and dcr["exact_match_rate_holdout"] == 0.0
    assert dcr["exact_match_rate_any_sampled_train_row"] == 1.0


def test_generalised_labels_are_at_distance_zero_from_the_values_they_cover():
    # setup: real ages 40 and 50 give an IQR of 5
    train = pl.DataFrame({"loan_id": ["t"], "age": [40], "region": ["north"]})
    holdout = pl.DataFrame({"loan_id": ["h"], "age": [50], "region": ["south"]})
    released = pl.DataFrame({"loan_id": ["r"], "age": ["[30, 45)"], "region": ["north|east"]})
    schema = infer_schema(train, id_columns=["loan_id"])
    # run
    dcr = distance_to_closest_record(released, train, holdout, schema)
    # assert: 40 lies in [30, 45) and north in the group; 50 is 5 (one IQR) past 45 and south is not in it
    assert dcr["median_dcr_train"] == 0.0
    assert dcr["median_dcr_holdout"] == pytest.approx(math.sqrt(2.0))


def test_open_ranges_suppressed_values_and_hashed_groups_cover_real_values():
    # setup
    train = pl.DataFrame({"loan_id": ["t"], "age": [60], "income": [10.0], "region": ["north"]})
    holdout = pl.DataFrame({"loan_id": ["h"], "age": [20], "income": [30.0], "region": ["west"]})
    released = pl.DataFrame({"loan_id": ["r"], "age": [">= 45"], "income": ["*"], "region": ["13 values #0badcafe"]})
    groups = {"region": {"kind": "group", "groups": {"13 values #0badcafe": ["north", "south"]}}}
    schema = infer_schema(train, id_columns=["loan_id"])
    # run
    with_groups = distance_to_closest_record(released, train, holdout, schema, generalisations=groups)
    without = distance_to_closest_record(released, train, holdout, schema)
    # assert: age 20 is 25 years (IQR 20) below 45; income "*" covers everything
    assert with_groups["median_dcr_train"] == 0.0
    assert with_groups["median_dcr_holdout"] == pytest.approx(math.sqrt(1.25**2 + 1.0))
    assert without["median_dcr_train"] == pytest.approx(1.0)


def test_nulls_cost_nothing_between_nulls_and_one_against_a_value():
    # setup
    train = pl.DataFrame({"loan_id": ["t1", "t2"], "ltv": [None, 0.5], "grade": ["A", "B"]})
    holdout = pl.DataFrame({"loan_id": ["h1", "h2"], "ltv": [0.9, 0.7], "grade": ["A", "C"]})
    released = pl.DataFrame({"loan_id": ["r"], "ltv": [None], "grade": ["A"]}, schema=train.schema)
    schema = infer_schema(train, id_columns=["loan_id"])
    # run
    dcr = distance_to_closest_record(released, train, holdout, schema)
    # assert
    assert dcr["median_dcr_train"] == 0.0
    assert dcr["median_dcr_holdout"] == pytest.approx(1.0)


def test_a_released_value_that_is_neither_number_nor_range_is_refused_with_its_column():
    # setup
    train, holdout = book(20, 1), book(20, 2)
    released = book(20, 3).with_columns(pl.lit("young").alias("age"))
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'age'.*neither a number nor a range label.*Fix:"):
        distance_to_closest_record(released, train, holdout, schema_of(train), tenant="acme")
