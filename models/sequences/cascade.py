"""The LSTM cascade: a sequence model of each loan's month-by-month performance.

`LoanCascade` learns, from the train split's histories, the path of each loan's
delinquency state (current, 30/60/90+ days past due, default, prepaid,
matured), balance and payment, conditioned on its static attributes (grade,
rate, term, income, DTI, LTV, product, ...). It then samples histories for
synthetic loans so that vintage curves, roll rates and lifetime default rates
of the synthetic book follow the real one.

Design:

- The network (`models.sequences.network.CascadeNet`) embeds the static attributes
  once; the embedding sets the recurrent layer's initial state and enters every
  month. Each month sees the previous state, the previous balance (to the
  original amount) and payment (to the installment), and where the month sits
  in the term. A categorical head gives the next state; a second head, given
  that state, gives the balance as a ratio to the previous balance and the
  payment as a ratio to the installment (to the previous balance in a pay-off
  month), so amounts stay non-negative and sane.
- Training is seeded and deterministic on CPU (same seed, same state dict),
  follows a cosine learning-rate decay, stops early on a validation split of
  privacy units (borrowers when the loans carry ``borrower_id``, else loans;
  not under DP-SGD), and runs on a GPU when torch finds one.
- Calibration: a network stopped early under-predicts rare transitions, and
  sampling month by month compounds that down the roll path (a book's
  12-month default rate came out 40 % low). After training, logit offsets per
  (previous state, month on book) are fitted so the teacher-forced expected
  transition counts match the book's, then corrected for a few rounds so
  free-running paths roll like the book. The offsets are a buffer of the
  network, saved with its weights.
- DP-SGD plugs in through `DPTrainingHook`: it supplies the recurrent layer
  (opacus' ``DPLSTM``) and wraps the model, optimizer and data loader; the
  fit then trains on per-loan losses and reads nothing else of the histories
  (see the hook's docstring for exactly what the guarantee covers).
- `save` writes a torch state dict of plain tensors plus JSON (config and
  preprocessing); nothing is ever pickled.

torch is imported inside the methods that need it, so importing this module
stays light.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Protocol, runtime_checkable

import numpy as np
import polars as pl

from models.errors import InvalidDataError, NotFittedError, TenantConfigError
from models.files import atomic_write_bytes, atomic_write_text
from models.tape.schema import ColumnType, TableSchema
from models.sequences.states import STATE_INDEX
from models.sequences.histories import (
    ABSORBING_CODES,
    CLOSING_CODES,
    DEFAULT_DPD,
    N_STATES,
    PUBLIC_REPORTING_OFFSET,
    AMOUNTS,
    LoanPaths,
    LoanTerms,
    ObservationWindow,
    first_reporting_months,
    history_amounts,
    loan_paths,
    loan_terms,
    names_first_payment,
    origination_column,
    observation_window,
    observed_states,
    paths_to_frame,
    ratio_targets,
    reporting_offset,
    state_days_past_due,
    training_paths,
    validate_histories,
)

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "config.json"
PREPROCESSING_FILE = "preprocessing.json"
WEIGHTS_FILE = "weights.pt"
_TRUTHY = {"true", "t", "yes", "y", "1"}
_MAX_LEVELS = 50
_SCORE_CHUNK = 8192
# The calibration offsets' prior, in nats: a ridge of 0.5 is a N(0, 1) prior on each offset, a smoothing
# weight of 8 a N(0, 0.25^2) prior on the change between neighbouring months.
_OFFSET_RIDGE = 0.5
_OFFSET_SMOOTHING = 8.0
_OFFSET_ITERATIONS = 25
# Free-running correction: paths simulated per round (copies of a small book's loans, up to 4 each),
# most rounds, the pseudo-count per cell and the least transitions a row needs in both books to be corrected.
# The rounds stop once a correction no longer helps: when the judged cells' mean squared z-score of the
# gap is not below _CORRECTION_PROGRESS times the previous round's, what is left is the book's own noise.
_CORRECTION_PATHS = 10_000
_CORRECTION_MAX_COPIES = 4
_CORRECTION_ROUNDS = 3
_CORRECTION_PRIOR = 0.5
_CORRECTION_MIN_ROW = 50
_CORRECTION_MIN_CELL = 10
_CORRECTION_PROGRESS = 0.8
_CORRECTION_HALF_WIDTH = 2
# Logit offset of a state the training history never holds: as unlikely as the Markov baseline's floor (1e-12).
_UNSEEN_LOGIT = -30.0


# --------------------------------------------------------------------------- configuration


@dataclass
class CascadeConfig:
    """Settings of the cascade; JSON-serialisable and saved beside the weights.

    Attributes:
        hidden_size: width of the static embedding and of the recurrent layer.
        layers: stacked recurrent layers.
        cell: "lstm" or "gru".
        epochs: most passes over the training loans.
        schedule_steps: outside DP-SGD, the optimiser steps the training
            aims for: it runs ``ceil(schedule_steps / batches per epoch)``
            epochs, at least `min_epochs` and at most `epochs`, and the
            learning rate's cosine spans those epochs, so a large book is not
            held at a high rate for passes early stopping would cut short and
            a small one still gets enough steps; None spans `epochs`. Under
            DP-SGD every one of `epochs` runs (the accountant's plan).
        min_epochs: the fewest epochs `schedule_steps` may give.
        batch_size: loans per optimiser step.
        lr: Adam's learning rate.
        patience: epochs without a better validation loss before stopping
            (no early stopping under DP-SGD).
        validation_share: share of privacy units held out for early stopping
            (0 trains on all and runs every epoch); under DP-SGD it is taken
            as 0 whatever its setting.
        seed: seeds initialisation, shuffling and the split.
        max_months: longest path modelled and sampled; None takes the longest
            training history.
        device: "auto" (cuda when torch finds one), "cpu" or "cuda".
        threads: CPU threads torch may use while training and sampling; 1 by
            default, because the network is small enough that more threads
            mostly wait on each other (ten times slower on a busy 2-core
            machine); None leaves torch's setting alone.
        amount_weight: weight of the balance and payment losses next to the
            next-state cross-entropy.
        lr_decay: the learning rate falls along a cosine from `lr` to
            ``lr * lr_decay`` over the epochs planned (see `schedule_steps`;
            1 keeps it constant); the small
            final steps settle the weights that a constant rate leaves noisy.
        calibrate: after training, fit logit offsets of the state head per
            previous state and month on book so the model's expected
            transition counts match the training book's, teacher-forced and
            then on free-running paths (see `LoanCascade.fit`); skipped
            under DP-SGD.
    """

    # 32, not 64: on 5k-20k-loan books (demo and non-linear, 2026-12-07) the 32-wide network scores the same or a
    # better held-out likelihood and sequence fidelity in half the training and calibration time (README).
    hidden_size: int = 32
    layers: int = 1
    cell: str = "lstm"
    epochs: int = 30
    # About 300 steps: on the 5k demo book (27 batches an epoch) 12 epochs annealed to the end scored a better held-out
    # likelihood than 19 early-stopped ones of a 30-epoch cosine, in 40% less time; on a 20k book 12 epochs matched, and
    # on a 1k book (7 batches) 12 epochs underfit, 26 did not (2026-12-07, see the README).
    schedule_steps: int | None = 300
    min_epochs: int = 12
    batch_size: int = 128
    lr: float = 5e-3
    patience: int = 3
    validation_share: float = 0.15
    seed: int = 0
    max_months: int | None = None
    device: str = "auto"
    threads: int | None = 1
    amount_weight: float = 1.0
    lr_decay: float = 0.05
    calibrate: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.cell not in ("lstm", "gru"):
            problems.append(f"cell must be 'lstm' or 'gru', got {self.cell!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        for name in ("hidden_size", "layers", "epochs", "batch_size", "min_epochs"):
            if int(getattr(self, name)) < 1:
                problems.append(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.schedule_steps is not None and self.schedule_steps < 1:
            problems.append(f"schedule_steps must be at least 1 or None, got {self.schedule_steps}")
        if self.patience < 0:
            problems.append(f"patience must be 0 or more, got {self.patience}")
        if not 0.0 <= self.validation_share < 1.0:
            problems.append(f"validation_share must be in [0, 1), got {self.validation_share}")
        if not self.lr > 0:
            problems.append(f"lr must be positive, got {self.lr}")
        if self.max_months is not None and self.max_months < 2:
            problems.append(f"max_months must be at least 2 or None, got {self.max_months}")
        if not 0.0 < self.lr_decay <= 1.0:
            problems.append(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be at least 1 or None, got {self.threads}")
        if problems:
            raise TenantConfigError(
                "invalid cascade settings: " + "; ".join(problems) + ".",
                fix="correct the cascade settings (tenant.yaml or the run config).",
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CascadeConfig":
        """Settings from `to_dict`'s output; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TenantConfigError(
                f"unknown cascade setting(s) {unknown}.", fix=f"use only {sorted(known)}."
            )
        return cls(**data)


# --------------------------------------------------------------------------- DP extension point


