"""Several runs over one question file combined into one answer per question.

A member is a run folder (`roadbuddy-predict --output DIR/submission.csv`, or an eval report folder): its
run.json (answer settings, the question file answered) and its predictions.jsonl, or the torchrun shards
predictions.rank*.jsonl, read without cutting anything off (the files are the run's, not ours).

Per question the members' letter log-probabilities are averaged with weights that sum to 1 (a weighted
geometric mean of their probabilities) and renormalised with a log-sum-exp; the answer is the letter with
the highest value, the earlier letter on a tie. A member whose record is an error (its video failed) is
left out of that question and the others' weights are renormalised (when they are all 0, the members
present count equally); when every member failed, the prior letter answers, as a run does. Records made
before full-precision log-probabilities were recorded give log(max(p, 1e-12)) of their rounded
probabilities. A question's time is the sum of the members' times: the challenge's time per sample
counts every model that answered it.

roadbuddy.submit.ensemble_fit finds the weights that maximise the log-likelihood of the right letters on a labeled split
answered by the same members (scipy, softmax-parametrised weights, from equal weights).

Files beside the submission: submission.csv, time_submission.csv, predictions.jsonl (mode "ensemble";
`members` holds each member's answer and time), run.json (the members' settings and the weights, and the
question file; so an ensemble folder is a member like any run) and ensemble.json (the members' folders,
settings, weights and the fit report).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from roadbuddy.data.atomic import atomic_write_text
from roadbuddy.data.digest import file_sha256
from roadbuddy.data.output import OutputPaths, RunLock, load_all_predictions, prepare_output, write_submissions
from roadbuddy.data.questions import Question, load_questions, prior_letter, question_file_info
from roadbuddy.levers.choice_orders import log_normalised

MODE = "ensemble"
TIME_LIMIT_S = 30.0  # the challenge's time per sample
PROB_FLOOR = 1e-12  # log(0) of a rounded probability would be -inf
INFO_FILE = "ensemble.json"


class EnsembleError(ValueError):
    """A run or an option the ensemble cannot use; str(err) is one sentence naming the folder or option."""


@dataclass(frozen=True)
class Member:
    folder: Path  # absolute
    settings: dict  # run.json's answer settings
    questions: dict | None  # run.json's question file (file, sha256, count); None for runs made before it was kept
    records: dict[str, dict]


# --- reading the members ------------------------------------------------------------------------------

def read_records(folder: Path) -> dict[str, dict]:
    """Every record of a run folder (predictions.jsonl and torchrun shards) by id, nothing truncated; an
    answer wins over an error record for the same id, as when the run merged its shards."""
    return load_all_predictions(OutputPaths.for_submission(Path(folder) / "submission.csv"), truncate=False)


def load_member(folder: Path | str) -> Member:
    """A run folder's settings, question file and records, or EnsembleError naming the folder."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise EnsembleError(f"{folder} is not a folder: give the folders of the runs to combine")
    run_info = folder / "run.json"
    if not run_info.is_file():
        raise EnsembleError(f"{folder} has no run.json: it is not the folder of a roadbuddy-predict run or an eval")
    try:
        info = json.loads(run_info.read_text(encoding="utf-8"))
        settings = info["settings"]
        questions = info.get("questions")
        if not isinstance(settings, dict) or not (questions is None or isinstance(questions, dict)):
            raise TypeError
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        raise EnsembleError(f"{run_info} does not hold a run's settings (a JSON object with \"settings\")") from None
    if not OutputPaths.for_submission(folder / "submission.csv").prediction_files():
        raise EnsembleError(f"{folder} has no predictions.jsonl (nor torchrun shards predictions.rank*.jsonl)")
    records = read_records(folder)
    if not records:
        raise EnsembleError(f"{folder} holds no answers: its predictions files are empty")
    return Member(folder=folder, settings=settings, questions=questions, records=records)


def load_members(folders: list[Path | str], role: str = "") -> list[Member]:
    """At least two members; `role` ("--fit ") prefixes the messages."""
    if len(folders) < 2:
        got = f": {folders[0]}" if folders else ""
        raise EnsembleError(f"{role or 'an ensemble '}needs at least 2 runs to combine, got {len(folders)}{got}")
    return [load_member(f) for f in folders]


def _sha(member: Member) -> str | None:
    return (member.questions or {}).get("sha256")


