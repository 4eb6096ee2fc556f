"""--engine: choosing an engine, recording it, and refusing to mix two engines in one run folder."""
from __future__ import annotations

import json
import os

import pytest

from harness.cli import main
from harness.engine import select
from harness.engine.interface import Engine, Weights
from harness.engine.native import NativeEngine
from harness.errors import UserError
from tests.test_core import only_dir


def test_unknown_engine_is_one_line_naming_the_choices():
    with pytest.raises(UserError, match=r"--engine 'fast' is not an engine; choose one of native, vllm, auto"):
        select.choose("fast")


def test_vllm_without_vllm_names_the_install_command(monkeypatch):
    monkeypatch.setattr(select, "vllm_version", lambda: None)
    with pytest.raises(UserError, match="make install-vllm"):
        select.choose("vllm")


@pytest.mark.parametrize("gpu,installed,expected", [(False, False, "native"), (False, True, "native"),
                                                    (True, False, "native"), (True, True, "vllm")])
def test_auto_is_vllm_only_with_a_gpu_and_vllm(monkeypatch, gpu, installed, expected):
    monkeypatch.setattr(select, "vllm_version", lambda: "0.32.0" if installed else None)
    assert select.choose("auto", gpu=gpu) == expected


def test_a_folder_without_an_engine_record_was_native(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"protocol": {}}))
    select.check_remembered(tmp_path, "native")
    with pytest.raises(UserError, match="computed with --engine native; resume it with --engine native"):
        select.check_remembered(tmp_path, "vllm")


def test_the_native_engine_implements_the_interface(tiny_model_dir):
    from harness.engine.model import load_model

    model, tokenizer = load_model(tiny_model_dir)
    engine = NativeEngine(model, tokenizer, 4)
    assert isinstance(engine, Engine) and isinstance(engine.weights, Weights)
    assert engine.n_params == engine.weights.n_params == sum(p.numel() for _, p in model.named_parameters())


def test_a_run_remembers_its_engine_and_refuses_another(tiny_model_dir, tmp_path, monkeypatch, capsys):
    args = ["compare", "--task", "arith", "--model", tiny_model_dir, "--budget", "smoke", "--n-train", "2",
            "--n-test", "2", "--max-new-tokens", "2", "--k", "1", "--methods", "base", "--results", str(tmp_path)]
    assert main(args + ["--engine", "native"]) == 0
    run = only_dir(tmp_path)
    config = json.loads((run / "config.json").read_text())
    assert config["engine"]["name"] == "native"
    monkeypatch.setattr(select, "vllm_version", lambda: "0.32.0")  # as if vLLM were installed
    capsys.readouterr()
    assert main(args + ["--engine", "vllm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("thicket: error: ") and "was computed with --engine native" in err
    assert len(err.strip().splitlines()) == 1


def test_several_processes_each_run_vllm_in_its_own_child(monkeypatch):
    """Under accelerate launch vLLM must not join the harness's process group: multiprocessing is
    forced on, and asking for it off is a one-line error naming the fix."""
    from harness.engine import vllm as vllm_engine
    from harness.runs import distributed as dist

    monkeypatch.setattr(dist, "world", lambda: 2)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    with pytest.raises(UserError, match="engine.multiprocessing=false with 2 processes"):
        vllm_engine.one_engine_per_process(vllm_engine.Settings(multiprocessing=False))
    vllm_engine.one_engine_per_process(vllm_engine.Settings())
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"
