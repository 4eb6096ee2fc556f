"""Gaussian weight perturbations theta + sigma * eps(seed), and exact restore.

Two noise modes (docs/paper.md section 1), both regenerable from (seed, mode) alone:
- `iid`: one generator seeded once, advanced across parameters in a fixed order, so every
  parameter gets independent noise (what the paper's maths describes).
- `released`: what the authors' code does: a fresh generator seeded with the same seed for
  EVERY parameter tensor, so tensors of equal shape get identical noise.

Every parameter is perturbed (weights, biases, norm gains, embeddings); a tied embedding is
one parameter and is perturbed once. Restore copies back from a stored base: subtracting
regenerated noise is not bit-exact and drifts over thousands of cycles.

Cost: drawing the noise is most of a perturbation on CPU (torch's generator, one core, about
4 ns a number here: 0.5 s for SmolLM2's 134.5M parameters). `iid` must draw every number in
sequence from one generator, so it cannot be split over cores without changing the noise.
`released` noise depends only on a tensor's shape, so it is drawn once per distinct shape and
added to every tensor of that shape: for a transformer, the embedding plus one layer's worth
(SmolLM2: 30.5M numbers instead of 134.5M), bit-identical to drawing it per tensor.
"""
from __future__ import annotations

from typing import Iterator

import torch

NOISE_MODES = ("iid", "released")


def parameters(model) -> list[tuple[str, torch.nn.Parameter]]:
    """Every distinct parameter in a fixed order (named_parameters drops tied duplicates)."""
    return list(model.named_parameters())


def noise_groups(params, mode: str) -> list[list[int]]:
    """Indices of the parameters that share one draw of eps, in drawing order.

    iid: every parameter alone, in parameter order (the generator advances through them).
    released: parameters of equal shape, dtype and device together, since each draw restarts
    the generator from the same seed; groups in order of first appearance.
    """
    if mode not in NOISE_MODES:
        raise ValueError(f"noise mode {mode!r}; choose one of {NOISE_MODES}")
    if mode == "iid":
        return [[i] for i in range(len(params))]
    groups: dict[tuple, list[int]] = {}
    for i, (_, p) in enumerate(params):
        groups.setdefault((tuple(p.shape), p.dtype, p.device), []).append(i)
    return list(groups.values())


