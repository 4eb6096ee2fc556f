"""The evaluation protocol: the ONLY code that reads the test split and scores it.

Every reported accuracy goes one way: each voter generates on every test item, its
response is reduced to the task's vote key, the first k voters' keys are majority-voted
(`harness.vote.majority`), and the vote is checked with the task's `is_correct`. The base
model is the one-voter ensemble. Voter outputs are persisted as they finish (resume) and
sharded across processes like population members.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.budget.compute import Ledger
from harness.config import Protocol
from harness.runs import progress
from harness.engine.interface import Engine, render
from harness.method import Ensemble, Voter
from harness.splits import test_items
from harness.task import Task
from harness.runs.units import run_units
from harness.vote import majority


@dataclass
class Row:
    """One line of the results table: an ensemble's vote of its first k voters."""

    method: str
    name: str
    k: int
    accuracy: float
    n_test: int
    correct: list[bool]
    predictions: list[str]
    test_flops: float
    """FLOPs of all k voters' generations over the test set."""
    label: str = ""
    """Table label: the ensemble name for single-model rows, else "<name> K=<k>"."""
    info: dict = field(default_factory=dict)


class Evaluator:
    def __init__(self, task: Task, protocol: Protocol, engine: Engine, items: list | None = None):
        self.task, self.protocol, self.engine, self.perturber = task, protocol, engine, engine.weights
        self.n_params = engine.n_params
        self.items = items if items is not None else test_items(task, protocol)
        self.batches = engine.prepare([render(engine.tokenizer, it.messages) for it in self.items])
        self.max_new_tokens = min(protocol.max_new_tokens, task.max_new_tokens)

    def voter_record(self, voter: Voter) -> dict:
        """Generate with one voter on every test item; restore the base weights after."""
        self.perturber.restore()
        if voter.weights:
            self.perturber.load_file(voter.weights)
        if voter.adapter:  # merged in place, restored below like a perturbation
            self.perturber.add_adapter(voter.adapter)
        if voter.seed is not None:  # on top of the trained weights, if any (ES + vote)
            self.perturber.add_noise(voter.seed, voter.sigma, voter.noise)
        if voter.noise_sum:  # a fold, rebuilt from its recipe (float32 sum: the same bits every time)
            self.perturber.add_noise_sum(list(voter.noise_sum), voter.noise_scale)
        try:
            start = time.perf_counter()
            with progress.items(len(self.items), f"{voter.label} on test") as advance:
                outs = self.engine.generate(self.batches, self.max_new_tokens, voter.temperature, voter.sample_seed,
                                            progress=advance)
            seconds = time.perf_counter() - start
        finally:
            self.perturber.restore()
        return {"label": voter.label, "texts": [o.text for o in outs],
                "keys": [self.task.vote_key(o.text, it) for o, it in zip(outs, self.items)],
                "tokens": sum(o.prompt_tokens + o.new_tokens for o in outs), "seconds": seconds}

    def evaluate(self, ensemble: Ensemble, folder: Path, method: str) -> list[Row]:
        ks = sorted(set(ensemble.ks))
        if max(ks) > len(ensemble.voters):
            raise ValueError(f"{ensemble.name}: K={max(ks)} but only {len(ensemble.voters)} voters")
        voters = list(enumerate(ensemble.voters[:max(ks)]))
        done = run_units(voters, lambda v: v[0], lambda v: self.voter_record(v[1]), folder,
                         f"test-{ensemble.name}", desc=f"{ensemble.name} test voters")
        records = [done[i] for i, _ in voters]
        return [self._row(method, ensemble, k, records[:k]) for k in ks]

    def voter_correct(self, record: dict) -> list[bool]:
        """Per test item, whether one voter's answer is right (the one-voter vote, as base's row)."""
        return self.task.are_correct([majority([key]) for key in record["keys"]], self.items)

    def _row(self, method: str, ensemble: Ensemble, k: int, records: list[dict]) -> Row:
        preds = [majority([r["keys"][i] for r in records]) for i in range(len(self.items))]
        correct = self.task.are_correct(preds, self.items)
        ledger = Ledger(self.n_params)
        ledger.forward(sum(r["tokens"] for r in records), "test")
        label = (ensemble.label or ensemble.name) if tuple(ensemble.ks) == (1,) else f"{ensemble.name} K={k}"
        return Row(method, ensemble.name, k, sum(correct) / len(correct), len(correct), correct, preds,
                   ledger.test, label, dict(ensemble.info))
