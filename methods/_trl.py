"""Shared plumbing for the TRL-based methods (grpo, ppo): prompts, reward, FLOP meter, saving.

Not a method (the leading underscore keeps it out of the registry). What lives here is what
both trainers need identically, so GRPO and PPO cannot drift apart in how they see the data,
score completions, charge the ledger, persist and hand weights to the evaluator:

- prompts: the harness's own rendering (`harness.generate.render`), tokenized without
  special tokens, exactly as `Engine.prepare` does;
- the reward: `task.reward(completion_text, item)`, looked up at call time (never a copy);
- `LedgerCallback`: charges `ctx.ledger` from tokens actually processed, stops before the
  budget would be overspent, forwards metrics to `ctx.log`;
- `save_policy`: LoRA merged, weights saved under the harness's parameter names, so that
  `Perturber.load_file` loads them into the harness's own model instance;
- persistence: `result.json` marks a finished run; `Checkpointer`/`restore` resume a trainer
  that cannot resume itself (GRPO uses the Trainer's own checkpoints).
"""
from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

from harness import distributed as dist
from harness.compute import backward_flops_per_token
from harness.errors import UserError
from harness.generate import render
from harness.perturb import parameters
from harness.splits import first_items
from harness.tracking import NullLogger
from harness.units import append_record

TRAIN_ITEMS = ("selection", "full")


# ---------------------------------------------------------------- data and reward

@dataclass(frozen=True)
class Prompts:
    """Training prompts as the harness renders them, with their items (same order)."""

    items: list
    texts: list[str]
    ids: list[list[int]]

    @property
    def max_len(self) -> int:
        return max(len(i) for i in self.ids)

    @property
    def mean_len(self) -> float:
        return sum(len(i) for i in self.ids) / len(self.ids)


