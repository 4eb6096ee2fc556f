"""The generation engine: same greedy outputs and token counts as `model.generate`, a prefix
cache that never outlives its weights, seeded sampling, progress, and the in-place cache."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.engine.native import NativeEngine, _common_prefix, _eos_ids, _until_eos, prompt_lists
from harness.engine.decode import _chunks, keep_order
from harness.engine.kvcache import SlabLayer, new_cache
from harness.engine.model import load_model
from harness.engine.perturb import Perturber

REPO = Path(__file__).resolve().parents[1]
PROMPTS = [f"user: what is {a} + {b}?{'x' * (a % 7)}\nassistant:"
           for a, b in [(1, 2), (33, 4), (5, 66), (12, 9), (70, 70), (8, 1), (41, 17)]]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    torch.set_num_threads(1)
    return load_model(tiny_model_dir)


def old_engine(model, tokenizer, batches, max_new_tokens):
    """The engine as it was (model.generate per batch): the reference for outputs and counts."""
    eos, out = _eos_ids(model, tokenizer), {}
    for b in batches:
        seqs = model.generate(input_ids=b.input_ids, attention_mask=b.attention_mask, max_new_tokens=max_new_tokens,
                              eos_token_id=eos, pad_token_id=tokenizer.pad_token_id, do_sample=False)
        for row, i in enumerate(b.order):
            tokens = _until_eos(seqs[row, b.input_ids.shape[1]:].tolist(), eos)
            out[i] = (tokenizer.decode(tokens, skip_special_tokens=True), int(b.attention_mask[row].sum()), len(tokens))
    return [out[i] for i in range(len(out))]


SWITCHES = [{}, {"pass_bytes": 0}, {"share_prefix": False}, {"compact_fraction": None}, {"prefill_chunk_tokens": 40},
            {"compact_fraction": 0.3, "pass_bytes": 0}, {"cache": "dynamic"},
            {"decoder": "generate"}]


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "default")
@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_greedy_outputs_and_token_counts_equal_the_old_engine(tiny, switches, batch_size):
    model, tokenizer = tiny
    engine = NativeEngine(model, tokenizer, batch_size)
    for key, value in switches.items():
        setattr(engine, key, value)
    batches = engine.prepare(PROMPTS)
    new = [(c.text, c.prompt_tokens, c.new_tokens) for c in engine.generate(batches, 24)]
    assert new == old_engine(model, tokenizer, batches, 24)
    assert len({n for _, _, n in new}) > 2, "rows should finish at different steps (EOS), exercising the drop"


def test_prompt_tokens_count_the_shared_prefix_for_every_item(tiny):
    model, tokenizer = tiny
    engine = NativeEngine(model, tokenizer, 4)
    batches = engine.prepare(PROMPTS)
    assert engine.shared_prefix(prompt_lists(batches)) >= engine.min_prefix  # the prefix really is cached
    completions = engine.generate(batches, 5)
    full = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in PROMPTS]
    assert [c.prompt_tokens for c in completions] == full
    assert all(len(c.token_ids) == c.new_tokens for c in completions)


MEMBER_SCRIPT = """
import json, sys, torch
torch.set_num_threads(1)
from harness.engine.native import NativeEngine
from harness.engine.model import load_model
from harness.engine.perturb import Perturber
model, tok = load_model(sys.argv[1])
engine = NativeEngine(model, tok, 4)
Perturber(model).apply(int(sys.argv[2]), 0.05, "iid")
print(json.dumps([c.text for c in engine.generate(engine.prepare(json.loads(sys.argv[3])), 16)]))
"""


def test_prefix_cache_never_outlives_the_weights(tiny, tiny_model_dir):
    """Member B after member A (and after perturb/restore cycles) equals member B alone in a
    fresh process: nothing computed with A's weights is reused for B."""
    model, tokenizer = tiny
    engine, perturber = NativeEngine(model, tokenizer, 4), Perturber(model)
    batches = engine.prepare(PROMPTS)
    texts = lambda: [c.text for c in engine.generate(batches, 16)]  # noqa: E731
    perturber.apply(11, 0.05, "iid")
    member_a = texts()
    perturber.apply(22, 0.05, "iid")
    member_b = texts()
    perturber.restore()
    base = texts()
    for _ in range(3):
        perturber.apply(11, 0.05, "iid")
        texts()
        perturber.restore()
    perturber.apply(22, 0.05, "iid")
    again = texts()
    perturber.restore()
    fresh = subprocess.run([sys.executable, "-c", MEMBER_SCRIPT, tiny_model_dir, "22", json.dumps(PROMPTS)],
                           capture_output=True, text=True, check=True, cwd=REPO,
                           env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}).stdout
    assert member_b == again == json.loads(fresh.strip().splitlines()[-1])
    assert member_a != member_b and base not in (member_a, member_b), "the members must differ for this to test anything"


def test_sampling_is_seeded_and_top_p_narrows_it(tiny):
    model, tokenizer = tiny
    engine = NativeEngine(model, tokenizer, 3)
    batches = engine.prepare(PROMPTS)
    sample = lambda seed, top_p=1.0: [c.text for c in engine.generate(batches, 12, 1.0, seed, top_p)]  # noqa: E731
    assert sample(1) == sample(1)
    assert sample(1) != sample(2)
    greedy = [c.text for c in engine.generate(batches, 12)]
    assert sample(3, top_p=1e-9) == greedy  # top-p this small keeps only the most likely token
    assert sample(4, top_p=0.95) == sample(4, top_p=0.95)
    engine.decoder = "generate"  # model.generate's own sampling, seeded the same way
    assert sample(5) == sample(5) and sample(6, top_p=1e-9) == greedy


