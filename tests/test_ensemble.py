"""roadbuddy-ensemble on hand-written run folders: the combination, the files, the refusals, the fit."""
from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
from helpers import read_rows, records_of

from roadbuddy.data.digest import file_sha256
from roadbuddy.submit import ensemble_cli
from roadbuddy.submit.ensemble import combine

SETTINGS = {"model": "m", "max_frames": 16, "answer_mode": "score"}


def write_questions(folder: Path, choices: dict[str, int], answers: dict[str, str] | None = None) -> Path:
    """A question file in the RoadBuddy layout: id -> number of choices ("A. a", "B. b", ...), and the right
    letter of each when given (a labeled split)."""
    folder.mkdir(parents=True, exist_ok=True)
    items = [{"id": qid, "question": "?", "choices": [f"{letter}. {letter.lower()}" for letter in "ABCD"[:n]],
              "video_path": f"videos/{qid}.mp4",
              **({"answer": f"{answers[qid]}. {answers[qid].lower()}"} if answers else {})}
             for qid, n in choices.items()]
    path = folder / "questions.json"
    path.write_text(json.dumps({"__count__": len(items), "data": items}), encoding="utf-8")
    return path


def score(qid: str, logs: dict[str, float], time_ms: float = 10.0, with_logprobs: bool = True) -> dict:
    """A score-mode record from (unnormalised) log-probabilities."""
    top = max(logs.values())
    total = top + math.log(sum(math.exp(v - top) for v in logs.values()))
    logprobs = {k: v - total for k, v in logs.items()}
    record = {"id": qid, "answer": max(logprobs, key=logprobs.get), "mode": "score",
              "probs": {k: round(math.exp(v), 6) for k, v in logprobs.items()}, "time_ms": time_ms}
    if with_logprobs:
        record["logprobs"] = logprobs
    return record


def error(qid: str, answer: str = "A", time_ms: float = 5.0) -> dict:
    return {"id": qid, "answer": answer, "mode": "error-prior", "error": "video unreadable", "time_ms": time_ms}


def write_run(folder: Path, questions: Path | None, records: list[dict], settings: dict | None = None,
              shards: int = 0) -> Path:
    """A run folder as roadbuddy-predict leaves it: run.json (naming `questions` unless None, as older runs) and
    predictions.jsonl, or `shards` torchrun shards with the records dealt round-robin."""
    folder.mkdir(parents=True, exist_ok=True)
    info: dict = {"settings": settings or SETTINGS}
    if questions is not None:
        info["questions"] = {"file": str(questions.resolve()), "sha256": file_sha256(questions),
                             "count": len(json.loads(questions.read_text())["data"])}
    (folder / "run.json").write_text(json.dumps(info), encoding="utf-8")
    names = [f"predictions.rank{r}.jsonl" for r in range(shards)] if shards else ["predictions.jsonl"]
    for r, name in enumerate(names):
        lines = [json.dumps(rec) + "\n" for i, rec in enumerate(records) if i % len(names) == r]
        (folder / name).write_text("".join(lines), encoding="utf-8")
    return folder


