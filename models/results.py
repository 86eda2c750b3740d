"""The typed results the assets exchange, and how each is stored.

Every asset returns one of the small dataclasses below and its downstream
assets receive it back, typed: `raw_loan_tape` is a `TapeSplit` with `.train`,
`.schema` and `.tenant_config`, `fitted_copula` a `TwinModel` whose `.load()`
gives the fitted engine, and so on. An asset never reads an upstream result by
a string key.

A result is stored as `Parts`: Parquet tables, JSON documents and files (bytes:
models saved as JSON, NumPy without pickle, torch state dicts, LightGBM text).
Each field declares its part (`stored_table`, `stored_document` or `stored_files`), and the stored
name of a table or document is the field's name, so versions written before
the typed results load as they are. `resources.storage` writes and reads the
parts; this module only maps fields to parts and back, with no Dagster import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from models.tape.schema import SPLIT_COLUMN, TableSchema
from models.tape.tenant import TenantConfig

R = TypeVar("R", bound="Result")


@dataclass
class Parts:
    """A result as stored: tables (polars, written as Parquet), JSON documents and files (bytes).

    After loading, `path` is the stored version folder (models are loaded from
    it; their files are not read into memory) and `manifest` its manifest.
    """

    tables: dict[str, Any] = field(default_factory=dict)
    documents: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    path: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    def table(self, name: str):
        return self.tables[name]

    def document(self, name: str, default: Any = None) -> Any:
        return self.documents.get(name, default)


def stored_table(*, optional: bool = False) -> Any:
    """A field stored as a Parquet table named after it; an optional one may be None (not stored)."""
    return field(default=None, metadata={"part": "table"}) if optional else field(metadata={"part": "table"})


def stored_document(*, default: Any = MISSING, default_factory: Any = MISSING,
             encode: Callable[[Any], Any] | None = None, decode: Callable[[Any], Any] | None = None) -> Any:
    """A field stored as a JSON document named after it, through `encode`/`decode` when it is not plain JSON."""
    metadata = {"part": "document", "encode": encode, "decode": decode}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def stored_files() -> Any:
    """The files a result carries (relative path -> bytes); empty after loading, where they are under `path`."""
    return field(default_factory=dict, metadata={"part": "files"})


RESULTS: dict[str, type[Result]] = {}
"""The result type of each asset, by asset name (how storage types what it loads)."""


@dataclass(kw_only=True)
class Result:
    """The base of every asset's result: its fields map to stored parts; `path` and `manifest` say where it was stored."""

    ASSET: ClassVar[str]
    path: Path | None = field(default=None, metadata={"part": "location"})
    manifest: dict[str, Any] = field(default_factory=dict, metadata={"part": "location"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        RESULTS[cls.ASSET] = cls

    @property
    def content_sha256(self) -> str | None:
        """The SHA-256 over the stored files, once stored (what lineage and the certificate cite)."""
        return self.manifest.get("content_sha256")

    def to_parts(self) -> Parts:
        parts = Parts()
        for spec in fields(self):
            part, value = spec.metadata.get("part"), getattr(self, spec.name)
            if part == "table" and value is not None:
                parts.tables[spec.name] = value
            elif part == "document":
                encode = spec.metadata["encode"]
                parts.documents[spec.name] = encode(value) if encode is not None and value is not None else value
            elif part == "files":
                parts.files.update(value)
        return parts

    @classmethod
    def from_parts(cls: type[R], parts: Parts) -> R:
        values: dict[str, Any] = {"path": parts.path, "manifest": parts.manifest}
        for spec in fields(cls):
            part = spec.metadata.get("part")
            if part == "table" and spec.name in parts.tables:
                values[spec.name] = parts.tables[spec.name]
            elif part == "document" and spec.name in parts.documents:
                decode, value = spec.metadata["decode"], parts.documents[spec.name]
                values[spec.name] = decode(value) if decode is not None and value is not None else value
            elif part == "files":
                values[spec.name] = dict(parts.files)
        return cls(**values)

    def folder(self, name: str) -> Path:
        """A folder of the stored version (a saved model), for results loaded from storage."""
        if self.path is None:
            raise ValueError(f"{type(self).__name__} of {self.ASSET} was not loaded from storage; it has no folder.")
        return self.path / name


def as_result(asset: str, parts: Parts) -> Result | Parts:
    """`parts` as the typed result of `asset`, or as they are for an asset without one."""
    kind = RESULTS.get(asset)
    return kind.from_parts(parts) if kind is not None else parts


# --------------------------------------------------------------------------- ingest


@dataclass(kw_only=True)
class TapeSplit(Result):
    """`raw_loan_tape`: the upload typed, with each loan marked train or holdout (by privacy unit)."""

    ASSET: ClassVar[str] = "raw_loan_tape"
    loans: Any = stored_table()
    performance: Any = stored_table(optional=True)
    schema: TableSchema = stored_document(encode=lambda schema: schema.to_dict(), decode=TableSchema.from_dict)
    tenant_config: TenantConfig = stored_document(encode=lambda config: config.to_dict(), decode=TenantConfig.model_validate)
    ingest: dict[str, Any] = stored_document(default_factory=dict)

    def split(self, name: str):
        """The "train" or "holdout" loans, without the split column."""
        import polars as pl

        return self.loans.filter(pl.col(SPLIT_COLUMN) == name).drop(SPLIT_COLUMN)

    @property
    def train(self):
        return self.split("train")

    @property
    def holdout(self):
        return self.split("holdout")

    @property
    def book(self):
        """Every loan of the tape (the real current book), without the split column."""
        return self.loans.drop(SPLIT_COLUMN)

    def history_of(self, loans):
        """The performance rows of `loans` (joined on the canonical `loan_id`), or None without histories."""
        if self.performance is None or not self.schema.id_column:
            return None
        return history_of(loans, self.performance, self.schema.id_column)

    @property
    def upload_sha256(self) -> str | None:
        return self.ingest.get("upload_sha256")

    def upload_file(self, stem: str) -> str | None:
        """The name of the uploaded file (loans.csv, performance.parquet, ...) this tape was read from."""
        return next((name for name in self.ingest.get("files", []) if name.startswith(stem + ".")), None)


def history_of(loans, performance, id_column: str):
    """The rows of `performance` that belong to `loans` (joined on the canonical `loan_id`)."""
    import polars as pl

    return performance.filter(pl.col("loan_id").is_in(loans.get_column(id_column).cast(pl.String).implode()))


@dataclass(kw_only=True)
class LoanFeatures(Result):
    """`loan_features`: one row of derived credit features per loan, and what was built or skipped."""

    ASSET: ClassVar[str] = "loan_features"
    features: Any = stored_table()
    feature_report: dict[str, Any] = stored_document(default_factory=dict)


# --------------------------------------------------------------------------- twin

NON_DP_LABEL = "not differentially private: the non-DP twin (set privacy.epsilon in tenant.yaml to opt in)"


@dataclass(kw_only=True)
class TwinModel(Result):
    """`fitted_copula`: the saved twin engine (under `MODEL_DIR`), its summary and its privacy label."""

    ASSET: ClassVar[str] = "fitted_copula"
    MODEL_DIR: ClassVar[str] = "model"
    summary: dict[str, Any] = stored_document(default_factory=dict)
    engine: dict[str, Any] = stored_document(default_factory=dict)
    privacy: dict[str, Any] = stored_document(default_factory=lambda: {"label": NON_DP_LABEL})
    files: dict[str, bytes] = stored_files()

    def load(self):
        """The fitted engine, whichever engine saved it (`models.twin.engine.load_engine`)."""
        from models.twin.engine import load_engine

        return load_engine(self.folder(self.MODEL_DIR))

    @property
    def engine_name(self) -> str:
        return self.engine.get("name", "credittwin")


@dataclass(kw_only=True)
class CascadeModel(Result):
    """`lstm_cascade`: the saved cascade (and, outside DP, its Markov baseline), or why there is none."""

    ASSET: ClassVar[str] = "lstm_cascade"
    CASCADE_DIR: ClassVar[str] = "cascade"
    MARKOV_DIR: ClassVar[str] = "markov"
    status: dict[str, Any] = stored_document(default_factory=dict)
    privacy: dict[str, Any] | None = stored_document(default=None)
    summary: dict[str, Any] | None = stored_document(default=None)
    transition_matrices: dict[str, Any] | None = stored_document(default=None)
    files: dict[str, bytes] = stored_files()

    @property
    def skipped(self) -> bool:
        return bool(self.status.get("skipped"))

    def load(self):
        """The trained `LoanCascade`, or None when the tenant has no history."""
        from models.sequences.cascade import LoanCascade

        if self.skipped:
            return None
        if self.status.get("dp"):
            from models.twin.dp import dp_recurrent_factory

            return LoanCascade.load(self.folder(self.CASCADE_DIR), recurrent_factory=dp_recurrent_factory)
        return LoanCascade.load(self.folder(self.CASCADE_DIR))


@dataclass(kw_only=True)
class SyntheticBook(Result):
    """`synthetic_portfolio`: the sampled loans (and histories), how they were sampled and how faithful they are."""

    ASSET: ClassVar[str] = "synthetic_portfolio"
    loans: Any = stored_table()
    performance: Any = stored_table(optional=True)
    privacy: dict[str, Any] = stored_document(default_factory=lambda: {"label": NON_DP_LABEL})
    fidelity: dict[str, Any] = stored_document(default_factory=dict)
    sequence_fidelity: dict[str, Any] = stored_document(default_factory=dict)
    sampling: dict[str, Any] = stored_document(default_factory=dict)


# --------------------------------------------------------------------------- privacy


@dataclass(kw_only=True)
class Release(Result):
    """`anonymized_portfolio`: the k-anonymous, l-diverse release, with its generalisations and re-check."""

    ASSET: ClassVar[str] = "anonymized_portfolio"
    loans: Any = stored_table()
    performance: Any = stored_table(optional=True)
    anonymization: dict[str, Any] = stored_document(default_factory=dict)
    verification: dict[str, Any] = stored_document(default_factory=dict)
    privacy: dict[str, Any] = stored_document(default_factory=dict)

    @property
    def privacy_label(self) -> str:
        return self.privacy.get("label", "not differentially private")

    def typed_loans(self, schema: TableSchema, seed: int = 0):
        """The released loans with their generalised quasi-identifiers drawn back into typed values."""
        from models.quality.release_frame import expand_release

        return expand_release(self.loans, schema, self.anonymization.get("generalisations"), seed=seed)


@dataclass(kw_only=True)
class AuditResult(Result):
    """`privacy_audit`: the audit report, the policy's rules and verdict, and the DP spend it was judged with."""

    ASSET: ClassVar[str] = "privacy_audit"
    audit: dict[str, Any] = stored_document(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.audit.get("passed"))

    @property
    def failed_rules(self) -> list[str]:
        return [rule["message"] for rule in self.audit.get("rules", []) if not rule.get("passed")]

    @property
    def audited_release(self) -> str | None:
        """The content SHA-256 of the anonymized portfolio this audit judged."""
        return self.audit.get("release", {}).get("anonymized_portfolio_sha256")


@dataclass(kw_only=True)
class Certificate(Result):
    """`privacy_certificate`: the released files, the signed certificate (JSON and PDF) and its summary."""

    ASSET: ClassVar[str] = "privacy_certificate"
    RELEASE_DIR: ClassVar[str] = "release"
    JSON: ClassVar[str] = "certificate.json"
    PDF: ClassVar[str] = "certificate.pdf"
    summary: dict[str, Any] = stored_document(default_factory=dict)
    files: dict[str, bytes] = stored_files()


# --------------------------------------------------------------------------- quality and risk


@dataclass(kw_only=True)
class ValidationResult(Result):
    """`validation_report`: fidelity, utility and sequence measures with their verdict, as JSON, PDF and charts."""

    ASSET: ClassVar[str] = "validation_report"
    PDF: ClassVar[str] = "validation_report.pdf"
    validation_report: dict[str, Any] = stored_document(default_factory=dict)
    files: dict[str, bytes] = stored_files()

    @property
    def internal(self) -> bool:
        """Under DP the report's figures are exact statistics of real loans: kept for the tenant, never exported."""
        return bool(self.validation_report.get("scope", {}).get("internal"))


@dataclass(kw_only=True)
class PdModel(Result):
    """`risk_model`: the saved PD model (under `MODEL_DIR`), its training summary, MLflow run and gate."""

    ASSET: ClassVar[str] = "risk_model"
    MODEL_DIR: ClassVar[str] = "model"
    summary: dict[str, Any] = stored_document(default_factory=dict)
    files: dict[str, bytes] = stored_files()

    def load(self):
        """The PD model (LightGBM text, JSON and arrays; nothing pickled)."""
        from models.risk.model_set import load_pd_model

        return load_pd_model(self.folder(self.MODEL_DIR))

    @property
    def registered_version(self) -> int | None:
        return (self.summary.get("mlflow") or {}).get("registered_version")


@dataclass(kw_only=True)
class PortfolioScores(Result):
    """`portfolio_scores`: the real book scored by the registered model: PD, band and reason codes per loan."""

    ASSET: ClassVar[str] = "portfolio_scores"
    scores: Any = stored_table()
    bands: list[dict[str, Any]] = stored_document(default_factory=list)
    model: dict[str, Any] = stored_document(default_factory=dict)


@dataclass(kw_only=True)
class StressOutcome(Result):
    """`stress_test`: losses and band migration per scenario and segment, as a table, JSON, PDF and charts."""

    ASSET: ClassVar[str] = "stress_test"
    results: Any = stored_table()
    stress: dict[str, Any] = stored_document(default_factory=dict)
    files: dict[str, bytes] = stored_files()
