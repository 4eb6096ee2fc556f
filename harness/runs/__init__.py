"""Run management: everything that makes a long run safe to kill, resume and read back.

runlock.py (one writer per run folder), units.py (finished units persisted as JSON lines, sharded
over processes), results.py (JSON with provenance), checkpoints.py (the newest complete trainer
checkpoint), storage.py (disk-space checks around writes), progress.py (bars and ETA),
tracking.py (Weights & Biases, offline by default), faults.py (named kill points for tests),
distributed.py (Accelerate processes), memory.py (peak memory).

May import: harness.errors only. Every other room may import this one.
"""
