"""Differentially private synthesis: a DP Gaussian copula and a DP-SGD hook for the cascade.

Opt-in per tenant (`privacy.epsilon` in tenant.yaml); the default twin is the
non-DP `models.twin.copula.GaussianCopulaTwin`, untouched by this module.

**What is protected.** The privacy unit is the borrower when the table names one
(`privacy_unit_column`), else the row. Before anything is measured each unit is
bounded to one row (its first row in table order), so neighbouring tables differ
in one row. The copula's guarantee is epsilon-DP (plus a delta only for
columns whose category list or structure was not declared) for *replace-one-unit* neighbours with
the number of units public: the platform already publishes a tape's row count
in the asset metadata. DP-SGD (opacus) is accounted under the same
replace-one-unit definition (`models.privacy.accounting.NEIGHBOURS`): dp-accounting
accounts its Poisson-subsampled Gaussian only for add/remove, so `plan_dpsgd`
calibrates the noise by group privacy of two add/remove steps
(`models.privacy.accounting.noise_multiplier_replace_one`) and the ledger is charged
the replace-one (epsilon, delta) (`models.privacy.accounting.replace_one_charge`).

**The DP copula** (`plan_for_table` / `plan_for_tenant` / `plan_dp_copula`,
charged, then `fit_dp_twin`: the one path of the asset and of the tests):

0. The plan. It is built from public inputs only: the header's column names,
   tenant.yaml (target and positive values, id columns, unit column,
   `privacy.domains`, epsilon, delta, dp_split), `DEFAULT_DOMAINS` by canonical
   name and the public unit count; never from the data's dtypes, null counts or
   distinct counts, so one borrower cannot change the structure of the release.
   Identifiers are only the declared id columns, `loan_id` and the unit column.
   Every modelled column is nullable (a public null bin). The fit reads each
   column as the plan's type (numbers parsed from text, unparsable -> null;
   categories as text); released dtypes come from the plan and the noisy
   releases, never from the data's dtypes.
1. Marginals. A column with a declared or default domain is one histogram
   over that *public* domain (`PublicDomain`: numeric bounds and bin count, a
   list of values, or a list of categories), plus its null bin. Values are
   clipped into the bounds, mapped to the nearest declared value, or
   (categories outside the list) left out of the counts; nothing about the
   data's own min, max, quantiles or category list is used. A column with
   neither ("auto") spends `PROFILE_SHARE` of its epsilon on a histogram of
   public value classes (null / integer / decimal / other text); a rule on the
   noisy shares makes it numeric (numbers are the majority), integer, categorical
   or left out (mostly null). A numeric one spends the rest on one histogram over
   a fixed public signed log-magnitude grid (`magnitude_grid`): its bounds are
   the outermost bins whose noisy count clears the noise, at thresholds set from
   the noise scale so that a bin holding no value passes with probability 1e-9,
   then grown a step at a time into next bins that show values (`grid_bounds`;
   private bounds, part of the plan's charge), its marginal the
   same noisy counts inside them; integer columns with a small noisy range are
   released as those integers. A categorical
   one spends the rest on a stability histogram (below). Integer counts receive integer noise from OpenDP's
   discrete Laplace (`make_laplace` over an integer vector domain), sampled
   exactly, so the floating-point attack on textbook Laplace does not apply.
   Post-processing projects the noisy counts onto the non-negative vectors with
   the same total (clipping negatives alone would leave spurious mass in every
   empty bin); the marginal is uniform within bins. L1 sensitivity: 2 (one row
   moves between two bins).
2. The target (unless declared) and categorical auto columns pay for their
   category list with a stability histogram: noisy counts of the observed text
   values, kept when above a threshold that a value held by one unit passes with
   probability at most delta/2 ((epsilon, delta)-DP; rare values are dropped,
   never published). The target's declared positive values are public keys,
   always released. Levels are ordered by noisy frequency.
3. Dependence. For every pair of latent dimensions the integer concordance
   statistic S = (concordant - discordant pairs of rows) on the public bin
   codes receives discrete Laplace noise; its replace-one sensitivity is
   2(n - 1) (one row is in n - 1 pairs, each moving by at most 2), i.e. Kendall's
   tau_a = S / C(n, 2) has sensitivity 4/n. The noisy tau is mapped to the latent
   Gaussian correlation by inverting the exact expected tau of a bivariate normal
   discretised at the (noisy) marginal's bin edges (for fine bins this tends to
   sin(pi tau / 2); for binary columns it is the tetrachoric analogue), the
   matrix is repaired to positive definite by eigenvalue clipping, and sampling
   is the ordinary Gaussian-copula draw. Pairs involving a numeric column are
   divided by the (noisy) squared share of rows present in both, assuming
   missingness independent of the values.
4. Budget. `split` (default 0.5) of epsilon goes to the marginals, shared
   equally by the columns; the rest to the dependence, shared equally by the
   pairs the plan reserves (an auto column reserves a value and a null
   dimension whatever it becomes, so the shares are fixed before the data is
   read; an unused reservation is charged, not spent); basic composition of
   pure-epsilon mechanisms (accountant ``pure-sum`` of `models.privacy.accounting`). The plan holds the exact
   `MechanismSpec` list, computed from public information only, so the asset
   can charge the ledger before `fit` runs; `fit` refuses a table that would
   need a different plan.

Identifiers are regenerated as text with the fixed prefix "SYN-DP-", never
from the real ids or their dtype.
Inequality and fixed-combination constraints are not supported under DP.

**DP-SGD**: `OpacusDPHook` implements `models.sequences.cascade.DPTrainingHook` with
opacus' `DPLSTM` / `DPGRU`, Poisson sampling and per-sample clipping; its
noise multiplier comes from `models.privacy.accounting.noise_multiplier_replace_one` (see
`plan_dpsgd`).

**Auditing**: `empirical_epsilon_lower_bound` turns event counts of a mechanism
run many times on two neighbouring tables into a statistically valid lower
bound on its privacy loss (Clopper-Pearson, Bonferroni over events), used by the
tests to falsify under-noised mechanisms.
"""

from __future__ import annotations

import functools
import json
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from models.privacy.accounting import Composition, MechanismSpec, compose, epsilon_for_dpsgd, release_delta
from models.twin.copula import (
    GaussianCopulaTwin,
    _json_scalar,
    _numeric_view,
    _repair_correlation,
)
from models.errors import InvalidDataError, NotFittedError, TenantConfigError
from models.files import atomic_directory
from models.twin.marginals import ContinuousMarginal, LevelMarginal
from models.privacy.errors import InvalidMechanismError
from models.tape.schema import TableSchema
from models.twin.protocol import Conditions
from models.tape.vocabulary import FALSE_WORDS, TRUE_WORDS, as_truths, target_indicator

if TYPE_CHECKING:
    import torch

DP_FORMAT = "credittwin.dp_gaussian_copula"
DP_FORMAT_VERSION = 1
DP_FILE = "dp.json"
DEFAULT_SPLIT = 0.5
"""Share of epsilon spent on the marginal histograms; the rest goes to pairwise dependence."""
DEFAULT_BINS = 32
ID_PREFIX = "SYN-DP-"
NONDP_LABEL = "not differentially private (default twin)"
MIN_UNITS = 50
# Normal-space cut points beyond this are at probability < 1e-17: treated as infinite.
_CUT_CLIP = 8.5
# Correlations are kept strictly inside (-1, 1) so the bivariate normal stays proper.
_RHO_MAX = 0.995
_BISECTION_STEPS = 30
_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(20)

DEFAULT_DOMAINS: dict[str, dict[str, Any]] = {
    "credit_score": {"low": 300, "high": 850, "bins": 55},
    "fico": {"low": 300, "high": 850, "bins": 55},
    "annual_income": {"low": 0, "high": 1_000_000, "bins": 48, "scale": "log1p"},
    "loan_amount": {"low": 0, "high": 2_000_000, "bins": 48, "scale": "log1p"},
    "funded_amount": {"low": 0, "high": 2_000_000, "bins": 48, "scale": "log1p"},
    "installment": {"low": 0, "high": 50_000, "bins": 40, "scale": "log1p"},
    "revolving_balance": {"low": 0, "high": 500_000, "bins": 40, "scale": "log1p"},
    "credit_limit": {"low": 0, "high": 1_000_000, "bins": 40, "scale": "log1p"},
    "interest_rate": {"low": 0, "high": 40, "bins": 40},
    "dti": {"low": 0, "high": 100, "bins": 50},
    "ltv": {"low": 0, "high": 200, "bins": 50},
    "age": {"low": 18, "high": 100, "bins": 41},
    "employment_years": {"low": 0, "high": 50, "bins": 51},
    "term_months": {"values": [6, 12, 18, 24, 36, 48, 60, 72, 84, 96, 120, 180, 240, 300, 360, 480]},
}
"""Coarse public domains by canonical column name, used when tenant.yaml declares none.

They are deliberately wide (never derived from any tape): amounts on a log
scale up to figures no consumer book exceeds, scores and ratios on their
regulatory or conventional ranges, terms on the usual contract lengths.
A tenant narrows them under `privacy.domains` for better utility.
"""


# --------------------------------------------------------------------------- noise


class DiscreteLaplace:
    """Integer-valued Laplace (two-sided geometric) noise from OpenDP.

    OpenDP samples the discrete Laplace exactly from an OS CSPRNG on integers,
    so no floating-point artefact reveals the true count (Mironov's attack on
    textbook Laplace). Calling with a vector adds independent noise to each
    entry. The noise cannot be seeded, by design.
    """

    def __init__(self) -> None:
        self._measurements: dict[float, Any] = {}

    def __call__(self, values: np.ndarray, scale: float) -> np.ndarray:
        """`values` (integers) plus discrete Laplace noise of `scale`, as int64."""
        values = np.asarray(values)
        if not np.issubdtype(values.dtype, np.integer):
            raise InvalidMechanismError(
                f"the discrete Laplace mechanism adds noise to integer counts, got dtype {values.dtype}.",
                fix="release integer counts; divide after the noise is added.",
            )
        if not (math.isfinite(scale) and scale > 0):
            raise InvalidMechanismError(f"noise scale must be a finite number > 0, got {scale!r}.",
                                        fix="plan the release with a positive epsilon.")
        measurement = self._measurements.get(scale)
        if measurement is None:
            import opendp.prelude as dp

            dp.enable_features("contrib")
            measurement = dp.m.make_laplace(
                dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=float(scale)
            )
            self._measurements[scale] = measurement
        flat = values.astype(np.int64).ravel()
        if flat.size == 0:
            return flat.reshape(values.shape)
        return np.asarray(measurement(flat), dtype=np.int64).reshape(values.shape)


NoiseSampler = Callable[[np.ndarray, float], np.ndarray]


def discrete_laplace_tail(scale: float, k: int) -> float:
    """P(Z >= k) for discrete Laplace noise Z of `scale` and an integer k >= 1."""
    alpha = math.exp(-1.0 / scale)
    return alpha**k / (1.0 + alpha)


def stability_threshold(scale: float, tail: float) -> int:
    """The smallest T with P(1 + Z >= T) <= `tail` for discrete Laplace noise Z of `scale` (T >= 2)."""
    alpha = math.exp(-1.0 / scale)
    k = math.ceil(math.log(tail * (1.0 + alpha)) / math.log(alpha))
    k = max(k, 1)
    while discrete_laplace_tail(scale, k) > tail:
        k += 1
    return k + 1


def noisy_histogram(codes: np.ndarray, size: int, *, scale: float, sampler: NoiseSampler) -> np.ndarray:
    """Counts of `codes` in 0..size-1 (negative codes are not counted) plus integer noise.

    Replace-one L1 sensitivity is 2: epsilon = 2 / scale.
    """
    codes = np.asarray(codes, dtype=np.int64)
    counts = np.bincount(codes[codes >= 0], minlength=size).astype(np.int64)
    return sampler(counts, scale)


