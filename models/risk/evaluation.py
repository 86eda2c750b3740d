"""How a PD model scores on labelled loans, and whether it may be registered.

An `Evaluation` gathers discrimination (AUC with DeLong's 95 % interval, Gini,
KS), the Brier score, calibration (the table by PD decile, its ECE and, on the
real holdout, the ECE's critical value) and the band distribution.
`registration_gate` judges a model on its real-holdout evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.quality.metrics import ks_statistic as two_sample_ks
from models.risk.calibration import calibration_critical_ece, calibration_table, expected_calibration_error
from models.risk.config import BandSpec, RiskConfig

MIN_HOLDOUT_ROWS = 20  # real holdout rows needed to report TSTR figures
Z_95 = 1.959963984540054  # two-sided 95 % normal quantile, for the AUC interval


def auc_score(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn's; ties count half), NaN when `y` holds one class only."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, p))


def ks_statistic(y: np.ndarray, p: np.ndarray) -> float:
    """Kolmogorov-Smirnov: the largest gap between the PD distributions of defaulters and others
    (the two-sample statistic of `models.quality.metrics`), NaN with one class only."""
    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    p = np.asarray(p, dtype=np.float64)
    return two_sample_ks(p[y], p[~y])


def auc_interval(y: np.ndarray, p: np.ndarray, z: float = Z_95) -> tuple[float, float, float]:
    """The AUC with its two-sided confidence interval by DeLong's variance: ``(auc, low, high)``.

    DeLong et al. (1988): each defaulter's and each non-defaulter's share of
    the pairs it wins (its placement value, from mid-ranks, so O(n log n)) has
    a variance; the AUC's is their sum over the class sizes. The interval is
    clipped to [0, 1]; NaNs with one class only.
    """
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=np.float64)
    pos, neg = p[y], p[~y]
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        return float("nan"), float("nan"), float("nan")
    combined = rankdata(np.concatenate([pos, neg]))
    v10 = (combined[:m] - rankdata(pos)) / n  # per defaulter: the share of non-defaulters it outranks
    v01 = 1.0 - (combined[m:] - rankdata(neg)) / m  # per non-defaulter: the share of defaulters above it
    auc = float((combined[:m].sum() - m * (m + 1) / 2) / (m * n))  # Mann-Whitney: the mean of v10, summed exactly
    variance = (v10.var(ddof=1) / m if m > 1 else 0.0) + (v01.var(ddof=1) / n if n > 1 else 0.0)
    half = z * math.sqrt(max(variance, 0.0))
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def assign_bands(p: np.ndarray, bands: list[BandSpec] | list[dict[str, Any]]) -> np.ndarray:
    """Band index of each PD: the first band whose max_pd is at least the PD."""
    edges = np.asarray([b.max_pd if isinstance(b, BandSpec) else b["max_pd"] for b in bands], np.float64)
    return np.minimum(np.searchsorted(edges, p, side="left"), edges.size - 1)


def band_distribution(p: np.ndarray, bands: list[dict[str, Any]], y: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Rows, share and mean PD per band (and the observed default rate when labels `y` are given)."""
    idx = assign_bands(p, bands)
    rows = []
    for k, band in enumerate(bands):
        mask = idx == k
        n = int(mask.sum())
        row = {"band": band["name"], "max_pd": band["max_pd"], "n": n, "share": n / max(p.size, 1)}
        row["mean_pd"] = float(p[mask].mean()) if n else None
        if y is not None:
            row["observed_rate"] = float(y[mask].mean()) if n else None
        rows.append(row)
    return rows


