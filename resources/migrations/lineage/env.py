"""Alembic environment of the lineage audit trail.

Migrations run through `resources.lineage.LineageTrail.migrate`, which opens a
transaction, takes the migration lock and hands its connection over in
``config.attributes["connection"]``; running under that one transaction is what
makes two concurrent `migrate` calls safe. The trail keeps its own version
table (``lineage_alembic_version``), beside the privacy ledger's, so the two
migrate independently in the same database.
"""

from __future__ import annotations

from alembic import context

from resources.lineage import LINEAGE_VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the lineage trail's migrations run through resources.lineage.LineageTrail(url).migrate(), "
        "which supplies the connection; run that instead of the alembic command line."
    )
context.configure(connection=connection, target_metadata=metadata, version_table=LINEAGE_VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
