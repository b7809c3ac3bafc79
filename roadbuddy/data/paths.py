"""Where a question's clip is: a `video_path` from a question file, resolved against the dataset root.

The root is --data-dir when given (and only it: a root asked for by name is never
passed over for another that happens to hold the file); without it, the question
file's folder (private layout: `/data/private_test.json` + `videos/x.mp4`), then its
parent (train/public layout: `/ds/train/train.json` + `train/videos/x.mp4`). A path text
that is absolute, holds `..` leaving the root, or cannot be a file name is
malformed (`VideoPathError`: the question file is refused); a path that leads out
of the root through a symlink is refused per clip (never opened), so the run goes on.
"""
from __future__ import annotations

import os
from pathlib import Path


class VideoPathError(ValueError):
    """A malformed `video_path`; str() completes "field 'video_path' ..." (roadbuddy.data.questions adds file and item)."""


def candidate_roots(json_path: Path, data_dir: Path | None) -> list[Path]:
    if data_dir is not None:
        return [Path(os.path.abspath(data_dir))]
    folder = Path(os.path.abspath(json_path)).parent
    return [folder, folder.parent]


def resolve(video_rel: str, json_path: Path, data_dir: Path | None) -> tuple[Path, str | None]:
    """(the clip's path, why it must not be opened, or None). The first root holding the file wins; when none
    does, the path under the first root comes back so the pipeline can report it missing."""
    if "\x00" in video_rel:
        raise VideoPathError("must not contain a NUL character")
    try:
        os.fsencode(video_rel)
    except UnicodeError:
        raise VideoPathError("is not representable as a file name on this system") from None
    if os.path.isabs(video_rel):
        raise VideoPathError(f"must be relative to the dataset root (got absolute {video_rel!r})")
    rel = os.path.normpath(video_rel)
    if rel == os.curdir:
        raise VideoPathError(f"must name a file inside the dataset root (got {video_rel!r})")
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise VideoPathError(f"must stay inside the dataset root (got {video_rel!r})")
    roots = candidate_roots(json_path, data_dir)
    root = next((r for r in roots if os.path.isfile(r / rel)), roots[0])
    path = root / rel
    try:
        real_root = os.path.realpath(root)
        real_path = os.path.realpath(path)
    except (OSError, ValueError) as exc:
        raise VideoPathError(f"cannot be resolved ({exc})") from None
    if os.path.commonpath([real_root, real_path]) != real_root:
        return path, f"{video_rel!r} leaves the dataset root {str(root)!r} through a symlink; refused"
    return path, None

