"""The frame selector: loading, scores, predicted times, its training data, its trainer and command, the brief task.

Everything runs on tiny random SigLIP checkpoints built from a config (roadbuddy.selector.tiny) and on a few
encoded brief-evidence clips (roadbuddy.testing.brief_task). What the trained tiny selector achieves is
measured in evals/test_tiny_selector.py.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from roadbuddy.finetune.data import split_by_clip
from roadbuddy.finetune.selector import cli as selector_cli
from roadbuddy.finetune.selector import data as selector_data
from roadbuddy.finetune.selector import hits as selector_hits
from roadbuddy.finetune.selector.config import SELECTOR, SelectorConfig
from roadbuddy.selector.model import (
    SelectorError,
    frame_size,
    load_selector,
    pixel_inputs,
    save_selector,
    score,
    text_inputs,
)
from roadbuddy.selector.scan import scan_clip
from roadbuddy.selector.times import even_times, frame_times, hit, scan_indices, scan_times, support_times
from roadbuddy.selector.tiny import write_tiny_selector
from roadbuddy.testing import brief_task
from roadbuddy.video.reader import open_video

QUESTIONS = ["Video đang có đèn giao thông màu gì?", "Trong video có BIỂN BÁO hình tròn, đúng hay sai?"]


@pytest.fixture(scope="module")
def tiny_selector(tmp_path_factory) -> Path:
    return write_tiny_selector(tmp_path_factory.mktemp("selector") / "siglip")


@pytest.fixture(scope="module")
def naflex_selector(tmp_path_factory) -> Path:
    return write_tiny_selector(tmp_path_factory.mktemp("selector") / "siglip2", model_type="siglip2")


@pytest.fixture(scope="module")
def brief_split(tmp_path_factory) -> Path:
    return brief_task.write_split(tmp_path_factory.mktemp("brief"), clips=4, seed=brief_task.TRAIN_SEED)


# --- loading ----------------------------------------------------------------------------------

def _one_sentence(text: str) -> bool:
    return "\n" not in text.strip() and text.strip().count(". ") == 0


def test_a_checkpoint_of_another_model_type_is_refused_in_one_sentence(tmp_path):
    folder = tmp_path / "vlm"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "internvl"}))
    with pytest.raises(SelectorError) as err:
        load_selector(folder)
    assert str(err.value) == (f"frame selector {folder} is a internvl checkpoint; the frame selector takes SigLIP "
                              "or SigLIP 2 checkpoints (model_type siglip or siglip2)")


def test_pickle_weights_a_file_and_a_missing_folder_are_refused_in_one_sentence(tiny_selector, tmp_path):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((tiny_selector / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"not really")
    cases = {pickled: "holds only pickle (.bin) weights", tiny_selector / "config.json": "is a file",
             tmp_path / "nowhere" / "selector": "no such folder"}
    for name, said in cases.items():
        with pytest.raises(SelectorError) as err:
            load_selector(name)
        assert said in str(err.value) and str(name) in str(err.value) and _one_sentence(str(err.value))


def test_a_hub_id_not_in_the_cache_is_one_sentence_offline(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(SelectorError) as err:
        load_selector("google/siglip2-base-patch16-256")
    said = str(err.value)
    assert said.startswith("frame selector google/siglip2-base-patch16-256 is not in the Hugging Face cache")
    assert "hf download google/siglip2-base-patch16-256" in said and "--model" not in said and "\n" not in said


def test_float16_weights_load_as_float32_on_the_cpu(tiny_selector, tmp_path):
    selector = load_selector(tiny_selector)
    save_selector(selector, tmp_path / "half", dtype=torch.float16)
    assert {t.dtype for t in load_file(str(tmp_path / "half" / "model.safetensors")).values()} == {torch.float16}
    half = load_selector(tmp_path / "half")
    assert {p.dtype for p in half.model.parameters()} == {torch.float32}
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert torch.allclose(score(half, QUESTIONS, frames), score(selector, QUESTIONS, frames), atol=0.05)


# --- scores -----------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["tiny_selector", "naflex_selector"])
def test_score_is_the_models_own_logits_question_by_frame(which, request):
    selector = load_selector(request.getfixturevalue(which))
    w, h = frame_size(selector, 128, 72)
    frames = np.random.default_rng(1).integers(0, 256, (5, h, w, 3), dtype=np.uint8)
    logits = score(selector, QUESTIONS, frames)
    assert logits.shape == (2, 5) and logits.dtype == torch.float32
    with torch.no_grad():
        reference = selector.model(**text_inputs(selector, QUESTIONS), **pixel_inputs(selector, frames)).logits_per_text
    assert torch.allclose(logits, reference, atol=1e-5)
    assert torch.allclose(score(selector, QUESTIONS, frames, batch=2), logits, atol=1e-5)  # frames in chunks
    assert score(selector, QUESTIONS, frames[:0]).shape == (2, 0)


def test_the_decode_size_leaves_the_processors_resize_nothing_to_do(tiny_selector, naflex_selector):
    fixed, naflex = load_selector(tiny_selector), load_selector(naflex_selector)
    assert frame_size(fixed, 2560, 1440) == (32, 32)  # SigLIP squashes a frame to its square
    w, h = frame_size(naflex, 2560, 1440)  # NaFlex keeps the aspect within its patch budget
    assert w % 8 == 0 and h % 8 == 0 and (w // 8) * (h // 8) <= 16 and w > h
    frames = np.random.default_rng(2).integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    pixels = pixel_inputs(naflex, frames)
    assert pixels["spatial_shapes"].tolist() == [[h // 8, w // 8]] * 2
    patch = pixels["pixel_values"][0, 0].reshape(8, 8, 3)  # the first patch, normalised but not resampled
    assert torch.allclose(patch, torch.tensor(frames[0, :8, :8], dtype=torch.float32) / 127.5 - 1, atol=1e-5)


def test_vietnamese_text_is_lowercased_and_every_byte_encodes(tiny_selector):
    selector = load_selector(tiny_selector)
    ids = text_inputs(selector, ["BIỂN BÁO ℃", "biển báo ℃"])["input_ids"]
    assert torch.equal(ids[0], ids[1]) and ids.shape == (2, selector.text_length)
    assert selector.tokenizer.unk_token_id not in ids[0].tolist()


# --- times ------------------------------------------------------------------------------------

def test_scan_times_and_the_frames_on_screen_then():
    assert scan_times(4.0, 2.0) == [0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75]
    assert scan_indices(40, 10.0, 2.0) == [2, 7, 12, 17, 22, 27, 32, 37]
    assert scan_indices(3, 10.0, 2.0) == [1]  # shorter than a scan step: one frame
    assert scan_indices(0, 10.0, 2.0) == [] and scan_times(0.0, 2.0) == [0.0]
    assert frame_times([2, 7], 10.0).tolist() == [0.2, 0.7]
    assert even_times(160, 10.0, 4) == [1.9, 5.9, 9.9, 13.8]
    with pytest.raises(ValueError):
        scan_times(4.0, 0.0)


def test_support_times_are_the_best_peaks_a_window_apart():
    times = np.arange(10) * 0.5  # 0, 0.5, ..., 4.5
    row = np.array([0, 1, 9, 8, 0, 0, 7, 0, 5, 6], dtype=np.float32)
    assert support_times([row], times, count=3, window=1.0) == [[1.0, 3.0, 4.5]]  # 1.5 and 4.0 are too near
    assert support_times([row], times, count=1, window=1.0) == [[1.0]]
    assert support_times([row], times, count=3, window=0.0) == [[1.0, 1.5, 3.0]]
    assert support_times([row], times, count=3, window=1.0, floor=6.5) == [[1.0, 3.0]]
    assert support_times([row * 0 - 20], times, count=2, window=1.0, floor=0.0) == [[0.0]]  # the best always
    two = torch.tensor(np.stack([row, row[::-1].copy()]))
    assert [t[0] for t in support_times(two, times, count=2, window=1.0)] == [1.0, 3.5]
    with pytest.raises(ValueError):
        support_times([row[:3]], times, count=1, window=1.0)


def test_a_hit_is_a_chosen_time_within_the_tolerance_of_a_support_timestamp():
    assert hit([2.0, 6.0], [5.0], 1.0) and hit([4.0], [5.0], 1.0) and not hit([3.9], [5.0], 1.0)
    assert hit([0.0], [9.0, 0.5], 1.0) and not hit([], [1.0], 1.0)


def test_hit_rates_count_the_selectors_picks_and_the_even_frames(monkeypatch):
    times = np.arange(32) * 0.5 + 0.2  # a 16 s clip scanned twice a second
    questions = tuple(selector_data.Question(id=f"q{i}", question="q", choices=("a", "b"), raw_choices=("a", "b"),
                                             video_path=Path("c.mp4"), video_rel="c.mp4", support_frames=(t,))
                      for i, t in enumerate((3.0, 14.0)))
    clip = selector_data.Clip("c.mp4", selector_data.ScannedClip(times, np.zeros((32, 2, 2, 3), np.uint8), 10.0, 160),
                              questions)
    peaks = torch.full((2, 32), -5.0)
    peaks[0, 25], peaks[0, 6], peaks[1, 28] = 4.0, 3.0, 1.0  # q0: best 12.7 s (wrong), next 3.2 s; q1: 14.2 s
    monkeypatch.setattr(selector_hits, "score", lambda *_a, **_k: peaks)
    rates = selector_hits.hit_rates(None, [clip], k=2)
    assert (rates["n"], rates["selector"], rates["selector_top1"]) == (2, 1.0, 0.5)
    assert rates["even"] == 0.5  # 2 even frames, at 3.9 s (hits 3.0) and 11.9 s (misses 14.0)
    assert rates["per_question"]["q0"]["picks"] == [12.7, 3.2]


# --- training data ----------------------------------------------------------------------------

def test_labels_by_window_positive_near_negative_far_nothing_between():
    times = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0])
    assert selector_data.frame_labels(times, [1.0], 0.5, 1.0).tolist() == [0, 1, 1, 1, 0, -1]
    assert selector_data.frame_labels(times, [0.0, 3.0], 0.0, 0.5).tolist() == [1, 0, -1, -1, -1, 1]
    assert selector_data.frame_labels(times, [], 0.5, 1.0).tolist() == [-1] * 6


def test_questions_without_support_teach_nothing_and_a_file_without_any_is_refused(brief_split, tmp_path):
    questions, without = selector_data.questions_with_support(brief_split, None)
    assert len(questions) == 8 and without == 0
    items = json.loads(brief_split.read_text(encoding="utf-8"))["data"]
    for item in items[:3]:
        del item["support_frames"]
    partial = brief_split.parent / "partial.json"
    partial.write_text(json.dumps({"data": items}, ensure_ascii=False), encoding="utf-8")
    assert [len(x) if isinstance(x, list) else x for x in selector_data.questions_with_support(partial, None)] == [5, 3]
    for item in items:
        item.pop("support_frames", None)
    partial.write_text(json.dumps({"data": items}, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(selector_data.SelectorDataError) as err:
        selector_data.questions_with_support(partial, None)
    assert str(err.value).startswith("partial.json: no item has field 'support_frames'") and _one_sentence(str(err.value))


def test_each_clip_is_decoded_once_through_the_reader_and_read_back_from_the_cache(brief_split, tiny_selector,
                                                                                    tmp_path, monkeypatch):
    selector = load_selector(tiny_selector)
    questions, _ = selector_data.questions_with_support(brief_split, None)
    opened = []

    def counting_open(path, **kwargs):
        opened.append(Path(path).name)
        return open_video(path, **kwargs)

    monkeypatch.setattr(selector_data, "open_video", counting_open)
    def size_of(w, h):
        return frame_size(selector, w, h)

    first, bad = selector_data.scan_clips(questions, tmp_path / "cache", 2.0, size_of)
    again, _ = selector_data.scan_clips(questions, tmp_path / "cache", 2.0, size_of)
    assert not bad and len(first) == 4 and len(opened) == 4  # once each, not again on the second pass
    with open_video(questions[0].video_path) as reader:  # what a prediction-time scan of the clip reads
        direct = scan_clip(reader, 2.0, (32, 32))
    assert np.array_equal(np.asarray(again[0].scan.frames), direct.frames)
    assert again[0].scan.times.tolist() == direct.times.tolist() and len(direct.times) == 32
    assert direct.frames.shape == (32, 32, 32, 3) and direct.num_frames == brief_task.NUM_FRAMES


def test_the_committed_tiny_selector_predicts_each_questions_moment_from_the_clip(brief_split):
    """What prediction will call per clip: the open reader, the questions' text -> support times."""
    from roadbuddy.selector.scan import predict_support

    selector = load_selector(brief_task.SELECTOR)
    questions, _ = selector_data.questions_with_support(brief_split, None)
    for video, qs in selector_data.group_by_video(questions):
        with open_video(video) as reader:
            picks = predict_support(selector, reader, [q.question for q in qs], scan_fps=2.0, count=2)
            scan = scan_clip(reader, 2.0, frame_size(selector, reader.info.width, reader.info.height))
        scores = score(selector, [q.question for q in qs], scan.frames)
        for row, (q, predicted) in enumerate(zip(qs, picks)):
            (first, best), (second, runner_up) = predicted
            assert abs(second - first) > 1.0 and best >= runner_up
            assert best == pytest.approx(float(scores[row].max()), rel=1e-5, abs=1e-5)  # the scan's best frame
            assert hit([first], q.support_frames, 1.0), (q.id, predicted, q.support_frames)


