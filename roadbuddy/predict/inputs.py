"""The CPU side of answering: a clip and its questions -> the frames, pixels and token ids the model is sent.

    clip = prepare_clip(video, questions, cfg, spec)     # decode once, the family's pixels, tokenise (a worker thread)
    clip = prepare_clip(..., selector)                   # --frame-selector: scan the clip, predict support times first
    for group in clip.groups:                            # questions that share a frame set share a prefix
        group.prefix_ids, group.suffix_ids[q.id], group.vision (or the clip's tiles at group.tile_rows)

What differs per model family (pixels, the prompt's vision tokens, what a frame costs) comes from the
family behind `spec.ops` (roadbuddy.families.protocol); the plan of frames, their decode and the grouping
of questions by frame set are the same for all. Prediction builds its inputs here on the prefetch thread
and fine-tuning builds its training examples here too, so a training example is what prediction sends,
by construction (tests/test_finetune.py compares them).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from roadbuddy.config import RunConfig
from roadbuddy.data.questions import Question
from roadbuddy.levers import choice_orders
from roadbuddy.video import frames
from roadbuddy.video.reader import open_video
from roadbuddy.video.source import VideoError


class InputSpec:
    """What a loaded model's inputs depend on (its tokenizer, sizes, processor): each family has its own
    (families/*/inputs.py), with `ops`, the family's functions."""

    @staticmethod
    def of(lm):
        return lm.ops.input_spec(lm)


@dataclass
class FrameGroup:
    """Questions of a clip that see the same frames (and the same of them in detail, --detail-frames): one
    prefix (system turn, frames, intro) for all."""

    frames: tuple[int, ...]
    questions: list[Question]
    prefix_ids: torch.Tensor  # [1, T] int64, CPU
    suffix_ids: dict[str, torch.Tensor]  # question id -> [1, T] int64, CPU: the choices in the file's order
    # --permutations: question id -> (order of the file's choices as shown, suffix ids), one per order
    asks: dict[str, list[tuple[tuple[int, ...], torch.Tensor]]] = field(default_factory=dict)
    detail_frames: tuple[int, ...] = ()  # those of `frames` shown in detail (--detail-frames)
    tiles_per_frame: list[int] = field(default_factory=list)  # images per frame (InternVL: its tiles; else 1)
    visual_tokens: int = 0  # the prefix's vision tokens
    tile_rows: list[int] = field(default_factory=list)  # InternVL: rows of the clip's tiles (and features)
    vision: dict = field(default_factory=dict)  # the family's vision inputs of this frame set, CPU tensors

    @property
    def tiles(self) -> int:
        return int(sum(self.tiles_per_frame))


@dataclass
class PreparedClip:
    """A decoded and tokenised clip: everything CPU-side that its questions need."""

    video: Path
    questions: list[Question]
    fps: float = 0.0
    num_frames: int = 0  # frames in the whole video (the family's processor wants the source's count)
    frame_order: list[int] = field(default_factory=list)  # decoded frame indices, ascending
    # each view of a frame, (frame index, shown in detail), in the order of `tiles` and `tiles_per_frame`: a
    # frame that one question sees in detail and another plainly is prepared both ways; without
    # --detail-frames these are frame_order's frames
    views: list[tuple[int, bool]] = field(default_factory=list)
    tiles: torch.Tensor | None = None  # InternVL: uint8 [N,3,S,S], the views' tiles (normalised on the device)
    tiles_per_frame: list[int] = field(default_factory=list)  # InternVL: per view
    decoded: dict[int, object] = field(default_factory=dict)  # other families: frame index -> RGB uint8 [H,W,3]
    groups: list[FrameGroup] = field(default_factory=list)
    prepare_ms: float = 0.0  # decoding, pixels and tokens (the selector's step not included)
    # --frame-selector: question id -> its predicted support times as (seconds, the selector's logit), best first,
    # for the questions whose frames the selector planned; the time its step took (the scan's decode and scoring)
    predicted: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    select_ms: float = 0.0
    selector_error: str | None = None  # why the selector could not score this clip (its questions: even frames)
    error: str | None = None
    frame_cap: int | None = None  # set when --sample-timeout lowered this clip's frame count

    def seconds(self, frame_indices) -> list[float]:
        return [round(i / self.fps, 3) if self.fps > 0 else 0.0 for i in frame_indices]


def frame_budget(info, cfg: RunConfig, spec) -> tuple[int, int]:
    """(frames per question, detail frames among them): the adaptive count, then cut until every visual token
    the family counts for them (the detail frames' extra included) fits --max-visual-tokens; detail frames
    go first when even one frame with them would not fit."""
    def tokens(count, detail):
        return spec.ops.visual_tokens(spec, info.width, info.height, count, detail, cfg)

    count = frames.frame_count(info.duration, min_frames=cfg.min_frames, max_frames=cfg.max_frames,
                               frames_per_second=cfg.frames_per_second, max_visual_tokens=10 ** 12,
                               tokens_per_frame=1)
    while count > 1 and tokens(count, min(cfg.detail_frames, count)) > cfg.max_visual_tokens:
        count -= 1
    detail = min(cfg.detail_frames, count)
    while detail and tokens(count, detail) > cfg.max_visual_tokens:
        detail -= 1
    return count, detail


def selector_questions(questions: list[Question], cfg: RunConfig) -> list[Question]:
    """The questions whose frames the frame selector plans: with --frame-selector, those without support
    timestamps of their own in the file (or all, with --selector-wins or --no-support-frames)."""
    if cfg.frame_selector is None:
        return []
    return [q for q in questions if cfg.selector_wins or not (cfg.support_frames and q.support_frames)]


def support_times(questions: list[Question], cfg: RunConfig,
                  predicted: dict[str, list[tuple[float, float]]] | None = None) -> dict[str, tuple[float, ...]]:
    """Each question's support timestamps for the frame plan: the selector's predicted times where it planned the
    question (`predicted`), else the file's support_frames (none with --no-support-frames)."""
    predicted = predicted or {}
    return {q.id: tuple(t for t, _ in predicted[q.id]) if q.id in predicted else
            (tuple(q.support_frames) if cfg.support_frames else ()) for q in questions}


def plan_frames(info, questions: list[Question], cfg: RunConfig, spec,
                support: dict[str, tuple[float, ...]] | None = None) -> dict[str, tuple[int, ...]]:
    """Frame indices per question: the adaptive count, plus windows around its support times (`support`, from
    support_times; default: the file's)."""
    count, _ = frame_budget(info, cfg, spec)
    support = support if support is not None else support_times(questions, cfg)
    planned = {}
    for q in questions:
        planned[q.id] = tuple(frames.select_frames(info.num_frames, info.fps, count, support[q.id],
                                                   support_window=cfg.support_window,
                                                   support_share=cfg.support_share))
    return planned


def plan_detail(info, planned: dict[str, tuple[int, ...]], questions: list[Question], cfg: RunConfig,
                spec, support: dict[str, tuple[float, ...]] | None = None) -> dict[str, tuple[int, ...]]:
    """Each question's --detail-frames frames (empty without them): the ones nearest its support timestamps,
    else spread across its frames. A question sees its own detail frames only: another question's detail
    frame among its frames stays an ordinary frame for it, or it would see more detail than frame_budget
    allowed and exceed --max-visual-tokens (and the VRAM estimate)."""
    _, k = frame_budget(info, cfg, spec)
    if not k:
        return {}
    support = support if support is not None else support_times(questions, cfg)
    return {q.id: tuple(frames.detail_frames(planned[q.id], k, info.fps, support[q.id])) for q in questions}


def frame_groups(clip: PreparedClip, planned: dict[str, tuple[int, ...]], cfg: RunConfig, spec,
                 detail: dict[str, tuple[int, ...]] | None = None) -> list[FrameGroup]:
    """The clip's questions grouped by frame set (and detail frames), in order of first appearance, each with
    its family's prefix, vision inputs and question ids."""
    detail = detail or {}
    family = spec.ops
    by_frames: dict[tuple[tuple[int, ...], tuple[int, ...]], list[Question]] = {}
    for q in clip.questions:
        by_frames.setdefault((planned[q.id], detail.get(q.id, ())), []).append(q)
    groups = []
    for (frame_idx, fine), group in by_frames.items():
        asks = {}
        if cfg.permutations > 1:  # each order of the choices is one more suffix on the same prefix
            asks = {q.id: [(order, family.question_ids(spec, choice_orders.permute_choices(q, order), cfg))
                           for order in choice_orders.orders(q.choices, cfg.permutations)] for q in group}
        groups.append(FrameGroup(
            frames=frame_idx, questions=group, asks=asks, detail_frames=fine,
            suffix_ids={q.id: family.question_ids(spec, q, cfg) for q in group},
            **family.group_inputs(clip, frame_idx, fine, cfg, spec)))
    return groups


SELECTOR_BATCHES = (64, 8)  # scanned frames through the selector's vision tower at a time; the second after an OOM


def selector_support(reader, questions: list[Question], cfg: RunConfig,
                     selector) -> tuple[dict[str, list[tuple[float, float]]], str | None]:
    """--frame-selector: the open clip scanned at --scan-fps and scored against the text of the questions it
    plans (selector_questions): (question id -> up to --selector-times (seconds, logit), more than
    --support-window apart, best first; None, or why the selector could not score the clip). CUDA out of
    memory is tried again with fewer frames at a time; when even that fails the questions get no support
    times (evenly spread frames, as without a selector) and the reason is returned."""
    asked = selector_questions(questions, cfg)
    if not asked:
        return {}, None
    if selector is None:
        raise ValueError(f"the run names a frame selector ({cfg.frame_selector}) but none was loaded")
    from roadbuddy.selector.scan import predict_support as scan_and_score

    for batch in SELECTOR_BATCHES:
        try:
            picks = scan_and_score(selector, reader, [q.question for q in asked], scan_fps=cfg.scan_fps,
                                   count=cfg.selector_times, window=cfg.support_window, batch=batch)
            return {q.id: pick for q, pick in zip(asked, picks)}, None
        except torch.cuda.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    why = (f"CUDA out of memory in the frame selector even {SELECTOR_BATCHES[-1]} frames at a time: "
           "frames spread evenly")
    return {q.id: [] for q in asked}, why


def prepare_clip(video: Path, questions: list[Question], cfg: RunConfig, spec, selector=None,
                 predicted: dict[str, list[tuple[float, float]]] | None = None) -> PreparedClip:
    """Decode the union of every question's frames once, make the family's pixels and tokenise the prompts (CPU
    work, and the frame selector's scan and scores where the run has one: safe on a worker thread). `predicted`
    (a clip prepared again, the out-of-memory ladder) reuses the selector's times instead of scanning again. A
    clip that cannot be read comes back with `error` set, never raises VideoError."""
    clip = PreparedClip(video=video, questions=questions)
    if questions[0].video_error:
        clip.error = questions[0].video_error
        return clip
    start = time.perf_counter()
    try:
        with open_video(video, threads=cfg.decode_threads, prefer=spec.ops.decoder(cfg)) as reader:
            if predicted is None:
                began = time.perf_counter()
                clip.predicted, clip.selector_error = selector_support(reader, questions, cfg, selector)
                if clip.predicted:
                    clip.select_ms = (time.perf_counter() - began) * 1000
            else:
                clip.predicted = {q.id: predicted[q.id] for q in questions if q.id in predicted}
            support = support_times(questions, cfg, clip.predicted)
            planned = plan_frames(reader.info, questions, cfg, spec, support)
            detail = plan_detail(reader.info, planned, questions, cfg, spec, support)
            clip.fps, clip.num_frames = reader.info.fps, reader.info.num_frames
            clip.frame_order = sorted({f for idx in planned.values() for f in idx})
            clip.views = sorted({(f, f in detail.get(q.id, ())) for q in questions for f in planned[q.id]})
            spec.ops.decode(reader, clip, cfg, spec)
        clip.groups = frame_groups(clip, planned, cfg, spec, detail)
    except VideoError as exc:
        clip.error = str(exc)
    clip.prepare_ms = (time.perf_counter() - start) * 1000 - clip.select_ms
    return clip
