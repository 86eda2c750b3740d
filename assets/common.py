"""Small helpers the asset modules share: reading a stored tape, images as metadata."""

import base64
from contextlib import contextmanager

import dagster as dg

from models.errors import CreditTwinError
from models.schema import TableSchema
from models.tape import SPLIT_COLUMN
from models.tenant import TenantConfig
from resources.storage import Artifact


def split_of(tape: Artifact, name: str):
    """The "train" or "holdout" loans of a stored raw tape, without the split column."""
    import polars as pl

    return tape.table("loans").filter(pl.col(SPLIT_COLUMN) == name).drop(SPLIT_COLUMN)


def train_split(tape: Artifact):
    return split_of(tape, "train")


def tape_schema(tape: Artifact) -> TableSchema:
    return TableSchema.from_dict(tape.document("schema"))


def tape_config(tape: Artifact) -> TenantConfig:
    return TenantConfig.model_validate(tape.document("tenant_config"))


def upload_file(tape: Artifact, stem: str) -> str | None:
    """The name of the uploaded file (loans.csv, performance.parquet, ...) a stored tape was read from."""
    return next((name for name in tape.document("ingest", {}).get("files", []) if name.startswith(stem + ".")), None)


def history_of(loans, performance, id_column: str):
    """The rows of `performance` that belong to `loans` (joined on the canonical `loan_id`)."""
    import polars as pl

    return performance.filter(pl.col("loan_id").is_in(loans.get_column(id_column).cast(pl.String).implode()))


def png_markdown(png: bytes, alt: str) -> dg.MetadataValue:
    """An image as Markdown metadata, which the Dagster UI renders inline."""
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


@contextmanager
def tenant_errors(tenant: str, file: str | None = None):
    """Turn a CreditTwin error into a Dagster failure that names the tenant (and file)."""
    try:
        yield
    except CreditTwinError as error:
        error.with_context(tenant=tenant, file=file)
        raise dg.Failure(
            description=str(error),
            metadata={"tenant": tenant, "file": error.file or "", "column": error.column or "", "fix": error.fix or ""},
        ) from error
