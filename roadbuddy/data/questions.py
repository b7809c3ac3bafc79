"""Load and validate a RoadBuddy question file before anything heavy starts.

A file is `{"__count__": N, "data": [ITEM, ...]}` or a bare list of items; an
item has `id`, `question`, `choices`, `video_path` and, in train files,
`answer` and `support_frames` (see challenge-data/README.md).

Every problem raises `QuestionFileError` whose message is one sentence naming
the file, the item (its id, or `item #K (index K-1)`, K counting from 1 in `data`,
when the id itself is missing or bad) and the field; a file that cannot be read is
named by the path given. A missing video is not a
load error: the pipeline records it per question later (where a video_path leads, and which
paths are refused, is roadbuddy.data.paths), and refuses the run only when not one of the
file's videos exists (`missing_videos`). An optional field
(`answer`, `support_frames`) given as null counts as absent; unknown fields
such as `_unused_` are ignored.

Choices are kept twice: `raw_choices` exactly as in the file, and `choices`
with their printed label stripped, because the files' labels cannot be trusted
(`["A. 0", "B. 1", "B. 2", "B. 3"]`, `"C.100 km/h"`, `"A.  Xe máy"`). A
choice's letter is always its position.
"""
from __future__ import annotations

import json
import math
import os
import re
import string
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from roadbuddy.data import paths

LETTERS = string.ascii_uppercase  # a choice's letter is its position: A, B, C, ...
MAX_CHOICES = len(LETTERS)

# A printed label ("A.", "b)", "C:") with optional spaces around it, stripped
# only when text follows it, so a choice that is just "A." stays whole.
_LABEL = re.compile(r"^[A-Za-z]\s*[.):]\s*(?=\S)")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class QuestionFileError(ValueError):
    """Bad question file or item. str(err) is ONE sentence naming the file, the
    item id (or index when the id itself is bad) and the field."""


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    choices: tuple[str, ...]
    raw_choices: tuple[str, ...]
    video_path: Path
    video_rel: str
    support_frames: tuple[float, ...] = ()
    answer: str | None = None
    # Set when video_path reaches outside the dataset root through a symlink: the
    # clip is never opened, its questions get an error row and the run goes on.
    video_error: str | None = None

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(LETTERS[: len(self.choices)])

    @property
    def num_choices(self) -> int:
        return len(self.choices)


def prior_letter(num_choices: int) -> str:
    """The prior-only baseline: in train, "Sai" (B) is the more common answer
    of two-choice items and A the most common of the rest."""
    if num_choices < 1:
        raise ValueError(f"num_choices must be at least 1 (got {num_choices})")
    return "B" if num_choices == 2 else "A"


def group_by_video(questions: Iterable[Question]) -> list[tuple[Path, list[Question]]]:
    """One entry per distinct video, in order of first appearance, so each clip
    is decoded once for all its questions."""
    groups: dict[Path, list[Question]] = {}
    for q in questions:
        groups.setdefault(q.video_path, []).append(q)
    return list(groups.items())


class _Invalid(Exception):
    """A field's problem, before the file and item are known."""

    def __init__(self, field: str, reason: str):
        super().__init__(field, reason)
        self.field = field
        self.reason = reason


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _text(value: str) -> str:
    return unicodedata.normalize("NFC", value).strip()


def strip_label(choice: str) -> str:
    """"A. Đúng" -> "Đúng", "C.100 km/h" -> "100 km/h"; an unlabeled choice, or a
    bare label like "A.", comes back whole (NFC-normalised and stripped)."""
    text = _text(choice)
    return _LABEL.sub("", text, count=1)


def resolve_video(video_rel: str, json_path: Path, data_dir: Path | None) -> Path:
    """The absolute path of a clip named relative to the dataset root (roadbuddy.data.paths.resolve), or
    QuestionFileError naming the file when the path is malformed or leads out of the root through a symlink."""
    json_path = Path(json_path)
    try:
        path, refused = paths.resolve(video_rel, json_path, None if data_dir is None else Path(data_dir))
    except paths.VideoPathError as err:
        refused = str(err)
    if refused:
        raise QuestionFileError(f"{json_path.name}: field 'video_path' {refused}.")
    return path


