"""`thicket plan`: what a comparison will cost, in seconds, before it runs.

Per method: the derived sizes, training FLOPs (worst case, within the budget), test FLOPs
per item, and a wall-time projection from rates:

- here (default): a short calibration on this machine with the real model: one greedy
  batch of train prompts (seconds per generated sequence, the real lengths the model
  produces) and one forward + backward pass (seconds per update FLOP);
- `--gpus N --gpu KIND`: no weights are loaded (the model's config comes from the Hub
  cache, a local folder, or the repository's shape files in bench/shapes/); generation runs
  at the throughput recorded by the bench's GPU mode on that GPU kind for that model
  (bench/recorded/throughput.json, see bench/shapes.py) and updates at the bf16 peak times an assumed utilisation,
  both scaled linearly over N GPUs. Where nothing was recorded, generation too is projected
  from the peak and the assumed utilisation, and the output says so.

Projections assume every sampled rollout as long as the calibration's greedy outputs.

`--engine native|vllm|auto` picks the generation engine projected: with `--gpus`, the bench's
records of that engine (`engine*` contenders for native, `vllm` for vLLM), and a memory line per
device for either: the native engine holds the model and the base copy its members restore from
plus its KV cache for one batch; the vLLM engine holds the harness's Hugging Face copy (TRL's
trainers, the parameter layout), vLLM's own weights, the base copy inside vLLM's worker, and
vLLM's KV cache (`engine.kv_cache_gib`, or what `engine.gpu_memory_utilization` leaves of the
device after vLLM's weights). With `engine.tensor_parallel_size=T`, vLLM's weights and the base
copy are split over T devices; the Hugging Face copy stays whole on the process's first device.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.errors import UserError
from harness.engine.model import Probe, load_tokenizer, probe_model, resolve_model
from harness.budget.plan import Sizing, matched_budget, plan_methods
from harness.method import resolve
from harness.runs.progress import duration
from harness.splits import test_items, train_items
from harness.task import get_task

REPO = Path(__file__).resolve().parents[2]
SHAPES = REPO / "bench" / "shapes"
RECORDED = REPO / "bench" / "recorded" / "throughput.json"  # written by bench/shapes.py
PEAK_BF16 = {"h100": 989e12, "h200": 989e12, "a100": 312e12}
"""Dense bf16 tensor-core peaks (vendor datasheets), FLOP/s."""
MEMORY_GIB = {"h100": 80, "h200": 141, "a100": 80}
"""Device memory (vendor datasheets; the 80 GB parts of H100 and A100), GiB as the datasheets round."""
ASSUMED_UTILISATION = 0.35
"""Model FLOP utilisation assumed where no throughput was recorded (an assumption, not a measurement)."""


@dataclass
class Rates:
    seconds_per_sequence: float
    seconds_per_update_flop: float
    source: str


def model_slug(name: str | None) -> str:
    return (name or "smollm2").rstrip("/").rpartition("/")[2].lower()


def shape_config(path: Path):
    """A transformers config from a shape file (the shape fields of a model's public config.json;
    keys starting with _ are notes): (config, the model's Hub id, its dtype name). The GPU bench
    builds its random models from the same files."""
    from transformers import AutoConfig

    raw = json.loads(path.read_text(encoding="utf-8"))
    fields = {k: v for k, v in raw.items() if not k.startswith("_")}
    fields.pop("architectures", None)
    dtype = fields.pop("torch_dtype", None)
    return AutoConfig.for_model(fields.pop("model_type"), **fields), raw.get("_hub_id"), dtype


def config_only_probe(name: str) -> Probe:
    """A model from its shape file in bench/shapes/ (no download, no weights), with the
    embedded SmolLM2 tokenizer standing in for its own to count prompt tokens."""
    from transformers import AutoModelForCausalLM

    path = SHAPES / f"{model_slug(name)}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SHAPES.glob("*.json"))) or "none"
        raise UserError(f"model {name!r} is not reachable from here and has no shape file {path}; known shapes: "
                        f"{known} (or pass a local model folder)")
    config = shape_config(path)[0]
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    tokenizer = load_tokenizer(resolve_model(None), "smollm2 (token-count proxy)")
    return Probe(name, str(path), config, tokenizer, skeleton)


def calibrate_here(sizing: Sizing, protocol) -> Rates:
    """Time one greedy batch of train prompts and one forward + backward pass."""
    from harness.runs import distributed as dist
    from harness.engine.native import NativeEngine
    from harness.engine.model import load_model

    model, tokenizer = load_model(protocol.model, dist.device())
    prompts = sizing.prompts().texts[:min(16, protocol.batch_size)]
    engine = NativeEngine(model, tokenizer, len(prompts))
    batches = engine.prepare(prompts)
    start = time.perf_counter()
    outputs = engine.generate(batches, sizing.max_new_tokens)
    per_sequence = (time.perf_counter() - start) / len(prompts)
    ids = tokenizer([p + o.text for p, o in zip(prompts[:4], outputs)], return_tensors="pt", padding=True,
                    add_special_tokens=False).to(model.device)
    start = time.perf_counter()
    model.train()
    loss = model(**ids, labels=ids.input_ids).loss
    loss.backward()
    per_update_flop = (time.perf_counter() - start) / (6.0 * sizing.n_params * int(ids.attention_mask.sum()))
    model.zero_grad(set_to_none=True)
    return Rates(per_sequence, per_update_flop, f"calibrated on this machine ({model.device.type}): one greedy "
                 f"batch of {len(prompts)} train prompts, one forward+backward of 4 sequences")


def recorded_throughput(slug: str, kind: str, path: Path | None = None, engine: str = "native") -> dict | None:
    """The fastest record of `engine` (native: the `engine*` contenders; vllm: `vllm`) of bench's
    GPU mode (format thicket-throughput/1, see bench/shapes.py) for this model shape on a GPU whose
    name contains `kind` ("h100")."""
    path = path or RECORDED
    if not path.is_file():
        return None
    try:
        records = json.loads(path.read_text(encoding="utf-8")).get("records", [])
    except (json.JSONDecodeError, AttributeError) as exc:
        raise UserError(f"{path} is not a thicket-throughput/1 file ({exc}); rerun the GPU bench or delete it")
    mine = [r for r in records if r.get("shape") == slug and kind in str(r.get("device_name", "")).lower()
            and _engine_of(str(r.get("contender", ""))) == engine and r.get("tokens_per_s")]
    return max(mine, key=lambda r: r["tokens_per_s"], default=None)


def _engine_of(contender: str) -> str | None:
    return "vllm" if contender == "vllm" else "native" if contender.startswith("engine") else None


def gpu_rates(sizing: Sizing, name: str | None, gpus: int, gpu: str, recorded: Path | None = None,
              engine: str = "native") -> Rates:
    kind = gpu.lower()
    peak = PEAK_BF16.get(kind)
    entry = recorded_throughput(model_slug(name), kind, recorded, engine)
    sequence_tokens = sizing.prompts().mean_len + sizing.max_new_tokens
    if entry:
        per_sequence = sequence_tokens / entry["tokens_per_s"] / gpus
        source = (f"generation at {entry['tokens_per_s']:.0f} tokens/s per GPU, recorded by the GPU bench on "
                  f"{entry['device_name']} ({entry.get('date', 'undated')}, {entry['contender']}, "
                  f"{entry.get('members_in_flight', 1)} member(s) in flight, no early stop)")
    elif peak:
        per_sequence = 2.0 * sizing.n_params * sequence_tokens / (peak * ASSUMED_UTILISATION) / gpus
        source = f"no {engine}-engine throughput recorded for {model_slug(name)} on {kind}: generation ASSUMED at " \
                 f"{ASSUMED_UTILISATION:.0%} of the bf16 peak"
    else:
        raise UserError(f"--gpu {gpu!r}: no recorded throughput and no known peak; known: {', '.join(PEAK_BF16)}")
    per_update_flop = 1.0 / ((peak or 989e12) * ASSUMED_UTILISATION) / gpus
    return Rates(per_sequence, per_update_flop, f"{source}; updates ASSUMED at {ASSUMED_UTILISATION:.0%} of the bf16 "
                 f"peak; linear scaling over {gpus} GPU(s)")


def plan_engine(name: str, projected_gpu: bool) -> str:
    """The engine a plan projects: `auto` as `compare` would choose on the projected machine (a GPU
    projection takes vLLM where it is installed here); `vllm` need not be installed to be planned."""
    from harness.engine.select import ENGINES, choose

    if name == "auto":
        return choose(name, gpu=projected_gpu or None)
    if name not in ENGINES:
        choose(name)  # the one-line error
    return name


def print_plan(protocol, methods, settings, budget_flops, seeds, gpus, gpu, engine: str = "auto") -> int:
    from harness.config import method_config
    from harness.engine.select import check_settings, engine_settings
    from harness.engine.vllm import Settings as VLLMSettings

    if (gpus is None) != (gpu is None):
        raise UserError("--gpus and --gpu go together, e.g. --gpus 8 --gpu h100")
    engine_set, settings = engine_settings(settings)
    engine = plan_engine(engine, gpus is not None)
    check_settings(engine, engine_set)
    vllm_settings = method_config(VLLMSettings, "engine", protocol.budget, engine_set) if engine == "vllm" else None
    task = get_task(protocol.task)
    plugins, _ = resolve(protocol, methods, settings)
    train, n_test = train_items(task, protocol), len(test_items(task, protocol))
    probe = _probe(protocol.model, gpus is not None)
    max_new = min(protocol.max_new_tokens, task.max_new_tokens)
    sizing = Sizing(None, probe.n_params, probe.skeleton, probe.tokenizer, task, protocol, train, max_new)
    sizing.budget_flops = budget_flops if budget_flops is not None else matched_budget(sizing, settings)
    plans = plan_methods(plugins, sizing)
    rates = gpu_rates(sizing, protocol.model, gpus, gpu, engine=engine) if gpus else calibrate_here(sizing, protocol)
    print(plan_table(plans, sizing, rates, n_test, seeds, probe))
    print(memory_line(sizing, probe, engine, vllm_settings, gpu))
    return 0


def memory_line(sizing: Sizing, probe: Probe, engine: str, settings=None, gpu: str | None = None) -> str:
    """What one process holds on its device for generation, by engine (bf16 on a GPU, fp32 on CPU)."""
    from harness.engine.kvcache import config_kv_bytes_per_token

    width = 2 if gpu else 4
    weights = sizing.n_params * width
    per_token = config_kv_bytes_per_token(probe.config, width)
    tokens = sizing.protocol.batch_size * (sizing.prompts().max_len + sizing.max_new_tokens)
    gib = lambda b: f"{b / 2**30:.2f} GiB"  # noqa: E731
    device = f"{gpu.lower()} ({MEMORY_GIB.get(gpu.lower(), '?')} GiB)" if gpu else "this machine"
    if engine == "native":
        cache = per_token * tokens
        return (f"memory per process on {device}, native engine: weights {gib(weights)} + base copy {gib(weights)} + "
                f"KV cache {gib(cache)} (a batch of {sizing.protocol.batch_size}) = {gib(2 * weights + cache)}")
    tp = settings.tensor_parallel_size if settings else 1
    shard = weights / tp  # vLLM's weights and the base copy are split over the tensor-parallel devices
    kv_heads = getattr(probe.config, "num_key_value_heads", None) or getattr(probe.config, "num_attention_heads", 1)
    per_token /= min(tp, kv_heads)  # each device caches its share of the k/v heads (repeated past kv_heads)
    if settings is not None and settings.kv_cache_gib is not None:
        cache, how = settings.kv_cache_gib * 2**30, "engine.kv_cache_gib"
    elif gpu and gpu.lower() in MEMORY_GIB:
        utilisation = settings.gpu_memory_utilization if settings else 0.45
        cache = max(0.0, utilisation * MEMORY_GIB[gpu.lower()] * 2**30 - shard)
        how = f"engine.gpu_memory_utilization={utilisation} of the device, less vLLM's weights"
    else:
        cache, how = 2**30, "1 GiB, the CPU default"
    total = weights + 2 * shard + cache
    line = (f"memory per process on {device}, vLLM engine: Hugging Face copy {gib(weights)} + vLLM's weights "
            f"{gib(shard)} + base copy in vLLM {gib(shard)} + KV cache {gib(cache)} ({how}; "
            f"{int(cache // per_token):,} tokens) = {gib(total)}")
    if tp > 1:
        line += (f", on the first of its {tp} tensor-parallel devices; each other one holds {gib(2 * shard + cache)} "
                 "(no Hugging Face copy)")
    return line


def _probe(name: str | None, config_only: bool) -> Probe:
    """The model's config and tokenizer; for a GPU projection the repository's shape file comes
    first (no network, no weights), the Hub cache or a local folder otherwise."""
    if config_only and name and (SHAPES / f"{model_slug(name)}.json").is_file():
        return config_only_probe(name)
    try:
        return probe_model(name)
    except UserError:
        if not config_only:
            raise
        return config_only_probe(name)


def plan_table(plans: dict, sizing: Sizing, rates: Rates, n_test: int, seeds: int, probe: Probe) -> str:
    per_item = 2.0 * sizing.n_params * (sizing.prompts().mean_len + sizing.max_new_tokens)
    lines = [f"model {probe.name or 'smollm2 (embedded)'}: P={sizing.n_params:,}; task {sizing.task.name}: "
             f"n_train={len(sizing.train_items)}, n_test={n_test}, max_new_tokens={sizing.max_new_tokens}",
             f"training budget per method: {sizing.budget_flops:.3e} FLOPs; seeds: {seeds}",
             "", "| method | sizes | train FLOPs (worst case) | test FLOPs/item (est.) | projected wall time |",
             "|---|---|---|---|---|"]
    total = 0.0
    for name, work in plans.items():
        if work is None:
            lines.append(f"| {name} | not known before it runs | - | - | - |")
            continue
        seconds = seeds * work.seconds(rates.seconds_per_sequence, rates.seconds_per_update_flop, n_test)
        total += seconds
        sizes = ", ".join(f"{k}={v}" for k, v in work.sizes.items()) or "-"
        lines.append(f"| {name} | {sizes} | {work.train_flops:.3g} | {work.test_generations * per_item:.3g} "
                     f"| {duration(seconds)} |")
    lines += ["", f"total projected wall time: {duration(total)}", f"rates: {rates.source}",
              "FLOPs are the ledger's worst case (every completion max_new_tokens long); test FLOPs per item use the "
              "train prompts' mean length."]
    if "proxy" in getattr(probe.tokenizer, "name_or_path", "") or probe.path.endswith(".json"):
        lines.append("prompt tokens counted with the embedded SmolLM2 tokenizer (the model's own is not available "
                     "offline): an estimate")
    return "\n".join(lines)
