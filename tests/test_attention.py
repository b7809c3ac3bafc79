"""--fused-attention (roadbuddy/families/attention.py) computes what transformers' SDPA path computes: every kind of
call the pipeline and fine-tuning make, on the tiny model, against the default attention."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from roadbuddy.config import RunConfig
from roadbuddy.data.questions import group_by_video, load_questions
from roadbuddy.families import attention
from roadbuddy.families.internvl.model import (encode_tiles, forward, forward_packed, greedy, load_model, new_cache,
                                               rewind)
from roadbuddy.predict import answering, inputs


@pytest.fixture(scope="module")
def models(tiny_checkpoint):
    plain = load_model(RunConfig(model=str(tiny_checkpoint), device="cpu"))
    fused = load_model(RunConfig(model=str(tiny_checkpoint), device="cpu", fused_attention=True))
    assert plain.attn_impl == "sdpa" and fused.attn_impl == attention.NAME
    return plain, fused


def test_the_function_matches_sdpa_for_each_kind_of_call():
    torch.manual_seed(0)
    sdpa = torch.nn.functional.scaled_dot_product_attention

    class Causal:
        is_causal = True

    for q_len, kv_len in ((7, 7), (5, 12), (1, 9)):  # prefill, chunk or suffix after a cache, decode
        q, k, v = torch.randn(1, 4, q_len, 8), torch.randn(1, 2, kv_len, 8), torch.randn(1, 2, kv_len, 8)
        allowed = torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)  # bottom-right causal
        expected = sdpa(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), attn_mask=allowed)
        got, _ = attention.fused_sdpa_attention(Causal(), q, k, v, None)
        assert torch.allclose(got, expected.transpose(1, 2), atol=1e-6), (q_len, kv_len)
        mask = torch.zeros(1, 1, q_len, kv_len).masked_fill(~allowed, float("-inf"))  # an explicit 4D mask
        got, _ = attention.fused_sdpa_attention(Causal(), q, k, v, mask)
        assert torch.allclose(got, expected.transpose(1, 2), atol=1e-6)


def test_masked_calls_repeat_kv_and_the_others_keep_grouped_heads():
    """Which SDPA call each kind of attention call makes. On CUDA only flash takes grouped-query heads and
    flash takes no mask, so a masked call with grouped heads would leave the math kernel (fp32 scores for the
    packed pass): masked calls get K/V repeated to every query head, which the memory-efficient kernel takes;
    the unmasked ones keep grouped heads (enable_gqa) for flash."""
    from torch.overrides import TorchFunctionMode

    calls = []

    class Recorder(TorchFunctionMode):  # sees each SDPA call as made (kernels dispatch below it)
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.nn.functional.scaled_dot_product_attention:
                key, value = args[1:3]
                calls.append((key.shape[1], value.shape[1], kwargs.get("enable_gqa", False),
                              kwargs.get("attn_mask") is not None))
            return func(*args, **kwargs)

    class Causal:
        is_causal = True

    q, k, v = torch.randn(1, 4, 5, 8), torch.randn(1, 2, 12, 8), torch.randn(1, 2, 12, 8)
    mask = torch.zeros(1, 1, 5, 12)
    with Recorder():
        attention.fused_sdpa_attention(Causal(), q, k, v, mask)
        attention.fused_sdpa_attention(Causal(), q, k, v, None)  # suffix after a cache: bottom-right causal
        attention.fused_sdpa_attention(Causal(), q[:, :, :1], k, v, None)  # a decode step
        attention.fused_sdpa_attention(Causal(), torch.randn(1, 4, 12, 8), k, v, None)  # prefill
    assert calls == [(4, 4, False, True),  # masked: K/V repeated to the 4 query heads, no enable_gqa
                     (2, 2, True, True), (2, 2, True, False), (2, 2, True, False)]  # grouped heads, flash's way
    assert attention.grouped_heads(q, k, v, masked=True) is False
    assert attention.grouped_heads(q, k, v, masked=False) is True
    assert attention.grouped_heads(q, q, q, masked=False) is False  # as many K/V heads as queries: nothing to group


@pytest.mark.gpu
def test_on_cuda_masked_calls_reach_the_memory_efficient_kernel():
    """On a GPU: with only the memory-efficient kernel allowed, a masked grouped-head call runs (PyTorch's SDPA
    documentation: grouped heads work only on flash and math, so with a mask they would need the math kernel);
    unmasked ones run on flash alone."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    class Causal:
        is_causal = True

    def t(*shape):
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16)

    q, k, v = t(1, 32, 64, 128), t(1, 8, 512, 128), t(1, 8, 512, 128)
    mask = torch.zeros(1, 1, 64, 512, device="cuda", dtype=torch.bfloat16)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        got, _ = attention.fused_sdpa_attention(Causal(), q, k, v, mask)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(4, 1),
                                                                v.repeat_interleave(4, 1), attn_mask=mask)
    assert torch.allclose(got, expected.transpose(1, 2), atol=2e-2)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        attention.fused_sdpa_attention(Causal(), t(1, 32, 512, 128), k, v, None)  # causal prefill
        attention.fused_sdpa_attention(Causal(), q, k, v, None)  # bottom-right causal after a cache


