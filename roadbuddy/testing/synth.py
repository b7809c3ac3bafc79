"""Synthetic dashcam clips, encoded for real (PyAV, H.264), for tests and demos.

The frames are drawn, not noise, so an encoder compresses them like footage and
a tiny model can learn to see what is drawn (a large traffic light). This module
only encodes; reading clips back is `roadbuddy.video`'s job.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import numpy as np

# Encoder options that turn CRF and speed knobs on, per codec; others get a bit rate.
_X26X = {"libx264", "libx265"}

LIGHTS = ("red", "yellow", "green")
_LIT = {"red": (255, 40, 30), "yellow": (255, 200, 0), "green": (30, 230, 80)}
_UNLIT = {"red": (70, 20, 20), "yellow": (70, 60, 10), "green": (15, 60, 25)}


def write_clip(path: Path | str, frames: Iterable[np.ndarray] | Callable[[int], np.ndarray], *,
               num_frames: int | None = None, fps: float = 10, width: int | None = None,
               height: int | None = None, codec: str = "libx264", crf: int = 23,
               gop: int | None = None, preset: str = "ultrafast") -> Path:
    """Encode uint8 RGB HxWx3 frames (an iterable, or `frames(i)` for i < num_frames) to `path`.

    The stream is yuv420p, so width and height must be even; they default to
    the first frame's, and frames of another size are scaled to them. The
    container follows the suffix (.mp4, .mkv, .avi); mp4 gets its index at the
    front (faststart), as clips served over the web usually have it. x264/x265
    use `preset` (ultrafast by default: quick to write, and quick to decode).
    """
    import av  # encoding only; decoding lives in roadbuddy.video

    path = Path(path)
    source = _frame_source(frames, num_frames)
    try:
        first = next(source)
    except StopIteration:
        raise ValueError(f"no frames to write to {path}") from None
    first = _check_frame(first, 0)
    width = first.shape[1] if width is None else int(width)
    height = first.shape[0] if height is None else int(height)
    if width % 2 or height % 2 or width <= 0 or height <= 0:
        raise ValueError(f"{path}: yuv420p needs a positive even width and height, got {width}x{height}")
    rate = Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"{path}: fps must be positive, got {fps}")

    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "+faststart"} if path.suffix.lower() in {".mp4", ".mov", ".m4v"} else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = 1 / rate
        stream.thread_count = 0  # let the encoder pick (all cores)
        if codec in _X26X:
            stream.options = {"preset": preset, "crf": str(crf)}
        else:
            stream.bit_rate = max(200_000, width * height * 4)
        if gop is not None:
            stream.codec_context.gop_size = int(gop)
        for index, array in enumerate(_chain(first, source)):
            frame = av.VideoFrame.from_ndarray(_check_frame(array, index), format="rgb24")
            frame = frame.reformat(width=width, height=height, format="yuv420p")
            frame.pts = index
            frame.time_base = stream.codec_context.time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _frame_source(frames, num_frames: int | None) -> Iterator[np.ndarray]:
    if callable(frames):
        if num_frames is None:
            raise ValueError("num_frames is required when frames is a function of the frame index")
        return (frames(i) for i in range(num_frames))
    it = iter(frames)
    if num_frames is None:
        return it
    return (f for _, f in zip(range(num_frames), it))


def _chain(first: np.ndarray, rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield first
    yield from rest


def _check_frame(array: np.ndarray, index: int) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"frame {index}: expected a uint8 HxWx3 RGB array, got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)


@lru_cache(maxsize=4)
def _scene(width: int, height: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The still part of a road frame: (background image, lane-marking mask, row depth)."""
    rng = np.random.default_rng(seed)
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    horizon = 0.45 * height
    image = np.empty((height, width, 3), np.float32)

    # sky: a vertical gradient, lighter towards the horizon
    t = np.clip(ys / horizon, 0, 1)
    sky_top, sky_low = np.array([70, 120, 200], np.float32), np.array([185, 210, 235], np.float32)
    image[:] = (sky_top + (sky_low - sky_top) * t[..., None])
    # ground below the horizon: verge colour, darker at the bottom
    below = ys >= horizon
    depth = np.clip((ys - horizon) / (height - horizon), 0, 1)  # 0 at horizon, 1 at the bottom
    verge = np.array([95, 120, 70], np.float32) * (1 - 0.3 * depth[..., None])
    image = np.where(below[..., None], verge, image)

    # buildings and trees: smooth blobs standing on the horizon on both sides
    for _ in range(int(rng.integers(3, 6))):
        cx = rng.uniform(0.02, 0.98) * width
        if abs(cx - width / 2) < 0.15 * width:
            cx += np.sign(cx - width / 2 + 1e-3) * 0.2 * width
        rx, ry = rng.uniform(0.04, 0.1) * width, rng.uniform(0.1, 0.25) * height
        blob = ((xs - cx) / rx) ** 2 + ((ys - horizon) / ry) ** 2 < 1
        colour = rng.uniform(40, 140, 3).astype(np.float32)
        shade = 0.75 + 0.25 * np.clip((horizon - ys) / ry, 0, 1)
        image = np.where(blob[..., None], colour * shade[..., None], image)

    # road: a grey trapezoid narrowing to the horizon
    centre = width * (0.5 + rng.uniform(-0.03, 0.03))
    half = (0.03 + 0.62 * depth) * width
    road = below & (np.abs(xs - centre) < half)
    grey = (110 - 35 * depth)[..., None] * np.ones(3, np.float32)
    image = np.where(road[..., None], grey, image)

    # lane markings: thin lines at fixed fractions of the road's half width
    lanes = np.zeros((height, width), bool)
    line = np.maximum(0.006 * width * depth, 0.6)
    for frac in (-0.95, -0.33, 0.33, 0.95):
        lanes |= below & (np.abs(xs - (centre + frac * half)) < line)
    # a car ahead: a dark rounded box sitting on the road
    car_w, car_h = 0.11 * width, 0.1 * height
    cy = horizon + 0.32 * (height - horizon)
    car = ((np.abs(xs - centre) / (car_w / 2)) ** 4 + (np.abs(ys - cy) / (car_h / 2)) ** 4) < 1
    image = np.where(car[..., None], np.array([45, 45, 55], np.float32), image)
    lanes &= ~car

    # perspective: lane dashes repeat evenly in distance, i.e. in 1/depth on screen
    distance = 1.0 / np.maximum(depth[:, 0], 1e-3)
    background = np.clip(image, 0, 255).astype(np.uint8)
    for array in (background, lanes, distance):
        array.setflags(write=False)
    return background, lanes, distance


