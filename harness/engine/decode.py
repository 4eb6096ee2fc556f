"""The engine's decoding of one pass (a group of prompts), two ways.

`loop`: the model's own forward driven step by step with a `harness.engine.kvcache` cache, so that
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

from harness.engine.kvcache import fill_prefix, n_layers, new_cache


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
         settings: Settings, progress: Callable[[int], None] | None = None,
         drafts: list[list[int]] | None = None) -> list[list[int]]:
    """Decode a pass whose first `n_prefix` prompt tokens are already in `prefix_kv`. With
    `drafts` (greedy only, slab cache): a guess of each output, checked in one pass."""
    tail = max(map(len, drafts)) if drafts else 0
    ids, mask, positions = layout(prompts, n_prefix, tail + max_new, settings.pad_id, model.device)
    length = mask.shape[1] - tail - max_new
    cache = new_cache(settings.cache, n_layers(model), mask.shape[1])
    if prefix_kv is not None:
        fill_prefix(cache, prefix_kv, len(prompts))
    if drafts:
        out, positions = verify(model, cache, ids, mask, positions, drafts, max_new, settings)
    else:
        logits = prefill(model, cache, ids, mask[:, :length], positions, settings)
        out, positions = [[t] for t in pick(logits).tolist()], positions[:, -1:] + 1
    return steps(model, cache, out, mask, positions, length + tail, max_new, pick, settings, progress)


def steps(model, cache, out: list[list[int]], mask, positions, length: int, max_new: int, pick: Picker,
          settings: Settings, progress: Callable[[int], None] | None = None) -> list[list[int]]:
    """Feed every unfinished row its last token (at `positions`, cache column `length` on)
    until each has EOS or `max_new` tokens; finished rows leave the batch."""
    eos, live, reported = set(settings.eos_ids), list(range(len(out))), 0  # reported: finished rows told
    while True:
        done = [out[r][-1] in eos or len(out[r]) >= max_new for r in live]
        if progress is not None and sum(done) > reported:
            progress(sum(done) - reported)
        reported = sum(done)
        if reported == len(live):
            return out
        if settings.compact_fraction is not None and reported >= max(1, settings.compact_fraction * len(live)):
            keep = keep_order(done)
            index = torch.tensor(keep, device=model.device)
            cache.batch_select_indices(index)
            mask, positions = mask[index], positions[index]
            live, done, reported = [live[row] for row in keep], [False] * len(keep), 0
        tokens = torch.tensor([[out[r][-1]] for r in live], device=model.device)
        length += 1
        logits = model(input_ids=tokens, attention_mask=mask[:, :length], position_ids=positions,
                       past_key_values=cache, use_cache=True).logits[:, -1]
        positions = positions + 1
        for r, finished, tok in zip(live, done, pick(logits).tolist()):
            if not finished:
                out[r].append(tok)


def verify(model, cache, ids, mask, positions, drafts: list[list[int]], max_new: int, settings: Settings):
    """Run prompts and drafts in one teacher-forced pass; each row keeps its draft up to the
    first token the model would not have chosen, plus the model's choice there. The cache
    columns of the rejected draft tokens are masked for good. Returns the outputs so far and
    the position of each row's last token (the next to feed)."""
    rows, tail = len(drafts), max(map(len, drafts))
    end = mask.shape[1] - tail - max_new  # the prompts' last column + 1
    guess = torch.full((rows, tail), settings.pad_id, dtype=torch.long)
    for r, d in enumerate(drafts):
        guess[r, :len(d)] = torch.tensor(d)
        mask[r, end + len(d):end + tail] = 0
    offsets = torch.arange(1, tail + 1, device=positions.device)
    chosen = prefill(model, cache, torch.cat([ids, guess.to(ids.device)], 1), mask[:, :end + tail],
                     torch.cat([positions, positions[:, -1:] + offsets], 1), settings, tail=tail).tolist()
    out = []
    for r, (d, c) in enumerate(zip(drafts, chosen)):
        k = next((j for j, (x, y) in enumerate(zip(d, c)) if x != y), len(d))
        stop = k == len(d) and (d[-1] in settings.eos_ids or len(d) >= max_new)
        out.append((d if stop else d[:k] + [c[k]])[:max_new])
        mask[r, end + k:end + tail] = 0
    return out, positions[:, -1:] + torch.tensor([[len(o)] for o in out], device=positions.device)


def prefill(model, cache, ids, mask, positions, settings: Settings, tail: int = 0) -> torch.Tensor:
    """Run the prompts (past any prefix already in `cache`): last-position logits per row; or,
    with `tail` draft columns after them, the argmax at the last prompt position and at every
    draft position ([rows, tail + 1]). With a slab cache, rows go in chunks of similar length,
    each padded only to its own longest prompt (rows come sorted by length from prepare)."""
    end, width = mask.shape[1], ids.shape[1] - tail
    own = mask[:, end - tail - width:end - tail].sum(1).tolist()
    chunks = _chunks([n + tail for n in own], settings.chunk_tokens)

    def run(rows, first: int) -> torch.Tensor:
        logits = model(input_ids=ids[rows, first:], attention_mask=mask[rows], position_ids=positions[rows, first:],
                       past_key_values=cache, use_cache=True, logits_to_keep=tail + 1).logits
        return logits[:, -1] if tail == 0 else logits.argmax(-1)

    if settings.cache != "slab" or len(chunks) == 1:
        return run(slice(None), 0)
    result = None
    for rows, columns in chunks:
        for layer in cache.layers:
            layer.open_window(rows, end - columns)
        part = run(rows, ids.shape[1] - columns)
        result = part.new_empty((ids.shape[0], *part.shape[1:])) if result is None else result
        result[rows] = part
    for layer in cache.layers:
        layer.close_window(end)
    return result


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
