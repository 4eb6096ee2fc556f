"""The Makefile's variables reach the command they promise (`make -n`: printed, not run)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def compare_command(*variables: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(["make", "-n", "compare", *variables], capture_output=True, text=True, cwd=ROOT, check=True)
    return out.stdout.replace("\\\n", " ")


def test_nproc_with_the_vllm_engine_launches_several_processes_in_the_vllm_environment():
    command = compare_command("ENGINE=vllm", "NPROC=2", "TASK=arith")
    assert ".venv-vllm/bin/python -m accelerate.commands.launch --multi_gpu --num_processes 2 -m harness.cli" in command
    assert "--engine vllm" in command


def test_the_vllm_engine_with_one_process_runs_the_cli_directly():
    command = compare_command("ENGINE=vllm", "TASK=arith")
    assert ".venv-vllm/bin/python -m harness.cli compare" in command and "accelerate" not in command


def test_nproc_with_the_native_engine_launches_several_processes():
    command = compare_command("NPROC=2", "TASK=arith")
    assert ".venv/bin/accelerate launch --multi_gpu --num_processes 2 -m harness.cli compare" in command
