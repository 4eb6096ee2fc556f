"""Batched generation shared by every method and by the evaluation: one engine, one decoding.

Prompts are rendered once (chat template for instruct models, plain text otherwise),
tokenized once, and grouped into length-sorted batches so a population of members reuses
the same tensors and pads as little as possible. Decoding is greedy unless sampling is
asked for (self-consistency), with left padding and a stop on EOS.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int  # non-pad prompt tokens fed through the model
    new_tokens: int  # generated tokens up to and including EOS


@dataclass
class Batch:
    order: list[int]  # positions of these prompts in the caller's list
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


def render(tokenizer, messages) -> str:
    """Chat template when the tokenizer has one (instruct models), else the plain contents."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages)


class Engine:
    """Generates completions for a fixed list of prompts, many times (once per member)."""

    def __init__(self, model, tokenizer, batch_size: int = 64):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.eos_ids = _eos_ids(model, tokenizer)

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
                 seed: int | None = None, top_p: float = 1.0) -> list[Completion]:
        """Completions in the caller's prompt order. temperature 0 means greedy; otherwise
        sampling at `temperature` with nucleus `top_p` (1.0: the whole distribution), seeded."""
        device = self.model.device
        n = sum(len(b.order) for b in batches)
        out: list[Completion | None] = [None] * n
        sampling = {"do_sample": False}
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
            torch.manual_seed(seed if seed is not None else 0)
        for b in batches:
            ids, mask = b.input_ids.to(device), b.attention_mask.to(device)
            seqs = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                       eos_token_id=self.eos_ids, pad_token_id=self.tokenizer.pad_token_id,
                                       **sampling)
            new = seqs[:, ids.shape[1]:].cpu()
            prompt_lens = b.attention_mask.sum(dim=1).tolist()
            for row, i in enumerate(b.order):
                tokens = _until_eos(new[row].tolist(), self.eos_ids)
                out[i] = Completion(self.tokenizer.decode(tokens, skip_special_tokens=True),
                                    prompt_lens[row], len(tokens))
        return out  # type: ignore[return-value]


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
