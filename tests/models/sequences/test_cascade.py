"""The LSTM cascade: determinism, sampling rules, persistence, the DP hook and beating the Markov baseline."""

from __future__ import annotations

import json

from datetime import date

import numpy as np
import polars as pl
import pytest

from models.sequences.cascade import (
    CascadeConfig, DPTrainingHook, LoanCascade, StaticEncoder, planned_epochs, static_columns,
)
from models.tape.demo import generate_portfolio
from models.errors import InvalidDataError, NotFittedError, TenantConfigError
from models.sequences.markov import MarkovBaseline
from models.tape.schema import infer_schema
from models.sequences.histories import compare_sequences, validate_histories
from models.sequences.states import ABSORBING
from tests.models.cascade_books import make_book

SMALL = dict(hidden_size=16, epochs=3, batch_size=64, device="cpu")


@pytest.fixture(scope="module")
def book():
    return make_book(400, months=12, seed=4)


@pytest.fixture(scope="module")
def fitted(book):
    loans, perf, schema = book
    return LoanCascade(CascadeConfig(**SMALL)).fit(loans, perf, schema)


def new_ids(loans: pl.DataFrame) -> pl.DataFrame:
    return loans.with_columns(pl.format("S{}", pl.col("loan_id")).alias("loan_id"))


def test_same_seed_gives_identical_weights(book, fitted):
    # setup
    loans, perf, schema = book
    # run
    again = LoanCascade(CascadeConfig(**SMALL)).fit(loans, perf, schema)
    other = LoanCascade(CascadeConfig(**SMALL)).fit(loans, perf, schema, seed=1)
    # assert
    first, second, third = fitted.state_dict(), again.state_dict(), other.state_dict()
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)
    assert not all(np.array_equal(first[k].numpy(), third[k].numpy()) for k in first)


def test_history_records_each_epoch(fitted):
    # setup
    history = fitted.history
    # run
    keys = set(history[0])
    # assert
    assert 1 <= len(history) <= SMALL["epochs"]
    assert {"epoch", "train_loss", "val_loss", "val_nll", "seconds"} <= keys
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def test_sampled_paths_stop_at_absorbing_states_and_term(book, fitted):
    # setup
    loans, _, _ = book
    synthetic = new_ids(loans).with_columns(
        pl.when(pl.col("loan_id").str.ends_with("0")).then(4).otherwise(pl.col("term_months")).alias("term_months")
    )
    # run
    sample = fitted.sample(synthetic, seed=0)
    # assert
    validate_histories(sample, synthetic)  # consecutive months, nothing after an absorbing state, within term
    lengths = sample.group_by("loan_id").agg(pl.len().alias("n")).join(synthetic.select("loan_id", "term_months"), on="loan_id")
    assert (lengths.get_column("n") <= lengths.get_column("term_months")).all()
    assert lengths.filter(pl.col("term_months") == 4).get_column("n").max() <= 4
    assert sample.filter(pl.col("status").is_in(list(ABSORBING))).group_by("loan_id").len().get_column("len").max() == 1
    assert sample.get_column("period").min() == 1
    assert (sample.get_column("balance") >= 0).all() and (sample.get_column("payment") >= 0).all()
    assert (sample.filter(pl.col("status").is_in(["prepaid", "matured"])).get_column("balance") == 0).all()
    expected_month = pl.col("origination_date").dt.offset_by(pl.format("{}mo", pl.col("period")))
    dated = sample.join(synthetic.select("loan_id", "origination_date"), on="loan_id")
    assert dated.select((pl.col("reporting_month") == expected_month).all()).item()
    assert set(sample.columns) >= {"loan_id", "period", "status", "days_past_due", "balance", "payment"}


def test_save_load_gives_identical_samples(tmp_path, book, fitted):
    # setup
    loans, _, _ = book
    folder = fitted.save(tmp_path / "cascade")
    # run
    loaded = LoanCascade.load(folder)
    # assert
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "preprocessing.json", "weights.pt"]
    assert json.loads((folder / "config.json").read_text())["hidden_size"] == SMALL["hidden_size"]
    assert loaded.sample(loans, seed=7).equals(fitted.sample(loans, seed=7))
    assert not fitted.sample(loans, seed=7).equals(fitted.sample(loans, seed=8))
    assert loaded.history == fitted.history
    assert loaded._prep["calibration"] == fitted._prep["calibration"]
    assert np.array_equal(loaded.state_dict()["state_offset"].numpy(), fitted.state_dict()["state_offset"].numpy())


