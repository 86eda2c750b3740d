"""How faithful and useful a synthetic book is: fidelity metrics and the validation report.

The public API below is imported from its module on first use (`models.lazy_api`).
"""

from models import lazy_api

_API = {
    "compare_tables": "metrics",
    "ks_statistic": "metrics",
    "tv_distance": "metrics",
    "FidelityReport": "metrics",
    "ValidationThresholds": "validation",
    "ValidationReport": "validation",
    "build_validation_report": "validation",
    "expand_release": "release_frame",
}
__all__ = sorted(_API)
__getattr__ = lazy_api(__name__, _API)
