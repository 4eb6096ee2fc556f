"""GPU mode of the benchmark: member throughput of randomly initialised models of real shapes.

    python bench/throughput.py --shapes qwen2.5-0.5b-instruct,qwen2.5-1.5b-instruct,qwen2.5-3b-instruct

Each shape is bench/shapes/<name>.json: the shape fields of the model's public config.json
(nothing is downloaded; throughput does not depend on the weights' values). The model is
built on the device with random weights (bfloat16 on CUDA, float32 on CPU) and a synthetic
GSM8K-like workload: `--items` prompts of random tokens that share a 24-token prefix (a chat
template's system turn) followed by 60-160 tokens of their own, `--new-tokens` greedy tokens
each. Random weights almost never emit EOS, so every row decodes to the full length: these
are worst-case (no early stop) rates. Contenders, interleaved over `--rounds` after one
warm-up round each: `bare` (`model.generate`, batch `--batch-size`), `engine` (the harness
engine), on CUDA also `bare_static` (`model.generate` with transformers' static cache, which
it compiles with CUDA graphs) and `engine_static` (the engine's passes decoded that way),
`vllm` where vLLM is installed (the random model saved to a temporary folder and served by the
harness's vLLM engine, `--engine vllm`; `thicket plan --engine vllm` reads these records), and
`engine` with several members in flight (`--in-flight`: that many processes, each with its
own model, sharing the device).

The records are merged into `--record` (default bench/recorded/throughput.json), the file
`thicket plan --gpu NAME` reads. Its format ("thicket-throughput/1"):
    {"format": "thicket-throughput/1", "records": [record, ...]}
and each record:
    shape, hub_id, n_params        which model shape (n_params counts tied weights once)
    device, device_name, dtype     "cuda" / torch.cuda.get_device_name(), e.g. "NVIDIA H100 80GB HBM3"
    contender, members_in_flight   "bare" | "bare_static" | "engine" | "engine_static" | "vllm"; processes
                                   sharing the device
    items, batch_size, prompt_tokens_mean, shared_prefix_tokens, new_tokens   the workload
    prefill_tokens_per_s           nominal prompt tokens per second (a 1-token generation)
    decode_tokens_per_s            generated tokens per second after the prompt
    tokens_per_s                   nominal prompt + generated tokens per second, end to end
    seconds, peak_memory_gib       one member's whole workload; device allocator peak (CUDA only)
    date, torch, transformers, command
All rates are per device, summed over the members in flight. A record replaces an earlier one
with the same shape, device_name, contender, members_in_flight, batch_size and new_tokens.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from harness.engine.vllm import vllm_version
from harness.budget.projection import RECORDED as DEFAULT_RECORD, SHAPES as SHAPES_DIR, shape_config as read_shape

FORMAT = "thicket-throughput/1"
PREFIX_TOKENS = 24


def shape_config(name: str):
    """(config, Hub id, dtype name) from bench/shapes/<name>.json (harness.budget.projection reads it)."""
    path = SHAPES_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SHAPES_DIR.glob("*.json")))
        raise SystemExit(f"error: no shape {name!r} in {SHAPES_DIR}; choose from {known}")
    return read_shape(path)


def build(name: str, device: str, seed: int = 0):
    """(model, tokenizer) of a shape with random weights; the tokenizer maps "t<i>" to id i."""
    from transformers import AutoModelForCausalLM

    config, hub_id, _ = shape_config(name)
    dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    model.generation_config.eos_token_id = config.eos_token_id
    return model, word_tokenizer(config.vocab_size, config.eos_token_id), hub_id


def word_tokenizer(vocab_size: int, eos_id: int):
    """A whitespace tokenizer over the words t0..t<vocab-1> (prompts are written in them);
    EOS, which also pads, is the word <eos> (a special token must not occur inside words)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size) if i != eos_id} | {"<eos>": eos_id}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<eos>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<eos>", unk_token="<eos>",
                                        eos_token="<eos>")
    tokenizer.padding_side = "left"
    return tokenizer


