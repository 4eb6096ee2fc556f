"""The method contract and registry.

A method is one file `methods/<name>.py` defining `METHOD`, a `Method` subclass with a frozen
`Config` dataclass. It trains with a `TrainContext` (train items, generation engine,
perturber, ledger; never the test split) and returns `Ensemble`s: lists of `Voter`s that the
harness evaluates on the test split through the one extract -> vote -> correct path.
A dotted path (`mypkg.mymethod`) loads a method module from outside the repository.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field

from harness.errors import UserError


# What `make compare` / `thicket compare` runs when no METHODS are named.
DEFAULT_METHODS = ("base", "self_consistency", "randopt", "es", "grpo", "ppo")


@dataclass(frozen=True)
class Voter:
    """How to set the model up for one vote: base or trained weights, an optional LoRA adapter,
    then an optional perturbation, then greedy or sampled decoding.

    A perturbed member is (seed, sigma, noise): a few bytes that regenerate its weights.
    """

    label: str
    seed: int | None = None
    """Perturbation seed; None means no perturbation."""
    sigma: float = 0.0
    noise: str = "iid"
    weights: str | None = None
    """Path of a safetensors file of trained weights (ES, GRPO, PPO)."""
    adapter: str | None = None
    """Path of a peft LoRA adapter folder, merged into the weights (after `weights`) for this vote."""
    temperature: float = 0.0
    """0 is greedy; > 0 samples (self-consistency)."""
    sample_seed: int = 0


@dataclass
class Ensemble:
    """Voters in rank order; accuracy is reported for the vote of the first k, each k in ks."""

    name: str
    voters: list[Voter]
    ks: tuple[int, ...] = (1,)
    info: dict = field(default_factory=dict)
    """Extra facts for the results (deviations, derived quantities)."""


@dataclass(frozen=True)
class NoConfig:
    """A method without settings."""


class Method:
    name: str = ""
    Config: type = NoConfig

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    def check(self, protocol) -> None:
        """Reject settings that cannot work with this protocol before any model is loaded."""

    def train(self, ctx) -> list[Ensemble]:
        raise NotImplementedError


def available_methods() -> list[str]:
    import methods

    return sorted(m.name for m in pkgutil.iter_modules(methods.__path__) if not m.name.startswith("_"))


def get_method(name: str) -> type[Method]:
    """`randopt` -> methods/randopt.py; `pkg.module` -> that module's METHOD."""
    module_name = name if "." in name else f"methods.{name}"
    if "." not in name and name not in available_methods():
        raise UserError(f"unknown method {name!r}; choose from {', '.join(available_methods())} "
                        "or pass a dotted module path that defines METHOD")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UserError(f"cannot import method module {module_name!r} ({exc}); "
                        "check the dotted path and that it is on PYTHONPATH") from None
    method = getattr(module, "METHOD", None)
    if not (isinstance(method, type) and issubclass(method, Method)):
        raise UserError(f"method module {module_name!r} defines no METHOD (a harness.method.Method subclass)")
    return method