def test_a_step_labels_its_questions_against_its_clips_frames(brief_split, tiny_selector, tmp_path):
    selector = load_selector(tiny_selector)
    questions, _ = selector_data.questions_with_support(brief_split, None)
    clips, _ = selector_data.scan_clips(questions, tmp_path / "cache", 2.0, lambda w, h: frame_size(selector, w, h))
    kwargs = {"seed": 0, "epoch": 0, "position": 0, "frames_per_clip": 8, "positive_window": 0.5, "negative_gap": 1.0}
    batch = selector_data.step_batch(clips[:2], **kwargs)
    assert batch.labels.shape == (4, 16) and len(batch.frames) == 16 and batch.clips == (clips[0].rel, clips[1].rel)
    assert (batch.labels[:2, 8:] == -1).all() and (batch.labels[2:, :8] == -1).all()  # another clip's frames
    assert ((batch.labels[:2, :8] == 1).sum(dim=1) >= 1).all()  # a clip's positives are always among its frames
    again = selector_data.step_batch(clips[:2], **kwargs)
    assert torch.equal(again.labels, batch.labels) and all(np.array_equal(a, b) for a, b in zip(again.frames,
                                                                                                 batch.frames))
    other = selector_data.step_batch(clips[:2], **{**kwargs, "position": 2})
    assert not all(np.array_equal(a, b) for a, b in zip(other.frames, batch.frames))  # drawn anew per position
    assert len(selector_data.step_batch(clips[:1], **{**kwargs, "frames_per_clip": 0}).frames) == 32


