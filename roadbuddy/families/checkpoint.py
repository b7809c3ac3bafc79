"""Where a checkpoint comes from, for every family: a local folder, the Hugging Face cache, or (after one
request that says the hub is reachable) the hub; never remote code, safetensors only. Its config.json is
read first and decides the family (roadbuddy.families.names) before a tokenizer or a weight loads.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from roadbuddy.families import names


class ModelLoadError(RuntimeError):
    """The model cannot be loaded as asked (missing package, no CUDA, wrong format); one sentence."""


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {requested} was asked for but CUDA is not available on this machine")
    return device


def _check_native_format(path: Path) -> None:
    config_file = path / "config.json"
    if config_file.is_file():
        model_type = json.loads(config_file.read_text()).get("model_type")
        if model_type == "internvl_chat":
            raise ModelLoadError(
                f"{path} is an original-format InternVL checkpoint (model_type internvl_chat, needs remote code); "
                "use its native -HF twin instead"
            )
    if path.is_dir() and not any(path.glob("*.safetensors")) and any(path.glob("*.bin")):
        raise ModelLoadError(
            f"{path} holds only pickle (.bin) weights, which execute code when loaded; convert them to safetensors"
        )


def check_model_source(name: str) -> None:
    """ModelLoadError (one sentence) when `name` is neither a folder nor something a hub id can name: a path
    that does not exist would otherwise reach the hub client, whose complaint is about repo id syntax."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    path = Path(name)
    if path.is_dir():
        return
    if path.exists():
        raise ModelLoadError(f"--model {name} is a file; give the checkpoint's folder (config.json, *.safetensors, "
                             "tokenizer) or a hub id")
    try:
        validate_repo_id(name)
    except HFValidationError:
        raise ModelLoadError(f"--model {name}: no such folder") from None


def _require_hub(name: str) -> None:
    """Make ONE request to the hub before transformers goes online: its client retries an unreachable hub for
    about a minute (twice over: tokenizer, then model) before failing with a message about the network."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import RepositoryNotFoundError

    where = f"the Hugging Face cache ({constants.HF_HUB_CACHE})"
    get_it = (f"get it with `hf download {name}` on a machine with network (into this cache, or copy the cache "
              "here), or pass the checkpoint's folder with --model")
    if constants.HF_HUB_OFFLINE:
        raise ModelLoadError(f"model {name} is not in {where} and offline mode (HF_HUB_OFFLINE) keeps the hub out: "
                             f"{get_it}")
    try:
        get_hf_file_metadata(hf_hub_url(name, "config.json"), timeout=10)  # no retries: one try
    except RepositoryNotFoundError:
        raise ModelLoadError(f"--model {name}: no such folder, and the Hugging Face hub has no model of that name "
                             "(or it needs a login: hf auth login)") from None
    except Exception as exc:  # noqa: BLE001 - any failure of the one request means the hub is not usable now
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelLoadError(f"model {name} is not in {where} and the hub cannot be reached ({reason}): "
                             f"{get_it}") from None


def from_pretrained(cls, name: str, **kwargs):
    """A local folder or the Hugging Face cache first (no network round trips), then the hub if one request to
    it succeeds."""
    if not Path(name).exists():
        try:
            return cls.from_pretrained(name, local_files_only=True, **kwargs)
        except OSError:
            _require_hub(name)
    return cls.from_pretrained(name, **kwargs)


def checkpoint_config(name: str):
    """The checkpoint's config (a folder, the cache, or one request to the hub), checked to be of a family that
    runs: what a checkpoint is gets decided from config.json, before a tokenizer or a weight is read."""
    from transformers import AutoConfig

    check_model_source(name)
    if Path(name).exists():
        _check_native_format(Path(name))
    try:
        config = from_pretrained(AutoConfig, name, trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {name!r}: {str(exc).splitlines()[0]}") from exc
    try:
        names.family_of(config, name)
    except names.UnsupportedFamily as exc:
        raise ModelLoadError(str(exc)) from None
    return config