def check_same_question_file(members: list[Member]) -> None:
    """Refuse runs of different question files: by sha256 where run.json names the file, by the answered
    ids against the first run where a run.json does not (runs made before it named the file)."""
    named = [m for m in members if _sha(m)]
    for member in named[1:]:
        if _sha(member) != _sha(named[0]):
            raise EnsembleError(
                f"{member.folder} answered {Path(member.questions['file']).name} (sha256 {_sha(member)[:12]}) "
                f"but {named[0].folder} answered {Path(named[0].questions['file']).name} (sha256 "
                f"{_sha(named[0])[:12]}): combine runs of the same question file")
    first = members[0]
    for member in members[1:]:
        if not (_sha(first) and _sha(member)) and set(member.records) != set(first.records):
            only = sorted(set(member.records) ^ set(first.records))
            raise EnsembleError(f"{member.folder} answered other questions than {first.folder} ({len(only)} ids "
                                f"in one only, first: {', '.join(only[:3])}): combine runs of the same question file")


def question_file(members: list[Member], test_json: Path | str | None = None, role: str = "") -> Path:
    """The question file the members answered: `test_json` when given (it must be that file), else the one
    their run.json names (the first such path still there); EnsembleError when it cannot be known, is gone or
    has changed since. `role` ("--fit ") names the runs in the messages."""
    named = [m for m in members if _sha(m)]
    fix = "make the --fit runs again" if role else "pass --test-json with the file the runs answered"
    if test_json is not None:
        path = Path(test_json)
        if not path.is_file():
            raise EnsembleError(f"--test-json {path}: no such file")
        digest = file_sha256(path) if named else None
        if named and digest != _sha(named[0]):
            raise EnsembleError(f"--test-json {path} (sha256 {digest[:12]}) is not the question file the "
                                f"runs answered ({named[0].questions['file']}, sha256 {_sha(named[0])[:12]})")
        return path
    if not named:
        raise EnsembleError(f"no run.json of the {role}runs ({members[0].folder}, ...) names the question file it "
                            f"answered (runs made before that was recorded): {fix}")
    there = [m for m in named if Path(m.questions["file"]).is_file()]
    if not there:
        raise EnsembleError(f"{named[0].questions['file']}, the question file {named[0].folder} answered, is not there "
                            f"any more: {fix}")
    member, path = there[0], Path(there[0].questions["file"])
    digest = file_sha256(path)
    if digest != _sha(member):
        raise EnsembleError(f"{path} has changed since {member.folder} answered it (sha256 {_sha(member)[:12]} then, "
                            f"{digest[:12]} now): {fix}")
    return path


def answered_questions(members: list[Member], path: Path) -> list[Question]:
    """The questions of the file the members answered (the first `count`, as a run with --limit asked them;
    all when no run.json says), refusing a member without a record for any of them."""
    questions = load_questions(path)
    counts = [m.questions["count"] for m in members if isinstance((m.questions or {}).get("count"), int)]
    if counts:
        questions = questions[:max(counts)]
    for member in members:
        missing = [q.id for q in questions if q.id not in member.records]
        if missing:
            raise EnsembleError(f"{member.folder} has no answer for {len(missing)} of the {len(questions)} questions "
                                f"of {path.name} (first: {', '.join(missing[:3])}): finish that run (run its "
                                "command again) or leave it out")
    return questions


# --- weights ------------------------------------------------------------------------------------------

