"""roadbuddy-predict --frame-selector: the selector's predicted times feed the frame plan train.json's timestamps
feed, its time and picks are in the records, its memory in the estimate, and a run resumes only with the
same selector.

The clips are the brief-evidence task's (roadbuddy.testing.brief_task: 16 s, a light and a sign each on screen
for 1 s), answered by the shipped tiny seeing models with the committed tiny selector, on the CPU.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import records_of, run_main

from roadbuddy.config import ConfigError, RunConfig
from roadbuddy.data.output import OutputError
from roadbuddy.data.questions import load_questions
from roadbuddy.predict import inputs, memory
from roadbuddy.predict.answering import TIME_STEPS
from roadbuddy.predict.pipeline import run
from roadbuddy.predict.sample_budget import SampleBudget
from roadbuddy.selector.model import SelectorError, check_selector, load_selector
from roadbuddy.selector.times import peak_centre
from roadbuddy.testing import brief_task, tiny_task

SELECTOR = brief_task.SELECTOR
QWEN = tiny_task.CHECKPOINT.parent / "tiny_seeing_qwen3_vl"


@pytest.fixture(scope="module")
def brief(tmp_path_factory) -> Path:
    """Three brief clips, six questions, each with its support timestamp (a train-layout file)."""
    return brief_task.write_split(tmp_path_factory.mktemp("brief"), clips=3, seed=brief_task.HELDOUT_SEED + 500,
                                  balanced=True)


@pytest.fixture(scope="module")
def unlabelled(brief, tmp_path_factory) -> Path:
    """The same questions without support_frames, as the test files come (beside the same videos)."""
    doc = json.loads(brief.read_text(encoding="utf-8"))
    for item in doc["data"]:
        item.pop("support_frames")
    path = brief.parent / "unlabelled.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def selector():
    return load_selector(SELECTOR)


def _config(model, split, output, **changes) -> RunConfig:
    return tiny_task.eval_config(model, split, output, **{"frame_selector": str(SELECTOR), **changes})


def _spec(model=tiny_task.CHECKPOINT):
    from roadbuddy.families import registry

    lm = registry.load_model(RunConfig(model=str(model), device="cpu"))
    return inputs.InputSpec.of(lm)


def test_the_selectors_times_feed_the_plan_the_files_timestamps_feed(brief, unlabelled, selector):
    """A question planned by the selector gets exactly the frames (and groups, prefix ids, pixels) it would get
    were its predicted times train.json's support_frames."""
    spec = _spec()
    asked = load_questions(unlabelled, None)
    cfg = _config(tiny_task.CHECKPOINT, unlabelled, "unused.csv")
    for video in sorted({q.video_path for q in asked}):
        qs = [q for q in asked if q.video_path == video]
        selected = inputs.prepare_clip(video, qs, cfg, spec, selector)
        assert set(selected.predicted) == {q.id for q in qs} and selected.select_ms > 0
        as_file = [dataclasses.replace(q, support_frames=tuple(t for t, _ in selected.predicted[q.id])) for q in qs]
        planned = inputs.prepare_clip(video, as_file, cfg.replace(frame_selector=None, support_frames=True), spec)
        assert [g.frames for g in selected.groups] == [g.frames for g in planned.groups]
        assert [g.frames for g in selected.groups] != [g.frames for g in inputs.prepare_clip(
            video, qs, cfg.replace(frame_selector=None), spec).groups]  # the even frames differ
        for a, b in zip(selected.groups, planned.groups):
            assert torch.equal(a.prefix_ids, b.prefix_ids) and a.tile_rows == b.tile_rows
        assert torch.equal(selected.tiles, planned.tiles)
        assert planned.select_ms == 0 and not planned.predicted


def test_questions_with_the_same_predicted_times_share_a_prefix(brief, unlabelled, selector):
    spec = _spec()
    q = load_questions(unlabelled, None)[0]
    twin = dataclasses.replace(q, id=q.id + "-twin", choices=q.choices[::-1])
    clip = inputs.prepare_clip(q.video_path, [q, twin], _config(tiny_task.CHECKPOINT, unlabelled, "x.csv"), spec,
                               selector)
    assert clip.predicted[q.id] == clip.predicted[twin.id] and len(clip.groups) == 1


