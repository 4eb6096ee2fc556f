"""thicket's harness: what must be identical for every method.

The spine lives at this level: the plugin contracts and their loaders (task.py, method.py),
the protocol and settings (config.py, argtypes.py), the splits (splits.py), what a method trains
with (context.py), the one evaluation path (evaluate.py, vote.py), the comparison (compare.py)
and the command line (cli.py, registry.py). The rooms below hold the machinery:

- engine/    generation engines, weights, perturbation and restore (the Engine interface)
- runs/      run folders, locks, resumable units, results, checkpoints, progress, W&B, faults
- budget/    the FLOP ledger, sizing each method from the budget, `thicket plan`'s projection
- services/  what tasks and methods call: the code sandbox, LoRA distillation, trainer logs
- analysis/  reads finished runs: report, plots, statistics, cross-checks (the spine never imports it)

Import rule (tests/test_layering.py): methods/ and tasks/ import harness, never the reverse
(plugins are found by name through the loaders); runs/ imports nothing else of harness but
errors; engine/ may import runs/; services/ may import engine/ and runs/; budget/ may import
engine/, runs/ and the contracts; no import circle anywhere. docs/architecture.md has the map.
"""
