"""Process sharding through Accelerate: each process scores its share, then all gather.

Under `accelerate launch --multi_gpu --num_processes N` (or torchrun) every process gets
a rank; on CPU, Accelerate needs `PartialState(cpu=True)` to see the gloo group
(measured with accelerate 1.x on CPU: without it each process runs alone). A plain `python` run is one process and needs no setup at all.
"""
from __future__ import annotations

import os
from functools import lru_cache


@lru_cache(maxsize=1)
def state():
    """Accelerate's PartialState when launched distributed, else None (single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def rank() -> int:
    s = state()
    return s.process_index if s else 0


def world() -> int:
    s = state()
    return s.num_processes if s else 1


def is_main() -> bool:
    return rank() == 0


def say(message: str) -> None:
    """Print once per run, from the main process (every process runs the same code)."""
    if is_main():
        print(message, flush=True)


def shard(items: list) -> list:
    """This process's share, round robin, so the split is the same on every run."""
    return items[rank()::world()]


def gather(objs: list) -> list:
    """Every process's list, concatenated (identical on all processes)."""
    if world() == 1:
        return list(objs)
    from accelerate.utils import gather_object

    return gather_object(objs)


def total(n: int) -> int:
    """The sum of an integer over every process (a collective: every process must call it)."""
    return sum(gather([int(n)]))


def barrier() -> None:
    s = state()
    if s:
        s.wait_for_everyone()


def device() -> str:
    import torch

    s = state()
    if s is not None:
        return str(s.device)
    return "cuda" if torch.cuda.is_available() else "cpu"
