"""Benchmarks: `python -m bench [NAME...]` prints a table for each (see README)."""
