"""The test-time levers: choice permutations, the letter-prior correction, the system prompt, detail frames.

Each is off by default and gives the answers the pipeline gave before it existed, bit for bit (a golden
file made with the commit before the levers); switched on, each does what README promises. The accuracy
they buy against a planted letter bias is measured in evals/test_levers_eval.py."""
from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roadbuddy.config import ConfigError, RunConfig
from roadbuddy.data.output import OutputPaths, PredictionLog, load_all_predictions
from roadbuddy.data.questions import LETTERS, Question, load_questions
from roadbuddy.families.internvl import prompts
from roadbuddy.families.internvl.model import load_model
from roadbuddy.levers import choice_orders, letter_prior
from roadbuddy.predict import answering, inputs, memory
from roadbuddy.predict.pipeline import run
from roadbuddy.testing import tiny_task
from roadbuddy.testing.checkpoints import write_synthetic_dataset
from roadbuddy.video.source import VideoInfo
from roadbuddy.families.internvl.inputs import TileSpec
from roadbuddy.families.internvl import model as internvl_model

GOLDEN = Path(__file__).resolve().parent / "data" / "levers_off_golden.json"


def records(folder: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (folder / "predictions.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def seeing():
    return load_model(RunConfig(model=str(tiny_task.CHECKPOINT), device="cpu"))


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    return tiny_task.write_heldout(tmp_path_factory.mktemp("heldout"))


# --- off: today's answers -----------------------------------------------------------------------

def test_levers_off_give_the_answers_of_the_pipeline_before_them(seeing, heldout, tmp_path):
    golden = json.loads(GOLDEN.read_text())
    cfg = tiny_task.eval_config(tiny_task.CHECKPOINT, heldout, tmp_path / "a" / "submission.csv")
    run(cfg, model_loader=lambda _c: seeing, say=lambda _m: None)
    got = {k: r["probs"] for k, r in records(tmp_path / "a").items()}
    assert got.keys() == golden["tiny_seeing_heldout"].keys()
    for qid, probs in golden["tiny_seeing_heldout"].items():
        assert got[qid] == pytest.approx(probs, abs=1e-6), qid  # records keep 6 decimals

    from roadbuddy.testing.checkpoints import write_tiny_checkpoint

    ckpt = write_tiny_checkpoint(tmp_path / "ckpt")  # the random tiny model, seed 0, on clips with support frames
    data = write_synthetic_dataset(tmp_path / "synth")
    cfg = RunConfig(model=str(ckpt), test_json=data, output=tmp_path / "b" / "submission.csv", device="cpu",
                    progress=False)
    run(cfg, say=lambda _m: None)
    got = {k: r["probs"] for k, r in records(tmp_path / "b").items()}
    for qid, probs in golden["random_tiny_synthetic"].items():
        assert got[qid] == pytest.approx(probs, abs=1e-6), qid
    assert "permutations" not in json.loads((tmp_path / "b" / "run.json").read_text())["settings"]


def test_records_keep_full_precision_log_probabilities_and_run_json_names_the_question_file(seeing, heldout,
                                                                                          tmp_path):
    """Every score record's `logprobs` are the logs of its `probs` at full precision (what an ensemble of runs
    averages; the underflow case is the next test's); run.json names the question file answered (path, sha256, count)."""
    from roadbuddy.data.digest import file_sha256

    for name, changes in (("one", {}), ("four", {"permutations": 4}), ("debias", {"debias": True,
                                                                                  "debias_questions": 3})):
        cfg = tiny_task.eval_config(tiny_task.CHECKPOINT, heldout, tmp_path / name / "submission.csv", limit=12,
                                    **changes)
        run(cfg, model_loader=lambda _c: seeing, say=lambda _m: None)
        got = records(tmp_path / name)
        for qid, r in got.items():
            assert r["logprobs"].keys() == r["probs"].keys(), (name, qid)
            assert {k: math.exp(v) for k, v in r["logprobs"].items()} == pytest.approx(r["probs"], abs=2e-5), (name, qid)
        info = json.loads((tmp_path / name / "run.json").read_text())["questions"]
        assert info == {"file": str(heldout.resolve()), "sha256": file_sha256(heldout), "count": 12}


def test_log_space_ensemble_and_debias_agree_with_the_probability_ones_and_survive_underflow():
    asked = [(order, choice_orders.log_normalised(logs)) for order, logs in
             (((0, 1, 2), {"A": -0.1, "B": -2.5, "C": -3.0}), ((1, 2, 0), {"A": -1.0, "B": -0.7, "C": -1.9}))]
    probs = [(order, {k: math.exp(v) for k, v in logs.items()}) for order, logs in asked]
    assert {k: math.exp(v) for k, v in choice_orders.log_ensemble(asked).items()} == pytest.approx(
        choice_orders.ensemble(probs), rel=1e-12)
    prior = [0.5, 0.3, 0.2]
    assert {k: math.exp(v) for k, v in choice_orders.log_debias(asked[0][1], prior).items()} == pytest.approx(
        choice_orders.debias(probs[0][1], prior), rel=1e-12)
    # both orders sure of the file's A; exp() of the other letter's log-probability is 0 in doubles
    sure = [((0, 1), {"A": 0.0, "B": -900.0}), ((1, 0), {"A": -1000.0, "B": 0.0})]
    logs = choice_orders.log_ensemble(sure)
    assert logs["A"] == pytest.approx(0.0, abs=1e-12) and logs["B"] == pytest.approx(-900.0 - math.log(2))
    assert choice_orders.log_debias({"A": 0.0, "B": -900.0}, [0.5, 0.5])["B"] == pytest.approx(-900.0)


# --- permutations -----------------------------------------------------------------------------------

def test_orders_are_cyclic_shifts_of_the_sorted_choices():
    choices = ("Xe tải", "Ô tô", "Xe máy", "Xe buýt")
    every = choice_orders.orders(choices, 4)
    assert len(every) == 4 and all(sorted(o) == [0, 1, 2, 3] for o in every)
    for position in range(4):  # every choice sits at every position once
        assert sorted(o[position] for o in every) == [0, 1, 2, 3]
    assert [choices[i] for i in every[0]] == sorted(choices)
    assert choice_orders.orders(choices, 9) == every  # more than the choices: all of them
    assert choice_orders.orders(choices, 2) == every[:2]
    assert choice_orders.orders(choices, 1) == [(0, 1, 2, 3)]  # off: the file's order
    shuffled = ("Xe máy", "Xe buýt", "Ô tô", "Xe tải")
    assert [[shuffled[i] for i in o] for o in choice_orders.orders(shuffled, 4)] == \
        [[choices[i] for i in o] for o in every]  # the same texts in the same orders


def test_ensemble_maps_each_order_back_to_the_files_letters():
    asked = [((0, 1, 2), {"A": 0.7, "B": 0.2, "C": 0.1}), ((2, 0, 1), {"A": 0.6, "B": 0.3, "C": 0.1})]
    # second order shows file choice 2 at A, 0 at B, 1 at C
    assert choice_orders.ensemble(asked) == pytest.approx({"A": 0.5, "B": 0.15, "C": 0.35})
    assert choice_orders.pick({"A": 0.4, "B": 0.4, "C": 0.2}) == "A"


def test_pride_recovers_a_planted_position_prior():
    prior = [0.55, 0.25, 0.12, 0.08]
    rng = random.Random(0)
    estimates = []
    for _ in range(30):
        content = [rng.random() + 0.05 for _ in range(4)]  # the model's view of each choice's content
        asked = []
        for k in range(4):
            order = tuple((k + i) % 4 for i in range(4))
            raw = [prior[pos] * content[order[pos]] for pos in range(4)]
            asked.append((order, {LETTERS[pos]: v / sum(raw) for pos, v in enumerate(raw)}))
        estimates.append(choice_orders.question_prior(asked))
    assert choice_orders.mean_prior(estimates) == pytest.approx(prior, abs=1e-9)
    observed = {"A": 0.5, "B": 0.35, "C": 0.1, "D": 0.05}  # over the prior: 0.91, 1.40, 0.83, 0.63
    fixed = choice_orders.debias(observed, prior)
    assert sum(fixed.values()) == pytest.approx(1) and choice_orders.pick(fixed) == "B"
    assert choice_orders.question_prior(asked[:3]) is None  # not every cyclic order


def _asked(lm, clip_path: Path, q: Question, cfg: RunConfig) -> dict:
    clip = inputs.prepare_clip(clip_path, [q], cfg, inputs.InputSpec.of(lm))
    (record,) = answering.answer_clip(lm, clip, cfg)
    return record


REAL_ITEMS = Path(__file__).resolve().parents[1] / "challenge-data" / "train.json"


def _real_items(limit=40) -> list[tuple[str, tuple[str, ...]]]:
    questions = load_questions(REAL_ITEMS)
    picked = [q for q in questions if q.id == "train_0405"] + [q for q in questions if q.num_choices in (2, 3, 4)]
    return [(q.question, q.choices) for q in picked[:limit]]


@pytest.mark.parametrize("which", ["trained", "random"])
def test_with_all_orders_reordering_the_file_never_changes_the_chosen_text(which, seeing, tiny_checkpoint,
                                                                           heldout, tmp_path):
    """Hypothesis over real train.json items (their questions and choices, train_0405's repeated "200m"
    included) and orders of their choices in the file, on a held-out clip of the tiny task."""
    lm = seeing if which == "trained" else load_model(RunConfig(model=str(tiny_checkpoint), device="cpu"))
    clip_path = load_questions(heldout)[0].video_path
    items = _real_items()
    cfg = RunConfig(permutations=8, support_frames=False, min_frames=4, max_frames=4, prefetch=0)

    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(items), st.randoms(use_true_random=False))
    def check(item, rnd):
        text, choices = item
        order = list(range(len(choices)))
        rnd.shuffle(order)
        reordered = tuple(choices[i] for i in order)
        a = _asked(lm, clip_path, Question("q", text, choices, choices, clip_path, "c.mp4"), cfg)
        b = _asked(lm, clip_path, Question("q", text, reordered, reordered, clip_path, "c.mp4"), cfg)
        assert choices[LETTERS.index(a["answer"])] == reordered[LETTERS.index(b["answer"])]
        assert len(a["orders"]) == len(choices)
        def means(record, texts):  # a repeated text ("200m" twice) may swap its means between its copies
            out = {}
            for letter, p in record["probs"].items():
                out.setdefault(texts[LETTERS.index(letter)], []).append(p)
            return {t: sorted(v) for t, v in out.items()}

        ma, mb = means(a, choices), means(b, reordered)  # each text gets the same mean wherever the file puts it
        assert ma.keys() == mb.keys() and all(ma[t] == pytest.approx(mb[t], abs=1e-5) for t in ma)

    check()


def test_permutations_pack_into_one_forward_and_keep_each_orders_probabilities(seeing, heldout, monkeypatch):
    packs = []
    real = internvl_model.forward_packed
    monkeypatch.setattr(internvl_model, "forward_packed", lambda lm_, s, c, *r: packs.append(len(s)) or real(lm_, s, c, *r))
    questions = [q for q in load_questions(heldout) if q.video_path == load_questions(heldout)[0].video_path]
    cfg = RunConfig(permutations=4, support_frames=False, min_frames=4, max_frames=4)
    clip = inputs.prepare_clip(questions[0].video_path, questions, cfg, inputs.InputSpec.of(seeing))
    recs = list(answering.answer_clip(seeing, clip, cfg))
    assert packs == [sum(q.num_choices for q in questions)]  # a 4-choice and a 2-choice question: 6 suffixes
    for q, r in zip(questions, recs):
        assert len(r["orders"]) == q.num_choices and r["answer"] == choice_orders.pick(r["probs"])
        mean = choice_orders.ensemble([(o["order"], o["probs"]) for o in r["orders"]])
        assert r["probs"] == pytest.approx(mean, abs=2e-6)
    one = cfg.replace(batch_questions=False)
    for q, r in zip(questions, answering.answer_clip(seeing, clip, one)):
        assert r["probs"] == pytest.approx(recs[questions.index(q)]["probs"], abs=1e-5)


def test_permutations_need_score_mode():
    with pytest.raises(ConfigError, match="score mode"):
        RunConfig(permutations=4, answer_mode="generate")


# --- the letter-prior correction ------------------------------------------------------------------------

def test_debias_estimates_one_prior_writes_it_and_resume_keeps_it(seeing, heldout, tmp_path):
    out = tmp_path / "d" / "submission.csv"
    cfg = tiny_task.eval_config(tiny_task.CHECKPOINT, heldout, out, debias=True, debias_questions=5)
    said = []
    run(cfg, model_loader=lambda _c: seeing, say=said.append)
    recs = records(out.parent)
    doc = json.loads((out.parent / "prior.json").read_text())
    assert set(doc["prior"]) == {"2", "4"} and doc["questions"] == {"2": 5, "4": 5}
    assert all(sum(p) == pytest.approx(1) for p in doc["prior"].values())
    assert json.loads((out.parent / "run.json").read_text())["letter_prior"] == doc["prior"]
    estimated = set(doc["ids"])
    assert estimated == set(letter_prior.estimation_ids(load_questions(heldout), 5))
    for qid, r in recs.items():
        if qid in estimated:
            assert len(r["orders"]) in (2, 4) and "observed_probs" not in r
        else:
            assert "orders" not in r and set(r["observed_probs"]) == set(r["probs"])
            n = len(r["probs"])
            fixed = choice_orders.debias(r["observed_probs"], doc["prior"][str(n)])
            assert r["probs"] == pytest.approx(fixed, abs=2e-6)
    assert any("letter prior" in m for m in said)
    # a resumed run divides the same prior out of what is left, and estimates nothing again
    lines = (out.parent / "predictions.jsonl").read_text().splitlines()
    (out.parent / "predictions.jsonl").write_text("\n".join(lines[:-10]) + "\n")
    said.clear()
    run(cfg, model_loader=lambda _c: seeing, say=said.append)
    assert json.loads((out.parent / "prior.json").read_text()) == doc
    again = records(out.parent)
    assert again.keys() == recs.keys()
    for qid, r in recs.items():
        assert again[qid]["answer"] == r["answer"] and again[qid]["probs"] == pytest.approx(r["probs"], abs=1e-6)
    assert not any("estimating" in m for m in said)


def test_debias_prior_from_an_earlier_report(seeing, heldout, tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"per_question": [], "letter_prior": {"2": [0.9, 0.1], "4": [0.4, 0.2, 0.2, 0.2]}}))
    out = tmp_path / "p" / "submission.csv"
    cfg = tiny_task.eval_config(tiny_task.CHECKPOINT, heldout, out, debias=True, debias_prior=report)
    run(cfg, model_loader=lambda _c: seeing, say=lambda _m: None)
    recs = records(out.parent)
    assert not any("orders" in r for r in recs.values())  # nothing estimated
    two = next(r for r in recs.values() if len(r["probs"]) == 2)
    # the recorded observed probabilities are rounded to 6 decimals; dividing by 0.1 makes that 1e-5
    assert two["probs"] == pytest.approx(choice_orders.debias(two["observed_probs"], [0.9, 0.1]), abs=2e-5)
    assert letter_prior.load(tmp_path / "p" / "run.json")["prior"] == {"2": [0.9, 0.1], "4": [0.4, 0.2, 0.2, 0.2]}
    for bad in ({"per_question": []}, {"settings": {"model": "m"}}, {"letter_prior": {"2": [0.9, 0.3]}}):
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(letter_prior.PriorError, match="holds no letter prior"):
            letter_prior.load(tmp_path / "bad.json")


