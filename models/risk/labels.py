"""Default labels per horizon: the tape's own flag, or defaults within n months on book from performance histories.

``"tape"`` uses the tape's own default flag (the target declared in
tenant.yaml; rows with a missing flag are left out). ``"<n>m"`` (``"3m"``,
``"12m"``) labels a loan from its monthly performance history (canonical columns
``loan_id``, ``period``, ``status``, see `models.sequences.histories`): 1 when it reaches
a default state within its first n months on book (periods 1..n); 0 when it did
not and its outcome over those months is known: its history covers n months, or
it was prepaid or matured earlier (a closed loan cannot default later). Loans
whose history is shorter than n months and still open, and loans without a
history, are *excluded* from that horizon (censored), and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from models.errors import InvalidDataError
from models.risk.config import CLOSED_STATES, DEFAULT_STATE, horizon_months
from models.sequences.states import STATE_ALIASES
from models.tape.schema import TableSchema
from models.tape.vocabulary import target_indicator


@dataclass
class Labelled:
    """Rows of a loans frame with a 0/1 label for one horizon, and what was left out."""

    frame: pl.DataFrame
    y: np.ndarray
    excluded: int
    reason: str


def horizon_labels(
    performance: pl.DataFrame, months: int, *, default_states: tuple[str, ...] | list[str] = (DEFAULT_STATE,)
) -> pl.DataFrame:
    """Per loan, whether it defaulted within its first `months` months on book, where that is known.

    Args:
        performance: canonical monthly histories (loan_id, period from 1, status).
        months: the horizon in months.
        default_states: the states that count as a default (default: ``default``).

    Returns:
        A frame (loan_id: String, label: Int8) holding only loans whose outcome is known
        (see the module docstring): censored loans are absent.

    Raises:
        InvalidDataError: a required column is missing.
    """
    missing = [c for c in ("loan_id", "period", "status") if c not in performance.columns]
    if missing:
        raise InvalidDataError(
            f"the performance table lacks column(s) {missing} needed for the {months}-month default horizon.",
            column=missing[0],
            fix="map the history's columns under 'performance' in tenant.yaml (loan_id, period, status).",
        )
    status = pl.col("status").cast(pl.String).str.strip_chars().str.to_lowercase()
    status = status.replace(STATE_ALIASES)
    period = pl.col("period").cast(pl.Int64, strict=False)
    agg = (
        performance.lazy()
        .select(pl.col("loan_id").cast(pl.String), period.alias("period"), status.alias("status"))
        .group_by("loan_id")
        .agg(
            pl.col("period").filter(pl.col("status").is_in(list(default_states))).min().alias("first_default"),
            pl.col("period").filter(pl.col("status").is_in(list(CLOSED_STATES))).min().alias("first_closed"),
            pl.col("period").max().alias("last_period"),
        )
        .collect()
    )
    defaulted = pl.col("first_default").is_not_null() & (pl.col("first_default") <= months)
    known = defaulted | (pl.col("last_period") >= months) | (pl.col("first_closed").is_not_null() & (pl.col("first_closed") <= months))
    return (
        agg.filter(known)
        .select(pl.col("loan_id"), defaulted.cast(pl.Int8).alias("label"))
        .sort("loan_id")
    )


def label_rows(
    frame: pl.DataFrame,
    schema: TableSchema,
    horizon: str,
    performance: pl.DataFrame | None,
    *,
    what: str,
    default_states: tuple[str, ...] | list[str] = (DEFAULT_STATE,),
) -> Labelled | str:
    """Attach the `horizon` label to `frame`'s rows; a string says why it cannot be done."""
    months = horizon_months(horizon)
    if months is None:
        target = schema.target
        if not target:
            return "no target (default flag) is declared in tenant.yaml"
        if target not in frame.columns:
            return f"the {what} has no target column '{target}'"
        column = frame.get_column(target)
        known = column.is_not_null()
        kept = frame.filter(known)
        y = target_indicator(kept.get_column(target), schema.target_positive).to_numpy().astype(np.int8)
        return Labelled(kept, y, int(frame.height - kept.height), "rows with a missing default flag")
    if performance is None:
        return f"no performance histories for the {what}"
    id_column = schema.id_column
    if not id_column or id_column not in frame.columns:
        return f"the {what} has no loan id column to join its histories on"
    labels = horizon_labels(performance, months, default_states=default_states)
    key = "__credittwin_loan_key"
    joined = frame.with_columns(pl.col(id_column).cast(pl.String).alias(key)).join(
        labels.rename({"loan_id": key}), on=key, how="inner", maintain_order="left"
    )
    y = joined.get_column("label").to_numpy().astype(np.int8)
    kept = joined.drop(key, "label")
    return Labelled(kept, y, int(frame.height - kept.height), f"loans with less than {months} months of open history or no history")
