"""Scoring a loan book with a trained model set, and serving it through MLflow without a pickle.

`score_book` turns a frame into PD, band and the three top reason codes,
vectorised and in chunks. Reason codes for LightGBM are its exact TreeSHAP
contributions (``pred_contrib=True``): the features that push the log-odds up
most; for the scorecard, the features whose bin scores the most points below
that feature's best bin. The band of a PD is the first band whose ``max_pd`` is
at least the PD.

MLflow logs the folder `models.risk.model_set.save_pd_model` writes, with this
module as its pyfunc "loader module": `_load_pyfunc` is the entry point, so
`mlflow models serve` serves the folder without any pickled object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models.risk.evaluation import assign_bands
from models.risk.model_set import PDModelSet, load_pd_model

OUTPUT_COLUMNS: tuple[str, ...] = ("pd", "band", "reason_1", "reason_2", "reason_3")
N_REASONS = 3
SCORE_CHUNK_ROWS = 250_000


def score_book(
    model: PDModelSet, frame: pl.DataFrame, *, reasons: bool = True, chunk_rows: int = SCORE_CHUNK_ROWS
) -> pl.DataFrame:
    """Score a loan book: PD, band and the top three reason codes per row, in row order.

    Args:
        model: a trained or loaded `PDModelSet`; its chosen model scores.
        frame: loans with the model's feature columns (extra columns are ignored).
        reasons: False skips the reason codes (columns are null): PD and band only, fastest.
        chunk_rows: rows per chunk, which bounds memory on large books.

    Returns:
        [id column when the pipeline has one and `frame` holds it] + pd, band, reason_1..reason_3.
        A reason is a feature name, null when fewer features push the PD up.

    Raises:
        InvalidDataError: a feature column is missing.
    """
    names = np.asarray(model.pipeline.names, dtype=object)
    band_names = pl.Series([b["name"] for b in model.bands], dtype=pl.String)
    feature_names = pl.Series(list(names), dtype=pl.String)
    pieces = []
    for start in range(0, max(frame.height, 1), max(1, chunk_rows)):
        part = frame.slice(start, chunk_rows)
        x = model.pipeline.matrix(part, tenant=model.tenant)
        pd_values = model.pd_from_matrix(x)
        band_idx = pl.Series(assign_bands(pd_values, model.bands), dtype=pl.UInt32)
        columns: dict[str, pl.Series] = {
            "pd": pl.Series(pd_values, dtype=pl.Float64),
            "band": band_names.gather(band_idx),
        }
        if reasons and x.shape[0]:
            scores = model.reason_scores(x)
            k = min(N_REASONS, scores.shape[1])
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if scores.shape[1] > k else np.tile(np.arange(k), (x.shape[0], 1))
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            top_scores = np.take_along_axis(top_scores, order, axis=1)
            for r in range(N_REASONS):
                if r < k:
                    idx = pl.Series(np.where(top_scores[:, r] > 0, top[:, r], -1), dtype=pl.Int64)
                    idx = pl.when(idx >= 0).then(idx).otherwise(None)
                    codes = pl.select(idx.cast(pl.UInt32)).to_series()
                    columns[f"reason_{r + 1}"] = feature_names.gather(codes)
                else:
                    columns[f"reason_{r + 1}"] = pl.Series([None] * x.shape[0], dtype=pl.String)
        else:
            for r in range(N_REASONS):
                columns[f"reason_{r + 1}"] = pl.Series([None] * x.shape[0], dtype=pl.String)
        out = pl.DataFrame(columns)
        id_column = model.pipeline.id_column
        if id_column and id_column in part.columns:
            out = out.insert_column(0, part.get_column(id_column))
        pieces.append(out)
    return pl.concat(pieces, how="vertical") if len(pieces) > 1 else pieces[0]


class PyfuncPD:
    """The object MLflow's pyfunc flavour calls: `predict(pandas frame) -> pandas frame`.

    Columns the request leaves out are read as missing values; the output holds
    pd, band and reason_1..reason_3 in request order.
    """

    def __init__(self, model: PDModelSet) -> None:
        self.model = model

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        import pandas as pd

        if isinstance(model_input, pl.DataFrame):
            frame = model_input
        else:
            frame = pl.from_pandas(pd.DataFrame(model_input))
        absent = [f.name for f in self.model.pipeline.features if f.name not in frame.columns]
        if absent:
            frame = frame.with_columns([pl.lit(None, dtype=pl.String).alias(name) for name in absent])
        reasons = True if not params else bool(params.get("reasons", True))
        scored = score_book(self.model, frame, reasons=reasons)
        return scored.select(list(OUTPUT_COLUMNS)).to_pandas()


def _load_pyfunc(data_path: str) -> PyfuncPD:
    """MLflow loader-module entry point: the model folder MLflow stored as the model's data."""
    return PyfuncPD(load_pd_model(Path(data_path)))