def test_debias_prior_of_a_confident_model_comes_from_what_is_on_disk(tmp_path):
    """A model 16 to 20 logits sure of the right choice, over a planted position prior: the prior estimated
    from the records as written to disk is the planted one. (From the records' probabilities, rounded to 6
    decimals, the wrong letters were 0 and the prior collapsed: [.888, .095, .016, .001] at 16 logits.)"""
    planted = [0.4, 0.3, 0.2, 0.1]
    lm = SimpleNamespace(letter_ids={letter: i for i, letter in enumerate("ABCD")})  # logits indexed by letter
    paths = OutputPaths.for_submission(tmp_path / "submission.csv")
    questions = []
    with PredictionLog(paths.predictions) as out:
        for i, margin in enumerate((16.0, 17.0, 18.0, 19.0, 20.0)):
            q = Question(f"q{i}", "?", ("w", "x", "y", "z"), ("w", "x", "y", "z"), Path("v.mp4"), "v.mp4")
            right = i % 4
            asked = []
            for order in choice_orders.orders(q.choices, 4):
                logits = torch.tensor([math.log(planted[pos]) + margin * (order[pos] == right) for pos in range(4)])
                asked.append((order, answering.letter_logprobs(lm, logits, q.letters)))
            record = answering.ensemble_record(q, asked)
            assert record["answer"] == LETTERS[right]
            out.append(record)
            questions.append(q)
    doc = letter_prior.estimate(load_all_predictions(paths), questions, [q.id for q in questions])
    assert doc["questions"] == {"4": 5} and doc["prior"]["4"] == pytest.approx(planted, abs=1e-5)


