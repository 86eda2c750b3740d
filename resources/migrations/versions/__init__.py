"""Revision scripts of the privacy ledger's schema."""
