"""InternVL through transformers' native classes: load, encode frames, answer.

The hot path per clip (roadbuddy.predict.answering drives it):
    features = encode_tiles(lm, tiles)                     # uint8 tiles normalised on the device; vision tower once
    forward(lm, prefix_ids, features, cache, chunk=2048)   # the frames prefilled once per frame set (KV cache)
    logits   = forward_packed(lm, [suffix_ids, ...], cache)  # every question's own tokens, one pass
No remote code is ever enabled and checkpoints load from safetensors only.
"""
from __future__ import annotations

import logging

import torch

from roadbuddy.config import RunConfig
from roadbuddy.data.questions import LETTERS
from roadbuddy.families import names
from roadbuddy.families.checkpoint import ModelLoadError, checkpoint_config, from_pretrained, pick_device
from roadbuddy.families.decoding import greedy, letter_probs, new_cache, packed_mask, rewind  # noqa: F401
from roadbuddy.families.internvl import tiles
from roadbuddy.families.internvl.ids import resolve_model_id
from roadbuddy.families.internvl.prompts import IMG_CONTEXT
from roadbuddy.families.load_options import load_weights, pick_attention
from roadbuddy.families.loaded import LoadedModel, cache_kwarg_of, letter_token_ids, stop_token_ids

log = logging.getLogger(__name__)


