"""The two PD models of one horizon (`PDModelSet`), and the folder of plain files that stores them.

`save_pd_model` writes a folder: ``model.json`` (pipeline, scorecard,
calibrators, metrics), ``lightgbm.txt`` (LightGBM's text model),
``calibration.npz`` (isotonic knots, saved without pickle) and
``points_table.json``; `load_pd_model` reads it back. The class and its storage
share a module because each needs the other: `PDModelSet.save` writes the
folder, and loading builds a `PDModelSet`. `calibration_plot_png` draws the
set's reliability diagram on the real holdout.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models.errors import NotFittedError
from models.files import dumps
from models.risk.calibration import Calibrator
from models.risk.evaluation import Evaluation, registration_gate
from models.risk.features import FeaturePipeline
from models.risk.gbm import LightGBMPD
from models.risk.scorecard import Scorecard

FORMAT_VERSION = 1
MODEL_FILE = "model.json"
LIGHTGBM_FILE = "lightgbm.txt"
CALIBRATION_FILE = "calibration.npz"
POINTS_FILE = "points_table.json"


@dataclass
class PDModelSet:
    """The two calibrated models of one horizon, the chosen one, and their evaluations.

    Attributes:
        horizon: ``"tape"`` or ``"<n>m"``.
        pipeline: the shared feature pipeline.
        lightgbm, scorecard: the fitted, calibrated models.
        chosen: ``"lightgbm"`` or ``"scorecard"``: the one `score_book` uses.
        bands: the risk bands as dicts (name, max_pd).
        validation: per model, figures on the synthetic validation slice (used for the choice).
        holdout: per model, TSTR figures on the real holdout (never used for a choice).
        data: row counts, default rates and exclusions.
        settings: the thresholds of the gate and the config used.
        reference: what the real data allows: the same training on the real
            train split, tested on the same holdout (``trtr_auc``), or why it
            was not measured (``reason``).
    """

    horizon: str
    pipeline: FeaturePipeline
    lightgbm: LightGBMPD
    scorecard: Scorecard
    chosen: str
    bands: list[dict[str, Any]]
    validation: dict[str, Evaluation]
    holdout: dict[str, Evaluation]
    data: dict[str, Any]
    settings: dict[str, Any]
    tenant: str | None = None
    reference: dict[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- scoring

    def raw(self, x: np.ndarray, model: str | None = None) -> np.ndarray:
        kind = model or self.chosen
        return self.lightgbm.raw(x) if kind == "lightgbm" else self.scorecard.raw(x)

    def pd_from_matrix(self, x: np.ndarray, model: str | None = None) -> np.ndarray:
        kind = model or self.chosen
        calibrator = self.lightgbm.calibrator if kind == "lightgbm" else self.scorecard.calibrator
        if calibrator is None:
            raise NotFittedError("the PD model is not calibrated.", tenant=self.tenant, fix="train it with train_pd_models.")
        return calibrator.apply(self.raw(x, kind))

    def predict_pd(self, frame: pl.DataFrame, model: str | None = None) -> np.ndarray:
        """Calibrated PDs of the rows of `frame` by `model` (default: the chosen one)."""
        return self.pd_from_matrix(self.pipeline.matrix(frame, tenant=self.tenant), model)

    def reason_scores(self, x: np.ndarray, model: str | None = None) -> np.ndarray:
        """Per row and feature, how much the feature pushes the PD up (positive = adverse)."""
        kind = model or self.chosen
        return self.lightgbm.contributions(x) if kind == "lightgbm" else self.scorecard.points_lost(x)

    # ---------------------------------------------------------------- gate and reporting

    @property
    def tstr_auc(self) -> float | None:
        return self.holdout[self.chosen].auc

    @property
    def calibration_error(self) -> float | None:
        return self.holdout[self.chosen].ece

    def gate(self) -> dict[str, Any]:
        """Whether registration may go ahead; see `registration_gate`."""
        return registration_gate(self.holdout[self.chosen], self.settings, self.reference, horizon=self.horizon, model=self.chosen)

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat numeric figures (for MLflow): ``<prefix><model>.<where>.<metric>`` plus chosen-model keys."""
        out: dict[str, float] = {}
        for where, evals in (("validation", self.validation), ("holdout", self.holdout)):
            for kind, ev in evals.items():
                for metric in ("auc", "gini", "ks", "brier", "ece"):
                    value = getattr(ev, metric)
                    if value is not None and math.isfinite(value):
                        out[f"{prefix}{kind}.{where}.{metric}"] = float(value)
        chosen = self.holdout[self.chosen]
        for metric in ("auc", "gini", "ks", "brier", "ece"):
            value = getattr(chosen, metric)
            if value is not None and math.isfinite(value):
                out[f"{prefix}tstr_{metric}"] = float(value)
        out[f"{prefix}train_rows"] = float(self.data["train_rows"])
        out[f"{prefix}holdout_rows"] = float(self.data["holdout_rows"])
        return out

    def params(self) -> dict[str, Any]:
        """Flat training parameters (for MLflow): horizon, choice, features, calibration, LightGBM and config."""
        out: dict[str, Any] = {
            "horizon": self.horizon,
            "chosen_model": self.chosen,
            "n_features": len(self.pipeline.features),
            "features": ",".join(self.pipeline.names),
            "lightgbm.best_iteration": self.lightgbm.best_iteration,
            "lightgbm.calibration": self.lightgbm.calibrator.method if self.lightgbm.calibrator else None,
            "scorecard.calibration": self.scorecard.calibrator.method if self.scorecard.calibrator else None,
        }
        out.update({f"lightgbm.{k}": v for k, v in self.lightgbm.params.items()})
        for key, value in self.settings.get("config", {}).items():
            out[f"risk.{key}"] = json.dumps(value) if isinstance(value, (list, dict)) else value
        return out

    def calibration_frame(self, model: str | None = None) -> pl.DataFrame:
        """The holdout calibration table by decile of `model` (default chosen) as a frame (empty if not evaluable)."""
        rows = self.holdout[model or self.chosen].calibration
        schema = {"decile": pl.Int64, "n": pl.Int64, "defaults": pl.Int64, "mean_pd": pl.Float64,
                  "observed_rate": pl.Float64, "min_pd": pl.Float64, "max_pd": pl.Float64}
        return pl.DataFrame(rows, schema=schema)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: choice, gate, data, and both models' validation and holdout figures."""
        return {
            "horizon": self.horizon,
            "chosen": self.chosen,
            "gate": self.gate(),
            "data": dict(self.data),
            "bands": list(self.bands),
            "features": self.pipeline.names,
            "left_out": dict(self.pipeline.dropped),
            "validation": {k: v.to_dict() for k, v in self.validation.items()},
            "holdout": {k: v.to_dict() for k, v in self.holdout.items()},
            "calibration": {
                "lightgbm": self.lightgbm.calibrator.to_dict() if self.lightgbm.calibrator else None,
                "scorecard": self.scorecard.calibrator.to_dict() if self.scorecard.calibrator else None,
            },
            "lightgbm": {"best_iteration": self.lightgbm.best_iteration, "params": dict(self.lightgbm.params)},
            "settings": dict(self.settings),
        }

    def input_example(self, frame: pl.DataFrame, rows: int = 5) -> pl.DataFrame:
        """A few rows of `frame` (pass synthetic rows, never real ones) as a serving client sends them."""
        return self.pipeline.serving_frame(frame.head(rows))

    # ---------------------------------------------------------------- storage

    def save(self, folder: Path) -> Path:
        """Write the model set into `folder`; see `save_pd_model`."""
        return save_pd_model(self, folder)


