"""CPU benches (issues 5 and 7): the data path against the model card's, and the model side on a mid-size model.

Used by bench/test_cpu_datapath.py and bench/test_cpu_model.py (pytest + pytest-benchmark, in CI), and as

    python -m bench.cpu [datapath|model|overlap|all] [--rounds N] [--out DIR]

which measures the issue 7 ratios side by side and writes bench/results/cpu-<date>.{md,json}.

Data paths, each returning a `Prepared` (frame indices, pixel_values [tiles,3,S,S] float32, tiles per frame):
  ours       what pipeline.prepare_clip does: open_video -> frames.select_frames -> VideoReader.get -> tiles
  card       the model card's load_video, written out here from the card (not from roadbuddy), minus torchvision
  scaled     proposed: with max_num=1 the decoder scales each frame to SxS (VideoReader.get(size=(S, S)))
  bicubic    proposed, prototyped here: PyAV decoding every frame once, with the wanted frames scaled to SxS
             by swscale's bicubic filter through one reused reformatter
  floor      one sequential decode of every frame with the same threads, no colour conversion (PyAV)
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from roadbuddy import frames, tiles
from roadbuddy.video import open_video

IMAGE_SIZE = 448
RESOLUTIONS = {"720p": (1280, 720), "1440p": (2560, 1440)}
CLIP_SECONDS = 9  # RoadBuddy clips are 5-15 s of 30 fps dashcam footage
CLIP_FPS = 30
HERE = Path(__file__).parent


# --- clips ------------------------------------------------------------------------

def road_clip(directory: Path, resolution: str, seconds: float = CLIP_SECONDS, fps: int = CLIP_FPS,
              seed: int = 0, light: str | None = "red") -> Path:
    """A footage-like H.264 clip (synth.write_road_clip), written once per directory and kept."""
    from roadbuddy.synth import write_road_clip

    width, height = RESOLUTIONS[resolution] if resolution in RESOLUTIONS else map(int, resolution.split("x"))
    path = Path(directory) / f"road_{width}x{height}_{seconds:g}s_{fps}fps_{seed}.mp4"
    if not path.is_file():
        tmp = path.with_suffix(".part.mp4")
        write_road_clip(tmp, seconds=seconds, fps=fps, width=width, height=height, light=light, seed=seed)
        tmp.rename(path)
    return path


# --- data paths ---------------------------------------------------------------------

@dataclass
class Prepared:
    indices: list[int]
    pixel_values: torch.Tensor
    tiles_per_frame: list[int]


def ours(path: Path, k: int, max_num: int = 1, backend: str = "auto", threads: int = 0,
         image_size: int = IMAGE_SIZE) -> Prepared:
    """pipeline.prepare_clip's data path for one question without support frames."""
    with open_video(path, backend=backend, threads=threads) as reader:
        indices = frames.select_frames(reader.info.num_frames, reader.info.fps, k)
        decoded = reader.get(indices)
    pixel_values, counts = tiles.frames_to_pixel_values(decoded, image_size, max_num=max_num)
    return Prepared(indices, pixel_values, counts)


def scaled(path: Path, k: int, backend: str = "auto", threads: int = 0, image_size: int = IMAGE_SIZE) -> Prepared:
    """The proposed max_num=1 path on today's video.py: the decoder scales each frame to SxS.

    With one tile the card's grid is always 1x1 with no thumbnail, so its whole tiling is one
    resize of the frame to SxS; asking the decoder for SxS frames skips the full-size RGB
    conversion and the full-size PIL resize, and frames_to_pixel_values' resize becomes a no-op.
    """
    with open_video(path, backend=backend, threads=threads) as reader:
        indices = frames.select_frames(reader.info.num_frames, reader.info.fps, k)
        decoded = reader.get(indices, size=(image_size, image_size))
    pixel_values, counts = tiles.frames_to_pixel_values(decoded, image_size, max_num=1)
    return Prepared(indices, pixel_values, counts)


def _pyav_scaled_frames(path: Path, k: int, threads: int, image_size: int, interpolation: str):
    import av
    from av.video.reformatter import VideoReformatter

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        indices = frames.select_frames(stream.frames, float(stream.average_rate), k)
        wanted, last = set(indices), max(indices)
        reformatter = VideoReformatter()  # one swscale context for the clip, not one per frame
        out: dict[int, np.ndarray] = {}
        for position, frame in enumerate(container.decode(stream)):
            if position in wanted:
                out[position] = reformatter.reformat(frame, width=image_size, height=image_size, format="rgb24",
                                                     interpolation=interpolation).to_ndarray()
            if position >= last:
                break
    return indices, np.stack([out[i] for i in indices])


