"""The attack rules' test: members' success against controls'."""

from __future__ import annotations

import pytest

from models.privacy.leak import leak_test


def test_leak_test_does_not_fail_an_honest_rare_flag_that_the_upper_bound_rule_refused():
    # setup: 2,000 attacks each on an honest release of a 3 % flag (as anonymeter counted on a 10,000-loan book)
    # run
    test = leak_test(1890, 2000, 1880, 2000, 0.25)
    # assert: the old rule (upper bound within 0.25) failed it; the test finds no evidence of a leak
    assert test["risk_high"] > 0.25
    assert test["outcome"] == "inconclusive" and test["risk_low"] < 0
    assert test["detectable_risk"] is not None and test["detectable_risk"] < 0.6


def test_leak_test_fails_a_complete_leak_of_a_rare_flag_at_300_attacks():
    # run: every member's flag guessed, 94 % of the controls'
    test = leak_test(300, 300, 282, 300, 0.25)
    # assert
    assert test["outcome"] == "fail" and test["risk"] == pytest.approx(1.0) and test["risk_low"] > 0.25


def test_leak_test_without_power_is_unmeasured_never_a_pass():
    # run: 20 attacks on a 3 % flag cannot tell a complete leak from none
    test = leak_test(20, 20, 19, 20, 0.25)
    # assert
    assert test["outcome"] == "unmeasured" and "even if every member were guessed" in test["reason"]
