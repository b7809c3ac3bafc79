"""Fixtures of the evals: the user's eval request (from the pytest options in the root conftest.py),
the shipped tiny "seeing" checkpoint and its held-out split of real encoded clips.

The request is built and checked once, when pytest configures the session: a bad --split, --ids,
--baseline or predict flag stops it there with its one sentence and exit 2 (not the same error in every
test that uses it). `slow` tests under evals/ run only when -m names `slow`, as the README says, so
`pytest -m eval evals/` does not start the 14-minute regeneration of the committed adapter.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from evals import harness
from evals import report as rep
from roadbuddy import flags
from roadbuddy.config import RunConfig
from roadbuddy.predict.distributed import Shard
from roadbuddy.testing import tiny_task

TINY_CHECKPOINT = tiny_task.CHECKPOINT
# flags that choose the questions rather than the configuration
SELECTION = ("data_dir", "limit")


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
    thumbnails: bool = True


def _ids(value: str | None) -> list[str] | None:
    if not value:
        return None
    if value.startswith("@"):
        try:
            lines = Path(value[1:]).read_text(encoding="utf-8").split()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise ValueError(f"--ids {value}: cannot read the id file ({why})") from None
        return [x.strip() for x in lines if x.strip()]
    return [x.strip() for x in value.split(",") if x.strip()]


def config_from_options(config: pytest.Config, split: Path) -> tuple[RunConfig, list[str]]:
    """One RunConfig from the predict flags given to pytest (declared once, beside the RunConfig fields)."""
    values = flags.values_from_pytest(config, RunConfig, flags.EVAL)
    given = flags.given_flags({k: v for k, v in values.items() if k not in SELECTION}, RunConfig)
    # a progress bar only when output is shown (-s); under torchrun (RANK, WORLD_SIZE, LOCAL_RANK) each rank
    # answers its share and rank 0 writes the report
    shard = Shard.from_env(os.environ)
    cfg = RunConfig(**values, test_json=split, progress=config.getoption("capture") == "no",
                    rank=shard.rank, world_size=shard.world_size, local_rank=shard.local_rank)
    return cfg, given


def request_from_options(config: pytest.Config) -> EvalRequest:
    """The eval the pytest options ask for; raises OSError or ValueError (ConfigError) naming a bad one."""
    opt = config.getoption
    split = opt("eval_split")
    baseline = Path(opt("eval_baseline")) if opt("eval_baseline") else None
    if baseline is not None:  # a baseline that is no report fails now, not after the whole eval ran
        try:
            rep.load_report(baseline)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--baseline {baseline}: not a readable eval report "
                             f"({getattr(exc, 'strerror', None) or exc})") from None
    for name in ("eval_min_accuracy", "eval_max_fallback_rate"):
        if opt(name) is not None and not 0 <= opt(name) <= 1:
            raise ValueError(f"--{name[5:].replace('_', '-')} {opt(name)} is not a share between 0 and 1")
    report_dir = Path(opt("eval_report_dir")) if opt("eval_report_dir") else None
    common = dict(ids=_ids(opt("eval_ids")), baseline=baseline, min_accuracy=opt("eval_min_accuracy"),
                  max_fallback_rate=opt("eval_max_fallback_rate"), thumbnails=not opt("eval_no_thumbnails"))
    if split is None:
        values = flags.values_from_pytest(config, RunConfig, flags.EVAL)
        given = flags.given_flags({k: v for k, v in values.items() if k not in SELECTION}, RunConfig)
        return EvalRequest(split=None, cfg=None, report_dir=report_dir, predict_flags=given, **common)
    path = harness.resolve_split(split, opt(flags.pytest_dest("data_dir")))
    cfg, given = config_from_options(config, path)
    return EvalRequest(split=path, cfg=cfg, report_dir=report_dir or harness.default_report_dir(cfg, path),
                       predict_flags=given, **common)


REQUEST = pytest.StashKey[EvalRequest]()


def pytest_configure(config: pytest.Config) -> None:
    try:
        config.stash[REQUEST] = request_from_options(config)
    except (OSError, ValueError) as exc:
        pytest.exit(str(exc), returncode=2)  # exit 2: bad usage, as roadbuddy-predict's


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the slow tests of evals/ unless -m names `slow` (`-m eval` alone would select them)."""
    if re.search(r"\bslow\b", config.getoption("markexpr") or ""):
        return
    here = Path(__file__).parent
    slow = [item for item in items if item.get_closest_marker("slow") and here in item.path.parents]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if item not in slow]


@pytest.fixture(scope="session")
def eval_request(pytestconfig) -> EvalRequest:
    return pytestconfig.stash[REQUEST]


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
    from roadbuddy.families.internvl.model import load_model

    return load_model(tiny_eval_config)


@pytest.fixture(scope="session")
def brief_heldout(tmp_path_factory) -> Path:
    """The brief-evidence task's held-out split (roadbuddy.testing.brief_task.write_heldout), written once for the
    selector's evals (about 4 s of encoding). Read only: each eval writes its own scans and reports elsewhere."""
    from roadbuddy.testing import brief_task

    return brief_task.write_heldout(tmp_path_factory.mktemp("brief-heldout"))
