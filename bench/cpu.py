"""CPU benches (issues 5 and 7): the data path against the model card's, and the model side on a mid-size model.

Used by bench/test_cpu_datapath.py and bench/test_cpu_model.py (pytest + pytest-benchmark, in CI), and as

    python -m bench.cpu [datapath|model|overlap|all] [--rounds N] [--out DIR]

which measures the issue 7 ratios side by side and, with --out DIR, writes DIR/cpu-<date>-<what>.{md,json}.

Data paths, each returning a `Prepared` (frame indices, pixel_values [tiles,3,S,S] float32, tiles per frame):
  ours       inputs.prepare_clip itself (open_video -> frames.select_frames -> VideoReader.get ->
             tiles.frames_to_tiles), then tiles.normalize_tiles on the CPU (the pipeline runs that on the
             model's device; normalise=False leaves it out), so the benches follow it when it changes; by default with one
             tile the decoder scales frames to SxS (PyAV first, swscale bicubic, no PIL), and with
             decoder_scaling=False it is the card's exact path (full-size frames, decord first, PIL bicubic)
  card       the model card's load_video, from the card's own functions (roadbuddy.testing.model_card, not the
             pipeline's code), minus torchvision
  floor      one sequential decode of every frame with the same threads, no colour conversion (PyAV)

Clips: road_clip (synth.write_road_clip, as the tests use) and footage_clip (the same scene with
sensor noise, encoded as cameras do, for a realistic decode floor).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from roadbuddy.families.internvl import tiles
from roadbuddy.families.internvl.inputs import TileSpec
from roadbuddy.predict import inputs
from roadbuddy.testing.model_card import IMAGENET_STD, card_dynamic_preprocess, card_get_index, card_transform

IMAGE_SIZE = 448
RESOLUTIONS = {"720p": (1280, 720), "1440p": (2560, 1440)}
CLIP_SECONDS = 9  # RoadBuddy clips are 5-15 s of 30 fps dashcam footage
CLIP_FPS = 30


# --- clips ------------------------------------------------------------------------

def road_clip(directory: Path, resolution: str, seconds: float = CLIP_SECONDS, fps: int = CLIP_FPS,
              seed: int = 0, light: str | None = "red") -> Path:
    """A footage-like H.264 clip (synth.write_road_clip), written once per directory and kept."""
    from roadbuddy.testing.synth import write_road_clip

    width, height = RESOLUTIONS[resolution] if resolution in RESOLUTIONS else map(int, resolution.split("x"))
    path = Path(directory) / f"road_{width}x{height}_{seconds:g}s_{fps}fps_{seed}.mp4"
    if not path.is_file():
        tmp = path.with_suffix(".part.mp4")
        write_road_clip(tmp, seconds=seconds, fps=fps, width=width, height=height, light=light, seed=seed)
        tmp.rename(path)
    return path


def footage_clip(directory: Path, seconds: float = CLIP_SECONDS, fps: int = CLIP_FPS, seed: int = 0) -> Path:
    """The 2560x1440 road scene encoded the way cameras encode: 12 Mbit/s class, CABAC, B-frames, GOP 1 s.

    synth.write_road_clip encodes with x264's ultrafast preset (CAVLC, no deblocking, no
    B-frames) at about 2 Mbit/s, which decodes several times faster per frame than dashcam
    footage and so makes the decode floor unrealistically low. Here the same frames get a fixed
    sensor-noise pattern (shifted every frame, so it is not static) and x264 veryfast at CRF 20
    with a 30-frame GOP: about 12 Mbit/s, near what 1440p dashcams write.
    """
    from roadbuddy.testing.synth import road_frame, write_clip

    width, height = RESOLUTIONS["1440p"]
    path = Path(directory) / f"footage_{width}x{height}_{seconds:g}s_{fps}fps_{seed}.mp4"
    if path.is_file():
        return path
    noise = np.random.default_rng(seed).normal(0, 4, (height, width, 3)).astype(np.float32)

    def frame(i: int) -> np.ndarray:
        scene = road_frame(i, width=width, height=height, light="red", seed=seed).astype(np.float32)
        return np.clip(scene + np.roll(noise, 7 * i, axis=1), 0, 255).astype(np.uint8)

    tmp = write_clip(path.with_suffix(".part.mp4"), frame, num_frames=round(seconds * fps), fps=fps, crf=20,
                     gop=fps, preset="veryfast")
    tmp.rename(path)
    return path

# --- data paths ---------------------------------------------------------------------

@dataclass
class Prepared:
    indices: list[int]
    pixel_values: torch.Tensor
    tiles_per_frame: list[int]


def ours(path: Path, k: int, max_num: int = 1, backend: str = "auto", threads: int = 0,
         image_size: int = IMAGE_SIZE, decoder_scaling: bool = True, normalise: bool = True) -> Prepared:
    """inputs.prepare_clip itself, for one question without support frames: k frames, up to max_num tiles.

    prepare_clip hands the model uint8 tiles, which encode_tiles normalises on the model's device;
    with normalise=True (the default, like for like with the card) the normalisation runs here on the
    CPU as part of the call and pixel_values are the float32 values; normalise=False stops at the tiles.

    The pipeline has no backend setting (it opens clips with "auto"); backend="pyav" hides decord and
    backend="decord" hides PyAV for the call, the way video.py documents for a missing decoder.
    """
    from roadbuddy.config import RunConfig
    from roadbuddy.data.questions import Question

    question = Question(id="bench", question="?", choices=("a", "b"), raw_choices=("a", "b"), video_path=path,
                        video_rel=path.name)
    cfg = RunConfig(min_frames=k, max_frames=k, max_num=max_num, max_visual_tokens=10**9, support_frames=False,
                    decode_threads=threads, decoder_scaling=decoder_scaling)
    with only_backend(backend):
        work = inputs.prepare_clip(path, [question], cfg, TileSpec(image_size, 256, test_tokenizer()))
    if work.error:
        raise RuntimeError(work.error)
    pixels = tiles.normalize_tiles(work.tiles) if normalise else work.tiles
    return Prepared(list(work.frame_order), pixels, work.tiles_per_frame)


@functools.lru_cache(maxsize=1)
def test_tokenizer():
    """The tests' small tokenizer: prepare_clip tokenises the prompts too (a few ms of the data path)."""
    from roadbuddy.testing.checkpoints import build_tokenizer

    return build_tokenizer()


