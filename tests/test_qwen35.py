"""Qwen3.5, the hybrid: what differs from the other Qwen families (tests/test_qwen_families.py runs every shared
test on it too: the processor-logits identity on the shared prefix and the plain path, sparse frames, detail
frames, generate mode, permutations, the pipeline's paths, the OOM ladder, --debias).

Its linear-attention layers keep a recurrent state that cannot be cut back, so questions run on copies of the
prefix's state (as rows of one batch in score mode) and are never packed into one sequence; nothing of one
question may reach the next.
"""
from __future__ import annotations

import json
import re

import pytest
import torch

from roadbuddy.config import ConfigError, RunConfig
from roadbuddy.data.questions import load_questions
from roadbuddy.families import registry
from roadbuddy.families.qwen3_5 import family as qwen35_family
from roadbuddy.testing.qwen_checkpoints import write_tiny_qwen_checkpoint


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    directory = write_tiny_qwen_checkpoint(tmp_path_factory.mktemp("qwen3_5"), "qwen3_5")
    return registry.load_model(RunConfig(model=str(directory), device="cpu"))


def run(lm, data, out, **changes) -> dict[str, dict]:
    from roadbuddy.predict import pipeline

    cfg = RunConfig(model="tiny", test_json=data, output=out / "submission.csv", device="cpu", progress=False,
                    min_frames=4, max_frames=4, **changes)
    pipeline.run(cfg, model_loader=lambda _c: lm, say=lambda _m: None)
    return {r["id"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines())}


def test_nothing_of_one_question_reaches_the_next(lm, synthetic_dataset, tmp_path):
    """The questions of every clip answered in the file's order and in reverse (clips and questions): the same
    records, and the same as --no-share-prefix, where each question is prefilled whole. A question run on the
    prefix's own state, or on a copy made after another question ran, would differ."""
    doc = json.loads(synthetic_dataset.read_text(encoding="utf-8"))
    doc["data"].reverse()
    reversed_file = synthetic_dataset.parent / "reversed.json"
    reversed_file.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    forward = run(lm, synthetic_dataset, tmp_path / "forward", support_frames=False)
    backward = run(lm, reversed_file, tmp_path / "backward", support_frames=False)
    plain = run(lm, synthetic_dataset, tmp_path / "plain", support_frames=False, share_prefix=False)
    assert len(forward) == len(load_questions(synthetic_dataset)) and set(forward) == set(backward)
    for qid, record in forward.items():
        assert backward[qid]["probs"] == pytest.approx(record["probs"], abs=2e-6), qid
        assert plain[qid]["probs"] == pytest.approx(record["probs"], abs=2e-6), qid


@pytest.mark.parametrize("mode", ["batch", "one-at-a-time", "generate"])
def test_questions_run_on_copies_of_the_prefix_state_which_is_never_cut_back(lm, synthetic_dataset, tmp_path,
                                                                             monkeypatch, mode):
    """Score mode's questions go in as rows of one batch on copies of the prefix state (never packed into one
    sequence); with --no-batch-questions and in generate mode each runs on its own copy. The prefix's cache is
    never cut back (Cache.crop raises here, as it does on the linear-attention layers without past recording)."""
    from transformers import DynamicCache

    from roadbuddy.families.qwen3_5 import batch

    def refuse(*_a, **_k):
        raise AssertionError("a Qwen3.5 cache was cut back")

    monkeypatch.setattr(DynamicCache, "crop", refuse)
    batched, branched = [], []
    real_batch, real_branch = batch.extend_batch, qwen35_family.QWEN3_5.branch
    monkeypatch.setattr(batch, "extend_batch",
                        lambda lm_, s, c, st: batched.append(len(s)) or real_batch(lm_, s, c, st))
    monkeypatch.setattr(qwen35_family.QWEN3_5, "branch", lambda cache: branched.append(cache) or real_branch(cache))
    changes = {"batch": {}, "one-at-a-time": {"batch_questions": False},
               "generate": {"answer_mode": "generate", "max_new_tokens": 2}}[mode]
    records = run(lm, synthetic_dataset, tmp_path, support_frames=False, **changes)
    total = len(load_questions(synthetic_dataset))
    assert len(records) == total and not [r for r in records.values() if "error" in r]
    if mode == "batch":  # every clip with more than one question is one batch; a lone question runs on a copy
        assert sum(batched) + len(branched) == total and max(batched) > 1
    else:
        assert not batched and len(branched) == total


def test_the_prompt_answers_without_thinking(lm):
    """The chat template opens the assistant turn in thinking mode unless told not to: the suffix closes an empty
    think block, so the next token is the answer."""
    from roadbuddy.families.qwen_vl.inputs import chat_texts

    _, suffix = chat_texts(lm.ops.input_spec(lm), RunConfig())
    assert suffix == "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


@pytest.mark.parametrize("version, refused", [("5.6.2", True), ("5.7.0", False), ("5.25.0", False)])
def test_releases_that_drop_the_cached_state_are_refused(monkeypatch, version, refused):
    monkeypatch.setattr(qwen35_family, "transformers_version", lambda: version)
    if not refused:
        qwen35_family.QWEN3_5.check_config(RunConfig())
        return
    with pytest.raises(ConfigError) as err:
        qwen35_family.QWEN3_5.check_config(RunConfig())
    assert str(err.value).startswith("Qwen3.5 needs transformers >= 5.7.0") and version in str(err.value)


def test_lora_reaches_the_linear_attention_layers(lm):
    """LoRA's targets: the attention and MLP projections by name and every linear-attention layer's projections
    (where three layers in four mix tokens); nothing of the vision tower."""
    from roadbuddy.finetune.config import TrainConfig

    regex = lm.ops.lora_targets(TrainConfig().targets, False)
    linears = [n for n, m in lm.model.named_modules() if isinstance(m, torch.nn.Linear)]
    targeted = {n for n in linears if re.fullmatch(regex, n)}
    layers = lm.config.text_config.layer_types
    for i, kind in enumerate(layers):
        mixing = {"linear_attention": qwen35_family.LINEAR_ATTENTION,
                  "full_attention": ("q_proj", "k_proj", "v_proj", "o_proj")}[kind]
        part = "linear_attn" if kind == "linear_attention" else "self_attn"
        for name in mixing:
            assert f"model.language_model.layers.{i}.{part}.{name}" in targeted
        assert f"model.language_model.layers.{i}.mlp.down_proj" in targeted
    assert not [n for n in targeted if "visual" in n]


def test_the_vram_estimate_keeps_keys_and_values_of_the_attention_layers_only(lm):
    """KV per token counts the full-attention layers (one in four); the fixed recurrent and convolution states of
    the others are added once, and the cache twice over (the prefix's and the question's copy)."""
    from roadbuddy.predict import memory

    config = lm.config
    text = config.text_config
    terms = lm.ops.memory_terms(config)
    assert terms.kv_layers == text.layer_types.count("full_attention") == 1
    per_token = memory.kv_bytes_per_token(config)
    assert per_token == 2 * 1 * text.num_key_value_heads * text.head_dim * 2
    recurrent = text.linear_num_value_heads * text.linear_key_head_dim * text.linear_value_head_dim * 4
    conv = (2 * text.linear_num_key_heads * text.linear_key_head_dim
            + text.linear_num_value_heads * text.linear_value_head_dim) * text.linear_conv_kernel_dim * 2
    assert terms.state_bytes == 3 * (recurrent + conv)
    est = memory.estimate_vram(config, quantization=None, prompt_tokens=1000, vision_batch=32, visual_tokens=500)
    assert est.kv_cache == 2 * (1000 * per_token + terms.state_bytes)
