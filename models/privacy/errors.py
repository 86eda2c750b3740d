"""Typed errors of differential-privacy accounting and the per-tenant budget ledger.

They extend `models.errors.CreditTwinError`, so each names the tenant and says
what to do next; `BudgetExceededError` also carries the figures a reviewer needs
(spent, requested, remaining) as attributes for the Dagster UI and the CLI.
"""

from __future__ import annotations

from models.errors import CreditTwinError


class PrivacyBudgetError(CreditTwinError):
    """A privacy budget that is invalid, missing, or cannot be changed as asked."""


class InvalidMechanismError(PrivacyBudgetError):
    """A mechanism description the accountant cannot account for as given."""


class BudgetExceededError(PrivacyBudgetError):
    """A charge refused because, composed with what was spent, it would exceed the budget.

    Attributes hold the epsilon and delta figures: `spent_*` before this charge,
    `requested_*` for the refused mechanism alone, `remaining_*` before this
    charge, `would_reach_*` the composed total had it been accepted, and
    `total_*` the tenant's budget.
    """

    def __init__(
        self,
        *,
        tenant: str,
        asset: str,
        accountant: str,
        total_epsilon: float,
        total_delta: float,
        spent_epsilon: float,
        spent_delta: float,
        requested_epsilon: float,
        requested_delta: float,
        would_reach_epsilon: float,
        would_reach_delta: float,
    ) -> None:
        self.asset = asset
        self.accountant = accountant
        self.total_epsilon = total_epsilon
        self.total_delta = total_delta
        self.spent_epsilon = spent_epsilon
        self.spent_delta = spent_delta
        self.requested_epsilon = requested_epsilon
        self.requested_delta = requested_delta
        self.remaining_epsilon = max(total_epsilon - spent_epsilon, 0.0)
        self.remaining_delta = max(total_delta - spent_delta, 0.0)
        self.would_reach_epsilon = would_reach_epsilon
        self.would_reach_delta = would_reach_delta
        super().__init__(
            f"privacy charge for asset '{asset}' refused, nothing was run: "
            f"spent epsilon={spent_epsilon:.6g} delta={spent_delta:.3g}, "
            f"requested epsilon={requested_epsilon:.6g} delta={requested_delta:.3g}, "
            f"remaining epsilon={self.remaining_epsilon:.6g} delta={self.remaining_delta:.3g} "
            f"of a budget of epsilon={total_epsilon:.6g} delta={total_delta:.3g}; composed by {accountant} "
            f"the total would reach epsilon={would_reach_epsilon:.6g} delta={would_reach_delta:.3g}.",
            tenant=tenant,
            fix=(
                "spend less (more noise, fewer steps, a smaller sampling rate), or raise the budget explicitly "
                "with `credittwin budget <tenant> --raise-epsilon ... --reason ...` if the data owner agrees."
            ),
        )


class LedgerUnavailableError(PrivacyBudgetError):
    """The ledger's database could not be reached or failed mid-transaction.

    The transaction was rolled back (or never began), so nothing was charged and
    no private computation may run; retrying with the same idempotency key
    charges at most once.
    """

    transient = True  # a service that may come back: the step may be retried
