"""Monthly performance: states, histories and their fidelity (book and per segment), the LSTM cascade and the Markov baseline.

The public API below is imported from its module on first use (`models.lazy_api`).
"""

from models import lazy_api

_API = {
    "STATES": "states",
    "canonical_states": "states",
    "validate_histories": "histories",
    "compare_sequences": "histories",
    "transition_matrix": "histories",
    "LoanCascade": "cascade",
    "CascadeConfig": "cascade",
    "MarkovBaseline": "markov",
    "conditional_fidelity": "conditional",
}
__all__ = sorted(_API)
__getattr__ = lazy_api(__name__, _API)
