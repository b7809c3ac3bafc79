"""A run's settings frozen for a package, and back: RunConfig <-> the JSON in settings.json.

A member of a package is every RunConfig field but where the run reads and writes (the question file, the data
folder, the output, --limit, the torchrun rank), with the files a run reads (the model, the adapter, the frame
selector, a system prompt file, a letter prior) replaced by their place in the package. `--from-run` builds the
RunConfig back from a run's run.json, checking that the adapter, the frame selector and system prompt files are
still the ones that run used.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from roadbuddy.config import SYSTEM_PROMPT_NAMES, ConfigError, RunConfig
from roadbuddy.submit.sealed import PackageError

SETTINGS = "settings.json"  # a package's frozen members, the ensemble's weights, the parameter counts
# where a run reads and writes, set by whoever runs the package (and torchrun's rank, set from its environment)
NOT_FROZEN = ("test_json", "output", "data_dir", "limit", "rank", "world_size", "local_rank", "thumbnail_dir")
# fields that name a file or folder the package must hold
PACKED_FILES = ("model", "adapter", "frame_selector", "system_prompt", "debias_prior")
PATH_FIELDS = frozenset(f.name for f in dataclasses.fields(RunConfig) if "Path" in str(f.type))
FROZEN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in NOT_FROZEN)


def packed_sources(cfg: RunConfig) -> dict[str, str]:
    """The fields of `cfg` whose file or folder goes into the package, with their value (a hub id for a model
    or frame selector that is not a folder here)."""
    sources = {"model": cfg.model}
    if cfg.adapter is not None:
        sources["adapter"] = str(cfg.adapter)
    if cfg.frame_selector is not None:
        sources["frame_selector"] = str(cfg.frame_selector)
    if cfg.system_prompt not in SYSTEM_PROMPT_NAMES:
        sources["system_prompt"] = cfg.system_prompt
    if cfg.debias and cfg.debias_prior is not None:
        sources["debias_prior"] = str(cfg.debias_prior)
    return sources


def freeze(cfg: RunConfig, places: dict[str, str]) -> dict:
    """settings.json's member: every frozen field, JSON-ready, the packed files at their `places` (relative
    paths inside the package)."""
    member = {}
    for name in FROZEN_FIELDS:
        value = places.get(name, getattr(cfg, name))
        if name in PACKED_FILES and name not in places and isinstance(value, Path):
            value = None  # a file the run would not read (a --debias-prior without --debias) does not travel
        member[name] = str(value) if isinstance(value, Path) else value
    member["packed_files"] = sorted(places)
    return member


def read_settings(root: Path) -> dict:
    """A package's settings.json, with at least one member; PackageError in one sentence otherwise."""
    try:
        settings = json.loads((root / SETTINGS).read_text(encoding="utf-8"))
        members = settings["members"]
        assert isinstance(members, list) and members and all(isinstance(m, dict) for m in members)
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise PackageError(f"{root / SETTINGS} does not hold a package's settings; pack it again") from None
    return settings


def thaw(member: dict, root: Path, **where) -> RunConfig:
    """The RunConfig of a package's member, its packed files under `root`, reading and writing `where`
    (test_json, output, data_dir); PackageError in one sentence when the settings cannot be a run's."""
    member = dict(member)
    packed = member.pop("packed_files", [])
    unknown = sorted(set(member) - set(FROZEN_FIELDS))
    if unknown or not isinstance(packed, list) or set(packed) - set(PACKED_FILES):
        raise PackageError(f"settings.json holds fields this roadbuddy does not know ({', '.join(unknown) or packed}):"
                           " pack again with this version")
    for name in packed:
        member[name] = str(root / member[name])
    for name in PATH_FIELDS & set(member):
        if member[name] is not None:
            member[name] = Path(member[name])
    try:
        return RunConfig(**member, **where)
    except (ConfigError, TypeError) as exc:
        raise PackageError(f"settings.json does not give a run: {exc}") from None


def from_run(settings: dict, run_dir: Path) -> dict:
    """RunConfig values from a run's run.json settings (its answer settings); PackageError when a file the run
    read has changed since (the adapter's or the frame selector's weights, a system prompt file) or a setting is
    unknown."""
    values = dict(settings)
    adapter_sha = values.pop("adapter_sha256", None)
    selector_sha = values.pop("frame_selector_sha256", None)
    prompt_sha = values.pop("system_prompt_sha256", None)
    unknown = sorted(set(values) - set(FROZEN_FIELDS))
    if unknown:
        raise PackageError(f"{run_dir}/run.json has settings this roadbuddy does not know ({', '.join(unknown)}); "
                           "pack with the version that made the run")
    for name in PATH_FIELDS & set(values):
        if values[name] is not None:
            values[name] = Path(values[name])
    if values.get("adapter") is not None:
        from roadbuddy.families.adapters import AdapterError, adapter_digest

        try:
            now = adapter_digest(values["adapter"])
        except AdapterError as exc:
            raise PackageError(f"{run_dir}: the run's adapter is gone or broken ({exc})") from None
        if adapter_sha is not None and now != adapter_sha:
            raise PackageError(f"{run_dir}: the adapter {values['adapter']} holds other weights than the run used "
                               f"(sha256 {now} now, {adapter_sha} then); pack from a run of these weights")
    selector = values.get("frame_selector")
    if selector is not None:
        from roadbuddy.selector.model import selector_digest

        now = selector_digest(selector)  # None for a hub id, as at the run (its name says which weights)
        if now != selector_sha:
            change = (f"holds other weights than the run used (sha256 {now} now, {selector_sha or 'none'} then)"
                      if now else "is gone or holds no safetensors weights now")
            raise PackageError(f"{run_dir}: the frame selector {selector} {change}; pack from a run of the selector "
                               "you want")
    prompt = values.get("system_prompt")
    if prompt is not None and prompt not in SYSTEM_PROMPT_NAMES:
        path = Path(prompt)
        now = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None
        if now != prompt_sha:
            raise PackageError(f"{run_dir}: the run's system prompt file {prompt} is gone or changed since the run; "
                               "pack from a run of the prompt you want")
    return values
