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
