"""Sizing every method before any weights load: derived sizes, FLOPs, and what they will cost.

A method's `plan(sizing)` turns the shared training budget into its own sizes (RandOpt's N,
ES's T, GRPO/PPO steps, ...) and returns a `Work`. Its `train(ctx)` calls the same
`plan(ctx.sizing)`, so what `thicket plan` and the start of `compare` print is what runs.
A budget too small for one unit of any method is a UserError here, before the model loads.

`Sizing` holds only what a plan needs: the budget, the parameter count, the model skeleton
(shapes on the meta device: LoRA and critic sizes) and the train prompts' token lengths.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from harness.config import method_config
from harness.errors import UserError
from harness.method import get_method
from harness.engine.native import render
from harness.splits import first_items


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

    @property
    def total(self) -> int:
        return sum(len(i) for i in self.ids)


@dataclass
class Sizing:
    """What a method needs to size its work: budget, model size and shapes, train prompts."""

    budget_flops: float | None
    """The training budget of one method (None: unlimited)."""
    n_params: int
    model: object
    """The policy (or its meta-device skeleton): shapes only are read."""
    tokenizer: object
    task: object
    protocol: object
    train_items: list
    max_new_tokens: int
    _prompts: dict = field(default_factory=dict, repr=False)

    def prompts(self, which: str = "selection") -> Prompts:
        """`selection`: the n_train items every method shares; `full`: the whole train split
        (tokenized once, then cached), rendered and tokenized exactly as the engine does."""
        if which not in self._prompts:
            items = list(self.train_items) if which == "selection" else first_items(
                self.task, "train", None, self.protocol.data_dir)
            texts = [render(self.tokenizer, it.messages) for it in items]
            ids = [self.tokenizer(t, add_special_tokens=False).input_ids for t in texts]
            self._prompts[which] = Prompts(items, texts, ids)
        return self._prompts[which]

    @cached_property
    def worst_pass_flops(self) -> float:
        """Upper bound on one greedy pass over the train items: every prompt token plus
        max_new_tokens per item, forward only (2P per token)."""
        p = self.prompts()
        return 2.0 * self.n_params * (p.total + len(p.ids) * self.max_new_tokens)

    def affordable(self, unit_flops: float, wanted: int) -> int:
        """How many units of `unit_flops` (worst case) the budget pays for, at most `wanted`."""
        if self.budget_flops is None:
            return wanted
        return min(wanted, int(self.budget_flops // unit_flops))


@dataclass
class Work:
    """A method's planned work: its sizes, its worst-case training FLOPs, and what takes time."""

    sizes: dict = field(default_factory=dict)
    """Derived sizes as printed, e.g. {"N": 32} or {"steps": 12, "B": 4, "G": 8}."""
    train_flops: float = 0.0
    """Worst case of the planned training (never above the budget)."""
    generated_sequences: int = 0
    """Train-time generations (greedy member passes or sampled rollouts), one per prompt."""
    update_flops: float = 0.0
    """FLOPs of forward/backward passes other than generation (losses, reference, critic, SFT)."""
    test_generations: int = 1
    """Generations per test item, summed over the method's rows' largest ensembles."""
    note: str = ""

    def describe(self) -> str:
        sizes = ", ".join(f"{k}={v}" for k, v in self.sizes.items())
        parts = [sizes] if sizes else []
        parts.append(f"training FLOPs <= {self.train_flops:.3g}" if self.train_flops else "no training")
        parts.append(f"{self.test_generations} generation(s) per test item")
        return "; ".join(parts) + (f" ({self.note})" if self.note else "")

    def seconds(self, per_sequence: float, per_update_flop: float, n_test: int) -> float:
        """Projected wall time: every train and test generation at `per_sequence` seconds, the
        update FLOPs at `per_update_flop` (thicket plan and the run's ETA both use it)."""
        return (per_sequence * (self.generated_sequences + self.test_generations * n_test)
                + per_update_flop * self.update_flops)


def plan_methods(plugins: dict, sizing: Sizing) -> dict:
    """{name: Work} for every method; a method that cannot afford one unit raises here."""
    return {name: plugin.plan(sizing) for name, plugin in plugins.items()}


REFERENCE_METHOD = "randopt"
"""The method whose preset defines the default budget (`Method.reference_budget`)."""


def matched_budget(sizing: Sizing, settings: dict) -> float:
    """The default training budget of every method: the reference method's own
    `reference_budget` at its preset (RandOpt: its population's worst-case cost, n_train prompts
    plus max_new_tokens each, per member). The plugin is found by name, through the loader."""
    cls = get_method(REFERENCE_METHOD)
    plugin = cls(method_config(cls.Config, REFERENCE_METHOD, sizing.protocol.budget, settings))
    return plugin.reference_budget(sizing)


def no_unit_error(method: str, unit: str, unit_flops: float, budget: float | None, fix: str) -> UserError:
    return UserError(f"{method}: the training budget ({budget:.3g} FLOPs) affords no {unit} "
                     f"({unit_flops:.3g} FLOPs each at worst); raise the budget (--budget-flops) or {fix}")
