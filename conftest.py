"""Shared fixtures: a tiny random-weight InternVL checkpoint and synthetic clips.

Markers (gpu, eval, tiny_eval, slow) are declared in pyproject.toml; by default the
fast CPU tests and the tiny-model eval run (`-m 'not gpu and not slow and (not eval or tiny_eval)'`).
"""
from __future__ import annotations

from pathlib import Path

import pytest

CHALLENGE_DATA = Path(__file__).resolve().parent / "challenge-data"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real RoadBuddy question files (train, public and private test, the sample submission), kept in
    the repository as test data: every clone runs the tests that parse them."""
    assert (CHALLENGE_DATA / "train.json").is_file(), f"the real question files are missing from {CHALLENGE_DATA}"
    return CHALLENGE_DATA


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from roadbuddy.testing.checkpoints import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-ckpt"))


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    from roadbuddy.testing.checkpoints import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("synth-data"))


def pytest_addoption(parser):
    group = parser.getgroup("roadbuddy", "RoadBuddy benches and evals")
    group.addoption("--bench-out", default=None,
                    help="extra folder for GPU bench results (they always go to bench/results/ too)")
    group.addoption("--bench-data", default=None,
                    help="folder holding (or receiving) the GPU bench clips and bench.json")
    group.addoption("--bench-model", default=None,
                    help="real checkpoint for the GPU bench (default: the 4B architecture with random weights)")
    group.addoption("--bench-adapter", default=None,
                    help="a roadbuddy-finetune adapter for the GPU bench's model (loaded as predict --adapter does)")
    group.addoption("--bench-quant", default="bf16,4bit,8bit",
                    help="comma-separated quantizations for the GPU bench, run in this order (default: bf16,4bit,8bit)")

    # evals/ (pytest -m eval evals/): the labeled split, the report, the user's assertions
    group.addoption("--split", dest="eval_split", default=None,
                    help="labeled question file to evaluate (train.json layout), as a path or relative to "
                         "--data-dir (default: the tiny-model eval on generated clips)")
    group.addoption("--ids", dest="eval_ids", default=None,
                    help="evaluate only these question ids: comma-separated, or --ids=@FILE with one id per line "
                         "(with the =: pytest reads a lone @FILE argument as a file of its own arguments)")
    group.addoption("--baseline", dest="eval_baseline", default=None,
                    help="an earlier report.json (or its folder) to compare with: wins, losses, McNemar test")
    group.addoption("--min-accuracy", dest="eval_min_accuracy", type=float, default=None,
                    help="fail the eval (report still written) below this accuracy, e.g. 0.55")
    group.addoption("--max-fallback-rate", dest="eval_max_fallback_rate", type=float, default=None,
                    help="fail the eval (report still written) when more than this share of generated answers "
                         "fell back to the score answer, e.g. 0.05")
    group.addoption("--report-dir", dest="eval_report_dir", default=None,
                    help="report folder (default: runs/eval/<split>-<model>-<settings hash>; the same command "
                         "resumes there)")
    group.addoption("--no-thumbnails", dest="eval_no_thumbnails", action="store_true",
                    help="write no frame thumbnails for report.html (the page then shows placeholders)")
    # roadbuddy-predict's flags, declared once beside their RunConfig fields (roadbuddy/config.py)
    from roadbuddy import flags
    from roadbuddy.config import RunConfig

    flags.add_to_pytest(group, RunConfig, flags.EVAL)