def test_the_file_wins_where_it_has_timestamps_unless_the_selector_wins(brief):
    questions = load_questions(brief, None)
    cfg = _config(tiny_task.CHECKPOINT, brief, "x.csv", support_frames=True)
    assert inputs.selector_questions(questions, cfg) == []
    assert inputs.selector_questions(questions, cfg.replace(selector_wins=True)) == questions
    assert inputs.selector_questions(questions, cfg.replace(support_frames=False)) == questions
    assert inputs.selector_questions(questions, cfg.replace(frame_selector=None, selector_wins=True)) == []
    support = inputs.support_times(questions, cfg, {questions[0].id: [(3.25, 9.0)]})
    assert support[questions[0].id] == (3.25,) and support[questions[1].id] == tuple(questions[1].support_frames)


def test_a_run_records_the_selectors_step_picks_and_which_times_planned_the_frames(brief, unlabelled, tmp_path):
    out = tmp_path / "sel" / "submission.csv"
    summary = run(_config(tiny_task.CHECKPOINT, unlabelled, out), say=lambda m: None)
    assert summary.answered == 6 and not summary.errors
    records = records_of(out.parent / "predictions.jsonl")
    truth = {q.id: q.support_frames for q in load_questions(brief, None)}
    for r in records:
        split = r["time_split_ms"]
        assert list(split) == list(TIME_STEPS) and split["select"] > 0
        assert r["time_ms"] == pytest.approx(sum(split.values()), abs=0.01)
        assert r["support_from"] == "selector" and len(r["selector_times"]) == len(r["selector_scores"]) == 1
        # two of the four frames sit within --support-window of the predicted time (half of them, as with
        # train.json's timestamps), and the tiny selector finds the moment: within 1 s of the true timestamp
        near = [s for s in r["frame_seconds"] if abs(s - r["selector_times"][0]) <= 1.0 + 1e-6]
        assert len(near) >= 2, r
        assert abs(r["selector_times"][0] - truth[r["id"]][0]) <= 1.0, (r, truth[r["id"]])
    run_info = json.loads((out.parent / "run.json").read_text(encoding="utf-8"))
    assert run_info["settings"]["frame_selector"] == str(SELECTOR) and len(run_info["settings"][
        "frame_selector_sha256"]) == 16
    # on the labelled file the file's timestamps win: no scan, no select time, the file's plan
    labelled = tmp_path / "file" / "submission.csv"
    run(_config(tiny_task.CHECKPOINT, brief, labelled, support_frames=True), say=lambda m: None)
    for r in records_of(labelled.parent / "predictions.jsonl"):
        assert r["support_from"] == "file" and "selector_times" not in r and r["time_split_ms"]["select"] == 0
    # without a selector, the records say nothing of one
    plain = tmp_path / "plain" / "submission.csv"
    run(_config(tiny_task.CHECKPOINT, unlabelled, plain, frame_selector=None), say=lambda m: None)
    for r in records_of(plain.parent / "predictions.jsonl"):
        assert "support_from" not in r and r["time_split_ms"]["select"] == 0


def test_the_qwen_family_takes_the_selectors_frames_too(unlabelled, selector):
    """The selector sits before the family's pixels: the tiny Qwen3-VL's groups get the selector's plan."""
    spec = _spec(QWEN)
    cfg = _config(QWEN, unlabelled, "x.csv")
    qs = [q for q in load_questions(unlabelled, None)][:2]
    clip = inputs.prepare_clip(qs[0].video_path, qs, cfg, spec, selector)
    as_file = [dataclasses.replace(q, support_frames=tuple(t for t, _ in clip.predicted[q.id])) for q in qs]
    planned = inputs.prepare_clip(qs[0].video_path, as_file, cfg.replace(frame_selector=None, support_frames=True),
                                     spec)
    assert [g.frames for g in clip.groups] == [g.frames for g in planned.groups]
    assert all(torch.equal(a.vision["pixel_values_videos"], b.vision["pixel_values_videos"])
               for a, b in zip(clip.groups, planned.groups))


