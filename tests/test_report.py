"""Statistics against hand-computed cases, and the report built from a synthetic run folder
(fake rows, members and curves written here: no model, seconds)."""
from __future__ import annotations

import argparse
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from harness.analysis import report, stats

# ---- statistics ------------------------------------------------------------------------------


def pairs(b01: int, b10: int, both: int = 3, neither: int = 2) -> tuple[list[bool], list[bool]]:
    """Lists a, b with b01 items only b gets right and b10 items only a gets right."""
    a = [False] * b01 + [True] * b10 + [True] * both + [False] * neither
    b = [True] * b01 + [False] * b10 + [True] * both + [False] * neither
    return a, b


@pytest.mark.parametrize("b01,b10,p", [(0, 5, 0.0625), (5, 0, 0.0625), (1, 1, 1.0), (2, 8, 0.109375),
                                       (0, 0, 1.0), (0, 1, 1.0), (3, 4, 1.0), (0, 10, 2 / 1024)])
def test_mcnemar_exact(b01, b10, p):
    assert stats.mcnemar_exact(*pairs(b01, b10)) == pytest.approx(p, abs=1e-15)
    assert stats.discordant(*pairs(b01, b10)) == (b01, b10)


def test_bootstrap_degenerate_cases():
    assert stats.bootstrap_ci([True] * 10) == (1.0, 1.0)
    assert stats.bootstrap_ci([False] * 10) == (0.0, 0.0)
    same = [True, False, True, True, False]
    assert stats.paired_bootstrap_diff(same, same) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError):
        stats.bootstrap_ci([])
    with pytest.raises(ValueError):
        stats.paired_bootstrap_diff([True], [True, False])


def test_bootstrap_matches_index_resampling_and_is_deterministic():
    rng = np.random.default_rng(1)
    a, b = rng.random(200) < 0.6, rng.random(200) < 0.5
    lo, hi = stats.bootstrap_ci(a, seed=3)
    assert (lo, hi) == stats.bootstrap_ci(a, seed=3)
    assert lo < a.mean() < hi
    idx = rng.integers(0, a.size, (20000, a.size))  # the textbook index bootstrap, for comparison
    ref = np.quantile(a[idx].mean(1), [0.025, 0.975])
    assert np.allclose((lo, hi), ref, atol=0.011)
    diff, dlo, dhi = stats.paired_bootstrap_diff(a, b, seed=3)
    assert diff == pytest.approx(a.mean() - b.mean())
    ref = np.quantile(a[idx].mean(1) - b[idx].mean(1), [0.025, 0.975])
    assert np.allclose((dlo, dhi), ref, atol=0.011)


# ---- a synthetic run folder ------------------------------------------------------------------

N_TEST, P = 20, 1000


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def row(method, name, k, correct, seed, train_flops=0.0, info=None):
    label = name if k is None else f"{name} K={k}"
    return {"method": method, "name": name, "label": label, "k": k or 1, "seed": seed,
            "accuracy": sum(correct) / len(correct), "n_test": len(correct), "train_flops": train_flops,
            "paper_train_flops": train_flops * 1.5 or None, "budget_flops": 1e9, "test_flops": 2e6 * (k or 1),
            "test_flops_per_item": 1e5 * (k or 1), "train_wall_s": 1.0, "wall_s": 2.5, "peak_rss_gib": 1.25,
            "peak_gpu_gib": None, "info": info or {}, "correct": list(correct), "predictions": ["1"] * len(correct)}


