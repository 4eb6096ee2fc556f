"""Benchmark: the harness's population evaluation against bare `model.generate`.

Measured in one run, interleaved member by member so machine noise hits both sides alike:
  - generated tokens/s of the harness scoring members (perturb, generate, reward, restore)
    against plain `model.generate` on the same prompts in their natural order;
  - perturb + restore time as a fraction of one member's evaluation;
  - peak memory (process RSS; GPU allocator peak when on a GPU).
Usage: python bench/throughput.py [--task arith] [--n-train 200] [--members 3] [--model PATH]
Writes bench/results.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.compute import Ledger  # noqa: E402
from harness.config import protocol_from  # noqa: E402
from harness.context import Member, TrainContext  # noqa: E402
from harness.generate import Engine, _eos_ids, _until_eos, render  # noqa: E402
from harness.model import load_model  # noqa: E402
from harness.perturb import Perturber  # noqa: E402
from harness.splits import train_items  # noqa: E402
from harness.task import get_task  # noqa: E402


def bare_generate(model, tokenizer, prompts, max_new_tokens, batch_size) -> int:
    """The baseline: tokenizer + model.generate in the prompts' own order; generated tokens."""
    eos, total = _eos_ids(model, tokenizer), 0
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                 pad_token_id=tokenizer.pad_token_id)
        total += sum(len(_until_eos(row, eos)) for row in out[:, enc.input_ids.shape[1]:].tolist())
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", default="arith")
    ap.add_argument("--model", default=None)
    ap.add_argument("--n-train", type=int, default=200, help="items per member (paper: 200)")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    task = get_task(args.task)
    protocol = protocol_from(args.task, "small", model=args.model, n_train=args.n_train, batch_size=args.batch_size)
    model, tokenizer = load_model(args.model, device)
    engine, perturber = Engine(model, tokenizer, args.batch_size), Perturber(model)
    items = train_items(task, protocol)
    prompts = [render(tokenizer, it.messages) for it in items]
    ctx = TrainContext(protocol, task, model, tokenizer, engine, perturber, Ledger(sum(p.numel() for _, p in perturber.params)),
                       items, engine.prepare(prompts), Path("/tmp"))
    max_new = ctx.max_new_tokens
    bare_generate(model, tokenizer, prompts[:args.batch_size], max_new, args.batch_size)  # warm-up

    harness_s, bare_s, perturb_s, harness_tok, bare_tok = [], [], [], 0, 0
    for i in range(args.members):
        member = Member(i, 1000 + i, 2e-3)
        start = time.perf_counter()
        perturber.apply(member.seed, member.sigma, member.noise)
        perturbed = time.perf_counter()
        completions = engine.generate(ctx.train_batches, max_new)
        ctx.rewards(completions)
        generated = time.perf_counter()
        perturber.restore()
        end = time.perf_counter()
        harness_s.append(end - start)
        perturb_s.append((perturbed - start) + (end - generated))
        harness_tok += sum(c.new_tokens for c in completions)
        start = time.perf_counter()
        bare_tok += bare_generate(model, tokenizer, prompts, max_new, args.batch_size)
        bare_s.append(time.perf_counter() - start)

    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result = {
        "task": args.task, "device": device, "n_train": len(items), "members": args.members,
        "max_new_tokens": max_new, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "harness_tokens_per_s": harness_tok / sum(harness_s), "bare_tokens_per_s": bare_tok / sum(bare_s),
        "throughput_ratio": (harness_tok / sum(harness_s)) / (bare_tok / sum(bare_s)),
        "member_eval_s": statistics.median(harness_s), "perturb_restore_s": statistics.median(perturb_s),
        "perturb_restore_fraction": sum(perturb_s) / sum(harness_s), "peak_rss_gib": rss_gib,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None,
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print("| measure | value |\n|---|---|")
    for key, value in result.items():
        print(f"| {key} | {value:.3g} |" if isinstance(value, float) else f"| {key} | {value} |")


if __name__ == "__main__":
    main()
