"""`make bench`: the harness's generation engine against bare `model.generate`, in one run.

On the same prompts and the same perturbed member (seed 1000, sigma 2e-3, the embedded
SmolLM2-135M-Instruct, float32 on CPU), two workloads:
- arith: the paper's 200 train items per member, 12 new tokens (prompt-heavy);
- gsm8k: 64 train items from DATA_DIR (default ../shared/data), 256 new tokens (decode-heavy).
Contenders: bare `model.generate` at batch 64 in the prompts' own order (what a user would
write) and `harness.engine.native.NativeEngine` as the harness uses it (batch 64); `--alternatives` adds
transformers' continuous batching (`generate_batch`, arith only) and the engine with each of
its optimisations switched off (bench/contenders.py). They run interleaved, the order rotating
each round, so the load of a shared machine hits all alike; speed-ups are ratios of summed
wall times over the same rounds (CPU-time ratios are printed beside them: on a crowded
machine they are the steadier figure, and `--threads 1` steadier still).

Reported per workload: nominal tokens/s (prompt + generated tokens, what the ledger charges)
of each contender, the speed-up, the share of items whose greedy tokens equal bare
generate's (those that differ are listed with the top-2 logit gap where they part), and the
engine's model-FLOP rate as a fraction of the measured fp32 matmul peak of the model's MLP
shape (4096 x hidden @ hidden x intermediate, best of 5; FLOPs as in bench/measure.py). Also
perturb + restore as a share of one member's arith evaluation (perturb, generate, rewards,
restore: the shortest evaluation, so the largest share) for the default `iid` noise and, as
`perturb_restore_share_released`, for the authors' `released` noise, and the process's peak RSS.
Also `vllm`, where vLLM is installed (`make bench` runs in .venv-vllm; `--vllm off` leaves it
out): the vLLM engine as `--engine vllm` runs it, with the same member applied inside vLLM,
reported like the engine (tokens/s, speed-up over bare, share of outputs equal to bare's) plus
`vllm_start_seconds` (engine start-up) and `perturb_restore_share_vllm` (perturb + restore
inside vLLM against its own arith evaluation).
Also `engine_draft`: the engine given the base model's greedy outputs as drafts (off by default
in the harness, `NativeEngine.draft_members`; this is the measurement that decides it).
Also `flop_ratio_<workload>`: the model FLOPs bare generate executed (its padding and the
finished rows it keeps included) over the engine's. The engine's speed-up is that ratio (the
work it avoids) times its FLOP rate over bare's (how well it runs what is left); on arith,
where bare wastes little, the ratio is about 1.8 and bounds what the engine can gain there
at equal efficiency.
Writes bench/results.json; the last line printed is one line of JSON with the headline keys,
then `speedup_draft_<workload>`, `same_draft_<workload>` and `flop_ratio_<workload>`.

`--shapes NAME,...` runs the GPU mode instead (bench/shapes.py): random models of real shapes.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import measure, workloads as wl  # noqa: E402
from bench.contenders import alternative_names, base_drafts, contenders, start_vllm  # noqa: E402
from harness.runs import memory  # noqa: E402
from harness.errors import UserError  # noqa: E402
from harness.engine.model import load_model, resolve_model  # noqa: E402
from harness.engine.vllm import vllm_version  # noqa: E402
from harness.engine.perturb import NOISE_MODES, Perturber, iter_noise  # noqa: E402
from harness.task import checked_rewards, get_task  # noqa: E402

HEADLINE = ("speedup_arith", "speedup_gsm8k", "same_arith", "same_gsm8k", "peak_fraction_arith",
            "peak_fraction_gsm8k", "perturb_restore_share", "peak_rss_gib")


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M-Instruct")
    ap.add_argument("--data-dir", default=None, help="folder with gsm8k/train.jsonl (default ../shared/data)")
    ap.add_argument("--arith-items", type=int, default=200)
    ap.add_argument("--gsm8k-items", type=int, default=64)
    ap.add_argument("--gsm8k-tokens", type=int, default=256)
    ap.add_argument("--rounds", default="2,1", help="rounds of arith,gsm8k (each runs every contender once)")
    ap.add_argument("--workloads", default="arith,gsm8k", help="a subset to time (the headline needs both)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--alternatives", nargs="?", const="all", default="",
                    help="also race these alternatives (comma-separated names, or all: bench/contenders.py)")
    ap.add_argument("--sigma", type=float, default=2e-3)
    ap.add_argument("--vllm", choices=("auto", "on", "off"), default="auto",
                    help="race the vLLM engine too (auto: where vLLM is installed)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    ap.add_argument("--shapes", default=None, help="GPU mode: comma-separated names in bench/shapes/")
    args, rest = ap.parse_known_args(argv)
    return args, rest


def main(argv=None) -> dict:
    args, rest = parse(argv)
    if args.shapes:
        from bench import shapes
        return shapes.main(["--shapes", args.shapes, *rest])
    if rest:
        raise UserError(f"unknown arguments {' '.join(rest)}; see python bench/throughput.py --help")
    alternative_names(args.alternatives)  # fail before loading anything
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = tuple(int(r) for r in args.rounds.split(","))
    model, tokenizer = load_model(args.model, "cpu")
    loads = [w for w in wl.workloads(tokenizer, args.arith_items, args.gsm8k_items, args.gsm8k_tokens, rounds,
                                     args.data_dir) if w.name in args.workloads.split(",")]
    hidden, inter = measure.mlp_shape(model.config)
    peak = measure.matmul_peak(4096, hidden, inter)
    print(f"fp32 matmul peak (4096x{hidden} @ {hidden}x{inter}): {peak / 1e9:.0f} GFLOP/s, "
          f"{torch.get_num_threads()} threads, load {measure.load_average():.1f}", flush=True)
    drafts = {load.name: base_drafts(model, tokenizer, load, args.batch_size) for load in loads}
    member = (1000, args.sigma, "iid")  # one member, the same for every contender
    perturber = Perturber(model)
    perturber.apply(*member)
    flops = measure.FlopCounter(model)
    report = {"model": args.model or "SmolLM2-135M-Instruct (embedded)", "threads": torch.get_num_threads(),
              "peak_flops": peak, "load_start": measure.load_average(), "workloads": {}}
    vllm = None
    if wants_vllm(args.vllm):
        vllm, report["vllm_start_seconds"] = start_vllm(model, tokenizer, resolve_model(args.model), loads, member,
                                                        args.batch_size)
        report["vllm"] = vllm_version()
    engine_results = {}
    for load in loads:
        race = contenders(model, tokenizer, load, args.batch_size, args.alternatives, drafts[load.name], vllm)
        results = wl.race(load, race, log=lambda s: print(s, flush=True))
        report["workloads"][load.name] = summarize(model, tokenizer, load, race, results, flops, peak, args.batch_size)
        engine_results[load.name] = results
    report["perturb_restore"] = {load.name: perturb_share(perturber, load, engine_results[load.name]["engine"],
                                                          args.sigma) for load in loads}
    if vllm is not None:
        report["perturb_restore_vllm"] = {load.name: perturb_share(
            vllm.weights, load, engine_results[load.name]["vllm"], args.sigma, modes=("iid",)) for load in loads}
    report.update(load_end=measure.load_average(), peak_rss_gib=memory.peak_gib()["rss_gib"],
                  peak_matmul_end=measure.matmul_peak(4096, hidden, inter))
    Path(args.out).write_text(json.dumps(report, indent=1))
    headline = print_report(report)
    print(json.dumps(headline))
    return headline


def wants_vllm(choice: str) -> bool:
    installed = vllm_version() is not None
    if choice == "on" and not installed:
        raise UserError("--vllm on: vLLM is not installed here; run the bench in .venv-vllm (make install-vllm)")
    return installed if choice == "auto" else choice == "on"


def bare_flops(flops, outputs, batch_size: int) -> float:
    """What bare generate executed: consecutive batches, each padded to its longest prompt and
    run until its longest output ends."""
    batches = [outputs[i:i + batch_size] for i in range(0, len(outputs), batch_size)]
    return sum(flops.padded_batch(len(b), max(o.prompt_tokens for o in b), max(len(o.ids) for o in b))
               for b in batches)


def summarize(model, tokenizer, load, race, results, flops, peak, batch_size: int) -> dict:
    bare, engine = results["bare"], results["engine"]
    nominal = lambda r: sum(o.prompt_tokens + len(o.ids) for o in r.outputs)  # noqa: E731
    out = {}
    for name, r in results.items():
        out[name] = {"seconds": r.seconds, "cpu_seconds": r.cpu_seconds,
                     "tokens_per_s": nominal(r) * len(r.seconds) / sum(r.seconds),
                     "new_tokens_per_s": sum(len(o.ids) for o in r.outputs) * len(r.seconds) / sum(r.seconds),
                     "speedup": sum(bare.seconds) / sum(r.seconds),
                     "cpu_speedup": sum(bare.cpu_seconds) / sum(r.cpu_seconds),
                     "same": sum(wl.same(bare.outputs, r.outputs)) / len(load.prompts)}
    cached = race["engine"].prefix_length
    work = flops.prefix(cached) + sum(flops.item(o.prompt_tokens, len(o.ids), cached) for o in engine.outputs)
    out["engine"]["model_flops"] = work
    out["engine"]["peak_fraction"] = work * len(engine.seconds) / sum(engine.seconds) / peak
    out["engine"]["shared_prefix_tokens"] = cached
    executed = bare_flops(flops, bare.outputs, batch_size)
    out["bare"]["model_flops_executed"] = executed
    out["bare"]["peak_fraction"] = executed * len(bare.seconds) / sum(bare.seconds) / peak
    out["engine"]["flop_ratio"] = executed / work
    for name in ("engine", "vllm"):
        if name in results:
            out["differing" if name == "engine" else f"differing_{name}"] = [
                dict(item=i, **wl.near_tie(model, tokenizer, load.prompts[i], b.ids, e.ids))
                for i, (b, e) in enumerate(zip(bare.outputs, results[name].outputs)) if b.ids != e.ids]
    out["mean_prompt_tokens"] = statistics.mean(o.prompt_tokens for o in bare.outputs)
    out["mean_new_tokens"] = statistics.mean(len(o.ids) for o in bare.outputs)
    return out


def perturb_share(perturber, load, engine_result, sigma, repeats: int = 3, modes=NOISE_MODES) -> dict:
    """Perturb + restore against one member's whole evaluation on a workload: perturb, the
    engine's generation (its median round), rewards, restore; per noise mode, with the time
    spent drawing the noise alone beside it. Leaves the base weights. The headline takes
    arith's iid figure (the default mode on the shortest evaluation, so the largest share)."""
    start = time.perf_counter()
    checked_rewards(get_task(load.name), [o.text for o in engine_result.outputs], load.items)
    rewards = time.perf_counter() - start
    generate = statistics.median(engine_result.seconds)
    out = {"generate_seconds": generate, "reward_seconds": rewards}
    for mode in modes:
        times, draws = [], []
        for seed in range(repeats):
            start = time.perf_counter()
            perturber.apply(2000 + seed, sigma, mode)
            perturber.restore()
            times.append(time.perf_counter() - start)
            if isinstance(perturber, Perturber):  # the draw alone, where the noise is drawn in this process
                start = time.perf_counter()
                for _ in iter_noise(perturber.params, 3000 + seed, mode, perturber.scratch):
                    pass
                draws.append(time.perf_counter() - start)
        pr = statistics.median(times)
        out[mode] = {"seconds": pr, "draw_seconds": statistics.median(draws) if draws else None,
                     "share": pr / (pr + generate + rewards)}
    return out


