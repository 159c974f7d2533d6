"""Benchmarks and evaluation on third-party data."""
