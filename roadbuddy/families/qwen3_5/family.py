"""Qwen3.5 behind the family seam: Qwen3-VL's inputs (the same processor classes, per-pair timestamps, a
whole-clip pixel budget) and positions (get_rope_index, explicit M-RoPE positions from the last prefix
position + 1), over a language model whose linear-attention layers keep a recurrent state instead of keys
and values. What that changes (FAMILIES.md part 2, checked in transformers 5.25):
- a recurrent state cannot be cut back to the end of the prefix (Cache.crop raises on those layers), so each
  question runs on a copy of the prefix's state (`branch`: the KV of the attention layers and the conv and
  recurrent states of the others), and the prefix's own cache stays as prefilled;
- questions are never packed side by side into one sequence under a 4D mask: a linear-attention layer has no
  attention matrix to mask and would run the second question from the state after the first. Score mode's
  questions go in as a batch instead, the prefix state repeated along it (`extend_packed`: families/qwen3_5/
  batch.py, faster on the CPU bench than one at a time on copies); generate mode runs each on its copy;
- the chat template opens the assistant turn in thinking mode unless told not to: the prompt closes an
  empty <think></think> block (enable_thinking=False), so the next token is the answer;
- releases before transformers 5.7.0 dropped the cached state in a multi-token forward after a cache (fixed
  by transformers PR 45513: 5.6.2's chunked delta rule starts from no state, 5.7.0's from the cache; read in
  the released wheels' modeling_qwen3_5.py): a suffix after a prefix was silently wrong, so they are refused.
"""
from __future__ import annotations

import copy

from roadbuddy.config import ConfigError
from roadbuddy.families.qwen3_5 import batch, vram
from roadbuddy.families.qwen_vl.family import QwenVLFamily

MIN_TRANSFORMERS = "5.7.0"
# the linear-attention layers' projections, beside the attention and MLP ones LoRA takes by name
LINEAR_ATTENTION = ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj")


def transformers_version() -> str:
    import transformers

    return transformers.__version__


class Qwen35Family(QwenVLFamily):
    chat_template_kwargs = {"enable_thinking": False}

    def __init__(self):
        super().__init__("qwen3_5", "Qwen3.5", clip_wide_budget=True, frames_wrapped=True,
                         default_system="none (Qwen3.5's chat template sends no system turn)")

    def check_config(self, cfg) -> None:
        from packaging.version import Version

        super().check_config(cfg)
        if Version(transformers_version()) < Version(MIN_TRANSFORMERS):
            raise ConfigError(f"Qwen3.5 needs transformers >= {MIN_TRANSFORMERS} (older releases drop the cached "
                              f"recurrent state of a question after its frames); this is {transformers_version()}: "
                              f"pip install 'transformers>={MIN_TRANSFORMERS}'")

    def can_pack(self, lm) -> bool:
        return lm.attn_impl in ("sdpa", "eager")

    def extend_packed(self, lm, suffixes, cache, start: int):
        """The questions as rows of one batch on copies of the prefix state; the prefix's cache is left as it was."""
        return batch.extend_batch(lm, suffixes, cache, start)

    def branch(self, cache):
        """A copy of the prefix's state for one question (KV, conv and recurrent states): the recurrent state
        cannot be cut back after it."""
        return copy.deepcopy(cache)

    def memory_terms(self, config):
        return vram.Qwen35Memory(config)

    def lora_targets(self, names, vision: bool) -> str:
        """The attention and MLP projections by name, and every linear-attention layer's projections: in three
        layers of four those are where the token mixing is learned."""
        from roadbuddy.families.qwen_vl import training

        training.lora_targets(self, names, vision)  # --lora-vision: the same one sentence
        return (r"model\.language_model\.layers\.\d+\.(?:(?:self_attn|mlp)\.(?:{names})|linear_attn\.(?:{linear}))"
                .format(names="|".join(names), linear="|".join(LINEAR_ATTENTION)))


QWEN3_5 = Qwen35Family()
