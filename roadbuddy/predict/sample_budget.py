"""--sample-timeout: learn what a frame costs and cap each clip's frames so every question fits.

A question's time is its clip's shared work (decode, tiles, vision tower,
prefill: all proportional to the frames) divided among the clip's questions,
plus its own short forward pass. Both rates are learned from the clips
answered so far (the first clip runs as configured and calibrates them), and
a clip with n questions gets at most (timeout x 0.8 - own - select) x n / (ms per frame) frames, where
select is a question's share of the frame selector's step (--frame-selector: the scan's decode and
scores, which depend on the clip's length and --scan-fps, not on its frames), learned the same way.
"""
from __future__ import annotations

from roadbuddy.config import RunConfig
from roadbuddy.data.questions import Question
from roadbuddy.predict.inputs import PreparedClip


class SampleBudget:
    SAFETY = 0.8

    def __init__(self, timeout_s: float):
        self.timeout_ms = timeout_s * 1000
        self.ms_per_frame: float | None = None
        self.own_ms: float | None = None
        self.select_ms: float | None = None

    def cap(self, questions: int) -> int | None:
        if self.ms_per_frame is None:
            return None
        room = self.timeout_ms * self.SAFETY - (self.own_ms or 0.0) - (self.select_ms or 0.0)
        return max(1, int(room * questions / self.ms_per_frame))

    def config_for(self, cfg: RunConfig, questions: list[Question]) -> tuple[RunConfig, int | None]:
        """The clip's config with max_frames capped; with support times (the file's or the frame selector's) each
        question has its own frames, so the clip decodes up to one set per question and the cap is shared among
        them."""
        cap = self.cap(len(questions))
        if cap is None:
            return cfg, None
        plans = sum(bool(q.support_frames) for q in questions) if cfg.support_frames else 0
        if cfg.frame_selector is not None:  # the selector gives every other question support times of its own
            plans = len(questions)
        cap = max(1, cap // max(1, plans))
        if cap >= cfg.max_frames:
            return cfg, None
        return cfg.replace(max_frames=cap, min_frames=min(cfg.min_frames, cap)), cap

    def observe(self, clip: PreparedClip, records: list[dict]) -> None:
        timed = [r["time_split_ms"] for r in records if "time_split_ms" in r]
        if not timed or not clip.frame_order:
            return
        # the records' shares of the clip's decode, vision tower and prefills add up to the clip's shared work
        shared = sum(t["decode_tiles"] + t["vision"] + t["prefill"] for t in timed)
        per_frame = shared / len(clip.frame_order)
        own = max(t["question"] for t in timed)
        select = max(t.get("select", 0.0) for t in timed)
        self.select_ms = select if self.select_ms is None else max(select, (self.select_ms + select) / 2)
        # the slower of the latest clip and the running mean, so one fast clip does not lift the cap
        self.ms_per_frame = per_frame if self.ms_per_frame is None else max(per_frame, (self.ms_per_frame + per_frame) / 2)
        self.own_ms = own if self.own_ms is None else max(own, (self.own_ms + own) / 2)
