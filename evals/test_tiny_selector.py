"""The committed tiny frame selector finds brief evidence that evenly spread frames miss.

roadbuddy/testing/tiny_selector/ is what `python -m evals.train_tiny_selector --seed 0` made (the command, the
figures and the machine in its TRAINING.md): a tiny SigLIP trained by roadbuddy-finetune-selector on
brief-evidence clips (roadbuddy.testing.brief_task: 16 s, the light and a sign each on screen for 1 s).
Here it scores the held-out brief clips (fresh scene seeds, encoded H.264, scanned through the reader at
2 frames a second) and must put one of its k = tiny_task.FRAMES_SHOWN picks within 1 s of 90% of the
questions' support timestamps, and its best pick alone too (so it finds the moment the question asks about,
not just something salient); the k evenly spread frames the plan shows today must hit at least 25 points
less. Fed the selector's best pick as a support timestamp, the frame planner's support windows
(roadbuddy.video.frames.select_frames, RunConfig's window and share: what predict does with train.json's
timestamps) must show the evidence itself in 90% of the questions. An untrained selector must fail the bar
(the eval can fail). Regenerating the selector from its
command (about a minute) is a `slow` test.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from evals.train_tiny_selector import SCAN_FPS, K
from roadbuddy.config import RunConfig
from roadbuddy.finetune.selector.data import questions_with_support, scan_clips
from roadbuddy.finetune.selector.hits import hit_rates
from roadbuddy.selector.model import frame_size, load_selector
from roadbuddy.selector.times import even_times
from roadbuddy.selector.tiny import write_tiny_selector
from roadbuddy.testing import brief_task
from roadbuddy.video.frames import select_frames

pytestmark = pytest.mark.eval

MIN_HIT = 0.90
MIN_MARGIN = 0.25  # the selector's hit@k above the even frames'


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny towers' ops are too small to share between threads: on two cores with one busy, two threads made
    this eval about 80 times slower (20 s against 0.3 s a test)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def heldout(brief_heldout, tmp_path_factory):
    """The held-out brief clips scanned at the committed selector's frame size, and each question's evidence
    (the first and last second its object is on screen)."""
    split = brief_heldout
    questions, _ = questions_with_support(split, None)
    selector = load_selector(brief_task.SELECTOR)
    clips, bad = scan_clips(questions, tmp_path_factory.mktemp("brief-scan"), SCAN_FPS,
                            lambda w, h: frame_size(selector, w, h))
    assert not bad, bad
    evidence = {item["id"]: item["_evidence"] for item in json.loads(split.read_text(encoding="utf-8"))["data"]}
    return clips, evidence


def _on_screen(times, first: float, last: float) -> bool:
    return any(first - 1e-9 <= t <= last + 1e-9 for t in times)


@pytest.mark.tiny_eval
def test_the_committed_selector_finds_the_brief_evidence_even_frames_miss(heldout):
    clips, evidence = heldout
    rates = hit_rates(load_selector(brief_task.SELECTOR), clips, k=K)
    even = {q.id: even_times(c.scan.num_frames, c.scan.fps, K) for c in clips for q in c.questions}
    # the frame planner's support windows (what predict does with train.json's timestamps), fed the best pick
    cfg = RunConfig()
    planned = {q.id: [i / c.scan.fps for i in select_frames(c.scan.num_frames, c.scan.fps, K, rates["per_question"][
        q.id]["picks"][:1], support_window=cfg.support_window, support_share=cfg.support_share)]
        for c in clips for q in c.questions}
    n = rates["n"]
    shown = {name: sum(_on_screen(frames[i], *evidence[i]) for i in frames) / n
             for name, frames in (("picks", {i: r["picks"] for i, r in rates["per_question"].items()}),
                                  ("plan", planned), ("even", even))}
    print(f"\ntiny selector on {n} held-out brief questions: hit@{K} {rates['selector']:.1%} (best pick alone "
          f"{rates['selector_top1']:.1%}); {K} evenly spread frames {rates['even']:.1%}. A frame on which the evidence "
          f"shows: the selector's picks {shown['picks']:.1%}, the support-frame plan of {K} frames fed its best pick "
          f"{shown['plan']:.1%}, {K} evenly spread frames {shown['even']:.1%}")
    assert n == 2 * brief_task.HELDOUT_CLIPS
    assert rates["selector"] >= MIN_HIT and rates["selector_top1"] >= MIN_HIT, rates
    assert rates["even"] <= rates["selector"] - MIN_MARGIN, rates
    assert shown["plan"] >= MIN_HIT and shown["even"] <= shown["plan"] - MIN_MARGIN, shown


@pytest.mark.tiny_eval
def test_an_untrained_selector_fails_that_bar(heldout, tmp_path):
    """The same tiny architecture with its random initial weights: the bar is not met by chance."""
    selector = load_selector(write_tiny_selector(tmp_path / "random", seed=0))
    assert frame_size(selector, 128, 72) == frame_size(load_selector(brief_task.SELECTOR), 128, 72)
    rates = hit_rates(selector, heldout[0], k=K)
    print(f"\nuntrained: hit@{K} {rates['selector']:.1%}, best pick alone {rates['selector_top1']:.1%}")
    assert rates["selector_top1"] < MIN_HIT


@pytest.mark.slow
def test_the_committed_selector_regenerates_from_its_command(heldout, tmp_path):
    """`python -m evals.train_tiny_selector --seed 0` from nothing reaches the bar at the committed validation
    curve's steps; it says whether its weights are the committed ones (bit for bit on the machine that made
    them; float32 sums may round otherwise on another CPU, so that is not asserted)."""
    out = tmp_path / "selector"
    res = subprocess.run([sys.executable, "-m", "evals.train_tiny_selector", "--out", str(out), "--seed", "0"],
                         check=False, capture_output=True, text=True, timeout=1800,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr
    print(res.stdout.strip().splitlines()[-1])
    rates = hit_rates(load_selector(out), heldout[0], k=K)
    assert rates["selector"] >= MIN_HIT and rates["selector_top1"] >= MIN_HIT, rates
    assert rates["even"] <= rates["selector"] - MIN_MARGIN, rates
    ours = json.loads((out / "selector_card.json").read_text(encoding="utf-8"))["validation_curve"]
    committed = json.loads((brief_task.SELECTOR / "selector_card.json").read_text(encoding="utf-8"))
    assert [v["step"] for v in ours] == [v["step"] for v in committed["validation_curve"]]
    a, b = load_file(str(out / "model.safetensors")), load_file(str(brief_task.SELECTOR / "model.safetensors"))
    same = all((a[k] == b[k]).all() for k in a)
    print(f"weights {'identical to' if same else 'differ from'} the committed ones")
