"""Durable answers: predictions.jsonl (append + fsync per answer) and the CSVs.

predictions.jsonl is the record of truth: every answered question is one line,
flushed and fsynced before the next question starts, so a crash or a kill costs
at most the answer in flight. submission.csv and time_submission.csv are
derived from it and replaced atomically (write a temp file, fsync, rename), so
a failed run never leaves a half-written CSV over a good one. Under torchrun each
rank appends to its own shard, and rank 0 merges every shard into the CSVs.
"""
from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from roadbuddy.data.atomic import atomic_write_text
from roadbuddy.data.questions import Question, prior_letter


class OutputError(RuntimeError):
    """The output folder cannot be used (not writable, locked, other run's predictions); one sentence."""


@dataclass(frozen=True)
class OutputPaths:
    submission: Path
    time_submission: Path
    predictions: Path
    run_info: Path
    lock: Path

    @classmethod
    def for_submission(cls, submission: Path, rank: int = 0, world_size: int = 1) -> "OutputPaths":
        """Paths of one run; under torchrun each rank appends to its own predictions shard and holds its own lock."""
        folder = submission.parent
        shard = "" if world_size == 1 else f".rank{rank}"
        return cls(
            submission=submission,
            time_submission=folder / "time_submission.csv",
            predictions=folder / f"predictions{shard}.jsonl",
            run_info=folder / "run.json",
            lock=folder / f".roadbuddy{shard}.lock",
        )

    @property
    def folder(self) -> Path:
        return self.submission.parent

    def prediction_files(self) -> list[Path]:
        """Every predictions file in the folder: a single-process run's and each rank's shard."""
        return sorted(self.submission.parent.glob("predictions*.jsonl"))


def prepare_output(paths: OutputPaths) -> None:
    """Create the folder and prove it is writable, before any model is loaded."""
    folder = paths.submission.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".roadbuddy-write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"output folder {folder} is not writable: {exc.strerror or exc}") from exc
    for path in (paths.submission, paths.time_submission, paths.predictions, paths.run_info):
        if path.is_dir():  # found now, not after every answer is made and the CSV cannot replace it
            raise OutputError(f"{path} is a directory where the run must write a file; move it away or "
                              "choose another --output (which names the submission CSV file)")


class RunLock:
    """An exclusive lock on the output folder so two runs never interleave their answers."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = None

    def __enter__(self) -> "RunLock":
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise OutputError(
                f"another roadbuddy run is writing to {self.path.parent} (lock {self.path.name} is held); "
                "wait for it or choose another --output"
            ) from None
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


def check_run_info(paths: OutputPaths, settings: dict, write: bool = True, questions: dict | None = None) -> None:
    """Refuse to resume predictions written with different answer settings; record them (and `questions`, the
    question file answered: path, sha256, count) for a new run, keeping what a resumed run's run.json holds."""
    has_answers = any(p.stat().st_size for p in paths.prediction_files())
    info: dict = {}
    if paths.run_info.is_file() and has_answers:
        try:
            info = json.loads(paths.run_info.read_text(encoding="utf-8"))
            old = info["settings"]
            old.items()
        except (ValueError, KeyError, TypeError, AttributeError):
            raise OutputError(f"{paths.run_info} does not hold the settings of the run that wrote "
                              f"{paths.predictions.name}; move both away to start over") from None
        diff = sorted(k for k in set(old) | set(settings) if str(old.get(k)) != str(settings.get(k)))
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {settings.get(k)!r}" for k in diff)
            raise OutputError(
                f"{paths.folder} holds answers from a run with other settings ({shown}); "
                "resume with the same settings or choose another --output"
            )
    if write:
        info["settings"] = settings
        if questions is not None:
            info["questions"] = questions
        atomic_write_text(paths.run_info, json.dumps(info, indent=2, default=str) + "\n")


def load_predictions(path: Path, truncate: bool = True) -> dict[str, dict]:
    """Complete records by id. A torn last line (a crash mid-write) is ignored, and cut off the file
    when `truncate` (only the file's own writer may do that)."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    records: dict[str, dict] = {}
    good_end = 0
    pos = 0
    for line in data.splitlines(keepends=True):
        pos += len(line)
        if not line.endswith(b"\n"):
            break  # torn: the process died before the newline
        try:
            record = json.loads(line)
        except ValueError:
            if pos == len(data):
                break
            line_no = data[:pos].count(b"\n")
            raise OutputError(f"{path} line {line_no} is not valid JSON; move the file away to start over")
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            line_no = data[:pos].count(b"\n")
            raise OutputError(f"{path} line {line_no} is not an answer record; move the file away to start over")
        records[record["id"]] = record
        good_end = pos
    if truncate and good_end != len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
    return records


class PredictionLog:
    """Append-only predictions.jsonl; each record is durable once `append` returns."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")

    def append(self, record: dict) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "PredictionLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _csv_text(rows: Iterable[Iterable], header: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _merge_records(records: dict[str, dict], more: dict[str, dict]) -> None:
    """Fold `more` into `records`; an answer always wins over an error record for the same id."""
    for qid, record in more.items():
        if qid not in records or records[qid].get("error") or not record.get("error"):
            records[qid] = record


def load_all_predictions(paths: OutputPaths, truncate: bool = True) -> dict[str, dict]:
    """Every record in the folder (this run's file and any other rank's shard), own torn tail cut when
    `truncate` (a reader of another run's folder passes False: nothing is cut)."""
    records = load_predictions(paths.predictions, truncate=truncate)
    for other in paths.prediction_files():
        if other != paths.predictions:
            _merge_records(records, load_predictions(other, truncate=False))
    return records


def merge_and_write(paths: OutputPaths, questions: list[Question]) -> None:
    """Write the CSVs from every predictions file; refuse, naming the ids, if any question has no record."""
    records = load_all_predictions(paths)
    missing = [q.id for q in questions if q.id not in records]
    if missing:
        raise OutputError(
            f"{len(missing)} questions have no answer in any predictions file in {paths.folder} "
            f"(first: {', '.join(missing[:5])}); run the same command again to finish them")
    write_submissions(paths, questions, records)


def answer_for(question: Question, record: dict | None) -> str:
    """The submitted letter: the record's, or the prior for an item with no record."""
    if record is None or not record.get("answer"):
        return prior_letter(question.num_choices)
    return str(record["answer"]).upper()


def write_submissions(paths: OutputPaths, questions: list[Question], records: dict[str, dict]) -> None:
    """submission.csv (id,answer) and time_submission.csv (id,answer,time in ms), in file order, atomically."""
    sub = [(q.id, answer_for(q, records.get(q.id))) for q in questions]
    timed = [(qid, ans, round(float(records.get(qid, {}).get("time_ms", 0.0)))) for qid, ans in sub]
    atomic_write_text(paths.submission, _csv_text(sub, ["id", "answer"]))
    atomic_write_text(paths.time_submission, _csv_text(timed, ["id", "answer", "time"]))
