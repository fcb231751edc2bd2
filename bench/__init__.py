"""Benchmarks of our stack against bare aiohttp and raw SAQ: `make bench` (see bench/README.md)."""