def test_permutations_with_debias_record_what_the_model_said(seeing, heldout, tmp_path):
    """--permutations with --debias: each order's probabilities in `orders` and their mean in `observed_probs`
    are what the model said (as the same run without --debias records them); `probs` is the mean after
    dividing the prior out of each order."""
    common = dict(permutations=4, limit=16)
    plain = tiny_task.eval_config(tiny_task.CHECKPOINT, heldout, tmp_path / "p" / "submission.csv", **common)
    both = plain.replace(output=tmp_path / "d" / "submission.csv", debias=True, debias_questions=3)
    for cfg in (plain, both):
        run(cfg, model_loader=lambda _c: seeing, say=lambda _m: None)
    said, debiased = records(tmp_path / "p"), records(tmp_path / "d")
    doc = json.loads((tmp_path / "d" / "prior.json").read_text())
    estimated = set(doc["ids"])
    assert len(estimated) == 6 and debiased.keys() == said.keys()
    for qid, r in debiased.items():
        observed = [(o["order"], o["probs"]) for o in r["orders"]]
        assert [o["order"] for o in r["orders"]] == [o["order"] for o in said[qid]["orders"]]
        for mine, theirs in zip(r["orders"], said[qid]["orders"], strict=True):
            assert mine["probs"] == pytest.approx(theirs["probs"], abs=1e-6)
        if qid in estimated:  # asked in all orders to estimate the prior: nothing divided out
            assert "observed_probs" not in r and r["probs"] == pytest.approx(said[qid]["probs"], abs=1e-6)
            continue
        prior = doc["prior"][str(len(r["probs"]))]
        assert r["observed_probs"] == pytest.approx(choice_orders.ensemble(observed), abs=2e-6)
        assert r["observed_probs"] == pytest.approx(said[qid]["probs"], abs=2e-6)
        fixed = choice_orders.ensemble([(order, choice_orders.debias(shown, prior)) for order, shown in observed])
        assert r["probs"] == pytest.approx(fixed, abs=2e-5) and r["answer"] == choice_orders.pick(r["probs"])