def parse_weights(text: str, count: int) -> list[float]:
    """"2,1" -> [2/3, 1/3]: one non-negative weight per member, in their order, normalised to sum 1."""
    items = [item.strip() for item in text.split(",")]
    weights = []
    for item in items:
        try:
            value = float(item)
        except ValueError:
            raise EnsembleError(f"--weights {text}: {item!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise EnsembleError(f"--weights {text}: {item} is not a non-negative number")
        weights.append(value)
    if len(weights) != count:
        raise EnsembleError(f"--weights {text} gives {len(weights)} weights for {count} runs: give one per run, "
                            "in the runs' order")
    return normalised(weights)


def normalised(weights: list[float]) -> list[float]:
    total = sum(weights)
    if total <= 0:
        raise EnsembleError("--weights are all 0: at least one run must count")
    return [w / total for w in weights]


# --- the combination ----------------------------------------------------------------------------------

def member_logprobs(record: dict, letters: tuple[str, ...], folder: Path) -> dict[str, float] | None:
    """The record's log-probability of each letter (its `logprobs`, else the log of its rounded `probs`), or
    None for a record without probabilities (an error record)."""
    if record.get("error") or not record.get("probs"):
        return None
    full = record.get("logprobs")
    source = full if full else {k: math.log(max(float(p), PROB_FLOOR)) for k, p in record["probs"].items()}
    missing = [letter for letter in letters if letter not in source]
    if missing:
        raise EnsembleError(f"{folder}: the record of {record['id']} has no probability for letter {missing[0]} "
                            f"({len(letters)} choices in the question file): it answered another version of it")
    return {letter: float(source[letter]) for letter in letters}


def without_logprobs(member: Member, questions: list[Question]) -> int:
    """How many of the member's records for `questions` have probabilities rounded to 6 decimals only."""
    return sum(bool(r.get("probs")) and not r.get("logprobs") and not r.get("error")
               for r in (member.records[q.id] for q in questions))


def combine(logs: list[dict[str, float]], weights: list[float]) -> dict[str, float]:
    """The weighted mean of the members' log-probabilities per letter, renormalised (log-sum-exp)."""
    return log_normalised({letter: sum(w * member[letter] for w, member in zip(weights, logs))
                           for letter in logs[0]})


def _present_weights(weights: list[float], present: list[bool]) -> list[float]:
    kept = [w for w, here in zip(weights, present) if here]
    total = sum(kept)
    return [w / total for w in kept] if total > 0 else [1 / len(kept)] * len(kept)


def ensemble_record(q: Question, members: list[Member], weights: list[float]) -> dict:
    """The ensemble's record of one question (every member has a record for it)."""
    records = [m.records[q.id] for m in members]
    logs = [member_logprobs(r, q.letters, m.folder) for r, m in zip(records, members)]
    present = [entry is not None for entry in logs]
    record: dict = {"id": q.id}
    if any(present):
        combined = combine([entry for entry in logs if entry is not None], _present_weights(weights, present))
        record.update(answer=max(q.letters, key=combined.__getitem__), mode=MODE,
                      probs={k: round(math.exp(v), 6) for k, v in combined.items()}, logprobs=combined)
    else:
        record.update(answer=prior_letter(q.num_choices), mode="error-prior",
                      error=f"every member's record is an error (first: {records[0].get('error') or 'no probabilities'})")
    record["time_ms"] = round(sum(float(r.get("time_ms") or 0.0) for r in records), 3)
    record["members"] = [{"answer": str(r.get("answer", "")).upper(), "time_ms": r.get("time_ms"),
                          **({} if here else {"error": r.get("error") or "no letter probabilities"})}
                         for r, here in zip(records, present)]
    if not all(present) and any(present):
        record["left_out"] = [str(m.folder) for m, here in zip(members, present) if not here]
    return record


def ensemble_records(members: list[Member], questions: list[Question], weights: list[float]) -> list[dict]:
    """One record per question, in the question file's order."""
    return [ensemble_record(q, members, weights) for q in questions]


def over_time_limit(records: list[dict], limit_s: float) -> dict | None:
    """How many questions' summed time passes `limit_s`, and the slowest one; None when none does."""
    over = [r for r in records if r["time_ms"] > limit_s * 1000]
    if not over:
        return None
    worst = max(over, key=lambda r: r["time_ms"])
    return {"questions": len(over), "worst_id": worst["id"], "worst_s": worst["time_ms"] / 1000, "limit_s": limit_s}


# --- writing ------------------------------------------------------------------------------------------

def check_output(submission: Path, members: list[Member]) -> OutputPaths:
    """The ensemble's paths, refusing a folder whose files are a member's or another run's."""
    paths = OutputPaths.for_submission(Path(submission))
    folder = paths.folder.resolve()
    for member in members:
        if folder == member.folder:
            raise EnsembleError(f"--output {submission} is in the folder of the run {member.folder}: the ensemble "
                                "would replace its files; choose another folder")
    if paths.prediction_files():
        try:
            settings = json.loads(paths.run_info.read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            settings = None
        shards = [p for p in paths.prediction_files() if p != paths.predictions]
        if shards or not isinstance(settings, dict) or "ensemble" not in settings:
            raise EnsembleError(f"--output {submission}: {folder} holds the answers of a run that is not an "
                                "ensemble; choose another folder")
    return paths


def write_ensemble(paths: OutputPaths, members: list[Member], questions: list[Question], source: Path,
                   weights: list[float], records: list[dict], extra: dict | None = None) -> dict:
    """submission.csv, time_submission.csv, predictions.jsonl, run.json and ensemble.json, each atomically;
    returns ensemble.json's document."""
    prepare_output(paths)
    info = question_file_info(source, questions)
    run = {"settings": {"ensemble": [m.settings for m in members], "weights": weights}, "questions": info}
    doc = {"members": [{"folder": str(m.folder), "settings": m.settings} for m in members], "weights": weights,
           "questions": info, **(extra or {})}
    with RunLock(paths.lock):
        atomic_write_text(paths.predictions, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        write_submissions(paths, questions, {r["id"]: r for r in records})
        atomic_write_text(paths.run_info, json.dumps(run, indent=2, ensure_ascii=False, default=str) + "\n")
        atomic_write_text(paths.folder / INFO_FILE, json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n")
    return doc
