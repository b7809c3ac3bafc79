"""roadbuddy.data.questions: the real question files, path resolution, and malformed input."""
from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roadbuddy.data.questions import (Question, QuestionFileError, group_by_video, load_questions, missing_videos,
                                      prior_letter, resolve_video)

REAL_COUNTS = {"train": 1490, "public_test": 405, "private_test": 515}
REAL_VIDEOS = {"train": 549, "public_test": 182, "private_test": 303}


@pytest.fixture(scope="module")
def real(real_data_dir) -> dict[str, list[Question]]:
    return {name: load_questions(real_data_dir / f"{name}.json") for name in REAL_COUNTS}


def _by_id(questions: list[Question]) -> dict[str, Question]:
    return {q.id: q for q in questions}


# --- the real files -------------------------------------------------------

def test_real_files_load_with_their_counts(real):
    assert {name: len(qs) for name, qs in real.items()} == REAL_COUNTS
    assert sum(len(qs) for qs in real.values()) == 2410


def test_real_files_group_into_distinct_videos(real):
    assert {name: len(group_by_video(qs)) for name, qs in real.items()} == REAL_VIDEOS
    for name, qs in real.items():
        regrouped = [q for _, group in group_by_video(qs) for q in group]
        assert sorted(q.id for q in regrouped) == sorted(q.id for q in qs)
        for path, group in group_by_video(qs):
            assert all(q.video_path == path for q in group)
            positions = [qs.index(q) for q in group]
            assert positions == sorted(positions)


def test_train_answers_and_prior_baseline(real):
    train = real["train"]
    assert all(q.answer in q.letters for q in train)
    hits = sum(q.answer == prior_letter(q.num_choices) for q in train)
    assert round(100 * hits / len(train), 1) == 37.2


def test_train_answer_letter_points_at_the_files_answer(real_data_dir, real):
    raw = json.loads((real_data_dir / "train.json").read_text(encoding="utf-8"))["data"]
    for item, q in zip(raw, real["train"]):
        assert q.raw_choices[q.letters.index(q.answer)] == item["answer"]
        assert q.support_frames == tuple(float(t) for t in item["support_frames"])


def test_test_files_have_no_answers_or_support_frames(real):
    for name in ("public_test", "private_test"):
        assert all(q.answer is None and q.support_frames == () for q in real[name])


def test_real_choice_counts(real):
    counts = Counter(q.num_choices for qs in real.values() for q in qs)
    assert {2, 3, 4} <= set(counts)
    assert set(counts) == {2, 3, 4}  # train_0120's 8 entries collapse to 4
    for qs in real.values():
        for q in qs:
            assert len(q.choices) == len(q.raw_choices) == len(q.letters)
            assert all(c and c == c.strip() for c in q.choices)


def test_doubled_choice_list_collapses_keeping_the_answer(real_data_dir, real):
    raw = {item["id"]: item for item in json.loads((real_data_dir / "train.json").read_text(encoding="utf-8"))["data"]}
    item, q = raw["train_0120"], _by_id(real["train"])["train_0120"]
    assert len(item["choices"]) == 8
    assert q.num_choices == 4
    assert q.raw_choices == tuple(item["choices"][:4])
    assert q.answer == "ABCD"[item["choices"].index(item["answer"])]


@pytest.mark.parametrize("name,qid,choices", [
    ("train", "train_0788", ("50Km/h", "60Km/h", "70Km/h", "80Km/h")),
    ("train", "train_0792", ("1", "2", "3", "4")),
    ("train", "train_0164", ("Đi thẳng", "Rẽ trái", "Rẽ phải", "Vòng quay đầu")),
    ("private_test", "testb_0576", ("0", "1", "2", "3")),
])
def test_repeated_labels_get_letters_by_position(real, name, qid, choices):
    q = _by_id(real[name])[qid]
    assert q.choices == choices
    assert q.letters == ("A", "B", "C", "D")


def test_repeated_label_answers_use_position(real):
    train = _by_id(real["train"])
    assert train["train_0792"].raw_choices[1] == "B. 2" and train["train_0792"].answer == "B"
    # "C. Rẽ phải" and "C. Vòng quay đầu" share a label; the answer is the third.
    assert train["train_0164"].answer == "C"


