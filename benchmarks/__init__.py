"""Peer comparison for `jenova-fast prepare`: `python -m benchmarks.compare --insights 200000`.

Every approach runs in its own subprocess over the same seeded store; see benchmarks/README.md.
"""
