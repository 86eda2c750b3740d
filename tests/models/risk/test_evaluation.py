"""Tests of models.risk.evaluation: metrics, bands and the registration gate, on made-up figures and real tapes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models.risk.calibration import calibration_critical_ece, calibration_table
from models.risk.config import RiskConfig
from models.risk.evaluation import Evaluation, assign_bands, auc_interval, auc_score, ks_statistic, registration_gate
from models.risk.training import train_pd_models
from models.tape.schema import infer_schema
from models.tape.split import split_train_holdout
from tests.models.risk.conftest import TENANT


def test_metric_functions_match_references():
    from scipy.stats import ks_2samp
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.2).astype(np.int8)
    p = np.round(np.clip(0.2 + 0.2 * (y - 0.2) + rng.normal(0, 0.15, y.size), 0, 1), 2)  # with ties

    assert auc_score(y, p) == pytest.approx(roc_auc_score(y, p))
    assert ks_statistic(y, p) == pytest.approx(ks_2samp(p[y == 1], p[y == 0]).statistic)
    table = calibration_table(y, p)
    assert sum(r["n"] for r in table) == y.size
    assert np.isnan(auc_score(np.zeros(5), np.arange(5.0)))


def test_band_boundaries_are_inclusive():
    bands = RiskConfig().bands
    idx = assign_bands(np.array([0.0001, 0.2, 0.2000001, 0.5, 0.9999]), bands)
    assert idx.tolist() == [0, 0, 1, 1, 2]


def _evaluation(auc: float, low: float, high: float) -> Evaluation:
    return Evaluation(True, 830, 50, auc=auc, auc_low=low, auc_high=high, ece=0.02, ece_tolerance=0.05, ece_critical=0.06)


def test_gate_level_rule_reads_the_auc_interval_and_what_real_data_allows():
    settings = {"auc_floor": 0.65, "min_trtr_ratio": 0.9, "max_calibration_error": 0.05}
    # setup: modeldata/lending_club's figures: TSTR 0.602 on 830 loans with 50 defaults, TRTR 0.70
    small = _evaluation(0.602, 0.513, 0.692)
    # the same AUC measured on a holdout a hundred times larger
    large = _evaluation(0.602, 0.593, 0.611)

    # run
    on_small = registration_gate(small, settings, {"trtr_auc": 0.70}, horizon="tape", model="scorecard")
    on_large = registration_gate(large, settings, {"trtr_auc": 0.70}, horizon="tape", model="scorecard")
    low_ceiling = registration_gate(large, settings, {"trtr_auc": 0.62}, horizon="tape", model="scorecard")
    unmeasured = registration_gate(large, settings, {"trtr_auc": None, "reason": "no real train split given"},
                                   horizon="tape", model="scorecard")

    # assert
    assert on_small["passed"], on_small["reasons"]
    assert not on_large["passed"] and "below the floor 0.630" in on_large["reasons"][0]  # 0.9 x TRTR 0.70
    assert low_ceiling["passed"] and low_ceiling["effective_auc_floor"] == pytest.approx(0.9 * 0.62)
    assert not unmeasured["passed"] and "TRTR not measured (no real train split given)" in unmeasured["reasons"][0]


def test_auc_interval_matches_the_pairwise_definition_and_narrows_with_rows():
    # setup
    rng = np.random.default_rng(0)
    p = rng.random(400)
    y = (rng.random(400) < p).astype(np.int8)

    # run
    auc, low, high = auc_interval(y, p)
    _, big_low, big_high = auc_interval(np.tile(y, 25), np.tile(p, 25))

    # assert: the AUC is the share of (default, non-default) pairs ranked right, ties half
    pos, neg = p[y == 1], p[y == 0]
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auc == pytest.approx(pairs) == pytest.approx(auc_score(y, p))
    assert low < auc < high and big_high - big_low < (high - low) / 4
    small_critical = calibration_critical_ece(y, p, 0.05)
    big_critical = calibration_critical_ece(np.tile(y, 100), np.tile(p, 100), 0.05)
    assert small_critical > big_critical > 0.05 and big_critical < 0.06


# --------------------------------------------------------------------------- the gate on real tapes (tests/corpus)


@pytest.fixture(scope="module")
def credit_data():
    """modeldata/credit_data as a lender uploads it, split like a tape: about 3,500 train and 950 holdout loans."""
    from tests.corpus import CORPUS

    loans = pl.from_pandas(next(t for t in CORPUS if t.tenant == "modeldata-credit-data").frame())
    side = split_train_holdout(loans, "rownames", 0.2)
    schema = infer_schema(loans, id_columns=["rownames"], target="Status", target_positive=["bad"])
    return {"train": loans.filter(side == "train"), "holdout": loans.filter(side == "holdout"), "schema": schema}


def _gate_on(credit_data, train: pl.DataFrame) -> dict:
    config = RiskConfig(horizons=["tape"])
    training = train_pd_models(
        train, credit_data["holdout"], credit_data["schema"], config, real_train=credit_data["train"], tenant=TENANT
    )
    return training.primary.gate()


def test_gate_registers_an_honest_model_whose_ece_is_holdout_noise(credit_data):
    # run: trained on the real train split, the best the data allows
    gate = _gate_on(credit_data, credit_data["train"])

    # assert: its ECE is above the 0.05 tolerance, within what 950 loans can tell apart from it
    assert gate["ece"] > gate["max_calibration_error"]
    assert gate["passed"], gate["reasons"]
    assert gate["ece_limit"] > gate["ece"]
    assert gate["trtr_auc"] == pytest.approx(gate["tstr_auc"])
    assert any(rule.startswith("calibration:") for rule in gate["rules"])
    assert len(gate["rules"]) == 3


def test_gate_fails_a_model_trained_on_shuffled_labels(credit_data):
    # setup
    shuffled = credit_data["train"].with_columns(pl.col("Status").shuffle(seed=0))

    # run
    gate = _gate_on(credit_data, shuffled)

    # assert
    assert not gate["passed"]
    assert any("does not beat chance" in reason for reason in gate["reasons"])


def test_gate_fails_a_miscalibrated_model(credit_data):
    # setup: bad loans oversampled fourfold, so the model's PDs are far too high on the real holdout
    bad = credit_data["train"].filter(pl.col("Status") == "bad")
    oversampled = pl.concat([credit_data["train"], bad, bad, bad])

    # run
    gate = _gate_on(credit_data, oversampled)

    # assert: discrimination is intact, calibration is not
    assert not any("AUC" in reason for reason in gate["reasons"])
    assert len(gate["reasons"]) == 1 and "calibration error (ECE)" in gate["reasons"][0]
    assert "above the tolerance" in gate["reasons"][0]
