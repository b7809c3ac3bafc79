"""Data-parallel prediction under torchrun (gloo on the CPU): same submission, ranks resume their own shards."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import predict

from roadbuddy.data.questions import group_by_video, load_questions
from roadbuddy.predict.distributed import Shard, assign_clips


def test_shard_from_torchrun_environment():
    assert Shard.from_env({}) == Shard()
    assert Shard.from_env({"WORLD_SIZE": "1", "RANK": "0"}).distributed is False
    s = Shard.from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"})
    assert (s.rank, s.world_size, s.local_rank, s.distributed) == (3, 4, 1, True)


def test_clips_are_balanced_by_question_count_and_deterministic(real_data_dir):
    clips = group_by_video(load_questions(real_data_dir / "train.json"))
    for world in (2, 3, 8):
        ranks = assign_clips(clips, world)
        assert ranks == assign_clips(clips, world)
        load = [sum(len(qs) for (_, qs), r in zip(clips, ranks) if r == rank) for rank in range(world)]
        assert sum(load) == 1490
        assert max(load) - min(load) <= max(len(qs) for _, qs in clips)  # greedy bound: one clip at most


def torchrun(args, nproc=2, **kw):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "roadbuddy", "--no-progress", "--device", "cpu", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), **kw)


@pytest.fixture(scope="module")
def reference(tiny_checkpoint, tmp_path_factory):
    from roadbuddy.testing.checkpoints import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path_factory.mktemp("ddp-data"), clips=8)
    out = tmp_path_factory.mktemp("ddp-single") / "submission.csv"
    res = predict("--model", tiny_checkpoint, "--test-json", data, "--output", out)
    assert res.returncode == 0, res.stderr
    return data, out


def test_two_ranks_give_the_single_process_submission(tiny_checkpoint, reference, tmp_path):
    data, single_out = reference
    out = tmp_path / "submission.csv"
    proc = torchrun(["--model", tiny_checkpoint, "--test-json", data, "--output", out])
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    assert out.read_text() == single_out.read_text()  # row for row
    shards = sorted(p.name for p in tmp_path.glob("predictions*.jsonl"))
    assert shards == ["predictions.rank0.jsonl", "predictions.rank1.jsonl"]
    ids = [json.loads(x)["id"] for p in tmp_path.glob("predictions*.jsonl") for x in p.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == len(load_questions(data))  # each question answered by exactly one rank
    assert "[rank 1]" in log and "[rank 0] wrote" in log


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun's worker with RANK=rank."""
    for child in psutil.Process(parent).children():
        try:
            env = child.environ()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if env.get("RANK") == str(rank) and "TORCHELASTIC_RUN_ID" in env:
            return child.pid
    return None


def test_a_dead_rank_costs_nothing_and_a_rerun_finishes(tiny_checkpoint, reference, tmp_path):
    data, single_out = reference
    out = tmp_path / "submission.csv"
    args = ["--model", tiny_checkpoint, "--test-json", data, "--output", out]
    proc = torchrun(args)
    shard1 = tmp_path / "predictions.rank1.jsonl"
    deadline = time.time() + 120
    killed = False
    while time.time() < deadline and proc.poll() is None:
        if shard1.is_file() and shard1.read_bytes().count(b"\n") >= 1:
            pid = _rank_pid(proc.pid, 1)
            if pid:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
        time.sleep(0.002)
    log, _ = proc.communicate(timeout=300)
    assert killed, log
    assert proc.returncode != 0
    assert not out.exists()  # no submission from a job that lost a rank
    before = {p.name: p.read_text().splitlines() for p in tmp_path.glob("predictions*.jsonl")}
    total = len(load_questions(data))
    assert 1 <= sum(map(len, before.values())) < total

    rerun = torchrun(args)
    log, _ = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, log
    assert out.read_text() == single_out.read_text()
    after = {p.name: p.read_text().splitlines() for p in tmp_path.glob("predictions*.jsonl")}
    for name, lines in before.items():
        complete = [x for x in lines if x.endswith("}")]
        assert after[name][:len(complete)] == complete  # answers already made were kept, not redone
    ids = [json.loads(x)["id"] for lines in after.values() for x in lines]
    assert len(ids) == len(set(ids)) == total


def test_merge_names_missing_ids_and_keeps_the_good_submission(tiny_checkpoint, reference, tmp_path):
    from roadbuddy.data.output import OutputError, OutputPaths, merge_and_write

    data, _ = reference
    out = tmp_path / "submission.csv"
    proc = torchrun(["--model", tiny_checkpoint, "--test-json", data, "--output", out])
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    good = out.read_bytes()
    shard1 = tmp_path / "predictions.rank1.jsonl"
    lost = [json.loads(x)["id"] for x in shard1.read_text().splitlines()]
    shard1.write_text("")  # a rank's shard came back empty
    with pytest.raises(OutputError) as err:
        merge_and_write(OutputPaths.for_submission(out, 0, 2), load_questions(data))
    assert f"{len(lost)} questions have no answer" in str(err.value) and lost[0] in str(err.value)
    assert out.read_bytes() == good


# --- evals under torchrun ------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def _eval_cmd(report_dir, data, tiny_checkpoint, nproc: int | None) -> list[str]:
    launch = [sys.executable] if nproc is None else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                       f"--nproc_per_node={nproc}"]
    return [*launch, "-m", "pytest", "-m", "eval", "evals/test_eval.py::test_split_accuracy", "-p", "no:cacheprovider",
            "-q", "-rs", "--split", str(data), "--model", str(tiny_checkpoint), "--device", "cpu",
            "--report-dir", str(report_dir)]


def test_eval_under_torchrun_gives_one_report_equal_to_the_single_process_one(tiny_checkpoint, reference, tmp_path):
    """`torchrun -m pytest -m eval evals/ --split ...`: ranks answer their clips, rank 0 writes the one report."""
    data, _ = reference
    env = dict(os.environ, OMP_NUM_THREADS="1")
    reports = {}
    for nproc in (None, 2):
        folder = tmp_path / f"report-{nproc or 1}"
        res = subprocess.run(_eval_cmd(folder, data, tiny_checkpoint, nproc), cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        reports[nproc] = json.loads((folder / "report.json").read_text())
        if nproc == 2:
            out = res.stdout + res.stderr
            assert "rank 1 of 2: its clips are answered; rank 0 writes the report" in out
            assert sorted(p.name for p in folder.glob("predictions*.jsonl")) == [
                "predictions.rank0.jsonl", "predictions.rank1.jsonl"]
            assert all((folder / f"predictions.rank{r}.jsonl").stat().st_size > 0 for r in (0, 1))
        assert (folder / "report.md").is_file() and (folder / "report.png").is_file()
    one, two = reports[None], reports[2]
    assert two["questions"] == one["questions"] == len(load_questions(data))
    for key in ("accuracy", "prior", "by_num_choices", "by_category", "by_clip", "confusion", "position_bias"):
        assert two[key] == one[key], key
    assert (tmp_path / "report-2" / "submission.csv").read_bytes() == (tmp_path / "report-1" / "submission.csv").read_bytes()
