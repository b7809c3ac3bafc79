"""roadbuddy.testing.qwen_vocab: the real Qwen vocabulary, built offline from the dashscope wheel.

The expected ids are written out here from Qwen3's published tokenizer files (not read from
the module), so a change to the module's table fails these tests. Where the vocabulary cannot
be had (no cache, no wheel, no network) the tests that need it skip with the reason.
"""
from __future__ import annotations

import subprocess
import sys

import pytest

from roadbuddy.families.internvl import prompts
from roadbuddy.testing import qwen_vocab
from roadbuddy.testing.qwen_vocab import QwenVocabMismatch, QwenVocabUnavailable, qwen_tokenizer

PUBLISHED_IDS = {"A": 32, "B": 33, "C": 34, "D": 35, "E": 36, " A": 362, " B": 425, " C": 356, " D": 422}

SPECIAL_IDS = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646, "<|object_ref_end|>": 151647, "<|box_start|>": 151648,
    "<|box_end|>": 151649, "<|quad_start|>": 151650, "<|quad_end|>": 151651,
    "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<tool_call>": 151657, "</tool_call>": 151658,
    "<|fim_prefix|>": 151659, "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661, "<|fim_pad|>": 151662,
    "<|repo_name|>": 151663, "<|file_sep|>": 151664, "<tool_response>": 151665,
    "</tool_response>": 151666, "<think>": 151667, "</think>": 151668,
    "<img>": 151669, "</img>": 151670, "<IMG_CONTEXT>": 151671,
}
IMG_CONTEXT_ID = 151671


@pytest.fixture(scope="session")
def qwen():
    try:
        return qwen_tokenizer()
    except QwenVocabMismatch:
        raise  # a different file is a failure, never a skip
    except QwenVocabUnavailable as exc:
        pytest.skip(f"real Qwen vocabulary unavailable: {exc}")


def _ids(tok, text: str, **kwargs) -> list[int]:
    return tok(text, add_special_tokens=False, **kwargs).input_ids


@pytest.mark.parametrize("text, token_id", sorted(PUBLISHED_IDS.items()))
def test_published_ids(qwen, text, token_id):
    assert _ids(qwen, text) == [token_id]


def test_vocabulary_size_and_roles(qwen):
    assert len(qwen) == 151672  # 151,643 ranks + 29 added tokens; the model's 151,936 rows are padding
    assert (qwen.eos_token, qwen.eos_token_id) == ("<|im_end|>", 151645)
    assert (qwen.pad_token, qwen.pad_token_id) == ("<|endoftext|>", 151643)
    assert qwen.bos_token is None and qwen.bos_token_id is None
    assert qwen("A").input_ids == [32]  # add_special_tokens adds no bos and no eos


@pytest.mark.parametrize("content, token_id", sorted(SPECIAL_IDS.items(), key=lambda kv: kv[1]))
def test_special_token_at_its_id(qwen, content, token_id):
    assert qwen.convert_tokens_to_ids(content) == token_id
    assert _ids(qwen, content) == [token_id]
    assert qwen.decode([token_id]) == content


def test_img_context_is_one_token(qwen):
    assert _ids(qwen, prompts.IMG_CONTEXT * 3) == [IMG_CONTEXT_ID] * 3
    frames = prompts.frames_text([1, 2], tokens_per_tile=256)
    ids = _ids(qwen, prompts.prompt_prefix(frames))
    assert ids.count(IMG_CONTEXT_ID) == 3 * 256
    assert ids.count(SPECIAL_IDS["<img>"]) == ids.count(SPECIAL_IDS["</img>"]) == 2
    assert ids[0] == SPECIAL_IDS["<|im_start|>"] and ids.count(SPECIAL_IDS["<|im_end|>"]) == 1


