"""The CPU benchmark's workloads and the interleaved race of generation engines on them.

A workload is a list of prompts with a generation length. Every contender (bare
`model.generate`, the harness engine, optionally alternatives) runs the whole workload once
per round, the order rotating from round to round so that a shared machine's load hits all of
them alike; speed-ups are ratios of summed times over the same rounds.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from bench.measure import cpu_seconds, load_average
from harness.errors import UserError
from harness.engine.native import render
from harness.splits import first_items
from harness.task import get_task

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass
class Workload:
    name: str
    prompts: list[str]
    items: list
    max_new_tokens: int
    rounds: int


@dataclass
class Output:
    """One item's generation: text, token ids (generated, up to EOS) and prompt tokens."""

    text: str
    ids: list[int]
    prompt_tokens: int


@dataclass
class Result:
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)
    """This process's CPU time (all threads): steadier than wall time on a crowded machine."""
    outputs: list[Output] = field(default_factory=list)


def data_dir(arg: str | None) -> str:
    path = Path(arg or os.environ.get("DATA_DIR") or DEFAULT_DATA_DIR)
    if not (path / "gsm8k" / "train.jsonl").is_file():
        raise UserError(f"no gsm8k/train.jsonl under DATA_DIR={path}; pass --data-dir (or DATA_DIR=) "
                        "naming a folder laid out like ../shared/data")
    return str(path)


def workloads(tokenizer, arith_items: int, gsm8k_items: int, gsm8k_tokens: int, rounds: tuple[int, int],
              data: str | None) -> list[Workload]:
    """arith: prompt-heavy (the paper's 200 train items, 12 new tokens); gsm8k: decode-heavy."""
    out = []
    for (name, n, new, path), r in zip((("arith", arith_items, None, None),
                                        ("gsm8k", gsm8k_items, gsm8k_tokens, data_dir(data))), rounds):
        task = get_task(name)
        items = first_items(task, "train", n, path)
        out.append(Workload(name, [render(tokenizer, it.messages) for it in items], items,
                            new or task.max_new_tokens, r))
    return out


def race(workload: Workload, contenders: dict[str, Callable[[], list[Output]]], log=print) -> dict[str, Result]:
    """Run every contender `workload.rounds` times, rotating the order each round."""
    names, results = list(contenders), {name: Result() for name in contenders}
    for r in range(workload.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start, cpu = time.perf_counter(), cpu_seconds()
            outputs = contenders[name]()
            results[name].seconds.append(time.perf_counter() - start)
            results[name].cpu_seconds.append(cpu_seconds() - cpu)
            results[name].outputs = outputs
            log(f"  {workload.name} round {r + 1}/{workload.rounds}: {name} {results[name].seconds[-1]:.1f} s, "
                f"CPU {results[name].cpu_seconds[-1]:.1f} s (load {load_average():.1f})")
    return results


def same(a: list[Output], b: list[Output]) -> list[bool]:
    return [x.ids == y.ids for x, y in zip(a, b)]


@torch.inference_mode()
def near_tie(model, tokenizer, prompt: str, reference: list[int], other: list[int]) -> dict:
    """Where two greedy outputs part: the reference's top-2 logit gap there, recomputed in one
    full forward of prompt + common part (a gap of a few 1e-3 is a floating-point near-tie)."""
    k = next((i for i, (x, y) in enumerate(zip(reference, other)) if x != y), min(len(reference), len(other)))
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids.to(model.device)
    ids = torch.cat([ids, torch.tensor([reference[:k]], dtype=ids.dtype, device=ids.device)], dim=1)
    logits = model(input_ids=ids, logits_to_keep=1).logits[0, -1].float()
    top = torch.topk(logits, 2)
    pair = {seq[k] if k < len(seq) else -1 for seq in (reference, other)}
    return {"position": k, "reference": tokenizer.decode(reference[k:k + 1]), "other": tokenizer.decode(other[k:k + 1]),
            "top2_gap": round(float(top.values[0] - top.values[1]), 5), "top2_are_the_two": set(top.indices.tolist()) == pair}
