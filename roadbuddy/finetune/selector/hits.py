"""hit@k of a selector on scanned clips, against k evenly spread frames: the selector's one measure.

For each question: the selector's k picks (its best-scoring scanned frames, more than `peak_window` seconds
apart; times.support_times) hit when one of them is within `hit_window` seconds of a support timestamp; the
even frames (the plan's uniform segments at the same k, times.even_times) are judged the same way. The
selector's best pick alone is reported too (hit@1): a selector that only finds "something salient" in a clip
reaches hit@k without telling one question's moment from another's.
"""
from __future__ import annotations

from collections.abc import Iterable

from roadbuddy.finetune.selector.data import Clip
from roadbuddy.selector.model import Selector, score
from roadbuddy.selector.times import even_times, hit, support_times


def hit_rates(selector: Selector, clips: Iterable[Clip], *, k: int, hit_window: float = 1.0,
              peak_window: float = 1.0) -> dict:
    """{"n", "k", "selector", "selector_top1", "even", "per_question"}: shares of questions hit."""
    n = picked_hits = top_hits = even_hits = 0
    per_question = {}
    for clip in clips:
        logits = score(selector, [q.question for q in clip.questions], clip.scan.frames)
        picks = support_times(logits, clip.scan.times, count=k, window=peak_window)
        even = even_times(clip.scan.num_frames, clip.scan.fps, k)
        for q, chosen in zip(clip.questions, picks):
            mine, top, spread = (hit(chosen, q.support_frames, hit_window), hit(chosen[:1], q.support_frames,
                                 hit_window), hit(even, q.support_frames, hit_window))
            n += 1
            picked_hits, top_hits, even_hits = picked_hits + mine, top_hits + top, even_hits + spread
            per_question[q.id] = {"picks": [round(t, 3) for t in chosen], "hit": mine, "even_hit": spread}
    share = (lambda x: x / n) if n else (lambda _x: 0.0)
    return {"n": n, "k": k, "selector": share(picked_hits), "selector_top1": share(top_hits),
            "even": share(even_hits), "per_question": per_question}
