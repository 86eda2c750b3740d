"""The tenant's release policy applied to an audit report: `AuditPolicy`, `evaluate_policy`, `RuleResult`.

`evaluate_policy` applies the tenant's `AuditPolicy` to an `AuditReport` and
lists each rule with its value, threshold, verdict (pass, warn or fail) and
the criterion it applied, in words (`RuleResult.criterion`).

The attack rules are `models.privacy.leak.leak_test`s; copies and near-copies
are refused at any size by the exact-match, DCR-share and membership-inference
rules, which need no secret.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from models.privacy.anonymize import LDiversityScope
from models.privacy.audit import AuditReport, jsonable
from models.privacy.leak import DETECTION_POWER, ONE_SIDED_CONFIDENCE, leak_test


@dataclass
class AuditPolicy:
    """The tenant's release policy: the limits the audit figures are held to.

    Attributes:
        max_exact_match_rate: largest share of released rows equal to a train row.
        max_dcr_share: largest share of released rows closer to train than holdout.
        max_mia_auc: largest AUC of the strongest membership-inference attack.
        max_anonymeter_risk: the margin of anonymeter's singling-out and
            linkability risks (see `leak_test`: a rule fails on evidence that
            the risk exceeds it, passes when it is shown within it).
        max_inference_risk: the margin of every attribute-inference risk
            (CreditTwin's own attack and anonymeter's); None: `max_anonymeter_risk`.
        k: smallest equivalence class required over the quasi-identifiers, or None.
        l: fewest distinct sensitive values required per class, or None. It
            does not apply to a release with no sensitive column (no target,
            none declared): that rule is then a warning saying so.
        require_measured: True fails a required rule whose figure could not be
            measured (the exact-match, DCR and membership rules, and the
            inference rule of each secret); False makes it a warning. The
            anonymeter rules are a second opinion beside CreditTwin's own
            attacks, so anonymeter not installed, disabled or skipped is always
            a warning, never a pass.
    """

    max_exact_match_rate: float = 0.0
    max_dcr_share: float = 0.55
    max_mia_auc: float = 0.60
    max_anonymeter_risk: float = 0.10
    max_inference_risk: float | None = None
    k: int | None = None
    l: int | None = None  # noqa: E741 - the name of the l-diversity parameter
    require_measured: bool = True


PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass
class RuleResult:
    """One rule of the policy applied to the report.

    Attributes:
        rule: the rule's name.
        value: the figure judged (None when not measured).
        threshold: the limit or margin it is held to.
        passed: False only for a failed rule (a warning does not block).
        message: what was found, with the figures.
        verdict: "pass", "warn" (not measured, not applicable or
            inconclusive: never shown as a pass) or "fail".
        criterion: the rule applied, in words, with its limit.
    """

    rule: str
    value: float | None
    threshold: float | None
    passed: bool
    message: str
    verdict: str = PASS
    criterion: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy."""
        return jsonable(asdict(self))


def _rule(rule: str, value: float | None, threshold: float | None, verdict: str, message: str, criterion: str) -> RuleResult:
    return RuleResult(rule=rule, value=value, threshold=threshold, passed=verdict != FAIL, message=message,
                      verdict=verdict, criterion=criterion)


def _unmeasured(rule: str, threshold: float | None, reason: str, criterion: str, policy: AuditPolicy,
                *, required: bool = True) -> RuleResult:
    if required and policy.require_measured:
        return _rule(rule, None, threshold, FAIL, f"{rule} not measured ({reason}); a release cannot be certified on it "
                     "(audit.require_measured)", criterion)
    why = "the policy does not require it (audit.require_measured: false)" if required else "it is a second opinion"
    return _rule(rule, None, threshold, WARN, f"{rule} not measured ({reason}); a warning because {why}", criterion)


def _at_most(rule: str, value: float | None, threshold: float, what: str, reason: str, policy: AuditPolicy) -> RuleResult:
    criterion = f"fails when the {what} is above {threshold:.4g}"
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _unmeasured(rule, threshold, reason, criterion, policy)
    passed = value <= threshold + 1e-12
    verdict = "within" if passed else "above"
    return _rule(rule, float(value), threshold, PASS if passed else FAIL,
                 f"{what} {value:.4g} is {verdict} the limit {threshold:.4g}", criterion)