def ensemble(*argv) -> tuple[int, str]:
    """roadbuddy-ensemble's main() in this process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = ensemble_cli.main([str(a) for a in argv])
    return code, err.getvalue()


def by_id(folder: Path) -> dict[str, dict]:
    return {r["id"]: r for r in records_of(folder / "predictions.jsonl")}


@pytest.fixture
def two_runs(tmp_path):
    """Two runs over q1 (4 choices), q2 (2 choices), q3 (4 choices)."""
    qfile = write_questions(tmp_path / "data", {"q1": 4, "q2": 2, "q3": 4})
    a = write_run(tmp_path / "a", qfile, [score("q1", {"A": 2.0, "B": 1.0, "C": 0.0, "D": -1.0}, 1000.0),
                                          score("q2", {"A": 0.0, "B": 0.5}, 2000.0),
                                          score("q3", {"A": 0.0, "B": 3.0, "C": 0.0, "D": 0.0}, 3000.0)])
    b = write_run(tmp_path / "b", qfile, [score("q1", {"A": 0.0, "B": 3.0, "C": 0.0, "D": 0.0}, 500.0),
                                          score("q2", {"A": 1.0, "B": 0.0}, 700.0),
                                          score("q3", {"A": 0.0, "B": 2.0, "C": 0.0, "D": 0.0}, 900.0)])
    return qfile, a, b


def expected(members: list[dict[str, float]], weights: list[float]) -> dict[str, float]:
    mean = {k: sum(w * m[k] for w, m in zip(weights, members)) for k in members[0]}
    total = math.log(sum(math.exp(v) for v in mean.values()))
    return {k: v - total for k, v in mean.items()}


# --- the combination ---------------------------------------------------------------------------------

def test_weighted_mean_of_log_probabilities_renormalised(two_runs, tmp_path):
    _, a, b = two_runs
    out = tmp_path / "ens"
    code, err = ensemble(a, b, "--weights", "3,1", "--output", out / "submission.csv")
    assert code == 0, err
    got = by_id(out)
    ra, rb = by_id(a), by_id(b)
    for qid in ("q1", "q2", "q3"):
        want = expected([ra[qid]["logprobs"], rb[qid]["logprobs"]], [0.75, 0.25])
        assert got[qid]["logprobs"] == pytest.approx(want, abs=1e-12)
        assert got[qid]["probs"] == {k: round(math.exp(v), 6) for k, v in want.items()}
        assert got[qid]["answer"] == max(want, key=want.get)
        assert got[qid]["mode"] == "ensemble"
    # q1: a says A (2 vs 1), b says B strongly; a's weight 3 makes A (0.75*2 > 0.75*1 + 0.25*3)
    assert got["q1"]["answer"] == "A"
    code, _ = ensemble(a, b, "--output", out / "submission.csv")  # equal weights: b's B wins
    assert code == 0 and by_id(out)["q1"]["answer"] == "B"
    assert json.loads((out / "run.json").read_text())["settings"]["weights"] == [0.5, 0.5]


def test_the_mean_is_taken_in_log_space_not_on_rounded_probabilities(tmp_path):
    """a is sure of A and puts B at e^-20, C at e^-40; b is sure of B and puts A at e^-30. Rounded, a's B and C
    and b's A are all 0 (a tie at log 1e-12 that gives A); the log-probabilities give B."""
    qfile = write_questions(tmp_path / "data", {"q1": 3})
    a = write_run(tmp_path / "a", qfile, [score("q1", {"A": 0.0, "B": -20.0, "C": -40.0})])
    b = write_run(tmp_path / "b", qfile, [score("q1", {"A": -30.0, "B": 0.0, "C": -40.0})])
    code, err = ensemble(a, b, "--output", tmp_path / "ens" / "submission.csv")
    assert code == 0, err
    record = by_id(tmp_path / "ens")["q1"]
    assert record["answer"] == "B"
    assert record["logprobs"] == pytest.approx({"A": -5 - math.log1p(math.exp(-5)), "B": -math.log1p(math.exp(-5)),
                                                "C": -30 - math.log1p(math.exp(-5))})


def test_members_opposite_in_log_space_combine_to_even_odds():
    assert combine([{"A": -1.0, "B": -2.0}, {"A": -2.0, "B": -1.0}], [0.5, 0.5]) == pytest.approx(
        {"A": math.log(0.5), "B": math.log(0.5)})


def test_a_tie_in_the_files_goes_to_the_earlier_letter(tmp_path):
    qfile = write_questions(tmp_path / "data", {"q1": 4})
    a = write_run(tmp_path / "a", qfile, [score("q1", {"A": 0.0, "B": 0.0, "C": 5.0, "D": 0.0})])
    b = write_run(tmp_path / "b", qfile, [score("q1", {"A": 0.0, "B": 5.0, "C": 0.0, "D": 0.0})])
    code, err = ensemble(a, b, "--output", tmp_path / "ens" / "submission.csv")
    assert code == 0, err
    assert by_id(tmp_path / "ens")["q1"]["answer"] == "B"  # B and C tie


