"""Probability-of-default (PD) models trained on the synthetic twin and tested on the real holdout.

`train_pd_models` fits, for every default horizon, two calibrated models on the
anonymized synthetic portfolio (never on real rows) and evaluates both on the
real holdout: train-synthetic-test-real (TSTR).

* **LightGBM**, deterministic (fixed seed, ``deterministic=True``, row-wise
  histograms, a fixed thread count), shallow trees (depth 4) so that exact
  TreeSHAP contributions stay affordable for reason codes.
* **A scorecard baseline**: every feature is binned (quantile bins for numbers,
  merged until their default rates are monotone and no bin is tiny; categories
  as bins, rare ones pooled; missing values a bin of their own), encoded by its
  weight of evidence (WoE), and fed to a scikit-learn logistic regression. The
  points table (base score, points to double the odds) is exported as JSON.

Data use. The synthetic rows are split once, stratified and seeded, into a fit
slice (60 %), a calibration slice (20 %) and a validation slice (20 %). Both
models are fitted on the fit slice (LightGBM's early stopping uses a further 15 %
of it), calibrated on the calibration slice (isotonic regression when that slice
holds at least 5,000 rows and 250 of each class, otherwise Platt scaling;
configurable), and the *chosen* model is picked on the validation slice: the
scorecard when its validation AUC is within `selection_margin` of LightGBM's
(the simpler, explainable model wins near-ties), else LightGBM. The real holdout
is never used to fit, calibrate or select anything: it only reports AUC, Gini,
KS, Brier score, the expected calibration error (ECE, over PD deciles), the
calibration table by decile and the band distribution, for both models.

Horizons. ``"tape"`` uses the tape's own default flag (the target declared in
tenant.yaml; rows with a missing flag are left out). ``"<n>m"`` (``"3m"``,
``"12m"``) labels a loan from its monthly performance history (canonical columns
``loan_id``, ``period``, ``status``, see `models.sequences.histories`): 1 when it reaches
state ``default`` within its first n months on book (periods 1..n); 0 when it did
not and its outcome over those months is known: its history covers n months, or
it was prepaid or matured earlier (a closed loan cannot default later). Loans
whose history is shorter than n months and still open, and loans without a
history, are *excluded* from that horizon (censored), and counted. Synthetic
rows are labelled from the synthetic histories (the cascade's), holdout rows
from the real ones; a horizon without both is skipped with its reason.

Bad input. No target and no histories raise `NoTargetError` (a
`TenantConfigError`), so the asset can skip with that reason. A horizon whose
synthetic training data has one class only or too few rows raises
`InvalidDataError` (when it is the only horizon; otherwise it is skipped and its
reason kept). A holdout with one class only (or fewer than `MIN_HOLDOUT_ROWS`
rows) does *not* raise: training-side results are returned and the holdout
evaluation says ``evaluable: false`` with the reason; the registration gate then
fails, since the TSTR figures it needs do not exist.

Scoring. `score_book` turns a frame into PD, band and the three top reason codes,
vectorised and in chunks. Reason codes for LightGBM are its exact TreeSHAP
contributions (``pred_contrib=True``): the features that push the log-odds up
most; for the scorecard, the features whose bin scores the most points below
that feature's best bin. The band of a PD is the first band whose ``max_pd`` is
at least the PD.

Storage. `PDModelSet.save` writes a folder: ``model.json`` (pipeline, scorecard,
calibrators, metrics), ``lightgbm.txt`` (LightGBM's text model),
``calibration.npz`` (isotonic knots, saved without pickle) and
``points_table.json``. The same folder is what MLflow logs: `_load_pyfunc` is the
MLflow "loader module" entry point, so `mlflow models serve` serves the folder
without any pickled object.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from models.errors import CreditTwinError, InvalidDataError, NotFittedError, TenantConfigError
from models.tape.schema import SPLIT_COLUMN, ColumnType, TableSchema
from models.sequences.states import STATE_ALIASES, STATES
from models.tape.vocabulary import FALSE_TEXT, TRUE_TEXT



class _Strict(BaseModel):
    """Strict config base (as in models.tape.tenant, which imports `RiskConfig`; importing back would be circular)."""

    model_config = ConfigDict(extra="forbid", strict=False, frozen=True)

FORMAT_VERSION = 1
MODEL_FILE = "model.json"
LIGHTGBM_FILE = "lightgbm.txt"
CALIBRATION_FILE = "calibration.npz"
POINTS_FILE = "points_table.json"
MODEL_KINDS: tuple[str, ...] = ("lightgbm", "scorecard")
OUTPUT_COLUMNS: tuple[str, ...] = ("pd", "band", "reason_1", "reason_2", "reason_3")
N_REASONS = 3

MIN_TRAIN_ROWS = 200  # synthetic rows with a label, per horizon
MIN_CLASS_ROWS = 20  # rows of each class in the synthetic training data
MIN_HOLDOUT_ROWS = 20  # real holdout rows needed to report TSTR figures
MAX_LEVELS = 64  # kept categories per column; the rest are "other"
MIN_LEVEL_ROWS = 5  # a category seen fewer times in training is "other"
N_QUANTILE_BINS = 10  # initial scorecard bins per numeric feature
ISOTONIC_MIN_ROWS = 5_000  # calibration slice size from which "auto" picks isotonic
ISOTONIC_MIN_CLASS = 250
PD_CLIP = 1e-4  # calibrated PDs are kept in [PD_CLIP, 1 - PD_CLIP]
SCORE_CHUNK_ROWS = 250_000
OTHER_LABEL = "other"
MISSING_LABEL = "(missing)"
CLOSED_STATES = ("prepaid", "matured")
DEFAULT_STATE = "default"
_HORIZON = re.compile(r"^(tape|([1-9][0-9]{0,2})m)$")
Z_95 = 1.959963984540054  # two-sided 95 % normal quantile, for the AUC interval
NOISE_DRAWS = 200  # consistency-resampling draws behind `calibration_critical_ece`
NOISE_QUANTILE = 0.95



class NoTargetError(TenantConfigError):
    """No default definition: no target declared in tenant.yaml and no performance histories."""


# --------------------------------------------------------------------------- configuration


class BandSpec(_Strict):
    """A risk band: PDs up to and including `max_pd` (and above the previous band's) fall in it."""

    name: str = Field(min_length=1, max_length=40)
    max_pd: float = Field(gt=0.0, le=1.0)


def _default_bands() -> list[BandSpec]:
    return [BandSpec(name="LOW", max_pd=0.2), BandSpec(name="MEDIUM", max_pd=0.5), BandSpec(name="HIGH", max_pd=1.0)]


class RiskConfig(_Strict):
    """The `risk:` section of tenant.yaml; every key is optional.

    Attributes:
        bands: ordered risk bands; `max_pd` strictly increasing, the last 1.0.
        auc_floor: the TSTR AUC the model must be able to reach: registration is
            blocked when the upper end of the AUC's 95 % interval on the real
            holdout is below it (see `registration_gate`).
        min_trtr_ratio: the floor is the lower of `auc_floor` and this share of
            the AUC the same training on the real train split reaches (TRTR):
            a model is not blocked for a limit the real data sets.
        max_calibration_error: the calibration error tolerated: registration is
            blocked when the holdout shows the model's true ECE above it, i.e.
            when its ECE exceeds this tolerance plus the 95th percentile of the
            ECE that sampling noise alone gives on a holdout of this size (see
            `calibration_critical_ece`).
        features: the columns to model; default every usable column except
            ids, the target, free text and internal columns (dates become
            decimal years).
        horizons: ``"tape"`` (the tape's default flag) and ``"<n>m"`` horizons
            labelled from performance histories.
        default_states: the history states that count as a default for the
            ``"<n>m"`` horizons: ``["default"]`` (the tape's charged-off state),
            or ``["dpd90", "default"]`` for the 90-days-past-due definition.
        seed: seed of the slices, LightGBM and the scorecard.
        calibration: ``"auto"``, ``"isotonic"`` or ``"platt"``.
        model: ``"auto"`` (selection on the synthetic validation slice) or a
            fixed choice.
        selection_margin: the scorecard is chosen when its validation AUC is at
            most this much below LightGBM's.
        scorecard_base_score, scorecard_pdo, scorecard_base_odds: the points
            scale: `base_score` points at good:bad odds of `base_odds`, and
            `pdo` more points per doubling of the odds.
    """

    bands: list[BandSpec] = Field(default_factory=_default_bands, min_length=1, max_length=20)
    auc_floor: float = Field(default=0.65, ge=0.5, le=1.0)
    min_trtr_ratio: float = Field(default=0.9, gt=0.5, le=1.0)
    max_calibration_error: float = Field(default=0.05, gt=0.0, le=1.0)
    features: list[str] | None = None
    horizons: list[str] = Field(default_factory=lambda: ["tape", "3m", "12m"], min_length=1)
    default_states: list[str] = Field(default_factory=lambda: [DEFAULT_STATE], min_length=1)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    calibration: Literal["auto", "isotonic", "platt"] = "auto"
    model: Literal["auto", "lightgbm", "scorecard"] = "auto"
    selection_margin: float = Field(default=0.005, ge=0.0, le=0.5)
    scorecard_base_score: float = 600.0
    scorecard_pdo: float = Field(default=20.0, gt=0.0)
    scorecard_base_odds: float = Field(default=50.0, gt=0.0)

    @field_validator("horizons")
    @classmethod
    def _valid_horizons(cls, value: list[str]) -> list[str]:
        for h in value:
            if not _HORIZON.match(h):
                raise ValueError(f"horizon {h!r} must be 'tape' or '<months>m' such as '3m' or '12m'")
        if len(set(value)) != len(value):
            raise ValueError("horizons lists a horizon more than once")
        return value

    @field_validator("default_states")
    @classmethod
    def _known_states(cls, value: list[str]) -> list[str]:
        unknown = [v for v in value if v not in STATES or v in CLOSED_STATES]
        if unknown:
            allowed = [st for st in STATES if st not in CLOSED_STATES]
            raise ValueError(f"default_states {unknown} must be among {allowed}")
        return value

    @field_validator("features")
    @classmethod
    def _unique_features(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("features must name at least one column, each once")
        return value

    @model_validator(mode="after")
    def _ordered_bands(self) -> "RiskConfig":
        edges = [b.max_pd for b in self.bands]
        if any(b <= a for a, b in zip(edges, edges[1:])):
            raise ValueError("bands must have strictly increasing max_pd")
        if edges[-1] != 1.0:
            raise ValueError("the last band must have max_pd 1.0 so that every PD has a band")
        names = [b.name for b in self.bands]
        if len(set(names)) != len(names):
            raise ValueError("band names must be unique")
        return self


def horizon_months(horizon: str) -> int | None:
    """The months of a ``"<n>m"`` horizon, None for ``"tape"``."""
    match = _HORIZON.match(horizon)
    if not match:
        raise TenantConfigError(f"unknown horizon {horizon!r}.", fix="use 'tape' or '<months>m' such as '12m'.")
    return int(match.group(2)) if match.group(2) else None


# --------------------------------------------------------------------------- features


@dataclass
class FeatureSpec:
    """One model input: `kind` numeric (float, NaN missing) or categorical (level codes, `other` = len(levels))."""

    name: str
    kind: Literal["numeric", "categorical"]
    source: str  # the ColumnType the column had
    levels: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "source": self.source, "levels": list(self.levels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureSpec":
        return cls(name=data["name"], kind=data["kind"], source=data["source"], levels=list(data.get("levels") or []))


def _category_text(column: str, dtype: pl.DataType, source: str) -> pl.Expr:
    """A column as normalised category text (booleans read as 'true'/'false')."""
    col = pl.col(column)
    if source == ColumnType.BOOLEAN.value:
        if dtype == pl.Boolean:
            return col.cast(pl.String)
        if dtype.is_numeric():
            return pl.when(col.is_null()).then(None).otherwise((col.cast(pl.Float64) != 0).cast(pl.String))
        text = col.cast(pl.String).str.strip_chars().str.to_lowercase()
        return pl.when(text.is_in(list(TRUE_TEXT))).then(pl.lit("true")).when(text.is_in(list(FALSE_TEXT))).then(
            pl.lit("false")
        ).otherwise(text)
    if dtype == pl.Boolean:
        return col.cast(pl.String)
    if dtype.is_float():
        whole = col.is_finite() & (col == col.floor()) & (col.abs() < 2**53)
        return pl.when(whole).then(col.cast(pl.Int64, strict=False).cast(pl.String)).otherwise(col.cast(pl.String))
    if dtype.is_numeric():
        return col.cast(pl.String)
    if dtype.is_temporal():
        return col.cast(pl.String)
    return col.cast(pl.String).str.strip_chars()


def _numeric_value(column: str, dtype: pl.DataType, source: str) -> pl.Expr:
    """A column as Float64 with NaN for missing or non-finite values; dates as decimal years."""
    col = pl.col(column)
    if source == ColumnType.DATETIME.value:
        if dtype == pl.Date:
            days = col.cast(pl.Int32).cast(pl.Float64)
        elif isinstance(dtype, pl.Datetime):
            days = col.dt.date().cast(pl.Int32).cast(pl.Float64)
        elif dtype.is_numeric():
            days = col.cast(pl.Float64)  # already days since 1970 (the convention of released date ranges)
        else:
            days = col.cast(pl.String).str.strip_chars().str.to_datetime(strict=False).dt.date().cast(pl.Int32).cast(pl.Float64)
        value = days / 365.25 + 1970.0
    elif dtype == pl.Boolean or dtype.is_numeric():
        value = col.cast(pl.Float64)
    else:
        value = col.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    return pl.when(value.is_finite()).then(value).otherwise(float("nan")).fill_null(float("nan"))


def _schema_type(name: str, schema: TableSchema, dtype: pl.DataType) -> ColumnType:
    if name in schema:
        return schema[name].type
    if dtype == pl.Boolean:
        return ColumnType.BOOLEAN
    if dtype.is_temporal():
        return ColumnType.DATETIME
    if dtype.is_numeric():
        return ColumnType.NUMERIC
    return ColumnType.CATEGORICAL


@dataclass
class FeaturePipeline:
    """How raw columns become a numeric matrix; fitted once and shared by training, scoring and serving.

    Attributes:
        features: the model inputs in matrix column order.
        id_column: the loan id column, copied into `score_book` output when present.
        dropped: columns left out, with the reason (identifier, free text, constant, ...).
    """

    features: list[FeatureSpec]
    id_column: str | None = None
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, f in enumerate(self.features) if f.kind == "categorical"]

    @classmethod
    def fit(
        cls, frame: pl.DataFrame, schema: TableSchema, *, features: list[str] | None = None, tenant: str | None = None
    ) -> "FeaturePipeline":
        """Choose and type the feature columns of `frame` (the synthetic training rows).

        Args:
            frame: training rows (plain typed columns).
            schema: the tape's schema (types and roles).
            features: explicit feature columns (tenant.yaml `risk.features`); None picks
                every usable column.
            tenant: named in errors.

        Returns:
            The fitted pipeline.

        Raises:
            TenantConfigError: an explicit feature is missing, the target, an id or free text.
            InvalidDataError: no usable feature is left.
        """
        target = schema.target
        ids = set(schema.with_role("id")) | set(schema.of_type(ColumnType.IDENTIFIER))
        if schema.id_column:
            ids.add(schema.id_column)
        dropped: dict[str, str] = {}
        if features is None:
            candidates = []
            for name in frame.columns:
                if name == target:
                    continue
                if name == SPLIT_COLUMN or name.startswith("_"):
                    dropped[name] = "internal column"
                elif name in ids:
                    dropped[name] = "identifier"
                elif _schema_type(name, schema, frame.schema[name]) is ColumnType.TEXT:
                    dropped[name] = "free text"
                else:
                    candidates.append(name)
        else:
            for name in features:
                problem = None
                if name not in frame.columns:
                    problem = "is not a column of the synthetic portfolio"
                elif name == target:
                    problem = "is the target"
                elif name in ids:
                    problem = "is an identifier"
                elif _schema_type(name, schema, frame.schema[name]) is ColumnType.TEXT:
                    problem = "is free text"
                if problem:
                    raise TenantConfigError(
                        f"risk.features names '{name}', which {problem} and cannot be a model feature.",
                        tenant=tenant,
                        file="tenant.yaml",
                        column=name,
                        fix="list only numeric, categorical, boolean or date columns of the loans file under risk.features.",
                    )
            candidates = list(features)
        specs: list[FeatureSpec] = []
        for name in candidates:
            dtype = frame.schema[name]
            ctype = _schema_type(name, schema, dtype)
            series = frame.get_column(name)
            if ctype in (ColumnType.NUMERIC, ColumnType.INTEGER, ColumnType.DATETIME):
                values = frame.select(_numeric_value(name, dtype, ctype.value)).to_series().to_numpy()
                finite = values[~np.isnan(values)]
                if finite.size == 0:
                    dropped[name] = "all values missing"
                    continue
                if finite.min() == finite.max() and finite.size == values.size:
                    dropped[name] = "constant"
                    continue
                specs.append(FeatureSpec(name=name, kind="numeric", source=ctype.value))
            else:
                text = frame.select(_category_text(name, dtype, ctype.value).alias("v")).to_series()
                counts = text.drop_nulls().value_counts(name="level", sort=False)
                rows = sorted(counts.iter_rows(), key=lambda r: (-r[1], r[0]))
                levels = [str(level) for level, n in rows if n >= MIN_LEVEL_ROWS][:MAX_LEVELS]
                if not levels and series.null_count() == len(series):
                    dropped[name] = "all values missing"
                    continue
                if len(rows) <= 1 and series.null_count() == 0:
                    dropped[name] = "constant"
                    continue
                specs.append(FeatureSpec(name=name, kind="categorical", source=ctype.value, levels=levels))
        if not specs:
            raise InvalidDataError(
                f"no usable feature column is left for the PD model (left out: {dropped or 'none'}).",
                tenant=tenant,
                fix="add numeric or categorical columns to the loans file, or list them under risk.features in tenant.yaml.",
            )
        return cls(features=specs, id_column=schema.id_column, dropped=dropped)

    def _require(self, frame: pl.DataFrame, tenant: str | None) -> None:
        missing = [f.name for f in self.features if f.name not in frame.columns]
        if missing:
            raise InvalidDataError(
                f"the frame to score lacks the model's feature column(s) {missing[:10]}.",
                tenant=tenant,
                column=missing[0],
                fix="score a table with the same columns as the loans the model was trained on.",
            )

    def matrix(self, frame: pl.DataFrame, *, tenant: str | None = None) -> np.ndarray:
        """The (rows x features) float64 matrix: numbers (NaN missing) and category codes (NaN missing).

        Raises:
            InvalidDataError: a feature column is missing from `frame`.
        """
        self._require(frame, tenant)
        exprs = []
        for i, f in enumerate(self.features):
            dtype = frame.schema[f.name]
            if f.kind == "numeric":
                exprs.append(_numeric_value(f.name, dtype, f.source).alias(f"f{i}"))
            else:
                text = _category_text(f.name, dtype, f.source)
                code = text.replace_strict(
                    f.levels, [float(k) for k in range(len(f.levels))], default=float(len(f.levels)), return_dtype=pl.Float64
                )
                exprs.append(pl.when(text.is_null()).then(float("nan")).otherwise(code).alias(f"f{i}"))
        out = frame.select(exprs).to_numpy()
        return np.ascontiguousarray(out, dtype=np.float64)

    def serving_frame(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The feature columns as a serving client sends them: numbers as Float64, everything else as text."""
        exprs = []
        for f in self.features:
            dtype = frame.schema[f.name]
            if f.kind == "numeric" and f.source != ColumnType.DATETIME.value:
                exprs.append(_numeric_value(f.name, dtype, f.source).fill_nan(None).alias(f.name))
            elif f.source == ColumnType.DATETIME.value:
                exprs.append(pl.col(f.name).cast(pl.String).alias(f.name))
            else:
                exprs.append(_category_text(f.name, dtype, f.source).alias(f.name))
        return frame.select(exprs)

    def to_dict(self) -> dict[str, Any]:
        return {"features": [f.to_dict() for f in self.features], "id_column": self.id_column, "dropped": dict(self.dropped)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeaturePipeline":
        return cls(
            features=[FeatureSpec.from_dict(f) for f in data["features"]],
            id_column=data.get("id_column"),
            dropped=dict(data.get("dropped") or {}),
        )


# --------------------------------------------------------------------------- calibration


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass
class Calibrator:
    """A monotone map from a model's raw log-odds to a PD: Platt (`a`, `b`) or isotonic knots (`x`, `y`)."""

    method: Literal["platt", "isotonic"]
    a: float = 1.0
    b: float = 0.0
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @classmethod
    def fit(cls, raw: np.ndarray, y: np.ndarray, method: str) -> "Calibrator":
        """Fit on the calibration slice's raw log-odds `raw` and labels `y` (0/1)."""
        positives = int(y.sum())
        smaller = min(positives, y.size - positives)
        if method == "auto":
            method = "isotonic" if y.size >= ISOTONIC_MIN_ROWS and smaller >= ISOTONIC_MIN_CLASS else "platt"
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
            iso.fit(raw, y.astype(np.float64))
            return cls(method="isotonic", x=np.asarray(iso.X_thresholds_, np.float64), y=np.asarray(iso.y_thresholds_, np.float64))
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=1e6, max_iter=1000)
        lr.fit(raw.reshape(-1, 1), y)
        return cls(method="platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))

    def apply(self, raw: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            p = np.interp(raw, self.x, self.y)
        else:
            p = _sigmoid(self.a * raw + self.b)
        return np.clip(p, PD_CLIP, 1.0 - PD_CLIP)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "a": self.a, "b": self.b, "knots": int(self.x.size)}


# --------------------------------------------------------------------------- LightGBM


ROWS_PER_THREAD = 10_000  # LightGBM's OpenMP threads cost more than they give on small inputs


def lightgbm_threads(rows: int | None = None) -> int:
    """Threads for LightGBM: the OpenMP limit threadpoolctl reports, capped by the CPUs this process may use.

    With `rows`, at most one thread per `ROWS_PER_THREAD` rows: on small inputs
    (and on a busy machine) extra OpenMP threads spin more than they compute.
    The count depends only on the row count and the machine, so a rerun on the
    same machine reproduces the model; it is recorded in the model's params.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        from threadpoolctl import threadpool_info

        limits = [int(info["num_threads"]) for info in threadpool_info() if info.get("user_api") == "openmp"]
        if limits:
            cores = min(cores, min(limits))
    except Exception:  # threadpoolctl is advisory only
        pass
    if rows is not None:
        cores = min(cores, rows // ROWS_PER_THREAD + 1)
    return max(1, cores)


@dataclass
class LightGBMPD:
    """A LightGBM binary classifier on the pipeline's matrix, with its calibrator."""

    booster: Any  # lightgbm.Booster
    calibrator: Calibrator | None = None
    params: dict[str, Any] = field(default_factory=dict)
    best_iteration: int = 0

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, categorical: list[int], *, seed: int) -> "LightGBMPD":
        import lightgbm as lgb

        rng = np.random.default_rng(seed + 1)
        stop = _stratified_mask(y, 0.15, rng)
        min_leaf = int(max(20, y.size // 1000))
        params = {
            "objective": "binary",
            "learning_rate": 0.08,
            "num_leaves": 15,
            "max_depth": 4,
            "min_data_in_leaf": min_leaf,
            "feature_fraction": 0.9,
            "lambda_l2": 1.0,
            "max_bin": 255,
            "max_cat_to_onehot": 4,
            "cat_smooth": 10.0,
            "cat_l2": 10.0,
            "min_data_per_group": 20,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": lightgbm_threads(y.size),
            "verbosity": -1,
        }
        names = [f"f{i}" for i in range(x.shape[1])]
        train = lgb.Dataset(x[~stop], label=y[~stop], feature_name=names, categorical_feature=categorical, free_raw_data=True)
        valid = lgb.Dataset(x[stop], label=y[stop], reference=train)
        booster = lgb.train(
            params,
            train,
            num_boost_round=400,
            valid_sets=[valid],
            callbacks=[lgb.early_stopping(40, verbose=False)],
        )
        best = int(booster.best_iteration or booster.current_iteration())
        return cls(booster=booster, params=params, best_iteration=best)

    def raw(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(
            self.booster.predict(x, raw_score=True, num_iteration=self.best_iteration, num_threads=lightgbm_threads(x.shape[0] // 5)),
            dtype=np.float64,
        )

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Exact TreeSHAP contributions to the log-odds, (rows x features); the bias column is dropped."""
        contrib = self.booster.predict(x, pred_contrib=True, num_iteration=self.best_iteration, num_threads=lightgbm_threads(x.shape[0] * 10))
        return np.asarray(contrib, dtype=np.float64)[:, : x.shape[1]]


# --------------------------------------------------------------------------- scorecard


@dataclass
class FeatureBins:
    """The scorecard bins of one feature: value -> bin, each bin's WoE and points; the last bin is 'missing'."""

    name: str
    kind: Literal["numeric", "categorical"]
    edges: list[float]  # numeric: cut points; bin i holds [edges[i-1], edges[i])
    code_bins: list[int]  # categorical: bin of each level code (levels..., other)
    labels: list[str]
    woe: list[float]
    counts: list[int]
    events: list[int]
    points: list[float] = field(default_factory=list)

    def bin_index(self, column: np.ndarray) -> np.ndarray:
        missing_bin = len(self.labels) - 1
        missing = np.isnan(column)
        if self.kind == "numeric":
            idx = np.searchsorted(np.asarray(self.edges, np.float64), np.where(missing, 0.0, column), side="right")
        else:
            codes = np.where(missing, 0, column).astype(np.int64)
            table = np.asarray(self.code_bins, np.int64)
            idx = table[np.clip(codes, 0, table.size - 1)]
        return np.where(missing, missing_bin, idx)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "edges": list(self.edges),
            "code_bins": list(self.code_bins),
            "labels": list(self.labels),
            "woe": list(self.woe),
            "counts": list(self.counts),
            "events": list(self.events),
            "points": list(self.points),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FeatureBins":
        return cls(**{k: data[k] for k in ("name", "kind", "edges", "code_bins", "labels", "woe", "counts", "events", "points")})


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _numeric_bins(values: np.ndarray, y: np.ndarray, min_rows: int) -> list[float]:
    """Quantile cut points, merged so every bin holds `min_rows` rows and the default rate is monotone."""
    present = ~np.isnan(values)
    v, t = values[present], y[present]
    if v.size == 0:
        return []
    qs = np.quantile(v, np.linspace(0, 1, N_QUANTILE_BINS + 1)[1:-1])
    edges = [float(e) for e in np.unique(qs) if e > v.min()]

    def stats(cuts: list[float]) -> tuple[np.ndarray, np.ndarray]:
        idx = np.searchsorted(np.asarray(cuts, np.float64), v, side="right")
        n = np.bincount(idx, minlength=len(cuts) + 1)
        e = np.bincount(idx, weights=t, minlength=len(cuts) + 1)
        return n, e

    # Tiny bins first: merge each into its smaller neighbour.
    while edges:
        n, _ = stats(edges)
        small = np.flatnonzero(n < min_rows)
        if small.size == 0:
            break
        i = int(small[0])
        if i == 0:
            edges.pop(0)
        elif i == len(n) - 1:
            edges.pop(-1)
        else:
            edges.pop(i - 1 if n[i - 1] <= n[i + 1] else i)
    # Then pool adjacent violators of the overall direction of the default rate.
    while edges:
        n, e = stats(edges)
        rate = e / np.maximum(n, 1)
        # The overall direction: the sign of the row-weighted covariance of bin position and default rate.
        position = np.arange(rate.size, dtype=np.float64)
        weights = n / max(n.sum(), 1)
        covariance = np.sum(weights * (position - np.sum(weights * position)) * (rate - np.sum(weights * rate)))
        direction = 1.0 if covariance >= 0 else -1.0
        steps = np.diff(rate) * direction
        bad = np.flatnonzero(steps < 0)
        if bad.size == 0:
            break
        edges.pop(int(bad[0]))
    return edges


@dataclass
class Scorecard:
    """WoE-binned logistic regression with a points table."""

    bins: list[FeatureBins]
    coef: list[float]
    intercept: float
    base_score: float
    pdo: float
    base_odds: float
    calibrator: Calibrator | None = None

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, pipeline: FeaturePipeline, config: RiskConfig) -> "Scorecard":
        from sklearn.linear_model import LogisticRegression

        n = y.size
        min_rows = max(10, int(0.02 * n))
        goods_total, bads_total = float(n - y.sum()), float(y.sum())
        bins: list[FeatureBins] = []
        for j, spec in enumerate(pipeline.features):
            column = x[:, j]
            if spec.kind == "numeric":
                edges = _numeric_bins(column, y, min_rows)
                bounds = [-math.inf, *edges, math.inf]
                labels = []
                for lo, hi in zip(bounds, bounds[1:]):
                    if lo == -math.inf and hi == math.inf:
                        labels.append("any value")
                    elif lo == -math.inf:
                        labels.append(f"< {_fmt(hi)}")
                    elif hi == math.inf:
                        labels.append(f">= {_fmt(lo)}")
                    else:
                        labels.append(f"[{_fmt(lo)}, {_fmt(hi)})")
                fb = FeatureBins(spec.name, "numeric", edges, [], labels + [MISSING_LABEL], [], [], [])
            else:
                n_codes = len(spec.levels) + 1
                present = ~np.isnan(column)
                counts = np.bincount(column[present].astype(np.int64), minlength=n_codes)
                code_bins, labels, rare = [], [], []
                for code in range(n_codes):
                    if code < len(spec.levels) and counts[code] >= min_rows:
                        code_bins.append(len(labels))
                        labels.append(spec.levels[code])
                    else:
                        code_bins.append(-1)
                        rare.append(spec.levels[code] if code < len(spec.levels) else OTHER_LABEL)
                rare_bin = len(labels)
                code_bins = [rare_bin if b < 0 else b for b in code_bins]
                labels.append(OTHER_LABEL if rare == [OTHER_LABEL] else "|".join(rare[:8]) + ("|..." if len(rare) > 8 else ""))
                fb = FeatureBins(spec.name, "categorical", [], code_bins, labels + [MISSING_LABEL], [], [], [])
            idx = fb.bin_index(column)
            k = len(fb.labels)
            count = np.bincount(idx, minlength=k)
            events = np.bincount(idx, weights=y, minlength=k)
            goods = count - events
            woe = np.log(((goods + 0.5) / (goods_total + 0.5 * k)) / ((events + 0.5) / (bads_total + 0.5 * k)))
            woe[count == 0] = 0.0
            fb.woe = [float(w) for w in woe]
            fb.counts = [int(c) for c in count]
            fb.events = [int(e) for e in events]
            bins.append(fb)
        card = cls(
            bins=bins,
            coef=[],
            intercept=0.0,
            base_score=config.scorecard_base_score,
            pdo=config.scorecard_pdo,
            base_odds=config.scorecard_base_odds,
        )
        lr = LogisticRegression(C=1.0, max_iter=2000)
        lr.fit(card.woe_matrix(x), y)
        card.coef = [float(c) for c in lr.coef_[0]]
        card.intercept = float(lr.intercept_[0])
        card._set_points()
        return card

    def woe_matrix(self, x: np.ndarray) -> np.ndarray:
        out = np.empty_like(x, dtype=np.float64)
        for j, fb in enumerate(self.bins):
            out[:, j] = np.asarray(fb.woe, np.float64)[fb.bin_index(x[:, j])]
        return out

    def _set_points(self) -> None:
        factor = self.pdo / math.log(2.0)
        offset = self.base_score - factor * math.log(self.base_odds)
        p = len(self.bins)
        for fb, beta in zip(self.bins, self.coef):
            fb.points = [float(-(beta * w + self.intercept / p) * factor + offset / p) for w in fb.woe]

    def raw(self, x: np.ndarray) -> np.ndarray:
        return self.woe_matrix(x) @ np.asarray(self.coef, np.float64) + self.intercept

    def points_lost(self, x: np.ndarray) -> np.ndarray:
        """Per row and feature: the points the row's bin scores below that feature's best bin."""
        out = np.empty_like(x, dtype=np.float64)
        for j, fb in enumerate(self.bins):
            points = np.asarray(fb.points, np.float64)
            out[:, j] = points.max() - points[fb.bin_index(x[:, j])]
        return out

    def points_table(self) -> dict[str, Any]:
        """The exported scorecard: scale and, per feature, bins with WoE, counts, events and points."""
        rows = []
        for fb, beta in zip(self.bins, self.coef):
            goods = np.asarray(fb.counts, np.float64) - np.asarray(fb.events, np.float64)
            bads = np.asarray(fb.events, np.float64)
            g = goods / max(goods.sum(), 1.0)
            b = bads / max(bads.sum(), 1.0)
            iv = float(np.sum((g - b) * np.asarray(fb.woe)))
            rows.append(
                {
                    "feature": fb.name,
                    "coefficient": beta,
                    "information_value": iv,
                    "bins": [
                        {"bin": label, "rows": c, "defaults": e, "woe": w, "points": pt}
                        for label, c, e, w, pt in zip(fb.labels, fb.counts, fb.events, fb.woe, fb.points)
                    ],
                }
            )
        return {
            "base_score": self.base_score,
            "pdo": self.pdo,
            "base_odds": self.base_odds,
            "intercept": self.intercept,
            "score": "sum of the points of each feature's bin; higher means lower PD",
            "features": rows,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "bins": [fb.to_dict() for fb in self.bins],
            "coef": list(self.coef),
            "intercept": self.intercept,
            "base_score": self.base_score,
            "pdo": self.pdo,
            "base_odds": self.base_odds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scorecard":
        return cls(
            bins=[FeatureBins.from_dict(b) for b in data["bins"]],
            coef=[float(c) for c in data["coef"]],
            intercept=float(data["intercept"]),
            base_score=float(data["base_score"]),
            pdo=float(data["pdo"]),
            base_odds=float(data["base_odds"]),
        )


# --------------------------------------------------------------------------- metrics


def auc_score(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn's; ties count half), NaN when `y` holds one class only."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, p))


def ks_statistic(y: np.ndarray, p: np.ndarray) -> float:
    """Kolmogorov-Smirnov: the largest gap between the PD distributions of defaulters and others
    (the largest |TPR - FPR| over scikit-learn's ROC points, one per distinct PD), NaN with one class only."""
    from sklearn.metrics import roc_curve

    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    return float(np.max(np.abs(tpr - fpr)))


def calibration_table(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> list[dict[str, Any]]:
    """Rows sorted by PD cut into `n_bins` equal-count bins: n, mean PD, observed default rate, PD range."""
    n = p.size
    if n == 0:
        return []
    order = np.argsort(p, kind="stable")
    decile = np.empty(n, dtype=np.int64)
    decile[order] = (np.arange(n) * n_bins) // n
    counts = np.bincount(decile, minlength=n_bins)
    sums = np.bincount(decile, weights=p, minlength=n_bins)
    events = np.bincount(decile, weights=y.astype(np.float64), minlength=n_bins)
    rows = []
    for d in range(n_bins):
        if counts[d] == 0:
            continue
        in_bin = p[decile == d]
        rows.append(
            {
                "decile": d + 1,
                "n": int(counts[d]),
                "defaults": int(events[d]),
                "mean_pd": float(sums[d] / counts[d]),
                "observed_rate": float(events[d] / counts[d]),
                "min_pd": float(in_bin.min()),
                "max_pd": float(in_bin.max()),
            }
        )
    return rows


def expected_calibration_error(table: list[dict[str, Any]]) -> float:
    """ECE: the row-weighted mean |mean PD - observed rate| over the calibration table's bins."""
    total = sum(r["n"] for r in table)
    if total == 0:
        return float("nan")
    return float(sum(r["n"] * abs(r["mean_pd"] - r["observed_rate"]) for r in table) / total)


def auc_interval(y: np.ndarray, p: np.ndarray, z: float = Z_95) -> tuple[float, float, float]:
    """The AUC with its two-sided confidence interval by DeLong's variance: ``(auc, low, high)``.

    DeLong et al. (1988): each defaulter's and each non-defaulter's share of
    the pairs it wins (its placement value, from mid-ranks, so O(n log n)) has
    a variance; the AUC's is their sum over the class sizes. The interval is
    clipped to [0, 1]; NaNs with one class only.
    """
    from scipy.stats import rankdata

    y = np.asarray(y, dtype=bool)
    p = np.asarray(p, dtype=np.float64)
    pos, neg = p[y], p[~y]
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        return float("nan"), float("nan"), float("nan")
    combined = rankdata(np.concatenate([pos, neg]))
    v10 = (combined[:m] - rankdata(pos)) / n  # per defaulter: the share of non-defaulters it outranks
    v01 = 1.0 - (combined[m:] - rankdata(neg)) / m  # per non-defaulter: the share of defaulters above it
    auc = float((combined[:m].sum() - m * (m + 1) / 2) / (m * n))  # Mann-Whitney: the mean of v10, summed exactly
    variance = (v10.var(ddof=1) / m if m > 1 else 0.0) + (v01.var(ddof=1) / n if n > 1 else 0.0)
    half = z * math.sqrt(max(variance, 0.0))
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def calibration_critical_ece(
    y: np.ndarray, p: np.ndarray, tolerance: float, *, n_bins: int = 10, draws: int = NOISE_DRAWS, seed: int = 0
) -> float:
    """The decile ECE above which a holdout of this size shows a calibration error beyond `tolerance`.

    A one-sided test of "the model's true calibration error exceeds
    `tolerance`", sized to the holdout. By the triangle inequality a decile's
    observed gap is at most its true gap plus its sampling noise, so a model
    whose true decile ECE is within `tolerance` shows an ECE of at most
    `tolerance` plus the ECE of sampling noise alone. The critical value is
    `tolerance` plus the 95th percentile of that noise, simulated by drawing
    outcomes at the model's own PDs (consistency resampling, Broecker and
    Smith 2007). On 900 loans at a 30 % default rate the noise alone reaches
    about 0.05; as the holdout grows the critical value falls to `tolerance`.
    (Simulating a model off by exactly `tolerance` is not the least favourable
    case: where PDs near 0 clip the offset it is off by less, and its ECE fell
    below the tolerance itself on rare-flag books.)
    """
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    n = p.size
    if n == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    decile = np.empty(n, dtype=np.int64)
    decile[order] = (np.arange(n) * n_bins) // n
    expected = np.bincount(decile, weights=p, minlength=n_bins)
    rng = np.random.default_rng(seed)
    eces = np.empty(draws)
    for i in range(draws):
        events = np.bincount(decile, weights=(rng.random(n) < p).astype(np.float64), minlength=n_bins)
        eces[i] = np.abs(expected - events).sum() / n
    return float(tolerance + np.quantile(eces, NOISE_QUANTILE))


def assign_bands(p: np.ndarray, bands: list[BandSpec] | list[dict[str, Any]]) -> np.ndarray:
    """Band index of each PD: the first band whose max_pd is at least the PD."""
    edges = np.asarray([b.max_pd if isinstance(b, BandSpec) else b["max_pd"] for b in bands], np.float64)
    return np.minimum(np.searchsorted(edges, p, side="left"), edges.size - 1)


def band_distribution(p: np.ndarray, bands: list[dict[str, Any]], y: np.ndarray | None = None) -> list[dict[str, Any]]:
    """Rows, share and mean PD per band (and the observed default rate when labels `y` are given)."""
    idx = assign_bands(p, bands)
    rows = []
    for k, band in enumerate(bands):
        mask = idx == k
        n = int(mask.sum())
        row = {"band": band["name"], "max_pd": band["max_pd"], "n": n, "share": n / max(p.size, 1)}
        row["mean_pd"] = float(p[mask].mean()) if n else None
        if y is not None:
            row["observed_rate"] = float(y[mask].mean()) if n else None
        rows.append(row)
    return rows


@dataclass
class Evaluation:
    """How one model scores on one labelled set; `evaluable` False (with `reason`) when figures cannot exist."""

    evaluable: bool
    n: int
    defaults: int
    reason: str | None = None
    auc: float | None = None
    gini: float | None = None
    ks: float | None = None
    brier: float | None = None
    ece: float | None = None
    calibration: list[dict[str, Any]] = field(default_factory=list)
    bands: list[dict[str, Any]] = field(default_factory=list)
    auc_low: float | None = None
    auc_high: float | None = None
    ece_tolerance: float | None = None
    ece_critical: float | None = None

    @classmethod
    def of(
        cls, y: np.ndarray, p: np.ndarray, bands: list[dict[str, Any]], *, what: str,
        ece_tolerance: float | None = None, seed: int = 0,
    ) -> "Evaluation":
        """Figures of PDs `p` against labels `y`: AUC with its 95 % interval, ECE, and (with `ece_tolerance`)
        the ECE's critical value on this many rows (`calibration_critical_ece`)."""
        n, d = int(y.size), int(y.sum())
        if n < MIN_HOLDOUT_ROWS:
            return cls(False, n, d, reason=f"{what} has {n} labelled rows (at least {MIN_HOLDOUT_ROWS} needed)", bands=band_distribution(p, bands, y))
        if d == 0 or d == n:
            only = "defaults" if d == n else "non-defaults"
            return cls(False, n, d, reason=f"{what} holds {only} only: AUC, Gini and KS are undefined", bands=band_distribution(p, bands, y))
        auc, low, high = auc_interval(y, p)
        table = calibration_table(y, p)
        return cls(
            True,
            n,
            d,
            auc=auc,
            auc_low=low,
            auc_high=high,
            ece_tolerance=ece_tolerance,
            ece_critical=None if ece_tolerance is None else calibration_critical_ece(y, p, ece_tolerance, seed=seed),
            gini=2.0 * auc - 1.0,
            ks=ks_statistic(y, p),
            brier=float(np.mean((p - y) ** 2)),
            ece=expected_calibration_error(table),
            calibration=table,
            bands=band_distribution(p, bands, y),
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Evaluation":
        return cls(**data)


# --------------------------------------------------------------------------- the model set


def _stratified_mask(y: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask selecting `share` of each class, seeded."""
    mask = np.zeros(y.size, dtype=bool)
    for cls_value in (0, 1):
        rows = np.flatnonzero(y == cls_value)
        rows = rows[rng.permutation(rows.size)]
        mask[rows[: int(round(share * rows.size))]] = True
    return mask


def _slices(y: np.ndarray, seed: int) -> np.ndarray:
    """0 = fit (60 %), 1 = calibration (20 %), 2 = validation (20 %), stratified by class and seeded."""
    rng = np.random.default_rng(seed)
    out = np.zeros(y.size, dtype=np.int8)
    for cls_value in (0, 1):
        rows = np.flatnonzero(y == cls_value)
        rows = rows[rng.permutation(rows.size)]
        n_cal = int(round(0.2 * rows.size))
        out[rows[:n_cal]] = 1
        out[rows[n_cal : 2 * n_cal]] = 2
    return out


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


def registration_gate(
    ev: Evaluation, settings: dict[str, Any], reference: dict[str, Any] | None, *, horizon: str, model: str
) -> dict[str, Any]:
    """Whether a model may be registered, judged on its real-holdout evaluation `ev` with the noise it carries.

    Three rules, each stated in the result's ``rules``:

    * discrimination: the lower end of the TSTR AUC's 95 % interval (DeLong)
      is above 0.5; a model no better than chance (labels shuffled, or no
      signal kept by the twin) fails however small the holdout;
    * level: the upper end of that interval reaches the effective floor, the
      lower of ``auc_floor`` and ``min_trtr_ratio`` x the AUC that the same
      training on the real train split reaches on the same holdout (TRTR); a
      model fails only where the holdout shows it below what the data allows;
    * calibration: the holdout ECE is at most its critical value,
      ``max_calibration_error`` plus the ECE that sampling noise alone reaches
      19 times in 20 on a holdout of this size (`calibration_critical_ece`): a model
      fails when the holdout shows its true calibration error above the
      tolerance, not when noise alone takes the ECE there.

    A holdout that is not evaluable fails with its reason.

    Returns:
        ``{"passed", "reasons", "rules", "tstr_auc", "auc_interval", "trtr_auc", "auc_floor",
        "effective_auc_floor", "ece", "max_calibration_error", "ece_limit", "horizon", "model"}``.
    """
    floor, max_ece = settings["auc_floor"], settings["max_calibration_error"]
    ratio = settings.get("min_trtr_ratio", RiskConfig.model_fields["min_trtr_ratio"].default)
    reference = reference or {}
    trtr = reference.get("trtr_auc")
    effective_floor = floor if trtr is None else min(floor, ratio * trtr)
    # A model stored before the critical value existed is held to the tolerance itself.
    ece_limit = max_ece if ev.ece_critical is None else ev.ece_critical
    trtr_text = (
        f"the same training on the real train split reaches {trtr:.3f} (TRTR)" if trtr is not None
        else f"TRTR not measured ({reference.get('reason', 'no real train split given')}), so the floor stands"
    )
    rules = [
        "discrimination: the lower end of the TSTR AUC's 95 % interval (DeLong) must be above 0.5",
        f"level: the upper end of that interval must reach {effective_floor:.3f} = the floor {floor:.3f}"
        + (f", or {ratio:g} x the TRTR AUC {trtr:.3f} when lower" if trtr is not None else "")
        + f"; {trtr_text}",
        f"calibration: the ECE must be at most {ece_limit:.3f}, "
        + (f"the tolerance {max_ece:.3f} plus the 95th percentile of the ECE sampling noise alone gives on {ev.n} loans"
           if ev.ece_critical is not None else f"the tolerance {max_ece:.3f} (no critical value recorded)"),
    ]
    reasons = []
    if not ev.evaluable:
        reasons.append(f"the real holdout is not evaluable: {ev.reason}")
    else:
        interval = f"(95 % interval {ev.auc_low:.3f} to {ev.auc_high:.3f}, {ev.defaults} defaults in {ev.n})"
        if ev.auc_low is not None and ev.auc_low <= 0.5:
            reasons.append(f"TSTR AUC {ev.auc:.3f} {interval} does not beat chance (0.5)")
        if ev.auc_high is not None and ev.auc_high < effective_floor:
            reasons.append(f"TSTR AUC {ev.auc:.3f} {interval} is below the floor {effective_floor:.3f}; {trtr_text}")
        if ev.ece is not None and ev.ece > ece_limit:
            reasons.append(
                f"calibration error (ECE) {ev.ece:.3f} exceeds {ece_limit:.3f}"
                + (f", the tolerance {max_ece:.3f} plus the noise of {ev.n} loans: the holdout shows "
                   f"a calibration error above the tolerance" if ev.ece_critical is not None else "")
            )
    return {
        "passed": not reasons,
        "reasons": reasons,
        "rules": rules,
        "tstr_auc": ev.auc,
        "auc_interval": [ev.auc_low, ev.auc_high],
        "trtr_auc": trtr,
        "auc_floor": floor,
        "effective_auc_floor": effective_floor,
        "ece": ev.ece,
        "max_calibration_error": max_ece,
        "ece_limit": ece_limit,
        "horizon": horizon,
        "model": model,
    }


def _json(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot store {type(value).__name__} in a JSON document")


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
    (folder / MODEL_FILE).write_text(_json(_clean(document)), encoding="utf-8")
    (folder / LIGHTGBM_FILE).write_text(model.lightgbm.booster.model_to_string(), encoding="utf-8")
    with open(folder / CALIBRATION_FILE, "wb") as handle:
        np.savez(handle, **arrays)
    (folder / POINTS_FILE).write_text(_json(_clean(model.scorecard.points_table())), encoding="utf-8")
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


# --------------------------------------------------------------------------- labels


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
        from models.tape.vocabulary import target_indicator

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


# --------------------------------------------------------------------------- training


def _check_training(y: np.ndarray, horizon: str, tenant: str | None) -> None:
    n, d = int(y.size), int(y.sum())
    if n < MIN_TRAIN_ROWS:
        raise InvalidDataError(
            f"horizon '{horizon}': the synthetic portfolio has {n} labelled rows; the PD model needs at least {MIN_TRAIN_ROWS}.",
            tenant=tenant,
            fix="generate more synthetic rows (synthetic_rows in tenant.yaml) or upload a larger tape.",
        )
    if d < MIN_CLASS_ROWS or n - d < MIN_CLASS_ROWS:
        which = "defaults" if d < MIN_CLASS_ROWS else "non-defaults"
        raise InvalidDataError(
            f"horizon '{horizon}': the synthetic portfolio has {min(d, n - d)} {which} among {n} rows "
            f"(at least {MIN_CLASS_ROWS} of each class are needed){'; it holds one class only' if d in (0, n) else ''}.",
            tenant=tenant,
            fix="check the target's positive values in tenant.yaml, or use a tape with both defaulted and performing loans.",
        )


def fit_pd_model(
    train: pl.DataFrame,
    y_train: np.ndarray,
    holdout: pl.DataFrame,
    y_holdout: np.ndarray,
    schema: TableSchema,
    config: RiskConfig,
    *,
    horizon: str = "tape",
    tenant: str | None = None,
    data: dict[str, Any] | None = None,
) -> PDModelSet:
    """Fit, calibrate, choose and evaluate the two PD models of one horizon.

    Args:
        train: synthetic rows (plain typed columns) and `y_train` their 0/1 labels.
        holdout: real holdout rows and `y_holdout` their labels (evaluation only).
        schema: the tape's schema.
        config: the tenant's `RiskConfig`.
        horizon: the horizon's name, recorded in the model.
        tenant: named in errors and recorded.
        data: extra counts to record (exclusions).

    Returns:
        The `PDModelSet`.

    Raises:
        InvalidDataError: too few rows or one class only in `train`, or no usable feature.
        TenantConfigError: `config.features` names an unusable column.
    """
    started = time.perf_counter()
    y = np.asarray(y_train, dtype=np.int8)
    _check_training(y, horizon, tenant)
    pipeline = FeaturePipeline.fit(train, schema, features=config.features, tenant=tenant)
    x = pipeline.matrix(train, tenant=tenant)
    part = _slices(y, config.seed)
    fit, cal, val = part == 0, part == 1, part == 2
    lgbm = LightGBMPD.fit(x[fit], y[fit], pipeline.categorical_indices, seed=config.seed)
    card = Scorecard.fit(x[fit], y[fit], pipeline, config)
    lgbm.calibrator = Calibrator.fit(lgbm.raw(x[cal]), y[cal], config.calibration)
    card.calibrator = Calibrator.fit(card.raw(x[cal]), y[cal], config.calibration)
    bands = [b.model_dump() for b in config.bands]
    model = PDModelSet(
        horizon=horizon,
        pipeline=pipeline,
        lightgbm=lgbm,
        scorecard=card,
        chosen="lightgbm",
        bands=bands,
        validation={},
        holdout={},
        data={},
        settings={
            "auc_floor": config.auc_floor,
            "min_trtr_ratio": config.min_trtr_ratio,
            "max_calibration_error": config.max_calibration_error,
            "seed": config.seed,
            "config": config.model_dump(mode="json"),
        },
        tenant=tenant,
    )
    for kind in MODEL_KINDS:
        model.validation[kind] = Evaluation.of(
            y[val], model.pd_from_matrix(x[val], kind), bands, what="the synthetic validation slice"
        )
    if config.model != "auto":
        model.chosen = config.model
    else:
        auc_l = model.validation["lightgbm"].auc
        auc_s = model.validation["scorecard"].auc
        if auc_l is None or (auc_s is not None and auc_s >= auc_l - config.selection_margin):
            model.chosen = "scorecard"
    yh = np.asarray(y_holdout, dtype=np.int8)
    if holdout.height:
        xh = pipeline.matrix(holdout, tenant=tenant)
        for kind in MODEL_KINDS:
            model.holdout[kind] = Evaluation.of(
                yh, model.pd_from_matrix(xh, kind), bands, what="the real holdout",
                ece_tolerance=config.max_calibration_error, seed=config.seed,
            )
    else:
        for kind in MODEL_KINDS:
            model.holdout[kind] = Evaluation(False, 0, 0, reason="the real holdout has no labelled rows")
    model.data = {
        "train_rows": int(y.size),
        "train_default_rate": float(y.mean()),
        "fit_rows": int(fit.sum()),
        "calibration_rows": int(cal.sum()),
        "validation_rows": int(val.sum()),
        "holdout_rows": int(yh.size),
        "holdout_default_rate": float(yh.mean()) if yh.size else None,
        "seconds": round(time.perf_counter() - started, 3),
        **(data or {}),
    }
    return model


@dataclass
class RiskTraining:
    """The PD models of every horizon that could be trained, and why the others were skipped."""

    models: dict[str, PDModelSet]
    skipped: dict[str, str]

    @property
    def primary(self) -> PDModelSet:
        """The model to register: the first trained horizon in the configured order."""
        return next(iter(self.models.values()))

    def metrics(self) -> dict[str, float]:
        """Flat figures of every horizon (``<horizon>.<model>.<where>.<metric>``) and the primary's ``tstr_*``."""
        out: dict[str, float] = {}
        for horizon, model in self.models.items():
            out.update(model.metrics(prefix=f"{horizon}."))
        out.update({k: v for k, v in self.primary.metrics().items() if k.startswith("tstr_")})
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "primary": self.primary.horizon,
            "horizons": {h: m.summary() for h, m in self.models.items()},
            "skipped": dict(self.skipped),
        }


def _trtr_reference(
    real_train: pl.DataFrame | None,
    real_performance: pl.DataFrame | None,
    test: Labelled,
    schema: TableSchema,
    config: RiskConfig,
    *,
    horizon: str,
    tenant: str | None,
) -> dict[str, Any]:
    """The TRTR AUC of one horizon (the same training on the real train split, same holdout), or why it is absent."""
    if real_train is None:
        return {"trtr_auc": None, "reason": "no real train split given"}
    labelled = label_rows(real_train, schema, horizon, real_performance, what="real train split",
                          default_states=config.default_states)
    if isinstance(labelled, str):
        return {"trtr_auc": None, "reason": labelled}
    try:
        real = fit_pd_model(labelled.frame, labelled.y, test.frame, test.y, schema, config, horizon=horizon, tenant=tenant)
    except InvalidDataError as exc:
        return {"trtr_auc": None, "reason": exc.reason}
    ev = real.holdout[real.chosen]
    if not ev.evaluable:
        return {"trtr_auc": None, "reason": ev.reason}
    return {"trtr_auc": ev.auc, "model": real.chosen, "train_rows": int(labelled.y.size),
            "auc_interval": [ev.auc_low, ev.auc_high]}


def train_pd_models(
    synthetic: pl.DataFrame,
    holdout: pl.DataFrame,
    schema: TableSchema,
    config: RiskConfig | None = None,
    *,
    synthetic_performance: pl.DataFrame | None = None,
    holdout_performance: pl.DataFrame | None = None,
    real_train: pl.DataFrame | None = None,
    real_train_performance: pl.DataFrame | None = None,
    tenant: str | None = None,
) -> RiskTraining:
    """Train one `PDModelSet` per configured horizon (TSTR: fit on synthetic, test on the real holdout).

    Args:
        synthetic: the anonymized synthetic portfolio, already expanded to typed values.
        holdout: the real holdout loans (evaluation only).
        schema: the tape's schema (target, ids, types).
        config: the tenant's `RiskConfig` (defaults when None).
        synthetic_performance, holdout_performance: canonical monthly histories of the
            synthetic and the real loans, for the ``"<n>m"`` horizons.
        real_train: the real train split (and `real_train_performance` its histories):
            the same training on it, tested on the same holdout, gives each
            horizon's TRTR AUC, what the real data allows (`registration_gate`).
            Nothing trained on it is kept or released. None: not measured.
        tenant: named in errors and recorded.

    Returns:
        A `RiskTraining`: the trained horizons in configured order and the skipped ones with reasons.

    Raises:
        NoTargetError: no horizon can be labelled because no target is declared and no histories exist.
        InvalidDataError: no horizon could be trained (the first horizon's error: too few rows,
            one class only, no usable feature).
        TenantConfigError: `config.features` names an unusable column.
    """
    config = config or RiskConfig()
    models: dict[str, PDModelSet] = {}
    skipped: dict[str, str] = {}
    errors: list[CreditTwinError] = []
    for horizon in config.horizons:
        states = config.default_states
        train = label_rows(synthetic, schema, horizon, synthetic_performance, what="synthetic portfolio", default_states=states)
        test = label_rows(holdout, schema, horizon, holdout_performance, what="real holdout", default_states=states)
        if isinstance(train, str) or isinstance(test, str):
            skipped[horizon] = train if isinstance(train, str) else test  # type: ignore[assignment]
            continue
        extra = {
            "train_excluded": train.excluded,
            "holdout_excluded": test.excluded,
            "excluded_because": train.reason,
        }
        try:
            models[horizon] = fit_pd_model(
                train.frame, train.y, test.frame, test.y, schema, config, horizon=horizon, tenant=tenant, data=extra
            )
        except TenantConfigError:
            raise
        except InvalidDataError as exc:
            errors.append(exc)
            skipped[horizon] = exc.reason
            continue
        models[horizon].reference = _trtr_reference(
            real_train, real_train_performance, test, schema, config, horizon=horizon, tenant=tenant
        )
    if models:
        return RiskTraining(models=models, skipped=skipped)
    if errors:
        raise errors[0]
    if schema.target is None:
        raise NoTargetError(
            "no default definition: tenant.yaml declares no target and no performance histories were given, "
            f"so no PD model can be trained ({'; '.join(f'{h}: {r}' for h, r in skipped.items())}).",
            tenant=tenant,
            file="tenant.yaml",
            fix="declare the default flag under 'target' (column and positive values) in tenant.yaml, or upload performance histories.",
        )
    raise InvalidDataError(
        "no PD horizon could be labelled: " + "; ".join(f"{h}: {r}" for h, r in skipped.items()) + ".",
        tenant=tenant,
        fix="include the target column in the synthetic portfolio and the holdout, or configure risk.horizons to those available.",
    )


# --------------------------------------------------------------------------- scoring


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


# --------------------------------------------------------------------------- MLflow pyfunc loader


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


# --------------------------------------------------------------------------- plots


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
