"""roadbuddy.prompts: the chat text, and the prefix/suffix split that lets a clip's frames be shared."""
from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roadbuddy import prompts
from roadbuddy.data import strip_label
from roadbuddy.prompts import (IMG_CONTEXT, IMG_END, IMG_START, SYSTEM_PROMPT, build_prompt, choices_text,
                               frames_text, intro_text, prompt_prefix, prompt_suffix, question_body,
                               question_text)

QUESTION = "Trong video, tốc độ tối đa cho phép là bao nhiêu?"
FOUR = ["50Km/h", "60Km/h", "70Km/h", "80Km/h"]
TWO = ["Đúng", "Sai"]


def _has_vietnamese_diacritics(text: str) -> bool:
    return any(unicodedata.decomposition(c) and not c.isascii() for c in text) or "đ" in text.lower()


def _offered_letters(block: str) -> set[str]:
    """Standalone capital letters in the final instruction line."""
    last = block.rstrip().splitlines()[-1]
    return set(re.findall(r"(?<![^\W\d_])[A-Z](?![^\W\d_])", last))


# --- frames ---------------------------------------------------------------

@given(st.lists(st.integers(1, 13), min_size=1, max_size=16), st.sampled_from([1, 4, 64, 256]))
def test_frames_text_counts_and_numbers_frames(tiles, tokens_per_tile):
    text = frames_text(tiles, tokens_per_tile)
    assert text.count(IMG_CONTEXT) == tokens_per_tile * sum(tiles)
    assert text.count(IMG_START) == text.count(IMG_END) == len(tiles)
    assert re.findall(r"Frame(\d+): <img>", text) == [str(i) for i in range(1, len(tiles) + 1)]
    lines = text.splitlines(keepends=True)
    assert len(lines) == len(tiles)
    for line, n in zip(lines, tiles):
        assert line.endswith(f"{IMG_END}\n")
        assert line.count(IMG_CONTEXT) == n * tokens_per_tile


def test_frames_text_exact_shape():
    assert frames_text([1, 2], 2) == (f"Frame1: <img>{IMG_CONTEXT * 2}</img>\n"
                                      f"Frame2: <img>{IMG_CONTEXT * 4}</img>\n")
    assert frames_text([], 256) == ""


@pytest.mark.parametrize("tiles,tokens", [([1, 0], 4), ([1], 0)])
def test_frames_text_refuses_empty_frames(tiles, tokens):
    with pytest.raises(ValueError):
        frames_text(tiles, tokens)


# --- choices and questions ------------------------------------------------

def test_choices_are_lettered_by_position_not_by_printed_label():
    raw = ["A. 50Km/h", "B. 60Km/h", "B. 70Km/h", "B. 80Km/h"]  # train_0788's repeated labels
    assert choices_text([strip_label(c) for c in raw]).splitlines() == [
        "A. 50Km/h", "B. 60Km/h", "C. 70Km/h", "D. 80Km/h"]


def test_eight_choices_reach_h():
    text = choices_text([f"lựa chọn {i}" for i in range(8)])
    assert [line[:2] for line in text.splitlines()] == ["A.", "B.", "C.", "D.", "E.", "F.", "G.", "H."]


@pytest.mark.parametrize("choices", [[], [str(i) for i in range(27)]])
def test_choice_counts_without_letters_are_refused(choices):
    with pytest.raises(ValueError):
        choices_text(choices)
    with pytest.raises(ValueError):
        question_text(QUESTION, choices)


@pytest.mark.parametrize("simple", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 8])
def test_instruction_names_exactly_the_valid_letters(n, simple):
    choices = [f"phương án số {i}" for i in range(n)]
    block = question_text(QUESTION, choices, simple=simple)
    assert _offered_letters(block) == set(prompts.letters(n))
    assert choices_text(choices) in block
    assert QUESTION in block


def test_two_choice_instruction_offers_a_and_b_only():
    for simple in (False, True):
        block = question_text(QUESTION, TWO, simple=simple)
        assert "A hoặc B" in block
        assert _offered_letters(block) == {"A", "B"}
        assert "C hoặc" not in block and "(A, B" not in block