def test_files_beside_the_submission(two_runs, tmp_path):
    qfile, a, b = two_runs
    out = tmp_path / "out" / "ens"
    code, err = ensemble(a, b, "--output", out / "submission.csv")
    assert code == 0, err
    records = records_of(out / "predictions.jsonl")
    assert [r["id"] for r in records] == ["q1", "q2", "q3"]  # the question file's order
    assert read_rows(out / "submission.csv") == [["id", "answer"], *([r["id"], r["answer"]] for r in records)]
    assert read_rows(out / "time_submission.csv") == [["id", "answer", "time"], ["q1", "B", "1500"],
                                                      ["q2", "A", "2700"], ["q3", "B", "3900"]]
    assert records[0]["members"] == [{"answer": "A", "time_ms": 1000.0}, {"answer": "B", "time_ms": 500.0}]
    assert records[0]["time_ms"] == 1500.0  # every member's time counts
    run = json.loads((out / "run.json").read_text())
    assert run["settings"] == {"ensemble": [SETTINGS, SETTINGS], "weights": [0.5, 0.5]}
    assert run["questions"] == {"file": str(qfile.resolve()), "sha256": file_sha256(qfile), "count": 3}
    info = json.loads((out / "ensemble.json").read_text())
    assert [m["folder"] for m in info["members"]] == [str(a.resolve()), str(b.resolve())]
    assert info["weights"] == [0.5, 0.5] and info["fit"] is None and info["over_time_limit"] is None
    assert not list(out.glob(".*tmp*"))
    # an ensemble folder is a run like any other: it can be a member, and rewritten in place
    code, err = ensemble(out, a, "--output", tmp_path / "ens2" / "submission.csv")
    assert code == 0, err
    code, err = ensemble(a, b, "--output", out / "submission.csv")
    assert code == 0, err


def test_summed_time_over_the_limit_is_said_in_one_line_and_the_files_are_written(tmp_path):
    qfile = write_questions(tmp_path / "data", {"q1": 2, "q2": 2, "q3": 2})
    a = write_run(tmp_path / "a", qfile, [score("q1", {"A": 1, "B": 0}, 20_000), score("q2", {"A": 1, "B": 0}, 100),
                                          score("q3", {"A": 1, "B": 0}, 15_000)])
    b = write_run(tmp_path / "b", qfile, [score("q1", {"A": 1, "B": 0}, 15_000), score("q2", {"A": 1, "B": 0}, 100),
                                          score("q3", {"A": 1, "B": 0}, 16_000)])
    out = tmp_path / "ens"
    code, err = ensemble(a, b, "--output", out / "submission.csv")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "--time-limit" in line]
    assert warnings == [("warning: 2 questions take longer than --time-limit 30 s with the members' times summed "
                         "(the slowest: q1, 35.0 s)")]
    assert json.loads((out / "ensemble.json").read_text())["over_time_limit"]["questions"] == 2
    assert read_rows(out / "time_submission.csv")[1] == ["q1", "A", "35000"]
    code, err = ensemble(a, b, "--output", out / "submission.csv", "--time-limit", "40")
    assert code == 0 and "--time-limit" not in err


