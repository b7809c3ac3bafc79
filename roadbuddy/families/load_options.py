"""How any family's weights load: the attention implementation and the bitsandbytes quantization."""
from __future__ import annotations

import importlib.util

import torch

from roadbuddy.families.checkpoint import ModelLoadError, from_pretrained


def pick_attention(device: torch.device, want_flash: bool, fused: bool = False) -> str:
    """flash_attention_2 when asked for and importable on CUDA; else --fused-attention's function; else SDPA."""
    if want_flash and device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    if fused:
        from roadbuddy.families import attention

        return attention.register()
    return "sdpa"


def quantization_config(kind: str | None, device: torch.device, skip: list[str]):
    if kind is None:
        return None
    flag = "--load-in-8bit" if kind == "8bit" else "--load-in-4bit"
    if device.type != "cuda":
        raise ModelLoadError(f"{flag} needs a CUDA GPU (bitsandbytes quantized kernels); this run is on {device.type}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadError(f"{flag} needs bitsandbytes: pip install 'roadbuddy[quant]'")
    from transformers import BitsAndBytesConfig

    # `skip` is the family's list of modules kept in bf16 (the vision tower and projector: quantizing them
    # hurts accuracy for little memory, and 8-bit InternVL has NaN reports). transformers 5.x matches these
    # as regexes anchored at the start of the full module name ("vision_tower" alone silently matched
    # nothing: the bench measured the tower quantized), while older releases matched substrings; the
    # full prefixes work with both.
    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
        llm_int8_skip_modules=skip,
    )


def load_weights(name: str, config, cfg, device: torch.device, attn: str, skip: list[str]):
    """Any family's model from checkpoint `name` (its config already read): the adapter checked against the config
    before a weight loads, bf16 on CUDA and float32 on the CPU, quantized with the family's `skip` list kept in
    bf16, the adapter merged (or beside quantized weights), in eval mode. Returns (model, notes, source)."""
    from transformers import AutoModelForImageTextToText

    if cfg.adapter is not None:  # an adapter for another base is refused from config.json, before the weights load
        from roadbuddy.families import adapters

        adapters.check_for_base(cfg.adapter, config)
    quant = quantization_config(cfg.quantization, device, skip)
    kwargs = {"dtype": torch.bfloat16 if device.type == "cuda" else torch.float32, "attn_implementation": attn,
              "trust_remote_code": False, "use_safetensors": True}
    if quant is not None:
        kwargs.update(quantization_config=quant, device_map={"": device.index or 0})
    try:
        model = from_pretrained(AutoModelForImageTextToText, name, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from exc
    if quant is None:
        model.to(device)
    notes = []
    if cfg.adapter is not None:
        from roadbuddy.families import adapters

        model = adapters.apply(model, cfg.adapter, merge=quant is None)
        where = "merged into the weights" if quant is None else "beside the quantized weights"
        notes.append(f"adapter {cfg.adapter} ({where})")
    model.eval()
    kind = "random" if getattr(model.config, "roadbuddy_weights", None) == "random" else "trained"
    return model, notes, f"{kind} weights from {name}"