def make_run(root, seeds=(0,)):
    run = root / "arith" / "smoke-seed0-test"
    write(run / "config.json", {"protocol": {"task": "arith", "model": None, "budget": "smoke", "n_train": 8,
                                             "n_test": N_TEST, "max_new_tokens": 12, "k": [1, 3], "seed": 0},
                                "methods": {"base": {}, "self_consistency": {"temperature": 0.7},
                                            "randopt": {"population": 10}, "es": {"population": 4},
                                            "grpo": {}},
                                "budget_flops": 1e9, "seeds": list(seeds)})
    write(run / "environment.json", {"python": "3.12.0", "platform": "Linux", "git_sha": "abc123",
                                     "libraries": {"torch": "2.13.0", "numpy": "2.4.6"},
                                     "argv": ["thicket", "compare", "--task", "arith"]})
    rng = np.random.default_rng(0)
    for seed in seeds:
        d = run / f"seed{seed}"
        write(d / "base_train.json", {"score": 0.5, "tokens": 100})
        hits = lambda p: (rng.random(N_TEST) < p).tolist()  # noqa: E731
        rows = {"base": [row("base", "base", None, hits(0.4), seed)],
                "self_consistency": [row("self_consistency", "self_consistency", k, hits(0.45), seed) for k in (1, 3)],
                "randopt": [row("randopt", "randopt", k, hits(0.6), seed, 9e8, {"population": 10, "noise": "iid"})
                            for k in (1, 3)],
                "es": [row("es", "es", None, hits(0.5), seed, 8e8)]
                + [row("es", "es+vote", k, hits(0.55), seed, 8e8) for k in (1, 3)],
                "grpo": [row("grpo", "grpo", None, hits(0.5), seed, 7e8,
                             {"deviations": ["TRL instead of verl | pipes escaped"]})]}
        for method, method_rows in rows.items():
            write(d / method / "rows.json", method_rows)
            write(d / method / "ledger.json", {"n_params": P, "budget_flops": 1e9, "train_flops": 9e8})
        for method in ("es", "grpo"):
            (d / method / "curve.jsonl").write_text("".join(
                json.dumps({"step": t, "train_flops": 2e8 * (t + 1), "train_reward": 0.4 + 0.05 * t}) + "\n"
                for t in range(4)))
        (d / "randopt" / "members.rank0.jsonl").write_text("".join(
            json.dumps({"index": i, "seed": 100 + i, "sigma": (1e-3, 2e-3)[i % 2], "noise": "iid",
                        "score": round(0.25 + 0.125 * (i % 5), 3), "tokens": 4000 + i}) + "\n" for i in range(10)))
    return run


class TagChecker(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.images = [], []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"


CROSSCHECK = {"rows": [{"label": "base", "n": 20, "agree": 19, "agreement": 0.95, "lm_eval_accuracy": 0.45,
                        "harness_accuracy": 0.4, "disagreements": [
                            {"id": "item7", "gold": "12", "harness_vote": "", "harness_correct": False,
                             "lm_eval_response": "so <b>12</b>", "lm_eval_correct": True}]}]}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One two-seed synthetic run with a cross-check, built once (plots take most of the time)."""
    run = make_run(tmp_path_factory.mktemp("results"), seeds=(0, 1))
    write(run / "crosscheck.json", CROSSCHECK)
    md, html = report.build_report(run)
    return run, md, html


def test_report_is_byte_identical_when_rebuilt_through_the_cli(built, capsys):
    run, md, html = built
    first, pngs = md.read_bytes(), {p.name: p.read_bytes() for p in run.glob("*.png")}
    parser = argparse.ArgumentParser()
    report.add_arguments(parser)
    assert report.run(parser.parse_args([str(run)])) == 0
    assert capsys.readouterr().out.splitlines() == [str(md), str(html)]
    assert md.read_bytes() == first
    assert {p.name: p.read_bytes() for p in run.glob("*.png")} == pngs


def test_report_markdown_tables_and_images(built):
    run, md, _ = built
    text = md.read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"plot_flops.png", "plot_thicket.png", "plot_k.png"} <= set(images)
    assert all((run / name).is_file() for name in images)
    results = text.split("## Results")[1].split("\n\n")[1].splitlines()[2:]
    labels = [line.split("|")[1].strip() for line in results]
    assert labels == ["base", "self_consistency K=1", "self_consistency K=3", "randopt K=1", "randopt K=3",
                      "es", "es+vote K=1", "es+vote K=3", "grpo"]
    assert "(2 seeds)" in text and "first seed (0)" in text
    assert "grpo: deviation: TRL instead of verl | pipes escaped" in text
    assert "as reported" in text and "members with train score >= the base model's: 12/20" in text


def test_report_html_parses_with_inline_images(built):
    _, _, html = built
    checker = TagChecker()
    checker.feed(html.read_text(encoding="utf-8"))
    checker.close()
    assert checker.stack == []
    assert len(checker.images) == 3 and all(s.startswith("data:image/png;base64,") for s in checker.images)


def test_crosscheck_section(built, tmp_path):
    assert report.crosscheck_section(make_run(tmp_path)) == ""
    run, md, html = built
    section = report.crosscheck_section(run)
    assert "| base | 20 | 19 | 95.0 | 45.0 | 40.0 |" in section and "item7" in section
    assert section in md.read_text(encoding="utf-8")
    assert "so &lt;b&gt;12&lt;/b&gt;" in html.read_text(encoding="utf-8")
