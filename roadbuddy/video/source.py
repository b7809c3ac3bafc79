"""What every decoder back-end shares: the clip's facts, its one-sentence error, the frame-rate rules."""
from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ASSUMED_FPS = 30.0  # the RoadBuddy clips' rate, used only when a container states none


class VideoError(Exception):
    """A clip that cannot be opened or decoded; str() is one sentence naming the file."""

    def __init__(self, path: Path | str, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot decode {self.path}: {reason}")


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    fps: float
    num_frames: int
    width: int
    height: int
    backend: str  # "decord" or "pyav"

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def valid_fps(value) -> float | None:
    try:
        fps = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return fps if math.isfinite(fps) and fps > 0 else None


def fps_from_timestamps(seconds: Sequence[float]) -> float | None:
    """Frames per second from presentation times in seconds (needs two distinct ones)."""
    if len(seconds) < 2:
        return None
    span = max(seconds) - min(seconds)
    return valid_fps((len(seconds) - 1) / span) if span > 0 else None


def resolve_fps(path: Path, stated, from_timestamps) -> float:
    """The container's stated rate, else one computed from frame timestamps, else ASSUMED_FPS (with a warning)."""
    fps = valid_fps(stated)
    if fps is not None:
        return fps
    fps = from_timestamps()
    if fps is not None:
        log.warning("%s states no frame rate; using %.3f fps computed from frame timestamps", path, fps)
        return fps
    log.warning("%s states no frame rate and its timestamps give none; assuming %g fps", path, ASSUMED_FPS)
    return ASSUMED_FPS


_DECORD_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: (?:Check failed: .*? \(.*?\) )?(?:Error: |ERROR )?", re.I)


def decoder_reason(exc: BaseException) -> str:
    """A short reason from a decoder exception: FFmpeg's message without errno and path, decord's without
    its source location ("[03:00:21] /src/video/video_reader.cc:486: Error: av_read_frame failed ...")."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return _DECORD_PREFIX.sub("", text.splitlines()[0]).strip()
