"""Drift between a reference and a current loan tape: PSI per column and the default-rate shift."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest
from pydantic import ValidationError

from models.risk.drift import DriftConfig, categorical_psi, measure_drift, numeric_psi
from models.errors import InvalidDataError
from models.tape.schema import infer_schema


def _population(rows: int, seed: int, *, income_shift: float = 0.0, default_rate: float = 0.1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "loan_id": [f"L{seed}-{i}" for i in range(rows)],
            "annual_income": rng.lognormal(11.0 + income_shift, 0.4, rows),
            "term_months": rng.choice([36, 60], rows, p=[0.6, 0.4]),
            "region": rng.choice(["north", "south", "east", "west"], rows, p=[0.4, 0.3, 0.2, 0.1]),
            "origination": [dt.date(2020, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 1000, rows)],
            "default_flag": (rng.random(rows) < default_rate).astype(np.int64),
        }
    )


def test_two_samples_of_one_population_do_not_drift():
    # setup
    reference, current = _population(5000, seed=1), _population(5000, seed=2)

    # run
    report = measure_drift(reference, current, target="default_flag")

    # assert
    assert set(report.psi) == {"loan_id", "annual_income", "term_months", "region", "origination"}
    assert report.max_psi < 0.02
    assert abs(report.default_rate_shift) < 0.02
    assert report.exceeds() is False
    assert report.columns_over_threshold == [] and report.reasons() == []


def test_a_shifted_column_has_a_large_psi_and_exceeds():
    # setup
    reference, current = _population(5000, seed=1), _population(5000, seed=2, income_shift=0.5)

    # run
    report = measure_drift(reference, current, target="default_flag")

    # assert
    assert report.psi["annual_income"] > 0.5
    assert report.max_psi_column == "annual_income"
    assert report.psi["region"] < 0.02 and report.psi["term_months"] < 0.02
    assert report.columns_over_threshold == ["annual_income"]
    assert report.exceeds() is True
    assert report.exceeds(psi_threshold=10.0) is False
    assert "PSI of 'annual_income'" in report.reasons()[0]


def test_numeric_psi_matches_the_formula_on_deciles():
    # setup: uniform reference; the current puts half its mass in the top decile
    reference = pl.Series(np.arange(1000, dtype=float))
    current = pl.Series(np.concatenate([np.arange(0, 1000, 2.0)[:500], np.full(500, 950.0)]))

    # run
    psi, bins = numeric_psi(reference, current)

    # assert: reference shares are 0.1 in 10 bins, the current's are counted here by hand
    edges = np.quantile(reference.to_numpy(), np.linspace(0, 1, 11)[1:-1])
    cur_counts = np.bincount(np.searchsorted(edges, current.to_numpy(), side="right"), minlength=10) / 1000
    expected = float(np.sum((np.maximum(cur_counts, 1e-4) - 0.1) * np.log(np.maximum(cur_counts, 1e-4) / 0.1)))
    assert bins == 11
    assert psi == pytest.approx(expected, rel=1e-9)


def test_default_rate_shift_absolute_and_relative():
    # setup
    reference = _population(20000, seed=1, default_rate=0.10)
    current = _population(20000, seed=2, default_rate=0.15)

    # run
    report = measure_drift(reference, current, target="default_flag", config=DriftConfig(psi_threshold=5.0))

    # assert
    assert report.default_rate_shift == pytest.approx(0.05, abs=0.01)
    assert report.default_rate_shift_relative == pytest.approx(0.5, abs=0.12)
    assert report.exceeds() is True
    assert report.exceeds(default_rate_threshold=0.2) is False
    assert "default rate moved +" in report.reasons()[0]
    assert report.to_dict()["default_rate"]["shift_pp"] == pytest.approx(report.default_rate_shift * 100)


def test_text_target_values_count_as_defaults():
    # setup
    reference = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "status": ["Y", "n", "n", "n"]})
    current = pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "status": ["y", "Y", "n", None]})

    # run
    report = measure_drift(reference, current, target="status", target_positive=["Y"])

    # assert
    assert (report.reference_default_rate, report.current_default_rate) == (0.25, 0.5)
    assert "status" not in report.psi


def test_nulls_are_a_bin_of_their_own():
    # setup
    rng = np.random.default_rng(3)
    values = rng.normal(size=4000)
    reference = pl.DataFrame({"x": values, "c": rng.choice(["a", "b"], 4000)})
    emptied = values.copy()
    emptied[:1200] = np.nan
    current = pl.DataFrame({"x": emptied, "c": [None] * 1200 + list(rng.choice(["a", "b"], 2800))}).with_columns(
        pl.col("x").fill_nan(None)
    )

    # run
    report = measure_drift(reference, current)

    # assert: 30 % newly null is a shift in both kinds of column
    assert report.psi["x"] > 0.5 and report.psi["c"] > 0.5
    column = {c.column: c for c in report.columns}["x"]
    assert column.reference_null_rate == 0.0 and column.current_null_rate == pytest.approx(0.3)
    assert column.bins == 11


def test_unseen_categories_fall_in_other():
    # setup
    reference = pl.Series(["north"] * 500 + ["south"] * 500)
    current_same = pl.Series(["north"] * 480 + ["south"] * 520)
    current_new = pl.Series(["north"] * 250 + ["south"] * 250 + ["mars"] * 300 + ["venus"] * 200)

    # run
    stable, bins = categorical_psi(reference, current_same)
    shifted, _ = categorical_psi(reference, current_new)

    # assert: bins are north, south, other, null; half of the new tape lands in "other"
    assert bins == 4
    assert stable < 0.01
    expected = 2 * (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert shifted == pytest.approx(expected, rel=1e-9)


def test_rare_categories_beyond_the_limit_share_other():
    # setup
    reference = pl.Series([f"c{i}" for i in range(200)] * 5)
    current = pl.Series([f"d{i}" for i in range(200)] * 5)

    # run
    psi, bins = categorical_psi(reference, current, max_categories=10)

    # assert: 10 own bins of 0.5 % each (empty in the current) + other (95 % -> 100 %) + null
    assert bins == 12
    expected = 10 * (1e-4 - 0.005) * math.log(1e-4 / 0.005) + (1.0 - 0.95) * math.log(1.0 / 0.95)
    assert psi == pytest.approx(expected, rel=1e-9)


def test_schema_decides_the_columns_and_skips_identifiers():
    # setup
    reference, current = _population(3000, seed=1), _population(3000, seed=2)
    schema = infer_schema(reference, id_columns=["loan_id"], target="default_flag")

    # run
    report = measure_drift(reference, current, schema=schema, target="default_flag")

    # assert
    assert "loan_id" in report.skipped_columns and "loan_id" not in report.psi
    assert {c.column: c.kind for c in report.columns}["origination"] == "numeric"
    assert {c.column: c.kind for c in report.columns}["region"] == "categorical"


def test_missing_added_and_ignored_columns():
    # setup
    reference = _population(2000, seed=1)
    current = _population(2000, seed=2).drop("region").with_columns(pl.lit(1).alias("new_col"))

    # run
    report = measure_drift(
        reference, current, target="default_flag", config=DriftConfig(ignore_columns=["annual_income"])
    )

    # assert
    assert report.missing_columns == ("region",) and report.added_columns == ("new_col",)
    assert "annual_income" not in report.psi
    assert report.exceeds() is True
    assert "region" in report.reasons()[-1]


def test_to_tags_are_short_strings_and_to_dict_is_json():
    # setup
    import json

    reference, current = _population(2000, seed=1), _population(2000, seed=2, income_shift=0.5)
    report = measure_drift(reference, current, target="default_flag")

    # run
    tags = report.to_tags()
    document = json.loads(json.dumps(report.to_dict(), allow_nan=False))

    # assert
    assert tags["credittwin/drift"] == "true"
    assert tags["credittwin/drift_max_psi_column"] == "annual_income"
    assert all(isinstance(v, str) and len(v) <= 40 for v in tags.values())
    assert document["columns_over_threshold"] == ["annual_income"]
    assert document["psi"]["annual_income"] == pytest.approx(report.psi["annual_income"], abs=1e-6)


def test_empty_frames_are_an_error():
    # setup
    reference = _population(100, seed=1)

    # run / assert
    with pytest.raises(InvalidDataError, match="current loans table is empty.*Fix:"):
        measure_drift(reference, reference.head(0), tenant="acme")
    with pytest.raises(InvalidDataError, match="tenant 'acme'.*reference loans table is empty"):
        measure_drift(reference.clear(), reference, tenant="acme")


def test_drift_config_is_strict():
    # run / assert
    assert DriftConfig().psi_threshold == 0.2 and DriftConfig().default_rate_shift == 0.02
    with pytest.raises(ValidationError):
        DriftConfig(psi_treshold=0.3)
    with pytest.raises(ValidationError):
        DriftConfig(psi_threshold=float("inf"))
    with pytest.raises(ValidationError):
        DriftConfig(default_rate_shift=0.0)


def test_large_tape_is_measured_in_vectorised_time():
    # setup: 400k rows x 12 columns
    import time

    rng = np.random.default_rng(0)
    rows = 400_000
    frame = pl.DataFrame({f"n{i}": rng.normal(size=rows) for i in range(8)} | {
        f"c{i}": rng.choice(["a", "b", "c", "d"], rows) for i in range(4)
    })

    # run
    start = time.perf_counter()
    report = measure_drift(frame, frame.sample(fraction=1.0, shuffle=True, seed=1))
    elapsed = time.perf_counter() - start

    # assert: the same rows reshuffled cannot drift; a quadratic step would take minutes here
    assert report.max_psi == pytest.approx(0.0, abs=1e-12)
    assert elapsed < 10
