"""grpo: Group Relative Policy Optimization, TRL's GRPOTrainer with the task's own reward.

Algorithm (Shao et al., DeepSeekMath, arXiv 2402.03300): each step samples G completions for
each of B prompts, scores them with `task.reward`, takes advantage = (reward - group mean) /
group std, and makes B/mini_batch clipped policy-gradient updates with a beta-weighted KL
to the frozen starting model. The evaluator then answers greedily with the trained weights.

Paper (Gan & Isola, "Neural Thickets", arXiv 2603.12228; docs/paper.md section 3): verl, B=1024
prompts x G=8, lr 1e-6, mini-batch 64 prompts, KL 1e-3, 1024/1024 prompt/response tokens;
these are the Config defaults. Deviations:
- TRL 1.12 instead of verl. TRL's defaults stand in for verl's: loss "dapo" (token-level
  mean over the mini-batch, like verl's token-mean), k3 KL in the loss (verl's low_var_kl),
  clip 0.2, constant lr, one pass over each rollout (num_iterations=1, verl ppo_epochs=1).
- Presets shrink B, G, n_train and max_new_tokens for CPU; mini_batch is clamped to B.
- The number of steps is what the training FLOP budget affords, each step charged its worst
  case (every prompt the longest, every completion max_new_tokens long), capped by max_steps.
- Which items train it (the 200 of RandOpt/ES or the full train split) is unclear in the
  paper: `train_items` chooses, default `selection`, and the result records it.

Run: `thicket compare --task arith --methods grpo` or
     `thicket compare --task gsm8k --methods grpo --set grpo.train_items=full --set grpo.lora_rank=16`.
"""
from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.runs import distributed as dist
from harness.runs import faults, storage
from harness.runs.checkpoints import complete_checkpoint
from harness.budget.compute import paper_grpo_flops
from harness.errors import UserError
from harness.method import Ensemble, Method, Voter
from harness.budget.plan import Work
from methods._trl import (TRAIN_ITEMS, LedgerCallback, Pass, affordable_steps, charge, common_args,
                          flops_per_token, load_result, lora_config, lora_params,
                          micro_per_process, policy_copy, quiet, release, save_policy, task_reward_function,
                          training_prompts, write_result)

DEVIATIONS = ["TRL 1.12 GRPOTrainer instead of verl (loss dapo, k3 KL in the loss, clip 0.2, constant lr)",
              "preset sizes for B, G, n_train, max_new_tokens; mini_batch clamped to B",
              "steps = what the FLOP budget affords at the worst case per step, capped by max_steps"]


@dataclass(frozen=True)
class Config:
    learning_rate: float = 1e-6
    """Policy AdamW learning rate, constant (paper: 1e-6)."""
    batch_prompts: int = 1024
    """B: prompts per step (paper: 1024)."""
    num_generations: int = 8
    """G: sampled completions per prompt, the group its advantages are relative to (paper: 8)."""
    mini_batch: int = 64
    """Prompts per optimizer update, as verl's ppo_mini_batch_size: B/mini_batch updates per step (paper: 64)."""
    micro_batch: int = 8
    """Most completions per forward/backward pass; gradients accumulate to a mini-batch (memory only)."""
    beta: float = 1e-3
    """KL coefficient to the starting model; 0 drops the reference forward (paper: 1e-3)."""
    temperature: float = 1.0
    """Sampling temperature of the training rollouts."""
    max_steps: int = 100
    """Cap on steps; a training FLOP budget usually binds first."""
    lora_rank: int = 0
    """0 trains every weight; r > 0 trains rank-r LoRA adapters (all linear layers), merged at the end."""
    train_items: str = "selection"
    """`selection`: the first n_train items every method shares; `full`: the whole train split."""
    save_every: int = 1
    """Steps between checkpoints (a killed run resumes from the last one)."""

    def __post_init__(self):
        for name in ("batch_prompts", "mini_batch", "micro_batch", "max_steps", "save_every"):
            if getattr(self, name) < 1:
                raise UserError(f"grpo.{name} must be >= 1, got {getattr(self, name)}")
        if self.num_generations < 2:
            raise UserError(f"grpo.num_generations must be >= 2 (advantages are relative to the group), "
                            f"got {self.num_generations}")
        if self.learning_rate <= 0 or self.beta < 0 or self.temperature <= 0 or self.lora_rank < 0:
            raise UserError("grpo: learning_rate and temperature must be > 0, beta and lora_rank >= 0")
        if self.train_items not in TRAIN_ITEMS:
            raise UserError(f"grpo.train_items {self.train_items!r}; choose one of {', '.join(TRAIN_ITEMS)}")
        if self.batch_prompts % self.mini > 0:
            raise UserError(f"grpo.batch_prompts={self.batch_prompts} must be a multiple of "
                            f"mini_batch={self.mini_batch}")

    @property
    def mini(self) -> int:
        """Prompts per update, clamped to B (presets shrink B but leave mini_batch)."""
        return min(self.mini_batch, self.batch_prompts)

    def micro_for(self, world: int = 1) -> int:
        """Each of `world` processes' micro-batch: the largest up to micro_batch that splits its
        share of a mini-batch's completions evenly."""
        return micro_per_process(self.mini * self.num_generations, self.micro_batch, world, "grpo")

    @property
    def updates_per_step(self) -> int:
        return self.batch_prompts // self.mini