def test_calibration_offsets_are_fitted_and_kept_in_the_state_dict(fitted):
    # setup
    offsets = fitted.state_dict()["state_offset"].numpy()
    # run
    calibration = fitted._prep["calibration"]
    # assert: previous state incl. the start token x months on book x next state
    assert offsets.shape == (8, 12, 7)
    assert calibration["fitted"] is True
    assert np.abs(offsets).max() > 0.0
    assert calibration["nll_after"] < calibration["nll_before"]
    assert 1 <= calibration["free_running_corrections"] <= calibration["free_running_rounds"] <= 3
    assert calibration["free_running_paths"] >= 400
    assert len(calibration["free_running_mean_z2"]) == calibration["free_running_rounds"]


@pytest.fixture(scope="module")
def nonlinear_book():
    portfolio = generate_portfolio(2000, months=12, seed=3, nonlinear=True)
    schema = infer_schema(portfolio.loans, id_columns=["loan_id", "borrower_id"], target="default_flag")
    return portfolio.loans, portfolio.performance, schema


def copies_of(loans: pl.DataFrame, n: int) -> pl.DataFrame:
    """`n` copies of each loan under new ids, so a sample's default rate is measured with little noise."""
    return pl.concat([loans.with_columns(pl.format("C{}-{}", pl.lit(k), pl.col("loan_id")).alias("loan_id")) for k in range(n)])


def test_calibration_brings_the_default_rate_of_a_nonlinear_book_within_ten_percent(nonlinear_book):
    # setup: a short training run on the demo's nonlinear book under-predicts the roll path
    loans, perf, schema = nonlinear_book
    model = LoanCascade(CascadeConfig(hidden_size=32, epochs=8, device="cpu")).fit(loans, perf, schema)
    synthetic = copies_of(loans, 8)
    # run
    calibrated = compare_sequences(perf, model.sample(synthetic, seed=0))
    model._net.state_offset.zero_()  # the same network without its calibration
    uncalibrated = compare_sequences(perf, model.sample(synthetic, seed=0))
    # assert
    assert calibrated.cdr12_relative_diff <= 0.10
    assert uncalibrated.synthetic_cdr < calibrated.synthetic_cdr
    assert uncalibrated.cdr12_relative_diff > 0.10
    assert calibrated.transition_distance["mean"] < 0.5 * uncalibrated.transition_distance["mean"]
    assert calibrated.transition_distance["per_state"]["current"] < 0.002


def test_calibration_can_be_turned_off(book):
    # setup
    loans, perf, schema = book
    # run
    model = LoanCascade(CascadeConfig(**{**SMALL, "calibrate": False})).fit(loans, perf, schema)
    # assert
    assert model._prep["calibration"] == {"fitted": False, "reason": "calibrate is off in the cascade settings"}
    # Only the states the book never holds (dpd90 here) and the moves it never makes are masked; nothing was fitted.
    seen = model._prep["observed_states"]
    moves = np.asarray(model._prep["observed_transitions"])
    offsets = model.state_dict()["state_offset"].numpy()
    masked = ~moves[:, None, :] | ~np.asarray(seen)[None, None, :]
    assert (offsets[np.broadcast_to(masked, offsets.shape)] == -30.0).all()
    assert not offsets[np.broadcast_to(~masked, offsets.shape)].any()
    assert (~moves).any()  # the book has moves it never makes (current -> dpd60 at least)


def test_a_cascade_saved_without_offsets_still_loads(tmp_path, book, fitted):
    # setup: the files of a cascade saved before calibration existed
    import torch

    loans, _, _ = book
    folder = fitted.save(tmp_path / "old")
    weights = torch.load(folder / "weights.pt", weights_only=True)
    del weights["state_offset"]
    torch.save(weights, folder / "weights.pt")
    prep = json.loads((folder / "preprocessing.json").read_text())
    del prep["calibration"]
    (folder / "preprocessing.json").write_text(json.dumps(prep))
    # run
    loaded = LoanCascade.load(folder)
    # assert
    assert not loaded.state_dict()["state_offset"].any()
    assert loaded._prep["calibration"]["fitted"] is False
    assert loaded.sample(loans.head(20), seed=1).height > 0


