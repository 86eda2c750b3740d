"""The scorecard baseline: weight-of-evidence bins fed to a logistic regression, with a points table.

Every feature is binned (quantile bins for numbers, merged until their default
rates are monotone and no bin is tiny; categories as bins, rare ones pooled;
missing values a bin of their own), encoded by its weight of evidence (WoE), and
fed to a scikit-learn logistic regression. The points table (base score, points
to double the odds) is exported as JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from models.risk.calibration import Calibrator
from models.risk.config import RiskConfig
from models.risk.features import FeaturePipeline

N_QUANTILE_BINS = 10  # initial scorecard bins per numeric feature
OTHER_LABEL = "other"
MISSING_LABEL = "(missing)"


@dataclass
class FeatureBins:
    """The scorecard bins of one feature: value -> bin, each bin's WoE and points; the last bin is 'missing'."""

    name: str
    kind: Literal["numeric", "categorical"]
    edges: list[float]  # numeric: cut points; bin i holds [edges[i-1], edges[i])
    code_bins: list[int]  # categorical: bin of each level code (levels..., other)
    labels: list[str]
    woe: list[float]
    counts: list[int]
    events: list[int]
    points: list[float] = field(default_factory=list)

    def bin_index(self, column: np.ndarray) -> np.ndarray:
        missing_bin = len(self.labels) - 1
        missing = np.isnan(column)
        if self.kind == "numeric":
            idx = np.searchsorted(np.asarray(self.edges, np.float64), np.where(missing, 0.0, column), side="right")
        else:
            codes = np.where(missing, 0, column).astype(np.int64)
            table = np.asarray(self.code_bins, np.int64)
            idx = table[np.clip(codes, 0, table.size - 1)]
        return np.where(missing, missing_bin, idx)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "edges": list(self.edges),
            "code_bins": list(self.code_bins),
            "labels": list(self.labels),
            "woe": list(self.woe),
            "counts": list(self.counts),
            "events": list(self.events),
            "points": list(self.points),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureBins":
        return cls(**{k: data[k] for k in ("name", "kind", "edges", "code_bins", "labels", "woe", "counts", "events", "points")})


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _numeric_bins(values: np.ndarray, y: np.ndarray, min_rows: int) -> list[float]:
    """Quantile cut points, merged so every bin holds `min_rows` rows and the default rate is monotone."""
    present = ~np.isnan(values)
    v, t = values[present], y[present]
    if v.size == 0:
        return []
    qs = np.quantile(v, np.linspace(0, 1, N_QUANTILE_BINS + 1)[1:-1])
    edges = [float(e) for e in np.unique(qs) if e > v.min()]

    def stats(cuts: list[float]) -> tuple[np.ndarray, np.ndarray]:
        idx = np.searchsorted(np.asarray(cuts, np.float64), v, side="right")
        n = np.bincount(idx, minlength=len(cuts) + 1)
        e = np.bincount(idx, weights=t, minlength=len(cuts) + 1)
        return n, e

    # Tiny bins first: merge each into its smaller neighbour.
    while edges:
        n, _ = stats(edges)
        small = np.flatnonzero(n < min_rows)
        if small.size == 0:
            break
        i = int(small[0])
        if i == 0:
            edges.pop(0)
        elif i == len(n) - 1:
            edges.pop(-1)
        else:
            edges.pop(i - 1 if n[i - 1] <= n[i + 1] else i)
    # Then pool adjacent violators of the overall direction of the default rate.
    while edges:
        n, e = stats(edges)
        rate = e / np.maximum(n, 1)
        # The overall direction: the sign of the row-weighted covariance of bin position and default rate.
        position = np.arange(rate.size, dtype=np.float64)
        weights = n / max(n.sum(), 1)
        covariance = np.sum(weights * (position - np.sum(weights * position)) * (rate - np.sum(weights * rate)))
        direction = 1.0 if covariance >= 0 else -1.0
        steps = np.diff(rate) * direction
        bad = np.flatnonzero(steps < 0)
        if bad.size == 0:
            break
        edges.pop(int(bad[0]))
    return edges