def test_failed_estimation_questions_are_retried_and_a_missing_prior_is_named(seeing, heldout, tmp_path):
    """Estimation questions whose clip failed are answered again (in all their orders) by a resumed run; a
    number of choices left without an estimate is named in a warning, not silently left undebiased."""
    data = tmp_path / "data"
    shutil.copytree(heldout.parent.parent, data)  # DIR/train/train.json, video paths relative to DIR
    items = json.loads((data / "train" / heldout.name).read_text(encoding="utf-8"))["data"]
    four = [it for it in items if len(it["choices"]) == 4]
    two = [it for it in items if len(it["choices"]) == 2]
    # estimation (2 per number of choices): two 4-choice questions, then two 2-choice ones from other clips
    broken = {it["video_path"] for it in two[2:4]}
    chosen = four[:2] + two[2:4] + four[4:5] + two[4:5]
    assert not broken & {it["video_path"] for it in four[:2] + four[4:5] + two[4:5]}
    split = data / "train" / "subset.json"
    split.write_text(json.dumps({"data": chosen}, ensure_ascii=False), encoding="utf-8")
    for rel in broken:
        (data / rel).rename(data / (rel + ".away"))
    cfg = tiny_task.eval_config(tiny_task.CHECKPOINT, split, tmp_path / "out" / "submission.csv", debias=True,
                                debias_questions=2)
    said = []
    run(cfg, model_loader=lambda _c: seeing, say=said.append)
    doc = json.loads((tmp_path / "out" / "prior.json").read_text())
    assert set(doc["prior"]) == {"4"} and len(doc["ids"]) == 2
    warning = "WARNING: --debias has no letter prior for 2 choices"
    assert any(m.startswith(warning) for m in said), said
    first = records(tmp_path / "out")
    failed = [it["id"] for it in two[2:4]]
    assert all(first[qid]["mode"] == "error-prior" for qid in failed)
    assert "observed_probs" not in first[two[4]["id"]]  # answered without the correction, as the warning says
    for rel in broken:
        (data / (rel + ".away")).rename(data / rel)
    said.clear()
    run(cfg, model_loader=lambda _c: seeing, say=said.append)
    again = records(tmp_path / "out")
    for qid in failed:  # tried again, in all their orders
        assert "error" not in again[qid] and len(again[qid]["orders"]) == 2
    assert any("answering 2 estimation questions that failed before" in m for m in said), said
    assert json.loads((tmp_path / "out" / "prior.json").read_text()) == doc  # the prior already used stays
    assert any(m.startswith(warning) for m in said)