@contextlib.contextmanager
def only_backend(backend: str):
    """"auto": as it is; "pyav": decord hidden; "decord": PyAV hidden (video.py then has one decoder)."""
    if backend not in ("auto", "decord", "pyav"):
        raise ValueError(f"backend must be auto, decord or pyav, got {backend!r}")
    if backend == "auto":
        yield
        return
    hidden = "decord" if backend == "pyav" else "av"
    missing = object()
    saved = sys.modules.get(hidden, missing)
    sys.modules[hidden] = None  # video._import_decord / _import_av treat this as "not installed"
    try:
        yield
    finally:
        if saved is missing:
            del sys.modules[hidden]
        else:
            sys.modules[hidden] = saved


def decode_floor(path: Path, threads: int = 0) -> int:
    """Decode every frame once, sequentially, no colour conversion; returns the frame count."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
        return sum(1 for _ in container.decode(stream))


# --- the model card's way (its functions: roadbuddy.testing.model_card, the tests' oracle too) ----------

CARD_STD = IMAGENET_STD


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
    """Mean |a - b| over normalised pixel values (1 uint8 level is about 0.017 after /255 and /std);
    uint8 tiles are normalised first."""
    a, b = (tiles.normalize_tiles(x) if x.dtype == torch.uint8 else x for x in (a, b))
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return float((a.double() - b.double()).abs().mean())


def levels(normalised_mad: float) -> float:
    """A normalised mean abs difference in uint8 levels (through the mean of the three channel stds)."""
    return normalised_mad * 255 * statistics.mean(CARD_STD)


# --- timing -----------------------------------------------------------------------------

def interleaved(fns: dict[str, Callable[[], object]], rounds: int, settle: Callable[[], object] | None = None
                ) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Run every function once per round, in turn, so that load from other users hits all alike.

    `settle` runs (untimed) before each call, e.g. wait_for_idle. Returns (seconds per round for
    each name, each function's last result).
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    results: dict[str, object] = {}
    for _ in range(rounds):
        for name, fn in fns.items():
            gc.collect()
            if settle is not None:
                settle()
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    return times, results


def idle_fraction(seconds: float = 1.0) -> float:
    """Share of the machine's CPU time that was idle (or waiting on I/O) over `seconds` (psutil)."""
    import psutil

    share = psutil.cpu_times_percent(interval=seconds)
    return (share.idle + getattr(share, "iowait", 0.0)) / 100


