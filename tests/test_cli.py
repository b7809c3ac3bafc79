"""End to end: the real CLI in a subprocess on encoded clips with a tiny checkpoint."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import cli_command, predict, read_rows, run_main

from roadbuddy.data.questions import load_questions
from roadbuddy.families.registry import FAMILIES


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from roadbuddy.testing.checkpoints import write_synthetic_dataset

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
    assert "VRAM" not in res.stderr  # an estimate of GPU memory means nothing to a CPU run (test_pipeline: on GPU)
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
    from roadbuddy.testing.checkpoints import write_synthetic_dataset

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
    assert (f"1 of 6 videos do not exist under {dataset.parent} (the question file's folder) or "
            f"{dataset.parent.parent} (its parent); if they are elsewhere, pass --data-dir") in res.stderr
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
    assert res.returncode == 2
    # the path as given, not only the file name: the folder is what a newcomer gets wrong
    assert res.stderr.strip() == (f"error: {tmp_path / 'missing.json'}: cannot read the question file "
                                  "(No such file or directory).")


def test_question_file_moved_away_from_its_videos_exits_2_naming_the_folders_and_data_dir(dataset, tmp_path):
    """Every clip missing would answer every question with the prior letter and exit 0: refused, before any
    model loads (the model named here does not exist), with the folders tried and --data-dir named."""
    moved = tmp_path / "moved" / "train.json"
    moved.parent.mkdir()
    moved.write_bytes(dataset.read_bytes())
    code, err = run_main("--model", tmp_path / "no-model", "--test-json", moved, "--output", tmp_path / "o" / "s.csv")
    assert code == 2, err
    assert err.strip().splitlines() == [
        f"error: {moved}: none of its 6 videos exists under {moved.parent} (the question file's folder) or "
        f"{tmp_path} (its parent), e.g. 'train/videos/synthetic_000.mp4'; pass --data-dir DIR with the clips at "
        "DIR/train/videos/synthetic_000.mp4."]
    assert not (tmp_path / "o").exists()


def test_a_wrong_data_dir_is_not_passed_over_for_the_jsons_folder(dataset, tmp_path):
    """The question file's own folder holds the clips, but --data-dir was asked for: it is what is used."""
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    code, err = run_main("--model", tmp_path / "no-model", "--test-json", dataset, "--data-dir", wrong,
                         "--output", tmp_path / "o" / "s.csv")
    assert code == 2 and f"none of its 6 videos exists under --data-dir {wrong}," in err, err
    code, err = run_main("--model", tmp_path / "no-model", "--test-json", dataset, "--data-dir", tmp_path / "nowhere",
                         "--output", tmp_path / "o" / "s.csv")
    assert code == 2 and err.strip() == (f"error: --data-dir {tmp_path / 'nowhere'}: no such folder (it is the "
                                         "dataset root that the video paths of train.json are relative to).")


def test_model_folder_that_does_not_exist_is_named(dataset, tmp_path):
    """Not the hub client's "Repo id must be in the form 'repo_name'...": a path is not a hub id."""
    for missing in (tmp_path / "no-such-checkpoint", "./checkpoints/mine/v2"):
        code, err = run_main("--model", missing, "--test-json", dataset, "--output", tmp_path / "o" / "s.csv")
        assert code == 2, err
        assert err.strip().splitlines()[-1] == f"error: --model {missing}: no such folder", err
    # where a GPU would run it, before the VRAM estimate (which has no config to read) or the device is looked at
    code, err = run_main("--model", missing, "--device", "cuda", "--test-json", dataset,
                         "--output", tmp_path / "o" / "s.csv")
    assert code == 2 and err.strip().splitlines() == [f"error: --model {missing}: no such folder"], err
    (tmp_path / "weights.safetensors").write_bytes(b"")
    code, err = run_main("--model", tmp_path / "weights.safetensors", "--test-json", dataset,
                         "--output", tmp_path / "o" / "s.csv")
    assert code == 2 and f"--model {tmp_path / 'weights.safetensors'} is a file; give the checkpoint's folder" in err


def test_a_checkpoint_of_another_family_is_refused_naming_the_families_that_run(dataset, tmp_path):
    """Told apart by config.json's model_type before a tokenizer or weight is read (on a GPU: before the VRAM
    estimate), not by whatever a loader trips over first: a LLaVA checkpoint's folder (its config alone)."""
    checkpoint = tmp_path / "llava"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "llava"}), encoding="utf-8")
    (checkpoint / "model.safetensors").write_bytes(b"")
    runs = "; ".join(f"{family} ({what})" for family, what in FAMILIES.items())
    assert runs.count("; ") == 3  # InternVL, Qwen3-VL, Qwen2.5-VL, Qwen3.5
    for device in ("cpu", "cuda"):
        code, err = run_main("--model", checkpoint, "--device", device, "--test-json", dataset,
                             "--output", tmp_path / "o" / "s.csv")
        assert code == 2, err
        assert err.strip().splitlines() == [
            f"error: --model {checkpoint} is a llava checkpoint; roadbuddy runs these families: {runs}"], err