# --- system prompt ---------------------------------------------------------------------------------

def test_system_prompt_choices(tmp_path):
    frames = prompts.frames_text([1], 4)
    assert prompts.prompt_prefix(frames, prompts.system_text("none")).startswith("<|im_start|>user\nFrame1: ")
    assert "书生·万象" in prompts.prompt_prefix(frames, prompts.system_text("internvl"))
    assert prompts.prompt_prefix(frames, prompts.system_text("project")) == prompts.prompt_prefix(frames)
    custom = tmp_path / "system.txt"
    custom.write_text("Bạn là trợ lý.\n", encoding="utf-8")
    assert prompts.prompt_prefix(frames, prompts.system_text(str(custom))).startswith(
        "<|im_start|>system\nBạn là trợ lý.<|im_end|>\n<|im_start|>user\n")
    cfg = RunConfig(system_prompt=str(custom))
    assert len(cfg.answer_settings()["system_prompt_sha256"]) == 16
    assert RunConfig(system_prompt="none").answer_settings()["system_prompt"] == "none"
    with pytest.raises(ConfigError, match="--system-prompt"):
        RunConfig(system_prompt="no-such-prompt")


def test_system_prompt_reaches_the_model(seeing, heldout, tmp_path):
    q = load_questions(heldout)[0]
    ids = {}
    for name in ("project", "none"):
        cfg = RunConfig(system_prompt=name, support_frames=False, min_frames=4, max_frames=4)
        clip = inputs.prepare_clip(q.video_path, [q], cfg, inputs.InputSpec.of(seeing))
        ids[name] = seeing.tokenizer.decode(clip.groups[0].prefix_ids[0].tolist())
    assert ids["project"].startswith("<|im_start|>system\n") and ids["none"].startswith("<|im_start|>user\n")
    assert ids["project"].endswith(ids["none"])


