"""What a method trains with: train items, the shared engine (generation and weights) and the ledger.

The test split never enters this object. Population scoring persists each finished member
as one JSON line (per process), so a killed run resumes without re-scoring, and shards the
remaining members across processes when launched with Accelerate.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness.budget.compute import Ledger
from harness.config import Protocol
from harness.engine.interface import Engine, Weights
from harness.budget.plan import Sizing
from harness.runs import distributed as dist, progress
from harness.task import Item, Task, checked_rewards
from harness.runs.units import append_record, run_units


@dataclass(frozen=True)
class Member:
    """A population member: its index in sampling order and the noise that defines it."""

    index: int
    seed: int
    sigma: float
    noise: str = "iid"


@dataclass
class TrainContext:
    protocol: Protocol
    task: Task
    model: object
    """The Hugging Face model at the engine's base weights: what TRL trainers copy. Generation
    and weight changes go through `engine`, never through this object."""
    tokenizer: object
    engine: Engine
    ledger: Ledger
    train_items: list[Item]
    train_batches: object
    """The train prompts as `engine.prepare` returned them."""
    out_dir: Path
    """This method's folder in the run directory: persist finished work here."""
    log: object = None
    """Metrics logger with .log(dict, step=None)."""
    prompts_sizing: Sizing | None = None
    """The session's Sizing (prompts tokenized once); built from the fields above when not given."""
    drafts: dict | None = None
    """The session's base-model greedy train completions under "train" (see train_completions)."""

    def __post_init__(self):
        if self.prompts_sizing is None:
            self.prompts_sizing = Sizing(None, self.engine.n_params, self.model, self.tokenizer, self.task, self.protocol,
                                         list(self.train_items), self.max_new_tokens)

    @property
    def perturber(self) -> Weights:
        """The engine's weights: perturb, restore, load and save through the engine."""
        return self.engine.weights

    @property
    def sizing(self) -> Sizing:
        """What `Method.plan` sizes this method with: the shared prompts, this ledger's budget."""
        return dataclasses.replace(self.prompts_sizing, budget_flops=getattr(self.ledger, "budget", None))

    @property
    def max_new_tokens(self) -> int:
        return min(self.protocol.max_new_tokens, self.task.max_new_tokens)

    def worst_pass_flops(self) -> float:
        """Upper bound on one greedy pass over the train items: every prompt token plus
        max_new_tokens per item, forward only. Methods size their work with it so the
        ledger can never go over budget."""
        return self.sizing.worst_pass_flops

    def rewards(self, completions) -> list[float]:
        """The task's reward of one completion per train item (checked: finite numbers only)."""
        return checked_rewards(self.task, [c.text for c in completions], self.train_items)

    def record_curve(self, step: int, train_flops: float | None = None, **metrics: float) -> None:
        """One point of this method's learning curve, at global `step` (an iteration, an update,
        a member): appended to curve.jsonl with the training FLOPs spent so far (the report
        plots it against them; a step recorded twice, e.g. after a resume, counts once, the
        last record winning) and logged to W&B with `train_flops` as its x-axis.
        `train_flops` defaults to the ledger's; pass it for work not charged yet."""
        flops = self.ledger.train if train_flops is None else float(train_flops)
        record = {"step": int(step), "train_flops": flops, **{k: float(v) for k, v in metrics.items()}}
        if dist.is_main():
            append_record(self.out_dir / "curve.jsonl", record)
        if self.log is not None:
            curve = getattr(self.log, "curve", None)  # a plain logger with only .log() gets the record too
            curve(record) if curve else self.log.log(record)

    def train_completions(self) -> list:
        """Greedy completions of the train items by the model as it is now.

        A perturbed member writes most of what the base model wrote (bench/divergence.py: 74-94%
        of an arith member's tokens precede its first difference from the base's output at the
        paper's sigmas), so the base's completions, when the session keeps them
        (`NativeEngine.draft_members`, off by default: no gain on a CPU), go to the engine as drafts:
        one teacher-forced pass checks them and decoding starts where the member departs. The
        outputs are the member's own (up to floating-point near-ties) and the ledger charges the
        nominal tokens as before, so budgets do not move."""
        draft = (self.drafts or {}).get("train")
        with progress.items(len(self.train_items), "train items") as advance:
            return self.engine.generate(self.train_batches, self.max_new_tokens, progress=advance, draft=draft)

    def summarize(self, completions: list) -> tuple[float, int]:
        """Mean train reward of greedy completions and the tokens they took."""
        rewards = self.rewards(completions)
        return sum(rewards) / len(rewards), sum(c.prompt_tokens + c.new_tokens for c in completions)

    def score_current(self) -> tuple[float, int]:
        """Mean train reward of the model as it is now (greedy) and the tokens it took."""
        return self.summarize(self.train_completions())

    def score_member(self, member: Member) -> tuple[float, int]:
        self.perturber.apply(member.seed, member.sigma, member.noise)
        try:
            return self.score_current()
        finally:
            self.perturber.restore()

    def score_population(self, members: list[Member], tag: str,
                         curve: Callable[[list[float]], dict] | None = None) -> list[float]:
        """Mean train reward of every member, in the given order; resumable and sharded.

        Every member's tokens, resumed ones included, are charged to the training ledger (at the
        end, in one sum, so a resumed run's ledger equals an uninterrupted one's to the bit).
        `curve(scores so far)`, if given, maps the scores known so far to learning-curve metrics,
        recorded each time a member finishes (step = members scored so far, x = the FLOPs those
        members cost): the curve streams as the population grows. Resumed members count
        towards the metrics without being recorded again; with several processes the main one
        streams its own members and records the whole population once at the end.
        """
        def work(m: Member) -> dict:
            score, tokens = self.score_member(m)
            return {"seed": m.seed, "sigma": m.sigma, "noise": m.noise, "score": score, "tokens": tokens}

        start, seen = (self.ledger.train if curve else 0.0), []

        def point(records: list[dict]) -> None:
            flops = start + 2.0 * self.ledger.n_params * sum(r["tokens"] for r in records)
            self.record_curve(len(records), train_flops=flops, **curve([r["score"] for r in records]))

        def observe(record: dict, resumed: bool) -> None:
            seen.append(record)
            if curve and not resumed:
                point(seen)

        label = f"{self.out_dir.name} members" + (f" ({tag})" if tag != "members" else "")
        done = run_units(members, lambda m: m.index, work, self.out_dir, tag, desc=label,
                         on_record=observe if curve else None)
        self.ledger.forward(sum(done[m.index]["tokens"] for m in members), "train")
        if curve and len(seen) < len(members):  # other processes' members, gathered
            point([done[m.index] for m in members])
        return [done[m.index]["score"] for m in members]
