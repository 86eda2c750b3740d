"""The one interface every twin engine implements.

An engine is a plain class in the manner of SDV's synthesizers: `fit(table,
schema)` learns a tenant's train split, `sample(n, seed, conditions)` draws a
synthetic table, `save(path)` writes JSON and NumPy files (never a pickle) and
the class method `load(path)` reads them back. `Conditions` types what `sample`
accepts: an exact share of positive targets and/or fixed column values.
`models.twin.engine` makes and loads engines by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypedDict, runtime_checkable

import polars as pl

from models.tape.schema import TableSchema


class Conditions(TypedDict, total=False):
    """What `TwinEngine.sample` can be asked to hold fixed.

    target_rate: the exact share of rows with a positive target (round(n * rate) rows).
    fixed: column -> value, for categorical, boolean or small-support numeric columns.
    """

    target_rate: float
    fixed: dict[str, Any]


@runtime_checkable
class TwinEngine(Protocol):
    """A fitted-or-not digital twin of a loan table."""

    def fit(self, table: pl.DataFrame, schema: TableSchema) -> TwinEngine: ...

    def sample(self, n: int, seed: int = 0, conditions: Conditions | None = None) -> pl.DataFrame: ...

    def save(self, path: Path) -> None: ...

    @classmethod
    def load(cls, path: Path) -> TwinEngine: ...