@runtime_checkable
class DPTrainingHook(Protocol):
    """Where DP-SGD enters `LoanCascade.fit` (implemented by the privacy issue with opacus).

    The privacy unit is the borrower: `wrap` receives, for every training
    example (one loan), the code of its borrower, so an implementation can
    sample borrowers rather than loans (and bound each borrower's
    contribution). With a hook, `LoanCascade.fit` touches the histories only
    through the gradient steps of the wrapped optimizer:

    - the loss is each loan's own loss (its mean next-state NLL plus the
      weighted mean squared amount errors over its own months), averaged over
      the batch with opacus' ``loss_reduction="mean"`` convention, so a
      loan's per-sample gradient does not depend on the other loans in its
      batch and the clipped sum has sensitivity ``max_grad_norm``; an empty
      (Poisson) batch gives a zero loss and a noise-only step;
    - the state head's output bias starts at zero (not at the book's state
      frequencies);
    - every unit trains (no validation split) and every configured epoch
      runs, with the last weights kept: no early stopping, no choice of the
      best epoch, and the training loss is not recorded in the history;
    - no state-head calibration after training.

    What the guarantee covers: the network's weights, as the output of the
    DP-SGD steps the hook's accountant charged, for the hook's privacy unit.
    What it does not cover, and is treated as public metadata of the
    synthetic-data release: the loans' own static attributes and terms as
    inputs of their per-loan gradients (they are inside the mechanism); the
    longest history (``months``, unless `CascadeConfig.max_months` fixes it),
    the days past due of each state, the set of states the histories hold
    (a state they never hold is never sampled), the amount columns they
    carry, the reporting offset and the `HistoryReport` of the histories,
    all saved with the model; and, unless
    `LoanCascade.fit` receives ``public_domains``, the static encoder's
    statistics: each numeric column's mean, standard deviation and log
    choice, and each categorical column's most frequent levels (up to 50,
    which can name a level held by one borrower). Pass ``public_domains``
    (the tenant's ``privacy.domains`` completed by `models.twin.dp.DEFAULT_DOMAINS`)
    for an encoder that reads no value of the loans.

    Attributes:
        recurrent_factory: builds the recurrent layer as
            ``factory(cell, input_size, hidden_size, num_layers)`` returning a
            batch-first module called as ``layer(inputs, state)``, e.g.
            ``lambda cell, i, h, n: opacus.layers.DPLSTM(i, h, num_layers=n, batch_first=True)``;
            None keeps torch's LSTM/GRU.
    """

    recurrent_factory: Callable[[str, int, int, int], Any] | None

    def wrap(self, model: Any, optimizer: Any, data_loader: Any, *, privacy_units: np.ndarray) -> tuple[Any, Any, Any]:
        """Return the (model, optimizer, data_loader) to train with, e.g. from opacus' ``PrivacyEngine.make_private``.

        Batches of `data_loader` are tuples of tensors in the order
        static, steps, next_state, balance_target, payment_target,
        balance_mask, payment_mask (see `LoanCascade.fit`). The returned model
        is called like the original, ``model(static, steps, next_state)``.
        """
        ...

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        """Figures to record in the epoch's history entry (e.g. the epsilon spent so far)."""
        ...


# --------------------------------------------------------------------------- static inputs


def static_columns(schema: TableSchema, loans: pl.DataFrame, exclude: list[str] | None = None) -> list[str]:
    """The static inputs: numeric, integer, boolean and categorical columns, less ids, text, the target and `exclude`."""
    skip = set(exclude or [])
    skip.update(c for c in (schema.target, schema.id_column) if c)
    wanted = schema.of_type(ColumnType.NUMERIC, ColumnType.INTEGER, ColumnType.BOOLEAN, ColumnType.CATEGORICAL)
    return [c for c in wanted if c not in skip and "id" not in schema[c].roles and c in loans.columns]


@dataclass
class StaticEncoder:
    """Turns static columns into the network's input vector; fitted on training loans, saved as JSON.

    Numeric and integer columns are standardised (log1p first when long-tailed
    and non-negative, nulls to the mean, clipped to +-5 sd); booleans become 0/1;
    categorical columns are one-hot over their most frequent levels plus an
    "other" slot that also takes levels unseen in training.
    """

    numeric: list[dict[str, Any]]
    boolean: list[str]
    categorical: list[dict[str, Any]]

    @property
    def width(self) -> int:
        """Length of the encoded vector."""
        return len(self.numeric) + len(self.boolean) + sum(len(c["levels"]) + 1 for c in self.categorical)

    @property
    def columns(self) -> list[str]:
        """The columns read, in encoding order."""
        return [c["name"] for c in self.numeric] + self.boolean + [c["name"] for c in self.categorical]

    @classmethod
    def fit(cls, loans: pl.DataFrame, schema: TableSchema, columns: list[str]) -> "StaticEncoder":
        """Learn means, spreads and category levels of `columns` from `loans`."""
        numeric, boolean, categorical = [], [], []
        for name in columns:
            kind = schema[name].type
            series = loans.get_column(name)
            if kind is ColumnType.BOOLEAN:
                boolean.append(name)
            elif kind is ColumnType.CATEGORICAL or not series.dtype.is_numeric():
                counts = series.cast(pl.String).drop_nulls().value_counts(sort=True)
                categorical.append({"name": name, "levels": sorted(counts.get_column(name).head(_MAX_LEVELS).to_list())})
            else:
                values = series.cast(pl.Float64, strict=False).drop_nulls().to_numpy()
                values = values[np.isfinite(values)]
                use_log = bool(
                    values.size and values.min() >= 0 and np.quantile(values, 0.99) > 10 * max(np.median(values), 1e-9)
                )
                if use_log:
                    values = np.log1p(values)
                mean = float(values.mean()) if values.size else 0.0
                std = float(values.std()) if values.size else 1.0
                numeric.append({"name": name, "mean": mean, "std": std if std > 1e-9 else 1.0, "log": use_log})
        return cls(numeric=numeric, boolean=boolean, categorical=categorical)

    @classmethod
    def from_domains(
        cls, schema: TableSchema, columns: list[str], domains: Mapping[str, Mapping[str, Any]]
    ) -> tuple["StaticEncoder", list[str]]:
        """An encoder built from public domains only, reading no value of the loans; returns it and the columns left out.

        `domains` maps a column to its declaration in the shape of
        ``privacy.domains`` (`models.twin.dp.PublicDomain`): ``{low, high[, scale:
        linear|log1p]}`` standardises to the middle of the range with a
        quarter of its width as the spread (on the log1p scale when declared),
        ``{values: [...]}`` to the mean and spread of the listed values, and
        ``{categories: [...]}`` one-hot encodes the listed categories in the
        order given (plus the "other" slot). Booleans need no declaration.
        Columns of any other type without a numeric or category declaration
        are left out, as the DP copula leaves them out.
        """
        numeric, boolean, categorical, left_out = [], [], [], []
        for name in columns:
            kind = schema[name].type
            domain = domains.get(name)
            if kind is ColumnType.BOOLEAN:
                boolean.append(name)
            elif domain is not None and domain.get("categories"):
                categorical.append({"name": name, "levels": [str(level) for level in domain["categories"]]})
            elif domain is not None and domain.get("values") and kind is not ColumnType.CATEGORICAL:
                values = np.asarray(domain["values"], dtype=np.float64)
                spread = float(values.std())
                numeric.append({"name": name, "mean": float(values.mean()), "std": spread if spread > 1e-9 else 1.0,
                                "log": False})
            elif domain is not None and _is_real(domain.get("low")) and _is_real(domain.get("high")) \
                    and kind is not ColumnType.CATEGORICAL:
                use_log = domain.get("scale", "linear") == "log1p"
                ends = np.array([float(domain["low"]), float(domain["high"])])
                if use_log:
                    ends = np.log1p(np.clip(ends, 0.0, None))
                spread = float(ends[1] - ends[0]) / 4.0
                numeric.append({"name": name, "mean": float(ends.mean()), "std": spread if spread > 1e-9 else 1.0,
                                "log": use_log})
            else:
                left_out.append(name)
        return cls(numeric=numeric, boolean=boolean, categorical=categorical), left_out

    def transform(self, loans: pl.DataFrame) -> np.ndarray:
        """Encode `loans` as a float32 matrix (loans x `width`).

        Raises:
            InvalidDataError: a column the encoder was fitted on is missing.
        """
        missing = [c for c in self.columns if c not in loans.columns]
        if missing:
            raise InvalidDataError(
                f"the loans lack the static column(s) {missing} the cascade was trained on.",
                column=missing[0],
                fix="pass loans with the same static columns as the training loans.",
            )
        parts = []
        for spec in self.numeric:
            values = loans.get_column(spec["name"]).cast(pl.Float64, strict=False).to_numpy().astype(np.float64)
            if spec["log"]:
                values = np.log1p(np.clip(values, 0.0, None))
            scaled = (values - spec["mean"]) / spec["std"]
            parts.append(np.clip(np.nan_to_num(scaled, nan=0.0, posinf=5.0, neginf=-5.0), -5.0, 5.0)[:, None])
        for name in self.boolean:
            series = loans.get_column(name)
            if series.dtype == pl.Boolean or series.dtype.is_numeric():
                values = series.cast(pl.Float64, strict=False).fill_null(0.0).to_numpy() > 0.5
            else:
                values = series.cast(pl.String).str.to_lowercase().is_in(list(_TRUTHY)).fill_null(False).to_numpy()
            parts.append(values.astype(np.float64)[:, None])
        for spec in self.categorical:
            index = {level: i for i, level in enumerate(spec["levels"])}
            other = len(spec["levels"])
            labels = loans.get_column(spec["name"]).cast(pl.String).to_list()
            codes = np.fromiter((index.get(v, other) for v in labels), dtype=np.int64, count=len(labels))
            parts.append(np.eye(other + 1)[codes])
        if not parts:
            return np.zeros((loans.height, 1), dtype=np.float32)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """The encoder as JSON-ready values."""
        return {"numeric": self.numeric, "boolean": self.boolean, "categorical": self.categorical}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StaticEncoder":
        """An encoder from `to_dict`'s output."""
        return cls(numeric=list(data["numeric"]), boolean=list(data["boolean"]), categorical=list(data["categorical"]))


