"""The project's words to the model, the same for every family: the system prompt, the intro before the
questions, a question with its lettered choices and the instruction to answer with one letter.

Letters are positions (A, B, C, ...): the files' printed labels cannot be trusted, so callers pass
choices already stripped of them. Each family wraps these in its own chat format (families/*/).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence

from roadbuddy.data.questions import LETTERS

# A fixed system prompt keeps InternVL3.5 out of its <think> mode and asks
# every family for a letter. English gloss:
# "You are an assistant that watches frames from a dashcam on Vietnamese roads
# and answers multiple-choice questions about traffic signs, traffic lights,
# lanes, directions of travel and vehicles, following Vietnamese road traffic
# law. Answer with the letter of the correct option only, no explanation."
SYSTEM_PROMPT = (
    "Bạn là trợ lý quan sát các khung hình từ camera hành trình của xe chạy trên đường ở Việt Nam "
    "và trả lời câu hỏi trắc nghiệm về biển báo giao thông, đèn tín hiệu, làn đường, hướng đi "
    "và các phương tiện, theo Luật Giao thông đường bộ Việt Nam. "
    "Chỉ trả lời bằng chữ cái của phương án đúng, không giải thích."
)

# The original InternVL chat's default system message (its remote-code `model.chat` sends it): "You are
# InternVL (书生·万象), a multimodal large language model jointly developed by Shanghai AI Laboratory,
# Tsinghua University and partner institutions."
INTERNVL_SYSTEM_PROMPT = ("你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的"
                          "多模态大语言模型。")
# --system-prompt: the project's Vietnamese prompt, none (what the -HF checkpoints' chat template sends),
# the original InternVL default, or the text of a file
SYSTEM_PROMPTS = {"project": SYSTEM_PROMPT, "none": None, "internvl": INTERNVL_SYSTEM_PROMPT}


def system_text(choice: str) -> str | None:
    """The system prompt a --system-prompt value names: a name of SYSTEM_PROMPTS, or a UTF-8 file's text."""
    if choice in SYSTEM_PROMPTS:
        return SYSTEM_PROMPTS[choice]
    return _file_text(choice)


@functools.lru_cache(maxsize=8)
def _file_text(path: str) -> str:
    from pathlib import Path

    return Path(path).read_text(encoding="utf-8").strip()


# English gloss: "The images above are consecutive frames from the dashcam video
# of a car driving on a Vietnamese road. Look carefully at the traffic signs,
# traffic lights, lane markings and vehicles in the frames."
_DETAILED_INTRO = (
    "Các hình ảnh trên là những khung hình liên tiếp trích từ video camera hành trình "
    "của một xe đang chạy trên đường ở Việt Nam. Hãy quan sát kỹ biển báo giao thông, "
    "đèn tín hiệu, vạch kẻ đường và các phương tiện trong các khung hình."
)


def letters(num_choices: int) -> str:
    """The valid position letters for a question with this many choices."""
    if not 1 <= num_choices <= len(LETTERS):
        raise ValueError(f"a question needs 1 to {len(LETTERS)} choices (got {num_choices})")
    return LETTERS[:num_choices]


def letters_phrase(num_choices: int) -> str:
    """"A, B, C hoặc D" (Vietnamese "or"); "A" alone for a single choice."""
    valid = letters(num_choices)
    if len(valid) == 1:
        return valid
    return ", ".join(valid[:-1]) + " hoặc " + valid[-1]


def choices_text(choices: Sequence[str]) -> str:
    """One line per choice, "A. text", lettered by position."""
    valid = letters(len(choices))
    return "\n".join(f"{letter}. {choice}" for letter, choice in zip(valid, choices))


def intro_text(simple: bool = False) -> str:
    """The question-independent start of the question block: the detailed intro and a newline, or ""
    with --simple-prompts. It ends the shared prefix, so a clip's questions prefill it once."""
    return "" if simple else f"{_DETAILED_INTRO}\n"


def question_body(question: str, choices: Sequence[str], simple: bool = False) -> str:
    """The question-specific rest of the question block (what each question prefills on its own)."""
    options = choices_text(choices)
    valid = letters_phrase(len(choices))
    if simple:
        # "Answer with one letter (A, B, C or D)."
        return f"{question}\n{options}\nTrả lời bằng một chữ cái ({valid})."
    # "Question: ... / <choices> / Answer with ONLY the letter of the correct
    # option (A, B, C or D), no explanation."
    return (
        f"Câu hỏi: {question}\n"
        f"{options}\n"
        f"Chỉ trả lời bằng một chữ cái của phương án đúng ({valid}), không giải thích."
    )


def question_text(question: str, choices: Sequence[str], simple: bool = False) -> str:
    """The question block: everything in the user turn after the frames (intro, question, choices,
    instruction). The pipeline sends `intro_text` with the frames and `question_body` per question;
    the text, and so the prompt, is the same."""
    return intro_text(simple) + question_body(question, choices, simple)