# --- detail frames -----------------------------------------------------------------------------------

INFO = VideoInfo(path=None, fps=30.0, num_frames=300, width=2560, height=1440, backend="test")


def test_detail_frames_count_every_token_against_the_budget():
    q = Question("q", "?", ("a", "b"), ("a", "b"), Path("v.mp4"), "v.mp4", support_frames=(2.0, 7.5))
    base = RunConfig(min_frames=8, max_frames=16, frames_per_second=3.0)  # 10 s: 16 frames, 16 tiles
    cfg = base.replace(detail_frames=2, detail_max_num=6, max_visual_tokens=16 * 256)
    count, k = inputs.frame_budget(INFO, cfg, TileSpec(448, 256, None))
    # a 16:9 frame tiled up to 6 tiles is the card's 2x1 grid + thumbnail = 3 tiles: 2 x 2 extra tiles come off
    from roadbuddy.families.internvl.tiles import tiles_per_frame

    assert tiles_per_frame(2560, 1440, 6, True) == 3
    assert (count, k) == (12, 2) and count * 256 + k * 2 * 256 <= cfg.max_visual_tokens
    roomy = cfg.replace(max_visual_tokens=8192)
    assert inputs.frame_budget(INFO, roomy, TileSpec(448, 256, None)) == (16, 2)
    planned = inputs.plan_frames(INFO, [q], roomy, TileSpec(448, 256, None))
    detail = set(inputs.plan_detail(INFO, planned, [q], roomy, TileSpec(448, 256, None))["q"])
    assert len(detail) == 2 and detail <= set(planned["q"])
    assert {min(planned["q"], key=lambda f: abs(f / 30 - t)) for t in (2.0, 7.5)} == detail  # nearest support
    spread = inputs.plan_detail(INFO, planned, [q], roomy.replace(support_frames=False), TileSpec(448, 256, None))["q"]
    assert len(spread) == 2
    # the VRAM estimate plans for the same tokens
    assert memory.planned_prompt_tokens(roomy, TileSpec(448, 256, None)) == 16 * 256 + 2 * 2 * 256 + 146 + 8 * 16 + 353


