"""Orderings between a tape's amounts that hold in every loan, kept as the twin's inequality constraints.

A lender's amounts obey accounting identities the copula does not know: Lending
Club's ``funded_amnt`` never exceeds ``loan_amnt``, a loan's outstanding
``balance`` never exceeds its ``loan_amount``. Sampled independently through
their marginals and a correlation, the twin broke ``funded_amnt <= loan_amnt``
in a quarter of the released loans. `inferred_inequalities` finds such
orderings in the train split and returns them as the twin's own
``{"type": "inequality", "low": a, "high": b}`` constraints (modelled as b and
the gap b - a >= 0, so they hold in every sampled row).

Only what a risk analyst would call an identity is inferred: two money columns
(`models.tape.names.is_amount_name`, numeric, never null), neither an id, the
target nor a quasi-identifier, nor already in a declared constraint, whose
ordering holds in every one of at least `MIN_ROWS` loans, which move
together (Pearson correlation at least `MIN_CORRELATION`: two unrelated amounts
can be ordered by their scales alone) and whose low side is, in the median
loan, at least `MIN_SHARE` of the high side: ISLR's Income (in thousands) sits
below its Limit (in dollars) by scale, and a balance of a tenth of its limit,
rebuilt as the limit less a gap, would lose its exact zeros. Each column is the low side of at most
one inequality, the tightest (smallest mean gap), and no chain forms a cycle.

Reading the train split is a release outside any privacy accounting, so the
fitting asset never calls this under differential privacy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from models.tape.names import is_amount_name
from models.tape.schema import ColumnType, TableSchema

MIN_ROWS = 50
MIN_CORRELATION = 0.5
MIN_SHARE = 0.5
MAX_INFERRED = 12


def _candidates(table: pl.DataFrame, schema: TableSchema, declared: list[dict[str, Any]]) -> list[str]:
    """The money columns an identity may hold between."""
    taken = set()
    for constraint in declared:
        taken.update(str(constraint.get(key)) for key in ("low", "high", "column") if constraint.get(key) is not None)
        taken.update(str(c) for c in constraint.get("columns") or [])
    quasi = set(schema.with_role("quasi_identifier"))
    out = []
    for name in schema.of_type(ColumnType.NUMERIC, ColumnType.INTEGER):
        if name not in table.columns or name in taken or name in quasi or name in (schema.target, schema.id_column):
            continue
        series = table.get_column(name)
        if not is_amount_name(name) or not series.dtype.is_numeric() or series.null_count() or series.n_unique() < 2:
            continue
        out.append(name)
    return out


def _reaches(edges: dict[str, str], start: str, goal: str) -> bool:
    """Whether following low -> high edges from `start` arrives at `goal`."""
    node = start
    while node in edges:
        node = edges[node]
        if node == goal:
            return True
    return False


def inferred_inequalities(
    table: pl.DataFrame, schema: TableSchema, declared: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The ``low <= high`` orderings between `table`'s amounts that hold in every row, as inequality constraints.

    Args:
        table: the train split.
        schema: its schema (types and roles).
        declared: the tenant's own constraints; their columns are left to them.

    Returns:
        ``{"type": "inequality", "low": a, "high": b}`` constraints, at most
        `MAX_INFERRED`, in the table's column order of their low sides.
    """
    if table.height < MIN_ROWS:
        return []
    names = _candidates(table, schema, list(declared or []))
    if len(names) < 2:
        return []
    values = {name: table.get_column(name).cast(pl.Float64).to_numpy() for name in names}
    if any(not np.all(np.isfinite(v)) for v in values.values()):
        names = [n for n in names if np.all(np.isfinite(values[n]))]
    options: dict[str, list[tuple[float, int, str]]] = {}
    for i, low in enumerate(names):
        for j, high in enumerate(names):
            if low == high:
                continue
            gap = values[high] - values[low]
            if gap.min() < 0:
                continue
            if not gap.any() and j > i:
                continue  # equal in every row: one direction only (the later column below the earlier)
            with np.errstate(invalid="ignore", divide="ignore"):
                correlation = float(np.corrcoef(values[low], values[high])[0, 1])
                share = float(np.median(values[low][values[high] > 0] / values[high][values[high] > 0])) \
                    if (values[high] > 0).any() else 0.0
            if not np.isfinite(correlation) or correlation < MIN_CORRELATION or not share >= MIN_SHARE:
                continue
            options.setdefault(low, []).append((float(gap.mean()), j, high))
    edges: dict[str, str] = {}
    for low in names:
        for _, _, high in sorted(options.get(low, [])):
            if not _reaches(edges, high, low):
                edges[low] = high
                break
        if len(edges) >= MAX_INFERRED:
            break
    return [{"type": "inequality", "low": low, "high": high} for low, high in edges.items()]