def concordance(x: np.ndarray, y: np.ndarray, x_size: int, y_size: int) -> int:
    """S = concordant minus discordant pairs of rows of two code columns (exact integer).

    Rows with a negative code in either column take part in no pair's sign
    (they tie with everything). Computed from the contingency table in
    O(x_size * y_size) after one pass over the rows.
    """
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    ok = (x >= 0) & (y >= 0)
    table = np.bincount(x[ok] * y_size + y[ok], minlength=x_size * y_size).reshape(x_size, y_size).astype(np.int64)
    north_east, south_east = _corner_sums(table)
    return int(np.sum(table * (north_east - south_east)))


def _corner_sums(table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each cell (i, j): sum over k > i, l > j, and sum over k > i, l < j."""
    rows, cols = table.shape
    below = np.zeros((rows + 1, cols + 2), dtype=table.dtype)
    # below[i, j + 1] = sum over k >= i of column j; cumulative over columns both ways gives the corners.
    below[:rows, 1:cols + 1] = table[::-1].cumsum(axis=0)[::-1]
    right = below[:, ::-1].cumsum(axis=1)[:, ::-1]  # right[i, j + 1] = sum k >= i, l >= j
    left = below.cumsum(axis=1)  # left[i, j + 1] = sum k >= i, l <= j
    north_east = right[1:rows + 1, 2:cols + 2]
    south_east = left[1:rows + 1, 0:cols]
    return north_east, south_east


def noisy_concordance(x: np.ndarray, y: np.ndarray, x_size: int, y_size: int, *, scale: float,
                      sampler: NoiseSampler) -> int:
    """`concordance` plus integer noise; replace-one sensitivity 2(n - 1), so epsilon = 2(n - 1) / scale."""
    value = concordance(x, y, x_size, y_size)
    return int(sampler(np.array([value], dtype=np.int64), scale)[0])


def concordance_sensitivity(n: int) -> int:
    """Replace-one sensitivity of `concordance` over n rows: the changed row is in n - 1 pairs, each moving by 2."""
    return 2 * (n - 1)


# --------------------------------------------------------------------------- public domains


@dataclass(frozen=True)
class PublicDomain:
    """A column's public domain: bins over [low, high], a list of values, or a list of categories.

    tenant.yaml shape, under ``privacy.domains``::

        annual_income: {low: 0, high: 500000, bins: 40, scale: log1p}
        term_months: {values: [12, 24, 36, 60]}
        grade: {categories: [A, B, C, D, E, F, G]}
        origination_date: {low: "2019-01-01", high: "2021-01-01", bins: 24}

    Categories are laid out in the order given: the copula expresses monotone
    dependence along it, so ordered labels (grades) should be listed in order.
    """

    low: float | str | None = None
    high: float | str | None = None
    bins: int | None = None
    scale: str = "linear"
    values: tuple[float, ...] | None = None
    categories: tuple[Any, ...] | None = None

    @property
    def kind(self) -> str:
        """"bins", "values" or "categories"."""
        if self.categories is not None:
            return "categories"
        if self.values is not None:
            return "values"
        return "bins"

    @classmethod
    def from_dict(cls, column: str, data: Mapping[str, Any]) -> "PublicDomain":
        """Parse one `privacy.domains` entry, naming the column in every error."""
        def bad(message: str) -> TenantConfigError:
            return TenantConfigError(
                f"privacy.domains: {message}", file="tenant.yaml", column=column,
                fix="declare {low, high, bins[, scale: linear|log1p]}, {values: [...]} or {categories: [...]}.",
            )

        if not isinstance(data, Mapping):
            raise bad(f"expected a mapping, got {type(data).__name__}.")
        keys = set(data)
        if "categories" in keys:
            if keys != {"categories"} or not isinstance(data["categories"], list) or not data["categories"]:
                raise bad("'categories' must be a non-empty list and the only key.")
            cats = [_json_scalar(c) for c in data["categories"]]
            if len(set(map(repr, cats))) != len(cats) or any(c is None for c in cats):
                raise bad("categories must be distinct and not null (nulls are counted by the schema's nullability).")
            return cls(categories=tuple(cats))
        if "values" in keys:
            values = data["values"]
            if keys != {"values"} or not isinstance(values, list) or not values or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
            ):
                raise bad("'values' must be a non-empty list of finite numbers and the only key.")
            ordered = sorted(float(v) for v in values)
            if len(set(ordered)) != len(ordered):
                raise bad("values must be distinct.")
            return cls(values=tuple(ordered))
        unknown = keys - {"low", "high", "bins", "scale"}
        if unknown or not {"low", "high"} <= keys:
            raise bad(f"numeric bounds need 'low' and 'high' (unknown keys: {sorted(unknown)}).")
        bins = data.get("bins", DEFAULT_BINS)
        if not isinstance(bins, int) or isinstance(bins, bool) or not 1 <= bins <= 1000:
            raise bad(f"bins must be an integer from 1 to 1000, got {bins!r}.")
        scale = data.get("scale", "linear")
        if scale not in ("linear", "log1p"):
            raise bad(f"scale must be 'linear' or 'log1p', got {scale!r}.")
        low, high = data["low"], data["high"]
        if isinstance(low, str) != isinstance(high, str):
            raise bad("low and high must both be numbers or both be ISO dates.")
        if not isinstance(low, str):
            if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in (low, high)):
                raise bad("low and high must be finite numbers.")
            if not low < high:
                raise bad(f"low ({low}) must be below high ({high}).")
            if scale == "log1p" and low < 0:
                raise bad("a log1p scale needs low >= 0.")
            low, high = float(low), float(high)
        return cls(low=low, high=high, bins=bins, scale=scale)

    def to_dict(self) -> dict[str, Any]:
        """The tenant.yaml form."""
        if self.categories is not None:
            return {"categories": list(self.categories)}
        if self.values is not None:
            return {"values": list(self.values)}
        return {"low": self.low, "high": self.high, "bins": self.bins, "scale": self.scale}


def parse_domains(domains: Mapping[str, Any] | None) -> dict[str, PublicDomain]:
    """`privacy.domains` (column -> mapping or `PublicDomain`) as `PublicDomain` objects."""
    out: dict[str, PublicDomain] = {}
    for column, data in (domains or {}).items():
        out[str(column)] = data if isinstance(data, PublicDomain) else PublicDomain.from_dict(str(column), data)
    return out


# --------------------------------------------------------------------------- the plan

VALUE_CLASSES = ("null", "integer", "decimal", "other", "truth")
"""Public value classes of an undeclared column's text, counted (with noise) to decide its structure."""
PROFILE_SHARE = 0.25
"""Share of an undeclared column's epsilon spent on its value-class histogram; the rest on its values."""
MOSTLY_NULL = 0.95
"""An undeclared column whose noisy null share exceeds this is left out."""
MOSTLY_FLAGS = 0.98
"""An undeclared column is a flag over the public levels false/true when flag words hold this share of its noisy
non-null values; below it (No, Yes and "No phone service") it is a category column, released in its own words."""
SPURIOUS_BINS = 0.05
"""Expected number of empty cells whose noise clears the threshold of a null share or level decision; also the
best-effort failure probability of an undeclared column's bounds when nothing clears at BOUNDS_FAILURE."""
BOUNDS_FAILURE = 1e-9
"""Probability, per undeclared numeric column, that noise alone lifts a grid bin, a run of adjacent bins or a decade
block holding none of its values over the thresholds that set its private bounds (`grid_bounds`): 3/4 of it for the
whole grid's bins, runs and blocks, 1/8 for each end's steps."""
MAX_INTEGER_LEVELS = 40
"""An integer column whose noisy range spans at most this many integers is released as those integers."""
NULL_SUFFIX = "#null"
"""Suffix of a column's null-indicator dimension. Under DP it is released by its marginal only and sampled
independently of every other dimension: pairing it would multiply the concordance releases (four times as many
pairs for a table of nullable columns) and starve each of budget."""
_GRID_STEPS_PER_DECADE = 8
_GRID_SMALL_INTEGERS = 32
_GRID_MIN = 1e-4
_GRID_MAX = 1e10


def _clear_threshold(scale: float, size: int) -> float:
    """A noisy count an empty cell of a `size`-cell histogram reaches with probability about SPURIOUS_BINS / size."""
    return scale * math.log(max(size, 1) / SPURIOUS_BINS)


@functools.lru_cache(maxsize=4096)
def _sum_threshold(scale: float, width: int, share: float) -> float:
    """The least integer a with P(S >= a) <= `share`, S the sum of `width` independent discrete Laplace draws of
    `scale` (the noisy sum of `width` bins holding no value), computed exactly.

    One draw Z = G1 - G2 with G1, G2 independent geometric (P(G = k) = (1 - alpha) alpha^k, alpha = exp(-1 / scale)),
    so S = N1 - N2 with N1, N2 independent negative binomial (`width`, 1 - alpha) and
    P(S >= a) = sum over m of P(N2 = m) P(N1 >= a + m). For one bin that is alpha^a / (1 + alpha).
    """
    alpha = math.exp(-1.0 / scale)
    if width == 1:
        k = max(math.ceil(math.log(share * (1.0 + alpha)) / math.log(alpha)), 1)
        while discrete_laplace_tail(scale, k) > share:
            k += 1
        while k > 1 and discrete_laplace_tail(scale, k - 1) <= share:
            k -= 1
        return float(k)
    # Chernoff, P(S >= a) <= exp(width log M(t) - t a) for 0 < t < 1 / scale, M(t) = E[exp(t Z)]: an upper end
    t = np.linspace(1e-3, 0.999, 999) / scale
    log_m = 2.0 * math.log1p(-alpha) - np.log1p(-alpha * np.exp(t)) - np.log1p(-alpha * np.exp(-t))
    high = max(math.ceil(float(np.min((width * log_m - math.log(share)) / t))), 1)
    # sf[k] = P(N >= k) for k up to past high + the terms of pmf (a length rounded up to a power of two: few tables)
    pmf, sf = _negative_binomial(scale, width, 1 << max(high - 1, 1).bit_length())
    terms = pmf.size
    low = 1
    while low < high:  # the tail falls with a: bisect
        mid = (low + high) // 2
        if float(pmf @ sf[mid:mid + terms]) <= share:
            high = mid
        else:
            low = mid + 1
    return float(low)


@functools.lru_cache(maxsize=64)
def _negative_binomial(scale: float, width: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """P(N = m) for m below a point past which N's mass is under 1e-20, and P(N >= k) up to that point plus a
    length of at least `high`: N negative binomial (`width`, 1 - exp(-1 / scale)), the positive part of a sum
    of `width` discrete Laplace draws (the sums, small to large, keep the far tail exact)."""
    from scipy.special import gammaln

    terms = int(math.ceil(scale * (2 * width + 60)))
    length = terms + int(math.ceil(scale * 60))
    while length < terms + high:
        length *= 2
    m = np.arange(length, dtype=np.float64)
    log_pmf = (gammaln(m + width) - gammaln(width) - gammaln(m + 1.0) + width * math.log1p(-math.exp(-1.0 / scale))
               - m / scale)
    pmf = np.exp(log_pmf)
    return pmf[:terms], np.cumsum(pmf[::-1])[::-1]


def _empty_threshold(scale: float, width: int, events: int, failure: float) -> float:
    """A noisy sum of `width` bins holding no value that any of `events` such sums reaches with probability at most
    `failure` / 4, the noise being independent discrete Laplace of `scale`.

    Each of the `events` sums gets failure / (4 events) (the union bound), at
    its exact tail (`_sum_threshold`): for one bin about
    scale * ln(4 events / failure), i.e. 26.7 scales over a ~200-bin grid at
    BOUNDS_FAILURE; 31.5 scales for a run of two bins over all runs, 37.6 for
    a decade block over all blocks. (Bins, runs and blocks take 3/4 of
    `failure`; `_grow` the rest.)
    """
    return _sum_threshold(scale, width, failure / 4.0 / max(events, 1))


def _null_share(noisy_null: float, mass: np.ndarray, scale: float) -> float:
    """The released share of nulls: 0 when the null bin's noisy count is one that noise alone explains.

    Post-processing of the noisy histogram: a column without nulls then stays
    without nulls in almost every release, instead of gaining a few from noise.
    """
    if noisy_null < _clear_threshold(scale, mass.size):
        return 0.0
    return float(mass[-1] / mass.sum())


TAIL_MASS = 0.001
"""Projected mass trimmed from each end of an undeclared column's support where its bins and short runs of bins
give no end: the block that cleared holds values, but a few of its bins hold only noise."""


def _clear_blocks(noisy: np.ndarray, scale: float, failure: float) -> list[tuple[int, int]]:
    """The first and last bin of each decade block of the grid whose noisy sum clears what an empty block reaches
    (`_empty_threshold`, one `failure` / 4 over all blocks).

    Bins are summed in blocks of one decade: a block holds the column's values
    eight bins' worth at a time while its noise grows only as the square root,
    so the support shows on small books where single bins drown.
    """
    size = noisy.size
    starts = np.arange(0, size, _GRID_STEPS_PER_DECADE)
    sums = np.add.reduceat(noisy.astype(np.float64), starts)
    ends = np.append(starts[1:], size) - 1
    return [(int(start), int(end)) for start, end, total in zip(starts, ends, sums)
            if total >= _empty_threshold(scale, int(end - start + 1), starts.size, failure)]


def _grid_support(noisy: np.ndarray, scale: float, failure: float) -> tuple[int, int] | None:
    """The first and last grid bin of an undeclared column's support, from its noisy histogram alone; None when
    no block or bin clears the noise at `failure`.

    The support runs from the first to the last block that clears
    (`_clear_blocks`), widened to any single bin that clears what an empty bin
    reaches (`_empty_threshold`, one `failure` / 4 over all bins), so a block or
    bin holding no value clears with probability at most `failure` / 2.
    """
    blocks = _clear_blocks(noisy, scale, failure)
    bins = np.flatnonzero(noisy >= _empty_threshold(scale, 1, noisy.size, failure))
    if not blocks and bins.size == 0:
        return None
    firsts = [blocks[0][0]] if blocks else []
    lasts = [blocks[-1][1]] if blocks else []
    if bins.size:
        firsts.append(int(bins[0]))
        lasts.append(int(bins[-1]))
    return min(firsts), max(lasts)


def _trim_tails(mass: np.ndarray, noisy: np.ndarray, scale: float, lo: int, hi: int,
                failure: float) -> tuple[int, int]:
    """Narrow the support [lo, hi] to the outermost bins that its noisy counts show to hold values
    (post-processing, no budget).

    A decade block that clears reaches up to a decade past the column's values;
    its empty far bins keep a little noise after projection, which would put a
    few synthetic values ten times beyond the real range. Evidence of values:
    a bin that clears (`_grid_support`'s threshold), a run of 2..8 adjacent
    bins whose noisy sum clears what as many empty bins reach
    (`_empty_threshold`, one `failure` / 4 over every such run of the grid), or
    a block that cleared. Values reach at least the start of the highest such
    run and the end of the lowest, so those are the bounds: one past the
    values needs an empty bin, run or block to clear, probability at most
    3 `failure` / 4 with the support's events, while a real tail spread thinly over
    a few bins keeps all but its outermost ones. Only where there is no such
    evidence, or the lowest run ends above the start of the highest (a block
    clears, nothing shorter does), is that stretch narrowed the same way at
    SPURIOUS_BINS, and failing that past end bins holding no more than
    TAIL_MASS of its projected mass (best effort, the old rules).
    """
    size = noisy.size
    block = _GRID_STEPS_PER_DECADE
    cum = np.concatenate([[0.0], np.cumsum(noisy[lo:hi + 1].astype(np.float64))])
    firsts: list[int] = []
    lasts: list[int] = []
    for j in range(1, min(block, hi - lo + 1) + 1):
        sums = cum[j:] - cum[:-j]  # the run of j bins from lo + i, for each i
        hits = np.flatnonzero(sums >= _empty_threshold(scale, j, size if j == 1 else (block - 1) * size, failure))
        if hits.size:
            firsts.append(lo + int(hits[0]) + j - 1)
            lasts.append(lo + int(hits[-1]))
    for start, end in _clear_blocks(noisy, scale, failure):
        if lo <= start and end <= hi:
            firsts.append(end)
            lasts.append(start)
    if firsts:
        first, last = min(firsts), max(lasts)
        if first <= last:
            return first, last
        lo, hi = last, first  # values are somewhere in there, no nearer end clears at `failure`
    if failure < SPURIOUS_BINS:
        return _trim_tails(mass, noisy, scale, lo, hi, SPURIOUS_BINS)
    return _trim_mass(mass, lo, hi)


def _trim_mass(mass: np.ndarray, lo: int, hi: int) -> tuple[int, int]:
    """Narrow [lo, hi] past end bins holding no more than TAIL_MASS of its projected mass."""
    inside = mass[lo:hi + 1]
    total = inside.sum()
    if total <= 0:
        return lo, hi
    cum = np.cumsum(inside) / total
    low = int(np.searchsorted(cum, TAIL_MASS, side="right"))
    high = min(max(int(np.searchsorted(cum, 1.0 - TAIL_MASS, side="left")), low), inside.size - 1)
    return lo + low, lo + high


_STEP = 10.0 ** (1.0 / _GRID_STEPS_PER_DECADE) - 1.0
"""How far one step of `_grow` may move an end of the bounds, relative to its magnitude or the range: one log bin."""
GROW_EVENTS = _GRID_STEPS_PER_DECADE + 1
"""Tests at one end of the bounds, per step (`_grow`): runs of 1..8 bins, and the bin of 0."""


def _step_allowed(edges: np.ndarray, lo: int, hi: int, k: int, side: int) -> bool:
    """Whether taking grid bin k past one end of the bounds [lo, hi] (`side` +1: above hi, -1: below lo) moves that
    end by at most one step: by no more than _STEP times the larger of the end's magnitude and the range, and not
    into a sign that no bin of [lo, hi] has.

    That is one log bin outward (a factor 10^(1/8)), the integers 4, 5.. past
    a count that reaches 3.., or any way toward zero while it widens the range
    by at most a third (down to the point mass at 0 under amounts from 1 up);
    never a 2 in a 0/1 flag (the range would grow by half), a 1 in a constant
    0, a -1 in a count or a 0 under a term of 36 to 60 months.
    """
    if not 0 <= k < edges.size - 1:
        return False
    low, high = float(edges[lo]), float(edges[hi + 1])
    center = (float(edges[k]) + float(edges[k + 1])) / 2.0
    if side > 0:
        moved, end, other_sign = float(edges[k + 1]) - high, high, center > 0 >= (edges[hi] + edges[hi + 1]) / 2.0
    else:
        moved, end, other_sign = low - float(edges[k]), low, center < 0 <= (edges[lo] + edges[lo + 1]) / 2.0
    return not other_sign and moved <= _STEP * max(abs(end), high - low) * (1.0 + 1e-9)


def _zero_bin(edges: np.ndarray) -> int:
    """The grid bin of 0: the zero-width bin of the decimal grid, the bin of the integer 0."""
    k = int(np.searchsorted(edges, 0.0, side="left"))
    return k if edges[k] == 0.0 and edges[k + 1] == 0.0 else k - 1


def _grow(values: np.ndarray, scale: float, edges: np.ndarray, lo: int, hi: int, failure: float) -> tuple[int, int]:
    """Move each end of the bounds [lo, hi] out one bin at a time while the noisy counts just past it show values,
    where that bin is one step out (`_step_allowed`); noise alone moves an end past the values with probability at
    most `failure` (post-processing, no budget).

    The tests at an end: the runs of 1..8 bins that start at the next bin and
    reach at most one bin past the bins a step allows (a gap of one empty bin
    is crossed, no more), and the bin of 0 where a step allows it (the point
    mass of zero amounts, past a gap of small magnitudes). Each is one of
    GROW_EVENTS sums holding no value when the end already is the values' end,
    so each gets failure / GROW_EVENTS at its exact tail (`_sum_threshold`):
    the end then moves with probability at most `failure`, and by one step
    (plus a bin), never a decade or across zero; a further step needs noise in
    further bins. A run that clears shows values at or past its first bin, so
    the end moves there (to 0 for the bin of 0), and the next bin is tested.
    """
    values = values.astype(np.float64)
    zero = _zero_bin(edges)
    share = failure / GROW_EVENTS
    moved = True
    while moved:
        moved = False
        for side in (1, -1):
            end = hi if side > 0 else lo
            steps = 0  # bins past the end that one step allows, up to a run's length
            while steps < _GRID_STEPS_PER_DECADE and _step_allowed(edges, lo, hi, end + side * (steps + 1), side):
                steps += 1
            if steps == 0:
                continue
            to = None
            if zero != end + side and (zero - end) * side > 0 and _step_allowed(edges, lo, hi, zero, side) \
                    and values[zero] >= _sum_threshold(scale, 1, share):
                to = zero
            for width in range(1, min(_GRID_STEPS_PER_DECADE, steps + 1) + 1):
                first, last = sorted((end + side, end + side * width))
                if to is None and 0 <= last < values.size and first >= 0 \
                        and values[first:last + 1].sum() >= _sum_threshold(scale, width, share):
                    to = end + side
            if to is not None:
                lo, hi = (lo, to) if side > 0 else (to, hi)
                moved = True
    return lo, hi


def strict_bounds(noisy: np.ndarray, scale: float) -> bool:
    """Whether `grid_bounds` finds this noisy histogram's core at BOUNDS_FAILURE; False: its bounds are best effort
    (the column has too few rows a block for the noise, and a far bin is possible)."""
    return _grid_support(np.asarray(noisy)[:-1], scale, BOUNDS_FAILURE) is not None


def grid_bounds(noisy: np.ndarray, scale: float, integer: bool | None = None) -> tuple[int, int]:
    """The private bounds of an undeclared numeric column: its first and last grid bin, from its noisy histogram.

    `noisy` is the charged release of `DPGaussianCopula._grid`: the noisy counts of
    the `magnitude_grid(integer)` bins (`integer` None: the grid of that many
    bins), then the null bin, with discrete Laplace noise of `scale`.

    The core is the support (`_grid_support`) narrowed to the outermost bins
    shown to hold values (`_trim_tails`), at thresholds set from `scale` so
    that any bin, run of bins or block holding no value, anywhere on the grid,
    clears with probability at most 3 BOUNDS_FAILURE / 4: a bin ~26.7 noise
    scales of rows, a run of two ~31.5, a decade block ~37.6. (The old rule,
    8.3 scales a bin, let an empty bin through for ~2.4% of 0/1 columns: a 30
    in a flag.) Where the core cannot narrow a stretch at that level, it is
    narrowed at SPURIOUS_BINS (best effort, as before). Its ends then grow one
    bin at a time (`_grow`) where the bin is one step out (a log bin outward, a
    new integer past 3.., or toward zero by at most a third of the range) and
    the few bins there show values, each end past the values with probability
    at most BOUNDS_FAILURE / 8: with so few tests a bin there clears at ~24.3
    scales (a run of two ~27), so a real tail a little too thin for the whole
    grid's level is kept. In all, the bounds reach past the values with
    probability at most BOUNDS_FAILURE per column, and a step past them never
    reaches a decade further or across zero.

    When nothing clears at BOUNDS_FAILURE (a column with fewer rows a block
    than that) the core is the decade block of largest noisy sum, narrowed at
    SPURIOUS_BINS and past end bins holding TAIL_MASS of its projected mass
    (`_trim_tails`, `_trim_mass`), grown the same way at SPURIOUS_BINS an end:
    best effort, bounds that may be one step too wide or miss a thin tail, but
    that reach a far bin only where noise outweighs the whole column. (The
    whole grid was searched at SPURIOUS_BINS there before, which took a far
    empty bin for a few percent of such columns.)

    Post-processing of the charged histogram: the thresholds change no noise
    and cost no budget, so the privacy accounting is unchanged.
    """
    noisy = np.asarray(noisy)
    size = noisy.size - 1
    if integer is None:
        integer = size == magnitude_grid(True).size - 1
    edges = magnitude_grid(integer)
    mass = project_counts(noisy)
    value_mass = mass[:size] if mass[:size].sum() > 0 else np.ones(size)
    values = noisy[:size]
    support = _grid_support(values, scale, BOUNDS_FAILURE)
    if support is not None:
        core = _trim_tails(value_mass, values, scale, *support, BOUNDS_FAILURE)
        return _grow(values, scale, edges, *core, BOUNDS_FAILURE / 8.0)
    starts = np.arange(0, size, _GRID_STEPS_PER_DECADE)
    best = int(starts[np.argmax(np.add.reduceat(values.astype(np.float64), starts))])
    core = _trim_tails(value_mass, values, scale, best, min(best + _GRID_STEPS_PER_DECADE, size) - 1, SPURIOUS_BINS)
    return _grow(values, scale, edges, *core, SPURIOUS_BINS)


def magnitude_grid(integer: bool) -> np.ndarray:
    """A fixed public signed log-magnitude grid of bin edges for undeclared numeric columns.

    Decimal grid: +-10^(k/8) from 1e-4 to 1e10 around a zero-width bin at 0
    (exact zeros are a point mass, common in amounts). Integer grid: one bin per
    integer from -32 to 32 (edges at half-integers), then log-spaced out to 1e10,
    so small counts and 0/1 flags keep their exact values. Values beyond the
    ends fall into the end bins. Never derived from any data.
    """
    k = np.arange(1, math.ceil(_GRID_STEPS_PER_DECADE * math.log10(_GRID_MAX / (_GRID_SMALL_INTEGERS + 0.5))) + 1)
    if integer:
        inner = np.arange(-_GRID_SMALL_INTEGERS, _GRID_SMALL_INTEGERS + 2) - 0.5
        outer = (_GRID_SMALL_INTEGERS + 0.5) * 10.0 ** (k / _GRID_STEPS_PER_DECADE)
        return np.concatenate([-outer[::-1], inner, outer])
    decades = np.arange(round(math.log10(_GRID_MIN) * _GRID_STEPS_PER_DECADE),
                        round(math.log10(_GRID_MAX) * _GRID_STEPS_PER_DECADE) + 1)
    positive = 10.0 ** (decades / _GRID_STEPS_PER_DECADE)
    # 0 twice: a zero-width bin, so exact zeros (no balance, no expenditure) stay a point mass
    return np.concatenate([-positive[::-1], [0.0, 0.0], positive])


@dataclass(frozen=True)
class DPColumnPlan:
    """How one column is released: its kind, public domain and epsilon (delta for stability histograms).

    Kinds: bins, values, categories (declared or default domains), stability
    (category list paid for), auto (no declaration: structure, bounds and
    marginal from charged noisy releases at fit time), identifier (regenerated).
    Every modelled column is nullable (a public null bin), whatever the data holds.
    """

    name: str
    kind: str
    domain: PublicDomain | None
    nullable: bool
    epsilon: float
    delta: float = 0.0

    @property
    def latent(self) -> list[str]:
        """Names of the latent dimensions this column may become (an auto column reserves two)."""
        if self.kind == "identifier":
            return []
        dims = [self.name]
        if self.nullable and self.kind in ("bins", "values", "auto"):
            dims.append(f"{self.name}{NULL_SUFFIX}")
        return dims

    @property
    def profile_epsilon(self) -> float:
        """The epsilon of an auto column's value-class histogram (0 for other kinds)."""
        return self.epsilon * PROFILE_SHARE if self.kind == "auto" else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["domain"] = None if self.domain is None else self.domain.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DPColumnPlan":
        domain = data["domain"]
        return cls(
            name=str(data["name"]), kind=str(data["kind"]),
            domain=None if domain is None else PublicDomain.from_dict(str(data["name"]), domain),
            nullable=bool(data["nullable"]), epsilon=float(data["epsilon"]), delta=float(data["delta"]),
        )


@dataclass(frozen=True)
class DPCopulaPlan:
    """Everything a DP copula fit will release, computed from public information only.

    Attributes:
        epsilon, delta: the total the fit spends (delta > 0 only with stability histograms).
        split: share of epsilon on the marginals.
        n_units: the public number of privacy units (rows after bounding each unit to one row).
        privacy_unit_column: the column naming the unit (None: each row is a unit).
        columns: one `DPColumnPlan` per header column that is modelled or regenerated, in header order.
        left_out: column -> reason, for columns not modelled.
        latent: the latent dimensions reserved (an auto column reserves value and null), in order.
        pair_epsilon: epsilon of each pairwise concordance release.
        mechanisms: the `MechanismSpec` charges (one per kind of release), to
            charge the ledger before `fit`.
        target, target_positive: the tenant's default flag and the values that mean "defaulted".
    """

    epsilon: float
    delta: float
    split: float
    n_units: int
    privacy_unit_column: str | None
    columns: tuple[DPColumnPlan, ...]
    left_out: dict[str, str]
    latent: tuple[str, ...]
    pair_epsilon: float
    mechanisms: tuple[MechanismSpec, ...] = field(default_factory=tuple)
    target: str | None = None
    target_positive: tuple[Any, ...] = ()

    @property
    def n_pairs(self) -> int:
        """Concordance releases: one per pair of value dimensions (null indicators are not paired)."""
        return _value_pairs(self.latent)

    def composition(self) -> Composition:
        """The composed (epsilon, delta) of every release, by `models.privacy.accounting.compose`."""
        return compose(list(self.mechanisms))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (stored beside the fitted model and in asset metadata)."""
        return {
            "epsilon": self.epsilon, "delta": self.delta, "split": self.split, "n_units": self.n_units,
            "privacy_unit_column": self.privacy_unit_column, "columns": [c.to_dict() for c in self.columns],
            "left_out": dict(self.left_out), "latent": list(self.latent), "pair_epsilon": self.pair_epsilon,
            "mechanisms": [m.to_dict() for m in self.mechanisms], "target": self.target,
            "target_positive": list(self.target_positive),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DPCopulaPlan":
        """Rebuild from `to_dict` output."""
        return cls(
            epsilon=float(data["epsilon"]), delta=float(data["delta"]), split=float(data["split"]),
            n_units=int(data["n_units"]), privacy_unit_column=data["privacy_unit_column"],
            columns=tuple(DPColumnPlan.from_dict(c) for c in data["columns"]),
            left_out={str(k): str(v) for k, v in data["left_out"].items()},
            latent=tuple(str(x) for x in data["latent"]), pair_epsilon=float(data["pair_epsilon"]),
            mechanisms=tuple(MechanismSpec.from_dict(m) for m in data["mechanisms"]),
            target=data.get("target"), target_positive=tuple(data.get("target_positive", ())),
        )


def _value_pairs(latent: Sequence[str]) -> int:
    """Pairs of value dimensions among `latent` (a column's `#null` indicator is sampled independently)."""
    d = sum(1 for name in latent if not name.endswith(NULL_SUFFIX))
    return d * (d - 1) // 2


def plan_dp_copula(
    columns: Sequence[str],
    epsilon: float,
    *,
    n_units: int,
    delta: float | None = None,
    domains: Mapping[str, Any] | None = None,
    split: float = DEFAULT_SPLIT,
    target: str | None = None,
    target_positive: Sequence[Any] = (),
    id_columns: Sequence[str] = (),
    privacy_unit_column: str | None = None,
    tenant: str | None = None,
) -> DPCopulaPlan:
    """Plan a DP copula fit from public inputs only: column names, declarations, defaults and the unit count.

    Nothing about the data (dtypes, null counts, distinct counts) is used, so one
    borrower cannot change the plan. A column is:

    * an identifier (regenerated) when named in `id_columns`, "loan_id" or the unit column;
    * released over its declared domain (`privacy.domains`) or `DEFAULT_DOMAINS` by canonical name;
    * the target: categories from a stability histogram unless declared;
    * otherwise "auto": its structure (numeric, integer, categorical or left out),
      bounds and marginal come from charged noisy releases at fit time.

    Args:
        columns: the header's column names, as ingest canonicalised them.
        epsilon: the total epsilon of the fit (tenant.yaml `privacy.epsilon`).
        n_units: the number of privacy units the fit will see (public under replace-one).
        delta: total delta of the stability histograms (default
            `models.privacy.accounting.release_delta`: 1/100 of the default delta budget, capped at 1/(10 n_units)).
        domains: `privacy.domains` from tenant.yaml (column -> mapping).
        split: share of epsilon for the marginals, in (0, 1).
        target, target_positive: tenant.yaml's target column and its positive values.
        id_columns: tenant.yaml's declared identifier columns.
        privacy_unit_column: the column naming the borrower, if any.
        tenant: named in errors.

    Raises:
        TenantConfigError: a bad epsilon, split, delta, domain or column name.
    """
    def bad(message: str, column: str | None = None, fix: str = "fix privacy settings in tenant.yaml.") -> TenantConfigError:
        return TenantConfigError(message, tenant=tenant, file="tenant.yaml", column=column, fix=fix)

    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) or epsilon <= 0:
        raise bad(f"privacy.epsilon must be a finite number > 0, got {epsilon!r}.", "privacy.epsilon")
    if not (isinstance(split, (int, float)) and 0.0 < float(split) < 1.0):
        raise bad(f"privacy.dp_split must be strictly between 0 and 1, got {split!r}.", "privacy.dp_split")
    if isinstance(n_units, bool) or not isinstance(n_units, int) or n_units < MIN_UNITS:
        raise InvalidDataError(
            f"a DP copula needs at least {MIN_UNITS} privacy units, got {n_units!r}.", tenant=tenant,
            fix="upload a larger tape; with fewer units the noise swamps every statistic.",
        )
    columns = [str(c) for c in columns]
    parsed = parse_domains(domains)
    for name in parsed:
        if name not in columns:
            raise bad(f"privacy.domains names a column the table does not have (it has {columns[:20]}).", name)
    if privacy_unit_column is not None and privacy_unit_column not in columns:
        raise bad("the privacy unit column is not in the table.", privacy_unit_column,
                  fix="name the borrower column, or leave it out to protect rows.")
    if target is not None and target not in columns:
        raise bad("the target column is not in the table.", target, fix="name the default flag's column.")
    from models.tape.schema import identifier_by_name

    identifiers = {c for c in (*id_columns, "loan_id", privacy_unit_column) if c is not None and c in columns}
    # a key or row number recognised by its name alone (the header is public) is regenerated, not paid for
    identifiers |= {c for c in columns if c != target and c not in parsed and identifier_by_name(c)}

    drafts: list[tuple[str, str, PublicDomain | None]] = []
    for name in columns:
        domain = parsed.get(name)
        if name in identifiers:
            drafts.append((name, "identifier", None))
        elif domain is not None:
            if name == target and domain.kind != "categories":
                raise bad("is the target; declare {categories: [...]} for it.", name)
            drafts.append((name, domain.kind, domain))
        elif name == target:
            drafts.append((name, "stability", None))
        elif name in DEFAULT_DOMAINS:
            drafts.append((name, PublicDomain.from_dict(name, DEFAULT_DOMAINS[name]).kind,
                           PublicDomain.from_dict(name, DEFAULT_DOMAINS[name])))
        else:
            drafts.append((name, "auto", None))

    released = [d for d in drafts if d[1] != "identifier"]
    if not released:
        raise bad("no column can be modelled under differential privacy.",
                  fix="upload a tape with columns other than identifiers.")
    latent: list[str] = []
    for name, kind, domain in released:
        latent += DPColumnPlan(name, kind, domain, True, 1.0).latent
    n_pairs = _value_pairs(latent)
    marginal_share = float(split) if n_pairs else 1.0
    column_epsilon = float(epsilon) * marginal_share / len(released)
    pair_epsilon = float(epsilon) * (1.0 - marginal_share) / n_pairs if n_pairs else 0.0
    paid_lists = [d for d in released if d[1] in ("stability", "auto")]
    if delta is None:
        delta = release_delta(None, n_units)  # a share of the default delta budget (issue 14 item 8)
    if paid_lists and not (isinstance(delta, (int, float)) and 0 < delta < 1.0 / n_units):
        raise bad(f"privacy.delta must be in (0, 1/n) = (0, {1.0 / n_units:.3g}) for undeclared columns, "
                  f"got {delta!r}.", paid_lists[0][0],
                  fix="declare every column under privacy.domains, or set a small privacy.delta.")
    column_delta = float(delta) / len(paid_lists) if paid_lists else 0.0
    plans = tuple(
        DPColumnPlan(name, kind, domain, kind != "identifier", 0.0 if kind == "identifier" else column_epsilon,
                     column_delta if kind in ("stability", "auto") else 0.0)
        for name, kind, domain in drafts
    )
    mechanisms: list[MechanismSpec] = []
    histograms = [d for d in released if d[1] in ("bins", "values", "categories")]
    stability = [d for d in released if d[1] == "stability"]
    auto = [d for d in released if d[1] == "auto"]
    if histograms:
        mechanisms.append(MechanismSpec(
            kind="laplace", sensitivity=2.0, scale=2.0 / column_epsilon, steps=len(histograms),
            description=f"discrete Laplace (OpenDP) histograms over public domains of {len(histograms)} column(s)",
        ))
    if stability:
        mechanisms.append(MechanismSpec(
            kind="pure", epsilon=column_epsilon * len(stability), delta=column_delta * len(stability),
            description=f"stability histograms (category lists paid for) of {len(stability)} column(s)",
        ))
    if auto:
        profile = column_epsilon * PROFILE_SHARE
        mechanisms.append(MechanismSpec(
            kind="laplace", sensitivity=2.0, scale=2.0 / profile, steps=len(auto),
            description=f"discrete Laplace value-class histograms (null/integer/decimal/flag word/other text) deciding the "
                        f"structure of {len(auto)} undeclared column(s)",
        ))
        mechanisms.append(MechanismSpec(
            kind="pure", epsilon=(column_epsilon - profile) * len(auto), delta=column_delta * len(auto),
            description=f"private bounds and marginals of {len(auto)} undeclared column(s): a discrete Laplace "
                        "histogram over a public signed log-magnitude grid (bounds: its outermost decades or bins whose "
                        "noisy count clears the noise; 0/1 and small counts kept as integers, exact zeros a point mass), "
                        "a histogram over the public levels false/true when the column holds flag words, or a stability "
                        "histogram when it is categorical",
        ))
    if n_pairs:
        sensitivity = float(concordance_sensitivity(n_units))
        mechanisms.append(MechanismSpec(
            kind="laplace", sensitivity=sensitivity, scale=sensitivity / pair_epsilon, steps=n_pairs,
            description=f"discrete Laplace Kendall concordance of {n_pairs} latent pair(s) (sensitivity 2(n-1))",
        ))
    return DPCopulaPlan(
        epsilon=float(epsilon), delta=column_delta * len(paid_lists), split=float(split), n_units=n_units,
        privacy_unit_column=privacy_unit_column, columns=plans, left_out={}, latent=tuple(latent),
        pair_epsilon=pair_epsilon, mechanisms=tuple(mechanisms), target=target,
        target_positive=tuple(_json_scalar(p) for p in target_positive),
    )


def tenant_unit_column(columns: Sequence[str], config: Any) -> str | None:
    """The privacy unit's column: tenant.yaml's `privacy.unit_column`, else `borrower_id` when the header has it."""
    return config.privacy.unit_column or ("borrower_id" if "borrower_id" in columns else None)


def plan_for_tenant(columns: Sequence[str], config: Any, *, n_units: int, tenant: str | None = None) -> DPCopulaPlan:
    """The DP copula plan of a tenant: `plan_dp_copula` over the header and tenant.yaml (a `TenantConfig`)."""
    privacy = config.privacy
    return plan_dp_copula(
        columns, privacy.epsilon, n_units=n_units, delta=release_delta(privacy.delta, n_units), domains=privacy.domains,
        split=privacy.dp_split, target=config.target.column if config.target else None,
        target_positive=config.target.positive_values if config.target else (), id_columns=config.id_columns,
        privacy_unit_column=tenant_unit_column(columns, config), tenant=tenant,
    )


def plan_for_table(table: pl.DataFrame, config: Any, *, tenant: str | None = None) -> DPCopulaPlan:
    """`plan_for_tenant` for the train split: its header and its public unit count. Charge the plan, then `fit_dp_twin`."""
    unit = tenant_unit_column(table.columns, config)
    return plan_for_tenant(table.columns, config, n_units=bound_units(table, unit).height, tenant=tenant)


def fit_dp_twin(table: pl.DataFrame, plan: DPCopulaPlan, *, tenant: str | None = None,
                sampler: NoiseSampler | None = None) -> "DPGaussianCopula":
    """Fit the DP copula of a charged plan: the one path `fitted_copula` and the falsification tests take."""
    return DPGaussianCopula(plan, sampler=sampler).fit(table, tenant=tenant)


def domains_yaml(columns: Sequence[str], config: Any, *, tenant: str, file: str) -> str:
    """A ready-to-edit `privacy: domains:` block for tenant.yaml, from the header and tenant.yaml only.

    Declared domains are repeated, canonical names get their `DEFAULT_DOMAINS`,
    identifiers and the privacy unit are noted as regenerated, and every other
    column gets a commented entry for the lender to fill in. No value of the data is read, so two
    uploads with the same header and tenant.yaml print the same text.
    """
    declared = parse_domains(config.privacy.domains)
    unit = tenant_unit_column(columns, config)
    target = config.target.column if config.target else None
    identifiers = {c for c in (*config.id_columns, "loan_id", unit) if c is not None}
    lines = [
        f"# privacy.domains for tenant '{tenant}', from the header of {file} and tenant.yaml only (no values read).",
        "# Public domains cost no budget and give the best utility. A column left undeclared is still modelled:",
        "# its type and bounds are then learnt from charged, noised releases at fit time.",
        "# Fill in each <...> with your book's public bounds and uncomment the line; list ordered categories in order.",
        "privacy:",
        "  domains:",
    ]

    def entry(name: str, domain: Mapping[str, Any]) -> str:
        return f"    {json.dumps(name)}: {json.dumps(dict(domain))}"

    for name in columns:
        if name in identifiers:
            lines.append(f"    # {name}: regenerated under DP (identifier{' / privacy unit' if name == unit else ''}); "
                         "no domain needed")
        elif name in declared:
            lines.append(entry(name, declared[name].to_dict()) + "  # declared in tenant.yaml")
        elif name == target:
            positives = ", ".join(json.dumps(_json_scalar(p)) for p in config.target.positive_values)
            lines.append(f"    # {json.dumps(name)}: {{\"categories\": [{positives}, <the other values>]}}"
                         "  # the target: its declared positive plus the rest")
        elif name in DEFAULT_DOMAINS:
            lines.append(entry(name, PublicDomain.from_dict(name, DEFAULT_DOMAINS[name]).to_dict())
                         + "  # CreditTwin's default for this name; narrow it to your book")
        else:
            lines.append(f"    # {json.dumps(name)}: {{\"low\": <lowest possible>, \"high\": <highest possible>, "
                         "\"bins\": 32}  # or {\"values\": [...]} or {\"categories\": [...]}")
    return "\n".join(lines) + "\n"


def bound_units(table: pl.DataFrame, privacy_unit_column: str | None) -> pl.DataFrame:
    """Keep each privacy unit's first row (table order), so every unit contributes one row.

    A row whose unit is null is its own unit (it cannot be linked to another).
    """
    if privacy_unit_column is None:
        return table
    unit = pl.col(privacy_unit_column)
    return table.filter(unit.is_null() | unit.is_first_distinct())


# --------------------------------------------------------------------------- post-processing


def project_counts(noisy: np.ndarray) -> np.ndarray:
    """Nearest (Euclidean) non-negative vector with the noisy total: max(noisy - lambda, 0).

    Clipping negatives alone adds spurious mass to every empty bin; shifting
    everything down by lambda until the total matches removes it.
    """
    y = np.asarray(noisy, dtype=np.float64)
    total = max(float(y.sum()), 1.0)
    ordered = np.sort(y)[::-1]
    cumulative = np.cumsum(ordered)
    k = np.arange(1, y.size + 1)
    lambdas = (cumulative - total) / k
    valid = ordered - lambdas > 0
    shift = lambdas[np.flatnonzero(valid)[-1]] if valid.any() else float(ordered[0]) - total
    out = np.clip(y - shift, 0.0, None)
    if out.sum() <= 0:
        out = np.ones_like(y)
    return out


def _cumulative(mass: np.ndarray) -> np.ndarray:
    """0, cumulative shares of `mass`, 1: exactly monotone from 0 to 1 despite rounding."""
    cum = np.minimum(np.concatenate([[0.0], np.cumsum(mass) / mass.sum()]), 1.0)
    cum[-1] = 1.0
    return np.maximum.accumulate(cum)


# --------------------------------------------------------------------------- tau -> latent correlation


def _bivariate_cdf(a: np.ndarray, b: np.ndarray, rho: float) -> np.ndarray:
    """Phi2(a_i, b_j; rho) on the grid a x b (Drezner-Wesolowsky integral in the angle, Gauss-Legendre)."""
    from scipy.special import ndtr

    theta_max = math.asin(rho)
    theta = 0.5 * theta_max * (_GAUSS_NODES + 1.0)
    weights = 0.5 * theta_max * _GAUSS_WEIGHTS
    aa, bb = a[:, None, None], b[None, :, None]
    sin, cos2 = np.sin(theta), np.cos(theta) ** 2
    integrand = np.exp(-(aa * aa - 2.0 * aa * bb * sin + bb * bb) / (2.0 * cos2))
    return ndtr(a)[:, None] * ndtr(b)[None, :] + (integrand @ weights) / (2.0 * math.pi)


def expected_tau(rho: float, cum_x: np.ndarray, cum_y: np.ndarray) -> float:
    """Kendall's tau_a of a bivariate normal (correlation rho) discretised at cumulative probabilities cum_x, cum_y."""
    from scipy.special import ndtri

    a = np.clip(ndtri(np.clip(cum_x, 0.0, 1.0)), -_CUT_CLIP, _CUT_CLIP)
    b = np.clip(ndtri(np.clip(cum_y, 0.0, 1.0)), -_CUT_CLIP, _CUT_CLIP)
    grid = _bivariate_cdf(a, b, rho)
    cells = np.clip(np.diff(np.diff(grid, axis=0), axis=1), 0.0, None)
    north_east, south_east = _corner_sums(cells)
    return float(2.0 * np.sum(cells * (north_east - south_east)))


def latent_rho(tau: float, cum_x: np.ndarray, cum_y: np.ndarray) -> float:
    """The latent normal correlation whose discretisation has Kendall tau_a `tau` (bisection; clipped at the ends)."""
    lo, hi = -_RHO_MAX, _RHO_MAX
    if tau <= expected_tau(lo, cum_x, cum_y):
        return lo
    if tau >= expected_tau(hi, cum_x, cum_y):
        return hi
    for _ in range(_BISECTION_STEPS):
        mid = 0.5 * (lo + hi)
        if expected_tau(mid, cum_x, cum_y) > tau:
            hi = mid
        else:
            lo = mid
    return 0.5 * (lo + hi)


# --------------------------------------------------------------------------- auditing


def clopper_pearson(hits: np.ndarray, trials: int, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """One-sided (1 - alpha) Clopper-Pearson lower and upper bounds of binomial proportions."""
    from scipy.stats import beta

    hits = np.asarray(hits, dtype=np.float64)
    lower = np.where(hits > 0, beta.ppf(alpha, hits, trials - hits + 1), 0.0)
    upper = np.where(hits < trials, beta.ppf(1 - alpha, hits + 1, trials - hits), 1.0)
    return np.nan_to_num(lower), np.nan_to_num(upper, nan=1.0)


def empirical_epsilon_lower_bound(hits_a: np.ndarray, hits_b: np.ndarray, trials: int, *, alpha: float = 1e-3) -> float:
    """A lower bound on a mechanism's epsilon, valid with probability >= 1 - alpha.

    `hits_a[e]` and `hits_b[e]` count the runs (out of `trials` each) whose output
    fell in event e on two neighbouring inputs. For every event and both
    directions, log(lower bound of P_a(e) / upper bound of P_b(e)) with
    Clopper-Pearson bounds at a Bonferroni-corrected level, so sampling noise
    does not make a correct mechanism look broken. Returns the largest (0 when
    no event gives evidence). A value above the claimed epsilon falsifies it.
    """
    hits_a = np.asarray(hits_a)
    hits_b = np.asarray(hits_b)
    level = alpha / (4 * max(hits_a.size, 1))
    lo_a, hi_a = clopper_pearson(hits_a, trials, level)
    lo_b, hi_b = clopper_pearson(hits_b, trials, level)
    with np.errstate(divide="ignore"):
        ratios = np.concatenate([np.log(lo_a) - np.log(hi_b), np.log(lo_b) - np.log(hi_a)])
    ratios = ratios[np.isfinite(ratios)]
    return float(max(ratios.max(initial=0.0), 0.0))


def value_classes(series: pl.Series) -> np.ndarray:
    """Each value's public class as a code into `VALUE_CLASSES`, from its text (never from the column's dtype)."""
    text = _as_text(series)
    number = text.cast(pl.Float64, strict=False)
    integer = text.str.contains(r"^[+-]?[0-9]+(\.0*)?$").fill_null(False)
    decimal = number.is_finite().fill_null(False)
    truth = text.str.to_lowercase().is_in(sorted(TRUTH_WORDS)).fill_null(False)
    codes = np.where(text.is_null().to_numpy(), 0,
                     np.where(integer.to_numpy(), 1, np.where(decimal.to_numpy(), 2,
                                                              np.where(truth.to_numpy(), 4, 3))))
    return codes.astype(np.int64)


TRUTH_WORDS = frozenset(word for word in TRUE_WORDS + FALSE_WORDS if not word.isdigit())
"""The flag words of `models.tape.vocabulary` (1/0 are numbers here): an undeclared column written in them is read as a
flag over the public levels false/true."""


def _truth_text(series: pl.Series) -> pl.Series:
    """A flag column as the public level texts "true"/"false" (other values: null, counted in the null bin)."""
    return as_truths(_as_text(series), strict=False).replace_strict({True: "true", False: "false"},
                                                                     return_dtype=pl.String)


def _flags_as_boolean(frame: pl.DataFrame) -> pl.DataFrame:
    """Text columns of `frame` whose non-null values are all flag words, as Booleans (see `TRUTH_WORDS`)."""
    changed = []
    for name, dtype in frame.schema.items():
        if dtype != pl.String:
            continue
        values = frame.get_column(name).drop_nulls().unique().to_list()
        if values and all(str(v).strip().lower() in TRUTH_WORDS for v in values):
            changed.append(as_truths(frame.get_column(name)).alias(name))
    return frame.with_columns(changed) if changed else frame


def _text_of(value: Any) -> str:
    """A scalar as the text `_as_text` gives a column holding it (booleans lower case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _as_text(series: pl.Series) -> pl.Series:
    """The column as stripped text; empty text is null."""
    text = series.cast(pl.String).str.strip_chars()
    return text.set(text == "", None) if text.len() else text


def _as_number(series: pl.Series, domain: PublicDomain | None) -> np.ndarray:
    """The column parsed as the plan's numeric type (dates for ISO-dated domains): unparsable or non-finite -> NaN."""
    if domain is not None and isinstance(domain.low, str):
        if series.dtype in (pl.Date,) or isinstance(series.dtype, pl.Datetime):
            parsed = series.cast(pl.Date)
        else:
            parsed = _as_text(series).str.to_date(strict=False)
        return _numeric_view(parsed)
    values = _as_text(series).cast(pl.Float64, strict=False).to_numpy().astype(np.float64)
    return np.where(np.isfinite(values), values, np.nan)


def _target_keys(positive: Sequence[Any]) -> list[str]:
    """The target's public level texts: the first declared positive and, for a truth word (1, Yes, true), its opposite."""
    from models.tape.vocabulary import counterpart_spelling, truth_of

    if not positive:
        return []
    first = _text_of(positive[0])
    if truth_of(positive[0]) is None:
        return [first]
    opposite = counterpart_spelling(first) or _text_of(
        0 if isinstance(positive[0], (int, float)) and not isinstance(positive[0], bool) else not truth_of(positive[0]))
    return [first, opposite]


def _target_text(series: pl.Series, positive: Sequence[Any]) -> pl.Series:
    """The target as text in public spellings: positives as the first declared one, truth-word negatives as its opposite.

    Whatever type ingest gave the column (Boolean, 0/1, Yes/No text), each row's
    meaning comes from `target_indicator`, so the released labels do not depend on
    the column's dtype.
    """
    from models.tape.vocabulary import truth_of

    text = _as_text(series)
    keys = _target_keys(positive)
    if not keys:
        return text
    hit = target_indicator(series, list(positive))
    out = pl.when(text.is_null()).then(None).when(hit).then(pl.lit(keys[0]))
    if len(keys) == 2:
        negative = text.map_elements(lambda v: truth_of(v) is False, return_dtype=pl.Boolean)
        out = out.when(negative).then(pl.lit(keys[1]))
    return pl.select(out.otherwise(text).alias(series.name)).to_series()


def _positive_text_levels(levels: list[Any], positive: list[Any]) -> list[Any]:
    """The target's text levels that mean "defaulted": by `target_indicator` on text, or by the same truth value."""
    from models.tape.vocabulary import truth_of

    texts = [v for v in levels if v is not None]
    hits = target_indicator(pl.Series(texts, dtype=pl.String), positive or [True]).to_list() if texts else []
    truths = {truth_of(p) for p in positive} - {None}
    return [v for v, hit in zip(texts, hits) if hit or truth_of(v) in truths]


# --------------------------------------------------------------------------- the DP copula


@dataclass
class _Dim:
    name: str
    codes: np.ndarray  # per row, -1 = takes part in no pair
    size: int
    cum: np.ndarray  # cumulative probabilities at the code boundaries (size + 1)
    present: float  # share of rows with a code (nullable value dimensions)
    paired: bool = True  # False: a null indicator, independent of every other dimension (rho 0, nothing released)


class DPGaussianCopula:
    """A differentially private Gaussian-copula twin (see the module docstring).

    Same interface as `GaussianCopulaTwin`: `fit(table, schema)`,
    `sample(n, seed, conditions)`, `summary()`, `save(path)`, `load(path)`.
    The fitted model *is* a `GaussianCopulaTwin` built only from noisy
    releases (`twin`), so sampling and conditional sampling are the ordinary
    engine's.

    Args:
        plan: from `plan_dp_copula`; charge `plan.mechanisms` before `fit`.
        sampler: integer noise (default OpenDP's discrete Laplace); tests pass
            other samplers to check the statistics, never production code.
    """

    def __init__(self, plan: DPCopulaPlan, *, sampler: NoiseSampler | None = None) -> None:
        if not isinstance(plan, DPCopulaPlan):
            raise InvalidMechanismError("plan must be a DPCopulaPlan.", fix="make one with models.twin.dp.plan_dp_copula.")
        self.plan = plan
        self.sampler: NoiseSampler = sampler or DiscreteLaplace()
        self.twin: GaussianCopulaTwin | None = None

    # ------------------------------------------------------------------ fit

    def fit(self, table: pl.DataFrame, schema: TableSchema | None = None, *,
            tenant: str | None = None) -> "DPGaussianCopula":
        """Release the planned noisy statistics of `table` and build the twin from them.

        Each column is read as the plan's type (numbers parsed from text with
        unparsable values as nulls, categories as text), so the data's dtypes
        never shape the release. `schema` is accepted for the engine interface
        and not used: the plan carries everything public.

        Raises:
            InvalidDataError: the table lacks planned columns, or after bounding
                each unit to one row does not have the plan's public unit count
                (it would need a different plan: re-plan and re-charge).
        """
        plan = self.plan
        missing = [c.name for c in plan.columns if c.name not in table.columns]
        if plan.privacy_unit_column is not None and plan.privacy_unit_column not in table.columns:
            missing.append(plan.privacy_unit_column)
        if missing:
            raise InvalidDataError(f"the table lacks planned column(s) {missing}.", tenant=tenant, column=missing[0],
                                   fix="plan the DP fit from this table's header (models.twin.dp.plan_for_table).")
        bounded = bound_units(table, plan.privacy_unit_column)
        if bounded.height != plan.n_units:
            raise InvalidDataError(
                f"the table has {bounded.height} privacy units but the DP plan was made (and charged) for "
                f"{plan.n_units}; the noise calibration would not hold.", tenant=tenant,
                fix="re-plan with the table's unit count and charge that plan before fitting.",
            )
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            self.twin = self._fit(bounded)
        return self

    def _fit(self, table: pl.DataFrame) -> GaussianCopulaTwin:
        plan = self.plan
        n = table.height
        dims: list[_Dim] = []
        marginals: list[ContinuousMarginal | LevelMarginal] = []
        columns: list[dict[str, Any]] = []
        left_out = dict(plan.left_out)
        target: dict[str, Any] | None = None
        for column in plan.columns:
            series = table.get_column(column.name)
            if column.kind == "identifier":
                columns.append(self._identifier_plan(column.name))
                continue
            if column.kind == "auto":
                built = self._auto(column, series)
            elif column.kind in ("bins", "values"):
                built = self._numeric(column, column.domain, _as_number(series, column.domain), 2.0 / column.epsilon)
            elif column.name == plan.target:
                built = self._levels(column, _target_text(series, plan.target_positive), 2.0 / column.epsilon)
            else:
                built = self._levels(column, _as_text(series), 2.0 / column.epsilon, boolean=series.dtype == pl.Boolean)
            if isinstance(built, str):
                left_out[column.name] = built
                continue
            plan_entry, new_dims, new_marginals = built
            offset = len(dims)
            plan_entry["dim"] += offset
            if plan_entry.get("null_dim") is not None:
                plan_entry["null_dim"] += offset
            dims += new_dims
            marginals += new_marginals
            columns.append(plan_entry)
            if column.name == plan.target and plan_entry["kind"] == "levels":
                levels = new_marginals[0].levels
                target = {"column": column.name, "dim": plan_entry["dim"],
                          "positive": _positive_text_levels(levels, list(plan.target_positive))}
        correlation = self._correlation(dims, n)
        arrays: dict[str, np.ndarray] = {"correlation": correlation}
        for i, marginal in enumerate(marginals):
            for key, arr in marginal.arrays().items():
                arrays[f"m{i}_{key}"] = arr
        model = {
            "format": "credittwin.gaussian_copula", "version": 1,
            "params": {"k": 1, "tail_smoothing": 0.0, "max_categories": 1000, "constraints": []},
            "n_train": n, "latent_columns": [d.name for d in dims],
            "marginals": [m.to_json() for m in marginals], "columns": columns,
            "left_out": left_out, "merges": {}, "target": target,
        }
        return GaussianCopulaTwin._from_saved(json.loads(json.dumps(model)), arrays)

    @staticmethod
    def _identifier_plan(name: str) -> dict[str, Any]:
        """Fresh ids from a public constant prefix, as text, never from the real ids or their type."""
        return {"name": name, "kind": "identifier", "dtype": {"name": "String"}, "offset": None, "prefix": ID_PREFIX}

    def _auto(self, column: DPColumnPlan, series: pl.Series):
        """An undeclared column: a noisy value-class histogram decides its structure, then one charged release.

        The decision is post-processing of the value-class histogram; whichever
        release follows (grid histogram or stability histogram) spends the same
        planned epsilon, so the charge does not depend on the data.
        """
        classes = value_classes(series)
        noisy = noisy_histogram(classes, len(VALUE_CLASSES), scale=2.0 / column.profile_epsilon, sampler=self.sampler)
        shares = project_counts(noisy)
        shares = shares / shares.sum()
        value_scale = 2.0 / (column.epsilon - column.profile_epsilon)
        if shares[0] > MOSTLY_NULL:
            return f"mostly null (noisy null share {shares[0]:.0%}, from a charged value-class histogram)"
        if shares[4] >= MOSTLY_FLAGS * (1.0 - shares[0]):
            # yes/no, true/false, y/n: a public two-level domain, no list of categories to pay for. A third value
            # beside the flag words (wa_churn's "No phone service", 9.6%) makes it a category column: as a flag it
            # came back as true/false, in no word of the file, with that value gone.
            flag = DPColumnPlan(column.name, "categories", PublicDomain(categories=("false", "true")), True,
                                column.epsilon)
            return self._levels(flag, _truth_text(series), value_scale, kind="categories")
        if shares[1] + shares[2] >= shares[3]:  # numbers are the majority of the noisy non-null values
            integer = shares[1] >= shares[2]
            return self._grid(column, _as_number(series, None), integer, value_scale)
        return self._levels(column, _as_text(series), value_scale, kind="stability")

    def _grid(self, column: DPColumnPlan, values: np.ndarray, integer: bool, scale: float):
        """An undeclared numeric column: one noisy histogram over the public magnitude grid gives bounds and marginal.

        The bounds are post-processing of that one histogram (`grid_bounds`), so
        they cost nothing beyond it; the marginal is its projected mass inside them.
        """
        edges = magnitude_grid(integer)
        size = edges.size - 1
        null = np.isnan(values)
        inner = np.clip(np.where(null, 0.0, values), edges[0], edges[-1])
        grid_codes = np.clip(np.searchsorted(edges, inner, side="right") - 1, 0, size - 1).astype(np.int64)
        if not integer:
            grid_codes = np.where(inner == 0.0, size // 2, grid_codes)  # the zero-width bin [0, 0]
        codes = np.where(null, size, grid_codes)
        noisy = noisy_histogram(codes, size + 1, scale=scale, sampler=self.sampler)
        mass = project_counts(noisy)
        value_mass = mass[:size] if mass[:size].sum() > 0 else np.ones(size)
        lo, hi = grid_bounds(noisy, scale, integer)
        kept = value_mass[lo:hi + 1].copy()
        if kept.sum() <= 0:
            kept = np.ones_like(kept)
        value_codes = np.where(null, -1, np.clip(grid_codes, lo, hi) - lo)
        small = _GRID_SMALL_INTEGERS
        first_small = edges.size // 2 - small - 1  # index of the bin of -32 in the integer grid
        if integer and first_small <= lo and hi <= first_small + 2 * small and hi - lo < MAX_INTEGER_LEVELS:
            levels = [float(v) for v in range(lo - first_small - small, hi - first_small - small + 1)]
            marginal: ContinuousMarginal | LevelMarginal = LevelMarginal(levels, kept / kept.sum())
            discrete = True
        else:
            low, high = float(edges[lo]), float(edges[hi + 1])
            marginal = ContinuousMarginal(_cumulative(kept), edges[lo:hi + 2].copy(), low, high)
            discrete = False
        dtype = {"name": "Int64"} if integer else {"name": "Float64"}
        return self._with_null(column, marginal, value_codes, kept.size, _cumulative(kept), null,
                               _null_share(noisy[size], mass, scale), dtype, 1.0 if integer else 0.0, discrete)

    def _with_null(self, column, marginal, value_codes, size, cum, null, null_share, dtype, step, discrete):
        """The value dimension plus the public null dimension every modelled numeric column has under DP."""
        present_share = 1.0 - float(null_share)
        null_marginal = LevelMarginal([False, True], np.array([present_share, float(null_share)]))
        entry = {"name": column.name, "kind": "numeric", "dtype": dtype, "step": step, "dim": 0, "null_dim": 1,
                 "null_by": None, "discrete": discrete}
        dims = [_Dim(column.name, value_codes, size, cum, present_share),
                _Dim(f"{column.name}{NULL_SUFFIX}", null.astype(np.int64), 2, null_marginal.cum.copy(), 1.0,
                     paired=False)]
        return entry, dims, [marginal, null_marginal]

    def _numeric(self, column: DPColumnPlan, domain: PublicDomain, values: np.ndarray, scale: float):
        """A column over declared (or default) public bins or values, read as the plan's numeric type."""
        is_date = isinstance(domain.low, str)
        integer = is_date or (domain.kind == "values" and all(float(v).is_integer() for v in domain.values))
        step = 1.0 if integer else 0.0
        null = np.isnan(values)
        if domain.kind == "values":
            levels = np.asarray(domain.values, dtype=np.float64)
            size = levels.size
            cuts = (levels[1:] + levels[:-1]) / 2
            codes = np.searchsorted(cuts, np.where(null, levels[0], values), side="left").astype(np.int64)
        else:
            low, high = self._bounds(domain)
            size = int(domain.bins)
            edges = self._edges(low, high, size, domain.scale, step)
            inner = np.clip(np.where(null, low, values), edges[0], edges[-1])
            codes = np.clip(np.searchsorted(edges, inner, side="right") - 1, 0, size - 1).astype(np.int64)
        noisy = noisy_histogram(np.where(null, size, codes), size + 1, scale=scale, sampler=self.sampler)
        mass = project_counts(noisy)
        value_mass = mass[:size] if mass[:size].sum() > 0 else np.ones(size)
        if domain.kind == "values":
            marginal: ContinuousMarginal | LevelMarginal = LevelMarginal(
                [float(v) for v in levels], value_mass / value_mass.sum())
        else:
            marginal = ContinuousMarginal(_cumulative(value_mass), edges, low, high)
        dtype = {"name": "Date"} if is_date else ({"name": "Int64"} if integer else {"name": "Float64"})
        return self._with_null(column, marginal, np.where(null, -1, codes), size, _cumulative(value_mass), null,
                               _null_share(noisy[size], mass, scale), dtype, step, domain.kind == "values")

    @staticmethod
    def _bounds(domain: PublicDomain) -> tuple[float, float]:
        if isinstance(domain.low, str):
            parsed = pl.Series([domain.low, domain.high]).str.to_date(strict=False)
            low, high = (float(v) for v in _numeric_view(parsed))
            return low, high
        return float(domain.low), float(domain.high)

    @staticmethod
    def _edges(low: float, high: float, bins: int, scale: str, step: float) -> np.ndarray:
        """Public bin edges; integer columns get edges half a step out so rounding keeps each bin's values."""
        if scale == "log1p":
            edges = np.expm1(np.linspace(math.log1p(low), math.log1p(high), bins + 1))
        else:
            edges = np.linspace(low, high, bins + 1)
        if step > 0:
            edges = edges.copy()
            edges[0] -= step / 2
            edges[-1] += step / 2
        return edges

    def _levels(self, column: DPColumnPlan, series: pl.Series, scale: float, kind: str | None = None, *,
                boolean: bool = False):
        """A categorical column read as text: one level dimension over public (or paid-for) categories plus null."""
        kind = kind or column.kind
        stable_mass = None
        if kind == "stability":
            public = _target_keys(self.plan.target_positive) if column.name == self.plan.target else []
            levels, stable_mass = self._stable_levels(column, series, scale, public)
            if not levels:
                return "no category passed the DP stability threshold (its counts were released, then dropped)"
        else:
            levels = [_text_of(v) for v in column.domain.categories] + [None]
        present = [v for v in levels if v is not None]
        keys = present
        if kind != "stability" and boolean:
            # A Yes/No flag is read as a Boolean, so its text is 'true'/'false': the declared (public) categories,
            # spelled as the file spells them ('No', 'Yes'), are matched by their truth value, or no row would
            # match and the level counts would be pure noise.
            from models.tape.vocabulary import truth_of

            truths = [truth_of(v) for v in present]
            if None not in truths and len(set(truths)) == len(truths):
                keys = ["true" if t else "false" for t in truths]
        codes = series.replace_strict(keys, list(range(len(present))), default=-1, return_dtype=pl.Int64)
        codes = codes.fill_null(levels.index(None)).to_numpy().astype(np.int64)
        if stable_mass is not None:
            mass = stable_mass
        else:
            noisy = noisy_histogram(codes, len(levels), scale=scale, sampler=self.sampler)
            mass = project_counts(noisy)
            if noisy[-1] < _clear_threshold(scale, len(levels)) and mass[:-1].sum() > 0:
                mass[-1] = 0.0  # the null level (last): a count the noise alone explains is read as no nulls
        marginal = LevelMarginal(list(levels), mass / mass.sum())
        entry = {"name": column.name, "kind": "levels", "dtype": {"name": "String"}, "dim": 0, "null_dim": None,
                 "null_by": None, "step": 0.0}
        return entry, [_Dim(column.name, codes, len(levels), marginal.cum.copy(), 1.0)], [marginal]

    def _stable_levels(self, column: DPColumnPlan, series: pl.Series, scale: float,
                       public: Sequence[str] = ()) -> tuple[list[Any], np.ndarray]:
        """Stability histogram: noisy counts of observed values, kept above the threshold delta calls for.

        A value held by a single unit exists in one neighbour only; it is
        published only if its count 1 plus noise reaches the threshold T, which
        happens with probability P(Z >= T - 1) <= delta / 2 (a replaced row can
        remove one value and add another). Values in both neighbours differ by at
        most 1 in two counts (L1 sensitivity 2, as the other histograms). None
        (null) and the `public` keys (the target's declared positive values) are
        released whatever their noisy count. Returns the kept levels (by
        noisy count, most frequent first) and their projected counts; no levels
        when nothing passes.
        """
        counts = series.value_counts()
        keys = counts.get_column(series.name).to_list()
        freq = counts.get_column("count").to_numpy().astype(np.int64)
        for key in (*public, None):
            if key not in keys:
                keys.append(key)
                freq = np.append(freq, 0)
        noisy = self.sampler(freq, scale)
        threshold = stability_threshold(scale, column.delta / 2.0)
        kept = sorted(((k, int(c)) for k, c in zip(keys, noisy) if k is not None and (c >= threshold or k in public)),
                      key=lambda kc: (-kc[1], kc[0]))
        if not kept:
            return [], np.zeros(0)
        levels = [k for k, _ in kept] + [None]
        null_count = float(next(c for k, c in zip(keys, noisy) if k is None))
        if null_count < _clear_threshold(scale, len(levels)):
            null_count = 0.0  # a null count the noise alone explains is read as no nulls (post-processing)
        masses = [float(c) for _, c in kept] + [null_count]
        return levels, project_counts(np.asarray(masses))

    def _correlation(self, dims: list[_Dim], n: int) -> np.ndarray:
        """Noisy Kendall concordance per pair -> latent correlation -> positive-definite repair."""
        d = len(dims)
        corr = np.eye(d)
        if d < 2:
            return corr
        sensitivity = concordance_sensitivity(n)
        scale = sensitivity / self.plan.pair_epsilon
        pairs_total = n * (n - 1) / 2.0
        for i in range(d):
            for j in range(i + 1, d):
                a, b = dims[i], dims[j]
                if not (a.paired and b.paired):
                    continue
                noisy = noisy_concordance(a.codes, b.codes, a.size, b.size, scale=scale, sampler=self.sampler)
                # Pairs of rows where both columns are present carry the signal; rescale by their expected share.
                share = max((a.present * b.present) ** 2, 1e-3)
                tau = float(np.clip(noisy / pairs_total / share, -1.0, 1.0))
                corr[i, j] = corr[j, i] = latent_rho(tau, a.cum, b.cum)
        return _repair_correlation(corr)

    # ------------------------------------------------------------------ sample / inspect / persist

    def _require(self) -> GaussianCopulaTwin:
        if self.twin is None:
            raise NotFittedError("the DP copula is not fitted.", fix="call fit(table, schema) or DPGaussianCopula.load(path).")
        return self.twin

    def sample(self, n: int, seed: int = 0, conditions: Conditions | None = None) -> pl.DataFrame:
        """Sample `n` synthetic rows (post-processing: spends no privacy); see `GaussianCopulaTwin.sample`.

        A text column whose sampled values are all flag words (true/false, Yes/No) comes back Boolean,
        as ingest types such a column: a rule on the synthetic values only, so it spends nothing.
        """
        return _flags_as_boolean(self._require().sample(n, seed=seed, conditions=conditions))

    @property
    def correlation(self) -> np.ndarray:
        """The latent correlation of the twin built from the noisy releases."""
        return self._require().correlation

    @property
    def latent_columns(self) -> list[str]:
        return self._require().latent_columns

    def summary(self) -> dict[str, Any]:
        """The twin's summary plus the privacy guarantee, for asset metadata and reports."""
        out = self._require().summary()
        out["engine"] = "credittwin-dp"
        composition = self.plan.composition()
        out["differential_privacy"] = {
            "label": f"differentially private: epsilon={composition.epsilon:.4g}, delta={composition.delta:.3g} "
                     "(replace-one privacy unit, unit count public)",
            "epsilon": composition.epsilon, "delta": composition.delta, "accountant": composition.accountant,
            "split": self.plan.split, "pair_epsilon": self.plan.pair_epsilon, "n_units": self.plan.n_units,
            "privacy_unit_column": self.plan.privacy_unit_column,
            "noise": "OpenDP discrete Laplace on integer counts",
        }
        return out

    def save(self, path: Path) -> None:
        """Save as the twin's files (model.json, arrays.npz) plus dp.json (the plan), atomically."""
        twin = self._require()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
            inner = Path(scratch) / "twin"
            twin.save(inner)
            files = {name: (inner / name).read_bytes() for name in ("model.json", "arrays.npz")}
        document = {"format": DP_FORMAT, "version": DP_FORMAT_VERSION, "plan": self.plan.to_dict()}
        files[DP_FILE] = json.dumps(document, indent=1, allow_nan=False).encode()
        with atomic_directory(path) as folder:
            for name, data in files.items():
                (folder / name).write_bytes(data)

    @classmethod
    def load(cls, path: Path) -> "DPGaussianCopula":
        """Load a model saved by `save`; refuses a twin without its DP plan (a non-DP model)."""
        path = Path(path)
        try:
            document = json.loads((path / DP_FILE).read_text())
            if document.get("format") != DP_FORMAT or document.get("version") != DP_FORMAT_VERSION:
                raise ValueError(f"format {document.get('format')!r} v{document.get('version')!r}")
            plan = DPCopulaPlan.from_dict(document["plan"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidDataError(f"cannot read the DP copula's plan: {exc}", file=str(path / DP_FILE),
                                   fix="re-run fitted_copula with privacy.epsilon set.") from exc
        model = cls(plan)
        model.twin = GaussianCopulaTwin.load(path)
        return model


# --------------------------------------------------------------------------- DP-SGD


def _steps_per_epoch(n_units: int, batch_size: int) -> int:
    return math.ceil(n_units / batch_size)


def plan_dpsgd(n_units: int, batch_size: int, epochs: int, target_epsilon: float, delta: float) -> MechanismSpec:
    """The DP-SGD charge of a cascade fit: Poisson sampling of units, `epochs` passes, calibrated noise.

    Matches what opacus runs: the sampling rate is 1 / (steps per epoch) with
    ceil(n_units / batch_size) steps per epoch, and the noise multiplier is
    calibrated so that the epsilon under `models.privacy.accounting.NEIGHBOURS`
    (replace one borrower; `noise_multiplier_replace_one`) is at most
    `target_epsilon` at `delta`. The spec's own `epsilon` is its add/remove
    figure; the ledger is charged `models.privacy.accounting.replace_one_charge(spec)`.
    """
    for name, value in (("n_units", n_units), ("batch_size", batch_size), ("epochs", epochs)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidMechanismError(f"{name} must be a positive integer, got {value!r}.", fix=f"pass a positive {name}.")
    per_epoch = _steps_per_epoch(n_units, batch_size)
    rate = 1.0 / per_epoch
    steps = epochs * per_epoch
    from models.privacy.accounting import noise_multiplier_replace_one

    multiplier = noise_multiplier_replace_one(target_epsilon, rate, steps, delta)
    return MechanismSpec(
        kind="subsampled_gaussian", noise_multiplier=multiplier, sampling_rate=rate, steps=steps, delta=delta,
        epsilon=epsilon_for_dpsgd(multiplier, rate, steps, delta),
        description=f"DP-SGD (opacus, Poisson sampling) of the cascade: {n_units} units, {epochs} epochs",
    )


def dp_recurrent_factory(cell: str, input_size: int, hidden_size: int, num_layers: int) -> "torch.nn.Module":
    """opacus' DPLSTM / DPGRU, batch first: the cascade's recurrent layer under DP-SGD (and to load such a model)."""
    from opacus.layers import DPGRU, DPLSTM

    layer = DPLSTM if cell == "lstm" else DPGRU
    return layer(input_size, hidden_size, num_layers=num_layers, batch_first=True)


class OpacusDPHook:
    """`models.sequences.cascade.DPTrainingHook` with opacus: DPLSTM, Poisson sampling, per-sample clipping.

    The privacy unit is the borrower. `wrap` keeps each borrower's first
    training loan and drops its others, so each sample opacus clips and samples
    is exactly one borrower (opacus bounds per-sample, i.e. per-borrower,
    gradients). Under a hook the cascade trains on per-loan losses (opacus'
    ``loss_reduction="mean"``, so each clipped per-sample gradient is one
    borrower's own), starts the state head's output bias at zero (`wrap`
    zeroes it too, for any other caller), trains on every borrower for every
    configured epoch and keeps the last weights; see
    `models.sequences.cascade.DPTrainingHook` for what the guarantee covers and what is
    treated as public metadata. An empty Poisson batch still takes its noise
    step, as the accountant assumes.
    Poisson sampling and the Gaussian noise draw from generators seeded from
    the OS's secret randomness (or opacus' secure mode), not from the
    cascade's public seed, so a DP training run is not reproducible by design.

    Args:
        spec: from `plan_dpsgd` (noise multiplier, sampling rate, steps, delta),
            the charge made before training.
        n_units: the number of training borrowers the spec was planned for.
        batch_size: the expected batch size the spec was planned with.
        max_grad_norm: per-borrower gradient clipping bound.
        secure_mode: opacus' cryptographically secure noise (slower; needs torchcsprng).
    """

    recurrent_factory = staticmethod(dp_recurrent_factory)

    def __init__(self, spec: MechanismSpec, *, n_units: int, batch_size: int, max_grad_norm: float = 1.0,
                 secure_mode: bool = False) -> None:
        if spec.kind != "subsampled_gaussian":
            raise InvalidMechanismError(f"DP-SGD needs a subsampled_gaussian spec, got {spec.kind!r}.",
                                        fix="make it with models.twin.dp.plan_dpsgd.")
        expected = 1.0 / _steps_per_epoch(n_units, batch_size)
        if not math.isclose(float(spec.sampling_rate), expected, rel_tol=1e-12):
            raise InvalidMechanismError(
                f"the spec's sampling rate {spec.sampling_rate} is not 1/ceil({n_units}/{batch_size}).",
                fix="plan with plan_dpsgd(n_units, batch_size, ...) and pass the same figures here.",
            )
        if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
            raise InvalidMechanismError(f"max_grad_norm must be > 0, got {max_grad_norm!r}.", fix="use e.g. 1.0.")
        self.spec = spec
        self.n_units = n_units
        self.batch_size = batch_size
        self.max_grad_norm = float(max_grad_norm)
        self.secure_mode = secure_mode
        self._engine: Any = None

    def wrap(self, model: Any, optimizer: Any, data_loader: Any, *, privacy_units: np.ndarray) -> tuple[Any, Any, Any]:
        """One loan per borrower, then opacus' `make_private` with the planned noise and Poisson sampling."""
        import secrets

        import torch
        from opacus import PrivacyEngine

        units = np.asarray(privacy_units)
        _, first = np.unique(units, return_index=True)
        first = np.sort(first)
        if first.size != self.n_units:
            raise InvalidMechanismError(
                f"training sees {first.size} borrowers but DP-SGD was planned (and charged) for {self.n_units}.",
                fix="plan with plan_dpsgd on the training borrowers' count (validation_share=0 trains on all).",
            )
        dataset = data_loader.dataset
        index = torch.as_tensor(first, dtype=torch.long)
        per_unit = torch.utils.data.TensorDataset(*(t[index] for t in dataset.tensors))
        # Which borrowers a step samples and the noise it adds must not follow the cascade's public seed.
        sampling = torch.Generator().manual_seed(secrets.randbits(63))
        noise = None if self.secure_mode else torch.Generator().manual_seed(secrets.randbits(63))
        loader = torch.utils.data.DataLoader(per_unit, batch_size=self.batch_size, generator=sampling)
        head = getattr(model, "state_head", None)
        if head is not None:
            with torch.no_grad():
                head[-1].bias.zero_()
        self._engine = PrivacyEngine(accountant="rdp", secure_mode=self.secure_mode)
        return self._engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader,
            noise_multiplier=self.spec.effective_noise_multiplier, max_grad_norm=self.max_grad_norm,
            poisson_sampling=True, noise_generator=noise, loss_reduction="mean",
        )

    def steps_taken(self) -> int:
        """Optimizer steps opacus has recorded so far."""
        if self._engine is None:
            return 0
        return int(sum(steps for _, _, steps in self._engine.accountant.history))

    def on_epoch_end(self, epoch: int) -> dict[str, float]:
        """The epsilon spent so far (models.privacy.accounting, RDP) at the spec's delta, and the steps taken."""
        steps = self.steps_taken()
        if steps == 0:
            return {"dp_epsilon": 0.0, "dp_steps": 0.0}
        epsilon = epsilon_for_dpsgd(self.spec.effective_noise_multiplier, float(self.spec.sampling_rate), steps,
                                    self.spec.delta)
        return {"dp_epsilon": epsilon, "dp_steps": float(steps)}
