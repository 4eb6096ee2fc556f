"""The command line a new user meets: help that says everything, settings listed with their
meaning, a fast `--help`, lm-eval's spelling of options, and progress lines worth reading."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import DEFAULT_METHODS, main
from harness.errors import UserError
from harness.method import DEFAULT_METHODS as REGISTRY_DEFAULT

ROOT = Path(__file__).resolve().parents[1]


def test_cli_default_methods_are_the_registry_defaults():
    assert DEFAULT_METHODS.split(",") == list(REGISTRY_DEFAULT)


def test_compare_help_describes_every_option_with_defaults_and_examples(capsys):
    assert main(["compare", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # help wraps lines
    assert "examples:" in text and text.count("thicket compare --task") >= 2
    assert "(default: small)" in text and "(default: results)" in text
    for option in ("--task", "--methods", "--model", "--data-dir", "--budget", "--n-train", "--n-test", "--limit",
                   "--max-new-tokens", "--k", "--seed", "--seeds", "--budget-flops", "--set", "--results", "--run",
                   "--fresh", "--keep-weights", "--crosscheck"):
        assert option in text, option
    assert "Train every method on the same train items" in text  # a description, not just usage


def test_help_does_not_import_torch():
    """`thicket --help` must answer at once: the subcommands' heavy modules load only when they run."""
    code = ("import sys; from harness.cli import main; main(['--help']); "
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "HEAVY []" in out.stdout, out.stdout[-500:] + out.stderr[-500:]
    assert "compare" in out.stdout and "report" in out.stdout and "plan" in out.stdout


def test_list_settings_shows_type_default_and_meaning(capsys):
    assert main(["list", "--settings"]) == 0
    text = capsys.readouterr().out
    assert "randopt.population (int, default 5000): N: members sampled and scored (paper: 5000)." in text
    assert "es.alpha (float, default 0.0005)" in text and "grpo.beta" in text and "ppo.critic_learning_rate" in text
    assert "base: no settings" in text


def test_limit_is_n_test(tiny_model_dir, tmp_path, one_thread):
    assert main(["compare", "--task", "arith", "--model", tiny_model_dir, "--methods", "base", "--budget", "smoke",
                 "--n-train", "2", "--limit", "3", "--max-new-tokens", "2", "--results", str(tmp_path)]) == 0
    (run,) = (tmp_path / "arith").iterdir()
    assert json.loads((run / "summary.json").read_text())[0]["n_test"] == 3


def test_progress_lines_say_what_runs_and_how_long_the_rest_takes(tiny_model_dir, tmp_path, capsys, one_thread):
    assert main(["compare", "--task", "arith", "--model", tiny_model_dir, "--methods", "base,randopt",
                 "--budget", "smoke", "--n-train", "4", "--n-test", "4", "--max-new-tokens", "3", "--k", "1",
                 "--set", "population=3", "--results", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "methods, in order: base, randopt" in out
    assert "  2. randopt: N=3; training FLOPs <= " in out
    assert "method 1/2: base (seed 0): no training; 1 generation(s) per test item" in out
    assert "method 2/2: randopt (seed 0): N=3" in out
    assert "base (seed 0) finished in" in out and "the remaining 1 should take about" in out
    assert "randopt (seed 0) finished in" in out
    assert "randopt members" in captured.err and "members members" not in captured.err
    assert "run folder size:" in out


def test_plan_prints_sizes_flops_and_time_without_training(tiny_model_dir, tmp_path, capsys, one_thread,
                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "--task", "arith", "--model", tiny_model_dir, "--methods", "base,randopt,es",
                 "--budget", "smoke", "--n-train", "4", "--n-test", "4", "--max-new-tokens", "3", "--k", "1",
                 "--set", "randopt.population=5", "--set", "es.population=2"]) == 0
    out = capsys.readouterr().out
    assert "| randopt | N=5 |" in out and "| es | T=2, N=2 |" in out and "| base | - | 0 |" in out
    assert "total projected wall time:" in out and "calibrated on this machine" in out
    assert not (tmp_path / "results").exists()  # nothing ran


def test_plan_and_compare_agree_on_sizes(tiny_model_dir, tmp_path, capsys, one_thread):
    args = ["--task", "arith", "--model", tiny_model_dir, "--methods", "randopt", "--budget", "smoke",
            "--n-train", "4", "--n-test", "2", "--max-new-tokens", "3", "--k", "1", "--budget-flops", "5e7"]
    assert main(["plan", *args]) == 0
    planned = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| randopt |")][0]
    assert main(["compare", *args, "--results", str(tmp_path)]) == 0
    (run,) = (tmp_path / "arith").iterdir()
    n = json.loads((run / "summary.json").read_text())[0]["info"]["population"]
    assert f"| randopt | N={n} |" in planned and n < 8  # the budget, not the preset, set N


@pytest.mark.parametrize("args", [["--gpus", "8"], ["--gpu", "h100"]])
def test_plan_gpus_and_gpu_go_together(args, capsys):
    assert main(["plan", "--task", "arith", *args]) == 2
    assert "--gpus and --gpu go together" in capsys.readouterr().err


def test_all_zero_scores_say_the_model_is_too_small(tiny_model_dir, tmp_path, capsys, one_thread, monkeypatch):
    from harness.task import get_task

    monkeypatch.setattr(get_task("arith"), "reward", lambda response, item: 0.0)
    assert main(["compare", "--task", "arith", "--model", tiny_model_dir, "--methods", "randopt", "--budget", "smoke",
                 "--n-train", "2", "--n-test", "2", "--max-new-tokens", "2", "--k", "1", "--set", "population=2",
                 "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "the base model scores 0 on all 2 train items" in out
    assert "every member scores 0" in out and "TASK=arith" in out


def test_plan_reads_the_gpu_bench_record_of_its_shape_and_gpu_kind(tmp_path):
    """The GPU projection uses the fastest engine record of bench/shapes.py's file for that
    model shape and GPU kind; other shapes, GPUs and the bare contender are ignored."""
    from harness.budget.projection import recorded_throughput

    record = {"shape": "qwen2.5-3b-instruct", "device_name": "NVIDIA H100 80GB HBM3", "contender": "engine",
              "members_in_flight": 1, "tokens_per_s": 900.0}
    records = [record, {**record, "contender": "engine_static", "tokens_per_s": 1200.0},
               {**record, "contender": "bare", "tokens_per_s": 5000.0},
               {**record, "device_name": "NVIDIA A100-SXM4-80GB", "tokens_per_s": 7000.0},
               {**record, "shape": "qwen2.5-0.5b-instruct", "tokens_per_s": 8000.0}]
    path = tmp_path / "throughput.json"
    path.write_text(json.dumps({"format": "thicket-throughput/1", "records": records}))
    assert recorded_throughput("qwen2.5-3b-instruct", "h100", path)["tokens_per_s"] == 1200.0
    assert recorded_throughput("qwen2.5-3b-instruct", "h200", path) is None
    assert recorded_throughput("qwen2.5-7b-instruct", "h100", tmp_path / "absent.json") is None
    assert recorded_throughput("qwen2.5-3b-instruct", "h100", path, engine="vllm") is None
    path.write_text(json.dumps({"format": "thicket-throughput/1", "records": records + [
        {**record, "contender": "vllm", "tokens_per_s": 3000.0}]}))
    assert recorded_throughput("qwen2.5-3b-instruct", "h100", path, engine="vllm")["tokens_per_s"] == 3000.0
    assert recorded_throughput("qwen2.5-3b-instruct", "h100", path)["tokens_per_s"] == 1200.0
    path.write_text("{not json")
    with pytest.raises(UserError, match="not a thicket-throughput/1 file"):
        recorded_throughput("qwen2.5-3b-instruct", "h100", path)


def test_plan_projects_a_paper_scale_gpu_run_from_shape_files_alone(data_dir, capsys, monkeypatch):
    """Qwen2.5-3B at the paper budget on 8 H100s: no weights, no network (the shape file comes
    first), every default method sized (GRPO's 1024-prompt batch from the whole train split)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["plan", "--task", "gsm8k", "--budget", "paper", "--model", "Qwen/Qwen2.5-3B-Instruct",
                 "--gpus", "8", "--gpu", "h100", "--data-dir", data_dir]) == 0
    out = capsys.readouterr().out
    assert "P=3,085,938,688" in out and "| grpo | steps=" in out and "| randopt | N=5000 |" in out
    assert "ASSUMED" in out and "total projected wall time" in out


def test_plan_counts_each_engines_memory_at_3b_on_an_h100(data_dir, capsys, monkeypatch):
    """bf16 Qwen2.5-3B: the native engine holds weights + base copy + a batch's KV cache; vLLM
    adds the Hugging Face copy, and its cache is what gpu_memory_utilization leaves (or kv_cache_gib)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    common = ["plan", "--task", "gsm8k", "--budget", "smoke", "--methods", "base", "--model",
              "Qwen/Qwen2.5-3B-Instruct", "--gpus", "1", "--gpu", "h100", "--data-dir", data_dir]
    weights = 3_085_938_688 * 2 / 2**30
    assert main(common + ["--engine", "native"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert "native engine" in line and f"weights {weights:.2f} GiB + base copy {weights:.2f} GiB" in line
    assert main(common + ["--engine", "vllm", "--set", "engine.gpu_memory_utilization=0.5"]) == 0
    out = capsys.readouterr().out
    line = out.strip().splitlines()[-1]
    cache = 0.5 * 80 - weights
    assert f"Hugging Face copy {weights:.2f} GiB" in line and f"KV cache {cache:.2f} GiB" in line
    assert f"= {3 * weights + cache:.2f} GiB" in line and "no vllm-engine throughput recorded" in out
    assert main(common + ["--engine", "vllm", "--set", "engine.kv_cache_gib=4"]) == 0
    assert "KV cache 4.00 GiB (engine.kv_cache_gib" in capsys.readouterr().out
    assert main(common + ["--engine", "native", "--set", "engine.kv_cache_gib=4"]) == 2
    assert "apply to --engine vllm only" in capsys.readouterr().err


def test_plan_splits_vllm_s_weights_over_tensor_parallel_devices(data_dir, capsys, monkeypatch):
    """engine.tensor_parallel_size=2: vLLM's weights and the base copy are halved per device, the
    Hugging Face copy stays whole on the first device, and each device caches its share of heads."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    common = ["plan", "--task", "gsm8k", "--budget", "smoke", "--methods", "base", "--model",
              "Qwen/Qwen2.5-3B-Instruct", "--gpus", "2", "--gpu", "h100", "--data-dir", data_dir, "--engine", "vllm",
              "--set", "engine.gpu_memory_utilization=0.5"]
    weights = 3_085_938_688 * 2 / 2**30
    assert main(common + ["--set", "engine.tensor_parallel_size=2"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    cache = 0.5 * 80 - weights / 2
    assert f"Hugging Face copy {weights:.2f} GiB + vLLM's weights {weights / 2:.2f} GiB" in line
    assert f"KV cache {cache:.2f} GiB" in line and f"= {2 * weights + cache:.2f} GiB" in line
    assert f"each other one holds {weights + cache:.2f} GiB" in line
    # Qwen2.5-3B caches 2 (k, v) x 36 layers x 2 kv heads x 128 x 2 bytes = 36,864 bytes a token; one kv head a device
    assert f"; {int(cache * 2**30 // (36_864 / 2)):,} tokens)" in line
    assert main(common + ["--set", "engine.tensor_parallel_size=0"]) == 2
    assert "engine.tensor_parallel_size=0: must be >= 1" in capsys.readouterr().err


def test_draft_members_changes_no_row(tiny_model_dir, tmp_path, monkeypatch, one_thread):
    """With Engine.draft_members on, the session keeps the base's train completions (also on a
    resumed run) and member scoring uses them as drafts: the same rows as without."""
    from harness.engine.native import NativeEngine

    def rows(folder, drafts: bool) -> list[dict]:
        monkeypatch.setattr(NativeEngine, "draft_members", drafts)
        args = ["compare", "--task", "arith", "--model", tiny_model_dir, "--methods", "base,randopt", "--budget",
                "smoke", "--n-train", "4", "--n-test", "4", "--max-new-tokens", "6", "--k", "1,2",
                "--set", "population=4", "--results", str(tmp_path / folder)]
        assert main(args) == 0
        (run,) = (tmp_path / folder / "arith").iterdir()
        out = json.loads((run / "seed0" / "randopt" / "rows.json").read_text())
        return [{k: v for k, v in r.items() if "wall" not in k and "peak" not in k} for r in out]

    seen = []
    generate = NativeEngine.generate
    monkeypatch.setattr(NativeEngine, "generate", lambda self, *a, **kw: seen.append(kw.get("draft")) or generate(self, *a, **kw))
    plain = rows("plain", False)
    assert all(d is None for d in seen)
    seen.clear()
    assert rows("drafted", True) == plain
    assert sum(d is not None for d in seen) == 4  # the four members' scoring passes
