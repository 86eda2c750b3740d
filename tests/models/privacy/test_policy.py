"""The tenant's policy applied to audit reports: verdicts, criteria and margins."""

from __future__ import annotations

import json

from models.privacy.policy import AuditPolicy, evaluate_policy
from tests.models.privacy.audit_books import attack_counts, audit_report, guessed_counts


def test_evaluate_policy_does_not_fail_a_clean_report_on_a_rare_flag():
    # run
    results = evaluate_policy(audit_report(), AuditPolicy(k=5, l=2, max_inference_risk=0.25))
    # assert: nothing fails; each rule states its verdict and its criterion
    assert all(r.passed for r in results)
    assert {r.rule for r in results} == {
        "exact_match_rate", "dcr_share", "mia_auc", "inference[default_flag]", "anonymeter_singling_out",
        "anonymeter_linkability", "anonymeter_inference[default_flag]", "k_anonymity", "l_diversity",
    }
    assert all(r.verdict in ("pass", "warn") and r.criterion for r in results)
    assert {r.rule: r.verdict for r in results}["anonymeter_linkability"] == "pass"


def test_evaluate_policy_lists_each_failed_rule_with_its_value_and_threshold():
    # setup
    report = audit_report(
        dcr={"exact_match_rate": 0.01, "share_closer_to_train": 0.7},
        mia={"auc": 0.66, "auc_ci": [0.62, 0.7], "strongest": "distance"},
        anonymeter={"singling_out": attack_counts(400, 40), "linkability": attack_counts(4, 4),
                    "inference": {"default_flag": attack_counts(2000, 1880)}},
        inference=guessed_counts(2000, 1880),
        anonymity={"k": 3, "l": 1, "sensitive": ["default_flag"]},
        dp={"auc_bound": 0.6, "epsilon": 0.5, "delta": 1e-6, "empirical_within_bound": False},
    )
    # run
    failed = {r.rule: r for r in evaluate_policy(report, AuditPolicy(k=5, l=2, max_inference_risk=0.25)) if not r.passed}
    # assert
    assert set(failed) == {
        "exact_match_rate", "dcr_share", "mia_auc", "inference[default_flag]", "anonymeter_singling_out",
        "anonymeter_inference[default_flag]", "k_anonymity", "l_diversity", "dp_auc_bound",
    }
    assert all(r.verdict == "fail" for r in failed.values())
    assert failed["dcr_share"].value == 0.7 and failed["dcr_share"].threshold == 0.55
    assert "above the limit" in failed["mia_auc"].message
    assert failed["inference[default_flag]"].value > 0.25 and "lower bound is above the margin 0.25" in (
        failed["inference[default_flag]"].message)
    assert "below the required 5" in failed["k_anonymity"].message
    json.dumps([r.to_dict() for r in failed.values()])


def test_unmeasured_rules_fail_only_when_required_and_never_pass():
    # setup: anonymeter did not run, no attribute-inference figures, no quasi-identifier
    report = audit_report(anonymeter={"skipped": "not measured: anonymeter attacks disabled"},
                     inference={"skipped": "attribute inference skipped"}, anonymity={"k": None, "l": None})
    # run
    strict = {r.rule: r for r in evaluate_policy(report, AuditPolicy(k=5))}
    lenient = {r.rule: r for r in evaluate_policy(report, AuditPolicy(k=5, require_measured=False))}
    # assert: a required rule (inference, k) fails under require_measured; anonymeter, a second opinion, warns
    assert not strict["inference"].passed and not strict["k_anonymity"].passed
    assert strict["anonymeter"].verdict == "warn" and strict["anonymeter"].passed
    assert lenient["inference"].verdict == "warn" and "not measured" in lenient["inference"].message
    assert lenient["k_anonymity"].verdict == "warn"


def test_l_without_a_sensitive_column_is_a_warning_but_a_declared_l_not_met_fails():
    # setup
    no_secret = audit_report(anonymity={"k": 5, "l": None, "sensitive": []},
                        inference={"not_applicable": "no default flag and no sensitive column"})
    unmet = audit_report(anonymity={"k": 5, "l": 1, "sensitive": ["default_flag"]})
    # run
    warned = {r.rule: r for r in evaluate_policy(no_secret, AuditPolicy(k=5, l=2))}
    failed = {r.rule: r for r in evaluate_policy(unmet, AuditPolicy(k=5, l=2))}
    # assert
    assert warned["l_diversity"].verdict == "warn" and "not applicable" in warned["l_diversity"].message
    assert warned["inference"].verdict == "warn" and "not applicable" in warned["inference"].message
    assert failed["l_diversity"].verdict == "fail" and "below the required 2" in failed["l_diversity"].message


def test_inference_risks_have_their_own_margin():
    # setup: a moderate excess on the default flag, as strong on singling out
    report = audit_report(anonymeter={"singling_out": attack_counts(700, 400), "linkability": attack_counts(4, 4),
                                 "inference": {"default_flag": attack_counts(1930, 1880)}},
                     inference=guessed_counts(1930, 1880))
    # run
    separate = {r.rule: r for r in evaluate_policy(report, AuditPolicy(max_inference_risk=0.5))}
    shared = {r.rule: r for r in evaluate_policy(report, AuditPolicy())}
    # assert: the inference margin applies to inference only; without it the shared 0.10 applies
    assert separate["inference[default_flag]"].passed and separate["inference[default_flag]"].threshold == 0.5
    assert not separate["anonymeter_singling_out"].passed
    assert not shared["inference[default_flag]"].passed and shared["inference[default_flag]"].threshold == 0.1
