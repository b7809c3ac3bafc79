"""Text to token ids, the one way every family does it."""
from __future__ import annotations

import torch


def tokenize(tokenizer, text: str, *, as_text: bool = False) -> torch.Tensor:
    """Token ids [1, T] of `text`; with as_text, special-token strings in it ('<IMG_CONTEXT>', '<|im_end|>',
    '<|video_pad|>') are read as plain text, so a question file cannot inject image slots or end the user turn."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=as_text, return_tensors="pt").input_ids
