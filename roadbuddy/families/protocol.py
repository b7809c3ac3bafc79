"""The family seam: what the rest of roadbuddy calls on a model family. Each family (families/internvl,
families/qwen_vl) has one object with these members; registry.ops(name) finds it, LoadedModel.ops too.

Per clip, CPU side (roadbuddy.predict.inputs, on the prefetch thread):
    spec = family.input_spec(lm)                                    # what inputs depend on (tokenizer, sizes)
    n = family.visual_tokens(spec, width, height, frames, detail, cfg)   # what the frame budget counts
    reader = open_video(path, prefer=family.decoder(cfg))            # the decoder the family's pixels want
    family.decode(reader, clip, cfg, spec)                           # the clip's views -> their pixels, on clip
    group = family.group_inputs(clip, frames, detail, cfg, spec)     # one frame set's prefix ids and vision inputs
    ids = family.question_ids(spec, question, cfg)                   # one question's suffix ids
Before a load (roadbuddy.predict.memory, the VRAM estimate, from the checkpoint's config and files):
    spec = family.planning_spec(config, name)                        # the input spec without model or tokenizer
    terms = family.memory_terms(config)                              # vision/projector modules, code path, peaks
Model side (roadbuddy.predict.answering, on the model's device):
    features = family.encode(lm, clip, batch)                        # vision tower once per clip, or None
    logits, start = family.prefill(lm, clip, group, features, cache, chunk)   # the prefix, once
    run = family.branch(cache)                                       # the cache one question runs on
    logits = family.extend(lm, ids, run, start)                      # one suffix, or one generated token
    logits = family.extend_packed(lm, [ids, ...], cache, start)      # several suffixes side by side
`start` is the rotary position of the token after the prefix: the cache length for InternVL, the last
multimodal position + 1 for Qwen (never the cache length there: frames compress positions). `branch` is
the prefix's cache itself where a KV cache can be cut back after the question (the pipeline rewinds it),
or a copy of the prefix state where it cannot (Qwen3.5's recurrent layers).
Fine-tuning (roadbuddy.finetune, on examples whose inputs prepare_clip built as above):
    regex = family.lora_targets(names, vision)                       # LoRA's target modules (ConfigError if it cannot)
    family.vision_tower(lm).eval()                                   # the frozen tower: no dropout, no checkpointing
    features = family.training_features(lm, examples, memo, vision, batch)   # per example (None: none needed)
    logits = family.answer_logits(lm, examples, letters, features)   # [examples, 2, vocab]: before the letter, at it
"""
from __future__ import annotations

from typing import Protocol

import torch


class Family(Protocol):
    name: str  # the checkpoint config's model_type
    title: str  # what the family is, for messages
    skip_quantization: list[str]  # modules kept in bf16 under --load-in-8bit / --load-in-4bit
    default_system: str  # what --system-prompt none sends (the checkpoint's chat template's own default)

    def load(self, cfg) -> object: ...
    def check_config(self, cfg) -> None: ...
    def input_spec(self, lm) -> object: ...
    def planning_spec(self, config, name: str) -> object: ...
    def memory_terms(self, config) -> object: ...
    def visual_tokens(self, spec, width: int, height: int, frames: int, detail: int, cfg) -> int: ...
    def decode(self, reader, clip, cfg, spec) -> None: ...
    def group_inputs(self, clip, frames: tuple[int, ...], detail: tuple[int, ...], cfg, spec) -> dict: ...
    def question_ids(self, spec, question, cfg) -> torch.Tensor: ...
    def encode(self, lm, clip, batch: int) -> torch.Tensor | None: ...
    def decoder(self, cfg) -> str: ...
    def prefill(self, lm, clip, group, features, cache, chunk: int = 0, suffix: torch.Tensor | None = None,
                batch: int = 32) -> tuple[torch.Tensor, int]: ...
    def extend(self, lm, ids: torch.Tensor, cache, start: int) -> torch.Tensor: ...
    def extend_packed(self, lm, suffixes: list[torch.Tensor], cache, start: int) -> torch.Tensor: ...
    def can_pack(self, lm) -> bool: ...
    def branch(self, cache) -> object: ...
    def lora_targets(self, names: tuple[str, ...], vision: bool) -> str: ...
    def vision_tower(self, lm) -> torch.nn.Module: ...
    def training_features(self, lm, examples: list, memo: dict, train_vision: bool, batch: int) -> list: ...
    def answer_logits(self, lm, examples: list, letters: list[int], features: list) -> torch.Tensor: ...


MEMBERS = ("name", "title", "skip_quantization", "default_system", "load", "check_config", "input_spec",
           "planning_spec", "memory_terms",
           "visual_tokens", "decoder", "decode", "group_inputs", "question_ids", "encode", "prefill", "extend",
           "extend_packed", "can_pack", "branch", "lora_targets", "vision_tower", "training_features", "answer_logits")
