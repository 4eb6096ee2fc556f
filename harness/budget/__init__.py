"""Compute accounting: one currency (FLOPs from the tokens actually processed) for every method.

compute.py is the ledger and the paper's FLOP formulas; plan.py sizes each method's work from
the shared budget before weights load (`Sizing`, `Work`, the matched default budget);
projection.py is `thicket plan`: the sizes with projected wall time on this machine or a GPU.

May import: harness.errors, runs/, engine/ (prompt rendering, model probes), and the contracts
(config.py, splits.py, task.py, method.py: plugins by name through the loader).
"""
