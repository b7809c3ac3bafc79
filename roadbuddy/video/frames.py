"""Which frames of a clip the model sees: uniform segments, an adaptive count,
and extra frames around the support timestamps a question points at.

Pure index arithmetic (numpy only): no decoding, no pixels.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def segment_indices(num_frames: int, fps: float, k: int, start: float | None = None,
                    end: float | None = None) -> list[int]:
    """The model card's `get_index`: the middle frame of each of `k` equal segments of [start, end] seconds.

    first = max(0, round(start*fps)), last = min(round(end*fps), n-1), seg = (last-first)/k,
    frame i = int(first + seg/2 + round(seg*i)), with Python's (banker's) rounding as in the card.
    A missing bound means the clip's edge. With k > n indices repeat, as in the card.

    Beyond the card: a window with no frames in it (start past the end, end before 0, or
    start > end) collapses to the single frame min(first, n-1) instead of the card's
    out-of-range indices; fps <= 0 (a broken container) ignores the window.
    """
    if num_frames <= 0 or k <= 0:
        return []
    last_frame = num_frames - 1
    if not (fps > 0 and math.isfinite(fps)):
        start = end = None

    def frame_at(seconds: float) -> int:
        # Clamping to [-1, n] before rounding changes no result and keeps round() off inf.
        return round(min(max(seconds * fps, -1.0), float(num_frames)))

    first = 0 if start is None or math.isnan(start) else max(0, frame_at(start))
    last = last_frame if end is None or math.isnan(end) else min(frame_at(end), last_frame)
    if first > last:
        return [min(first, last_frame)] * k
    seg = float(last - first) / k
    return [min(max(int(first + seg / 2 + round(seg * i)), 0), last_frame) for i in range(k)]


def frame_count(duration: float, *, min_frames: int, max_frames: int, frames_per_second: float,
                max_visual_tokens: int, tokens_per_frame: int) -> int:
    """Frames to show for a clip of `duration` seconds.

    clamp(round(duration * frames_per_second), min_frames, max_frames), then cut so that
    count * tokens_per_frame <= max_visual_tokens, but never below 1.

    The token budget wins over min_frames: it stands for the GPU memory ceiling (KV cache and
    vision activations grow with every visual token), which is a hard limit, while min_frames
    is a quality preference. With many tiles per frame the budget can therefore allow fewer
    frames than min_frames; one frame is always shown, even if it alone exceeds the budget.
    """
    if not (duration > 0 and math.isfinite(duration)):
        duration = 0.0
    count = min(max(round(duration * frames_per_second), min_frames), max_frames)
    if tokens_per_frame > 0:
        count = min(count, max_visual_tokens // tokens_per_frame)
    return max(count, 1)


def select_frames(num_frames: int, fps: float, count: int, support_times: Sequence[float] = (), *,
                  support_window: float = 1.0, support_share: float = 0.5) -> list[int]:
    """`count` distinct frame indices in ascending (temporal) order.

    Without support times: the model card's uniform segments. With them,
    round(count * support_share) frames (at least one per timestamp while count allows) are
    taken inside [t - support_window, t + support_window] around each timestamp, split evenly
    with the remainder to the earliest; the rest spread across the whole clip. Timestamps and
    windows are clamped into the clip; duplicate timestamps count once. Frames picked twice
    are replaced by evenly spread unused ones, so the result has min(count, num_frames) frames.
    """
    if num_frames <= 0 or count <= 0:
        return []
    target = min(count, num_frames)
    usable_fps = fps is not None and fps > 0 and math.isfinite(fps)
    times = sorted({min(max(float(t), 0.0), num_frames / fps)
                    for t in support_times if not math.isnan(float(t))}) if usable_fps else []

    if not times or support_share <= 0:
        chosen = set(segment_indices(num_frames, fps, count))
    else:
        duration = num_frames / fps
        window = max(float(support_window), 0.0)
        n_support = min(max(round(count * support_share), len(times)), count)
        per_time, extra = divmod(n_support, len(times))
        chosen = set(segment_indices(num_frames, fps, count - n_support))
        for i, t in enumerate(times):
            k = per_time + (1 if i < extra else 0)
            chosen.update(segment_indices(num_frames, fps, k, max(t - window, 0.0), min(t + window, duration)))

    if len(chosen) < target:
        unused = np.setdiff1d(np.arange(num_frames), np.fromiter(chosen, dtype=np.int64))
        need = target - len(chosen)
        picks = ((np.arange(need) + 0.5) * len(unused) / need).astype(np.int64)
        chosen.update(int(i) for i in unused[picks])
    return sorted(chosen)


def detail_frames(chosen: Sequence[int], k: int, fps: float, support_times: Sequence[float] = ()) -> list[int]:
    """`k` of a question's chosen frames (ascending) for detail tiling: the one nearest each support
    timestamp first (distinct frames, timestamps in order), then frames spread evenly over the rest."""
    chosen = sorted(chosen)
    k = min(k, len(chosen))
    picked: list[int] = []
    if fps and fps > 0 and math.isfinite(fps):
        for t in sorted(support_times):
            if len(picked) == k:
                break
            free = [f for f in chosen if f not in picked]
            if free:
                picked.append(min(free, key=lambda f: (abs(f / fps - t), f)))
    rest = [f for f in chosen if f not in picked]
    need = k - len(picked)
    if need > 0:
        picked += [rest[int((i + 0.5) * len(rest) / need)] for i in range(need)]
    return sorted(picked)