def road_frame(index: int, *, width: int, height: int, light: str | None = None, seed: int = 0) -> np.ndarray:
    """A dashcam-like uint8 RGB frame: sky, roadside, road with lane dashes that move with `index`.

    With `light` ("red", "yellow" or "green") a large traffic light stands at a
    fixed spot in the upper right, its lamp of that colour lit.
    """
    background, lanes, distance = _scene(int(width), int(height), int(seed))
    frame = background.copy()
    dash_on = ((distance * 2.0 - index * 0.15) % 1.0) < 0.5  # per row: the dashes scroll towards the camera
    frame[lanes & dash_on[:, None]] = (235, 235, 225)
    if light is not None:
        _draw_light(frame, light)
    return frame


def _draw_light(frame: np.ndarray, light: str) -> None:
    if light not in LIGHTS:
        raise ValueError(f"light must be one of {', '.join(LIGHTS)}, got {light!r}")
    height, width = frame.shape[:2]
    box_h = max(6, int(0.42 * height))
    box_w = max(3, int(0.36 * box_h))
    x0, y0 = int(0.8 * width) - box_w // 2, max(1, int(0.04 * height))
    frame[y0:y0 + box_h, x0:x0 + box_w] = (25, 25, 25)
    ys = np.arange(box_h, dtype=np.float32)[:, None]
    xs = np.arange(box_w, dtype=np.float32)[None, :]
    radius = 0.38 * box_w
    box = frame[y0:y0 + box_h, x0:x0 + box_w]
    for slot, colour in enumerate(LIGHTS):  # red on top, green at the bottom
        cy = (slot + 0.5) * box_h / 3
        lamp = (xs - box_w / 2 + 0.5) ** 2 + (ys - cy + 0.5) ** 2 <= radius ** 2
        box[lamp] = _LIT[colour] if colour == light else _UNLIT[colour]


def write_road_clip(path: Path | str, *, seconds: float, fps: float = 30, width: int = 2560, height: int = 1440,
                    light: str | None = None, light_frames: tuple[int, int] | None = None, seed: int = 0) -> Path:
    """A RoadBuddy-like H.264 clip; the light shows in frames [a, b) of `light_frames`, else in all."""
    num_frames = max(1, round(seconds * fps))
    a, b = light_frames if light_frames is not None else (0, num_frames)

    def frame(i: int) -> np.ndarray:
        return road_frame(i, width=width, height=height, light=light if a <= i < b else None, seed=seed)

    return write_clip(path, frame, num_frames=num_frames, fps=fps, width=width, height=height)