def _is_real(value: Any) -> bool:
    """A finite int or float that is not a bool (a date bound, a string, is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------- torch helpers


def _torch() -> Any:
    import torch

    return torch


def _device(setting: str) -> "torch.device":
    torch = _torch()
    if setting == "cuda" and not torch.cuda.is_available():
        raise TenantConfigError(
            "the cascade is set to device 'cuda' but torch finds no GPU.",
            fix="set device to 'auto' or 'cpu', or run on a machine with a CUDA GPU.",
        )
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def _set_deterministic(torch: Any, mode: bool) -> None:
    """Switch torch's deterministic kernels on or off.

    `torch.use_deterministic_algorithms` also sets the flag of torch's compiler (inductor), and importing the
    compiler to do so costs about 0.9 s in a process that only samples (the synthetic-portfolio step under
    the multiprocess and Celery executors; a fit imports it anyway, through the optimizer). Nothing here
    compiles, so unless the compiler is already loaded only the kernels' switch, the one the public function
    sets, is set.
    """
    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(mode)
    else:
        torch._C._set_deterministic_algorithms(mode)


@contextmanager
def _torch_session(threads: int | None, seed: int, device: "torch.device", deterministic: bool) -> Iterator[None]:
    """Seed torch and pin its threads for one fit or sample, restoring the caller's settings afterwards."""
    torch = _torch()
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        try:
            if threads:
                torch.set_num_threads(threads)
            # Deterministic kernels are cheap on CPU; on CUDA they need a cuBLAS workspace setting, so only CPU.
            if deterministic and device.type == "cpu":
                _set_deterministic(torch, True)
            yield
        finally:
            torch.set_num_threads(previous_threads)
            if torch.are_deterministic_algorithms_enabled() != previous_deterministic:
                _set_deterministic(torch, previous_deterministic)


def _step_features(
    prev_state: "torch.Tensor",
    prev_balance: "torch.Tensor",
    prev_payment: "torch.Tensor",
    period: "torch.Tensor",
    term: "torch.Tensor",
    scale: float,
) -> "torch.Tensor":
    """Per-month inputs (batch, months, STEP_FEATURES); used alike in training and sampling.

    `prev_state` holds START_TOKEN in month 1; `prev_balance` is the previous
    balance over the original amount, `prev_payment` the previous payment over
    the installment; `period` is the month being predicted and `term` (batch, 1)
    the loan's term, both in months.
    """
    torch = _torch()
    from models.sequences.network import START_TOKEN

    onehot = torch.nn.functional.one_hot(prev_state.clamp(min=0), START_TOKEN + 1).float()
    period = period.float().expand_as(prev_balance)
    term = term.float()
    timing = torch.stack(
        [period / scale, ((term - period) / scale).clamp(0.0, 4.0), (period == term).float()], dim=2
    )
    return torch.cat([onehot, prev_balance.unsqueeze(2), prev_payment.unsqueeze(2), timing], dim=2)


@dataclass
class _Encoded:
    """A book turned into the network's tensors (CPU)."""

    static: "torch.Tensor"
    steps: "torch.Tensor"
    next_state: "torch.Tensor"
    balance_target: "torch.Tensor"
    payment_target: "torch.Tensor"
    balance_mask: "torch.Tensor"
    payment_mask: "torch.Tensor"

    def tensors(self) -> tuple["torch.Tensor", ...]:
        return (
            self.static, self.steps, self.next_state, self.balance_target,
            self.payment_target, self.balance_mask, self.payment_mask,
        )