def _clean(value: Any) -> Any:
    """NaN and infinities become None so documents stay strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def save_pd_model(model: PDModelSet, folder: Path) -> Path:
    """Write `model` into `folder` (created if needed) and return it.

    Files: ``model.json`` (everything but the trees and knots), ``lightgbm.txt``,
    ``calibration.npz`` (isotonic knots; no pickle) and ``points_table.json``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    calibrators = {}
    for kind, cal in (("lightgbm", model.lightgbm.calibrator), ("scorecard", model.scorecard.calibrator)):
        if cal is None:
            raise NotFittedError("cannot save an uncalibrated PD model.", tenant=model.tenant, fix="train it with train_pd_models.")
        calibrators[kind] = {"method": cal.method, "a": cal.a, "b": cal.b}
        arrays[f"{kind}_x"] = np.asarray(cal.x, np.float64)
        arrays[f"{kind}_y"] = np.asarray(cal.y, np.float64)
    document = {
        "format_version": FORMAT_VERSION,
        "kind": "credittwin-pd",
        "tenant": model.tenant,
        "horizon": model.horizon,
        "chosen": model.chosen,
        "bands": model.bands,
        "pipeline": model.pipeline.to_dict(),
        "scorecard": model.scorecard.to_dict(),
        "calibrators": calibrators,
        "lightgbm": {"params": model.lightgbm.params, "best_iteration": model.lightgbm.best_iteration},
        "validation": {k: v.to_dict() for k, v in model.validation.items()},
        "holdout": {k: v.to_dict() for k, v in model.holdout.items()},
        "data": model.data,
        "settings": model.settings,
        "reference": model.reference,
    }
    (folder / MODEL_FILE).write_text(dumps(_clean(document)), encoding="utf-8")
    (folder / LIGHTGBM_FILE).write_text(model.lightgbm.booster.model_to_string(), encoding="utf-8")
    with open(folder / CALIBRATION_FILE, "wb") as handle:
        np.savez(handle, **arrays)
    (folder / POINTS_FILE).write_text(dumps(_clean(model.scorecard.points_table())), encoding="utf-8")
    return folder


