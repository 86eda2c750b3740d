"""Differential-privacy accounting: what a mechanism costs and how costs compose.

A `MechanismSpec` describes one private computation: a Laplace release or an
already-computed epsilon (pure DP, composed by basic composition, accountant
``pure-sum``), a Gaussian release, or DP-SGD's Poisson-subsampled Gaussian
(composed through Google's dp-accounting library, RDP by default or PLD). The
two parts are combined by basic composition: epsilons add, deltas add. Every
figure this module returns names the accountant that produced it.

The Gaussian part is evaluated at the sum of the Gaussian mechanisms' own
deltas (each mechanism states the delta at which its epsilon holds), so
composing k charges spends exactly their deltas and reports the tightest epsilon
the accountant can certify at that delta.

No Dagster or SQL here; dp-accounting is imported inside the functions that use
it because it pulls in SciPy at import time.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from fractions import Fraction
from typing import Any

import numpy as np

from models.privacy.errors import InvalidMechanismError, PrivacyBudgetError

MECHANISM_KINDS = ("laplace", "gaussian", "subsampled_gaussian", "pure")
PURE_KINDS = ("laplace", "pure")
ACCOUNTANTS = ("rdp", "pld")

PURE_SUM = "pure-sum"
RDP_ACCOUNTANT = "dp_accounting.rdp"
PLD_ACCOUNTANT = "dp_accounting.pld"
_LIBRARY_NAME = {"rdp": RDP_ACCOUNTANT, "pld": PLD_ACCOUNTANT}

DEFAULT_EPSILON_BUDGET = 3.0
"""Platform default total epsilon per tenant when tenant.yaml sets none."""

DEFAULT_DELTA = 1e-5
"""Platform default total delta when tenant.yaml sets none (lowered to 1/(10 n) for large tapes)."""

RELEASES_PER_DELTA_BUDGET = 100
"""A release spends at most 1/100 of the tenant's delta budget (`release_delta`), so the delta lasts
100 regenerations; the epsilon budget is then what limits them."""

CLAIM_TOLERANCE = 1e-3
"""Relative amount by which a mechanism may understate its epsilon before it is refused.

