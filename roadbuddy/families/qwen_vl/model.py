"""Qwen3-VL and Qwen2.5-VL through transformers' native classes: load, prefill a frame set, answer.

The hot path per frame set (roadbuddy.predict.answering drives it through the family):
    logits, start = prefill(lm, group, cache)             # vision tower and the prefix, explicit M-RoPE positions
    logits = extend(lm, suffix_ids, cache, start)         # a question, positions start, start + 1, ... on 3 rows
    logits = extend_packed(lm, [suffix_ids, ...], cache, start)   # several, each restarting at `start`
`start` is the position of the prefix's last token + 1, from the model's own get_rope_index over the
prefix: not the cache length (a frame pair's tokens take far fewer positions than tokens) and not the
largest prefix position + 1 (Qwen2.5-VL's temporal positions run past the last token with sparse
frames). Positions are always passed, so the model's stored `rope_deltas` is never read.
No remote code is ever enabled and checkpoints load from safetensors only.
"""
from __future__ import annotations

import torch

from roadbuddy.config import RunConfig
from roadbuddy.data.questions import LETTERS
from roadbuddy.families import names
from roadbuddy.families.checkpoint import ModelLoadError, checkpoint_config, from_pretrained, pick_device
from roadbuddy.families.decoding import packed_mask
from roadbuddy.families.load_options import load_weights, pick_attention
from roadbuddy.families.loaded import LoadedModel, cache_kwarg_of, letter_token_ids, stop_token_ids


def load_model(cfg: RunConfig, family) -> LoadedModel:
    from transformers import AutoProcessor

    device = pick_device(cfg.device)
    name = cfg.model
    config = checkpoint_config(name)
    attn = pick_attention(device, cfg.flash_attn, False)
    try:
        processor = from_pretrained(AutoProcessor, name, trust_remote_code=False)
    except ImportError as exc:  # the video processors import torchvision
        raise ModelLoadError(f"{family.title}'s video processor needs torchvision (the build that matches your "
                             f"torch): {str(exc).splitlines()[0]}") from None
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load the processor of {name!r}: {str(exc).splitlines()[0]}") from exc
    model, notes, source = load_weights(name, config, cfg, device, attn, family.skip_quantization)
    if cfg.embeddings_on_cpu and device.type == "cuda":
        notes.append(f"the input embeddings stay on the GPU for {family.title} (its forward looks them up itself)")
    return wrap_model(model, processor, family, device=device, attn_impl=attn, source=source, notes=notes)


def wrap_model(model, processor, family, *, device, attn_impl: str, source: str, notes=()) -> LoadedModel:
    tokenizer = processor.tokenizer
    rope = next((m for m in model.modules() if hasattr(m, "get_rope_index")), None)
    if rope is None:
        raise ModelLoadError(f"{source}: no get_rope_index in the model; is this a {family.title} checkpoint?")
    return LoadedModel(
        model=model, tokenizer=tokenizer, device=device, dtype=next(model.parameters()).dtype, attn_impl=attn_impl,
        letter_ids=letter_token_ids(tokenizer, LETTERS), stop_ids=stop_token_ids(tokenizer), source=source,
        notes=list(notes), cache_kwarg=cache_kwarg_of(model), family=family.name,
        parameters=names.parameter_count(model), processor=processor, rope_index=rope.get_rope_index)


def positions(lm: LoadedModel, ids: torch.Tensor, vision: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompt's M-RoPE positions [3, 1, T] by the model's own get_rope_index (CPU; config arithmetic only),
    and its token types (0 text, 1 image: detail frames, 2 video) the model is given with them."""
    extra = {key: vision[key] for key in ("second_per_grid_ts", "image_grid_thw") if key in vision}
    mm = vision["mm_token_type_ids"]
    if mm.shape[1] < ids.shape[1]:  # a suffix after the prefix is text
        mm = torch.cat([mm, mm.new_zeros(1, ids.shape[1] - mm.shape[1])], dim=1)
    pos, _ = lm.rope_index(ids.cpu(), mm, video_grid_thw=vision["video_grid_thw"], **extra)
    return pos, mm


def forward(lm: LoadedModel, ids: torch.Tensor, vision: dict, **kwargs):
    """The model's own forward over `ids` (1 x T: a prefix with the frame set's video, and any text after it):
    the video's pixels and grid (and its detail frames' images), the token types and explicit M-RoPE positions
    (`positions`); `kwargs` go to the model (cache, logits_to_keep). Prediction's prefill runs it, and
    fine-tuning with gradients (families/qwen_vl/training.py). Returns the model's output and the positions."""
    pos, mm = positions(lm, ids, vision)
    dev = lm.device
    images = {}
    if "pixel_values" in vision:  # detail frames, as images after the video
        images = {"pixel_values": vision["pixel_values"].to(dev, lm.dtype),
                  "image_grid_thw": vision["image_grid_thw"].to(dev)}
    out = lm.model(input_ids=ids.to(dev), pixel_values_videos=vision["pixel_values_videos"].to(dev, lm.dtype),
                   video_grid_thw=vision["video_grid_thw"].to(dev), mm_token_type_ids=mm.to(dev),
                   position_ids=pos.to(dev), **images, **kwargs)
    return out, pos


@torch.inference_mode()
def prefill(lm: LoadedModel, group, cache, suffix: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """The frame set's prefix (and `suffix`, on the plain path) into `cache`, the vision tower included; returns
    the next-token logits and the position of the token after the last (all three rows agree on text)."""
    ids = group.prefix_ids if suffix is None else torch.cat([group.prefix_ids, suffix.cpu()], dim=1)
    out, pos = forward(lm, ids, group.vision, use_cache=True, logits_to_keep=1, **{lm.cache_kwarg: cache})
    return out.logits[0, -1].float(), int(pos[0, 0, -1]) + 1


@torch.inference_mode()
def extend(lm: LoadedModel, ids: torch.Tensor, cache, start: int) -> torch.Tensor:
    """`ids` (1 x T, text) after the cached tokens at positions start, start + 1, ... on all three rows."""
    pos = (start + torch.arange(ids.shape[1], device=lm.device)).view(1, 1, -1).expand(3, 1, -1)
    out = lm.model(input_ids=ids.to(lm.device), position_ids=pos, use_cache=True, logits_to_keep=1,
                   **{lm.cache_kwarg: cache})
    return out.logits[0, -1].float()


@torch.inference_mode()
def extend_packed(lm: LoadedModel, suffixes: list[torch.Tensor], cache, start: int) -> torch.Tensor:
    """Several suffixes side by side after the cached prefix in one forward: a 4D mask keeps each to the prefix
    and itself, and each one's positions restart at `start`. Returns [len(suffixes), vocab]; rewind the cache."""
    ids = torch.cat([s.to(lm.device) for s in suffixes], dim=1)
    lengths = [int(s.shape[1]) for s in suffixes]
    mask, offset = packed_mask(lengths, cache.get_seq_length(), lm.dtype, lm.device)
    pos = (start + offset).view(1, 1, -1).expand(3, 1, -1)
    last = torch.cumsum(torch.tensor(lengths, device=lm.device), 0) - 1
    out = lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=last,
                   **{lm.cache_kwarg: cache})
    return out.logits[0].float()


@torch.inference_mode()
def forward_official(lm: LoadedModel, inputs: dict) -> torch.Tensor:
    """The model's own forward on its processor's output (no cache, positions its own): the tests' reference."""
    out = lm.model(**{k: (v.to(lm.device) if torch.is_tensor(v) else v) for k, v in inputs.items()}, use_cache=False,
                   logits_to_keep=1)
    return out.logits[0, -1].float()
