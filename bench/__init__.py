"""Benchmarks for taskgate (``python -m bench.auth``)."""
