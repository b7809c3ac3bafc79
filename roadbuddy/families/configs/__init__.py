"""The shipped checkpoint configs (for the VRAM estimate and the random-weight benchmarks) and the files of any
checkpoint that the estimate reads, all without the network: the estimate must not stall a run that has none
(the model load that follows reports that case itself).

Shipped: `<stem>.json`, each a checkpoint's config.json (InternVL3.5-4B's from INTERNVL.md; the Qwen ones
copied from third-party code, not checked against the Qwen repositories: each file's `_comment` says where
from), and `<model_type>.<processor file>.json`, the published processor settings a family's video and image
processors are built from (Qwen3-VL's video_preprocessor_config.json and preprocessor_config.json; Qwen2.5-VL's
preprocessor_config.json, which its video processor falls back on).
"""
from __future__ import annotations

import json
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent
SHIPPED = {
    "OpenGVLab/InternVL3_5-4B-HF": "internvl3_5-4b",
    "Qwen/Qwen3-VL-4B-Instruct": "qwen3-vl-4b-instruct",
    "Qwen/Qwen3-VL-8B-Instruct": "qwen3-vl-8b-instruct",
    "Qwen/Qwen2.5-VL-3B-Instruct": "qwen2_5-vl-3b-instruct",
    "Qwen/Qwen2.5-VL-7B-Instruct": "qwen2_5-vl-7b-instruct",
}
# what a video processor is built from, the first found (transformers' video_processing_utils falls back on
# the image processor's file when a checkpoint has no video one), and what an image processor is built from
VIDEO_PROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json")
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json",)


def shipped_config_file(name: str) -> Path | None:
    """The shipped config for a hub id of SHIPPED or a file stem ("qwen3-vl-4b-instruct"), else None."""
    stem = SHIPPED.get(name, name)
    if "/" in stem or "\\" in stem:
        return None
    path = CONFIG_DIR / f"{stem}.json"
    return path if path.is_file() else None


def load_config(name: str):
    """The config of a shipped name, a local checkpoint or a hub id in the Hugging Face cache, as its family's
    config class (AutoConfig by model_type); never the network."""
    from transformers import AutoConfig

    shipped = shipped_config_file(name)
    if shipped is not None:
        settings = json.loads(shipped.read_text(encoding="utf-8"))
        return AutoConfig.for_model(settings.pop("model_type"), **settings)
    return AutoConfig.from_pretrained(name, trust_remote_code=False, local_files_only=True)


def checkpoint_file(name: str, filename: str) -> Path | None:
    """`filename` of a local checkpoint folder, or of a hub id's snapshot in the Hugging Face cache; None when
    neither has it (nothing is downloaded)."""
    folder = Path(name)
    if folder.is_dir():
        return folder / filename if (folder / filename).is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, filename)
    except Exception:  # noqa: BLE001 - not a valid hub id, no cache: nothing cached
        return None
    return Path(cached) if isinstance(cached, str) else None


def processor_settings(name: str, model_type: str, filenames=VIDEO_PROCESSOR_FILES) -> dict:
    """The settings a checkpoint's processor is built from, the first of `filenames` found (VIDEO_PROCESSOR_FILES
    or IMAGE_PROCESSOR_FILES): a shipped name's are the published ones; a local or cached checkpoint's are its
    own files; a checkpoint without them (a config alone in the cache) gets the published ones of its family."""
    if shipped_config_file(name) is None:
        for filename in filenames:
            found = checkpoint_file(name, filename)
            if found is not None:
                return json.loads(found.read_text(encoding="utf-8"))
    for filename in filenames:
        shipped = CONFIG_DIR / f"{model_type}.{filename}"
        if shipped.is_file():
            return json.loads(shipped.read_text(encoding="utf-8"))
    raise FileNotFoundError(f"no {' or '.join(filenames)} for {name} ({model_type}), nor shipped for its family")
