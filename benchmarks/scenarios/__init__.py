"""Benchmark scenarios: each runs in a fresh process and returns a ``Result``."""
