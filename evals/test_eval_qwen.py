"""The tiny-model eval on the Qwen path: the shipped tiny Qwen3-VL (roadbuddy/testing/tiny_seeing_qwen3_vl/,
trained by evals/train_tiny_qwen.py) answers the same held-out clips as the tiny InternVL, through the real
pipeline (decode, the checkpoint's processor, the shared prefix with M-RoPE positions, packed suffixes), and
each planted defect of a Qwen-specific step must fail the bar: a wrong rotary offset for the question
suffixes, the frames shown in reverse order, the choice letters printed one off.

The bar is the tiny InternVL's accuracy (>= 90% where the prior scores <= 50%) with a lower one on confidence:
mean p(right letter) >= 0.90, not 0.99. The tiny Qwen3-VL (1.25 M parameters, 5,300 steps on one CPU core,
roadbuddy/testing/tiny_seeing_qwen3_vl/TRAINING.md) answers 93.8% of the held-out questions with a mean
p(right letter) of 0.948; the planted defects score 77.1% / 0.770 (rope offset), 60.4% / 0.616 (frames
reversed) and 18.8% / 0.121 (letters shifted) on the machine that trained it, each below both bars.
"""
from __future__ import annotations

import pytest

from evals import harness
from evals.test_eval import TINY_MAX_PRIOR, TINY_MIN_ACCURACY, _kind_accuracy, _say, check_page
from roadbuddy.families import wording
from roadbuddy.families.qwen_vl import model as qwen_model
from roadbuddy.testing import tiny_task
from roadbuddy.video import frames

pytestmark = pytest.mark.eval

CHECKPOINT = tiny_task.CHECKPOINT.parent / "tiny_seeing_qwen3_vl"
QWEN_MIN_CONFIDENCE = 0.90  # mean p(right letter); see the module docstring


@pytest.fixture(scope="session")
def qwen_lm(tiny_heldout):
    from roadbuddy.families import registry

    if not (CHECKPOINT / "model.safetensors").is_file():
        pytest.fail(f"the tiny seeing Qwen3-VL is missing from {CHECKPOINT}; regenerate it with: "
                    "python -m evals.train_tiny_qwen")
    return registry.load_model(tiny_task.eval_config(CHECKPOINT, tiny_heldout, "unused/submission.csv"))


def _run(tiny_heldout, tiny_report_root, qwen_lm, name: str):
    cfg = tiny_task.eval_config(CHECKPOINT, tiny_heldout, "unused/submission.csv")
    return harness.run_eval(cfg, tiny_report_root / name, fresh=True, model_loader=lambda _cfg: qwen_lm,
                            min_accuracy=TINY_MIN_ACCURACY, max_prior_accuracy=TINY_MAX_PRIOR, say=lambda _m: None)


@pytest.mark.tiny_eval
def test_tiny_qwen_sees(tiny_heldout, tiny_report_root, qwen_lm):
    """Clean pipeline: >= 90% where the prior scores <= 50%, mean p(right letter) >= 0.90, the page right."""
    result = _run(tiny_heldout, tiny_report_root, qwen_lm, "qwen3_vl")
    for line in harness.summary_lines(result):
        _say(line)
    _say(f"qwen3_vl by kind: {_kind_accuracy(result)}; mean p(right letter) {result.report['confidence']['mean']:.3f}")
    check_page(result)
    if result.failures:
        pytest.fail("; ".join(result.failures) + f" (report: {result.paths['md']})", pytrace=False)
    assert result.report["confidence"]["mean"] >= QWEN_MIN_CONFIDENCE, result.report["confidence"]


def offset_suffixes(monkeypatch):
    """The questions start one rotary position late (the off-by-one a cache-length or max-position rule makes)."""
    real = qwen_model.prefill

    def late(lm, group, cache, suffix=None):
        logits, start = real(lm, group, cache, suffix)
        return logits, start + 1
    monkeypatch.setattr(qwen_model, "prefill", late)


def reverse_frames(monkeypatch):
    real = frames.select_frames
    monkeypatch.setattr(frames, "select_frames", lambda *a, **k: list(reversed(real(*a, **k))))


def shift_letters(monkeypatch):
    def shifted(choices):
        valid = wording.letters(len(choices))
        return "\n".join(f"{label}. {choice}" for label, choice in zip(valid[1:] + valid[:1], choices))
    monkeypatch.setattr(wording, "choices_text", shifted)


DEFECTS = {"rope-offset": offset_suffixes, "frames-reversed": reverse_frames, "letters-shifted": shift_letters}


@pytest.mark.tiny_eval
@pytest.mark.parametrize("defect", list(DEFECTS))
def test_planted_qwen_defect_is_caught(defect, monkeypatch, tiny_heldout, tiny_report_root, qwen_lm):
    DEFECTS[defect](monkeypatch)
    result = _run(tiny_heldout, tiny_report_root, qwen_lm, f"qwen3_vl-{defect}")
    confidence = result.report["confidence"]["mean"]
    _say(f"qwen3_vl {defect}: accuracy {result.accuracy:.1%}, mean p(right letter) {confidence:.3f}, "
         f"by kind {_kind_accuracy(result)}")
    assert result.accuracy < TINY_MIN_ACCURACY or confidence < QWEN_MIN_CONFIDENCE, (
        f"{defect} was not caught: accuracy {result.accuracy:.1%}, mean p(right letter) {confidence:.3f}")
