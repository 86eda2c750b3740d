"""Tests of models.risk.serving: PD, band and reason codes of a scored book."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models.risk.config import RiskConfig
from models.risk.serving import score_book
from models.risk.training import train_pd_models
from tests.models.risk.conftest import TENANT


def test_bands_are_configurable(book):
    bands = [{"name": "PRIME", "max_pd": 0.03}, {"name": "NEAR", "max_pd": 0.1}, {"name": "SUB", "max_pd": 1.0}]
    config = RiskConfig(horizons=["tape"], bands=bands, model="scorecard")
    model = train_pd_models(book["train"], book["holdout"], book["schema"], config, tenant=TENANT).primary

    scored = score_book(model, book["holdout"])

    assert set(scored["band"].unique()) <= {"PRIME", "NEAR", "SUB"}
    assert scored.filter(pl.col("band") == "PRIME")["pd"].max() <= 0.03
    assert scored.filter(pl.col("band") == "SUB")["pd"].min() > 0.1
    near = scored.filter(pl.col("band") == "NEAR")["pd"]
    assert near.len() > 0 and near.min() > 0.03 and near.max() <= 0.1
    distribution = model.holdout["scorecard"].bands
    assert [b["band"] for b in distribution] == ["PRIME", "NEAR", "SUB"]
    assert sum(b["n"] for b in distribution) == book["holdout"].height


def test_lightgbm_reason_codes_are_the_largest_contributions(trained, book):
    model = trained.models["tape"]
    rows = book["holdout"].head(200)

    scored = score_book(model.__class__(**{**model.__dict__, "chosen": "lightgbm"}), rows)

    x = model.pipeline.matrix(rows)
    contrib = model.lightgbm.booster.predict(x, pred_contrib=True, num_iteration=model.lightgbm.best_iteration)
    raw = model.lightgbm.raw(x)
    np.testing.assert_allclose(contrib.sum(axis=1), raw, rtol=1e-9, atol=1e-9)  # TreeSHAP adds up to the log-odds
    names = model.pipeline.names
    for i in range(rows.height):
        c = contrib[i, :-1]
        order = np.argsort(-c, kind="stable")
        expected = [names[j] for j in order[:3] if c[j] > 0]
        got = [scored[f"reason_{k}"][i] for k in (1, 2, 3)]
        assert [g for g in got if g is not None] == expected
    assert set(scored["reason_1"].drop_nulls().unique()) <= set(names)


def test_scorecard_reason_codes_are_the_features_losing_most_points(trained, book):
    model = trained.models["tape"]
    card_model = model.__class__(**{**model.__dict__, "chosen": "scorecard"})
    rows = book["holdout"].head(300)

    scored = score_book(card_model, rows)

    lost = model.scorecard.points_lost(model.pipeline.matrix(rows))
    names = model.pipeline.names
    first = scored["reason_1"].to_list()
    for i in range(rows.height):
        if first[i] is None:
            assert lost[i].max() <= 0
        else:
            assert lost[i, names.index(first[i])] == pytest.approx(lost[i].max())
    # the riskiest decile is explained by the credit drivers the demo book is built on
    risky = scored.sort("pd", descending=True).head(30)
    drivers = {"credit_score", "grade", "interest_rate", "dti", "product", "ltv", "revolving_balance", "credit_limit", "annual_income"}
    assert sum(r in drivers for r in risky["reason_1"].to_list()) >= 20


def test_scoring_in_chunks_equals_scoring_at_once(trained, book):
    model = trained.models["tape"]
    assert score_book(model, book["holdout"], chunk_rows=97).equals(score_book(model, book["holdout"]))
    fast = score_book(model, book["holdout"], reasons=False)
    assert fast["reason_1"].null_count() == fast.height
    assert fast["pd"].equals(score_book(model, book["holdout"])["pd"])


def test_unseen_categories_and_nulls_are_scored(trained, book):
    model = trained.models["tape"]
    rows = book["holdout"].head(4).with_columns(
        pl.Series("product", ["spaceship", None, "card", "auto"]),
        pl.Series("credit_score", [None, 700, 650, 600], dtype=pl.Int64),
        pl.Series("origination_date", ["2020-05-01", None, "2020-06-01", "2020-07-01"]),  # dates arriving as text
    )

    scored = score_book(model, rows)

    assert scored.height == 4
    assert scored["pd"].is_finite().all()
    product = next(f for f in model.pipeline.features if f.name == "product")
    x = model.pipeline.matrix(rows)
    codes = x[:, model.pipeline.names.index("product")]
    assert codes[0] == len(product.levels)  # "other"
    assert np.isnan(codes[1])
