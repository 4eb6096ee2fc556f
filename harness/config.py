"""Run settings: presets (`BUDGET=smoke|small|paper`) and the resolved, validated config.

A preset sets the protocol sizes and the methods' main knobs together; any single value can
still be overridden (`--n-train 32`, `--set randopt.population=100`). The resolved config is
written with every result.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from harness.errors import UserError

# randopt.population: RandOpt members, which also sets the shared training budget (compare.py);
# k: vote sizes reported; max_new_tokens is capped by the task's own. "method.field" keys set
# one method's field (the paper's values are each Config's defaults).
PRESETS: dict[str, dict] = {
    "smoke": {"n_train": 16, "n_test": 32, "max_new_tokens": 64, "k": (1, 3, 5), "randopt.population": 8,
              "es.population": 4, "grpo.batch_prompts": 2, "grpo.num_generations": 4,
              "ppo.batch_prompts": 4, "ppo.mini_batch": 2,
              "iterative_randopt.population": 1, "iterative_randopt.top_k": 1, "iterative_randopt.samples": 1,
              "iterative_randopt.max_traces": 1, "iterative_randopt.lora_rank": 8, "iterative_randopt.lora_alpha": 16,
              "iterative_randopt.batch_size": 2, "iterative_randopt.micro_batch": 2,
              "randopt_soup.population": 8, "randopt_fold.population": 8},
    "small": {"n_train": 64, "n_test": 256, "max_new_tokens": 256, "k": (1, 5, 10), "randopt.population": 32,
              "es.population": 8, "grpo.batch_prompts": 4, "grpo.num_generations": 8,
              "ppo.batch_prompts": 16, "ppo.mini_batch": 8,
              "iterative_randopt.population": 4, "iterative_randopt.top_k": 2, "iterative_randopt.samples": 2,
              "iterative_randopt.max_traces": 1, "iterative_randopt.lora_rank": 32, "iterative_randopt.lora_alpha": 64,
              "iterative_randopt.batch_size": 4, "iterative_randopt.micro_batch": 4,
              # the folds draw RandOpt's population (same N, sigmas, noise), so its scores are reused
              "randopt_soup.population": 32, "randopt_fold.population": 32},
    "paper": {"n_train": 200, "n_test": None, "max_new_tokens": 1024, "k": (1, 5, 10, 20, 50),
              "randopt.population": 5000,
              # GRPO's batch of 1024 prompts cannot come from the 200 selection items: the paper
              # preset trains it on the whole train split (docs/paper.md section 3; recorded in its rows)
              "grpo.train_items": "full"},
}


@dataclass(frozen=True)
class Protocol:
    """What every method shares: data sizes, decoding and vote sizes."""

    task: str
    """Task name (file in tasks/) or dotted module path."""
    model: str | None = None
    """Hugging Face id or local folder; None is the embedded SmolLM2-135M-Instruct."""
    data_dir: str | None = None
    """Folder laid out like ../shared/data; None loads from the Hub."""
    budget: str = "small"
    """Preset name: smoke, small or paper."""
    n_train: int = 64
    """Training items: the first n_train of the train split (paper: 200)."""
    n_test: int | None = 128
    """Test items: the first n_test of the test split; None is all of it."""
    max_new_tokens: int = 256
    """Generation length, capped by the task's own maximum."""
    k: tuple[int, ...] = (1, 5, 10)
    """Ensemble sizes at which vote accuracy is reported."""
    seed: int = 0
    """Master seed: member seeds, sampling seeds and sigma draws all derive from it."""
    batch_size: int = 64
    """Prompts per generate call."""
    device: str = "cpu"
    """Torch device for every model."""

    def __post_init__(self):
        if self.budget not in PRESETS:
            raise UserError(f"unknown BUDGET {self.budget!r}; choose one of {', '.join(PRESETS)}")
        if self.n_train < 1:
            raise UserError(f"n_train must be >= 1, got {self.n_train}")
        if self.n_test is not None and self.n_test < 1:
            raise UserError(f"n_test must be >= 1 (or omitted for the whole split), got {self.n_test}")
        if not self.k or min(self.k) < 1:
            raise UserError(f"K list must hold positive sizes, got {self.k}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise UserError("max_new_tokens and batch_size must be >= 1")


@dataclass(frozen=True)
class RunOptions:
    """How `compare` runs and keeps its results; none of these changes a result."""

    results: str = "results"
    """Results root folder; a run lives in <results>/<task>/<run>/."""
    run: str | None = None
    """Run folder name; None derives it from the config, so the same command resumes."""
    fresh: bool = False
    """Discard an earlier run with the same config first."""
    budget_flops: float | None = None
    """Training FLOP budget of every method; None: what RandOpt's preset population costs."""
    seeds: int = 1
    """Repeat every method with seeds seed, seed+1, ..."""
    keep_weights: bool = False
    """Keep trained weights after a method's rows are written (deleted by default: disk)."""
    engine: str = "auto"
    """Generation engine: native, vllm or auto (harness/engine/select.py). Not part of the run's
    name: the folder remembers its engine and refuses another one."""
    diagnostic_members: int = 32
    """RandOpt members evaluated on test for the selection diagnostics (harness/diagnostics.py); 0: off."""

    def __post_init__(self):
        if self.diagnostic_members < 0:
            raise UserError(f"--diagnostic-members must be >= 0 (0 turns the diagnostics off), got {self.diagnostic_members}")
        if self.seeds < 1:
            raise UserError(f"--seeds must be >= 1, got {self.seeds}")
        if self.budget_flops is not None and not (self.budget_flops > 0 and self.budget_flops != float("inf")):
            raise UserError(f"the training budget must be a finite number of FLOPs > 0, got {self.budget_flops}")


def protocol_from(task: str, budget: str = "small", **overrides) -> Protocol:
    """Preset values, then every override that is not None."""
    if budget not in PRESETS:
        raise UserError(f"unknown BUDGET {budget!r}; choose one of {', '.join(PRESETS)}")
    values = {k: v for k, v in PRESETS[budget].items() if k in {f.name for f in dataclasses.fields(Protocol)}}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Protocol(task=task, budget=budget, **values)


def method_config(config_cls, method: str, budget: str, settings: dict[str, str]):
    """A method's frozen config: dataclass defaults, then the preset, then `--set` values.

    `settings` maps "field" or "method.field" to a string; a bare field applies to every
    method that has it (`--set noise=released` reaches RandOpt and ES), a dotted one to one
    method. RandOpt's population also sets the default shared training budget (compare.py).
    """
    names = {f.name: f for f in dataclasses.fields(config_cls)}
    values = {}
    for source in (PRESETS[budget], settings):
        # bare keys first, so "method.field" wins over "field" whatever the order given
        for key in sorted(source, key=lambda k: "." in k):
            target, _, name = key.rpartition(".")
            if target not in ("", method):
                continue
            if name in names:
                values[name] = _parse(source[key], names[name].type, key)
            elif target == method:
                raise UserError(f"unknown setting {key!r}; {method} has {', '.join(names) or 'no settings'}")
    return config_cls(**values)


def _parse(raw, type_hint, key: str):
    """Turn a CLI string into the field's type (numbers, tuples of numbers, strings, bools)."""
    if not isinstance(raw, str):
        return raw
    hint = str(type_hint)
    try:
        if hint.startswith("tuple"):
            item = float if "float" in hint else int
            return tuple(item(x) for x in raw.replace(" ", "").split(",") if x)
        if "bool" in hint:
            return raw.lower() in ("1", "true", "yes", "on")
        if "int" in hint and "float" not in hint:
            return int(raw)
        if "float" in hint:
            return float(raw)
    except ValueError:
        raise UserError(f"setting {key}={raw!r} is not a valid {hint}") from None
    return raw


def as_dict(config) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}

