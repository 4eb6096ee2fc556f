"""The engine's decoding of one pass (a group of prompts), two ways.

`loop`: the model's own forward driven step by step with a `harness.kvcache` cache, so that
a shared prompt prefix computed once can be copied into every row, the cache is written in
place, and rows leave the batch when they reach EOS. `with_generate`: `model.generate` on the
pass, for settings only it offers (e.g. `cache_implementation="static"`, which transformers
compiles with CUDA graphs on a GPU); no prefix reuse and no row dropping there.

Both return, per prompt, the generated tokens up to and including EOS.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from harness.kvcache import fill_prefix, n_layers, new_cache


@dataclass
class Settings:
    eos_ids: list[int]
    pad_id: int
    cache: str = "slab"
    compact_fraction: float | None = 0.0
    chunk_tokens: int = 2048
    """Prompt tokens (padding included) per prefill chunk; 0: the whole pass at once."""


class Picker:
    """Next token from last-position logits: argmax, or a seeded sample through transformers'
    own temperature and top-p warpers (top-k off, as the paper samples)."""

    def __init__(self, temperature: float, top_p: float, seed: int | None, device):
        self.greedy = temperature <= 0
        self.temperature, self.top_p, self.seed = temperature, top_p, seed
        if not self.greedy:
            from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

            self.warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)]
                                               + ([TopPLogitsWarper(top_p)] if top_p < 1.0 else []))
            self.generator = torch.Generator(device=device).manual_seed(seed if seed is not None else 0)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.greedy:
            return logits.argmax(dim=-1)
        probs = torch.softmax(self.warpers(None, logits.float()), dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(1)


def layout(prompts: list[list[int]], n_prefix: int, max_new: int, pad_id: int, device):
    """Input ids of the prompts past the prefix, the attention mask over prefix, prompt and
    every generated slot, and the prompt tokens' positions. A row is [prefix][pads][own
    tokens]: pads take no position, so each token sits where it would in its lone prompt."""
    width = max(len(p) for p in prompts) - n_prefix
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), n_prefix + width + max_new), dtype=torch.long)
    mask[:, :n_prefix] = 1
    for r, prompt in enumerate(prompts):
        own = prompt[n_prefix:]
        ids[r, width - len(own):] = torch.tensor(own)
        mask[r, n_prefix + width - len(own):] = 1
    positions = (mask[:, :n_prefix + width].cumsum(-1) - 1).clamp(min=0)[:, n_prefix:]
    return ids.to(device), mask.to(device), positions.to(device)


def loop(model, prompts: list[list[int]], n_prefix: int, prefix_kv, max_new: int, pick: Picker,
         settings: Settings, progress: Callable[[int], None] | None = None) -> list[list[int]]:
    """Decode a pass whose first `n_prefix` prompt tokens are already in `prefix_kv`."""
    device = model.device
    ids, mask, positions = layout(prompts, n_prefix, max_new, settings.pad_id, device)
    length = mask.shape[1] - max_new
    cache = new_cache(settings.cache, n_layers(model), mask.shape[1])
    if prefix_kv is not None:
        fill_prefix(cache, prefix_kv, len(prompts))
    logits = prefill(model, cache, ids, mask[:, :length], positions, settings)
    positions = positions[:, -1:]
    live = list(range(len(prompts)))  # the prompt of each batch row
    done, out = [False] * len(live), [[] for _ in live]
    eos, reported = set(settings.eos_ids), 0  # reported: rows of `live` already counted as finished
    for step in range(max_new):
        tokens = pick(logits)
        for row, (r, tok) in enumerate(zip(live, tokens.tolist())):
            if not done[row]:
                out[r].append(tok)
                done[row] = tok in eos
        n_done = sum(done)
        if n_done == len(live) or step == max_new - 1:
            break
        if progress is not None and n_done > reported:
            progress(n_done - reported)
        reported = n_done
        if settings.compact_fraction is not None and n_done >= max(1, settings.compact_fraction * len(live)):
            keep = keep_order(done)
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask, positions, tokens = mask[index], positions[index], tokens[index]
            live, done, reported = [live[row] for row in keep], [False] * len(keep), 0
        length += 1
        positions = positions + 1
        logits = model(input_ids=tokens[:, None], attention_mask=mask[:, :length], position_ids=positions,
                       past_key_values=cache, use_cache=True).logits[:, -1]
    if progress is not None:
        progress(len(live) - reported)
    return out


def prefill(model, cache, ids, mask, positions, settings: Settings) -> torch.Tensor:
    """Run the prompts (past any prefix already in `cache`); last-position logits per row.
    With a slab cache, rows go in chunks of similar length, each padded only to its own
    longest prompt (rows come sorted by length from `Engine.prepare`)."""
    chunks = _chunks(mask[:, mask.shape[1] - ids.shape[1]:].sum(1).tolist(), settings.chunk_tokens)
    if settings.cache != "slab" or len(chunks) == 1:
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                     use_cache=True, logits_to_keep=1).logits[:, -1]
    logits, width, length = None, ids.shape[1], mask.shape[1]
    for rows, own in chunks:
        for layer in cache.layers:
            layer.open_window(rows, length - own)
        out = model(input_ids=ids[rows, width - own:], attention_mask=mask[rows], position_ids=positions[rows, width - own:],
                    past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        logits = out.new_empty((ids.shape[0], out.shape[-1])) if logits is None else logits
        logits[rows] = out
    for layer in cache.layers:
        layer.close_window(length)
    return logits


def _chunks(lengths: list[int], budget: int) -> list[tuple[slice, int]]:
    """Consecutive rows, as many as fit `budget` tokens padded to their longest: (rows, width)."""
    chunks, start, longest = [], 0, 0
    for r, n in enumerate(lengths):
        if r > start and budget and (r - start + 1) * max(longest, n) > budget:
            chunks.append((slice(start, r), longest))
            start, longest = r, 0
        longest = max(longest, n)
    chunks.append((slice(start, len(lengths)), longest))
    return chunks


def keep_order(done: list[bool]) -> list[int]:
    """The unfinished rows, in an order that leaves each in place but moves the last ones into
    the finished rows' places: compacting the cache then copies only the moved rows."""
    n = len(done) - sum(done)
    movers = iter([r for r in range(n, len(done)) if not done[r]])
    return [next(movers) if done[r] else r for r in range(n)]


def with_generate(model, prompts: list[list[int]], max_new: int, pick: Picker, settings: Settings,
                  progress: Callable[[int], None] | None = None, **generate_kwargs) -> list[list[int]]:
    """Decode a pass with `model.generate` (left padding; sampling from the global RNG, seeded
    by the caller once per call, as the engine did before it had its own loop)."""
    ids, mask, _ = layout(prompts, 0, 0, settings.pad_id, model.device)
    sampling = {"do_sample": False}
    if not pick.greedy:
        sampling = {"do_sample": True, "temperature": pick.temperature, "top_p": pick.top_p, "top_k": 0}
    seqs = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, eos_token_id=settings.eos_ids,
                          pad_token_id=settings.pad_id, **sampling, **generate_kwargs)
    out = []
    for row in seqs[:, ids.shape[1]:].tolist():
        end = next((i + 1 for i, tok in enumerate(row) if tok in settings.eos_ids), len(row))
        out.append(row[:end])
    if progress is not None:
        progress(len(prompts))
    return out
