"""What randopt_soup and randopt_fold share: RandOpt's scored population, and folds as recipes.

The population is RandOpt's own: `methods.randopt.sample_members` with the run seed and the
same `population`, `sigmas` and `noise`, so member i here is member i there. When RandOpt ran
in the same run folder (its sibling folder `randopt/` holds every member's score), the scores
are read back and no member is scored again: the fold's training FLOPs are RandOpt's, marked
as shared (row info `shared_train_flops_with`), never charged a second time. Otherwise the fold
scores the population itself, through `score_population` with RandOpt's unit tag `members`, so
its scores (and its folds) are the ones RandOpt would have had.

A fold is stored as its recipe (members, terms, scale) in `folds.json`, never as weights. A
rerun rebuilds the recipe from the scores and checks it against the stored one: test voters
already evaluated belong to that recipe, so a different one (the population changed under a
resumed run) is refused instead of mixed in.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from harness.budget.plan import Work, no_unit_error
from harness.errors import UserError
from harness.method import Ensemble, Voter
from harness.runs import distributed as dist
from harness.runs.results import read_json, write_json
from harness.runs.units import read_records
from methods.randopt import Config as RandOptConfig, rank, running_scores, sample_members

SOURCE = "randopt"
"""The method whose population is folded, and whose folder holds its scores."""


@dataclass
class Population:
    members: list
    scores: list[float]
    order: list[int]
    """Member indices by train score, best first (RandOpt's stable sort)."""
    shared_train_flops: float = 0.0
    """RandOpt's FLOPs for these scores when they were read back; 0 when scored here."""

    @property
    def shared(self) -> bool:
        return self.shared_train_flops > 0


def plan(name: str, cfg: RandOptConfig, sizing, test_generations: int) -> Work:
    """RandOpt's N under this budget; the worst case is scoring it here (0 when RandOpt ran)."""
    worst = sizing.worst_pass_flops
    n = sizing.affordable(worst, cfg.population)
    if n < 1:
        raise no_unit_error(name, "member", worst, sizing.budget_flops, "lower n_train / max_new_tokens")
    return Work(sizes={"N": n}, train_flops=n * worst, generated_sequences=n * len(sizing.train_items),
                test_generations=test_generations,
                note=f"one model per row; reuses randopt's member scores when randopt runs first (then no "
                     f"training FLOPs of its own), else scores N members; sigmas {list(cfg.sigmas)}, noise {cfg.noise}")


def check_population(name: str, cfg: RandOptConfig, k: int) -> None:
    if k > cfg.population:
        raise UserError(f"{name}: K={k} is larger than the population N={cfg.population}; lower K (--k) "
                        f"or raise {name}.population")


def population(name: str, cfg: RandOptConfig, ctx, work: Work) -> Population:
    """RandOpt's members and train scores: read back from randopt/ when they are all there and
    are these members, else scored here (resumable, tag `members`, charged to this ledger)."""
    n = work.sizes["N"]
    members = sample_members(ctx.protocol.seed, n, cfg.sigmas, cfg.noise)
    source = ctx.out_dir.parent / SOURCE
    records = read_records(source, "members") if source.is_dir() else {}
    same = all(i in records and (records[i].get("seed"), records[i].get("sigma"), records[i].get("noise"))
               == (m.seed, m.sigma, m.noise) for i, m in enumerate(members))
    if same:
        scores = [float(records[i]["score"]) for i in range(n)]
        flops = 2.0 * ctx.ledger.n_params * sum(records[i]["tokens"] for i in range(n))
        dist.say(f"{name}: folding randopt's population (N={n}): its member scores read back from {source}, "
                 "no member scored again")
        return Population(members, scores, rank(scores), flops)
    if records:
        dist.say(f"{name}: {source} holds a different population (not N={n}, sigmas {list(cfg.sigmas)}, noise "
                 f"{cfg.noise}); scoring N={n} members here instead")
    scores = ctx.score_population(members, "members", curve=lambda s: running_scores(s, 1))
    return Population(members, scores, rank(scores), 0.0)


def fold_voter(label: str, members: list, coefficients: list[float], scale: float) -> Voter:
    """One model: base + scale * sum_i coefficient_i * eps(seed_i) (coefficient_i carries sigma_i)."""
    terms = tuple((m.seed, float(c), m.noise) for m, c in zip(members, coefficients))
    return Voter(label, noise_sum=terms, noise_scale=float(scale))


def recipe(ensemble: Ensemble, indices: list[int], weights: list[float]) -> dict:
    voter = ensemble.voters[0]
    return {"name": ensemble.name, "label": ensemble.label, "members": indices, "weights": weights,
            "scale": voter.noise_scale, "terms": [list(t) for t in voter.noise_sum]}


def keep_recipes(name: str, ctx, recipes: list[dict]) -> None:
    """folds.json: the recipes of this run; a rerun must rebuild exactly these (see module doc)."""
    path = ctx.out_dir / "folds.json"
    fresh = json.loads(json.dumps(recipes))  # the form they take on disk, floats and all
    if path.is_file() and read_json(path) != fresh:
        raise UserError(f"{name}: {path} holds fold recipes that differ from the ones rebuilt now (the population "
                        f"or its scores changed since); delete {ctx.out_dir} and rerun to redo {name}")
    if dist.is_main():
        write_json(path, fresh)


def info(pop: Population, cfg: RandOptConfig, **extra) -> dict:
    shared = {"shared_train_flops_with": SOURCE, "shared_train_flops": pop.shared_train_flops} if pop.shared else {}
    return {"population": len(pop.members), "noise": cfg.noise, "sigmas": list(cfg.sigmas), "recipe": "folds.json",
            "test_passes_per_item": 1, **shared, **extra}


def check_fields(name: str, cfg) -> None:
    """The population fields a fold shares with RandOpt (population, sigmas, noise), validated once."""
    from harness.engine.perturb import NOISE_MODES
    from harness.errors import UserError

    if cfg.population < 1:
        raise UserError(f"{name}.population must be >= 1, got {cfg.population}")
    if not cfg.sigmas or min(cfg.sigmas) <= 0:
        raise UserError(f"{name}.sigmas: every sigma must be > 0, got {cfg.sigmas}")
    if cfg.noise not in NOISE_MODES:
        raise UserError(f"{name}.noise {cfg.noise!r}; choose one of {', '.join(NOISE_MODES)}")
