"""Fixtures of the evals: the user's eval request (from the pytest options in the root conftest.py),
the shipped tiny "seeing" checkpoint and its held-out split of real encoded clips."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from evals import harness, tiny_task
from roadbuddy.config import RunConfig
from roadbuddy.distributed import Shard

TINY_CHECKPOINT = Path(__file__).resolve().parent / "tiny-seeing"

# pytest option dest -> roadbuddy-predict flag (the same parser builds the RunConfig, so the flags mean the same)
PREDICT_FLAGS = {
    "eval_model": "--model", "eval_device": "--device", "eval_min_frames": "--min-frames",
    "eval_max_frames": "--max-frames", "eval_frames_per_second": "--frames-per-second",
    "eval_max_visual_tokens": "--max-visual-tokens", "eval_max_num": "--max-num",
    "eval_answer_mode": "--answer-mode", "eval_max_new_tokens": "--max-new-tokens", "eval_seed": "--seed",
    "eval_prefetch": "--prefetch", "eval_decode_threads": "--decode-threads", "eval_sample_timeout": "--sample-timeout",
}
PREDICT_SWITCHES = {
    "eval_no_support_frames": "--no-support-frames", "eval_simple_prompts": "--simple-prompts",
    "eval_load_in_8bit": "--load-in-8bit", "eval_load_in_4bit": "--load-in-4bit",
    "eval_no_flash_attn": "--no-flash-attn", "eval_no_share_prefix": "--no-share-prefix",
    "eval_no_batch_questions": "--no-batch-questions", "eval_no_decoder_scaling": "--no-decoder-scaling",
    "eval_embeddings_on_gpu": "--embeddings-on-gpu",
}
# roadbuddy-predict flags the eval sets itself: the split (--split), its report folder, --limit/--ids, the
# progress bar (shown with -s); --strict, --demo and --verbose have no meaning for an eval
HARNESS_FLAGS = {"--test-json", "--data-dir", "--output", "--limit", "--no-progress", "--strict", "--demo",
                 "--verbose", "--help"}


@dataclass
class EvalRequest:
    split: Path | None  # None: the tiny-model eval
    cfg: RunConfig | None
    report_dir: Path | None
    ids: list[str] | None
    baseline: Path | None
    min_accuracy: float | None
    max_fallback_rate: float | None
    predict_flags: list[str]


def _ids(value: str | None) -> list[str] | None:
    if not value:
        return None
    if value.startswith("@"):
        lines = Path(value[1:]).read_text(encoding="utf-8").split()
        return [x.strip() for x in lines if x.strip()]
    return [x.strip() for x in value.split(",") if x.strip()]


def config_from_options(config: pytest.Config, split: Path) -> tuple[RunConfig, list[str]]:
    """One RunConfig from the predict flags, parsed by roadbuddy-predict's own parser."""
    from roadbuddy.cli import build_parser, config_from_args

    argv = ["--test-json", str(split)]
    data_dir = config.getoption("eval_data_dir")
    if data_dir:
        argv += ["--data-dir", str(data_dir)]
    flags = []
    for dest, flag in PREDICT_FLAGS.items():
        value = config.getoption(dest)
        if value is not None:
            flags += [flag, str(value)]
    for dest, flag in PREDICT_SWITCHES.items():
        if config.getoption(dest):
            flags.append(flag)
    limit = config.getoption("eval_limit")
    if limit:
        argv += ["--limit", str(limit)]
    if config.getoption("capture") != "no":
        argv.append("--no-progress")  # a progress bar only when output is shown (-s)
    # under torchrun (RANK, WORLD_SIZE, LOCAL_RANK) each rank answers its share; rank 0 writes the report
    return config_from_args(build_parser().parse_args(argv + flags), Shard.from_env(os.environ)), flags


@pytest.fixture(scope="session")
def eval_request(pytestconfig) -> EvalRequest:
    opt = pytestconfig.getoption
    split = opt("eval_split")
    baseline = Path(opt("eval_baseline")) if opt("eval_baseline") else None
    report_dir = Path(opt("eval_report_dir")) if opt("eval_report_dir") else None
    common = dict(ids=_ids(opt("eval_ids")), baseline=baseline, min_accuracy=opt("eval_min_accuracy"),
                  max_fallback_rate=opt("eval_max_fallback_rate"))
    if split is None:
        flags = [flag for dest, flag in {**PREDICT_FLAGS, **PREDICT_SWITCHES}.items() if opt(dest)]
        return EvalRequest(split=None, cfg=None, report_dir=report_dir, predict_flags=flags, **common)
    path = harness.resolve_split(split, opt("eval_data_dir"))
    cfg, flags = config_from_options(pytestconfig, path)
    return EvalRequest(split=path, cfg=cfg, report_dir=report_dir or harness.default_report_dir(cfg, path),
                       predict_flags=flags, **common)


@pytest.fixture(scope="session")
def tiny_report_root(eval_request) -> Path:
    """The tiny-model eval's report folder; skips every tiny-model test (before any clip is written or
    model loaded) when the user asked for a --split eval or passed predict flags."""
    if eval_request.split is not None:
        pytest.skip("--split given: the tiny-model eval and its defect tests do not run")
    if Shard.from_env(os.environ).distributed:
        pytest.skip("the tiny-model eval (48 questions) runs in one process; under torchrun give --split")
    if eval_request.predict_flags:
        pytest.skip("the tiny-model eval has its own fixed settings; drop "
                    f"{' '.join(eval_request.predict_flags)} or add --split")
    return eval_request.report_dir or harness.DEFAULT_REPORTS / "tiny-seeing"


@pytest.fixture(scope="session")
def tiny_heldout(tiny_report_root) -> Path:
    """The held-out split: 24 clips encoded with H.264, 48 questions (scene seeds unseen in training),
    written beside the report so its clips can be looked at."""
    folder = tiny_report_root / "heldout-data"
    shutil.rmtree(folder, ignore_errors=True)
    return tiny_task.write_heldout(folder)


@pytest.fixture(scope="session")
def tiny_eval_config(tiny_heldout) -> RunConfig:
    if not (TINY_CHECKPOINT / "model.safetensors").is_file():
        pytest.fail(f"the tiny seeing checkpoint is missing from {TINY_CHECKPOINT}; "
                    "regenerate it with: python -m evals.train_tiny")
    return tiny_task.eval_config(TINY_CHECKPOINT, tiny_heldout, "unused/submission.csv")


@pytest.fixture(scope="session")
def tiny_lm(tiny_eval_config):
    """The tiny model, loaded once through the real loader and shared by the clean and the defect runs."""
    from roadbuddy.model import load_model

    return load_model(tiny_eval_config)
