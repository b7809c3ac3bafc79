"""Read a generated multiple-choice answer back into a position letter.

`parse_answer` returns a letter only when the text says so plainly; otherwise
None, and the caller falls back to the scored answer. It never guesses "A".

In order:
  1. what the model said, i.e. the text after a closing </think> (nothing, when
     a <think> never closes), NFKC-normalised so "答案：Ｂ" reads like "答案: B";
  2. the choice texts are masked, so letters inside them ("Cả A và B",
     "Cầu Chữ Y") are not read as answers;
  3. a letter after an answer phrase ("Đáp án: B", "The answer is (C)",
     "答案是D"); phrases that name the answer ("đáp án", "answer", "答案") win
     over phrases that name an option ("phương án", "option", "选项");
  4. otherwise the standalone capital letters left ("B", "(C)", "B. Sai");
  5. otherwise the choice texts themselves ("Sai" -> B), when exactly one
     position has that text.
A letter counts only when it stands alone: "A" in "Anh" is part of a word.
Two different letters, a letter outside the valid range, or a letter whose
trailing text is another choice's text ("A. Sai" when Sai is B) give None.
"""
from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence

from roadbuddy.data.questions import LETTERS

_SPECIAL_TOKEN = re.compile(r"<\|[^|<>]{1,40}\|>")
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"

# Latin markers are whole words; CJK has no spaces, so its markers are not.
_STRONG = r"(?<!\w)(?:đáp\s*án|câu\s*trả\s*lời|trả\s*lời|answer)(?!\w)|答案|答"
_WEAK = r"(?<!\w)(?:phương\s*án|lựa\s*chọn|chọn|option|choice)(?!\w)|选项|選項|选择|選擇|选|選"
# What may sit between a marker and its letter: "Đáp án đúng là: B",
# "The correct answer is (C)", "答案应该是 D", "Answer: **Option B**".
_FILLER = (
    r"(?:[\s:=\-–—>*\"'“”‘’\[\({「『【]"
    r"|(?<!\w)(?:đúng|chính\s*xác|cuối\s*cùng|của\s*tôi|là|sẽ|nên|phải|nhất|phương\s*án|lựa\s*chọn|chọn"
    r"|is|would|should|will|must|be|correct|final|right|my|the|option|choice)(?!\w)"
    r"|是|为|為|应该|應該|正确|正確|选项|選項|选|選)"
)
_STRONG_LETTER = re.compile(rf"(?:{_STRONG}){_FILLER}{{0,12}}([A-Za-z])", re.IGNORECASE)
_WEAK_LETTER = re.compile(rf"(?:{_WEAK}){_FILLER}{{0,12}}([A-Za-z])", re.IGNORECASE)
# "A or B", "A, B", "A và B", "A/B": a second letter listed right after the first.
_ALSO = re.compile(r"\s*(?:[,/&+、，;]|or|and|hoặc|hay|và|或|和|与|與)\s*\(?([A-Za-z])", re.IGNORECASE)
_MASK = "\x00"


def letter_for(index: int) -> str:
    """0 -> "A"."""
    if not 0 <= index < len(LETTERS):
        raise ValueError(f"no letter for choice index {index}")
    return LETTERS[index]


def index_for(letter: str) -> int:
    """"A" -> 0 (lowercase accepted)."""
    if len(letter) != 1 or letter.upper() not in LETTERS:
        raise ValueError(f"not a choice letter: {letter!r}")
    return LETTERS.index(letter.upper())


def parse_answer(text: str, choices: Sequence[str]) -> str | None:
    """The position letter a generated answer names, or None when nothing trustworthy is found."""
    valid = LETTERS[: len(choices)]
    body = _spoken(text or "")
    if not body or not valid:
        return None
    texts = [_norm(unicodedata.normalize("NFKC", c)) for c in choices]
    masked = _mask_choices(body, texts)
    for marker in (_STRONG_LETTER, _WEAK_LETTER):
        found = _marker_letters(marker, masked)
        if found:
            return _accept(found, body, texts, valid)
    found = _standalone_capitals(masked)
    if found:
        return _accept(found, body, texts, valid)
    return _by_choice_text(body, texts)


def _spoken(text: str) -> str:
    """The answer proper: no thinking, no special tokens, NFKC."""
    text = _SPECIAL_TOKEN.sub(" ", unicodedata.normalize("NFKC", text))
    close = text.rfind(_THINK_CLOSE)
    if close >= 0:
        text = text[close + len(_THINK_CLOSE):]
    start = text.find(_THINK_OPEN)
    if start >= 0:  # thinking that never closed: its conclusions are not an answer
        text = text[:start]
    return text.strip()