def rollout_passes(cfg: Config, n_params: int, trainable: int | None = None) -> list[Pass]:
    """What TRL runs over every rollout token: a pass list the ledger charges per token.
    With LoRA (`trainable` adapter weights) the policy runs through base and adapters, P + T;
    the reference is the base alone (peft disables the adapters for it)."""
    policy = n_params + (trainable or 0)
    passes = [Pass("forward", policy, "generation"), Pass("forward", policy, "policy loss"),
              Pass("backward", policy, "policy loss", trainable)]
    if cfg.beta > 0:
        passes.append(Pass("forward", n_params, "reference log-probs"))
    if cfg.updates_per_step > 1:  # TRL recomputes old log-probs when a rollout feeds several updates
        passes.append(Pass("forward", policy, "old-policy log-probs"))
    return passes


def step_cost(sizing, cfg: Config):
    """(prompts, passes, worst-case FLOPs of one step: every prompt the longest, every completion full)."""
    prompts = training_prompts(sizing, cfg.train_items, cfg.batch_prompts, "grpo")
    passes = rollout_passes(cfg, sizing.n_params, lora_params(sizing.model, cfg.lora_rank))
    sequences = cfg.batch_prompts * cfg.num_generations
    return prompts, passes, sequences * (prompts.max_len + sizing.max_new_tokens) * flops_per_token(passes)


