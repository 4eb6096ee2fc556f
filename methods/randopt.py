"""randopt: random perturbations of the weights, keep the top K, majority-vote their answers.

Algorithm (Gan & Isola, "Neural Thickets", arXiv 2603.12228; docs/paper.md section 1):
  seeds, sigmas <- default_rng(seed): N distinct seeds, a sigma per seed from SIGMAS;
  member i = theta + sigma_i * eps(seed_i), ALL parameters; score = mean train reward
  (greedy, first n_train items); stable sort descending; the top K vote at test time.

Faithful to the paper in: seed and sigma sampling, all parameters perturbed (a tied
embedding once), exact restore from a stored base, the stable sort and the `most_common`
tie rule, both noise modes (`iid` default, `released` as the authors' code).
Deviations: none in the algorithm. Presets shrink N, n_train and max_new_tokens for CPU;
with a training FLOP budget, N is the most members the budget affords (each member charged
its worst case, n_train prompts plus max_new_tokens each), so the method never overspends.

Run: `make compare TASK=arith METHODS=randopt` or
     `thicket compare --task gsm8k --methods randopt --set population=5000 --set noise=released`.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from harness.runs import distributed as dist
from harness.budget.compute import paper_population_flops
from harness.context import Member
from harness.errors import UserError
from harness.method import Ensemble, Method, Voter
from harness.engine.perturb import NOISE_MODES
from harness.budget.plan import Work, no_unit_error
from harness.runs.results import write_json


@dataclass(frozen=True)
class Config:
    population: int = 5000
    """N: members sampled and scored (paper: 5000)."""
    sigmas: tuple[float, ...] = (1e-3, 2e-3, 3e-3)
    """Noise scales, one drawn per member (paper: 1e-3, 2e-3, 3e-3; authors' scripts: 5e-4, 1e-3, 2e-3)."""
    noise: str = "iid"
    """`iid` (the paper's maths) or `released` (the authors' code: per-tensor reseeded noise)."""

    def __post_init__(self):
        if self.population < 1:
            raise UserError(f"randopt.population must be >= 1, got {self.population}")
        if not self.sigmas or min(self.sigmas) <= 0:
            raise UserError(f"every sigma must be > 0, got {self.sigmas}")
        if self.noise not in NOISE_MODES:
            raise UserError(f"noise mode {self.noise!r}; choose one of {', '.join(NOISE_MODES)}")


def sample_members(seed: int, n: int, sigmas, noise: str) -> list[Member]:
    """The paper's draws, in this order: N distinct seeds below 2**31, then N sigmas."""
    rng = np.random.default_rng(seed)
    seeds = rng.choice(2**31, n, replace=False)
    drawn = rng.choice(np.asarray(sigmas, dtype=np.float64), n)
    return [Member(i, int(s), float(sg), noise) for i, (s, sg) in enumerate(zip(seeds, drawn))]


def rank(scores: list[float]) -> list[int]:
    """Indices by score, best first; Python's sort is stable, so ties keep sampling order."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def running_scores(scores: list[float], k: int) -> dict:
    """The learning curve as members finish: the best train score so far (what K=1 would pick)
    and the mean of the top k so far (the voters K=k would pick)."""
    top = heapq.nlargest(k, scores)
    return {"train_reward": top[0], "train_reward_top_k": sum(top) / len(top)}


class RandOpt(Method):
    Config = Config

    def check(self, protocol) -> None:
        if max(protocol.k) > self.config.population:
            raise UserError(f"K={max(protocol.k)} is larger than the population N={self.config.population}; "
                            "lower K (--k) or raise randopt.population")

    def reference_budget(self, sizing) -> float:
        """The comparison's default budget: the preset population at its worst-case cost."""
        return self.config.population * sizing.worst_pass_flops

    def plan(self, sizing) -> Work:
        """N: the most members whose worst-case cost fits the budget (the preset's N at most)."""
        worst, ks = sizing.worst_pass_flops, sizing.protocol.k
        n = sizing.affordable(worst, self.config.population)
        if n < 1:
            raise no_unit_error("randopt", "member", worst, sizing.budget_flops, "lower n_train / max_new_tokens")
        if max(ks) > n:
            raise UserError(f"randopt: K={max(ks)} is larger than the N={n} members the budget affords; lower K "
                            "(--k) or raise the population / budget")
        return Work(sizes={"N": n}, train_flops=n * worst, generated_sequences=n * len(sizing.train_items),
                    test_generations=max(ks), note=f"sigmas {list(self.config.sigmas)}, noise {self.config.noise}")

    def train(self, ctx) -> list[Ensemble]:
        cfg, ks = self.config, ctx.protocol.k
        n = self.plan(ctx.sizing).sizes["N"]
        dist.say(f"randopt: N={n} members, sigmas={list(cfg.sigmas)}, noise={cfg.noise}, "
                 f"K={list(ks)}, n_train={len(ctx.train_items)}")
        members = sample_members(ctx.protocol.seed, n, cfg.sigmas, cfg.noise)
        scores = ctx.score_population(members, "members", curve=lambda s: running_scores(s, max(ks)))
        if max(scores) == 0:
            dist.say("randopt: every member scores 0 on the train items, so the ranking cannot tell them apart "
                     "(ties keep sampling order): this model is likely too small for the task (the paper sees no "
                     "thicket below ~1B parameters); on CPU use TASK=arith, or a paper model on a GPU")
        order = rank(scores)
        ranking = [{"rank": r, "index": i, "seed": members[i].seed, "sigma": members[i].sigma,
                    "noise": cfg.noise, "score": scores[i]} for r, i in enumerate(order)]
        write_json(ctx.out_dir / "ranking.json", ranking)
        if ctx.log:  # every member's sigma and score, as the paper logs them
            ctx.log.table("members", list(ranking[0]), [list(r.values()) for r in ranking])
        voters = [Voter(f"member{i}", seed=members[i].seed, sigma=members[i].sigma, noise=cfg.noise)
                  for i in order[:max(ks)]]
        seq_len = ctx.sizing.prompts().mean_len + ctx.max_new_tokens
        paper = paper_population_flops(1, n, len(ctx.train_items), ctx.ledger.n_params, seq_len)
        return [Ensemble("randopt", voters, ks=ks, info={"population": n, "noise": cfg.noise,
                                                          "sigmas": list(cfg.sigmas), "paper_train_flops": paper,
                                                          "deviations": [f"N={n} (paper: 5000)"] if n != 5000 else []})]


METHOD = RandOpt
