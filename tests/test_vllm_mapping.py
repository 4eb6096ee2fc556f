"""How members map onto vLLM's tensors, without vLLM: the block each worker holds of a Hugging
Face parameter (read from vLLM's weight-loader probes), the check that the workers together hold
all of it, and `ShardPerturber` over tensor-parallel shards giving the native engine's weights bit
for bit. The real vLLM runs these paths in tests/test_vllm_engine.py (.venv-vllm)."""
from __future__ import annotations

import os

import pytest
import torch

from harness.engine.model import load_model
from harness.engine.perturb import Perturber
from harness.engine.vllm import Settings, own_devices, place
from harness.engine.vllm_worker import Piece, ShardPerturber, block, check_rows, from_bytes, to_bytes, uncovered
from harness.errors import UserError


def probe(local_shape, writes, axis):
    """A probe buffer as vLLM's loader leaves it: `writes` = [(local rows, hf rows, local cols, hf cols)]."""
    buffer = torch.zeros(local_shape)
    for rows, hf_rows, cols, hf_cols in writes:
        numbers = torch.arange(1, 1000, dtype=torch.float32)
        values = numbers[hf_rows].view(-1, 1) if axis == 0 else numbers[hf_cols].view(1, -1)
        buffer[rows, cols] = values.expand(rows.stop - rows.start, cols.stop - cols.start)
    return buffer


def test_a_fused_shard_is_read_as_its_block_of_rows():
    """k_proj (4 x 6) is rows 8..9 of a rank's qkv_proj (12 x 6), holding k's rows 2..3 (rank 1 of 2)."""
    writes = [(slice(8, 10), slice(2, 4), slice(0, 6), slice(0, 6))]
    piece = block("k", "qkv", (4, 6), [probe((12, 6), writes, 0), probe((12, 6), writes, 1)])
    assert piece == Piece("k", "qkv", 8, 10, (slice(2, 4), slice(0, 6)))


def test_a_row_parallel_shard_is_read_as_its_block_of_columns():
    writes = [(slice(0, 5), slice(0, 5), slice(0, 4), slice(4, 8))]
    piece = block("o", "o", (5, 8), [probe((5, 4), writes, 0), probe((5, 4), writes, 1)])
    assert piece == Piece("o", "o", 0, 5, (slice(0, 5), slice(4, 8)))


def test_a_rank_holding_none_of_a_vocabulary_gets_an_empty_piece_of_its_width():
    piece = block("embed", "embed", (40, 6), [torch.zeros(32, 6), torch.zeros(32, 6)])
    assert piece.stop == piece.start == 0 and piece.index == (slice(0, 0), slice(0, 6))


def test_rows_that_do_not_land_as_one_block_are_refused():
    swapped = [(slice(0, 1), slice(1, 2), slice(0, 3), slice(0, 3)), (slice(1, 2), slice(0, 1), slice(0, 3), slice(0, 3))]
    with pytest.raises(ValueError, match="one block"):
        block("w", "w", (2, 3), [probe((2, 3), swapped, 0), probe((2, 3), swapped, 1)])


def test_every_row_of_a_vllm_tensor_must_belong_to_a_parameter():
    params = {"qkv": torch.zeros(6, 2), "model.embed_tokens.weight": torch.zeros(8, 2)}
    pieces = [Piece("q", "qkv", 0, 4, ()), Piece("k", "qkv", 4, 5, ()), Piece("e", "model.embed_tokens.weight", 0, 5, ())]
    with pytest.raises(ValueError, match="qkv .* 5 rows mapped"):
        check_rows(params, pieces)
    check_rows(params, pieces + [Piece("v", "qkv", 5, 6, ())])  # embed's rows 5..7: vocabulary padding


def test_uncovered_counts_what_no_worker_holds():
    halves = [[(0, 4), (0, 3)], [(0, 4), (3, 6)]]
    assert uncovered((4, 6), halves) == 0
    assert uncovered((4, 6), halves[:1]) == 12
    assert uncovered((4, 6), [[(0, 4), (0, 6)], [(0, 4), (0, 6)]]) == 0  # repeated on both (a norm, a k/v head)
    assert uncovered((5,), [[(0, 2)], [(3, 5)]]) == 1


def test_a_tensor_parallel_process_takes_its_own_devices():
    assert own_devices(0, 1, ["0", "1"]) == ["0"] and own_devices(1, 2, list("0123")) == ["2", "3"]
    with pytest.raises(UserError, match="engine.tensor_parallel_size=2: process 1 .* only 3 are there"):
        own_devices(1, 2, list("012"))


def test_tensor_parallel_workers_on_cpu_get_their_own_cores(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    place(Settings(tensor_parallel_size=2), cpu=True)
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0,1|2,3"
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND")
    with pytest.raises(UserError, match="needs a core per worker; this machine gives 4"):
        place(Settings(tensor_parallel_size=8), cpu=True)


def shard(model, ranks: int):
    """Split every parameter the way tensor parallelism does: matrices alternately by rows (column
    parallel) and by columns (row parallel), vectors by rows, one of them repeated whole on every rank."""
    layout = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
    workers = []
    for rank in range(ranks):
        params, pieces = {}, []
        for k, (name, p) in enumerate(model.named_parameters()):
            index = [slice(0, n) for n in p.shape]
            if "norm" not in name:  # norms repeated on every rank
                dim = k % p.dim()
                size = -(-p.shape[dim] // ranks)
                index[dim] = slice(min(rank * size, p.shape[dim]), min((rank + 1) * size, p.shape[dim]))
            local = p.detach()[tuple(index)].clone()
            params[name] = local
            pieces.append(Piece(name, name, 0, local.shape[0], tuple(index)))
        workers.append(ShardPerturber(params, pieces, layout))
    return workers


def gathered(workers, layout) -> dict:
    wholes = {name: torch.full(shape, float("nan")) for name, shape in layout}
    for worker in workers:
        for i, (name, _) in enumerate(layout):
            rect = worker.pieces[i].rect()
            wholes[name][worker.pieces[i].index] = from_bytes(to_bytes(worker.params[i][1]), torch.float32, rect)
    return wholes


@pytest.mark.parametrize("mode", ["iid", "released"])
def test_shards_give_the_native_member_bit_for_bit(tiny_model_dir, tmp_path, mode):
    model, _ = load_model(tiny_model_dir)
    layout = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
    workers = shard(model, 3)
    assert any(w.sharded for w in workers)
    native = Perturber(model)
    assert all(w.n_params == native.n_params for w in workers)

    def same() -> bool:
        wholes = gathered(workers, layout)
        return all(torch.equal(wholes[name], p) for name, p in native.params)

    for target in workers + [native]:
        target.apply(5, 0.05, mode)
    assert same()
    terms = [(1, 0.7, "iid"), (2, -1.3, "released")]
    for target in workers + [native]:
        target.add_noise_sum(terms, 0.01)
    assert same()
    native.save_file(str(tmp_path / "w.safetensors"))
    for target in workers + [native]:
        target.restore()
    assert same()
    for target in workers + [native]:
        target.load_file(str(tmp_path / "w.safetensors"))
    assert same()
    with pytest.raises(RuntimeError, match="gathers them"):
        next(w for w in workers if w.sharded).save_file(str(tmp_path / "x.safetensors"))
