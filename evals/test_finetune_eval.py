"""A skill learned, nothing forgotten: the committed LoRA adapter through the real pipeline.

The tiny seeing checkpoint (roadbuddy/testing/tiny_seeing/) was never trained on the rule questions (what the
traffic light means for the driver: roadbuddy.testing.tiny_task.rule_question). evals/tiny-rule-adapter/ is what
roadbuddy-finetune made of it on a synthetic labeled split (command and seed in its TRAINING.md). Here the
base model and the adapter answer a held-out split of fresh scenes (rule questions and the old kinds),
through the predict pipeline: the adapter must reach 90% on the rule questions and keep colour, order and
time at 90%, with McNemar's test against the base model's report. The full regeneration of the adapter
(about 14 minutes on two cores) is a `slow` test, and so is that of the README's choice-shuffle figures
(evals/choice_shuffle.py, recorded in evals/choice-shuffle.json).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from evals import harness
from evals.rule_adapter import ADAPTER, HELDOUT_CLIPS, RECIPE, TRAIN_CLIPS
from roadbuddy.testing import tiny_task

pytestmark = pytest.mark.eval

MIN_ACCURACY = 0.90


def by_kind(result, split: Path) -> dict[str, float]:
    kinds = {item["id"]: item["_kind"] for item in json.loads(split.read_text(encoding="utf-8"))["data"]}
    right = defaultdict(list)
    for row in result.table.itertuples():
        right[kinds[row.id]].append(bool(row.correct))
    return {kind: sum(v) / len(v) for kind, v in sorted(right.items())}


@pytest.fixture(scope="module")
def rule_heldout(tiny_report_root) -> Path:
    return tiny_task.write_labeled_split(tiny_report_root.parent / "tiny-rule" / "heldout-data", clips=HELDOUT_CLIPS,
                                         seed=tiny_task.RULE_HELDOUT_SEED, rule_share=0.5, prefix="heldout")


@pytest.fixture(scope="module")
def zero_shot(rule_heldout, tiny_report_root, tiny_lm):
    cfg = tiny_task.eval_config(tiny_task.CHECKPOINT, rule_heldout, "unused/submission.csv")
    return harness.run_eval(cfg, tiny_report_root.parent / "tiny-rule" / "zero-shot", fresh=True,
                            model_loader=lambda _cfg: tiny_lm, say=lambda _m: None)


@pytest.mark.tiny_eval
def test_the_adapter_teaches_the_rule_and_keeps_the_rest(rule_heldout, zero_shot, tiny_report_root):
    if not (ADAPTER / "adapter_model.safetensors").is_file():
        pytest.fail(f"the committed adapter is missing from {ADAPTER}; regenerate it with the command in its TRAINING.md")
    cfg = tiny_task.eval_config(tiny_task.CHECKPOINT, rule_heldout, "unused/submission.csv", adapter=ADAPTER)
    tuned = harness.run_eval(cfg, tiny_report_root.parent / "tiny-rule" / "adapter", fresh=True,
                             baseline=zero_shot.paths["json"], say=lambda _m: None)
    before, after = by_kind(zero_shot, rule_heldout), by_kind(tuned, rule_heldout)
    comparison = tuned.report["comparison"]
    print(f"\nrule questions {before['rule']:.1%} -> {after['rule']:.1%}; before {before}, after {after}; "
          f"{comparison['wins']} wins, {comparison['losses']} losses, McNemar p = {comparison['mcnemar_p']:.2g}")
    assert before["rule"] < 0.6  # a skill the base model does not have
    assert after["rule"] >= MIN_ACCURACY, after
    for kind in ("colour", "order", "time"):
        assert after[kind] >= MIN_ACCURACY, (kind, after)
    assert comparison["wins"] > comparison["losses"] and comparison["mcnemar_p"] < 0.01
    assert str(tuned.report["settings"]["adapter"]) == str(ADAPTER)


@pytest.mark.tiny_eval
def test_generate_mode_still_stops_and_parses_after_fine_tuning(rule_heldout, tiny_report_root):
    """The adapter was trained to end the turn after the letter: greedy text parses, with no fallbacks."""
    cfg = tiny_task.eval_config(tiny_task.CHECKPOINT, rule_heldout, "unused/submission.csv", adapter=ADAPTER,
                                answer_mode="generate", max_new_tokens=4)
    result = harness.run_eval(cfg, tiny_report_root.parent / "tiny-rule" / "adapter-generate", fresh=True,
                              say=lambda _m: None)
    records = [json.loads(x) for x in (result.paths["json"].parent / "predictions.jsonl").read_text().splitlines()]
    assert result.report["fallbacks"]["count"] == 0
    # each text is one letter and nothing else, the answer parsed from it ("" and "AB" are in "ABCD" as substrings)
    odd = [r for r in records if r["mode"] != "generate" or r["raw"].strip() not in ("A", "B", "C", "D")
           or r["raw"].strip() != r["answer"]]
    assert not odd, odd[:3]
    assert result.accuracy >= MIN_ACCURACY


@pytest.mark.slow
def test_the_committed_adapter_regenerates_from_its_command(tmp_path, rule_heldout):
    """The command in evals/tiny-rule-adapter/TRAINING.md, from nothing: the same validation curve, to within
    3 of its 120 questions at each point: the committed one was made on a Xeon, and float32 rounding differs
    between CPUs (the order of a kernel's sums); over 500 AdamW steps that can flip a few nearly tied questions.
    Bit equality is what one machine guarantees (tests/test_finetune.py: two runs, one adapter), not two."""
    split = tiny_task.write_labeled_split(tmp_path / "data", clips=TRAIN_CLIPS, seed=tiny_task.RULE_SEED)
    out = tmp_path / "adapter"
    res = subprocess.run([sys.executable, "-m", "roadbuddy.finetune.cli", "--train-json", str(split), "--output",
                          str(out), *RECIPE, "--no-progress"], capture_output=True, text=True, timeout=3600,
                         env=dict(os.environ, OMP_NUM_THREADS="2"))
    assert res.returncode == 0, res.stderr
    card = json.loads((out / "roadbuddy_adapter.json").read_text(encoding="utf-8"))
    committed = json.loads((ADAPTER / "roadbuddy_adapter.json").read_text(encoding="utf-8"))
    assert [v["step"] for v in card["validation_curve"]] == [v["step"] for v in committed["validation_curve"]]
    for ours, theirs in zip(card["validation_curve"], committed["validation_curve"], strict=True):
        assert ours["n"] == theirs["n"] and abs(ours["correct"] - theirs["correct"]) <= 3, (ours, theirs)


@pytest.mark.slow
def test_the_choice_shuffle_figures_regenerate(tmp_path):
    """README's figures on shuffling the choices, recorded in evals/choice-shuffle.json by evals.choice_shuffle:
    rerun from nothing (the unshuffled adapter is trained again, about 14 minutes on two cores)."""
    from evals import choice_shuffle

    recorded = json.loads(choice_shuffle.RESULTS.read_text(encoding="utf-8"))["figures"]
    measured = choice_shuffle.measure(tmp_path, threads=2, say=lambda _m: None)["figures"]
    cells = [(name, order, n) for name in recorded for order in recorded[name] for n in recorded[name][order]]
    assert cells == [(name, order, n) for name in measured for order in measured[name] for n in measured[name][order]]
    # within 2 of the 96 questions: the unshuffled adapter is retrained, and float32 rounding differs between
    # CPUs (a different sum order in a kernel); over 500 AdamW steps that can flip a question whose two best
    # letters are nearly tied. The README's point is a 30-point gap (57.3% against 88.5%, choices reversed).
    for name, order, n in cells:
        assert abs(measured[name][order][n]["correct"] - recorded[name][order][n]["correct"]) <= 2, (name, order, n)