def training_prompts(ctx, which: str, batch_prompts: int) -> Prompts:
    """`selection`: the n_train items every method shares; `full`: the whole train split."""
    items = list(ctx.train_items) if which == "selection" else first_items(ctx.task, "train", None,
                                                                           ctx.protocol.data_dir)
    if len(items) < batch_prompts:
        raise UserError(f"batch_prompts={batch_prompts} is more than the {len(items)} training items "
                        f"({which}); lower batch_prompts or raise n_train")
    texts = [render(ctx.tokenizer, it.messages) for it in items]
    ids = [ctx.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    return Prompts(items, texts, ids)


def task_reward_function(task, items):
    """A TRL reward function: row `item_index` of the dataset says which item a completion answers."""
    def task_reward(prompts, completions, item_index, **_):
        # `task.reward` is looked up per call, so the RL reward is the task's scoring function itself
        return [float(task.reward(text, items[i])) for text, i in zip(completions, item_index)]
    return task_reward


# ---------------------------------------------------------------- compute accounting

@dataclass(frozen=True)
class Pass:
    """One pass over every processed token: a forward (2P) or backward (2P + 2T, T trainable
    weights: 4P in full training) of an n_params model."""

    kind: str
    n_params: int
    why: str
    trainable: int | None = None
    """Weights that get gradients in a backward pass; None: all of them."""

    @property
    def flops_per_token(self) -> int:
        if self.kind == "forward":
            return 2 * self.n_params
        return backward_flops_per_token(self.n_params, self.trainable)


def flops_per_token(passes: list[Pass]) -> int:
    return sum(p.flops_per_token for p in passes)


def charge(ledger, passes: list[Pass], tokens: int) -> None:
    for p in passes:
        if p.kind == "forward":
            ledger.forward(tokens, "train", n_params=p.n_params)
        else:
            ledger.backward(tokens, n_params=p.n_params, trainable=p.trainable)


def largest_divisor(n: int, at_most: int) -> int:
    """The largest d <= at_most dividing n: a micro-batch that splits a mini-batch evenly."""
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def micro_per_process(per_update: int, micro_batch: int, world: int, name: str) -> int:
    """Each process's micro-batch, so that `world` processes together make one optimizer update
    of exactly `per_update` sequences (TRL multiplies a per-device batch by the process count)."""
    if per_update % world:
        raise UserError(f"{name}: an optimizer update of {per_update} sequences cannot be split evenly over "
                        f"{world} processes; use a process count (NPROC) that divides {per_update}, or change "
                        f"{name}.mini_batch")
    return largest_divisor(per_update // world, micro_batch)


def affordable_steps(ledger, worst_step_flops: float, max_steps: int, name: str) -> int:
    """min(max_steps, floor(remaining budget / worst step)); a UserError when that is 0."""
    if ledger.budget is None:
        return max_steps
    steps = min(max_steps, int(ledger.remaining() // worst_step_flops))
    if steps < 1:
        raise UserError(f"{name}: the training budget ({ledger.remaining():.3g} FLOPs left) affords 0 steps "
                        f"(one step costs up to {worst_step_flops:.3g}); raise the budget or lower "
                        f"{name}.batch_prompts / max_new_tokens")
    return steps


class LedgerCallback(TrainerCallback):
    """Charges the ledger from tokens processed, stops before overspending, forwards metrics.

    `tokens_seen(state)` returns the cumulative prompt + completion tokens (non-pad) of every
    rollout so far; each of those tokens goes once through every Pass. The whole rollout is
    charged when its tokens appear (at its first optimizer step), so the ledger never lags
    the work committed. On resume the count comes back with the checkpoint and is charged once.
    The stop is a guard: steps are sized to the budget up front (and PPOTrainer's loop ignores
    should_training_stop, so there the up-front count is what binds).
    """

    def __init__(self, name, ledger, passes, tokens_seen, worst_step_flops, updates_per_step,
                 log=None, reward_key="reward", step_offset=0, curve=None):
        self.name, self.ledger, self.passes, self.tokens_seen = name, ledger, passes, tokens_seen
        self.curve = curve  # curve.jsonl: the learning curve the report plots against train FLOPs
        self.worst, self.updates_per_step = worst_step_flops, updates_per_step
        self.log, self.reward_key, self.step_offset = log or NullLogger(), reward_key, step_offset
        self.charged_tokens = 0
        self.step_times: list[float] = []
        self._clock = time.perf_counter()

    def _charge(self, state) -> None:
        seen = int(self.tokens_seen(state))
        if seen > self.charged_tokens:  # idempotent: on_log and on_step_end may both call it
            charge(self.ledger, self.passes, seen - self.charged_tokens)
            self.charged_tokens = seen

    def step(self, state) -> int:
        """Rollout steps done (a step is one batch of prompts, possibly several optimizer updates)."""
        return self.step_offset + state.global_step // self.updates_per_step

    def on_train_begin(self, args, state, control, **kwargs):
        self._charge(state)
        self._clock = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._charge(state)
        if state.global_step % self.updates_per_step:
            return
        now = time.perf_counter()
        self.step_times.append(now - self._clock)
        self._clock = now
        dist.say(f"{self.name}: step {self.step(state)} done, train FLOPs {self.ledger.train:.3g}, "
                 f"{self.step_times[-1]:.1f} s")
        if not self.ledger.affords(self.worst):  # the next step's worst case would overspend
            control.should_training_stop = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._charge(state)
        metrics = {f"{self.name}/{k}": v for k, v in (logs or {}).items() if isinstance(v, (int, float))}
        if self.reward_key in (logs or {}):
            metrics[f"{self.name}/reward_mean"] = logs[self.reward_key]
            if self.curve is not None and dist.is_main():
                append_record(self.curve, {"step": state.global_step, "train_flops": self.ledger.train,
                                           "train_reward": float(logs[self.reward_key])})
        metrics[f"{self.name}/train_flops"] = self.ledger.train
        metrics[f"{self.name}/step"] = self.step(state)
        self.log.log(metrics, step=self.step_offset * self.updates_per_step + state.global_step)


# ---------------------------------------------------------------- models and persistence

def policy_copy(ctx):
    """A float32 training copy of the harness's model at its base weights (the original is untouched)."""
    if ctx.perturber.dirty:
        ctx.perturber.restore()
    model = copy.deepcopy(ctx.model).to(torch.float32)  # fp32 master weights: lr 1e-6 vanishes in bf16
    model.train()
    return model


def lora_params(model, rank: int) -> int | None:
    """Weights rank-r LoRA trains (r x (in + out) per linear layer but the output head, as peft's
    "all-linear"); None when rank is 0 (every weight trains). The adapters' own forward cost
    (2 per adapter weight and token, well under 1% of 2P at small ranks) is not charged."""
    if not rank:
        return None
    head = model.get_output_embeddings()
    return sum(rank * (m.in_features + m.out_features) for m in model.modules()
               if isinstance(m, torch.nn.Linear) and m is not head)


def lora_config(rank: int):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")


def device_type(ctx) -> str:
    """The device type ("cpu", "cuda") of the harness's model, which is where training runs."""
    return getattr(ctx.model, "device", torch.device("cpu")).type


def mixed_precision(ctx) -> bool:
    """bf16 autocast on GPU (fp32 master weights); plain fp32 on CPU, where bf16 is about 3x slower."""
    return device_type(ctx) == "cuda"


def common_args(ctx, cfg, seed: int) -> dict:
    """TrainingArguments shared by both trainers: no W&B inside TRL, constant lr (verl's default).

    use_cpu on a CPU model: TrainingArguments rebuilds Accelerate's state, and only with it does
    a multi-process CPU launch become a gloo process group (otherwise every process would train
    alone, unaware of the others; ENVIRONMENT.md)."""
    return dict(output_dir=str(ctx.out_dir / "checkpoints"), use_cpu=device_type(ctx) == "cpu",
                learning_rate=cfg.learning_rate, lr_scheduler_type="constant", warmup_steps=0,
                weight_decay=0.0, logging_steps=1, report_to="none", disable_tqdm=True, bf16=mixed_precision(ctx),
                activation_checkpointing=False, seed=seed, dataloader_num_workers=0, dataloader_pin_memory=False)


def quiet(trainer) -> None:
    """Drop transformers' per-step printers; LedgerCallback prints one line per step instead."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)


def save_policy(model, perturber, path: Path) -> str:
    """Merge LoRA if any, then save every parameter under the harness model's names (atomic)."""
    from safetensors.torch import save_file

    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    named = dict(parameters(model))
    names = [n for n, _ in perturber.params]
    if sorted(named) != sorted(names):
        diff = sorted(set(named) ^ set(names))[:5]
        raise RuntimeError(f"trained policy's parameter names differ from the harness model's: {diff}")
    if dist.is_main():  # every process holds the same synchronised weights; one writes them
        tmp = path.with_name(path.name + ".partial")
        save_file({n: named[n].detach().contiguous().cpu() for n in names}, str(tmp))
        tmp.rename(path)
    dist.barrier()
    return str(path)


class Checkpointer(TrainerCallback):
    """Saves `parts` (modules, optimizer: anything with state_dict) every `every` steps, atomically.

    For trainers that cannot resume themselves (PPOTrainer); `progress(state)` gives the
    (steps, tokens) done so far, stored beside the weights so the ledger can be restored.
    """

    def __init__(self, path: Path, every: int, parts: dict, progress):
        self.path, self.every, self.parts, self.progress = path, every, parts, progress

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            steps, tokens = self.progress(state)  # on every process: the token count may be a collective
            if not dist.is_main():
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".partial")
            torch.save({"steps": steps, "tokens": tokens, **{k: v.state_dict() for k, v in self.parts.items()}},
                       tmp)
            tmp.rename(self.path)  # a kill mid-save keeps the previous checkpoint


def restore(path: Path, parts: dict, name: str) -> tuple[int, int]:
    """Load a Checkpointer checkpoint into `parts` if there is one; (steps, tokens) done so far."""
    if not path.is_file():
        return 0, 0
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key, part in parts.items():
        part.load_state_dict(ckpt[key])
    dist.say(f"{name}: resuming after step {ckpt['steps']} from {path}")
    return ckpt["steps"], ckpt["tokens"]


def load_result(out_dir: Path) -> dict | None:
    """A finished run's record (written after its weights), or None."""
    path = out_dir / "result.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if Path(result["weights"]).is_file() else None


def write_result(out_dir: Path, result: dict) -> None:
    """Mark training finished; its checkpoints (GBs with optimizer state) are then dead weight."""
    if dist.is_main():
        tmp = out_dir / "result.json.partial"
        tmp.write_text(json.dumps(result, indent=1))
        tmp.rename(out_dir / "result.json")
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    dist.barrier()