@pytest.mark.parametrize("name,qid,position,raw,text", [
    ("public_test", "testa_0073", 2, "C.100 km/h", "100 km/h"),
    ("private_test", "testb_0520", 1, "B.1", "1"),
    ("private_test", "testb_0556", 0, "A.  Xe máy", "Xe máy"),
    ("train", "train_0321", 3, "D.Cấm tất cả các loại ô tô lưu thông.", "Cấm tất cả các loại ô tô lưu thông."),
])
def test_glued_and_double_spaced_labels_are_stripped(real, name, qid, position, raw, text):
    q = _by_id(real[name])[qid]
    assert q.raw_choices[position] == raw
    assert q.choices[position] == text


def test_public_test_order_matches_sample_submission(real_data_dir, real):
    with open(real_data_dir / "public_test_sample_submission.csv", newline="", encoding="utf-8") as fh:
        ids = [row["id"] for row in csv.DictReader(fh)]
    assert ids == [q.id for q in real["public_test"]]


def test_real_layouts_resolve_without_data_dir(real_data_dir, real):
    # No videos ship with the files, so each path lands under the JSON's folder.
    q = real["private_test"][0]
    assert q.video_rel.startswith("videos/")
    assert q.video_path == real_data_dir / q.video_rel
    assert all(q.video_path.is_absolute() for qs in real.values() for q in qs)


# --- small helpers and the dataclass -------------------------------------

def test_prior_letter():
    assert prior_letter(2) == "B"
    assert [prior_letter(n) for n in (1, 3, 4, 8, 26)] == ["A"] * 5
    with pytest.raises(ValueError):
        prior_letter(0)


def test_question_letters_by_position():
    q = Question(id="x", question="?", choices=("a", "b", "c"), raw_choices=("A. a", "A. b", "A. c"),
                 video_path=Path("/v.mp4"), video_rel="v.mp4")
    assert q.letters == ("A", "B", "C") and q.num_choices == 3
    assert q.support_frames == () and q.answer is None


def _write(path: Path, doc) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def _item(qid="q_0001", **overrides) -> dict:
    item = {"id": qid, "question": "Đèn màu gì?", "choices": ["A. Đỏ", "B. Xanh"], "answer": "B. Xanh",
            "support_frames": [1.5], "video_path": "videos/a.mp4", "_unused_": "ignored"}
    item.update(overrides)
    return item


def test_label_stripping_rules(tmp_path):
    choices = ["A. Đúng", "b) Sai", "C: x", "D.", "Không có nhãn", "  E .  spaced  ", "3.5 m", "Có"]
    qs = load_questions(_write(tmp_path / "q.json", [_item(choices=choices, answer="D.")]))
    assert qs[0].choices == ("Đúng", "Sai", "x", "D.", "Không có nhãn", "spaced", "3.5 m", "Có")
    assert qs[0].raw_choices == tuple(choices)
    assert qs[0].answer == "D"


def test_text_is_nfc_normalised_and_answer_matches_after_normalisation(tmp_path):
    import unicodedata

    nfd = unicodedata.normalize("NFD", "A. Đúng")
    qs = load_questions(_write(tmp_path / "q.json", [_item(question=" Hỏi? ", choices=[nfd, "B. Sai"],
                                                          answer="A. Đúng ")]))
    assert qs[0].choices[0] == "Đúng" == unicodedata.normalize("NFC", "Đúng")
    assert qs[0].question == "Hỏi?"
    assert qs[0].answer == "A"


def test_bare_list_and_optional_fields(tmp_path):
    items = [_item("a"), _item("b", answer=None, support_frames=None), _item("c", support_frames=[])]
    del items[2]["answer"]
    qs = load_questions(_write(tmp_path / "q.json", items))
    assert [q.id for q in qs] == ["a", "b", "c"]
    assert [q.answer for q in qs] == ["B", None, None]
    assert [q.support_frames for q in qs] == [(1.5,), (), ()]


def test_duplicate_choices_answer_is_first_match(tmp_path):
    qs = load_questions(_write(tmp_path / "q.json", [_item(choices=["Có", "Không", "Có"], answer="Có")]))
    assert qs[0].num_choices == 3 and qs[0].answer == "A"


def test_doubled_list_of_two_identical_choices_is_not_collapsed(tmp_path):
    qs = load_questions(_write(tmp_path / "q.json", [_item(choices=["Có", "Có"], answer="Có")]))
    assert qs[0].num_choices == 2


