"""The model layer on a tiny random-weight InternVL: loading rules, the shared-prefix path, score mode."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from roadbuddy.config import RunConfig
from roadbuddy.families.checkpoint import ModelLoadError
from roadbuddy.families.internvl import prompts, tiles
from roadbuddy.families.internvl.model import (can_pack, encode_tiles, forward, forward_official, forward_packed,
                                               letter_probs, load_model, new_cache, resolve_model_id, rewind)


def tokenize(lm, text):
    from roadbuddy.families.text_ids import tokenize as ids

    return ids(lm.tokenizer, text)


@pytest.fixture(scope="module")
def lm(tiny_checkpoint):
    return load_model(RunConfig(model=str(tiny_checkpoint), device="cpu"))


def test_sizes_come_from_the_config(lm):
    assert lm.image_size == 56 and lm.tokens_per_tile == 4  # tiny config: 56 px tiles, 4 tokens each
    assert lm.image_token_id == lm.config.image_token_id
    assert set("ABCDEFGH") <= set(lm.letter_ids)
    assert lm.attn_impl == "sdpa"  # no CUDA here


@pytest.mark.parametrize("name,twin", [
    ("OpenGVLab/InternVL3_5-4B", "OpenGVLab/InternVL3_5-4B-HF"),
    ("OpenGVLab/InternVL3_5-8B", "OpenGVLab/InternVL3_5-8B-HF"),
    ("OpenGVLab/InternVL3-2B", "OpenGVLab/InternVL3-2B-hf"),
    ("OpenGVLab/InternVL3_5-4B-HF", "OpenGVLab/InternVL3_5-4B-HF"),
    ("OpenGVLab/InternVL3-1B-hf", "OpenGVLab/InternVL3-1B-hf"),
])
def test_original_ids_map_to_native_twins(name, twin):
    resolved, note = resolve_model_id(name)
    assert resolved == twin
    assert (note is None) == (name == twin)


@pytest.mark.parametrize("flag", ["8bit", "4bit"])
def test_quantization_without_cuda_is_a_clear_error(tiny_checkpoint, flag):
    with pytest.raises(ModelLoadError, match=f"--load-in-{flag} needs a CUDA GPU"):
        load_model(RunConfig(model=str(tiny_checkpoint), device="cpu", quantization=flag))


def test_pickle_only_checkpoint_is_refused(tiny_checkpoint, tmp_path):
    ckpt = tmp_path / "pickled"
    shutil.copytree(tiny_checkpoint, ckpt)
    (ckpt / "model.safetensors").rename(ckpt / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(RunConfig(model=str(ckpt), device="cpu"))


def test_original_format_checkpoint_is_refused(tiny_checkpoint, tmp_path):
    ckpt = tmp_path / "original"
    shutil.copytree(tiny_checkpoint, ckpt)
    config = json.loads((ckpt / "config.json").read_text())
    config["model_type"] = "internvl_chat"
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="remote code"):
        load_model(RunConfig(model=str(ckpt), device="cpu"))


def _prompt(lm, frames: int, question: str, choices):
    prefix = prompts.prompt_prefix(prompts.frames_text([1] * frames, lm.tokens_per_tile))
    suffix = prompts.prompt_suffix(prompts.question_text(question, choices))
    return tokenize(lm, prefix), tokenize(lm, suffix)


def test_pipeline_split_tokenizes_like_the_whole_prompt(lm, real_data_dir):
    """The shared prefix (frames + intro) and each question's suffix, tokenized apart as the pipeline does,
    are the tokens of the whole prompt: moving the intro into the prefix changes nothing the model reads.
    Every real question of the three files."""
    from roadbuddy.config import RunConfig
    from roadbuddy.data.questions import load_questions
    from roadbuddy.families.internvl.inputs import prefix_ids, question_ids

    questions = [q for name in ("train.json", "public_test.json", "private_test.json")
                 for q in load_questions(real_data_dir / name)]
    for simple in (False, True):
        cfg = RunConfig(simple_prompts=simple)
        prefix = prefix_ids(lm.tokenizer, [1, 2], lm.tokens_per_tile, cfg)[0].tolist()
        frames_block = prompts.frames_text([1, 2], lm.tokens_per_tile)
        for q in questions:
            whole = tokenize(lm, prompts.build_prompt(frames_block, prompts.question_text(q.question, q.choices, simple)))
            assert prefix + question_ids(lm.tokenizer, q, cfg)[0].tolist() == whole[0].tolist(), q.id


def test_shared_prefix_equals_full_prompt_and_official_forward(lm):
    torch.manual_seed(1)
    pixels = torch.randn(3, 3, lm.image_size, lm.image_size)
    features = encode_tiles(lm, pixels, batch=2)  # chunked vision tower
    assert features.shape[:2] == (3, lm.tokens_per_tile)
    questions = [("Đèn màu gì?", ["Đỏ", "Xanh", "Vàng", "Tắt"]), ("Có biển báo không?", ["Có", "Không"])]
    cache = new_cache(lm)
    prefix_ids, _ = _prompt(lm, 3, *questions[0])
    forward(lm, prefix_ids, features, cache)
    prefix_len = cache.get_seq_length()
    for text, choices in questions:
        _, suffix_ids = _prompt(lm, 3, text, choices)
        shared = forward(lm, suffix_ids, None, cache)
        rewind(cache, prefix_len)
        full_ids = torch.cat([prefix_ids, suffix_ids], dim=1)
        plain = forward(lm, full_ids, encode_tiles(lm, pixels), new_cache(lm))
        official = forward_official(lm, full_ids, pixels)
        torch.testing.assert_close(shared, plain, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(plain, official, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("lengths", [(1, 1), (5, 17, 2), (40, 3, 11, 1, 26, 9)])
def test_packed_questions_equal_one_at_a_time_and_the_whole_prompt(lm, lengths):
    """forward_packed: each suffix sees the prefix and its own tokens only, at its own positions."""
    torch.manual_seed(len(lengths))
    pixels = torch.randn(4, 3, lm.image_size, lm.image_size)
    features = encode_tiles(lm, pixels)
    prefix_ids, _ = _prompt(lm, 4, "?", ["a", "b"])
    vocab = lm.config.text_config.vocab_size
    suffixes = [torch.randint(10, vocab - 10, (1, n)) for n in lengths]
    cache = new_cache(lm)
    forward(lm, prefix_ids, features, cache)
    prefix_len = cache.get_seq_length()
    packed = forward_packed(lm, suffixes, cache)
    assert packed.shape == (len(lengths), vocab)
    assert cache.get_seq_length() == prefix_len + sum(lengths)
    rewind(cache, prefix_len)
    for i, suffix in enumerate(suffixes):
        alone = forward(lm, suffix, None, cache)
        rewind(cache, prefix_len)
        whole = forward(lm, torch.cat([prefix_ids, suffix], dim=1), features, new_cache(lm))
        torch.testing.assert_close(packed[i], alone, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(packed[i], whole, rtol=1e-4, atol=1e-4)
    # a wrong mask would not be caught by equal lengths: the last suffix must not see the others
    assert not torch.allclose(packed[-1], forward(lm, torch.cat(suffixes, dim=1), None, cache), atol=1e-3)


def test_packing_needs_an_attention_that_takes_a_mask(lm):
    assert can_pack(lm)
    assert not can_pack(dataclasses.replace(lm, attn_impl="flash_attention_2"))


def test_uint8_tiles_are_normalised_where_the_model_runs(lm, monkeypatch):
    """encode_tiles on uint8 tiles (what the pipeline prepares) equals it on the card's float pixel values,
    and the normalisation happens per chunk inside encode_tiles, not before."""
    uint8 = torch.randint(0, 256, (5, 3, lm.image_size, lm.image_size), dtype=torch.uint8)
    floats = tiles.normalize_tiles(uint8)
    seen = []
    real = tiles.normalize_tiles
    monkeypatch.setattr(tiles, "normalize_tiles", lambda x: seen.append(x.shape[0]) or real(x))
    torch.testing.assert_close(encode_tiles(lm, uint8, batch=2), encode_tiles(lm, floats, batch=2), rtol=0, atol=0)
    assert seen == [2, 2, 1]


def test_letter_probs_cover_only_valid_letters(lm):
    logits = torch.zeros(lm.config.text_config.vocab_size)
    logits[lm.letter_ids["E"]] = 100.0  # an invalid letter for a 4-choice question
    logits[lm.letter_ids["C"]] = 1.0
    probs = letter_probs(lm, logits, ("A", "B", "C", "D"))
    assert set(probs) == {"A", "B", "C", "D"}
    assert max(probs, key=probs.get) == "C"
    assert sum(probs.values()) == pytest.approx(1.0)


def test_image_token_count_mismatch_is_caught(lm):
    prefix_ids, _ = _prompt(lm, 2, "?", ["a", "b"])
    features = encode_tiles(lm, torch.randn(3, 3, lm.image_size, lm.image_size))
    with pytest.raises(ValueError, match="image tokens"):
        forward(lm, prefix_ids, features, new_cache(lm))


def test_chunked_prefill_gives_the_same_logits_and_cache(lm):
    torch.manual_seed(2)
    pixels = torch.randn(5, 3, lm.image_size, lm.image_size)
    features = encode_tiles(lm, pixels)
    prefix_ids, suffix_ids = _prompt(lm, 5, "Có bao nhiêu xe?", ["1", "2", "3"])
    whole, chunked = new_cache(lm), new_cache(lm)
    a = forward(lm, prefix_ids, features, whole)
    b = forward(lm, prefix_ids, features, chunked, chunk=7)  # chunk edges fall inside the image tokens
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert whole.get_seq_length() == chunked.get_seq_length() == prefix_ids.shape[1]
    torch.testing.assert_close(forward(lm, suffix_ids, None, whole), forward(lm, suffix_ids, None, chunked),
                               rtol=1e-4, atol=1e-4)


def test_quantization_skips_the_vision_tower_projector_and_lm_head(lm):
    quantizers_utils = pytest.importorskip("transformers.quantizers.quantizers_utils")
    from roadbuddy.families.internvl.model import SKIP_QUANTIZATION

    linears = [name for name, m in lm.model.named_modules() if isinstance(m, torch.nn.Linear)]
    kept = [n for n in linears if not quantizers_utils.should_convert_module(n, SKIP_QUANTIZATION)]
    converted = [n for n in linears if quantizers_utils.should_convert_module(n, SKIP_QUANTIZATION)]
    assert any(n.startswith("model.vision_tower.") for n in kept)
    assert all(n.startswith(("model.vision_tower.", "model.multi_modal_projector.", "lm_head")) for n in kept)
    assert "lm_head" in kept and any(n.startswith("model.multi_modal_projector.") for n in kept)
    assert converted and all(n.startswith("model.language_model.") for n in converted)
