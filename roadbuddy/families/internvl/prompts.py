"""The chat text InternVL3.5 reads: system prompt, frames, question, choices.

Layout (Qwen chat template, see shared/INTERNVL.md "Prompt format"):

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n
    Frame1: <img><IMG_CONTEXT>...</img>\\n
    ...
    {intro}                                        <- the shared prefix ends here
    {question body}<|im_end|>\\n<|im_start|>assistant\\n   <- prompt_suffix

The shared prefix holds only what is the same for every question about a clip
(the system prompt, the frames and the detailed prompt's intro), so the pipeline
prefills it once and each question only prefills its suffix. The words themselves
(system prompt, intro, question and choices) are every family's: families/wording.py.
"""
from __future__ import annotations

from collections.abc import Sequence

from roadbuddy.families.wording import (INTERNVL_SYSTEM_PROMPT, SYSTEM_PROMPT, SYSTEM_PROMPTS,  # noqa: F401
                                       choices_text, intro_text, letters, letters_phrase, question_body,
                                       question_text, system_text)

IMG_START = "<img>"
IMG_END = "</img>"
IMG_CONTEXT = "<IMG_CONTEXT>"


def frames_text(tiles_per_frame: Sequence[int], tokens_per_tile: int) -> str:
    """"Frame{i}: <img>" + IMG_CONTEXT * (tokens_per_tile * tiles) + "</img>\\n" per frame, i from 1."""
    if tokens_per_tile < 1:
        raise ValueError(f"tokens_per_tile must be at least 1 (got {tokens_per_tile})")
    parts = []
    for i, tiles in enumerate(tiles_per_frame, start=1):
        if tiles < 1:
            raise ValueError(f"frame {i} has {tiles} tiles; every frame needs at least one")
        parts.append(f"Frame{i}: {IMG_START}{IMG_CONTEXT * (tokens_per_tile * int(tiles))}{IMG_END}\n")
    return "".join(parts)


def prompt_prefix(frames: str, system: str | None = SYSTEM_PROMPT) -> str:
    """System turn (none when `system` is None) and the start of the user turn up to the end of the frames."""
    turn = f"<|im_start|>system\n{system}<|im_end|>\n" if system is not None else ""
    return f"{turn}<|im_start|>user\n{frames}"


def prompt_suffix(question_block: str) -> str:
    """The rest of the user turn and the opening of the assistant turn."""
    return f"{question_block}<|im_end|>\n<|im_start|>assistant\n"


def build_prompt(frames: str, question_block: str, system: str = SYSTEM_PROMPT) -> str:
    return prompt_prefix(frames, system) + prompt_suffix(question_block)
