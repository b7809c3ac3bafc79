"""Pipeline behaviour that needs no subprocess: the out-of-memory ladder, prefetch, per-question records."""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import torch

from roadbuddy.config import RunConfig
from roadbuddy.data.questions import load_questions
from roadbuddy.families.internvl import tiles
from roadbuddy.families.internvl.model import load_model
from roadbuddy.predict import answering, inputs, pipeline, sample_budget
from roadbuddy.predict.prefetch import iter_prepared
from roadbuddy.video import reader as video
from roadbuddy.families.internvl.inputs import TileSpec
from roadbuddy.families.internvl import model as internvl_model


@pytest.fixture(scope="module")
def lm(tiny_checkpoint):
    return load_model(RunConfig(model=str(tiny_checkpoint), device="cpu"))


def oom_above(monkeypatch, lm, max_image_tokens: int) -> list[int]:
    """Make forward() raise CUDA OOM whenever a prompt carries more image tokens than the threshold."""
    seen = []
    real = internvl_model.forward

    def forward(lm_, ids, features, cache, **kw):
        n = int((ids == lm.image_token_id).sum())
        seen.append(n)
        if n > max_image_tokens:
            raise torch.cuda.OutOfMemoryError(f"injected: {n} image tokens")
        return real(lm_, ids, features, cache, **kw)

    monkeypatch.setattr(internvl_model, "forward", forward)
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


@pytest.mark.parametrize("prefetch", [1, 2, 4])
def test_prefetch_queue_is_bounded_while_the_model_is_slow(monkeypatch, prefetch):
    """With a slow consumer (the model), no more than `prefetch` clips are prepared ahead of the one being
    answered, plus the one being prepared: memory stays flat on a long run."""
    import threading

    started, lock = [], threading.Lock()

    def prepare(video, qs, cfg, spec, selector=None):
        with lock:
            started.append(video)
        return inputs.PreparedClip(video=video, questions=qs)

    monkeypatch.setattr(inputs, "prepare_clip", prepare)
    clips = [(Path(f"clip{i}.mp4"), []) for i in range(12)]
    seen, ahead = [], []
    for work in iter_prepared(clips, RunConfig(prefetch=prefetch), TileSpec(56, 4, None)):
        seen.append(work.video)
        time.sleep(0.02)  # the model answering; the worker has time to run ahead if it is allowed to
        with lock:
            ahead.append(len(started) - len(seen))
    assert seen == [c for c, _ in clips] == started
    assert max(ahead) == prefetch  # it runs ahead (decoding overlaps the model), and no further


@pytest.mark.parametrize("changes", [{}, {"share_prefix": False}, {"batch_questions": False}])
def test_time_split_adds_up_to_each_questions_time(lm, synthetic_dataset, tmp_path, changes):
    cfg = RunConfig(model="tiny", test_json=synthetic_dataset, output=tmp_path / "s.csv", device="cpu",
                    progress=False, support_frames=False, **changes)
    run(cfg, lm)
    recs = records(cfg)
    for r in recs.values():
        split = r["time_split_ms"]
        assert set(split) == {"select", "decode_tiles", "vision", "prefill", "question"}
        assert split["select"] == 0  # no --frame-selector (tests/test_frame_selector_run.py times one)
        assert sum(split.values()) == pytest.approx(r["time_ms"], abs=0.01)
        assert split["decode_tiles"] > 0 and split["question"] > 0
        # the plain path encodes and prefills inside each question's own forward
        assert (split["vision"] > 0 and split["prefill"] > 0) == cfg.share_prefix
    # a clip's decode is shared equally by its questions
    by_clip = {}
    for q in load_questions(synthetic_dataset):
        by_clip.setdefault(q.video_path, set()).add(recs[q.id]["time_split_ms"]["decode_tiles"])
    assert all(len(v) == 1 for v in by_clip.values())


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


def _drop_support_after_first(src, dst):
    """The dataset with support frames kept only on each clip's first question: the others share the
    clip's default frames, so a clip has both a support-frame group and a group of several questions."""
    doc = json.loads(src.read_text(encoding="utf-8"))
    seen = set()
    for item in doc["data"]:
        if item["video_path"] in seen:
            item.pop("support_frames", None)
        seen.add(item["video_path"])
    dst.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return dst


