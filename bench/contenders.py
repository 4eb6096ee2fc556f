"""The generation engines the benchmark races, each a callable returning one Output per prompt.

- bare: `model.generate`, batch 64, prompts in their own order (the baseline);
- engine: `harness.engine.native.NativeEngine` as the harness runs it;
- engine_draft: the engine given the BASE model's greedy outputs as drafts (what member scoring
  does with `NativeEngine.draft_members` on): one teacher-forced pass checks each draft, and decoding
  starts at the member's first token that differs;
- vllm: `harness.engine.vllm.VLLMEngine` as the harness runs it (`--engine vllm`; in this process,
  vLLM's multiprocessing off, the same member applied inside vLLM), where vLLM is installed;
with `--alternatives`:
- generate_batch: transformers' continuous batching (paged attention, block sharing);
- engine_no_prefix / engine_keep_finished / engine_dynamic_cache / engine_batches_alone /
  engine_unchunked_prefill: the engine with one of its optimisations switched off (shared-prefix
  reuse; dropping finished rows; the in-place cache; merging batches into one pass; prefilling
  rows in chunks of similar length).
"""
from __future__ import annotations

from typing import Callable

from bench.measure import bare_generate
from bench.workloads import Output, Workload
from harness.errors import UserError
from harness.engine.native import NativeEngine, _eos_ids, _until_eos, prompt_lists

ALTERNATIVES = {
    "engine_no_prefix": {"share_prefix": False},
    "engine_keep_finished": {"compact_fraction": None},
    "engine_dynamic_cache": {"cache": "dynamic"},
    "engine_batches_alone": {"pass_bytes": 0},
    "engine_unchunked_prefill": {"prefill_chunk_tokens": 0},
}


class EngineRun:
    """A harness engine (native, or vLLM: no shared prefix of its own) on one workload's prepared batches."""

    def __init__(self, engine, prompts: list[str], max_new_tokens: int, draft=None):
        self.engine, self.max_new_tokens, self.draft = engine, max_new_tokens, draft
        self.batches = engine.prepare(prompts)
        self.prefix_length = engine.shared_prefix(prompt_lists(self.batches)) if isinstance(engine, NativeEngine) else 0

    def __call__(self) -> list[Output]:
        return [Output(c.text, list(c.token_ids), c.prompt_tokens)
                for c in self.engine.generate(self.batches, self.max_new_tokens, draft=self.draft)]


def base_drafts(model, tokenizer, load: Workload, batch_size: int):
    """The unperturbed model's greedy completions of a workload (call before perturbing)."""
    engine = NativeEngine(model, tokenizer, batch_size)
    return engine.generate(engine.prepare(load.prompts), load.max_new_tokens)


def bare_run(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int) -> Callable[[], list[Output]]:
    lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]

    def run() -> list[Output]:
        ids = bare_generate(model, tokenizer, prompts, max_new_tokens, batch_size)
        return [Output(tokenizer.decode(t, skip_special_tokens=True), t, n) for t, n in zip(ids, lengths)]
    return run


def continuous_batching_run(model, tokenizer, prompts: list[str], max_new_tokens: int) -> Callable[[], list[Output]]:
    """transformers' `generate_batch`, greedy, EOS as the engine's. Its cache is sized for the
    workload: by default it takes 90% of free memory, which on a shared CPU host gets the
    process killed."""
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    inputs = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    eos = _eos_ids(model, tokenizer)
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                              pad_token_id=tokenizer.pad_token_id)
    page = 64
    blocks = len(inputs) * -(-(max(map(len, inputs)) + max_new_tokens) // page)
    cb_config = ContinuousBatchingConfig(page_size=page, num_blocks=blocks)

    def run() -> list[Output]:
        # no inference_mode here: generate_batch runs its own thread and tensors
        results = model.generate_batch(inputs=inputs, generation_config=config, continuous_batching_config=cb_config,
                                       progress_bar=False)
        outs = [_until_eos(list(r.generated_tokens), eos) for r in results.values()]
        return [Output(tokenizer.decode(t, skip_special_tokens=True), t, len(i)) for t, i in zip(outs, inputs)]
    return run


def start_vllm(model, tokenizer, model_path: str, loads: list[Workload], member: tuple, batch_size: int):
    """(vLLM engine with `member` applied, start-up seconds); its KV cache and length sized for
    the longest workload. (On CPU vLLM binds torch's threads to cores for the process.)"""
    import time

    from harness.engine.select import open_vllm
    from harness.engine.vllm import Settings

    longest = max(len(tokenizer(p, add_special_tokens=False).input_ids) + load.max_new_tokens
                  for load in loads for p in load.prompts)
    start = time.perf_counter()
    engine = open_vllm(model_path, model, tokenizer, 0, Settings(multiprocessing=False), longest, batch_size)
    seconds = time.perf_counter() - start
    engine.weights.apply(*member)
    return engine, seconds


def alternative_names(alternatives: str) -> list[str]:
    """The names in --alternatives ("all": every one); a one-line error for an unknown name."""
    names = list(ALTERNATIVES) + ["generate_batch"] if alternatives == "all" else alternatives.split(",")
    unknown = set(names) - set(ALTERNATIVES) - {"generate_batch", ""}
    if unknown:
        raise UserError(f"unknown alternative {sorted(unknown)[0]!r}; choose from all, generate_batch, "
                        f"{', '.join(ALTERNATIVES)}")
    return names


def contenders(model, tokenizer, load: Workload, batch_size: int, alternatives: str = "", draft=None,
               vllm=None) -> dict:
    """bare and engine (and engine_draft given the base's completions, vllm given a started vLLM
    engine), plus the named alternatives."""
    names = alternative_names(alternatives)
    runs = {"bare": bare_run(model, tokenizer, load.prompts, load.max_new_tokens, batch_size),
            "engine": EngineRun(NativeEngine(model, tokenizer, batch_size), load.prompts, load.max_new_tokens)}
    if draft is not None:
        runs["engine_draft"] = EngineRun(NativeEngine(model, tokenizer, batch_size), load.prompts, load.max_new_tokens,
                                         draft)
    if vllm is not None:
        runs["vllm"] = EngineRun(vllm, load.prompts, load.max_new_tokens)
    # on CPU continuous batching is several times slower: timed on the short workload only
    if "generate_batch" in names and load.max_new_tokens <= 32:
        runs["generate_batch"] = continuous_batching_run(model, tokenizer, load.prompts, load.max_new_tokens)
    for name, switches in ALTERNATIVES.items():
        if name in names:
            engine = NativeEngine(model, tokenizer, batch_size)
            for key, value in switches.items():
                setattr(engine, key, value)
            runs[name] = EngineRun(engine, load.prompts, load.max_new_tokens)
    warm_up(model, tokenizer, load)
    if vllm is not None:
        vllm.generate(vllm.prepare(load.prompts[:4]), 2)
    return runs


def warm_up(model, tokenizer, load: Workload) -> None:
    """One short pass of each code path, so no contender pays first-call costs in the race."""
    prompts = load.prompts[:4]
    bare_generate(model, tokenizer, prompts, 2, 4)
    engine = NativeEngine(model, tokenizer, 4)
    engine.generate(engine.prepare(prompts), 2)
