"""Pipeline behaviour that needs no subprocess: the out-of-memory ladder, prefetch, per-question records."""
from __future__ import annotations

import json

import pytest
import torch

from roadbuddy import pipeline
from roadbuddy.config import RunConfig
from roadbuddy.data import load_questions
from roadbuddy.model import load_model


@pytest.fixture(scope="module")
def lm(tiny_checkpoint):
    return load_model(RunConfig(model=str(tiny_checkpoint), device="cpu"))


def oom_above(monkeypatch, lm, max_image_tokens: int) -> list[int]:
    """Make forward() raise CUDA OOM whenever a prompt carries more image tokens than the threshold."""
    seen = []
    real = pipeline.forward

    def forward(lm_, ids, features, cache):
        n = int((ids == lm.image_token_id).sum())
        seen.append(n)
        if n > max_image_tokens:
            raise torch.cuda.OutOfMemoryError(f"injected: {n} image tokens")
        return real(lm_, ids, features, cache)

    monkeypatch.setattr(pipeline, "forward", forward)
    return seen


def run(cfg, lm):
    return pipeline.run(cfg, model_loader=lambda _c: lm, say=lambda _m: None)


def records(cfg) -> dict[str, dict]:
    lines = (cfg.output.parent / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return {r["id"]: r for r in map(json.loads, lines)}


def test_oom_ladder_drops_tiles_then_frames(monkeypatch, lm, synthetic_dataset, tmp_path):
    # 8 frames x (2x1 grid + thumbnail) x 4 tokens = 96 image tokens; only <= 20 fit
    seen = oom_above(monkeypatch, lm, 20)
    cfg = RunConfig(model="tiny", test_json=synthetic_dataset, output=tmp_path / "submission.csv", device="cpu",
                    max_num=6, progress=False, support_frames=False)
    summary = run(cfg, lm)
    assert not summary.errors
    recs = records(cfg)
    assert len(recs) == len(load_questions(synthetic_dataset))
    for r in recs.values():
        assert r["oom_retries"] == 2  # one tile per frame (32 tokens) still failed, then half the frames
        assert r["degraded"] == {"max_num": 1, "max_frames": 4}
        assert len(r["frames"]) == 4 and r["tiles"] == 4 and r["visual_tokens"] <= 20
    assert max(seen) == 96 and 32 in seen


def test_oom_at_every_size_gives_prior_and_an_error(monkeypatch, lm, synthetic_dataset, tmp_path):
    oom_above(monkeypatch, lm, 0)
    cfg = RunConfig(model="tiny", test_json=synthetic_dataset, output=tmp_path / "submission.csv", device="cpu",
                    progress=False)
    summary = run(cfg, lm)
    questions = load_questions(synthetic_dataset)
    assert set(summary.errors) == {q.id for q in questions}
    assert all("out of memory" in why for why in summary.errors.values())
    rows = (tmp_path / "submission.csv").read_text().splitlines()[1:]
    assert rows == [f"{q.id},{'B' if q.num_choices == 2 else 'A'}" for q in questions]


def test_prefetch_and_inline_give_the_same_records(lm, synthetic_dataset, tmp_path):
    outs = {}
    for prefetch in (0, 3):
        cfg = RunConfig(model="tiny", test_json=synthetic_dataset, output=tmp_path / f"p{prefetch}" / "s.csv",
                        device="cpu", prefetch=prefetch, progress=False)
        run(cfg, lm)
        outs[prefetch] = {k: (v["answer"], v["frames"], v["probs"]) for k, v in records(cfg).items()}
    assert outs[0] == outs[3]


def test_support_frames_give_per_question_frames_and_share_the_decode(lm, synthetic_dataset, tmp_path):
    cfg = RunConfig(model="tiny", test_json=synthetic_dataset, output=tmp_path / "s.csv", device="cpu",
                    progress=False)
    run(cfg, lm)
    recs = records(cfg)
    questions = load_questions(synthetic_dataset)
    by_clip = {}
    for q in questions:
        by_clip.setdefault(q.video_path, []).append(q)
    multi = [qs for qs in by_clip.values() if len(qs) > 1]
    assert multi, "the synthetic dataset should have clips with several questions"
    for qs in multi:
        frames = [tuple(recs[q.id]["frames"]) for q in qs]
        assert len(set(frames)) > 1  # different support timestamps -> different frames
    plain = cfg.replace(output=tmp_path / "plain" / "s.csv", share_prefix=False)
    run(plain, lm)
    for qid, r in records(plain).items():
        assert r["answer"] == recs[qid]["answer"]
        assert r["probs"] == pytest.approx(recs[qid]["probs"], abs=1e-4)


def test_plan_frames_respects_the_token_budget(lm):
    from roadbuddy.video import VideoInfo

    from roadbuddy.data import Question

    info = VideoInfo(path=None, fps=30.0, num_frames=300, width=2560, height=1440, backend="test")
    question = Question(id="x", question="?", choices=("a", "b"), raw_choices=("a", "b"), video_path=None,
                        video_rel="v.mp4")
    cfg = RunConfig(max_visual_tokens=40, max_frames=32, min_frames=8)
    frames = pipeline.plan_frames(info, [question], cfg, lm.image_size, lm.tokens_per_tile)["x"]
    assert len(frames) == 10  # 10 s at 3 fps = 30 frames, cut to 40 // 4 tokens per frame
    cfg = RunConfig(max_visual_tokens=20, max_frames=32, min_frames=8)
    frames = pipeline.plan_frames(info, [question], cfg, lm.image_size, lm.tokens_per_tile)["x"]
    assert len(frames) == 5  # the budget wins over --min-frames
