"""Every bad input is one line on stderr, exit status 2, before anything slow (the model's
weights never load), and never lost work: budgets, seeds, folders, data, model files,
plugins, a full disk, a NaN reward, a run already in use."""
from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import UserError
from tests.helpers import base_args, cli_error, fail_if_model_loads

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value, words", [
    ("nan", ["budget", "finite"]), ("inf", ["budget", "finite"]), ("-5", ["budget", "> 0"]),
    ("0", ["budget", "> 0"]), ("lots", ["FLOPs", "'lots'"]),
])
def test_budget_flops_must_be_a_finite_positive_number(value, words, tiny_model_dir, tmp_path, capsys, monkeypatch,
                                                       quiet_hf):
    fail_if_model_loads(monkeypatch)
    line = cli_error(capsys, base_args(tiny_model_dir, tmp_path) + ["--budget-flops", value])
    assert all(w in line for w in words), line


@pytest.mark.parametrize("method, words", [
    ("randopt", ["randopt", "affords no member"]), ("es", ["es", "affords no iteration"]),
    ("grpo", ["grpo", "affords no step"]), ("ppo", ["ppo", "affords no step"]),
])
def test_a_budget_too_small_for_one_unit_is_refused_before_the_model_loads(method, words, tiny_model_dir, tmp_path,
                                                                            capsys, monkeypatch, quiet_hf):
    fail_if_model_loads(monkeypatch)
    line = cli_error(capsys, base_args(tiny_model_dir, tmp_path) + ["--methods", f"base,{method}",
                                                                     "--budget-flops", "1000"])
    assert all(w in line for w in words) and "--budget-flops" in line, line


def test_seeds_from_the_environment_must_be_a_number(tiny_model_dir, tmp_path, capsys, monkeypatch, quiet_hf):
    fail_if_model_loads(monkeypatch)
    monkeypatch.setenv("SEEDS", "abc")
    line = cli_error(capsys, base_args(tiny_model_dir, tmp_path))
    assert "SEEDS='abc'" in line


def test_results_that_is_a_file(tiny_model_dir, tmp_path, capsys, monkeypatch, quiet_hf):
    fail_if_model_loads(monkeypatch)
    (tmp_path / "results").write_text("not a folder")
    line = cli_error(capsys, base_args(tiny_model_dir, tmp_path / "results"))
    assert "is a file" in line and "--results" in line


def mounted_tmpfs(folder: Path, options: str) -> bool:
    """Mount a fresh tmpfs with `options` on a new `folder`; False where mounting is not allowed."""
    folder.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write to: a read-only tmpfs (as root chmod does not stop writes)."""
    folder = tmp_path / "ro"
    if not mounted_tmpfs(folder, "size=1m,ro"):
        folder.chmod(0o555)
        if os.access(folder, os.W_OK):
            pytest.skip("cannot make a read-only folder here")
        yield folder
        folder.chmod(0o755)
        return
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)


def test_read_only_results(read_only_dir, tiny_model_dir, capsys, monkeypatch, quiet_hf):
    fail_if_model_loads(monkeypatch)
    line = cli_error(capsys, base_args(tiny_model_dir, read_only_dir / "results"))
    assert "cannot write results" in line and "--results" in line


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden"])
def test_run_name_cannot_leave_the_results_folder(name, tiny_model_dir, tmp_path, capsys, monkeypatch, quiet_hf):
    fail_if_model_loads(monkeypatch)
    line = cli_error(capsys, base_args(tiny_model_dir, tmp_path / "results") + ["--run", name])
    assert "--run" in line and "plain folder name" in line
    assert not (tmp_path / "x").exists() and not any(tmp_path.glob("results/*/a"))


def test_data_file_that_is_not_utf8(tiny_model_dir, tmp_path, capsys, monkeypatch, quiet_hf):
    fail_if_model_loads(monkeypatch)
    folder = tmp_path / "data" / "gsm8k"
    folder.mkdir(parents=True)
    good = json.dumps({"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"}) + "\n"
    (folder / "train.jsonl").write_bytes(good.encode() * 4 + b'{"question": "caf\xe9"}\n')
    (folder / "test.jsonl").write_text(good * 4)
    line = cli_error(capsys, base_args(tiny_model_dir, tmp_path / "r", "gsm8k") + ["--data-dir", str(tmp_path / "data")])
    assert "train.jsonl" in line and "UTF-8" in line


@pytest.fixture
def broken_model(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


def test_model_with_corrupt_safetensors(broken_model, tmp_path, capsys, monkeypatch, quiet_hf):
    fail_if_model_loads(monkeypatch)
    weights = broken_model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a truncated download
    line = cli_error(capsys, base_args(str(broken_model), tmp_path / "r"))
    assert "model.safetensors" in line and "not a valid safetensors file" in line


def test_model_with_a_broken_tokenizer(broken_model, tmp_path, capsys, monkeypatch, quiet_hf):
    fail_if_model_loads(monkeypatch)
    (broken_model / "tokenizer.json").write_text("{ this is not json")
    line = cli_error(capsys, base_args(str(broken_model), tmp_path / "r"))
    assert "tokenizer" in line and "Error" in line  # the cause is named, not cut off


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    package = tmp_path / "badplugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "syntax.py").write_text("def broken(:\n    pass\n")
    (package / "needs.py").write_text("import nosuchdependency_xyz\n")
    (package / "named.py").write_text(textwrap.dedent('''
        from harness.method import Ensemble, Method, Voter
        class Other(Method):
            name = "something_else"
            def train(self, ctx):
                return [Ensemble("named", [Voter("base")])]
        METHOD = Other
    '''))
    (package / "partial.py").write_text(textwrap.dedent('''
        from harness.task import Task
        class Half(Task):
            name = "half"
            def load(self, split, data_dir):
                return []
        TASK = Half()
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    return package


@pytest.mark.parametrize("flag, module, words", [
    ("--methods", "badplugins.syntax", ["syntax error", "syntax.py", "line 1"]),
    ("--methods", "badplugins.needs", ["nosuchdependency_xyz", "not installed"]),
    ("--methods", "badplugins.named", ["something_else", "named by its file", "'named'"]),
    ("--task", "badplugins.syntax", ["syntax error"]),
    ("--task", "badplugins.partial", ["extract, is_correct", "does not define"]),
])
def test_broken_plugins(flag, module, words, plugins, tiny_model_dir, tmp_path, capsys, monkeypatch, quiet_hf):
    fail_if_model_loads(monkeypatch)
    line = cli_error(capsys, base_args(tiny_model_dir, tmp_path / "r") + [flag, module])
    assert all(w in line for w in words), line


def test_set_for_a_method_not_in_the_run(tiny_model_dir, tmp_path, capsys, monkeypatch, quiet_hf):
    fail_if_model_loads(monkeypatch)
    line = cli_error(capsys, base_args(tiny_model_dir, tmp_path) + ["--methods", "base,randopt",
                                                                     "--set", "randop.population=4"])
    assert "'randop' is not a method of this run" in line and "base, randopt" in line


def test_mistyped_option_gets_a_hint(capsys):
    line = cli_error(capsys, ["compare", "--tasks", "arith"])
    assert "did you mean --task" in line


def test_nan_reward_stops_the_run_with_the_item_named(tiny_model_dir, tmp_path, monkeypatch):
    from harness.task import get_task
    from tests.helpers import make_context

    ctx = make_context(tiny_model_dir, tmp_path)
    task = get_task("arith")
    monkeypatch.setattr(task, "reward", lambda response, item: float("nan"))
    with pytest.raises(UserError, match=r"task 'arith' returned reward nan for item arith-train-0 \(response starts"):
        ctx.score_current()
    for bad in (float("inf"), None, "1.0x"):
        monkeypatch.setattr(task, "reward", lambda response, item, bad=bad: bad)
        with pytest.raises(UserError, match="a reward must be a finite number"):
            ctx.score_current()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB filesystem: room for the run's records, not for a copy of the weights."""
    folder = tmp_path / "disk"
    if not mounted_tmpfs(folder, "size=256k"):
        pytest.skip("cannot mount a small tmpfs here")
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)


