"""Prepared clips in order, the next ones decoded, tiled and tokenised on a worker thread meanwhile.

At most `cfg.prefetch` clips wait ready beside the one being answered, so
memory stays flat however long the run.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from roadbuddy.config import RunConfig
from roadbuddy.data.questions import Question
from roadbuddy.predict import inputs
from roadbuddy.predict.inputs import InputSpec, PreparedClip
from roadbuddy.predict.sample_budget import SampleBudget


def iter_prepared(clips: Iterable[tuple[Path, list[Question]]], cfg: RunConfig, spec: InputSpec,
                  budget: SampleBudget | None = None, selector=None) -> Iterator[PreparedClip]:
    """Each clip prepared (inputs.prepare_clip, with the frame selector where the run has one), in order; with
    cfg.prefetch > 0 on a worker thread."""

    def prepare(video, qs):
        clip_cfg, cap = budget.config_for(cfg, qs) if budget else (cfg, None)
        clip = inputs.prepare_clip(video, qs, clip_cfg, spec, selector)
        clip.frame_cap = cap
        return clip

    if cfg.prefetch <= 0:
        for video, qs in clips:
            yield prepare(video, qs)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        pending = []
        for video, qs in clips:
            pending.append(pool.submit(prepare, video, qs))
            if len(pending) > cfg.prefetch:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()
