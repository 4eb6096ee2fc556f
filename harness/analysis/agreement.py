"""How lm-evaluation-harness's gsm8k scorer and thicket's agree, item by item.

Two ways to get lm-eval's verdicts, one comparison:
- with a model (`thicket crosscheck RUN_DIR`, harness.analysis.crosscheck): lm-eval decodes
  the items again and scores its own responses;
- without one (`thicket crosscheck RUN_DIR --no-model`, or `score_texts` on any texts):
  lm-eval's gsm8k filter pipelines (`strict-match`, `flexible-extract`, built from lm-eval's own
  gsm8k.yaml) and its exact_match metric, with the YAML's settings, are applied to the SAME
  texts that thicket's scorer (tasks/gsm8k.py) reads. Seconds, and the texts can be chosen so
  that some answers are right, where agreement is informative.

Agreement is only informative where some item is marked correct: two scorers that mark every
item wrong agree 100% and prove nothing, so each row reports how many items either scorer
marks correct and says "not informative" when none are.
"""
from __future__ import annotations

from pathlib import Path

from harness.analysis.doc import Heading, Para, Table, markdown
from harness.analysis.rundir import is_number, read_checked

FILES = (("crosscheck.json", "with a model: lm-eval decoded the items again"),
         ("crosscheck-texts.json", "without a model: lm-eval's gsm8k filters on the stored texts"))
MAX_DISAGREEMENTS = 20
"""Disagreements listed per row in the report; the rest stay in the JSON file."""


# ---- lm-eval's scorer on given texts ---------------------------------------------------------

def lm_eval_gsm8k() -> dict:
    """lm-eval's own gsm8k task config, as shipped (filters, metric settings)."""
    import lm_eval
    import yaml

    return yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml").read_text(encoding="utf-8"))


def lm_eval_verdicts(texts: list[str], answers: list[str]) -> list[dict]:
    """Per text, for each of lm-eval's gsm8k filters: {"answer", "correct"}; `answers` are the
    raw gsm8k solutions (lm-eval's target; its metric strips everything up to "#### ")."""
    from lm_eval.api.instance import Instance
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters import build_filter_ensemble

    spec = lm_eval_gsm8k()
    metric = next(m for m in spec["metric_list"] if m["metric"] == "exact_match")
    options = {k: metric[k] for k in ("ignore_case", "ignore_punctuation", "regexes_to_ignore") if k in metric}
    out = [{} for _ in texts]
    for pipeline in spec["filter_list"]:
        ensemble = build_filter_ensemble(pipeline["name"], [
            (step["function"], {k: v for k, v in step.items() if k != "function"}) for step in pipeline["filter"]])
        instances = [Instance("generate_until", {"answer": a}, ("", {}), 0, resps=[t]) for t, a in zip(texts, answers)]
        ensemble.apply(instances)
        for verdict, inst, answer in zip(out, instances, answers):
            prediction = inst.filtered_resps[pipeline["name"]]
            ok = exact_match_hf_evaluate([prediction], [answer], **options)["exact_match"]
            verdict[pipeline["name"]] = {"answer": prediction, "correct": bool(ok)}
    return out


def score_texts(ids: list[str], texts: list[str], items: list, answers: list[str]) -> tuple[dict, list[bool]]:
    """Both scorers on the same texts: thicket's gsm8k vote key and correctness against
    lm-eval's filters and exact_match. Returns compare_items' comparison and thicket's
    per-item verdicts."""
    from harness.task import get_task

    TASK = get_task("gsm8k")

    keys = [TASK.vote_key(t, it) for t, it in zip(texts, items)]
    correct = TASK.are_correct(keys, items)
    samples = [{"response": t, **v} for t, v in zip(texts, lm_eval_verdicts(texts, answers))]
    return compare_items([(i, str(it.gold), k) for i, it, k in zip(ids, items, keys)], correct, samples), correct


# ---- the comparison ----------------------------------------------------------------------------

def compare_items(items: list[tuple[str, str, str]], harness_correct: list[bool], samples: list[dict],
                  response_chars: int = 300) -> dict:
    """Agreement of lm-eval's flexible-extract correctness with the harness's, item by item.
    `items`: (id, gold, harness vote); `samples`: lm-eval's response and per-filter verdicts."""
    from harness.task import task_module

    normalize_number = task_module("gsm8k").normalize_number

    if not (len(items) == len(harness_correct) == len(samples)):
        raise ValueError(f"item counts differ: {len(items)} items, {len(harness_correct)} harness, "
                         f"{len(samples)} lm-eval")
    n = len(items)
    flexible = [s["flexible-extract"]["correct"] for s in samples]
    disagreements = [{"id": item_id, "gold": gold, "harness_vote": vote, "harness_correct": bool(ok),
                      "lm_eval_answer": s["flexible-extract"]["answer"],
                      "lm_eval_response": s["response"][:response_chars], "lm_eval_correct": lm}
                     for (item_id, gold, vote), ok, lm, s in zip(items, harness_correct, flexible, samples)
                     if bool(ok) != lm]
    agree = n - len(disagreements)
    # a stricter figure than correctness: the same extracted number, lm-eval's normalised like ours
    same = sum(normalize_number(s["flexible-extract"]["answer"]) == vote for (_, _, vote), s in zip(items, samples))
    return {"n": n, "agree": agree, "agreement": agree / n if n else 0.0, "answers_identical": same,
            "either_correct": sum(bool(ok) or lm for ok, lm in zip(harness_correct, flexible)),
            "lm_eval_accuracy": sum(flexible) / n if n else 0.0,
            "harness_accuracy": sum(map(bool, harness_correct)) / n if n else 0.0,
            "lm_eval_strict_accuracy": sum(s["strict-match"]["correct"] for s in samples) / n if n else 0.0,
            "disagreements": disagreements}


