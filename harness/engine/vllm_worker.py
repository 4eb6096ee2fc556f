"""Members inside vLLM's workers: a worker extension that perturbs vLLM's own weights in place.

vLLM mixes `ThicketWorker` into each of its workers (`LLM(worker_extension_cls=...)`), and the
harness calls its methods with `LLM.collective_rpc`, so this works with vLLM's multiprocessing
off (one process) and on (workers in their own processes) alike, and the weights never leave
the device: no model reload per member.

The same member gives the same weights as the native engine because the noise is drawn exactly
as `harness.engine.perturb` draws it, whole, per Hugging Face parameter, in their own order:
vLLM fuses some of them (q, k, v rows stacked into `qkv_proj`; gate, up into `gate_up_proj`),
pads the vocabulary and, under tensor parallelism, gives each worker a shard (column-parallel
layers a block of rows, row-parallel ones a block of columns, the vocabulary split over ranks,
norms and some k/v heads repeated). `probe_pieces` asks vLLM's own weight loader where each
Hugging Face parameter lands, so each is a view into its rows of a vLLM tensor holding one block
of it, and `ShardPerturber` (the native `Perturber`, cutting each whole draw to its block) runs
over those views: the base copy kept on the device, restore by copy, both noise modes, the ES
sum, loading weights and merging LoRA adapters by Hugging Face name. Every worker draws every
parameter's whole noise (the `iid` stream cannot be skipped ahead), so a member costs each rank
the draw of the whole model, and the noise of a repeated block is the same on every rank.

On CPU, vLLM prepacks linear weights for oneDNN after loading (a copy) and empties
`layer.weight`, so an in-place change would not reach the matmul. Importing this module (vLLM
does so in every worker before it loads the model) makes CPU linear layers keep their weight
and multiply with `torch.nn.functional.linear`: slower on CPU (about 1.5x, ENVIRONMENT.md), and
the only way found that keeps in-place members exact. GPUs do no such prepacking.
"""
from __future__ import annotations

import hashlib
import itertools
import math
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Whole:
    """What one Hugging Face parameter's noise is drawn as: its whole shape, on this worker's
    device (`iter_noise` reads shape, dtype, device and numel, as of a tensor)."""
    shape: tuple
    dtype: torch.dtype
    device: torch.device

    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Piece:
    """Where one Hugging Face parameter lives in this worker: rows [start, stop) of vLLM's tensor
    `target` hold the block `index` (a slice per dimension) of the whole parameter. With one
    worker, the block is the whole parameter; under tensor parallelism, this rank's shard."""
    name: str
    target: str
    start: int
    stop: int
    index: tuple

    def rect(self) -> list[tuple[int, int]]:
        return [(s.start, s.stop) for s in self.index]


class ShardPerturber(Perturber):
    """`Perturber` over the pieces a vLLM worker holds: the noise of every Hugging Face parameter
    is drawn whole, in the native order, on this worker's device, and each piece adds its block."""

    def __init__(self, vllm_params: dict, pieces: list[Piece], layout: list):
        super().__init__(_Views([(pc.name, vllm_params[pc.target].data[pc.start:pc.stop]) for pc in pieces]))
        self.pieces = pieces
        self.noise_params = [(name, Whole(tuple(shape), p.dtype, p.device))
                             for (name, shape), (_, p) in zip(layout, self.params)]
        self.sharded = any(tuple(b - a for a, b in pc.rect()) != tuple(shape) for pc, (_, shape) in zip(pieces, layout))

    def part(self, i: int, whole: torch.Tensor) -> torch.Tensor:
        return whole[self.pieces[i].index]

    def save_file(self, path: str) -> None:
        if self.sharded:  # the engine gathers the shards instead (VLLMWeights.save_file)
            raise RuntimeError("a tensor-parallel worker holds shards; save through the engine, which gathers them")
        super().save_file(path)


