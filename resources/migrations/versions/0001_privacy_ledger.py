"""Privacy ledger: per-tenant budgets, append-only charges and budget changes.

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00

The tables are spelled out here rather than imported from resources.ledger, so
this revision keeps creating the same schema after the code moves on. Charges
and budget changes are append-only, enforced by triggers as well as by the
absence of any update or delete in the code.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_APPEND_ONLY_TABLES = ("privacy_charges", "budget_changes")


def _id_column() -> sa.Column:
    # SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias)
    return sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "privacy_budgets",
        sa.Column("tenant", sa.String(63), primary_key=True),
        sa.Column("epsilon_total", sa.Double(), nullable=False),
        sa.Column("delta_total", sa.Double(), nullable=False),
        sa.Column("spent_accounting", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "privacy_charges",
        _id_column(),
        sa.Column(
            "tenant",
            sa.String(63),
            sa.ForeignKey("privacy_budgets.tenant", name="fk_privacy_charges_tenant"),
            nullable=False,
        ),
        sa.Column("asset", sa.String(255), nullable=False),
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("mechanism", sa.JSON(), nullable=False),
        sa.Column("epsilon", sa.Double(), nullable=False),
        sa.Column("delta", sa.Double(), nullable=False),
        sa.Column("accountant", sa.String(64), nullable=False),
        sa.Column("idempotency_hash", sa.String(64), nullable=False),
        sa.Column("idempotency", sa.JSON(), nullable=False),
        sa.Column("accounting", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant", "idempotency_hash", name="uq_privacy_charges_tenant_key"),
    )
    op.create_table(
        "budget_changes",
        _id_column(),
        sa.Column(
            "tenant",
            sa.String(63),
            sa.ForeignKey("privacy_budgets.tenant", name="fk_budget_changes_tenant"),
            nullable=False,
        ),
        sa.Column("old_epsilon", sa.Double(), nullable=True),
        sa.Column("old_delta", sa.Double(), nullable=True),
        sa.Column("new_epsilon", sa.Double(), nullable=False),
        sa.Column("new_delta", sa.Double(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_budget_changes_tenant", "budget_changes", ["tenant"])
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION credittwin_ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only: its rows are never updated or deleted', TG_TABLE_NAME; END $$"
        )
        for table in _APPEND_ONLY_TABLES:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION credittwin_ledger_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION credittwin_ledger_append_only()"
            )
    elif dialect == "sqlite":
        for table in _APPEND_ONLY_TABLES:
            for action in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: its rows are never updated or deleted'); END"
                )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in _APPEND_ONLY_TABLES:
            for action in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
    op.drop_index("ix_budget_changes_tenant", table_name="budget_changes")
    op.drop_table("budget_changes")
    op.drop_table("privacy_charges")
    op.drop_table("privacy_budgets")
    if dialect == "postgresql":
        # the triggers went with their tables
        op.execute("DROP FUNCTION IF EXISTS credittwin_ledger_append_only()")
