"""Statistics against hand-computed cases, and the report built from a synthetic run folder
(fake rows, members and curves written here: no model, seconds): intervals, an unfinished
run's banner, bad files as one-line errors, no NaN, degenerate plots, tokens per second."""
from __future__ import annotations

import argparse
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from harness.analysis import agreement, axes, plots, report, stats, tables
from harness.analysis.rundir import load
from harness.cli import main
from harness.errors import UserError

NAN = re.compile(r"\bnan\b", re.IGNORECASE)

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


@pytest.mark.parametrize("k,n", [(0, 10), (10, 10), (3, 10), (25, 128), (1, 1319), (660, 1319), (0, 1)])
def test_binomial_interval_is_clopper_pearson(k, n):
    scipy_stats = pytest.importorskip("scipy.stats")
    exact = scipy_stats.binomtest(k, n).proportion_ci(method="exact")
    assert stats.binomial_ci([True] * k + [False] * (n - k)) == pytest.approx((exact.low, exact.high), abs=1e-9)


def test_binomial_interval_does_not_collapse_when_all_items_agree():
    # the percentile bootstrap says [0, 0] and [1, 1] here; 10 items cannot justify that
    assert stats.binomial_ci([False] * 10) == pytest.approx((0.0, 1 - 0.025 ** 0.1))
    assert stats.binomial_ci([True] * 10) == pytest.approx((0.025 ** 0.1, 1.0))
    with pytest.raises(ValueError):
        stats.binomial_ci([])


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
            write(d / method / "ledger.json", {"n_params": P, "budget_flops": 1e9, "train_flops": 9e8,
                                               "tokens": {"train_forward": 4500, "train_backward": 0}})
            (d / method / f"test-{method}.rank0.jsonl").write_text(
                json.dumps({"index": 0, "label": "v0", "tokens": 1000, "seconds": 4.0}) + "\n")
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
    assert "as reported" in text
    assert ("above 8/20 (40.0%), equal 4/20 (20.0%), below 8/20 (40.0%); by sigma (above/equal/below): "
            "sigma=0.001: 4/2/4, sigma=0.002: 4/2/4") in text  # scores 0.25..0.75 around a base of 0.5
    assert "Clopper-Pearson" in text and "Warning" not in text and not NAN.search(text)


def test_report_html_parses_with_inline_images(built):
    _, _, html = built
    checker = TagChecker()
    checker.feed(html.read_text(encoding="utf-8"))
    checker.close()
    assert checker.stack == []
    assert len(checker.images) == 3 and all(s.startswith("data:image/png;base64,") for s in checker.images)


def test_crosscheck_section(built, tmp_path):
    assert agreement.crosscheck_section(make_run(tmp_path)) == ""
    run, md, html = built
    section = agreement.crosscheck_section(run)
    assert "| base | - | 20 | - | 19/20 (95.0%) | 45.0 | 40.0 | - |" in section and "item7" in section
    assert section in md.read_text(encoding="utf-8")
    assert "so &lt;b&gt;12&lt;/b&gt;" in html.read_text(encoding="utf-8")


def test_crosscheck_where_nothing_is_correct_is_not_informative(tmp_path):
    run = make_run(tmp_path)
    rows = [{"label": "base", "n": 20, "agree": 20, "agreement": 1.0, "lm_eval_accuracy": 0.0,
             "harness_accuracy": 0.0, "disagreements": []},  # written before either_correct existed
            {"label": "es", "n": 20, "agree": 20, "agreement": 1.0, "either_correct": 0, "lm_eval_accuracy": 0.0,
             "harness_accuracy": 0.0, "disagreements": []}]
    write(run / "crosscheck.json", {"rows": rows})
    section = agreement.crosscheck_section(run)
    assert section.count("not informative") == 2 and "100.0%" not in section


# ---- tokens per second, the terminal table -------------------------------------------------------