def iter_noise(params, seed: int, mode: str, scratch: dict | None = None
               ) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(indices, eps) per noise group (`noise_groups`): eps ~ N(0, I) in the shape, dtype and
    device of the parameters `params[i]` for i in indices, each of which gets this same eps.

    With `scratch` (a dict kept by the caller) eps is written into a reused buffer, which
    is about twice as fast on CPU as allocating; each eps is then only valid until the
    next one is drawn. `randn(out=...)` draws the same values as `randn(shape)`.
    """
    gen = None
    for indices in noise_groups(params, mode):
        p = params[indices[0]][1]
        if gen is None or mode == "released":
            gen = torch.Generator(device=p.device).manual_seed(int(seed))
        if scratch is None:
            yield indices, torch.randn(p.shape, generator=gen, dtype=p.dtype, device=p.device)
            continue
        key = (p.dtype, p.device)
        buf = scratch.get(key)
        if buf is None or buf.numel() < p.numel():
            buf = scratch[key] = torch.empty(max(q.numel() for _, q in params), dtype=p.dtype, device=p.device)
        eps = buf[:p.numel()].view(p.shape)
        torch.randn(p.shape, generator=gen, dtype=p.dtype, device=p.device, out=eps)
        yield indices, eps


class Perturber:
    """Applies members' perturbations to one model in place and restores the base exactly: the
    native engine's `harness.engine.interface.Weights`.

    `params[i]` may hold only a part of a parameter (a tensor-parallel shard inside vLLM's
    workers, harness/engine/vllm_worker.py): the noise is always drawn for the whole parameter
    (`noise_params`, what `iter_noise` draws in the native order) and `part(i, whole)` cuts out
    the piece `params[i]` holds. Here every parameter is whole."""

    def __init__(self, model):
        self.params = parameters(model)
        self.noise_params = self.params
        self.base = [p.detach().clone() for _, p in self.params]
        self.dirty = False
        self.scratch: dict = {}

    def part(self, i: int, whole: torch.Tensor) -> torch.Tensor:
        """The piece of `whole` (shaped like the whole parameter i) that `params[i]` holds."""
        return whole

    @property
    def n_params(self) -> int:
        return sum(p.numel() for _, p in self.noise_params)

    def dtypes(self) -> dict:
        return {name: p.dtype for name, p in self.params}

    def base_snapshot(self) -> list[torch.Tensor]:
        return self.base

    def reset_to(self, snapshot: list[torch.Tensor]) -> None:
        self.base = snapshot
        self.restore()

    def apply(self, seed: int, sigma: float, mode: str) -> None:
        """theta <- base + sigma * eps(seed); always starts from the base."""
        if self.dirty:
            self.restore()
        self.add_noise(seed, sigma, mode)

    @torch.no_grad()
    def add_noise(self, seed: int, sigma: float, mode: str) -> None:
        """theta <- theta + sigma * eps(seed), on top of the current weights."""
        for indices, eps in iter_noise(self.noise_params, seed, mode, self.scratch):
            eps.mul_(sigma)  # sigma*eps first, then add: the authors' rounding order
            for i in indices:
                self.params[i][1].add_(self.part(i, eps))
        self.dirty = True

    @torch.no_grad()
    def add_noise_sum(self, terms, scale: float) -> None:
        """theta <- theta + scale * sum_i c_i * eps(seed_i), the sum accumulated in float32 per
        parameter and added once in the weights' dtype (the ES update's rounding)."""
        acc = [torch.zeros(p.shape, dtype=torch.float32, device=p.device) for _, p in self.params]
        for seed, coefficient, mode in terms:
            if coefficient == 0:
                continue
            for indices, eps in iter_noise(self.noise_params, seed, mode, self.scratch):
                eps = eps.float()
                for i in indices:
                    acc[i].add_(self.part(i, eps), alpha=float(coefficient))
        for (_, p), a in zip(self.params, acc):
            p.add_(a.mul_(scale).to(p.dtype))
        self.dirty = True

    @torch.no_grad()
    def restore(self) -> None:
        for (_, p), b in zip(self.params, self.base):
            p.copy_(b)
        self.dirty = False

    @torch.no_grad()
    def load_file(self, path: str) -> None:
        """Load trained weights saved by `save_file` (safetensors, keyed by parameter name), one
        tensor at a time; restorable like a member."""
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            names = set(f.keys())
            for i, (name, p) in enumerate(self.params):
                if name not in names:
                    raise ValueError(f"{path} has no tensor {name!r}: it was not saved from this model")
                p.copy_(self.part(i, f.get_tensor(name)))
        self.dirty = True

    @torch.no_grad()
    def add_adapter(self, path: str) -> None:
        """theta <- theta + a peft LoRA adapter's merged delta, in place: the weights peft's
        merge_and_unload would give, without a second copy of the model on disk or in memory.
        Restorable like a perturbation."""
        from harness.engine.adapters import lora_deltas

        index = {name: i for i, (name, _) in enumerate(self.params)}
        for name, delta in lora_deltas(path):
            if name not in index:
                raise ValueError(f"adapter {path} adapts {name!r}, which this model does not have")
            p = self.params[index[name]][1]
            p.add_(self.part(index[name], delta.to(p.device)))  # in the weight's dtype, as peft's merge
        self.dirty = True

    def save_file(self, path: str) -> None:
        """Save the current weights (every distinct parameter) for a later `load_file`."""
        save_tensors(path, self.params)

    @torch.no_grad()
    def rebase(self) -> None:
        """Adopt the current weights as the new base (ES after an update)."""
        self.base = [p.detach().clone() for _, p in self.params]
        self.dirty = False


def save_tensors(path: str, named) -> None:
    """Write [(name, tensor)] as one safetensors file; a full disk is a one-line error."""
    from safetensors.torch import save_file

    from harness.runs import storage

    named = list(named)
    need = sum(t.numel() * t.element_size() for _, t in named)
    with storage.writing(path, need):
        save_file({name: t.detach().contiguous().cpu() for name, t in named}, path)