def test_prefill_chunks_suffixes_packs_and_decode_equal_the_default(models, synthetic_dataset):
    plain, fused = models
    questions = load_questions(synthetic_dataset)
    video, qs = group_by_video(questions)[-1]  # the clip with three questions
    cfg = RunConfig(support_frames=False)
    clip = inputs.prepare_clip(video, qs, cfg, inputs.InputSpec.of(plain))
    group = clip.groups[0]
    out = {}
    for name, lm in (("plain", plain), ("fused", fused)):
        features = encode_tiles(lm, clip.tiles)[group.tile_rows]
        cache = new_cache(lm)
        prefix = forward(lm, group.prefix_ids, features, cache, chunk=24)  # several chunks after the first
        length = cache.get_seq_length()
        suffixes = [group.suffix_ids[q.id] for q in qs]
        one = forward(lm, suffixes[0], None, cache)
        text = greedy(lm, one, cache, 4)
        rewind(cache, length)
        packed = forward_packed(lm, suffixes, cache)
        out[name] = (features, prefix, one, text, packed)
    for a, b in zip(out["plain"], out["fused"], strict=True):
        if isinstance(a, str):
            assert a == b
        else:
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_the_pipeline_answers_alike_with_fused_attention(models, synthetic_dataset):
    plain, fused = models
    cfg = RunConfig(prefetch=0)
    for video, qs in group_by_video(load_questions(synthetic_dataset)):
        clip = inputs.prepare_clip(video, qs, cfg, inputs.InputSpec.of(plain))
        a = list(answering.answer_clip(plain, clip, cfg))
        b = list(answering.answer_clip(fused, clip, cfg))
        # every question answered, and as many fused records: a fused run that answered none passed a plain zip
        assert sorted(r["id"] for r in a) == sorted(q.id for q in qs)
        for ra, rb in zip(a, b, strict=True):
            assert ra["answer"] == rb["answer"] and ra["probs"] == pytest.approx(rb["probs"], abs=1e-5)


def test_fine_tuning_loss_is_the_same_with_fused_attention(models, synthetic_dataset):
    from roadbuddy.finetune import data as train_data
    from roadbuddy.finetune.loss import answer_loss

    plain, fused = models
    questions = load_questions(synthetic_dataset)
    cfg = RunConfig(prefetch=0)
    losses = []
    for lm in (plain, fused):
        examples = list(train_data.iter_examples(questions, list(range(4)), cfg, inputs.InputSpec.of(lm)))
        feats = [encode_tiles(lm, e.clip_tiles)[e.tile_rows].clone() for e in examples]
        with torch.no_grad():  # right-padded batch of 4: causality keeps real tokens off the padding
            losses.append(answer_loss(dataclasses.replace(lm), examples, feats,
                                      lm.tokenizer.convert_tokens_to_ids("<|im_end|>"))[0])
    assert losses[0] == pytest.approx(float(losses[1]), rel=1e-5)
