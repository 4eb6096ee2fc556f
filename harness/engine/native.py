"""The native engine: batched generation shared by every method and by the evaluation.

Prompts are rendered once (chat template for instruct models, plain text otherwise),
tokenized once, and grouped into length-sorted batches so a population of members reuses
the same tensors and pads as little as possible. Decoding is greedy unless sampling is
asked for (self-consistency), with a stop on EOS.

The decoding loop (harness/engine/decode.py) is the model's own forward with a transformers cache,
driven step by step rather than by `model.generate`, because a population re-evaluates the
same prompts thousands of times and these pay off (bench/throughput.py measures each):
- the prompts' common token prefix (the chat template's system turn and "What is ": 27 of
  the 47 tokens of an arith prompt with SmolLM2) is run once per call and its keys and values
  are copied into every row; it is recomputed on every call, so it never outlives the
  weights it came from;
- the cache is preallocated (`harness.engine.kvcache.SlabLayer`) instead of grown by `torch.cat`,
  which copies the whole cache every step;
- rows that reached EOS leave the batch (once enough of them have finished to pay for
  compacting the cache) instead of being decoded as padding until the longest one ends;
- consecutive batches run as one pass while the cache fits a budget (larger matmuls).
Greedy outputs equal `model.generate`'s up to floating-point near-ties (different batch
shapes round differently). Completion token counts are the nominal ones, prefix included,
so the ledger charges exactly what it charged with `model.generate`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from harness.engine import decode
from harness.engine.interface import Completion, render  # noqa: F401  (render: for callers of this engine)
from harness.engine.kvcache import kv_bytes_per_token, prefix_keys_values
from harness.engine.perturb import Perturber


@dataclass
class Batch:
    order: list[int]  # positions of these prompts in the caller's list
    input_ids: torch.Tensor  # left-padded full prompts
    attention_mask: torch.Tensor


class NativeEngine:
    """thicket's own engine (`harness.engine.interface.Engine`): the model's forward driven by
    `harness.engine.decode`, weights perturbed in place by `harness.engine.perturb.Perturber`."""

    # What makes it fast, each switchable so bench/throughput.py can measure it alone.
    share_prefix = True
    """Run the prompts' common token prefix once per call (if at least `min_prefix` tokens)."""
    min_prefix = 4
    compact_fraction: float | None = 0.0
    """Drop finished rows once they are more than this share of the batch (0: at once; each
    drop moves the last rows' cache into their places); None keeps them (decoded as padding)
    until the batch ends, as `model.generate` does."""
    cache = "slab"
    """"slab": preallocated, written in place; "dynamic": transformers' DynamicCache."""
    prefill_chunk_tokens = 2048
    """Prompts run in chunks of rows of similar length, this many tokens each (0: at once)."""
    pass_bytes: int | None = None
    """Cache size up to which batches run together (None: 1 GiB on CPU, a quarter of the free
    memory on a GPU; 0: every batch alone)."""
    decoder = "loop"
    """"loop" (harness.engine.decode.loop) or "generate": `model.generate` per pass with
    `generate_kwargs`, e.g. {"cache_implementation": "static"} (CUDA graphs on a GPU)."""
    generate_kwargs: dict = {}
    draft_members = False
    """Member scoring (`TrainContext.train_completions`) passes the base model's greedy train
    completions as `draft`. Off by default: on a CPU every token costs compute, so checking a
    draft token costs what decoding it does, and bench/throughput.py's engine_draft measured no
    gain on this project's 2-CPU machine (README, Benchmarks). On a GPU, where a decoding step
    is bound by memory rather than compute, it may pay: measure with the bench before turning
    it on (`NativeEngine.draft_members = True`)."""

    def __init__(self, model, tokenizer, batch_size: int = 64):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.eos_ids = _eos_ids(model, tokenizer)
        self._weights: Perturber | None = None

    @property
    def weights(self) -> Perturber:
        """Created on first use: the base copy costs one model's memory, which a generation-only
        engine (the bench, `thicket plan`'s calibration) never pays."""
        if self._weights is None:
            self._weights = Perturber(self.model)
        return self._weights

    @property
    def n_params(self) -> int:
        return sum(p.numel() for _, p in self.model.named_parameters())  # tied weights once

    def prepare(self, prompts: list[str]) -> list[Batch]:
        """Tokenize once; batches of similar length, longest first (fail fast on memory)."""
        lengths = [len(self.tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        batches = []
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            enc = self.tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True,
                                 add_special_tokens=False)
            batches.append(Batch(idx, enc.input_ids, enc.attention_mask))
        return batches

    @torch.inference_mode()
    def generate(self, batches: list[Batch], max_new_tokens: int, temperature: float = 0.0,
                 seed: int | None = None, top_p: float = 1.0, progress: Callable[[int], None] | None = None,
                 draft: list[Completion] | None = None) -> list[Completion]:
        """Completions in the caller's prompt order. temperature 0 means greedy; otherwise
        sampling at `temperature` with nucleus `top_p` (1.0: the whole distribution), from a
        generator seeded with `seed`. `progress(n)` is called whenever n more items have
        finished (e.g. a tqdm bar's `update`).

        `draft` (greedy only): other greedy completions of the same prompts in the same order,
        e.g. the base model's for a perturbed member. They are checked in one teacher-forced
        pass and decoding starts at each item's first token that differs; the outputs are
        those of decoding from scratch, up to floating-point near-ties."""
        rows = prompt_lists(batches)
        order = [i for b in batches for i in b.order]
        if draft is not None and len(draft) != len(rows):
            raise ValueError(f"draft has {len(draft)} completions for {len(rows)} prompts")
        use_draft = draft is not None and temperature <= 0 and self.decoder == "loop" and self.cache == "slab"
        pick = decode.Picker(temperature, top_p, seed, self.model.device)
        settings = decode.Settings(self.eos_ids, self.tokenizer.pad_token_id, self.cache, self.compact_fraction,
                                   self.prefill_chunk_tokens)
        if self.decoder == "generate":
            torch.manual_seed(seed if seed is not None else 0)
            run = lambda prompts, group: decode.with_generate(self.model, prompts, max_new_tokens, pick,  # noqa: E731
                                                              settings, progress, **self.generate_kwargs)
        else:
            prefix = rows[0][:self.shared_prefix(rows)] if rows else []
            prefix_kv = None
            if prefix:  # with these weights, for this call only
                prefix_kv = prefix_keys_values(self.model, torch.tensor([prefix], device=self.model.device))
            run = lambda prompts, group: decode.loop(  # noqa: E731
                self.model, prompts, len(prefix), prefix_kv, max_new_tokens, pick, settings, progress,
                [list(draft[order[r]].token_ids) or [self.eos_ids[0]] for r in group] if use_draft else None)
        out: list[Completion | None] = [None] * len(rows)
        for group in self._passes(batches, rows, max_new_tokens):
            new = run([rows[r] for r in group], group)
            for r, gen in zip(group, new):
                text = self.tokenizer.decode(gen, skip_special_tokens=True)
                out[order[r]] = Completion(text, len(rows[r]), len(gen), tuple(gen))
        return out  # type: ignore[return-value]

    def _passes(self, batches: list[Batch], rows: list[list[int]], max_new: int) -> list[list[int]]:
        """Consecutive batches run as one pass while its cache stays within `pass_bytes`
        (larger matmuls are faster per token); a batch is never split."""
        budget = self.pass_bytes if self.pass_bytes is not None else _default_pass_bytes(self.model)
        per_token = kv_bytes_per_token(self.model)
        passes: list[list[int]] = []
        start = 0
        for b in batches:
            batch = list(range(start, start + len(b.order)))
            start += len(b.order)
            if passes:
                merged = passes[-1] + batch
                if len(merged) * (max(len(rows[r]) for r in merged) + max_new) * per_token <= budget:
                    passes[-1] = merged
                    continue
            passes.append(batch)
        return passes

    def shared_prefix(self, prompts: list[list[int]]) -> int:
        """How many leading tokens of these prompts `generate` runs once for all of them."""
        n = len(_common_prefix(prompts)) if self.share_prefix and prompts else 0
        return n if n >= self.min_prefix else 0

def prompt_lists(batches: list[Batch]) -> list[list[int]]:
    """Each prompt's tokens without padding, batch after batch."""
    return [ids[mask.bool()].tolist() for b in batches for ids, mask in zip(b.input_ids, b.attention_mask)]


def _common_prefix(prompts: list[list[int]]) -> list[int]:
    """The longest token prefix every prompt shares, leaving each prompt at least one token
    of its own (the last prompt token's logits start the decoding)."""
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == first[i]:
            i += 1
        n = i
    return first[:n]


def _default_pass_bytes(model) -> int:
    if model.device.type == "cuda":
        return torch.cuda.mem_get_info(model.device)[0] // 4
    return 2**30


def _eos_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def _until_eos(tokens: list[int], eos_ids: list[int]) -> list[int]:
    """Generated tokens up to and including the first EOS (later ones are padding)."""
    for pos, tok in enumerate(tokens):
        if tok in eos_ids:
            return tokens[:pos + 1]
    return tokens