def _encode(static: np.ndarray, paths: LoanPaths, terms: LoanTerms, months: int, amounts: tuple[str, ...] | list[str]) -> _Encoded:
    """The book's tensors; an amount the history lacks (not in `amounts`) enters as the constant `_simulate` feeds."""
    torch = _torch()
    from models.sequences.network import START_TOKEN

    n = paths.states.shape[0]
    prev_state = np.concatenate([np.full((n, 1), START_TOKEN), paths.states[:, :-1]], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        balance_in = np.clip(paths.balance / terms.amount[:, None], 0.0, 2.0)
        payment_in = np.clip(paths.payment / terms.installment[:, None], 0.0, 4.0)
    prev_balance = np.nan_to_num(np.concatenate([np.ones((n, 1)), balance_in[:, :-1]], axis=1), nan=0.0)
    prev_payment = np.nan_to_num(np.concatenate([np.zeros((n, 1)), payment_in[:, :-1]], axis=1), nan=0.0)
    if "balance" not in amounts:
        prev_balance = np.ones_like(prev_balance)
    if "payment" not in amounts:
        prev_payment = np.zeros_like(prev_payment)
    balance_target, payment_target = ratio_targets(paths, terms.amount, terms.installment)
    # Balance is fixed at 0 in pay-off months, so only other months teach the balance head.
    balance_mask = np.isfinite(balance_target) & ~np.isin(paths.states, CLOSING_CODES) & (paths.states >= 0)
    payment_mask = np.isfinite(payment_target) & (paths.states >= 0)
    steps = _step_features(
        torch.from_numpy(prev_state.astype(np.int64)),
        torch.from_numpy(prev_balance.astype(np.float32)),
        torch.from_numpy(prev_payment.astype(np.float32)),
        torch.arange(1, months + 1).unsqueeze(0),
        torch.from_numpy(terms.term.astype(np.int64)).unsqueeze(1),
        float(max(months, 12)),
    )
    return _Encoded(
        static=torch.from_numpy(static),
        steps=steps,
        next_state=torch.from_numpy(paths.states.astype(np.int64)),
        balance_target=torch.from_numpy(np.nan_to_num(balance_target).astype(np.float32)),
        payment_target=torch.from_numpy(np.nan_to_num(payment_target).astype(np.float32)),
        balance_mask=torch.from_numpy(balance_mask),
        payment_mask=torch.from_numpy(payment_mask),
    )


def _losses(model: Any, batch: tuple["torch.Tensor", ...], amount_weight: float) -> tuple["torch.Tensor", "torch.Tensor", int]:
    """(total loss, summed transition NLL, number of transitions) of one batch."""
    torch = _torch()
    static, steps, next_state, balance_target, payment_target, balance_mask, payment_mask = batch
    logits, balance, payment = model(static, steps, next_state)
    valid = next_state >= 0
    nll = torch.nn.functional.cross_entropy(logits[valid], next_state[valid], reduction="none")
    loss = nll.mean()
    if balance_mask.any():
        loss = loss + amount_weight * torch.mean((balance[balance_mask] - balance_target[balance_mask]) ** 2)
    if payment_mask.any():
        loss = loss + amount_weight * torch.mean((payment[payment_mask] - payment_target[payment_mask]) ** 2)
    # Month 1 has no previous state; the transition likelihood counts months 2 onwards only.
    transition = valid.clone()
    transition[:, 0] = False
    transition_nll = torch.nn.functional.cross_entropy(logits[transition], next_state[transition], reduction="sum")
    return loss, transition_nll, int(transition.sum())


def _per_loan_losses(model: Any, batch: tuple["torch.Tensor", ...], amount_weight: float) -> "torch.Tensor":
    """Each loan's own loss (batch,): its mean next-state NLL plus `amount_weight` times its mean squared amount errors.

    Every term is averaged over the loan's own months only, so one loan's
    loss (and its gradient) does not depend on which other loans share the
    batch: DP-SGD clips exactly these per-loan gradients. A loan with no month
    of a kind contributes 0 for that term.
    """
    torch = _torch()
    static, steps, next_state, balance_target, payment_target, balance_mask, payment_mask = batch
    logits, balance, payment = model(static, steps, next_state)
    valid = next_state >= 0
    # Padded months hold -1: score them as state 0 and mask them out, so every tensor keeps its (loan, month) shape.
    nll = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), next_state.clamp(min=0), reduction="none"
    )

    def own_mean(values: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
        total = torch.where(mask, values, torch.zeros_like(values)).sum(dim=1)
        return total / mask.sum(dim=1).clamp(min=1).to(values.dtype)

    loss = own_mean(nll, valid)
    loss = loss + amount_weight * own_mean((balance - balance_target) ** 2, balance_mask)
    return loss + amount_weight * own_mean((payment - payment_target) ** 2, payment_mask)


def _dp_batch_loss(model: Any, batch: tuple["torch.Tensor", ...], amount_weight: float) -> "torch.Tensor":
    """The batch loss DP-SGD differentiates: the per-loan losses summed and divided by the batch's own size.

    That is opacus' ``loss_reduction="mean"``: opacus multiplies the
    per-sample gradients back by the batch size, so each clipped per-sample
    gradient is exactly one loan's own gradient, and after clipping, summing
    and noising it divides by the planned (expected) batch size. An empty
    Poisson batch gives a loss of 0 with empty per-sample gradients (no
    division by zero, no NaN); the optimizer step still adds the noise the
    accountant charged for that step.
    """
    per_loan = _per_loan_losses(model, batch, amount_weight)
    return per_loan.sum() / max(int(per_loan.shape[0]), 1)


def _simulate(
    net: Any,
    static: np.ndarray,
    terms: LoanTerms,
    months: int,
    seed: int,
    chunk_size: int = 65536,
    amounts: tuple[str, ...] | list[str] = AMOUNTS,
    expected: np.ndarray | None = None,
    limits: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Free-running paths of every loan: (states, balance, payment), each loans x `months` (-1 / NaN past a path's end).

    All loans advance together month by month: the state is drawn from the
    calibrated state head (multinomial), then balance and payment given that
    state; a path stops at an absorbing state, at the loan's term, at
    `months` or, with `limits` (one per loan, see `ObservationWindow.limits`),
    after the months its loan is observable (none at 0). Each month runs the
    network on the paths still open only. An amount the training history
    lacked (not in `amounts`) is fed back as the constant the training saw,
    not as the untrained head's guess. When `expected` ((START_TOKEN + 1) x months x N_STATES) is given, the state
    head's probabilities of every simulated month are added to it, by
    previous state and month on book: the transition counts the paths are
    expected to make, without the noise of the draws. The caller seeds and
    pins torch (`_torch_session`).
    """
    torch = _torch()
    from models.sequences.network import START_TOKEN

    device = next(net.parameters()).device
    n = static.shape[0]
    states = np.full((n, months), -1, dtype=np.int64)
    balance = np.full((n, months), np.nan)
    payment = np.full((n, months), np.nan)
    closing = torch.zeros(N_STATES + 1, dtype=torch.bool, device=device)
    closing[torch.from_numpy(CLOSING_CODES)] = True
    absorbing = torch.zeros(N_STATES + 1, dtype=torch.bool, device=device)
    absorbing[torch.from_numpy(ABSORBING_CODES)] = True
    totals = torch.zeros(((START_TOKEN + 1) * months, N_STATES), dtype=torch.float64, device=device)
    scale = float(max(months, 12))
    generator = torch.Generator(device=device).manual_seed(int(seed))

    def keep_rows(hidden: Any, keep: "torch.Tensor") -> Any:
        if isinstance(hidden, tuple):
            return tuple(h[:, keep] for h in hidden)
        return hidden[:, keep]

    with torch.inference_mode():
        for start in range(0, n, chunk_size):
            stop = min(start + chunk_size, n)
            rows = stop - start
            embedding = net.embed(torch.from_numpy(static[start:stop]).to(device))
            hidden = net.initial_state(embedding)
            amount = torch.from_numpy(terms.amount[start:stop]).to(device)
            installment = torch.from_numpy(terms.installment[start:stop]).to(device)
            term = torch.from_numpy(terms.term[start:stop]).to(device).unsqueeze(1)
            horizon = term.squeeze(1).clamp(max=months)
            if limits is not None:
                limit = torch.from_numpy(np.clip(limits[start:stop], 0, months).astype(np.int64)).to(device)
                horizon = torch.minimum(horizon, limit)
            prev_state = torch.full((rows, 1), START_TOKEN, dtype=torch.long, device=device)
            prev_balance = torch.ones((rows, 1), device=device)
            prev_payment = torch.zeros((rows, 1), device=device)
            owed = amount.clone()
            out_state = torch.full((rows, months), -1, dtype=torch.long, device=device)
            out_balance = torch.full((rows, months), float("nan"), dtype=torch.float64, device=device)
            out_payment = torch.full((rows, months), float("nan"), dtype=torch.float64, device=device)
            # The open paths' rows in the chunk; every per-path tensor below holds those rows only.
            index = torch.arange(rows, device=device)
            keep = horizon > 0
            for t in range(months):
                if not bool(keep.all()):
                    index, embedding, hidden, term, horizon = (
                        index[keep], embedding[keep], keep_rows(hidden, keep), term[keep], horizon[keep]
                    )
                    prev_state, prev_balance, prev_payment = prev_state[keep], prev_balance[keep], prev_payment[keep]
                    amount, installment, owed = amount[keep], installment[keep], owed[keep]
                if index.numel() == 0:
                    break
                period = torch.full((1, 1), t + 1, device=device)
                steps = _step_features(prev_state, prev_balance, prev_payment, period, term, scale)
                outputs, hidden = net.run(embedding, steps, hidden)
                probs = torch.softmax(net.state_logits(outputs, embedding, steps, first_period=t + 1)[:, 0], dim=1)
                if expected is not None:
                    totals.index_add_(0, prev_state[:, 0] * months + t, probs.double())
                state = torch.multinomial(probs, 1, generator=generator)
                balance_ratio, payment_ratio = net.amounts(outputs, state)
                pays_off = closing[state[:, 0]]
                new_balance = torch.where(pays_off, torch.zeros_like(owed), owed * balance_ratio[:, 0].double())
                new_payment = torch.where(pays_off, owed, installment) * payment_ratio[:, 0].double()
                out_state[index, t] = state[:, 0]
                out_balance[index, t] = new_balance
                out_payment[index, t] = new_payment
                prev_state = state
                if "balance" in amounts:
                    prev_balance = (new_balance / amount).clamp(0.0, 2.0).float().unsqueeze(1)
                if "payment" in amounts:
                    prev_payment = (new_payment / installment).clamp(0.0, 4.0).float().unsqueeze(1)
                owed = new_balance
                keep = ~absorbing[state[:, 0]] & ((t + 1) < horizon)
            states[start:stop] = out_state.cpu().numpy()
            balance[start:stop] = out_balance.cpu().numpy()
            payment[start:stop] = out_payment.cpu().numpy()
    if expected is not None:
        expected += totals.view(START_TOKEN + 1, months, N_STATES).cpu().numpy()
    return states, balance, payment


_MATCH_ROUNDS = 10
_MATCH_PATHS = 4096
_MATCH_MAX_COPIES = 64


def _simulate_given_defaults(
    net: Any,
    static: np.ndarray,
    terms: LoanTerms,
    months: int,
    seed: int,
    chunk_size: int,
    amounts: tuple[str, ...] | list[str],
    wanted: np.ndarray,
    window: ObservationWindow | None = None,
    first: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, dict[str, Any]]:
    """`_simulate`, each loan's path drawn given whether it reaches default (`wanted`), by rejection.

    The first round draws one path per loan; each later round draws copies of
    the loans whose paths disagree with `wanted` (more copies as fewer loans
    are left, up to `_MATCH_MAX_COPIES`; about a quarter of the book's loans
    in paths a round, at least `_MATCH_PATHS`)
    and keeps each loan's first agreeing copy. Accepting the first draw that
    agrees is an exact draw from the model's paths given the outcome. A loan
    the model gives almost no chance of its outcome (a default flag on a loan
    it rates near-riskless) can be left after `_MATCH_ROUNDS` rounds: it keeps
    its last path, and is counted in the returned summary as unmatched.

    With `window` and `first` (each loan's first reporting month), every path
    stops at the cut-off. When the window draws first months (loans without an
    origination date), each copy draws its own, so a loan's place in time and
    its path are drawn together given its outcome (a default needs the months
    to reach it); the kept copies' first months are returned (else `first`).
    """
    default_code = STATE_INDEX["default"]
    limits = window.limits(first) if window is not None else None
    states, balance, payment = _simulate(net, static, terms, months, seed, chunk_size, amounts, limits=limits)
    pending = np.flatnonzero((states == default_code).any(axis=1) != wanted)
    redraw = window is not None and window.drawn and first is not None
    # A loan placed at or after the cut-off has no month to observe: no draw can give it an outcome.
    unobservable = np.zeros(wanted.size, dtype=bool) if limits is None or redraw else limits <= 0
    pending = pending[~unobservable[pending]]
    first = None if first is None else first.copy()
    draws = static.shape[0]
    # Paths a round: a quarter of the book at least, so a large book's many disagreeing loans get copies too.
    budget = max(_MATCH_PATHS, static.shape[0] // 4)
    rounds = 0
    for round_ in range(1, _MATCH_ROUNDS + 1):
        if pending.size == 0:
            break
        rounds = round_
        copies = int(np.clip(budget // pending.size, 1, _MATCH_MAX_COPIES))
        rows = np.repeat(pending, copies)
        subset = LoanTerms(term=terms.term[rows], amount=terms.amount[rows], installment=terms.installment[rows])
        copy_first = window.draw(rows.size, np.random.default_rng([seed, 2, round_])) if redraw else None
        copy_limits = window.limits(copy_first) if redraw else (None if limits is None else limits[rows])
        s, b, p = _simulate(
            net, static[rows], subset, months, seed + 104_729 * round_, chunk_size, amounts, limits=copy_limits
        )
        draws += rows.size
        agree = ((s == default_code).any(axis=1) == wanted[rows]).reshape(pending.size, copies)
        found = agree.any(axis=1)
        pick = np.arange(pending.size) * copies + agree.argmax(axis=1)
        take, source = pending[found], pick[found]
        states[take], balance[take], payment[take] = s[source], b[source], p[source]
        if redraw:
            first[take] = copy_first[source]
        pending = pending[~found]
    # a defaulted loan placed past the cut-off keeps its empty history: unmatched, and counted apart
    stuck = int((unobservable & wanted).sum())
    summary = {
        "loans": int(wanted.size),
        "defaults_asked": int(wanted.sum()),
        "matched": int(wanted.size - pending.size - stuck),
        "unmatched": int(pending.size + stuck),
        "unmatched_defaults": int(wanted[pending].sum()) + stuck,
        "rounds": rounds,
        "paths_drawn": int(draws),
        "not_observable": int(unobservable.sum()),
    }
    return states, balance, payment, first, summary


def planned_epochs(config: CascadeConfig, batches: int) -> int:
    """The epochs a training outside DP-SGD plans for `batches` batches an epoch (see `CascadeConfig.schedule_steps`)."""
    if config.schedule_steps is None:
        return config.epochs
    wanted = -(-config.schedule_steps // max(batches, 1))
    return min(config.epochs, max(config.min_epochs, wanted))


def _cosine_schedule(lr: float, decay: float, total_steps: int) -> Callable[[int], float]:
    """Learning rate at each optimiser step: a cosine from `lr` down to ``lr * decay`` over `total_steps`."""
    floor = lr * decay

    def rate(step: int) -> float:
        progress = min(step / max(total_steps - 1, 1), 1.0)
        return floor + 0.5 * (lr - floor) * (1.0 + math.cos(math.pi * progress))

    return rate


def _fit_state_offsets(
    net: Any, tensors: tuple["torch.Tensor", ...], device: "torch.device"
) -> tuple["torch.Tensor", dict[str, Any]]:
    """Logit offsets (previous state x month on book x next state) that calibrate the state head on `tensors`.

    The network is frozen; only the offsets move, by L-BFGS on the exact
    (convex) next-state NLL of every teacher-forced month, months 1 onwards,
    plus a Gaussian prior: a ridge toward 0 and a smoothness penalty between
    neighbouring months, so sparse cells (dpd90 in month 3) borrow from their
    neighbours instead of fitting noise. At the optimum each cell's expected
    transition counts match the observed ones up to that shrinkage.

    Returns the offsets (float32, CPU) and a summary for the preprocessing
    JSON (transitions used, mean NLL before and after).
    """
    torch = _torch()
    from models.sequences.network import START_TOKEN

    months = int(net.state_offset.shape[1])
    logits_parts, cell_parts, target_parts = [], [], []
    with torch.no_grad():
        for start in range(0, tensors[0].shape[0], _SCORE_CHUNK):
            static, steps, next_state = (t[start:start + _SCORE_CHUNK].to(device) for t in tensors[:3])
            embedding = net.embed(static)
            outputs, _ = net.run(embedding, steps, net.initial_state(embedding))
            logits = net.raw_state_logits(outputs, embedding, steps)
            valid = next_state >= 0
            previous = steps[..., : START_TOKEN + 1].argmax(dim=2)
            period = torch.arange(steps.shape[1], device=steps.device).unsqueeze(0).expand_as(previous)
            logits_parts.append(logits[valid].double().cpu())
            cell_parts.append((previous * months + period)[valid].cpu())
            target_parts.append(next_state[valid].cpu())
    logits = torch.cat(logits_parts)
    cells = torch.cat(cell_parts)
    targets = torch.cat(target_parts)
    n_cells = (START_TOKEN + 1) * months
    offsets = torch.zeros(n_cells, logits.shape[1], dtype=torch.float64, requires_grad=True)
    n = max(int(targets.shape[0]), 1)

    def objective() -> "torch.Tensor":
        grid = offsets.view(START_TOKEN + 1, months, -1)
        nll = torch.nn.functional.cross_entropy(logits + offsets[cells], targets, reduction="sum")
        penalty = _OFFSET_RIDGE * grid.pow(2).sum() + _OFFSET_SMOOTHING * (grid[:, 1:] - grid[:, :-1]).pow(2).sum()
        return (nll + penalty) / n

    with torch.no_grad():
        before = float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum")) / n
    optimizer = torch.optim.LBFGS([offsets], lr=1.0, max_iter=_OFFSET_ITERATIONS, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def closure() -> "torch.Tensor":
        optimizer.zero_grad()
        value = objective()
        value.backward()
        return value

    optimizer.step(closure)
    fitted = offsets.detach()
    with torch.no_grad():
        after = float(torch.nn.functional.cross_entropy(logits + fitted[cells], targets, reduction="sum")) / n
    summary = {"transitions": int(targets.shape[0]), "nll_before": before, "nll_after": after}
    return fitted.view(START_TOKEN + 1, months, -1).float(), summary


def _public_report(report: Any) -> dict[str, Any]:
    """What a DP cascade keeps of the histories' `HistoryReport`: the term column's name, no count of borrowers."""
    return {
        "term_column": report.term_column,
        "dp": "counts of the training histories (loans, rows, transitions, state counts) are exact statistics of "
        "the borrowers and are not kept under DP",
    }


def _public_offset(performance: pl.DataFrame, loans: pl.DataFrame) -> int | None:
    """The reporting offset under DP: the public constant when the tape has the columns it needs, else None."""
    column = origination_column(loans)
    if "reporting_month" not in performance.columns or column is None:
        return None
    # a first payment date is already the month after origination, where agency histories start
    return PUBLIC_REPORTING_OFFSET - 1 if names_first_payment(column) else PUBLIC_REPORTING_OFFSET


def _month_counts(states: np.ndarray, months: int) -> np.ndarray:
    """Transitions by (previous state incl. the start token, month on book, next state) of a loans x months code array (-1: none)."""
    from models.sequences.network import START_TOKEN

    previous = np.concatenate([np.full((states.shape[0], 1), START_TOKEN), np.clip(states[:, :-1], 0, None)], axis=1)
    valid = states >= 0
    period = np.broadcast_to(np.arange(states.shape[1]), states.shape)
    cells = (previous[valid] * months + period[valid]) * N_STATES + states[valid]
    size = (START_TOKEN + 1) * months * N_STATES
    return np.bincount(cells, minlength=size).reshape(START_TOKEN + 1, months, N_STATES).astype(np.float64)


def _smooth_months(counts: np.ndarray, half_width: int) -> np.ndarray:
    """`counts` summed over a window of +-`half_width` months on book (axis 1), so sparse months borrow from neighbours."""
    padded = np.concatenate([np.zeros_like(counts[:, :1]), counts.cumsum(axis=1)], axis=1)
    months = counts.shape[1]
    upper = np.minimum(np.arange(months) + half_width + 1, months)
    lower = np.maximum(np.arange(months) - half_width, 0)
    return padded[:, upper] - padded[:, lower]


def _free_running_correction(
    net: Any, encoded: _Encoded, terms: LoanTerms, months: int, seed: int, amounts: tuple[str, ...] | list[str],
    limits: np.ndarray | None = None,
) -> dict[str, Any]:
    """Shift the transient rows' offsets until free-running paths move like the book; returns a summary.

    Teacher-forced calibration matches each transition row on the real
    loans that reached that state. Sampling month by month, the loans that
    reach dpd30, dpd60 or dpd90 are the model's own picks, a little less
    risky than the real ones wherever the network ranks risk less sharply
    than the truth, so they cure too often and the shortfall compounds down
    the roll path. Each round simulates the training loans (a few copies of
    each in a small book, a seeded subset of a large one), takes the
    transitions the simulated paths are expected to make (the state head's
    probabilities summed, free of the draws' noise), compares each transient
    row's shares with the book's month by month (pooled over a few
    neighbouring months), and adds the log ratio to the offsets of every cell
    both books visit often enough to judge. A round whose gap (the judged
    cells' mean squared z-score) is not clearly below the previous round's
    ends the correction without adding to it: the last correction no longer
    helped, and what is left is the book's own sampling noise.

    With `limits` (the months each training loan is observable, from its own
    first reporting month to the cut-off) each simulated path stops where its
    loan's real history was censored, so both books hold the same loans at
    every month on book: in a book observed to a cut-off, month 20's rows are
    the old vintages' alone, in both.
    """
    from models.sequences.network import START_TOKEN

    states = encoded.next_state.numpy()
    n_transient = N_STATES - len(ABSORBING_CODES)
    real = _smooth_months(_month_counts(states, months), _CORRECTION_HALF_WIDTH)
    n = states.shape[0]
    if n >= _CORRECTION_PATHS:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=_CORRECTION_PATHS, replace=False))
    else:
        rows = np.tile(np.arange(n), min(-(-_CORRECTION_PATHS // n), _CORRECTION_MAX_COPIES))
    static = encoded.static.numpy()[rows]
    subset = LoanTerms(term=terms.term[rows], amount=terms.amount[rows], installment=terms.installment[rows])
    subset_limits = None if limits is None else limits[rows]
    # The start row has no history to bias it; only transient rows are corrected.
    transient = np.arange(START_TOKEN + 1) < n_transient
    gaps: list[float] = []
    noise: list[float] = []
    corrections = 0
    for round_ in range(_CORRECTION_ROUNDS):
        expected = np.zeros((START_TOKEN + 1, months, N_STATES))
        _simulate(net, static, subset, months, seed + 7919 * (round_ + 1), amounts=amounts, expected=expected,
                  limits=subset_limits)
        sim = _smooth_months(expected, _CORRECTION_HALF_WIDTH)
        real_rows, sim_rows = real.sum(axis=2, keepdims=True), sim.sum(axis=2, keepdims=True)
        real_share = (real + _CORRECTION_PRIOR) / (real_rows + N_STATES * _CORRECTION_PRIOR)
        sim_share = (sim + _CORRECTION_PRIOR) / (sim_rows + N_STATES * _CORRECTION_PRIOR)
        # Cells either book barely visits (current -> dpd90) carry no signal, only the two books' sizes.
        judged = (
            transient[:, None, None]
            & (real_rows >= _CORRECTION_MIN_ROW)
            & (sim_rows >= _CORRECTION_MIN_ROW)
            & (real >= _CORRECTION_MIN_CELL)
            & (sim >= _CORRECTION_MIN_CELL)
        )
        if not judged.any():
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            variance = real_share * (1.0 - real_share) * (1.0 / real_rows + 1.0 / sim_rows)
        z2 = float(np.mean(((real_share - sim_share) ** 2 / variance)[judged]))
        settled = bool(noise) and z2 >= _CORRECTION_PROGRESS * noise[-1]
        gaps.append(float(np.abs(real_share - sim_share)[judged].max()))
        noise.append(z2)
        if settled:
            break
        delta = np.where(judged, np.log(real_share) - np.log(sim_share), 0.0)
        net.state_offset.add_(_torch().from_numpy(delta).to(net.state_offset.device, net.state_offset.dtype))
        corrections += 1
    return {
        "free_running_paths": int(len(rows)),
        "free_running_rounds": len(gaps),
        "free_running_corrections": corrections,
        "free_running_max_gap": gaps,
        "free_running_mean_z2": noise,
    }


def observed_transitions(next_state: np.ndarray, months: int) -> np.ndarray:
    """Which (previous state incl. the start token, next state) pairs a loans x months code array (-1: none) holds.

    A row the array never leaves (a state no path reaches) is all True: there is nothing to say about it.
    """
    counts = _month_counts(next_state, months).sum(axis=1)
    return (counts > 0) | (counts.sum(axis=1, keepdims=True) == 0)


def _mask_unseen(net: Any, seen: list[bool], pairs: np.ndarray | None = None) -> None:
    """Make the states the training history never holds (`seen` False) unreachable, whatever the offsets were,
    and with `pairs` ((START_TOKEN + 1) x N_STATES, see `observed_transitions`) every move it never makes.

    A servicing system's buckets are rules, not tendencies: a loan goes from dpd60 to current or dpd90, never
    to dpd30, and from current to dpd30, never to dpd60. A network shares its weights across rows, so without
    the mask it leaks a little probability into such moves (0.5-2% of dpd60's exits on the demo book), paths a
    lender's own validation would reject. The Markov baseline has the same zeros by construction.
    """
    torch = _torch()
    # (previous state, next state) pairs to mask, broadcast over the months on book
    masked = ~np.asarray(seen, dtype=bool)[None, :] | (np.zeros((1, N_STATES), dtype=bool) if pairs is None else
                                                      ~np.asarray(pairs, dtype=bool))
    with torch.no_grad():
        net.state_offset.masked_fill_(torch.from_numpy(masked)[:, None, :].to(net.state_offset.device), _UNSEEN_LOGIT)


# A state's balances "never rise" when at most this share of the book's months into it (with a balance on both
# sides) hold more than the month before, and at least RISE_EVIDENCE such months were seen.
RISE_SHARE = 0.005
RISE_EVIDENCE = 200
_RISE_TOLERANCE = 1e-4  # a ratio up to 1.0001 is the same balance, written with rounding


def balance_ceilings(encoded: "_Encoded") -> np.ndarray:
    """The highest balance ratio (to the month before) the cascade may draw in a month into each state.

    1 for the states into which the book's balances never rise (`RISE_SHARE`, `RISE_EVIDENCE`): an amortising
    loan that stays current, whose balance every real month is at most the month before's. The amount head
    predicts a ratio near 1 without a ceiling, so on the demo book 18% of the synthetic current-to-current months
    held a balance a little above the month before, against none of the real ones: a path a lender's reviewer
    would reject. Elsewhere (a card's revolving balance; arrears that capitalise interest) the cap stays
    `BALANCE_CAP`. An exact statistic of the borrowers, so never computed under DP-SGD.
    """
    from models.sequences.network import BALANCE_CAP

    target = encoded.balance_target.numpy()
    observed = encoded.balance_mask.numpy().astype(bool)
    states = encoded.next_state.numpy()
    ceilings = np.full(N_STATES, BALANCE_CAP, dtype=np.float32)
    for code in range(N_STATES):
        months = observed & (states == code)
        count = int(months.sum())
        if count >= RISE_EVIDENCE and float(np.mean(target[months] > 1.0 + _RISE_TOLERANCE)) <= RISE_SHARE:
            ceilings[code] = 1.0
    return ceilings


# --------------------------------------------------------------------------- the model


class LoanCascade:
    """Recurrent model of monthly loan performance; same interface as `models.sequences.markov.MarkovBaseline`.

    Args:
        config: the settings; defaults when None.

    Attributes:
        history: one entry per epoch, with ``epoch``, ``train_loss``,
            ``val_loss``, ``val_nll`` (mean next-state NLL per transition of
            the validation loans), ``seconds`` and any figures the DP hook adds.
        report: the `HistoryReport` of the training histories, as a dict.
    """

    def __init__(self, config: CascadeConfig | None = None) -> None:
        self.config = config or CascadeConfig()
        self.history: list[dict[str, float]] = []
        self.report: dict[str, Any] = {}
        self._net: Any = None
        self._prep: dict[str, Any] | None = None

    # ------------------------------------------------------------------ fit

    def fit(
        self,
        loans: pl.DataFrame,
        performance: pl.DataFrame,
        schema: TableSchema,
        *,
        exclude: list[str] | None = None,
        seed: int | None = None,
        dp: DPTrainingHook | None = None,
        privacy_unit_column: str | None = "borrower_id",
        public_domains: Mapping[str, Mapping[str, Any]] | None = None,
        as_of: str | None = None,
        tenant: str | None = None,
        file: str | None = None,
    ) -> "LoanCascade":
        """Train on the loans' histories, stopping early on a validation split.

        Args:
            loans: the static loans table (the train split).
            performance: their monthly histories (canonical columns).
            schema: the loans' schema; its numeric, integer, boolean and
                categorical columns (less ids, text, the target and `exclude`)
                are the static inputs.
            exclude: further loans columns to leave out of the inputs.
            seed: overrides `config.seed`.
            dp: the DP-SGD hook; None trains without differential privacy.
            privacy_unit_column: the loans column naming the borrower; loans
                are their own unit when it is absent.
            public_domains: column -> public domain declaration (the shape of
                ``privacy.domains``, see `StaticEncoder.from_domains`); when
                given, the static encoder is built from them without reading
                the loans' values, and columns without one are left out
                (``_prep["encoder_left_out"]``). None fits the encoder on the
                loans (means, spreads, most frequent levels).
            as_of: the history's cut-off ('YYYY-MM', tenant.yaml's
                ``performance.as_of``); None takes the history's last
                reporting month, except under DP, where only a declared
                cut-off caps the sampled histories (see `observation_window`).
            tenant: named in errors.
            file: named in errors.

        With `dp`, training follows the rules that `DPTrainingHook` lists
        (per-loan losses, zero bias start, all units and all epochs, last
        weights, no calibration, no training loss in the history).

        After training (unless `config.calibrate` is off or `dp` is given) the
        state head is calibrated on all the training loans (train and
        validation split): first logit offsets per previous state and month
        on book by L-BFGS on the teacher-forced next-state likelihood, then
        up to three rounds of simulating the loans and adding each transient
        row's log ratio of real to expected simulated transition shares,
        stopping once a round no longer narrows the gap.
        ``_prep["calibration"]`` records what was done.

        Sampled histories stop at the tape's cut-off (`ObservationWindow`,
        kept in ``_prep["observation_window"]``): a real history that stops
        there is censored, its months past the end masked out of every loss,
        and the free-running calibration stops each simulated training path
        where its loan's real history was censored.

        Balance and payment are modelled when the history has them (either,
        both or neither: the states are modelled from status or days past
        due alone); a state the history never holds is never sampled, and
        neither is a move between two states it never makes (dpd60 to
        dpd30, say; not under DP, where which moves occur is an uncharged
        statistic of the borrowers).

        Raises:
            InvalidDataError: the histories fail `validate_histories` or match
                no loan, or they carry amounts and the loans no original amount.
            TenantConfigError: the history reports months after `as_of`.
        """
        torch = _torch()
        from models.sequences.network import CascadeNet

        config = self.config
        seed = config.seed if seed is None else int(seed)
        id_column = schema.id_column or "loan_id"
        report = validate_histories(performance, loans, tenant=tenant, file=file, id_column=id_column)
        amounts = history_amounts(performance)
        # Under DP-SGD nothing is learned outside the training loop: which states occur, the median days past
        # due per state and the reporting offset are public constants (every state allowed, DEFAULT_DPD,
        # PUBLIC_REPORTING_OFFSET), not exact statistics of the borrowers.
        seen = [True] * N_STATES if dp is not None else observed_states(performance)
        months = int(config.max_months or report.max_period)
        ids = loans.get_column(id_column).cast(pl.String).to_numpy()
        paths, keep = training_paths(performance, ids, months, tenant=tenant, file=file)
        loans = loans.filter(pl.Series(keep))
        paths = LoanPaths(paths.loan_ids[keep], paths.states[keep], paths.balance[keep], paths.payment[keep], paths.lengths[keep])
        private = dp is not None
        offset = _public_offset(performance, loans) if private else reporting_offset(performance, loans, id_column)
        window = observation_window(performance, loans, offset, as_of=as_of, private=private, tenant=tenant)
        inputs = static_columns(schema, loans, exclude)
        if public_domains is not None:
            encoder, left_out = StaticEncoder.from_domains(schema, inputs, public_domains)
        else:
            encoder, left_out = StaticEncoder.fit(loans, schema, inputs), []
        terms = loan_terms(
            loans, fallback_term=months, term_column=report.term_column or "term_months", need_amount=bool(amounts),
            tenant=tenant, file=file,
        )
        encoded = _encode(encoder.transform(loans), paths, terms, months, amounts)
        units = self._privacy_units(loans, privacy_unit_column, id_column)
        # Under DP-SGD every borrower trains and every epoch runs: choosing when to stop from held-out (or
        # training) losses of real borrowers would be a data-dependent release outside the accounting.
        train_rows, val_rows = self._split(units, seed, 0.0 if private else config.validation_share)
        device = _device(config.device)

        history: list[dict[str, float]] = []
        with _torch_session(config.threads, seed, device, deterministic=True):
            net = CascadeNet(
                encoder.width, config.hidden_size, config.layers, config.cell,
                recurrent_factory=dp.recurrent_factory if dp is not None else None,
                months=months,
            ).to(device)
            if not private:
                # Starting the state head at the book's state frequencies skips the epochs it would spend learning
                # them; under DP-SGD those frequencies are an uncharged statistic, so the bias keeps a zero start.
                observed = encoded.next_state[train_rows]
                frequencies = torch.bincount(observed[observed >= 0], minlength=N_STATES).double() + 1.0
                with torch.no_grad():
                    net.state_head[-1].bias.copy_(torch.log(frequencies / frequencies.sum()).float())
            else:
                with torch.no_grad():
                    net.state_head[-1].bias.zero_()
            optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
            train_set = torch.utils.data.TensorDataset(*(t[train_rows] for t in encoded.tensors()))
            model = net
            if dp is not None:
                loader = torch.utils.data.DataLoader(
                    train_set, batch_size=config.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
                )
                model, optimizer, loader = dp.wrap(net, optimizer, loader, privacy_units=units[train_rows])
            else:
                # The same seeded shuffle and batches as DataLoader(shuffle=True), each batch indexed from the tensors
                # at once instead of collated from `batch_size` single rows (a tenth of the epoch on the demo book).
                # The loader draws each epoch's worker seed from the generator before the shuffle, as it does there.
                shuffle = torch.Generator().manual_seed(seed)
                sampler = torch.utils.data.BatchSampler(
                    torch.utils.data.RandomSampler(train_set, generator=shuffle), batch_size=config.batch_size, drop_last=False
                )
                loader = torch.utils.data.DataLoader(train_set, sampler=sampler, batch_size=None, generator=shuffle)
            val_tensors = tuple(t[val_rows] for t in encoded.tensors())
            best_loss, best_state, stale = math.inf, None, 0
            planned = config.epochs if private else planned_epochs(config, len(loader))
            schedule = _cosine_schedule(config.lr, config.lr_decay, planned * max(len(loader), 1))
            step = 0
            for epoch in range(1, planned + 1):
                started = time.perf_counter()
                model.train()
                total, count = 0.0, 0
                for batch in loader:
                    batch = tuple(t.to(device) for t in batch)
                    # Set on the (possibly DP-wrapped) optimizer's groups, so any optimizer the hook returns follows it.
                    for group in optimizer.param_groups:
                        group["lr"] = schedule(step)
                    step += 1
                    optimizer.zero_grad(set_to_none=True)
                    if private:
                        # Per-loan losses: one loan's gradient must not depend on the others in its batch.
                        loss = _dp_batch_loss(model, batch, config.amount_weight)
                    else:
                        loss, _, _ = _losses(model, batch, config.amount_weight)
                    loss.backward()
                    optimizer.step()
                    total += float(loss.detach()) * batch[0].shape[0]
                    count += batch[0].shape[0]
                entry: dict[str, float] = {"epoch": epoch}
                if not private:
                    # Under DP the training loss is an exact, uncharged statistic of the borrowers; it is not kept.
                    entry["train_loss"] = total / max(count, 1)
                if len(val_rows):
                    val_loss, val_nll = self._evaluate(net, val_tensors, device)
                    entry.update(val_loss=val_loss, val_nll=val_nll)
                    monitored = val_loss
                else:
                    monitored = total / max(count, 1)
                entry["seconds"] = time.perf_counter() - started
                if private:
                    entry.update({k: float(v) for k, v in dp.on_epoch_end(epoch).items()})
                    history.append(entry)
                    continue
                history.append(entry)
                if monitored < best_loss - 1e-6:
                    best_loss, stale = monitored, 0
                    best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
                else:
                    stale += 1
                    if stale > config.patience:
                        break
            if best_state is not None:
                net.load_state_dict(best_state)
            net.eval()
            moves = None if private else observed_transitions(encoded.next_state.numpy(), months)
            _mask_unseen(net, seen, moves)
            if not private and "balance" in amounts:
                ceilings = balance_ceilings(encoded)
                with torch.no_grad():
                    net.balance_ceiling.copy_(torch.from_numpy(ceilings).to(net.balance_ceiling))
            started = time.perf_counter()
            # each training loan observable from its own first reporting month to the cut-off (not read under DP)
            limits = None if private else window.limits(first_reporting_months(performance, paths.loan_ids))
            calibration = self._calibrate(net, encoded, terms, months, seed, device, dp, amounts, seen, moves, limits)
            if calibration.get("fitted"):
                calibration["seconds"] = time.perf_counter() - started
        net.eval()
        self._net = net
        self.history = history
        self.report = report.to_dict() if not private else _public_report(report)
        self._prep = {
            "id_column": id_column,
            "term_column": report.term_column,
            "months": months,
            "encoder": encoder.to_dict(),
            "days_past_due": list(DEFAULT_DPD) if private else state_days_past_due(performance),
            "amounts": list(amounts),
            "observed_states": seen,
            # (previous state incl. the start token) x next state: the moves the training paths make; None under DP
            "observed_transitions": None if moves is None else moves.tolist(),
            "reporting_offset": offset,
            "observation_window": window.to_dict(),
            "recurrent": "torch" if dp is None or dp.recurrent_factory is None else "custom",
            # under DP the number of training loans is an exact count of the borrowers: not kept
            "train_loans": None if private else int(len(train_rows)),
            "validation_loans": None if private else int(len(val_rows)),
            "calibration": calibration,
            "encoder_source": "public domains" if public_domains is not None else "training loans",
            "encoder_left_out": left_out,
        }
        return self

    def _calibrate(
        self,
        net: Any,
        encoded: _Encoded,
        terms: LoanTerms,
        months: int,
        seed: int,
        device: "torch.device",
        dp: DPTrainingHook | None,
        amounts: list[str],
        seen: list[bool],
        moves: np.ndarray | None = None,
        limits: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Fit the state head's logit offsets on the training book; returns what was done, for `_prep`.

        A network stopped early (or trained with a noisy rate) under-predicts
        rare transitions by a few per cent to tens of per cent, and sampling
        month by month compounds those shortfalls along the roll path
        current -> dpd30 -> dpd60 -> dpd90 -> default. Offsets per (previous
        state, month on book) restore the book's transition counts without
        touching what the network learned about individual loans.
        """
        if not self.config.calibrate:
            return {"fitted": False, "reason": "calibrate is off in the cascade settings"}
        if dp is not None:
            # Offsets fitted on the raw histories would spend privacy the DP accountant never charged.
            return {"fitted": False, "reason": "skipped under DP-SGD: it would read the histories outside the privacy accounting"}
        offsets, summary = _fit_state_offsets(net, encoded.tensors(), device)
        net.state_offset.copy_(offsets.to(net.state_offset.device, net.state_offset.dtype))
        _mask_unseen(net, seen, moves)
        correction = _free_running_correction(net, encoded, terms, months, seed, amounts, limits)
        return {"fitted": True, **summary, **correction}

    @staticmethod
    def _privacy_units(loans: pl.DataFrame, column: str | None, id_column: str) -> np.ndarray:
        name = column if column and column in loans.columns else id_column
        return loans.get_column(name).cast(pl.String).fill_null("__missing__").rank("dense").to_numpy().astype(np.int64)

    @staticmethod
    def _split(units: np.ndarray, seed: int, share: float) -> tuple[np.ndarray, np.ndarray]:
        """Training and validation rows (`share` of the units held out), keeping a borrower's loans together."""
        unique = np.unique(units)
        n_val = int(round(len(unique) * share))
        if n_val == 0 or n_val == len(unique):
            return np.arange(len(units)), np.arange(0)
        held = np.random.default_rng(seed).permutation(unique)[:n_val]
        is_val = np.isin(units, held)
        return np.flatnonzero(~is_val), np.flatnonzero(is_val)

    def _evaluate(self, net: Any, tensors: tuple["torch.Tensor", ...], device: "torch.device") -> tuple[float, float]:
        """(mean loss, mean transition NLL) over `tensors`, in chunks, without gradients."""
        torch = _torch()
        net.eval()
        loss_sum, nll_sum, rows, transitions = 0.0, 0.0, 0, 0
        with torch.no_grad():
            for start in range(0, tensors[0].shape[0], _SCORE_CHUNK):
                batch = tuple(t[start:start + _SCORE_CHUNK].to(device) for t in tensors)
                loss, nll, n = _losses(net, batch, self.config.amount_weight)
                loss_sum += float(loss) * batch[0].shape[0]
                rows += batch[0].shape[0]
                nll_sum += float(nll)
                transitions += n
        return loss_sum / max(rows, 1), nll_sum / max(transitions, 1)

    def _require(self) -> dict[str, Any]:
        if self._prep is None or self._net is None:
            raise NotFittedError("the cascade is not fitted.", fix="call fit(...) or LoanCascade.load(path) first.")
        return self._prep

    def _terms(self, loans: pl.DataFrame) -> LoanTerms:
        prep = self._require()
        return loan_terms(
            loans, fallback_term=prep["months"], term_column=prep["term_column"] or "term_months",
            need_amount=bool(prep["amounts"]),
        )

    def _ids(self, loans: pl.DataFrame) -> np.ndarray:
        prep = self._require()
        column = prep["id_column"] if prep["id_column"] in loans.columns else "loan_id"
        if column not in loans.columns:
            raise InvalidDataError(
                f"the loans have no id column '{prep['id_column']}'.",
                column=prep["id_column"],
                fix="pass loans with the id column the cascade was trained with.",
            )
        return loans.get_column(column).cast(pl.String).to_numpy()

    # ------------------------------------------------------------------ use

    def log_likelihood(self, loans: pl.DataFrame, performance: pl.DataFrame) -> float:
        """Mean log-probability per month-to-month transition of `performance` (held-out histories).

        Scores the same transitions as `MarkovBaseline.log_likelihood`: months
        2 onwards of each path, cut at its first absorbing month.
        """
        prep = self._require()
        months = int(prep["months"])
        paths = loan_paths(performance, self._ids(loans), months)
        encoder = StaticEncoder.from_dict(prep["encoder"])
        encoded = _encode(encoder.transform(loans), paths, self._terms(loans), months, prep["amounts"])
        if int((paths.states[:, 1:] >= 0).sum()) == 0:
            raise InvalidDataError(
                "the histories hold no month-to-month transition to score.",
                column="period",
                fix="pass histories of at least two months for loans in the loans table.",
            )
        _, nll = self._evaluate(self._net, encoded.tensors(), next(self._net.parameters()).device)
        return -nll

    def sample(
        self,
        loans: pl.DataFrame,
        seed: int = 0,
        *,
        chunk_size: int = 65536,
        defaults: np.ndarray | None = None,
        report: dict[str, Any] | None = None,
    ) -> pl.DataFrame:
        """Sample monthly histories for `loans` (e.g. synthetic loans with new ids).

        All loans advance together month by month: the state is drawn from the
        state head (multinomial), then balance and payment given that state.
        A path stops at an absorbing state, at the loan's term, at the longest
        modelled month, or at the tape's cut-off (`observation_window`): a
        loan is followed from the reporting month of its period 1 (its
        origination month plus the reporting offset, or drawn from the real
        loans' first months when the loans carry no origination date) to the
        cut-off, as the real extract followed it. Returns the canonical
        performance columns, plus ``reporting_month`` when the training
        history had one and a loan can be placed in time. The same seed gives
        the same histories.

        With `defaults` (one bool per loan) each history is drawn given whether
        it reaches default: paths are drawn again for the loans whose path
        disagrees (`_simulate_given_defaults`), so a loan table whose default
        flag a lender derives from the history gets histories that agree with
        it. `report`, when given, receives what that took (loans asked for,
        matched, draws).
        """
        prep = self._require()
        months = int(prep["months"])
        ids = self._ids(loans)
        static = StaticEncoder.from_dict(prep["encoder"]).transform(loans)
        terms = self._terms(loans)
        window = self.observation_window
        # the first months have their own stream, so drawing them leaves the paths' draws as they were
        first = window.first_months(loans, np.random.default_rng([int(seed), 1]))
        device = next(self._net.parameters()).device
        with _torch_session(self.config.threads, int(seed), device, deterministic=False):
            if defaults is None:
                states, balance, payment = _simulate(
                    self._net, static, terms, months, int(seed), chunk_size, prep["amounts"],
                    limits=window.limits(first),
                )
            else:
                wanted = np.asarray(defaults, dtype=bool)
                if wanted.shape != (loans.height,):
                    raise ValueError(f"defaults has {wanted.shape} values for {loans.height} loans")
                states, balance, payment, first, matched = _simulate_given_defaults(
                    self._net, static, terms, months, int(seed), chunk_size, prep["amounts"], wanted, window, first
                )
                if report is not None:
                    report.update(matched)
        return paths_to_frame(ids, states, balance, payment, prep["days_past_due"], amounts=prep["amounts"],
                              first_month=first)

    @property
    def observation_window(self) -> ObservationWindow:
        """Where sampled histories stop: the tape's cut-off and how a loan is placed before it (see `fit`)."""
        return ObservationWindow.from_dict(self._require()["observation_window"])

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save to the folder `path`: weights.pt (a dict of plain tensors), config.json, preprocessing.json.

        Returns the folder. Each file is written atomically.
        """
        torch = _torch()
        prep = self._require()
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save({k: v.detach().cpu().clone() for k, v in self._net.state_dict().items()}, buffer)
        atomic_write_bytes(folder / WEIGHTS_FILE, buffer.getvalue())
        atomic_write_text(folder / CONFIG_FILE, json.dumps(self.config.to_dict(), indent=1))
        atomic_write_text(
            folder / PREPROCESSING_FILE,
            json.dumps({**prep, "history": self.history, "report": self.report}, indent=1),
        )
        return folder

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        recurrent_factory: Callable[[str, int, int, int], Any] | None = None,
        device: str | None = None,
    ) -> "LoanCascade":
        """Load a cascade saved by `save` (weights read with ``weights_only=True``).

        Args:
            path: the folder `save` wrote.
            recurrent_factory: the factory the model was trained with, when it
                was not torch's LSTM/GRU (a DP-trained model).
            device: overrides the saved config's device.

        Raises:
            NotFittedError: a file is missing.
            TenantConfigError: a DP-trained model without its factory.
        """
        torch = _torch()
        from models.sequences.network import CascadeNet

        folder = Path(path)
        missing = [name for name in (WEIGHTS_FILE, CONFIG_FILE, PREPROCESSING_FILE) if not (folder / name).is_file()]
        if missing:
            raise NotFittedError(
                f"no complete saved cascade at '{folder}' (missing {missing}).",
                file=str(folder),
                fix="save one with LoanCascade.save(path).",
            )
        config = CascadeConfig.from_dict(json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")))
        if device is not None:
            config = CascadeConfig.from_dict({**config.to_dict(), "device": device})
        prep = json.loads((folder / PREPROCESSING_FILE).read_text(encoding="utf-8"))
        if prep["recurrent"] == "custom" and recurrent_factory is None:
            raise TenantConfigError(
                "this cascade was trained with a custom recurrent layer (DP-SGD).",
                file=str(folder),
                fix="pass the same recurrent_factory to LoanCascade.load.",
            )
        model = cls(config)
        model.history = prep.pop("history")
        model.report = prep.pop("report")
        encoder = StaticEncoder.from_dict(prep["encoder"])
        net = CascadeNet(
            encoder.width, config.hidden_size, config.layers, config.cell,
            recurrent_factory=recurrent_factory, months=int(prep["months"]),
        )
        state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        # A cascade saved before calibration existed has no offsets: it loads with zero offsets, as it sampled then.
        state.setdefault("state_offset", net.state_offset.clone())
        # Saved before balance ceilings existed: it drew balance ratios up to BALANCE_CAP in every state.
        state.setdefault("balance_ceiling", net.balance_ceiling.clone())
        prep.setdefault("calibration", {"fitted": False, "reason": "saved before calibration existed"})
        # Saved before histories without amounts were accepted: it was trained on both.
        prep.setdefault("amounts", list(AMOUNTS))
        # Saved before histories stopped at the cut-off: it sampled them uncapped.
        prep.setdefault("observation_window", ObservationWindow(
            None, "saved before sampled histories stopped at the tape's cut-off", prep["reporting_offset"]
        ).to_dict())
        net.load_state_dict(state)
        net.to(_device(config.device)).eval()
        model._net = net
        model._prep = prep
        return model

    def state_dict(self) -> dict[str, Any]:
        """The network's weights (tensors), e.g. to compare two fits."""
        self._require()
        return dict(self._net.state_dict())