def test_detailed_template():
    block = question_text(QUESTION, FOUR)
    assert block.splitlines()[1:] == [
        f"Câu hỏi: {QUESTION}",
        "A. 50Km/h", "B. 60Km/h", "C. 70Km/h", "D. 80Km/h",
        "Chỉ trả lời bằng một chữ cái của phương án đúng (A, B, C hoặc D), không giải thích.",
    ]
    assert "camera hành trình" in block.splitlines()[0]


def test_simple_template():
    assert question_text(QUESTION, TWO, simple=True) == (
        f"{QUESTION}\nA. Đúng\nB. Sai\nTrả lời bằng một chữ cái (A hoặc B).")


def test_system_prompt_and_templates_are_vietnamese():
    assert _has_vietnamese_diacritics(SYSTEM_PROMPT)
    assert "<think>" not in SYSTEM_PROMPT
    for simple in (False, True):
        instruction = question_text("x", ["y", "z"], simple=simple).splitlines()[-1]
        assert _has_vietnamese_diacritics(instruction)
    assert _has_vietnamese_diacritics(question_text("x", ["y", "z"]).splitlines()[0])


# --- the prefix/suffix split ------------------------------------------------

@given(st.lists(st.integers(1, 7), min_size=1, max_size=8), st.booleans(),
       st.sampled_from([TWO, FOUR, ["Có", "Không", "Không rõ"]]))
def test_prefix_plus_suffix_is_the_whole_prompt(tiles, simple, choices):
    frames = frames_text(tiles, 4)
    block = question_text(QUESTION, choices, simple=simple)
    assert prompt_prefix(frames) + prompt_suffix(block) == build_prompt(frames, block)


@given(st.lists(st.integers(1, 7), min_size=1, max_size=8), st.booleans(),
       st.sampled_from([TWO, FOUR, ["Có", "Không", "Không rõ"]]))
def test_intro_in_the_shared_prefix_leaves_the_prompt_unchanged(tiles, simple, choices):
    """The pipeline ends the shared prefix with the intro and sends only the question body per question."""
    frames = frames_text(tiles, 4)
    moved = prompt_prefix(frames + intro_text(simple)) + prompt_suffix(question_body(QUESTION, choices, simple))
    assert moved == build_prompt(frames, question_text(QUESTION, choices, simple=simple))


def test_intro_is_question_independent_and_absent_from_the_body():
    assert intro_text(simple=True) == ""
    intro = intro_text()
    assert intro.endswith("\n") and QUESTION not in intro and "A." not in intro
    body = question_body(QUESTION, FOUR)
    assert body.startswith(f"Câu hỏi: {QUESTION}\n") and intro.strip() not in body
    assert question_text(QUESTION, FOUR) == intro + body


def test_prefix_holds_frames_and_ends_after_the_last_image():
    frames = frames_text([3, 1, 2], 16)
    prefix = prompt_prefix(frames)
    assert prefix.endswith("</img>\n")
    assert prefix.startswith(f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nFrame1: ")
    assert prefix.count(IMG_CONTEXT) == 16 * 6
    assert QUESTION not in prefix


def test_suffix_holds_the_question_and_nothing_about_frames():
    block = question_text(QUESTION, FOUR)
    suffix = prompt_suffix(block)
    assert suffix == f"{block}<|im_end|>\n<|im_start|>assistant\n"
    assert QUESTION in suffix
    for frame_marker in (IMG_START, IMG_END, IMG_CONTEXT, "Frame1"):
        assert frame_marker not in suffix


def test_full_prompt_layout():
    prompt = build_prompt(frames_text([1], 2), "Q", system="S")
    assert prompt == (f"<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n"
                      f"Frame1: <img>{IMG_CONTEXT * 2}</img>\nQ<|im_end|>\n<|im_start|>assistant\n")


def test_prefix_is_shared_across_questions_of_a_clip():
    frames = frames_text([2, 2], 4)
    first = build_prompt(frames, question_text(QUESTION, FOUR))
    second = build_prompt(frames, question_text("Có biển báo cấm không?", ["Có", "Không"]))
    prefix = prompt_prefix(frames)
    assert first.startswith(prefix) and second.startswith(prefix)
