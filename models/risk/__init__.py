"""Default risk: PD models trained on the twin and tested on real loans, stress testing, drift.

The public API below is imported from its module on first use (`models.lazy_api`).
"""

from models import lazy_api

_API = {
    "RiskConfig": "config",
    "fit_pd_model": "training",
    "registration_gate": "evaluation",
    "load_pd_model": "model_set",
    "save_pd_model": "model_set",
    "StressConfig": "stress",
    "run_stress": "stress",
    "DriftConfig": "drift",
    "measure_drift": "drift",
}
__all__ = sorted(_API)
__getattr__ = lazy_api(__name__, _API)