def test_disk_full_while_saving_weights_is_one_line_and_keeps_the_work(tiny_disk, tiny_model_dir, capsys, quiet_hf,
                                                                       one_thread):
    args = base_args(tiny_model_dir, tiny_disk) + ["--methods", "es", "--set", "es.population=2",
                                                   "--set", "es.iterations=1", "--budget-flops", "1e12"]
    filler = tiny_disk / "filler"
    filler.write_bytes(b"\0" * 200_000)  # leaves less than one copy of the tiny model's weights (89 kB)
    assert main(args) == 2
    errors = [e for e in capsys.readouterr().err.splitlines() if "error" in e]  # progress bars aside
    assert len(errors) == 1, errors
    line = errors[0]
    assert line.startswith("thicket: error: disk full while writing") and "theta.tmp" in line and "rerun" in line
    assert re.search(r"about [\d.]+ kB needed, [\d.]+ kB free", line), line
    records = list(tiny_disk.glob("arith/*/seed0/es/iter0000.rank0.jsonl"))
    assert records and len(records[0].read_text().splitlines()) == 2  # both members' scores kept
    filler.unlink()
    assert main(args) == 0  # space freed: the same command resumes and finishes


def test_a_second_run_on_the_same_folder_is_refused(tiny_model_dir, tmp_path, capsys, monkeypatch, quiet_hf):
    from harness.runs.runlock import RunLock

    fail_if_model_loads(monkeypatch)
    args = base_args(tiny_model_dir, tmp_path) + ["--methods", "base", "--run", "shared"]
    with RunLock(tmp_path / "arith" / "shared"):  # as if another command were running there
        line = cli_error(capsys, args)
    assert f"in use by process {os.getpid()}" in line and "--run" in line


def test_a_lock_left_by_a_killed_run_is_taken_over(tiny_model_dir, tmp_path):
    """A process holding the lock is SIGKILLed; the next command takes the lock over and says so."""
    folder = tmp_path / "arith" / "shared"
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from harness.runs.runlock import RunLock
        with RunLock(Path({str(folder)!r})):
            print("locked", flush=True)
            time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait()
    out = subprocess.run([sys.executable, "-m", "harness.cli", *base_args(tiny_model_dir, tmp_path),
                          "--methods", "base", "--run", "shared"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"taking over the lock of process {holder.pid}" in out.stdout


def test_a_conversion_killed_midway_leaves_nothing_behind_after_the_next(tmp_path):
    """A killed GGUF conversion leaves `<model>.partial-<pid>` (500 MB for SmolLM2); the next
    conversion removes it. A folder of a conversion still running is left alone."""
    from harness.engine.model import clean_stale_partials

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "SmolLM2-135M-Instruct"
    stale = tmp_path / f"{target.name}.partial-{dead.pid}"
    live = tmp_path / f"{target.name}.partial-{os.getpid()}"
    for folder in (stale, live):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"\0" * 1000)
    assert clean_stale_partials(target) == [stale]
    assert not stale.exists() and live.exists()