class IdleWait:
    """A `settle` for interleaved: wait (up to max_wait s) until the box is at least `target` idle.

    On a box shared with other users this keeps rounds away from their bursts; `seen` keeps the
    idle share each round started with, so a report can say how quiet it was.
    """

    def __init__(self, max_wait: float, target: float = 0.85):
        self.max_wait, self.target, self.seen = max_wait, target, []

    def __call__(self) -> None:
        deadline = time.monotonic() + self.max_wait
        idle = idle_fraction(0.5)
        while idle < self.target and time.monotonic() < deadline:
            idle = idle_fraction(1.0)
        self.seen.append(idle)


def best(seconds: list[float]) -> float:
    """The least-disturbed round: on a shared box the minimum is the figure that repeats."""
    return min(seconds)


# --- the model side ---------------------------------------------------------------------

# A random InternVL with the real tile geometry (448 px tiles, 14 px patches, pixel shuffle 0.5:
# 256 tokens a tile, so 16 one-tile frames are 4,096 visual tokens as with the 4B model) and a
# small Qwen3: a 16-frame prefill takes about 0.3 s on two cores, most of the clip's model time.
MID_MODEL = dict(image_size=448, text_hidden=256, text_layers=4, vision_hidden=64, vision_layers=2)


def mid_model(seed: int = 0, **overrides):
    """A LoadedModel (roadbuddy.families.internvl.model.wrap_model) around a random-weight mid-size InternVL, on the CPU."""
    from transformers import InternVLForConditionalGeneration

    from roadbuddy.families.internvl.model import wrap_model
    from roadbuddy.testing.checkpoints import build_tokenizer, tiny_config

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
    """Every clip of the file through inputs.prepare_clip (the data path alone)."""
    from roadbuddy.data.questions import group_by_video, load_questions

    clips = group_by_video(load_questions(test_json))
    return [inputs.prepare_clip(video, qs, cfg, inputs.InputSpec.of(lm)) for video, qs in clips]


def answer_all(lm, works: list, cfg) -> list[dict]:
    """Every question of prepared clips through answering.answer_clip (the model alone)."""
    from roadbuddy.predict.answering import answer_clip

    return [record for work in works for record in answer_clip(lm, work, cfg)]





def compare_records(a: list[dict], b: list[dict]) -> dict:
    """Same questions, same letters, and the largest letter-probability difference between two runs."""
    by_id = {r["id"]: r for r in b}
    same_ids = [r["id"] for r in a] == [r["id"] for r in b]
    same_answers = same_ids and all(r["answer"] == by_id[r["id"]]["answer"] for r in a)
    diff = max((abs(p - by_id[r["id"]]["probs"][k]) for r in a if r["id"] in by_id for k, p in r["probs"].items()),
               default=float("nan"))
    return {"same_answers": same_answers, "max_prob_diff": diff}


# --- the issue 7 measurements (python -m bench.cpu, and the slow tests) ------------------------

CARD = "card (decord num_threads=1, as on the card)"
FLOOR = "floor: PyAV decode of every frame, no RGB"
OURS = "ours (default: decoder-scaled, PyAV first)"
OURS_TILES = "ours, uint8 tiles (normalised later on the model's device)"


def measure_datapath(clip: Path, k: int = 32, rounds: int = 3, threads: int = 0, settle=None) -> list[dict]:
    """Issue 7.2: every data path on one clip, `k` frames, one tile, interleaved; times, ratios, MAD vs the card.

    `threads` is what our paths and the floor give their decoder (0: the decoder's default); the
    card keeps its num_threads=1, and runs with `threads` too when that differs. threads=1 also
    holds torch to one thread: the whole data path on one core, as beside the model in a run.
    """
    paths = {CARD: lambda: card(clip, k, threads=1)}
    if threads != 1:
        paths[f"card (decord num_threads={threads})"] = lambda: card(clip, k, threads=threads)
    paths.update({
        OURS: lambda: ours(clip, k, threads=threads),
        OURS_TILES: lambda: ours(clip, k, threads=threads, normalise=False),
        "ours, decoder-scaled, decord only": lambda: ours(clip, k, backend="decord", threads=threads),
        "ours --no-decoder-scaling (card's pixels), decord": lambda: ours(clip, k, threads=threads,
                                                                          decoder_scaling=False),
        "ours --no-decoder-scaling, pyav only": lambda: ours(clip, k, backend="pyav", threads=threads,
                                                            decoder_scaling=False),
        FLOOR: lambda: decode_floor(clip, threads=threads),
    })
    before = torch.get_num_threads()
    torch.set_num_threads(1 if threads == 1 else before)
    try:
        times, results = interleaved(paths, rounds, settle)
    finally:
        torch.set_num_threads(before)
    rows = []
    for name, seconds in times.items():
        row = {"threads": threads, "path": name, "best_s": best(seconds), "median_s": statistics.median(seconds),
               "card_over_path": best(times[CARD]) / best(seconds), "path_over_floor": best(seconds) / best(times[FLOOR])}
        result = results[name]
        if isinstance(result, Prepared):
            mad = mean_abs_diff(result.pixel_values, results[CARD].pixel_values)
            row.update(same_indices=result.indices == results[CARD].indices, mad=mad, mad_levels=levels(mad))
        rows.append(row)
    return rows


