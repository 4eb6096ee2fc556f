"""`thicket density --task T`: how dense are task experts around the pretrained weights?

The paper's delta(m) curve (docs/paper.md section 6, "Density"): delta(m) = the fraction of
random perturbations theta + sigma * eps whose test accuracy is >= base accuracy + m. The
paper used 1000 perturbations at sigma = 0.005; a single sigma confounds density with noise
robustness across model sizes, so this sweeps sigma (one curve per sigma). delta(0) counts
ties as successes, so beside it every sigma reports the perturbations strictly above, equal
to and below the base accuracy: eight ties at 0% are no thicket.

Every accuracy, the base model's included, goes through the Evaluator's one extract -> vote ->
correct path (a one-voter ensemble). Member seeds are drawn like RandOpt's
(`default_rng(seed).choice(2**31, M)`), the SAME seeds at every sigma: the sweep then changes
only the scale along fixed directions. Each member's vote keys are persisted as it finishes
(`harness.runs.units`), so a rerun of the same command resumes and re-scores nothing.

Writes results/<task>/density-<hash>/ density.json, density.md (sigma x margin) and
density.png (delta vs m, a line per sigma). The hash leaves the margins out: they are
derived afterwards, so a new --margins list reuses every score.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from harness.runs import distributed as dist
from harness.argtypes import floats
from harness.errors import UserError
from harness.runs.results import write_json

# Sizes per --budget: `smoke` finishes `thicket density --task arith` on 2 CPUs in minutes;
# `paper` is the paper's 1000 perturbations at sigma 0.005 on the whole test split.
PRESETS = {"smoke": {"members": 8, "sigmas": (1e-3, 2e-3, 5e-3), "n_test": 64},
           "small": {"members": 32, "sigmas": (1e-3, 2e-3, 5e-3), "n_test": 128},
           "paper": {"members": 1000, "sigmas": (5e-3,), "n_test": None}}
MARGINS = (-0.05, 0.0, 0.01, 0.02, 0.05, 0.1)
EPS = 1e-9  # accuracies are k/n floats: base + m must not miss an equal accuracy by rounding


def add_arguments(p) -> None:
    p.add_argument("--task", required=True, help="task name (tasks/<name>.py) or dotted module path")
    p.add_argument("--model", default=None, help="Hugging Face id or local folder (default: embedded SmolLM2)")
    p.add_argument("--data-dir", default=os.environ.get("DATA_DIR") or None,
                   help="offline data folder laid out like ../shared/data (default: the Hub)")
    p.add_argument("--budget", default="smoke", help="preset: smoke, small or paper (sizes below)")
    p.add_argument("--sigmas", type=floats, default=None, help="noise scales, e.g. 0.001,0.002,0.005")
    p.add_argument("--members", type=int, default=None, help="perturbations per sigma")
    p.add_argument("--margins", type=floats, default=MARGINS, help="margins m (accuracy fractions)")
    p.add_argument("--n-test", type=int, default=None, help="test items (first N)")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--noise", default="iid", help="iid or released (see harness.engine.perturb)")
    p.add_argument("--seed", type=int, default=0, help="draws the member seeds")
    p.add_argument("--results", default="results", help="results root folder")


def run(args) -> int:
    if args.budget not in PRESETS:
        raise UserError(f"unknown budget {args.budget!r}; choose one of {', '.join(PRESETS)}")
    preset = PRESETS[args.budget]
    density(args.task, model=args.model, data_dir=args.data_dir, budget=args.budget,
            sigmas=args.sigmas or preset["sigmas"], members=args.members or preset["members"],
            margins=args.margins, n_test=args.n_test or preset["n_test"], noise=args.noise, seed=args.seed,
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, results=args.results)
    return 0


def density(task: str, *, model=None, data_dir=None, budget="smoke", sigmas=PRESETS["smoke"]["sigmas"],
            members=8, margins=MARGINS, n_test=64, noise="iid", seed=0, max_new_tokens=None,
            batch_size=None, results="results") -> Path:
    """Score base + members x sigmas on the test items; write and print delta(m); return the folder."""
    from harness.config import as_dict, protocol_from
    from harness.engine.perturb import NOISE_MODES

    if members < 1 or not sigmas or min(sigmas) <= 0:
        raise UserError(f"need members >= 1 and every sigma > 0 (got members={members}, sigmas={sigmas})")
    if noise not in NOISE_MODES:
        raise UserError(f"noise mode {noise!r}; choose one of {', '.join(NOISE_MODES)}")
    # n_train is unused (nothing trains) but a Protocol needs one; 1 keeps the hash honest
    protocol = protocol_from(task, budget, model=model, data_dir=data_dir, n_test=n_test, n_train=1,
                             max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed, k=(1,))
    config = {"protocol": as_dict(protocol), "members": members, "sigmas": list(sigmas), "noise": noise}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]
    evaluator = _evaluator(protocol)
    out = Path(results) / evaluator.task.name / f"density-{digest}"
    print(f"density: {out} (sigmas={list(sigmas)}, {members} members each, noise={noise}, "
          f"{len(evaluator.items)} test items)", flush=True)
    if dist.is_main():
        write_json(out / "config.json", config)
    base = score_voters(evaluator, [_voter("base")], out, "base")[0]["accuracy"]
    curves = []
    for sigma in sigmas:
        voters = [_voter(f"sigma{sigma:g}-member{m.index}", m.seed, sigma, noise)
                  for m in _members(seed, members, sigma, noise)]
        records = score_voters(evaluator, voters, out, f"sigma{sigma:g}")
        accs = [r["accuracy"] for r in records]
        curves.append({"sigma": sigma, "seeds": [v.seed for v in voters], "accuracies": accs,
                       "delta": [{"margin": m, "fraction": delta(accs, base, m)} for m in margins],
                       **dict(zip(("above", "equal", "below"), versus_base(accs, base)))})
    report = {"config": config, "n_test": len(evaluator.items), "base_accuracy": base, "margins": list(margins),
              "curves": curves}
    if dist.is_main():
        write_outputs(out, report)
    return out


def _evaluator(protocol):
    from harness.evaluate import Evaluator
    from harness.engine.native import NativeEngine
    from harness.engine.model import load_model
    from harness.task import get_task

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world()))  # as compare() does
    model, tokenizer = load_model(protocol.model, protocol.device)
    return Evaluator(get_task(protocol.task), protocol, NativeEngine(model, tokenizer, protocol.batch_size))


def _voter(label, seed=None, sigma=0.0, noise="iid"):
    from harness.method import Voter

    return Voter(label, seed=seed, sigma=sigma, noise=noise)


def _members(seed: int, n: int, sigma: float, noise: str):
    from harness.method import method_module

    sample_members = method_module("randopt").sample_members  # the same draws as the method

    return sample_members(seed, n, (sigma,), noise)  # seeds depend on (seed, n) only, not on sigma


def score_voters(evaluator, voters, folder: Path, tag: str) -> list[dict]:
    """Test accuracy of each voter alone, resumable: one JSON line per finished voter."""
    from harness.method import Ensemble
    from harness.runs.units import run_units

    def work(unit):
        _, voter = unit
        record = evaluator.voter_record(voter)
        # the Evaluator's own row (majority of one key, then the task's is_correct): the same
        # path every reported accuracy takes
        row = evaluator._row("density", Ensemble(voter.label, [voter]), 1, [record])
        # texts are dropped: 1000 members x a test split of long responses would be gigabytes
        return {"label": voter.label, "seed": voter.seed, "sigma": voter.sigma, "keys": record["keys"],
                "tokens": record["tokens"], "seconds": record["seconds"], "accuracy": row.accuracy}

    done = run_units(list(enumerate(voters)), lambda u: u[0], work, folder, tag, desc=f"density {tag}")
    return [done[i] for i in range(len(voters))]


def delta(accuracies: list[float], base: float, margin: float) -> float:
    """Fraction of perturbations whose accuracy is >= base + margin."""
    return sum(a >= base + margin - EPS for a in accuracies) / len(accuracies)


def versus_base(accuracies: list[float], base: float) -> tuple[int, int, int]:
    """Perturbations strictly above, equal to (within float slack) and below the base accuracy."""
    above = sum(a > base + EPS for a in accuracies)
    below = sum(a < base - EPS for a in accuracies)
    return above, len(accuracies) - above - below, below


# ---- outputs --------------------------------------------------------------------------------

def markdown(report: dict) -> str:
    margins = report["margins"]
    head = ("| sigma | members | mean acc | best acc | above / equal / below base | "
            + " | ".join(f"δ({100 * m:+g} pp)" for m in margins) + " |\n|---|---|---|---|---|" + "---|" * len(margins))
    lines = [f"base accuracy {100 * report['base_accuracy']:.1f}% on {report['n_test']} test items; "
             "δ(m) = fraction of perturbations with accuracy >= base + m (ties count at m = 0: "
             "see above / equal / below)", "", head]
    for c in report["curves"]:
        accs = c["accuracies"]
        cells = " | ".join(f"{d['fraction']:.2f}" for d in c["delta"])
        split = " / ".join(str(n) for n in versus_base(accs, report["base_accuracy"]))
        lines.append(f"| {c['sigma']:g} | {len(accs)} | {100 * sum(accs) / len(accs):.1f}% "
                     f"| {100 * max(accs):.1f}% | {split} | {cells} |")
    return "\n".join(lines)


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CPU servers or in CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for c in report["curves"]:
        ax.plot([100 * d["margin"] for d in c["delta"]], [d["fraction"] for d in c["delta"]], marker="o",
                label=f"σ={c['sigma']:g} ({len(c['accuracies'])})")
    ax.set_xlabel("margin m over base accuracy (percentage points)")
    ax.set_ylabel("δ(m): fraction of perturbations")
    ax.set_title(f"base {100 * report['base_accuracy']:.1f}%, {report['n_test']} test items")
    ax.set_ylim(-0.02, 1.02)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, report: dict) -> None:
    write_json(out / "density.json", report)
    table = markdown(report)
    (out / "density.md").write_text(table + "\n", encoding="utf-8")
    plot(report, out / "density.png")
    print("\n" + table + "\n", flush=True)
    print(f"results: {out}", flush=True)
