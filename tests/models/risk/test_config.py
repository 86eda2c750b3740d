"""Tests of models.risk.config: the `risk:` section of tenant.yaml is strict."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from models.risk.config import RiskConfig


@pytest.mark.parametrize(
    "bands",
    [
        [{"name": "A", "max_pd": 0.5}, {"name": "B", "max_pd": 0.2}, {"name": "C", "max_pd": 1.0}],
        [{"name": "A", "max_pd": 0.5}, {"name": "B", "max_pd": 0.9}],
        [{"name": "A", "max_pd": 0.5}, {"name": "A", "max_pd": 1.0}],
    ],
)
def test_bad_bands_are_refused(bands):
    with pytest.raises(ValidationError):
        RiskConfig(bands=bands)


@pytest.mark.parametrize("bad", [["tape", "tape"], ["6 months"], ["0m"]])
def test_bad_horizons_are_refused(bad):
    with pytest.raises(ValidationError):
        RiskConfig(horizons=bad)


def test_risk_config_is_strict():
    with pytest.raises(ValidationError):
        RiskConfig(auc_flor=0.7)
    with pytest.raises(ValidationError):
        RiskConfig(default_states=["prepaid"])
    assert RiskConfig().bands[0].name == "LOW" and RiskConfig().auc_floor == 0.65
