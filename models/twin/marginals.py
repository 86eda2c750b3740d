"""One-dimensional marginals of the Gaussian-copula twin.

A marginal maps a column's values to uniforms on (0, 1) (`fit_transform` /
`to_uniform`, used at fit time to build normal scores) and uniforms back to
values (`from_uniform`, used at sample time). Two kinds cover every modelled
column:

- `ContinuousMarginal`: the empirical distribution of a numeric column, stored
  as a few hundred quantile knots with linear interpolation between them, so
  values between observed ones appear, and with the two extreme knots pushed a
  little outward (tail smoothing) so the real minimum and maximum are not
  reproduced exactly. Declared and observed bounds are enforced on the way back.
- `LevelMarginal`: a finite set of levels (categories, booleans, small-support
  integers, fixed combinations). Each level owns an interval of (0, 1) whose
  width is its probability; the forward map draws a uniform point inside the
  row's interval, so ties never collapse the latent normal.

Both take their counts through a `counts_hook` (the differential-privacy
extension point, identity by default) and serialise to plain JSON plus NumPy
arrays, never pickles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

# Keeps normal scores finite: a uniform of exactly 0 or 1 maps to -inf / +inf.
_U_EPS = 1e-12

CountsHook = Callable[[np.ndarray], np.ndarray]


def _identity(counts: np.ndarray) -> np.ndarray:
    return counts


def checked_counts(raw: np.ndarray, returned: Any, what: str) -> np.ndarray:
    """Validate what a counts hook returned: same shape, finite, non-negative, some mass.

    Raises ValueError naming `what`; the caller wraps it into a typed error.
    """
    out = np.asarray(returned, dtype=np.float64)
    if out.shape != raw.shape:
        raise ValueError(f"{what}: the noise hook returned shape {out.shape}, expected {raw.shape}")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{what}: the noise hook returned non-finite counts")
    out = np.clip(out, 0.0, None)
    if out.sum() <= 0:
        raise ValueError(f"{what}: the noise hook returned counts with no mass")
    return out


class ContinuousMarginal:
    """Empirical marginal of a continuous column as quantile knots.

    Attributes:
        probs: knot probability levels, increasing from 0 to 1.
        values: knot values (non-decreasing), the inverse CDF at `probs`.
        low, high: bounds enforced on sampled values (may be +-inf).
    """

    kind = "continuous"

    def __init__(self, probs: np.ndarray, values: np.ndarray, low: float, high: float) -> None:
        self.probs = np.asarray(probs, dtype=np.float64)
        self.values = np.asarray(values, dtype=np.float64)
        self.low = float(low)
        self.high = float(high)

    @classmethod
    def fit_transform(
        cls,
        values: np.ndarray,
        rng: np.random.Generator,
        *,
        n_knots: int,
        tail_smoothing: float,
        low: float | None = None,
        high: float | None = None,
        counts_hook: CountsHook = _identity,
        name: str = "",
        pile_up: int = 5,
    ) -> tuple["ContinuousMarginal", np.ndarray, np.ndarray]:
        """Fit knots to the non-null `values` (1-d float array, no NaN); return it, their uniforms and tie partition.

        The tie partition is the (0, 1) boundaries of the runs of equal values
        (the uniforms are spread inside each run), needed to undo the
        attenuation that spreading causes in correlations.

        The uniforms are the empirical CDF with ties broken uniformly at random
        (a tied run of values spreads evenly over its probability mass), from one
        sort of the column. `low` / `high` are declared bounds; when absent, a
        column that was never negative stays non-negative (amounts, counts) and
        one never positive stays non-positive, and an extreme value shared by at
        least `pile_up` rows is a cap (a score of 850, an LTV of 100) and stays
        the bound. Elsewhere tail smoothing widens the extreme knots by
        `tail_smoothing` times the width of the outermost percentile.
        """
        n = values.size
        order, ordered, new_run, run = _stable_argsort(values)
        starts = np.flatnonzero(new_run)
        ends = np.append(starts[1:], n)
        left, right = starts[run], ends[run]
        # (left + r * (right - left)) / n in place, bit for bit: table-sized temporaries cost more than the arithmetic.
        u_sorted = rng.random(n)
        u_sorted *= right - left
        u_sorted += left
        u_sorted /= n
        np.clip(u_sorted, 0.5 / n, 1.0 - 0.5 / n, out=u_sorted)
        u = np.empty(n)
        u[order] = u_sorted

        m = int(min(n_knots, max(n, 2)))
        probs = np.linspace(0.0, 1.0, m + 1)
        knots = _sorted_quantile(ordered, probs)
        # The DP hook sees how many training rows fall between consecutive knots;
        # the knot levels are rebuilt from the (possibly noisy) counts.
        counts = np.diff(probs) * n
        noisy = checked_counts(counts, counts_hook(counts.copy()), f"marginal of '{name}'")
        probs = np.concatenate([[0.0], np.cumsum(noisy) / noisy.sum()])
        probs[-1] = 1.0
        lo_q, hi_q = _sorted_quantile(ordered, np.array([0.01, 0.99]))
        knots[0] = knots[0] - tail_smoothing * (lo_q - ordered[0])
        knots[-1] = knots[-1] + tail_smoothing * (ordered[-1] - hi_q)
        eff_low = -np.inf if low is None else float(low)
        eff_high = np.inf if high is None else float(high)
        if low is None and ordered[0] >= 0:
            eff_low = 0.0
        if high is None and ordered[-1] <= 0:
            eff_high = 0.0
        if ends[0] >= pile_up:
            eff_low = max(eff_low, float(ordered[0]))
        if n - starts[-1] >= pile_up:
            eff_high = min(eff_high, float(ordered[-1]))
        knots = np.clip(knots, eff_low, eff_high)
        if counts_hook is _identity:  # under DP the knots stay on the noised grid: an atom's place is exact
            probs, knots = _with_atoms(probs, knots, ordered, starts, ends, pile_up, m)
        partition = np.append(starts, n) / n
        return cls(probs, knots, eff_low, eff_high), u, partition

    def from_uniform(self, u: np.ndarray) -> np.ndarray:
        """Inverse CDF by linear interpolation between knots, clipped to the bounds."""
        out = np.interp(u, self.probs, self.values)
        return np.clip(out, self.low, self.high)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "low": _enc_float(self.low), "high": _enc_float(self.high)}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"probs": self.probs, "values": self.values}

    @classmethod
    def from_json(cls, data: dict[str, Any], arrays: dict[str, np.ndarray]) -> "ContinuousMarginal":
        probs, values = arrays["probs"], arrays["values"]
        if probs.ndim != 1 or probs.shape != values.shape or probs.size < 2:
            raise ValueError("knot arrays must be 1-d, of equal length, with at least two knots")
        if not (np.all(np.isfinite(probs)) and np.all(np.isfinite(values))):
            raise ValueError("knot arrays must be finite")
        if probs[0] != 0.0 or probs[-1] != 1.0 or np.any(np.diff(probs) < 0) or np.any(np.diff(values) < 0):
            raise ValueError("knots must be non-decreasing with probabilities from 0 to 1")
        return cls(probs, values, _dec_float(data["low"]), _dec_float(data["high"]))


class LevelMarginal:
    """A finite set of levels, each owning an interval of (0, 1).

    Attributes:
        levels: the level values in interval order (JSON-compatible scalars or
            lists for combinations; None is the missing level).
        probs: the probability of each level (sums to 1), in the same order.
    """

    kind = "levels"

    def __init__(self, levels: list[Any], probs: np.ndarray) -> None:
        self.levels = list(levels)
        self.probs = np.asarray(probs, dtype=np.float64)
        self.cum = np.concatenate([[0.0], np.cumsum(self.probs)])
        self.cum[-1] = 1.0

    @classmethod
    def from_counts(
        cls,
        levels: list[Any],
        counts: np.ndarray,
        *,
        counts_hook: CountsHook = _identity,
        name: str = "",
    ) -> "LevelMarginal":
        """Build from raw counts, passing them through the DP counts hook first."""
        counts = np.asarray(counts, dtype=np.float64)
        noisy = checked_counts(counts, counts_hook(counts.copy()), f"levels of '{name}'")
        return cls(levels, noisy / noisy.sum())

    def reordered(self, order: np.ndarray) -> "LevelMarginal":
        """The same levels with their intervals laid out in `order`."""
        return LevelMarginal([self.levels[i] for i in order], self.probs[order])

    def to_uniform(self, codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A uniform point inside each row's level interval; NaN where code < 0."""
        valid = codes >= 0
        complete = bool(valid.all())
        safe = codes if complete else np.where(valid, codes, 0)
        # In place (cum + r * p, bit for bit): the table-sized temporaries cost more than the arithmetic.
        u = rng.random(codes.size)
        u *= self.probs[safe]
        u += self.cum[safe]
        np.clip(u, _U_EPS, 1.0 - _U_EPS, out=u)
        if not complete:
            u[~valid] = np.nan
        return u

    def from_uniform(self, u: np.ndarray) -> np.ndarray:
        """The level index whose interval holds each uniform."""
        idx = np.searchsorted(self.cum[1:-1], u, side="right")
        return idx.astype(np.int64, copy=False)

    def intervals(self, allowed: np.ndarray) -> np.ndarray:
        """Merged (k, 2) u-intervals covering the levels where `allowed` is True."""
        spans: list[list[float]] = []
        for i in np.flatnonzero(allowed):
            lo, hi = self.cum[i], self.cum[i + 1]
            if hi <= lo:
                continue
            if spans and abs(spans[-1][1] - lo) < 1e-15:
                spans[-1][1] = hi
            else:
                spans.append([lo, hi])
        return np.asarray(spans, dtype=np.float64).reshape(-1, 2)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "levels": self.levels}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"probs": self.probs}

    @classmethod
    def from_json(cls, data: dict[str, Any], arrays: dict[str, np.ndarray]) -> "LevelMarginal":
        probs = arrays["probs"]
        levels = data["levels"]
        if not isinstance(levels, list) or probs.ndim != 1 or probs.size != len(levels) or not levels:
            raise ValueError("level list and probabilities must be non-empty and of equal length")
        if not np.all(np.isfinite(probs)) or np.any(probs < 0) or abs(float(probs.sum()) - 1.0) > 1e-6:
            raise ValueError("level probabilities must be non-negative and sum to 1")
        return cls(levels, probs)