@dataclass
class Scorecard:
    """WoE-binned logistic regression with a points table."""

    bins: list[FeatureBins]
    coef: list[float]
    intercept: float
    base_score: float
    pdo: float
    base_odds: float
    calibrator: Calibrator | None = None

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, pipeline: FeaturePipeline, config: RiskConfig) -> "Scorecard":
        from sklearn.linear_model import LogisticRegression

        n = y.size
        min_rows = max(10, int(0.02 * n))
        goods_total, bads_total = float(n - y.sum()), float(y.sum())
        bins: list[FeatureBins] = []
        for j, spec in enumerate(pipeline.features):
            column = x[:, j]
            if spec.kind == "numeric":
                edges = _numeric_bins(column, y, min_rows)
                bounds = [-math.inf, *edges, math.inf]
                labels = []
                for lo, hi in zip(bounds, bounds[1:]):
                    if lo == -math.inf and hi == math.inf:
                        labels.append("any value")
                    elif lo == -math.inf:
                        labels.append(f"< {_fmt(hi)}")
                    elif hi == math.inf:
                        labels.append(f">= {_fmt(lo)}")
                    else:
                        labels.append(f"[{_fmt(lo)}, {_fmt(hi)})")
                fb = FeatureBins(spec.name, "numeric", edges, [], labels + [MISSING_LABEL], [], [], [])
            else:
                n_codes = len(spec.levels) + 1
                present = ~np.isnan(column)
                counts = np.bincount(column[present].astype(np.int64), minlength=n_codes)
                code_bins, labels, rare = [], [], []
                for code in range(n_codes):
                    if code < len(spec.levels) and counts[code] >= min_rows:
                        code_bins.append(len(labels))
                        labels.append(spec.levels[code])
                    else:
                        code_bins.append(-1)
                        rare.append(spec.levels[code] if code < len(spec.levels) else OTHER_LABEL)
                rare_bin = len(labels)
                code_bins = [rare_bin if b < 0 else b for b in code_bins]
                labels.append(OTHER_LABEL if rare == [OTHER_LABEL] else "|".join(rare[:8]) + ("|..." if len(rare) > 8 else ""))
                fb = FeatureBins(spec.name, "categorical", [], code_bins, labels + [MISSING_LABEL], [], [], [])
            idx = fb.bin_index(column)
            k = len(fb.labels)
            count = np.bincount(idx, minlength=k)
            events = np.bincount(idx, weights=y, minlength=k)
            goods = count - events
            woe = np.log(((goods + 0.5) / (goods_total + 0.5 * k)) / ((events + 0.5) / (bads_total + 0.5 * k)))
            woe[count == 0] = 0.0
            fb.woe = [float(w) for w in woe]
            fb.counts = [int(c) for c in count]
            fb.events = [int(e) for e in events]
            bins.append(fb)
        card = cls(
            bins=bins,
            coef=[],
            intercept=0.0,
            base_score=config.scorecard_base_score,
            pdo=config.scorecard_pdo,
            base_odds=config.scorecard_base_odds,
        )
        lr = LogisticRegression(C=1.0, max_iter=2000)
        lr.fit(card.woe_matrix(x), y)
        card.coef = [float(c) for c in lr.coef_[0]]
        card.intercept = float(lr.intercept_[0])
        card._set_points()
        return card

    def woe_matrix(self, x: np.ndarray) -> np.ndarray:
        out = np.empty_like(x, dtype=np.float64)
        for j, fb in enumerate(self.bins):
            out[:, j] = np.asarray(fb.woe, np.float64)[fb.bin_index(x[:, j])]
        return out

    def _set_points(self) -> None:
        factor = self.pdo / math.log(2.0)
        offset = self.base_score - factor * math.log(self.base_odds)
        p = len(self.bins)
        for fb, beta in zip(self.bins, self.coef):
            fb.points = [float(-(beta * w + self.intercept / p) * factor + offset / p) for w in fb.woe]

    def raw(self, x: np.ndarray) -> np.ndarray:
        return self.woe_matrix(x) @ np.asarray(self.coef, np.float64) + self.intercept

    def points_lost(self, x: np.ndarray) -> np.ndarray:
        """Per row and feature: the points the row's bin scores below that feature's best bin."""
        out = np.empty_like(x, dtype=np.float64)
        for j, fb in enumerate(self.bins):
            points = np.asarray(fb.points, np.float64)
            out[:, j] = points.max() - points[fb.bin_index(x[:, j])]
        return out

    def points_table(self) -> dict[str, Any]:
        """The exported scorecard: scale and, per feature, bins with WoE, counts, events and points."""
        rows = []
        for fb, beta in zip(self.bins, self.coef):
            goods = np.asarray(fb.counts, np.float64) - np.asarray(fb.events, np.float64)
            bads = np.asarray(fb.events, np.float64)
            g = goods / max(goods.sum(), 1.0)
            b = bads / max(bads.sum(), 1.0)
            iv = float(np.sum((g - b) * np.asarray(fb.woe)))
            rows.append(
                {
                    "feature": fb.name,
                    "coefficient": beta,
                    "information_value": iv,
                    "bins": [
                        {"bin": label, "rows": c, "defaults": e, "woe": w, "points": pt}
                        for label, c, e, w, pt in zip(fb.labels, fb.counts, fb.events, fb.woe, fb.points)
                    ],
                }
            )
        return {
            "base_score": self.base_score,
            "pdo": self.pdo,
            "base_odds": self.base_odds,
            "intercept": self.intercept,
            "score": "sum of the points of each feature's bin; higher means lower PD",
            "features": rows,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "bins": [fb.to_dict() for fb in self.bins],
            "coef": list(self.coef),
            "intercept": self.intercept,
            "base_score": self.base_score,
            "pdo": self.pdo,
            "base_odds": self.base_odds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scorecard":
        return cls(
            bins=[FeatureBins.from_dict(b) for b in data["bins"]],
            coef=[float(c) for c in data["coef"]],
            intercept=float(data["intercept"]),
            base_score=float(data["base_score"]),
            pdo=float(data["pdo"]),
            base_odds=float(data["base_odds"]),
        )
