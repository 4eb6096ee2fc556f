"""The engine interface: what every generation engine does for the harness.

An engine owns one model's weights on its device and generates with them. Everything the
harness and the methods generate (member scoring, self-consistency samples, ES populations,
iterative RandOpt's rollouts, the test evaluation of every row) goes through `Engine.generate`,
and every change of weights (a member's perturbation, an ES update, a trained model, a LoRA
adapter) through `Engine.weights`. A second engine implements these two protocols and plugs in
without touching methods/.

Rules every implementation keeps, so that rows stay comparable across engines:
- prompts are the strings `render` makes (chat template for instruct models), tokenized without
  special tokens; `Completion.prompt_tokens` and `new_tokens` count exactly those prompt tokens
  and the generated tokens up to and including EOS, which is what the ledger charges;
- decoding stops at EOS or `max_new_tokens`; temperature 0 is greedy;
- a member (seed, sigma, noise mode) gives the same weights as `harness.engine.perturb` defines
  them (noise drawn per Hugging Face parameter, in `named_parameters` order);
- `restore` returns the exact base weights (a copy, never a subtraction of noise).

The native engine (`harness.engine.native.NativeEngine`) is the first implementation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence, runtime_checkable


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int  # non-pad prompt tokens of the full prompt (a shared prefix counts for every item)
    new_tokens: int  # generated tokens up to and including EOS
    token_ids: tuple[int, ...] = field(default=(), repr=False)  # those generated tokens


def render(tokenizer, messages) -> str:
    """Chat template when the tokenizer has one (instruct models), else the plain contents."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages)


NoiseTerm = tuple[int, float, str]
"""(seed, coefficient, noise mode): one term c * eps(seed) of a weighted sum of perturbations."""


@runtime_checkable
class Weights(Protocol):
    """The engine's weights: a base, and members or trained models applied on top of it."""

    @property
    def n_params(self) -> int:
        """Distinct parameters (a tied embedding once): the P of the ledger's 2P per token."""

    @property
    def dirty(self) -> bool:
        """True when the weights differ from the base."""

    def apply(self, seed: int, sigma: float, mode: str) -> None:
        """theta <- base + sigma * eps(seed) in noise mode `mode` (`iid` or `released`)."""

    def add_noise(self, seed: int, sigma: float, mode: str) -> None:
        """theta <- theta + sigma * eps(seed), on top of the current weights."""

    def add_noise_sum(self, terms: Sequence[NoiseTerm], scale: float) -> None:
        """theta <- theta + scale * sum_i c_i * eps(seed_i), the sum accumulated in float32 per
        parameter (the ES update; a fold of several members)."""

    def restore(self) -> None:
        """theta <- base, exactly."""

    def rebase(self) -> None:
        """Adopt the current weights as the new base (after an ES update)."""

    def base_snapshot(self) -> Any:
        """A handle on the current base, for `reset_to` (no copy of the weights)."""

    def reset_to(self, snapshot: Any) -> None:
        """Make `snapshot` the base again and restore it (a method that moved the base is undone)."""

    def load_file(self, path: str) -> None:
        """theta <- the weights `save_file` wrote (restorable like a member)."""

    def save_file(self, path: str) -> None:
        """Save the current weights, keyed by Hugging Face parameter name, for a later `load_file`."""

    def add_adapter(self, path: str) -> None:
        """theta <- theta + a peft LoRA adapter's merged delta (restorable like a member)."""

    def dtypes(self) -> dict[str, Any]:
        """Every distinct parameter's dtype, by Hugging Face name, in parameter order (trained
        policies are saved under these names and dtypes)."""


@runtime_checkable
class Engine(Protocol):
    """Generates completions for a fixed list of prompts, many times (once per member)."""

    tokenizer: Any
    batch_size: int
    draft_members: bool
    """Member scoring passes the base model's greedy train completions as `draft` (an engine
    without drafts ignores them: its outputs must not depend on them)."""

    @property
    def weights(self) -> Weights:
        """The engine's weights (perturb, restore, load, save)."""

    @property
    def n_params(self) -> int:
        """Same as `weights.n_params`."""

    def prepare(self, prompts: list[str]) -> Any:
        """Tokenize rendered prompts once; the result is passed to `generate` as often as needed."""

    def generate(self, prepared: Any, max_new_tokens: int, temperature: float = 0.0, seed: int | None = None,
                 top_p: float = 1.0, progress: Callable[[int], None] | None = None,
                 draft: list[Completion] | None = None) -> list[Completion]:
        """Completions in the order the prompts were given to `prepare`, with the current weights.
        temperature 0: greedy; else sampling at `temperature` with nucleus `top_p` from a
        generator seeded with `seed`. `progress(n)` is called as n more items finish."""
