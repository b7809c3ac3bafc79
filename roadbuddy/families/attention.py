"""--fused-attention: the language model's masked attention calls without a materialised mask (issue 14).

transformers' SDPA integration passes `is_causal` only when no mask is given and the query is as long as
the keys, and repeats K/V to every query head whenever a mask is given (4x for Qwen3-4B). So the prefill
chunks after the first (2,048 queries on a longer cache), each question's suffix on the cached prefix and
the decode steps all run masked, non-flash kernels on repeated K/V. This attention function is registered
with transformers under its own name, so transformers builds no mask for it at all (a custom attention
gets none); it then asks SDPA for what the call needs: causal aligned to the bottom right (PyTorch's
`causal_lower_right`, which SDPA dispatches to its fused kernels) when the queries follow a cache, plain
causal when they fill it, full attention for the vision tower and for single-token decode steps, with
`enable_gqa` instead of repeated K/V where the flash kernel can run. An explicit 4D mask (the packed question
suffixes) is used as given, with K/V repeated: on CUDA only flash takes grouped heads and flash takes no mask,
so a masked grouped call would leave SDPA the math kernel (fp32 scores for the whole packed pass), while
repeated K/V reach the memory-efficient kernel, which takes the mask (`grouped_heads`). Padding is never
masked: the pipeline sends one sequence at a time, and fine-tuning pads on the right, where causality alone
keeps real tokens from seeing the padding.

Same numbers as SDPA up to float rounding (tests/test_attention.py); whether it is faster is a GPU
question (bench/README.md).
"""
from __future__ import annotations

import torch
from torch.nn.attention.bias import causal_lower_right

NAME = "roadbuddy_fused_sdpa"


def fused_sdpa_attention(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                         is_causal: bool | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query [B, H, q, D], key/value [B, Hkv, k, D] ->
    ([B, q, H, D], None)."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    q_len, kv_len = query.shape[2], key.shape[2]
    gqa = grouped_heads(query, key, value, masked=attention_mask is not None, dropout=dropout)
    if not gqa and query.shape[1] != key.shape[1]:
        groups = query.shape[1] // key.shape[1]
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    common = dict(dropout_p=dropout, scale=scaling, enable_gqa=gqa)
    if attention_mask is not None:
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, **common)
    elif not causal or q_len == 1:
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, **common)
    elif q_len == kv_len:
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, is_causal=True, **common)
    else:
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=causal_lower_right(q_len, kv_len), **common)
    return out.transpose(1, 2).contiguous(), None


def grouped_heads(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *, masked: bool,
                  dropout: float = 0.0) -> bool:
    """Whether to hand SDPA the grouped-query heads as they are (`enable_gqa`) rather than K/V repeated to
    every query head. On CUDA only the flash kernel takes grouped heads (PyTorch's SDPA documentation:
    enable_gqa "works only for Flash_attention and math kernel"); the memory-efficient kernel needs them
    repeated. Flash takes no explicit mask and needs a recent GPU and fp16/bf16, so a masked call, or one
    flash cannot run, repeats K/V and reaches the memory-efficient kernel instead of the math kernel. On the
    CPU unmasked calls keep grouped heads; masked ones repeat as on CUDA, so the CPU tests run that path."""
    if query.shape[1] == key.shape[1] or masked:
        return False
    if query.device.type != "cuda":
        return True
    from torch.backends.cuda import SDPAParams, can_use_flash_attention

    return can_use_flash_attention(SDPAParams(query, key, value, None, dropout, False, True))


def register() -> str:
    """Register the function with transformers (idempotent); returns the attn_implementation name."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, fused_sdpa_attention)
    return NAME