def test_load_of_an_incomplete_folder_is_refused(tmp_path):
    # setup
    (tmp_path / "config.json").write_text("{}")
    # run / assert
    with pytest.raises(NotFittedError, match=r"missing \['weights.pt', 'preprocessing.json'\]"):
        LoanCascade.load(tmp_path)


def test_cascade_beats_markov_on_an_interaction_book():
    # setup: missed payments depend on (DTI > 30) XOR (income < 50k); grade carries no signal
    loans, perf, schema = make_book(800, months=12, seed=1, interaction=True)
    held_loans, held_perf, _ = make_book(500, months=12, seed=2, interaction=True)
    markov = MarkovBaseline().fit(loans, perf, schema)
    cascade = LoanCascade(CascadeConfig(hidden_size=32, epochs=12, batch_size=64, device="cpu")).fit(loans, perf, schema)
    # run
    markov_ll = markov.log_likelihood(held_loans, held_perf)
    cascade_ll = cascade.log_likelihood(held_loans, held_perf)
    # assert
    assert cascade_ll > markov_ll + 0.02


def test_target_and_identifiers_are_not_inputs(fitted):
    # setup
    columns = fitted._prep["encoder"]
    # run
    names = [c["name"] for c in columns["numeric"]] + columns["boolean"] + [c["name"] for c in columns["categorical"]]
    # assert
    assert "default_flag" not in names and "loan_id" not in names and "borrower_id" not in names
    assert {"grade", "dti", "annual_income", "term_months"} <= set(names)


class RecordingHook:
    """A DP hook that trains without noise and records what `fit` handed it."""

    def __init__(self) -> None:
        self.recurrent_factory = None
        self.units: np.ndarray | None = None
        self.epochs: list[int] = []

    def wrap(self, model, optimizer, data_loader, *, privacy_units):
        self.units = privacy_units
        return model, optimizer, data_loader

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        self.epochs.append(epoch)
        return {"epsilon": 0.5 * epoch}


def test_dp_hook_receives_borrowers_and_reports_per_epoch(book):
    # setup
    loans, perf, schema = book
    hook = RecordingHook()
    # run
    model = LoanCascade(CascadeConfig(**{**SMALL, "epochs": 2, "patience": 5})).fit(loans, perf, schema, dp=hook)
    # assert
    assert isinstance(hook, DPTrainingHook)
    assert hook.epochs == [1, 2]
    assert [h["epsilon"] for h in model.history] == [0.5, 1.0]
    # two loans per borrower in the book, and the split keeps a borrower's loans together
    assert np.bincount(hook.units)[np.unique(hook.units)].max() == 2
    assert len(hook.units) % 2 == 0 and model._prep["train_loans"] is None
    # calibrating on the raw histories would spend privacy the accountant never charged
    assert model._prep["calibration"]["fitted"] is False
    assert "DP-SGD" in model._prep["calibration"]["reason"]
    # Only the never-seen states (public metadata, like the history report's state counts) are masked.
    seen = model._prep["observed_states"]
    assert not model.state_dict()["state_offset"][..., seen].any()


def test_gru_cell_and_recurrent_factory_are_used(book):
    # setup
    loans, perf, schema = book
    built = []

    def factory(cell, input_size, hidden_size, num_layers):
        import torch

        built.append((cell, input_size, hidden_size, num_layers))
        return torch.nn.GRU(input_size, hidden_size, num_layers=num_layers, batch_first=True)

    hook = RecordingHook()
    hook.recurrent_factory = factory
    # run
    model = LoanCascade(CascadeConfig(**{**SMALL, "cell": "gru", "epochs": 1})).fit(loans, perf, schema, dp=hook)
    # assert
    assert built == [("gru", 13 + 16, 16, 1)]
    assert model._prep["recurrent"] == "custom"


