"""ppo: Proximal Policy Optimization with a learned critic, TRL's PPOTrainer and the task's reward.

Algorithm (Schulman et al., arXiv 1707.06347; RLHF form of Ziegler et al., arXiv 1909.08593):
each step samples one completion for each of B prompts; the reward is `task.reward` at the
last token minus kl_coef * KL to the starting model at every token; GAE(gamma, lam) on a
value model gives advantages; clipped policy and value losses, B/mini_batch updates per epoch.

Paper (Gan & Isola, "Neural Thickets", arXiv 2603.12228; docs/paper.md section 3): verl, batch 128,
G=1, actor lr 1e-6, critic lr 1e-5, mini-batch 32, KL 1e-3, GAE; the Config defaults. Deviations:
- TRL 1.12's experimental PPOTrainer instead of verl: the KL (k1 estimate) enters the per-token
  reward, TRL's only form (verl can put it in the loss instead); TRL's clip ranges (0.2 for
  policy and value); no gradient clipping (TRL's PPO loop has none).
- One optimizer with two parameter groups gives the actor and critic their own learning rates
  (TRL's own would use one lr for both). TRL accumulates a whole rollout into one update per
  epoch; we set its accumulation to one mini-batch, so each mini-batch is one update as in verl.
- No reward model: `TaskRewardModel` fills TRL's reward-model slot with the rule-based reward.
  The critic is an AutoModelForSequenceClassification (one output) initialised from the
  harness's model. SmolLM2 pads with its EOS, which prompts contain and TRL would mask out,
  so PPO's tokenizer copy pads with the unknown token (<|endoftext|>) instead.
- PPOTrainer cannot resume, so we checkpoint policy, critic and optimizer ourselves.
- Presets shrink B, mini_batch, n_train, max_new_tokens; steps are what the FLOP budget
  affords at each step's worst case, capped by max_steps; train_items as for grpo.

Run: `thicket compare --task arith --methods ppo` or
     `thicket compare --task gsm8k --methods ppo --set ppo.batch_prompts=16 --set ppo.mini_batch=8`.
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from harness.runs import distributed as dist
from harness.budget.compute import paper_ppo_flops
from harness.errors import UserError
from harness.method import Ensemble, Method, Voter
from harness.budget.plan import Work
from harness.task import checked_rewards
from methods._trl import (TRAIN_ITEMS, Checkpointer, LedgerCallback, Pass, affordable_steps, charge,
                          common_args, flops_per_token, load_result, lora_config, lora_params, micro_per_process,
                          policy_copy, quiet, release, restore, save_policy, seeded, set_rng_states, training_prompts,
                          write_result)

DEVIATIONS = ["TRL 1.12 experimental PPOTrainer instead of verl (k1 KL in the reward, TRL clip ranges, "
              "no grad clipping)",
              "actor and critic lrs as two parameter groups of one AdamW; one update per mini-batch",
              "rule-based task reward in TRL's reward-model slot; critic initialised from the policy",
              "preset sizes; steps = what the FLOP budget affords at the worst case per step"]


@dataclass(frozen=True)
class Config:
    learning_rate: float = 1e-6
    """Actor (policy) AdamW learning rate, constant (paper: 1e-6)."""
    critic_learning_rate: float = 1e-5
    """Critic (value model) AdamW learning rate, constant (paper: 1e-5)."""
    batch_prompts: int = 128
    """B: prompts per step, one completion each (paper: 128)."""
    mini_batch: int = 32
    """Completions per optimizer update: B/mini_batch updates per epoch (paper: 32)."""
    micro_batch: int = 8
    """Most completions per forward/backward pass; gradients accumulate to a mini-batch (memory only)."""
    kl_coef: float = 1e-3
    """Per-token KL penalty to the starting model, inside the reward (paper: 1e-3)."""
    gamma: float = 1.0
    """GAE discount."""
    lam: float = 0.95
    """GAE lambda."""
    num_ppo_epochs: int = 1
    """Passes over each rollout batch (verl's ppo_epochs default 1; TRL's default is 4)."""
    temperature: float = 1.0
    """Sampling temperature of the training rollouts."""
    max_steps: int = 100
    """Cap on steps; a training FLOP budget usually binds first."""
    lora_rank: int = 0
    """0 trains every policy weight; r > 0 trains rank-r LoRA adapters, merged at the end (critic: full)."""
    train_items: str = "selection"
    """`selection`: the first n_train items every method shares; `full`: the whole train split."""
    save_every: int = 1
    """Steps between checkpoints (a killed run resumes from the last one)."""

    def __post_init__(self):
        for name in ("batch_prompts", "mini_batch", "micro_batch", "num_ppo_epochs", "max_steps", "save_every"):
            if getattr(self, name) < 1:
                raise UserError(f"ppo.{name} must be >= 1, got {getattr(self, name)}")
        if min(self.learning_rate, self.critic_learning_rate, self.temperature) <= 0:
            raise UserError("ppo: learning rates and temperature must be > 0")
        if self.kl_coef < 0 or self.lora_rank < 0 or not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1):
            raise UserError("ppo: kl_coef and lora_rank must be >= 0, gamma and lam in [0, 1]")
        if self.train_items not in TRAIN_ITEMS:
            raise UserError(f"ppo.train_items {self.train_items!r}; choose one of {', '.join(TRAIN_ITEMS)}")
        if self.batch_prompts % self.mini:
            raise UserError(f"ppo.batch_prompts={self.batch_prompts} must be a multiple of "
                            f"mini_batch={self.mini_batch}")

    @property
    def mini(self) -> int:
        """Completions per update, clamped to B (presets shrink B but may leave mini_batch)."""
        return min(self.mini_batch, self.batch_prompts)

    def micro_for(self, world: int = 1) -> int:
        """Each of `world` processes' micro-batch: the largest up to micro_batch that splits its
        share of a mini-batch evenly."""
        return micro_per_process(self.mini, self.micro_batch, world, "ppo")


def value_params(model) -> int:
    """P_v: the critic is the policy's backbone plus a one-output head (hidden_size weights)."""
    backbone = getattr(model, model.base_model_prefix)
    return sum(p.numel() for _, p in backbone.named_parameters()) + model.config.hidden_size


