"""InternVL through transformers' native classes: load, encode frames, answer.

The hot path per clip (roadbuddy.predict.answering drives it):
    features = encode_tiles(lm, tiles)                     # uint8 tiles normalised on the device; vision tower once
    forward(lm, prefix_ids, features, cache, chunk=2048)   # the frames prefilled once per frame set (KV cache)
    logits   = forward_packed(lm, [suffix_ids, ...], cache)  # every question's own tokens, one pass
No remote code is ever enabled and checkpoints load from safetensors only.
"""
from __future__ import annotations

import importlib.util
import inspect
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from roadbuddy.config import RunConfig
from roadbuddy.data.questions import LETTERS
from roadbuddy.families import registry
from roadbuddy.families.checkpoint import ModelLoadError, checkpoint_config, from_pretrained, pick_device
from roadbuddy.families.internvl import tiles
from roadbuddy.families.internvl.prompts import IMG_CONTEXT

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    dtype: torch.dtype
    attn_impl: str
    image_size: int
    tokens_per_tile: int
    image_token_id: int
    letter_ids: dict[str, int]
    stop_ids: set[int]
    source: str  # "trained" or "random" weights, and where from
    notes: list[str] = field(default_factory=list)
    cache_kwarg: str = "past_key_values"
    family: str = "internvl"
    parameters: int = 0  # every parameter, shared ones once (the challenge caps it at 8B)

    @property
    def config(self):
        return self.model.config