Calibration (`noise_multiplier_for`) stops within a small tolerance of its
target, so a claim computed by the same accountant may differ in the last digits.
"""

PLD_DISCRETIZATION = 1e-4

RDP_CACHE_SIZE = 256
"""Most RDP curves one process keeps (`rdp_curve`); a ledger sees few distinct mechanism configurations."""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite_positive(value: object) -> bool:
    return _is_number(value) and math.isfinite(value) and value > 0


@dataclass(frozen=True)
class MechanismSpec:
    """One private computation to be charged, with the privacy it claims.

    Fields by `kind`:
        ``pure``: `epsilon` (required) and optionally `delta`, an already
            accounted (epsilon, delta) guarantee; `steps` must be 1.
        ``laplace``: `scale` (the Laplace b) with `sensitivity`, giving
            epsilon = steps * sensitivity / scale, or just `epsilon`; delta is 0.
        ``gaussian``: `noise_multiplier` (sigma / sensitivity) or `sigma` with
            `sensitivity`, released `steps` times; `delta` (> 0) is the delta at
            which the mechanism's epsilon is stated.
        ``subsampled_gaussian``: DP-SGD, as ``gaussian`` plus `sampling_rate`
            (Poisson sampling probability q), `steps` training steps.

    `epsilon` is what the mechanism claims for all its steps together; for
    Gaussian kinds it may be left out and is then what the accountant computes.
    A claim lower than the accountant's figure is refused by `account`.
    """

    kind: str
    epsilon: float | None = None
    delta: float = 0.0
    noise_multiplier: float | None = None
    sigma: float | None = None
    sensitivity: float = 1.0
    scale: float | None = None
    sampling_rate: float | None = None
    steps: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise InvalidMechanismError(
                f"invalid {self.kind!r} mechanism: " + "; ".join(problems) + ".",
                fix="describe the mechanism with the fields its kind needs (see models.privacy.accounting.MechanismSpec).",
            )

    def _problems(self) -> list[str]:
        if self.kind not in MECHANISM_KINDS:
            return [f"kind must be one of {MECHANISM_KINDS}"]
        problems = []
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            problems.append(f"steps must be an integer >= 1, got {self.steps!r}")
        if not (_is_number(self.delta) and math.isfinite(self.delta) and 0 <= self.delta < 1):
            problems.append(f"delta must be a number in [0, 1), got {self.delta!r}")
        if self.epsilon is not None and not _finite_positive(self.epsilon):
            problems.append(f"epsilon must be a finite number > 0, got {self.epsilon!r}")
        if not _finite_positive(self.sensitivity):
            problems.append(f"sensitivity must be a finite number > 0, got {self.sensitivity!r}")
        for name in ("noise_multiplier", "sigma", "scale"):
            value = getattr(self, name)
            if value is not None and not _finite_positive(value):
                problems.append(f"{name} must be a finite number > 0, got {value!r}")
        noise = self.noise_multiplier is not None or self.sigma is not None
        if self.kind in PURE_KINDS:
            if noise or self.sampling_rate is not None:
                problems.append("noise_multiplier, sigma and sampling_rate belong to Gaussian mechanisms")
        else:
            if self.scale is not None:
                problems.append("scale belongs to the Laplace mechanism; use sigma or noise_multiplier")
            if not noise:
                problems.append("a Gaussian mechanism needs noise_multiplier or sigma")
            if self.noise_multiplier is not None and self.sigma is not None and _finite_positive(self.sigma):
                implied = self.sigma / self.sensitivity
                if _finite_positive(self.noise_multiplier) and not math.isclose(implied, self.noise_multiplier, rel_tol=1e-9):
                    problems.append(
                        f"noise_multiplier {self.noise_multiplier!r} disagrees with sigma/sensitivity = {implied!r}"
                    )
            if _is_number(self.delta) and self.delta == 0:
                problems.append("a Gaussian mechanism needs delta > 0, the delta at which its epsilon holds")
        if self.kind == "pure":
            if self.epsilon is None:
                problems.append("a pure mechanism needs its epsilon")
            if self.steps != 1:
                problems.append("a pure mechanism's epsilon covers all its releases; leave steps at 1")
        if self.kind == "laplace":
            if self.epsilon is None and self.scale is None:
                problems.append("a Laplace mechanism needs scale (with sensitivity) or epsilon")
            if _is_number(self.delta) and self.delta != 0:
                problems.append("the Laplace mechanism is pure: delta must be 0")
        if self.kind == "gaussian" and self.sampling_rate is not None:
            problems.append("sampling_rate belongs to 'subsampled_gaussian'")
        if self.kind == "subsampled_gaussian" and not (
            _is_number(self.sampling_rate) and math.isfinite(self.sampling_rate) and 0 < self.sampling_rate <= 1
        ):
            problems.append(f"sampling_rate must be in (0, 1], got {self.sampling_rate!r}")
        return problems

    @property
    def is_pure(self) -> bool:
        """True when the mechanism is composed by basic (pure-epsilon) composition."""
        return self.kind in PURE_KINDS

    @property
    def effective_noise_multiplier(self) -> float:
        """sigma / sensitivity of a Gaussian mechanism."""
        if self.noise_multiplier is not None:
            return float(self.noise_multiplier)
        if self.sigma is None:
            raise InvalidMechanismError(f"a {self.kind!r} mechanism has no noise multiplier.")
        return float(self.sigma) / float(self.sensitivity)

    def pure_epsilon(self) -> float:
        """The epsilon of a pure mechanism (Laplace from its scale when given)."""
        if self.kind == "laplace" and self.scale is not None:
            return self.steps * float(self.sensitivity) / float(self.scale)
        if self.epsilon is None or not self.is_pure:
            raise InvalidMechanismError(f"a {self.kind!r} mechanism has no pure epsilon.")
        return float(self.epsilon)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description (stored with every ledger charge)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MechanismSpec":
        """Rebuild a spec from `to_dict` output; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidMechanismError(
                f"unknown mechanism field(s) {unknown}.",
                fix=f"use only {sorted(known)}.",
            )
        return cls(**dict(data))


