"""Membership inference on a release, and the bound differential privacy puts on it.

`membership_inference` runs a density-ratio attack in the spirit of DOMIAS
(Van Breugel et al., 2023). The density of the released data and of a
reference sample of the population (part of the holdout) are estimated at
each candidate record by nearest-neighbour distances, and the score is
log(d_reference) - log(d_released): a record around which the release is
denser than the population is called a member. A plain distance attack
(score = -d_released) is reported beside it. Each attack gives an AUC with a
DeLong confidence interval and the true-positive rate at 0.1 % false-positive
rate with a stratified bootstrap interval; members are a train sample and
non-members a holdout sample disjoint from the reference. On a large book the
release is sampled too, so a copied row counts only when it is drawn: the
attack's power drops with the sampling rate (the exact-match check of
`models.privacy.distance`, which reads the whole train split, does not).

`dp_auc_bound` is the largest attacker AUC an (epsilon, delta)-DP release
allows, which the audit reports beside the empirical AUC.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from models.errors import InvalidDataError
from models.privacy.distance import Samples, draw_samples, nearest_rows
from models.privacy.leak import CONFIDENCE, wilson_interval
from models.tape.schema import TableSchema

# Keeps log-distances finite for exact copies (distances are in IQR units).
DISTANCE_FLOOR = 1e-6
FPR_TARGET = 0.001
N_BOOTSTRAP = 200
# Below this many members or non-members the AUC interval is widened.
SMALL_SAMPLE = 100
MIN_MIA_PER_GROUP = 2


def _auc_delong(positives: np.ndarray, negatives: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """AUC with its DeLong confidence interval (`models.risk.evaluation.auc_interval`), widened on small samples."""
    from scipy.stats import norm

    from models.risk.evaluation import auc_interval

    m, n = positives.size, negatives.size
    labels = np.concatenate([np.ones(m, dtype=bool), np.zeros(n, dtype=bool)])
    auc, low, high = auc_interval(labels, np.concatenate([positives, negatives]), float(norm.ppf(0.5 + confidence / 2)))
    if min(m, n) < SMALL_SAMPLE:
        # DeLong's variance collapses to 0 at perfect separation and is
        # optimistic on small samples; a Wilson interval on the smaller group
        # size keeps the interval honest there.
        w_low, w_high = wilson_interval(auc * min(m, n), min(m, n), confidence)
        low, high = min(low, w_low), max(high, w_high)
    return auc, low, high


def _tpr_at_fpr(positives: np.ndarray, negatives: np.ndarray, fpr: float) -> float:
    """TPR of the threshold that flags at most floor(fpr * n) non-members (strictly above it)."""
    allowed = int(math.floor(fpr * negatives.size + 1e-9))
    if allowed >= negatives.size:
        return 1.0
    threshold = -np.partition(-negatives, allowed)[allowed]
    return float(np.mean(positives > threshold))


def _attack_summary(positives: np.ndarray, negatives: np.ndarray, *, n_bootstrap: int, rng: np.random.Generator) -> dict[str, Any]:
    auc, auc_low, auc_high = _auc_delong(positives, negatives)
    fpr_used = max(FPR_TARGET, 1.0 / negatives.size)
    tpr = _tpr_at_fpr(positives, negatives, fpr_used)
    boot = np.empty(n_bootstrap)
    for b in range(n_bootstrap):
        pos = positives[rng.integers(0, positives.size, positives.size)]
        neg = negatives[rng.integers(0, negatives.size, negatives.size)]
        boot[b] = _tpr_at_fpr(pos, neg, fpr_used)
    tail = (1 - CONFIDENCE) / 2
    return {
        "auc": auc,
        "auc_ci": [auc_low, auc_high],
        "tpr_at_fpr": tpr,
        "tpr_ci": [float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail))],
        "fpr": fpr_used,
        "fpr_resolvable": fpr_used <= FPR_TARGET,
    }


# --------------------------------------------------------------------------- membership inference


def membership_from_samples(samples: Samples, *, seed: int, n_bootstrap: int) -> dict[str, Any]:
    """`membership_inference` on samples already drawn (`draw_samples`); its own caveats under `warnings`."""
    n_members, n_non, n_ref = samples.members.n, samples.non_members.n, samples.reference.n
    if n_members < MIN_MIA_PER_GROUP or n_non < MIN_MIA_PER_GROUP or n_ref < 1:
        reason = (
            f"membership inference skipped: it needs at least {MIN_MIA_PER_GROUP} members, {MIN_MIA_PER_GROUP} "
            f"non-members and 1 reference row (the holdout gives non-members and reference), got {n_members}, "
            f"{n_non} and {n_ref}; upload a book with a larger holdout"
        )
        return {"skipped": reason, "warnings": [reason]}
    notes = []
    plans = samples.plans
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    d_syn = {}
    d_ref = {}
    for group, side in (("members", samples.members), ("non_members", samples.non_members)):
        d_syn[group] = nearest_rows(plans, side, samples.released, 1)[0][:, 0]
        d_ref[group] = nearest_rows(plans, side, samples.reference, 1)[0][:, 0]

    def density_ratio(group: str) -> np.ndarray:
        return np.log(d_ref[group] + DISTANCE_FLOOR) - np.log(d_syn[group] + DISTANCE_FLOOR)

    scores["density_ratio"] = (density_ratio("members"), density_ratio("non_members"))
    scores["distance"] = (-d_syn["members"], -d_syn["non_members"])
    rng = np.random.default_rng(seed + 1)
    attacks = {name: _attack_summary(pos, neg, n_bootstrap=n_bootstrap, rng=rng) for name, (pos, neg) in scores.items()}
    strongest = max(attacks, key=lambda name: attacks[name]["auc"])
    best = attacks[strongest]
    if not best["fpr_resolvable"]:
        notes.append(
            f"with {n_non} non-members a false-positive rate of {FPR_TARGET:.1%} cannot be resolved; the TPR is "
            f"reported at the lowest resolvable rate, {best['fpr']:.2%}"
        )
    if min(n_members, n_non) < SMALL_SAMPLE:
        notes.append(
            f"membership inference on {n_members} members and {n_non} non-members: its intervals are widened "
            "(Wilson on the smaller group) and remain indicative"
        )
    return {
        "attack": "density ratio of released to reference by nearest-neighbour distances (DOMIAS-style)",
        "strongest": strongest,
        "auc": best["auc"],
        "auc_ci": best["auc_ci"],
        "tpr_at_fpr": best["tpr_at_fpr"],
        "tpr_ci": best["tpr_ci"],
        "fpr": best["fpr"],
        "fpr_target": FPR_TARGET,
        "fpr_resolvable": best["fpr_resolvable"],
        "attacks": attacks,
        "n_members": n_members,
        "n_non_members": n_non,
        "n_reference": n_ref,
        "warnings": notes,
    }


def membership_inference(
    released: pl.DataFrame,
    train: pl.DataFrame,
    holdout: pl.DataFrame,
    schema: TableSchema,
    *,
    sample_size: int = 10_000,
    seed: int = 0,
    n_bootstrap: int = N_BOOTSTRAP,
    tenant: str | None = None,
    generalisations: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Membership-inference attacks on the release: train rows against holdout rows.

    The holdout is split (seeded) into non-members and a disjoint reference
    sample of the population; members are an equal number of train rows. The
    density-ratio attack scores a record x by log d_ref(x) - log d_rel(x), the
    nearest-neighbour log-density ratio of the release to the population (up
    to a constant); the distance attack by -d_rel(x).

    Returns:
        For the strongest attack (highest AUC): `auc` with its DeLong interval
        `auc_ci`, `tpr_at_fpr` at `fpr` (0.1 %, or the lowest rate the number of
        non-members resolves, with `fpr_resolvable` False) with a bootstrap
        interval `tpr_ci`; every attack's figures under `attacks`; the group
        sizes and `warnings`. `{"skipped": reason, ...}` when the holdout is too
        small to split.

    Raises:
        InvalidDataError: as `models.privacy.distance.distance_to_closest_record`.
    """
    samples = draw_samples(
        released, train, holdout, schema, sample_size=sample_size, seed=seed, tenant=tenant, generalisations=generalisations
    )
    result = membership_from_samples(samples, seed=seed, n_bootstrap=n_bootstrap)
    result["warnings"] = list(samples.warnings) + result["warnings"]
    return result


