"""The `risk:` section of tenant.yaml: risk bands, the registration gate's thresholds, horizons and model choices.

`models.tape.tenant` imports `RiskConfig` to parse every tenant.yaml, so this
module stays light: no model library (LightGBM, scikit-learn, polars) and
nothing else of `models.risk`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.errors import TenantConfigError
from models.sequences.states import STATES

CLOSED_STATES = ("prepaid", "matured")
DEFAULT_STATE = "default"
_HORIZON = re.compile(r"^(tape|([1-9][0-9]{0,2})m)$")


class _Strict(BaseModel):
    """Strict config base (as in models.tape.tenant, which imports `RiskConfig`; importing back would be circular)."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)


class BandSpec(_Strict):
    """A risk band: PDs up to and including `max_pd` (and above the previous band's) fall in it."""

    name: str = Field(min_length=1, max_length=40)
    max_pd: float = Field(gt=0.0, le=1.0)


def _default_bands() -> list[BandSpec]:
    return [BandSpec(name="LOW", max_pd=0.2), BandSpec(name="MEDIUM", max_pd=0.5), BandSpec(name="HIGH", max_pd=1.0)]


class RiskConfig(_Strict):
    """The `risk:` section of tenant.yaml; every key is optional.

    Attributes:
        bands: ordered risk bands; `max_pd` strictly increasing, the last 1.0.
        auc_floor: the TSTR AUC the model must be able to reach: registration is
            blocked when the upper end of the AUC's 95 % interval on the real
            holdout is below it (see `registration_gate`).
        min_trtr_ratio: the floor is the lower of `auc_floor` and this share of
            the AUC the same training on the real train split reaches (TRTR):
            a model is not blocked for a limit the real data sets.
        max_calibration_error: the calibration error tolerated: registration is
            blocked when the holdout shows the model's true ECE above it, i.e.
            when its ECE exceeds this tolerance plus the 95th percentile of the
            ECE that sampling noise alone gives on a holdout of this size (see
            `calibration_critical_ece`).
        features: the columns to model; default every usable column except
            ids, the target, free text and internal columns (dates become
            decimal years).
        horizons: ``"tape"`` (the tape's default flag) and ``"<n>m"`` horizons
            labelled from performance histories.
        default_states: the history states that count as a default for the
            ``"<n>m"`` horizons: ``["default"]`` (the tape's charged-off state),
            or ``["dpd90", "default"]`` for the 90-days-past-due definition.
        seed: seed of the slices, LightGBM and the scorecard.
        calibration: ``"auto"``, ``"isotonic"`` or ``"platt"``.
        model: ``"auto"`` (selection on the synthetic validation slice) or a
            fixed choice.
        selection_margin: the scorecard is chosen when its validation AUC is at
            most this much below LightGBM's.
        scorecard_base_score, scorecard_pdo, scorecard_base_odds: the points
            scale: `base_score` points at good:bad odds of `base_odds`, and
            `pdo` more points per doubling of the odds.
    """

    bands: list[BandSpec] = Field(default_factory=_default_bands, min_length=1, max_length=20)
    auc_floor: float = Field(default=0.65, ge=0.5, le=1.0)
    min_trtr_ratio: float = Field(default=0.9, gt=0.5, le=1.0)
    max_calibration_error: float = Field(default=0.05, gt=0.0, le=1.0)
    features: list[str] | None = None
    horizons: list[str] = Field(default_factory=lambda: ["tape", "3m", "12m"], min_length=1)
    default_states: list[str] = Field(default_factory=lambda: [DEFAULT_STATE], min_length=1)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    calibration: Literal["auto", "isotonic", "platt"] = "auto"
    model: Literal["auto", "lightgbm", "scorecard"] = "auto"
    selection_margin: float = Field(default=0.005, ge=0.0, le=0.5)
    scorecard_base_score: float = 600.0
    scorecard_pdo: float = Field(default=20.0, gt=0.0)
    scorecard_base_odds: float = Field(default=50.0, gt=0.0)

    @field_validator("horizons")
    @classmethod
    def _valid_horizons(cls, value: list[str]) -> list[str]:
        for h in value:
            if not _HORIZON.match(h):
                raise ValueError(f"horizon {h!r} must be 'tape' or '<months>m' such as '3m' or '12m'")
        if len(set(value)) != len(value):
            raise ValueError("horizons lists a horizon more than once")
        return value

    @field_validator("default_states")
    @classmethod
    def _known_states(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in STATES or v in CLOSED_STATES]
        if unknown:
            allowed = [st for st in STATES if st not in CLOSED_STATES]
            raise ValueError(f"default_states {unknown} must be among {allowed}")
        return value

    @field_validator("features")
    @classmethod
    def _unique_features(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("features must name at least one column, each once")
        return value

    @model_validator(mode="after")
    def _ordered_bands(self) -> "RiskConfig":
        edges = [b.max_pd for b in self.bands]
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError("bands must have strictly increasing max_pd")
        if edges[-1] != 1.0:
            raise ValueError("the last band must have max_pd 1.0 so that every PD has a band")
        names = [b.name for b in self.bands]
        if len(set(names)) != len(names):
            raise ValueError("band names must be unique")
        return self


def horizon_months(horizon: str) -> int | None:
    """The months of a ``"<n>m"`` horizon, None for ``"tape"``."""
    match = _HORIZON.match(horizon)
    if not match:
        raise TenantConfigError(f"unknown horizon {horizon!r}.", fix="use 'tape' or '<months>m' such as '12m'.")
    return int(match.group(2)) if match.group(2) else None