@pytest.mark.parametrize("chunk_tokens", [2048, 40])
def test_a_draft_only_saves_work_the_outputs_are_decoding_from_scratch(tiny, chunk_tokens):
    """Base outputs as the draft of perturbed members (near and far), and drafts that are
    plain wrong (another prompt's output): the member's own greedy output every time."""
    model, tokenizer = tiny
    engine, perturber = NativeEngine(model, tokenizer, 4), Perturber(model)
    engine.prefill_chunk_tokens = chunk_tokens
    batches = engine.prepare(PROMPTS)
    base = engine.generate(batches, 24)
    for sigma in (0.0, 0.01, 0.05, 0.3):
        perturber.apply(3, sigma, "iid")
        scratch = engine.generate(batches, 24)
        for draft in (base, base[1:] + base[:1]):
            drafted = engine.generate(batches, 24, draft=draft)
            assert [(c.text, c.prompt_tokens, c.new_tokens) for c in drafted] == \
                [(c.text, c.prompt_tokens, c.new_tokens) for c in scratch]
        perturber.restore()
    with pytest.raises(ValueError, match="draft"):
        engine.generate(batches, 24, draft=base[:2])


@pytest.mark.parametrize("pass_bytes", [0, None])
def test_progress_reports_every_item_once_as_it_finishes(tiny, pass_bytes):
    model, tokenizer = tiny
    engine = NativeEngine(model, tokenizer, 3)
    engine.pass_bytes = pass_bytes
    calls = []
    completions = engine.generate(engine.prepare(PROMPTS), 24, progress=calls.append)
    assert sum(calls) == len(PROMPTS) and min(calls) >= 1
    assert len(calls) > len({c.new_tokens for c in completions}) // 2  # item by item, not one call per batch


def test_batches_run_together_within_the_cache_budget(tiny):
    model, tokenizer = tiny
    engine = NativeEngine(model, tokenizer, 2)
    batches = engine.prepare(PROMPTS)
    rows = prompt_lists(batches)
    engine.pass_bytes = 0
    assert [len(p) for p in engine._passes(batches, rows, 8)] == [2, 2, 2, 1]
    engine.pass_bytes = None
    assert [len(p) for p in engine._passes(batches, rows, 8)] == [7]


def test_common_prefix_leaves_every_prompt_a_token_of_its_own():
    assert _common_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 4, 6]]) == [1, 2, 3]
    assert _common_prefix([[1, 2, 3], [1, 2, 3]]) == [1, 2]
    assert _common_prefix([[7, 1], [8, 1]]) == []
    assert _common_prefix([[5]]) == []


def test_single_and_identical_prompts_decode_like_generate(tiny):
    model, tokenizer = tiny
    for prompts in ([PROMPTS[0]], [PROMPTS[1]] * 3):
        engine = NativeEngine(model, tokenizer, 4)
        batches = engine.prepare(prompts)
        assert [(c.text, c.prompt_tokens, c.new_tokens) for c in engine.generate(batches, 10)] == \
            old_engine(model, tokenizer, batches, 10)


def test_prefill_chunks_group_rows_within_the_token_budget():
    assert _chunks([9, 8, 8, 3, 2], 18) == [(slice(0, 2), 9), (slice(2, 4), 8), (slice(4, 5), 2)]
    assert _chunks([9, 8, 8, 3, 2], 0) == [(slice(0, 5), 9)]
    assert _chunks([30, 2], 10) == [(slice(0, 1), 30), (slice(1, 2), 2)]  # a long row is a chunk of its own


def test_finished_rows_are_replaced_by_the_last_live_rows():
    assert keep_order([False, True, False, False, False, True, False, False]) == [0, 6, 2, 3, 4, 7]
    assert keep_order([True, True, False]) == [2]
    assert keep_order([False, False]) == [0, 1]


@pytest.mark.parametrize("rows", [[0, 2], [3, 1, 2], [2, 0], [1]])
def test_slab_layer_keeps_rows_in_the_given_order(rows):
    layer = SlabLayer(capacity=5)
    keys = torch.arange(4 * 2 * 3 * 1, dtype=torch.float32).view(4, 2, 3, 1)
    layer.update(keys, -keys)
    layer.batch_select_indices(torch.tensor(rows))
    assert torch.equal(layer.keys, keys[rows]) and torch.equal(layer.values, -keys[rows])
    layer.update(keys[:len(rows), :, :1], keys[:len(rows), :, :1])
    assert layer.keys.shape == (len(rows), 2, 4, 1)


def test_slab_layer_refuses_to_overflow():
    layer = SlabLayer(capacity=4)
    keys = torch.arange(3 * 2 * 3 * 1, dtype=torch.float32).view(3, 2, 3, 1)
    layer.update(keys, -keys)
    with pytest.raises(RuntimeError, match="capacity"):
        layer.update(keys[:2, :, :2], keys[:2, :, :2])
    with pytest.raises(ValueError, match="cache kind"):
        new_cache("paged", 2, 8)