def either_correct(row: dict) -> int | None:
    """Items either scorer marks correct (derived for files written before the field existed:
    0 exactly when both accuracies are 0)."""
    if isinstance(row.get("either_correct"), int):
        return row["either_correct"]
    if is_number(row.get("harness_accuracy")) and is_number(row.get("lm_eval_accuracy")):
        return 0 if row["harness_accuracy"] == 0 == row["lm_eval_accuracy"] else None
    return None


def agreement_text(row: dict) -> str:
    if either_correct(row) == 0:
        return "not informative (no item marked correct by either scorer)"
    return f"{row['agree']}/{row['n']} ({100 * row['agreement']:.1f}%)"


def table(rows: list[dict]) -> str:
    """The terminal table of `thicket crosscheck`."""
    return markdown([Table(("row", "seed", "n", "either correct", "agreement", "harness acc",
                            "lm-eval flexible", "lm-eval strict", "same answer", "same text"),
                           tuple(_cells(r) for r in rows))]).rstrip("\n")


def _cells(r: dict) -> tuple[str, ...]:
    pct = lambda x: f"{100 * x:.1f}%" if is_number(x) else "-"  # noqa: E731
    either = either_correct(r)
    return (str(r["label"]), str(r.get("seed", "-")), str(r["n"]), "-" if either is None else str(either),
            agreement_text(r), pct(r.get("harness_accuracy")), pct(r.get("lm_eval_accuracy")),
            pct(r.get("lm_eval_strict_accuracy")), f"{r.get('answers_identical', '-')}/{r['n']}",
            f"{r['responses_identical']}/{r['n']}" if r.get("responses_identical") is not None else "-")


# ---- in the report ------------------------------------------------------------------------------

def _rows(path: Path) -> list[dict]:
    from harness.analysis.rundir import bad_value

    rows = read_checked(path, dict).get("rows", [])
    for i, r in enumerate(rows if isinstance(rows, list) else [rows]):
        if not (isinstance(r, dict) and isinstance(r.get("label"), str) and isinstance(r.get("n"), int)
                and isinstance(r.get("agree"), int) and is_number(r.get("agreement"))
                and isinstance(r.get("disagreements", []), list)):
            raise bad_value(path, f"rows[{i}]", r)
    return rows


def report_blocks(run_dir) -> list:
    blocks = []
    for name, how in FILES:
        path = Path(run_dir) / name
        if not path.is_file():
            continue
        rows = _rows(path)
        if not blocks:
            blocks.append(Heading(2, "Cross-check against lm-evaluation-harness"))
        blocks += [Heading(3, f"{how} ({name})"), Para(
            "Agreement: items where lm-eval's flexible-extract and this harness give the same verdict; "
            "it is informative only where some item is marked correct (column \"either correct\")."),
            Table(("row", "seed", "items", "either correct", "agreement", "lm-eval acc %", "harness acc %",
                   "same answer"),
                  tuple((r["label"], str(r.get("seed", "-")), str(r["n"]), str(either_correct(r) if
                         either_correct(r) is not None else "-"), agreement_text(r),
                         _pct(r.get("lm_eval_accuracy")), _pct(r.get("harness_accuracy")),
                         str(r.get("answers_identical", "-"))) for r in rows))]
        blocks += disagreement_blocks(rows, name)
    return blocks


def _pct(x) -> str:
    return f"{100 * x:.1f}" if is_number(x) else "-"


def disagreement_blocks(rows: list[dict], name: str) -> list:
    blocks = []
    for r in rows:
        bad = [d for d in r.get("disagreements") or [] if isinstance(d, dict)]
        if not bad:
            continue
        blocks += [Heading(4, f"Disagreements: {r['label']} ({len(bad)})"), Table(
            ("id", "gold", "harness vote", "harness correct", "lm-eval response", "lm-eval correct"),
            tuple((str(d.get("id")), str(d.get("gold")), str(d.get("harness_vote")), str(d.get("harness_correct")),
                   clip(str(d.get("lm_eval_response"))), str(d.get("lm_eval_correct")))
                  for d in bad[:MAX_DISAGREEMENTS]))]
        if len(bad) > MAX_DISAGREEMENTS:
            blocks.append(Para(f"{len(bad) - MAX_DISAGREEMENTS} more in {name}."))
    return blocks


def clip(text: str, n: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 3] + "..."


def crosscheck_section(run_dir) -> str:
    """The cross-check as Markdown; "" when run_dir has no cross-check file."""
    blocks = report_blocks(run_dir)
    return markdown(blocks) if blocks else ""
