"""The Markov baseline: per-segment chains, sampling, scoring and JSON persistence."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from models.errors import InvalidDataError, NotFittedError, TenantConfigError
from models.sequences.markov import MarkovBaseline
from models.sequences.histories import transition_distance, validate_histories
from models.sequences.states import ABSORBING, STATE_INDEX
from tests.models.cascade_books import make_book


@pytest.fixture(scope="module")
def book():
    return make_book(600, months=12, seed=3)


@pytest.fixture(scope="module")
def fitted(book):
    loans, perf, schema = book
    return MarkovBaseline().fit(loans, perf, schema)


def new_ids(loans: pl.DataFrame) -> pl.DataFrame:
    return loans.with_columns(pl.format("S{}", pl.col("loan_id")).alias("loan_id"))


def test_segments_default_to_grade_and_separate_risk(fitted):
    # setup
    model = fitted._fitted
    levels = model["segment"]["levels"]
    transition = np.asarray(model["transition"])
    # run
    miss = {level: transition[i, 0, 1] for i, level in enumerate(levels) if level in ("A", "C")}
    # assert: grade C misses payments (6 %) far more often than grade A (1 %)
    assert model["segment"]["column"] == "grade"
    assert miss["C"] > 2 * miss["A"]


def test_a_plain_chain_pools_the_book_and_cannot_separate_grades(tmp_path, book, fitted):
    # setup
    loans, perf, schema = book
    # run
    plain = MarkovBaseline(segmented=False).fit(loans, perf, schema)
    loaded = MarkovBaseline.load(plain.save(tmp_path).parent)
    sample = plain.sample(new_ids(loans), seed=2).join(
        new_ids(loans).select("loan_id", "grade"), on="loan_id"
    )
    # assert: one segment, so grade A and grade C miss payments alike in its sample (the book's mix, about 3 %)
    assert plain._fitted["segment"] == {"column": None, "kind": "none", "levels": ["all"], "edges": []}
    assert loaded.segmented is False and loaded._fitted["segment"]["levels"] == ["all"]
    miss = {g: sample.filter((pl.col("grade") == g) & (pl.col("status") == "dpd30")).height
            / sample.filter(pl.col("grade") == g).height for g in ("A", "C")}
    assert miss["C"] < 1.6 * miss["A"]
    assert plain.log_likelihood(loans, perf) < fitted.log_likelihood(loans, perf)
    with pytest.raises(TenantConfigError, match="plain Markov chain"):
        MarkovBaseline(segmented=False).fit(loans, perf, schema, segment_column="grade")


def test_sample_paths_end_at_absorbing_states_and_term(book, fitted):
    # setup
    loans, perf, _ = book
    synthetic = new_ids(loans)
    # run
    sample = fitted.sample(synthetic, seed=5)
    # assert
    validate_histories(sample, synthetic)  # no gaps, no leaving an absorbing state, within term
    lengths = sample.group_by("loan_id").agg(pl.len().alias("n"), pl.col("status").last().alias("last"))
    terms = lengths.join(synthetic.select("loan_id", "term_months"), on="loan_id")
    assert (terms.get_column("n") <= terms.get_column("term_months")).all()
    absorbed = sample.filter(pl.col("status").is_in(list(ABSORBING)))
    assert absorbed.group_by("loan_id").len().get_column("len").max() == 1
    assert sample.get_column("loan_id").str.starts_with("S").all()
    assert (sample.filter(pl.col("status").is_in(["prepaid", "matured"])).get_column("balance") == 0).all()


def test_sample_transitions_follow_the_real_book(book, fitted):
    # setup
    loans, perf, _ = book
    # run
    sample = fitted.sample(new_ids(loans), seed=1)
    # assert
    assert transition_distance(perf, sample)["per_state"]["current"] < 0.01


def test_same_seed_same_sample_and_save_load(tmp_path, book, fitted):
    # setup
    loans, _, _ = book
    fitted.save(tmp_path / "markov")
    # run
    loaded = MarkovBaseline.load(tmp_path / "markov")
    # assert
    assert loaded.sample(loans, seed=2).equals(fitted.sample(loans, seed=2))
    assert not fitted.sample(loans, seed=2).equals(fitted.sample(loans, seed=3))


def test_log_likelihood_is_mean_per_transition(book, fitted):
    # setup
    loans, perf, _ = book
    # run
    ll = fitted.log_likelihood(loans, perf)
    # assert: about the entropy of 1-6 % misses plus 1 % prepayment, far from uniform over 7 states
    assert -0.5 < ll < -0.05
    assert ll > np.log(1 / 7)


def test_numeric_segment_column_is_binned(book):
    # setup
    loans, perf, schema = book
    # run
    model = MarkovBaseline().fit(loans, perf, schema, segment_column="dti")
    # assert
    assert model._fitted["segment"]["kind"] == "numeric"
    assert len(model._fitted["segment"]["levels"]) == 5


def test_unknown_segment_column_is_refused(book):
    # setup
    loans, perf, schema = book
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'score'.*not in the loans table"):
        MarkovBaseline().fit(loans, perf, schema, segment_column="score", tenant="acme")


def test_unfitted_model_refuses_to_sample(book):
    # setup
    loans, _, _ = book
    # run / assert
    with pytest.raises(NotFittedError, match="not fitted.*call fit"):
        MarkovBaseline().sample(loans)


def test_a_state_the_history_never_holds_is_never_sampled():
    # setup: a book whose loans never prepay or mature, with neither balance nor payment
    loans, perf, schema = make_book(300, months=8, seed=5)
    perf = perf.filter(~pl.col("status").is_in(["prepaid", "matured"])).drop("balance", "payment")
    # run
    model = MarkovBaseline().fit(loans, perf, schema)
    sample = model.sample(new_ids(loans), seed=0)
    # assert: the pooled pseudo-counts no longer give a never-seen state a chance, and no amount is made up
    never = [STATE_INDEX["dpd90"], STATE_INDEX["prepaid"], STATE_INDEX["matured"]]
    assert np.asarray(model._fitted["transition"])[..., never].max() == 0.0
    assert np.asarray(model._fitted["initial"])[..., never].max() == 0.0
    assert set(sample.get_column("status").unique()) <= {"current", "dpd30", "dpd60", "default"}
    assert "balance" not in sample.columns and "payment" not in sample.columns


@pytest.mark.parametrize("origination", [True, False], ids=["origination-dates", "no-origination-dates"])
def test_sampled_histories_stop_at_the_tapes_cut_off_as_the_cascades_do(tmp_path, origination):
    # setup: loans originated over 2021, all observed to the extract's as-of month 2022-12 (12 to 23 months each)
    from tests.models.sequences.cutoff_books import CUTOFF, cutoff_book, history_ends

    loans, perf, schema = cutoff_book(400, seed=5, origination=origination)
    real = history_ends(perf)
    synthetic = new_ids(loans)
    # run
    model = MarkovBaseline().fit(loans, perf, schema)
    ends = history_ends(model.sample(synthetic, seed=1))
    # assert: nothing past the cut-off; an open path runs to it, from a first month a real loan has
    assert ends.get_column("last").max() == CUTOFF
    assert ends.filter(pl.col("open")).get_column("last").unique().to_list() == [CUTOFF]
    assert set(ends.get_column("first").to_list()) <= set(real.get_column("first").to_list())
    opened = ends.filter(pl.col("open")).get_column("months")
    assert (opened.min(), opened.max()) == (12, 23)  # the 2021-12 vintage to the 2021-01 one
    # the window is saved with the chain
    loaded = MarkovBaseline.load(model.save(tmp_path).parent)
    assert loaded.sample(synthetic, seed=1).equals(model.sample(synthetic, seed=1))