def test_a_member_s_error_record_is_left_out_of_that_question(tmp_path):
    qfile = write_questions(tmp_path / "data", {"q1": 4, "q2": 2})
    a = write_run(tmp_path / "a", qfile, [score("q1", {"A": 0, "B": 0, "C": 2, "D": 0}, 100), error("q2", "B", 7)])
    b = write_run(tmp_path / "b", qfile, [error("q1", "A", 30), error("q2", "B", 8)])
    c = write_run(tmp_path / "c", qfile, [score("q1", {"A": 0, "B": 1, "C": 0, "D": 0}, 100), error("q2", "B", 9)])
    out = tmp_path / "ens"
    code, err = ensemble(a, b, c, "--weights", "1,5,1", "--output", out / "submission.csv")
    assert code == 0, err
    got = by_id(out)
    # q1: b's error is left out, a and c count equally (their weights renormalised)
    want = expected([by_id(a)["q1"]["logprobs"], by_id(c)["q1"]["logprobs"]], [0.5, 0.5])
    assert got["q1"]["logprobs"] == pytest.approx(want) and got["q1"]["answer"] == "C"
    assert got["q1"]["left_out"] == [str(b.resolve())]
    assert got["q1"]["members"][1] == {"answer": "A", "time_ms": 30, "error": "video unreadable"}
    assert got["q1"]["time_ms"] == 230  # the failed member's time still counts
    # q2: every member failed: the prior letter, recorded as an error
    assert got["q2"]["answer"] == "B" and got["q2"]["mode"] == "error-prior" and "every member" in got["q2"]["error"]
    assert "probs" not in got["q2"] and "left_out" not in got["q2"]
    assert "1 questions were combined without a member whose record is an error; 1 got the prior letter" in err


def test_records_without_logprobs_use_their_rounded_probabilities_and_say_so_once(tmp_path):
    qfile = write_questions(tmp_path / "data", {"q1": 2, "q2": 2})
    old = write_run(tmp_path / "old", qfile, [score("q1", {"A": 0, "B": 1}, with_logprobs=False),
                                              score("q2", {"A": 30, "B": 0}, with_logprobs=False)])
    new = write_run(tmp_path / "new", qfile, [score("q1", {"A": 0.5, "B": 0}), score("q2", {"A": 0, "B": 1})])
    out = tmp_path / "ens"
    code, err = ensemble(old, new, "--output", out / "submission.csv")
    assert code == 0, err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "2 records of" in notes[0] and str(old.resolve()) in notes[0]
    rounded = by_id(old)
    for qid in ("q1", "q2"):
        from_probs = {k: math.log(max(p, 1e-12)) for k, p in rounded[qid]["probs"].items()}
        assert by_id(out)[qid]["logprobs"] == pytest.approx(expected([from_probs, by_id(new)[qid]["logprobs"]],
                                                                     [0.5, 0.5]))
    assert rounded["q2"]["probs"]["B"] == 0.0  # log(0) would be -inf: the floor keeps it finite


def test_torchrun_shards_are_read_and_left_as_they_are(tmp_path):
    qfile = write_questions(tmp_path / "data", {"q1": 2, "q2": 2, "q3": 2})
    records = [score(q, {"A": 0, "B": 1}) for q in ("q1", "q2", "q3")]
    sharded = write_run(tmp_path / "sharded", qfile, records, shards=2)
    shard = sharded / "predictions.rank1.jsonl"
    with open(shard, "a", encoding="utf-8") as fh:
        fh.write('{"id": "q4", "ans')  # a torn tail of a rank still running: not ours to cut
    before = shard.read_bytes()
    single = write_run(tmp_path / "single", qfile, [score(q, {"A": 1, "B": 0}) for q in ("q1", "q2", "q3")])
    code, err = ensemble(sharded, single, "--output", tmp_path / "ens" / "submission.csv")
    assert code == 0, err
    assert sorted(by_id(tmp_path / "ens")) == ["q1", "q2", "q3"]
    assert shard.read_bytes() == before


def test_old_runs_without_a_named_question_file_need_test_json(tmp_path):
    qfile = write_questions(tmp_path / "data", {"q1": 2, "q2": 2})
    a = write_run(tmp_path / "a", None, [score("q1", {"A": 1, "B": 0}), score("q2", {"A": 1, "B": 0})])
    b = write_run(tmp_path / "b", None, [score("q1", {"A": 0, "B": 1}), score("q2", {"A": 1, "B": 0})])
    code, err = ensemble(a, b, "--output", tmp_path / "ens" / "submission.csv")
    assert code == 2 and "pass --test-json" in err
    code, err = ensemble(a, b, "--test-json", qfile, "--output", tmp_path / "ens" / "submission.csv")
    assert code == 0, err
    assert json.loads((tmp_path / "ens" / "run.json").read_text())["questions"]["sha256"] == file_sha256(qfile)


