"""randopt_fold: RandOpt's rewarded members folded into ONE model, weighted by train reward.

Algorithm (the reward-weighted aggregation of CoRP, "Consolidating Rewarded Perturbations for
LLM Post-Training", Zhang, Yang & Kasneci, arXiv 2605.31494): RandOpt's population and scores
(methods/randopt.py), standardised over all N members, z_i = (s_i - mean s) / (std s + 1e-8)
(ES's standardisation, docs/paper.md section 2); keep the top ceil(top_fraction * N) by score
(RandOpt's stable sort); weights over them
  `softmax`:    w_i = exp(z_i / T) / sum_j exp(z_j / T)      (temperature T = `temperature`)
  `positive_z`: w_i = max(z_i, 0) / sum_j max(z_j, 0)        (uniform if no z is positive);
then theta_fold = theta + scale * sum_i w_i * sigma_i * eps(seed_i). The weights sum to 1, so
at scale 1 the fold is a reward-weighted mean of the kept perturbations: T -> infinity gives
the soup of the kept members (randopt_soup), T -> 0 the best member (randopt K=1).
One model, greedy: one forward pass per test item. Stored as its recipe (folds.json).

Deviations from CoRP: only its first stage, reward-weighted aggregation, is implemented. Not
implemented: the compatibility-aware reweighting (by alignment with the aggregate direction
and dispersion), the held-out validation gate (it would need a split of the train items that
RandOpt's scores do not use), and CoRP's low-rank-plus-isotropic sampling covariance (the
population here is RandOpt's isotropic one, so its scores are reused for free). CoRP's exact
weighting and temperature are not restated here; `softmax` of z-scores over a top fraction is
this harness's documented choice. CoRP's numbers (+8.1 points over base on average) are as
reported, for its full operator, and are not reproduced by this fold.

Run: `make compare TASK=arith METHODS=base,randopt,randopt_fold ARGS="--set randopt_fold.temperature=0.5"`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from harness.errors import UserError
from harness.method import Ensemble, Method
from methods import _folds

NAME = "randopt_fold"
WEIGHTINGS = ("softmax", "positive_z")


@dataclass(frozen=True)
class Config:
    population: int = 5000
    """N: RandOpt's population (keep it equal to randopt.population to reuse its scores)."""
    sigmas: tuple[float, ...] = (1e-3, 2e-3, 3e-3)
    """RandOpt's noise scales (keep them equal to randopt.sigmas)."""
    noise: str = "iid"
    """RandOpt's noise mode, `iid` or `released` (keep it equal to randopt.noise)."""
    weighting: str = "softmax"
    """`softmax` of z-scores at `temperature`, or `positive_z` (z-scores' positive parts, normalised)."""
    temperature: float = 1.0
    """T of the softmax over z-scores (in standard deviations of the train score)."""
    top_fraction: float = 0.25
    """Fraction of the population folded: the top ceil(top_fraction * N) members by train score."""
    scale: float = 1.0
    """Factor on the weighted sum (1: the reward-weighted mean of the kept perturbations)."""

    def __post_init__(self):
        _folds.check_fields(NAME, self)
        if self.weighting not in WEIGHTINGS:
            raise UserError(f"{NAME}.weighting {self.weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise UserError(f"{NAME}.temperature must be a finite number > 0, got {self.temperature}")
        if not 0 < self.top_fraction <= 1:
            raise UserError(f"{NAME}.top_fraction must be in (0, 1], got {self.top_fraction}")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise UserError(f"{NAME}.scale must be a finite number > 0, got {self.scale}")


def z_scores(scores: list[float]) -> list[float]:
    """(s - mean) / (std + 1e-8) over the whole population (population std, as ES)."""
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return [(s - mean) / (std + 1e-8) for s in scores]


def fold_weights(z: list[float], weighting: str, temperature: float) -> tuple[list[float], str]:
    """Weights summing to 1 over the kept members' z-scores, and a note when they fell back."""
    if weighting == "softmax":
        top = max(z)  # shifted by the max: exp never overflows, the weights do not change
        e = [math.exp((v - top) / temperature) for v in z]
        return [v / sum(e) for v in e], ""
    positive = [max(v, 0.0) for v in z]
    if sum(positive) == 0:  # every kept score at or below the mean (all equal, say): no reward signal
        return [1.0 / len(z)] * len(z), "no kept member scores above the population mean: uniform weights"
    return [v / sum(positive) for v in positive], ""


class RandOptFold(Method):
    Config = Config

    def check(self, protocol) -> None:
        _folds.check_population(NAME, self.config, 1)

    def plan(self, sizing):
        return _folds.plan(NAME, self.config, sizing, test_generations=1)

    def train(self, ctx) -> list[Ensemble]:
        cfg = self.config
        pop = _folds.population(NAME, cfg, ctx, self.plan(ctx.sizing))
        n = len(pop.members)
        kept = pop.order[:max(1, math.ceil(cfg.top_fraction * n - 1e-9))]  # 1e-9: 0.25 * 32 stays 8
        z = z_scores(pop.scores)
        weights, fallback = fold_weights([z[i] for i in kept], cfg.weighting, cfg.temperature)
        voter = _folds.fold_voter("fold", [pop.members[i] for i in kept],
                                  [w * pop.members[i].sigma for w, i in zip(weights, kept)], cfg.scale)
        ensemble = Ensemble(NAME, [voter], ks=(1,), info=_folds.info(
            pop, cfg, folded=len(kept), weighting=cfg.weighting, temperature=cfg.temperature,
            top_fraction=cfg.top_fraction, scale=cfg.scale, weights=[round(w, 6) for w in weights],
            **({"weights_note": fallback} if fallback else {}),
            deviations=["CoRP's reward-weighted aggregation only: no compatibility reweighting, no held-out "
                        "validation gate, RandOpt's isotropic population"]))
        _folds.keep_recipes(NAME, ctx, [_folds.recipe(ensemble, kept, weights)])
        return [ensemble]


METHOD = RandOptFold
