"""Lineage audit trail: per-tenant hash-chained records, their files and the chain heads.

Revision ID: lineage_0001
Revises:
Create Date: 2025-01-01 00:00:00

The tables are spelled out here rather than imported from resources.lineage, so
this revision keeps creating the same schema after the code moves on. Records
and their file index are append-only, enforced by triggers as well as by the
absence of any update or delete in the code; a head row may be updated (it
moves with each append) but not deleted.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "lineage_0001"
down_revision = None
branch_labels = None
depends_on = None

_APPEND_ONLY_TABLES = ("lineage_records", "lineage_files")


def _id_type() -> sa.types.TypeEngine:
    # SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias)
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "lineage_records",
        sa.Column("id", _id_type(), primary_key=True, autoincrement=True),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("asset", sa.String(255), nullable=False),
        sa.Column("partition_key", sa.String(255), nullable=True),
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("data_version", sa.String(255), nullable=True),
        sa.Column("input_versions", sa.JSON(), nullable=False),
        sa.Column("input_hashes", sa.JSON(), nullable=False),
        sa.Column("output_hash", sa.String(255), nullable=False),
        sa.Column("output_files", sa.JSON(), nullable=False),
        sa.Column("code_version", sa.String(255), nullable=True),
        sa.Column("privacy_charged", sa.JSON(), nullable=True),
        sa.Column("recorded_at", sa.String(40), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=False),
        sa.UniqueConstraint("tenant", "seq", name="uq_lineage_records_tenant_seq"),
        sa.UniqueConstraint("tenant", "idempotency_key", name="uq_lineage_records_tenant_key"),
    )
    op.create_index("ix_lineage_records_output_hash", "lineage_records", ["output_hash"])
    op.create_table(
        "lineage_files",
        sa.Column("id", _id_type(), primary_key=True, autoincrement=True),
        sa.Column(
            "record_id",
            _id_type(),
            sa.ForeignKey("lineage_records.id", name="fk_lineage_files_record"),
            nullable=False,
        ),
        sa.Column("tenant", sa.String(63), nullable=False),
        sa.Column("name", sa.String(1024), nullable=False),
        sa.Column("basename", sa.String(1024), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
    )
    op.create_index("ix_lineage_files_sha256", "lineage_files", ["sha256"])
    op.create_index("ix_lineage_files_basename", "lineage_files", ["basename"])
    op.create_table(
        "lineage_heads",
        sa.Column("tenant", sa.String(63), primary_key=True),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.String(40), nullable=False),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION credittwin_lineage_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only: its rows are never updated or deleted', TG_TABLE_NAME; END $$"
        )
        for table in _APPEND_ONLY_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION credittwin_lineage_append_only()"
            )
        for table in (*_APPEND_ONLY_TABLES, "lineage_heads"):
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION credittwin_lineage_append_only()"
            )
        op.execute(
            "CREATE TRIGGER lineage_heads_no_delete BEFORE DELETE ON lineage_heads "
            "FOR EACH ROW EXECUTE FUNCTION credittwin_lineage_append_only()"
        )
    elif dialect == "sqlite":
        for table, actions in (("lineage_records", ("UPDATE", "DELETE")), ("lineage_files", ("UPDATE", "DELETE")),
                               ("lineage_heads", ("DELETE",))):
            for action in actions:
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: its rows are never updated or deleted'); END"
                )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in ("lineage_records", "lineage_files", "lineage_heads"):
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
    op.drop_table("lineage_heads")
    op.drop_index("ix_lineage_files_basename", table_name="lineage_files")
    op.drop_index("ix_lineage_files_sha256", table_name="lineage_files")
    op.drop_table("lineage_files")
    op.drop_index("ix_lineage_records_output_hash", table_name="lineage_records")
    op.drop_table("lineage_records")
    if dialect == "postgresql":
        # the triggers went with their tables
        op.execute("DROP FUNCTION IF EXISTS credittwin_lineage_append_only()")
