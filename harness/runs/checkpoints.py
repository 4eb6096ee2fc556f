"""Which Trainer checkpoint a killed run resumes from (GRPO's and iterative RandOpt's SFT)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from harness.runs import distributed as dist


def complete_checkpoint(folder: Path, name: str) -> str | None:
    """The newest Trainer checkpoint written to the end, or None; half-written ones are deleted.

    The Trainer writes checkpoint-N/ in place: weights, optimizer, scheduler, RNG state, and
    trainer_state.json last. A kill anywhere before that last file leaves a folder that
    `get_last_checkpoint` would pick and fail on at every rerun; here a checkpoint counts only
    if its trainer_state.json parses and names step N (SIGKILL loses no written page, so a
    complete last file means complete earlier ones). The main process decides, for all."""
    chosen = _newest_complete(folder, name) if dist.is_main() else None
    return dist.gather([chosen])[0] if dist.world() > 1 else chosen


def _newest_complete(folder: Path, name: str) -> str | None:
    complete = []
    for path in sorted(folder.glob("checkpoint-*")) if folder.is_dir() else []:
        step = path.name.rpartition("-")[2]
        try:
            state = json.loads((path / "trainer_state.json").read_text())
            ok = step.isdigit() and state.get("global_step") == int(step)
        except (OSError, ValueError, AttributeError):
            ok = False
        if ok:
            complete.append((int(step), path))
        else:
            print(f"{name}: removing incomplete checkpoint {path} (the run was killed while writing it)", flush=True)
            shutil.rmtree(path, ignore_errors=True)
    return str(max(complete)[1]) if complete else None
