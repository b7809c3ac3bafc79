"""A file's sha256, read a megabyte at a time: what identifies a training file, an adapter's or a selector's weights."""
from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def weights_digest(folder: Path | str) -> str | None:
    """The first 16 hex digits of the sha256 of a checkpoint folder's *.safetensors, in name order, hashed one
    after another (what identifies a frame selector's answers); None for anything that is not a folder with
    such weights (a hub id: its name identifies it)."""
    path = Path(folder)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    if not files:
        return None
    h = hashlib.sha256()
    for file in files:
        with open(file, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]