def test_group_by_video_order(tmp_path):
    items = [_item("1", video_path="videos/b.mp4"), _item("2", video_path="videos/a.mp4"),
             _item("3", video_path="videos/./b.mp4"), _item("4", video_path="videos/a.mp4")]
    groups = group_by_video(load_questions(_write(tmp_path / "q.json", items)))
    assert [(p.name, [q.id for q in qs]) for p, qs in groups] == [("b.mp4", ["1", "3"]), ("a.mp4", ["2", "4"])]


# --- video path resolution ----------------------------------------------

def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00")
    return path


def test_train_public_layout_found_under_the_json_parent(tmp_path):
    video = _touch(tmp_path / "ds" / "train" / "videos" / "x.mp4")
    json_path = _write(tmp_path / "ds" / "train" / "train.json", {"__count__": 1, "data": [
        _item(video_path="train/videos/x.mp4")]})
    (q,) = load_questions(json_path)
    assert q.video_path == video and q.video_path.is_file()
    assert q.video_rel == "train/videos/x.mp4"


def test_private_layout_found_under_the_json_folder(tmp_path):
    video = _touch(tmp_path / "data" / "videos" / "x.mp4")
    json_path = _write(tmp_path / "data" / "private_test.json", [_item(video_path="videos/x.mp4")])
    assert load_questions(json_path)[0].video_path == video


def test_data_dir_wins_and_missing_video_lands_under_data_dir(tmp_path):
    _touch(tmp_path / "data" / "videos" / "x.mp4")
    elsewhere = _touch(tmp_path / "mount" / "videos" / "x.mp4")
    json_path = _write(tmp_path / "data" / "q.json", [_item("x", video_path="videos/x.mp4"),
                                                     _item("y", video_path="videos/missing.mp4")])
    x, y = load_questions(json_path, data_dir=tmp_path / "mount")
    assert x.video_path == elsewhere
    assert y.video_path == tmp_path / "mount" / "videos" / "missing.mp4"


def test_a_data_dir_given_is_the_only_root(tmp_path):
    """--data-dir is never passed over for the JSON's folder, even where that folder holds the clip: a wrong
    --data-dir must show, not be silently ignored."""
    _touch(tmp_path / "data" / "videos" / "x.mp4")
    (tmp_path / "empty").mkdir()
    json_path = _write(tmp_path / "data" / "q.json", [_item("x", video_path="videos/x.mp4")])
    (x,) = load_questions(json_path, data_dir=tmp_path / "empty")
    assert x.video_path == tmp_path / "empty" / "videos" / "x.mp4"


def test_data_dir_that_does_not_exist_is_refused_naming_it(tmp_path):
    json_path = _write(tmp_path / "data" / "q.json", [_item("x", video_path="videos/x.mp4")])
    with pytest.raises(QuestionFileError) as err:
        load_questions(json_path, data_dir=tmp_path / "nowhere")
    assert str(err.value).startswith(f"--data-dir {tmp_path / 'nowhere'}: no such folder")


def test_every_video_missing_is_refused_naming_the_folders_tried_and_data_dir(tmp_path):
    """A question file moved away from its videos would answer everything with the prior letter."""
    json_path = _write(tmp_path / "moved" / "q.json", [_item("x", video_path="train/videos/x.mp4"),
                                                      _item("y", video_path="train/videos/y.mp4")])
    questions = load_questions(json_path)
    with pytest.raises(QuestionFileError) as err:
        missing_videos(questions, json_path, None)
    message = str(err.value)
    assert message.startswith(f"{json_path}: none of its 2 videos exists under {tmp_path / 'moved'} (the question "
                              f"file's folder) or {tmp_path} (its parent)")
    assert "pass --data-dir DIR with the clips at DIR/train/videos/x.mp4." in message and "\n" not in message
    (tmp_path / "mount").mkdir()
    with pytest.raises(QuestionFileError, match=f"under --data-dir {tmp_path / 'mount'},"):
        missing_videos(load_questions(json_path, tmp_path / "mount"), json_path, tmp_path / "mount")
    video = _touch(tmp_path / "moved" / "train" / "videos" / "x.mp4")  # one found: the others are per-question errors
    assert missing_videos(load_questions(json_path), json_path, None) == [video.with_name("y.mp4")]
    assert missing_videos([], json_path, None) == []


