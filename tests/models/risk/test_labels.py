"""Tests of models.risk.labels: default labels per horizon from performance histories."""

from __future__ import annotations

import polars as pl

from models.risk.labels import horizon_labels


def test_horizon_labels_from_histories():
    perf = pl.DataFrame(
        {
            "loan_id": ["A"] * 3 + ["B"] * 5 + ["C"] * 2 + ["D"] * 2 + ["E"] * 5,
            "period": [1, 2, 3, 1, 2, 3, 4, 5, 1, 2, 1, 2, 1, 2, 3, 4, 5],
            "status": ["current", "dpd30", "default", "current", "current", "current", "current", "current",
                       "current", "prepaid", "current", "dpd30", "current", "dpd30", "dpd60", "dpd90", "default"],
        }
    )

    three = dict(horizon_labels(perf, 3).iter_rows())
    twelve = dict(horizon_labels(perf, 12).iter_rows())
    basel = dict(horizon_labels(perf, 4, default_states=["dpd90", "default"]).iter_rows())

    # A defaults in month 3; B is current for 5 months; C prepaid in month 2; D is open after 2 months (censored);
    # E defaults in month 5.
    assert three == {"A": 1, "B": 0, "C": 0, "E": 0}
    assert twelve == {"A": 1, "C": 0, "E": 1}  # B and D are censored at 12 months
    assert basel == {"A": 1, "B": 0, "C": 0, "E": 1}
