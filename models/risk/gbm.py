"""The LightGBM PD model, deterministic, with exact TreeSHAP contributions for reason codes.

Deterministic: a fixed seed, ``deterministic=True``, row-wise histograms and a
thread count that depends only on the rows and the machine. Shallow trees
(depth 4) keep exact TreeSHAP contributions affordable for reason codes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.risk.calibration import Calibrator

ROWS_PER_THREAD = 10_000  # LightGBM's OpenMP threads cost more than they give on small inputs


def lightgbm_threads(rows: int | None = None) -> int:
    """Threads for LightGBM: the OpenMP limit threadpoolctl reports, capped by the CPUs this process may use.

    With `rows`, at most one thread per `ROWS_PER_THREAD` rows: on small inputs
    (and on a busy machine) extra OpenMP threads spin more than they compute.
    The count depends only on the row count and the machine, so a rerun on the
    same machine reproduces the model; it is recorded in the model's params.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        from threadpoolctl import threadpool_info

        limits = [int(info["num_threads"]) for info in threadpool_info() if info.get("user_api") == "openmp"]
        if limits:
            cores = min(cores, min(limits))
    except Exception:  # threadpoolctl is advisory only
        pass
    if rows is not None:
        cores = min(cores, rows // ROWS_PER_THREAD + 1)
    return max(1, cores)


def _stratified_mask(y: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask selecting `share` of each class, seeded."""
    mask = np.zeros(y.size, dtype=bool)
    for cls_value in (0, 1):
        rows = np.flatnonzero(y == cls_value)
        rows = rows[rng.permutation(rows.size)]
        mask[rows[: int(round(share * rows.size))]] = True
    return mask


@dataclass
class LightGBMPD:
    """A LightGBM binary classifier on the pipeline's matrix, with its calibrator."""

    booster: Any  # lightgbm.Booster
    calibrator: Calibrator | None = None
    params: dict[str, Any] = field(default_factory=dict)
    best_iteration: int = 0

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, categorical: list[int], *, seed: int) -> "LightGBMPD":
        import lightgbm as lgb

        rng = np.random.default_rng(seed + 1)
        stop = _stratified_mask(y, 0.15, rng)
        min_leaf = int(max(20, y.size // 1000))
        params = {
            "objective": "binary",
            "learning_rate": 0.08,
            "num_leaves": 15,
            "max_depth": 4,
            "min_data_in_leaf": min_leaf,
            "feature_fraction": 0.9,
            "lambda_l2": 1.0,
            "max_bin": 255,
            "max_cat_to_onehot": 4,
            "cat_smooth": 10.0,
            "cat_l2": 10.0,
            "min_data_per_group": 20,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": lightgbm_threads(y.size),
            "verbosity": -1,
        }
        names = [f"f{i}" for i in range(x.shape[1])]
        train = lgb.Dataset(x[~stop], label=y[~stop], feature_name=names, categorical_feature=categorical, free_raw_data=True)
        valid = lgb.Dataset(x[stop], label=y[stop], reference=train)
        booster = lgb.train(
            params,
            train,
            num_boost_round=400,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(40, verbose=False)],
        )
        best = int(booster.best_iteration or booster.current_iteration())
        return cls(booster=booster, params=params, best_iteration=best)

    def raw(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(
            self.booster.predict(x, raw_score=True, num_iteration=self.best_iteration, num_threads=lightgbm_threads(x.shape[0] // 5)),
            dtype=np.float64,
        )

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Exact TreeSHAP contributions to the log-odds, (rows x features); the bias column is dropped."""
        contrib = self.booster.predict(x, pred_contrib=True, num_iteration=self.best_iteration, num_threads=lightgbm_threads(x.shape[0] * 10))
        return np.asarray(contrib, dtype=np.float64)[:, : x.shape[1]]