class GRPO(Method):
    Config = Config

    def plan(self, sizing) -> Work:
        cfg = self.config
        prompts, passes, worst = step_cost(sizing, cfg)
        steps = affordable_steps(sizing, worst, cfg.max_steps, "grpo")
        sequences = steps * cfg.batch_prompts * cfg.num_generations
        update = sequences * (prompts.max_len + sizing.max_new_tokens) * (flops_per_token(passes) - passes[0].flops_per_token)
        return Work(sizes={"steps": steps, "B": cfg.batch_prompts, "G": cfg.num_generations},
                    train_flops=steps * worst, generated_sequences=sequences, update_flops=update,
                    note=f"{cfg.updates_per_step} update(s) per step, train_items={cfg.train_items}")

    def train(self, ctx) -> list[Ensemble]:
        cfg, P, world = self.config, ctx.ledger.n_params, dist.world()
        prompts, passes, worst = step_cost(ctx.sizing, cfg)
        steps = self.plan(ctx.sizing).sizes["steps"]
        micro = cfg.micro_for(world)
        dist.say(f"grpo: B={cfg.batch_prompts}, G={cfg.num_generations}, mini={cfg.mini}, "
                 f"micro={micro} x {world} process(es), "
                 f"updates/step={cfg.updates_per_step}, steps={steps}, worst step FLOPs={worst:.3g}, "
                 f"budget={ctx.ledger.budget}, train_items={cfg.train_items} ({len(prompts.items)})")
        info = {"planned_steps": steps, "updates_per_step": cfg.updates_per_step, "mini_batch_prompts": cfg.mini,
                "micro_batch": micro, "processes": world, "worst_step_flops": worst, "train_items": cfg.train_items,
                "n_train_items": len(prompts.items), "passes": [f"{p.kind}: {p.why}" for p in passes],
                "deviations": DEVIATIONS}

        done = load_result(ctx.out_dir)
        if done is None:
            done = self._train(ctx, prompts, passes, worst, steps, micro, world)
        else:  # finished before: charge its recorded tokens again, train nothing
            charge(ctx.ledger, passes, done["tokens"])
        info.update(done["info"], paper_train_flops=paper_grpo_flops(
            done["info"]["steps"], cfg.batch_prompts, cfg.num_generations, P, prompts.mean_len + ctx.max_new_tokens))
        return [Ensemble("grpo", [Voter("grpo", weights=done["weights"])], ks=(1,), info=info)]

    def _train(self, ctx, prompts, passes, worst, steps, micro, world) -> dict:
        from trl import GRPOConfig, GRPOTrainer

        cfg = self.config
        # Token count: TRL's _generate adds every rollout's prompt + completion tokens (completions
        # cut after EOS, no padding, gathered over processes, whatever the generation backend) to
        # state.num_input_tokens_seen. The Trainer checkpoints that state and restores it on
        # resume, so finished work is charged exactly once; a reward-function wrapper would see
        # completions but not prompt token counts, and its count would be lost on a kill.
        meter = LedgerCallback("grpo", ctx.ledger, passes, lambda state: state.num_input_tokens_seen, worst,
                               cfg.updates_per_step, ctx.record_curve, reward_key="reward")
        # One optimizer update = micro x world processes x accumulation = mini x G completions,
        # whatever the process count; generation_batch_size is global in TRL. The Trainer keeps
        # one complete checkpoint (save_total_limit) beside the one being written.
        args = GRPOConfig(**common_args(ctx, cfg, ctx.protocol.seed),
                          per_device_train_batch_size=micro,
                          gradient_accumulation_steps=cfg.mini * cfg.num_generations // (micro * world),
                          generation_batch_size=cfg.batch_prompts * cfg.num_generations,
                          num_generations=cfg.num_generations, max_completion_length=ctx.max_new_tokens,
                          max_steps=steps * cfg.updates_per_step, num_iterations=1, beta=cfg.beta,
                          temperature=cfg.temperature, save_strategy="steps",
                          save_steps=cfg.save_every * cfg.updates_per_step, save_total_limit=1,
                          disable_dropout=True, log_completions=False, remove_unused_columns=False)
        # LoRA adapters are drawn inside, before the Trainer seeds itself: seed them too (not in a
        # forked RNG scope, which would undo the Trainer's own seeding on the way out)
        torch.manual_seed(ctx.protocol.seed)
        trainer = GRPOTrainer(model=policy_copy(ctx), reward_funcs=task_reward_function(ctx.task, prompts.items),
                              args=args, train_dataset=dataset(prompts), processing_class=trl_tokenizer(ctx, prompts),
                              peft_config=lora_config(cfg.lora_rank) if cfg.lora_rank else None, callbacks=[meter])
        quiet(trainer)
        fault_inside_checkpoints(trainer)
        resume = complete_checkpoint(Path(args.output_dir), "grpo")
        if resume:
            dist.say(f"grpo: resuming from {resume}")
        with storage.writing(Path(args.output_dir)):
            trainer.train(resume_from_checkpoint=resume)

        weights = save_policy(trainer.accelerator.unwrap_model(trainer.model), ctx.perturber,
                              ctx.out_dir / "policy.safetensors")
        times = meter.step_times
        result = {"weights": weights, "tokens": meter.charged_tokens,
                  "info": {"steps": meter.step(trainer.state), "optimizer_steps": trainer.state.global_step,
                           "wall_s_per_step": sum(times) / len(times) if times else None}}
        release(trainer)
        write_result(ctx.out_dir, result)
        return result


def fault_inside_checkpoints(trainer) -> None:
    """Kill-test hook: a fault point after the checkpoint's weights and optimizer are written
    and before its RNG state and trainer_state.json (a no-op unless THICKET_KILL_AT is set)."""
    if faults.ENV not in os.environ:
        return
    save_rng = trainer._save_rng_state

    def killable(output_dir):
        faults.point("trl-checkpoint-half-written")
        save_rng(output_dir)
    trainer._save_rng_state = killable


def dataset(prompts):
    """Prompt text (the harness's rendering) plus the index of its item, which the reward reads."""
    from datasets import Dataset

    return Dataset.from_dict({"prompt": prompts.texts, "item_index": list(range(len(prompts.texts)))})


def trl_tokenizer(ctx, prompts):
    """A copy of the harness tokenizer (TRL may set attributes); warn if TRL would tokenize differently.

    TRL tokenizes string prompts with the tokenizer's default special tokens, the harness
    without; for chat-template models these agree (the template already writes them).
    """
    tokenizer = copy.deepcopy(ctx.tokenizer)
    if tokenizer(prompts.texts[0]).input_ids != prompts.ids[0]:
        warnings.warn("grpo: this tokenizer adds special tokens to prompts; TRL's rollouts will see them "
                      "while the harness's evaluation does not")
    return tokenizer


METHOD = GRPO
