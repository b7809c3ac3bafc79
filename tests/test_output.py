"""predictions.jsonl durability, resume, locking and the atomic CSVs."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from roadbuddy.data.output import (OutputError, OutputPaths, PredictionLog, RunLock, check_run_info, load_predictions,
                                   prepare_output, write_submissions)
from roadbuddy.data.questions import Question


def _q(qid: str, n: int = 4) -> Question:
    return Question(id=qid, question="?", choices=tuple("wxyz"[:n]), raw_choices=tuple("wxyz"[:n]),
                    video_path=Path("/v.mp4"), video_rel="v.mp4")


def test_torn_last_line_is_cut_and_complete_lines_kept(tmp_path):
    path = tmp_path / "predictions.jsonl"
    with PredictionLog(path) as log:
        log.append({"id": "a", "answer": "B"})
        log.append({"id": "b", "answer": "C"})
    with open(path, "ab") as fh:
        fh.write(b'{"id": "c", "ans')  # the process died mid-write
    records = load_predictions(path)
    assert sorted(records) == ["a", "b"]
    assert path.read_bytes().endswith(b"\n")  # the torn tail is gone, so the next append starts a clean line
    with PredictionLog(path) as log:
        log.append({"id": "c", "answer": "A"})
    assert sorted(load_predictions(path)) == ["a", "b", "c"]


def test_corrupt_middle_line_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "a", "answer": "B"}\nnot json\n{"id": "b", "answer": "A"}\n')
    with pytest.raises(OutputError, match="line 2"):
        load_predictions(path)


def test_submissions_in_file_order_with_prior_for_missing(tmp_path):
    paths = OutputPaths.for_submission(tmp_path / "submission.csv")
    questions = [_q("q2"), _q("q1", 2), _q("q3")]
    write_submissions(paths, questions, {"q2": {"answer": "d", "time_ms": 12.6}, "q3": {"answer": "C"}})
    assert paths.submission.read_text().splitlines() == ["id,answer", "q2,D", "q1,B", "q3,C"]
    assert paths.time_submission.read_text().splitlines() == ["id,answer,time", "q2,D,13", "q1,B,0", "q3,C,0"]
    assert not list(tmp_path.glob(".*tmp*"))


def test_settings_mismatch_refuses_to_resume(tmp_path):
    paths = OutputPaths.for_submission(tmp_path / "submission.csv")
    check_run_info(paths, {"max_frames": 32, "model": "m"})
    with PredictionLog(paths.predictions) as log:
        log.append({"id": "a", "answer": "A"})
    check_run_info(paths, {"max_frames": 32, "model": "m"})  # same settings: fine
    with pytest.raises(OutputError, match="max_frames: 32 -> 16"):
        check_run_info(paths, {"max_frames": 16, "model": "m"})


def test_second_run_on_same_output_is_locked_out(tmp_path):
    paths = OutputPaths.for_submission(tmp_path / "submission.csv")
    with RunLock(paths.lock):
        with pytest.raises(OutputError, match="another roadbuddy run"):
            with RunLock(paths.lock):
                pass
    with RunLock(paths.lock):  # released
        pass


def test_unwritable_output_fails_early(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not writable"):
        prepare_output(OutputPaths.for_submission(blocker / "sub" / "submission.csv"))


def test_records_are_durable_json_lines(tmp_path):
    path = tmp_path / "p.jsonl"
    log = PredictionLog(path)
    log.append({"id": "x", "answer": "A", "raw": "Đáp án: A"})
    # readable before close: flushed and fsynced per record
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[0])["raw"] == "Đáp án: A"
    log.close()


def test_each_append_is_fsynced_after_its_line_is_written(tmp_path, monkeypatch):
    """README: predictions.jsonl is "appended and fsynced as each answer is made". Every append fsyncs the
    file's own descriptor once, before it returns, with its line already handed to the OS."""
    path = tmp_path / "predictions.jsonl"
    synced = []  # (descriptor, complete lines in the file when fsync was called)
    real_fsync = os.fsync

    def fsync(fd):
        synced.append((fd, path.read_bytes().count(b"\n")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with PredictionLog(path) as log:
        fd = log._fh.fileno()
        for i in range(5):
            log.append({"id": f"q{i}", "answer": "A"})
            assert synced[-1:] == [(fd, i + 1)]  # this append's fsync, after this append's line
    assert synced == [(fd, n) for n in range(1, 6)]
