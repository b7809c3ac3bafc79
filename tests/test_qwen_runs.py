"""Whole runs of the Qwen families (Qwen3-VL, Qwen2.5-VL, Qwen3.5), as a user starts them: roadbuddy-predict with
a tiny Qwen checkpoint folder, under torchrun, killed and resumed, and an eval with its report and page against
an InternVL baseline."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import predict

from roadbuddy.config import RunConfig
from roadbuddy.data.questions import load_questions
from roadbuddy.testing.qwen_checkpoints import write_tiny_qwen_checkpoint

FAMILIES = ("qwen3_vl", "qwen2_5_vl", "qwen3_5")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from roadbuddy.testing.checkpoints import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("qwen-runs"), clips=6)


@pytest.fixture(scope="module", params=FAMILIES)
def single(request, data, tmp_path_factory):
    """A family's checkpoint and its single-process run over the data."""
    checkpoint = write_tiny_qwen_checkpoint(tmp_path_factory.mktemp(request.param), request.param)
    out = tmp_path_factory.mktemp(f"{request.param}-single") / "submission.csv"
    res = predict("--model", checkpoint, "--test-json", data, "--output", out, "--max-frames", 8)
    assert res.returncode == 0, res.stderr
    return request.param, checkpoint, out, res.stderr


def records(folder) -> dict[str, dict]:
    return {r["id"]: r for p in sorted(folder.glob("predictions*.jsonl"))
            for r in map(json.loads, p.read_text(encoding="utf-8").splitlines())}


def test_the_run_names_the_family_and_answers_every_question(single, data):
    family, checkpoint, out, log = single
    assert f"model: random weights from {checkpoint} on cpu ({family}, " in log
    rows = out.read_text().splitlines()
    questions = load_questions(data)
    assert rows[0] == "id,answer" and [r.split(",")[0] for r in rows[1:]] == [q.id for q in questions]
    recs = records(out.parent)
    assert all(recs[q.id]["mode"] == "score" and recs[q.id]["answer"] in q.letters for q in questions)


def test_two_ranks_give_the_single_process_submission(single, data, tmp_path):
    _, checkpoint, single_out, _ = single
    out = tmp_path / "submission.csv"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "roadbuddy",
           "--no-progress", "--device", "cpu", "--model", str(checkpoint), "--test-json", str(data), "--output",
           str(out), "--max-frames", "8"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert out.read_text() == single_out.read_text()
    assert sorted(p.name for p in tmp_path.glob("predictions*.jsonl")) == ["predictions.rank0.jsonl",
                                                                          "predictions.rank1.jsonl"]


def test_a_cut_run_resumes_to_the_same_answers(single, data, tmp_path):
    """predictions.jsonl cut after two answers and a torn third line (what a killed run leaves): the same command
    keeps the two, answers the rest and writes the uninterrupted run's submission."""
    _, checkpoint, single_out, _ = single
    out = tmp_path / "submission.csv"
    full = single_out.parent.joinpath("predictions.jsonl").read_text(encoding="utf-8").splitlines()
    tmp_path.joinpath("predictions.jsonl").write_text("\n".join(full[:2]) + "\n" + full[2][:20], encoding="utf-8")
    (tmp_path / "run.json").write_text(single_out.parent.joinpath("run.json").read_text())
    res = predict("--model", checkpoint, "--test-json", data, "--output", out, "--max-frames", 8)
    assert res.returncode == 0, res.stderr
    assert f"resuming: 2 of {len(full)}" in res.stderr
    assert out.read_text() == single_out.read_text()
    assert tmp_path.joinpath("predictions.jsonl").read_text(encoding="utf-8").splitlines()[:2] == full[:2]


def test_an_eval_report_and_page_against_an_internvl_baseline(single, data, tiny_checkpoint, tmp_path):
    """A Qwen eval compared with an InternVL eval of the same split: a valid McNemar pair, and the page shows the
    Qwen run's frames."""
    from evals import harness

    family, checkpoint, _, _ = single
    quiet = {"say": lambda _m: None}
    base = RunConfig(model=str(tiny_checkpoint), test_json=data, device="cpu", progress=False, max_frames=8)
    internvl = harness.run_eval(base, tmp_path / "internvl", **quiet)
    qwen = harness.run_eval(base.replace(model=str(checkpoint)), tmp_path / family,
                            baseline=tmp_path / "internvl" / "report.json", **quiet)
    assert qwen.report["questions"] == internvl.report["questions"] == len(load_questions(data))
    comparison = qwen.report["comparison"]
    assert comparison["common_questions"] == qwen.report["questions"] and 0 <= comparison["mcnemar_p"] <= 1
    assert comparison["baseline_settings"]["model"] == str(tiny_checkpoint)
    page = (tmp_path / family / "report.html").read_text(encoding="utf-8")
    thumbs = list((tmp_path / family / harness.THUMBNAILS).rglob("*.jpg"))
    assert thumbs and all(t.name in page for t in thumbs[:3])
