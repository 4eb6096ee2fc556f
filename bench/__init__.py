"""Benchmarks: `make bench` (bench/throughput.py) and the GPU shape mode (bench/shapes.py)."""