def probe_pieces(model, layout: list, packed: dict) -> list[Piece]:
    """Find where vLLM's own weight loader puts every Hugging Face parameter on this worker.

    For each parameter, its vLLM tensor is swapped for a float32 buffer on the CPU (its real
    weights are untouched) and vLLM's `load_weights` loads a probe whose values are the row
    numbers + 1, then one of column numbers + 1 (expanded views: no copy of the parameter): the
    buffer then says which block of the parameter each local row holds, whatever vLLM fuses
    (q/k/v, gate/up), pads (the vocabulary) or shards (tensor parallelism). Exact up to 2^24 rows
    or columns. Cost, once at start: two float32 scratch copies of the target tensor per parameter,
    on the host, one at a time (for a 7B model some tens of GB written to memory in all, not
    measured). Raises ValueError naming any parameter that does not land as one block."""
    layout = [(name, tuple(shape)) for name, shape in layout]  # across processes tuples arrive as lists
    vllm_params = dict(model.named_parameters())
    pieces = []
    for name, shape in layout:
        target = _locate(name, vllm_params, packed)
        param = vllm_params[target]
        if param.numel() == 0:
            raise ValueError(f"vLLM tensor {target} is empty (weights prepacked and removed): it cannot be perturbed")
        if len(shape) not in (1, 2):
            raise ValueError(f"{name} {shape}: only vectors and matrices can be mapped into vLLM (use --engine native)")
        if max(shape) >= 2**24:
            raise ValueError(f"{name} {shape}: a dimension of 2^24 or more cannot be probed exactly in float32")
        probes = [_probe(model, param, name, shape, axis) for axis in range(len(shape))]
        pieces.append(block(name, target, shape, probes))
    check_rows(vllm_params, pieces)
    return pieces


@torch.no_grad()
def _probe(model, param, name: str, shape: tuple, axis: int) -> torch.Tensor:
    numbers = torch.arange(1, shape[axis] + 1, dtype=torch.float32)
    view = [1] * len(shape)
    view[axis] = shape[axis]
    real, buffer = param.data, torch.zeros(param.shape, dtype=torch.float32)
    param.data = buffer
    try:
        model.load_weights([(name, numbers.view(view).expand(shape))])
    finally:
        param.data = real
    return buffer


def block(name: str, target: str, shape: tuple, probes: list[torch.Tensor]) -> Piece:
    """The Piece that probe buffers describe: local rows [start, stop) of `target` hold rows
    [r0, r0 + stop - start) (and, for a matrix, columns [c0, c0 + local columns)) of `name`;
    zero rows of the buffer were not written (another parameter's rows, or vocabulary padding)."""
    rows = probes[0].reshape(probes[0].shape[0], -1)
    hit = (rows > 0).any(dim=1).nonzero().flatten()
    if hit.numel() == 0:  # none of this parameter on this rank (a vocabulary shard of padding only)
        return Piece(name, target, 0, 0, (slice(0, 0),) + tuple(slice(0, n) for n in probes[0].shape[1:]))
    start, stop = int(hit[0]), int(hit[-1]) + 1
    r0 = int(rows[start, 0]) - 1
    expect_rows = torch.arange(r0 + 1, r0 + 1 + stop - start, dtype=torch.float32).view(-1, 1)
    ok = hit.numel() == stop - start and bool((rows[start:stop] == expect_rows).all())
    index = [slice(r0, r0 + stop - start)]
    if len(shape) > 1:
        cols = probes[1][start:stop].reshape(stop - start, -1)
        c0 = int(cols[0, 0]) - 1
        width = cols.shape[1]
        ok = ok and bool((cols == torch.arange(c0 + 1, c0 + 1 + width, dtype=torch.float32)).all())
        index.append(slice(c0, c0 + width))
    if not ok or index[0].stop > shape[0] or (len(shape) > 1 and index[1].stop > shape[1]):
        raise ValueError(f"{name} {shape} does not land in vLLM's {target} as one block of rows and columns; "
                         "thicket cannot map members onto this model in vLLM (use --engine native)")
    return Piece(name, target, start, stop, tuple(index))