@dataclass
class Evaluation:
    """How one model scores on one labelled set; `evaluable` False (with `reason`) when figures cannot exist."""

    evaluable: bool
    n: int
    defaults: int
    reason: str | None = None
    auc: float | None = None
    gini: float | None = None
    ks: float | None = None
    brier: float | None = None
    ece: float | None = None
    calibration: list[dict[str, Any]] = field(default_factory=list)
    bands: list[dict[str, Any]] = field(default_factory=list)
    auc_low: float | None = None
    auc_high: float | None = None
    ece_tolerance: float | None = None
    ece_critical: float | None = None

    @classmethod
    def of(
        cls, y: np.ndarray, p: np.ndarray, bands: list[dict[str, Any]], *, what: str,
        ece_tolerance: float | None = None, seed: int = 0,
    ) -> "Evaluation":
        """Figures of PDs `p` against labels `y`: AUC with its 95 % interval, ECE, and (with `ece_tolerance`)
        the ECE's critical value on this many rows (`calibration_critical_ece`)."""
        n, d = int(y.size), int(y.sum())
        if n < MIN_HOLDOUT_ROWS:
            return cls(False, n, d, reason=f"{what} has {n} labelled rows (at least {MIN_HOLDOUT_ROWS} needed)", bands=band_distribution(p, bands, y))
        if d == 0 or d == n:
            only = "defaults" if d == n else "non-defaults"
            return cls(False, n, d, reason=f"{what} holds {only} only: AUC, Gini and KS are undefined", bands=band_distribution(p, bands, y))
        auc, low, high = auc_interval(y, p)
        table = calibration_table(y, p)
        return cls(
            True,
            n,
            d,
            auc=auc,
            auc_low=low,
            auc_high=high,
            ece_tolerance=ece_tolerance,
            ece_critical=None if ece_tolerance is None else calibration_critical_ece(y, p, ece_tolerance, seed=seed),
            gini=2.0 * auc - 1.0,
            ks=ks_statistic(y, p),
            brier=float(np.mean((p - y) ** 2)),
            ece=expected_calibration_error(table),
            calibration=table,
            bands=band_distribution(p, bands, y),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Evaluation":
        return cls(**data)


def registration_gate(
    ev: Evaluation, settings: dict[str, Any], reference: dict[str, Any] | None, *, horizon: str, model: str
) -> dict[str, Any]:
    """Whether a model may be registered, judged on its real-holdout evaluation `ev` with the noise it carries.

    Three rules, each stated in the result's ``rules``:

    * discrimination: the lower end of the TSTR AUC's 95 % interval (DeLong)
      is above 0.5; a model no better than chance (labels shuffled, or no
      signal kept by the twin) fails however small the holdout;
    * level: the upper end of that interval reaches the effective floor, the
      lower of ``auc_floor`` and ``min_trtr_ratio`` x the AUC that the same
      training on the real train split reaches on the same holdout (TRTR); a
      model fails only where the holdout shows it below what the data allows;
    * calibration: the holdout ECE is at most its critical value,
      ``max_calibration_error`` plus the ECE that sampling noise alone reaches
      19 times in 20 on a holdout of this size (`calibration_critical_ece`): a model
      fails when the holdout shows its true calibration error above the
      tolerance, not when noise alone takes the ECE there.

    A holdout that is not evaluable fails with its reason.

    Returns:
        ``{"passed", "reasons", "rules", "tstr_auc", "auc_interval", "trtr_auc", "auc_floor",
        "effective_auc_floor", "ece", "max_calibration_error", "ece_limit", "horizon", "model"}``.
    """
    floor, max_ece = settings["auc_floor"], settings["max_calibration_error"]
    ratio = settings.get("min_trtr_ratio", RiskConfig.model_fields["min_trtr_ratio"].default)
    reference = reference or {}
    trtr = reference.get("trtr_auc")
    effective_floor = floor if trtr is None else min(floor, ratio * trtr)
    # A model stored before the critical value existed is held to the tolerance itself.
    ece_limit = max_ece if ev.ece_critical is None else ev.ece_critical
    trtr_text = (
        f"the same training on the real train split reaches {trtr:.3f} (TRTR)" if trtr is not None
        else f"TRTR not measured ({reference.get('reason', 'no real train split given')}), so the floor stands"
    )
    rules = [
        "discrimination: the lower end of the TSTR AUC's 95 % interval (DeLong) must be above 0.5",
        f"level: the upper end of that interval must reach {effective_floor:.3f} = the floor {floor:.3f}"
        + (f", or {ratio:g} x the TRTR AUC {trtr:.3f} when lower" if trtr is not None else "")
        + f"; {trtr_text}",
        f"calibration: the ECE must be at most {ece_limit:.3f}, "
        + (f"the tolerance {max_ece:.3f} plus the 95th percentile of the ECE sampling noise alone gives on {ev.n} loans"
           if ev.ece_critical is not None else f"the tolerance {max_ece:.3f} (no critical value recorded)"),
    ]
    reasons = []
    if not ev.evaluable:
        reasons.append(f"the real holdout is not evaluable: {ev.reason}")
    else:
        interval = f"(95 % interval {ev.auc_low:.3f} to {ev.auc_high:.3f}, {ev.defaults} defaults in {ev.n})"
        if ev.auc_low is not None and ev.auc_low <= 0.5:
            reasons.append(f"TSTR AUC {ev.auc:.3f} {interval} does not beat chance (0.5)")
        if ev.auc_high is not None and ev.auc_high < effective_floor:
            reasons.append(f"TSTR AUC {ev.auc:.3f} {interval} is below the floor {effective_floor:.3f}; {trtr_text}")
        if ev.ece is not None and ev.ece > ece_limit:
            reasons.append(
                f"calibration error (ECE) {ev.ece:.3f} exceeds {ece_limit:.3f}"
                + (f", the tolerance {max_ece:.3f} plus the noise of {ev.n} loans: the holdout shows "
                   f"a calibration error above the tolerance" if ev.ece_critical is not None else "")
            )
    return {
        "passed": not reasons,
        "reasons": reasons,
        "rules": rules,
        "tstr_auc": ev.auc,
        "auc_interval": [ev.auc_low, ev.auc_high],
        "trtr_auc": trtr,
        "auc_floor": floor,
        "effective_auc_floor": effective_floor,
        "ece": ev.ece,
        "max_calibration_error": max_ece,
        "ece_limit": ece_limit,
        "horizon": horizon,
        "model": model,
        "holdout_rows": ev.n,
        "holdout_defaults": ev.defaults if ev.evaluable else None,
    }