def _with_atoms(
    probs: np.ndarray, knots: np.ndarray, ordered: np.ndarray, starts: np.ndarray, ends: np.ndarray, pile_up: int, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """The knots with each atom of the column laid out exactly: its value over its whole mass, and no value between
    it and its neighbours.

    An atom is a value held by many rows: one that holds at least a knot interval's share of them, or the lowest
    or highest value when it is held by at least `pile_up` rows. Real tapes code "not available" with such values
    beyond the range of the others (Home Credit's DAYS_EMPLOYED of 365243 beside values below 0; a credit score
    of 9999 beside 300-850; a DTI of 999), and hold round amounts many times. On the grid of equal-probability
    knots alone, the inverse CDF ran from the last ordinary value to the atom in a straight line across one knot
    interval, so a share of the synthetic rows got values no borrower has (a score of 4,000; 150,000 days
    employed) and the atom itself lost that share. Here the inverse CDF steps: it holds the previous value up to
    the atom's first probability, the atom's value over its mass, and the next value right after it. `ordered` is
    the sorted column, `starts`/`ends` its runs of equal values; the grid knots inside an atom's mass are dropped.
    """
    n = ordered.size
    sizes = ends - starts
    chosen = np.flatnonzero(sizes >= max(pile_up, n / m))
    if chosen.size > m:  # a column of few, all-common values is a discrete one: at most one atom per grid knot
        chosen = np.sort(chosen[np.argsort(-sizes[chosen], kind="stable")[:m]])
    extremes = [i for i in (0, sizes.size - 1) if sizes[i] >= pile_up]
    chosen = np.union1d(chosen, np.asarray(extremes, dtype=np.int64))
    if chosen.size == 0:
        return probs, knots
    lo, hi = starts[chosen] / n, ends[chosen] / n
    value = ordered[starts[chosen]]
    before = ordered[np.maximum(starts[chosen] - 1, 0)]
    after = ordered[np.minimum(ends[chosen], n - 1)]
    # The grid's own knots: none inside an atom's mass, and none in the gaps beside it. The sample quantile
    # interpolates between neighbouring rows, so a grid knot just before an atom lay between it and the previous
    # value: the true inverse CDF is at most `before` there, and at least `after` past the atom.
    grid = knots.copy()
    inside = np.zeros(probs.size, dtype=bool)
    for a, b, low, high in zip(lo, hi, before, after):
        inside |= (probs >= a) & (probs <= np.nextafter(b, 2.0))
        grid = np.where(probs < a, np.minimum(grid, low), grid)
        grid = np.where(probs > b, np.maximum(grid, high), grid)
    keep_before, keep_after = lo > 0.0, hi < 1.0
    first = np.where(keep_before, np.nextafter(lo, 2.0), 0.0)
    new_probs = np.concatenate([
        probs[~inside], lo[keep_before], first, hi, np.nextafter(hi[keep_after], 2.0),
    ])
    new_values = np.concatenate([grid[~inside], before[keep_before], value, value, after[keep_after]])
    np.clip(new_probs, 0.0, 1.0, out=new_probs)
    pairs = np.unique(np.stack([new_probs, new_values], axis=1), axis=0)  # sorted by probability, then value
    # a probability with two values (a grid knot where an atom starts): keep the first, which the step holds
    first = np.append(True, np.diff(pairs[:, 0]) > 0)
    pairs = pairs[first]
    return pairs[:, 0], np.maximum.accumulate(pairs[:, 1])


def _stable_argsort(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`np.argsort(values, kind="stable")`, the sorted values, where each run of equal values starts, and its run.

    Numpy's stable sort of floats is a merge sort; its default sort is a
    vectorised quicksort several times faster. Runs of equal values then get
    their rows back in table order by sorting one integer key, run * n + row
    (all keys differ, so that sort needs no stability either).
    """
    n = values.size
    order = np.argsort(values)
    ordered = values[order]
    new_run = np.empty(n, dtype=bool)
    new_run[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new_run[1:])
    run = np.cumsum(new_run) - 1
    if run[-1] + 1 < n:
        base = run * n
        order = base + order
        order.sort()
        order -= base
        ordered = values[order]  # equal values may still differ in sign (0.0, -0.0): as the stable sort has them
    return order, ordered, new_run, run


def _sorted_quantile(ordered: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Linear-interpolation quantiles of an already sorted array (numpy's default method)."""
    pos = probs * (ordered.size - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, ordered.size - 1)
    frac = pos - lo
    return ordered[lo] + frac * (ordered[hi] - ordered[lo])


def _enc_float(x: float) -> float | str:
    """JSON has no infinities; encode them as strings."""
    if np.isposinf(x):
        return "inf"
    if np.isneginf(x):
        return "-inf"
    return float(x)


def _dec_float(x: Any) -> float:
    if x == "inf":
        return float("inf")
    if x == "-inf":
        return float("-inf")
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ValueError(f"expected a number or 'inf'/'-inf', got {x!r}")
    return float(x)
