"""InternVL behind the family seam (roadbuddy.families.protocol): its functions under the seam's names."""
from __future__ import annotations

import torch

from roadbuddy.families.internvl import inputs, model, training, vram
from roadbuddy.families.wording import INTERNVL_SYSTEM_PROMPT


class InternVLFamily:
    name = "internvl"
    title = "InternVL3 and InternVL3.5 (the native -hf / -HF checkpoints)"
    skip_quantization = model.SKIP_QUANTIZATION
    default_system = "none (the -HF checkpoints' chat template sends no system turn)"
    system_named = INTERNVL_SYSTEM_PROMPT

    def load(self, cfg):
        return model.load_model(cfg)

    def check_config(self, cfg) -> None:
        """Every RunConfig runs on InternVL."""

    def input_spec(self, lm):
        return inputs.TileSpec(lm.image_size, lm.tokens_per_tile, lm.tokenizer)

    def planning_spec(self, config, name: str):
        """The input spec of a checkpoint not loaded (the VRAM estimate's): its tile geometry, no tokenizer."""
        return vram.planning_spec(config)

    def memory_terms(self, config):
        """What the VRAM estimate needs beside the config: vision/projector modules, the code path, the tower's peak."""
        return vram.InternVLMemory(config)

    def visual_tokens(self, spec, width, height, frames, detail, cfg) -> int:
        return inputs.visual_tokens(spec, width, height, frames, detail, cfg)

    def decoder(self, cfg) -> str:
        return inputs.decoder(cfg)

    def decode(self, reader, clip, cfg, spec) -> None:
        inputs.decode(reader, clip, cfg, spec)

    def group_inputs(self, clip, frames, detail, cfg, spec) -> dict:
        return inputs.group_inputs(clip, frames, detail, cfg, spec)

    def question_ids(self, spec, question, cfg) -> torch.Tensor:
        return inputs.question_ids(spec.tokenizer, question, cfg)

    def encode(self, lm, clip, batch: int):
        """The vision tower over every tiled view of the clip, once; frame sets take their rows."""
        return model.encode_tiles(lm, clip.tiles, batch)

    def prefill(self, lm, clip, group, features, cache, chunk: int = 0, suffix=None, batch: int = 32):
        """The frame set's prefix (and `suffix`, on the plain path) into `cache`; features are the clip's
        (encoded here from its tiles when None). Returns the next-token logits and the next position."""
        rows = group.tile_rows
        if features is None:
            features = model.encode_tiles(lm, clip.tiles[rows], batch)
        else:
            features = features[rows]
        ids = group.prefix_ids.to(lm.device)
        if suffix is not None:
            ids = torch.cat([ids, suffix.to(lm.device)], dim=1)
        logits = model.forward(lm, ids, features, cache, chunk=chunk)
        return logits, cache.get_seq_length()

    def extend(self, lm, ids, cache, start: int):
        return model.extend(lm, ids, cache, start)

    def extend_packed(self, lm, suffixes, cache, start: int):
        return model.forward_packed(lm, suffixes, cache, start)

    def can_pack(self, lm) -> bool:
        return model.can_pack(lm)

    def branch(self, cache):
        """The prefix's own cache: a question's tokens are cut back off it afterwards (decoding.rewind)."""
        return cache

    # fine-tuning (roadbuddy.finetune)
    def lora_targets(self, names, vision: bool) -> str:
        return training.lora_targets(names, vision)

    def vision_tower(self, lm):
        return training.vision_tower(lm)

    def training_features(self, lm, examples, memo: dict, train_vision: bool, batch: int) -> list:
        return training.training_features(lm, examples, memo, train_vision, batch)

    def answer_logits(self, lm, examples, letters, features) -> torch.Tensor:
        return training.answer_logits(lm, examples, letters, features)


INTERNVL = InternVLFamily()
