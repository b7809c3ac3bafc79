"""PyAV behind roadbuddy.video's source interface (info, read(wanted, size), close); only video.py imports it.

PyAV reads what decord cannot (truncated files, raw streams, odd sizes), applies
the display matrix (portrait phone clips), and scales with swscale's bicubic
while converting to RGB, so no full-size RGB frame is made for a smaller size.
"""
from __future__ import annotations

import bisect
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from roadbuddy.video.source import VideoError, VideoInfo, decoder_reason, fps_from_timestamps, resolve_fps

log = logging.getLogger("roadbuddy.video")  # one logger for the whole video box, whichever back-end speaks


class PyAVSource:
    """Frame access by index over PyAV: seek to the keyframe before a wanted frame, decode forward.

    Frame i is the i-th smallest packet timestamp, so positions survive seeks.
    Streams without usable timestamps are decoded from the start, counting.
    """

    backend = "pyav"

    def __init__(self, av, path: Path, threads: int):
        self._av, self._path, self._threads = av, path, threads
        self._container = None
        self._reformatter = None
        self._container = self._open()
        try:
            self.info = self._index(path)
        except BaseException:
            self.close()
            raise

    def _index(self, path: Path) -> VideoInfo:
        stream = self._container.streams.video[0]
        # One cheap demux pass (no decoding) gives the frame count and where the keyframes are.
        stamps, keyframe_stamps = [], []
        try:
            for packet in self._container.demux(stream):
                if packet.size == 0:  # the flush packet at the end
                    continue
                stamps.append(packet.pts)
                if packet.is_keyframe:
                    keyframe_stamps.append(packet.pts)
        except self._av.error.FFmpegError as exc:  # a truncated file: count what is there
            log.warning("%s: the file ends early (%s); %d frames are present", path, decoder_reason(exc), len(stamps))
        if not stamps:
            raise VideoError(path, "the video stream has no frames")
        self._seekable = None not in stamps and len(set(stamps)) == len(stamps)
        if self._seekable:
            stamps.sort()
            self._index_of = {pts: i for i, pts in enumerate(stamps)}
            self._keyframes = sorted(self._index_of[pts] for pts in keyframe_stamps)
            self._stamps = stamps
        # Packets actually present, not stream.frames: a truncated mp4 keeps its full index (stream.frames
        # counts it), and mkv/webm state no count at all (stream.frames is 0).
        num_frames = len(stamps)
        time_base = stream.time_base

        def from_timestamps():
            if not self._seekable or time_base is None:
                return None
            return fps_from_timestamps([float(pts * time_base) for pts in stamps])

        fps = resolve_fps(path, stream.average_rate, from_timestamps)
        frames = self._decode_from(0)
        first = next(frames, None)
        frames.close()
        if first is None:
            raise VideoError(path, "no frame of the video stream decodes")
        # A phone's portrait clip is stored landscape with a display matrix; decord applies it, so PyAV must too.
        self._quarter_turns = _quarter_turns(getattr(first[1], "rotation", 0))  # PyAV < 14 has no .rotation
        width, height = first[1].width, first[1].height
        if self._quarter_turns % 2:
            width, height = height, width
        return VideoInfo(path, fps, num_frames, width, height, self.backend)

    def _open(self):
        try:
            container = self._av.open(str(self._path))
        except self._av.error.FFmpegError as exc:
            raise VideoError(self._path, f"not a readable video ({decoder_reason(exc)})") from exc
        if not container.streams.video:
            container.close()
            raise VideoError(self._path, "the file has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = self._threads
        if self._container is not None:
            self._container.close()
        return container

    def _decode_from(self, start: int) -> Iterator[tuple[int, object]]:
        """(index, frame) from the keyframe at or before `start` onwards; stops quietly where the data ends."""
        if self._seekable:
            self._container.seek(self._stamps[start], stream=self._container.streams.video[0], backward=True)
        else:
            self._container = self._open()
        position = 0
        try:
            for frame in self._container.decode(video=0):
                if self._seekable:
                    if frame.pts not in self._index_of:
                        raise _LostTrack(frame.pts)
                    position = self._index_of[frame.pts]
                yield position, frame
                position += 1
        except self._av.error.FFmpegError as exc:  # corrupt or truncated data: what decoded so far stands
            log.warning("%s: decoding stopped after frame %d (%s)", self._path, position - 1, decoder_reason(exc))

    def read(self, wanted: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
        try:
            return self._read(wanted, size)
        except _LostTrack as exc:
            log.warning("%s: frame timestamp %s is not in the demuxed index; decoding from the start instead",
                        self._path, exc.pts)
            self._seekable = False
            return self._read(wanted, size)

    def _rgb(self, frame, size: tuple[int, int] | None) -> np.ndarray:
        """The frame as displayed, turned by its display matrix and scaled to size = (W, H), else to the
        clip's size: a stream can change size midway (joined recordings), and frames must stack.

        Scaling is swscale's bicubic (the filter the model card's PIL resize uses; PyAV's default is
        bilinear), through one reformatter kept for the clip, converting YUV straight to RGB at the
        target size: no full-size RGB frame is made when a smaller size is asked for."""
        width, height = size if size is not None else (self.info.width, self.info.height)
        if self._quarter_turns % 2:
            width, height = height, width
        if self._reformatter is None:
            from av.video.reformatter import VideoReformatter
            self._reformatter = VideoReformatter()
        array = self._reformatter.reformat(frame, width=width, height=height, format="rgb24",
                                           interpolation="BICUBIC").to_ndarray()
        return np.ascontiguousarray(np.rot90(array, self._quarter_turns)) if self._quarter_turns else array

    def _read(self, wanted: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
        out: dict[int, np.ndarray] = {}
        pending = [int(i) for i in wanted]  # sorted, unique
        last = None
        while pending:
            start = self._keyframe_before(pending[0])
            ended = True
            for index, frame in self._decode_from(start):
                last = (index, frame)
                if index < pending[0]:
                    continue
                # index > pending[0] only when a timestamp is missing from the stream: take the nearest later frame
                while pending and pending[0] <= index:
                    out[pending.pop(0)] = self._rgb(frame, size)
                if not pending or self._keyframe_before(pending[0]) > index + 1:
                    ended = False  # seeking ahead skips decoding the frames in between
                    break
            if ended:
                break
        if pending:  # the stream ended before these (truncated or corrupt data)
            if last is None:
                raise VideoError(self._path, "no frame of the video stream decodes")
            log.warning("%s: frames %d-%d are past the last decodable frame %d; repeating it", self._path,
                        pending[0], pending[-1], last[0])
            filler = self._rgb(last[1], size)
            for i in pending:
                out[i] = filler
        return np.stack([out[int(i)] for i in wanted])

    def _keyframe_before(self, index: int) -> int:
        k = bisect.bisect_right(self._keyframes, index) - 1 if self._seekable else -1
        return self._keyframes[k] if k >= 0 else 0

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def _quarter_turns(degrees) -> int:
    """Counter-clockwise quarter turns (0-3) for a display-matrix rotation in degrees; 0 when unusable."""
    try:
        return round(float(degrees) / 90) % 4
    except (TypeError, ValueError, OverflowError):
        return 0


class _LostTrack(Exception):
    def __init__(self, pts):
        self.pts = pts
        super().__init__(pts)