@pytest.mark.parametrize("support", [False, True])
def test_batched_questions_answer_as_one_at_a_time_and_plain(monkeypatch, lm, synthetic_dataset, tmp_path, support):
    packs = []
    real = internvl_model.forward_packed

    def counted(lm_, suffixes, cache, *rest):
        packs.append(len(suffixes))
        return real(lm_, suffixes, cache, *rest)

    monkeypatch.setattr(internvl_model, "forward_packed", counted)
    data = _drop_support_after_first(synthetic_dataset, synthetic_dataset.parent / "mixed.json") if support \
        else synthetic_dataset
    base = RunConfig(model="tiny", test_json=data, device="cpu", progress=False, support_frames=support)
    outs = {}
    for name, changes in {"batched": {}, "one": {"batch_questions": False}, "plain": {"share_prefix": False}}.items():
        cfg = base.replace(output=tmp_path / name / "s.csv", **changes)
        before = len(packs)
        run(cfg, lm)
        outs[name] = records(cfg)
        assert (len(packs) > before) == (name == "batched")
    # the synthetic clips have 1, 2 and 3 questions: packs of 2 and 3 without support frames; with them,
    # only the clip whose second and third questions share the default frames packs (2)
    assert sorted(packs) == ([2] if support else [2, 3])
    assert set(outs["batched"]) == {q.id for q in load_questions(data)}
    for name in ("one", "plain"):
        for qid, r in outs[name].items():
            assert r["answer"] == outs["batched"][qid]["answer"]
            assert r["probs"] == pytest.approx(outs["batched"][qid]["probs"], abs=1e-5)
            assert r["frames"] == outs["batched"][qid]["frames"]


@pytest.mark.parametrize("tokens,limit,expected", [
    ([5, 5, 5], 0, [[0, 1, 2]]),
    ([5, 5, 5], 10, [[0, 1], [2]]),
    ([12, 3, 3, 12], 10, [[0], [1, 2], [3]]),
    ([4], 2, [[0]]),
])
def test_question_packs_keep_order_and_the_token_bound(tokens, limit, expected):
    assert answering.question_packs([torch.zeros(1, n) for n in tokens], limit) == expected


def test_no_packing_in_generate_mode_or_without_a_mask(monkeypatch, lm, synthetic_dataset, tmp_path):
    def refuse(*_a, **_k):
        raise AssertionError("forward_packed should not run here")

    monkeypatch.setattr(internvl_model, "forward_packed", refuse)
    for name, cfg_lm in {"generate": (dict(answer_mode="generate", max_new_tokens=2), lm),
                         "flash": ({}, dataclasses.replace(lm, attn_impl="flash_attention_2"))}.items():
        changes, model = cfg_lm
        cfg = RunConfig(model="tiny", test_json=synthetic_dataset, output=tmp_path / name / "s.csv", device="cpu",
                        progress=False, support_frames=False, **changes)
        summary = run(cfg, model)
        assert summary.unexpected == 0 and not summary.errors


def test_plan_frames_respects_the_token_budget(lm):
    from roadbuddy.data.questions import Question
    from roadbuddy.video.source import VideoInfo

    info = VideoInfo(path=None, fps=30.0, num_frames=300, width=2560, height=1440, backend="test")
    question = Question(id="x", question="?", choices=("a", "b"), raw_choices=("a", "b"), video_path=None,
                        video_rel="v.mp4")
    cfg = RunConfig(max_visual_tokens=40, max_frames=32, min_frames=8)
    frames = inputs.plan_frames(info, [question], cfg, inputs.InputSpec.of(lm))["x"]
    assert len(frames) == 10  # 10 s at 3 fps = 30 frames, cut to 40 // 4 tokens per frame
    cfg = RunConfig(max_visual_tokens=20, max_frames=32, min_frames=8)
    frames = inputs.plan_frames(info, [question], cfg, inputs.InputSpec.of(lm))["x"]
    assert len(frames) == 5  # the budget wins over --min-frames