def synthetic_prompts(vocab_size: int, items: int, seed: int = 0) -> list[str]:
    """GSM8K-like prompts: one shared prefix, then 60-160 tokens each (ids away from both ends
    of the vocabulary, where the special tokens are)."""
    gen = torch.Generator().manual_seed(seed)
    low, high = vocab_size // 100 + 3, vocab_size * 99 // 100
    draw = lambda n: torch.randint(low, high, (n,), generator=gen).tolist()  # noqa: E731
    prefix = draw(PREFIX_TOKENS)
    lengths = torch.randint(60, 161, (items,), generator=gen).tolist()
    return [" ".join(f"t{i}" for i in prefix + draw(n)) for n in lengths]


def measure(contender: str, model, tokenizer, prompts: list[str], args) -> dict:
    """Prefill rate (a 1-token generation) and end-to-end rate of one contender (median rounds)."""
    from bench.measure import bare_generate
    from harness.engine.native import NativeEngine, prompt_lists

    engine = NativeEngine(model, tokenizer, args.batch_size)
    if contender == "engine_static":
        engine.decoder, engine.generate_kwargs = "generate", {"cache_implementation": "static"}
    batches = engine.prepare(prompts)
    prompt_tokens = sum(len(p) for p in prompt_lists(batches))
    extra = {"cache_implementation": "static"} if contender == "bare_static" else {}

    def run(new: int) -> int:
        if contender.startswith("engine"):
            return sum(c.new_tokens for c in engine.generate(batches, new))
        return sum(len(t) for t in bare_generate(model, tokenizer, prompts, new, args.batch_size, **extra))

    shared = engine.shared_prefix(prompt_lists(batches)) if contender == "engine" else 0
    return {**rates(run, model, prompt_tokens, len(prompts), args), "shared_prefix_tokens": shared}


def rates(run, model, prompt_tokens: int, items: int, args) -> dict:
    """Prefill rate (`run(1)`: a 1-token generation) and end-to-end rate (`run(new_tokens)`) of
    a contender, median rounds after one warm-up round; `run(new)` returns the tokens generated."""
    times: dict[int, list[float]] = {1: [], args.new_tokens: []}
    generated = 0
    for r in range(args.rounds + 1):  # round 0 warms up (and compiles, for bare_static)
        for new in times:
            sync(model)
            start = time.perf_counter()
            tokens = run(new)
            sync(model)
            if r:
                times[new].append(time.perf_counter() - start)
                generated = tokens if new > 1 else generated
    prefill, total = statistics.median(times[1]), statistics.median(times[args.new_tokens])
    return {"prompt_tokens_mean": prompt_tokens / items, "prefill_tokens_per_s": prompt_tokens / prefill,
            "decode_tokens_per_s": (generated - items) / max(total - prefill, 1e-9),
            "tokens_per_s": (prompt_tokens + generated) / total, "seconds": total}


def measure_vllm(model, tokenizer, prompts: list[str], args) -> dict:
    """The vLLM engine's prefill and end-to-end rates on the same workload (median rounds), with
    its start-up seconds; the model is saved to a temporary folder for vLLM to load."""
    import tempfile

    from harness.engine.select import open_vllm

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        start = time.perf_counter()
        engine = open_vllm(folder, model, tokenizer, 0, None, max(len(tokenizer(p).input_ids) for p in prompts)
                           + args.new_tokens, args.batch_size)
        start_seconds = time.perf_counter() - start
    prepared = engine.prepare(prompts)
    out = rates(lambda new: sum(c.new_tokens for c in engine.generate(prepared, new)), model,
                sum(len(p) for p in prepared), len(prompts), args)
    engine.close()
    return {**out, "shared_prefix_tokens": 0, "start_seconds": start_seconds}


