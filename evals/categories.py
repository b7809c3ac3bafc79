"""Question categories, read from the question text (and, for yes/no, the choices).

A question can fall in several categories ("có bao nhiêu làn được phép rẽ
trái?" counts lanes and asks about turns), so per-category accuracies overlap
and their counts sum to more than the number of questions; a question that
matches no rule is "other". Matching is on the NFC-normalised, lower-cased
text; every rule is one regular expression (see CATEGORIES, in report order).
Measured on the 1,490 train questions: every rule fires on at least 24 of them
and 18 (1.2%) are "other" (tests/test_eval_report.py checks the real file).
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

# name -> (what it means, pattern on the question text)
CATEGORIES: dict[str, tuple[str, str]] = {
    "yes_no": (
        "two choices that are a yes/no pair (Đúng/Sai, Có/Không, Phải/Không phải, Được/Không được, ...) "
        "or a question ending in 'đúng hay sai?'",
        r"đúng hay sai\s*\??\s*$|đúng không\s*\??\s*$",
    ),
    "which_signs": (
        "which signs (or kinds of sign) appear: 'biển' near 'xuất hiện', 'biển ... nào', 'những/các/loại biển', "
        "'có ... biển ... không', 'báo hiệu ... nào'",
        r"biển[^?]{0,30}xuất hiện|xuất hiện[^?]{0,30}biển|biển( báo)?( \w+){0,3} nào\b|(những|các|loại) (loại )?(biển|báo hiệu)"
        r"|\bcó\b[^?]*biển[^?]*không|báo hiệu[^?]{0,20} nào\b",
    ),
    "sign_meaning": (
        "what a sign means or says: 'ý nghĩa', 'nghĩa là', 'biểu thị', 'nội dung', 'cho biết', 'là biển gì', "
        "'cảnh báo/báo hiệu (điều) gì', 'hướng dẫn', 'thông tin'",
        r"ý nghĩa|nghĩa là|biểu thị|nội dung|cho biết|thông tin|hướng dẫn|là (biển|biển báo) gì|là gì\s*\??$"
        r"|(cảnh báo|báo hiệu|chỉ dẫn|thể hiện)[^?]*\bgì\b",
    ),
    "counting": (
        "how many things: 'bao nhiêu' or 'mấy' before a countable noun (biển, làn, lần, loại, xe, hướng, ...), "
        "or 'số lượng'",
        r"(bao nhiêu|\bmấy\b)\s+(\w+\s+)?(biển|làn|lần|loại|xe|phương tiện|hướng|ngã|cột|đèn|vạch|người|cái"
        r"|chiếc|tấm|nhánh|lối|cổng|trạm|cầu)|số lượng",
    ),
    "speed_limit": (
        "speed: 'tốc độ', 'km/h'",
        r"tốc độ|km/h",
    ),
    "distance": (
        "distances, heights and weights: 'khoảng cách', 'bao xa', 'cách ... bao nhiêu', 'chiều cao', "
        "'trọng lượng', 'tải trọng', metres or kilometres",
        r"khoảng cách|bao xa|cách[^?]*bao nhiêu|chiều cao|trọng lượng|tải trọng|\d\s*(m|km)\b|\bmét\b|\bkm\b(?!/)",
    ),
    "lanes": (
        "lanes and road markings: 'làn', 'vạch', 'dải phân cách', 'phân làn'",
        r"làn|vạch|dải phân cách",
    ),
    "turns_allowed": (
        "directions and turns: 'rẽ', 'quay đầu', 'đi thẳng', 'hướng nào', 'hướng đi', 'đi theo hướng'",
        r"\brẽ\b|quay đầu|đi thẳng|hướng nào|hướng đi|theo hướng|chuyển hướng",
    ),
    "order": (
        "which came first or last: 'đầu tiên', 'cuối cùng', 'sau cùng', 'lần lượt', 'thứ tự', "
        "'xuất hiện trước/sau', 'đầu/cuối video'",
        r"đầu tiên|cuối cùng|sau cùng|lần lượt|thứ tự|trước tiên|xuất hiện (trước|sau)|(đầu|cuối)( đoạn)? video",
    ),
    "traffic_light": (
        "traffic lights: 'đèn'",
        r"\bđèn\b",
    ),
    "vehicles": (
        "which vehicles: 'phương tiện nào', 'loại xe', 'xe nào', 'loại phương tiện', 'áp dụng cho'",
        r"phương tiện nào|loại phương tiện|loại xe|xe nào|áp dụng (cho|đối với)",
    ),
    "destinations": (
        "where a guide sign leads: 'địa điểm', 'đi đến', 'dẫn đến/tới', 'đi đâu', 'về đâu', 'hướng chính', "
        "'huyện', 'lối ra'",
        r"địa điểm|đi đến|dẫn (đến|tới)|đi đâu|về đâu|hướng chính|huyện|lối ra",
    ),
    "road_scene": (
        "what the road or the traffic is like: 'đặc điểm', 'tình trạng', 'mô tả', 'cấu trúc', 'tổ chức giao thông', "
        "'khu vực nào', 'công trình'",
        r"đặc điểm|tình trạng|mô tả|cấu trúc|tổ chức giao thông|khu vực nào|công trình",
    ),
    "rules": (
        "what is allowed or required: 'được phép', 'có được', 'cấm', 'quy định', 'vi phạm', 'tuân thủ', "
        "'phải' meaning must (not 'bên/rẽ/phía phải', right), 'nên', 'hành động'",
        r"được phép|có được|\bcấm\b|quy định|vi phạm|tuân thủ|\bnên\b|hành động|bắt buộc"
        r"|(?<!bên )(?<!rẽ )(?<!phía )(?<!tay )(?<!lề )(?<!làn )(?<!có )\bphải\b(?! không)",
    ),
}
OTHER = "other"
ORDER = [*CATEGORIES, OTHER]

_PATTERNS = {name: re.compile(pattern) for name, (_, pattern) in CATEGORIES.items()}
_YES_NO_WORDS = {"đúng", "sai", "có", "không", "phải", "không phải", "được", "không được", "được phép",
                 "không được phép", "có thể", "không thể"}


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).lower().split())


def is_yes_no(choices: Sequence[str]) -> bool:
    """Two choices that are both yes/no words ("Đúng"/"Sai", "Có"/"Không", ...)."""
    return len(choices) == 2 and all(_norm(c).strip(" .!") in _YES_NO_WORDS for c in choices)


def categorize(question: str, choices: Sequence[str] = ()) -> list[str]:
    """The categories of one question, in CATEGORIES order; ["other"] when no rule matches.

    `choices` are the label-stripped choice texts (Question.choices); they only decide yes/no.
    """
    text = _norm(question)
    found = [name for name, pattern in _PATTERNS.items() if pattern.search(text)]
    if is_yes_no(choices) and "yes_no" not in found:
        found.insert(0, "yes_no")
    return found or [OTHER]


def describe() -> list[tuple[str, str]]:
    """(category, rule in words) for the report and the README."""
    return [(name, words) for name, (words, _) in CATEGORIES.items()] + [(OTHER, "no rule matched")]
