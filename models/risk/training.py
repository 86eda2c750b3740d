"""Probability-of-default (PD) models trained on the synthetic twin and tested on the real holdout.

`train_pd_models` fits, for every default horizon (`models.risk.labels`), two
calibrated models on the anonymized synthetic portfolio (never on real rows) and
evaluates both on the real holdout: train-synthetic-test-real (TSTR). The two
are LightGBM (`models.risk.gbm`) and a scorecard baseline
(`models.risk.scorecard`), both on the inputs of one `FeaturePipeline`.

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
Synthetic rows are labelled from the synthetic histories (the cascade's),
holdout rows from the real ones; a horizon without both is skipped with its
reason.

Bad input. No target and no histories raise `NoTargetError` (a
`TenantConfigError`), so the asset can skip with that reason. A horizon whose
synthetic training data has one class only or too few rows raises
`InvalidDataError` (when it is the only horizon; otherwise it is skipped and its
reason kept). A holdout with one class only (or fewer than
`models.risk.evaluation.MIN_HOLDOUT_ROWS` rows) does *not* raise: training-side
results are returned and the holdout evaluation says ``evaluable: false`` with
the reason; the registration gate then fails, since the TSTR figures it needs do
not exist.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from models.errors import CreditTwinError, InvalidDataError, TenantConfigError
from models.risk.calibration import Calibrator
from models.risk.config import RiskConfig
from models.risk.evaluation import Evaluation
from models.risk.features import FeaturePipeline
from models.risk.gbm import LightGBMPD
from models.risk.labels import Labelled, label_rows
from models.risk.model_set import PDModelSet
from models.risk.scorecard import Scorecard
from models.tape.schema import TableSchema

MODEL_KINDS: tuple[str, ...] = ("lightgbm", "scorecard")
MIN_TRAIN_ROWS = 200  # synthetic rows with a label, per horizon
MIN_CLASS_ROWS = 20  # rows of each class in the synthetic training data


class NoTargetError(TenantConfigError):
    """No default definition: no target declared in tenant.yaml and no performance histories."""


class RareTargetError(TenantConfigError):
    """The lender's own train split holds too few loans of a class for any horizon: there is nothing to learn.

    Not a fault of the twin (the synthetic book only mirrors the tape), so the asset skips the PD model with this
    reason, as it does without a target, instead of failing the tenant's run.
    """


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


def _rare_in_real_train(
    real_train: pl.DataFrame | None, real_performance: pl.DataFrame | None, schema: TableSchema, config: RiskConfig
) -> str | None:
    """Why the real train split itself cannot teach a PD model (too few loans of a class in every horizon), or None.

    None when any horizon of the real split has enough of both classes (then a synthetic book short of them is the
    twin's fault and stays an error) or when the real split is not given.
    """
    if real_train is None:
        return None
    reasons: list[str] = []
    for horizon in config.horizons:
        labelled = label_rows(real_train, schema, horizon, real_performance, what="real train split",
                              default_states=config.default_states)
        if isinstance(labelled, str):
            continue
        n, d = int(labelled.y.size), int(labelled.y.sum())
        if d >= MIN_CLASS_ROWS and n - d >= MIN_CLASS_ROWS:
            return None
        subject = f"the default flag '{schema.target}'" if horizon == "tape" else f"default within {horizon}"
        reasons.append(f"{subject} marks {d} of the {n} loans of the real train split")
    return "; ".join(reasons) or None


def _rare_fix(real_train: pl.DataFrame | None, schema: TableSchema) -> str:
    """The fix for a flag too rare to learn, naming the target column's other values when it has few."""
    fix = "if more outcomes count as default, list them under target.positive in tenant.yaml"
    target = schema.target
    if real_train is not None and target in real_train.columns and real_train.get_column(target).dtype == pl.String:
        counts = real_train.get_column(target).drop_nulls().value_counts(sort=True)
        positive = {str(v) for v in (schema.target_positive or [])}
        others = [str(v) for v in counts.get_column(target).to_list() if str(v) not in positive]
        if 0 < len(others) <= 12:
            fix += f" ({target} also holds {', '.join(repr(v) for v in others[:6])}{', ...' if len(others) > 6 else ''})"
    return fix + "; or upload a tape with more defaulted loans."


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
    rare = _rare_in_real_train(real_train, real_train_performance, schema, config)
    if errors and rare is not None:
        raise RareTargetError(
            f"{rare}: a PD model needs at least {MIN_CLASS_ROWS} of each class, so none is trained (the release and "
            "its certificate do not depend on it).",
            tenant=tenant, file="tenant.yaml", column=schema.target if rare.startswith("the default flag") else None,
            fix=_rare_fix(real_train, schema),
        )
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
