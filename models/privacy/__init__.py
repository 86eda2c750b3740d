"""Privacy of a release: k-anonymity and l-diversity, differential-privacy accounting, the privacy audit.

The public API below is imported from its module on first use (`models.lazy_api`).
"""

from models import lazy_api

_API = {
    "anonymize": "anonymize",
    "AnonymizationPolicy": "anonymize",
    "verify_k_anonymity": "anonymize",
    "MechanismSpec": "accounting",
    "compose": "accounting",
    "release_delta": "accounting",
    "run_audit": "audit",
    "AuditConfig": "audit",
    "AuditReport": "audit",
    "evaluate_policy": "policy",
    "PrivacyBudgetError": "errors",
    "BudgetExceededError": "errors",
}
__all__ = sorted(_API)
__getattr__ = lazy_api(__name__, _API)