def test_dp_trained_model_needs_its_factory_to_load(tmp_path, book):
    # setup
    loans, perf, schema = book
    hook = RecordingHook()
    hook.recurrent_factory = lambda cell, i, h, n: __import__("torch").nn.GRU(i, h, num_layers=n, batch_first=True)
    LoanCascade(CascadeConfig(**{**SMALL, "cell": "gru", "epochs": 1})).fit(loans, perf, schema, dp=hook).save(tmp_path)
    # run / assert
    with pytest.raises(TenantConfigError, match="custom recurrent layer.*recurrent_factory"):
        LoanCascade.load(tmp_path)
    assert LoanCascade.load(tmp_path, recurrent_factory=hook.recurrent_factory).sample(loans.head(5)).height > 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"cell": "rnn"}, "cell must be 'lstm' or 'gru'"),
        ({"validation_share": 1.0}, r"validation_share must be in \[0, 1\)"),
        ({"device": "tpu"}, "device must be"),
        ({"epochs": 0}, "epochs must be at least 1"),
        ({"lr_decay": 0.0}, r"lr_decay must be in \(0, 1\]"),
        ({"schedule_steps": 0}, "schedule_steps must be at least 1 or None"),
        ({"min_epochs": 0}, "min_epochs must be at least 1"),
    ],
)
def test_invalid_settings_are_refused(settings, message):
    # run / assert
    with pytest.raises(TenantConfigError, match=message):
        CascadeConfig(**settings)


@pytest.mark.parametrize(
    ("settings", "batches", "expected"),
    [
        ({}, 27, 12),  # the 5k demo book: 300 steps is 12 epochs
        ({}, 7, 30),  # a 1k book: 43 epochs wanted, capped at `epochs`
        ({}, 125, 12),  # a 20k book: never fewer than min_epochs
        ({}, 20, 15),
        ({"epochs": 4}, 27, 4),  # a short run asked for stays short
        ({"schedule_steps": None}, 27, 30),
    ],
)
def test_planned_epochs_follow_the_step_budget(settings, batches, expected):
    # run / assert
    assert planned_epochs(CascadeConfig(**settings), batches) == expected


def test_the_learning_rate_anneals_over_the_planned_epochs_not_the_cap(book):
    # setup: 400 loans, 85% train at 64 a batch: 6 batches an epoch, so 12 steps plan 2 epochs of the 9 allowed
    loans, perf, schema = book
    config = CascadeConfig(**{**SMALL, "epochs": 9, "schedule_steps": 12, "min_epochs": 2, "patience": 9})
    # run
    cascade = LoanCascade(config).fit(loans, perf, schema)
    # assert: training ran the planned epochs, not the cap
    assert len(cascade.history) == 2


def test_config_round_trips_and_refuses_unknown_keys():
    # setup
    config = CascadeConfig(hidden_size=8, cell="gru")
    # run
    again = CascadeConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    # assert
    assert again == config
    with pytest.raises(TenantConfigError, match=r"unknown cascade setting\(s\) \['hidden'\]"):
        CascadeConfig.from_dict({"hidden": 3})


def test_bad_history_is_refused_before_training(book):
    # setup
    loans, perf, schema = book
    broken = perf.with_columns(
        pl.when(pl.col("loan_id") == "L00003").then(pl.lit("written off")).otherwise(pl.col("status")).alias("status")
    )
    # run / assert
    with pytest.raises(InvalidDataError, match=r"tenant 'acme'.*column 'status'.*'written off'"):
        LoanCascade(CascadeConfig(**SMALL)).fit(loans, broken, schema, tenant="acme")


def test_missing_static_column_at_sampling_is_refused(fitted, book):
    # setup
    loans, _, _ = book
    # run / assert
    with pytest.raises(InvalidDataError, match=r"column 'dti'.*lack the static column"):
        fitted.sample(loans.drop("dti"))


def test_unfitted_cascade_refuses_to_sample(book):
    # setup
    loans, _, _ = book
    # run / assert
    with pytest.raises(NotFittedError, match="cascade is not fitted"):
        LoanCascade().sample(loans)


