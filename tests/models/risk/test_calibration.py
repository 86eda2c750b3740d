"""Tests of models.risk.calibration: calibrators, the calibration table and the ECE's critical value."""

from __future__ import annotations

import numpy as np
import pytest

from models.risk.calibration import Calibrator, calibration_critical_ece, expected_calibration_error
from models.risk.config import RiskConfig
from models.risk.model_set import CALIBRATION_FILE, load_pd_model
from models.risk.training import train_pd_models
from tests.models.risk.conftest import TENANT


def test_calibration_table_by_decile_adds_up(trained, book):
    model = trained.models["tape"]
    ev = model.holdout[model.chosen]

    table = model.calibration_frame()

    assert table.height == 10
    assert table["decile"].to_list() == list(range(1, 11))
    assert table["n"].sum() == ev.n
    assert table["defaults"].sum() == ev.defaults
    assert (table["mean_pd"].diff().drop_nulls() >= 0).all()  # deciles of sorted PDs
    assert expected_calibration_error(ev.calibration) == pytest.approx(ev.ece)
    # the PD of the highest decile exceeds the lowest one's by a wide margin on a book with real signal
    assert table["observed_rate"][-1] > 3 * table["observed_rate"][0]


def test_calibration_methods_isotonic_and_platt(book, tmp_path):
    config = RiskConfig(horizons=["tape"], calibration="isotonic", seed=1)
    model = train_pd_models(book["train"], book["holdout"], book["schema"], config, tenant=TENANT).primary

    assert model.lightgbm.calibrator.method == "isotonic"
    assert model.scorecard.calibrator.method == "isotonic"
    assert model.lightgbm.calibrator.x.size > 1
    loaded = load_pd_model(model.save(tmp_path / "iso"))
    np.testing.assert_array_equal(loaded.lightgbm.calibrator.x, model.lightgbm.calibrator.x)
    np.testing.assert_array_equal(loaded.predict_pd(book["holdout"]), model.predict_pd(book["holdout"]))
    with np.load(tmp_path / "iso" / CALIBRATION_FILE, allow_pickle=False) as npz:
        assert set(npz.files) == {"lightgbm_x", "lightgbm_y", "scorecard_x", "scorecard_y"}


def test_the_ece_limit_is_never_below_the_tolerance_when_low_pds_clip_the_offset():
    # setup: a rare-event book (PDs around 2 %) on a small holdout, where p - 0.05 clips at 0
    rng = np.random.default_rng(3)
    p = rng.uniform(0.005, 0.04, 300)
    y = (rng.random(300) < p).astype(np.int8)
    # run
    critical = calibration_critical_ece(y, p, 0.05)
    # assert: an ECE within the tolerance itself never fails the gate
    assert critical >= 0.05


def test_platt_never_turns_the_models_ranking_upside_down():
    # setup: a small calibration slice whose noise runs against the model (Stat2Data CreditRisk's 72 rows, 11
    # defaults, gave slopes of -0.07 and -0.09: both PD models then ranked the real holdout at AUC 0.33 and 0.37)
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(5)
    raw = rng.normal(-1.8, 1.0, 72)
    y = (rng.random(72) < 0.15).astype(np.int64)
    y[np.argsort(raw)[:6]] = 1  # the slice's defaults sit among the lowest scores
    # run
    calibrator = Calibrator.fit(raw, y, "platt")
    pd_ = calibrator.apply(raw)
    # assert: the model's own order is kept, and the PDs average to the slice's default rate
    assert calibrator.a == 1.0
    assert roc_auc_score(y, pd_) == pytest.approx(roc_auc_score(y, raw))
    assert pd_.mean() == pytest.approx(y.mean(), abs=1e-6)
