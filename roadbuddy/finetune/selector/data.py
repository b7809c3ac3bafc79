"""The selector's training data: questions with support times, each clip's scan, labels by window, the steps.

- Questions come from a labeled file (roadbuddy.data.questions); those without support_frames teach nothing
  and are counted. The split holds out whole clips exactly as roadbuddy-finetune does (the same seed and
  fraction hold out the same clips), or takes a validation file.
- Each clip's scan (roadbuddy.selector.scan) is decoded ONCE, at the selector's input size, and cached as
  .npy under the output folder, memory-mapped when read: a resumed run, and every epoch, reads the cache.
- A scanned frame is a positive for a question when within `positive_window` seconds of one of its support
  timestamps, a negative when more than `negative_gap` from all of them, and teaches nothing in between;
  every frame of another clip in the step is a negative.
- An epoch visits the clips in a seeded order, `clips_per_step` at a time; the frames a clip contributes to a
  step (all its positives, then negatives) are drawn from (seed, epoch, position), so a resumed run draws
  what the uninterrupted one drew.
"""
from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from roadbuddy.data.atomic import atomic_write_text
from roadbuddy.data.questions import Question, QuestionFileError, group_by_video, load_questions
from roadbuddy.selector.scan import ScannedClip, scan_clip
from roadbuddy.video.reader import open_video
from roadbuddy.video.source import VideoError


class SelectorDataError(QuestionFileError):
    """The data cannot train a selector (no support times, no readable clip); one sentence naming file and field."""


@dataclass(frozen=True)
class Clip:
    """A clip's scan and the questions asked about it."""

    rel: str  # the video_path of its questions, as in the file
    scan: ScannedClip
    questions: tuple[Question, ...]


@dataclass(frozen=True)
class Batch:
    """One step's inputs: every question of its clips against every frame they contribute."""

    texts: list[str]
    frames: list[np.ndarray]  # [H, W, 3] uint8 each
    labels: torch.Tensor  # [Q, F] float32: +1 positive, -1 negative, 0 teaches nothing
    clips: tuple[str, ...]


def questions_with_support(path: Path, data_dir: Path | None) -> tuple[list[Question], int]:
    """The file's questions that have support_frames, and how many have none; SelectorDataError when none has."""
    questions = load_questions(path, data_dir)
    usable = [q for q in questions if q.support_frames]
    if not usable:
        raise SelectorDataError(f"{Path(path).name}: no item has field 'support_frames'; the frame selector learns "
                                "where the evidence is from them (train.json has them, the test files do not)")
    return usable, len(questions) - len(usable)