def measure_share_prefix(lm, test_json: Path, work_dir: Path, rounds: int = 3, frames_per_clip: int = 16,
                         settle=None) -> dict:
    """Issue 7.1: questions per second of answer_clip with and without the shared prefix, same prepared clips."""
    cfg = run_config(test_json, Path(work_dir) / "unused.csv", frames_per_clip)
    works = prepare_all(test_json, cfg, lm)
    if any(w.error for w in works):
        raise RuntimeError(f"clips failed to decode: {[w.error for w in works if w.error]}")
    shared, plain = cfg.replace(share_prefix=True), cfg.replace(share_prefix=False)
    one = shared.replace(batch_questions=False)
    permuted = shared.replace(permutations=4)  # issue 13: every order one more suffix on the cached prefix
    perm_works = prepare_all(test_json, permuted, lm)  # the orders' suffixes are tokenised with the clip
    answer_all(lm, works[:1], shared)  # warm-up: first-call allocations and kernels
    times, results = interleaved({"shared": lambda: answer_all(lm, works, shared),
                                  "one": lambda: answer_all(lm, works, one),
                                  "plain": lambda: answer_all(lm, works, plain),
                                  "permutations4": lambda: answer_all(lm, perm_works, permuted)}, rounds, settle)
    questions = sum(len(w.questions) for w in works)
    records = results["shared"]
    return {
        "clips": len(works), "questions": questions, "frames": frames_per_clip, "threads": torch.get_num_threads(),
        "visual_tokens": records[0]["visual_tokens"],
        "prompt_tokens_mean": statistics.mean(r["prompt_tokens"] for r in records),
        "shared_qps": questions / best(times["shared"]), "plain_qps": questions / best(times["plain"]),
        "one_at_a_time_qps": questions / best(times["one"]),
        "shared_over_plain": best(times["plain"]) / best(times["shared"]),
        "shared_over_one_at_a_time": best(times["one"]) / best(times["shared"]),
        "permutations4_qps": questions / best(times["permutations4"]),
        "permutations4_cost": best(times["permutations4"]) / best(times["shared"]),
        "permutations4_question_ms": statistics.mean(r["time_split_ms"]["question"] for r in results["permutations4"]),
        "prefill_share_ms": statistics.mean(r["time_split_ms"]["prefill"] for r in records),
        "shared_question_ms": statistics.mean(r["time_split_ms"]["question"] for r in records),
        "one_at_a_time_question_ms": statistics.mean(r["time_split_ms"]["question"] for r in results["one"]),
        "plain_question_ms": statistics.mean(r["time_split_ms"]["question"] for r in results["plain"]),
        **compare_records(records, results["plain"]),
        **{f"one_at_a_time_{k}": v for k, v in compare_records(records, results["one"]).items()},
    }