def test_tokens_per_second_beside_wall_time(built):
    run, md, _ = built
    header = [c.strip() for c in md.read_text(encoding="utf-8").split("## Results")[1].split("\n")[2].split("|")[1:-1]]
    assert header[header.index("train wall s") + 1] == "train tokens/s"
    assert header[header.index("wall s") + 1] == "test tokens/s"
    cells = dict(zip(header, tables.row_cells(load(run), [r for r in load(run).rows if r["label"] == "randopt K=1"])))
    # 4500 forward tokens over 1.0 s of training; 1000 test tokens over 4.0 s of generation
    assert (cells["train tokens/s"], cells["test tokens/s"]) == ("4500", "250")


def test_terminal_table_shows_the_reports_intervals(tmp_path, capsys):
    run = make_run(tmp_path)
    report.publish(run)
    table = (run / "table.md").read_text(encoding="utf-8")
    assert table.strip() in capsys.readouterr().out
    md = report.markdown([tables.results_table(load(run))])
    for line in table.splitlines()[2:]:
        label, k, acc, ci, diff = [c.strip() for c in line.split("|")[1:6]]
        assert f"| {label} | {k} | {acc} | {ci} | {diff} |" in md
    assert "[" in table  # intervals are there at all


# ---- an unfinished run ---------------------------------------------------------------------------

def test_unfinished_run_has_a_banner_missing_rows_and_a_stderr_line(tmp_path, capsys):
    run = make_run(tmp_path, seeds=(0, 1))
    (run / "seed0" / "es" / "rows.json").unlink()
    (run / "seed1" / "es" / "rows.json").unlink()
    (run / "seed1" / "grpo" / "rows.json").unlink()
    assert main(["report", str(run)]) == 0
    err = capsys.readouterr().err
    assert err.strip() == "thicket report: unfinished run: no results yet for es (seeds 0, 1), grpo (seed 1)"
    text = (run / "report.md").read_text(encoding="utf-8")
    assert text.split("\n\n")[1].startswith("> **Warning.** Unfinished run: no results yet for es (seeds 0, 1), "
                                            "grpo (seed 1).")
    assert "| es | - | missing: not finished |" in text
    assert "(seeds missing: 1 of 2 finished)" in text.split("| grpo |")[1].split("\n")[0]
    assert 'class="banner"' in (run / "report.html").read_text(encoding="utf-8")


# ---- bad files: one line naming the file and how to rebuild it ------------------------------------

def corrupt(run, name, text):
    (run / name).write_text(text, encoding="utf-8")


BAD_FILES = [
    ("config.json", '{"protocol": {"task": "ar', "not valid JSON", "rerun the same `thicket compare` command"),
    ("config.json", "[1, 2]", "holds a JSON list, expected a dict", "rewrites config.json"),
    ("environment.json", "", "not valid JSON", "rewrites environment.json"),
    ("seed0/base/rows.json", '[{"method": "base"', "not valid JSON", "the method is redone"),
    ("seed0/base/rows.json", '{"rows": []}', "holds a JSON dict, expected a list", "delete"),
    ("seed0/randopt/rows.json", '[{"method": "randopt", "name": "randopt", "label": "randopt K=1", "k": 1, '
     '"seed": 0, "accuracy": "high", "n_test": 20}]', "field 'accuracy' is 'high'", "the method is redone"),
    ("seed0/randopt/rows.json", '[{"method": "randopt", "name": "randopt", "label": "randopt K=1", "k": 1, '
     '"seed": 0, "accuracy": NaN, "n_test": 20}]', "field 'accuracy' is nan", "the method is redone"),
    ("seed0/grpo/rows.json", '[{"method": "grpo", "name": "grpo", "label": "grpo", "k": 1, "seed": 0, '
     '"accuracy": 0.5, "n_test": 20, "correct": [true]}]', "field 'correct'", "the method is redone"),
    ("seed0/base_train.json", '{"score": null}', "score is None", "delete it and rerun"),
    ("seed0/es/ledger.json", '{"n_params": "1000"}', "n_params", "ledger.json"),
    ("seed0/randopt/members.rank0.jsonl", '{"index": 0, "seed": 1, "sigma": 0.001, "score": "x", "tokens": 5}\n',
     "member 0 field 'score'", "delete the bad line"),
    ("crosscheck.json", '{"rows": [{"label": "base"', "not valid JSON", "thicket crosscheck"),
    ("crosscheck.json", '{"rows": [{"label": "base", "n": "20"}]}', "rows[0]", "thicket crosscheck"),
]