def test_missing_video_lands_under_the_json_folder(tmp_path):
    json_path = _write(tmp_path / "d" / "q.json", [_item(video_path="videos/gone.mp4")])
    assert load_questions(json_path)[0].video_path == tmp_path / "d" / "videos" / "gone.mp4"


def test_relative_json_path_gives_absolute_video_path(tmp_path, monkeypatch):
    _write(tmp_path / "q.json", [_item()])
    monkeypatch.chdir(tmp_path)
    assert load_questions("q.json")[0].video_path == tmp_path / "videos" / "a.mp4"


def test_dotdot_inside_the_root_is_fine(tmp_path):
    video = _touch(tmp_path / "videos" / "a.mp4")
    json_path = _write(tmp_path / "q.json", [_item(video_path="other/../videos/a.mp4")])
    assert load_questions(json_path)[0].video_path == video


@pytest.mark.parametrize("video_rel", ["../outside.mp4", "videos/../../outside.mp4", "..", "/etc/passwd",
                                       "/tmp/x.mp4", ".", "videos/..", "a\x00b.mp4"])
def test_escaping_or_absolute_video_paths_are_refused(tmp_path, video_rel):
    _touch(tmp_path / "outside.mp4")
    json_path = _write(tmp_path / "d" / "q.json", [_item("q_bad", video_path=video_rel)])
    with pytest.raises(QuestionFileError) as err:
        load_questions(json_path)
    assert "q.json" in str(err.value) and "q_bad" in str(err.value) and "'video_path'" in str(err.value)


def test_symlink_leaving_the_root_marks_the_clip_refused(tmp_path):
    # the file itself is fine, the filesystem is not: the question loads with a video_error, so the
    # pipeline never opens the clip and the rest of the run goes on (tests/test_hostile.py runs it)
    secret = _touch(tmp_path / "outside" / "secret.mp4")
    (tmp_path / "ds" / "train" / "videos").mkdir(parents=True)
    os.symlink(secret, tmp_path / "ds" / "train" / "videos" / "evil.mp4")
    json_path = _write(tmp_path / "ds" / "train" / "train.json", [_item("train_0007", video_path="train/videos/evil.mp4")])
    (q,) = load_questions(json_path)
    assert "leaves the dataset root" in q.video_error and "symlink" in q.video_error
    with pytest.raises(QuestionFileError, match=r"train\.json: field 'video_path' .*symlink"):
        resolve_video("train/videos/evil.mp4", json_path, None)


def test_symlinked_directory_leaving_the_root_marks_the_clip_refused(tmp_path):
    _touch(tmp_path / "outside" / "a.mp4")
    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "data" / "videos")
    json_path = _write(tmp_path / "data" / "q.json", [_item("q9", video_path="videos/a.mp4")])
    (q,) = load_questions(json_path)
    assert q.video_error and "leaves the dataset root" in q.video_error


def test_symlinks_inside_the_root_and_a_symlinked_root_are_fine(tmp_path):
    real_video = _touch(tmp_path / "real" / "clips" / "a.mp4")
    os.symlink(tmp_path / "real" / "clips", tmp_path / "real" / "videos")
    os.symlink(tmp_path / "real", tmp_path / "mounted")
    json_path = _write(tmp_path / "real" / "q.json", [_item()])
    (q,) = load_questions(tmp_path / "mounted" / "q.json")
    assert q.video_path == tmp_path / "mounted" / "videos" / "a.mp4"
    assert q.video_path.resolve() == real_video.resolve()
    assert json_path.is_file()


def test_resolve_video_directly(tmp_path):
    video = _touch(tmp_path / "ds" / "public_test" / "videos" / "v.mp4")
    json_path = tmp_path / "ds" / "public_test" / "public_test.json"
    assert resolve_video("public_test/videos/v.mp4", json_path, None) == video
    assert resolve_video("public_test/videos/v.mp4", json_path, tmp_path / "ds") == video
    with pytest.raises(QuestionFileError, match="public_test.json: field 'video_path'"):
        resolve_video("../../v.mp4", json_path, None)


# --- malformed files ------------------------------------------------------

def _drop(field):
    def edit(item):
        del item[field]
    return edit


def _set(field, value):
    def edit(item):
        item[field] = value
    return edit