def measure_overlap(lm, test_json: Path, work_dir: Path, rounds: int = 1, frames_per_clip: int = 16,
                    settle=None, model_threads: int | None = 1, decode_threads: int = 1, **changes) -> dict:
    """Issue 7.3: pipeline.run end to end with prefetch 2 and 0 against the data path and the model alone.

    On the CPU the model is held to `model_threads` torch threads and the decoder to `decode_threads`,
    so that with prefetch the two need not compete for cores (on a GPU pass model_threads=None).
    `changes` go to the RunConfig (device, decoder_scaling, ...).
    """
    from roadbuddy.data.output import load_predictions
    from roadbuddy.predict.pipeline import run

    work_dir = Path(work_dir)
    cfg = run_config(test_json, work_dir / "unused.csv", frames_per_clip, decode_threads=decode_threads, **changes)
    runs = itertools.count()
    outputs: dict[int, Path] = {}
    held: dict[str, list] = {}

    def end_to_end(prefetch: int):
        out = work_dir / f"scaling{int(cfg.decoder_scaling)}-prefetch{prefetch}-{next(runs)}" / "submission.csv"
        outputs[prefetch] = out
        summary = run(cfg.replace(prefetch=prefetch, output=out), model_loader=lambda _cfg: lm, say=lambda _m: None)
        if summary.errors:
            raise RuntimeError(f"questions failed: {summary.errors}")
        return summary

    def data_alone():
        held["works"] = prepare_all(test_json, cfg, lm)
        return held["works"]

    before = torch.get_num_threads()
    if model_threads:
        torch.set_num_threads(model_threads)
    try:
        answer_all(lm, prepare_all(test_json, cfg, lm)[:1], cfg)  # warm-up
        times, results = interleaved({
            "data": data_alone,
            "model": lambda: answer_all(lm, held["works"], cfg),
            "prefetch2": lambda: end_to_end(2),
            "prefetch0": lambda: end_to_end(0),
        }, rounds, settle)
    finally:
        torch.set_num_threads(before)
    data_s, model_s = best(times["data"]), best(times["model"])
    bound = max(data_s, model_s)
    p2, p0 = (load_predictions(outputs[n].parent / "predictions.jsonl") for n in (2, 0))
    return {
        "decoder_scaling": cfg.decoder_scaling, "clips": len(results["data"]), "questions": len(results["model"]),
        "frames": frames_per_clip, "data_s": data_s, "model_s": model_s, "sum_s": data_s + model_s,
        "e2e_prefetch2_s": best(times["prefetch2"]), "e2e_prefetch0_s": best(times["prefetch0"]),
        "prefetch2_over_bound": best(times["prefetch2"]) / bound,
        "prefetch0_over_bound": best(times["prefetch0"]) / bound,
        **compare_records(list(p2.values()), list(p0.values())),
    }


# --- pytest glue ---------------------------------------------------------------------------

def clip_directory(config, tmp_path_factory) -> Path:
    """Where bench clips live: pytest's cache folder when it is on (clips survive runs), else a temp folder."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("roadbuddy-bench-clips"))
    return tmp_path_factory.mktemp("bench-clips")


def report(config, title: str, text: str) -> None:
    """Write lines to the terminal past pytest's output capture (a module's summary table)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line("")
        reporter.write_line(title)
        for line in text.splitlines():
            reporter.write_line(line)


def side_by_side(benchmark, ours_fn: Callable[[], object], other_fn: Callable[[], object], rounds: int,
                 other: str = "card") -> tuple[object, object]:
    """pytest-benchmark times `ours_fn`; `other_fn` runs just before each of its rounds (pedantic's setup).

    Both are timed here too, so the ratio comes from rounds that ran next to each other; it goes to
    extra_info as `{other}_s`, `ours_s` and `{other}_over_ours` (min over rounds).
    """
    times: dict[str, list[float]] = {"ours": [], other: []}
    results: dict[str, object] = {}

    def timed(name, fn):
        gc.collect()
        start = time.perf_counter()
        results[name] = fn()
        times[name].append(time.perf_counter() - start)
        return results[name]

    def other_first():
        timed(other, other_fn)  # returns nothing: pedantic would take a result as the target's arguments

    benchmark.pedantic(timed, args=("ours", ours_fn), setup=other_first, rounds=rounds, iterations=1)
    benchmark.extra_info.update({f"{other}_s": best(times[other]), "ours_s": best(times["ours"]),
                                 f"{other}_over_ours": best(times[other]) / best(times["ours"])})
    return results["ours"], results[other]


# --- command line ----------------------------------------------------------------------------

def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{os.cpu_count()}-core CPU box ({model}), shared with other users"


