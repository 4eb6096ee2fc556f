"""Shared fixtures: a tiny random Llama model (seconds, no download), the offline data
folder, `no_eval`, and W&B switched off for every test that does not ask for it (marker `wandb`)."""
from __future__ import annotations

import builtins
import os
import string
from pathlib import Path

import pytest

# Before anything imports wandb: tests never log unless they say so.
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("WANDB_SILENT", "true")

SPECIALS = ["<pad>", "<s>", "</s>"]
CHARS = string.digits + string.ascii_letters + " " + string.punctuation + "\n"

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def pytest_configure(config):
    config.addinivalue_line("markers", "wandb: the test exercises W&B itself (WANDB_MODE is not forced off)")


@pytest.fixture(autouse=True)
def _wandb_disabled(request, monkeypatch):
    """WANDB_MODE=disabled, unless the test is marked `wandb`; such a test sets the mode it
    exercises itself (e.g. monkeypatch.setenv("WANDB_MODE", "offline"))."""
    if request.node.get_closest_marker("wandb") is None:
        monkeypatch.setenv("WANDB_MODE", "disabled")


def build_tiny_model(folder: Path, hidden_size: int = 32) -> Path:
    """A random 2-layer Llama over a character vocabulary, saved like a Hub model folder.

    Weights are drawn wide (initializer_range 0.3) so the layers mix the prompt instead of
    echoing the last token, and the digit rows of the (tied) embedding share one extra
    direction, so greedy decoding emits digits often (vote keys are not all empty) while
    still depending on the prompt and on the perturbation. `hidden_size` 64 gives heads of 32
    dimensions, the smallest vLLM's CPU attention runs.
    """
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(CHARS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(SPECIALS)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="?")
    tokenizer.chat_template = CHAT_TEMPLATE

    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=vocab["<s>"], eos_token_id=vocab["</s>"],
                         pad_token_id=vocab["<pad>"], initializer_range=0.3)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.float32)
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        shared = torch.randn(config.hidden_size, generator=torch.Generator().manual_seed(1))
        shared /= shared.norm()
        emb[[vocab[d] for d in string.digits]] += 0.5 * shared
    model.generation_config.eos_token_id = vocab["</s>"]
    model.generation_config.pad_token_id = vocab["<pad>"]
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def data_dir() -> str:
    # the repository and ../shared sit side by side (here /work/main and /work/shared; likewise in CI)
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"offline data not found at {path}")
    return str(path)


@pytest.fixture
def one_thread(monkeypatch):
    """The tiny model runs fastest on one thread; keep code under test from claiming every core."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    yield
    monkeypatch.undo()
    torch.set_num_threads(threads)


@pytest.fixture
def quiet_hf():
    """No transformers progress bars on stderr: these tests are about the harness's own output."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    yield
    if was:
        hf_logging.enable_progress_bar()


@pytest.fixture
def no_eval(monkeypatch):
    """Make eval and exec fail loudly in this process, so a test proves that model text is never
    evaluated here (countdown's evaluator parses it; MBPP's programs run in a child)."""
    def refuse(*args, **kwargs):
        raise AssertionError("model output reached eval/exec in the harness")
    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
