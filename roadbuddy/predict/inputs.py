"""The CPU side of answering: a clip and its questions -> the frames, tiles and token ids the model is sent.

    clip = prepare_clip(video, questions, cfg, spec)     # decode once, tile, tokenise (a worker thread)
    for group in clip.groups:                            # questions that share a frame set share a prefix
        group.prefix_ids, group.suffix_ids[q.id], clip.tiles[group.tile_rows]

Prediction builds its inputs here on the prefetch thread and fine-tuning builds
its training examples here too, so a training example is what prediction sends,
by construction (tests/test_finetune.py compares them).
"""
from __future__ import annotations

import os
import posixpath
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from roadbuddy.config import RunConfig
from roadbuddy.data.questions import Question
from roadbuddy.families.internvl import prompts, tiles
from roadbuddy.levers import choice_orders
from roadbuddy.video import frames
from roadbuddy.video.reader import open_video
from roadbuddy.video.source import VideoError


@dataclass(frozen=True)
class InputSpec:
    """What a model's inputs depend on: its tile size, image tokens per tile and tokenizer."""

    image_size: int
    tokens_per_tile: int
    tokenizer: object

    @classmethod
    def of(cls, lm) -> "InputSpec":
        """The spec of a roadbuddy.families.internvl.model.LoadedModel."""
        return cls(lm.image_size, lm.tokens_per_tile, lm.tokenizer)


@dataclass
class FrameGroup:
    """Questions of a clip that see the same frames (and the same of them in detail, --detail-frames): one
    prefix (system turn, frames, intro) for all."""

    frames: tuple[int, ...]
    questions: list[Question]
    tile_rows: list[int]  # rows of the clip's tiles (and of its encoded features) for these frames, in order
    tiles_per_frame: list[int]
    prefix_ids: torch.Tensor  # [1, T] int64, CPU
    suffix_ids: dict[str, torch.Tensor]  # question id -> [1, T] int64, CPU: the choices in the file's order
    # --permutations: question id -> (order of the file's choices as shown, suffix ids), one per order
    asks: dict[str, list[tuple[tuple[int, ...], torch.Tensor]]] = field(default_factory=dict)
    detail_frames: tuple[int, ...] = ()  # those of `frames` tiled up to --detail-max-num tiles

    @property
    def tiles(self) -> int:
        return int(sum(self.tiles_per_frame))


@dataclass
class PreparedClip:
    """A decoded, tiled and tokenised clip: everything CPU-side that its questions need."""

    video: Path
    questions: list[Question]
    fps: float = 0.0
    frame_order: list[int] = field(default_factory=list)  # decoded frame indices, ascending
    # each tiled view of a frame, (frame index, tiled in detail), in the order of `tiles` and `tiles_per_frame`: a
    # frame that one question sees in detail and another plainly is tiled both ways; without --detail-frames
    # these are frame_order's frames
    views: list[tuple[int, bool]] = field(default_factory=list)
    tiles: torch.Tensor | None = None  # uint8 [N,3,S,S]: the views' tiles, concatenated (normalised on the device)
    tiles_per_frame: list[int] = field(default_factory=list)  # per view
    groups: list[FrameGroup] = field(default_factory=list)
    prepare_ms: float = 0.0
    error: str | None = None
    frame_cap: int | None = None  # set when --sample-timeout lowered this clip's frame count

    def seconds(self, frame_indices) -> list[float]:
        return [round(i / self.fps, 3) if self.fps > 0 else 0.0 for i in frame_indices]


def frame_budget(info, cfg: RunConfig, image_size: int, tokens_per_tile: int) -> tuple[int, int]:
    """(frames per question, detail frames among them): the adaptive count, then cut until every visual token
    (the detail frames' extra tiles included) fits --max-visual-tokens; detail frames go first when even one
    frame with them would not fit."""
    def tiles_of(max_num):
        return frames.tiles_per_frame(info.width, info.height, max_num, cfg.use_thumbnail, image_size=image_size)

    per_frame = tokens_per_tile * tiles_of(cfg.max_num)
    count = frames.frame_count(info.duration, min_frames=cfg.min_frames, max_frames=cfg.max_frames,
                               frames_per_second=cfg.frames_per_second, max_visual_tokens=cfg.max_visual_tokens,
                               tokens_per_frame=per_frame)
    if not cfg.detail_frames:
        return count, 0
    extra = tokens_per_tile * (tiles_of(max(cfg.detail_max_num, cfg.max_num)) - tiles_of(cfg.max_num))
    count = frames.frame_count(info.duration, min_frames=cfg.min_frames, max_frames=cfg.max_frames,
                               frames_per_second=cfg.frames_per_second, max_visual_tokens=10 ** 12,
                               tokens_per_frame=per_frame)
    while count > 1 and count * per_frame + min(cfg.detail_frames, count) * extra > cfg.max_visual_tokens:
        count -= 1
    detail = min(cfg.detail_frames, count)
    while detail and count * per_frame + detail * extra > cfg.max_visual_tokens:
        detail -= 1
    return count, detail