def test_the_split_holds_out_the_clips_fine_tuning_holds_out(brief_split):
    questions, _ = selector_data.questions_with_support(brief_split, None)
    split = split_by_clip(questions, 0.25, 0)
    assert {q.video_rel for q in split.train}.isdisjoint({q.video_rel for q in split.val})
    assert len({q.video_rel for q in split.val}) == 1


def test_the_loss_is_siglips_sigmoid_loss_over_the_labeled_pairs():
    from roadbuddy.finetune.selector.train import sigmoid_loss

    logits = torch.tensor([[5.0, -5.0, 9.0], [-2.0, 3.0, 0.0]])
    labels = torch.tensor([[1.0, -1.0, 0.0], [1.0, -1.0, -1.0]])  # 0: the pair teaches nothing
    expected = -(2 * torch.nn.functional.logsigmoid(torch.tensor(5.0)) + torch.nn.functional.logsigmoid(
        torch.tensor(-2.0)) + torch.nn.functional.logsigmoid(torch.tensor(-3.0)) + torch.log(torch.tensor(0.5))) / 2
    assert torch.isclose(sigmoid_loss(logits, labels), expected)
    assert sigmoid_loss(3 * labels, labels) < 0.2 and sigmoid_loss(-3 * labels, labels) > 5  # right, then wrong


