"""Benchmarks: each ``python -m bench.<name>`` prints a table and ratios and writes JSON."""