@dataclass(frozen=True)
class RdpCurve:
    """A mechanism's Renyi-DP guarantee at each order, as dp-accounting computes it.

    RDP curves of independent mechanisms add, so a ledger can keep each charge's
    curve and compose thousands of charges by summing them. Infinite values (no
    guarantee at that order) are kept as ``None`` in `to_dict`, since JSON has no
    infinity.
    """

    orders: tuple[float, ...]
    values: tuple[float, ...]

    def to_dict(self) -> dict[str, list[float | None]]:
        """A JSON-ready form."""
        return {
            "orders": list(self.orders),
            "values": [value if math.isfinite(value) else None for value in self.values],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RdpCurve":
        """Rebuild a curve from `to_dict` output."""
        orders = tuple(float(order) for order in data["orders"])
        values = tuple(math.inf if value is None else float(value) for value in data["values"])
        if len(orders) != len(values):
            raise InvalidMechanismError(
                f"an RDP curve has {len(orders)} orders but {len(values)} values.",
                fix="recompute the curve with models.privacy.accounting.rdp_curve.",
            )
        return cls(orders=orders, values=values)


@dataclass(frozen=True)
class Composition:
    """A composed (epsilon, delta) guarantee and the accountant(s) that produced it.

    `details` maps each accountant name to its own part: epsilon, delta, the
    number of mechanisms it composed and, for RDP, the optimal order.
    """

    epsilon: float
    delta: float
    accountant: str
    details: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for asset metadata and reports."""
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "accountant": self.accountant,
            "details": {name: dict(part) for name, part in self.details.items()},
        }


def rdp_orders() -> tuple[float, ...]:
    """The RDP orders dp-accounting evaluates by default."""
    from dp_accounting.rdp import rdp_privacy_accountant

    return tuple(float(order) for order in rdp_privacy_accountant.DEFAULT_RDP_ORDERS)


def _dp_event(mechanism: MechanismSpec):
    import dp_accounting

    gaussian = dp_accounting.GaussianDpEvent(mechanism.effective_noise_multiplier)
    if mechanism.kind == "subsampled_gaussian":
        gaussian = dp_accounting.PoissonSampledDpEvent(float(mechanism.sampling_rate), gaussian)
    if mechanism.steps == 1:
        return gaussian
    return dp_accounting.SelfComposedDpEvent(gaussian, mechanism.steps)


def rdp_curve(mechanism: MechanismSpec) -> RdpCurve:
    """The RDP curve of one Gaussian or subsampled-Gaussian mechanism, by `dp_accounting.rdp`.

    The curve depends only on the kind, the noise multiplier, the sampling
    rate, the steps and the RDP orders, so it is computed once per process for
    each such combination (a bounded LRU cache of `RDP_CACHE_SIZE` curves,
    see `rdp_curve_cache_info`): dp-accounting needs tens of milliseconds for
    a subsampled Gaussian, which a ledger charge would otherwise pay every
    time. The returned `RdpCurve` is immutable, so sharing it is safe.
    """
    if mechanism.is_pure:
        raise InvalidMechanismError(
            f"a {mechanism.kind!r} mechanism is composed by {PURE_SUM}, not through an RDP curve."
        )
    rate = None if mechanism.kind == "gaussian" else float(mechanism.sampling_rate)
    return _cached_rdp_curve(
        mechanism.kind, mechanism.effective_noise_multiplier, rate, int(mechanism.steps), rdp_orders()
    )


@functools.lru_cache(maxsize=RDP_CACHE_SIZE)
def _cached_rdp_curve(
    kind: str, noise_multiplier: float, sampling_rate: float | None, steps: int, orders: tuple[float, ...]
) -> RdpCurve:
    """`rdp_curve` on the mechanism's hashable parameters; the orders are part of the key, never mixed."""
    import dp_accounting
    from dp_accounting.rdp import RdpAccountant

    event = dp_accounting.GaussianDpEvent(noise_multiplier)
    if kind == "subsampled_gaussian":
        event = dp_accounting.PoissonSampledDpEvent(sampling_rate, event)
    if steps != 1:
        event = dp_accounting.SelfComposedDpEvent(event, steps)
    accountant = RdpAccountant(orders=list(orders))
    accountant.compose(event)
    return RdpCurve(
        orders=tuple(float(order) for order in accountant.orders),
        values=tuple(float(value) for value in accountant.rdp),
    )


def rdp_curve_cache_info() -> Any:
    """Hits, misses and size of `rdp_curve`'s per-process cache (for monitoring and tests)."""
    return _cached_rdp_curve.cache_info()


def _grouped_events(mechanisms: Sequence[MechanismSpec]) -> list:
    """DpEvents with identical mechanisms merged into one self-composition.

    Repeated runs of one configuration are common; merging them lets PLD
    compose a few distinct distributions instead of one per charge.
    """
    import dp_accounting

    steps: dict[tuple[str, float, float | None], int] = {}
    for mechanism in mechanisms:
        key = (mechanism.kind, mechanism.effective_noise_multiplier, mechanism.sampling_rate)
        steps[key] = steps.get(key, 0) + mechanism.steps
    events = []
    for (kind, noise, rate), count in steps.items():
        event = dp_accounting.GaussianDpEvent(noise)
        if kind == "subsampled_gaussian":
            event = dp_accounting.PoissonSampledDpEvent(rate, event)
        events.append(event if count == 1 else dp_accounting.SelfComposedDpEvent(event, count))
    return events


def _gaussian_part(
    mechanisms: Sequence[MechanismSpec],
    delta: float,
    accountant: str,
    rdp_curves: Sequence[RdpCurve | None] | None,
) -> tuple[float, dict[str, Any]]:
    if accountant == "pld":
        import dp_accounting
        from dp_accounting.pld import PLDAccountant

        pld = PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
        pld.compose(dp_accounting.ComposedDpEvent(_grouped_events(mechanisms)))
        return float(pld.get_epsilon(delta)), {}
    from dp_accounting.rdp import rdp_privacy_accountant

    orders = rdp_orders()
    total = np.zeros(len(orders))
    for index, mechanism in enumerate(mechanisms):
        curve = rdp_curves[index] if rdp_curves is not None else None
        if curve is None or curve.orders != orders:
            # a curve stored under other orders (an older library) is recomputed, never mixed
            curve = rdp_curve(mechanism)
        total += np.asarray(curve.values, dtype=np.float64)
    epsilon, order = rdp_privacy_accountant.compute_epsilon(np.asarray(orders), total, delta)
    return float(epsilon), {"order": float(order)}


def compose(
    mechanisms: Sequence[MechanismSpec],
    delta: float | None = None,
    *,
    accountant: str = "rdp",
    rdp_curves: Sequence[RdpCurve | None] | None = None,
) -> Composition:
    """Compose mechanisms into one (epsilon, delta) guarantee.

    Pure mechanisms (Laplace, already-accounted epsilons) add up by basic
    composition (accountant ``pure-sum``). Gaussian and subsampled-Gaussian
    mechanisms are composed by dp-accounting (``rdp``: `RdpAccountant`; ``pld``:
    `PLDAccountant`) at `delta`, by default the sum of their own deltas. The
    two parts then add: epsilons add, deltas add.

    Args:
        mechanisms: what was, or would be, spent.
        delta: the delta at which to state the Gaussian part's epsilon.
        accountant: ``"rdp"`` or ``"pld"`` for the Gaussian part.
        rdp_curves: optional precomputed curves aligned with `mechanisms`
            (``None`` entries, and pure mechanisms' entries, are ignored);
            used only by the RDP accountant.

    Returns:
        A `Composition` whose `accountant` names every accountant that
        contributed (``"pure-sum+dp_accounting.rdp"`` for a mix) and whose
        `details` hold each part's own figures.
    """
    if accountant not in ACCOUNTANTS:
        raise InvalidMechanismError(
            f"unknown accountant {accountant!r}.", fix=f"use one of {ACCOUNTANTS}."
        )
    if rdp_curves is not None and len(rdp_curves) != len(mechanisms):
        raise InvalidMechanismError(
            f"{len(rdp_curves)} RDP curves given for {len(mechanisms)} mechanisms.",
            fix="pass one curve (or None) per mechanism.",
        )
    pure = [m for m in mechanisms if m.is_pure]
    gaussian_index = [i for i, m in enumerate(mechanisms) if not m.is_pure]
    gaussian_part = None
    if gaussian_index:
        gaussian = [mechanisms[i] for i in gaussian_index]
        target = _gaussian_delta(math.fsum(m.delta for m in gaussian) if delta is None else delta)
        curves = [rdp_curves[i] for i in gaussian_index] if rdp_curves is not None else None
        gaussian_epsilon, extra = _gaussian_part(gaussian, target, accountant, curves)
        gaussian_part = (_LIBRARY_NAME[accountant], gaussian_epsilon, target, len(gaussian), extra)
    return _combine(
        math.fsum(m.pure_epsilon() for m in pure), math.fsum(m.delta for m in pure), len(pure), gaussian_part
    )


def _gaussian_delta(target: object) -> float:
    if not (_is_number(target) and math.isfinite(target) and 0 < target < 1):
        raise InvalidMechanismError(
            f"Gaussian mechanisms need a delta in (0, 1) to state an epsilon, got {target!r}.",
            fix="give each Gaussian mechanism its delta, e.g. well below 1/n for n records.",
        )
    return float(target)


def _combine(
    pure_epsilon: float,
    pure_delta: float,
    pure_count: int,
    gaussian: tuple[str, float, float, int, dict[str, Any]] | None,
) -> Composition:
    """Basic composition of the pure part and the accountant's Gaussian part."""
    details: dict[str, dict[str, Any]] = {}
    epsilon_parts: list[float] = []
    delta_parts: list[float] = []
    if pure_count or gaussian is None:
        details[PURE_SUM] = {"epsilon": pure_epsilon, "delta": pure_delta, "mechanisms": pure_count}
        epsilon_parts.append(pure_epsilon)
        delta_parts.append(pure_delta)
    if gaussian is not None:
        name, epsilon, delta, count, extra = gaussian
        details[name] = {"epsilon": epsilon, "delta": delta, "mechanisms": count, **extra}
        epsilon_parts.append(epsilon)
        delta_parts.append(delta)
    return Composition(
        epsilon=math.fsum(epsilon_parts),
        delta=math.fsum(delta_parts),
        accountant="+".join(details),
        details=details,
    )


@dataclass(frozen=True)
class RunningComposition:
    """What a sequence of mechanisms composes to, kept as sums so one more costs O(1).

    The pure part keeps its epsilon and delta sums and the Gaussian part its
    delta sum as exact fractions (floats are binary fractions), so that k
    charges of epsilon e sum to the correctly rounded k*e however many there
    are; the Gaussian part also keeps its summed RDP curve (curves of
    independent mechanisms add). `composition` states the result exactly as `compose` with the RDP
    accountant does. A ledger stores it with the tenant's budget so a charge
    does not re-read every earlier charge.
    """

    orders: tuple[float, ...]
    rdp: tuple[float, ...]
    pure_epsilon: Fraction = Fraction(0)
    pure_delta: Fraction = Fraction(0)
    pure_count: int = 0
    gaussian_delta: Fraction = Fraction(0)
    gaussian_count: int = 0

    @classmethod
    def empty(cls) -> "RunningComposition":
        """Nothing composed yet."""
        orders = rdp_orders()
        return cls(orders=orders, rdp=(0.0,) * len(orders))

    @property
    def count(self) -> int:
        """How many mechanisms were composed."""
        return self.pure_count + self.gaussian_count

    def add(self, mechanism: MechanismSpec, curve: RdpCurve | None = None) -> "RunningComposition":
        """This composition followed by `mechanism` (its RDP `curve` when already computed)."""
        if mechanism.is_pure:
            return replace(
                self,
                pure_epsilon=self.pure_epsilon + Fraction(mechanism.pure_epsilon()),
                pure_delta=self.pure_delta + Fraction(mechanism.delta),
                pure_count=self.pure_count + 1,
            )
        if curve is None or curve.orders != self.orders:
            curve = rdp_curve(mechanism)
        if curve.orders != self.orders:
            raise InvalidMechanismError(
                "the RDP orders of dp-accounting changed since this composition was started.",
                fix="rebuild the running composition from the mechanisms (RunningComposition.of).",
            )
        rdp = np.asarray(self.rdp, dtype=np.float64) + np.asarray(curve.values, dtype=np.float64)
        return replace(
            self,
            rdp=tuple(float(value) for value in rdp),
            gaussian_delta=self.gaussian_delta + Fraction(mechanism.delta),
            gaussian_count=self.gaussian_count + 1,
        )

    @classmethod
    def of(
        cls, mechanisms: Sequence[MechanismSpec], rdp_curves: Sequence[RdpCurve | None] | None = None
    ) -> "RunningComposition":
        """The running composition of `mechanisms`, in order."""
        running = cls.empty()
        for index, mechanism in enumerate(mechanisms):
            running = running.add(mechanism, rdp_curves[index] if rdp_curves is not None else None)
        return running

    def composition(self) -> Composition:
        """The composed (epsilon, delta), the Gaussian part at the sum of its deltas."""
        from dp_accounting.rdp import rdp_privacy_accountant

        gaussian_part = None
        if self.gaussian_count:
            delta = _gaussian_delta(float(self.gaussian_delta))
            epsilon, order = rdp_privacy_accountant.compute_epsilon(
                np.asarray(self.orders), np.asarray(self.rdp), delta
            )
            gaussian_part = (RDP_ACCOUNTANT, float(epsilon), delta, self.gaussian_count, {"order": float(order)})
        return _combine(float(self.pure_epsilon), float(self.pure_delta), self.pure_count, gaussian_part)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (infinite RDP values as None, exact sums as "numerator/denominator")."""
        curve = RdpCurve(orders=self.orders, values=self.rdp).to_dict()
        return {
            "orders": curve["orders"],
            "rdp": curve["values"],
            "pure_epsilon": str(self.pure_epsilon),
            "pure_delta": str(self.pure_delta),
            "pure_count": self.pure_count,
            "gaussian_delta": str(self.gaussian_delta),
            "gaussian_count": self.gaussian_count,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunningComposition":
        """Rebuild from `to_dict` output."""
        curve = RdpCurve.from_dict({"orders": data["orders"], "values": data["rdp"]})
        return cls(
            orders=curve.orders,
            rdp=curve.values,
            pure_epsilon=Fraction(data["pure_epsilon"]),
            pure_delta=Fraction(data["pure_delta"]),
            pure_count=int(data["pure_count"]),
            gaussian_delta=Fraction(data["gaussian_delta"]),
            gaussian_count=int(data["gaussian_count"]),
        )


def account(
    mechanism: MechanismSpec,
    *,
    accountant: str = "rdp",
    tenant: str | None = None,
    curve: RdpCurve | None = None,
) -> Composition:
    """What one mechanism costs on its own, checked against what it claims.

    `curve` is the mechanism's RDP curve when the caller already computed it
    (`rdp_curve`), so the RDP accountant does not compute it twice.

    Raises:
        InvalidMechanismError: the mechanism claims an epsilon lower than the
            accountant certifies (beyond `CLAIM_TOLERANCE`), so a report built
            on the claim would overstate the privacy it gives.
    """
    composition = compose([mechanism], accountant=accountant, rdp_curves=[curve])
    claimed = mechanism.epsilon
    if claimed is not None and composition.epsilon > claimed * (1 + CLAIM_TOLERANCE):
        raise InvalidMechanismError(
            f"the {mechanism.kind!r} mechanism claims epsilon={claimed:.6g} but {composition.accountant} "
            f"certifies epsilon={composition.epsilon:.6g} at delta={composition.delta:.3g}.",
            tenant=tenant,
            fix=(
                "calibrate the noise with models.privacy.accounting.noise_multiplier_for (the ledger's accountant), "
                "claim the certified epsilon, or leave epsilon out to charge what the accountant computes."
            ),
        )
    return composition


def epsilon_for_dpsgd(
    noise_multiplier: float, sampling_rate: float, steps: int, delta: float, *, accountant: str = "rdp"
) -> float:
    """Epsilon of DP-SGD (Poisson-subsampled Gaussian, `steps` steps) at `delta`."""
    mechanism = MechanismSpec(
        kind="subsampled_gaussian",
        noise_multiplier=noise_multiplier,
        sampling_rate=sampling_rate,
        steps=steps,
        delta=delta,
    )
    return compose([mechanism], accountant=accountant).epsilon


def noise_multiplier_for(
    target_epsilon: float, sampling_rate: float, steps: int, delta: float, *, accountant: str = "rdp"
) -> float:
    """The smallest DP-SGD noise multiplier whose epsilon at `delta` is at most `target_epsilon`.

    Calibrated by `dp_accounting.calibrate_dp_mechanism`, which guarantees the
    returned multiplier does not exceed the target epsilon.
    """
    import dp_accounting
    from dp_accounting.pld import PLDAccountant
    from dp_accounting.rdp import RdpAccountant

    if not _finite_positive(target_epsilon):
        raise InvalidMechanismError(
            f"target epsilon must be a finite number > 0, got {target_epsilon!r}.",
            fix="ask for a positive epsilon, e.g. 1.0.",
        )
    # validates sampling_rate, steps and delta with the usual messages
    MechanismSpec(
        kind="subsampled_gaussian", noise_multiplier=1.0, sampling_rate=sampling_rate, steps=steps, delta=delta
    )
    if accountant not in ACCOUNTANTS:
        raise InvalidMechanismError(f"unknown accountant {accountant!r}.", fix=f"use one of {ACCOUNTANTS}.")

    def fresh():
        if accountant == "pld":
            return PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
        return RdpAccountant()

    def event(noise: float):
        return _dp_event(
            MechanismSpec(
                kind="subsampled_gaussian", noise_multiplier=noise, sampling_rate=sampling_rate, steps=steps, delta=delta
            )
        )

    lowest = 0.01
    floor = fresh().compose(event(lowest)).get_epsilon(delta)
    if floor <= target_epsilon:
        raise InvalidMechanismError(
            f"target epsilon {target_epsilon:.6g} is reached with almost no noise "
            f"(noise multiplier {lowest} gives epsilon {floor:.6g}).",
            fix="ask for a smaller epsilon; such a budget gives no meaningful privacy.",
        )
    try:
        return float(
            dp_accounting.calibrate_dp_mechanism(
                fresh, event, target_epsilon, delta, dp_accounting.LowerEndpointAndGuess(lowest, 1.0)
            )
        )
    except dp_accounting.mechanism_calibration.NoBracketIntervalFoundError as error:
        raise InvalidMechanismError(
            f"no noise multiplier up to 2**30 reaches epsilon {target_epsilon:.6g} "
            f"with sampling rate {sampling_rate} over {steps} steps ({error}).",
            fix="allow a larger epsilon, fewer steps or a smaller sampling rate.",
        ) from error


NEIGHBOURS = "replace-one borrower; the number of borrowers is public"
"""The one neighbour definition of every tenant's guarantee: two tapes are neighbours when one
borrower's rows are replaced by another's, the number of borrowers staying the same (public)."""


def dpsgd_replace_one_epsilon(noise_multiplier: float, sampling_rate: float, steps: int, delta: float) -> float:
    """Epsilon of DP-SGD at `delta` under `NEIGHBOURS` (replace one borrower), an upper bound.

    dp-accounting's PLD and RDP accountants account a Poisson-subsampled
    Gaussian only for add/remove neighbours (REPLACE_ONE is refused for
    `PoissonSampledDpEvent`). Replacing a borrower is removing one and adding
    another, so by group privacy for two add/remove steps: when the mechanism
    is (e, d)-DP under add/remove it is (2 e, d (1 + exp(e)))-DP under replace-one.
    The smallest such 2 e whose delta is at most `delta` is found by bisection
    on the PLD accountant's add/remove delta (`get_delta`); the bound returned
    is checked to hold.
    """
    from dp_accounting.pld import PLDAccountant

    spec = MechanismSpec(kind="subsampled_gaussian", noise_multiplier=noise_multiplier, sampling_rate=sampling_rate,
                         steps=steps, delta=delta)
    accountant = PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION).compose(_dp_event(spec))

    def replace_delta(epsilon: float) -> float:
        half = epsilon / 2
        return accountant.get_delta(half) * (1 + math.exp(half))

    high = 2 * accountant.get_epsilon(delta / 2)  # 1 + exp(e) >= 2, so this is a start to search down from
    while replace_delta(high) > delta:
        high *= 2
    low = 0.0
    for _ in range(60):
        if high - low <= 1e-6 * high:
            break
        middle = (low + high) / 2
        if replace_delta(middle) <= delta:
            high = middle
        else:
            low = middle
    return float(high)


def noise_multiplier_replace_one(target_epsilon: float, sampling_rate: float, steps: int, delta: float) -> float:
    """The DP-SGD noise multiplier whose replace-one epsilon (`dpsgd_replace_one_epsilon`) at `delta` is <= target.

    Calibrated by `noise_multiplier_for` with the RDP accountant under
    add/remove to epsilon target/2 at delta / (1 + exp(target/2)): group
    privacy then gives (target, delta) under replace-one. (RDP, not PLD: the
    calibration's low-noise bracket would need tens of GiB as a PLD.)
    """
    if not _finite_positive(target_epsilon):
        raise InvalidMechanismError(
            f"target epsilon must be a finite number > 0, got {target_epsilon!r}.",
            fix="ask for a positive epsilon, e.g. 1.0.",
        )
    half = target_epsilon / 2
    return noise_multiplier_for(half, sampling_rate, steps, delta / (1 + math.exp(half)))


def replace_one_charge(spec: MechanismSpec) -> MechanismSpec:
    """The ledger charge of a DP-SGD `spec` under `NEIGHBOURS`: its replace-one (epsilon, delta), composed as pure.

    The ledger composes the add/remove RDP curve of a ``subsampled_gaussian``;
    under replace-one that would understate DP-SGD's cost, so DP-SGD is
    charged as the already accounted (epsilon, delta) of
    `dpsgd_replace_one_epsilon` and composed by basic composition.
    """
    if spec.kind != "subsampled_gaussian":
        raise InvalidMechanismError(f"a replace-one DP-SGD charge needs a subsampled_gaussian spec, got {spec.kind!r}.",
                                    fix="plan it with models.twin.dp.plan_dpsgd.")
    epsilon = dpsgd_replace_one_epsilon(spec.effective_noise_multiplier, spec.sampling_rate, spec.steps, spec.delta)
    return MechanismSpec(
        kind="pure", epsilon=epsilon, delta=spec.delta,
        description=f"{spec.description or 'DP-SGD'} (z={spec.effective_noise_multiplier:.4g}, q={spec.sampling_rate:.3g}, "
        f"T={spec.steps}); {NEIGHBOURS}; add/remove PLD with group privacy of 2",
    )


def release_delta(budget_delta: float | None, n_units: int) -> float:
    """The delta one release spends: 1/`RELEASES_PER_DELTA_BUDGET` of the budget's delta, capped at 1/(10 n)."""
    budget = DEFAULT_DELTA if budget_delta is None else float(budget_delta)
    return min(budget / RELEASES_PER_DELTA_BUDGET, 1.0 / (10 * max(int(n_units), 1)))


def validate_budget(
    epsilon: object, delta: object, n_records: int | None = None, *, tenant: str | None = None
) -> tuple[float, float]:
    """Return (epsilon, delta) as floats when they make a usable total budget.

    Epsilon must be finite and > 0; delta must satisfy 0 <= delta < 1 and, when
    the number of records n is known, delta < 1/n (a delta of 1/n allows
    publishing one record outright).

    Raises:
        PrivacyBudgetError: naming the tenant, the bad figure and the fix.
    """
    if not _finite_positive(epsilon):
        raise PrivacyBudgetError(
            f"privacy budget epsilon must be a finite number greater than 0, got {epsilon!r}.",
            tenant=tenant,
            file="tenant.yaml",
            column="privacy.epsilon_budget",
            fix="set privacy.epsilon_budget in tenant.yaml to a positive number such as 3.0, "
            f"or leave it out to use the platform default ({DEFAULT_EPSILON_BUDGET}).",
        )
    if not (_is_number(delta) and math.isfinite(delta) and 0 <= delta < 1):
        raise PrivacyBudgetError(
            f"privacy budget delta must be a number with 0 <= delta < 1, got {delta!r}.",
            tenant=tenant,
            file="tenant.yaml",
            column="privacy.delta",
            fix=f"set privacy.delta well below 1/n for n records, e.g. {DEFAULT_DELTA}.",
        )
    if n_records is not None:
        if not isinstance(n_records, int) or isinstance(n_records, bool) or n_records < 1:
            raise PrivacyBudgetError(
                f"the number of records must be a positive integer, got {n_records!r}.",
                tenant=tenant,
                fix="pass the row count of the tape the budget protects.",
            )
        if delta >= 1.0 / n_records:
            raise PrivacyBudgetError(
                f"privacy budget delta={delta!r} is not below 1/n = {1.0 / n_records:.3g} "
                f"for n={n_records} records: it would allow releasing a record outright.",
                tenant=tenant,
                file="tenant.yaml",
                column="privacy.delta",
                fix=f"use delta well below 1/n, e.g. 1/(10 n) = {1.0 / (10 * n_records):.3g}.",
            )
    return float(epsilon), float(delta)


def resolve_budget(
    epsilon_budget: float | None,
    delta: float | None,
    n_records: int | None = None,
    *,
    tenant: str | None = None,
) -> tuple[float, float]:
    """A tenant's total budget: tenant.yaml's figures, else the platform defaults, validated.

    The default delta is `DEFAULT_DELTA`, lowered to 1/(10 n) when the tape has
    more than 100,000 records so that it stays well below 1/n.
    """
    if epsilon_budget is None:
        epsilon_budget = DEFAULT_EPSILON_BUDGET
    if delta is None:
        delta = DEFAULT_DELTA if n_records is None else min(DEFAULT_DELTA, 1.0 / (10 * n_records))
    return validate_budget(epsilon_budget, delta, n_records, tenant=tenant)
