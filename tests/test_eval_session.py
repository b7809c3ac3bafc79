"""The evals' pytest session (evals/conftest.py), run as a user runs it: a bad eval option stops the session
once with its sentence and exit 2, and `-m eval` alone leaves the slow tests of evals/ out."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_session(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.parametrize("bad, sentence", [
    (["--split", "no-such-split.json"], "split no-such-split.json not found (tried no-such-split.json"),
    (["--max-frames", "0"], "--max-frames must be between --min-frames (8) and 512, got 0"),
])
def test_a_bad_eval_option_stops_the_session_once_with_exit_2(bad, sentence, tmp_path):
    split = tmp_path / "train.json"
    split.write_text('{"data": []}')
    args = bad if "--split" in bad else ["--split", str(split), *bad]
    done = pytest_session("-m", "eval", "evals/", "-q", *args)
    said = done.stdout + done.stderr
    # it used to be exit 1 and 483 lines: the sentence in each of the 12 tests that use the eval request
    assert done.returncode == 2, said
    assert said.count(sentence) == 1 and len(said.strip().splitlines()) == 1, said


def test_the_eval_marker_alone_leaves_the_slow_tests_of_evals_out():
    def collected(marks: str) -> set[str]:
        done = pytest_session("-m", marks, "evals/", "--collect-only", "-q")
        assert done.returncode == 0, done.stdout + done.stderr
        return {line for line in done.stdout.splitlines() if "::" in line}

    slow = collected("slow")  # the 14-minute regeneration of the committed adapter
    assert slow and all(test.startswith("evals/") for test in slow)
    evals = collected("eval")
    assert evals and not slow & evals  # README: slow tests need -m slow
