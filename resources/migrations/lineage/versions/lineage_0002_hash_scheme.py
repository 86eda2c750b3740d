"""Lineage audit trail: each record names the canonical JSON its hash was taken over.

Revision ID: lineage_0002
Revises: lineage_0001
Create Date: 2025-06-01 00:00:00

Records are hashed over RFC 8785 canonical JSON from here on
(``credittwin-lineage/v2``); every record already stored was hashed over
Python's ``json.dumps`` with sorted keys and gets ``credittwin-lineage/v1``
from the column's default, so it keeps verifying. The default stays: a row
inserted without the column was hashed the v1 way. Adding a column with a
constant default touches no row, so the append-only triggers do not fire.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "lineage_0002"
down_revision = "lineage_0001"
branch_labels = None
depends_on = None

_LEGACY = "credittwin-lineage/v1"


def upgrade() -> None:
    op.add_column(
        "lineage_records", sa.Column("hash_scheme", sa.String(40), nullable=False, server_default=_LEGACY)
    )


def downgrade() -> None:
    newer = op.get_bind().execute(
        sa.text("SELECT count(*) FROM lineage_records WHERE hash_scheme <> :legacy"), {"legacy": _LEGACY}
    ).scalar_one()
    if newer:
        raise RuntimeError(
            f"{newer} lineage record(s) are hashed over RFC 8785 (credittwin-lineage/v2) and would no longer verify "
            "without the hash_scheme column; restore the database from a backup taken before the upgrade instead."
        )
    op.drop_column("lineage_records", "hash_scheme")
