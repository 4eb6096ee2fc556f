"""randopt_soup: RandOpt's top K members averaged into ONE model, for each K of the K list.

Algorithm: RandOpt's population and ranking (methods/randopt.py: same seeds, sigmas, noise and
stable sort), then for each K: theta_K = theta + (1/K) * sum_{i in top K} sigma_i * eps(seed_i),
the mean of the top-K members' perturbations ("model soup" of the selected members, Wortsman
et al. 2022, applied to RandOpt's population; the single-model question of issue 20). Each
soup is one model, evaluated greedily: one forward pass per test item, like base, against
RandOpt's K passes. Soup K=1 is RandOpt's best member, bit for bit (its K=1 row).

Training: none of its own when RandOpt ran first in the same run (its member scores are read
back, its FLOPs shown as shared); else the population is scored here exactly as RandOpt would.
A soup is stored as its recipe (folds.json), rebuilt from seeds at every evaluation.
Deviations: no source fixes a soup of random perturbations; this is the plain uniform mean.
The mean of K independent perturbations has about 1/sqrt(K) of one member's norm: a soup moves
less far from base than any of its members.

Run: `make compare TASK=arith METHODS=base,randopt,randopt_soup` or
     `thicket compare --task arith --methods randopt,randopt_soup --set population=64`.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.errors import UserError
from harness.method import Ensemble, Method
from methods import _folds

NAME = "randopt_soup"


@dataclass(frozen=True)
class Config:
    population: int = 5000
    """N: RandOpt's population (keep it equal to randopt.population to reuse its scores)."""
    sigmas: tuple[float, ...] = (1e-3, 2e-3, 3e-3)
    """RandOpt's noise scales (keep them equal to randopt.sigmas)."""
    noise: str = "iid"
    """RandOpt's noise mode, `iid` or `released` (keep it equal to randopt.noise)."""

    def __post_init__(self):
        _folds.check_fields(NAME, self)


class RandOptSoup(Method):
    Config = Config

    def check(self, protocol) -> None:
        _folds.check_population(NAME, self.config, max(protocol.k))

    def plan(self, sizing):
        work = _folds.plan(NAME, self.config, sizing, test_generations=len(sizing.protocol.k))
        if max(sizing.protocol.k) > work.sizes["N"]:
            raise UserError(f"{NAME}: K={max(sizing.protocol.k)} is larger than the N={work.sizes['N']} members "
                            "the budget affords; lower K (--k) or raise the population / budget")
        return work

    def train(self, ctx) -> list[Ensemble]:
        cfg = self.config
        pop = _folds.population(NAME, cfg, ctx, self.plan(ctx.sizing))
        ensembles, recipes = [], []
        for k in sorted(set(ctx.protocol.k)):
            top = pop.order[:k]
            voter = _folds.fold_voter(f"soup{k}", [pop.members[i] for i in top],
                                      [pop.members[i].sigma for i in top], 1.0 / k)
            ensemble = Ensemble(f"{NAME}_k{k}", [voter], ks=(1,), label=f"{NAME} K={k}",
                                info=_folds.info(pop, cfg, folded=k,
                                                 folded_train_scores=[pop.scores[i] for i in top]))
            ensembles.append(ensemble)
            recipes.append(_folds.recipe(ensemble, top, [1.0 / k] * k))
        _folds.keep_recipes(NAME, ctx, recipes)
        return ensembles


METHOD = RandOptSoup
