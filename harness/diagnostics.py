"""Selection diagnostics: does RandOpt's train score pick the members that are good on test?

A DIAGNOSTIC, not a method: it reads the test split, so only the harness runs it, after every
method of a seed has finished and written its rows, and nothing a method returns depends on it
(no method may use it for selection). Its test FLOPs are charged here, outside every budget.

For a sample of M of RandOpt's N members (`--diagnostic-members`, default 32, 0 off; all N when
M >= N, else M drawn without replacement by numpy's default_rng((seed, 20)), in index order):
- each member's test accuracy: greedy, through `Evaluator.voter_record` like any voter,
  persisted one JSON line per member in seed<S>/diagnostics/ (a killed run resumes); members
  RandOpt's rows already evaluated (its top K) are read back from randopt/, not run again
  (`test_flops` counts the new evaluations, `test_flops_reused` the ones read back);
- Spearman's rank correlation between train score and test accuracy (average ranks for ties;
  undefined, null, when either side is constant) with a 95% percentile bootstrap interval
  over members (2,000 resamples, seed 0; resamples with a constant side are dropped);
- the oracle gap at each K of the K list (K <= M): mean test accuracy of the K sampled members
  best on TEST minus mean test accuracy of the K best on TRAIN (RandOpt's stable sort: ties keep
  sampling order). It is >= 0; 0 means the train score picked K members as good on test as any K.
Written to seed<S>/diagnostics.json and logged to W&B (run `diagnostics-seed<S>`) with the keys
of `summary_keys`.
"""
from __future__ import annotations

import numpy as np

from harness.budget.compute import Ledger
from harness.method import Voter
from harness.runs import distributed as dist, tracking
from harness.runs.results import read_json, write_json
from harness.runs.units import read_records, run_units

LABEL = "diagnostic: reads the test split; no method may use it for selection"
N_BOOT = 2000


def ranks(x) -> np.ndarray:
    """Ranks 1..n, tied values sharing the mean of their ranks (as scipy.stats.rankdata)."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="stable")
    r = np.empty(x.size)
    r[order] = np.arange(1, x.size + 1)
    for v in np.unique(x):
        tie = x == v
        r[tie] = r[tie].mean()
    return r


def spearman(x, y) -> float | None:
    """Pearson correlation of the ranks; None when either side is constant (undefined)."""
    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def spearman_interval(x, y, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float | None, float | None]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rng = np.random.default_rng(seed)
    draws = [spearman(x[i], y[i]) for i in rng.integers(0, x.size, (n_boot, x.size))]
    kept = [d for d in draws if d is not None]
    if len(kept) < n_boot / 2:  # mostly constant resamples: no interval worth printing
        return None, None
    lo, hi = np.quantile(kept, [0.025, 0.975])
    return float(lo), float(hi)


def oracle_gaps(train: list[float], test: list[float], ks) -> dict[str, dict]:
    """{"K": {top_by_test, top_by_train, gap}} for each K <= len(train) (see module doc)."""
    by_train = sorted(range(len(train)), key=lambda i: -train[i])  # stable: RandOpt's rule
    best = sorted(test, reverse=True)
    out = {}
    for k in sorted(set(ks)):
        if k <= len(train):
            oracle, picked = sum(best[:k]) / k, sum(test[i] for i in by_train[:k]) / k
            out[str(k)] = {"top_by_test": oracle, "top_by_train": picked, "gap": oracle - picked}
    return out


def sample(n: int, m: int, seed: int) -> list[int]:
    if m >= n:
        return list(range(n))
    return sorted(int(i) for i in np.random.default_rng((seed, 20)).choice(n, m, replace=False))


def summary_keys(result: dict) -> dict:
    """The flat keys of diagnostics.json's numbers: W&B's summary and the report's table."""
    rho = result["spearman"]
    out = {"members": result["m"], "spearman": rho["rho"], "spearman_lo": rho["lo"], "spearman_hi": rho["hi"],
           "test_flops": result["test_flops"]}
    out.update({f"oracle_gap_k{k}": g["gap"] for k, g in result["oracle_gap"].items()})
    return out


def evaluated_by_randopt(seed_dir, population: list[dict]) -> dict[int, dict]:
    """{member index: test record} of the members RandOpt's own rows already evaluated (its top
    K, greedy, on these test items: the record this module would make), so none is run twice."""
    by_rank = {r["rank"]: r["index"] for r in population}
    out = {}
    for position, record in read_records(seed_dir / "randopt", "test-randopt").items():
        index = by_rank.get(position)
        if index is not None and record.get("label") == f"member{index}":
            out[index] = record
    return out


def run(s, seed_dir, m: int, seed: int) -> dict | None:
    """The diagnostics of one seed (module doc), or None when RandOpt left no ranking or m is 0."""
    ranking_path = seed_dir / "randopt" / "ranking.json"
    if m <= 0 or not ranking_path.is_file():
        return None
    path = seed_dir / "diagnostics.json"
    population = sorted(read_json(ranking_path), key=lambda r: r["index"])
    chosen = [population[i] for i in sample(len(population), m, seed)]
    if path.is_file() and read_json(path).get("indices") == [r["index"] for r in chosen]:
        return read_json(path)
    ev = s.evaluator
    reused = evaluated_by_randopt(seed_dir, population)
    voters = [(r["index"], Voter(f"member{r['index']}", seed=r["seed"], sigma=r["sigma"], noise=r["noise"]))
              for r in chosen if r["index"] not in reused]
    done = run_units(voters, lambda v: v[0], lambda v: ev.voter_record(v[1]), seed_dir / "diagnostics", "members",
                     desc="diagnostic members on test")
    done.update({i: reused[i] for i in (r["index"] for r in chosen) if i in reused})
    train = [float(r["score"]) for r in chosen]
    test = [sum(c) / len(c) for c in (ev.voter_correct(done[r["index"]]) for r in chosen)]
    spent, again = Ledger(s.n_params), Ledger(s.n_params)
    spent.forward(sum(done[i]["tokens"] for i, _ in voters), "test")
    again.forward(sum(done[r["index"]]["tokens"] for r in chosen if r["index"] in reused), "test")
    lo, hi = spearman_interval(train, test)
    result = {"label": LABEL, "population": len(population), "m": len(chosen), "m_requested": m,
              "indices": [r["index"] for r in chosen], "n_test": len(ev.items), "test_flops": spent.test,
              "reused_from_randopt": len(chosen) - len(voters), "test_flops_reused": again.test,
              "spearman": {"rho": spearman(train, test), "lo": lo, "hi": hi, "n_boot": N_BOOT, "boot_seed": 0},
              "oracle_gap": oracle_gaps(train, test, s.protocol.k),
              "members": [{"index": r["index"], "seed": r["seed"], "sigma": r["sigma"], "noise": r["noise"],
                           "train_score": a, "test_accuracy": b} for r, a, b in zip(chosen, train, test)]}
    if dist.is_main():
        write_json(path, result)
        log = tracking.start(tracking.PROJECT, tracking.group_name(s.run_dir, s.config), f"diagnostics-seed{seed}",
                             tracking.run_config(s.config, "diagnostics", seed), s.run_dir,
                             tracking.run_id(s.run_dir, "diagnostics", seed), job_type="diagnostics")
        columns = ["index", "seed", "sigma", "train_score", "test_accuracy"]
        log.table("diagnostic_members", columns, [[r[c] for c in columns] for r in result["members"]])
        log.summary(summary_keys(result))
        log.finish(0)
    return result