def test_split_special_tokens_reads_img_context_in_a_question_as_text(qwen):
    question = f"Trong video có {prompts.IMG_CONTEXT} hay <|im_end|> không?"
    as_token = _ids(qwen, question)
    assert IMG_CONTEXT_ID in as_token and SPECIAL_IDS["<|im_end|>"] in as_token  # the test can tell
    as_text = _ids(qwen, question, split_special_tokens=True)
    assert IMG_CONTEXT_ID not in as_text and SPECIAL_IDS["<|im_end|>"] not in as_text
    assert len(_ids(qwen, prompts.IMG_CONTEXT, split_special_tokens=True)) > 1
    assert qwen.decode(as_text) == question


def test_vietnamese_roundtrip_over_train_json(qwen, real_data_dir):
    from roadbuddy.data.questions import load_questions

    questions = load_questions(real_data_dir / "train.json")
    texts = [q.question for q in questions] + [c for q in questions for c in q.choices]
    total_tokens = total_bytes = 0
    for text in texts:
        ids = _ids(qwen, text)
        assert qwen.decode(ids) == text, text
        total_tokens += len(ids)
        total_bytes += len(text.encode("utf-8"))
    # a real vocabulary holds whole Vietnamese syllables; a toy or byte-level one does not
    assert total_tokens < total_bytes / 2.5, (total_tokens, total_bytes)


def test_decomposed_vietnamese_is_normalised_as_qwen_does(qwen):
    import unicodedata

    text = "Biển báo cấm rẽ trái ở đường Việt Nam"
    decomposed = unicodedata.normalize("NFD", text)
    assert decomposed != text
    assert _ids(qwen, decomposed) == _ids(qwen, text)  # Qwen's tokenizer.json starts with NFC


def test_later_calls_load_the_cache_without_the_ranks(qwen, monkeypatch):
    cached = qwen_vocab.default_cache_dir() / qwen_vocab.CACHE_NAME
    if not cached.is_file():
        pytest.skip(f"no cached tokenizer at {cached} (read-only cache?)")
    monkeypatch.setenv(qwen_vocab.ENV_VAR, "/nonexistent/qwen.tiktoken")  # any rebuild would raise
    assert _ids(qwen_tokenizer(), " D") == [422]


# --- without the vocabulary: the refusals ----------------------------------------------------

def test_a_different_ranks_file_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "qwen.tiktoken"
    fake.write_bytes(b"IQ== 0\nIg== 1\n")
    monkeypatch.setenv(qwen_vocab.ENV_VAR, str(fake))
    with pytest.raises(QwenVocabMismatch, match="sha256"):
        qwen_tokenizer(tmp_path / "cache")
    assert not (tmp_path / "cache" / qwen_vocab.CACHE_NAME).exists()


def test_a_pointer_to_nothing_is_one_clear_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv(qwen_vocab.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(QwenVocabUnavailable) as err:
        qwen_tokenizer(tmp_path / "cache")
    message = str(err.value)
    assert qwen_vocab.ENV_VAR in message and message.endswith(".") and "\n" not in message
    assert not isinstance(err.value, QwenVocabMismatch)


def test_importing_the_module_loads_no_torch():
    code = "import sys, roadbuddy.testing.qwen_vocab; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_qwen_prompts_measure_with_the_real_vocabulary(qwen, family, real_data_dir):
    """bench.prompt_lengths --family: a Qwen question suffix (the published chat template's turn end after the
    project's words) is token for token InternVL's, so their lengths agree over the real questions; Qwen2.5-VL's
    prefix text does not grow with frames, Qwen3-VL's grows by a timestamp per frame pair."""
    from bench.prompt_lengths import measure, measure_qwen
    from roadbuddy.data.questions import load_questions

    questions = load_questions(real_data_dir / "train.json")[:200]
    internvl = measure(qwen, questions, frames=32)
    many, few = measure_qwen(qwen, questions, family, frames=32), measure_qwen(qwen, questions, family, frames=2)
    assert [many[k] for k in ("suffix_mean", "suffix_p95", "suffix_max")] == \
        [internvl[k] for k in ("suffix_mean", "suffix_p95", "suffix_max")]
    grown = many["prefix_text_tokens"] - few["prefix_text_tokens"]
    assert grown == 0 if family == "qwen2_5_vl" else grown >= 15 * 6, grown  # "<t.t seconds>" + start/end a pair