def _is_unicode(value: str) -> bool:
    """False for a lone surrogate ("\\ud800" is valid JSON but no text: it breaks tokenizers and CSV writes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _item_id(item: dict) -> str | None:
    value = item.get("id")
    if (isinstance(value, str) and value and value == value.strip() and not _CONTROL.search(value)
            and _is_unicode(value)):
        return value
    return None


def _required_text(item: dict, field: str) -> str:
    if field not in item:
        raise _Invalid(field, "is missing")
    value = item[field]
    if not isinstance(value, str) or not value.strip():
        got = "a blank string" if isinstance(value, str) else _type_name(value)
        raise _Invalid(field, f"must be a non-empty string (got {got})")
    if not _is_unicode(value):
        raise _Invalid(field, "holds a lone surrogate (an unpaired \\ud800-\\udfff escape), which is not text")
    return value


def _choices(item: dict) -> list[str]:
    if "choices" not in item:
        raise _Invalid("choices", "is missing")
    raw = item["choices"]
    if not isinstance(raw, list) or not raw:
        got = "an empty list" if isinstance(raw, list) else _type_name(raw)
        raise _Invalid("choices", f"must be a non-empty list of strings (got {got})")
    for i, choice in enumerate(raw):
        if not isinstance(choice, str):
            raise _Invalid("choices", f"must be a non-empty list of strings (entry {i + 1} is {_type_name(choice)})")
        if not choice.strip():
            raise _Invalid("choices", f"must be a non-empty list of strings (entry {i + 1} is blank)")
        if not _is_unicode(choice):
            raise _Invalid("choices", f"entry {i + 1} holds a lone surrogate (an unpaired \\ud800-\\udfff escape)")
    if len(raw) < 2:
        raise _Invalid("choices", f"must have at least 2 choices (got {len(raw)})")
    # train_0120 lists its four choices twice; the first match keeps its letter.
    half = len(raw) // 2
    if len(raw) % 2 == 0 and half >= 2 and [_text(c) for c in raw[:half]] == [_text(c) for c in raw[half:]]:
        raw = raw[:half]
    if len(raw) > MAX_CHOICES:
        raise _Invalid("choices", f"must have at most {MAX_CHOICES} choices, one per letter A-Z (got {len(raw)})")
    return raw


def _answer_letter(item: dict, raw_choices: list[str]) -> str | None:
    value = item.get("answer")
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid("answer", f"must be a string equal to one of the choices (got {_type_name(value)})")
    if not _is_unicode(value):
        raise _Invalid("answer", "holds a lone surrogate (an unpaired \\ud800-\\udfff escape)")
    wanted = _text(value)
    for i, choice in enumerate(raw_choices):
        if _text(choice) == wanted:
            return LETTERS[i]
    shown = value if len(value) <= 60 else value[:57] + "..."
    raise _Invalid("answer", f"must equal one of the choices (got {shown!r})")


def _support_frames(item: dict) -> tuple[float, ...]:
    value = item.get("support_frames")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Invalid("support_frames", f"must be a list of seconds (got {_type_name(value)})")
    seconds = []
    for x in value:
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise _Invalid("support_frames", f"must hold only numbers of seconds (got {_type_name(x)})")
        try:
            t = float(x)
        except OverflowError:
            t = math.inf
        if not math.isfinite(t) or t < 0:
            raise _Invalid("support_frames", f"must hold finite seconds >= 0 (got {x if len(str(x)) < 40 else 'a huge number'})")
        seconds.append(t)
    return tuple(seconds)


def _parse_item(item: dict, item_id: str, json_path: Path, data_dir: Path | None) -> Question:
    question = _required_text(item, "question")
    raw = _choices(item)
    video_rel = _required_text(item, "video_path")
    answer = _answer_letter(item, raw)
    support = _support_frames(item)
    try:
        video_path, refused = paths.resolve(video_rel, json_path, data_dir)
    except paths.VideoPathError as err:
        raise _Invalid("video_path", str(err)) from None
    return Question(
        id=item_id,
        question=_text(question),
        choices=tuple(strip_label(c) for c in raw),
        raw_choices=tuple(raw),
        video_path=video_path,
        video_rel=video_rel,
        support_frames=support,
        answer=answer,
        video_error=refused,
    )


def _read_items(json_path: Path) -> list:
    name = json_path.name
    try:
        raw = json_path.read_bytes()
    except OSError as exc:
        # The path as given, not just its name: the folder is usually what is wrong.
        raise QuestionFileError(f"{json_path}: cannot read the question file ({exc.strerror or exc}).") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QuestionFileError(f"{name}: not UTF-8 text (bad byte at offset {exc.start}).") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QuestionFileError(f"{name}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}).") from None
    except RecursionError:
        raise QuestionFileError(f"{name}: not valid JSON for a question file (nested too deeply).") from None
    if isinstance(doc, list):
        return doc
    if not isinstance(doc, dict):
        raise QuestionFileError(f"{name}: top level must be an object with 'data' or a list of items (got {_type_name(doc)}).")
    if "data" not in doc:
        raise QuestionFileError(f"{name}: field 'data' is missing.")
    items = doc["data"]
    if not isinstance(items, list):
        raise QuestionFileError(f"{name}: field 'data' must be a list of items (got {_type_name(items)}).")
    if "__count__" in doc:
        count = doc["__count__"]
        if isinstance(count, bool) or not isinstance(count, int) or count != len(items):
            shown = count if isinstance(count, int) and len(str(count)) < 40 else _type_name(count)
            raise QuestionFileError(f"{name}: field '__count__' is {shown} but 'data' has {len(items)} items.")
    return items


def load_questions(json_path: Path | str, data_dir: Path | str | None = None) -> list[Question]:
    """All questions of a file, in file order, or QuestionFileError on the first problem."""
    json_path = Path(json_path)
    data_dir = None if data_dir is None else Path(data_dir)
    name = json_path.name
    questions: list[Question] = []
    seen: set[str] = set()
    items = _read_items(json_path)
    if data_dir is not None and not data_dir.is_dir():
        raise QuestionFileError(f"--data-dir {data_dir}: no such folder (it is the dataset root that the video "
                                f"paths of {name} are relative to).")
    for index, item in enumerate(items):
        where = f"item #{index + 1} (index {index})"  # counted as people count, with the index for programs
        if not isinstance(item, dict):
            raise QuestionFileError(f"{name}: {where} must be an object (got {_type_name(item)}).")
        item_id = _item_id(item)
        if item_id is None:
            value = item.get("id")
            got = ("it is missing" if "id" not in item else
                   f"got {value!r}" if isinstance(value, str) and len(value) < 40 else f"got {_type_name(value)}")
            raise QuestionFileError(f"{name}: {where}: field 'id' must be a non-empty string without "
                                    f"surrounding spaces or control characters ({got}).")
        if item_id in seen:
            raise QuestionFileError(f"{name}: item {item_id}: field 'id' repeats an earlier item's id.")
        seen.add(item_id)
        try:
            questions.append(_parse_item(item, item_id, json_path, data_dir))
        except _Invalid as err:
            raise QuestionFileError(f"{name}: item {item_id}: field '{err.field}' {err.reason}.") from None
    return questions


def question_file_info(json_path: Path | str, questions: list[Question]) -> dict:
    """What run.json records of the question file a run answered: its path, sha256 and how many questions were
    asked of it (fewer than it holds with --limit); an ensemble refuses runs of different files by it."""
    from roadbuddy.data.digest import file_sha256

    return {"file": str(Path(json_path).resolve()), "sha256": file_sha256(Path(json_path)), "count": len(questions)}


def roots_tried(json_path: Path | str, data_dir: Path | str | None) -> str:
    """Where video paths were looked for, in words: "--data-dir /x", or the question file's folder and parent."""
    roots = paths.candidate_roots(Path(json_path), None if data_dir is None else Path(data_dir))
    if data_dir is not None:
        return f"--data-dir {roots[0]}"
    return f"{roots[0]} (the question file's folder) or {roots[1]} (its parent)"


