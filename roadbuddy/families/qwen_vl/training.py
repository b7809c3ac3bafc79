"""Qwen3-VL's and Qwen2.5-VL's side of fine-tuning (roadbuddy.finetune drives it through the family seam): LoRA
on the language model, and the logits at the two positions the loss reads from the forward prediction runs.

Each example goes through `model.forward`, the function prediction's prefill calls: input_ids = prefix +
suffix + answer letter, the frame set's pixel_values_videos and video_grid_thw, token types padded with text
after the video, and explicit M-RoPE positions from the model's own get_rope_index (`lm.rope_index`, kept
across peft's wrapping). One example per forward: the vision tower runs inside it on that example's frame
set, and right-padding rows whose videos differ in size would take the model's batched multimodal path,
which prediction never runs. The tower is frozen (no LoRA in it, its weights without gradients, and its
pixels need none), so autograd records nothing there; gradient checkpointing covers the language model.
"""
from __future__ import annotations

import torch

from roadbuddy.config import ConfigError
from roadbuddy.families.qwen_vl import model

LM_LAYERS = r"model\.language_model\.layers\.\d+\.(?:self_attn|mlp)\.(?:{names})"


def lora_targets(family, names: tuple[str, ...], vision: bool) -> str:
    """The language model's attention and MLP layers of these names (peft's full-match regex)."""
    if vision:
        raise ConfigError(f"--lora-vision adapts InternVL's vision tower; for {family.title} roadbuddy-finetune "
                          "adapts the language model only (drop --lora-vision)")
    return LM_LAYERS.format(names="|".join(names))


def vision_tower(lm) -> torch.nn.Module:
    return lm.model.model.visual


def answer_logits(lm, examples: list, letters: list[int], features: list) -> torch.Tensor:
    """[examples, 2, vocab] float logits before the answer letter and at it, one forward per example; `features`
    are unused (None each: the tower runs inside the forward, as in prediction's prefill)."""
    out = []
    for e, letter in zip(examples, letters):
        ids = torch.cat([e.prefix_ids, e.suffix_ids, torch.tensor([[letter]])], dim=1)
        at = torch.tensor([ids.shape[1] - 2, ids.shape[1] - 1], device=lm.device)
        result, _ = model.forward(lm, ids, e.vision, use_cache=False, logits_to_keep=at)
        out.append(result.logits[0].float())
    return torch.stack(out)
