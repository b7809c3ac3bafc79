"""roadbuddy.predict.answers: reading generated answers back into position letters."""
from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roadbuddy.data.questions import load_questions
from roadbuddy.predict.answers import index_for, letter_for, parse_answer

LIGHT = ["Đỏ", "Xanh", "Vàng", "Không có đèn"]
YES_NO = ["Có", "Không"]
TRUE_FALSE = ["Đúng", "Sai"]
SPEED = ["50 km/h", "60 km/h", "80 km/h", "100 km/h"]
BOTH = ["Biển cấm đỗ", "Biển cấm dừng", "Cả A và B", "Cả A và B đều sai"]  # letters inside choice texts
SIGNS = ["Cấm đỗ", "Cấm đỗ xe", "Cấm quay đầu", "Cấm vượt"]  # one choice inside another
EIGHT = ["Giới hạn 100 km/h", "Cách 100 mét", "Cấm quá 100 mét", "Cấm xe 100 tấn"] * 2  # train_0120

# Choice texts from the real files, tricky ones included, for the properties.
REAL_CHOICES = [
    "Đúng", "Sai", "Có", "Không", "Đi thẳng", "Rẽ trái", "Rẽ phải", "Vòng quay đầu", "0", "1", "2", "3",
    "50Km/h", "60Km/h", "100 km/h và 80 km/h", "Cả A và B", "Cả A và B đều đúng", "Cả A và B đều sai",
    "Cầu Chữ Y", "Biển báo cấm, Biển hiệu lệnh", "Đường không bằng phẳng", "Xe máy",
    "Biển chỉ dẫn số điện thoại khẩn cấp", "Giao nhau với đường không ưu tiên", "Cấm đỗ",
]

