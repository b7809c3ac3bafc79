"""What the VRAM estimate needs to know of Qwen3.5 beyond Qwen3-VL's terms (families/qwen_vl/vram.py): keys and
values only in the full-attention layers, a fixed-size state in the others, and a copy of the prefix's cache
for the question that runs on it (families/qwen3_5/family.py: branch).

Per linear-attention layer and sequence (transformers 5.25, cache_utils.py LinearAttentionLayer): the recurrent
state, num_v_heads x key head dim x value head dim in float32 (the kernels compute in float32), and the
convolution state, the last kernel-size columns of the q, k, v projections (2 x key dim + value dim) in bf16.
"""
from __future__ import annotations

from roadbuddy.families.qwen_vl.vram import QwenVLMemory


class Qwen35Memory(QwenVLMemory):
    cache_copies = 2  # the prefix's cache and the copy a question runs on

    @property
    def _text(self):
        return self.config.text_config

    def _layer_types(self) -> list[str]:
        text = self._text
        return list(getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers)

    @property
    def kv_layers(self) -> int:
        return sum(kind == "full_attention" for kind in self._layer_types())

    @property
    def state_bytes(self) -> int:
        text = self._text
        linear = sum(kind == "linear_attention" for kind in self._layer_types())
        recurrent = text.linear_num_value_heads * text.linear_key_head_dim * text.linear_value_head_dim * 4
        conv_dim = 2 * text.linear_num_key_heads * text.linear_key_head_dim + \
            text.linear_num_value_heads * text.linear_value_head_dim
        return linear * (recurrent + conv_dim * text.linear_conv_kernel_dim * 2)
