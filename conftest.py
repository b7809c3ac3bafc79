"""Shared fixtures: a tiny random-weight InternVL checkpoint and synthetic clips.

Markers (gpu, eval, slow) are declared in pyproject.toml; by default only the
fast CPU tests run (`-m 'not gpu and not eval and not slow'`).
"""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parent.parent / "shared" / "roadbuddy-data"


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The real RoadBuddy question files, which live outside the repo in ../shared."""
    if not (SHARED_DATA / "train.json").is_file():
        pytest.skip(f"real question files not found at {SHARED_DATA} (they live in ../shared beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from roadbuddy.testing import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny-ckpt"))


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    from roadbuddy.testing import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("synth-data"))


def pytest_addoption(parser):
    group = parser.getgroup("roadbuddy", "RoadBuddy benches and evals")
    group.addoption("--bench-out", default=None,
                    help="extra folder for GPU bench results (they always go to bench/results/ too)")
    group.addoption("--bench-data", default=None,
                    help="folder holding (or receiving) the GPU bench clips and bench.json")
    group.addoption("--bench-model", default=None,
                    help="real checkpoint for the GPU bench (default: the 4B architecture with random weights)")
    group.addoption("--bench-quant", default="bf16,8bit,4bit",
                    help="comma-separated quantizations for the GPU bench (default: bf16,8bit,4bit)")