PARSED = [
    # bare letters and labels
    ("B", LIGHT, "B"),
    ("B.", LIGHT, "B"),
    ("  C\n", LIGHT, "C"),
    ("(C)", LIGHT, "C"),
    ("[D]", LIGHT, "D"),
    ("**B**", LIGHT, "B"),
    ("B)", LIGHT, "B"),
    ("B. Sai", TRUE_FALSE, "B"),
    ("A. Đúng", TRUE_FALSE, "A"),
    ("A: Có", YES_NO, "A"),
    ("D. 100 km/h", SPEED, "D"),
    ("C.80 km/h", SPEED, "C"),
    ("B vì đèn đang màu xanh", LIGHT, "B"),
    ("B<|im_end|>", LIGHT, "B"),
    ("Ｃ", LIGHT, "C"),  # full-width, as Chinese-leaning output writes it
    ("b", LIGHT, "B"),
    ("c.", LIGHT, "C"),
    # Vietnamese answer phrases
    ("Đáp án: B", LIGHT, "B"),
    ("Đáp án B", LIGHT, "B"),
    ("Đáp án đúng là C", LIGHT, "C"),
    ("Đáp án đúng là: **D. Không có đèn**", LIGHT, "D"),
    ("ĐÁP ÁN: A", LIGHT, "A"),
    ("đáp án: b", LIGHT, "B"),
    ("đáp án là c.", LIGHT, "C"),
    ("Câu trả lời: B", LIGHT, "B"),
    ("Câu trả lời đúng là A. Đỏ", LIGHT, "A"),
    ("Trả lời: D", LIGHT, "D"),
    ("Chọn đáp án B vì xe đang rẽ trái.", LIGHT, "B"),
    ("Tôi chọn C", LIGHT, "C"),
    ("Phương án đúng: A", LIGHT, "A"),
    ("Phương án B. Không", YES_NO, "B"),
    ("Quan sát khung hình 3, đèn chuyển xanh. Đáp án: B", LIGHT, "B"),
    ("Đáp án: \"B\"", LIGHT, "B"),
    # English
    ("The answer is (C)", LIGHT, "C"),
    ("The answer is C.", LIGHT, "C"),
    ("Answer: D", LIGHT, "D"),
    ("answer: b", LIGHT, "B"),
    ("The correct answer is B. Xanh", LIGHT, "B"),
    ("I think the answer is B", LIGHT, "B"),
    ("Option B", LIGHT, "B"),
    ("Final answer: **A**", LIGHT, "A"),
    ("Answer: Option C", LIGHT, "C"),
    # Chinese
    ("答案是D", LIGHT, "D"),
    ("答案：B", LIGHT, "B"),
    ("答案: C", LIGHT, "C"),
    ("正确答案是 B。", LIGHT, "B"),
    ("答：A", LIGHT, "A"),
    ("选C", LIGHT, "C"),
    ("选项B", LIGHT, "B"),
    ("答案应该是D", LIGHT, "D"),
    # thinking that closes: only what follows counts
    ("<think>Đèn đỏ ở khung 1, nên A? Không, khung 4 là xanh.</think>\n\nB", LIGHT, "B"),
    ("<think>\nA or C\n</think>\nĐáp án: D", LIGHT, "D"),
    ("</think>C", LIGHT, "C"),
    # the choice text without its letter
    ("Sai", TRUE_FALSE, "B"),
    ("Sai.", TRUE_FALSE, "B"),
    ("sai", TRUE_FALSE, "B"),
    ("Có", YES_NO, "A"),
    ("Không", YES_NO, "B"),
    ("Không có biển báo cấm", YES_NO, "B"),
    ("Xanh", LIGHT, "B"),
    ("Không có đèn", LIGHT, "D"),
    ("Đèn đang Vàng", LIGHT, "C"),
    ("80 km/h", SPEED, "C"),
    ("Đáp án: Sai", TRUE_FALSE, "B"),
    ("Cấm đỗ xe", SIGNS, "B"),  # the longer choice, not also "Cấm đỗ"
    ("Cấm đỗ", SIGNS, "A"),
    # letters inside choice texts are not answers
    ("C", BOTH, "C"),
    ("C. Cả A và B", BOTH, "C"),
    ("D. Cả A và B đều sai", BOTH, "D"),
    ("Cả A và B", BOTH, "C"),
    ("Cả A và B đều sai", BOTH, "D"),
    ("Đáp án: Cả A và B", BOTH, "C"),
    # a repeated choice list: letters still count by position
    ("F", EIGHT, "F"),
    ("E. Giới hạn 100 km/h", EIGHT, "E"),
    ("Đáp án: H", EIGHT, "H"),
]

REFUSED = [
    ("", LIGHT),
    ("   \n", LIGHT),
    ("Tôi không biết", LIGHT),
    ("Không thể xác định từ video.", LIGHT),
    ("I cannot tell from these frames.", LIGHT),
    ("Anh ấy đang rẽ trái", LIGHT),
    ("Ảnh không rõ", LIGHT),
    # out of range
    ("E", LIGHT),
    ("Đáp án: E", LIGHT),
    ("(F)", LIGHT),
    ("C", TRUE_FALSE),
    ("Đáp án là C", YES_NO),
    ("答案是E", LIGHT),
    # ambiguous
    ("A or B", LIGHT),
    ("A, B", LIGHT),
    ("A/B", LIGHT),
    ("A và B", LIGHT),
    ("A hoặc C", LIGHT),
    ("Đáp án: A và B", LIGHT),
    ("Đáp án: B, C", LIGHT),
    ("Đáp án A sai, đáp án đúng là C", LIGHT),
    ("I think B", LIGHT),
    ("Đỏ hoặc Xanh", LIGHT),
    ("Có hoặc Không", YES_NO),
    ("Giới hạn 100 km/h", EIGHT),  # a text at two positions (A and E) names neither
    ("200m", ["1km", "200m", "200m", "Không có thông tin"]),  # train_0405
    # the letter says one thing and the choice text another
    ("A. Sai", TRUE_FALSE),
    ("The answer is C. Đỏ", LIGHT),
    # thinking that never closes
    ("<think>Đèn xanh, vậy đáp án là B", LIGHT),
    ("<think>\nB\n", LIGHT),
    ("<think>B</think", LIGHT),
    # lowercase letters that are words
    ("answer: a red light", LIGHT),
    ("đáp án: a b c", LIGHT),
    ("the light is green", LIGHT),
    ("Ô tô", LIGHT),
    # no choices, nothing valid
    ("A", []),
]


