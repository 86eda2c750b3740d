"""Alembic migrations of the privacy ledger's tables (run by `PrivacyLedger.migrate`)."""