# --- the trainer and its command --------------------------------------------------------------

def _args(split: Path, model: Path, out: Path, *extra) -> list[str]:
    return [str(a) for a in ["--train-json", split, "--model", model, "--output", out, "--device", "cpu",
                             "--val-fraction", "0.25", "--clips-per-step", "1", "--frames-per-clip", "16",
                             "--lr", "2e-3", "--max-steps", "30", "--checkpoint-every", "2", "--val-every", "15",
                             "--no-progress", *extra]]


def _command(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "roadbuddy.finetune.selector.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))


def _weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def _log(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "training_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(brief_split, tiny_selector, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "selector"
    proc = _command(*_args(brief_split, tiny_selector, out))
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 0, err
    (out.parent / "stderr.txt").write_text(err)
    return out


def test_a_short_training_lowers_the_loss_and_writes_a_selector_that_loads(uninterrupted, brief_split):
    losses = [e["loss"] for e in _log(uninterrupted) if "loss" in e]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json", "selector_card.json",
            "training_log.jsonl", "training.png", "checkpoint", "scan-cache"} <= {p.name for p in uninterrupted.iterdir()}
    card = json.loads((uninterrupted / "selector_card.json").read_text())
    assert [v["step"] for v in card["validation_curve"]] == [15, 30] and card["validation_curve"][-1]["n"] == 2
    assert {"selector", "selector_top1", "even", "k"} <= set(card["validation_curve"][-1])
    assert card["split"] == split_by_clip(selector_data.questions_with_support(brief_split, None)[0], 0.25,
                                          0).describe()
    assert card["settings"]["selector"]["lr"] == 2e-3 and card["settings"]["train_json_sha256"]
    last = (uninterrupted.parent / "stderr.txt").read_text().splitlines()[-1]
    assert last.startswith(f"done: 30 steps; {uninterrupted} holds the selector; validation hit@4 "), last
    selector = load_selector(uninterrupted)
    assert score(selector, QUESTIONS, np.zeros((3, 32, 32, 3), np.uint8)).shape == (2, 3)
    # what it learned: on its training clips, frames near a question's support timestamp score above the rest
    questions = [q for q in selector_data.questions_with_support(brief_split, None)[0]
                 if q.video_rel in card["split"]["train"]["clips"]]
    clips, _ = selector_data.scan_clips(questions, uninterrupted / "scan-cache", 2.0,
                                        lambda w, h: frame_size(selector, w, h))
    near, far = [], []
    for clip in clips:
        logits = score(selector, [q.question for q in clip.questions], clip.scan.frames)
        for q, row in zip(clip.questions, logits):
            labels = torch.from_numpy(selector_data.frame_labels(clip.scan.times, q.support_frames, 0.5, 1.0))
            near.append(row[labels == 1].mean())
            far.append(row[labels == -1].mean())
    assert sum(n > f for n, f in zip(near, far)) == len(near) == 6


def test_two_runs_train_the_same_weights_bit_for_bit(uninterrupted, brief_split, tiny_selector, tmp_path):
    proc = _command(*_args(brief_split, tiny_selector, tmp_path / "again", "--max-steps", "30"))
    assert proc.wait(timeout=300) == 0
    a, b = _weights(uninterrupted), _weights(tmp_path / "again")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _signalled_midway(args: list[str], out: Path, sig: int) -> tuple[subprocess.Popen, str]:
    proc = _command(*args)
    state = out / "checkpoint" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        try:
            step = json.loads(state.read_text())["progress"]["step"]
        except (OSError, ValueError):  # not written yet, or being swapped in
            step = 0
        if step >= 2:
            proc.send_signal(sig)
            break
        time.sleep(0.002)
    return proc, proc.communicate(timeout=120)[1]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_a_killed_run_resumes_to_the_uninterrupted_weights(sig, uninterrupted, brief_split, tiny_selector, tmp_path):
    out = tmp_path / "killed"
    args = _args(brief_split, tiny_selector, out)
    proc, err = _signalled_midway(args, out, sig)
    step = json.loads((out / "checkpoint" / "state.json").read_text())["progress"]["step"]
    assert 2 <= step < 30, "the run was not caught midway"
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and err.splitlines()[-1].endswith(
            f": rerun the same command to resume from the checkpoint of step {step}"), err
    resumed = _command(*args)
    err = resumed.communicate(timeout=300)[1]
    assert resumed.returncode == 0 and f"resuming at step {step} of 30" in err, err
    a, b = _weights(uninterrupted), _weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["step"] for e in _log(out) if "loss" in e] == list(range(1, 31))  # no step twice in the log


