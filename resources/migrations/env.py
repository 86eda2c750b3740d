"""Alembic environment of the privacy ledger.

Migrations run through `resources.ledger.PrivacyLedger.migrate`, which opens a
transaction, takes the migration lock and hands its connection over in
``config.attributes["connection"]``; running under that one transaction is what
makes two concurrent `migrate` calls safe. The ledger keeps its own version
table so that it can share a database with other Alembic-managed stores.
"""

from __future__ import annotations

from alembic import context

from resources.ledger import LEDGER_VERSION_TABLE, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "the privacy ledger's migrations run through resources.ledger.PrivacyLedger(url).migrate(), "
        "which supplies the connection; run that instead of the alembic command line."
    )
context.configure(connection=connection, target_metadata=metadata, version_table=LEDGER_VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
