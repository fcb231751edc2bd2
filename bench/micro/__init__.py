"""Micro-benchmarks: one process, no HTTP load generator; each module says how to run it."""