def test_a_clip_prepared_again_reuses_the_selectors_times(unlabelled, selector):
    """The out-of-memory ladder prepares a clip again with fewer frames: the predicted times come along, the
    clip is not scanned again."""
    spec = _spec()
    qs = load_questions(unlabelled, None)[:2]
    cfg = _config(tiny_task.CHECKPOINT, unlabelled, "x.csv")
    first = inputs.prepare_clip(qs[0].video_path, qs, cfg, spec, selector)
    again = inputs.prepare_clip(qs[0].video_path, qs[1:], cfg.replace(max_frames=2, min_frames=2), spec,
                                predicted=first.predicted)
    assert again.predicted == {qs[1].id: first.predicted[qs[1].id]} and again.select_ms == 0
    with pytest.raises(ValueError, match="names a frame selector"):  # a selector the run names is never skipped
        inputs.prepare_clip(qs[0].video_path, qs, cfg, spec)


def test_resume_refuses_another_selector_or_none(unlabelled, tmp_path):
    out = tmp_path / "run" / "submission.csv"
    run(_config(tiny_task.CHECKPOINT, unlabelled, out, limit=2), say=lambda m: None)
    retrained = tmp_path / "retrained"
    shutil.copytree(SELECTOR, retrained)
    from safetensors.torch import load_file, save_file

    weights = load_file(retrained / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 0.01
    save_file(weights, retrained / "model.safetensors", metadata={"format": "pt"})
    for changed, why in ((dict(frame_selector=None), "frame_selector"), (dict(frame_selector=str(retrained)),
                                                                          "frame_selector_sha256"),
                         (dict(scan_fps=4.0), "scan_fps")):
        with pytest.raises(OutputError, match=why):
            run(_config(tiny_task.CHECKPOINT, unlabelled, out, **changed), say=lambda m: None)
    summary = run(_config(tiny_task.CHECKPOINT, unlabelled, out), say=lambda m: None)  # the same selector resumes
    assert summary.resumed == 2 and summary.answered == 4


@pytest.mark.parametrize("case", ["missing", "file", "pickle", "other-model", "no-config"])
def test_a_folder_that_is_no_selector_is_one_sentence_exit_2_before_the_model_loads(case, unlabelled, tmp_path,
                                                                                  monkeypatch):
    folder = tmp_path / "selector"
    if case == "file":
        folder.write_bytes(b"")
    elif case == "pickle":
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "siglip"}), encoding="utf-8")
        (folder / "pytorch_model.bin").write_bytes(b"")
    elif case == "other-model":
        shutil.copytree(tiny_task.CHECKPOINT, folder)
    elif case == "no-config":
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"")
    from roadbuddy.families import registry

    monkeypatch.setattr(registry, "load_model", lambda cfg: pytest.fail("the model loaded before the selector "
                                                                          "was checked"))
    code, err = run_main("--model", tiny_task.CHECKPOINT, "--test-json", unlabelled, "--frame-selector", folder,
                         "--output", tmp_path / "o" / "s.csv")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: frame selector {folder}"), err
    assert {"missing": "no such folder", "file": "is a file", "pickle": "pickle", "other-model": "internvl",
            "no-config": "config.json"}[case] in lines[0], err
    with pytest.raises(SelectorError):
        check_selector(folder)


def test_settings_out_of_range_are_one_sentence():
    for bad in (dict(scan_fps=0.0), dict(selector_times=0), dict(support_window=-1.0)):
        with pytest.raises(ConfigError):
            RunConfig(**bad)
    base = RunConfig()
    assert "scan_fps" not in RunConfig(scan_fps=4.0).answer_settings()  # only with a selector
    assert RunConfig(frame_selector=str(SELECTOR), scan_fps=4.0).answer_settings()["scan_fps"] == 4.0
    assert base.fingerprint() == RunConfig(selector_wins=True).fingerprint()


def test_the_vram_estimate_counts_the_selector(monkeypatch):
    """Its weights in bf16 and a batch of scanned frames through its vision tower, on top of the model's."""
    from transformers import AutoConfig

    said = []
    cfg = RunConfig(model=str(tiny_task.CHECKPOINT))
    plain = memory.print_estimate(cfg, said.append, free_memory=lambda: None)
    with_selector = memory.print_estimate(cfg.replace(frame_selector=str(SELECTOR)), said.append,
                                          free_memory=lambda: None)
    config = AutoConfig.from_pretrained(SELECTOR)
    parameters = sum(p.numel() for p in load_selector(SELECTOR).model.parameters())
    expected = memory.selector_bytes(config)
    assert with_selector.total - plain.total == expected == with_selector.selector
    assert expected > parameters * 2  # the weights in bf16 and the activations
    assert "frame selector" in said[-1] and "frame selector" not in said[0]
    # its activations grow with the frames scored at once
    assert memory.selector_bytes(config, batch=128) > memory.selector_bytes(config, batch=64)


