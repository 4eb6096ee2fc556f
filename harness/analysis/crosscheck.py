"""`thicket crosscheck RUN_DIR`: re-score a finished gsm8k run's single-model rows with lm-eval.

An independent check of our extract -> correct path: lm-eval's own `gsm8k` task decodes the
SAME test items with the same prompt (question + the harness's suffix, chat template, no
few-shot), greedy, the same max new tokens, on the same weights (base, the final ES theta,
the GRPO/PPO policy), and its `flexible-extract` correctness is compared item by item with
the harness's stored per-item correctness. Disagreements are listed with both answers.
`--no-model` skips decoding: lm-eval's gsm8k filters and metric score the run's stored test
texts beside thicket's scorer (harness.analysis.agreement), in seconds.

Offline: the items go into a temporary JSON-lines file behind a task YAML
that includes lm-eval's gsm8k.yaml (copied next to it). With a data_dir the run's own gsm8k
test file is read; without one, openai/gsm8k from the Hub (needs the network).
Writes RUN_DIR/crosscheck.json (crosscheck-texts.json without a model) and prints a table.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from harness.analysis import agreement
from harness.analysis.rundir import read_checked
from harness.errors import UserError
from harness.runs.results import read_json, write_json
from harness.task import task_module

SINGLE_ROWS = ("base", "es", "grpo", "ppo")
TASK_NAME = "thicket_gsm8k_crosscheck"
FILTERS = ("flexible-extract", "strict-match")


def add_arguments(p) -> None:
    p.add_argument("run_dir", help="a finished run folder, results/gsm8k/<run>")
    p.add_argument("--rows", default=",".join(SINGLE_ROWS),
                   help="single-model rows to check (default: base,es,grpo,ppo, those present)")
    p.add_argument("--limit", type=int, default=None, help="check only the first N test items")
    p.add_argument("--no-model", action="store_true",
                   help="load no model: apply lm-eval's gsm8k filters and metric to the stored test texts "
                        "of every K=1 row (seconds); writes crosscheck-texts.json")


def run(args) -> int:
    labels = [r.strip() for r in args.rows.split(",") if r.strip()]
    if args.no_model:
        crosscheck_texts(Path(args.run_dir), args.limit)
    else:
        crosscheck(Path(args.run_dir), labels, args.limit)
    return 0


def crosscheck(run_dir: Path, labels: list[str], limit: int | None = None) -> dict:
    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    config = _run_config(run_dir)
    protocol = config["protocol"]
    unknown = sorted(set(labels) - set(SINGLE_ROWS))
    if unknown:
        raise UserError(f"--rows {','.join(unknown)}: only single-model rows can be checked "
                        f"({', '.join(SINGLE_ROWS)})")
    targets = find_targets(run_dir, config["seeds"], labels)
    if not targets:
        raise UserError(f"{run_dir} holds none of the rows {', '.join(labels)} (finished, with weights)")
    from harness.engine.model import load_model
    from harness.engine.perturb import Perturber

    model, tokenizer = load_model(protocol["model"], protocol.get("device", "cpu"))
    perturber = Perturber(model)
    max_new_tokens = min(protocol["max_new_tokens"], _task_max_new_tokens())
    out = []
    with tempfile.TemporaryDirectory(prefix="thicket-crosscheck-") as tmp:
        for seed, label, row, weights in targets:
            gold_votes = _predictions(run_dir / f"seed{seed}", label)
            n = len(row["correct"]) if limit is None else min(limit, len(row["correct"]))
            task_dir = write_task(Path(tmp), gsm8k_test_rows(protocol.get("data_dir"), n), max_new_tokens)
            perturber.restore()
            if weights:
                perturber.load_file(str(weights))
            samples = lm_eval_samples(model, tokenizer, task_dir, protocol["batch_size"])
            perturber.restore()
            result = agreement.compare_items(gold_votes[:n], row["correct"][:n], samples)
            out.append({"label": label, "seed": seed, "weights": str(weights) if weights else None,
                        "max_new_tokens": max_new_tokens, "prompts_identical": same_prompts(tokenizer, samples),
                        "responses_identical": same_responses(run_dir / f"seed{seed}" / label, label, samples),
                        **result})
    report = {"rows": out, "lm_eval_task": "gsm8k (0-shot, chat template, greedy)"}
    write_json(run_dir / "crosscheck.json", report)
    print("\n" + agreement.table(out) + "\n", flush=True)
    print(f"written: {run_dir / 'crosscheck.json'}", flush=True)
    return report


def crosscheck_texts(run_dir: Path, limit: int | None = None) -> dict:
    """No model: both scorers on the stored test texts of every K=1 row (its first voter's
    texts, which that row's vote is), item by item; writes crosscheck-texts.json."""
    from harness.analysis.rundir import load
    from harness.runs.units import read_records

    if limit is not None and limit < 1:
        raise UserError(f"--limit must be >= 1, got {limit}")
    config = _run_config(run_dir)
    run = load(run_dir)
    out = []
    for row in (r for r in run.rows if r["k"] == 1):
        record = read_records(run.seed_dir(row["seed"]) / row["method"], f"test-{row['name']}").get(0)
        if record is None or not isinstance(record.get("texts"), list):
            print(f"crosscheck: {row['label']} (seed {row['seed']}): no stored test texts, skipped", flush=True)
            continue
        n = len(record["texts"]) if limit is None else min(limit, len(record["texts"]))
        raw = gsm8k_test_rows(config["protocol"].get("data_dir"), n)
        items = _task_items(config["protocol"].get("data_dir"), n)
        result, correct = agreement.score_texts([it.id for it in items], record["texts"][:n], items,
                                                [r["answer"] for r in raw])
        # thicket's scorer on the texts must give the verdicts the run stored (else the texts are not the row's)
        stored = sum(a == b for a, b in zip(row.get("correct") or [], correct))
        out.append({"label": row["label"], "seed": row["seed"], "stored_verdicts_reproduced": stored, **result})
    report = {"rows": out, "lm_eval_task": "gsm8k filters and exact_match (lm-eval's gsm8k.yaml) on stored texts"}
    write_json(run_dir / "crosscheck-texts.json", report)
    print("\n" + agreement.table(out) + "\n", flush=True)
    print(f"written: {run_dir / 'crosscheck-texts.json'}", flush=True)
    return report


def _task_items(data_dir: str | None, n: int) -> list:
    from harness.task import get_task

    return get_task("gsm8k").load("test", data_dir)[:n]


def same_prompts(tokenizer, samples: list[dict]) -> int:
    """How many lm-eval prompts equal the harness's rendering of the same item (all, or we
    would be comparing two different prompts)."""
    from harness.engine.native import render
    SUFFIX = task_module("gsm8k").SUFFIX

    return sum(s["prompt"] == render(tokenizer, ({"role": "user", "content": s["question"] + SUFFIX},))
               for s in samples)


def same_responses(folder: Path, label: str, samples: list[dict]) -> int | None:
    """How many lm-eval responses equal the harness's stored text for the item (whitespace at
    the ends aside): a stricter check than the correctness agreement. None if not stored."""
    from harness.runs.units import read_records

    record = read_records(folder, f"test-{label}").get(0)
    if record is None:
        return None
    return sum(t.strip() == s["response"].strip() for t, s in zip(record["texts"], samples))


def _run_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    if not path.is_file():
        raise UserError(f"{path} not found; pass a run folder written by `thicket compare`")
    config = read_checked(path, dict)
    task = (config.get("protocol") or {}).get("task")
    if task != "gsm8k":
        raise UserError(f"crosscheck supports gsm8k runs only (lm-eval's gsm8k task); {run_dir} is {task!r}")
    return config


def _task_max_new_tokens() -> int:
    from harness.task import get_task

    return get_task("gsm8k").max_new_tokens


# ---- locating rows and their weights ------------------------------------------------------

def find_targets(run_dir: Path, seeds: list[int], labels: list[str]) -> list[tuple]:
    """(seed, label, row, weights path or None) for each finished row; missing ones are skipped."""
    targets = []
    for seed in seeds:
        for label in labels:
            rows_path = run_dir / f"seed{seed}" / label / "rows.json"
            if not rows_path.is_file():
                print(f"crosscheck: {label} (seed {seed}): no {rows_path}, skipped", flush=True)
                continue
            row = next((r for r in read_checked(rows_path, list) if isinstance(r, dict) and r.get("label") == label), None)
            weights = weights_path(rows_path.parent, label)
            if row is None or weights is False:
                why = "no single-model row" if row is None else "no trained weights file found"
                print(f"crosscheck: {label} (seed {seed}): {why} in {rows_path.parent}, skipped", flush=True)
                continue
            targets.append((seed, label, row, weights))
    return targets


def weights_path(folder: Path, label: str):
    """The weights a single-model row was evaluated with: None for base, False when not found.

    By the methods' conventions: ES moves theta.json to its last theta-<t>.safetensors; the
    TRL methods record theta in result.json (else <method>.safetensors or policy.safetensors).
    """
    if label == "base":
        return None
    if label == "es":
        pointer = folder / "theta.json"
        candidates = [folder / f"theta-{read_json(pointer)['iteration']:04d}.safetensors"] if pointer.is_file() else []
    else:
        result = folder / "result.json"
        candidates = [Path(read_json(result)["weights"])] if result.is_file() else []
        candidates += [folder / f"{label}.safetensors", folder / "policy.safetensors"]
    return next((p for p in candidates if p.is_file()), False)


def _predictions(seed_dir: Path, label: str) -> list[tuple[str, str, str]]:
    """(id, gold, harness vote) per test item, from the seed's predictions.jsonl."""
    path = seed_dir / "predictions.jsonl"
    if not path.is_file():
        raise UserError(f"{path} not found; the run's seed is unfinished (rerun `thicket compare`)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["id"], r["gold"], r["rows"][label]["vote"]) for r in rows]


# ---- lm-eval -----------------------------------------------------------------------------------

def gsm8k_test_rows(data_dir: str | None, n: int) -> list[dict]:
    """The raw first n gsm8k test rows (question, answer), as lm-eval would read them."""
    from harness.task import data_file, load_hub, read_jsonl

    if data_dir is None:
        rows = load_hub("openai/gsm8k", "main", "test")
    else:
        rows = read_jsonl(data_file(data_dir, "gsm8k", "test.jsonl"), ("question", "answer"))
    return [{"question": r["question"], "answer": r["answer"]} for r in rows[:n]]


def write_task(folder: Path, rows: list[dict], max_new_tokens: int) -> Path:
    """A task folder: lm-eval's gsm8k.yaml plus ours, which overrides data, prompt and decoding."""
    import lm_eval
    import yaml

    SUFFIX = task_module("gsm8k").SUFFIX

    task_dir = Path(tempfile.mkdtemp(dir=folder))
    shutil.copy(Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml", task_dir)
    items = task_dir / "items.jsonl"
    items.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = {"include": "gsm8k.yaml", "task": TASK_NAME, "dataset_path": "json", "dataset_name": None,
            # train is only there because gsm8k.yaml names a fewshot split; 0-shot never reads it
            "dataset_kwargs": {"data_files": {"train": str(items), "test": str(items)}},
            "doc_to_text": "{{question}}" + SUFFIX, "num_fewshot": 0,
            # the harness stops on EOS only: no "Question:" stop string (lm-eval adds EOS itself)
            "generation_kwargs": {"until": [], "do_sample": False, "max_gen_toks": max_new_tokens}}
    (task_dir / f"{TASK_NAME}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return task_dir


def lm_eval_samples(model, tokenizer, task_dir: Path, batch_size: int) -> list[dict]:
    """Per item, in test order: lm-eval's prompt, response, and answer + correctness per filter."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    # add_bos_token=False and no truncation: the harness tokenizes the rendered chat prompt
    # without special tokens and never cuts it
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, add_bos_token=False,
              max_length=10**6)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    results = simple_evaluate(model=lm, tasks=[TASK_NAME], task_manager=manager, apply_chat_template=True,
                              num_fewshot=0, log_samples=True, bootstrap_iters=0)
    per_doc: dict[int, dict] = {}
    for s in results["samples"][TASK_NAME]:
        d = per_doc.setdefault(s["doc_id"], {"question": s["doc"]["question"], "prompt": s["arguments"][0][0],
                                            "response": s["resps"][0][0]})
        d[s["filter"]] = {"answer": s["filtered_resps"][0], "correct": bool(s["exact_match"])}
    return [per_doc[i] for i in sorted(per_doc)]
