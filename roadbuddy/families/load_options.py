"""How any family's weights load: the attention implementation and the bitsandbytes quantization."""
from __future__ import annotations

import importlib.util

import torch

from roadbuddy.families.checkpoint import ModelLoadError


def pick_attention(device: torch.device, want_flash: bool, fused: bool = False) -> str:
    """flash_attention_2 when asked for and importable on CUDA; else --fused-attention's function; else SDPA."""
    if want_flash and device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    if fused:
        from roadbuddy.families import attention

        return attention.register()
    return "sdpa"


def quantization_config(kind: str | None, device: torch.device, skip: list[str]):
    if kind is None:
        return None
    flag = "--load-in-8bit" if kind == "8bit" else "--load-in-4bit"
    if device.type != "cuda":
        raise ModelLoadError(f"{flag} needs a CUDA GPU (bitsandbytes quantized kernels); this run is on {device.type}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(f"{flag} needs bitsandbytes: pip install 'roadbuddy[quant]'")
    from transformers import BitsAndBytesConfig

    # `skip` is the family's list of modules kept in bf16 (the vision tower and projector: quantizing them
    # hurts accuracy for little memory, and 8-bit InternVL has NaN reports). transformers 5.x matches these
    # as regexes anchored at the start of the full module name ("vision_tower" alone silently matched
    # nothing: the bench measured the tower quantized), while older releases matched substrings; the
    # full prefixes work with both.
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
        llm_int8_skip_modules=skip,
    )