@pytest.mark.parametrize("name,text,problem,fix", BAD_FILES, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_FILES)])
def test_bad_file_is_one_line_naming_it_and_the_fix(tmp_path, capsys, name, text, problem, fix):
    run = make_run(tmp_path)
    corrupt(run, name, text)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("thicket: error: ")
    assert str(run / name).replace("rank0.jsonl", "rank*.jsonl") in err and problem in err and fix in err


def test_torn_jsonl_lines_and_nan_curve_points_are_skipped(tmp_path):
    run = make_run(tmp_path)
    with open(run / "seed0" / "randopt" / "members.rank0.jsonl", "a", encoding="utf-8") as f:
        f.write('[1, 2]\n{"index": 11, "score"')  # not a record; a line torn by a kill
    with open(run / "seed0" / "es" / "curve.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 9, "train_flops": NaN, "train_reward": 0.1}\n{"step": 8, "train_flops": 1e9, "train_reward": NaN}\n')
    md, _ = report.build_report(run)
    assert len(load(run).members(0)) == 10
    assert not NAN.search(md.read_text(encoding="utf-8"))


# ---- degenerate plots --------------------------------------------------------------------------

def only_base_run(root, correct):
    run = make_run(root)
    for method in ("self_consistency", "randopt", "es", "grpo"):
        for p in (run / "seed0" / method).iterdir():
            p.unlink()
        (run / "seed0" / method).rmdir()
    write(run / "config.json", {"protocol": {"task": "arith", "k": [1]}, "methods": {"base": {}}, "seeds": [0]})
    write(run / "seed0" / "base" / "rows.json", [row("base", "base", None, correct, 0)])
    return run


@pytest.mark.parametrize("correct", [[False] * 8, [True] * 8])
def test_report_of_a_degenerate_run(tmp_path, correct):
    run = only_base_run(tmp_path, correct)
    md, _ = report.build_report(run)
    text = md.read_text(encoding="utf-8")
    assert ("[0.0, 36.9]" if not any(correct) else "[63.1, 100.0]") in text  # Clopper-Pearson, n = 8
    assert (run / "plot_flops.png").is_file() and not NAN.search(text)


def test_axes_of_constant_data():
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    axes.value_axis(ax, [0.0, 0.0, 0.0], (0.0, 100.0), 2.0)
    lo, hi = ax.get_ylim()
    assert lo < 0 < 100 < hi < 106  # all-equal accuracies: the whole 0-100 scale
    axes.value_axis(ax, [20.0, 40.0], (0.0, 100.0), 2.0)
    assert 0 < ax.get_ylim()[0] < 20 and 40 < ax.get_ylim()[1] < 100
    axes.flops_axis(ax, [3.2e13, 3.3e13])  # budget-matched rows within one decade
    assert ax.get_xlim() == (1e13, 1e14)
    labels = [axes.sci(x) for x in (1e13, 2e13, 5e13)]
    assert labels == ["1e13", "2e13", "5e13"]
    axes.flops_axis(ax, [])  # nothing trained: still a valid log axis
    lo, hi = ax.get_xlim()
    assert 0 < lo < hi and ax.get_xscale() == "log"


def test_k_markers_and_error_bars_are_not_clipped(built):
    run, _, _ = built
    fig = plots.k_figure(load(run))
    ax = fig.axes[0]
    (x_lo, x_hi), (y_lo, y_hi) = ax.get_xlim(), ax.get_ylim()
    for line in ax.get_lines():
        xs, ys = line.get_xdata(), line.get_ydata()
        if line.get_marker() not in (None, "None", "", " ") and len(xs):
            assert x_lo < min(xs) and max(xs) < x_hi and y_lo <= min(ys) and max(ys) <= y_hi
    for k in (1, 3):  # the end markers sit well inside the axis (log scale: by a factor)
        assert x_lo * 1.2 < k < x_hi / 1.2