def test_public_domains_give_an_encoder_that_reads_no_loan_values():
    # setup
    loans, perf, schema = make_book(120, months=6, seed=7)
    other = loans.with_columns((pl.col("dti") * 3.0).alias("dti"), pl.lit("Z").alias("grade"))
    domains = {
        "dti": {"low": 0, "high": 100, "bins": 50},
        "annual_income": {"low": 0, "high": 1_000_000, "bins": 48, "scale": "log1p"},
        "grade": {"categories": ["A", "B", "C", "D"]},
    }
    columns = static_columns(schema, loans)
    # run
    first, left_out = StaticEncoder.from_domains(schema, columns, domains)
    second, _ = StaticEncoder.from_domains(schema, columns, domains)
    model = LoanCascade(CascadeConfig(**{**SMALL, "epochs": 1})).fit(loans, perf, schema, public_domains=domains)
    # assert
    assert first.to_dict() == second.to_dict()
    dti = next(c for c in first.numeric if c["name"] == "dti")
    assert dti == {"name": "dti", "mean": 50.0, "std": 25.0, "log": False}
    income = next(c for c in first.numeric if c["name"] == "annual_income")
    assert income["log"] and income["mean"] == pytest.approx(np.log1p(1_000_000) / 2)
    assert first.categorical == [{"name": "grade", "levels": ["A", "B", "C", "D"]}]
    assert set(left_out) == set(columns) - {"dti", "annual_income", "grade"} - set(first.boolean)
    assert first.transform(other)[:, len(first.numeric) + len(first.boolean) + 4].all()  # unseen "Z" -> other slot
    assert model._prep["encoder_source"] == "public domains" and model._prep["encoder"] == first.to_dict()


# --------------------------------------------------------------------------- histories of any shape


@pytest.fixture(scope="module")
def servicing():
    """Real loans (modeldata credit_data) with a servicing history: ID, month "2019-03", STATUS C/30/60/90/CO/PIF, dpd, bal."""
    from models.tape.performance import read_performance
    from tests.models.servicing_book import servicing_book

    loans, history = servicing_book(600, seed=2, balance=True)
    schema = infer_schema(loans, id_columns=["ID"], target="Status", target_positive=["bad"])
    return loans, history, schema, read_performance


@pytest.mark.parametrize("amounts", [(), ("balance",)], ids=["status-and-dpd-only", "with-balance-no-payment"])
def test_cascade_models_a_history_without_payment(servicing, amounts):
    # setup: the file's columns are ID, month, STATUS, dpd (and bal), none of them named as ours, no payment
    loans, history, schema, read_performance = servicing
    raw = history if amounts else history.drop("bal")
    mapping = {"balance": "bal"} if amounts else {}
    perf = read_performance(raw, loans, tenant="bank", file="performance.csv", loan_id_column="ID", mapping=mapping).frame
    # run
    cascade = LoanCascade(CascadeConfig(**SMALL)).fit(loans, perf, schema, tenant="bank", file="performance.csv")
    markov = MarkovBaseline().fit(loans, perf, schema)
    synthetic = cascade.sample(loans, seed=1)
    baseline = markov.sample(loans, seed=1)
    # assert: the states are modelled, only the amounts the file had come back, no state the file never had
    for sample in (synthetic, baseline):
        assert [c for c in ("balance", "payment") if c in sample.columns] == list(amounts)
        assert set(sample.get_column("status").unique()) <= set(perf.get_column("status").unique())
        validate_histories(sample)
    assert np.isfinite(cascade.log_likelihood(loans, perf))
    if amounts:
        assert synthetic.get_column("balance").drop_nulls().min() >= 0.0


def moves_of(history: pl.DataFrame) -> set[tuple[str, str]]:
    """The (previous status, status) moves of a canonical history, "start" for a path's first month."""
    id_column = "loan_id"
    ordered = history.sort(id_column, "period").with_columns(
        pl.col("status").cast(pl.String).shift(1).over(id_column).fill_null("start").alias("previous")
    )
    return set(ordered.select("previous", pl.col("status").cast(pl.String)).unique().iter_rows())


def test_cascade_never_samples_a_move_the_servicer_never_makes(servicing):
    # setup: real loans whose servicer moves C -> 30 -> 60 -> 90 -> CO one bucket a month: 60 never goes back to 30,
    # C never jumps to 60. A small, briefly trained network spreads a little probability over every move.
    from models.tape.performance import read_performance

    loans, history, schema, _ = servicing
    perf = read_performance(history, loans, tenant="bank", file="performance.csv", loan_id_column="ID",
                            mapping={"balance": "bal"}).frame
    real = moves_of(perf)
    cascade = LoanCascade(CascadeConfig(**SMALL)).fit(loans, perf, schema, tenant="bank", file="performance.csv")
    many = pl.concat([loans.with_columns(pl.format("C{}-{}", pl.lit(k), pl.col("ID")).alias("ID")) for k in range(10)])
    # run
    synthetic = moves_of(cascade.sample(many, seed=3))
    # assert: every synthetic move is one the servicer makes, and the common ones all appear
    assert synthetic <= real, sorted(synthetic - real)
    assert {("start", "current"), ("current", "current"), ("current", "dpd30"), ("dpd30", "current")} <= synthetic
    # under DP which moves occur is an uncharged statistic: nothing is masked there (see test_dp_cascade)
    assert cascade._prep["observed_transitions"] is not None


