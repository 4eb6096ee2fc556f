"""self_consistency: the base model sampled K times, majority vote (Wang et al. 2023).

The test-time-compute-matched baseline for RandOpt: the same K generations per test item,
the same vote, no training. docs/paper.md section 4 notes it matched or beat RandOpt on GSM8K in
an independent reproduction. Sampling: temperature `temperature`, top-p 1, no top-k; sample
i uses seed (run seed, i), so reruns give the same votes.

Deviation: the reproduction chose a prompt on the 200 train items; we use the task's prompt.
Run: `thicket compare --task arith --methods self_consistency --set self_consistency.temperature=0.7`.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.errors import UserError
from harness.method import Ensemble, Method, Voter
from harness.budget.plan import Work


@dataclass(frozen=True)
class Config:
    temperature: float = 0.7
    """Sampling temperature of every vote."""

    def __post_init__(self):
        if self.temperature <= 0:
            raise UserError(f"self_consistency.temperature must be > 0, got {self.temperature}")


class SelfConsistency(Method):
    Config = Config

    def plan(self, sizing) -> Work:
        ks = sizing.protocol.k
        return Work(sizes={"K": max(ks)}, test_generations=max(ks),
                    note=f"temperature {self.config.temperature}, no training")

    def train(self, ctx) -> list[Ensemble]:
        ks = ctx.protocol.k
        voters = [Voter(f"sample{i}", temperature=self.config.temperature,
                        sample_seed=ctx.protocol.seed * 1_000_003 + i) for i in range(max(ks))]
        return [Ensemble("self_consistency", voters, ks=ks,
                         info={"temperature": self.config.temperature,
                               "deviations": ["the task's prompt, not one chosen on the train items"]})]


METHOD = SelfConsistency