def vision_geometry(config) -> tuple[int, int, int]:
    """(tile size, patch size, image tokens per tile) of an InternVLConfig: 448, 14, 256 for InternVL3.5."""
    vision = config.vision_config
    size = vision.image_size[0] if isinstance(vision.image_size, (list, tuple)) else vision.image_size
    patch = vision.patch_size[0] if isinstance(vision.patch_size, (list, tuple)) else vision.patch_size
    return int(size), int(patch), int((size // patch) ** 2 * config.downsample_ratio ** 2)


SKIP_QUANTIZATION = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def load_model(cfg: RunConfig) -> LoadedModel:
    from transformers import AutoTokenizer

    device = pick_device(cfg.device)
    name, note = resolve_model_id(cfg.model)
    config = checkpoint_config(name)
    attn = pick_attention(device, cfg.flash_attn, cfg.fused_attention)
    try:
        tokenizer = from_pretrained(AutoTokenizer, name, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from exc
    model, notes, source = load_weights(name, config, cfg, device, attn, SKIP_QUANTIZATION)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight  # small InternVL3s tie them
    if cfg.embeddings_on_cpu and device.type == "cuda" and not tied:
        # The input embedding table (0.73 GiB for the 4B) only serves a lookup, which _embed does on the
        # CPU; the few MB of looked-up rows then go to the GPU. The lm_head stays on the GPU.
        model.get_input_embeddings().to("cpu")
    return wrap_model(model, tokenizer, device=device, attn_impl=attn, source=source,
                      notes=([note] if note else []) + notes)


def wrap_model(model, tokenizer, *, device: torch.device, attn_impl: str, source: str, notes=()) -> LoadedModel:
    """Collect what the pipeline needs from a loaded model and its tokenizer (sizes come from the config)."""
    config = model.config
    image_size, _, tokens_per_tile = vision_geometry(config)
    image_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)
    if image_token_id is None or image_token_id == getattr(tokenizer, "unk_token_id", -1):
        raise ModelLoadError(f"the tokenizer has no {IMG_CONTEXT} token; is this an InternVL checkpoint?")
    if image_token_id != config.image_token_id:
        raise ModelLoadError(
            f"tokenizer's {IMG_CONTEXT} id {image_token_id} differs from config.image_token_id {config.image_token_id}"
        )
    return LoadedModel(
        model=model, tokenizer=tokenizer, device=device, dtype=next(model.parameters()).dtype,
        attn_impl=attn_impl, image_size=image_size, tokens_per_tile=tokens_per_tile,
        image_token_id=image_token_id, letter_ids=letter_token_ids(tokenizer, LETTERS),
        stop_ids=stop_token_ids(tokenizer), source=source, notes=list(notes), cache_kwarg=cache_kwarg_of(model),
        family=names.family_of(config, source), parameters=names.parameter_count(model),
    )


# --- the hot path -----------------------------------------------------------

@torch.inference_mode()
def encode_tiles(lm: LoadedModel, pixel_values: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """Vision tower + projector over tiles, `batch` tiles at a time: [tiles, tokens_per_tile, hidden].

    uint8 tiles [N,3,S,S] (what the pipeline prepares) go to the device as they are and are
    normalised there (`tiles.normalize_tiles`); float pixel values are taken as already normalised."""
    outs = []
    for start in range(0, pixel_values.shape[0], batch):
        chunk = pixel_values[start:start + batch].to(lm.device, non_blocking=True)
        if chunk.dtype == torch.uint8:
            chunk = tiles.normalize_tiles(chunk)
        chunk = chunk.to(lm.dtype)  # the float32 copy is freed before the tower runs
        out = lm.model.get_image_features(pixel_values=chunk)
        outs.append(out.pooler_output if hasattr(out, "pooler_output") else out)
    return torch.cat(outs)


def _embed(lm: LoadedModel, ids: torch.Tensor, features: torch.Tensor | None) -> torch.Tensor:
    table = lm.model.get_input_embeddings()
    embeds = table(ids.to(table.weight.device)).to(lm.device, non_blocking=True)
    mask = ids == lm.image_token_id
    n = int(mask.sum())
    have = 0 if features is None else features.shape[0] * features.shape[1]
    if n != have:
        raise ValueError(f"prompt has {n} image tokens but the frames produced {have} features")
    if n and embeds.requires_grad:  # fine-tuning: autograd needs the splice out of place
        return embeds.masked_scatter(mask[..., None].to(embeds.device), features.to(embeds.dtype))
    if n:
        embeds[mask] = features.reshape(-1, features.shape[-1]).to(embeds.dtype)
    return embeds


@torch.inference_mode()
def forward(lm: LoadedModel, ids: torch.Tensor, features: torch.Tensor | None, cache,
            chunk: int = 0) -> torch.Tensor:
    """Run `ids` (1 x T) through the language model after `cache`; returns next-token logits (vocab,).

    With `chunk` > 0 the tokens go through `chunk` at a time (each chunk attends to the cache and
    itself), so the prefill's activations scale with the chunk instead of the whole prompt; the KV
    cache and the result are the same.
    """
    embeds = _embed(lm, ids, features)
    step = chunk if chunk > 0 else embeds.shape[1]
    for start in range(0, embeds.shape[1], step):
        out = lm.model(inputs_embeds=embeds[:, start:start + step], use_cache=True, logits_to_keep=1,
                       **{lm.cache_kwarg: cache})
    return out.logits[0, -1].float()


def can_pack(lm: LoadedModel) -> bool:
    """Whether several question suffixes can share one forward (an explicit 4D mask is needed: SDPA and
    eager attention take one, flash_attention_2 does not)."""
    return lm.attn_impl in ("sdpa", "eager", "roadbuddy_fused_sdpa")


@torch.inference_mode()
def forward_packed(lm: LoadedModel, suffixes: list[torch.Tensor], cache, start: int | None = None) -> torch.Tensor:
    """Several questions' suffixes (each 1 x T_i) after one cached prefix, in one forward pass.

    The suffixes go in side by side as one sequence; a 4D mask lets each token see the whole prefix and
    the earlier tokens of its own suffix only, and position ids restart at `start` (the prefix's length)
    for each, so every suffix is computed as if it followed the prefix alone. Returns the next-token
    logits after each suffix ([len(suffixes), vocab]); the cache then holds all the suffixes: rewind it.
    """
    prefix_len = cache.get_seq_length()
    start = prefix_len if start is None else start
    ids = torch.cat(suffixes, dim=1)
    embeds = _embed(lm, ids, None)
    lengths = [int(s.shape[1]) for s in suffixes]
    mask, offset = packed_mask(lengths, prefix_len, embeds.dtype, embeds.device)
    last = torch.cumsum(torch.tensor(lengths, device=embeds.device), 0) - 1
    out = lm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=(start + offset)[None],
                   use_cache=True, logits_to_keep=last, **{lm.cache_kwarg: cache})
    return out.logits[0].float()


@torch.inference_mode()
def extend(lm: LoadedModel, ids: torch.Tensor, cache, start: int) -> torch.Tensor:
    """`ids` (1 x T) after the cached tokens, the first at position `start` (the cache's length for InternVL,
    whose positions are 1D); the next-token logits after the last."""
    embeds = _embed(lm, ids, None)
    positions = start + torch.arange(ids.shape[1], device=embeds.device)
    out = lm.model(inputs_embeds=embeds, position_ids=positions[None], use_cache=True, logits_to_keep=1,
                   **{lm.cache_kwarg: cache})
    return out.logits[0, -1].float()


@torch.inference_mode()
def forward_official(lm: LoadedModel, ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
    """The model's own forward with pixel values, no cache, nothing shared: the reference in tests
    (it looks up embeddings on the model's device, so not with RunConfig.embeddings_on_cpu on CUDA)."""
    out = lm.model(input_ids=ids, pixel_values=pixel_values.to(lm.device, lm.dtype), use_cache=False, logits_to_keep=1)
    return out.logits[0, -1].float()
