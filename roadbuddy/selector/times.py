"""Times in a clip for the frame selector: which frames a scan looks at, the support times its scores
predict, and whether chosen times hit a support timestamp.

Pure arithmetic (numpy only): no decoding, no model. A frame's time is index / fps, the convention of the
frame planner (roadbuddy.video.frames), so a predicted time maps back to the frame it came from.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from roadbuddy.video.frames import segment_indices


def scan_times(duration: float, scan_fps: float) -> list[float]:
    """The times a scan at `scan_fps` looks at in a clip of `duration` seconds: the middles of
    max(1, round(duration x scan_fps)) equal spans."""
    if not (scan_fps > 0 and math.isfinite(scan_fps)):
        raise ValueError(f"scan_fps must be a positive number, got {scan_fps}")
    duration = duration if duration > 0 and math.isfinite(duration) else 0.0
    count = max(1, round(duration * scan_fps))
    return [(i + 0.5) * duration / count for i in range(count)]


def scan_indices(num_frames: int, fps: float, scan_fps: float) -> list[int]:
    """The frames on screen at scan_times (frame i shows during [i/fps, (i+1)/fps)): distinct, ascending."""
    if num_frames <= 0:
        return []
    times = scan_times(num_frames / fps, scan_fps)
    return sorted({min(int(t * fps), num_frames - 1) for t in times})


def frame_times(indices: Sequence[int], fps: float) -> np.ndarray:
    """Seconds of each frame index (index / fps)."""
    return np.asarray(indices, dtype=np.float64) / fps


def even_times(num_frames: int, fps: float, k: int) -> list[float]:
    """The times of the k frames the plan spreads over a clip without support times (the model card's segments)."""
    return [i / fps for i in segment_indices(num_frames, fps, k)]


def support_times(scores, times: Sequence[float], *, count: int, window: float,
                  floor: float | None = None) -> list[list[float]]:
    """Each question's predicted support times from its scores over the scanned frames at `times`.

    scores: [Q, F] (a tensor or an array), one row per question. For a row: the best-scoring time, then the best
    of those more than `window` seconds from every time taken, and so on, at most `count`, best first. With
    `floor`, a time scoring below it is not taken, except the row's best (every question gets one time).
    """
    rows = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(times):
        raise ValueError(f"scores must be [questions, {len(times)} frames], got shape {rows.shape}")
    out = []
    for row in rows:
        taken: list[float] = []
        for i in np.argsort(-row, kind="stable"):
            if len(taken) == count:
                break
            if taken and floor is not None and row[i] < floor:
                break
            if all(abs(times[i] - t) > window for t in taken):
                taken.append(float(times[i]))
        out.append(taken)
    return out


def hit(chosen: Sequence[float], support: Sequence[float], tolerance: float = 1.0) -> bool:
    """Whether any chosen time is within +/- `tolerance` seconds of any support timestamp."""
    return any(abs(c - s) <= tolerance + 1e-9 for c in chosen for s in support)


def peak_centre(row, times: Sequence[float], peak: float, window: float) -> float:
    """Where a picked peak's evidence is centred: the mean of the scanned times within `window` seconds of
    `peak`, weighted by the softmax of their scores. Evidence stays on screen for a while and a selector's best
    frame is as often its first as its middle; frames around it that score as well pull the time to the middle
    of their run, while one frame far above its neighbours keeps it where it is."""
    row = np.asarray(row, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    near = np.abs(times - peak) <= window + 1e-9
    weights = np.exp(row[near] - row[near].max())
    return float((weights * times[near]).sum() / weights.sum())