def load_pd_model(folder: Path) -> PDModelSet:
    """Read a model set written by `save_pd_model`.

    Raises:
        NotFittedError: the folder holds no model, or one of another format version.
    """
    import lightgbm as lgb

    folder = Path(folder)
    path = folder / MODEL_FILE
    if not path.is_file():
        raise NotFittedError(f"no PD model in {folder} ({MODEL_FILE} is missing).", fix="materialize risk_model first.")
    document = json.loads(path.read_text(encoding="utf-8"))
    if document.get("format_version") != FORMAT_VERSION or document.get("kind") != "credittwin-pd":
        raise NotFittedError(
            f"{path} is not a CreditTwin PD model of format {FORMAT_VERSION}.", fix="re-materialize risk_model with this version."
        )
    with np.load(folder / CALIBRATION_FILE, allow_pickle=False) as npz:
        arrays = {k: np.asarray(npz[k]) for k in npz.files}
    booster = lgb.Booster(model_str=(folder / LIGHTGBM_FILE).read_text(encoding="utf-8"))
    cals = {}
    for kind, spec in document["calibrators"].items():
        cals[kind] = Calibrator(method=spec["method"], a=float(spec["a"]), b=float(spec["b"]), x=arrays[f"{kind}_x"], y=arrays[f"{kind}_y"])
    lgbm = LightGBMPD(booster=booster, calibrator=cals["lightgbm"], params=document["lightgbm"]["params"],
                      best_iteration=int(document["lightgbm"]["best_iteration"]))
    card = Scorecard.from_dict(document["scorecard"])
    card.calibrator = cals["scorecard"]
    return PDModelSet(
        horizon=document["horizon"],
        pipeline=FeaturePipeline.from_dict(document["pipeline"]),
        lightgbm=lgbm,
        scorecard=card,
        chosen=document["chosen"],
        bands=document["bands"],
        validation={k: Evaluation.from_dict(v) for k, v in document["validation"].items()},
        holdout={k: Evaluation.from_dict(v) for k, v in document["holdout"].items()},
        data=document["data"],
        settings=document["settings"],
        tenant=document.get("tenant"),
        reference=document.get("reference", {}),
    )


def calibration_plot_png(model: PDModelSet) -> bytes:
    """A reliability diagram (mean PD vs observed rate per decile) of both models on the real holdout, as PNG."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    top = 0.0
    for kind, marker in (("lightgbm", "o"), ("scorecard", "s")):
        ev = model.holdout.get(kind)
        if ev is None or not ev.calibration:
            continue
        xs = [r["mean_pd"] for r in ev.calibration]
        ys = [r["observed_rate"] for r in ev.calibration]
        top = max(top, *xs, *ys)
        label = f"{kind} (ECE {ev.ece:.3f})" + (" - chosen" if kind == model.chosen else "")
        ax.plot(xs, ys, marker=marker, label=label)
    top = min(1.0, max(top * 1.05, 0.05))
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mean predicted PD (decile)")
    ax.set_ylabel("observed default rate")
    ax.set_title(f"Calibration on the real holdout, horizon {model.horizon}")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