def rollout_passes(cfg: Config, n_params: int, n_value: int, trainable: int | None = None) -> list[Pass]:
    """What TRL runs over every rollout token (the reward costs nothing: it is a rule).
    `trainable`: the policy's LoRA adapter weights T (the policy then runs through P + T; the
    reference is the base alone); the critic always trains fully."""
    policy = n_params + (trainable or 0)
    passes = [Pass("forward", policy, "generation"), Pass("forward", n_params, "reference log-probs"),
              Pass("forward", n_value, "values")]
    for _ in range(cfg.num_ppo_epochs):
        passes += [Pass("forward", policy, "policy loss"), Pass("backward", policy, "policy loss", trainable),
                   Pass("forward", n_value, "value loss"), Pass("backward", n_value, "value loss")]
    return passes


def step_cost(sizing, cfg: Config):
    """(prompts, passes, worst-case FLOPs of one step: every prompt the longest, every completion full)."""
    prompts = training_prompts(sizing, cfg.train_items, cfg.batch_prompts, "ppo")
    passes = rollout_passes(cfg, sizing.n_params, value_params(sizing.model), lora_params(sizing.model, cfg.lora_rank))
    return prompts, passes, cfg.batch_prompts * (prompts.max_len + sizing.max_new_tokens) * flops_per_token(passes)


