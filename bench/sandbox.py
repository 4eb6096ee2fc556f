"""How fast the sandbox scores MBPP completions: the 200 train tasks' reference solutions, each
wrapped as a model answer, scored cold (no cache) through the task's own reward path, that is
one sandboxed child process per program, up to os.cpu_count() at once.

    python bench/sandbox.py [--data-dir ../shared/data] [--repeat 3]

Prints the sandbox mode, the pass count, each failing task with the reason the sandbox recorded,
and, as the last line, one JSON object: `programs`, `passed`, `best_s`, `programs_per_s`, `cpus`,
`mode`. The cost includes the stricter checker (the harness parses each assert, decodes the
program's values and compares them; the child pivots into its minimal root).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.services import sandbox  # noqa: E402
from tasks import mbpp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("DATA_DIR", "../shared/data"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    items = mbpp.TASK.load("train", args.data_dir)
    responses = [f"<answer>\n{it.meta['code']}\n</answer>" for it in items]
    times, passed = [], 0
    for _ in range(args.repeat):
        task = mbpp.Mbpp()  # a fresh task: no cached outcome
        start = time.perf_counter()
        passed = int(sum(task.rewards(responses, items)))
        times.append(time.perf_counter() - start)
    best = min(times)
    for it, response in zip(items, responses):  # from the last task's cache: nothing runs again
        why = task.explain(task.vote_key(response, it), it)
        if why:
            print(f"task {it.meta['task_id']} fails: {why}")
    print(f"sandbox mode {sandbox.mode()}: {passed}/{len(items)} reference solutions pass; "
          f"{len(items)} programs in {best:.2f} s (best of {args.repeat}) on {os.cpu_count()} CPUs")
    print(json.dumps({"programs": len(items), "passed": passed, "best_s": round(best, 3),
                      "programs_per_s": round(len(items) / best, 1), "cpus": os.cpu_count(),
                      "mode": sandbox.mode()}))


if __name__ == "__main__":
    main()
