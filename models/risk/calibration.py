"""From a model's raw log-odds to a PD, and how closely PDs match observed default rates.

A `Calibrator` maps raw scores to PDs (isotonic regression or Platt scaling,
fitted on the synthetic calibration slice). The calibration table by PD decile,
its expected calibration error (ECE) and the ECE's critical value on a holdout
of a given size are what an evaluation reports and the registration gate reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

ISOTONIC_MIN_ROWS = 5_000  # calibration slice size from which "auto" picks isotonic
ISOTONIC_MIN_CLASS = 250
PD_CLIP = 1e-4  # calibrated PDs are kept in [PD_CLIP, 1 - PD_CLIP]
NOISE_DRAWS = 200  # consistency-resampling draws behind `calibration_critical_ece`
NOISE_QUANTILE = 0.95


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass
class Calibrator:
    """A monotone map from a model's raw log-odds to a PD: Platt (`a`, `b`) or isotonic knots (`x`, `y`)."""

    method: Literal["platt", "isotonic"]
    a: float = 1.0
    b: float = 0.0
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def fit(cls, raw: np.ndarray, y: np.ndarray, method: str) -> "Calibrator":
        """Fit on the calibration slice's raw log-odds `raw` and labels `y` (0/1)."""
        positives = int(y.sum())
        smaller = min(positives, y.size - positives)
        if method == "auto":
            method = "isotonic" if y.size >= ISOTONIC_MIN_ROWS and smaller >= ISOTONIC_MIN_CLASS else "platt"
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
            iso.fit(raw, y.astype(np.float64))
            return cls(method="isotonic", x=np.asarray(iso.X_thresholds_, np.float64), y=np.asarray(iso.y_thresholds_, np.float64))
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6, max_iter=1000)
        lr.fit(raw.reshape(-1, 1), y)
        a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
        if not a > 0:
            # A slope at or below zero is a small slice's noise (it shows no positive relation), and it would turn
            # the model's ranking upside down: keep the model's own log-odds (slope 1) and fit the intercept alone,
            # so the PDs average to the slice's default rate (calibration in the large).
            a, b = 1.0, _intercept(raw, y)
        return cls(method="platt", a=a, b=b)

    def apply(self, raw: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            p = np.interp(raw, self.x, self.y)
        else:
            p = _sigmoid(self.a * raw + self.b)
        return np.clip(p, PD_CLIP, 1.0 - PD_CLIP)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "a": self.a, "b": self.b, "knots": int(self.x.size)}


def _intercept(raw: np.ndarray, y: np.ndarray) -> float:
    """The shift `b` with mean(sigmoid(raw + b)) equal to mean(y), clipped away from 0 and 1."""
    from scipy.optimize import brentq

    rate = float(np.clip(y.mean(), PD_CLIP, 1.0 - PD_CLIP))
    return float(brentq(lambda b: float(_sigmoid(raw + b).mean()) - rate, -60.0, 60.0))


def calibration_table(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> list[dict[str, Any]]:
    """Rows sorted by PD cut into `n_bins` equal-count bins: n, mean PD, observed default rate, PD range."""
    n = p.size
    if n == 0:
        return []
    order = np.argsort(p, kind="stable")
    decile = np.empty(n, dtype=np.int64)
    decile[order] = (np.arange(n) * n_bins) // n
    counts = np.bincount(decile, minlength=n_bins)
    sums = np.bincount(decile, weights=p, minlength=n_bins)
    events = np.bincount(decile, weights=y.astype(np.float64), minlength=n_bins)
    rows = []
    for d in range(n_bins):
        if counts[d] == 0:
            continue
        in_bin = p[decile == d]
        rows.append(
            {
                "decile": d + 1,
                "n": int(counts[d]),
                "defaults": int(events[d]),
                "mean_pd": float(sums[d] / counts[d]),
                "observed_rate": float(events[d] / counts[d]),
                "min_pd": float(in_bin.min()),
                "max_pd": float(in_bin.max()),
            }
        )
    return rows


def expected_calibration_error(table: list[dict[str, Any]]) -> float:
    """ECE: the row-weighted mean |mean PD - observed rate| over the calibration table's bins."""
    total = sum(r["n"] for r in table)
    if total == 0:
        return float("nan")
    return float(sum(r["n"] * abs(r["mean_pd"] - r["observed_rate"]) for r in table) / total)


def calibration_critical_ece(
    y: np.ndarray, p: np.ndarray, tolerance: float, *, n_bins: int = 10, draws: int = NOISE_DRAWS, seed: int = 0
) -> float:
    """The decile ECE above which a holdout of this size shows a calibration error beyond `tolerance`.

    A one-sided test of "the model's true calibration error exceeds
    `tolerance`", sized to the holdout. By the triangle inequality a decile's
    observed gap is at most its true gap plus its sampling noise, so a model
    whose true decile ECE is within `tolerance` shows an ECE of at most
    `tolerance` plus the ECE of sampling noise alone. The critical value is
    `tolerance` plus the 95th percentile of that noise, simulated by drawing
    outcomes at the model's own PDs (consistency resampling, Broecker and
    Smith 2007). On 900 loans at a 30 % default rate the noise alone reaches
    about 0.05; as the holdout grows the critical value falls to `tolerance`.
    (Simulating a model off by exactly `tolerance` is not the least favourable
    case: where PDs near 0 clip the offset it is off by less, and its ECE fell
    below the tolerance itself on rare-flag books.)
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    n = p.size
    if n == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    decile = np.empty(n, dtype=np.int64)
    decile[order] = (np.arange(n) * n_bins) // n
    expected = np.bincount(decile, weights=p, minlength=n_bins)
    rng = np.random.default_rng(seed)
    eces = np.empty(draws)
    for i in range(draws):
        events = np.bincount(decile, weights=(rng.random(n) < p).astype(np.float64), minlength=n_bins)
        eces[i] = np.abs(expected - events).sum() / n
    return float(tolerance + np.quantile(eces, NOISE_QUANTILE))
