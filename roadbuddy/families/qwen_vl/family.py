"""Qwen3-VL and Qwen2.5-VL behind the family seam (roadbuddy.families.protocol). The two differ in what the
processor does (families/qwen_vl/inputs.py: Qwen3-VL's pixel budget is the whole clip's and it writes a
timestamp before each frame pair; Qwen2.5-VL bounds each frame and spaces pairs by second_per_grid_ts),
never in what the pipeline does with the result."""
from __future__ import annotations

import torch

from roadbuddy.config import ConfigError
from roadbuddy.families.qwen_vl import inputs, model, training, vram


class QwenVLFamily:
    # the vision tower with its patch merger(s) stays in bf16 under 8-bit / 4-bit; full module-name prefixes
    skip_quantization = ["model.visual", "lm_head"]
    chat_template_kwargs: dict = {}  # what the chat template is rendered with (Qwen3.5: no thinking)

    def __init__(self, name: str, title: str, clip_wide_budget: bool, default_system: str,
                 frames_wrapped: bool = False):
        self.name, self.title = name, title
        self.clip_wide_budget = clip_wide_budget
        self.default_system = default_system
        # each frame pair comes with its own <|vision_start|>...<|vision_end|> (and timestamp), so the chat
        # template's wrapper around the whole video is collapsed to a bare video token (qwen_vl.inputs.chat_texts)
        self.frames_wrapped = frames_wrapped

    def load(self, cfg):
        return model.load_model(cfg, self)

    def check_config(self, cfg) -> None:
        """One sentence for a setting that has no meaning for these models."""
        if cfg.fused_attention:
            raise ConfigError(f"--fused-attention replaces InternVL's attention; {self.title} runs with SDPA "
                              "(or --flash-attn)")

    def input_spec(self, lm):
        return inputs.VideoSpec(self, lm.tokenizer, lm.processor)

    def planning_spec(self, config, name: str):
        """The input spec of a checkpoint not loaded (the VRAM estimate's): its video processor's settings, shipped
        or its own, no tokenizer."""
        return vram.planning_spec(self, name)

    def memory_terms(self, config):
        """What the VRAM estimate needs beside the config: vision/projector modules, the code path, the tower's peak."""
        return vram.QwenVLMemory(config)

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

    def branch(self, cache):
        """The prefix's own cache: a question's tokens are cut back off it afterwards (decoding.rewind)."""
        return cache

    # fine-tuning (roadbuddy.finetune)
    def lora_targets(self, names, vision: bool) -> str:
        return training.lora_targets(self, names, vision)

    def vision_tower(self, lm):
        return training.vision_tower(lm)

    def training_features(self, lm, examples, memo: dict, train_vision: bool, batch: int) -> list:
        """None each: the tower runs inside each example's forward (answer_logits), as in prefill."""
        return [None] * len(examples)

    def answer_logits(self, lm, examples, letters, features) -> torch.Tensor:
        return training.answer_logits(lm, examples, letters, features)


QWEN3_VL = QwenVLFamily("qwen3_vl", "Qwen3-VL", clip_wide_budget=True, frames_wrapped=True,
                        default_system="none (Qwen3-VL's chat template sends no system turn)")
QWEN2_5_VL = QwenVLFamily("qwen2_5_vl", "Qwen2.5-VL", clip_wide_budget=False,
                          default_system="none (Qwen2.5-VL's chat template sends \"You are a helpful assistant.\")")
