"""decord behind roadbuddy.video's source interface (info, read(wanted, size), close); only video.py imports it.

decord is fast at random access: `read` is one get_batch call. It scales at open
time, so each requested size gets its own reader.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from roadbuddy.video.source import VideoError, VideoInfo, fps_from_timestamps, resolve_fps


class DecordSource:
    backend = "decord"

    def __init__(self, decord, path: Path, threads: int):
        self._decord, self._path, self._threads = decord, path, threads
        self._readers = {None: decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads)}
        vr = self._readers[None]
        num_frames = len(vr)
        if num_frames <= 0:
            raise VideoError(path, "decord finds no frames")
        first = vr[0].asnumpy()  # "opens" is not enough: some files open and then fail to read
        fps = resolve_fps(path, vr.get_avg_fps(), lambda: self._fps_from_timestamps(vr, num_frames))
        self.info = VideoInfo(path, fps, num_frames, first.shape[1], first.shape[0], self.backend)

    @staticmethod
    def _fps_from_timestamps(vr, num_frames: int) -> float | None:
        try:
            return fps_from_timestamps(vr.get_frame_timestamp(list(range(num_frames)))[:, 0].tolist())
        except Exception:  # decord raises its own error types; any failure just means "no timestamps"
            return None

    def read(self, wanted: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
        if size not in self._readers:  # decord scales at open time, so each size is its own reader
            self._readers[size] = self._decord.VideoReader(str(self._path), ctx=self._decord.cpu(0),
                                                           num_threads=self._threads, width=size[0], height=size[1])
        frames = self._readers[size].get_batch(wanted.tolist()).asnumpy()
        width, height = size if size is not None else (self.info.width, self.info.height)
        if frames.shape[1:] != (height, width, 3):  # e.g. scaled reads of rotated clips: let PyAV read it
            raise RuntimeError(f"decord returned frames of shape {frames.shape[1:]}, not {(height, width, 3)}")
        return frames

    def close(self) -> None:
        self._readers.clear()
