"""iterative_randopt: search around the model, sample the best members, keep their correct
answers, distil them into ONE model with LoRA; search again around that model.

Algorithm (Gan & Isola's iterative RandOpt; docs/paper.md section 7). Round r, around the
current model theta_r (theta_1 = the base):
  1. search: N perturbations theta_r + sigma * eps(seed) plus theta_r itself, each scored by
     mean train reward (greedy; RandOpt's sample_members / rank and the harness's scoring);
     the top K are kept;
  2. rollouts: S samples per question from each kept member (temperature 1.0, top_p 0.95);
  3. rejection: per question up to M distinct correct traces, those whose answer is the
     question's majority answer first, then shorter first (harness/services/distil.py);
  4. distil: LoRA SFT (TRL's SFTTrainer, plain cross-entropy on the completions) from the
     ORIGINAL base on the union of every round's traces, deduplicated;
     theta_{r+1} = base + that LoRA's merged delta.
Every round's model is a row ("iterative_randopt r<r>", the last one the headline), answered
greedily like ES/GRPO/PPO: one generation per test item. rounds=1 is "RandOpt + distil".

Faithful to the authors' code (github.com/sunrainyg/RandOpt: pipeline.py, rejection.py,
stages/): the defaults below (4 rounds, N=30, sigma=1e-3, K=8, S=16, M=8, LoRA rank 192 /
alpha 384 / dropout 0.05 on every linear layer, lr 1e-4, cosine schedule after 10% warm-up,
2 epochs, effective batch 1024, SFT from the base on the cumulative deduplicated traces),
the selection rule, and majority votes over every sample (duplicates included).
Deviations (each also in info["deviations"], built by `deviations()`):
- presets shrink N, K, S, M, the LoRA rank/alpha and the batch for CPU (with the shared
  n_train and max_new_tokens);
- members are scored on the shared n_train items by mean task reward (authors: 256
  questions, by accuracy: the same where the reward is correctness);
- rollouts go over the same n_train items by default (authors: the whole train split,
  `train_items=full`);
- the unperturbed model is a top-K candidate, as docs/paper.md section 7 says; the released
  search scores it for reference only (`base_candidate=false`);
- the number of rounds follows from the FLOP budget; every round is reported, the last as
  the headline (the authors keep the round with the best test accuracy, a selection on
  the test split);
- traces are re-tokenized from their decoded text (authors: the sampled token ids), and the
  S samples per question are S generation passes, each processing (and charging) the prompt;
- float32 without gradient checkpointing on CPU (authors: bf16, gradient checkpointing).
The authors' 'continual' variant (SFT warm-started from the last round) is not offered.

Compute (ledger): the search and the rollouts are forward passes over the tokens processed
(2P each); SFT charges every trace token (prompt and completion, each epoch) through a
forward of base and adapters, 2(P + T), and a LoRA backward, 2(P + T) + 2T (T = adapter
weights). A round starts only if its worst case fits the budget (every generation
max_new_tokens long, M new traces on every question), so a started round always finishes.

Persistence (this method's folder): r<r>-members.rank*.jsonl (scored members),
r<r>-rollouts.rank*.jsonl (one line per member and sample), r<r>-traces.json (the round's
kept traces), r<r>-checkpoints/ (TRL, while training), r<r>-adapter/ (peft's files and
sft.json, renamed into place when finished). A killed run replays finished units (charging
them again) and resumes the unfinished one.

Run: `make compare TASK=arith METHODS=base,iterative_randopt` or
     `thicket compare --task gsm8k --methods iterative_randopt --set iterative_randopt.rounds=1`.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.runs import distributed as dist, progress
from harness.budget.compute import paper_population_flops
from harness.context import Member
from harness.services.distil import (Sample, finished_adapter, lora_config, merge_traces, select_all, sft_examples,
                            train_lora)
from harness.errors import UserError
from harness.method import Ensemble, Method, Voter
from harness.engine.perturb import NOISE_MODES
from harness.budget.plan import Work, no_unit_error
from harness.runs.results import write_json
from harness.task import checked_rewards
from harness.runs.units import run_units
from methods._trl import (TRAIN_ITEMS, Pass, charge, common_args, flops_per_token, lora_params,
                          micro_per_process, policy_copy, training_prompts)
from methods.randopt import rank, sample_members

NAME = "iterative_randopt"
AUTHORS = {"population": 30, "top_k": 8, "samples": 16, "max_traces": 8, "batch_size": 1024, "lora_rank": 192,
           "lora_alpha": 384}
PAPER_FORMULA = ("per round 2*(N+1)*D*P*L (search) + 2*K*S*Q*P*L (rollouts) + 6*E*M_r*P*L (SFT: forward 2, "
                 "backward 4 per token; M_r traces, E epochs); D search items, Q rollout items, "
                 "L = mean prompt tokens + max_new_tokens; summed over rounds up to the row's")


@dataclass(frozen=True)
class Config:
    rounds: int = 4
    """Search -> rollouts -> distil rounds, at most (authors: 4); the FLOP budget may stop earlier."""
    population: int = 30
    """N: perturbations scored per round, besides the unperturbed model (authors: 30)."""
    sigma: float = 1e-3
    """Perturbation scale (authors: 1e-3)."""
    top_k: int = 8
    """K: members whose samples are distilled (authors: 8)."""
    base_candidate: bool = True
    """The unperturbed model may be among the top K (docs/paper.md section 7); the authors'
    released search scores it for reference only (false)."""
    noise: str = "iid"
    """`iid` or `released`, as in randopt."""
    samples: int = 16
    """S: samples per question from each kept member (authors: 16)."""
    temperature: float = 1.0
    """Rollout sampling temperature (authors: 1.0)."""
    top_p: float = 0.95
    """Rollout nucleus (authors: 0.95)."""
    max_traces: int = 8
    """M: distinct correct traces kept per question per round (authors: 8)."""
    cumulative: bool = True
    """SFT on the union of every round's traces (authors: true); false: this round's only."""
    train_items: str = "selection"
    """Rollout questions: `selection`, the n_train items every method shares; `full`, the whole
    train split (the authors')."""
    lora_rank: int = 192
    """LoRA rank on every linear layer but the output head (authors: 192)."""
    lora_alpha: int = 384
    """LoRA alpha (authors: 2 x rank)."""
    lora_dropout: float = 0.05
    """LoRA dropout (authors: 0.05)."""
    learning_rate: float = 1e-4
    """AdamW learning rate, cosine decay after warm-up (authors: 1e-4)."""
    warmup: float = 0.1
    """Warm-up, a fraction of the optimizer steps (authors: 0.1)."""
    epochs: int = 2
    """Passes over the traces per round (authors: 2)."""
    batch_size: int = 1024
    """Traces per optimizer step, the effective batch (authors: 1024)."""
    micro_batch: int = 8
    """Traces per forward/backward; gradients accumulate to batch_size (memory only)."""
    save_every: int = 10
    """Optimizer steps between SFT checkpoints (a killed run resumes from the last whole one)."""

    def __post_init__(self):
        for name in ("rounds", "population", "top_k", "samples", "max_traces", "lora_rank", "lora_alpha",
                     "epochs", "batch_size", "micro_batch", "save_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{NAME}.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("sigma", "temperature", "learning_rate"):
            if getattr(self, name) <= 0:
                raise UserError(f"{NAME}.{name} must be > 0, got {getattr(self, name)}")
        if not (0 < self.top_p <= 1 and 0 <= self.warmup < 1 and 0 <= self.lora_dropout < 1):
            raise UserError(f"{NAME}: top_p must be in (0, 1], warmup and lora_dropout in [0, 1)")
        if self.top_k > self.population + self.base_candidate:
            raise UserError(f"{NAME}.top_k={self.top_k} is more than the {self.population + self.base_candidate} "
                            "candidates; lower top_k or raise population")
        if self.noise not in NOISE_MODES:
            raise UserError(f"noise mode {self.noise!r}; choose one of {', '.join(NOISE_MODES)}")
        if self.train_items not in TRAIN_ITEMS:
            raise UserError(f"{NAME}.train_items {self.train_items!r}; choose one of {', '.join(TRAIN_ITEMS)}")


@dataclass
class Stages:
    """What every round shares: the rollout questions and the worst-case cost of each stage."""

    items: list
    prompt_ids: list[list[int]]
    mean_prompt: float
    """Mean prompt tokens of the rollout questions (the paper formula's L)."""
    passes: list[Pass]
    """What one SFT token goes through."""
    search: float
    rollouts: float
    slot: float
    """Worst-case SFT FLOPs of one more trace on every question (all epochs)."""
    batches: list | None = None
    """The rollout questions as engine batches (set when training starts)."""

    def tokens(self, tokenizer, traces: list[Sample]) -> int:
        """Tokens of one SFT pass over `traces` (prompts and completions)."""
        return sum(map(len, sft_examples(tokenizer, self.prompt_ids, traces)["input_ids"]))

    def sft(self, cfg: Config, tokens: int) -> float:
        """FLOPs of fine-tuning on `tokens` tokens for every epoch."""
        return cfg.epochs * tokens * flops_per_token(self.passes)


def stages(sizing, cfg: Config) -> Stages:
    """Each stage's worst case from the sizing alone (no weights): search, rollouts, one trace slot."""
    prompts = training_prompts(sizing, cfg.train_items, 1, NAME)
    P, T = sizing.n_params, lora_params(sizing.model, cfg.lora_rank)
    passes = [Pass("forward", P + T, "SFT forward through base and adapters"),
              Pass("backward", P + T, "SFT backward, LoRA weights' gradients", T)]
    longest = sum(len(ids) + sizing.max_new_tokens + 1 for ids in prompts.ids)  # + the EOS SFT appends
    rollout_pass = 2.0 * P * (prompts.total + len(prompts.ids) * sizing.max_new_tokens)
    return Stages(prompts.items, prompts.ids, prompts.mean_len, passes,
                  search=(cfg.population + 1) * sizing.worst_pass_flops,
                  rollouts=cfg.top_k * cfg.samples * rollout_pass,
                  slot=cfg.epochs * longest * flops_per_token(passes))


def round_members(seed: int, r: int, cfg: Config) -> list[Member]:
    """Index 0 is the unperturbed model (sigma 0), then RandOpt's draws for this round."""
    drawn = sample_members([seed, r], cfg.population, (cfg.sigma,), cfg.noise)
    return [Member(0, 0, 0.0, cfg.noise)] + [dataclasses.replace(m, index=m.index + 1) for m in drawn]


def sample_seed(seed: int, r: int, member: int, sample: int) -> int:
    return int(np.random.SeedSequence([seed, r, member, sample]).generate_state(1)[0])


def guaranteed_rounds(cfg: Config, plan: Stages, budget: float | None) -> int:
    """Rounds the budget affords even in the worst case (every trace slot filled each round)."""
    spent, rounds = 0.0, 0
    for r in range(1, cfg.rounds + 1):
        spent += plan.search + plan.rollouts + cfg.max_traces * plan.slot * (r if cfg.cumulative else 1)
        if budget is not None and spent > budget:
            break
        rounds = r
    return rounds


def deviations(cfg: Config, n_search: int, n_rollout: int) -> list[str]:
    out = []
    changed = {k: getattr(cfg, k) for k, v in AUTHORS.items() if getattr(cfg, k) != v}
    if changed:
        out.append("preset sizes " + ", ".join(f"{k}={v} (authors: {AUTHORS[k]})" for k, v in changed.items()))
    out.append(f"members scored on the shared {n_search} train items by mean task reward (authors: 256 questions, "
               "by accuracy; the same where the reward is correctness)")
    if cfg.train_items == "selection":
        out.append(f"rollouts over the same {n_rollout} items (authors: the whole train split; train_items=full)")
    if cfg.base_candidate:
        out.append("the unperturbed model is a top-K candidate as docs/paper.md section 7 says; the authors' "
                   "released search scores it for reference only (base_candidate=false)")
    out += ["rounds: as many as the FLOP budget affords (up to `rounds`), each started only if its worst case fits; "
            "every round is reported, the last as headline (the authors keep the round with the best TEST accuracy)",
            "traces re-tokenized from their decoded text (authors: the sampled token ids); each of the S samples is "
            "its own generation pass, so the prompt is processed and charged S times (vLLM's n=S shares it)",
            "float32 without gradient checkpointing on CPU (authors: bf16 with gradient checkpointing)"]
    return out


class IterativeRandOpt(Method):
    Config = Config

    def plan(self, sizing) -> Work:
        """The rounds the budget affords in the worst case (every trace slot filled each round)."""
        cfg = self.config
        st = stages(sizing, cfg)
        sure = guaranteed_rounds(cfg, st, sizing.budget_flops)
        if sure < 1:
            raise no_unit_error(NAME, "round", st.search + st.rollouts + cfg.max_traces * st.slot,
                                sizing.budget_flops, "lower population, top_k, samples or max_traces")
        search = (cfg.population + 1) * len(sizing.train_items)
        rollouts = cfg.top_k * cfg.samples * len(st.items)
        sft = sum(cfg.max_traces * st.slot * (r if cfg.cumulative else 1) for r in range(1, sure + 1))
        return Work(sizes={"rounds": sure, "N": cfg.population, "K": cfg.top_k, "S": cfg.samples},
                    train_flops=sure * (st.search + st.rollouts) + sft,
                    generated_sequences=sure * (search + rollouts), update_flops=sft, test_generations=sure,
                    note=f"rounds sure in the worst case (up to {cfg.rounds}); one model per round, one generation "
                         "per test item each")

    def train(self, ctx) -> list[Ensemble]:
        cfg = self.config
        plan = stages(ctx.sizing, cfg)
        sure = self.plan(ctx.sizing).sizes["rounds"]
        plan.batches = ctx.train_batches if cfg.train_items == "selection" else ctx.engine.prepare(
            ctx.sizing.prompts(cfg.train_items).texts)
        micro = micro_per_process(cfg.batch_size, cfg.micro_batch, dist.world(), NAME)
        dist.say(f"{NAME}: up to {cfg.rounds} rounds ({sure} sure in the worst case); search N={cfg.population} + "
                 f"unperturbed, sigma={cfg.sigma}, on {len(ctx.train_items)} items; K={cfg.top_k} x S={cfg.samples} "
                 f"samples on {len(plan.items)} items; M={cfg.max_traces} traces; LoRA r={cfg.lora_rank}, "
                 f"batch {cfg.batch_size} (micro {micro}), {cfg.epochs} epochs; worst case per round: search "
                 f"{plan.search:.3g}, rollouts {plan.rollouts:.3g}, SFT {cfg.max_traces * plan.slot:.3g} per round of "
                 f"traces; budget {ctx.ledger.budget}")
        original = ctx.perturber.base_snapshot()
        try:
            return self._rounds(ctx, plan, original, micro)
        finally:  # compare.py restores the base too; a direct caller gets its model back as well
            ctx.perturber.reset_to(original)

    def _rounds(self, ctx, plan: Stages, original, micro: int) -> list[Ensemble]:
        cfg = self.config
        ensembles, union, paper = [], [], 0.0
        for r in range(1, cfg.rounds + 1):
            known = plan.sft(cfg, plan.tokens(ctx.tokenizer, union)) if cfg.cumulative else 0.0
            need = plan.search + plan.rollouts + known + cfg.max_traces * plan.slot
            if not self._affords(ctx, need, f"round {r}"):
                break
            members, scores, kept = self._search(ctx, r)
            samples, accuracy = self._rollouts(ctx, plan, r, kept)
            traces = select_all(samples, cfg.max_traces)
            union = merge_traces(union, traces) if cfg.cumulative else traces
            if not union:
                if not ensembles:
                    raise UserError(f"{NAME}: round {r} sampled no correct answer, so there is nothing to distil; "
                                    "raise samples or top_k, or use a task the model sometimes solves")
                dist.say(f"{NAME}: round {r} kept no trace; stopping")
                break
            if not self._affords(ctx, plan.sft(cfg, plan.tokens(ctx.tokenizer, union)), f"round {r}'s SFT"):
                break
            self._write_traces(ctx, plan, r, traces)
            adapter, record = self._distil(ctx, r, sft_examples(ctx.tokenizer, plan.prompt_ids, union), original, micro)
            charge(ctx.ledger, plan.passes, record["tokens"])
            centre(ctx, original, adapter)
            paper += self._paper_flops(ctx, plan, len(union))
            ctx.record_curve(r, train_reward=float(np.mean([scores[m.index] for m in kept])), best_member=max(scores),
                             centre=scores[0], rollout_accuracy=accuracy, traces=len(union))
            info = {"round": r, "final": False, "round_traces": len(traces), "traces": len(union),
                    "sft_tokens": record["tokens"], "sft_steps": record["steps"], "paper_train_flops": paper,
                    "train_flops_at_row": ctx.ledger.train, **self._facts(ctx, plan)}
            ensembles.append(Ensemble(f"{NAME} r{r}", [Voter(f"r{r}", adapter=str(adapter))], ks=(1,), info=info))
            dist.say(f"{NAME}: round {r} done: kept {len(traces)} traces ({len(union)} in all), "
                     f"SFT {record['steps']} steps, train FLOPs {ctx.ledger.train:.3g}")
        if ensembles:
            ensembles[-1].info["final"] = True
        return ensembles

    def _facts(self, ctx, plan: Stages) -> dict:
        """What every round's row states besides its own figures."""
        cfg = self.config
        return {"population": cfg.population, "top_k": cfg.top_k, "samples": cfg.samples,
                "max_traces": cfg.max_traces, "paper_formula": PAPER_FORMULA,
                "sft_passes": [f"{p.kind}: {p.why}" for p in plan.passes],
                "deviations": deviations(cfg, len(ctx.train_items), len(plan.items))}

    def _affords(self, ctx, flops: float, what: str) -> bool:
        if ctx.ledger.affords(flops):
            return True
        dist.say(f"{NAME}: stopping before {what}: it may cost {flops:.3g} FLOPs, more than the "
                 f"{ctx.ledger.remaining():.3g} left")
        return False

    def _search(self, ctx, r: int):
        """Score the unperturbed model and N perturbations around it; the top K in rank order."""
        cfg = self.config
        members = round_members(ctx.protocol.seed, r, cfg)
        scores = ctx.score_population(members, f"r{r}-members")
        order = [i for i in rank(scores) if cfg.base_candidate or i != 0]
        return members, scores, [members[i] for i in order[:cfg.top_k]]

    def _rollouts(self, ctx, plan: Stages, r: int, kept: list[Member]) -> tuple[list[Sample], float]:
        """S samples per question from each kept member, one resumable unit per (member, sample)."""
        cfg, task = self.config, ctx.task
        units = [(j, s) for j in range(len(kept)) for s in range(cfg.samples)]

        def work(unit) -> dict:
            member = kept[unit[0]]
            ctx.perturber.apply(member.seed, member.sigma, member.noise)
            try:
                with progress.items(len(plan.items), "rollout items") as advance:
                    outs = ctx.engine.generate(plan.batches, ctx.max_new_tokens, cfg.temperature,
                                               sample_seed(ctx.protocol.seed, r, member.index, unit[1]), cfg.top_p,
                                               progress=advance)
            finally:
                ctx.perturber.restore()
            texts = [o.text for o in outs]
            keys = [task.vote_key(t, it) for t, it in zip(texts, plan.items)]
            correct = [bool(c) for c in task.are_correct(keys, plan.items)]
            rewards = checked_rewards(task, texts, plan.items)
            return {"member": member.index, "sample": unit[1], "keys": keys, "correct": correct,
                    "texts": [t if c else None for t, c in zip(texts, correct)],  # only kept ones need the text
                    "new_tokens": [o.new_tokens for o in outs], "reward": float(np.mean(rewards)),
                    "tokens": sum(o.prompt_tokens + o.new_tokens for o in outs)}

        done = run_units(units, lambda u: u[0] * cfg.samples + u[1], work, ctx.out_dir, f"r{r}-rollouts",
                         desc=f"round {r} rollouts")
        records = [done[j * cfg.samples + s] for j, s in units]
        ctx.ledger.forward(sum(rec["tokens"] for rec in records), "train")
        samples = [Sample(i, rec["texts"][i], rec["keys"][i], rec["correct"][i], rec["new_tokens"][i])
                   for rec in records for i in range(len(plan.items))]
        return samples, float(np.mean([s.correct for s in samples]))

    def _write_traces(self, ctx, plan: Stages, r: int, traces: list[Sample]) -> None:
        """This round's kept traces, for reading (the run itself recomputes them from the rollouts)."""
        if dist.is_main():
            rows = [{"item": plan.items[t.item].id, "key": t.key, "tokens": t.tokens, "text": t.text} for t in traces]
            write_json(ctx.out_dir / f"r{r}-traces.json", rows)

    def _distil(self, ctx, r: int, examples: dict, original, micro: int) -> tuple[Path, dict]:
        """LoRA SFT from the ORIGINAL base on `examples`, or the finished adapter of an earlier run."""
        cfg = self.config
        adapter = ctx.out_dir / f"r{r}-adapter"
        record = finished_adapter(adapter)
        if record is not None:
            return adapter, record
        ctx.perturber.reset_to(original)
        args = {**common_args(ctx, cfg, ctx.protocol.seed), "output_dir": str(ctx.out_dir / f"r{r}-checkpoints"),
                "lr_scheduler_type": "cosine", "warmup_steps": cfg.warmup, "num_train_epochs": cfg.epochs,
                "per_device_train_batch_size": micro,
                "gradient_accumulation_steps": cfg.batch_size // (micro * dist.world()), "save_steps": cfg.save_every}
        record = train_lora(policy_copy(ctx), copy.deepcopy(ctx.tokenizer), examples, args,
                            lora_config(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout), adapter)
        return adapter, record

    def _paper_flops(self, ctx, plan: Stages, traces: int) -> float:
        cfg, P = self.config, ctx.ledger.n_params
        seq_search = ctx.sizing.prompts().mean_len + ctx.max_new_tokens
        seq_rollout = plan.mean_prompt + ctx.max_new_tokens
        return (paper_population_flops(1, cfg.population + 1, len(ctx.train_items), P, seq_search)
                + paper_population_flops(1, cfg.top_k * cfg.samples, len(plan.items), P, seq_rollout)
                + 6.0 * cfg.epochs * traces * P * seq_rollout)


def centre(ctx, original, adapter: Path) -> None:
    """Make base + the adapter's merged delta the perturber's base: the next search centres on it."""
    ctx.perturber.reset_to(original)
    ctx.perturber.add_adapter(str(adapter))
    ctx.perturber.rebase()


METHOD = IterativeRandOpt
