"""InternVL's side of fine-tuning (roadbuddy.finetune drives it through the family seam): which modules LoRA
adapts, the frozen vision tower's features of a micro-batch, and the logits at the two positions the loss
reads, from one right-padded forward of the language model over the spliced embeddings.

The prompt is prediction's (prefix, suffix from roadbuddy.predict.inputs) with the answer letter after it;
the logits are those at the position before the letter (what score mode reads) and at the letter (the end
of the turn comes next), never over the whole prompt.
"""
from __future__ import annotations

import torch

from roadbuddy.families.internvl import model, tiles

LM_LAYERS = r"model\.language_model\.layers\.\d+\.(?:self_attn|mlp)\.(?:{names})"
VISION_LAYERS = (r"model\.vision_tower\.encoder\.layer\.\d+\.(?:attention\.(?:q_proj|k_proj|v_proj|projection_layer)"
                 r"|mlp\.(?:fc1|fc2))|model\.multi_modal_projector\.linear_\d+")


def lora_targets(names: tuple[str, ...], vision: bool) -> str:
    """The LoRA target modules (peft's full-match regex): the language model's attention and MLP layers of these
    names, and with `vision` the vision tower's attention and MLP and the projector."""
    pattern = LM_LAYERS.format(names="|".join(names))
    return f"{pattern}|{VISION_LAYERS}" if vision else pattern


def vision_tower(lm) -> torch.nn.Module:
    return lm.model.model.vision_tower


def _normalised(lm, pixels: torch.Tensor) -> torch.Tensor:
    return tiles.normalize_tiles(pixels.to(lm.device)).to(lm.dtype)


def training_features(lm, examples: list, memo: dict, train_vision: bool, batch: int) -> list[torch.Tensor]:
    """Each example's image features: with `train_vision` through the tower with gradients (no cache across
    backward passes); else the frozen tower's, without gradients, once per clip (`memo` keeps the last clip's
    over a step: consecutive examples of one clip share its tiles)."""
    feats = []
    for e in examples:
        if train_vision:
            feats.append(lm.model.get_image_features(pixel_values=_normalised(lm, e.tiles)).pooler_output)
            continue
        if memo.get("key") != e.clip_key:
            with torch.no_grad():
                memo["key"], memo["features"] = e.clip_key, model.encode_tiles(lm, e.clip_tiles, batch).clone()
        feats.append(memo["features"][e.tile_rows])
    return feats


def answer_logits(lm, examples: list, letters: list[int], features: list[torch.Tensor]) -> torch.Tensor:
    """[examples, 2, vocab] float logits before the answer letter and at it, for the examples right-padded into
    one forward of the language model (its own position ids: padding sits after every real token)."""
    rows = [torch.cat([e.prefix_ids, e.suffix_ids, torch.tensor([[letter]])], dim=1)[0]
            for e, letter in zip(examples, letters)]
    embeds = [model._embed(lm, r[None].to(lm.device), f)[0] for r, f in zip(rows, features)]
    width = max(len(r) for r in rows)
    batch = embeds[0].new_zeros(len(rows), width, embeds[0].shape[-1])
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=lm.device)
    for i, e in enumerate(embeds):
        batch[i, : e.shape[0]] = e
        mask[i, : e.shape[0]] = 1
    out = lm.model.model.language_model(inputs_embeds=batch, attention_mask=mask, use_cache=False)
    ends = torch.tensor([len(r) for r in rows], device=lm.device)
    at = torch.stack([ends - 2, ends - 1], dim=1)  # the position before the letter, and the letter itself
    picked = out.last_hidden_state[torch.arange(len(rows), device=lm.device)[:, None], at]
    return lm.model.lm_head(picked).float()
