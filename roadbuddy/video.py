"""Open a clip and read frames from it: the only module that imports decoders.

decord is fast at random access and is tried first; PyAV reads what decord
cannot (decord raises on some truncated or odd files, or is not installed), so
"auto" falls back to it per file and logs which. Both return uint8 RGB frames
that agree up to colour-conversion rounding.
"""
from __future__ import annotations

import bisect
import logging
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav")
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


def _valid_fps(value) -> float | None:
    try:
        fps = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return fps if math.isfinite(fps) and fps > 0 else None


def _fps_from_timestamps(seconds: Sequence[float]) -> float | None:
    """Frames per second from presentation times in seconds (needs two distinct ones)."""
    if len(seconds) < 2:
        return None
    span = max(seconds) - min(seconds)
    return _valid_fps((len(seconds) - 1) / span) if span > 0 else None


def _resolve_fps(path: Path, stated, from_timestamps) -> float:
    """The container's stated rate, else one computed from frame timestamps, else ASSUMED_FPS (with a warning)."""
    fps = _valid_fps(stated)
    if fps is not None:
        return fps
    fps = from_timestamps()
    if fps is not None:
        log.warning("%s states no frame rate; using %.3f fps computed from frame timestamps", path, fps)
        return fps
    log.warning("%s states no frame rate and its timestamps give none; assuming %g fps", path, ASSUMED_FPS)
    return ASSUMED_FPS


_DECORD_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: (?:Check failed: .*? \(.*?\) )?(?:Error: |ERROR )?", re.I)


def _reason(exc: BaseException) -> str:
    """A short reason from a decoder exception: FFmpeg's message without errno and path, decord's without
    its source location ("[03:00:21] /src/video/video_reader.cc:486: Error: av_read_frame failed ...")."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return _DECORD_PREFIX.sub("", text.splitlines()[0]).strip()


class _DecordSource:
    backend = "decord"

    def __init__(self, decord, path: Path, threads: int):
        self._decord, self._path, self._threads = decord, path, threads
        self._readers = {None: decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads)}
        vr = self._readers[None]
        num_frames = len(vr)
        if num_frames <= 0:
            raise VideoError(path, "decord finds no frames")
        first = vr[0].asnumpy()  # "opens" is not enough: some files open and then fail to read
        fps = _resolve_fps(path, vr.get_avg_fps(), lambda: self._fps_from_timestamps(vr, num_frames))
        self.info = VideoInfo(path, fps, num_frames, first.shape[1], first.shape[0], self.backend)

    @staticmethod
    def _fps_from_timestamps(vr, num_frames: int) -> float | None:
        try:
            return _fps_from_timestamps(vr.get_frame_timestamp(list(range(num_frames)))[:, 0].tolist())
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


class _PyAVSource:
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
            log.warning("%s: the file ends early (%s); %d frames are present", path, _reason(exc), len(stamps))
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
            return _fps_from_timestamps([float(pts * time_base) for pts in stamps])

        fps = _resolve_fps(path, stream.average_rate, from_timestamps)
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
            raise VideoError(self._path, f"not a readable video ({_reason(exc)})") from exc
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
            log.warning("%s: decoding stopped after frame %d (%s)", self._path, position - 1, _reason(exc))

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
                raise VideoError(self.info.path, f"decord failed reading frames ({_reason(exc)})") from exc
            log.warning("decord failed reading %s (%s); decoding it with PyAV", self.info.path, _reason(exc))
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


def _open_pyav(path: Path, threads: int) -> _PyAVSource:
    av = _import_av()
    if av is None:
        raise ImportError("PyAV is not installed (pip install av)")
    return _PyAVSource(av, path, threads)


def open_video(path: Path | str, backend: str = "auto", threads: int = 0, prefer: str = "decord") -> VideoReader:
    """Open a clip for reading. backend: "auto", "decord" or "pyav"; threads 0 = all cores.

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
                return VideoReader(_DecordSource(decord, path, threads))
            except Exception:  # decord's own reason adds nothing: report PyAV's
                raise exc from None

    if backend in ("auto", "decord"):
        decord = _import_decord()
        if decord is None and backend == "decord":
            raise ImportError("decord is not installed (pip install decord), so backend='decord' cannot be used")
        if decord is not None:
            try:
                return VideoReader(_DecordSource(decord, path, threads),
                                   fallback_threads=threads if backend == "auto" else None)
            except VideoError as exc:
                if backend == "decord":
                    raise
                failure = exc.reason
            except Exception as exc:  # decord raises DECORDError, RuntimeError, ...
                if backend == "decord":
                    raise VideoError(path, f"decord cannot read it ({_reason(exc)})") from exc
                failure = _reason(exc)
            log.warning("decord cannot read %s (%s); trying PyAV", path, failure)
    return VideoReader(_open_pyav(path, threads))