def _dcr_share_rule(dcr: dict[str, Any], policy: AuditPolicy) -> RuleResult:
    """The share of released rows closer to train than to holdout, held to the limit; the message adds how far chance
    alone moves the share at this size (`share_null_sd`, random membership swaps) and how unlikely it is without a
    leak, so a small book's reviewer can tell a share over the limit by a hair from a copying generator."""
    result = _at_most("dcr_share", dcr.get("share_closer_to_train"), policy.max_dcr_share,
                      "share of released rows closer to train than to holdout", "no distance figures", policy)
    spread, p_value = dcr.get("share_null_sd"), dcr.get("share_p_value")
    if result.value is not None and spread is not None and p_value is not None:
        result.message += (f" (chance alone moves it by {spread:.2g} at this size, one standard deviation when train and "
                           f"holdout rows swap at random; {p_value:.2g} is the chance of a share this high without a leak)")
    return result


def _leak_criterion(margin: float) -> str:
    return (
        "two-proportion test of the attack's success on training records against holdout records, risk = excess "
        f"success / holdout failure rate (one-sided {ONE_SIDED_CONFIDENCE:.0%} Newcombe bounds): fails when the lower "
        f"bound is above {margin:.4g}, passes when the upper bound is within it, otherwise warns (inconclusive at "
        "this size); not measured when even a complete leak could not show a risk above it"
    )


def _attack_rule(rule: str, what: str, counts: tuple[Any, Any, Any, Any], margin: float, policy: AuditPolicy,
                 *, required: bool) -> RuleResult:
    criterion = _leak_criterion(margin)
    if any(c is None for c in counts):
        return _unmeasured(rule, margin, "the attack did not run", criterion, policy, required=required)
    test = leak_test(*counts, margin)
    if test["outcome"] == "unmeasured":
        return _unmeasured(rule, margin, test["reason"], criterion, policy, required=required)
    figures = (
        f"{what}: risk {test['risk']:.3g} (one-sided {ONE_SIDED_CONFIDENCE:.0%} bounds {test['risk_low']:.3g} to "
        f"{test['risk_high']:.3g}; {test['member_rate']:.3g} of {test['members']} members against "
        f"{test['control_rate']:.3g} of {test['controls']} controls)"
    )
    detectable = test["detectable_risk"]
    power = (f"; this attack detects a risk of {detectable:.2g} or more with {DETECTION_POWER:.0%} power"
             if detectable is not None else "")
    if test["outcome"] == "fail":
        return _rule(rule, test["risk_low"], margin, FAIL,
                     f"{figures}: the lower bound is above the margin {margin:.4g}, evidence that the release gives "
                     "training records away", criterion)
    if test["outcome"] == "pass":
        return _rule(rule, test["risk_high"], margin, PASS,
                     f"{figures}: the upper bound is within the margin {margin:.4g}{power}", criterion)
    return _rule(rule, test["risk_high"], margin, WARN,
                 f"{figures}: inconclusive, neither above nor shown within the margin {margin:.4g} at this size; no "
                 f"evidence of a leak{power}", criterion)