def plan_frames(info, questions: list[Question], cfg: RunConfig, image_size: int,
                tokens_per_tile: int) -> dict[str, tuple[int, ...]]:
    """Frame indices per question: the adaptive count, plus windows around support timestamps."""
    count, _ = frame_budget(info, cfg, image_size, tokens_per_tile)
    planned = {}
    for q in questions:
        support = q.support_frames if cfg.support_frames else ()
        planned[q.id] = tuple(frames.select_frames(info.num_frames, info.fps, count, support,
                                                   support_window=cfg.support_window,
                                                   support_share=cfg.support_share))
    return planned


def plan_detail(info, planned: dict[str, tuple[int, ...]], questions: list[Question], cfg: RunConfig,
                image_size: int, tokens_per_tile: int) -> dict[str, tuple[int, ...]]:
    """Each question's --detail-frames frames (empty without them): the ones nearest its support timestamps,
    else spread across its frames. A question sees its own detail frames only: another question's detail
    frame among its frames stays an ordinary frame for it, or it would see more detail tiles than
    frame_budget allowed and exceed --max-visual-tokens (and the VRAM estimate)."""
    _, k = frame_budget(info, cfg, image_size, tokens_per_tile)
    if not k:
        return {}
    return {q.id: tuple(frames.detail_frames(planned[q.id], k, info.fps,
                                             q.support_frames if cfg.support_frames else ()))
            for q in questions}


def tokenize(tokenizer, text: str, *, as_text: bool = False) -> torch.Tensor:
    """Token ids [1, T] of `text`; with as_text, special-token strings in it ('<IMG_CONTEXT>', '<|im_end|>')
    are read as plain text, so a question file cannot inject image slots or end the user turn."""
    return tokenizer(text, add_special_tokens=False, split_special_tokens=as_text, return_tensors="pt").input_ids


def prefix_ids(tokenizer, tiles_per_frame, tokens_per_tile: int, cfg: RunConfig) -> torch.Tensor:
    """The shared prefix: system turn, the frames' image slots and the question-independent intro."""
    frames_block = prompts.frames_text(tiles_per_frame, tokens_per_tile) + prompts.intro_text(cfg.simple_prompts)
    return tokenize(tokenizer, prompts.prompt_prefix(frames_block, prompts.system_text(cfg.system_prompt)))


def question_ids(tokenizer, q: Question, cfg: RunConfig) -> torch.Tensor:
    """The suffix: the question from the file with its choices, tokenized as plain text, then the turn's end."""
    block = tokenize(tokenizer, prompts.question_body(q.question, q.choices, simple=cfg.simple_prompts), as_text=True)
    return torch.cat([block, tokenize(tokenizer, prompts.prompt_suffix(""))], dim=1)


def frame_groups(planned: dict[str, tuple[int, ...]], questions: list[Question], views: list[tuple[int, bool]],
                 tiles_per_view: list[int], cfg: RunConfig, spec: InputSpec,
                 detail: dict[str, tuple[int, ...]] | None = None) -> list[FrameGroup]:
    """The clip's questions grouped by frame set (and detail frames), in order of first appearance, each with
    its token ids."""
    detail = detail or {}
    starts = np.concatenate([[0], np.cumsum(tiles_per_view)]).astype(int)
    position = {view: i for i, view in enumerate(views)}
    by_frames: dict[tuple[tuple[int, ...], tuple[int, ...]], list[Question]] = {}
    for q in questions:
        by_frames.setdefault((planned[q.id], detail.get(q.id, ())), []).append(q)
    groups = []
    for (frame_idx, fine), group in by_frames.items():
        seen = [position[(f, f in fine)] for f in frame_idx]
        counts = [tiles_per_view[i] for i in seen]
        rows = [r for i in seen for r in range(starts[i], starts[i + 1])]
        asks = {}
        if cfg.permutations > 1:  # each order of the choices is one more suffix on the same prefix
            asks = {q.id: [(order, question_ids(spec.tokenizer, choice_orders.permute_choices(q, order), cfg))
                           for order in choice_orders.orders(q.choices, cfg.permutations)] for q in group}
        groups.append(FrameGroup(
            frames=frame_idx, questions=group, tile_rows=rows, tiles_per_frame=counts,
            prefix_ids=prefix_ids(spec.tokenizer, counts, spec.tokens_per_tile, cfg),
            suffix_ids={q.id: question_ids(spec.tokenizer, q, cfg) for q in group}, asks=asks, detail_frames=fine))
    return groups


