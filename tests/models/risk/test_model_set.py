"""Tests of models.risk.model_set: the model folder is plain files, read back exactly; the points table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.risk.model_set import CALIBRATION_FILE, LIGHTGBM_FILE, MODEL_FILE, POINTS_FILE, calibration_plot_png, load_pd_model
from models.risk.serving import score_book


def test_points_table_and_plot_are_exported(trained, tmp_path):
    model = trained.models["tape"]

    folder = model.save(tmp_path / "m")
    table = json.loads((folder / POINTS_FILE).read_text())
    png = calibration_plot_png(model)

    assert table["base_score"] == 600 and table["pdo"] == 20
    assert {f["feature"] for f in table["features"]} == set(model.pipeline.names)
    credit = next(f for f in table["features"] if f["feature"] == "credit_score")
    assert credit["information_value"] > 0.1
    points = [b["points"] for b in credit["bins"] if b["bin"] != "(missing)" and b["rows"] > 0]
    assert points == sorted(points)  # monotone bins: a higher score never loses points
    assert png.startswith(b"\x89PNG")


def test_save_load_round_trip_scores_identically(trained, book, tmp_path):
    model = trained.models["tape"]

    folder = model.save(tmp_path / "pd")
    loaded = load_pd_model(folder)

    assert {p.name for p in folder.iterdir()} == {MODEL_FILE, LIGHTGBM_FILE, CALIBRATION_FILE, POINTS_FILE}
    before = score_book(model, book["holdout"])
    after = score_book(loaded, book["holdout"])
    assert before.equals(after)
    assert loaded.chosen == model.chosen and loaded.gate() == model.gate()
    for kind in ("lightgbm", "scorecard"):
        np.testing.assert_array_equal(loaded.predict_pd(book["holdout"], kind), model.predict_pd(book["holdout"], kind))


def test_load_refuses_a_folder_without_a_model(tmp_path):
    from models.errors import NotFittedError

    with pytest.raises(NotFittedError, match="risk_model"):
        load_pd_model(tmp_path)


def test_model_folder_is_plain_files(trained, tmp_path):
    folder = trained.primary.save(tmp_path / "plain")
    document = json.loads((folder / MODEL_FILE).read_text())
    assert document["kind"] == "credittwin-pd"
    assert (folder / LIGHTGBM_FILE).read_text().startswith("tree")
    assert not list(Path(folder).glob("*.pkl"))
