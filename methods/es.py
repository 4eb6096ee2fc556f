"""es: evolution strategies on the full weights (Qiu et al. 2025, "Evolution Strategies at
Scale"), the Neural Thickets paper's ES baseline.

Per iteration t: N fresh seeds; member i = theta + sigma * eps_i scored by mean train reward
(greedy, the same items as every method); z_i = (r_i - mean r) / (std r + 1e-8);
theta += (alpha / N) * sum_i z_i * eps_i (no 1/sigma), accumulated in float32.
Reported: the final model (row "es") and "es+vote", the majority vote of the top K members
of the final population (docs/paper.md section 2).

Faithful in: N=30, sigma=1e-3, alpha=5e-4 defaults, z-scoring, the update rule, float32
accumulation, greedy scoring on the shared train items, perturbation code shared with
RandOpt (both noise modes). Deviations: the iteration count T follows from the training
budget (paper's compute matching: T=167) and presets lower N for CPU; iteration t's seeds
come from default_rng([seed, t]) so any iteration can be regenerated on resume.

Persistence: every member's score is a JSON line as it finishes (iter<t>.rank*.jsonl); after
each update the weights are saved (theta-<t>.safetensors, the last two kept) before the
pointer theta.json moves to them, and the iteration's rewards are appended to curve.jsonl, so a
killed run resumes at the last finished iteration and ends with the same weights.

Run: `make compare TASK=arith METHODS=es` or `thicket compare --task arith --methods es --set es.population=30`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from harness.budget.compute import paper_population_flops
from harness.context import Member
from harness.runs import distributed as dist
from harness.runs import faults
from harness.errors import UserError
from harness.method import Ensemble, Method, Voter
from harness.engine.perturb import NOISE_MODES
from harness.budget.plan import Work, no_unit_error
from harness.runs.units import read_records


@dataclass(frozen=True)
class Config:
    population: int = 30
    """N: perturbations per iteration (paper: 30)."""
    sigma: float = 1e-3
    """Perturbation scale (paper: 1e-3)."""
    alpha: float = 5e-4
    """Learning rate of the update theta += alpha/N * sum z_i eps_i (paper: 5e-4)."""
    iterations: int = 167
    """Upper bound on T; the training budget usually decides (paper's matched T: 167)."""
    noise: str = "iid"
    """`iid` or `released` (as in randopt)."""

    def __post_init__(self):
        if self.population < 2:
            raise UserError(f"es.population must be >= 2 (z-scores need two rewards), got {self.population}")
        if self.sigma <= 0 or self.alpha <= 0:
            raise UserError(f"es.sigma and es.alpha must be > 0, got {self.sigma}, {self.alpha}")
        if self.iterations < 1:
            raise UserError(f"es.iterations must be >= 1, got {self.iterations}")
        if self.noise not in NOISE_MODES:
            raise UserError(f"noise mode {self.noise!r}; choose one of {', '.join(NOISE_MODES)}")


def iteration_members(seed: int, t: int, cfg: Config) -> list[Member]:
    rng = np.random.default_rng([seed, t])
    seeds = rng.choice(2**31, cfg.population, replace=False)
    return [Member(i, int(s), cfg.sigma, cfg.noise) for i, s in enumerate(seeds)]


def z_scores(rewards: list[float]) -> np.ndarray:
    r = np.asarray(rewards, dtype=np.float64)
    return (r - r.mean()) / (r.std() + 1e-8)


def es_update(weights, members: list[Member], z: np.ndarray, alpha: float) -> None:
    """theta += alpha/N * sum_i z_i eps_i, the sum accumulated in float32 per parameter, on the
    engine's weights (`Weights.add_noise_sum`)."""
    weights.add_noise_sum([(m.seed, float(zi), m.noise) for m, zi in zip(members, z)], alpha / len(members))


class ES(Method):
    Config = Config

    def plan(self, sizing) -> Work:
        """T: the most iterations of N members whose worst-case cost fits the budget."""
        cfg = self.config
        cost = cfg.population * sizing.worst_pass_flops
        t = sizing.affordable(cost, cfg.iterations)
        if t < 1:
            raise no_unit_error("es", f"iteration of N={cfg.population} members", cost, sizing.budget_flops,
                                "lower es.population")
        vote_ks = tuple(k for k in sizing.protocol.k if k <= cfg.population)
        return Work(sizes={"T": t, "N": cfg.population}, train_flops=t * cost,
                    generated_sequences=t * cfg.population * len(sizing.train_items),
                    test_generations=1 + max(vote_ks), note=f"es and es+vote K={list(vote_ks)}")

    def train(self, ctx) -> list[Ensemble]:
        cfg = self.config
        t_max = self.plan(ctx.sizing).sizes["T"]
        vote_ks = tuple(k for k in ctx.protocol.k if k <= cfg.population)
        dist.say(f"es: N={cfg.population}, sigma={cfg.sigma}, alpha={cfg.alpha}, T={t_max} iterations "
                 f"(worst case {cfg.population * ctx.worst_pass_flops():.3g} FLOPs each), noise={cfg.noise}, "
                 f"es+vote K={list(vote_ks)}")
        start = self._resume(ctx)
        for t in range(start, t_max):
            members = iteration_members(ctx.protocol.seed, t, cfg)
            scores = ctx.score_population(members, f"iter{t:04d}")
            es_update(ctx.perturber, members, z_scores(scores), cfg.alpha)
            ctx.perturber.rebase()
            self._save(ctx, t, scores, t_max)
        return self._ensembles(ctx, cfg, t_max, vote_ks)

    def _resume(self, ctx) -> int:
        """Load the last saved weights and charge the finished iterations; return the next one."""
        state = ctx.out_dir / "theta.json"
        if not state.is_file():
            return 0
        t = json.loads(state.read_text())["iteration"]
        ctx.perturber.load_file(str(theta_path(ctx, t)))
        ctx.perturber.rebase()
        for done in range(t + 1):  # finished iterations were paid for: the ledger counts them
            ctx.score_population(iteration_members(ctx.protocol.seed, done, self.config), f"iter{done:04d}")
        dist.say(f"es: resumed after iteration {t}")
        return t + 1

    def _save(self, ctx, t, scores, t_max) -> None:
        """Weights first, then the pointer to them: a kill at any point leaves a consistent state.

        Disk: only theta_t is needed to resume, so theta_{t-1} goes once theta_t is in place;
        after the last iteration theta_{t-1} stays too, since the final population (es+vote)
        was drawn around it. Weights are saved in the model's own dtype."""
        if dist.is_main():
            tmp = ctx.out_dir / "theta.tmp"
            ctx.perturber.save_file(str(tmp))
            faults.point("es-weights-written")
            os.replace(tmp, theta_path(ctx, t))
            pointer = ctx.out_dir / "theta.json.tmp"
            pointer.write_text(json.dumps({"iteration": t}))
            os.replace(pointer, ctx.out_dir / "theta.json")
            stale = theta_path(ctx, t - 1 if t < t_max - 1 else t - 2)
            if stale.is_file():
                stale.unlink()
        dist.barrier()
        ctx.record_curve(t, train_reward=float(np.mean(scores)), max_reward=float(np.max(scores)))

    def _ensembles(self, ctx, cfg, t_max, vote_ks) -> list[Ensemble]:
        last = t_max - 1
        members = iteration_members(ctx.protocol.seed, last, cfg)
        records = read_records(ctx.out_dir, f"iter{last:04d}")
        scores = [records[m.index]["score"] for m in members]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable, as in RandOpt
        around = str(theta_path(ctx, last - 1)) if last > 0 else None  # None: drawn around the base model
        voters = [Voter(f"iter{last}-member{i}", seed=members[i].seed, sigma=cfg.sigma, noise=cfg.noise,
                        weights=around) for i in order[:max(vote_ks)]]
        seq_len = ctx.sizing.prompts().mean_len + ctx.max_new_tokens
        info = {"iterations": t_max, "population": cfg.population, "noise": cfg.noise,
                "deviations": [f"T={t_max} iterations from the training budget (paper's matched T: 167)",
                               f"N={cfg.population} (paper: 30)" if cfg.population != 30 else "N=30 as the paper"],
                "paper_train_flops": paper_population_flops(t_max, cfg.population, len(ctx.train_items),
                                                            ctx.ledger.n_params, seq_len)}
        return [Ensemble("es", [Voter("es-final", weights=str(theta_path(ctx, last)))], ks=(1,), info=info),
                Ensemble("es+vote", voters, ks=vote_ks, info=info)]


def theta_path(ctx, t: int):
    return ctx.out_dir / f"theta-{t:04d}.safetensors"


METHOD = ES
