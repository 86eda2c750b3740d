"""The digital twin of a loan table: one engine protocol, the Gaussian copula, its segmented and DP variants.

The public API below is imported from its module on first use (`models.lazy_api`).
"""

from models import lazy_api

_API = {
    "TwinEngine": "protocol",
    "Conditions": "protocol",
    "make_engine": "engine",
    "load_engine": "engine",
    "GaussianCopulaTwin": "copula",
    "SegmentedCopulaTwin": "segmented",
    "DPGaussianCopula": "dp",
    "plan_for_table": "dp",
    "fit_dp_twin": "dp",
    "ContinuousMarginal": "marginals",
    "LevelMarginal": "marginals",
}
__all__ = sorted(_API)
__getattr__ = lazy_api(__name__, _API)
