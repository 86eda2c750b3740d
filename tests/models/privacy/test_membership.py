"""Membership inference on a release, and the AUC bound differential privacy implies."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from models.errors import InvalidDataError
from models.privacy.audit import AuditConfig, run_audit
from models.privacy.membership import dp_auc_bound, dp_tpr_bound, membership_inference
from models.privacy.policy import AuditPolicy, evaluate_policy
from tests.models.privacy.audit_books import book, independent_marginals, schema_of, with_canaries


def test_leaky_generator_copying_half_of_train_is_caught():
    # setup: half the release is copied train rows (with the planted canaries)
    train = with_canaries(book(580, 1), 20)
    holdout = book(1200, 2)
    honest = independent_marginals(train, 300, seed=5)
    leaky = pl.concat([train.sample(300, seed=3, shuffle=True), honest])
    # run
    report = run_audit(leaky, train, holdout, schema_of(train), config=AuditConfig(run_anonymeter=False))
    failed = {r.rule for r in evaluate_policy(report, AuditPolicy()) if not r.passed}
    # assert
    assert report.mia["auc"] > 0.65
    assert report.mia["auc_ci"][0] > 0.6
    assert report.mia["tpr_at_fpr"] > 0.2
    assert report.dcr["exact_match_rate"] > 0.3
    assert report.dcr["share_closer_to_train"] > 0.6
    assert {"exact_match_rate", "dcr_share", "mia_auc"} <= failed


def test_copied_canaries_are_caught_at_the_lowest_false_positive_rate():
    # setup: an honest release except for the 20 planted outliers copied verbatim;
    # train is small enough that every train row is scored as a member
    train = with_canaries(book(180, 1), 20)
    holdout = book(400, 2)
    honest = independent_marginals(train.head(180), 400, seed=7)
    leaky = pl.concat([honest, train.tail(20)])
    schema = schema_of(train)
    # run
    caught = membership_inference(leaky, train, holdout, schema)
    clean = membership_inference(honest, train, holdout, schema)
    # assert: 20 of 200 members sit on a released copy, so the top scores are theirs
    assert caught["n_members"] == 200
    assert caught["fpr_resolvable"] is False and caught["fpr"] == pytest.approx(1 / 200)
    assert caught["tpr_at_fpr"] >= 0.09
    assert clean["tpr_at_fpr"] <= 0.04
    assert any("cannot be resolved" in w for w in caught["warnings"])


def test_honest_generator_gives_an_auc_near_one_half():
    # setup
    train, holdout = book(800, 1), book(1600, 2)
    released = independent_marginals(train, 800, seed=11)
    # run
    mia = membership_inference(released, train, holdout, schema_of(train))
    # assert
    assert 0.42 <= mia["auc"] <= 0.58
    assert mia["auc_ci"][0] <= 0.5 + 0.02 and mia["auc_ci"][1] >= 0.5 - 0.02
    assert set(mia["attacks"]) == {"density_ratio", "distance"}


def test_dp_auc_bound_limits():
    # run / assert
    assert dp_auc_bound(0.0, 0.0) == pytest.approx(0.5)
    assert dp_auc_bound(50.0, 0.0) == pytest.approx(1.0)
    assert dp_auc_bound(math.inf, 0.0) == 1.0
    assert dp_auc_bound(0.0, 1.0) == pytest.approx(1.0)
    assert dp_auc_bound(1.0, 0.0) == pytest.approx(math.e / (1 + math.e))


def test_dp_auc_bound_is_the_area_under_the_tpr_bound_and_grows_with_epsilon_and_delta():
    # setup
    grid = np.linspace(0.0, 1.0, 20_001)
    # run
    numeric = np.trapezoid([dp_tpr_bound(2.0, 1e-3, a) for a in grid], grid)
    by_epsilon = [dp_auc_bound(e, 1e-5) for e in (0.1, 0.5, 1.0, 3.0, 8.0)]
    by_delta = [dp_auc_bound(1.0, d) for d in (0.0, 1e-5, 1e-2, 0.2)]
    # assert
    assert dp_auc_bound(2.0, 1e-3) == pytest.approx(numeric, abs=1e-6)
    assert by_epsilon == sorted(by_epsilon) and len(set(by_epsilon)) == 5
    assert by_delta == sorted(by_delta) and len(set(by_delta)) == 4


@pytest.mark.parametrize(("epsilon", "delta"), [(-1.0, 0.0), (1.0, 1.5), (float("nan"), 0.0)])
def test_dp_auc_bound_refuses_impossible_budgets(epsilon, delta):
    # run / assert
    with pytest.raises(InvalidDataError, match=r"(epsilon|delta) must be.*Fix:"):
        dp_auc_bound(epsilon, delta)