class PPO(Method):
    Config = Config

    def plan(self, sizing) -> Work:
        cfg = self.config
        prompts, passes, worst = step_cost(sizing, cfg)
        steps = affordable_steps(sizing, worst, cfg.max_steps, "ppo")
        sequences = steps * cfg.batch_prompts
        update = sequences * (prompts.max_len + sizing.max_new_tokens) * (flops_per_token(passes) - passes[0].flops_per_token)
        return Work(sizes={"steps": steps, "B": cfg.batch_prompts}, train_flops=steps * worst,
                    generated_sequences=sequences, update_flops=update,
                    note=f"{cfg.num_ppo_epochs * cfg.batch_prompts // cfg.mini} update(s) per step, critic included")

    def train(self, ctx) -> list[Ensemble]:
        cfg, P, world = self.config, ctx.ledger.n_params, dist.world()
        prompts, passes, worst = step_cost(ctx.sizing, cfg)
        steps = self.plan(ctx.sizing).sizes["steps"]
        micro = cfg.micro_for(world)
        dist.say(f"ppo: B={cfg.batch_prompts}, mini={cfg.mini}, micro={micro} x {world} process(es), "
                 f"epochs={cfg.num_ppo_epochs}, "
                 f"updates/step={cfg.num_ppo_epochs * cfg.batch_prompts // cfg.mini}, steps={steps}, "
                 f"worst step FLOPs={worst:.3g}, budget={ctx.ledger.budget}, "
                 f"train_items={cfg.train_items} ({len(prompts.items)})")
        info = {"planned_steps": steps, "mini_batch": cfg.mini, "micro_batch": micro, "processes": world,
                "num_ppo_epochs": cfg.num_ppo_epochs, "actor_lr": cfg.learning_rate,
                "critic_lr": cfg.critic_learning_rate, "worst_step_flops": worst, "train_items": cfg.train_items,
                "n_train_items": len(prompts.items), "passes": [f"{p.kind}: {p.why}" for p in passes],
                "deviations": DEVIATIONS}

        done = load_result(ctx.out_dir)
        if done is None:
            done = self._train(ctx, prompts, passes, worst, steps, micro, world)
        else:  # finished before: charge its recorded tokens again, train nothing
            charge(ctx.ledger, passes, done["tokens"])
        info.update(done["info"], paper_train_flops=paper_ppo_flops(
            done["info"]["steps"], cfg.batch_prompts, 1, P, prompts.mean_len + ctx.max_new_tokens))
        return [Ensemble("ppo", [Voter("ppo", weights=done["weights"])], ks=(1,), info=info)]

    def _train(self, ctx, prompts, passes, worst, steps, micro, world) -> dict:
        cfg = self.config
        tokenizer = ppo_tokenizer(ctx, prompts)
        policy = policy_copy(ctx)
        policy.generation_config.pad_token_id = tokenizer.pad_token_id  # pad after EOS with PPO's pad
        if cfg.lora_rank:
            from peft import get_peft_model

            with seeded(ctx.protocol.seed):
                policy = get_peft_model(policy, lora_config(cfg.lora_rank))
        value = value_model(ctx, tokenizer.pad_token_id)
        optimizer = torch.optim.AdamW([  # Trainer's AdamW defaults otherwise (betas .9/.999, eps 1e-8, no decay)
            {"params": [p for p in policy.parameters() if p.requires_grad], "lr": cfg.learning_rate},
            {"params": list(value.parameters()), "lr": cfg.critic_learning_rate}], weight_decay=0.0)
        reward_model = TaskRewardModel(ctx.task, prompts, tokenizer)
        # The trainer is built around the BASE weights first: its frozen KL reference is a copy of
        # the policy it is given, so loading a checkpoint before would make the reference drift.
        trainer = build_trainer(ctx, cfg, prompts, tokenizer, policy, value, reward_model, optimizer, steps, micro,
                                world, seed=ctx.protocol.seed, callbacks=[])
        ckpt_path = ctx.out_dir / "checkpoints" / "ppo.pt"
        parts = {"policy": policy, "value": value, "optimizer": optimizer}
        done_steps, done_tokens, rng = restore(ckpt_path, parts, "ppo")
        start_rng(rng, ctx.protocol.seed)
        # each process rewards (and counts) only its own rollouts: the ledger charges every process's
        meter = LedgerCallback("ppo", ctx.ledger, passes,
                               lambda state: done_tokens + dist.total(reward_model.backbone.tokens),
                               worst, 1, ctx.record_curve, reward_key="objective/scores", step_offset=done_steps)
        if steps > done_steps:
            saver = Checkpointer(ckpt_path, cfg.save_every, parts,
                                 lambda state: (meter.step(state), meter.tokens_seen(state)), meter.flush_curve)
            for callback in (meter, saver):  # the meter first: a step's point exists before its save
                trainer.add_callback(callback)
            resume_stream(trainer, cfg, done_steps, ctx.protocol.seed)
            trainer.args.num_total_batches = steps - done_steps
            trainer.train()
            done_steps = meter.step(trainer.state)
        else:  # killed after its last checkpoint: only the ledger needs the finished work
            charge(ctx.ledger, passes, done_tokens)
            meter.charged_tokens = done_tokens
        weights = save_policy(policy, ctx.perturber, ctx.out_dir / "policy.safetensors")
        times = meter.step_times
        result = {"weights": weights, "tokens": meter.charged_tokens,
                  "info": {"steps": done_steps, "wall_s_per_step": sum(times) / len(times) if times else None}}
        release(trainer)
        write_result(ctx.out_dir, result)
        return result


