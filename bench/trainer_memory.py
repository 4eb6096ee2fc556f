"""Resident memory around GRPO and PPO on the embedded SmolLM2: does a finished trainer give
its memory back? Prints RSS (GiB) before each method, when it returns, and after the
harness's trim (gc + malloc_trim), as harness.compare does after every method. One step each at the smoke sizes; a few minutes on 2 CPUs.

    python bench/trainer_memory.py
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.runs import memory  # noqa: E402
from harness.method import get_method  # noqa: E402
from tests.helpers import make_context  # noqa: E402


def rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> None:
    from harness.engine.model import resolve_model

    torch.set_num_threads(2)
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, sizes in (("grpo", dict(batch_prompts=2, num_generations=4, mini_batch=2, max_steps=1)),
                            ("ppo", dict(batch_prompts=4, mini_batch=2, max_steps=1))):
            ctx = make_context(resolve_model(None), Path(tmp) / name, budget=None, n_train=4, max_new_tokens=12)
            before = rss_gib()
            cls = get_method(name)
            cls(cls.Config(**sizes)).train(ctx)
            returned = rss_gib()
            memory.trim()  # what harness.compare does after every method
            figures[name] = {"rss_before_gib": round(before, 3), "rss_returned_gib": round(returned, 3),
                             "rss_after_trim_gib": round(rss_gib(), 3)}
            print(name, figures[name], flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
