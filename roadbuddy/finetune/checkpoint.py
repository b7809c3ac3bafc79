"""Fine-tuning's checkpoint: everything a killed run needs to go on as if it had not stopped.

    OUTPUT/checkpoint/trainable.safetensors   the trained (LoRA) weights, by parameter name
    OUTPUT/checkpoint/optimizer.safetensors   AdamW's moments and step counts, by parameter name
    OUTPUT/checkpoint/state.json              step, position in the data order, scheduler, log, best, settings
    OUTPUT/checkpoint/best-adapter/           the best validated step's adapter (once there is one)

Written into a temporary folder, fsynced, then swapped in by renames, so the
folder on disk is always a whole checkpoint: the new one, or the one before
(a crash between the two renames leaves it as checkpoint.old, which loading
takes). Tensors go through safetensors and the rest through JSON: nothing is
unpickled. Randomness needs no saved state: dropout is reseeded from the seed
and the position before every forward pass (roadbuddy.finetune.recipe).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

NAME = "checkpoint"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsynced(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> tuple[dict, dict]:
    """AdamW's state as safetensors-ready tensors keyed by parameter name, and the JSON-ready rest."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in state["state"].items():
        name = names[index]
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{name}::{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{name}::{key}"] = value
    groups = [{k: v for k, v in g.items()} for g in state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def load_optimizer(optimizer: torch.optim.Optimizer, names: dict[int, str], tensors: dict, rest: dict) -> None:
    by_name = {name: index for index, name in names.items()}
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        name, field = key.split("::")
        state.setdefault(by_name[name], {})[field] = value
    for key, value in rest["scalars"].items():
        name, field = key.split("::")
        state.setdefault(by_name[name], {})[field] = value
    optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def save(folder: Path, trainable: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
         names: dict[int, str], state: dict, files: dict[str, Path] | None = None) -> Path:
    """Write the checkpoint into `folder`/checkpoint, replacing the one there only once all of it is on disk;
    `files` (name in the checkpoint -> source) are copied in with it."""
    folder = Path(folder)
    final, tmp, old = folder / NAME, folder / f"{NAME}.tmp", folder / f"{NAME}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in trainable.items()}, str(tmp / "trainable.safetensors"))
    tensors, rest = optimizer_tensors(optimizer, names)
    save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps(rest), encoding="utf-8")
    (tmp / "state.json").write_text(json.dumps(state, indent=1, default=str), encoding="utf-8")
    written = ["trainable.safetensors", "optimizer.safetensors", "optimizer.json", "state.json"]
    for name, source in (files or {}).items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tmp / name)
        written.append(name)
    for name in written:
        _fsynced(tmp / name)
    for sub in {(tmp / name).parent for name in written}:
        _fsync_dir(sub)
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(folder)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find(folder: Path) -> Path | None:
    """The checkpoint to resume from, if any (a crash between the swap's renames leaves checkpoint.old)."""
    folder = Path(folder)
    for candidate in (folder / NAME, folder / f"{NAME}.old"):
        if (candidate / "state.json").is_file():
            return candidate
    return None


def load(path: Path) -> tuple[dict, dict, dict, dict]:
    """(trainable tensors, optimizer tensors, optimizer rest, state) of a checkpoint folder."""
    path = Path(path)
    return (load_file(str(path / "trainable.safetensors")), load_file(str(path / "optimizer.safetensors")),
            json.loads((path / "optimizer.json").read_text(encoding="utf-8")),
            json.loads((path / "state.json").read_text(encoding="utf-8")))


def setting_differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """'key: old -> new' for every setting that differs (nested keys joined with dots): why a checkpoint of other
    settings cannot be resumed."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += setting_differences(a, b, f"{prefix}{key}.")
        elif json.dumps(a, default=str) != json.dumps(b, default=str):
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def restore(path: Path, settings: dict, trainable: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
            names: dict[int, str], scheduler) -> tuple[dict, list[str]]:
    """Load the checkpoint at `path` into the trainable tensors, the optimizer and the scheduler, unless it was
    written with other settings: (its state, []) restored, or (its state, the differences) with nothing touched."""
    weights, opt_tensors, opt_rest, state = load(path)
    diff = setting_differences(state.get("settings", {}), settings)
    if diff:
        return state, diff
    with torch.no_grad():
        for name, value in weights.items():
            trainable[name].copy_(value)
    load_optimizer(optimizer, names, opt_tensors, opt_rest)
    scheduler.load_state_dict(state["scheduler"])
    return state, []


def interrupted_message(trainer) -> str:
    """What a trainer's command says on Ctrl-C (`trainer` None when it stopped before one existed): the step it
    stopped at and what the same command does next."""
    step = trainer.state.step if trainer else 0
    if trainer and trainer.checkpoint_step is not None:
        return (f"interrupted at step {step}: rerun the same command to resume from the checkpoint of step "
                f"{trainer.checkpoint_step}")
    return f"interrupted at step {step}: no checkpoint yet; the same command starts over"


def what_stands(trainer) -> str:
    """What a failed training run leaves (for its one-sentence error): the last checkpoint, or nothing yet."""
    if trainer and trainer.checkpoint_step is not None:
        return f"the checkpoint of step {trainer.checkpoint_step} stands"
    return "no checkpoint was written yet"
