"""Generation engines and the weights they generate with.

interface.py is the contract every engine implements (`Engine`, `Weights`, `Completion`, `render`);
native.py is thicket's own engine (decode.py: the decoding loop, kvcache.py: its caches);
perturb.py draws members' noise and restores exactly; adapters.py turns a LoRA adapter into
weight deltas; model.py loads models (Hub id, local folder, or the embedded SmolLM2).

May import: harness.errors and harness.runs (distributed, faults, storage). Nothing else of harness.
"""