def _main(capsys, *args) -> tuple[int, str]:
    code = selector_cli.main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_resuming_with_other_settings_is_refused_naming_them(uninterrupted, brief_split, tiny_selector, tmp_path,
                                                             capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    before = _weights(out)
    code, err = _main(capsys, *_args(brief_split, tiny_selector, out, "--lr", "1e-3", "--seed", "3"))
    last = err.splitlines()[-1]  # (transformers' own lines about loading the checkpoint come first)
    assert code == 2 and last.startswith("error: ") and "lr: 0.002 -> 0.001" in last and "seed: 0 -> 3" in last, err
    assert all(torch.equal(before[k], v) for k, v in _weights(out).items())


def test_bad_input_exits_2_in_one_sentence_naming_the_file_item_or_field(brief_split, tiny_selector, tmp_path,
                                                                          capsys):
    vlm = tmp_path / "vlm"
    vlm.mkdir()
    (vlm / "config.json").write_text(json.dumps({"model_type": "qwen3_vl"}))
    broken = tmp_path / "broken" / "train"
    broken.mkdir(parents=True)
    items = json.loads(brief_split.read_text(encoding="utf-8"))["data"][:2]
    (broken / "videos").mkdir()
    (broken / "videos" / "brief_0000.mp4").write_text("not a video")
    (broken / "train.json").write_text(json.dumps({"data": items}, ensure_ascii=False), encoding="utf-8")
    cases = [
        ([tmp_path / "missing.json"], "missing.json"),
        ([brief_split, "--model", vlm], "is a qwen3_vl checkpoint"),
        ([brief_split, "--scan-fps", "0"], "--scan-fps must be > 0"),
        ([brief_split, "--positive-window", "2", "--negative-gap", "1"], "--negative-gap (1.0) must be >="),
        ([broken / "train.json", "--val-fraction", "0"],
         ("train.json: field 'video_path': none of the 1 training clips can be read (first: "
          "train/videos/brief_0000.mp4: not a readable video")),
        ([brief_split, "--data-dir", tmp_path],
         ("train.json: field 'video_path': none of the 3 training clips can be read (first: "
          "train/videos/brief_0000.mp4: no such file); check --data-dir")),
    ]
    for args, said in cases:
        split, *extra = args
        code, err = _main(capsys, *_args(split, tiny_selector, tmp_path / "o", *extra))
        last = err.splitlines()[-1]  # (transformers' own lines about loading the checkpoint may come first)
        assert code == 2 and last.startswith("error: ") and said in last and "Traceback" not in err, (args, err)


def test_help_lists_every_declared_flag_and_the_command_takes_no_other():
    from roadbuddy import flags

    parser = selector_cli.build_parser()
    options = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    declared = {n for _, spec in flags.declared(SelectorConfig, SELECTOR) for n in spec.names}
    assert options - {"--help", "--verbose"} == declared
    assert not {n for _, spec in flags.declared(SelectorConfig) for n in spec.names} - declared
    assert all(a.help and len(a.help) > 8 for a in parser._actions)
    res = subprocess.run([sys.executable, "-m", "roadbuddy.finetune.selector.cli", "--help"], check=False, capture_output=True,
                         text=True)
    assert res.returncode == 0 and all(o in res.stdout for o in declared)


# --- the brief-evidence task -------------------------------------------------------------------

def test_brief_clips_show_each_object_only_around_its_support_timestamp():
    rng = random.Random(5)
    for seed in range(20):
        clip = brief_task.brief_clip(rng, seed)
        assert abs(clip.support("light") - clip.support("sign")) >= brief_task.APART_SECONDS
        for obj, name, start in (("light", "light", clip.light_start), ("sign", clip.sign, clip.sign_start)):
            shown = [i for i in range(brief_task.NUM_FRAMES) if name in clip.scene.visible(i)]
            assert shown == list(range(start, start + brief_task.EVIDENCE_FRAMES))
            first, last = clip.evidence(obj)
            assert (first, last) == (shown[0] / brief_task.FPS, shown[-1] / brief_task.FPS)
            assert first <= clip.support(obj) <= last
        light, sign = clip.scene.frame(clip.light_start), clip.scene.frame(clip.sign_start)
        plain = brief_task.tiny_task.Scene(clip.scene.seed, clip.scene.num_frames, clip.scene.colour, ())
        assert not np.array_equal(light, plain.frame(clip.light_start))  # drawn, not only listed
        assert not np.array_equal(sign, plain.frame(clip.sign_start))


def test_brief_questions_ask_about_each_object_once_with_support_at_it(brief_split):
    items = json.loads(brief_split.read_text(encoding="utf-8"))["data"]
    for a, b in zip(items[::2], items[1::2]):
        assert a["video_path"] == b["video_path"] and {a["_object"], b["_object"]} == {"light", "sign"}
        assert (len(a["choices"]), len(b["choices"])) == (4, 2)
        for item in (a, b):
            first, last = item["_evidence"]
            assert first <= item["support_frames"][0] <= last
            word = "đèn giao thông" if item["_object"] == "light" else "biển báo"
            assert word in item["question"].lower()


def test_evenly_spread_frames_hit_about_half_the_brief_questions():
    rng, hits, n = random.Random(7), 0, 0
    even = even_times(brief_task.NUM_FRAMES, brief_task.FPS, 4)
    for seed in range(500):
        clip = brief_task.brief_clip(rng, seed)
        for obj in ("light", "sign"):
            hits, n = hits + hit(even, [clip.support(obj)]), n + 1
    assert 0.4 <= hits / n <= 0.65, hits / n
