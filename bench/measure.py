"""Measuring tools shared by the benchmarks: the baseline, the matmul peak, FLOPs, memory.

Model FLOPs (what `peak_fraction_*` divides by the measured peak) are the multiply-adds the
model must do for the tokens an engine actually runs through it, counted as 2 FLOPs each:
- every linear layer of the decoder (attention q, k, v, o and the MLP's projections):
  2 x their weights per token fed through the model;
- attention itself: QK^T and AV, 4 x heads x head_dim per attended key, per layer, per token
  (a token at position p attends to p + 1 keys);
- the LM head: 2 x vocab x hidden for each position whose logits are computed (one per
  generated token: the prompt's last position, then each fed generated token).
Fed tokens are each item's prompt tokens (for the harness engine without the shared prefix,
which it runs once per call; counted once) and its generated tokens but the last. Padding,
finished rows kept in a batch and embedding lookups are not counted: this is useful work,
so the rate is a lower bound on what the hardware executed.

`FlopCounter.padded_batch` counts what bare `model.generate` executes instead: every row of a
batch fed the batch's longest prompt (left padding) and kept until the batch's last row
ends. Bare's executed FLOPs over the engine's are the work the engine avoids (`flop_ratio_*`
in the bench): its speed-up is that ratio times how much faster per FLOP it runs.
"""
from __future__ import annotations

import resource
import time

import torch

from harness.engine.native import _eos_ids, _until_eos


def bare_generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 64,
                  **generate_kwargs) -> list[list[int]]:
    """The baseline a user would write: tokenizer + `model.generate` in batches of
    `batch_size`, prompts in their own order, greedy; generated tokens up to EOS per prompt."""
    eos, out = _eos_ids(model, tokenizer), []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            seqs = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                  pad_token_id=tokenizer.pad_token_id, **generate_kwargs)
        out += [_until_eos(row, eos) for row in seqs[:, enc.input_ids.shape[1]:].tolist()]
    return out


def matmul_peak(m: int, k: int, n: int, repeats: int = 5, device="cpu", dtype=torch.float32) -> float:
    """Best-of-`repeats` FLOP/s of torch.mm([m, k] @ [k, n]), each repeat at least 0.2 s."""
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    flops, best = 2.0 * m * k * n, 0.0
    torch.mm(a, b)
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            torch.mm(a, b)
            calls += 1
            if device != "cpu":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            if elapsed >= 0.2:
                break
        best = max(best, calls * flops / elapsed)
    return best


def mlp_shape(config) -> tuple[int, int]:
    """(hidden, intermediate) of a decoder's MLP: the matmul whose peak we measure."""
    text = config.get_text_config()
    return text.hidden_size, text.intermediate_size


class FlopCounter:
    """Model FLOPs of a decoder as described in the module docstring."""

    def __init__(self, model):
        text = model.config.get_text_config()
        head = model.get_output_embeddings()
        linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
        self.linear = sum(m.weight.numel() for m in linear)
        self.head = head.weight.numel()
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.attention = 4 * text.num_hidden_layers * text.num_attention_heads * head_dim

    def fed(self, first: int, last: int) -> float:
        """Feeding the tokens at positions first..last-1 (each attends to position + 1 keys)."""
        if last <= first:
            return 0.0
        keys = (first + 1 + last) * (last - first) / 2
        return 2.0 * self.linear * (last - first) + self.attention * keys

    def item(self, prompt_tokens: int, new_tokens: int, cached: int = 0) -> float:
        """One item whose first `cached` prompt tokens were computed elsewhere."""
        return self.fed(cached, prompt_tokens + max(new_tokens - 1, 0)) + 2.0 * self.head * new_tokens

    def prefix(self, length: int) -> float:
        return self.fed(0, length)

    def padded_batch(self, rows: int, width: int, steps: int) -> float:
        """A batch of `rows` prompts left-padded to `width` tokens, every row decoded for
        `steps` tokens (the longest output of the batch), as `model.generate` runs it."""
        return rows * self.item(width, steps)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load_average() -> float:
    try:
        with open("/proc/loadavg") as f:
            return float(f.read().split()[0])
    except OSError:
        return float("nan")