def print_report(report: dict) -> dict:
    print("\n| workload | contender | tokens/s | speed-up (wall) | speed-up (CPU time) | same outputs |\n"
          "|---|---|---|---|---|---|")
    for name, w in report["workloads"].items():
        for contender, r in w.items():
            if isinstance(r, dict) and "speedup" in r:
                print(f"| {name} | {contender} | {r['tokens_per_s']:.0f} | {r['speedup']:.2f}x | {r['cpu_speedup']:.2f}x "
                      f"| {r['same']:.3f} |")
        e = w["engine"]
        print(f"  {name}: bare executed {e['flop_ratio']:.2f}x the engine's model FLOPs (padding, finished rows kept, "
              f"the shared prefix per item); per FLOP the engine ran {e['speedup'] / e['flop_ratio']:.2f}x bare's rate "
              f"(peak fractions {e['peak_fraction']:.2f} and {w['bare']['peak_fraction']:.2f})")
        for key, who in (("differing", "engine"), ("differing_vllm", "vllm")):
            for d in w.get(key, []):
                print(f"  {name} item {d['item']} parts at token {d['position']}: bare {d['reference']!r} vs "
                      f"{who} {d['other']!r}, top-2 logit gap {d['top2_gap']:.4f}")
    engine = {name: w["engine"] for name, w in report["workloads"].items()}
    pick = lambda name, key, digits: round(engine[name][key], digits) if name in engine else None  # noqa: E731
    share = report["perturb_restore"].get("arith")
    return {"speedup_arith": pick("arith", "speedup", 3), "speedup_gsm8k": pick("gsm8k", "speedup", 3),
            "same_arith": pick("arith", "same", 4), "same_gsm8k": pick("gsm8k", "same", 4),
            "peak_fraction_arith": pick("arith", "peak_fraction", 3),
            "peak_fraction_gsm8k": pick("gsm8k", "peak_fraction", 3),
            "perturb_restore_share": round(share["iid"]["share"], 4) if share else None,
            "peak_rss_gib": round(report["peak_rss_gib"], 2),
            **({"perturb_restore_share_released": round(share["released"]["share"], 4)} if share else {}),
            **{f"{key}_draft_{name}": round(w["engine_draft"][key], 4) for name, w in report["workloads"].items()
               if "engine_draft" in w for key in ("speedup", "same")},
            **{f"flop_ratio_{name}": round(w["engine"]["flop_ratio"], 3) for name, w in report["workloads"].items()},
            **vllm_headline(report)}


def vllm_headline(report: dict) -> dict:
    """The vLLM contender's keys of the one-line JSON (none where it did not race)."""
    if "vllm_start_seconds" not in report:
        return {}
    out = {f"{key}_vllm_{name}": round(w["vllm"][key], 4) for name, w in report["workloads"].items()
           for key in ("speedup", "same")}
    out.update({f"tokens_per_s_vllm_{name}": round(w["vllm"]["tokens_per_s"], 1) for name, w in report["workloads"].items()})
    share = report["perturb_restore_vllm"].get("arith")
    return {**out, "perturb_restore_share_vllm": round(share["iid"]["share"], 4) if share else None,
            "vllm_start_seconds": round(report["vllm_start_seconds"], 1)}


if __name__ == "__main__":
    try:
        main()
    except UserError as exc:
        sys.exit(f"error: {exc}")
