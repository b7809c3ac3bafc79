"""The frame selector's model: a SigLIP or SigLIP 2 checkpoint that scores how relevant a frame is to a question.

    selector = load_selector("google/siglip2-base-patch16-256")     # a hub id or a checkpoint folder
    logits = score(selector, questions, frames)                     # [Q, F]: question q against frame f

A checkpoint loads as the VLM does (roadbuddy.families.checkpoint): a folder or the Hugging Face cache first,
the hub after one request, never remote code, safetensors only; config.json's model_type is checked before
anything else is read. Its tokenizer and image processor come from the same place (AutoTokenizer,
AutoImageProcessor), so a checkpoint's own text normalisation (SigLIP 2 lowercases) and pixel rules apply.

The logits are the checkpoint's own: cosine of the L2-normalised text and image embeddings times
exp(logit_scale) plus logit_bias (what SiglipModel.forward returns as logits_per_text), computed here from
the two towers separately so that frames can be embedded in chunks. Text is padded to the text tower's
length ("max_length"), as SigLIP was trained.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MODEL_TYPES = ("siglip", "siglip2")  # SigLIP and fixed-resolution SigLIP 2 are "siglip"; SigLIP 2 NaFlex "siglip2"


class SelectorError(ValueError):
    """A frame selector that cannot be loaded or used as asked; str() is one sentence naming it."""


@dataclass
class Selector:
    """A loaded selector: the dual-tower model, its tokenizer and image processor, where it came from."""

    model: torch.nn.Module
    tokenizer: object
    image_processor: object
    name: str

    @property
    def model_type(self) -> str:
        return self.model.config.model_type

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def text_length(self) -> int:
        """Tokens per question: the text tower's positions (questions are padded or cut to it)."""
        return int(self.model.config.text_config.max_position_embeddings)


def _check_source(name: str) -> None:
    """SelectorError for a path that cannot be a checkpoint: a file, a missing folder (the checkpoint loader's
    check, in the selector's words), pickle-only weights."""
    from roadbuddy.families.checkpoint import ModelLoadError, check_model_source

    path = Path(name)
    if path.is_dir() and not any(path.glob("*.safetensors")) and any(path.glob("*.bin")):
        raise SelectorError(f"frame selector {name} holds only pickle (.bin) weights, which execute code when "
                            "loaded; convert them to safetensors")
    try:
        check_model_source(name)
    except ModelLoadError as exc:
        raise SelectorError(_selector_words(exc)) from None


def _selector_words(exc: Exception) -> str:
    """The checkpoint loader's sentence (written for the VLM's --model) about a selector."""
    text = str(exc).replace("pass the checkpoint's folder with --model", "pass the checkpoint's folder instead")
    return text.replace("--model ", "frame selector ").replace("model ", "frame selector ", 1)


def _model_type(name: str) -> str:
    """config.json's model_type, read before anything else; SelectorError for any model but SigLIP's."""
    from transformers import AutoConfig

    from roadbuddy.families.checkpoint import ModelLoadError, from_pretrained

    config_file = Path(name) / "config.json"
    try:
        if config_file.is_file():  # a folder: read the file itself (AutoConfig refuses model types it does not know)
            model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
        else:
            model_type = from_pretrained(AutoConfig, name, trust_remote_code=False).model_type
    except ModelLoadError as exc:
        raise SelectorError(_selector_words(exc)) from None
    except (OSError, ValueError) as exc:
        raise SelectorError(f"frame selector {name}: cannot read its config.json ({str(exc).splitlines()[0]})") \
            from None
    if model_type not in MODEL_TYPES:
        raise SelectorError(f"frame selector {name} is a {model_type or 'model without a model_type'} checkpoint; "
                            "the frame selector takes SigLIP or SigLIP 2 checkpoints (model_type siglip or siglip2)")
    return model_type


def check_selector(name: str | Path) -> str:
    """The selector's model_type, read from its config alone (nothing heavy loads): SelectorError, one sentence,
    for a file, a missing folder, pickle-only weights, or another model's checkpoint."""
    name = str(name)
    _check_source(name)
    return _model_type(name)


