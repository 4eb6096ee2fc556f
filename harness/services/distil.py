"""Distilling sampled answers into one model: which traces to keep, LoRA SFT through TRL, and
the adapter it leaves behind (docs/paper.md section 7, iterative RandOpt's distillation step).

- `select_traces`: pure rejection sampling for one question. Every sample votes (its vote
  key, duplicates included); distinct texts that are correct are ranked by (answer differs
  from the majority answer, then length in generated tokens), the first `max_traces` kept.
  Incorrect samples are never kept. This is the authors' rule (their rejection.py).
- `merge_traces`: the union of several rounds' traces, deduplicated by (question, text).
- `sft_examples`: traces as token ids, prompt tokenized exactly as the harness's engine does
  (no special tokens added), completion re-tokenized from its text plus EOS, and a mask so
  the loss covers the completion only.
- `train_lora`: TRL's SFTTrainer with a peft LoRA config on a given model, resumed from the
  last COMPLETE checkpoint, saving the adapter (peft's small files, plus sft.json with the
  tokens processed) into place with one atomic rename; the folder's presence means "done".
The adapter's merged delta is the engine's (`harness.engine.adapters.lora_deltas`): every engine
merges it into its own weights.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from harness.runs import distributed as dist
from harness.runs.checkpoints import complete_checkpoint
from harness.services.trainer_logs import quiet, trl_without_vllm
from harness.vote import majority

@dataclass(frozen=True)
class Sample:
    """One sampled answer to one question."""

    item: int
    """Index of the question in the list the samples answer."""
    text: str | None
    """The decoded completion (None where it is not kept on disk: incorrect samples)."""
    key: str
    """The task's vote key of the completion ("" abstains)."""
    correct: bool
    tokens: int
    """Generated tokens, EOS included: the length a trace is ranked by."""


def select_traces(samples: list[Sample], max_traces: int) -> list[Sample]:
    """The kept traces of ONE question, best first; `samples` in sampling order."""
    top = majority([s.key for s in samples])
    seen, distinct = set(), []
    for s in samples:
        if s.correct and s.text not in seen:
            seen.add(s.text)
            distinct.append(s)
    distinct.sort(key=lambda s: (s.key != top, s.tokens))  # stable: ties keep sampling order
    return distinct[:max_traces]


def select_all(samples: list[Sample], max_traces: int) -> list[Sample]:
    """`select_traces` per question, questions in index order."""
    by_item: dict[int, list[Sample]] = {}
    for s in samples:
        by_item.setdefault(s.item, []).append(s)
    return [t for i in sorted(by_item) for t in select_traces(by_item[i], max_traces)]


def merge_traces(*rounds: list[Sample]) -> list[Sample]:
    """The union of rounds' traces in round order, each (question, text) once."""
    seen, out = set(), []
    for traces in rounds:
        for t in traces:
            if (t.item, t.text) not in seen:
                seen.add((t.item, t.text))
                out.append(t)
    return out


def sft_examples(tokenizer, prompt_ids: list[list[int]], traces: list[Sample]) -> dict:
    """{"input_ids", "completion_mask"} per trace: prompt ids + completion ids + EOS."""
    eos = tokenizer.eos_token_id
    input_ids, masks = [], []
    for t in traces:
        completion = tokenizer(t.text, add_special_tokens=False).input_ids + [eos]
        input_ids.append(list(prompt_ids[t.item]) + completion)
        masks.append([0] * len(prompt_ids[t.item]) + [1] * len(completion))
    return {"input_ids": input_ids, "completion_mask": masks}


def lora_config(rank: int, alpha: int, dropout: float):
    """LoRA on every linear layer but the output head (peft's "all-linear"), as the authors'
    q, k, v, o, gate, up and down projections on Llama-style models."""
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules="all-linear",
                      bias="none", task_type="CAUSAL_LM")


def train_lora(model, tokenizer, examples: dict, args: dict, lora, adapter_dir: Path, callbacks=()) -> dict:
    """LoRA SFT of `model` on `examples`, resumed from the last complete checkpoint; returns the
    record saved as sft.json (tokens processed, optimizer steps, examples).

    `args` are SFTConfig fields (output_dir holds the checkpoints). The adapter and its record
    appear together (rename of a finished folder); the checkpoints are removed then. The copy
    of the tokenizer in `tokenizer` may be changed by TRL.
    """
    from datasets import Dataset
    from transformers import set_seed
    trl_without_vllm()
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(**args, completion_only_loss=True, max_length=None, packing=False,
                       include_num_input_tokens_seen="non_padding", save_strategy="steps", save_total_limit=1)
    set_seed(config.seed)  # the LoRA init draws from the global generator before the Trainer seeds it
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_dict(examples),
                         processing_class=tokenizer, peft_config=lora, callbacks=list(callbacks))
    quiet(trainer)
    trainer.train(resume_from_checkpoint=complete_checkpoint(Path(config.output_dir), "sft"))
    record = {"tokens": int(trainer.state.num_input_tokens_seen), "steps": trainer.state.global_step,
              "examples": len(examples["input_ids"])}
    if dist.is_main():
        tmp = adapter_dir.with_name(adapter_dir.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(str(tmp))
        (tmp / "sft.json").write_text(json.dumps(record))
        os.replace(tmp, adapter_dir)
        shutil.rmtree(config.output_dir, ignore_errors=True)  # optimizer state: dead weight now
    dist.barrier()
    return record


def finished_adapter(adapter_dir: Path) -> dict | None:
    """sft.json of an adapter `train_lora` finished, or None."""
    path = adapter_dir / "sft.json"
    return json.loads(path.read_text()) if path.is_file() else None
