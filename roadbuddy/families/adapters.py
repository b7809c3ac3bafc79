"""LoRA adapters made by roadbuddy-finetune: check, identify and load them onto a base model.

An adapter folder is a standard peft adapter (adapter_config.json +
adapter_model.safetensors) plus roadbuddy_adapter.json, its card: the base
model, its family (model_type) and architecture, every setting, the train
file's hash, the data split, library versions and the validation curve.
Loading refuses a folder that is not an adapter, an adapter made for another
model family and one made for another architecture, each in one sentence (the
CLI exits 2); the card is checked against the base's config.json before its
weights load (`check_for_base`), so a wrong pair costs no model load.
"""
from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path

from roadbuddy.data.digest import file_sha256

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
CARD = "roadbuddy_adapter.json"


class AdapterError(ValueError):
    """The folder is not a usable adapter for this model; one sentence naming it."""


def check_folder(path: Path | str) -> Path:
    """The adapter folder, or AdapterError saying what is missing."""
    path = Path(path)
    if not path.is_dir():
        raise AdapterError(f"--adapter {path}: no such folder")
    if not (path / ADAPTER_CONFIG).is_file():
        raise AdapterError(f"--adapter {path} is not a LoRA adapter folder (no {ADAPTER_CONFIG}; make one with "
                           "roadbuddy-finetune)")
    if not (path / ADAPTER_WEIGHTS).is_file():
        extra = " (pickle .bin weights are refused: convert them to safetensors)" if (
            path / "adapter_model.bin").is_file() else ""
        raise AdapterError(f"--adapter {path} has no {ADAPTER_WEIGHTS}{extra}")
    try:
        json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise AdapterError(f"--adapter {path}: {ADAPTER_CONFIG} is not valid JSON ({exc})") from None
    return path


def adapter_digest(path: Path | str) -> str:
    """The first 16 hex digits of the sha256 of the adapter's weights: what identifies its answers."""
    return file_sha256(check_folder(path) / ADAPTER_WEIGHTS)[:16]


# cards written before fine-tuning took other families name none: roadbuddy-finetune trained InternVL only then
UNNAMED_FAMILY = "internvl"


def _first(config, *names):
    """The first of these attributes the config has (families name a size differently), lists for tuples."""
    value = next((getattr(config, n) for n in names if getattr(config, n, None) is not None), None)
    return list(value) if isinstance(value, (list, tuple)) else value


def architecture(config) -> dict:
    """The family (model_type) and shape of a base model that an adapter's weights must fit (not its name: a hub
    id and a local copy of the same checkpoint are the same base). The vision tower's input size is its tile
    size where it has one, else its patch size (towers that take frames at any size)."""
    text, vision = config.text_config, config.vision_config
    return {
        "model_type": config.model_type,
        "text": [text.model_type, text.hidden_size, text.num_hidden_layers, text.num_attention_heads,
                 text.num_key_value_heads, text.intermediate_size, text.vocab_size],
        "vision": [vision.hidden_size, _first(vision, "num_hidden_layers", "depth"), vision.intermediate_size,
                   _first(vision, "image_size", "patch_size")],
    }


def read_card(path: Path | str) -> dict:
    card = Path(path) / CARD
    if not card.is_file():
        return {}
    try:
        return json.loads(card.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise AdapterError(f"--adapter {path}: {CARD} is not valid JSON ({exc})") from None


def check_base(path: Path | str, config) -> None:
    """Refuse an adapter whose card names another model family, or another base architecture, than `config`'s."""
    card = read_card(path)
    made_for = card.get("base_architecture")
    if made_for is None:
        return
    loaded = architecture(config)
    family = made_for.get("model_type", UNNAMED_FAMILY)
    if family != loaded["model_type"]:
        raise AdapterError(f"--adapter {path} was made for a model of the {family} family ({card.get('base_model', '?')}), "
                           f"not for the {loaded['model_type']} model loaded: an adapter fits only the model family "
                           "it was trained on")
    if [made_for.get("text"), made_for.get("vision")] != [loaded["text"], loaded["vision"]]:
        raise AdapterError(f"--adapter {path} was made for another base model ({card.get('base_model', '?')}, "
                           f"text {made_for.get('text')}) than the one loaded (text {loaded['text']})")


def check_for_base(path: Path | str, config) -> Path:
    """The adapter folder if it is an adapter made for `config`'s architecture (the base checkpoint's
    config.json, read before its weights load); AdapterError otherwise."""
    path = check_folder(path)
    check_base(path, config)
    return path


@contextlib.contextmanager
def quiet_peft():
    """peft reads transformers' `is_gradient_checkpointing` when it wraps a model, which transformers 5.2x
    deprecated with a FutureWarning; it is peft's to change, not something a user of ours can act on."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def apply(model, path: Path | str, *, merge: bool):
    """The base model with the adapter's LoRA layers in it: merged into the weights (`merge`, bf16 and
    fp32 runs: no extra work per token) or beside them (quantized bases, whose weights cannot take it)."""
    from peft import PeftModel

    path = check_folder(path)
    check_base(path, model.config)
    try:
        with quiet_peft():
            peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except (ValueError, KeyError, RuntimeError) as exc:  # shapes or module names that do not fit this base
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AdapterError(f"--adapter {path} does not fit the loaded base model ({first[:200]})") from None
    if merge:
        return peft_model.merge_and_unload()
    return peft_model.get_base_model()  # the LoRA layers stay injected in its modules
