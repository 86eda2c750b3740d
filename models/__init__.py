"""The science of CreditTwin: plain Python, no Dagster import.

Everything here can be imported, tested and benchmarked on its own.
"""
