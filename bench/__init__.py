"""Benchmarks: aiostream_mux against pescador 3.0; run with ``python -m bench``."""
