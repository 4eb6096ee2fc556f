"""Greedy parity of the vLLM engine with the native engine, item by item (in .venv-vllm).

    make parity-vllm            # .venv-vllm/bin/python bench/vllm_parity.py

On every arith test item (1,000; `--items` fewer), float32 on CPU, the embedded SmolLM2 (or
`--model`): the base model and perturbed members (`--members seed:sigma:mode,...`) decoded
greedily by both engines with the task's prompts and max new tokens. Reported per member: the
share of items whose generated tokens are equal, whether prompt and new token counts (what the
ledger charges) are equal, whether the member is the same weights bit for bit on both engines,
and each differing item with the top-2 logit gap of the native model where the two part (a gap
of a few 1e-3 is a floating-point near-tie, not a defect). Writes bench/vllm_parity.json; the
last line printed is one line of JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.workloads import near_tie  # noqa: E402
from harness.engine.interface import render  # noqa: E402
from harness.engine.model import load_model, resolve_model  # noqa: E402
from harness.engine.native import NativeEngine  # noqa: E402
from harness.engine.select import open_vllm  # noqa: E402
from harness.engine.vllm import Settings  # noqa: E402
from harness.engine.vllm_worker import tensor_digest  # noqa: E402
from harness.errors import UserError  # noqa: E402
from harness.task import get_task  # noqa: E402

DEFAULT_MEMBERS = "1000:2e-3:iid,1001:2e-3:released,1002:5e-3:iid"


def parse_members(text: str) -> list[tuple[int, float, str]]:
    members = []
    for part in filter(None, text.split(",")):
        try:
            seed, sigma, mode = part.split(":")
            members.append((int(seed), float(sigma), mode))
        except ValueError:
            raise UserError(f"--members {part!r}: write seed:sigma:mode, e.g. 1000:2e-3:iid") from None
    return members


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--task", default="arith")
    ap.add_argument("--items", type=int, default=None, help="first N test items (default: all)")
    ap.add_argument("--members", default=DEFAULT_MEMBERS)
    ap.add_argument("--no-base", action="store_true", help="perturbed members only")
    ap.add_argument("--out", default=str(Path(__file__).with_name("vllm_parity.json")))
    args = ap.parse_args(argv)
    members = ([] if args.no_base else [None]) + parse_members(args.members)
    task = get_task(args.task)
    items = task.load("test", None)[:args.items]
    model, tokenizer = load_model(args.model)
    texts = [render(tokenizer, it.messages) for it in items]
    native = NativeEngine(model, tokenizer, 64)
    longest = max(len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids)
    start = time.perf_counter()
    vllm = open_vllm(resolve_model(args.model), model, tokenizer, 0, Settings(multiprocessing=False),
                     longest + task.max_new_tokens)
    report = {"model": args.model or "SmolLM2-135M-Instruct (embedded)", "task": task.name, "items": len(items),
              "max_new_tokens": task.max_new_tokens, "vllm_start_seconds": time.perf_counter() - start, "members": []}
    for member in members:
        report["members"].append(compare_member(model, tokenizer, native, vllm, texts, task.max_new_tokens, member))
        print(json.dumps({k: v for k, v in report["members"][-1].items() if k != "differing"}), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    headline = {"items": len(items), "vllm_start_seconds": round(report["vllm_start_seconds"], 1),
                **{label(m["member"]): m["same"] for m in report["members"]},
                "counts_equal": all(m["counts_equal"] for m in report["members"]),
                "weights_equal": all(m["weights_equal"] for m in report["members"])}
    print(json.dumps(headline))
    return headline


def label(member) -> str:
    return "same_base" if member is None else "same_{}_{}_{}".format(*member)


def compare_member(model, tokenizer, native, vllm, texts, max_new: int, member) -> dict:
    if member is not None:
        native.weights.apply(*member)
        vllm.weights.apply(*member)
    try:
        ours = {n: tensor_digest(p) for n, p in native.weights.params}
        weights_equal = vllm.weights.digests() == ours
        times = {}
        start = time.perf_counter()
        a = native.generate(native.prepare(texts), max_new)
        times["native_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        b = vllm.generate(vllm.prepare(texts), max_new)
        times["vllm_seconds"] = time.perf_counter() - start
        differing = [dict(item=i, **near_tie(model, tokenizer, texts[i], list(x.token_ids), list(y.token_ids)))
                     for i, (x, y) in enumerate(zip(a, b)) if x.token_ids != y.token_ids]
        counts = all((x.prompt_tokens, x.new_tokens) == (y.prompt_tokens, y.new_tokens)
                     for x, y in zip(a, b) if x.token_ids == y.token_ids)
        return {"member": member, "same": round(1 - len(differing) / len(texts), 4), "weights_equal": weights_equal,
                "counts_equal": counts, **times, "differing": differing}
    finally:
        if member is not None:
            native.weights.restore()
            vllm.weights.restore()


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:
        sys.exit(f"error: {exc}")