# --------------------------------------------------------------------------- differential privacy


def _check_dp(epsilon: float, delta: float) -> None:
    if not (isinstance(epsilon, (int, float)) and epsilon >= 0 and not math.isnan(epsilon)):
        raise InvalidDataError(
            f"epsilon must be a non-negative number, got {epsilon!r}.",
            fix="pass the epsilon spent according to the tenant's privacy ledger.",
        )
    if not (isinstance(delta, (int, float)) and 0 <= delta <= 1):
        raise InvalidDataError(
            f"delta must be between 0 and 1, got {delta!r}.",
            fix="pass the delta spent according to the tenant's privacy ledger.",
        )


def dp_tpr_bound(epsilon: float, delta: float, fpr: float) -> float:
    """The largest true-positive rate an (epsilon, delta)-DP release allows at false-positive rate `fpr`.

    From the hypothesis-testing view of DP (Kairouz et al., 2015), any attack
    on an (epsilon, delta)-DP mechanism satisfies TPR <= e^eps * FPR + delta and,
    applied to the complementary test (swap the two neighbouring datasets),
    1 - FPR <= e^eps * (1 - TPR) + delta, that is
    TPR <= 1 - e^-eps * (1 - delta - FPR).

    Raises:
        InvalidDataError: epsilon is negative or delta outside [0, 1].
    """
    _check_dp(epsilon, delta)
    if math.isinf(epsilon):
        return 1.0
    a = math.exp(epsilon)
    return float(min(1.0, a * fpr + delta, 1.0 - (1.0 - delta - fpr) / a))


def dp_auc_bound(epsilon: float, delta: float) -> float:
    """The largest membership-inference AUC an (epsilon, delta)-DP release allows.

    The upper boundary of the DP trade-off region is
    f(a) = min(1, e^eps a + delta, 1 - e^-eps (1 - delta - a)) for a
    false-positive rate a (see `dp_tpr_bound`). Its two sloped pieces meet at
    a* = (1 - delta) / (e^eps + 1) and it reaches 1 at a = 1 - delta, so

        AUC_max = integral_0^1 f(a) da = delta + (1 - delta) (e^eps + delta) / (e^eps + 1).

    eps = 0 and delta = 0 give 0.5 (no attack beats chance); eps -> inf or
    delta = 1 give 1; pure eps-DP gives e^eps / (1 + e^eps).

    Raises:
        InvalidDataError: epsilon is negative or delta outside [0, 1].
    """
    _check_dp(epsilon, delta)
    if math.isinf(epsilon):
        return 1.0
    a = math.exp(epsilon)
    return float(min(1.0, delta + (1.0 - delta) * (a + delta) / (a + 1.0)))