def load_selector(name: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Selector:
    """The selector in `name` (a folder or a hub id) on `device`, in eval mode.

    dtype: float32 on the CPU (fp16 weights are upcast), bfloat16 on CUDA, unless given.
    """
    from transformers import AutoImageProcessor, AutoTokenizer, SiglipModel

    from roadbuddy.families.checkpoint import ModelLoadError, from_pretrained

    name = str(name)
    model_type = check_selector(name)
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if model_type == "siglip2":
        from transformers import Siglip2Model as model_class
    else:
        model_class = SiglipModel
    try:
        model = from_pretrained(model_class, name, trust_remote_code=False, use_safetensors=True, dtype=dtype)
        tokenizer = from_pretrained(AutoTokenizer, name, trust_remote_code=False)
        image_processor = from_pretrained(AutoImageProcessor, name, trust_remote_code=False)
    except ModelLoadError as exc:
        raise SelectorError(_selector_words(exc)) from None
    except (OSError, ValueError) as exc:
        raise SelectorError(f"frame selector {name}: cannot load it ({str(exc).splitlines()[0]})") from None
    return Selector(model.to(device).eval(), tokenizer, image_processor, name)


def selector_digest(name: str | Path) -> str | None:
    """The first 16 hex digits of the sha256 of a selector folder's weights (roadbuddy.data.digest.weights_digest):
    what identifies its predictions; None for a hub id (its name does) and for a folder without weights
    (load_selector says what is wrong with it)."""
    from roadbuddy.data.digest import weights_digest

    return weights_digest(name)


def save_selector(selector: Selector, folder: Path | str, dtype: torch.dtype | None = None) -> Path:
    """The selector as a checkpoint folder load_selector reads: config, safetensors, tokenizer, processor."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = selector.model
    if dtype is not None and dtype != next(model.parameters()).dtype:
        import copy

        model = copy.deepcopy(model).to(dtype)
    model.save_pretrained(folder, safe_serialization=True)
    selector.tokenizer.save_pretrained(folder)
    selector.image_processor.save_pretrained(folder)
    return folder


def frame_size(selector: Selector, width: int, height: int) -> tuple[int, int]:
    """(W, H) to decode a width x height clip's frames at, so that the image processor's own resize is a no-op:
    its fixed size (SigLIP squashes a frame to it), or for NaFlex the aspect-keeping size of at most
    max_num_patches patches."""
    processor = selector.image_processor
    if selector.model_type == "siglip2":
        from transformers.models.siglip2.image_processing_pil_siglip2 import get_image_size_for_max_num_patches

        h, w = get_image_size_for_max_num_patches(int(height), int(width), int(processor.patch_size),
                                                  int(processor.max_num_patches))
        return int(w), int(h)
    size = processor.size
    return int(size["width"]), int(size["height"])


def text_inputs(selector: Selector, questions: Sequence[str]) -> dict[str, torch.Tensor]:
    """The text tower's inputs: each question tokenised by the checkpoint's tokenizer, padded to the tower's length."""
    encoded = selector.tokenizer(list(questions), padding="max_length", max_length=selector.text_length,
                                 truncation=True, return_tensors="pt")
    names = ("input_ids", "attention_mask")
    return {k: v.to(selector.device) for k, v in encoded.items() if k in names}


def pixel_inputs(selector: Selector, frames: np.ndarray | Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
    """The vision tower's inputs: uint8 RGB frames [H, W, 3] (a stack or a list of any sizes) through the
    checkpoint's image processor."""
    images = [f if f.flags.writeable else np.array(f) for f in map(np.asarray, frames)]  # (a memory-mapped cache)
    encoded = selector.image_processor(images=images, return_tensors="pt")
    dtype = next(selector.model.parameters()).dtype
    return {k: (v.to(selector.device, dtype) if v.is_floating_point() else v.to(selector.device))
            for k, v in encoded.items()}


def text_embeddings(selector: Selector, text: dict[str, torch.Tensor]) -> torch.Tensor:
    """[Q, D] L2-normalised question embeddings (with gradients, when enabled)."""
    out = selector.model.get_text_features(**text).pooler_output
    return out / out.norm(p=2, dim=-1, keepdim=True)


def frame_embeddings(selector: Selector, pixels: dict[str, torch.Tensor]) -> torch.Tensor:
    """[F, D] L2-normalised frame embeddings (with gradients, when enabled)."""
    out = selector.model.get_image_features(**pixels).pooler_output
    return out / out.norm(p=2, dim=-1, keepdim=True)


def relevance(selector: Selector, text_embeds: torch.Tensor, frame_embeds: torch.Tensor) -> torch.Tensor:
    """[Q, F] logits: the checkpoint's scaled, shifted cosine (SiglipModel's logits_per_text)."""
    model = selector.model
    logits = text_embeds @ frame_embeds.t().to(text_embeds.device)
    return logits * model.logit_scale.exp() + model.logit_bias


@torch.inference_mode()
def score(selector: Selector, questions: Sequence[str], frames: np.ndarray | Sequence[np.ndarray], *,
          batch: int = 64) -> torch.Tensor:
    """[Q, F] float32 relevance logits of each question against each frame (uint8 RGB [F, H, W, 3]), on the CPU;
    frames go through the vision tower `batch` at a time."""
    frames = list(frames)
    if not questions or not frames:
        return torch.zeros(len(questions), len(frames))
    text = text_embeddings(selector, text_inputs(selector, questions))
    embeds = [frame_embeddings(selector, pixel_inputs(selector, frames[i:i + batch]))
              for i in range(0, len(frames), batch)]
    return relevance(selector, text, torch.cat(embeds)).float().cpu()
