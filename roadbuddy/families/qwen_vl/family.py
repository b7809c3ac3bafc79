"""Qwen3-VL and Qwen2.5-VL behind the family seam (roadbuddy.families.protocol). The two differ in what the
processor does (families/qwen_vl/inputs.py: Qwen3-VL's pixel budget is the whole clip's and it writes a
timestamp before each frame pair; Qwen2.5-VL bounds each frame and spaces pairs by second_per_grid_ts),
never in what the pipeline does with the result."""
from __future__ import annotations

import torch

from roadbuddy.config import ConfigError
from roadbuddy.families.qwen_vl import inputs, model


class QwenVLFamily:
    # the vision tower with its patch merger(s) stays in bf16 under 8-bit / 4-bit; full module-name prefixes
    skip_quantization = ["model.visual", "lm_head"]

    def __init__(self, name: str, title: str, clip_wide_budget: bool, default_system: str):
        self.name, self.title = name, title
        self.clip_wide_budget = clip_wide_budget
        self.default_system = default_system

    def load(self, cfg):
        return model.load_model(cfg, self)

    def check_config(self, cfg) -> None:
        """One sentence for a setting that has no meaning for these models."""
        if cfg.detail_frames:
            raise ConfigError(f"--detail-frames tiles chosen frames more finely, which is InternVL's; {self.title} "
                              "sees every frame of a video at one size: raise --max-num (each frame's pixel budget "
                              "is --max-num x 448 x 448) instead")
        if cfg.fused_attention:
            raise ConfigError(f"--fused-attention replaces InternVL's attention; {self.title} runs with SDPA "
                              "(or --flash-attn)")

    def input_spec(self, lm):
        return inputs.VideoSpec(self, lm.tokenizer, lm.processor)

    def visual_tokens(self, spec, width, height, frames, detail, cfg) -> int:
        return inputs.visual_tokens(spec, width, height, frames, detail, cfg)

    def decoder(self, cfg) -> str:
        return "decord"  # full-size frames for the processor's resize: decord's random access is the faster

    def decode(self, reader, clip, cfg, spec) -> None:
        inputs.decode(reader, clip, cfg, spec)

    def group_inputs(self, clip, frames, detail, cfg, spec) -> dict:
        return inputs.group_inputs(clip, frames, detail, cfg, spec)

    def question_ids(self, spec, question, cfg) -> torch.Tensor:
        return inputs.question_ids(spec, question, cfg)

    def encode(self, lm, clip, batch: int):
        """None: the vision tower runs inside each frame set's prefill (its frames are paired in time, so two
        frame sets share no encoded pair)."""
        return None

    def prefill(self, lm, clip, group, features, cache, chunk: int = 0, suffix=None, batch: int = 32):
        return model.prefill(lm, group, cache, suffix)

    def extend(self, lm, ids, cache, start: int):
        return model.extend(lm, ids, cache, start)

    def extend_packed(self, lm, suffixes, cache, start: int):
        return model.extend_packed(lm, suffixes, cache, start)

    def can_pack(self, lm) -> bool:
        return lm.attn_impl in ("sdpa", "eager")


QWEN3_VL = QwenVLFamily("qwen3_vl", "Qwen3-VL", clip_wide_budget=True,
                        default_system="none (Qwen3-VL's chat template sends no system turn)")
QWEN2_5_VL = QwenVLFamily("qwen2_5_vl", "Qwen2.5-VL", clip_wide_budget=False,
                          default_system="none (Qwen2.5-VL's chat template sends \"You are a helpful assistant.\")")