def test_detail_frames_tiles_and_prompt(seeing, tmp_path):
    from roadbuddy.testing.synth import write_road_clip

    clip_path = write_road_clip(tmp_path / "v.mp4", seconds=2.0, fps=10, width=224, height=126, light="red")
    q = Question("q", "?", ("a", "b"), ("a", "b"), clip_path, "v.mp4", support_frames=(1.0,))
    cfg = RunConfig(min_frames=4, max_frames=4, detail_frames=1, detail_max_num=6, max_visual_tokens=10_000)
    clip = inputs.prepare_clip(clip_path, [q], cfg, inputs.InputSpec.of(seeing))
    assert clip.error is None
    counts = clip.tiles_per_frame
    assert sorted(counts) == [1, 1, 1, 3]  # 16:9 at 6 tiles: 2x1 + thumbnail, the others one tile
    detail_frame = clip.frame_order[counts.index(3)]
    assert detail_frame == min(clip.frame_order, key=lambda f: abs(f / 10 - 1.0))
    assert clip.tiles.shape[0] == sum(counts)
    group = clip.groups[0]
    image_tokens = int((group.prefix_ids == seeing.image_token_id).sum())
    assert image_tokens == sum(counts) * seeing.tokens_per_tile
    (record,) = answering.answer_clip(seeing, clip, cfg)
    assert record["tiles_per_frame"] == counts and record["visual_tokens"] == image_tokens


def test_each_question_sees_its_own_detail_frames_within_the_budget(seeing, tmp_path):
    """Questions of one clip with different support frames: each sees its K detail frames (the ones nearest
    its own timestamps) and no other question's, so no prompt exceeds --max-visual-tokens, and the VRAM
    estimate plans exactly the visual tokens sent. (With the clip's detail frames the union over its
    questions, a question saw 3 or 4 detail frames here, up to 64 visual tokens for a budget of 48.)"""
    from roadbuddy.testing.synth import write_road_clip

    clip_path = write_road_clip(tmp_path / "v.mp4", seconds=4.0, fps=10, width=224, height=126, light="red")
    support = [(0.5,), (1.0,), (1.5,), (2.0, 3.0), (2.6,)]
    questions = [Question(f"q{i}", "?", ("a", "b"), ("a", "b"), clip_path, "v.mp4", support_frames=t)
                 for i, t in enumerate(support)]
    per_frame, detail_tiles = 1, 3  # 16:9 at --detail-max-num 6: the 2x1 grid + thumbnail
    budget = seeing.tokens_per_tile * (8 * per_frame + 2 * (detail_tiles - per_frame))
    cfg = RunConfig(min_frames=8, max_frames=8, detail_frames=2, detail_max_num=6, max_visual_tokens=budget,
                    prefetch=0)
    clip = inputs.prepare_clip(clip_path, questions, cfg, inputs.InputSpec.of(seeing))
    assert clip.error is None
    recs = {r["id"]: r for r in answering.answer_clip(seeing, clip, cfg)}
    for q in questions:
        r = recs[q.id]
        detail = [f for f, n in zip(r["frames"], r["tiles_per_frame"], strict=True) if n == detail_tiles]
        assert len(r["frames"]) == 8 and len(detail) == 2, (q.id, r["tiles_per_frame"])
        assert all(min(r["frames"], key=lambda f: abs(f / 10 - t)) in detail for t in q.support_frames)
        assert r["visual_tokens"] == sum(r["tiles_per_frame"]) * seeing.tokens_per_tile == budget
    # a frame one question sees in detail and another plainly is tiled both ways
    assert any(d for _, d in clip.views) and len(clip.views) > len(clip.frame_order)
    text = memory.PREFIX_TEXT_TOKENS + memory.TEXT_TOKENS_PER_FRAME * 8 + memory.LONGEST_SUFFIX_TOKENS
    assert memory.planned_prompt_tokens(cfg, inputs.InputSpec.of(seeing)) == budget + text
