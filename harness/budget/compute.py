"""The compute ledger: FLOPs counted from the tokens each method actually processed.

Convention (docs/paper.md section 4): a token through a forward pass costs 2P FLOPs, through a
backward pass 4P more (P = parameter count): 2P for the gradient flowing back through every
weight, 2P for the weights' own gradients. When only T of the weights train (LoRA: T = the
adapters), a backward pass costs 2P + 2T. Tokens are the real prompt and generated
tokens (up to and including EOS); padding is not charged. Training and test-time FLOPs are
kept apart, and never mixed into one number.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Ledger:
    n_params: int
    """P: parameters of the policy model (a tied embedding counted once)."""
    budget: float | None = None
    """Training FLOP budget; None means unlimited."""
    train: float = 0.0
    test: float = 0.0
    tokens: dict = field(default_factory=lambda: {"train_forward": 0, "train_backward": 0, "test_forward": 0})

    def forward(self, n_tokens: int, phase: str = "train", n_params: int | None = None) -> None:
        """Charge a forward pass over n_tokens (2P each) to `phase` ("train" or "test")."""
        self._add(phase, 2 * (n_params or self.n_params) * n_tokens)
        self.tokens[f"{phase}_forward"] += n_tokens

    def backward(self, n_tokens: int, n_params: int | None = None, trainable: int | None = None) -> None:
        """Charge a backward pass over n_tokens (2P + 2T each, T = trainable weights, default P); training only."""
        self._add("train", backward_flops_per_token(n_params or self.n_params, trainable) * n_tokens)
        self.tokens["train_backward"] += n_tokens

    def generation(self, completions, phase: str = "train") -> None:
        """Charge a batch of generated completions: every prompt and new token, forward."""
        self.forward(sum(c.prompt_tokens + c.new_tokens for c in completions), phase)

    def _add(self, phase: str, flops: float) -> None:
        if phase == "train":
            self.train += flops
        elif phase == "test":
            self.test += flops
        else:
            raise ValueError(f"phase {phase!r}")

    def remaining(self) -> float:
        return float("inf") if self.budget is None else self.budget - self.train

    def affords(self, flops: float) -> bool:
        """Whether the next unit of work, estimated at `flops`, still fits the budget."""
        return flops <= self.remaining()

    def as_dict(self) -> dict:
        return {"n_params": self.n_params, "budget_flops": self.budget, "train_flops": self.train,
                "test_flops": self.test, "tokens": dict(self.tokens)}


def backward_flops_per_token(n_params: int, trainable: int | None = None) -> int:
    """2P to carry the gradient back through every weight, 2T for the T trainable weights' own
    gradients: 4P when every weight trains."""
    return 2 * n_params + 2 * (n_params if trainable is None else trainable)


# ---- the paper's closed-form training FLOPs (docs/paper.md section 4), reported beside the ledger ----
# L is the sequence length: mean prompt tokens + max new tokens (an upper bound, as in the paper).

def paper_population_flops(iterations: int, population: int, n_items: int, n_params: int, seq_len: float) -> float:
    """ES / RandOpt: 2*T*N*D*P*L (forward passes only)."""
    return 2.0 * iterations * population * n_items * n_params * seq_len


def paper_grpo_flops(steps: int, batch: int, group: int, n_params: int, seq_len: float) -> float:
    """GRPO: 8*T*B*G*P*L (policy forward 2 + reference forward 2 + backward 4)."""
    return 8.0 * steps * batch * group * n_params * seq_len


def paper_ppo_flops(steps: int, batch: int, group: int, n_params: int, seq_len: float) -> float:
    """PPO: 14*T*B*G*P*L (GRPO's 8 plus critic forward 2 and backward 4)."""
    return 14.0 * steps * batch * group * n_params * seq_len