# --- refusals: exit 2, one sentence naming the folder and what is wrong -------------------------------

def refused(*argv) -> str:
    code, err = ensemble(*argv)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err  # one line
    return err


def test_refuses_fewer_than_two_runs(two_runs, tmp_path):
    _, a, _ = two_runs
    assert "at least 2 runs" in refused(a, "--output", tmp_path / "e" / "submission.csv")


def test_refuses_a_folder_without_run_json_or_predictions(two_runs, tmp_path):
    _, a, b = two_runs
    (b / "run.json").unlink()
    assert f"{b.resolve()} has no run.json" in refused(a, b, "--output", tmp_path / "e" / "submission.csv")
    write_run(b, write_questions(tmp_path / "data", {"q1": 4, "q2": 2, "q3": 4}), [])
    (b / "predictions.jsonl").unlink()
    assert f"{b.resolve()} has no predictions.jsonl" in refused(a, b, "--output", tmp_path / "e" / "submission.csv")
    assert "is not a folder" in refused(a, tmp_path / "nowhere", "--output", tmp_path / "e" / "submission.csv")


def test_refuses_runs_of_different_question_files(two_runs, tmp_path):
    _, a, _ = two_runs
    other = write_questions(tmp_path / "other", {"q1": 4, "q2": 2, "q3": 4, "q4": 2})
    c = write_run(tmp_path / "c", other, [score(q, {"A": 1, "B": 0}) for q in ("q1", "q2", "q3", "q4")])
    err = refused(a, c, "--output", tmp_path / "e" / "submission.csv")
    assert f"{c.resolve()} answered questions.json (sha256 {file_sha256(other)[:12]})" in err
    assert "same question file" in err
    # older runs (no question file in run.json): told apart by the ids they answered
    d = write_run(tmp_path / "d", None, [score(q, {"A": 1, "B": 0}) for q in ("q1", "q2", "q3", "q4")])
    err = refused(a, d, "--output", tmp_path / "e" / "submission.csv")
    assert f"{d.resolve()} answered other questions than {a.resolve()} (1 ids in one only, first: q4)" in err
    # an older run first does not hide two later runs of different files with the same ids
    edited = tmp_path / "edited" / "questions.json"
    edited.parent.mkdir()
    edited.write_text((tmp_path / "data" / "questions.json").read_text().replace('"?"', '"??"'))
    e = write_run(tmp_path / "e", edited, records_of(a / "predictions.jsonl"))
    old = write_run(tmp_path / "old", None, records_of(a / "predictions.jsonl"))
    assert f"{e.resolve()} answered questions.json (sha256 {file_sha256(edited)[:12]})" in refused(
        old, a, e, "--output", tmp_path / "e" / "submission.csv")


def test_refuses_a_member_missing_questions_naming_it_the_count_and_the_first_ids(two_runs, tmp_path):
    qfile, a, _ = two_runs
    c = write_run(tmp_path / "c", qfile, [score("q2", {"A": 1, "B": 0})])
    err = refused(a, c, "--output", tmp_path / "e" / "submission.csv")
    assert f"{c.resolve()} has no answer for 2 of the 3 questions of questions.json (first: q1, q3)" in err


def test_a_run_with_limit_answers_the_first_questions_of_the_file(tmp_path):
    qfile = write_questions(tmp_path / "data", {"q1": 2, "q2": 2, "q3": 2})
    runs = []
    for name in ("a", "b"):
        run = write_run(tmp_path / name, qfile, [score("q1", {"A": 1, "B": 0}), score("q2", {"A": 1, "B": 0})])
        info = json.loads((run / "run.json").read_text())
        info["questions"]["count"] = 2  # roadbuddy-predict --limit 2
        (run / "run.json").write_text(json.dumps(info))
        runs.append(run)
    code, err = ensemble(*runs, "--output", tmp_path / "ens" / "submission.csv")
    assert code == 0, err
    assert [row[0] for row in read_rows(tmp_path / "ens" / "submission.csv")[1:]] == ["q1", "q2"]


