"""A LoRA adapter's effect on the weights, for engines that merge it in place.

`lora_deltas`: (parameter name, B @ A * scaling) per adapted weight of a peft adapter folder,
the same arithmetic as peft's merge, so an engine can add it to its own weights (the native
engine's `Perturber.add_adapter`) without a second copy of the model.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

ADAPTER_PREFIX = "base_model.model."
"""peft's key prefix in adapter_model.safetensors, in front of the base model's module names."""


def lora_deltas(path: str) -> Iterator[tuple[str, "torch.Tensor"]]:  # noqa: F821
    """(base parameter name, delta) for each weight a peft LoRA adapter folder adapts.

    delta = (B @ A) * scaling, transposed for fan_in_fan_out layers: peft's own get_delta_weight,
    so adding it to the weight gives merge_and_unload's weights bit for bit. Adapter kinds
    peft merges differently (DoRA, per-module ranks, trained biases, saved modules) are refused.
    """
    from peft import LoraConfig
    from safetensors.torch import load_file

    cfg = LoraConfig.from_pretrained(path)
    unsupported = [name for name, on in (("use_dora", cfg.use_dora), ("rank_pattern", cfg.rank_pattern),
                                         ("alpha_pattern", cfg.alpha_pattern), ("lora_bias", cfg.lora_bias),
                                         ("modules_to_save", cfg.modules_to_save)) if on]
    if unsupported:
        raise ValueError(f"adapter {path}: {', '.join(unsupported)} not supported (plain LoRA only)")
    scaling = cfg.lora_alpha / (math.sqrt(cfg.r) if cfg.use_rslora else cfg.r)
    weights = load_file(str(Path(path) / "adapter_model.safetensors"))
    for key in sorted(k for k in weights if k.endswith(".lora_A.weight")):
        module = key[:-len(".lora_A.weight")]
        delta = weights[f"{module}.lora_B.weight"] @ weights[key]
        delta = (delta.T if cfg.fan_in_fan_out else delta) * scaling
        yield module.removeprefix(ADAPTER_PREFIX) + ".weight", delta
