"""Dagster resources and IO managers: settings, storage, expectations."""