def bicubic(path: Path, k: int, threads: int = 0, image_size: int = IMAGE_SIZE,
            interpolation: str = "BICUBIC") -> Prepared:
    """Prototype of the proposed PyAV change: decode once, scale the wanted frames with swscale.

    One VideoReformatter for the clip (swscale context reused), frame-threaded decoding, and the
    wanted frames converted straight from YUV to SxS RGB with `interpolation` (today's
    _PyAVSource passes none, which PyAV takes as BILINEAR). Tiled by today's tiles module.
    """
    indices, decoded = _pyav_scaled_frames(path, k, threads, image_size, interpolation)
    pixel_values, counts = tiles.frames_to_pixel_values(decoded, image_size, max_num=1)
    return Prepared(indices, pixel_values, counts)


def normalize_planar(stacked: np.ndarray) -> torch.Tensor:
    """Proposed tiles._normalize_uint8: the same float32 ops, bit for bit, on a planar copy made in uint8.

    Today's version converts the channels-last view to float32, normalises it and then makes it
    contiguous: the last step transposes 4 bytes per value. Transposing the uint8 array first
    moves a quarter of the bytes and lets every float pass run over contiguous memory.
    """
    x = torch.from_numpy(stacked).permute(0, 3, 1, 2).contiguous().to(torch.float32).div_(255)
    mean = torch.tensor(tiles.IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(tiles.IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std)


def proposed(path: Path, k: int, backend: str = "auto", threads: int = 0, image_size: int = IMAGE_SIZE) -> Prepared:
    """Every proposed change for max_num=1 together: decoder-scaled SxS frames (PyAV: bicubic, one
    reformatter), no PIL round trip for frames that already are one SxS tile, planar normalisation."""
    if backend == "pyav":
        indices, decoded = _pyav_scaled_frames(path, k, threads, image_size, "BICUBIC")
    else:
        with open_video(path, backend=backend, threads=threads) as reader:
            indices = frames.select_frames(reader.info.num_frames, reader.info.fps, k)
            decoded = reader.get(indices, size=(image_size, image_size))
    return Prepared(indices, normalize_planar(np.ascontiguousarray(decoded)), [1] * len(indices))


def decode_floor(path: Path, threads: int = 0) -> int:
    """Decode every frame once, sequentially, no colour conversion; returns the frame count."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        return sum(1 for _ in container.decode(stream))


# --- the model card's way, written out from the card --------------------------------

CARD_MEAN = (0.485, 0.456, 0.406)
CARD_STD = (0.229, 0.224, 0.225)


def card_get_index(bound, fps, max_frame, first_idx=0, num_segments=32):
    if bound:
        start, end = bound[0], bound[1]
    else:
        start, end = -100000, 100000
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_segments
    return np.array([int(start_idx + (seg_size / 2) + np.round(seg_size * idx)) for idx in range(num_segments)])


def card_find_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size):
    best_ratio_diff = float("inf")
    best_ratio = (1, 1)
    area = width * height
    for ratio in target_ratios:
        target_aspect_ratio = ratio[0] / ratio[1]
        ratio_diff = abs(aspect_ratio - target_aspect_ratio)
        if ratio_diff < best_ratio_diff:
            best_ratio_diff = ratio_diff
            best_ratio = ratio
        elif ratio_diff == best_ratio_diff:
            if area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
                best_ratio = ratio
    return best_ratio


def card_dynamic_preprocess(image, min_num=1, max_num=12, image_size=448, use_thumbnail=False):
    orig_width, orig_height = image.size
    aspect_ratio = orig_width / orig_height
    target_ratios = set(
        (i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
        if i * j <= max_num and i * j >= min_num)
    target_ratios = sorted(target_ratios, key=lambda x: x[0] * x[1])
    target_aspect_ratio = card_find_closest_aspect_ratio(aspect_ratio, target_ratios, orig_width, orig_height,
                                                         image_size)
    target_width = image_size * target_aspect_ratio[0]
    target_height = image_size * target_aspect_ratio[1]
    blocks = target_aspect_ratio[0] * target_aspect_ratio[1]
    resized_img = image.resize((target_width, target_height))  # PIL's default filter here is bicubic
    processed_images = []
    for i in range(blocks):
        box = ((i % (target_width // image_size)) * image_size, (i // (target_width // image_size)) * image_size,
               ((i % (target_width // image_size)) + 1) * image_size,
               ((i // (target_width // image_size)) + 1) * image_size)
        processed_images.append(resized_img.crop(box))
    assert len(processed_images) == blocks
    if use_thumbnail and len(processed_images) != 1:
        processed_images.append(image.resize((image_size, image_size)))
    return processed_images


def card_transform(img: Image.Image, input_size: int) -> torch.Tensor:
    """build_transform without torchvision: RGB, Resize((S, S), BICUBIC), ToTensor, Normalize."""
    img = img.convert("RGB") if img.mode != "RGB" else img
    img = img.resize((input_size, input_size), Image.BICUBIC)
    x = torch.from_numpy(np.array(img, np.uint8, copy=True)).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    mean = torch.as_tensor(CARD_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.as_tensor(CARD_STD, dtype=torch.float32)[:, None, None]
    return x.sub_(mean).div_(std)


def card(path: Path, k: int, max_num: int = 1, threads: int = 1, image_size: int = IMAGE_SIZE) -> Prepared:
    """The card's load_video(num_segments=k, max_num=...): per-frame decord access and PIL resizes.

    The card opens its reader with num_threads=1; pass threads=0 for decord's default.
    """
    from decord import VideoReader, cpu

    vr = VideoReader(str(path), ctx=cpu(0), num_threads=threads)
    max_frame = len(vr) - 1
    fps = float(vr.get_avg_fps())
    pixel_values_list, num_patches_list = [], []
    frame_indices = card_get_index(None, fps, max_frame, first_idx=0, num_segments=k)
    for frame_index in frame_indices:
        img = Image.fromarray(vr[frame_index].asnumpy()).convert("RGB")
        img = card_dynamic_preprocess(img, image_size=image_size, use_thumbnail=True, max_num=max_num)
        pixel_values = torch.stack([card_transform(tile, image_size) for tile in img])
        num_patches_list.append(pixel_values.shape[0])
        pixel_values_list.append(pixel_values)
    return Prepared([int(i) for i in frame_indices], torch.cat(pixel_values_list), num_patches_list)


def mean_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean |a - b| over normalised pixel values (1 uint8 level is about 0.017 after /255 and /std)."""
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.double() - b.double()).abs().mean())