def test_sample_budget_caps_frames_from_measured_cost():
    budget = sample_budget.SampleBudget(timeout_s=1.0)
    assert budget.cap(3) is None  # nothing measured yet: the first clip runs as configured
    work = inputs.PreparedClip(video=None, questions=[], frame_order=list(range(10)))
    recs = [{"time_split_ms": {"decode_tiles": 300.0, "vision": 150.0, "prefill": 50.0, "question": 50.0}},
            {"time_split_ms": {"decode_tiles": 300.0, "vision": 150.0, "prefill": 50.0, "question": 40.0}}]
    budget.observe(work, recs)  # 2 x 500 ms shared for 10 frames -> 100 ms per frame, 50 ms own (the slower)
    assert budget.cap(1) == int((800 - 50) / 100)
    assert budget.cap(3) == int((800 - 50) * 3 / 100)
    from roadbuddy.data.questions import Question

    def q(support=()):
        return Question(id="q", question="?", choices=("a", "b"), raw_choices=("a", "b"), video_path=None,
                        video_rel="v", support_frames=support)

    cfg, cap = budget.config_for(RunConfig(max_frames=32, min_frames=8), [q()])
    assert cap == 7 and cfg.max_frames == 7 and cfg.min_frames == 7
    cfg, cap = budget.config_for(RunConfig(max_frames=4, min_frames=2), [q(), q(), q()])
    assert cap is None and cfg.max_frames == 4  # under the cap already
    # three questions with their own support windows decode three frame sets: the cap is shared
    cfg, cap = budget.config_for(RunConfig(max_frames=32), [q((1.0,)), q((2.0,)), q((3.0,))])
    assert cap == int((800 - 50) * 3 / 100) // 3


def test_sample_timeout_degrades_frames_instead_of_exceeding(monkeypatch, lm, tmp_path):
    import time as _time

    from roadbuddy.testing.checkpoints import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", clips=5)
    real = internvl_model.encode_tiles

    def slow_encode(lm_, pixel_values, batch=32):
        _time.sleep(0.04 * pixel_values.shape[0])  # 40 ms per tile: a slow GPU stand-in
        return real(lm_, pixel_values, batch)

    monkeypatch.setattr(internvl_model, "encode_tiles", slow_encode)
    cfg = RunConfig(model="tiny", test_json=data, output=tmp_path / "s.csv", device="cpu", progress=False,
                    prefetch=0, min_frames=8, max_frames=8, sample_timeout=0.25)
    run(cfg, lm)
    recs = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    first_clip = recs[0]["frames"]
    assert len(first_clip) == 8 and "frame_cap" not in recs[0]  # calibration clip, as configured
    later = [r for r in recs if "frame_cap" in r]
    assert later, "no clip was degraded"
    clip_of = {q.id: q.video_path for q in load_questions(data)}
    clips = {}
    for r in later:
        assert len(r["frames"]) <= r["frame_cap"] < 8
        clips.setdefault(clip_of[r["id"]], set()).update(r["frames"])
    # the injected 40 ms per tile dominates every clip's cost: what the degraded clips decoded must fit the
    # timeout with the budget's safety margin (asserted on the cost model, not the wall clock, which
    # other processes on a busy machine can stretch)
    for r in later:
        questions = sum(1 for x in recs if clip_of[x["id"]] == clip_of[r["id"]])
        assert 40 * len(clips[clip_of[r["id"]]]) / questions <= 250 * sample_budget.SampleBudget.SAFETY