def sync(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def in_flight(name: str, k: int, args) -> dict:
    """`k` processes share the device, each with its own random model running the engine on the
    workload; they start each phase together. Rates are summed over the members."""
    ctx = torch.multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(k), ctx.Queue()
    settings = {"device": args.device, "items": args.items, "batch_size": args.batch_size, "new_tokens": args.new_tokens}
    procs = [ctx.Process(target=_member, args=(name, i, settings, barrier, queue)) for i in range(k)]
    for p in procs:
        p.start()
    reports = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    span = {phase: max(r[phase][2] for r in reports) - min(r[phase][1] for r in reports) for phase in ("prefill", "full")}
    prompt = sum(r["prefill"][0] for r in reports)
    generated, items = sum(r["full"][0] for r in reports), k * args.items
    return {"prompt_tokens_mean": prompt / items, "shared_prefix_tokens": reports[0]["shared_prefix_tokens"],
            "prefill_tokens_per_s": prompt / span["prefill"],
            "decode_tokens_per_s": (generated - items) / max(span["full"] - span["prefill"], 1e-9),
            "tokens_per_s": (prompt + generated) / span["full"], "seconds": span["full"]}


def _member(name: str, index: int, settings: dict, barrier, queue) -> None:
    from harness.engine.native import NativeEngine, prompt_lists

    model, tokenizer, _ = build(name, settings["device"], seed=index)
    engine = NativeEngine(model, tokenizer, settings["batch_size"])
    batches = engine.prepare(synthetic_prompts(model.config.vocab_size, settings["items"]))
    prompt_tokens = sum(len(p) for p in prompt_lists(batches))
    engine.generate(batches, 2)  # warm-up
    report = {"shared_prefix_tokens": engine.shared_prefix(prompt_lists(batches))}
    for phase, new in (("prefill", 1), ("full", settings["new_tokens"])):
        barrier.wait()
        start = time.monotonic()
        outs = engine.generate(batches, new)
        sync(model)
        generated = sum(c.new_tokens for c in outs)
        report[phase] = (prompt_tokens if phase == "prefill" else generated, start, time.monotonic())
    queue.put(report)


def parse(argv):
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(prog="bench/throughput.py --shapes", description="member throughput of real shapes")
    ap.add_argument("--shapes", required=True, help="comma-separated names of bench/shapes/*.json")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--items", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--contenders", default="bare,engine" + (",bare_static,engine_static" if cuda else "")
                    + (",vllm" if vllm_version() else ""))
    ap.add_argument("--in-flight", default="1,2,4" if cuda else "1", help="members per device to try (engine)")
    ap.add_argument("--record", default=str(DEFAULT_RECORD))
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    records = []
    for name in args.shapes.split(","):
        model, tokenizer, hub_id = build(name, args.device)
        prompts = synthetic_prompts(model.config.vocab_size, args.items)
        base = describe(name, hub_id, model, args)
        for contender in args.contenders.split(","):
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            rates = measure_vllm(model, tokenizer, prompts, args) if contender == "vllm" else \
                measure(contender, model, tokenizer, prompts, args)
            records.append({**base, "contender": contender, "members_in_flight": 1, **rates, **memory(args.device)})
            print(json.dumps(records[-1]), flush=True)
        del model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        for k in (int(x) for x in args.in_flight.split(",")):
            if k > 1:
                records.append({**base, "contender": "engine", "members_in_flight": k, **in_flight(name, k, args),
                                "peak_memory_gib": None})
                print(json.dumps(records[-1]), flush=True)
    path = merge(Path(args.record), records)
    print(f"recorded {len(records)} measurements in {path}")
    return {"records": records}


def describe(name: str, hub_id, model, args) -> dict:
    import transformers

    device = torch.device(args.device)
    return {"shape": name, "hub_id": hub_id, "n_params": sum(p.numel() for p in model.parameters()),
            "device": device.type, "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "items": args.items, "batch_size": args.batch_size, "new_tokens": args.new_tokens,
            "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "transformers": transformers.__version__, "command": " ".join(sys.argv)}


def memory(device: str) -> dict:
    cuda = torch.device(device).type == "cuda"
    return {"peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def merge(path: Path, records: list[dict]) -> Path:
    key = lambda r: tuple(r[k] for k in ("shape", "device_name", "contender", "members_in_flight",  # noqa: E731
                                         "batch_size", "new_tokens"))
    old = json.loads(path.read_text())["records"] if path.is_file() else []
    new_keys = {key(r) for r in records}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"format": FORMAT, "records": [r for r in old if key(r) not in new_keys] + records},
                               indent=1) + "\n")
    return path
