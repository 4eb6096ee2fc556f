"""The method contract and registry.

A method is one file `methods/<name>.py` defining `METHOD`, a `Method` subclass with a frozen
`Config` dataclass. It trains with a `TrainContext` (train items, generation engine,
perturber, ledger; never the test split) and returns `Ensemble`s: lists of `Voter`s that the
harness evaluates on the test split through the one extract -> vote -> correct path.
A dotted path (`mypkg.mymethod`) loads a method module from outside the repository.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass, field

from harness.config import as_dict, method_config
from harness.errors import UserError


# What `make compare` / `thicket compare` runs when no METHODS are named.
DEFAULT_METHODS = ("base", "self_consistency", "randopt", "es", "grpo", "ppo")


@dataclass(frozen=True)
class Voter:
    """How to set the model up for one vote: base or trained weights, an optional LoRA adapter,
    then an optional perturbation, then an optional fold of perturbations, then greedy or
    sampled decoding.

    A perturbed member is (seed, sigma, noise): a few bytes that regenerate its weights. A fold
    (a soup or reward fold of RandOpt's members) is its recipe, `noise_sum` and `noise_scale`:
    theta + noise_scale * sum_i c_i * eps(seed_i), rebuilt by `Weights.add_noise_sum` for every
    evaluation (never a weights file: at 7B one copy is 14 GB), bit for bit the same each time.
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
    noise_sum: tuple[tuple[int, float, str], ...] = ()
    """A fold's terms (seed, coefficient, noise mode), added after `seed`'s perturbation; () is none."""
    noise_scale: float = 1.0
    """The factor on the fold's sum (a soup of K members: 1/K)."""


@dataclass
class Ensemble:
    """Voters in rank order; accuracy is reported for the vote of the first k, each k in ks."""

    name: str
    voters: list[Voter]
    ks: tuple[int, ...] = (1,)
    info: dict = field(default_factory=dict)
    """Extra facts for the results (deviations, derived quantities)."""
    label: str | None = None
    """Table label of a single-model ensemble (ks == (1,)); None: its name. Lets a name stay
    file- and key-safe (`randopt_soup_k5`) while the table says `randopt_soup K=5`."""


@dataclass(frozen=True)
class NoConfig:
    """A method without settings."""


class Method:
    """A method is named by its file (or dotted path); a `name` attribute, if any, must match."""

    Config: type = NoConfig

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    def check(self, protocol) -> None:
        """Reject settings that cannot work with this protocol before any model is loaded."""

    def plan(self, sizing):
        """Sizes derived from the budget (`harness.budget.plan.Work`), before any weights load; raise a
        UserError when the budget affords no unit of work. None: this method cannot say."""
        return None

    def reference_budget(self, sizing) -> float:
        """The training budget this method defines when it is the comparison's reference
        (`harness.budget.plan.REFERENCE_METHOD`, RandOpt): what every method may spend by default."""
        raise NotImplementedError(f"{type(self).__name__} defines no reference budget")

    def train(self, ctx) -> list[Ensemble]:
        raise NotImplementedError


def available_methods() -> list[str]:
    package = importlib.import_module("methods")  # by name: harness imports no plugin module

    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def get_method(name: str) -> type[Method]:
    """`randopt` -> methods/randopt.py; `pkg.module` -> that module's METHOD."""
    module_name = name if "." in name else f"methods.{name}"
    if "." not in name and name not in available_methods():
        raise UserError(f"unknown method {name!r}; choose from {', '.join(available_methods())} "
                        "or pass a dotted module path that defines METHOD")
    module = import_plugin(module_name, "method")
    method = getattr(module, "METHOD", None)
    if not (isinstance(method, type) and issubclass(method, Method)):
        raise UserError(f"method module {module_name!r} defines no METHOD (a harness.method.Method subclass)")
    short = module_name.rpartition(".")[2]
    declared = method.__dict__.get("name")
    if declared is not None and declared != short:
        raise UserError(f"method module {module_name!r}: its class says name={declared!r}, but a method is "
                        f"named by its file; remove the name attribute or rename it to {short!r}")
    return method


def method_module(name: str):
    """A method's module by name, for code that needs more of it than its METHOD (the density
    analysis draws RandOpt's members with `sample_members`)."""
    get_method(name)
    return import_plugin(name if "." in name else f"methods.{name}", "method")


def method_name(name: str) -> str:
    """The name a method's rows and folders carry: its file name (`pkg.mymethod` -> `mymethod`)."""
    return name.rpartition(".")[2]


def import_plugin(module_name: str, kind: str):
    """Import a method or task module; every way that can fail is one line naming the cause."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and not module_name.startswith(exc.name) and exc.name != module_name:
            raise UserError(f"{kind} module {module_name!r} failed to import: it needs {exc.name!r}, which is not "
                            "installed (No module named " + repr(exc.name) + ")") from None
        raise UserError(f"cannot import {kind} module {module_name!r} ({exc}); "
                        "check the dotted path and that it is on PYTHONPATH") from None
    except SyntaxError as exc:
        raise UserError(f"{kind} module {module_name!r} has a syntax error: {exc.msg} "
                        f"({exc.filename}, line {exc.lineno}); fix the file") from None
    except UserError:
        raise
    except Exception as exc:  # an error while the module runs its top level
        raise UserError(f"{kind} module {module_name!r} failed to import: {type(exc).__name__}: {exc}") from None


def resolve(protocol, methods, settings: dict) -> tuple[dict, dict]:
    """Method instances and the fully resolved config; every bad name or value fails here, early."""
    classes = {name: get_method(name) for name in methods}
    strangers = [k for k in settings if "." in k and k.rpartition(".")[0] not in classes]
    if strangers:
        raise UserError(f"--set {strangers[0]}: {strangers[0].rpartition('.')[0]!r} is not a method of this run; "
                        f"the run has {', '.join(classes)}")
    configs = {name: method_config(cls.Config, name, protocol.budget, settings) for name, cls in classes.items()}
    known = {f.name for c in configs.values() for f in dataclasses.fields(c)}
    unknown = [k for k in settings if "." not in k and k not in known]
    if unknown:
        raise UserError(f"setting {unknown[0]!r} matches no field of {', '.join(classes)}; "
                        f"known: {', '.join(sorted(known)) or 'none'}")
    config = {"protocol": as_dict(protocol), "methods": {n: as_dict(c) for n, c in configs.items()}}
    plugins = {n: classes[n](configs[n]) for n in classes}
    for plugin in plugins.values():
        plugin.check(protocol)
    return plugins, config
