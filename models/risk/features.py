"""The PD models' inputs: which columns of a loans frame are features, and how they become one numeric matrix.

A `FeaturePipeline` is fitted once on the synthetic training rows and shared by
training, scoring and serving: numbers (dates as decimal years) stay numbers,
NaN where missing; every other column becomes category codes, rare levels
pooled as "other".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl

from models.errors import InvalidDataError, TenantConfigError
from models.tape.schema import SPLIT_COLUMN, ColumnType, TableSchema
from models.tape.vocabulary import FALSE_TEXT, TRUE_TEXT

MAX_LEVELS = 64  # kept categories per column; the rest are "other"
MIN_LEVEL_ROWS = 5  # a category seen fewer times in training is "other"


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
            # a time zone in the text ("2019-08-17 00:00:00+00:00", a tz-aware export sent as text) is read as UTC;
            # without time_zone polars refuses such text outright instead of reading it
            text = col.cast(pl.String).str.strip_chars()
            days = text.str.to_datetime(strict=False, time_zone="UTC").dt.date().cast(pl.Int32).cast(pl.Float64)
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
