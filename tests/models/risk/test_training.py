"""Tests of models.risk.training: TSTR figures, horizons, determinism and bad input."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models.errors import InvalidDataError, TenantConfigError
from models.risk.config import RiskConfig
from models.risk.serving import score_book
from models.risk.training import NoTargetError, RareTargetError, train_pd_models
from tests.models.risk.conftest import TENANT, schema_of


def test_tstr_metrics_are_sane_on_a_demo_book(trained):
    model = trained.models["tape"]

    for kind in ("lightgbm", "scorecard"):
        ev = model.holdout[kind]
        assert ev.evaluable, ev.reason
        assert ev.auc > 0.6
        assert ev.gini == pytest.approx(2 * ev.auc - 1)
        assert 0.0 < ev.ks < 1.0
        assert 0.0 < ev.brier < 0.2
        assert ev.ece < 0.05
        assert model.validation[kind].evaluable
    assert model.chosen in ("lightgbm", "scorecard")
    assert model.tstr_auc == model.holdout[model.chosen].auc
    gate = model.gate()
    assert gate["passed"], gate["reasons"]
    assert model.data["holdout_rows"] == model.holdout["lightgbm"].n
    assert model.data["fit_rows"] + model.data["calibration_rows"] + model.data["validation_rows"] == model.data["train_rows"]


def test_training_is_deterministic(book):
    small = book["train"].head(1200)
    config = RiskConfig(horizons=["tape"], seed=5)

    a = train_pd_models(small, book["holdout"], book["schema"], config, tenant=TENANT).primary
    b = train_pd_models(small, book["holdout"], book["schema"], config, tenant=TENANT).primary

    np.testing.assert_array_equal(a.predict_pd(book["holdout"], "lightgbm"), b.predict_pd(book["holdout"], "lightgbm"))
    np.testing.assert_array_equal(a.predict_pd(book["holdout"], "scorecard"), b.predict_pd(book["holdout"], "scorecard"))


def test_history_horizons_are_trained_or_skipped_with_a_reason(trained):
    assert list(trained.models) == ["tape", "12m"]
    # the demo book's fastest path to default takes four months, so no loan defaults within three
    assert "one class only" in trained.skipped["3m"]
    twelve = trained.models["12m"]
    assert twelve.horizon == "12m"
    # loans booked eight months before the cut, still open, are censored at 12 months (not labelled 0)
    assert 0.05 * twelve.data["train_rows"] < twelve.data["train_excluded"] < 0.15 * twelve.data["train_rows"]
    assert "less than 12 months" in twelve.data["excluded_because"]
    assert twelve.holdout[twelve.chosen].evaluable
    assert twelve.holdout[twelve.chosen].auc > 0.6
    assert trained.primary.horizon == "tape"
    metrics = trained.metrics()
    assert "12m.lightgbm.holdout.auc" in metrics and "tstr_auc" in metrics


# --------------------------------------------------------------------------- bad input


def test_no_target_and_no_histories_raise_no_target_error(book):
    schema = schema_of(book["loans"], target=None)

    with pytest.raises(NoTargetError) as info:
        train_pd_models(book["train"], book["holdout"], schema, tenant=TENANT)

    assert isinstance(info.value, TenantConfigError)
    assert TENANT in str(info.value) and "target" in info.value.fix


def test_no_target_with_histories_trains_the_history_horizons_only(book):
    schema = schema_of(book["loans"], target=None)
    train = book["train"].drop("default_flag")
    holdout = book["holdout"].drop("default_flag")

    result = train_pd_models(
        train, holdout, schema, RiskConfig(horizons=["tape", "12m"]),
        synthetic_performance=book["performance"], holdout_performance=book["performance"], tenant=TENANT,
    )

    assert list(result.models) == ["12m"]
    assert "no target" in result.skipped["tape"]


def test_one_class_in_training_data_is_refused(book):
    train = book["train"].with_columns(pl.lit(0).alias("default_flag"))

    with pytest.raises(InvalidDataError, match="one class only") as info:
        train_pd_models(train, book["holdout"], book["schema"], RiskConfig(horizons=["tape"]), tenant=TENANT)

    assert TENANT in str(info.value)


def test_a_flag_too_rare_in_the_real_train_split_raises_rare_target_error_with_the_fix(book):
    # setup: six defaulted loans in the real train split (and so in the synthetic book that mirrors it)
    ids = book["train"].filter(pl.col("default_flag") == 1).get_column("loan_id").head(6).to_list()
    rare = book["train"].with_columns(pl.col("loan_id").is_in(ids).cast(pl.Int64).alias("default_flag"))
    config = RiskConfig(horizons=["tape"])
    # run
    with pytest.raises(RareTargetError) as info:
        train_pd_models(rare, book["holdout"], book["schema"], config, real_train=rare, tenant=TENANT)
    # assert: the count, the column and the fix; a synthetic book short of defaults the real split has stays an error
    assert f"marks 6 of the {rare.height} loans of the real train split" in str(info.value)
    assert info.value.column == "default_flag" and "target.positive" in info.value.fix
    with pytest.raises(InvalidDataError) as twin_fault:
        train_pd_models(rare, book["holdout"], book["schema"], config, real_train=book["train"], tenant=TENANT)
    assert not isinstance(twin_fault.value, RareTargetError)


def test_one_class_in_the_holdout_keeps_training_results_and_fails_the_gate(book):
    holdout = book["holdout"].with_columns(pl.lit(0).alias("default_flag"))

    model = train_pd_models(book["train"], holdout, book["schema"], RiskConfig(horizons=["tape"]), tenant=TENANT).primary

    for kind in ("lightgbm", "scorecard"):
        assert model.validation[kind].evaluable and model.validation[kind].auc > 0.6
        assert not model.holdout[kind].evaluable
        assert "non-defaults only" in model.holdout[kind].reason
        assert model.holdout[kind].auc is None
    gate = model.gate()
    assert not gate["passed"] and "not evaluable" in gate["reasons"][0]
    assert "tstr_auc" not in model.metrics()
    assert score_book(model, holdout.head(5)).height == 5  # the model still scores


def test_too_few_rows_are_refused(book):
    with pytest.raises(InvalidDataError, match="at least 200"):
        train_pd_models(book["train"].head(150), book["holdout"], book["schema"], RiskConfig(horizons=["tape"]), tenant=TENANT)


def test_gate_blocks_a_model_below_the_auc_floor(book):
    config = RiskConfig(horizons=["tape"], auc_floor=0.99)

    model = train_pd_models(book["train"], book["holdout"], book["schema"], config, tenant=TENANT).primary

    gate = model.gate()
    assert not gate["passed"] and "below the floor 0.990" in gate["reasons"][0]


def test_unknown_feature_and_missing_scoring_column_name_the_column(book, trained):
    config = RiskConfig(horizons=["tape"], features=["credit_score", "no_such_column"])
    with pytest.raises(TenantConfigError) as info:
        train_pd_models(book["train"], book["holdout"], book["schema"], config, tenant=TENANT)
    assert info.value.column == "no_such_column"

    with pytest.raises(TenantConfigError, match="is the target"):
        train_pd_models(book["train"], book["holdout"], book["schema"], RiskConfig(features=["default_flag"]), tenant=TENANT)

    with pytest.raises(InvalidDataError) as info:
        score_book(trained.primary, book["holdout"].drop("credit_score"))
    assert info.value.column == "credit_score"


def test_explicit_features_are_the_only_inputs(book):
    config = RiskConfig(horizons=["tape"], features=["credit_score", "grade", "dti"])

    model = train_pd_models(book["train"], book["holdout"], book["schema"], config, tenant=TENANT).primary

    assert model.pipeline.names == ["credit_score", "grade", "dti"]
    assert model.holdout[model.chosen].auc > 0.6