@pytest.mark.parametrize("text,choices,expected", PARSED, ids=[repr(t)[:40] for t, _, _ in PARSED])
def test_parses_realistic_outputs(text, choices, expected):
    assert parse_answer(text, choices) == expected


@pytest.mark.parametrize("text,choices", REFUSED, ids=[repr(t)[:40] for t, _ in REFUSED])
def test_refuses_untrustworthy_outputs(text, choices):
    assert parse_answer(text, choices) is None


def test_never_defaults_to_a():
    for text in ["", "?", "...", "Không rõ", "<think>", "\x00"]:
        assert parse_answer(text, LIGHT) is None


def test_nfd_input_reads_like_nfc():
    import unicodedata

    assert parse_answer(unicodedata.normalize("NFD", "Không"), YES_NO) == "B"
    assert parse_answer(unicodedata.normalize("NFD", "Đáp án: B"), LIGHT) == "B"


def test_letter_index_round_trip():
    for i, letter in enumerate(string.ascii_uppercase):
        assert letter_for(i) == letter
        assert index_for(letter) == i
    assert index_for("c") == 2
    for bad in (-1, 26):
        with pytest.raises(ValueError):
            letter_for(bad)
    for bad in ("", "AB", "1", "Đ"):
        with pytest.raises(ValueError):
            index_for(bad)


# --- properties -------------------------------------------------------------

choice_lists = st.lists(st.sampled_from(REAL_CHOICES), min_size=2, max_size=8, unique=True)


@given(st.text(), choice_lists)
def test_any_text_gives_none_or_a_valid_letter(text, choices):
    assert parse_answer(text, choices) in {None, *string.ascii_uppercase[: len(choices)]}


@given(st.text(alphabet=st.sampled_from(list("ABCDEFGHabcdeđĐ .:()<>/thinkáàếệ答案是\n*"))), choice_lists)
def test_letter_heavy_text_gives_none_or_a_valid_letter(text, choices):
    assert parse_answer(text, choices) in {None, *string.ascii_uppercase[: len(choices)]}


@given(choice_lists, st.data())
def test_wrapped_letters_parse_back(choices, data):
    index = data.draw(st.integers(0, len(choices) - 1))
    letter = letter_for(index)
    wrapper = data.draw(st.sampled_from([
        "{L}", "{L}.", "({L})", "Đáp án: {L}", "Đáp án đúng là {L}", "The answer is ({L})", "答案是{L}",
        "{L}. {text}", "Đáp án: {L}. {text}", "<think>A hay B? C?</think>\n{L}",
    ]))
    assert parse_answer(wrapper.format(L=letter, text=choices[index]), choices) == letter


@given(choice_lists, st.data())
def test_unlisted_letters_are_refused(choices, data):
    letter = data.draw(st.sampled_from(string.ascii_uppercase[len(choices):]))
    assert parse_answer(f"Đáp án: {letter}", choices) is None
    assert parse_answer(letter, choices) is None


# --- the real files -------------------------------------------------------

def test_every_train_answer_parses_back(real_data_dir):
    questions = load_questions(real_data_dir / "train.json")
    for q in questions:
        expected = q.answer  # the position letter of the file's answer string
        text = q.choices[index_for(expected)]
        for output in (expected, f"{expected}. {text}", f"Đáp án: {expected}", f"({expected})"):
            assert parse_answer(output, q.choices) == expected, (q.id, output)
        # the bare choice text names its letter unless another choice repeats or contains it
        if not any(text in other for i, other in enumerate(q.choices) if i != index_for(expected)):
            assert parse_answer(text, q.choices) == expected, (q.id, text)
