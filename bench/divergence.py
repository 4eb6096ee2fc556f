"""How much of a member's greedy output the base model already wrote: the measurement that
decides whether verifying the base output (one teacher-forced pass per member, decoding only
after the first divergence) could pay.

For each sigma and member, per item: the member's greedy tokens before its first token that
differs from the base model's greedy output. Reported: that count summed over items, as a
share of the member's generated tokens (if it is high, most decoding steps could be replaced
by one parallel pass), and the share of items whose output is the base's exactly.

    python bench/divergence.py [--sigmas 0.001,0.002,0.003] [--members 3] [--arith-items 200]
                               [--gsm8k-items 32] [--gsm8k-tokens 256] [--data-dir ../shared/data]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.measure import load_average  # noqa: E402
from bench.workloads import workloads  # noqa: E402
from harness.engine.native import NativeEngine  # noqa: E402
from harness.engine.model import load_model  # noqa: E402
from harness.engine.perturb import Perturber  # noqa: E402


def agreement(base: list[tuple[int, ...]], member: list[tuple[int, ...]]) -> dict:
    """Tokens of the member before its first divergence from base, as a share of its tokens."""
    before = 0
    for b, m in zip(base, member):
        k = next((i for i, (x, y) in enumerate(zip(b, m)) if x != y), min(len(b), len(m)))
        before += k
    total = sum(len(m) for m in member)
    return {"tokens_before_divergence": before, "member_tokens": total, "share": before / max(total, 1),
            "identical_items": sum(b == m for b, m in zip(base, member)) / len(member)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sigmas", default="0.001,0.002,0.003")
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--arith-items", type=int, default=200)
    ap.add_argument("--gsm8k-items", type=int, default=32)
    ap.add_argument("--gsm8k-tokens", type=int, default=256)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tokenizer = load_model(args.model, "cpu")
    engine, perturber = NativeEngine(model, tokenizer, 64), Perturber(model)
    report = {}
    for load in workloads(tokenizer, args.arith_items, args.gsm8k_items, args.gsm8k_tokens, (1, 1), args.data_dir):
        batches = engine.prepare(load.prompts)
        run = lambda: [c.token_ids for c in engine.generate(batches, load.max_new_tokens)]  # noqa: E731
        base = run()
        for sigma in (float(s) for s in args.sigmas.split(",")):
            rows = []
            for m in range(args.members):
                perturber.apply(1000 + m, sigma, "iid")
                rows.append(agreement(base, run()))
                perturber.restore()
            before, total = sum(r["tokens_before_divergence"] for r in rows), sum(r["member_tokens"] for r in rows)
            report[f"{load.name} sigma={sigma:g}"] = {"share": before / total, "members": rows}
            print(f"{load.name} sigma={sigma:g}: {before / total:.1%} of member tokens precede the first divergence "
                  f"(items identical to base: {sum(r['identical_items'] for r in rows) / len(rows):.1%}; "
                  f"load {load_average():.1f})", flush=True)
    print(json.dumps({k: round(v["share"], 4) for k, v in report.items()}))
    return report


if __name__ == "__main__":
    main()
