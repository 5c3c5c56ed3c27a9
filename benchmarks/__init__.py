"""Benchmarks for aigi (run as modules from the repository root, e.g. ``python -m benchmarks.throughput``)."""