@pytest.mark.parametrize("network", ["offline", "unreachable"])
def test_hub_model_missing_from_the_cache_without_network_is_one_sentence_after_one_try(dataset, tmp_path, network):
    """The default --model with an empty Hugging Face cache: offline mode, or a hub that refuses connections.
    The hub client retries an unreachable hub for about a minute (sleeps of 1+2+4+8+8 s per file, each warning
    logged twice), then fails with a network message; here one request, and one sentence saying how to get
    the model."""
    home = tmp_path / "hf-home"
    home.mkdir()
    env = {**OFFLINE, "HF_HOME": str(home)}
    if network == "unreachable":  # nothing listens on the discard port: connection refused at once
        env.update(HF_HUB_OFFLINE=None, TRANSFORMERS_OFFLINE=None, HF_ENDPOINT="http://127.0.0.1:9")
    started = time.monotonic()
    res = predict("--test-json", dataset, "--output", tmp_path / "o" / "submission.csv", env=env)
    took = time.monotonic() - started
    assert res.returncode == 2, res.stderr
    (line,) = res.stderr.strip().splitlines()  # no retry warnings, no estimate, no traceback: the sentence
    model = "OpenGVLab/InternVL3_5-4B-HF"
    assert line.startswith(f"error: model {model} is not in the Hugging Face cache ({home / 'hub'}) and ")
    assert line.endswith(f"get it with `hf download {model}` on a machine with network (into this cache, or copy "
                         "the cache here), or pass the checkpoint's folder with --model")
    assert ("offline mode (HF_HUB_OFFLINE)" if network == "offline" else "the hub cannot be reached") in line
    assert took < 45, took  # the retries alone sleep 46 s


OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_CACHE": None, "HF_HUB_DISABLE_TELEMETRY": "1",
           "TRANSFORMERS_CACHE": None, "HUGGINGFACE_HUB_CACHE": None, "HF_DATASETS_CACHE": None}


def test_demo_answers_the_tiny_task_offline_with_the_shipped_model(tmp_path):
    """`roadbuddy-predict --demo` with the hub unreachable by construction (offline flags, an empty Hugging Face
    home): the trained tiny model shipped in the package answers every held-out clip right."""
    home = tmp_path / "hf-home"
    home.mkdir()
    tmp = tmp_path / "tmp"  # where the demo writes its clips: nothing must stay behind
    tmp.mkdir()
    res = predict("--demo", "--output", tmp_path / "demo" / "submission.csv",
                  env={**OFFLINE, "HF_HOME": str(home), "TMPDIR": str(tmp)})
    assert res.returncode == 0, res.stderr
    assert "VRAM" not in res.stderr and not list(tmp.glob("roadbuddy-demo-*"))
    assert "demo: 48 of 48 answers right (100%)" in res.stderr
    assert re.search(r"^model: trained weights from \S*roadbuddy/testing/tiny_seeing on cpu", res.stderr, re.M), res.stderr
    assert len(read_rows(tmp_path / "demo" / "submission.csv")) == 49
    assert not list(home.iterdir())  # nothing was fetched or cached


def test_run_says_random_weights_for_a_random_checkpoint(tiny_checkpoint, dataset, tmp_path):
    code, err = run_main("--model", tiny_checkpoint, "--test-json", dataset, "--output", tmp_path / "submission.csv")
    assert code == 0, err
    assert f"model: random weights from {tiny_checkpoint} on cpu" in err


def test_progress_bar_starts_after_the_model_loading_lines(tiny_checkpoint, dataset, tmp_path):
    """The bar was drawn before the model loaded, so the loading lines broke it up; a line said while the bar
    is up (--debias's prior, said between its estimation and the other answers) clears the bar first."""
    import contextlib
    import io

    from roadbuddy.predict import cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err):  # tqdm writes to sys.stderr as it is when the bar is made
        code = cli.main(["--device", "cpu", "--model", str(tiny_checkpoint), "--test-json", str(dataset),
                         "--output", str(tmp_path / "submission.csv"), "--debias", "--debias-questions", "1"])
    text = err.getvalue()
    assert code == 0, text
    ours = re.search(r"\d+/\d+ \[[^]]*q/s\]", text)  # our bar counts questions (unit q); transformers' its weights
    assert ours and text.index(f"model: random weights from {tiny_checkpoint}") < ours.start(), text
    said = [part for part in re.split(r"[\r\n]", text) if "--debias: letter prior" in part]
    assert len(said) == 1 and said[0].startswith("--debias: letter prior"), text  # not glued to the bar


def test_demo_removes_its_folder_even_when_interrupted(tmp_path, monkeypatch):
    """Each demo left a /tmp/roadbuddy-demo-* folder behind; here the demo is stopped by Ctrl-C mid-run."""
    import tempfile

    from roadbuddy.predict import pipeline
    from roadbuddy.testing import tiny_task

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    written = []

    def write_heldout(folder):  # the real clips take seconds to encode; the folder's fate is what is tested
        folder.mkdir(parents=True)
        written.append(folder / "train.json")
        written[0].write_text('{"data": []}')
        return written[0]

    def interrupted(cfg, say):
        assert cfg.test_json == written[0] and cfg.test_json.is_file()
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny_task, "write_heldout", write_heldout)
    monkeypatch.setattr(pipeline, "run", interrupted)
    code, err = run_main("--demo")
    assert code == 130 and err.strip().splitlines()[-1] == "interrupted: the demo's files are removed", err
    assert written and written[0].is_relative_to(tmp_path) and not list(tmp_path.iterdir())


def test_testing_subcommands_document_every_option():
    """`python -m roadbuddy.testing tiny-checkpoint --help` listed its options with no word about them."""
    import argparse

    from roadbuddy.testing import checkpoints as testing

    parser = testing.build_parser()
    (subcommands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(subcommands.choices) == {"tiny-checkpoint", "synthetic-dataset"}
    for name, sub in subcommands.choices.items():
        for action in sub._actions:
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest} has no help"
