"""Services that tasks and methods call, shared so that no two plugins write them twice.

sandbox.py runs model-written programs isolated from the machine (MBPP's reward); distil.py is
LoRA distillation through TRL's SFTTrainer (iterative RandOpt); trainer_logs.py quiets
transformers' per-step printers.

May import: harness.errors, harness.vote, runs/ and engine/. Never methods/ or tasks/.
"""
