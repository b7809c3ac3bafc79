"""Kill and resume: SIGKILL real runs at random points, resume, and end where an uninterrupted run ends.

The dataset mixes good clips with broken ones (a half-truncated mp4, text named
.mp4, a missing file), interleaved, so kills land before, on and after them.
After every kill: every answer completed before it is still in
predictions.jsonl byte for byte (only a torn last line may go), and a
submission.csv, if there is one, is whole. At the end: the submission equals
the uninterrupted run's row for row, and no good answer was ever made twice.

The short version (two kills) runs by default; `pytest -m slow` runs the soak.
"""
from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

import pytest
from helpers import cli_command, read_rows, records_of, run_main

from roadbuddy.data.questions import group_by_video, load_questions, prior_letter


def complete_part(data: bytes) -> bytes:
    return data[: data.rfind(b"\n") + 1]


def soak_dataset(root: Path, clips: int) -> Path:
    """A synthetic dataset with broken clips' questions interleaved among the good ones."""
    from roadbuddy.testing.checkpoints import write_synthetic_dataset

    questions_json = write_synthetic_dataset(root, clips=clips)
    videos = root / "train" / "videos"
    whole = (videos / "synthetic_000.mp4").read_bytes()
    (videos / "half.mp4").write_bytes(whole[: len(whole) // 2])  # decodes its first frames
    (videos / "notes.mp4").write_text("not a video\n" * 30)  # fails
    doc = json.loads(questions_json.read_text(encoding="utf-8"))
    broken = [("half", "train/videos/half.mp4"), ("notes", "train/videos/notes.mp4"),
              ("gone", "train/videos/missing.mp4")]
    items = doc["data"]
    for k, (name, rel) in enumerate(broken):
        for j, choices in enumerate([["A. Đỏ", "B. Xanh", "C. Vàng", "D. Không có"], ["A. Đúng", "B. Sai"]]):
            at = (k + 1) * len(items) // (len(broken) + 1)
            items.insert(at, {"id": f"broken_{name}_{j}", "question": "Đèn màu gì?", "choices": choices,
                              "video_path": rel})
    doc["__count__"] = len(items)
    questions_json.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return questions_json


def soak(tiny_checkpoint, tmp_path: Path, *, clips: int, kills: int, seed: int, anytime: float = 0.3) -> dict:
    """Kill `kills` runs (a share `anytime` at a random moment, the rest after random numbers of answers)."""
    questions_json = soak_dataset(tmp_path / "data", clips)
    total = len(load_questions(questions_json))
    reference = tmp_path / "reference"
    code, err = run_main("--model", tiny_checkpoint, "--test-json", questions_json,
                         "--output", reference / "submission.csv")
    assert code == 0, err

    rng = random.Random(seed)
    out = tmp_path / "soak"
    preds = out / "predictions.jsonl"
    cmd = cli_command("--model", tiny_checkpoint, "--test-json", questions_json, "--output", out / "submission.csv")
    stats = {"runs_killed": 0, "runs_finished_before_the_kill": 0, "killed_before_any_new_answer": 0,
             "torn_tails": 0, "answers_lost": 0, "answers_made_twice": 0}
    for _ in range(kills):
        before = complete_part(preds.read_bytes()) if preds.is_file() else b""
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if rng.random() >= anytime:  # after a random number of new answers...
            target = before.count(b"\n") + rng.randint(1, max(1, total // 3))
            deadline = time.time() + 120
            while proc.poll() is None and time.time() < deadline:
                if preds.is_file() and preds.read_bytes().count(b"\n") >= target:
                    break
                time.sleep(0.002)
        else:  # ...or at a random moment: starting up, loading the model, answering or writing the CSVs
            time.sleep(rng.uniform(0.2, 4.0))
        if proc.poll() is None:
            proc.kill()
            stats["runs_killed"] += 1
        else:
            stats["runs_finished_before_the_kill"] += 1
        proc.wait(timeout=60)

        after = preds.read_bytes() if preds.is_file() else b""
        stats["answers_lost"] += sum(line not in after.splitlines(keepends=True)
                                     for line in before.splitlines(keepends=True))
        assert after.startswith(before), "an answer completed before the kill was lost or changed"
        stats["torn_tails"] += bool(after) and not after.endswith(b"\n")
        stats["killed_before_any_new_answer"] += complete_part(after) == before
        for line in complete_part(after).splitlines():
            json.loads(line)  # every complete line is a whole record
        if (out / "submission.csv").exists():  # atomic: whole or absent, never half written
            assert len(read_rows(out / "submission.csv")) == total + 1

    code, err = run_main(*cmd[cmd.index("--model"):])  # the last run goes to the end
    assert code == 0, err
    assert read_rows(out / "submission.csv") == read_rows(reference / "submission.csv")  # row for row
    assert [r[:2] for r in read_rows(out / "time_submission.csv")] == \
        [r[:2] for r in read_rows(reference / "time_submission.csv")]

    records = [json.loads(line) for line in preds.read_text(encoding="utf-8").splitlines()]
    good = [r["id"] for r in records if not r.get("error")]
    stats["answers_made_twice"] = len(good) - len(set(good))  # failed videos are retried by design; answers not
    ref = {r["id"]: r for r in map(json.loads, (reference / "predictions.jsonl").read_text().splitlines())}
    final = {r["id"]: r for r in records}
    assert set(final) == set(ref)
    for qid, r in final.items():
        assert r["answer"] == ref[qid]["answer"] and r["mode"] == ref[qid]["mode"], qid
        for letter, p in r.get("probs", {}).items():
            # float32 probabilities in [0, 1]; a resumed run may pack a clip's questions differently from the
            # reference (other summation orders): 1e-4 is ~1,000 float32 eps, far below what changes an answer
            assert p == pytest.approx(ref[qid]["probs"][letter], abs=1e-4), qid
    stats["questions"] = total
    print(f"soak (seed {seed}): {stats}")
    assert stats["answers_lost"] == 0 and stats["answers_made_twice"] == 0
    return stats


def test_kill_twice_and_resume(tiny_checkpoint, tmp_path):
    stats = soak(tiny_checkpoint, tmp_path, clips=4, kills=2, seed=3, anytime=0.0)
    assert stats["runs_killed"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12])
def test_soak_kill_and_resume_at_random_points(tiny_checkpoint, tmp_path, seed):
    stats = soak(tiny_checkpoint, tmp_path, clips=10, kills=10, seed=seed)
    assert stats["runs_killed"] >= 5


def test_a_resumed_run_answers_a_clip_that_failed_before(tiny_checkpoint, tmp_path):
    """README: "A resumed run tries failed clips again". A clip unreadable during the first run (moved away)
    gets error rows; with the file back, the rerun answers exactly that clip's questions, for real, and the
    submission becomes the clean run's (rows that were the prior change where the model says otherwise)."""
    from roadbuddy.testing.checkpoints import write_synthetic_dataset

    questions_json = write_synthetic_dataset(tmp_path / "data", clips=4)
    questions = load_questions(questions_json)
    code, err = run_main("--model", tiny_checkpoint, "--test-json", questions_json,
                         "--output", tmp_path / "reference" / "submission.csv")
    assert code == 0, err
    clean = dict(read_rows(tmp_path / "reference" / "submission.csv")[1:])
    # break a clip whose clean answers are not all the prior, so that answering it for real changes the CSV
    video, target = next((v, qs) for v, qs in group_by_video(questions)
                         if any(clean[q.id] != prior_letter(q.num_choices) for q in qs))
    target_ids = sorted(q.id for q in target)
    out = tmp_path / "out"
    args = ["--model", tiny_checkpoint, "--test-json", questions_json, "--output", out / "submission.csv"]

    away = video.with_name(video.name + ".away")
    video.rename(away)
    try:
        code, err = run_main(*args)
    finally:
        away.rename(video)
    assert code == 0, err
    first = (out / "predictions.jsonl").read_bytes()
    assert sorted(r["id"] for r in records_of(out / "predictions.jsonl") if r.get("error")) == target_ids
    rows = dict(read_rows(out / "submission.csv")[1:])
    assert all(rows[q.id] == prior_letter(q.num_choices) for q in target)

    code, err = run_main(*args)
    assert code == 0, err
    assert f"resuming: {len(questions) - len(target)} of {len(questions)}" in err  # error rows are not done
    after = (out / "predictions.jsonl").read_bytes()
    assert after.startswith(first)  # the first run's lines stay, error rows included
    new = [json.loads(line) for line in after[len(first):].splitlines()]
    assert sorted(r["id"] for r in new) == target_ids  # only the failed clip, nothing else recomputed
    assert all(r["mode"] == "score" and "error" not in r for r in new)
    assert read_rows(out / "submission.csv") == read_rows(tmp_path / "reference" / "submission.csv")
    rows = dict(read_rows(out / "submission.csv")[1:])
    assert any(rows[q.id] != prior_letter(q.num_choices) for q in target)
