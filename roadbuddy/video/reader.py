"""Open a clip and read frames from it: the only module (with its two back-ends) that imports decoders.

decord (roadbuddy.video.decord_source) is fast at random access and is tried first; PyAV
(roadbuddy.video.pyav_source) reads what decord cannot (decord raises on some truncated
or odd files, or is not installed), so "auto" falls back to it per file and logs
which. Both return uint8 RGB frames that agree up to colour-conversion rounding.
Here: the errors and clip facts both share, the frame-rate rules, the reader the
pipeline uses and `open_video`, which picks the back-end.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from roadbuddy.video.source import VideoError, VideoInfo, decoder_reason

log = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav")
def _import_decord():
    try:
        import decord
    except ImportError:  # also when sys.modules["decord"] is None (tests, or deliberately disabled)
        return None
    return decord


def _import_av():
    try:
        import av
    except ImportError:
        return None
    return av


def decoders_available() -> dict[str, bool]:
    return {"decord": _import_decord() is not None, "pyav": _import_av() is not None}


class VideoReader:
    """One opened clip; read every frame its questions need in one `get` call."""

    def __init__(self, source, fallback_threads: int | None = None):
        self._source = source
        self._fallback_threads = fallback_threads  # set when "auto" may still switch this file to PyAV
        self.info: VideoInfo = source.info

    def get(self, indices: Sequence[int], size: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 RGB frames [len(indices), H, W, 3] in the order given; indices clamp to the clip.

        `size` = (W, H) lets the decoder scale; the model card's output is size=None.
        """
        if self._source is None:
            raise ValueError(f"{self.info.path} is closed")
        wanted = np.clip(np.asarray(indices, dtype=np.int64).reshape(-1), 0, self.info.num_frames - 1)
        if wanted.size == 0:
            w, h = size if size is not None else (self.info.width, self.info.height)
            return np.zeros((0, h, w, 3), np.uint8)
        if wanted.size == 1 or bool((wanted[1:] > wanted[:-1]).all()):  # sorted and distinct, as the
            return self._read(wanted, size)  # pipeline asks: no gather copy of every decoded frame
        unique, order = np.unique(wanted, return_inverse=True)
        return self._read(unique, size)[order.reshape(-1)]

    def _read(self, unique: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
        """Frames for sorted unique in-range indices, switching this file to PyAV if decord fails under "auto"."""
        try:
            return self._source.read(unique, size)
        except VideoError:
            raise
        except Exception as exc:  # decord raises DECORDError, RuntimeError, ... (PyAV's own failures are VideoErrors)
            if self._source.backend != "decord":
                raise
            if self._fallback_threads is None:
                raise VideoError(self.info.path, f"decord failed reading frames ({decoder_reason(exc)})") from exc
            log.warning("decord failed reading %s (%s); decoding it with PyAV", self.info.path, decoder_reason(exc))
        self._source.close()
        self._source = None
        self._source = _open_pyav(self.info.path, self._fallback_threads)
        self._fallback_threads = None
        self.info = self._source.info
        # PyAV counts only the frames present, which can be fewer than decord's count: clamp again.
        clamped, order = np.unique(np.minimum(unique, self.info.num_frames - 1), return_inverse=True)
        return self._source.read(clamped, size)[order.reshape(-1)]

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_pyav(path: Path, threads: int):
    av = _import_av()
    if av is None:
        raise ImportError("PyAV is not installed (pip install av)")
    from roadbuddy.video.pyav_source import PyAVSource

    return PyAVSource(av, path, threads)


def _open_decord(decord, path: Path, threads: int):
    from roadbuddy.video.decord_source import DecordSource

    return DecordSource(decord, path, threads)


def open_video(path: Path | str, backend: str = "auto", threads: int = 0, prefer: str = "decord") -> VideoReader:
    """Open a clip for reading. backend: "auto", "decord" or "pyav".

    threads: decoder threads. Both back-ends hand the number to FFmpeg's decoder, for which 0 means its
    automatic count (the CPU cores + 1, at most 16; measured here: 3 on 2 cores), not "all cores".

    "auto" tries decord first and falls back to PyAV per file; with prefer="pyav" it tries PyAV first
    (the faster reader for sequential, decoder-scaled reads: bench/README.md) and falls back to decord
    when PyAV is missing or cannot read the file.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if prefer not in ("decord", "pyav"):
        raise ValueError(f"prefer must be 'decord' or 'pyav', got {prefer!r}")
    path = Path(path)
    if not path.exists():
        raise VideoError(path, "no such file")
    if path.is_dir():
        raise VideoError(path, "it is a directory, not a video file")
    if path.stat().st_size == 0:
        raise VideoError(path, "the file is empty (0 bytes)")

    if backend == "auto" and prefer == "pyav" and _import_av() is not None:
        try:
            return VideoReader(_open_pyav(path, threads))
        except VideoError as exc:
            decord = _import_decord()
            if decord is None:
                raise
            log.warning("PyAV cannot read %s (%s); trying decord", path, exc.reason)
            try:
                return VideoReader(_open_decord(decord, path, threads))
            except Exception:  # decord's own reason adds nothing: report PyAV's
                raise exc from None

    if backend in ("auto", "decord"):
        decord = _import_decord()
        if decord is None and backend == "decord":
            raise ImportError("decord is not installed (pip install decord), so backend='decord' cannot be used")
        if decord is not None:
            try:
                return VideoReader(_open_decord(decord, path, threads),
                                   fallback_threads=threads if backend == "auto" else None)
            except VideoError as exc:
                if backend == "decord":
                    raise
                failure = exc.reason
            except Exception as exc:  # decord raises DECORDError, RuntimeError, ...
                if backend == "decord":
                    raise VideoError(path, f"decord cannot read it ({decoder_reason(exc)})") from exc
                failure = decoder_reason(exc)
            log.warning("decord cannot read %s (%s); trying PyAV", path, failure)
    return VideoReader(_open_pyav(path, threads))