def vision_geometry(config) -> tuple[int, int, int]:
    """(tile size, patch size, image tokens per tile) of an InternVLConfig: 448, 14, 256 for InternVL3.5."""
    vision = config.vision_config
    size = vision.image_size[0] if isinstance(vision.image_size, (list, tuple)) else vision.image_size
    patch = vision.patch_size[0] if isinstance(vision.patch_size, (list, tuple)) else vision.patch_size
    return int(size), int(patch), int((size // patch) ** 2 * config.downsample_ratio ** 2)


# --- model ids ------------------------------------------------------------

_ORIGINAL_IDS = [
    (re.compile(r"^(OpenGVLab/InternVL3_5-[0-9.]+B(?:-\w+)?)$"), "-HF"),
    (re.compile(r"^(OpenGVLab/InternVL3-[0-9.]+B(?:-\w+)?)$"), "-hf"),
]


def resolve_model_id(name: str) -> tuple[str, str | None]:
    """Map an original-format hub id to its native `-HF`/`-hf` twin; returns (id, note)."""
    if Path(name).exists():
        return name, None
    for pattern, suffix in _ORIGINAL_IDS:
        m = pattern.match(name)
        if m and not name.lower().endswith("-hf"):
            twin = name + suffix
            return twin, f"{name} is the original (remote-code) format; loading its native twin {twin}"
    return name, None


def pick_attention(device: torch.device, want_flash: bool, fused: bool = False) -> str:
    """flash_attention_2 when asked for and importable on CUDA; else --fused-attention's function; else SDPA."""
    if want_flash and device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    if fused:
        from roadbuddy.families import attention

        return attention.register()
    return "sdpa"


def quantization_config(kind: str | None, device: torch.device):
    if kind is None:
        return None
    flag = "--load-in-8bit" if kind == "8bit" else "--load-in-4bit"
    if device.type != "cuda":
        raise ModelLoadError(f"{flag} needs a CUDA GPU (bitsandbytes quantized kernels); this run is on {device.type}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(f"{flag} needs bitsandbytes: pip install 'roadbuddy[quant]'")
    from transformers import BitsAndBytesConfig

    # The vision tower and projector stay in bf16: quantizing them hurts
    # accuracy for little memory, and 8-bit InternVL has NaN reports.
    # transformers 5.x matches these as regexes anchored at the start of the full module name
    # ("vision_tower" alone silently matched nothing: the bench measured the tower quantized), while
    # older releases matched substrings; the full prefixes work with both.
    skip = SKIP_QUANTIZATION
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
        llm_int8_skip_modules=skip,
    )


SKIP_QUANTIZATION = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]


def load_model(cfg: RunConfig) -> LoadedModel:
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    device = pick_device(cfg.device)
    name, note = resolve_model_id(cfg.model)
    notes = [note] if note else []
    config = checkpoint_config(name)
    if cfg.adapter is not None:  # an adapter for another base is refused from config.json, before the weights load
        from roadbuddy.families import adapters

        adapters.check_for_base(cfg.adapter, config)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    attn = pick_attention(device, cfg.flash_attn, cfg.fused_attention)
    quant = quantization_config(cfg.quantization, device)
    kwargs = dict(dtype=dtype, attn_implementation=attn, trust_remote_code=False, use_safetensors=True)
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map={"": device.index or 0})
    try:
        tokenizer = from_pretrained(AutoTokenizer, name, trust_remote_code=False)
        model = from_pretrained(AutoModelForImageTextToText, name, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from exc
    if quant is None:
        model.to(device)
    if cfg.adapter is not None:
        from roadbuddy.families import adapters

        model = adapters.apply(model, cfg.adapter, merge=quant is None)
        notes.append(f"adapter {cfg.adapter} ({'merged into the weights' if quant is None else 'beside the quantized weights'})")
    model.eval()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight  # small InternVL3s tie them
    if cfg.embeddings_on_cpu and device.type == "cuda" and not tied:
        # The input embedding table (0.73 GiB for the 4B) only serves a lookup, which _embed does on the
        # CPU; the few MB of looked-up rows then go to the GPU. The lm_head stays on the GPU.
        model.get_input_embeddings().to("cpu")
    kind = "random" if getattr(model.config, "roadbuddy_weights", None) == "random" else "trained"
    return wrap_model(model, tokenizer, device=device, attn_impl=attn, source=f"{kind} weights from {name}", notes=notes)


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
    letter_ids = {}
    for letter in LETTERS:
        ids = tokenizer.encode(letter, add_special_tokens=False)
        if len(ids) == 1:
            letter_ids[letter] = ids[0]
    stop_ids = {i for i in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")) if i is not None}
    params = inspect.signature(model.forward).parameters
    cache_kwarg = "cache" if "cache" in params else "past_key_values"
    return LoadedModel(
        model=model, tokenizer=tokenizer, device=device, dtype=next(model.parameters()).dtype,
        attn_impl=attn_impl, image_size=image_size, tokens_per_tile=tokens_per_tile,
        image_token_id=image_token_id, letter_ids=letter_ids, stop_ids=stop_ids, source=source,
        notes=list(notes), cache_kwarg=cache_kwarg, family=registry.family_of(config, source),
        parameters=registry.parameter_count(model),
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


def new_cache(lm: LoadedModel):
    from transformers import DynamicCache

    return DynamicCache(config=lm.config)


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
def forward_packed(lm: LoadedModel, suffixes: list[torch.Tensor], cache) -> torch.Tensor:
    """Several questions' suffixes (each 1 x T_i) after one cached prefix, in one forward pass.

    The suffixes go in side by side as one sequence; a 4D mask lets each token see the whole prefix and
    the earlier tokens of its own suffix only, and position ids restart after the prefix for each, so
    every suffix is computed as if it followed the prefix alone. Returns the next-token logits after
    each suffix ([len(suffixes), vocab]); the cache then holds all the suffixes: rewind it.
    """
    prefix_len = cache.get_seq_length()
    ids = torch.cat(suffixes, dim=1)
    embeds = _embed(lm, ids, None)
    lengths = torch.tensor([s.shape[1] for s in suffixes], device=embeds.device)
    owner = torch.repeat_interleave(torch.arange(len(suffixes), device=embeds.device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    offset = torch.arange(ids.shape[1], device=embeds.device) - starts[owner]  # position inside its suffix
    sees = (owner[:, None] == owner[None, :]) & (offset[:, None] >= offset[None, :])
    sees = torch.cat([sees.new_ones(ids.shape[1], prefix_len), sees], dim=1)
    mask = torch.zeros(sees.shape, dtype=embeds.dtype, device=embeds.device)
    mask.masked_fill_(~sees, torch.finfo(embeds.dtype).min)
    out = lm.model(inputs_embeds=embeds, attention_mask=mask[None, None], position_ids=(prefix_len + offset)[None],
                   use_cache=True, logits_to_keep=starts + lengths - 1, **{lm.cache_kwarg: cache})
    return out.logits[0].float()


@torch.inference_mode()
def forward_official(lm: LoadedModel, ids: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
    """The model's own forward with pixel values, no cache, nothing shared: the reference in tests
    (it looks up embeddings on the model's device, so not with RunConfig.embeddings_on_cpu on CUDA)."""
    out = lm.model(input_ids=ids, pixel_values=pixel_values.to(lm.device, lm.dtype), use_cache=False, logits_to_keep=1)
    return out.logits[0, -1].float()


def letter_probs(lm: LoadedModel, logits: torch.Tensor, letters: tuple[str, ...]) -> dict[str, float]:
    """Softmax over the next-token logits of this question's valid letters only."""
    ids = [lm.letter_ids[letter] for letter in letters]
    probs = torch.softmax(logits[ids], dim=-1)
    return {letter: float(p) for letter, p in zip(letters, probs)}


@torch.inference_mode()
def greedy(lm: LoadedModel, first_logits: torch.Tensor, cache, max_new_tokens: int) -> str:
    """Greedy continuation from `first_logits`, extending `cache`; returns the decoded text."""
    tokens = []
    logits = first_logits
    for _ in range(max_new_tokens):
        token = int(torch.argmax(logits))
        if token in lm.stop_ids:
            break
        tokens.append(token)
        logits = forward(lm, torch.tensor([[token]], device=lm.device), None, cache)
    return lm.tokenizer.decode(tokens, skip_special_tokens=False)


def rewind(cache, length: int) -> None:
    """Cut `cache` back to its first `length` tokens (the shared prefix).

    A negative argument means "remove that many" in every transformers 5.x
    (positive values changed meaning in 5.18), so only that form is used.
    """
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)