def test_the_sample_budget_counts_the_selectors_step():
    """--sample-timeout: a question's share of the selector's step leaves less room for frames."""
    from roadbuddy.predict.inputs import PreparedClip

    clip = PreparedClip(video=Path("x.mp4"), questions=[], frame_order=list(range(8)))

    def record(select):
        return {"time_split_ms": {"select": select, "decode_tiles": 100.0, "vision": 100.0, "prefill": 200.0,
                                  "question": 50.0}}

    without, with_selector = SampleBudget(1.0), SampleBudget(1.0)
    without.observe(clip, [record(0.0), record(0.0)])
    with_selector.observe(clip, [record(300.0), record(300.0)])
    assert with_selector.cap(2) < without.cap(2)
    assert with_selector.cap(2) == int((1000 * SampleBudget.SAFETY - 50 - 300) * 2 / (800 / 8))
    # with a selector every question gets support times of its own (the file's or the selector's): a frame set
    # each, the clip's cap shared among them
    from roadbuddy.data.questions import Question

    asked = [Question(id=f"q{i}", question="?", choices=("a", "b"), raw_choices=("a", "b"), video_path=None,
                      video_rel="v") for i in range(2)]
    _, shared = with_selector.config_for(RunConfig(max_frames=32, frame_selector=str(SELECTOR)), asked)
    _, alone = with_selector.config_for(RunConfig(max_frames=32), asked)
    assert alone is None or alone > shared
    assert shared == with_selector.cap(2) // 2


def test_a_peaks_time_moves_to_the_middle_of_the_frames_that_score_as_well():
    times = np.arange(10) * 0.5
    flat_run = np.array([0, 0, 0, 9, 9, 9, 0, 0, 0, 0], dtype=float)  # evidence on screen 1.5-2.5 s
    assert peak_centre(flat_run, times, 1.5, 1.0) == pytest.approx(2.0, abs=1e-3)
    lone = np.array([0, 0, 0, 0, 20, 0, 0, 0, 0, 0], dtype=float)  # one frame far above its neighbours
    assert peak_centre(lone, times, 2.0, 1.0) == pytest.approx(2.0, abs=1e-6)
    far = np.array([9, 0, 0, 9, 0, 0, 0, 0, 0, 9], dtype=float)  # equal scores beyond the window do not count
    assert peak_centre(far, times, 1.5, 0.5) == pytest.approx(1.5, abs=1e-3)


def test_the_selector_out_of_memory_tries_fewer_frames_then_spreads_them_evenly(unlabelled, selector, monkeypatch):
    """CUDA out of memory in the selector (on the prefetch thread, beside the model): again 8 frames at a time;
    when that fails too, the clip's questions get evenly spread frames and their records say why."""
    from roadbuddy.selector import scan

    real, batches = scan.predict_support, []

    def tight(*args, batch, **kwargs):
        batches.append(batch)
        if batch > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, batch=batch, **kwargs)

    monkeypatch.setattr(scan, "predict_support", tight)
    spec = _spec()
    qs = load_questions(unlabelled, None)[:2]
    cfg = _config(tiny_task.CHECKPOINT, unlabelled, "x.csv")
    limit = 8
    fewer = inputs.prepare_clip(qs[0].video_path, qs, cfg, spec, selector)
    monkeypatch.setattr(scan, "predict_support", real)
    roomy = inputs.prepare_clip(qs[0].video_path, qs, cfg, spec, selector)
    assert batches == [64, 8] and fewer.predicted == roomy.predicted and fewer.selector_error is None
    monkeypatch.setattr(scan, "predict_support", tight)
    limit, batches[:] = 0, []
    starved = inputs.prepare_clip(qs[0].video_path, qs, cfg, spec, selector)
    even = inputs.prepare_clip(qs[0].video_path, qs, cfg.replace(frame_selector=None), spec)
    assert batches == [64, 8] and starved.predicted == {q.id: [] for q in qs}
    assert [g.frames for g in starved.groups] == [g.frames for g in even.groups]
    assert "out of memory" in starved.selector_error
    from roadbuddy.predict.answering import selector_record

    assert selector_record(qs[0], starved) == {"support_from": "selector", "selector_times": [],
                                               "selector_scores": [], "selector_error": starved.selector_error}
