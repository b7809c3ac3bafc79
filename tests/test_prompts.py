"""roadbuddy.families.internvl.prompts: the chat text, and the prefix/suffix split that lets a clip's frames be shared."""
from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roadbuddy.data.questions import strip_label
from roadbuddy.families.internvl import prompts
from roadbuddy.families.internvl.prompts import (IMG_CONTEXT, IMG_END, IMG_START, SYSTEM_PROMPT, build_prompt,
                                                 choices_text, frames_text, intro_text, prompt_prefix, prompt_suffix,
                                                 question_body, question_text)

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


# --- the whole prompt, as literal text ---------------------------------------

# Written out here, not taken from roadbuddy.families.internvl.prompts: the text the model reads (a change to it is a
# change to every answer, and shows up here as a failing test).
SYSTEM = ("Bạn là trợ lý quan sát các khung hình từ camera hành trình của xe chạy trên đường ở Việt Nam "
          "và trả lời câu hỏi trắc nghiệm về biển báo giao thông, đèn tín hiệu, làn đường, hướng đi "
          "và các phương tiện, theo Luật Giao thông đường bộ Việt Nam. "
          "Chỉ trả lời bằng chữ cái của phương án đúng, không giải thích.")
INTRO = ("Các hình ảnh trên là những khung hình liên tiếp trích từ video camera hành trình "
         "của một xe đang chạy trên đường ở Việt Nam. Hãy quan sát kỹ biển báo giao thông, "
         "đèn tín hiệu, vạch kẻ đường và các phương tiện trong các khung hình.")
DETAILED_PROMPT = (
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    "<|im_start|>user\n"
    "Frame1: <img><IMG_CONTEXT><IMG_CONTEXT></img>\n"
    "Frame2: <img><IMG_CONTEXT><IMG_CONTEXT><IMG_CONTEXT><IMG_CONTEXT></img>\n"
    f"{INTRO}\n"
    "Câu hỏi: Trong video, tốc độ tối đa cho phép là bao nhiêu?\n"
    "A. 50Km/h\n"
    "B. 60Km/h\n"
    "C. 70Km/h\n"
    "D. 80Km/h\n"
    "Chỉ trả lời bằng một chữ cái của phương án đúng (A, B, C hoặc D), không giải thích.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
SIMPLE_PROMPT = (
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n"
    "<|im_start|>user\n"
    "Frame1: <img><IMG_CONTEXT><IMG_CONTEXT></img>\n"
    "Trong video, tốc độ tối đa cho phép là bao nhiêu?\n"
    "A. Đúng\n"
    "B. Sai\n"
    "Trả lời bằng một chữ cái (A hoặc B).<|im_end|>\n"
    "<|im_start|>assistant\n"
)


def test_system_prompt_is_the_literal_text():
    assert SYSTEM_PROMPT == SYSTEM


def test_detailed_prompt_is_the_literal_text_whole_and_as_the_pipeline_splits_it():
    frames = frames_text([1, 2], 2)
    assert build_prompt(frames, question_text(QUESTION, FOUR)) == DETAILED_PROMPT
    # what the pipeline sends: the intro in the shared prefix, the question body per question
    prefix = prompt_prefix(frames + intro_text())
    suffix = prompt_suffix(question_body(QUESTION, FOUR))
    assert prefix + suffix == DETAILED_PROMPT
    assert prefix == DETAILED_PROMPT[:DETAILED_PROMPT.index("Câu hỏi:")]  # the prefix ends after the intro


def test_simple_prompt_is_the_literal_text_whole_and_as_the_pipeline_splits_it():
    frames = frames_text([1], 2)
    assert build_prompt(frames, question_text(QUESTION, TWO, simple=True)) == SIMPLE_PROMPT
    prefix = prompt_prefix(frames + intro_text(simple=True))
    assert prefix + prompt_suffix(question_body(QUESTION, TWO, simple=True)) == SIMPLE_PROMPT
    assert prefix == SIMPLE_PROMPT[:SIMPLE_PROMPT.index(QUESTION)]  # no intro: the frames end the prefix


# (choices, the detailed instruction, the simple one), written out
INSTRUCTIONS = [
    (TWO, "Chỉ trả lời bằng một chữ cái của phương án đúng (A hoặc B), không giải thích.",
     "Trả lời bằng một chữ cái (A hoặc B)."),
    (FOUR, "Chỉ trả lời bằng một chữ cái của phương án đúng (A, B, C hoặc D), không giải thích.",
     "Trả lời bằng một chữ cái (A, B, C hoặc D)."),
    (["Có", "Không", "Không rõ"], "Chỉ trả lời bằng một chữ cái của phương án đúng (A, B hoặc C), không giải thích.",
     "Trả lời bằng một chữ cái (A, B hoặc C)."),
]


@given(st.lists(st.integers(1, 7), min_size=1, max_size=8), st.booleans(), st.sampled_from(INSTRUCTIONS))
def test_split_prompt_is_the_written_out_layout(tiles, simple, case):
    """Any frames and choices: the prefix the pipeline prefills once plus a question's suffix is the chat layout
    written out here (frames numbered from 1, 4 image tokens per tile, intro only in the detailed prompt)."""
    choices, detailed, short = case
    frame_lines = "".join(f"Frame{i}: <img>{'<IMG_CONTEXT>' * 4 * n}</img>\n" for i, n in enumerate(tiles, 1))
    options = "\n".join(f"{'ABCD'[k]}. {c}" for k, c in enumerate(choices))
    body = (f"{QUESTION}\n{options}\n{short}" if simple else
            f"{INTRO}\nCâu hỏi: {QUESTION}\n{options}\n{detailed}")
    expected = (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{frame_lines}{body}<|im_end|>\n"
                "<|im_start|>assistant\n")
    frames = frames_text(tiles, 4)
    sent = prompt_prefix(frames + intro_text(simple)) + prompt_suffix(question_body(QUESTION, choices, simple))
    assert sent == expected
    assert build_prompt(frames, question_text(QUESTION, choices, simple=simple)) == expected


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
