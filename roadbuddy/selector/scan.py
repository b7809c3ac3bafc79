"""A clip's scan: the frames the selector scores, decoded once through roadbuddy.video's reader.

Training (roadbuddy.finetune.selector.data) and prediction read a clip's scan the same way: the frames at
times.scan_indices, decoder-scaled to the selector's input size (model.frame_size), so the image processor's
resize has nothing left to do and no full-size frame is made. `predict_support` is what prediction asks
of a clip: each question's support times and their scores, for the frame planner's support windows
(roadbuddy.video.frames.select_frames).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from roadbuddy.selector.model import Selector, frame_size, score
from roadbuddy.selector.times import frame_times, peak_centre, scan_indices, support_times
from roadbuddy.video.reader import VideoReader


@dataclass(frozen=True)
class ScannedClip:
    """A clip's scanned frames and their times, with the clip's rate and length (for even frames and plans)."""

    times: np.ndarray  # [F] float64 seconds (index / fps)
    frames: np.ndarray  # [F, H, W, 3] uint8 RGB at the selector's input size
    fps: float
    num_frames: int

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def scan_clip(reader: VideoReader, scan_fps: float, size: tuple[int, int]) -> ScannedClip:
    """Decode the open clip's scan frames at `scan_fps`, scaled by the decoder to `size` (W, H)."""
    info = reader.info
    indices = scan_indices(info.num_frames, info.fps, scan_fps)
    frames = reader.get(indices, size=size)
    info = reader.info  # a decoder switch (decord -> PyAV) may have corrected the frame count
    return ScannedClip(frame_times(indices, info.fps), frames, float(info.fps), int(info.num_frames))


def predict_support(selector: Selector, reader: VideoReader, questions: Sequence[str], *, scan_fps: float,
                    count: int = 1, window: float = 1.0, batch: int = 64) -> list[list[tuple[float, float]]]:
    """Each question's predicted support times in the open clip, as (seconds, the selector's logit there), best
    first, at most `count`, more than `window` apart: its scan at `scan_fps` scored against the questions' text
    (`batch` frames through the vision tower at a time)."""
    info = reader.info
    scan = scan_clip(reader, scan_fps, frame_size(selector, info.width, info.height))
    scores = score(selector, questions, scan.frames, batch=batch).numpy()
    picked = support_times(scores, scan.times, count=count, window=window)
    column = {float(t): i for i, t in enumerate(scan.times)}
    return [[(peak_centre(scores[row], scan.times, t, window), float(scores[row, column[t]])) for t in times]
            for row, times in enumerate(picked)]