def prepare_clip(video: Path, questions: list[Question], cfg: RunConfig, spec: InputSpec) -> PreparedClip:
    """Decode the union of every question's frames once, tile them and tokenise the prompts (CPU only; safe
    on a worker thread). A clip that cannot be read comes back with `error` set, never raises VideoError."""
    clip = PreparedClip(video=video, questions=questions)
    if questions[0].video_error:
        clip.error = questions[0].video_error
        return clip
    start = time.perf_counter()
    try:
        # One tile per frame is one resize to SxS: letting the decoder do it skips the full-size RGB
        # conversion and PIL resize (pixels differ from the card's by about one uint8 level; see
        # bench/README.md). PyAV's sequential decode with swscale's bicubic is the faster reader for it.
        size = spec.image_size
        scale = (size, size) if cfg.decoder_scaling and cfg.max_num == 1 else None
        with open_video(video, threads=cfg.decode_threads, prefer="pyav" if scale else "decord") as reader:
            planned = plan_frames(reader.info, questions, cfg, size, spec.tokens_per_tile)
            detail = plan_detail(reader.info, planned, questions, cfg, size, spec.tokens_per_tile)
            clip.fps = reader.info.fps
            clip.frame_order = sorted({f for idx in planned.values() for f in idx})
            clip.views = sorted({(f, f in detail.get(q.id, ())) for q in questions for f in planned[q.id]})
            if detail:
                clip.tiles, clip.tiles_per_frame = _tiles_with_detail(reader, clip, scale, cfg, size)
            else:
                decoded = reader.get(clip.frame_order, size=scale)
                if cfg.thumbnail_dir is not None:
                    write_thumbnails(decoded, clip.frame_order, questions[0].video_rel, cfg.thumbnail_dir)
                clip.tiles, clip.tiles_per_frame = tiles.frames_to_tiles(
                    decoded, size, max_num=cfg.max_num, use_thumbnail=cfg.use_thumbnail)
        clip.groups = frame_groups(planned, questions, clip.views, clip.tiles_per_frame, cfg, spec, detail)
    except VideoError as exc:
        clip.error = str(exc)
    clip.prepare_ms = (time.perf_counter() - start) * 1000
    return clip


def _tiles_with_detail(reader, clip: PreparedClip, scale, cfg: RunConfig, size: int):
    """The tiles of the clip's views when some are detail views: those decoded full size and tiled up to
    --detail-max-num tiles plus a thumbnail, the others as without detail (decoder-scaled when it applies)."""
    by_view: dict[tuple[int, bool], torch.Tensor] = {}
    for fine, read_size, max_num in ((False, scale, cfg.max_num), (True, None, max(cfg.detail_max_num, cfg.max_num))):
        group = [f for f, d in clip.views if d == fine]
        if not group:
            continue
        decoded = reader.get(group, size=read_size)
        if cfg.thumbnail_dir is not None:
            write_thumbnails(decoded, group, clip.questions[0].video_rel, cfg.thumbnail_dir)
        stacked, counts = tiles.frames_to_tiles(decoded, size, max_num=max_num, use_thumbnail=cfg.use_thumbnail)
        by_view.update(((f, fine), t) for f, t in zip(group, torch.split(stacked, counts)))
    parts = [by_view[view] for view in clip.views]
    return torch.cat(parts), [int(p.shape[0]) for p in parts]


THUMBNAIL_WIDTH = 160


def thumbnail_path(folder: Path, video_rel: str, frame: int) -> Path:
    """Where the thumbnail of decoded frame `frame` of clip `video_rel` lives (written here, read by
    evals/html_report.py): FOLDER/<clip key>/<frame as 6 digits>.jpg, the clip key being video_rel
    normalised, with "%" and "/" escaped as "%25" and "%2F" ("train/videos/abc.mp4", frame 12 ->
    FOLDER/train%2Fvideos%2Fabc.mp4/000012.jpg): one flat folder per clip, linked from the page by a
    URL-quoted relative path. The escape can be undone, so two clips never share a folder (a/b.mp4,
    a__b.mp4 and a__b.avi did when "/" became "__" and the suffix was dropped)."""
    rel = posixpath.normpath(video_rel.replace("\\", "/"))
    key = rel.replace("%", "%25").replace("/", "%2F")
    return Path(folder) / key / f"{int(frame):06d}.jpg"


def write_thumbnails(decoded: np.ndarray, frame_order: list[int], video_rel: str, folder: Path) -> None:
    """Small JPEGs of the frames as decoded for the model (so no second decode is needed to show them)."""
    from PIL import Image

    for index, frame in zip(frame_order, decoded):
        path = thumbnail_path(folder, video_rel, index)
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(np.asarray(frame))
        height = max(1, round(image.height * THUMBNAIL_WIDTH / image.width))
        partial = path.with_name(path.name + ".part")  # a killed run leaves no half image under the real name
        image.resize((THUMBNAIL_WIDTH, height), Image.BILINEAR).save(partial, format="JPEG", quality=80)
        os.replace(partial, path)
