"""Members inside vLLM's workers: a worker extension that perturbs vLLM's own weights in place.

vLLM mixes `ThicketWorker` into each of its workers (`LLM(worker_extension_cls=...)`), and the
harness calls its methods with `LLM.collective_rpc`, so this works with vLLM's multiprocessing
off (one process) and on (workers in their own processes) alike, and the weights never leave
the device: no model reload per member.

The same member gives the same weights as the native engine because the noise is drawn exactly
as `harness.engine.perturb` draws it, over the Hugging Face parameters in their own order:
vLLM fuses some of them (q, k, v rows stacked into `qkv_proj`; gate, up into `gate_up_proj`)
and may pad the vocabulary, so each Hugging Face parameter is a view into its rows of a vLLM
tensor, and `Perturber` (the native engine's weights) runs unchanged over those views: the
base copy kept on the device, restore by copy, both noise modes, the ES sum, loading and
saving weights and merging LoRA adapters by Hugging Face name.

On CPU, vLLM prepacks linear weights for oneDNN after loading (a copy) and empties
`layer.weight`, so an in-place change would not reach the matmul. Importing this module (vLLM
does so in every worker before it loads the model) makes CPU linear layers keep their weight
and multiply with `torch.nn.functional.linear`: slower on CPU (about 1.5x, ENVIRONMENT.md), and
the only way found that keeps in-place members exact. GPUs do no such prepacking.
"""
from __future__ import annotations

import hashlib

import torch

from harness.engine.perturb import Perturber


def _keep_cpu_weights() -> None:
    try:
        from vllm.model_executor.layers import utils
    except ImportError:  # imported without vLLM (tests of the mapping)
        return

    def keep(layer, remove_weight: bool) -> None:  # replaces vLLM's oneDNN/SGL prepacking on CPU
        layer.cpu_linear = torch.nn.functional.linear

    utils.dispatch_cpu_unquantized_gemm = keep


_keep_cpu_weights()


class _Views:
    """A model-like object whose parameters are the Hugging Face ones, as views into vLLM's."""

    def __init__(self, named):
        self.named = named

    def named_parameters(self):
        return iter(self.named)


def hf_views(vllm_params: dict, layout: list, packed: dict) -> list[tuple[str, torch.Tensor]]:
    """(Hugging Face name, view into a vLLM tensor) per entry of `layout` [(name, shape)], in order.

    `packed` is the model's `packed_modules_mapping` ({"qkv_proj": ["q_proj", "k_proj", "v_proj"],
    ...}): a fused tensor stacks its parts' rows in that order. Raises ValueError naming any
    parameter that cannot be mapped, or any vLLM tensor that the views do not cover exactly."""
    layout = [(name, tuple(shape)) for name, shape in layout]  # across processes tuples arrive as lists
    shapes = dict(layout)
    views, covered = [], {}
    for name, shape in layout:
        target, offset = _locate(name, shapes, vllm_params, packed)
        param = vllm_params[target].data
        if param.numel() == 0:
            raise ValueError(f"vLLM tensor {target} is empty (weights prepacked and removed): it cannot be perturbed")
        if tuple(param.shape[1:]) != shape[1:] or offset + shape[0] > param.shape[0]:
            raise ValueError(f"{name} {shape} does not fit vLLM's {target} {tuple(param.shape)} at row {offset}")
        views.append((name, param[offset:offset + shape[0]]))
        covered[target] = covered.get(target, 0) + shape[0]
    for target, param in vllm_params.items():
        rows = covered.get(target, 0)
        if rows != param.shape[0] and not (rows and _is_padded_vocabulary(target, rows, param)):
            raise ValueError(f"vLLM tensor {target} {tuple(param.shape)}: {rows} rows mapped from Hugging Face "
                             "parameters; a member would leave the rest unperturbed")
    return views


def _locate(name: str, shapes: dict, vllm_params: dict, packed: dict) -> tuple[str, int]:
    if name in vllm_params:
        return name, 0
    module, _, leaf = name.rpartition(".")
    parent, _, part = module.rpartition(".")
    for fused, parts in packed.items():
        if part in parts:
            target = f"{parent}.{fused}.{leaf}" if parent else f"{fused}.{leaf}"
            if target in vllm_params:
                before = parts[:parts.index(part)]
                offset = sum(shapes[f"{parent}.{p}.{leaf}" if parent else f"{p}.{leaf}"][0] for p in before)
                return target, offset
    raise ValueError(f"Hugging Face parameter {name} has no vLLM tensor (known fusions: {packed})")


def _is_padded_vocabulary(target: str, rows: int, param: torch.Tensor) -> bool:
    """vLLM may pad the embedding and head rows (vocabulary) to a multiple of 64: the rows past
    the vocabulary are never looked up or sampled, and stay at the base."""
    return ("embed_tokens" in target or "lm_head" in target) and rows < param.shape[0]


class ThicketWorker:
    """The methods the harness calls on every vLLM worker (prefixed: they live in vLLM's class)."""

    def thicket_setup(self, layout: list) -> int:
        model = self.model_runner.model
        packed = dict(getattr(model, "packed_modules_mapping", {}) or {})
        self._thicket_weights = Perturber(_Views(hf_views(dict(model.named_parameters()), layout, packed)))
        self._thicket_snapshots: dict[int, list] = {}
        return self._thicket_weights.n_params

    def thicket_call(self, method: str, args: tuple = ()):
        """Run one `Perturber` method on this worker's weights (the engine's `Weights` interface)."""
        return getattr(self._thicket_weights, method)(*args)

    def thicket_snapshot(self) -> int:
        token = len(self._thicket_snapshots)
        self._thicket_snapshots[token] = self._thicket_weights.base_snapshot()
        return token

    def thicket_reset_to(self, token: int) -> None:
        self._thicket_weights.reset_to(self._thicket_snapshots[token])

    def thicket_dirty(self) -> bool:
        return self._thicket_weights.dirty

    def thicket_dtypes(self) -> dict:
        return {name: str(dtype).removeprefix("torch.") for name, dtype in self._thicket_weights.dtypes().items()}

    def thicket_digests(self) -> dict:
        """sha256 of every Hugging Face parameter's bytes as the worker holds it (tests compare engines)."""
        return {name: tensor_digest(p) for name, p in self._thicket_weights.params}


def tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