def start_rng(saved: dict | None, seed: int) -> None:
    """Resume with the RNG states saved at the checkpoint; a fresh run seeds every generator,
    so that it does not depend on what ran before it in this process."""
    if saved is not None:
        set_rng_states(saved)
        return
    torch.manual_seed(seed + 100003 * dist.rank())  # TRL's own local seed
    np.random.seed(seed)  # TRL draws each epoch's mini-batch order from numpy's global generator
    random.seed(seed)


class PromptStream:
    """The prompts of every PPO step, a pure function of (seed, step): each epoch is a fresh
    permutation of the training prompts seeded by (seed, epoch), cut into global batches of B
    (a ragged tail dropped, as TRL's loader does), each process taking its slice of the batch.

    It replaces PPOTrainer's own shuffling loader, whose order hangs on the global torch RNG
    (drawn at each epoch's start between rollouts): a resumed run could not reproduce it.
    """

    def __init__(self, dataset, collate, batch: int, start_step: int, seed: int):
        self.dataset, self.collate, self.batch, self.seed = dataset, collate, batch, seed
        self.step = start_step
        self.per_epoch = len(dataset) // batch

    def __iter__(self):
        local = self.batch // dist.world()
        while True:
            epoch, position = divmod(self.step, self.per_epoch)
            order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
            batch = order[position * self.batch:(position + 1) * self.batch].tolist()
            mine = batch[dist.rank() * local:(dist.rank() + 1) * local]
            self.step += 1
            yield self.collate([self.dataset[i] for i in mine])


def resume_stream(trainer, cfg, done_steps: int, seed: int) -> None:
    """Feed the trainer the prompts of steps done_steps+1, ... (see PromptStream)."""
    trainer.dataloader = PromptStream(trainer.train_dataset, trainer.data_collator, cfg.batch_prompts, done_steps,
                                      seed)


def build_trainer(ctx, cfg, prompts, tokenizer, policy, value, reward_model, optimizer, steps, micro, world,
                  seed, callbacks):
    from datasets import Dataset
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    # TRL's rollout batch is per_device x accumulation x processes: each process takes B / world
    # prompts, and a mini-batch (B / num_mini_batches completions) spans every process.
    args = PPOConfig(**common_args(ctx, cfg, seed), save_strategy="no",
                     per_device_train_batch_size=micro,
                     gradient_accumulation_steps=cfg.batch_prompts // (micro * world),
                     num_mini_batches=cfg.batch_prompts // cfg.mini, num_ppo_epochs=cfg.num_ppo_epochs,
                     total_episodes=steps * cfg.batch_prompts, response_length=ctx.max_new_tokens,
                     stop_token="eos", temperature=cfg.temperature, kl_coef=cfg.kl_coef, gamma=cfg.gamma,
                     lam=cfg.lam, local_rollout_forward_batch_size=min(64, cfg.batch_prompts),
                     num_sample_generations=0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=None,
                         reward_model=reward_model, train_dataset=Dataset.from_dict({"input_ids": prompts.ids}),
                         value_model=value, optimizers=(optimizer, scheduler), callbacks=callbacks)
    # TRL sizes accelerate's accumulation to the whole rollout (one update per epoch, and one per
    # micro-batch on the data's last batch); one mini-batch per update is verl's (and PPO's) rule.
    trainer.accelerator.gradient_state.plugin_kwargs.update(num_steps=cfg.mini // (micro * world),
                                                            sync_with_dataloader=False)
    quiet(trainer)
    return trainer