def check_rows(vllm_params: dict, pieces: list[Piece]) -> None:
    """Every row of every vLLM tensor on this worker belongs to exactly one Hugging Face parameter,
    except vocabulary padding, so a member leaves nothing of the model unperturbed."""
    by_target: dict[str, list[Piece]] = {}
    for pc in pieces:
        by_target.setdefault(pc.target, []).append(pc)
    for target, param in vllm_params.items():
        spans = sorted((pc.start, pc.stop) for pc in by_target.get(target, []) if pc.stop > pc.start)
        if any(a < b_prev for (_, b_prev), (a, _) in zip(spans, spans[1:])):
            raise ValueError(f"vLLM tensor {target}: Hugging Face parameters overlap in its rows")
        rows = sum(b - a for a, b in spans)
        if rows != param.shape[0] and not _is_vocabulary(target):
            raise ValueError(f"vLLM tensor {target} {tuple(param.shape)}: {rows} rows mapped from Hugging Face "
                             "parameters; a member would leave the rest unperturbed")


def uncovered(shape: tuple, rects: list[list[tuple[int, int]]]) -> int:
    """How many elements of a parameter of `shape` no rectangle covers (rects: a (start, stop) per
    dimension, one per piece over all workers); 0 means every element is held somewhere."""
    cuts = [sorted({0, n} | {r[d][0] for r in rects} | {r[d][1] for r in rects}) for d, n in enumerate(shape)]
    cells = itertools.product(*(list(zip(c, c[1:])) for c in cuts))
    return sum(math.prod(b - a for a, b in cell) for cell in cells
               if not any(all(lo <= a and b <= hi for (a, b), (lo, hi) in zip(cell, r)) for r in rects))


def _locate(name: str, vllm_params: dict, packed: dict) -> str:
    """The vLLM tensor that holds Hugging Face parameter `name`: the same name, or the fused one
    that `packed` (the model's `packed_modules_mapping`, {"qkv_proj": ["q_proj", ...]}) names."""
    if name in vllm_params:
        return name
    module, _, leaf = name.rpartition(".")
    parent, _, part = module.rpartition(".")
    for fused, parts in packed.items():
        target = f"{parent}.{fused}.{leaf}" if parent else f"{fused}.{leaf}"
        if part in parts and target in vllm_params:
            return target
    raise ValueError(f"Hugging Face parameter {name} has no vLLM tensor (known fusions: {packed})")


def _is_vocabulary(target: str) -> bool:
    """vLLM pads the embedding and head rows (vocabulary) to a multiple of 64 and splits them over
    tensor-parallel ranks: rows past the vocabulary are never looked up or sampled, and stay at the base."""
    return "embed_tokens" in target or "lm_head" in target


class ThicketWorker:
    """The methods the harness calls on every vLLM worker (prefixed: they live in vLLM's class)."""

    def thicket_setup(self, layout: list) -> list:
        """Map the Hugging Face parameters onto this worker's tensors; returns each one's block
        (`Piece.rect`), so the engine can check that the workers together hold all of it."""
        model = self.model_runner.model
        packed = dict(getattr(model, "packed_modules_mapping", {}) or {})
        pieces = probe_pieces(model, layout, packed)
        self._thicket_weights = ShardPerturber(dict(model.named_parameters()), pieces, layout)
        self._thicket_snapshots: dict[int, list] = {}
        return [pc.rect() for pc in pieces]

    def thicket_piece(self, i: int) -> tuple[list, bytes]:
        """Hugging Face parameter i's block on this worker and its current values as raw bytes
        (a tensor would cross vLLM's engine-core messages as nested lists), for the engine to
        gather a tensor-parallel model (save, digests): `from_bytes` reads them back."""
        pc, (_, p) = self._thicket_weights.pieces[i], self._thicket_weights.params[i]
        return pc.rect(), to_bytes(p)

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


def to_bytes(t: torch.Tensor) -> bytes:
    """A tensor's raw bytes, in memory order (what digests hash and `thicket_piece` sends)."""
    return t.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes()


def from_bytes(data: bytes, dtype: torch.dtype, rect: list) -> torch.Tensor:
    """The block `thicket_piece` sent: its bytes as a tensor of `dtype` shaped by `rect`."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).view(dtype).reshape([b - a for a, b in rect])


def tensor_digest(t: torch.Tensor) -> str:
    return hashlib.sha256(to_bytes(t)).hexdigest()