def levels(normalised_mad: float) -> float:
    """A normalised mean abs difference in uint8 levels (through the mean of the three channel stds)."""
    return normalised_mad * 255 * statistics.mean(CARD_STD)


# --- timing -----------------------------------------------------------------------------

def interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Run every function once per round, in turn, so that load from other users hits all alike.

    Returns (seconds per round for each name, each function's last result).
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, object] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            gc.collect()
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return times, results


def best(seconds: list[float]) -> float:
    """The least-disturbed round: on a shared box the minimum is the figure that repeats."""
    return min(seconds)


# --- the model side ---------------------------------------------------------------------

# A random InternVL with the real tile geometry (448 px tiles, 14 px patches, pixel shuffle 0.5:
# 256 tokens a tile, so 16 one-tile frames are 4,096 visual tokens as with the 4B model) and a
# small Qwen3: a 16-frame prefill takes about 0.3 s on two cores, most of the clip's model time.
MID_MODEL = dict(image_size=448, text_hidden=256, text_layers=4, vision_hidden=64, vision_layers=2)


def mid_model(seed: int = 0, **overrides):
    """A LoadedModel (roadbuddy.model.wrap_model) around a random-weight mid-size InternVL, on the CPU."""
    from transformers import InternVLForConditionalGeneration

    from roadbuddy.model import wrap_model
    from roadbuddy.testing import build_tokenizer, tiny_config

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(tiny_config(tokenizer, **{**MID_MODEL, **overrides})).eval()
    return wrap_model(model, tokenizer, device=torch.device("cpu"), attn_impl="sdpa",
                      source="random weights (bench.cpu.MID_MODEL)")


def write_dataset(directory: Path, clips: int, *, resolution: str = "720p", seconds: float = 6,
                  questions_per_clip: int = 3, fps: int = CLIP_FPS) -> Path:
    """A RoadBuddy-shaped question file over `clips` footage-like clips, `questions_per_clip` each."""
    from bench.gpu import QUESTIONS

    directory = Path(directory)
    (directory / "videos").mkdir(parents=True, exist_ok=True)
    items = []
    for c in range(clips):
        clip = road_clip(directory / "videos", resolution, seconds=seconds, fps=fps, seed=c,
                         light=("red", "green", "yellow")[c % 3])
        for q in range(questions_per_clip):
            text, choices = QUESTIONS[(c + q) % len(QUESTIONS)]
            items.append({"id": f"c{c}_q{q}", "question": text, "choices": choices,
                          "video_path": f"videos/{clip.name}"})
    path = directory / f"questions_{clips}x{questions_per_clip}.json"
    path.write_text(json.dumps({"__count__": len(items), "data": items}, ensure_ascii=False, indent=1), "utf-8")
    return path


def run_config(test_json: Path, output: Path, frames_per_clip: int = 16, **changes):
    """A pipeline RunConfig for the CPU benches: fixed frame count, one tile, no support frames."""
    from roadbuddy.config import RunConfig

    base = RunConfig(test_json=Path(test_json), output=Path(output), device="cpu", progress=False,
                     min_frames=frames_per_clip, max_frames=frames_per_clip, max_num=1, support_frames=False)
    return base.replace(**changes)


def prepare_all(test_json: Path, cfg, lm) -> list:
    """Every clip of the file through pipeline.prepare_clip (the data path alone)."""
    from roadbuddy.data import group_by_video, load_questions
    from roadbuddy.pipeline import prepare_clip

    clips = group_by_video(load_questions(test_json))
    return [prepare_clip(video, qs, cfg, lm.image_size, lm.tokens_per_tile) for video, qs in clips]


def answer_all(lm, works: list, cfg) -> list[dict]:
    """Every question of prepared clips through pipeline.answer_clip (the model alone)."""
    from roadbuddy.pipeline import answer_clip

    return [record for work in works for record in answer_clip(lm, work, cfg)]
