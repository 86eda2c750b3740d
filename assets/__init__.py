"""Software-defined assets: thin functions that load, call `models/`, and record metadata."""
