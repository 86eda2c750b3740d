"""The statistics of the audit's attacks: Wilson intervals and the leak test of members against controls.

Anonymeter's risk, (members' success - controls' success) / (1 - controls'
success), is the right effect size (the share of what the attacker could not
guess from other people's data that the release gives away), but the rule
"its upper 95 % bound must be below a limit" demands a precision small books
and rare secrets cannot give: on a 3 % default flag the controls' success is
about 0.94, the denominator 0.06, and 2,000 attacks on an honest release still
leave an upper bound near 0.29. Such a rule fails releases that leak nothing.
Every attack rule of the policy (`models.privacy.policy`) is therefore a
`leak_test`, a two-proportion test of members against controls (Newcombe's
hybrid score interval for the difference, one-sided 95 % bounds, divided by
the controls' failure rate):

* FAIL when the lower bound of the risk is above the margin: evidence that
  the release tells members' secrets better than other people's by more than
  the tenant tolerates;
* PASS when the upper bound is within the margin;
* WARN (inconclusive) otherwise, stating both bounds and the smallest risk
  the attack detects with 80 % power at this size;
* not measured when even a complete leak (every member guessed) would not
  put the lower bound above the margin at these counts: the attack has no
  power here, and the policy's `require_measured` decides (see
  `models.privacy.policy.evaluate_policy`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# The two-sided level of every interval the audit reports.
CONFIDENCE = 0.95
# The attack rules' bounds are one-sided at this level (each direction on its own).
ONE_SIDED_CONFIDENCE = 0.95
# The power at which an attack rule reports the smallest risk it detects.
DETECTION_POWER = 0.80


def wilson_interval(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion (successes may be fractional for ties)."""
    from scipy.stats import norm

    if n <= 0:
        return 0.0, 1.0
    return _wilson_z(successes, n, float(norm.ppf(0.5 + confidence / 2)))


def _wilson_z(successes: float, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval of a proportion at normal quantile `z` (n > 0)."""
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _difference_bounds(s_m: float, n_m: int, s_c: float, n_c: int, z: float) -> tuple[float, float]:
    """Newcombe's hybrid score bounds of p_members - p_controls (each one-sided at quantile `z`).

    It keeps its coverage where a rate is near 0 or 1 (a copied release guesses
    every member), where the Wald interval collapses (Newcombe, 1998, method 10).
    """
    p_m, p_c = s_m / n_m, s_c / n_c
    low_m, high_m = _wilson_z(s_m, n_m, z)
    low_c, high_c = _wilson_z(s_c, n_c, z)
    difference = p_m - p_c
    low = difference - math.sqrt((p_m - low_m) ** 2 + (high_c - p_c) ** 2)
    high = difference + math.sqrt((high_m - p_m) ** 2 + (p_c - low_c) ** 2)
    return low, high


def _detectable_risk(p_c: float, n_m: int, n_c: int, margin: float, z: float, z_power: float) -> float | None:
    """The smallest risk the test flags with `DETECTION_POWER` (normal approximation), None above 1."""
    room = 1.0 - p_c
    for risk in np.linspace(max(margin, 0.0), 1.0, 201):
        p_m = p_c + risk * room
        se = math.sqrt(p_m * (1 - p_m) / n_m + p_c * room / n_c)
        if se == 0.0:
            if risk * room > margin * room:
                return float(risk)
            continue
        if (risk - margin) * room / se - z >= z_power:
            return float(risk)
    return None


def leak_test(member_successes: float, members: int, control_successes: float, controls: int, margin: float) -> dict[str, Any]:
    """Does an attack succeed on members (train records) more than on controls (holdout records)?

    The risk is anonymeter's residual risk, (p_members - p_controls) /
    (1 - p_controls): the share of what an attacker could not get from other
    people's data that the release gives away. Its bounds are Newcombe's
    one-sided 95 % bounds of the difference divided by 1 - p_controls.

    Args:
        member_successes, members: attacks on train records and how many succeeded.
        control_successes, controls: the same on holdout records.
        margin: the risk the tenant tolerates.

    Returns:
        `outcome`: "fail" (lower bound above the margin), "pass" (upper bound
        within it), "inconclusive", or "unmeasured" (even a complete leak
        would not put the lower bound above the margin at these counts, or the
        controls leave no room: every control attack succeeds), with `reason`
        for the last; `risk`, `risk_low`, `risk_high`, the two rates, the
        counts, `margin` and `detectable_risk` (the smallest risk flagged with
        80 % power, None when not even a complete leak is).
    """
    from scipy.stats import norm

    z = float(norm.ppf(ONE_SIDED_CONFIDENCE))
    z_power = float(norm.ppf(DETECTION_POWER))
    out: dict[str, Any] = {"members": int(members), "controls": int(controls), "margin": float(margin)}
    if members <= 0 or controls <= 0:
        return {**out, "outcome": "unmeasured", "reason": "no attack was run"}
    p_m, p_c = member_successes / members, control_successes / controls
    room = 1.0 - p_c
    out.update(member_rate=float(p_m), control_rate=float(p_c))
    if room <= 0.0:
        return {**out, "outcome": "unmeasured",
                "reason": "the attack succeeds on every control record, so no excess over it can be measured"}
    low, high = _difference_bounds(member_successes, members, control_successes, controls, z)
    full_low, _ = _difference_bounds(members, members, control_successes, controls, z)
    out.update(
        risk=float((p_m - p_c) / room),
        risk_low=float(max(low / room, -1.0)),
        risk_high=float(min(high / room, 1.0)),
        detectable_risk=_detectable_risk(p_c, members, controls, margin, z, z_power),
    )
    if out["risk_low"] > margin:
        out["outcome"] = "fail"
    elif full_low / room <= margin:
        # A rule that could not fail even on a complete leak has measured nothing.
        out.update(outcome="unmeasured", reason=(
            f"{members} members and {controls} controls with a control success rate of {p_c:.3g} cannot show a "
            f"risk above {margin:.3g} even if every member were guessed"
        ))
    elif out["risk_high"] <= margin:
        out["outcome"] = "pass"
    else:
        out["outcome"] = "inconclusive"
    return out
