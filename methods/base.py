"""base: the unmodified model, greedy. Evaluated like every ensemble: one member, sigma 0.

Run: `thicket compare --task arith --methods base`.
"""
from __future__ import annotations

from harness.method import Ensemble, Method, Voter
from harness.budget.plan import Work


class Base(Method):
    def plan(self, sizing) -> Work:
        return Work()

    def train(self, ctx) -> list[Ensemble]:
        return [Ensemble("base", [Voter("base")], ks=(1,))]


METHOD = Base