def ppo_tokenizer(ctx, prompts):
    """A tokenizer copy whose pad id is not EOS: TRL's PPO treats every pad id as padding."""
    tokenizer = copy.deepcopy(ctx.tokenizer)
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        if tokenizer.unk_token in (None, tokenizer.eos_token):
            raise UserError("ppo needs a pad token distinct from EOS (TRL's PPO masks every pad id); this "
                            "tokenizer has neither a separate pad nor an unknown token")
        tokenizer.pad_token = tokenizer.unk_token  # SmolLM2: <|endoftext|>, absent from chat prompts
    if any(tokenizer.pad_token_id in ids for ids in prompts.ids):
        raise UserError(f"ppo: the pad token {tokenizer.pad_token!r} occurs in a training prompt")
    return tokenizer


def value_model(ctx, pad_id: int):
    """The critic: the harness model's backbone under a fresh one-output head, float32."""
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(ctx.model.config)
    config.num_labels, config.pad_token_id = 1, pad_id
    with seeded(ctx.protocol.seed):  # the head is fresh: the same weights on every run
        value = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    backbone = getattr(ctx.model, ctx.model.base_model_prefix)
    getattr(value, value.base_model_prefix).load_state_dict(backbone.state_dict())
    return value.to(ctx.model.device)


class TaskRewardModel(nn.Module):
    """The task's rule-based reward in the shape of TRL's reward model (`trl...utils.get_reward`).

    get_reward calls `getattr(model, model.base_model_prefix)(input_ids=..., attention_mask=...)`
    and reads `model.score(output.hidden_states[-1])` at each row's last token: the backbone
    returns every row's reward as a one-channel hidden state at all positions, `score` is the identity.
    """

    base_model_prefix = "backbone"

    def __init__(self, task, prompts, tokenizer):
        super().__init__()
        self.backbone = RewardBackbone(task, prompts, tokenizer)
        self.score = nn.Identity()


class RewardBackbone(nn.Module):
    def __init__(self, task, prompts, tokenizer):
        super().__init__()
        self.task, self.items, self.tokenizer = task, prompts.items, tokenizer
        # a rollout is (left padding, prompt, completion, right padding): find its prompt by prefix
        self.lookup = {tuple(ids): i for i, ids in reversed(list(enumerate(prompts.ids)))}
        self.lengths = sorted({len(ids) for ids in prompts.ids}, reverse=True)
        self.tokens = 0  # prompt + completion tokens (to EOS, no padding) of every rollout: the FLOP count

    def forward(self, input_ids, attention_mask, **_):
        found = [self.completion(ids, mask) for ids, mask in zip(input_ids.tolist(), attention_mask.tolist())]
        rewards = checked_rewards(self.task, [text for text, _ in found], [item for _, item in found])
        r = torch.tensor(rewards, dtype=torch.float32, device=input_ids.device)
        return SimpleNamespace(hidden_states=(r[:, None, None].expand(-1, input_ids.shape[1], 1),))

    def completion(self, ids: list[int], mask: list[int]):
        """(completion text, its item) of one rollout row; counts its tokens for the ledger."""
        start = mask.index(1)
        ids, mask = ids[start:], mask[start:]
        index, n = self.match(ids)
        end = mask.index(0, n) if 0 in mask[n:] else len(mask)  # TRL's completion ends at its first pad
        self.tokens += end
        text = self.tokenizer.decode(ids[n:end], skip_special_tokens=True)  # as harness.engine.native decodes
        return text, self.items[index]

    def match(self, ids: list[int]) -> tuple[int, int]:
        for n in self.lengths:
            index = self.lookup.get(tuple(ids[:n]))
            if index is not None:
                return index, n
        raise RuntimeError("ppo: a rollout does not start with any training prompt")


METHOD = PPO