def test_refuses_bad_weights(two_runs, tmp_path):
    _, a, b = two_runs
    out = tmp_path / "e" / "submission.csv"
    assert "gives 3 weights for 2 runs" in refused(a, b, "--weights", "1,1,1", "--output", out)
    assert "-1 is not a non-negative number" in refused(a, b, "--weights", "1,-1", "--output", out)
    assert "'x' is not a number" in refused(a, b, "--weights", "1,x", "--output", out)
    assert "all 0" in refused(a, b, "--weights", "0,0", "--output", out)
    assert "--weights and --fit cannot be used together" in refused(a, b, "--weights", "1,1", "--fit", a, b,
                                                                    "--output", out)


def test_refuses_test_json_that_is_not_the_runs_file(two_runs, tmp_path):
    _, a, b = two_runs
    other = write_questions(tmp_path / "other", {"q1": 4, "q2": 2, "q3": 4})
    (other.parent / "x.json").write_text(other.read_text().replace('"?"', '"??"'))
    err = refused(a, b, "--test-json", other.parent / "x.json", "--output", tmp_path / "e" / "submission.csv")
    assert "is not the question file the runs answered" in err


def test_refuses_to_write_into_a_member_s_folder_or_over_another_run(two_runs, tmp_path):
    _, a, b = two_runs
    before = (a / "predictions.jsonl").read_bytes()
    assert "in the folder of the run" in refused(a, b, "--output", a / "submission.csv")
    assert (a / "predictions.jsonl").read_bytes() == before
    other = write_run(tmp_path / "other", None, [score("q1", {"A": 1, "B": 0})])
    assert "not an ensemble" in refused(a, b, "--output", other / "submission.csv")


# --- fitting the weights on a labeled split ----------------------------------------------------------

def labeled_runs(tmp_path, name: str, answers: dict[str, str]):
    """Two members' runs over a labeled split: a good one (right, fairly sure) and a noisy one (wrong on every
    third question, as sure)."""
    qfile = write_questions(tmp_path / name, {qid: 4 for qid in answers}, answers)
    good, noisy = [], []
    for i, (qid, right) in enumerate(answers.items()):
        good.append(score(qid, {letter: 2.0 if letter == right else 0.0 for letter in "ABCD"}))
        wrong = "ABCD"[("ABCD".index(right) + 1) % 4]
        said = wrong if i % 3 == 0 else right
        noisy.append(score(qid, {letter: 2.0 if letter == said else 0.0 for letter in "ABCD"}))
    other = {**SETTINGS, "model": "other"}
    return (write_run(tmp_path / f"{name}-good", qfile, good),
            write_run(tmp_path / f"{name}-noisy", qfile, noisy, settings=other))


def test_fit_gives_the_planted_good_member_the_larger_weight(tmp_path):
    answers = {f"q{i}": "ABCD"[i % 4] for i in range(24)}
    fit_good, fit_noisy = labeled_runs(tmp_path, "train", answers)
    good, noisy = labeled_runs(tmp_path, "test", {f"t{i}": "ABCD"[(i * 3) % 4] for i in range(6)})
    out = tmp_path / "ens"
    code, err = ensemble(noisy, good, "--fit", fit_noisy, fit_good, "--output", out / "submission.csv")
    assert code == 0, err
    fit = json.loads((out / "ensemble.json").read_text())["fit"]
    assert fit["weights"][1] > 0.8 and fit["weights"][0] < 0.2
    assert [m["accuracy"] for m in fit["members"]] == [pytest.approx(16 / 24), 1.0]
    # equal weights tie where the noisy member is wrong, and a tie goes to the earlier letter: wrong where the
    # right letter is D (q3, q15)
    assert fit["equal_weights"]["accuracy"] == pytest.approx(22 / 24) and fit["fitted_weights"]["accuracy"] == 1.0
    assert fit["fitted_weights"]["mean_log_likelihood"] > fit["equal_weights"]["mean_log_likelihood"]
    assert fit["questions"] == 24 and fit["optimizer"]["converged"]
    assert json.loads((out / "run.json").read_text())["settings"]["weights"] == fit["weights"]
    assert "fitted weights" in err and "member 2" in err
    # the same command gives the same weights (the start is fixed at equal weights)
    code, _ = ensemble(noisy, good, "--fit", fit_noisy, fit_good, "--output", out / "submission.csv")
    assert json.loads((out / "ensemble.json").read_text())["fit"]["weights"] == fit["weights"]


