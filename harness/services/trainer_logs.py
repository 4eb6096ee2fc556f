"""Quieter Hugging Face trainers: thicket prints one line per step itself."""
from __future__ import annotations


def quiet(trainer) -> None:
    """Drop transformers' per-step printers; the methods' LedgerCallback prints one line per step instead."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