def frame_labels(times: np.ndarray, support: Iterable[float], positive_window: float,
                 negative_gap: float) -> np.ndarray:
    """int8 [F]: +1 within positive_window of a support timestamp, -1 beyond negative_gap of all, else 0."""
    support = np.asarray(list(support), dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if support.size == 0:
        return np.full(times.shape, -1, np.int8)
    distance = np.abs(times[:, None] - support[None, :]).min(axis=1)
    return np.where(distance <= positive_window + 1e-9, 1, np.where(distance > negative_gap, -1, 0)).astype(np.int8)


def _cache_name(video: Path) -> str:
    return hashlib.sha256(str(Path(video).resolve()).encode("utf-8", "surrogatepass")).hexdigest()[:24]


def cached_scan(video: Path, cache: Path, scan_fps: float, size_of: Callable[[int, int], tuple[int, int]],
                threads: int = 0) -> ScannedClip:
    """The clip's scan from `cache` when it was made from this file (size and mtime), else decoded and cached.

    size_of(width, height) gives the decode size (W, H) of a clip of that size. Raises VideoError.
    """
    video = Path(video)
    try:
        stat = video.stat()
    except OSError:  # open_video below says why, as a VideoError
        stat = None
    key = _cache_name(video)
    frames_file, meta_file = cache / f"{key}.npy", cache / f"{key}.json"
    source = {"path": str(video.resolve()), "bytes": stat and stat.st_size, "mtime_ns": stat and stat.st_mtime_ns,
              "scan_fps": scan_fps}
    if stat is not None and meta_file.is_file() and frames_file.is_file():
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("source") == source:
            frames = np.load(frames_file, mmap_mode="r", allow_pickle=False)
            return ScannedClip(np.asarray(meta["times"], np.float64), frames, meta["fps"], meta["num_frames"])
    with open_video(video, threads=threads) as reader:
        scan = scan_clip(reader, scan_fps, size_of(reader.info.width, reader.info.height))
    cache.mkdir(parents=True, exist_ok=True)
    tmp = frames_file.with_name(frames_file.name + ".tmp.npy")
    np.save(tmp, np.ascontiguousarray(scan.frames), allow_pickle=False)
    tmp.replace(frames_file)
    atomic_write_text(meta_file, json.dumps({"source": source, "times": scan.times.tolist(), "fps": scan.fps,
                                             "num_frames": scan.num_frames}))
    return scan


def scan_clips(questions: list[Question], cache: Path, scan_fps: float,
               size_of: Callable[[int, int], tuple[int, int]], threads: int = 0,
               progress: Callable[[Iterable], Iterable] = iter) -> tuple[list[Clip], dict[str, str]]:
    """Every clip of these questions scanned (once, through the cache), and clip -> reason for those that fail."""
    clips, bad = [], {}
    for video, qs in progress(group_by_video(questions)):
        rel = qs[0].video_rel
        if qs[0].video_error:
            bad[rel] = qs[0].video_error
            continue
        try:
            scan = cached_scan(video, cache, scan_fps, size_of, threads)
        except VideoError as exc:
            bad[rel] = exc.reason
            continue
        if len(scan.times) == 0:
            bad[rel] = "no frames decoded"
            continue
        clips.append(Clip(rel, scan, tuple(qs)))
    return clips, bad


def clip_order(clips: list[Clip], seed: int, epoch: int) -> list[Clip]:
    """The epoch's order of the clips (a string seed is hashed by sha512: the same on every machine)."""
    order = list(clips)
    random.Random(f"selector-order:{seed}:{epoch}").shuffle(order)
    return order


def steps_per_epoch(clips: int, clips_per_step: int) -> int:
    return -(-clips // clips_per_step)


def clip_frames(clip: Clip, limit: int, rng: random.Random, positive_window: float) -> list[int]:
    """Rows of the clip's scan a step uses: all, or at most `limit`: frames positive for any of its questions
    first, the rest drawn at random; ascending."""
    count = len(clip.scan.times)
    if limit <= 0 or count <= limit:
        return list(range(count))
    support = [t for q in clip.questions for t in q.support_frames]
    positive = np.flatnonzero(frame_labels(clip.scan.times, support, positive_window, positive_window) == 1).tolist()
    rng.shuffle(positive)
    others = [i for i in range(count) if i not in set(positive)]
    rng.shuffle(others)
    return sorted((positive + others)[:limit])


def step_batch(clips: list[Clip], *, seed: int, epoch: int, position: int, frames_per_clip: int,
               positive_window: float, negative_gap: float) -> Batch:
    """The step that starts at `position` of the epoch's clip order: its clips' questions against their frames."""
    rng = random.Random(f"selector-frames:{seed}:{epoch}:{position}")
    rows = [clip_frames(c, frames_per_clip, rng, positive_window) for c in clips]
    frames = [np.asarray(c.scan.frames[i]) for c, picked in zip(clips, rows) for i in picked]
    texts, labels = [], []
    for ci, clip in enumerate(clips):
        for q in clip.questions:
            row = []
            for cj, (other, picked) in enumerate(zip(clips, rows)):
                if ci == cj:
                    row.append(frame_labels(clip.scan.times[picked], q.support_frames, positive_window, negative_gap))
                else:
                    row.append(np.full(len(picked), -1, np.int8))
            texts.append(q.question)
            labels.append(np.concatenate(row))
    return Batch(texts, frames, torch.from_numpy(np.stack(labels).astype(np.float32)), tuple(c.rel for c in clips))
