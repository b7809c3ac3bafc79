"""The families roadbuddy runs, by the `model_type` of a checkpoint's config.json, and the challenge's cap on
parameters: what every other module of families/ may ask without importing any family (registry.py finds a
family's functions)."""
from __future__ import annotations

FAMILIES = {
    "internvl": "InternVL3 and InternVL3.5 (the native -hf / -HF checkpoints)",
    "qwen3_vl": "Qwen3-VL (Qwen/Qwen3-VL-*-Instruct)",
    "qwen2_5_vl": "Qwen2.5-VL (Qwen/Qwen2.5-VL-*-Instruct)",
    "qwen3_5": "Qwen3.5 (Qwen/Qwen3.5-0.8B, -2B, -4B)",
}
COMING: dict[str, str] = {}  # families with test checkpoints that do not run yet
PARAMETER_CAP = 8e9  # the challenge's rule: at most 8B parameters in all at inference


class UnsupportedFamily(ValueError):
    """A checkpoint of a family roadbuddy does not run; str() is one sentence naming those it runs."""


def family_of(config, name: str) -> str:
    """The family of a checkpoint's config (its model_type), or UnsupportedFamily."""
    model_type = getattr(config, "model_type", None)
    if model_type in FAMILIES:
        return model_type
    coming = f" ({COMING[model_type]} is not supported yet)" if model_type in COMING else ""
    runs = "; ".join(f"{family} ({what})" for family, what in FAMILIES.items())
    raise UnsupportedFamily(f"--model {name} is a {model_type or 'model_type-less'} checkpoint{coming}; "
                            f"roadbuddy runs these families: {runs}")


def parameter_count(model) -> int:
    """Every parameter of the model, shared ones once; 4-bit weights counted unpacked (transformers' own count)."""
    count = getattr(model, "num_parameters", None)
    return int(count()) if callable(count) else sum(p.numel() for p in model.parameters())


def over_cap_warning(count: int) -> str | None:
    if count <= PARAMETER_CAP:
        return None
    return (f"WARNING: the model has {count / 1e9:.2f}B parameters, above the RoadBuddy challenge's cap of "
            f"{PARAMETER_CAP / 1e9:.0f}B in all at inference: a submission with it breaks the rules")