# (case, edit of the second item, field named in the message)
ITEM_CASES = [
    ("missing question", _drop("question"), "question"),
    ("missing choices", _drop("choices"), "choices"),
    ("missing video_path", _drop("video_path"), "video_path"),
    ("empty question", _set("question", "   "), "question"),
    ("question not a string", _set("question", 7), "question"),
    ("empty choices", _set("choices", []), "choices"),
    ("choices a dict", _set("choices", {"A": "x"}), "choices"),
    ("choices a string", _set("choices", "A. x, B. y"), "choices"),
    ("one choice", _set("choices", ["A. x"]), "choices"),
    ("non-string choice", _set("choices", ["A. x", 2]), "choices"),
    ("null choice", _set("choices", ["A. x", None]), "choices"),
    ("blank choice", _set("choices", ["A. x", " "]), "choices"),
    ("27 choices", _set("choices", [f"c{i}" for i in range(27)]), "choices"),
    ("answer not among choices", _set("answer", "C. Vàng"), "answer"),
    ("answer a letter", _set("answer", 1), "answer"),
    ("support_frames negative", _set("support_frames", [1.0, -0.5]), "support_frames"),
    ("support_frames NaN", _set("support_frames", [float("nan")]), "support_frames"),
    ("support_frames infinite", _set("support_frames", [float("inf")]), "support_frames"),
    ("support_frames huge int", _set("support_frames", [10 ** 400]), "support_frames"),
    ("support_frames string", _set("support_frames", ["1.5"]), "support_frames"),
    ("support_frames bool", _set("support_frames", [True]), "support_frames"),
    ("support_frames scalar", _set("support_frames", 1.5), "support_frames"),
    ("video_path empty", _set("video_path", ""), "video_path"),
    ("video_path a list", _set("video_path", ["a.mp4"]), "video_path"),
    ("video_path absolute", _set("video_path", "/data/videos/a.mp4"), "video_path"),
]


@pytest.mark.parametrize("edit,field", [c[1:] for c in ITEM_CASES], ids=[c[0] for c in ITEM_CASES])
def test_bad_item_names_file_item_and_field(tmp_path, edit, field):
    items = [_item("q_0001"), _item("q_0002")]
    edit(items[1])
    json_path = _write(tmp_path / "bad.json", {"__count__": 2, "data": items})
    with pytest.raises(QuestionFileError) as err:
        load_questions(json_path)
    message = str(err.value)
    assert message.startswith("bad.json: item q_0002: ") and f"'{field}'" in message
    assert message.endswith(".") and "\n" not in message


@pytest.mark.parametrize("bad_id", [None, "", 12, " padded ", "a\nb"], ids=["null", "empty", "number", "padded",
                                                                         "newline"])
def test_bad_id_is_named_by_position_counted_from_1(tmp_path, bad_id):
    items = [_item("q_0001"), _item(bad_id)]  # the second item: "#2", with its 0-based index for programs
    label = "item #2 (index 1)"
    with pytest.raises(QuestionFileError) as err:
        load_questions(_write(tmp_path / "bad.json", items))
    assert str(err.value).startswith(f"bad.json: {label}: field 'id'")


def test_missing_id_is_named_by_index(tmp_path):
    items = [_item("q_0001"), _item("q_0002")]
    del items[1]["id"]
    with pytest.raises(QuestionFileError, match=r"^bad\.json: item #2 \(index 1\): field 'id'.*missing"):
        load_questions(_write(tmp_path / "bad.json", items))


def test_duplicate_id(tmp_path):
    with pytest.raises(QuestionFileError, match=r"^bad\.json: item q_0001: field 'id' repeats"):
        load_questions(_write(tmp_path / "bad.json", [_item("q_0001"), _item("q_0002"), _item("q_0001")]))


def test_item_not_an_object(tmp_path):
    with pytest.raises(QuestionFileError, match=r"^bad\.json: item #2 \(index 1\) must be an object \(got list\)\.$"):
        load_questions(_write(tmp_path / "bad.json", [_item(), ["not", "an", "item"]]))


