"""roadbuddy-finetune on the CPU: prediction's own inputs, the split, bad input, determinism, resume after
SIGKILL, the adapter in predict, and data parallel under torchrun. The skill it teaches the tiny model is
measured in evals/test_finetune_eval.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from roadbuddy import answering, finetune_cli, inputs, tiny_task, train_data
from roadbuddy.choice_orders import permute_choices
from roadbuddy.config import RunConfig
from roadbuddy.data import group_by_video, load_questions
from roadbuddy.model import encode_tiles, load_model

# a short fine-tune of the shipped tiny checkpoint: 4 frames as its eval shows them, batches of 4 examples
TINY = ["--model", str(tiny_task.CHECKPOINT), "--device", "cpu", "--min-frames", "4", "--max-frames", "4",
        "--no-support-frames", "--no-gradient-checkpointing", "--batch-size", "4", "--grad-accum", "1",
        "--lr", "1e-3", "--no-progress"]


@pytest.fixture(scope="module")
def rule_split(tmp_path_factory) -> Path:
    """12 clips, 24 labeled questions of the tiny task (rule questions and the old kinds)."""
    return tiny_task.write_labeled_split(tmp_path_factory.mktemp("rule-data"), clips=12, seed=tiny_task.RULE_SEED)


def finetune(*args, timeout=300, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "roadbuddy.finetune_cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, **kw)


def main_exit(capsys, *args) -> tuple[int, str]:
    code = finetune_cli.main([str(a) for a in args])
    return code, capsys.readouterr().err


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "adapter_model.safetensors"))


def log_entries(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "training_log.jsonl").read_text().splitlines()]


# --- the same inputs as prediction --------------------------------------------------------------

def test_a_training_example_is_what_predict_sends(tiny_checkpoint, synthetic_dataset, monkeypatch):
    """Token ids, tiles, image features and frames of each training example equal those the predict pipeline
    sends for the same question and settings (support-frame windows included; choices in file order)."""
    cfg = RunConfig(model=str(tiny_checkpoint), device="cpu", batch_questions=False, prefetch=0)
    lm = load_model(cfg)
    questions = load_questions(synthetic_dataset)
    sent = {"tiles": [], "calls": []}
    real_encode, real_forward = answering.encode_tiles, answering.forward
    monkeypatch.setattr(answering, "encode_tiles", lambda lm_, t, b=32: sent["tiles"].append(t) or real_encode(lm_, t, b))
    monkeypatch.setattr(answering, "forward", lambda lm_, ids, f, c, **k: sent["calls"].append((ids, f))
                        or real_forward(lm_, ids, f, c, **k))
    predicted, answered_order = {}, []
    for video, qs in group_by_video(questions):
        clip = inputs.prepare_clip(video, qs, cfg, inputs.InputSpec.of(lm))
        answered_order += [q.id for g in clip.groups for q in g.questions]  # the order answer_clip asks them in
        for record in answering.answer_clip(lm, clip, cfg):
            predicted[record["id"]] = record
    prefixes = [(ids, f) for ids, f in sent["calls"] if f is not None]  # the prefills carry the image features
    suffixes = dict(zip(answered_order, [ids for ids, f in sent["calls"] if f is None], strict=True))

    order = [q for _, qs in group_by_video(questions) for q in qs]  # file order, clips together, choices as given
    examples = list(train_data.iter_examples(order, list(range(len(order))), cfg, inputs.InputSpec.of(lm)))
    assert [e.question.id for e in examples] == [q.id for q in order]
    checked_prefixes = 0
    for i, e in enumerate(examples):
        assert e.error is None and e.target == order[i].answer
        assert torch.equal(e.suffix_ids, suffixes[e.question.id]), e.question.id
        assert list(e.frames) == predicted[e.question.id]["frames"]
        clip_tiles = next(t for t in sent["tiles"] if t.shape == e.clip_tiles.shape and torch.equal(t, e.clip_tiles))
        assert clip_tiles.dtype == torch.uint8
        features = encode_tiles(lm, e.clip_tiles)[e.tile_rows]
        match = [f for ids, f in prefixes if torch.equal(ids, e.prefix_ids) and f.shape == features.shape
                 and torch.equal(f, features)]
        checked_prefixes += bool(match)
    assert checked_prefixes == len(examples)  # every example's prefix and frames' features were sent as such


def test_training_target_is_the_letter_after_the_assistant_turn_opens(tiny_checkpoint, synthetic_dataset):
    cfg = RunConfig(model=str(tiny_checkpoint), device="cpu", prefetch=0)
    lm = load_model(cfg)
    questions = load_questions(synthetic_dataset)
    (example, *_) = train_data.iter_examples(questions, [0], cfg, inputs.InputSpec.of(lm))
    suffix = lm.tokenizer.decode(example.suffix_ids[0].tolist())
    assert suffix.endswith("<|im_end|>\n<|im_start|>assistant\n")  # the answer letter comes next, as score mode reads
    assert example.target == questions[0].answer


# --- the split, the order, the choices ---------------------------------------------------------

def test_split_holds_out_whole_clips_seeded(rule_split):
    questions = load_questions(rule_split)
    split = train_data.split_by_clip(questions, 0.25, seed=3)
    train_clips, val_clips = {q.video_path for q in split.train}, {q.video_path for q in split.val}
    assert not train_clips & val_clips and len(val_clips) == 3 and len(split.train) + len(split.val) == len(questions)
    assert train_data.split_by_clip(questions, 0.25, seed=3) == split
    assert {q.video_path for q in train_data.split_by_clip(questions, 0.25, seed=4).val} != val_clips
    assert len({q.video_path for q in train_data.split_by_clip(questions, 0.01, seed=3).val}) == 1  # at least one
    assert not train_data.split_by_clip(questions, 0.0, seed=3).val
    given = train_data.given_split(questions, split.val, rule_split)
    assert given.val == split.val and not {q.video_path for q in given.train} & val_clips


def test_choices_shuffle_per_epoch_and_the_letter_follows_its_text(rule_split):
    questions = load_questions(rule_split)
    orders = [train_data.epoch_order(questions, 0, epoch, True) for epoch in (0, 1)]
    assert orders[0] == train_data.epoch_order(questions, 0, 0, True)  # a function of (seed, epoch)
    assert [q.id for q in orders[0]] != [q.id for q in orders[1]]  # clips visited in another order
    by_id = {q.id: q for q in questions}
    moved = 0
    for q in orders[0] + orders[1]:
        original = by_id[q.id]
        assert sorted(q.choices) == sorted(original.choices)
        assert q.choices[ord(q.answer) - 65] == original.choices[ord(original.answer) - 65]
        moved += q.choices != original.choices
    assert moved > len(questions) // 2
    kept = train_data.epoch_order(questions, 0, 0, False)
    assert all(q == by_id[q.id] for q in kept)
    clips = [q.video_path for q in orders[0]]
    for clip in set(clips):  # a clip's questions sit together: one decode serves them all
        where = [i for i, c in enumerate(clips) if c == clip]
        assert where == list(range(where[0], where[0] + len(where)))


def test_repeated_choice_texts_keep_the_right_position():
    """train_0405 has "200m" at B and C; the permuted answer must follow its position, not its text."""
    from roadbuddy.data import Question

    q = Question(id="train_0405", question="?", choices=("100m", "200m", "200m", "300m"),
                 raw_choices=("A. 100m", "B. 200m", "C. 200m", "D. 300m"), video_path=Path("v.mp4"),
                 video_rel="v.mp4", answer="C")
    p = permute_choices(q, [2, 0, 3, 1])
    assert p.choices == ("200m", "100m", "300m", "200m") and p.answer == "A"
    assert p.raw_choices[0] == "C. 200m"


# --- bad input ---------------------------------------------------------------------------------

def _edited(split: Path, name: str, change) -> Path:
    doc = json.loads(split.read_text(encoding="utf-8"))
    change(doc["data"])
    path = split.parent / name
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    return path


def test_a_file_without_answers_exits_2_naming_file_and_field(rule_split, tmp_path, capsys):
    bare = _edited(rule_split, "no_answers.json", lambda items: [i.pop("answer") for i in items])
    code, err = main_exit(capsys, "--train-json", bare, "--output", tmp_path / "a", *TINY)
    assert code == 2 and "no_answers.json" in err and "no item has field 'answer'" in err
    one = _edited(rule_split, "one_missing.json", lambda items: items[3].pop("answer"))
    code, err = main_exit(capsys, "--train-json", one, "--output", tmp_path / "b", *TINY)
    assert code == 2 and "rule_00004" in err and "'answer'" in err


def test_a_malformed_item_exits_2_naming_item_and_field(rule_split, tmp_path, capsys):
    bad = _edited(rule_split, "bad.json", lambda items: items[1].update(choices="A. Đúng"))
    code, err = main_exit(capsys, "--train-json", bad, "--output", tmp_path / "o", *TINY)
    assert code == 2 and "rule_00002" in err and "choices" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_no_readable_video_exits_2_and_unreadable_clips_are_skipped_and_listed(rule_split, tmp_path, capsys):
    gone = _edited(rule_split, "gone.json", lambda items: [i.update(video_path=f"train/videos/none_{k}.mp4")
                                                         for k, i in enumerate(items)])
    code, err = main_exit(capsys, "--train-json", gone, "--output", tmp_path / "g", *TINY)
    assert code == 2 and "video_path" in err and "none of the" in err
    some = _edited(rule_split, "some.json", lambda items: items[0].update(video_path="train/videos/missing.mp4"))
    code, err = main_exit(capsys, "--train-json", some, "--output", tmp_path / "s", *TINY, "--max-steps", "1",
                          "--val-fraction", "0")
    assert code == 0, err
    assert "1 training clips cannot be read" in err and "missing.mp4" in err
    card = json.loads((tmp_path / "s" / "roadbuddy_adapter.json").read_text())
    assert list(card["unreadable_clips"]) == ["train/videos/missing.mp4"]


def test_bad_settings_exit_2(rule_split, tmp_path, capsys):
    for flags_ in (["--lora-targets", "q_proj,nonsense"], ["--val-fraction", "1.5"], ["--grad-accum", "0"]):
        code, err = main_exit(capsys, "--train-json", rule_split, "--output", tmp_path / "x", *TINY, *flags_)
        assert code == 2 and flags_[0] in err, err
    with pytest.raises(SystemExit) as exc:
        finetune_cli.main(["--output", str(tmp_path / "x")])
    assert exc.value.code == 2


# --- a short fine-tune: the loss falls, the run is deterministic, a kill costs nothing ---------------

def _run_args(split: Path, out: Path, *extra) -> list:
    return ["--train-json", split, "--output", out, *TINY, "--max-steps", "8", "--checkpoint-every", "2",
            "--val-every", "4", "--val-fraction", "0.25", "--lora-dropout", "0.1", *extra]


@pytest.fixture(scope="module")
def uninterrupted(rule_split, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ft-whole") / "adapter"
    res = finetune(*_run_args(rule_split, out))
    assert res.returncode == 0, res.stderr
    return out


def test_short_fine_tune_lowers_the_loss_and_writes_a_complete_adapter(uninterrupted):
    losses = [e["loss"] for e in log_entries(uninterrupted) if "loss" in e]
    assert len(losses) == 8 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    files = {p.name for p in uninterrupted.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "roadbuddy_adapter.json", "training_log.jsonl",
            "training.png", "checkpoint", "validation"} <= files
    card = json.loads((uninterrupted / "roadbuddy_adapter.json").read_text())
    assert card["base_model"] == str(tiny_task.CHECKPOINT) and card["settings"]["train"]["seed"] == 0
    assert [v["step"] for v in card["validation_curve"]] == [4, 8] and card["best"]["step"] in (4, 8)
    assert card["settings"]["train_json_sha256"] and card["versions"]["peft"]
    assert not set(card["split"]["train"]["clips"]) & set(card["split"]["val"]["clips"])


def test_two_runs_make_the_same_adapter_bit_for_bit(uninterrupted, rule_split, tmp_path):
    res = finetune(*_run_args(rule_split, tmp_path / "again"))
    assert res.returncode == 0, res.stderr
    a, b = weights(uninterrupted), weights(tmp_path / "again")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sigkill_midway_then_the_same_command_ends_with_the_uninterrupted_adapter(uninterrupted, rule_split, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "roadbuddy.finetune_cli", *map(str, _run_args(rule_split, out))]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    state = out / "checkpoint" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["progress"]["step"] >= 2:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait()
    step = json.loads(state.read_text())["progress"]["step"]
    assert 2 <= step < 8, "the run was not caught midway"
    res = finetune(*_run_args(rule_split, out))
    assert res.returncode == 0, res.stderr
    assert f"resuming at step {step} of 8" in res.stderr
    a, b = weights(uninterrupted), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["step"] for e in log_entries(out) if "loss" in e] == list(range(1, 9))  # no step twice in the log


def test_resuming_with_other_settings_is_refused(uninterrupted, rule_split, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(uninterrupted, out)
    code, err = main_exit(capsys, *_run_args(rule_split, out, "--lr", "5e-4"))
    assert code == 2 and "other settings" in err and "train.lr" in err


# --- the adapter in predict ----------------------------------------------------------------------

def predict(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "roadbuddy", "--no-progress", "--device", "cpu", *map(str, args)],
                          capture_output=True, text=True, timeout=240)


def test_predict_loads_the_adapter_and_refuses_a_wrong_one(uninterrupted, rule_split, tiny_checkpoint, tmp_path):
    base = ["--model", tiny_task.CHECKPOINT, "--test-json", rule_split, "--min-frames", "4", "--max-frames", "4",
            "--no-support-frames"]
    runs = {}
    for name, extra in {"base": [], "adapted": ["--adapter", uninterrupted]}.items():
        res = predict(*base, "--output", tmp_path / name / "submission.csv", *extra)
        assert res.returncode == 0, res.stderr
        runs[name] = [json.loads(x) for x in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
    assert f"adapter {uninterrupted} (merged into the weights)" in res.stderr
    assert [r["probs"] for r in runs["base"]] != [r["probs"] for r in runs["adapted"]]
    settings = json.loads((tmp_path / "adapted" / "run.json").read_text())["settings"]
    assert settings["adapter"] == str(uninterrupted) and len(settings["adapter_sha256"]) == 16
    # resuming the folder with another adapter (or none) is refused, naming it
    res = predict(*base, "--output", tmp_path / "adapted" / "submission.csv")
    assert res.returncode == 2 and "adapter" in res.stderr
    # a folder that is not an adapter, and an adapter for another architecture: one sentence, exit 2
    res = predict(*base, "--output", tmp_path / "x" / "submission.csv", "--adapter", rule_split.parent)
    assert res.returncode == 2 and "is not a LoRA adapter folder" in res.stderr.splitlines()[-1]
    res = predict("--model", tiny_checkpoint, "--test-json", rule_split, "--output", tmp_path / "y" / "submission.csv",
                  "--adapter", uninterrupted)
    assert res.returncode == 2 and "was made for another base model" in res.stderr.splitlines()[-1]


# --- data parallel -------------------------------------------------------------------------------

def test_two_processes_under_torchrun_make_the_one_process_adapter(rule_split, tmp_path):
    """The same global batch (4 examples a step): 2 ranks x 2 against 1 x 4; they differ only in the order
    of the gradient sums, so the adapters agree to float32 rounding."""
    common = ["--train-json", rule_split, *TINY, "--max-steps", "4", "--val-fraction", "0", "--lora-dropout", "0.1"]
    one = finetune(*common, "--output", tmp_path / "one", "--batch-size", "1", "--grad-accum", "4")
    assert one.returncode == 0, one.stderr
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "roadbuddy.finetune_cli", *map(str, common), "--output", str(tmp_path / "two"),
           "--batch-size", "1", "--grad-accum", "2"]
    two = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert two.returncode == 0, two.stdout + two.stderr
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), k
    assert not all(torch.equal(a[k], torch.zeros_like(a[k])) for k in a if "lora_B" in k)  # it did train
    losses = [[e["loss"] for e in log_entries(tmp_path / d) if "loss" in e] for d in ("one", "two")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