def evaluate_policy(report: AuditReport, policy: AuditPolicy) -> list[RuleResult]:
    """Apply the tenant's policy to an audit report, one `RuleResult` per rule.

    Rules: exact-match rate, DCR share, MIA AUC (strongest attack); for each
    secret, CreditTwin's attribute-inference attack; anonymeter's
    singling-out, linkability and inference attacks when they ran; k and l
    when the policy sets them; and, under DP, that the empirical AUC interval
    does not lie above the DP bound. The attack rules are `leak_test`s (see
    `models.privacy.leak`). Each result carries its verdict (pass, warn or
    fail) and its criterion in words; a failed rule's message says which
    figure broke which limit.
    """
    inference_margin = policy.max_inference_risk if policy.max_inference_risk is not None else policy.max_anonymeter_risk
    dcr = report.dcr
    copies = _at_most("exact_match_rate", dcr.get("exact_copy_rate", dcr.get("exact_match_rate")),
                      policy.max_exact_match_rate,
                      "share of released rows identical to a train record unique in the tape, beyond the matches "
                      "coincidence explains (from the holdout's)", "no distance figures", policy)
    if copies.value is not None and "exact_copy_rate" in dcr:
        copies.message += (f" ({dcr['exact_matches']} matches against {dcr['coincidences_expected']:.3g} expected by "
                           f"coincidence, up to {dcr['coincidences_explained']:.0f} explained)")
    results = [
        copies,
        _dcr_share_rule(report.dcr, policy),
        _at_most("mia_auc", report.mia.get("auc"), policy.max_mia_auc,
                 f"membership-inference AUC ({report.mia.get('strongest', 'no')} attack)",
                 report.mia.get("skipped", "no membership-inference figures"), policy),
    ]
    inference = report.inference or {"skipped": "the audit report has no attribute-inference figures"}
    if "not_applicable" in inference:
        results.append(_rule("inference", None, inference_margin, WARN,
                             f"attribute inference not applicable: {inference['not_applicable']}",
                             _leak_criterion(inference_margin)))
    elif "skipped" in inference:
        results.append(_unmeasured("inference", inference_margin, inference["skipped"], _leak_criterion(inference_margin),
                                   policy))
    else:
        for secret, entry in inference["secrets"].items():
            counts = (entry["members_guessed"], entry["members_attacked"], entry["controls_guessed"],
                      entry["controls_attacked"])
            results.append(_attack_rule(f"inference[{secret}]", f"guessing '{secret}' from the nearest released row",
                                        counts, inference_margin, policy, required=True))
    anonymeter = report.anonymeter
    if "skipped" in anonymeter:
        results.append(_unmeasured("anonymeter", policy.max_anonymeter_risk, anonymeter["skipped"],
                                   _leak_criterion(policy.max_anonymeter_risk), policy, required=False))
    else:
        risks = [("singling_out", anonymeter.get("singling_out")), ("linkability", anonymeter.get("linkability"))]
        risks += [(f"inference[{secret}]", risk) for secret, risk in (anonymeter.get("inference") or {}).items()]
        for name, risk in risks:
            margin = inference_margin if name.startswith("inference") else policy.max_anonymeter_risk
            risk = risk or {}
            counts = (risk.get("members_succeeded"), risk.get("members_attacked"), risk.get("controls_succeeded"),
                      risk.get("controls_attacked"))
            results.append(_attack_rule(f"anonymeter_{name}", f"anonymeter {name}", counts, margin, policy,
                                        required=False))
    sensitive = report.anonymity.get("sensitive")
    for rule, required, achieved, what in (
        ("k_anonymity", policy.k, report.anonymity.get("k"), "smallest equivalence class over the quasi-identifiers"),
        ("l_diversity", policy.l, report.anonymity.get("l"), "fewest distinct sensitive values in a class"),
    ):
        if required is None:
            continue
        criterion = f"fails when the {what} is below {required}"
        if rule == "l_diversity" and sensitive is not None and not sensitive:
            # Without a sensitive attribute there is nothing for l to protect: an l above 1 asked for is not
            # a pass, not a failure either; l = 1 asks for nothing.
            not_applicable = LDiversityScope(int(required), ()).not_applicable
            results.append(_rule(rule, None, float(required), WARN if not_applicable else PASS,
                                 f"l-diversity {not_applicable or 'not required: privacy.l is 1'}", criterion))
            continue
        if achieved is None:
            results.append(_unmeasured(rule, float(required), "no quasi-identifier or sensitive column in the release",
                                       criterion, policy))
            continue
        passed = achieved >= required
        per_column = (report.anonymity.get("l_by_column") or {}) if rule == "l_diversity" else {}
        detail = f" ({', '.join(f'{c}: {v}' for c, v in per_column.items())})" if per_column else ""
        verdict = f"{'meeting' if passed else 'below'} the required {required}"
        results.append(_rule(rule, float(achieved), float(required), PASS if passed else FAIL,
                             f"{what} is {achieved}{detail}, {verdict}", criterion))
    if report.dp is not None and "empirical_within_bound" in report.dp:
        bound = report.dp["auc_bound"]
        low = report.mia["auc_ci"][0]
        passed = report.dp["empirical_within_bound"]
        results.append(_rule("dp_auc_bound", float(low), float(bound), PASS if passed else FAIL,
                             f"lower bound {low:.4g} of the empirical AUC is {'within' if passed else 'above'} the DP "
                             f"bound {bound:.4g} (epsilon={report.dp['epsilon']:.4g}, delta={report.dp['delta']:.3g})",
                             "fails when the lower 95% bound of the membership AUC is above the largest AUC the "
                             "spent (epsilon, delta) allows"))
    return results
