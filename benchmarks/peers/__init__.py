"""One script per peer; each is run as `python -m benchmarks.peers.<name> --insights-dir DIR --output FILE
--threads N` in its own subprocess and writes one JSON record per line (any order, any JSON spelling)."""