def _is_word_char(c: str) -> bool:
    # CJK counts as a separator so "答案是D" yields D; Latin letters, digits
    # and combining marks glue a letter into a word ("Anh", "B1", "P.102a").
    return unicodedata.category(c).startswith("M") or (c.isalnum() and ord(c) < 0x2E80)


def _stands_alone(text: str, pos: int) -> bool:
    before = text[pos - 1] if pos > 0 else " "
    after = text[pos + 1] if pos + 1 < len(text) else " "
    return not _is_word_char(before) and not _is_word_char(after)


def _norm(text: str) -> str:
    """Whitespace collapsed, punctuation and spaces trimmed from both ends."""
    return re.sub(r"^[\W_]+|[\W_]+$", "", " ".join(text.split()))


def _mask_choices(body: str, texts: Sequence[str]) -> str:
    """Blank every occurrence of a choice text, keeping positions."""
    for t in sorted({t for t in texts if len(t) > 1}, key=len, reverse=True):
        body = body.replace(t, _MASK * len(t))
    return body


def _marker_letters(marker: re.Pattern, masked: str) -> list[tuple[str, int]]:
    found = []
    for m in marker.finditer(masked):
        pos = m.start(1)
        if not _stands_alone(masked, pos):
            continue
        letter = m.group(1)
        rest = masked[pos + 1:]
        # A lowercase letter counts only when nothing word-like follows it:
        # "đáp án: b" is B, "answer: a red light" is not A.
        if letter.islower() and re.match(r"\s+[^\W_]", rest):
            continue
        found.append((letter.upper(), pos))
        also = _ALSO.match(rest)
        if also and _stands_alone(rest, also.start(1)):
            found.append((also.group(1).upper(), pos + 1 + also.start(1)))
    return found


def _standalone_capitals(masked: str) -> list[tuple[str, int]]:
    found = [(c, i) for i, c in enumerate(masked) if c in LETTERS and _stands_alone(masked, i)]
    if not found:
        only = _norm(masked.replace(_MASK, " "))
        if len(only) == 1 and only.lower() in string.ascii_lowercase:  # a bare "b"
            found = [(only.upper(), masked.index(only))]
    return found


def _accept(found: list[tuple[str, int]], body: str, texts: Sequence[str], valid: str) -> str | None:
    letters = {letter for letter, _ in found}
    if len(letters) != 1:
        return None
    letter = letters.pop()
    if letter not in valid:
        return None
    window = 2 * max(map(len, texts)) + 16  # a longer line cannot be a choice text
    for _, pos in found:
        line = body[pos + 1: pos + 1 + window]
        if "\n" not in line and pos + 1 + window < len(body):
            continue
        named = _choices_equal_to(_norm(line.split("\n", 1)[0]), texts)
        if named and index_for(letter) not in named:  # "A. Sai" when Sai is B
            return None
    return letter


def _choices_equal_to(text: str, texts: Sequence[str]) -> list[int]:
    if not text:
        return []
    exact = [i for i, t in enumerate(texts) if t and t == text]
    return exact or [i for i, t in enumerate(texts) if t and t.casefold() == text.casefold()]


def _by_choice_text(body: str, texts: Sequence[str]) -> str | None:
    """The single choice whose text the answer is, or contains as a whole."""
    named = _choices_equal_to(_norm(body), texts)
    if not named:
        named = _choices_contained(body, texts)
    # A text that several positions share (train_0120 lists its choices twice,
    # train_0405 has "200m" at B and C) names no single letter.
    return letter_for(named[0]) if len(named) == 1 else None


def _choices_contained(body: str, texts: Sequence[str]) -> list[int]:
    spans: dict[int, list[tuple[int, int]]] = {}
    for i, t in enumerate(texts):
        if not t:
            continue
        for m in re.finditer(re.escape(t), body):
            s, e = m.span()
            if (s == 0 or not _is_word_char(body[s - 1])) and (e == len(body) or not _is_word_char(body[e])):
                spans.setdefault(i, []).append((s, e))
    # "Cấm đỗ" inside "Cấm đỗ xe" is the longer choice, not a second one.
    def inside_longer(i: int) -> bool:
        return all(any(j != i and len(texts[j]) > len(texts[i]) and s2 <= s and e <= e2
                       for j in spans for s2, e2 in spans[j])
                   for s, e in spans[i])
    return [i for i in spans if not inside_longer(i)]
