"""`engine: copulas` — the `copulas` library's models behind CreditTwin's copula interface.

`copulas` is under the Business Source License, so it is an optional extra
(`pip install credittwin[copulas]`) for tenants licensed to use it; it is only
imported when this engine is used. The engine does its own encoding so the
library sees a numeric table:

- numeric, integer and date columns as numbers, a missing value filled with the
  median plus a 0/1 null-indicator column;
- categoricals and booleans as a uniform point inside the category's
  frequency-ordered interval of (0, 1), rare categories merged into "other";
- identifiers regenerated, free text left out, as in `GaussianCopulaTwin`;
- inequalities as a non-negative gap column, fixed combinations as one
  categorical, ranges as clipping.

`save` writes the encoder and `copula.to_dict()` as JSON. A vine copula's
parameters embed the training rows (its `u_matrix` and KDE samples), and so
would a Gaussian KDE marginal, so those are refused on save; `load` only
instantiates classes from an allowlist of `copulas` names.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from models.twin.copula import (
    OTHER,
    GaussianCopulaTwin,
    _dtype_from_token,
    _dtype_token,
    _json_scalar,
    _numeric_view,
    _positive_levels,
    _same_value,
    _validate_table,
)
from models.errors import InvalidDataError, NotFittedError
from models.files import atomic_directory
from models.tape.schema import ColumnType, TableSchema
from models.twin.protocol import Conditions

FORMAT = "credittwin.copulas_engine"
_MODELS = {"gaussian", "vine_center", "vine_direct", "vine_regular"}
_DISTRIBUTIONS = {
    "beta": "copulas.univariate.BetaUnivariate",
    "gaussian": "copulas.univariate.GaussianUnivariate",
    "truncated_gaussian": "copulas.univariate.TruncatedGaussian",
    "gamma": "copulas.univariate.GammaUnivariate",
    "student_t": "copulas.univariate.StudentTUnivariate",
    "uniform": "copulas.univariate.UniformUnivariate",
}
# Fully qualified names as `to_dict` writes them; KDE marginals (which store data) are absent on purpose.
_ALLOWED_TYPES = {
    "copulas.univariate.beta.BetaUnivariate",
    "copulas.univariate.gaussian.GaussianUnivariate",
    "copulas.univariate.truncated_gaussian.TruncatedGaussian",
    "copulas.univariate.gamma.GammaUnivariate",
    "copulas.univariate.student_t.StudentTUnivariate",
    "copulas.univariate.uniform.UniformUnivariate",
    "copulas.multivariate.gaussian.GaussianMultivariate",
}


def _require_copulas():
    try:
        import copulas  # noqa: F401  (import check only)
    except ImportError as exc:
        raise InvalidDataError(
            "the 'copulas' engine needs the optional copulas library, which is not installed.",
            fix="pip install credittwin[copulas] (Business Source License: check your licence), or use engine: credittwin.",
        ) from exc


def _import_class(dotted: str):
    import importlib

    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


class CopulasEngine:
    """The `copulas` library's Gaussian multivariate or vine copula with CreditTwin's interface.

    Args:
        model: "gaussian" (GaussianMultivariate) or "vine_center" / "vine_direct"
            / "vine_regular" (VineCopula; slow, and cannot be saved or conditioned).
        distribution: the univariate family for every column (see `_DISTRIBUTIONS`).
        k, constraints, max_categories: as for `GaussianCopulaTwin`.
    """

    def __init__(
        self,
        *,
        model: str = "gaussian",
        distribution: str = "beta",
        k: int = 5,
        constraints: list[dict] | None = None,
        max_categories: int = 1000,
    ) -> None:
        _require_copulas()
        if model not in _MODELS:
            raise InvalidDataError(f"unknown copulas model {model!r}.", fix=f"use one of {sorted(_MODELS)}.")
        if distribution not in _DISTRIBUTIONS:
            raise InvalidDataError(f"unknown distribution {distribution!r}.", fix=f"use one of {sorted(_DISTRIBUTIONS)}.")
        self.model = model
        self.distribution = distribution
        self.k = k
        self.constraints = [dict(c) for c in (constraints or [])]
        self.max_categories = max_categories
        self._copula: Any = None
        self._columns: list[dict[str, Any]] = []
        self._left_out: dict[str, str] = {}
        self._merges: dict[str, int] = {}
        self._target: dict[str, Any] | None = None

    # ------------------------------------------------------------------ fit

    def fit(self, table: pl.DataFrame, schema: TableSchema) -> "CopulasEngine":
        """Encode `table` numerically and fit the copulas model on it (same errors as GaussianCopulaTwin)."""
        _validate_table(table, schema, max_categories=self.max_categories, constraints=self.constraints)
        import pandas as pd

        rng = np.random.default_rng(0)
        self._columns, self._left_out, self._merges, self._target = [], {}, {}, None
        low_of = {c["low"]: c["high"] for c in self.constraints if c["type"] == "inequality"}
        ranges = {c["column"]: (c["low"], c["high"]) for c in self.constraints if c["type"] == "range"}
        combos = [list(c["columns"]) for c in self.constraints if c["type"] == "fixed_combinations"]
        combo_of = {col: i for i, cols in enumerate(combos) for col in cols}
        encoded: dict[str, np.ndarray] = {}
        for spec in schema.columns:
            name = spec.name
            series = table.get_column(name)
            if spec.type is ColumnType.TEXT:
                self._left_out[name] = "free text: left out of the model"
                continue
            if spec.type is ColumnType.IDENTIFIER:
                self._columns.append(GaussianCopulaTwin._identifier_plan(series))
                continue
            if name in combo_of:
                cols = combos[combo_of[name]]
                key = f"combo:{'|'.join(cols)}"
                if key not in encoded:
                    joined = table.select(pl.concat_list([pl.col(c).cast(pl.String) for c in cols]).list.join("\x1f",
                                          ignore_nulls=False).alias(key)).get_column(key)
                    levels, probs, codes = self._levels(joined, merge=True, label=key)
                    encoded[key] = self._jitter(codes, probs, rng)
                    member_levels = [[None] * len(cols) if lvl is None else str(lvl).split("\x1f") for lvl in levels]
                    self._columns.append({"name": key, "kind": "combo_key", "levels": member_levels,
                                          "probs": probs.tolist(), "columns": cols})
                self._columns.append({"name": name, "kind": "combo", "key": key, "member": cols.index(name),
                                      "dtype": _dtype_token(series.dtype)})
                continue
            if spec.type in (ColumnType.CATEGORICAL, ColumnType.BOOLEAN):
                if isinstance(series.dtype, (pl.Categorical, pl.Enum)):
                    series = series.cast(pl.String)
                merge = spec.type is ColumnType.CATEGORICAL and name != schema.target
                levels, probs, codes = self._levels(series, merge=merge, label=name)
                token = _dtype_token(series.dtype)
                if merge and OTHER in levels and series.dtype != pl.String:
                    token = {"name": "String"}
                encoded[name] = self._jitter(codes, probs, rng)
                self._columns.append({"name": name, "kind": "levels", "levels": levels, "probs": probs.tolist(),
                                      "dtype": token})
                if name == schema.target:
                    self._target = {"column": name, "positive": _positive_levels(levels, schema.target_positive, series.dtype)}
                continue
            values = _numeric_view(series)
            plan: dict[str, Any] = {"name": name, "kind": "numeric", "dtype": _dtype_token(series.dtype),
                                    "integer": bool(series.dtype.is_integer() or series.dtype == pl.Date or series.dtype.is_temporal()),
                                    "low": None, "high": None, "gap_of": None}
            if name in low_of:
                values = _numeric_view(table.get_column(low_of[name])) - values
                plan["gap_of"] = low_of[name]
                plan["low"] = 0.0
            else:
                present = values[~np.isnan(values)]
                plan["low"], plan["high"] = float(present.min()), float(present.max())
                low, high = ranges.get(name, (None, None))
                plan["low"] = plan["low"] if low is None else max(plan["low"], float(low))
                plan["high"] = plan["high"] if high is None else min(plan["high"], float(high))
            null = np.isnan(values)
            plan["null_column"] = f"{name}#null" if null.any() else None
            if null.any():
                encoded[plan["null_column"]] = null.astype(np.float64)
                values = np.where(null, np.nanmedian(values), values)
            encoded[name] = values
            self._columns.append(plan)
        frame = pd.DataFrame(encoded)
        if self.model == "gaussian":
            from copulas.multivariate import GaussianMultivariate

            copula = GaussianMultivariate(distribution=_import_class(_DISTRIBUTIONS[self.distribution]))
        else:
            from copulas.multivariate import VineCopula

            copula = VineCopula(self.model.split("_", 1)[1])
        copula.fit(frame)
        self._copula = copula
        return self

    def _levels(self, series: pl.Series, *, merge: bool, label: str):
        """Frequency-ordered levels, their probabilities and each row's level index."""
        counts = series.value_counts(sort=True)
        values = [_json_scalar(v) for v in counts.get_column(series.name).to_list()]
        freq = counts.get_column("count").to_numpy().astype(np.float64)
        rare = np.array([v is not None and f < self.k for v, f in zip(values, freq)])
        if merge and rare.any():
            self._merges[label] = int(rare.sum())
            mapping = {v: OTHER for v, r in zip(values, rare) if r}
            series = series.cast(pl.String).replace(list(map(str, mapping)), [OTHER] * len(mapping))
            counts = series.value_counts(sort=True)
            values = [_json_scalar(v) for v in counts.get_column(series.name).to_list()]
            freq = counts.get_column("count").to_numpy().astype(np.float64)
        present = [v for v in values if v is not None]
        codes = series.replace_strict(present, [values.index(v) for v in present], default=-1, return_dtype=pl.Int64)
        codes = codes.fill_null(values.index(None) if None in values else -1).to_numpy()
        return values, freq / freq.sum(), codes

    @staticmethod
    def _jitter(codes: np.ndarray, probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cum = np.concatenate([[0.0], np.cumsum(probs)])
        return cum[codes] + rng.random(codes.size) * probs[codes]

    # ------------------------------------------------------------------ sample

    def sample(self, n: int, seed: int = 0, conditions: Conditions | None = None) -> pl.DataFrame:
        """Sample `n` rows; conditions as for `GaussianCopulaTwin` (gaussian model only)."""
        if self._copula is None:
            raise NotFittedError("the copulas engine is not fitted.", fix="call fit(table, schema) or load(path) first.")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidDataError(f"n must be a positive integer, got {n!r}.", fix="pass the number of rows to sample.")
        groups = self._condition_groups(n, conditions)
        import pandas as pd

        parts = []
        for i, (rows, fixed) in enumerate(groups):
            if rows == 0:
                continue
            self._copula.set_random_state(np.random.RandomState(seed * 1009 + i))
            if fixed:
                parts.append(self._copula.sample(rows, conditions=fixed))
            else:
                parts.append(self._copula.sample(rows))
        frame = pd.concat(parts, ignore_index=True)
        frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True) if len(parts) > 1 else frame
        return self._decode(frame, n)

    def _condition_groups(self, n: int, conditions: dict | None) -> list[tuple[int, dict[str, float]]]:
        """Split the request into (rows, copulas conditions) groups; each fixed level is its interval midpoint."""
        if not conditions:
            return [(n, {})]
        if self.model != "gaussian":
            raise InvalidDataError("conditional sampling needs the gaussian model.", fix="use model='gaussian'.")
        if set(conditions) - {"target_rate", "fixed"}:
            raise InvalidDataError(f"unknown conditions {sorted(set(conditions) - {'target_rate', 'fixed'})!r}.",
                                   fix='use {"target_rate": 0.1} and/or {"fixed": {"column": value}}.')
        by_name = {c["name"]: c for c in self._columns}
        base: dict[str, float] = {}
        for column, value in (conditions.get("fixed") or {}).items():
            plan = by_name.get(column)
            if plan is None or plan["kind"] != "levels" or not any(_same_value(v, value) for v in plan["levels"]):
                raise InvalidDataError(f"value {value!r} is not a category of the model.", column=str(column),
                                       fix="fix a categorical column to one of its common categories.")
            base[column] = self._midpoint(plan, [i for i, v in enumerate(plan["levels"]) if _same_value(v, value)][0])
        if "target_rate" not in conditions:
            return [(n, base)]
        if self._target is None:
            raise InvalidDataError("a target rate was requested but the schema has no target.", fix="declare `target` and re-fit.")
        rate = float(conditions["target_rate"])
        if not 0.0 <= rate <= 1.0:
            raise InvalidDataError(f"target_rate must be in [0, 1], got {rate!r}.", column=self._target["column"],
                                   fix="pass e.g. 0.05.")
        plan = by_name[self._target["column"]]
        probs = np.asarray(plan["probs"])
        positive = np.array([v in self._target["positive"] for v in plan["levels"]])
        groups = []
        for mask, rows in ((positive, int(round(n * rate))), (~positive, n - int(round(n * rate)))):
            idx = np.flatnonzero(mask)
            shares = probs[idx] / probs[idx].sum()
            alloc = np.floor(shares * rows).astype(int)
            alloc[np.argmax(shares)] += rows - alloc.sum()
            groups += [(int(a), {**base, plan["name"]: self._midpoint(plan, int(i))}) for i, a in zip(idx, alloc)]
        return groups

    @staticmethod
    def _midpoint(plan: dict[str, Any], index: int) -> float:
        cum = np.concatenate([[0.0], np.cumsum(plan["probs"])])
        return float((cum[index] + cum[index + 1]) / 2)

    def _decode(self, frame, n: int) -> pl.DataFrame:
        values: dict[str, np.ndarray] = {}
        out: dict[str, pl.Series] = {}
        for plan in self._columns:
            if plan["kind"] in ("levels", "combo_key"):
                cum = np.cumsum(plan["probs"])[:-1]
                values[plan["name"]] = np.searchsorted(cum, np.clip(frame[plan["name"]].to_numpy(), 0, 1), side="right")
            elif plan["kind"] == "numeric" and plan["gap_of"] is None:
                values[plan["name"]] = self._clip(plan, frame[plan["name"]].to_numpy(dtype=np.float64))
        for plan in self._columns:
            if plan["kind"] == "numeric" and plan["gap_of"] is not None:
                gap = self._clip(plan, frame[plan["name"]].to_numpy(dtype=np.float64))
                values[plan["name"]] = np.minimum(values[plan["gap_of"]] - gap, values[plan["gap_of"]])
        for plan in self._columns:
            name = plan["name"]
            if plan["kind"] == "combo_key":
                continue
            if plan["kind"] == "identifier":
                out[name] = GaussianCopulaTwin._identifiers(plan, n)
                continue
            dtype = _dtype_from_token(plan["dtype"])
            if plan["kind"] == "levels":
                lookup = pl.Series(name, plan["levels"], dtype=pl.String if dtype == pl.Categorical else dtype, strict=False)
                out[name] = lookup.gather(values[name]).cast(dtype)
            elif plan["kind"] == "combo":
                key = next(p for p in self._columns if p["name"] == plan["key"])
                member = [lvl[plan["member"]] for lvl in key["levels"]]
                out[name] = pl.Series(name, member, dtype=pl.String).gather(values[plan["key"]]).cast(dtype)
            else:
                v = np.round(values[name]) if plan["integer"] else values[name]
                null = (frame[plan["null_column"]].to_numpy() > 0.5) if plan["null_column"] else np.zeros(n, bool)
                out[name] = GaussianCopulaTwin._numeric_series(name, v, null, dtype)
        return pl.DataFrame([out[p["name"]] for p in self._columns if p["kind"] != "combo_key"])

    @staticmethod
    def _clip(plan: dict[str, Any], v: np.ndarray) -> np.ndarray:
        low = -np.inf if plan["low"] is None else plan["low"]
        high = np.inf if plan["high"] is None else plan["high"]
        return np.clip(np.nan_to_num(v, nan=low if np.isfinite(low) else 0.0), low, high)

    # ------------------------------------------------------------------ inspect / persist

    def summary(self) -> dict[str, Any]:
        """Columns modelled, left out, category merges (counts only), constraints, correlation shape."""
        if self._copula is None:
            raise NotFittedError("the copulas engine is not fitted.", fix="call fit(table, schema) first.")
        corr = getattr(self._copula, "correlation", None)
        return {
            "engine": f"copulas:{self.model}",
            "columns_modelled": [c["name"] for c in self._columns if c["kind"] not in ("identifier", "combo_key")],
            "identifiers_regenerated": [c["name"] for c in self._columns if c["kind"] == "identifier"],
            "left_out": dict(self._left_out),
            "category_merges": dict(self._merges),
            "constraints": [dict(c) for c in self.constraints],
            "correlation_shape": list(np.shape(corr)) if corr is not None else None,
        }

    def save(self, path: Path) -> None:
        """Save encoder and copula parameters as JSON (gaussian model with parametric marginals only)."""
        if self._copula is None:
            raise NotFittedError("the copulas engine is not fitted.", fix="call fit(table, schema) first.")
        if self.model != "gaussian":
            raise InvalidDataError(
                "a vine copula's saved parameters contain the training rows, so it is not saved.",
                fix="use model='gaussian' when the model must be stored.",
            )
        params = self._copula.to_dict()
        types = {params["type"]} | {u["type"] for u in params["univariates"]}
        if not types <= _ALLOWED_TYPES:
            raise InvalidDataError(f"the fitted copula uses {sorted(types - _ALLOWED_TYPES)}, which would store training data.",
                                   fix="choose a parametric distribution.")
        model = {"format": FORMAT, "version": 1, "model": self.model, "distribution": self.distribution, "k": self.k,
                 "constraints": self.constraints, "max_categories": self.max_categories, "columns": self._columns,
                 "left_out": self._left_out, "merges": self._merges, "target": self._target, "copula": params}
        with atomic_directory(Path(path)) as folder:
            (folder / "model.json").write_bytes(json.dumps(model, allow_nan=False).encode())

    @classmethod
    def load(cls, path: Path) -> "CopulasEngine":
        """Load a saved engine; only allowlisted `copulas` classes are ever instantiated."""
        _require_copulas()
        file = Path(path) / "model.json"
        try:
            model = json.loads(file.read_text())
            expected = {"format", "version", "model", "distribution", "k", "constraints", "max_categories", "columns",
                        "left_out", "merges", "target", "copula"}
            if not isinstance(model, dict) or set(model) != expected or model["format"] != FORMAT or model["version"] != 1:
                raise ValueError("not a CreditTwin copulas-engine model (unknown or missing keys)")
            params = model["copula"]
            types = {params["type"]} | {u["type"] for u in params["univariates"]}
            if not types <= _ALLOWED_TYPES:
                raise ValueError(f"refusing to instantiate {sorted(types - _ALLOWED_TYPES)}")
            engine = cls(model=model["model"], distribution=model["distribution"], k=model["k"],
                         constraints=model["constraints"], max_categories=model["max_categories"])
            from copulas.multivariate import GaussianMultivariate

            engine._copula = GaussianMultivariate.from_dict(params)
            engine._columns, engine._left_out = model["columns"], model["left_out"]
            engine._merges, engine._target = model["merges"], model["target"]
            return engine
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidDataError(f"the saved copulas engine is invalid: {exc}", file=str(file),
                                   fix="re-run fitted_copula to write it again.") from exc
