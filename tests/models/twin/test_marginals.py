"""The copula's marginals: the fast sorts and in-place arithmetic give what the plain numpy forms give."""

from __future__ import annotations

import numpy as np
import pytest

from models.twin.marginals import ContinuousMarginal, LevelMarginal, _stable_argsort


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).normal(size=5000),  # no ties
        np.round(np.random.default_rng(1).normal(size=5000), 1),  # long runs of ties
        np.array([0.0, -0.0, 2.0, 0.0, -0.0, 2.0, 1.0]),  # zeros of both signs are one run
        np.full(40, 3.5),
        np.array([7.0]),
    ],
)
def test_stable_argsort_is_numpys_stable_argsort(values: np.ndarray):
    # run
    order, ordered, new_run, run = _stable_argsort(values)
    # assert
    expected = np.argsort(values, kind="stable")
    np.testing.assert_array_equal(order, expected)
    np.testing.assert_array_equal(np.signbit(ordered), np.signbit(values[expected]))
    np.testing.assert_array_equal(ordered, values[expected])
    np.testing.assert_array_equal(run, np.cumsum(new_run) - 1)
    assert new_run[0] and run[-1] + 1 == np.unique(values).size


def test_continuous_uniforms_spread_ties_in_table_order():
    # setup: the reference is the plain form: stable sort, (left + r (right - left)) / n
    values = np.round(np.random.default_rng(2).lognormal(8, 1, size=3000), -2)
    n = values.size
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    run = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1
    left, right = starts[run], np.append(starts[1:], n)[run]
    expected = np.empty(n)
    expected[order] = np.clip((left + np.random.default_rng(3).random(n) * (right - left)) / n, 0.5 / n, 1 - 0.5 / n)
    # run
    _, u, partition = ContinuousMarginal.fit_transform(values, np.random.default_rng(3), n_knots=64, tail_smoothing=0.5)
    # assert
    np.testing.assert_array_equal(u, expected)
    np.testing.assert_array_equal(partition, np.append(starts, n) / n)


def test_level_uniforms_are_inside_their_interval_and_nan_without_a_level():
    # setup
    marginal = LevelMarginal(["a", "b", None], np.array([0.5, 0.3, 0.2]))
    codes = np.array([0, 1, 2, -1, 1, 0])
    r = np.random.default_rng(4).random(codes.size)
    expected = np.clip(marginal.cum[np.clip(codes, 0, None)] + r * marginal.probs[np.clip(codes, 0, None)], 1e-12, 1 - 1e-12)
    # run
    u = marginal.to_uniform(codes, np.random.default_rng(4))
    complete = marginal.to_uniform(codes[codes >= 0], np.random.default_rng(4))
    # assert
    np.testing.assert_array_equal(u[codes >= 0], expected[codes >= 0])
    assert np.isnan(u[3])
    np.testing.assert_array_equal(complete, (marginal.cum[codes[codes >= 0]] + r[:5] * marginal.probs[codes[codes >= 0]]))


@pytest.mark.parametrize(
    "name, sentinel, regular",
    [
        # Home Credit's DAYS_EMPLOYED: 365243 ("not employed") on about 18% of rows, every other value below 0
        ("days_employed", 365243.0, lambda rng, n: -np.round(rng.gamma(2.0, 1200.0, n))),
        # a bureau score of 9999 ("not available") on a few rows beside 300-850
        ("credit_score", 9999.0, lambda rng, n: np.clip(np.round(rng.normal(700, 50, n)), 300, 850)),
        # a code below the range: -1 for "unknown" beside positive months on book
        ("months_on_book", -1.0, lambda rng, n: np.round(rng.uniform(3, 120, n))),
    ],
)
def test_a_coded_value_beyond_the_others_comes_back_exactly_and_nothing_falls_in_its_gap(name, sentinel, regular):
    # setup: 5,000 rows; the code on 18% of them (DAYS_EMPLOYED) or on 12 rows
    rng = np.random.default_rng(3)
    n = 5000
    share = 0.18 if name == "days_employed" else 12 / n
    values = np.where(rng.random(n) < share, sentinel, regular(rng, n))
    ordinary = values[values != sentinel]
    # run
    marginal, _, _ = ContinuousMarginal.fit_transform(values, np.random.default_rng(4), n_knots=512, tail_smoothing=0.5)
    drawn = marginal.from_uniform(np.random.default_rng(5).random(400_000))
    # assert: the code's share is kept, and no drawn value lies between it and the ordinary range (the straight line
    # from the last ordinary knot to the code put about 0.2% of the rows there: a score of 4,000)
    real_share = np.mean(values == sentinel)
    assert abs(np.mean(drawn == sentinel) - real_share) < 0.1 * real_share + 0.0005
    gap = (drawn > ordinary.max()) & (drawn < sentinel) if sentinel > ordinary.max() else (drawn < ordinary.min()) & (drawn > sentinel)
    assert not gap.any(), f"{gap.mean():.4%} of the drawn {name} fall in the gap"


def test_values_held_by_many_rows_keep_their_share_and_the_rest_keeps_its_spread():
    # setup: loan amounts, half of them round (5,000 ... 25,000), half anything from 1,000 to 40,000
    rng = np.random.default_rng(6)
    n = 5000
    values = np.where(rng.random(n) < 0.5, rng.choice([5000.0, 10000.0, 15000.0, 20000.0, 25000.0], n),
                      np.round(rng.uniform(1000, 40000, n)))
    # run
    marginal, _, _ = ContinuousMarginal.fit_transform(values, np.random.default_rng(7), n_knots=512, tail_smoothing=0.5)
    drawn = marginal.from_uniform(np.random.default_rng(8).random(200_000))
    # assert: each round amount within a tenth of its share, the knots monotone, the whole within KS 0.01
    for amount in (5000.0, 10000.0, 15000.0, 20000.0, 25000.0):
        assert abs(np.mean(drawn == amount) - np.mean(values == amount)) < 0.1 * np.mean(values == amount)
    assert np.all(np.diff(marginal.probs) >= 0) and np.all(np.diff(marginal.values) >= 0)
    assert marginal.probs[0] == 0.0 and marginal.probs[-1] == 1.0
    from scipy.stats import ks_2samp

    assert ks_2samp(drawn, values).statistic < 0.01


def test_under_dp_the_knots_stay_on_the_noised_grid():
    # setup: a column with a code on 18% of rows, and a counts hook as the DP plan gives one (here: no noise)
    rng = np.random.default_rng(9)
    values = np.where(rng.random(4000) < 0.18, 365243.0, -np.round(rng.gamma(2.0, 1200.0, 4000)))
    # run
    marginal, _, _ = ContinuousMarginal.fit_transform(
        values, rng, n_knots=256, tail_smoothing=0.5, counts_hook=lambda counts: counts
    )
    # assert: the atom's exact place is not added; the knots are the grid's 257
    assert marginal.probs.size == 257