def table_text(rows: list[dict] | dict) -> str:
    """Rows (or one row) as a plain-text table (one "key: value" block a row where pandas is missing)."""
    rows = rows if isinstance(rows, list) else [rows]
    try:
        import pandas as pd
    except ImportError:  # e.g. a lent GPU machine's image: the figures still get written
        return "\n\n".join("\n".join(f"{k}: {v:.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in r.items())
                           for r in rows)
    return pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", nargs="?", default="all", choices=["datapath", "model", "overlap", "all"])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best round is reported")
    parser.add_argument("--decode-threads", default="1,0",
                        help="comma-separated decoder thread counts for the data path measurement (0 = decoder's "
                             "default; default 1,0)")
    parser.add_argument("--model-threads", default="1,2",
                        help="comma-separated torch thread counts for the model measurement (default 1,2)")
    parser.add_argument("--quiet-wait", type=float, default=0.0,
                        help="before each timed call, wait up to this many seconds for the box to be idle enough")
    parser.add_argument("--quiet-target", type=float, default=0.85,
                        help="the idle share that counts as idle enough (default 0.85; 0.45 = one core free)")
    parser.add_argument("--clips", type=Path, default=Path(tempfile.gettempdir()) / "roadbuddy-bench-clips",
                        help="folder for the generated clips, kept between runs (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None, help="also write cpu-<date>-<what>.json and .md here")
    args = parser.parse_args(argv)

    import transformers

    settle = IdleWait(args.quiet_wait, args.quiet_target) if args.quiet_wait > 0 else None
    doc = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "torch": torch.__version__,
           "transformers": transformers.__version__, "python": platform.python_version(),
           "command": "python -m bench.cpu " + " ".join(argv if argv is not None else sys.argv[1:]),
           "weights": "random", "model": MID_MODEL}
    sections = []
    if args.what in ("datapath", "all"):
        clips = {"synth.write_road_clip (x264 ultrafast, ~2 Mbit/s)": road_clip(args.clips, "1440p"),
                 "footage_clip (x264 veryfast, CABAC, B-frames, ~12 Mbit/s)": footage_clip(args.clips)}
        doc["datapath"] = []
        for label, clip in clips.items():
            rows = [{"clip": clip.name, **row} for threads in (int(t) for t in args.decode_threads.split(","))
                    for row in measure_datapath(clip, 32, args.rounds, threads, settle=settle)]
            doc["datapath"] += rows
            sections.append((f"data path: {clip.name}, {label}, 32 frames, 1 tile",
                             table_text([{k: v for k, v in r.items() if k != "clip"} for r in rows])))
    if args.what in ("model", "all"):
        lm = mid_model()
        data = write_dataset(args.clips / "model", 4, resolution="640x360", seconds=6)
        doc["share_prefix"] = []
        before = torch.get_num_threads()
        try:
            for threads in (int(t) for t in args.model_threads.split(",")):
                torch.set_num_threads(threads)
                doc["share_prefix"].append(measure_share_prefix(lm, data, args.clips / "model-work", args.rounds,
                                                                settle=settle))
        finally:
            torch.set_num_threads(before)
        sections.append(("model: shared prefix (frames and intro prefilled once a clip, questions batched) vs one question "
                         "a forward on the prefix vs plain, 4 clips, "
                         "16 frames x 1 tile, 3 questions a clip", table_text(doc["share_prefix"])))
    if args.what in ("overlap", "all"):
        lm = mid_model()
        data = write_dataset(args.clips / "overlap", 10, resolution="1440p", seconds=6)
        work = Path(tempfile.mkdtemp(prefix="roadbuddy-overlap-"))
        doc["overlap"] = [measure_overlap(lm, data, work, args.rounds, settle=settle, decoder_scaling=scaling)
                          for scaling in (True, False)]
        sections.append(("overlap: 10 clips 2560x1440 6 s, 3 questions each, 16 frames x 1 tile; model on 1 "
                         "torch thread, decoder threads 1", table_text(doc["overlap"])))
    if settle is not None:
        doc["idle_at_start"] = {"min": min(settle.seen), "median": statistics.median(settle.seen)}
    text = "\n\n".join(f"## {title}\n\n```\n{body}\n```" for title, body in sections)
    quiet = (f" Rounds started at {doc['idle_at_start']['median']:.0%} median idle (min "
             f"{doc['idle_at_start']['min']:.0%})." if settle is not None else "")
    header = (f"# CPU bench, {doc['date']}\n\n{doc['machine']}; torch {doc['torch']}, transformers "
              f"{doc['transformers']}; weights: random ({MID_MODEL}). Best of {args.rounds} interleaved "
              f"rounds.{quiet}\n\n    {doc['command']}\n")
    print(header + "\n" + text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = f"cpu-{time.strftime('%Y-%m-%d')}-{args.what}"
        (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
        (args.out / f"{stem}.md").write_text(header + "\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