def test_decoder_scaling_gives_the_same_tiles_approximately(lm, synthetic_dataset, monkeypatch):
    opened = []
    real_open = inputs.open_video
    monkeypatch.setattr(inputs, "open_video", lambda *a, **k: opened.append(real_open(*a, **k)) or opened[-1])
    questions = load_questions(synthetic_dataset)
    clip = [q for q in questions if q.video_path == questions[0].video_path]
    cfg = RunConfig(support_frames=False, decoder_scaling=False)
    card = inputs.prepare_clip(clip[0].video_path, clip, cfg, inputs.InputSpec.of(lm))
    fast = inputs.prepare_clip(clip[0].video_path, clip, cfg.replace(decoder_scaling=True), inputs.InputSpec.of(lm))
    assert fast.frame_order == card.frame_order and fast.tiles_per_frame == card.tiles_per_frame
    assert fast.tiles.shape == card.tiles.shape and fast.tiles.dtype == card.tiles.dtype == torch.uint8
    diff = (tiles.normalize_tiles(fast.tiles) - tiles.normalize_tiles(card.tiles)).abs().mean().item()
    assert 0 < diff < 0.06  # normalised units: 1 uint8 level is about 0.017; two bicubic resamplers
    assert [r.info.backend for r in opened] == ["decord" if video.decoders_available()["decord"] else "pyav",
                                                "pyav"]  # the scaled read prefers PyAV, the card's decord
    tiled = inputs.prepare_clip(clip[0].video_path, clip, cfg.replace(decoder_scaling=True, max_num=6),
                                inputs.InputSpec.of(lm))
    assert max(tiled.tiles_per_frame) > 1  # scaling only applies to one tile per frame


# --- generate mode: the parsed text is the recorded answer ---------------------------------------------------

GENERATED = ["Đáp án: B", "C", "nonsense"]


def test_generate_mode_records_the_parsed_answer_or_the_recorded_fallback(monkeypatch, lm, synthetic_dataset,
                                                                           tmp_path):
    """The model's text fixed, in turn, to each of GENERATED: "Đáp án: B" is B; "C" is C where the question has
    a third choice and unparseable where it has two; "nonsense" is unparseable. An unparseable text records the
    score answer with mode generate-fallback-score and fallback true; the CSV holds what was recorded."""
    said = []

    def greedy(*_args, **_kwargs):
        said.append(GENERATED[len(said) % len(GENERATED)])
        return said[-1]

    monkeypatch.setattr(answering, "greedy", greedy)
    cfg = RunConfig(model="tiny", test_json=synthetic_dataset, output=tmp_path / "s.csv", device="cpu",
                    progress=False, answer_mode="generate", support_frames=False)  # questions in file order
    summary = run(cfg, lm)
    lines = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    questions = {q.id: q for q in load_questions(synthetic_dataset)}
    assert len(said) == len(lines) == len(questions)  # one generation per question, records in that order
    rows = dict(line.split(",") for line in (tmp_path / "s.csv").read_text().splitlines()[1:])
    seen, overruled = set(), 0
    for text, r in zip(said, lines):
        q = questions[r["id"]]
        parsed = {"Đáp án: B": "B", "C": "C" if q.num_choices >= 3 else None, "nonsense": None}[text]
        scored = max(r["probs"], key=r["probs"].get)
        assert r["raw"] == text
        if parsed is None:
            assert r["mode"] == "generate-fallback-score" and r["fallback"] is True and r["answer"] == scored
        else:
            assert r["mode"] == "generate" and "fallback" not in r and r["answer"] == parsed
            overruled += parsed != scored
        assert rows[r["id"]] == r["answer"]
        seen.add((text, q.num_choices))
    assert {("Đáp án: B", 4), ("C", 4), ("C", 2), ("nonsense", 2)} <= seen  # every case was exercised
    assert overruled  # the text decided, not the scores: some parsed letters differ from the scored one
    fallbacks = sum(r["mode"] == "generate-fallback-score" for r in lines)
    assert summary.fallbacks == fallbacks
    assert summary.modes == {"generate": len(lines) - fallbacks, "generate-fallback-score": fallbacks}


# --- once per clip: decode, vision tower, prefill ---------------------------------------------------------------

@pytest.mark.parametrize("share_prefix, support_frames", [(True, False), (True, True), (False, False)],
                         ids=["shared", "shared-support-frames", "no-share-prefix"])
