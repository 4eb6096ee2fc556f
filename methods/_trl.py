"""Shared plumbing for the TRL-based methods (grpo, ppo): prompts, reward, FLOP meter, saving.

Not a method (the leading underscore keeps it out of the registry). What lives here is what
both trainers need identically, so GRPO and PPO cannot drift apart in how they see the data,
score completions, charge the ledger, persist and hand weights to the evaluator:

- prompts: the harness's own rendering and tokenization (`Sizing.prompts`), exactly as
  the engine sees them;
- the reward: `task.rewards` through `harness.task.checked_rewards` (a NaN reward stops the
  run with the item named), looked up at call time (never a copy);
- `LedgerCallback`: charges `ctx.ledger` from tokens actually processed, stops before the
  budget would be overspent, and records one learning-curve point per finished step, only
  once that step's checkpoint is complete (a resumed run never shows a step that was lost);
- `save_policy`: LoRA merged, weights saved in the harness model's dtype under its parameter
  names, so that `Perturber.load_file` loads them into the harness's own model instance;
- persistence: `result.json` marks a finished run (`harness.runs.checkpoints.complete_checkpoint`
  picks the newest trainer checkpoint written to the end and deletes half-written ones);
  `Checkpointer`/`restore` resume a trainer that cannot resume itself (PPO), with every RNG
  state, so that a resumed run ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import copy
import gc
import json
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from harness.runs import distributed as dist
from harness.runs import faults, storage
from harness.budget.compute import backward_flops_per_token
from harness.errors import UserError
from harness.services.trainer_logs import CHECKPOINTING, quiet, trl_without_vllm  # noqa: F401  (quiet: for grpo/ppo)
from harness.engine.perturb import parameters
from harness.budget.plan import Prompts
from harness.runs.results import write_json
from harness.task import checked_rewards

trl_without_vllm()  # before any trl import in the methods

TRAIN_ITEMS = ("selection", "full")


# ---------------------------------------------------------------- data and reward

def training_prompts(sizing, which: str, batch_prompts: int, name: str) -> Prompts:
    """`selection`: the n_train items every method shares; `full`: the whole train split."""
    prompts = sizing.prompts(which)
    if len(prompts.items) < batch_prompts:
        raise UserError(f"{name}.batch_prompts={batch_prompts} is more than the {len(prompts.items)} training "
                        f"items ({which}); lower batch_prompts or raise n_train")
    return prompts


def task_reward_function(task, items):
    """A TRL reward function: row `item_index` of the dataset says which item a completion answers."""
    def task_reward(prompts, completions, item_index, **_):
        # `task.rewards` is looked up per call, so the RL reward is the task's scoring function itself
        return checked_rewards(task, list(completions), [items[i] for i in item_index])
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


def affordable_steps(sizing, worst_step_flops: float, max_steps: int, name: str) -> int:
    """min(max_steps, floor(budget / worst step)); a UserError when that is 0."""
    steps = sizing.affordable(worst_step_flops, max_steps)
    if steps < 1:
        from harness.budget.plan import no_unit_error

        raise no_unit_error(name, "step", worst_step_flops, sizing.budget_flops,
                            f"lower {name}.batch_prompts / max_new_tokens")
    return steps


class LedgerCallback(TrainerCallback):
    """Charges the ledger from tokens processed, stops before overspending, records the curve.

    `tokens_seen(state)` returns the cumulative prompt + completion tokens (non-pad) of every
    rollout so far; each of those tokens goes once through every Pass. The whole rollout is
    charged when its tokens appear (at its first optimizer step), so the ledger never lags
    the work committed. On resume the count comes back with the checkpoint and is charged once.
    The stop is a guard: steps are sized to the budget up front (and PPOTrainer's loop ignores
    should_training_stop, so there the up-front count is what binds).

    Curve: the rewards logged during a rollout step make one point, labelled with the global
    step, held back until a checkpoint covering that step is complete (`flush_curve`, called
    on save and at the end of training): a step lost to a kill is never in curve.jsonl.
    """

    def __init__(self, name, ledger, passes, tokens_seen, worst_step_flops, updates_per_step,
                 record_curve=None, reward_key="reward", step_offset=0):
        self.name, self.ledger, self.passes, self.tokens_seen = name, ledger, passes, tokens_seen
        self.worst, self.updates_per_step = worst_step_flops, updates_per_step
        self.record_curve, self.reward_key, self.step_offset = record_curve, reward_key, step_offset
        self.charged_tokens = 0
        self.step_times: list[float] = []
        self._clock = time.perf_counter()
        self._rewards: list[float] = []
        self._pending: list[dict] = []

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
        if self.reward_key in (logs or {}):
            self._rewards.append(float(logs[self.reward_key]))
        if state.global_step % self.updates_per_step == 0 and self._rewards:  # the step's last update
            self._pending.append({"step": self.step(state), "train_flops": self.ledger.train,
                                  "train_reward": sum(self._rewards) / len(self._rewards)})
            self._rewards = []

    def on_save(self, args, state, control, **kwargs):
        self.flush_curve()

    def on_train_end(self, args, state, control, **kwargs):
        self.flush_curve()

    def flush_curve(self) -> None:
        """Record the finished steps' points: their work is now on disk."""
        for point in self._pending:
            if self.record_curve is not None:
                step = point.pop("step")
                point.pop("train_flops")  # record_curve adds the ledger's, which is the same now
                self.record_curve(step, **point)
        self._pending = []


# ---------------------------------------------------------------- models and persistence

