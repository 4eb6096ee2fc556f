"""Progress lines a user can trust on a long comparison: what runs next, what it will do,
how long each method took, and how long the rest should take.

The ETA projects each method's planned work (`harness.budget.plan.Work`) with rates measured on
this run: the base model's train pass (run first, for the thicket histogram) times one
greedy generation; update FLOPs (losses, critic, fine-tuning) are first assumed to run at
the generation FLOP rate. Every finished method then rescales the projection of the rest by
how far off the projection of the finished ones was, so the ETA improves as the run goes.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

from tqdm.auto import tqdm

from harness.runs import distributed as dist


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
    def __init__(self, methods: list[str], n_seeds: int, plans: dict, session):
        self.queue = [(m, s) for s in range(n_seeds) for m in methods]
        self.plans, self.session = plans, session
        self.seconds_per_sequence: float | None = None
        self.projected_done = self.actual_done = 0.0
        self._started: dict = {}
        self._index = 0

    def calibrate(self, seconds: float, n_sequences: int) -> None:
        self.seconds_per_sequence = seconds / max(1, n_sequences)

    def projected(self, name: str) -> float | None:
        work = self.plans.get(name)
        if work is None or self.seconds_per_sequence is None:
            return None
        s = self.session
        per_sequence_flops = s.sizing.worst_pass_flops / max(1, len(s.train))
        per_flop = self.seconds_per_sequence / per_sequence_flops
        return work.seconds(self.seconds_per_sequence, per_flop, len(s.evaluator.items))

    def start(self, name: str, seed: int) -> None:
        self._index += 1
        work = self.plans.get(name)
        what = work.describe() if work else "sizes not known before it runs"
        dist.say(f"method {self._index}/{len(self.queue)}: {name} (seed {seed}): {what}")
        self._started[(name, seed)] = time.perf_counter()

    def done(self, name: str, seed: int) -> None:
        wall = time.perf_counter() - self._started.pop((name, seed))
        projected = self.projected(name)
        if projected and wall > 1.0:  # a method reused from an earlier run says nothing about speed
            self.projected_done += projected
            self.actual_done += wall
        rest = [self.projected(m) for m, _ in self.queue[self._index:]]
        eta = ""
        if rest and all(r is not None for r in rest):
            scale = self.actual_done / self.projected_done if self.projected_done else 1.0
            eta = f"; the remaining {len(rest)} should take about {duration(scale * sum(rest))}"
        elif rest:
            eta = f"; {len(rest)} to go"
        dist.say(f"{name} (seed {seed}) finished in {duration(wall)}{eta}")


@contextmanager
def items(n: int, desc: str):
    """A bar over the items of one generation call, for the engine's `progress` callback.

    It appears only once the call has run for 10 s and vanishes when done: a 135M member on
    arith takes seconds (a bar per member would be noise under the population's bar); a 7B
    member's pass over gsm8k or a test voter over gsm8k's 1,319 items takes minutes, and then the user
    sees it move."""
    bar = tqdm(total=n, desc=desc, unit="item", leave=False, delay=10, disable=not dist.is_main())
    try:
        yield bar.update
    finally:
        bar.close()
