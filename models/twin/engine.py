"""The registry that makes and loads twin engines by name (the interface they share is `models.twin.protocol`).

The registry lives here, apart from the engines, so that no engine module
imports another: `copula` is the base, `segmented`, `dp` and `copulas_engine`
build on it, and only this module knows all of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.errors import InvalidDataError
from models.twin.protocol import TwinEngine

if TYPE_CHECKING:
    from models.twin.copulas_engine import CopulasEngine
    from models.twin.segmented import SegmentedCopulaTwin

ENGINES = ("credittwin", "copulas")


def make_engine(name: str = "credittwin", **kwargs: Any) -> SegmentedCopulaTwin | CopulasEngine:
    """The engine a tenant's settings name: "credittwin" (default) or "copulas" (optional extra).

    "credittwin" is the segmented twin (`models.twin.segmented.SegmentedCopulaTwin`:
    one Gaussian copula per level of an automatically chosen category, a global
    one for small segments); it takes `GaussianCopulaTwin`'s keyword arguments
    plus `segment_by`. Keyword arguments go to the engine's constructor. Load a
    saved engine of any kind with `load_engine(path)`.
    """
    if name == "credittwin":
        from models.twin.segmented import SegmentedCopulaTwin

        return SegmentedCopulaTwin(**kwargs)
    if name == "copulas":
        from models.twin.copulas_engine import CopulasEngine

        return CopulasEngine(**kwargs)
    raise InvalidDataError(f"unknown copula engine {name!r}.", fix='set engine to "credittwin" or "copulas".')


def load_engine(path: Path) -> TwinEngine:
    """Load any saved engine, dispatching on the `format` of its model.json.

    A differentially private twin is saved as an ordinary twin plus its DP plan
    (`models.twin.dp.DP_FILE`); it is loaded as a `DPGaussianCopula`, never as the
    bare twin, so its privacy label cannot be lost on the way.

    Raises:
        InvalidDataError: a missing or unreadable model.json, or an unknown format.
    """
    from models.twin.copula import FORMAT, SEGMENTED_FORMAT, GaussianCopulaTwin
    from models.twin.dp import DP_FILE, DPGaussianCopula

    path = Path(path)
    if (path / DP_FILE).exists():
        return DPGaussianCopula.load(path)
    try:
        model = json.loads((path / "model.json").read_text())
    except (OSError, ValueError) as exc:
        raise InvalidDataError(f"cannot read the saved engine: {exc}", file=str(path),
                               fix="re-run fitted_copula to write it again.") from exc
    kind = model.get("format") if isinstance(model, dict) else None
    if kind == FORMAT:
        return GaussianCopulaTwin.load(path)
    if kind == SEGMENTED_FORMAT:
        from models.twin.segmented import SegmentedCopulaTwin

        return SegmentedCopulaTwin.load(path)
    from models.twin.copulas_engine import FORMAT as COPULAS_FORMAT

    if kind == COPULAS_FORMAT:
        from models.twin.copulas_engine import CopulasEngine

        return CopulasEngine.load(path)
    raise InvalidDataError(f"the saved engine has an unknown format {kind!r}.", file=str(path / "model.json"),
                           fix="re-run fitted_copula to write it again.")


__all__ = ["ENGINES", "make_engine", "load_engine"]
