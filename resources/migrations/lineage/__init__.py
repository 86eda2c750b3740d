"""Alembic environment and revisions of the lineage audit trail (resources.lineage)."""
