"""The benchmark runs end to end on tiny models (so it cannot rot), including its GPU mode on
CPU with a tiny shape, and its FLOP count and near-tie check are right."""
from __future__ import annotations

import json

import pytest
import torch

from bench import measure, shapes, throughput
from bench.workloads import Output, near_tie
from harness.engine.native import _eos_ids, _until_eos
from harness.engine.model import load_model


def test_cpu_bench_prints_the_headline_json_last(tiny_model_dir, data_dir, tmp_path, capsys, one_thread):
    out = tmp_path / "results.json"
    headline = throughput.main(["--model", tiny_model_dir, "--data-dir", data_dir, "--arith-items", "6",
                                "--gsm8k-items", "3", "--gsm8k-tokens", "6", "--rounds", "2,1", "--out", str(out)])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == headline and tuple(headline)[:len(throughput.HEADLINE)] == throughput.HEADLINE
    assert {"speedup_draft_arith", "same_draft_arith", "speedup_draft_gsm8k", "same_draft_gsm8k",
            "flop_ratio_arith", "flop_ratio_gsm8k"} <= set(headline)
    assert headline["flop_ratio_arith"] > 1  # the shared prefix is run once, not per item
    assert headline["same_arith"] == headline["same_gsm8k"] == 1.0  # no near-ties on these few items
    assert 0 < headline["peak_fraction_arith"] and 0 < headline["perturb_restore_share"] < 1
    assert 0 < headline["perturb_restore_share_released"] < 1
    report = json.loads(out.read_text())
    arith = report["workloads"]["arith"]
    assert len(arith["bare"]["seconds"]) == len(arith["engine"]["seconds"]) == 2
    assert arith["engine"]["shared_prefix_tokens"] > 0


def test_gpu_mode_runs_on_cpu_with_a_tiny_shape_and_merges_records(tmp_path, one_thread):
    record = tmp_path / "throughput.json"
    args = ["--shapes", "tiny", "--device", "cpu", "--items", "5", "--new-tokens", "4", "--rounds", "1",
            "--record", str(record)]
    throughput.main([*args, "--in-flight", "1,2"])
    data = json.loads(record.read_text())
    assert data["format"] == shapes.FORMAT
    assert [(r["contender"], r["members_in_flight"]) for r in data["records"]] == [("bare", 1), ("engine", 1), ("engine", 2)]
    for r in data["records"]:
        assert r["shape"] == "tiny" and r["device_name"] == "cpu" and r["new_tokens"] == 4
        assert r["prefill_tokens_per_s"] > 0 and r["tokens_per_s"] > 0 and r["prompt_tokens_mean"] > 60
    # replaces its own record only; engine_static is the engine's passes through generate's static cache
    throughput.main([*args, "--contenders", "engine,engine_static", "--in-flight", "1"])
    again = json.loads(record.read_text())["records"]
    assert [(r["contender"], r["members_in_flight"]) for r in again] == [("bare", 1), ("engine", 2), ("engine", 1),
                                                                          ("engine_static", 1)]


def test_real_shapes_have_their_published_sizes():
    sizes = {"qwen2.5-0.5b-instruct": 0.494e9, "qwen2.5-1.5b-instruct": 1.544e9, "qwen2.5-3b-instruct": 3.086e9}
    for name, params in sizes.items():
        config, hub_id, _ = shapes.shape_config(name)
        with torch.device("meta"):
            from transformers import AutoModelForCausalLM
            model = AutoModelForCausalLM.from_config(config)
        assert hub_id.lower().endswith(name) and abs(sum(p.numel() for p in model.parameters()) / params - 1) < 1e-3


def test_flop_counter_counts_linear_attention_and_head(tiny_model_dir):
    model, _ = load_model(tiny_model_dir)
    c = model.config  # hidden 32, intermediate 64, 2 layers, 2 heads (head_dim 16), 1 KV head
    linear = c.num_hidden_layers * (32 * 32 + 2 * 16 * 32 + 32 * 32 + 3 * 32 * 64)
    flops = measure.FlopCounter(model)
    assert flops.linear == linear and flops.head == c.vocab_size * 32
    # 3 prompt tokens and 2 generated: 4 tokens fed at positions 0..3, logits twice
    attention = 4 * 2 * 2 * 16 * (1 + 2 + 3 + 4)
    assert flops.item(3, 2) == 2 * linear * 4 + attention + 2 * 2 * flops.head
    assert flops.item(3, 2, cached=2) + flops.prefix(2) == flops.item(3, 2)
    assert flops.padded_batch(5, 3, 2) == 5 * flops.item(3, 2)


def test_bare_flops_pad_each_batch_to_its_longest_prompt_and_output(tiny_model_dir):
    flops = measure.FlopCounter(load_model(tiny_model_dir)[0])
    outs = [Output("", [1] * new, prompt) for prompt, new in ((3, 1), (5, 2), (4, 4))]
    # batch of 2: both rows fed 5 prompt tokens and decoded 2 steps; batch of 1: as it is
    assert throughput.bare_flops(flops, outs, 2) == 2 * flops.item(5, 2) + flops.item(4, 4)
    assert throughput.bare_flops(flops, outs, 3) == 3 * flops.item(5, 4) > sum(flops.item(o.prompt_tokens, len(o.ids))
                                                                              for o in outs)


def test_near_tie_finds_where_outputs_part_and_the_gap_there(tiny_model_dir):
    model, tokenizer = load_model(tiny_model_dir)
    prompt = "user: what is 12 + 30?\nassistant:"
    ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    eos = _eos_ids(model, tokenizer)
    with torch.inference_mode():
        greedy = _until_eos(model.generate(**ids, max_new_tokens=6, do_sample=False, eos_token_id=eos,
                                           pad_token_id=tokenizer.pad_token_id)[0, ids.input_ids.shape[1]:].tolist(), eos)
        logits = model(input_ids=torch.cat([ids.input_ids, torch.tensor([greedy[:2]])], 1)).logits[0, -1]
    second = int(torch.topk(logits, 2).indices[1])
    tie = near_tie(model, tokenizer, prompt, greedy, greedy[:2] + [second])
    assert tie["position"] == 2 and tie["top2_are_the_two"]
    assert tie["top2_gap"] == pytest.approx(float(torch.topk(logits, 2).values.diff().abs()), abs=1e-4)
