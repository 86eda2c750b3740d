"""The science of CreditTwin: plain Python, no Dagster import, one subpackage per domain.

- `models.tape`: reading uploads safely, the schema, the tenant contract, the tape's vocabulary, loan features, the demo book;
- `models.twin`: the engine protocol and registry, marginals, the Gaussian copula, the segmented and DP twins;
- `models.sequences`: performance states and histories, the LSTM cascade, the Markov baseline;
- `models.privacy`: k-anonymity and l-diversity, DP accounting, the privacy audit;
- `models.quality`: fidelity metrics and the validation report;
- `models.risk`: PD models, stress testing, drift;
- `models.reports`: the PDF builder, plots, the signed certificate.

`errors` (the typed errors every domain raises) and `files` (atomic writes, hashing, canonical JSON)
are shared by all. Everything here can be imported, tested and benchmarked on its own.
"""

from importlib import import_module
from typing import Any, Callable


def lazy_api(package: str, api: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that imports each public name of `package` from its module on first use.

    A subpackage's `__init__` names its public API this way rather than importing
    every module up front: loading `models.tape` stays cheap, and no import order
    between the domains can turn into a cycle.
    """

    def __getattr__(name: str) -> Any:
        if name in api:
            return getattr(import_module(f"{package}.{api[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