# (case, file bytes, words the message must contain besides the file name)
FILE_CASES = [
    ("bad __count__", json.dumps({"__count__": 3, "data": [_item()]}).encode(), ["'__count__'", "3", "1 items"]),
    ("__count__ not a number", json.dumps({"__count__": "1", "data": [_item()]}).encode(), ["'__count__'"]),
    ("__count__ bool", json.dumps({"__count__": True, "data": [_item()]}).encode(), ["'__count__'"]),
    ("invalid JSON", b'{"data": [', ["not valid JSON", "line 1"]),
    ("empty file", b"", ["not valid JSON"]),
    ("non-UTF-8 bytes", b'{"data": ["\xff\xfe"]}', ["UTF-8"]),
    ("top-level number", b"42", ["top level", "int"]),
    ("top-level string", b'"data"', ["top level", "str"]),
    ("missing data", json.dumps({"__count__": 0}).encode(), ["'data'", "missing"]),
    ("data not a list", json.dumps({"data": {"0": _item()}}).encode(), ["'data'", "dict"]),
    ("nested too deeply", b"[" * 100_000 + b"]" * 100_000, ["nested"]),
]


@pytest.mark.parametrize("content,words", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_bad_file_names_the_file(tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(QuestionFileError) as err:
        load_questions(path)
    message = str(err.value)
    assert message.startswith("bad.json: ") and message.endswith(".") and "\n" not in message
    for word in words:
        assert word in message


def test_missing_file_and_directory(tmp_path):
    """A file that cannot be read is named by the path given, not its name alone: the folder is usually what
    is wrong."""
    with pytest.raises(QuestionFileError) as err:
        load_questions(tmp_path / "sub" / "nope.json")
    path = tmp_path / "sub" / "nope.json"
    assert str(err.value) == f"{path}: cannot read the question file (No such file or directory)."
    with pytest.raises(QuestionFileError, match="cannot read"):
        load_questions(tmp_path)


def test_utf8_bom_and_empty_data_are_accepted(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"__count__": 1, "data": [_item()]}).encode())
    assert len(load_questions(path)) == 1
    assert load_questions(_write(tmp_path / "empty.json", {"__count__": 0, "data": []})) == []


# --- fuzz -----------------------------------------------------------------

_scalars = st.none() | st.booleans() | st.integers(min_value=-(10 ** 30), max_value=10 ** 30) \
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
_json = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
_choice_text = st.sampled_from(["A. Đúng", "B. Sai", "C.100 km/h", "A.", "", "  ", "Có", "x" * 5000]) \
    | st.text(max_size=30)
_path_text = st.sampled_from(["videos/a.mp4", "train/videos/b.mp4", "../x.mp4", "/abs.mp4", ".", "a/../b",
                              "a\x00b", "\ud800.mp4", "x" * 5000, ""]) | st.text(max_size=30)
_fields = {
    "id": st.text(max_size=12) | _json,
    "question": st.text(max_size=40) | st.just("q" * 10_000) | _json,
    "choices": st.lists(_choice_text, max_size=9) | _json,
    "answer": _choice_text | _json,
    "support_frames": st.lists(st.floats() | st.integers() | _scalars, max_size=4) | _json,
    "video_path": _path_text | _json,
    "_unused_": _json,
}
_items = st.fixed_dictionaries({}, optional=_fields) | _json
_docs = st.lists(_items, max_size=5) | st.fixed_dictionaries(
    {"data": st.lists(_items, max_size=5)}, optional={"__count__": st.integers(0, 6) | _json}) | _json


def _load_or_refuse(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.json"
        path.write_bytes(content)
        try:
            questions = load_questions(path)
        except QuestionFileError as err:
            assert str(err).startswith("fuzz.json: ")
            return
        for q in questions:
            assert 2 <= q.num_choices <= 26 and len(q.raw_choices) == q.num_choices
            assert q.answer is None or q.answer in q.letters
            assert all(math.isfinite(t) and t >= 0 for t in q.support_frames)
            assert q.video_path.is_absolute()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_docs)
def test_fuzz_items_load_or_raise_question_file_error(doc):
    _load_or_refuse(json.dumps(doc).encode("utf-8", "surrogatepass"))


@settings(max_examples=100, deadline=None)
@given(st.lists(_items, min_size=1, max_size=3), st.data())
def test_fuzz_mostly_valid_items(items, data):
    # Start from valid items so the fuzz also reaches the later checks.
    doc = [_item(f"id{i}") for i in range(3)]
    for i, item in enumerate(items):
        if isinstance(item, dict):
            doc[i].update(item)
        else:
            doc[i] = item
    _load_or_refuse(json.dumps(doc).encode("utf-8", "surrogatepass"))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_bytes(content):
    _load_or_refuse(content)

