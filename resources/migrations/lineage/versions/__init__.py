"""Revision scripts of the lineage audit trail's schema."""
