"""End to end: the real CLI in a subprocess on encoded clips with a tiny checkpoint."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from roadbuddy.data import load_questions

from helpers import cli_command, predict, read_rows, run_main


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from roadbuddy.testing import write_synthetic_dataset

    # 6 clips, 1-3 questions each, 2 and 4 choices, support frames
    return write_synthetic_dataset(tmp_path_factory.mktemp("e2e-data"), clips=6)


def check_submission(out: Path, questions_json: Path) -> list[dict]:
    questions = load_questions(questions_json)
    sub = read_rows(out / "submission.csv")
    timed = read_rows(out / "time_submission.csv")
    assert sub[0] == ["id", "answer"] and timed[0] == ["id", "answer", "time"]
    assert [r[0] for r in sub[1:]] == [q.id for q in questions]  # file order, every id exactly once
    for q, row, trow in zip(questions, sub[1:], timed[1:]):
        assert row[1] in q.letters, (q.id, row)  # a valid uppercase letter for this question
        assert trow[:2] == row and float(trow[2]) > 0
    records = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    by_id = {r["id"]: r for r in records}
    for q, row in zip(questions, sub[1:]):
        r = by_id[q.id]
        assert r["answer"] == row[1]
        assert set(r["probs"]) == set(q.letters)
        assert r["frames"] == sorted(r["frames"]) and r["tiles"] >= 1
    return records


def test_end_to_end_writes_both_csvs(tiny_checkpoint, dataset, tmp_path):
    out = tmp_path / "out"
    res = predict("--model", tiny_checkpoint, "--test-json", dataset, "--output", out / "submission.csv")
    assert res.returncode == 0, res.stderr
    records = check_submission(out, dataset)
    assert "VRAM estimate" in res.stderr or "VRAM estimate skipped" in res.stderr
    assert "attention sdpa" in res.stderr
    assert len(records) == len(load_questions(dataset))


def test_same_answers_with_and_without_shared_prefix_and_generate(tiny_checkpoint, dataset, tmp_path):
    runs = {}
    for name, flags in {"shared": [], "plain": ["--no-share-prefix", "--prefetch", "0"]}.items():
        out = tmp_path / name
        res = predict("--model", tiny_checkpoint, "--test-json", dataset, "--output", out / "submission.csv", *flags)
        assert res.returncode == 0, res.stderr
        runs[name] = {r["id"]: r for r in check_submission(out, dataset)}
    for qid, rec in runs["shared"].items():
        assert rec["answer"] == runs["plain"][qid]["answer"]
        for letter, p in rec["probs"].items():
            assert p == pytest.approx(runs["plain"][qid]["probs"][letter], abs=1e-4)


def test_generate_mode_records_raw_text_and_fallbacks(tiny_checkpoint, dataset, tmp_path):
    out = tmp_path / "gen"
    res = predict("--model", tiny_checkpoint, "--test-json", dataset, "--output", out / "submission.csv",
                  "--answer-mode", "generate", "--max-new-tokens", "3")
    assert res.returncode == 0, res.stderr
    records = check_submission(out, dataset)
    for r in records:
        assert "raw" in r
        # random weights rarely say a letter: an unparsed answer must fall back to score, never a silent "A"
        if r["mode"] == "generate-fallback-score":
            assert r["fallback"] is True and r["answer"] == max(r["probs"], key=r["probs"].get)


def test_killed_run_resumes_without_recomputing(tiny_checkpoint, tmp_path):
    from roadbuddy.testing import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", clips=10)
    total = len(load_questions(data))
    out = tmp_path / "out"
    cmd = cli_command("--model", tiny_checkpoint, "--test-json", data, "--output", out / "submission.csv")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    preds = out / "predictions.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if preds.is_file() and preds.read_bytes().count(b"\n") >= 1:
            proc.send_signal(signal.SIGSTOP)  # freeze it mid-run, then kill it without warning
            break
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    before = preds.read_text(encoding="utf-8").splitlines()
    assert 1 <= len(before) < total, "the run was not caught midway"
    assert not (out / "submission.csv").exists()

    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    assert f"resuming: {len(before)} of {total}" in res.stderr
    after = preds.read_text(encoding="utf-8").splitlines()
    assert after[:len(before)] == before  # finished answers untouched
    ids = [json.loads(x)["id"] for x in after]
    assert len(ids) == len(set(ids)) == total  # nothing recomputed, nothing missing
    check_submission(out, data)


def test_missing_video_gets_prior_row_and_is_reported(tiny_checkpoint, dataset, tmp_path):
    items = json.loads(dataset.read_text(encoding="utf-8"))
    items["data"][0]["video_path"] = "train/videos/does_not_exist.mp4"
    broken = dataset.parent / "broken.json"
    broken.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "out"
    res = predict("--model", tiny_checkpoint, "--test-json", broken, "--output", out / "submission.csv")
    assert res.returncode == 0, res.stderr
    first = items["data"][0]
    assert f"{first['id']}:" in res.stderr and "does_not_exist.mp4" in res.stderr
    rows = dict(read_rows(out / "submission.csv")[1:])
    assert rows[first["id"]] == ("B" if len(first["choices"]) == 2 else "A")
    strict = predict("--model", tiny_checkpoint, "--test-json", broken, "--output", tmp_path / "s" / "submission.csv",
                     "--strict")
    assert strict.returncode == 1


@pytest.mark.parametrize("mutate,field", [
    (lambda it: it.pop("question"), "question"),
    (lambda it: it.update(choices=[]), "choices"),
    (lambda it: it.update(choices="A. Đúng"), "choices"),
    (lambda it: it.update(answer="Z. nowhere"), "answer"),
    (lambda it: it.update(support_frames=[-1.0]), "support_frames"),
    (lambda it: it.update(video_path="../../etc/passwd"), "video_path"),
])
def test_bad_question_file_exits_2_naming_item_and_field(tiny_checkpoint, dataset, tmp_path, mutate, field):
    items = json.loads(dataset.read_text(encoding="utf-8"))
    target = items["data"][2]
    mutate(target)
    bad = dataset.parent / f"bad_{field}.json"
    bad.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    res = predict("--model", tiny_checkpoint, "--test-json", bad, "--output", tmp_path / "o" / "submission.csv")
    assert res.returncode == 2
    message = res.stderr.strip().splitlines()[-1]
    assert target["id"] in message and field in message
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "o" / "submission.csv").exists()


def test_usage_errors_exit_2(tmp_path):
    assert predict("--max-frames", "600", "--test-json", "x.json").returncode == 2
    res = predict("--test-json", tmp_path / "missing.json", "--output", tmp_path / "o" / "s.csv")
    assert res.returncode == 2 and "missing.json" in res.stderr


OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_CACHE": None, "HF_HUB_DISABLE_TELEMETRY": "1",
           "TRANSFORMERS_CACHE": None, "HUGGINGFACE_HUB_CACHE": None, "HF_DATASETS_CACHE": None}


def test_demo_answers_the_tiny_task_offline_with_the_shipped_model(tmp_path):
    """`roadbuddy-predict --demo` with the hub unreachable by construction (offline flags, an empty Hugging Face
    home): the trained tiny model shipped in the package answers every held-out clip right."""
    home = tmp_path / "hf-home"
    home.mkdir()
    res = predict("--demo", "--output", tmp_path / "demo" / "submission.csv", env={**OFFLINE, "HF_HOME": str(home)})
    assert res.returncode == 0, res.stderr
    assert "demo: 48 of 48 answers right (100%)" in res.stderr
    assert re.search(r"^model: trained weights from \S*roadbuddy/tiny_seeing on cpu", res.stderr, re.M), res.stderr
    assert len(read_rows(tmp_path / "demo" / "submission.csv")) == 49
    assert not list(home.iterdir())  # nothing was fetched or cached


def test_run_says_random_weights_for_a_random_checkpoint(tiny_checkpoint, dataset, tmp_path):
    code, err = run_main("--model", tiny_checkpoint, "--test-json", dataset, "--output", tmp_path / "submission.csv")
    assert code == 0, err
    assert f"model: random weights from {tiny_checkpoint} on cpu" in err
