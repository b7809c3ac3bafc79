"""CUDA out of memory on a clip: retry its unanswered questions with fewer tiles, then fewer frames.

The rungs: one tile per frame, then half the frames, down to one frame; only
when one frame does not fit do the questions get an error row (prior answer).
Each retried record says `oom_retries` and what it was answered with.
"""
from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import torch

from roadbuddy.config import RunConfig
from roadbuddy.families.loaded import LoadedModel
from roadbuddy.predict.answering import answer_clip, error_records
from roadbuddy.predict.inputs import InputSpec, PreparedClip, prepare_clip

log = logging.getLogger(__name__)


def smaller_config(cfg: RunConfig, clip: PreparedClip) -> RunConfig | None:
    """The next rung of the ladder: one tile per frame, then half the frames, down to one."""
    if cfg.max_num > 1:
        return cfg.replace(max_num=1)
    used = max((len(g.frames) for g in clip.groups), default=cfg.max_frames)
    if used <= 1:
        return None
    fewer = max(1, used // 2)
    return cfg.replace(max_frames=fewer, min_frames=min(cfg.min_frames, fewer))


def _free_gpu_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def answer_with_ladder(lm: LoadedModel, clip: PreparedClip, cfg: RunConfig, spec: InputSpec,
                       prior: dict[int, list[float]] | None = None) -> Iterator[dict]:
    """answer_clip, retrying the unanswered questions a rung down the ladder on each CUDA OOM."""
    attempt_cfg, retries = cfg, 0
    while True:
        answered = set()
        try:
            for record in answer_clip(lm, clip, attempt_cfg, prior):
                if retries:
                    record.update(oom_retries=retries, degraded={"max_num": attempt_cfg.max_num,
                                                                 "max_frames": attempt_cfg.max_frames})
                answered.add(record["id"])
                yield record
            return
        except torch.cuda.OutOfMemoryError:
            pass  # handled below, outside the except block, so the failed attempt's tensors can be freed
        _free_gpu_memory()
        remaining = [q for q in clip.questions if q.id not in answered]
        next_cfg = smaller_config(attempt_cfg, clip)
        if next_cfg is None:
            clip = PreparedClip(video=clip.video, questions=remaining, error="CUDA out of memory even with one frame")
            yield from error_records(clip)
            return
        log.warning("CUDA out of memory on %s; retrying %d questions with max_num=%d, max_frames=%d",
                    clip.video, len(remaining), next_cfg.max_num, next_cfg.max_frames)
        attempt_cfg, retries = next_cfg, retries + 1
        clip = prepare_clip(clip.video, remaining, attempt_cfg, spec, predicted=clip.predicted)
        if clip.error:
            yield from error_records(clip)
            return