def test_sampling_a_saved_cascade_does_not_load_torchs_compiler(tmp_path, book, fitted):
    # setup: the step that samples a stored cascade runs in its own process under the multiprocess and Celery
    # executors; torch.use_deterministic_algorithms imports torch's compiler (about 0.9 s) only to set its flag,
    # and nothing here compiles
    import subprocess
    import sys
    import textwrap

    loans, _, _ = book
    folder = fitted.save(tmp_path / "cascade")
    loans.head(50).write_parquet(tmp_path / "loans.parquet")
    script = textwrap.dedent(
        f"""
        import sys
        import polars as pl
        import torch
        from models.sequences.cascade import LoanCascade

        model = LoanCascade.load({str(folder)!r})
        model.sample(pl.read_parquet({str(tmp_path / "loans.parquet")!r}), seed=0)
        print("compiler loaded" if "torch._inductor.config" in sys.modules else "compiler not loaded")
        """
    )
    # run
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    # assert
    assert "compiler not loaded" in out.stdout, out.stdout + out.stderr


def test_deterministic_kernels_are_on_while_fitting_and_the_callers_setting_comes_back(book):
    # setup: a caller that had switched deterministic kernels on keeps them on; one that had not, not
    import torch

    from models.sequences import cascade as module

    loans, perf, schema = book
    seen = []
    original = module._losses

    def spy(*args, **kwargs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return original(*args, **kwargs)

    # run
    try:
        module._losses = spy
        LoanCascade(CascadeConfig(**{**SMALL, "epochs": 1})).fit(loans, perf, schema)
    finally:
        module._losses = original
    # assert
    assert seen and all(seen)
    assert not torch.are_deterministic_algorithms_enabled()


def test_histories_drawn_given_each_loans_default_agree_with_it(book, fitted):
    # setup: the book's own flags, and the same number of flags shuffled onto other loans (outcomes the model
    # finds less likely), each asked of the cascade
    loans, _, _ = book
    flags = loans.get_column("default_flag").cast(pl.Boolean).to_numpy()
    shuffled = np.random.default_rng(0).permutation(flags)
    for wanted in (flags, shuffled):
        report: dict = {}
        # run
        history = fitted.sample(loans, seed=2, defaults=wanted, report=report)
        # assert: every loan's history reaches default exactly when asked, but the few the summary counts
        reached = history.group_by("loan_id").agg((pl.col("status") == "default").any().alias("reached"))
        got = loans.select("loan_id").join(reached, on="loan_id", how="left").get_column("reached").fill_null(False)
        disagree = int((got.to_numpy() != wanted).sum())
        assert disagree == report["unmatched"] <= 0.02 * loans.height, report
        assert report["matched"] + report["unmatched"] == loans.height and report["defaults_asked"] == int(wanted.sum())
    # the same seed gives the same histories
    again = fitted.sample(loans, seed=2, defaults=shuffled)
    assert again.equals(history)
    with pytest.raises(ValueError, match="defaults has"):
        fitted.sample(loans, seed=2, defaults=flags[:-1])


# --------------------------------------------------------------------------- the tape's cut-off


@pytest.mark.parametrize("origination", [True, False, "issue_d", "Disbursement Date"],
                         ids=["origination-dates", "no-origination-dates", "lending-club-name", "servicer-name"])
def test_sampled_histories_stop_at_the_tapes_cut_off(origination):
    # setup: loans originated over 2021, all observed to the extract's as-of month 2022-12, so a real history runs
    # 12 to 23 months and an open one ends at the cut-off (censored there, not ended). A tape that names the
    # origination date its own way (issue_d) had its loans' first months drawn at random, so a synthetic loan's
    # history could start years before or after the loan itself
    from tests.models.sequences.cutoff_books import CUTOFF, cutoff_book, history_ends

    loans, perf, schema = cutoff_book(300, seed=1, origination=origination)
    real = history_ends(perf)
    cascade = LoanCascade(CascadeConfig(**SMALL)).fit(loans, perf, schema)
    synthetic = new_ids(loans)
    flags = loans.get_column("default_flag").cast(pl.Boolean).to_numpy()
    report: dict = {}
    # run
    free = cascade.sample(synthetic, seed=0)
    given = cascade.sample(synthetic, seed=0, defaults=flags, report=report)
    # assert: no synthetic month passes the cut-off, and every open path runs up to it (the term and the longest
    # history allow more), starting where a real loan would
    real_first = set(real.get_column("first").to_list())
    for sample in (free, given):
        validate_histories(sample, synthetic)
        ends = history_ends(sample)
        assert sample.get_column("reporting_month").max() <= CUTOFF
        assert ends.filter(pl.col("open")).get_column("last").unique().to_list() == [CUTOFF]
        assert set(ends.get_column("first").to_list()) <= real_first
        assert ends.get_column("months").max() <= real.get_column("months").max()
        if origination:  # each loan is observed from the month after its origination
            named = origination if isinstance(origination, str) else "origination_date"
            dated = ends.join(synthetic.select("loan_id", pl.col(named).alias("_origin")), on="loan_id")
            assert dated.select((pl.col("first") == pl.col("_origin").dt.offset_by("1mo")).all()).item()
    # drawn given each loan's flag, a defaulted loan's history reaches default before the cut-off
    assert report["unmatched"] <= 0.02 * loans.height, report
    window = cascade.observation_window.describe()
    assert window["capped"] and window["as_of"] == "2022-12", window
    # without origination dates a loan's first month is drawn from the real loans' first months
    assert (cascade._prep["observation_window"]["starts"] is None) == bool(origination)


def test_a_defaulted_loan_placed_past_the_cut_off_is_counted_not_redrawn():
    # setup: synthetic loans whose origination falls after the extract's as-of month have no month to observe;
    # asked to default, no draw can give them a default (the review found them kept pending through every round)
    from tests.models.sequences.cutoff_books import CUTOFF, cutoff_book

    loans, perf, schema = cutoff_book(200, seed=3)
    cascade = LoanCascade(CascadeConfig(**{**SMALL, "epochs": 1})).fit(loans, perf, schema)
    synthetic = new_ids(loans).with_columns(
        pl.when(pl.int_range(pl.len()) < 5).then(pl.lit(date(2023, 6, 1))).otherwise(pl.col("origination_date"))
        .alias("origination_date"))
    wanted = np.zeros(synthetic.height, dtype=bool)
    wanted[:5] = True
    report: dict = {}
    # run
    history = cascade.sample(synthetic, seed=0, defaults=wanted, report=report)
    # assert: no history for them, each counted as not observable and unmatched; the rest is drawn as usual
    assert history.filter(pl.col("loan_id").is_in(synthetic.get_column("loan_id").head(5).implode())).height == 0
    assert report["not_observable"] == 5 and report["unmatched_defaults"] >= 5
    assert history.get_column("reporting_month").max() <= CUTOFF


def test_a_declared_cut_off_is_checked_and_under_dp_is_the_only_one(tmp_path):
    # setup
    from tests.models.sequences.cutoff_books import CUTOFF, cutoff_book, history_ends

    loans, perf, schema = cutoff_book(200, seed=2)
    quick = CascadeConfig(**{**SMALL, "epochs": 1})
    # run / assert: a declaration the history contradicts is refused, naming the key and the file
    with pytest.raises(TenantConfigError, match=r"tenant 'bank', file 'tenant.yaml'.*performance\.as_of.*2022-06"):
        LoanCascade(quick).fit(loans, perf, schema, as_of="2022-06", tenant="bank")
    # a declared cut-off later than the history's last month is taken as declared
    later = LoanCascade(quick).fit(loans, perf, schema, as_of="2023-03")
    assert later.observation_window.describe()["as_of"] == "2023-03"
    assert later.sample(new_ids(loans), seed=0).get_column("reporting_month").max() > CUTOFF
    # under DP the history's own last month is an uncharged statistic: never read, so without a declaration the
    # histories are not capped, and with one they stop there, each loan placed by its origination date and the
    # public offset (the real loans' first months are not read either)
    undeclared = LoanCascade(quick).fit(loans, perf, schema, dp=RecordingHook())
    declared = LoanCascade(quick).fit(loans, perf, schema, dp=RecordingHook(), as_of="2022-12")
    window = undeclared.observation_window.describe()
    assert not window["capped"] and "under DP" in window["reason"] and "performance.as_of" in window["reason"]
    assert undeclared.observation_window.limits(np.zeros(3)) is None
    assert declared.observation_window.describe()["source"] == "declared in tenant.yaml (performance.as_of)"
    assert declared._prep["observation_window"] == {"as_of": 2022 * 12 + 11, "source": declared.observation_window.source,
                                                    "offset": 1, "starts": None}
    assert history_ends(declared.sample(new_ids(loans), seed=0)).get_column("last").max() <= CUTOFF
    # a saved cascade keeps its window
    assert LoanCascade.load(declared.save(tmp_path / "dp")).observation_window == declared.observation_window


def _rises(history: pl.DataFrame, state: str) -> tuple[int, int]:
    """Months in `state` after a month in `state`, and how many of them hold a higher balance than the month before."""
    ordered = history.sort("loan_id", "period").with_columns(
        pl.col("balance").shift(1).over("loan_id").alias("before"), pl.col("status").shift(1).over("loan_id").alias("was"),
    )
    months = ordered.filter((pl.col("status") == state) & (pl.col("was") == state) & pl.col("before").is_not_null())
    return months.height, months.filter(pl.col("balance") > pl.col("before") * (1 + 1e-6)).height


def test_balances_that_never_rise_while_current_do_not_rise_in_the_sampled_paths(tmp_path):
    # setup: the demo book's amortising loans: no real current-to-current month holds a higher balance
    portfolio = generate_portfolio(1500, months=12, seed=21)
    loans, perf = portfolio.loans, portfolio.performance
    schema = infer_schema(loans, id_columns=["loan_id", "borrower_id"], target="default_flag", target_positive=[1])
    months, rising = _rises(perf, "current")
    assert months > 5000 and rising == 0
    # run: the default network (the small one of the other tests happens to stay under 1 on this book)
    model = LoanCascade(CascadeConfig(device="cpu")).fit(loans, perf, schema)
    sample = model.sample(new_ids(loans), seed=1)
    reloaded = LoanCascade.load(model.save(tmp_path / "cascade")).sample(new_ids(loans), seed=1)
    # assert: none of the sampled current-to-current months rises (9% did here, 18% in the 5,000-loan demo, each a
    # little), before or after a save and load; balances still fall
    months, rising = _rises(sample, "current")
    assert months > 3000 and rising == 0, f"{rising} of {months} sampled current months rise"
    assert _rises(reloaded, "current")[1] == 0
    assert sample.get_column("balance").min() < loans.get_column("loan_amount").min()


def test_a_book_whose_current_balances_rise_keeps_them_rising():
    # setup: the same book with every current balance 3% above the month before's, as a revolving line draws
    portfolio = generate_portfolio(1500, months=12, seed=22)
    loans = portfolio.loans
    perf = portfolio.performance.sort("loan_id", "period").with_columns(
        pl.when(pl.col("status") == "current")
        .then(pl.col("balance").first().over("loan_id") * pl.lit(1.03).pow(pl.col("period")))
        .otherwise(pl.col("balance")).alias("balance")
    )
    schema = infer_schema(loans, id_columns=["loan_id", "borrower_id"], target="default_flag", target_positive=[1])
    # run
    model = LoanCascade(CascadeConfig(**SMALL)).fit(loans, perf, schema)
    sample = model.sample(new_ids(loans), seed=1)
    # assert: the ceiling is only where the book shows it; here current balances rise in the sample too
    months, rising = _rises(sample, "current")
    assert rising > 0.5 * months


def test_under_dp_a_first_payment_date_is_period_1_itself():
    # setup: under DP the reporting offset is a public constant, one month after origination; an agency tape's start
    # date is its FIRST_PAYMENT_DATE, already that month, so histories started a month late and were cut a month early
    from models.sequences.cascade import _public_offset

    perf = pl.DataFrame({"loan_id": ["a"], "period": [1], "reporting_month": [date(2020, 2, 1)]})
    # run / assert
    assert _public_offset(perf, pl.DataFrame({"id": ["a"], "FIRST_PAYMENT_DATE": [date(2020, 2, 1)]})) == 0
    assert _public_offset(perf, pl.DataFrame({"id": ["a"], "issue_d": [date(2020, 1, 1)]})) == 1
    assert _public_offset(perf, pl.DataFrame({"id": ["a"], "origination_date": ["2020-01"]})) is None  # text, no date
