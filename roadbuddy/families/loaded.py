"""A loaded model of any family: the module, its tokenizer (and processor), where it runs, and the family
(roadbuddy.families.protocol) whose functions the pipeline calls on it."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    attn_impl: str
    letter_ids: dict[str, int]
    stop_ids: set[int]
    source: str  # "trained" or "random" weights, and where from
    notes: list[str] = field(default_factory=list)
    cache_kwarg: str = "past_key_values"  # transformers 5.25 renamed it `cache` for some families
    family: str = "internvl"
    parameters: int = 0  # every parameter, shared ones once (the challenge caps it at 8B)
    # InternVL: the tile size, image tokens per tile and the image token (families.internvl)
    image_size: int = 0
    tokens_per_tile: int = 0
    image_token_id: int = -1
    # Qwen families: the checkpoint's processor and the module whose get_rope_index lays out the positions
    processor: object = None
    rope_index: object = None

    @property
    def config(self):
        return self.model.config

    @property
    def ops(self):
        """The family's functions (roadbuddy.families.protocol.Family)."""
        from roadbuddy.families import registry

        return registry.ops(self.family)


def letter_token_ids(tokenizer, letters) -> dict[str, int]:
    """The single-token id of each answer letter (a letter that is not one token is left out)."""
    ids = {}
    for letter in letters:
        encoded = tokenizer.encode(letter, add_special_tokens=False)
        if len(encoded) == 1:
            ids[letter] = encoded[0]
    return ids


def stop_token_ids(tokenizer) -> set[int]:
    """The tokens that end an answer: the tokenizer's end of sequence and the chat turn's end."""
    return {i for i in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")) if i is not None}


def cache_kwarg_of(model) -> str:
    """The forward's name for the KV cache: `cache` in families transformers 5.25 renamed, else past_key_values."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