def policy_copy(ctx):
    """A float32 training copy of the harness's model at its base weights (the original is untouched)."""
    if ctx.perturber.dirty:
        ctx.perturber.restore()
    model = copy.deepcopy(ctx.model).to(torch.float32)  # fp32 master weights: lr 1e-6 vanishes in bf16
    model.train()
    return model


def seeded(seed: int):
    """Fresh random weights (LoRA adapters, a critic's head) drawn from `seed` alone: the global
    torch generator's state here depends on what ran before in the process (library imports
    seed it), and two runs of the same command must start from the same weights."""
    import contextlib

    @contextlib.contextmanager
    def scope():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    return scope()


def lora_params(model, rank: int) -> int | None:
    """Weights rank-r LoRA trains (r x (in + out) per linear layer but the output head, as peft's
    "all-linear"); None when rank is 0 (every weight trains). The policy's passes are charged
    through P + T weights (the adapters run unmerged: 44% of P at rank 192 on SmolLM2)."""
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
    alone, unaware of the others)."""
    return dict(output_dir=str(ctx.out_dir / "checkpoints"), use_cpu=device_type(ctx) == "cpu",
                learning_rate=cfg.learning_rate, lr_scheduler_type="constant", warmup_steps=0,
                weight_decay=0.0, logging_steps=1, report_to="none", disable_tqdm=True, bf16=mixed_precision(ctx),
                **{CHECKPOINTING: False}, seed=seed, dataloader_num_workers=0, dataloader_pin_memory=False)


def save_policy(model, perturber, path: Path) -> str:
    """Merge LoRA if any, then save every parameter under the harness model's names, in the
    harness model's dtype (bf16 on GPU: half the bytes of the fp32 training copy), atomically."""
    from safetensors.torch import save_file

    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    named = dict(parameters(model))
    dtypes = perturber.dtypes()  # the engine's names and dtypes
    names = list(dtypes)
    if sorted(named) != sorted(names):
        diff = sorted(set(named) ^ set(names))[:5]
        raise RuntimeError(f"trained policy's parameter names differ from the harness model's: {diff}")
    if dist.is_main():  # every process holds the same synchronised weights; one writes them
        tensors = {n: named[n].detach().to(dtypes[n]).contiguous().cpu() for n in names}
        tmp = path.with_name(path.name + ".partial")
        with storage.writing(tmp, sum(t.numel() * t.element_size() for t in tensors.values())):
            save_file(tensors, str(tmp))
        faults.point("policy-written")
        tmp.rename(path)
    dist.barrier()
    return str(path)


def rng_states() -> dict:
    """Every random state a training step draws from, in a form torch.load(weights_only) reads."""
    np_state = np.random.get_state()
    version, state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
            "python": [version, list(state), gauss]}


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, state, gauss = states["python"]
    random.setstate((version, tuple(state), gauss))


class Checkpointer(TrainerCallback):
    """Saves `parts` (modules, optimizer: anything with state_dict) and every RNG state every
    `every` steps, atomically (written to a .partial file, then renamed).

    For trainers that cannot resume themselves (PPOTrainer); `progress(state)` gives the
    (steps, tokens) done so far, stored beside the weights so the ledger can be restored;
    `after_save` runs once the checkpoint is in place (the curve's finished points).
    """

    def __init__(self, path: Path, every: int, parts: dict, progress, after_save=None):
        self.path, self.every, self.parts, self.progress = path, every, parts, progress
        self.after_save = after_save

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            steps, tokens = self.progress(state)  # on every process: the token count may be a collective
            if dist.is_main():
                self._write({"steps": steps, "tokens": tokens, "rng": rng_states(),
                             **{k: v.state_dict() for k, v in self.parts.items()}})
            dist.barrier()
            if self.after_save:
                self.after_save()

    def _write(self, checkpoint: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".partial")
        need = 2 * sum(p.numel() * p.element_size() for part in self.parts.values() if isinstance(part, torch.nn.Module)
                       for p in part.parameters())  # weights + optimizer moments, roughly
        with storage.writing(tmp, need):
            torch.save(checkpoint, tmp)
        faults.point("ppo-checkpoint-written")
        tmp.rename(self.path)  # a kill mid-save keeps the previous checkpoint


def restore(path: Path, parts: dict, name: str) -> tuple[int, int, dict | None]:
    """Load a Checkpointer checkpoint into `parts` if there is one: (steps, tokens) done so far
    and the RNG states to resume with (None when starting fresh)."""
    if not path.is_file():
        return 0, 0, None
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key, part in parts.items():
        part.load_state_dict(ckpt[key])
    dist.say(f"{name}: resuming after step {ckpt['steps']} from {path}")
    return ckpt["steps"], ckpt["tokens"], ckpt["rng"]


def release(trainer) -> None:
    """Drop what a finished trainer holds (model copies, optimizer state, Accelerate's references
    to both); the harness then hands the freed memory back (harness.runs.memory.trim)."""
    trainer.accelerator.free_memory()
    for attr in ("model", "model_wrapped", "ref_model", "optimizer", "lr_scheduler", "callback_handler",
                 "value_model", "policy_model", "reward_model", "train_dataset"):
        if hasattr(trainer, attr):
            setattr(trainer, attr, None)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def load_result(out_dir: Path) -> dict | None:
    """A finished run's record (written after its weights), or None."""
    path = out_dir / "result.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    if not Path(result["weights"]).is_file():
        return None
    if dist.is_main():  # killed between the record and the clean-up: finish the clean-up now
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return result


def write_result(out_dir: Path, result: dict) -> None:
    """Mark training finished; its checkpoints (GBs with optimizer state) are then dead weight."""
    if dist.is_main():
        write_json(out_dir / "result.json", result)  # atomic: written whole, then renamed
        faults.point("result-written")
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    dist.barrier()
