"""The torch network behind `models.sequences.cascade.LoanCascade`.

This module imports torch at the top, so only `models.sequences.cascade` imports it, and
only inside the functions that train, score or sample; importing
`models.sequences.cascade` stays light.

The network reads a loan's static attributes once (an MLP embedding that sets
the recurrent layer's initial state and also enters every step), and at each
month the previous state, the previous balance and payment ratios and where
the month sits in the term. A categorical head gives the next state; a second
head, given that next state, gives the balance and payment ratios.

After training, `models.sequences.cascade` calibrates the state head: the buffer
``state_offset`` (previous state x month on book x next state) adds fitted
logit offsets so the model's expected transition counts match the book's,
and the buffer ``balance_ceiling`` keeps balances from rising in the states
where the book's never do. Both are part of the state dict, so saving and
loading keep them.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

N_STATES = 7
START_TOKEN = N_STATES  # the "previous state" of month 1
STEP_FEATURES = N_STATES + 1 + 2 + 3  # state one-hot incl. start, two ratios, three time features
BALANCE_CAP = 2.0

RecurrentFactory = Callable[[str, int, int, int], nn.Module]


def default_recurrent_factory(cell: str, input_size: int, hidden_size: int, num_layers: int) -> nn.Module:
    """torch's own LSTM or GRU, batch first.

    The DP-SGD extension swaps this for opacus' ``DPLSTM``/``DPGRU``, which take
    the same arguments and return ``(output, state)`` the same way.
    """
    layer = nn.LSTM if cell == "lstm" else nn.GRU
    return layer(input_size, hidden_size, num_layers=num_layers, batch_first=True)


class CascadeNet(nn.Module):
    """Static embedding -> recurrent layer over months -> next-state and amount heads."""

    def __init__(
        self,
        static_size: int,
        hidden_size: int,
        layers: int,
        cell: str,
        recurrent_factory: RecurrentFactory | None = None,
        months: int = 1,
    ) -> None:
        super().__init__()
        self.cell = cell
        self.layers = layers
        self.hidden_size = hidden_size
        self.static_net = nn.Sequential(
            nn.Linear(max(static_size, 1), hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
        )
        self.init_h = nn.Linear(hidden_size, hidden_size * layers)
        self.init_c = nn.Linear(hidden_size, hidden_size * layers) if cell == "lstm" else None
        factory = recurrent_factory or default_recurrent_factory
        self.rnn = factory(cell, STEP_FEATURES + hidden_size, hidden_size, layers)
        # The head also sees the month's own inputs, so the Markov part (previous state, term month)
        # is a direct path and the recurrent layer only has to carry what history adds.
        self.state_head = nn.Sequential(
            nn.Linear(2 * hidden_size + STEP_FEATURES, hidden_size), nn.ReLU(), nn.Linear(hidden_size, N_STATES)
        )
        self.amount_head = nn.Sequential(
            nn.Linear(hidden_size + N_STATES, hidden_size), nn.ReLU(), nn.Linear(hidden_size, 2)
        )
        # Logit offsets per (previous state incl. the start token, month on book); zero until calibrated.
        # A buffer, not a parameter: training never moves it and DP-SGD never sees it.
        self.register_buffer("state_offset", torch.zeros(START_TOKEN + 1, max(int(months), 1), N_STATES))
        # The highest balance ratio a month into each state may draw: BALANCE_CAP until the cascade, after training,
        # sets 1 for the states into which the book's balances never rise (an amortising loan that stays current).
        self.register_buffer("balance_ceiling", torch.full((N_STATES,), BALANCE_CAP))

    def embed(self, static: torch.Tensor) -> torch.Tensor:
        """The static embedding, (batch, hidden)."""
        return self.static_net(static)

    def initial_state(self, embedding: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The recurrent layer's initial state from the static embedding."""
        batch = embedding.shape[0]

        def shape(x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(x).view(batch, self.layers, self.hidden_size).transpose(0, 1).contiguous()

        h0 = shape(self.init_h(embedding))
        if self.init_c is None:
            return h0
        return h0, shape(self.init_c(embedding))

    def run(
        self,
        embedding: torch.Tensor,
        steps: torch.Tensor,
        state: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor]]:
        """Recurrent outputs (batch, months, hidden) and the final state for `steps` (batch, months, features)."""
        months = steps.shape[1]
        inputs = torch.cat([steps, embedding.unsqueeze(1).expand(-1, months, -1)], dim=2)
        return self.rnn(inputs, state)

    def raw_state_logits(self, outputs: torch.Tensor, embedding: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """Next-state logits (batch, months, 7) of the state head alone, before the calibration offsets."""
        months = outputs.shape[1]
        return self.state_head(torch.cat([outputs, embedding.unsqueeze(1).expand(-1, months, -1), steps], dim=2))

    def offsets(self, steps: torch.Tensor, first_period: int = 1) -> torch.Tensor:
        """The calibration offsets (batch, months, 7) of `steps`, whose first month is month on book `first_period`."""
        previous = steps[..., : START_TOKEN + 1].argmax(dim=2)
        last = self.state_offset.shape[1] - 1
        period = torch.arange(steps.shape[1], device=steps.device) + (first_period - 1)
        return self.state_offset[previous, period.clamp(0, last).unsqueeze(0).expand_as(previous)]

    def state_logits(
        self, outputs: torch.Tensor, embedding: torch.Tensor, steps: torch.Tensor, first_period: int = 1
    ) -> torch.Tensor:
        """Calibrated next-state logits (batch, months, 7); `first_period` is the month on book of steps[:, 0]."""
        return self.raw_state_logits(outputs, embedding, steps) + self.offsets(steps, first_period)

    def amounts(self, outputs: torch.Tensor, next_state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Balance ratio in [0, the next state's `balance_ceiling`] and non-negative payment ratio, given the next
        state (long, -1 allowed)."""
        known = next_state.clamp(min=0)
        onehot = nn.functional.one_hot(known, N_STATES).to(outputs.dtype)
        raw = self.amount_head(torch.cat([outputs, onehot], dim=2))
        balance = torch.minimum(BALANCE_CAP * torch.sigmoid(raw[..., 0]), self.balance_ceiling[known].to(outputs.dtype))
        return balance, nn.functional.softplus(raw[..., 1])

    def forward(
        self, static: torch.Tensor, steps: torch.Tensor, next_state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Teacher-forced pass: state logits, balance ratios and payment ratios for every month."""
        embedding = self.embed(static)
        outputs, _ = self.run(embedding, steps, self.initial_state(embedding))
        balance, payment = self.amounts(outputs, next_state)
        return self.state_logits(outputs, embedding, steps), balance, payment