def test_fit_refuses_runs_of_other_settings_or_order_or_an_unlabeled_split(tmp_path):
    answers = {f"q{i}": "ABCD"[i % 4] for i in range(8)}
    fit_good, fit_noisy = labeled_runs(tmp_path, "train", answers)
    good, noisy = labeled_runs(tmp_path, "test", answers)
    out = tmp_path / "ens" / "submission.csv"
    err = refused(noisy, good, "--fit", fit_good, fit_noisy, "--output", out)  # swapped
    assert f"--fit run {fit_good.resolve()} has other answer settings than the member {noisy.resolve()} (model:" in err
    assert "gives 1 runs for 2 members" in refused(noisy, good, "--fit", fit_noisy, "--output", out)
    unlabeled_q = write_questions(tmp_path / "unlabeled", {qid: 4 for qid in answers})
    u1 = write_run(tmp_path / "u1", unlabeled_q, records_of(fit_noisy / "predictions.jsonl"),
                   settings={**SETTINGS, "model": "other"})
    u2 = write_run(tmp_path / "u2", unlabeled_q, records_of(fit_good / "predictions.jsonl"))
    assert "8 questions without an answer" in refused(noisy, good, "--fit", u1, u2, "--output", out)


def test_the_eval_report_scores_the_ensemble_against_each_member(tmp_path, capsys):
    """a is wrong on q0 and q1, b (surer) on q2: the ensemble sides with b, so against a it wins 2 and loses 1."""
    from evals import ensemble_report
    from evals.report import mcnemar_p

    answers = {f"q{i}": "ABCD"[i % 4] for i in range(6)}
    qfile = write_questions(tmp_path / "data", dict.fromkeys(answers, 4), answers)

    def said(qid, right, sure):
        letter = right if right else "ABCD"[("ABCD".index(answers[qid]) + 1) % 4]
        return score(qid, {x: sure if x == (answers[qid] if right else letter) else 0.0 for x in "ABCD"})

    a = write_run(tmp_path / "a", qfile, [said(q, q not in ("q0", "q1"), 2.0) for q in answers])
    b = write_run(tmp_path / "b", qfile, [said(q, q != "q2", 3.0) for q in answers], settings={**SETTINGS, "model": "b"})
    out = tmp_path / "ens"
    assert ensemble(a, b, "--output", out / "submission.csv")[0] == 0
    assert ensemble_report.main([str(out), "--out", str(tmp_path / "report")]) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["accuracy"]["correct"] == 5 and report["questions"] == 6
    vs_a, vs_b = report["members"]
    assert (vs_a["name"], vs_a["accuracy"]["correct"], vs_a["ensemble_wins"], vs_a["ensemble_losses"]) == ("a", 4, 2, 1)
    assert vs_a["mcnemar_p"] == mcnemar_p(2, 1)
    assert (vs_b["accuracy"]["correct"], vs_b["ensemble_wins"], vs_b["ensemble_losses"]) == (5, 0, 0)
    page = capsys.readouterr().out
    assert page == (tmp_path / "report" / "report.md").read_text()
    assert "- a: accuracy 66.7%; the ensemble wins 2, loses 1" in page and "model=b" in page  # what tells them apart
    assert ensemble_report.main([str(a)]) == 2 and "is not an ensemble's folder" in capsys.readouterr().err


def test_help_documents_every_flag_with_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        ensemble_cli.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--output", "--weights", "--fit", "--test-json", "--time-limit", "--verbose", "RUN_DIR"):
        assert flag in text
    assert "examples:" in text and "roadbuddy-ensemble out/" in text and "exit codes" in text