def missing_videos(questions: list[Question], json_path: Path | str, data_dir: Path | str | None) -> list[Path]:
    """The questions' distinct videos that are not files. When that is all of them, QuestionFileError naming
    the folders tried and --data-dir: the question file was moved away from its videos or the root is wrong,
    and every answer would be the prior letter. (Some missing ones are per-question errors of the run.)"""
    videos = {q.video_path: q.video_rel for q in questions}
    missing = [path for path in videos if not path.is_file()]
    if videos and len(missing) == len(videos):
        example = next(iter(videos.values()))
        raise QuestionFileError(f"{json_path}: none of its {len(videos)} videos exists under "
                                f"{roots_tried(json_path, data_dir)}, e.g. {example!r}; pass --data-dir DIR with "
                                f"the clips at DIR/{example}.")
    return missing


def dataset_root(q: Question) -> Path:
    """The root the question's video_path was resolved against."""
    depth = len(Path(os.path.normpath(q.video_rel)).parts)
    return q.video_path.parents[depth - 1]


def write_subset(source: Path, questions: list[Question], folder: Path, name: str = "subset.json") -> tuple[Path, Path]:
    """A question file in `folder` holding the items of `source` that `questions` name, as they are in the
    file, and the dataset root their video paths need (the subset's own folder is not it)."""
    from roadbuddy.data.atomic import atomic_write_text

    wanted = {q.id for q in questions}
    doc = json.loads(Path(source).read_text(encoding="utf-8-sig"))
    items = doc["data"] if isinstance(doc, dict) else doc
    items = [item for item in items if isinstance(item, dict) and item.get("id") in wanted]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    atomic_write_text(path, json.dumps({"__count__": len(items), "data": items}, ensure_ascii=False, indent=1))
    return path, dataset_root(questions[0])
