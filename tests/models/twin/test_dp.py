"""Differentially private synthesis: the releases, the plan, the DP copula, DP-SGD, and empirical falsification."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import polars as pl
import pytest

from models.privacy.accounting import MechanismSpec
from models.sequences.cascade import CascadeConfig, DPTrainingHook, LoanCascade
from models.tape.demo import generate_portfolio
from models.twin.dp import (
    DEFAULT_DOMAINS,
    DiscreteLaplace,
    DPGaussianCopula,
    OpacusDPHook,
    PublicDomain,
    bound_units,
    concordance,
    concordance_sensitivity,
    dp_recurrent_factory,
    empirical_epsilon_lower_bound,
    expected_tau,
    latent_rho,
    noisy_concordance,
    noisy_histogram,
    plan_dp_copula,
    plan_dpsgd,
    project_counts,
    stability_threshold,
)
from models.errors import InvalidDataError, TenantConfigError
from models.privacy.errors import InvalidMechanismError
from models.tape.schema import infer_schema
from tests.models.cascade_books import make_book

DEMO_DOMAINS = {
    "product": {"categories": ["mortgage", "auto", "personal", "card"]},
    "grade": {"categories": list("ABCDEFG")},
    "home_ownership": {"categories": ["mortgage", "own", "rent"]},
    "origination_date": {"low": "2019-01-01", "high": "2021-01-01", "bins": 24},
}
TRIALS = 3000
ALPHA = 1e-4


@pytest.fixture(scope="module")
def demo():
    book = generate_portfolio(3000, seed=5)
    loans = book.loans
    schema = infer_schema(loans, id_columns=["loan_id", "borrower_id"], target="default_flag", target_positive=[1])
    return loans, schema


def demo_plan(loans, schema, epsilon, **kwargs):
    units = bound_units(loans, "borrower_id").height
    return plan_dp_copula(loans.columns, epsilon, n_units=units, domains=DEMO_DOMAINS, target="default_flag",
                          target_positive=[1], privacy_unit_column="borrower_id", **kwargs)


# --------------------------------------------------------------------------- statistics


def test_concordance_matches_brute_force_with_ties_and_missing_codes():
    # setup
    rng = np.random.default_rng(0)
    x = rng.integers(-1, 5, 60)
    y = rng.integers(-1, 4, 60)
    # run
    fast = concordance(x, y, 5, 4)
    # assert
    brute = 0
    for i, j in combinations(range(60), 2):
        if min(x[i], x[j], y[i], y[j]) >= 0:
            brute += int(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j]))
    assert fast == brute


def test_concordance_moves_by_at_most_its_sensitivity_when_one_row_changes():
    # setup
    n = 40
    x = np.arange(n)
    y = np.arange(1, n + 1)
    changed = y.copy()
    changed[-1] = 0
    # run
    before, after = concordance(x, y, n, n + 1), concordance(x, changed, n, n + 1)
    # assert
    assert before == n * (n - 1) // 2
    assert before - after == concordance_sensitivity(n)


def test_latent_rho_inverts_expected_tau_and_tends_to_the_sine_map_for_fine_bins():
    # setup
    fine = np.linspace(0.0, 1.0, 201)
    binary = np.array([0.0, 0.9, 1.0])
    # run
    tau_fine = expected_tau(0.6, fine, fine)
    back = latent_rho(expected_tau(0.45, binary, fine), binary, fine)
    # assert
    assert tau_fine == pytest.approx(2 / math.pi * math.asin(0.6), abs=0.01)
    assert back == pytest.approx(0.45, abs=1e-3)
    # a binary column attenuates tau strongly; the inversion undoes it
    assert abs(expected_tau(0.45, binary, fine)) < 0.15


def test_project_counts_keeps_the_total_and_removes_spurious_mass_in_empty_bins():
    # setup
    noisy = np.array([1000, 3, -4, 2, 500, -1])
    # run
    out = project_counts(noisy)
    # assert
    assert np.all(out >= 0)
    assert out.sum() == pytest.approx(noisy.sum())
    # the negative noise is taken back from every bin alike, so small (likely empty) bins shrink the most
    assert out[1] < 3 and out[3] < 2 and out[3] < out[1]
    assert out[0] == pytest.approx(1000 - (3 - out[1]))


def test_discrete_laplace_adds_integer_noise_of_the_right_spread():
    # setup
    sampler = DiscreteLaplace()
    # run
    noisy = sampler(np.zeros(20_000, dtype=np.int64), 4.0)
    # assert
    assert noisy.dtype == np.int64
    alpha = math.exp(-1 / 4.0)
    assert noisy.var() == pytest.approx(2 * alpha / (1 - alpha) ** 2, rel=0.1)
    with pytest.raises(InvalidMechanismError, match="integer counts"):
        sampler(np.zeros(3), 1.0)


def test_stability_threshold_bounds_the_chance_of_publishing_a_unique_value():
    # setup
    scale, tail = 20.0, 1e-6
    # run
    t = stability_threshold(scale, tail)
    # assert
    alpha = math.exp(-1 / scale)
    assert alpha ** (t - 1) / (1 + alpha) <= tail < alpha ** (t - 2) / (1 + alpha)


# --------------------------------------------------------------------------- plan


def test_plan_spends_exactly_epsilon_from_public_information(demo):
    # setup
    loans, schema = demo
    # run
    plan = demo_plan(loans, schema, 1.0, split=0.4)
    # assert
    composition = plan.composition()
    assert composition.epsilon == pytest.approx(1.0)
    assert composition.accountant == "pure-sum"
    assert composition.delta > 0  # region's category list is paid for (stability histogram)
    kinds = {c.name: c.kind for c in plan.columns}
    assert kinds["region"] == "auto" and kinds["grade"] == "categories"
    assert kinds["term_months"] == "values" and kinds["credit_score"] == "bins"
    assert kinds["default_flag"] == "stability" and kinds["loan_id"] == "identifier"
    assert "ltv#null" in plan.latent and "credit_score#null" in plan.latent  # every modelled column is nullable
    assert plan.pair_epsilon * plan.n_pairs == pytest.approx(0.6)
    assert plan.to_dict() == type(plan).from_dict(plan.to_dict()).to_dict()


def test_plan_pays_for_the_structure_of_columns_without_a_public_domain(demo):
    # setup
    loans, schema = demo
    # run
    plan = plan_dp_copula(loans.columns, 1.0, n_units=loans.height)
    # assert
    assert {c.name: c.kind for c in plan.columns}["origination_date"] == "auto"
    assert any("value-class" in m.description for m in plan.mechanisms)
    assert any("private bounds" in m.description for m in plan.mechanisms)


def test_plan_refuses_bad_settings(demo):
    # setup
    loans, schema = demo
    # run / assert
    with pytest.raises(TenantConfigError, match="dp_split"):
        plan_dp_copula(loans.columns, 1.0, n_units=loans.height, split=1.0)
    with pytest.raises(TenantConfigError, match="privacy.epsilon"):
        plan_dp_copula(loans.columns, -1.0, n_units=loans.height)
    with pytest.raises(TenantConfigError, match="does not have"):
        plan_dp_copula(loans.columns, 1.0, n_units=loans.height, domains={"nope": {"low": 0, "high": 1}})
    with pytest.raises(TenantConfigError, match="target"):
        plan_dp_copula(loans.columns, 1.0, n_units=loans.height, target="default_flag",
                       domains={"default_flag": {"low": 0, "high": 1}})
    with pytest.raises(TenantConfigError, match="low"):
        PublicDomain.from_dict("x", {"low": 5, "high": 1})


def test_default_domains_are_valid_declarations():
    # run
    parsed = {name: PublicDomain.from_dict(name, data) for name, data in DEFAULT_DOMAINS.items()}
    # assert
    assert parsed["credit_score"].kind == "bins" and parsed["term_months"].kind == "values"


# --------------------------------------------------------------------------- the DP copula


def test_dp_copula_fits_and_samples_within_public_domains(demo, tmp_path):
    # setup
    loans, schema = demo
    plan = demo_plan(loans, schema, 8.0)
    # run
    model = DPGaussianCopula(plan).fit(loans, schema)
    synthetic = model.sample(2000, seed=3)
    # assert
    assert set(synthetic.columns) == set(loans.columns)
    assert synthetic["credit_score"].min() >= 300 and synthetic["credit_score"].max() <= 850
    # every column has a public null bin under DP, so a few noisy nulls may appear
    assert set(synthetic["term_months"].drop_nulls().unique().to_list()) <= set(DEFAULT_DOMAINS["term_months"]["values"])
    assert set(synthetic["grade"].drop_nulls().unique().to_list()) <= set("ABCDEFG")
    assert (synthetic["default_flag"] == "1").mean() == pytest.approx(loans["default_flag"].mean(), abs=0.04)
    assert synthetic["loan_id"].str.starts_with("SYN-DP-").all()
    # the dependence survives the noise: rates rise with grade, ltv is null mostly for unsecured products
    rates = synthetic.drop_nulls("grade").group_by("grade").agg(pl.col("interest_rate").mean()).sort("grade")["interest_rate"]
    assert rates[0] < rates[-1]
    assert model.summary()["differential_privacy"]["epsilon"] == pytest.approx(8.0)
    model.save(tmp_path / "dp")
    again = DPGaussianCopula.load(tmp_path / "dp")
    assert again.sample(200, seed=9).equals(model.sample(200, seed=9))
    from models.twin.engine import load_engine

    loaded = load_engine(tmp_path / "dp")  # the generic loader keeps the DP model (and its label)
    assert isinstance(loaded, DPGaussianCopula)
    assert loaded.summary()["differential_privacy"]["epsilon"] == pytest.approx(8.0)


def test_dp_copula_refuses_a_table_that_needs_a_different_plan(demo):
    # setup
    loans, schema = demo
    plan = demo_plan(loans, schema, 1.0)
    # run / assert
    with pytest.raises(InvalidDataError, match="different plan|was made"):
        DPGaussianCopula(plan).fit(loans.head(loans.height - 10), schema)


def test_dp_copula_conditions_like_the_twin(demo):
    # setup
    loans, schema = demo
    model = DPGaussianCopula(demo_plan(loans, schema, 4.0)).fit(loans, schema)
    # run
    synthetic = model.sample(1000, seed=1, conditions={"target_rate": 0.25, "fixed": {"product": "auto"}})
    # assert
    assert (synthetic["default_flag"] == "1").sum() == 250
    assert (synthetic["product"] == "auto").all()


def test_a_non_dp_model_folder_is_refused_by_the_dp_loader(demo, tmp_path):
    # setup
    from models.twin.copula import GaussianCopulaTwin

    loans, schema = demo
    GaussianCopulaTwin().fit(loans.head(500), schema).save(tmp_path / "plain")
    # run / assert
    with pytest.raises(InvalidDataError, match="DP copula's plan"):
        DPGaussianCopula.load(tmp_path / "plain")


# --------------------------------------------------------------------------- empirical falsification


def _histogram_hits(counts: np.ndarray, codes: np.ndarray, scale: float, sampler) -> np.ndarray:
    """Hits of events {X_j - c_j >= u and X_k - c_k <= -v} over TRIALS releases (c: counts of the reference table)."""
    offsets = np.array([0, 1, 2])
    outputs = np.stack([noisy_histogram(codes, counts.size, scale=scale, sampler=sampler) for _ in range(TRIALS)])
    shifted = outputs - counts
    hits = []
    for j, k in combinations(range(counts.size), 2):
        for first, second in ((j, k), (k, j)):
            for u in offsets:
                for v in offsets:
                    hits.append(np.sum((shifted[:, first] >= u) & (shifted[:, second] <= -v)))
    return np.array(hits)


def _histogram_loss(scale_factor: float, epsilon: float) -> float:
    sampler = DiscreteLaplace()
    codes = np.repeat(np.arange(4), [6, 5, 4, 5])
    neighbour = codes.copy()
    neighbour[0] = 1  # one row moves from bin 0 to bin 1
    counts = np.bincount(codes, minlength=4)
    scale = 2.0 / epsilon * scale_factor
    return empirical_epsilon_lower_bound(
        _histogram_hits(counts, codes, scale, sampler), _histogram_hits(counts, neighbour, scale, sampler), TRIALS,
        alpha=ALPHA,
    )


def _concordance_loss(scale_factor: float, epsilon: float) -> float:
    sampler = DiscreteLaplace()
    n = 30
    x = np.arange(n)
    y = np.arange(1, n + 1)
    neighbour = y.copy()
    neighbour[-1] = 0  # the changed row turns from concordant with every row to discordant
    sensitivity = concordance_sensitivity(n)
    scale = sensitivity / epsilon * scale_factor
    reference = concordance(x, y, n, n + 1)
    thresholds = reference + sensitivity * np.linspace(-2.0, 1.0, 13)

    def hits(ys):
        out = np.array([noisy_concordance(x, ys, n, n + 1, scale=scale, sampler=sampler) for _ in range(TRIALS)])
        return np.concatenate([(out[:, None] >= thresholds).sum(0), (out[:, None] <= thresholds).sum(0)])

    return empirical_epsilon_lower_bound(hits(y), hits(neighbour), TRIALS, alpha=ALPHA)


def test_histogram_release_stays_within_its_epsilon_and_an_under_noised_one_is_caught():
    # setup
    epsilon = 1.0
    # run
    honest = _histogram_loss(1.0, epsilon)
    broken = _histogram_loss(0.25, epsilon)
    # assert
    assert honest <= epsilon
    assert broken > epsilon


def test_concordance_release_stays_within_its_epsilon_and_an_under_noised_one_is_caught():
    # setup
    epsilon = 1.0
    # run
    honest = _concordance_loss(1.0, epsilon)
    broken = _concordance_loss(0.25, epsilon)
    # assert
    assert honest <= epsilon
    assert broken > epsilon


# --------------------------------------------------------------------------- DP-SGD


def test_plan_dpsgd_calibrates_noise_to_the_target_epsilon():
    # run
    spec = plan_dpsgd(1000, 100, 3, 2.0, 1e-5)
    # assert
    assert spec.kind == "subsampled_gaussian" and spec.sampling_rate == pytest.approx(0.1) and spec.steps == 30
    assert spec.epsilon <= 2.0 * (1 + 1e-3)
    # the noise is calibrated under replace-one borrower (models.privacy.accounting.NEIGHBOURS), issue 14 defect 4
    from models.privacy.accounting import dpsgd_replace_one_epsilon

    assert dpsgd_replace_one_epsilon(spec.noise_multiplier, 0.1, 30, 1e-5) <= 2.0
    assert dpsgd_replace_one_epsilon(spec.noise_multiplier * 0.8, 0.1, 30, 1e-5) > 2.0
    with pytest.raises(InvalidMechanismError, match="batch_size"):
        plan_dpsgd(1000, 0, 3, 2.0, 1e-5)


def test_dp_cascade_trains_per_borrower_and_samples():
    # setup
    loans, perf, schema = make_book(240, months=8, seed=2)
    loans = loans.with_columns(pl.Series("borrower_id", [f"B{i // 2:04d}" for i in range(loans.height)]))
    schema = infer_schema(loans, id_columns=["loan_id", "borrower_id"])
    borrowers = loans["borrower_id"].n_unique()
    spec = plan_dpsgd(borrowers, 30, 2, 3.0, 1e-5)
    hook = OpacusDPHook(spec, n_units=borrowers, batch_size=30, max_grad_norm=1.0)
    config = CascadeConfig(hidden_size=8, epochs=2, batch_size=30, validation_share=0.0, device="cpu")
    # run
    model = LoanCascade(config).fit(loans, perf, schema, dp=hook)
    paths = model.sample(loans.head(20), seed=0)
    # assert
    assert isinstance(hook, DPTrainingHook)
    assert type(model._net.rnn).__name__ == "DPLSTM"
    assert hook.steps_taken() == spec.steps
    assert [h["dp_epsilon"] for h in model.history][-1] == pytest.approx(spec.epsilon, rel=1e-6)
    assert model.history[0]["dp_epsilon"] < model.history[-1]["dp_epsilon"] <= 3.0 * (1 + 1e-3)
    assert paths["loan_id"].n_unique() == 20
    assert dp_recurrent_factory("gru", 4, 3, 1).__class__.__name__ == "DPGRU"


def test_dp_hook_refuses_a_unit_count_it_was_not_planned_for():
    # setup
    loans, perf, schema = make_book(120, months=6, seed=3)
    spec = plan_dpsgd(50, 10, 1, 3.0, 1e-5)
    hook = OpacusDPHook(spec, n_units=50, batch_size=10)
    config = CascadeConfig(hidden_size=8, epochs=1, batch_size=10, validation_share=0.0, device="cpu")
    # run / assert
    with pytest.raises(InvalidMechanismError, match="planned"):
        LoanCascade(config).fit(loans, perf, schema, dp=hook, privacy_unit_column=None)
    with pytest.raises(InvalidMechanismError, match="subsampled_gaussian"):
        OpacusDPHook(MechanismSpec(kind="pure", epsilon=1.0), n_units=50, batch_size=10)


def _cascade_batch(n: int, months: int, seed: int):
    import torch

    from models.sequences.network import STEP_FEATURES

    generator = torch.Generator().manual_seed(seed)
    next_state = torch.randint(0, 7, (n, months), generator=generator)
    next_state[:, months - 2:] = -1  # padded months past each path's end
    mask = next_state >= 0
    return (
        torch.randn(n, 5, generator=generator), torch.randn(n, months, STEP_FEATURES, generator=generator),
        next_state, torch.rand(n, months, generator=generator), torch.rand(n, months, generator=generator), mask, mask,
    )


def test_dp_per_sample_gradient_of_a_loan_ignores_the_other_loans_in_its_batch():
    # setup
    import torch
    from opacus import GradSampleModule

    from models.sequences.cascade import _dp_batch_loss, _losses
    from models.sequences.network import CascadeNet

    torch.manual_seed(0)
    net = GradSampleModule(CascadeNet(5, 8, 1, "lstm", recurrent_factory=dp_recurrent_factory, months=6),
                           loss_reduction="mean")
    batch = _cascade_batch(4, 6, seed=1)
    changed = tuple(t.clone() for t in batch)
    changed[2][1:, :2] = 6 - changed[2][1:, :2]  # other loans' states change...
    changed[2][3, 2:] = -1  # ...and one path gets shorter, so the batch's count of transitions changes
    changed = changed[:5] + (changed[2] >= 0, changed[2] >= 0)

    def per_sample(loss_fn, data):
        net.zero_grad(set_to_none=True)
        for p in net.parameters():
            p.grad_sample = None
        loss_fn(net, data).backward()
        return torch.cat([p.grad_sample[0].reshape(-1) for p in net.parameters() if p.requires_grad])

    def old_loss(model, data):
        return _losses(model, data, 1.0)[0]

    def dp_loss(model, data):
        return _dp_batch_loss(model, data, 1.0)

    # run
    dp_first, dp_changed = per_sample(dp_loss, batch), per_sample(dp_loss, changed)
    alone = per_sample(dp_loss, tuple(t[:1] for t in batch))
    pooled_first, pooled_changed = per_sample(old_loss, batch), per_sample(old_loss, changed)
    # assert
    assert torch.allclose(dp_first, dp_changed, atol=1e-6)
    assert torch.allclose(dp_first, alone, atol=1e-6)
    # the pooled (non-DP) loss normalises by the batch's transitions, so loan 0's gradient moves with the others
    assert not torch.allclose(pooled_first, pooled_changed, atol=1e-6)


def test_an_empty_poisson_batch_takes_a_noise_step_without_nan():
    # setup
    import torch

    from models.sequences.cascade import _dp_batch_loss
    from models.sequences.network import CascadeNet

    torch.manual_seed(0)
    spec = plan_dpsgd(20, 10, 1, 3.0, 1e-5)
    hook = OpacusDPHook(spec, n_units=20, batch_size=10)
    net = CascadeNet(5, 8, 1, "lstm", recurrent_factory=dp_recurrent_factory, months=6)
    data = _cascade_batch(20, 6, seed=2)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*data), batch_size=10)
    model, optimizer, _ = hook.wrap(net, torch.optim.Adam(net.parameters(), lr=0.01), loader,
                                    privacy_units=np.arange(20))
    before = [p.detach().clone() for p in net.parameters()]
    empty = tuple(t[:0] for t in data)
    # run
    optimizer.zero_grad(set_to_none=True)
    loss = _dp_batch_loss(model, empty, 1.0)
    loss.backward()
    optimizer.step()
    # assert
    assert float(loss.detach()) == 0.0
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters()))  # the noise was added
    assert hook.steps_taken() == 1


class _BiasRecordingHook:
    """A DP hook that trains without noise and records the state-head bias and the units `fit` hands it."""

    recurrent_factory = None

    def __init__(self) -> None:
        self.bias = None
        self.units: np.ndarray | None = None
        self.epochs: list[int] = []

    def wrap(self, model, optimizer, data_loader, *, privacy_units):
        self.bias = model.state_head[-1].bias.detach().clone()
        self.units = privacy_units
        return model, optimizer, data_loader

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        self.epochs.append(epoch)
        return {"dp_epsilon": 0.1 * epoch}


def test_dp_fit_trains_every_unit_for_every_epoch_from_a_zero_bias():
    # setup
    loans, perf, schema = make_book(120, months=6, seed=6)
    hook = _BiasRecordingHook()
    config = CascadeConfig(hidden_size=8, epochs=4, patience=0, batch_size=32, validation_share=0.3, device="cpu")
    # run
    private = LoanCascade(config).fit(loans, perf, schema, dp=hook)
    plain = LoanCascade(config).fit(loans, perf, schema)
    # assert
    # every loan trains (no validation split under DP), and the exact counts are not kept in the model
    assert private._prep["validation_loans"] is None and private._prep["train_loans"] is None
    assert len(hook.units) == loans.height
    assert hook.epochs == [1, 2, 3, 4] and [h["epoch"] for h in private.history] == [1, 2, 3, 4]
    assert all("train_loss" not in h and "val_loss" not in h for h in private.history)
    assert hook.bias is not None and not hook.bias.any()
    assert plain._prep["validation_loans"] > 0 and plain.state_dict()["state_head.2.bias"].abs().sum() > 0
