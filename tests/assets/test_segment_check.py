"""The cascade's per-segment check (`segment_fidelity`) judges what it measured and is never a pass on nothing."""

from __future__ import annotations

import dagster as dg

from assets.cascade import segment_check
from models.sequences.conditional import conditional_fidelity
from tests.models.cascade_books import make_book, simulate_histories


def _summary(fidelity, scope=None) -> dict:
    summary = {"holdout_segment_fidelity": fidelity.to_dict()}
    return {**summary, "scope": scope} if scope else summary


def test_a_faithful_book_passes_and_a_wrong_segment_fails_naming_it():
    # setup: real histories of a book, a second draw of the same process, and a draw where grade A defaults rarely
    loans, real, schema = make_book(6000, months=12, seed=1)
    faithful = simulate_histories(loans, months=12, seed=2)
    wrong = simulate_histories(loans, months=12, seed=2, miss_scale={"A": 0.2})
    # run
    good = segment_check(_summary(conditional_fidelity(loans, real, faithful, schema=schema)))
    bad = segment_check(_summary(conditional_fidelity(loans, real, wrong, schema=schema)))
    # assert
    assert good.passed and "segments" in good.metadata
    assert not bad.passed and bad.severity == dg.AssetCheckSeverity.WARN
    assert any("grade A" in line for line in bad.metadata["failures"].value)


def test_nothing_judged_is_not_measured_and_dp_shows_no_figures():
    # setup: a holdout of a few dozen loans, where no segment can be judged against a 10% target
    loans, real, schema = make_book(40, months=12, seed=1)
    thin = conditional_fidelity(loans, real, simulate_histories(loans, months=12, seed=2), schema=schema)
    loans, real, schema = make_book(6000, months=12, seed=1)
    judged = conditional_fidelity(loans, real, simulate_histories(loans, months=12, seed=2), schema=schema)
    # run
    nothing = segment_check(_summary(thin))
    private = segment_check(_summary(judged, scope="internal"))
    skipped = segment_check({"holdout_segment_fidelity": {"not_measured": "no holdout loan has a history"}})
    # assert
    assert not nothing.passed and "too thin" in nothing.metadata["not_measured"].value
    assert not skipped.passed and "no holdout loan" in skipped.metadata["not_measured"].value
    assert set(private.metadata) == {"scope"}