def test_decode_vision_tower_and_prefill_run_once_per_clip(monkeypatch, lm, synthetic_dataset, tmp_path,
                                                           share_prefix, support_frames):
    """README "Speed": per clip the frames are decoded once and run through the vision tower once, and each
    frame set is prefilled once, for all of its questions; --no-share-prefix does both once per question."""
    from collections import Counter

    from roadbuddy.predict import oom_ladder

    events = []  # (what, clip): list.append is safe from the prefetch thread
    answering_now = []
    real_answer, real_encode, real_forward, real_open = (oom_ladder.answer_clip, internvl_model.encode_tiles,
                                                         internvl_model.forward, inputs.open_video)

    def answer_clip(lm_, clip, *args, **kwargs):
        answering_now.append(clip.video)
        yield from real_answer(lm_, clip, *args, **kwargs)

    def encode_tiles(lm_, pixel_values, *args, **kwargs):
        events.append(("vision", answering_now[-1]))
        return real_encode(lm_, pixel_values, *args, **kwargs)

    def forward(lm_, ids, features, *args, **kwargs):
        if features is not None:  # a prefill carries the frames' features; a question's own pass does not
            events.append(("prefill", answering_now[-1]))
        return real_forward(lm_, ids, features, *args, **kwargs)

    def open_video(path, *args, **kwargs):
        events.append(("decode", Path(path)))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(oom_ladder, "answer_clip", answer_clip)
    monkeypatch.setattr(internvl_model, "encode_tiles", encode_tiles)
    monkeypatch.setattr(internvl_model, "forward", forward)
    monkeypatch.setattr(inputs, "open_video", open_video)
    cfg = RunConfig(model="tiny", test_json=synthetic_dataset, output=tmp_path / "s.csv", device="cpu",
                    progress=False, share_prefix=share_prefix, support_frames=support_frames)
    run(cfg, lm)
    recs = records(cfg)
    counts = Counter(events)
    clips = {}
    for q in load_questions(synthetic_dataset):
        clips.setdefault(q.video_path, []).append(q)
    assert len(clips) == 4 and sorted(map(len, clips.values())) == [1, 1, 2, 3]
    frame_sets_seen = 0
    for video, qs in clips.items():
        frame_sets = len({tuple(recs[q.id]["frames"]) for q in qs})
        frame_sets_seen += frame_sets
        assert counts["decode", video] == 1
        assert counts["vision", video] == (1 if share_prefix else len(qs))
        assert counts["prefill", video] == (frame_sets if share_prefix else len(qs))
    assert (frame_sets_seen > len(clips)) == support_frames  # support frames do split clips into frame sets


@pytest.mark.parametrize("device,shown", [("cpu", False), ("cuda", True), ("cuda:1", True)])
def test_vram_estimate_is_said_only_where_a_gpu_runs_the_model(lm, synthetic_dataset, tmp_path, device, shown):
    """A CPU run printed "VRAM estimate 10.40 GiB", a figure of GPU memory it will never use. The loader is the
    CPU model whatever the device asked for: only what the run says before loading is looked at."""
    said = []
    cfg = RunConfig(test_json=synthetic_dataset, output=tmp_path / "submission.csv", device=device, progress=False,
                    limit=1)
    pipeline.run(cfg, model_loader=lambda _c: lm, say=said.append)
    assert any(line.startswith("VRAM estimate") for line in said) == shown, said


def test_the_run_names_the_family_and_parameter_count_and_warns_above_the_challenges_cap(lm, synthetic_dataset,
                                                                                         tmp_path):
    """The count is the model's own, shared weights once; above 8B (the challenge's rule) the run warns."""
    import dataclasses

    expected = sum(p.numel() for p in lm.model.parameters())  # parameters() yields a tied weight once
    assert lm.family == "internvl" and lm.parameters == expected
    for count, warned in ((lm.parameters, False), (8_000_000_000, False), (8_292_000_000, True)):
        said = []
        cfg = RunConfig(test_json=synthetic_dataset, output=tmp_path / str(count) / "submission.csv", device="cpu",
                        progress=False, limit=1)
        pipeline.run(cfg, model_loader=lambda _c: dataclasses.replace(lm, parameters=count), say=said.append)
        (line,) = [s for s in said if s.startswith("model: ")]
        assert f"(internvl, {count:,} parameters, " in line, line
        warnings = [s for s in said if "above the RoadBuddy challenge's cap of 8B" in s]
        assert warnings == ([f"WARNING: the model has {count / 1e9:.2f}B parameters, above the RoadBuddy "
                             "challenge's cap of 8B in all at inference: a submission with it breaks the rules"]
                            if warned else []), said
