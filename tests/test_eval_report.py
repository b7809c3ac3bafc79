"""The eval report's maths and files (evals/report.py, evals/categories.py, evals/harness.py), without a trained model."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from evals import categories, compare, harness, html_report
from evals import report as rep
from roadbuddy.config import RunConfig
from roadbuddy.data.questions import Question, load_questions


def q(qid: str, answer: str, n: int = 4, clip: str = "c1.mp4",
      text: str = "Biển báo nào xuất hiện trong video?", support: tuple[float, ...] = ()) -> Question:
    choices = ("Đúng", "Sai") if n == 2 else tuple(f"x{i}" for i in range(n))
    return Question(id=qid, question=text, choices=choices, raw_choices=choices, video_path=Path("/d") / clip,
                    video_rel=clip, support_frames=support, answer=answer)


def rec(qid: str, answer: str, **extra) -> dict:
    return {"id": qid, "answer": answer, "mode": "score", "frames": [1, 2, 3], "tiles": 3, "visual_tokens": 768,
            "prompt_tokens": 900, "time_ms": 100.0, **extra}


# --- Wilson interval ------------------------------------------------------------

@pytest.mark.parametrize("k, n, lo, hi", [
    (8, 10, 0.4902, 0.9433),     # the textbook example (Newcombe 1998, Agresti & Coull 1998)
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (81, 263, 0.2553, 0.3662),   # Newcombe 1998 table I: 81/263 -> 0.2553 to 0.3662
    (554, 1490, 0.3476, 0.3967),  # the prior on the full train split (37.2%)
])
def test_wilson_matches_known_values(k, n, lo, hi):
    got = rep.wilson_interval(k, n)
    assert got == pytest.approx((lo, hi), abs=1e-4)


def wilson_by_hand(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson (1927): (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), written out as a reference."""
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def test_wilson_agrees_with_the_formula():
    for k, n in [(0, 1), (1, 1), (3, 7), (37, 100), (999, 1000), (554, 1490)]:
        assert rep.wilson_interval(k, n) == pytest.approx(wilson_by_hand(k, n), abs=1e-9)


def test_wilson_edges():
    assert rep.wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        rep.wilson_interval(5, 4)


# --- McNemar -------------------------------------------------------------------

@pytest.mark.parametrize("b, c, p", [
    (0, 0, 1.0), (0, 6, 2 / 64), (1, 9, 2 * 11 / 1024), (5, 5, 1.0), (3, 4, 1.0), (10, 0, 2 / 1024),
])
def test_mcnemar_hand_values(b, c, p):
    assert rep.mcnemar_p(b, c) == pytest.approx(p)
    assert rep.mcnemar_p(c, b) == pytest.approx(p)


def test_mcnemar_agrees_with_the_exact_binomial_sum():
    """p = min(1, 2 * P[X <= min(b, c)]) for X ~ Binomial(b + c, 1/2), summed exactly with integers."""
    for b, c in [(1, 2), (7, 20), (40, 60), (300, 350), (0, 25)]:
        n = b + c
        expected = min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n)
        assert rep.mcnemar_p(b, c) == pytest.approx(expected, rel=1e-9)


# --- categories ----------------------------------------------------------------

@pytest.mark.parametrize("text, choices, expected", [
    ("Có bao nhiêu biển báo cấm xuất hiện trong video?", (), {"which_signs", "counting", "rules"}),
    ("Trong video này, dựa vào biển báo có bao nhiêu làn xe được phép rẽ trái?", (),
     {"counting", "lanes", "turns_allowed", "rules"}),
    ("Giới hạn tốc độ trên đoạn đường trong video là bao nhiêu?", (), {"speed_limit"}),
    ("Biển báo nào xuất hiện đầu tiên trong video?", (), {"which_signs", "order"}),
    ("Biển báo bên phải có ý nghĩa gì?", (), {"sign_meaning"}),
    ("Làn đường di chuyển hiện tại có được rẽ phải không?", ("Có", "Không"),
     {"yes_no", "lanes", "turns_allowed", "rules"}),
    ("Trong video có xuất hiện đèn giao thông không?", ("Có", "Không"), {"yes_no", "traffic_light"}),
    ("Trong video này, tình trạng mặt đường như thế nào?", (), {"road_scene"}),
    ("Khi di chuyển trên cao tố", (), {"other"}),
])
def test_categories_of_real_questions(text, choices, expected):
    assert set(categories.categorize(text, choices)) == expected


def test_yes_no_comes_from_the_choices():
    assert categories.is_yes_no(("Phải", "Không phải"))
    assert categories.is_yes_no(("Đúng.", "Sai"))
    assert not categories.is_yes_no(("Đúng", "Sai", "Không rõ"))
    assert not categories.is_yes_no(("Cấm đỗ", "Cấm dừng"))


def test_categories_cover_the_real_train_split(real_data_dir):
    questions = load_questions(real_data_dir / "train.json")
    counts = {name: 0 for name in categories.ORDER}
    for question in questions:
        for name in categories.categorize(question.question, question.choices):
            counts[name] += 1
    assert all(counts[name] >= 20 for name in categories.CATEGORIES), counts
    assert counts[categories.OTHER] < 0.05 * len(questions), counts
    yes_no = sum(categories.is_yes_no(x.choices) for x in questions)
    assert yes_no >= 0.9 * sum(x.num_choices == 2 for x in questions)


def test_prior_baseline_on_the_real_train_split(real_data_dir):
    questions = load_questions(real_data_dir / "train.json")
    report = rep.build_report(rep.question_table(questions, {}))  # no records: every answer is the prior
    assert report["prior"]["accuracy"] == pytest.approx(0.372, abs=0.0005)
    assert report["accuracy"]["accuracy"] == report["prior"]["accuracy"]
    assert report["missing"] == len(questions)


# --- the report ----------------------------------------------------------------

def sample_run():
    questions = [q("a", "A"), q("b", "B"), q("c", "C", clip="c2.mp4"), q("d", "D", clip="c2.mp4"),
                 q("e", "A", n=2, clip="c3.mp4"), q("f", "B", n=2, clip="c3.mp4")]
    records = {
        "a": rec("a", "A"),                                       # right (prior right too)
        "b": rec("b", "A"),                                       # wrong
        "c": rec("c", "C", time_ms=300.0),                        # right
        "d": rec("d", "A", mode="error-prior", error="cannot decode c2.mp4: boom"),
        "e": rec("e", "A", mode="generate", raw="A"),             # right (prior B wrong)
        "f": rec("f", "B", mode="generate-fallback-score", fallback=True),  # right
    }
    return questions, records


def test_report_numbers():
    questions, records = sample_run()
    table = rep.question_table(questions, records)
    r = rep.build_report(table, settings={"split": "s.json", "model": "m"})
    assert r["accuracy"]["correct"] == 4 and r["accuracy"]["n"] == 6
    assert r["accuracy"]["ci95"] == pytest.approx(rep.wilson_interval(4, 6))
    assert r["prior"]["correct"] == 2  # a (A) and f (B)
    assert r["margin_over_prior"] == pytest.approx(2 / 6)
    assert (r["vs_prior"]["wins"], r["vs_prior"]["losses"]) == (2, 0)  # c and e; nothing the prior got alone
    by_n = {x["num_choices"]: x for x in r["by_num_choices"]}
    assert (by_n[2]["correct"], by_n[2]["n"], by_n[2]["prior_accuracy"]) == (2, 2, 0.5)
    assert (by_n[4]["correct"], by_n[4]["n"], by_n[4]["prior_accuracy"]) == (2, 4, 0.25)
    cats = {x["category"]: x for x in r["by_category"]}
    assert cats["which_signs"]["n"] == 6 and cats["yes_no"]["n"] == 2
    clips = r["by_clip"]
    assert (clips["clips"], clips["all_right"], clips["all_wrong"]) == (3, 1, 0)
    assert [c["clip"] for c in clips["worst"]] == ["c1.mp4", "c2.mp4"]
    conf = r["confusion"]
    assert conf["letters"] == ["A", "B", "C", "D"]
    m = dict(zip(conf["letters"], conf["matrix"]))
    assert m["A"] == [2, 0, 0, 0] and m["B"] == [1, 1, 0, 0] and m["D"] == [1, 0, 0, 0]
    bias4 = next(b for b in r["position_bias"] if b["num_choices"] == 4)
    assert bias4["predicted_share"] == {"A": 0.75, "B": 0.0, "C": 0.25, "D": 0.0}
    assert bias4["excess"]["A"] == pytest.approx(0.5)
    assert r["fallbacks"] == {"count": 1, "rate": pytest.approx(1 / 6)}
    assert r["errors"]["count"] == 1 and "boom" in r["errors"]["examples"]["d"]
    assert r["inputs"]["frames"]["mean"] == 3 and r["inputs"]["visual_tokens"]["max"] == 768
    assert r["time_ms"]["mean"] == pytest.approx(800 / 6)
    assert r["time_ms"]["p95"] == pytest.approx(250.0)  # numpy's linear percentile of five 100s and one 300
    json.dumps(r)  # JSON-ready


def test_confidence_is_the_mean_probability_of_the_right_letter():
    questions = [q("a", "A"), q("b", "B"), q("c", "C")]
    records = {"a": {**rec("a", "A"), "probs": {"A": 0.9, "B": 0.1}}, "b": {**rec("b", "A"), "probs": {"A": 0.7, "B": 0.3}},
               "c": {k: v for k, v in rec("c", "C").items() if k != "probs"}}  # no probabilities recorded
    r = rep.build_report(rep.question_table(questions, records))
    assert r["confidence"]["n"] == 2
    assert r["confidence"]["mean"] == pytest.approx(0.6) and r["confidence"]["min"] == pytest.approx(0.3)
    assert "Mean probability of the right letter: 0.600" in rep.render_markdown(r, chart=None)
    assert rep.build_report(rep.question_table(questions[2:], records))["confidence"] is None


def test_time_split_is_the_mean_of_the_recorded_steps():
    questions = [q("a", "A"), q("b", "B"), q("c", "C")]
    split = {"decode_tiles": 30.0, "vision": 10.0, "prefill": 50.0, "question": 10.0}
    records = {"a": rec("a", "A", time_split_ms=split),
               "b": rec("b", "B", time_split_ms={k: 3 * v for k, v in split.items()}),
               "c": rec("c", "C")}  # an error record or an older run: no split
    r = rep.build_report(rep.question_table(questions, records))
    # records from before the frame selector name no "select" step: they spent nothing there
    assert r["time_split_ms"] == {"questions": 2, "select": 0.0, "decode_tiles": 60.0, "vision": 20.0,
                                  "prefill": 100.0, "question": 20.0}
    assert "select 0 ms (0%), decode + tiles 60 ms (30%), vision 20 ms (10%), prefill 100 ms (50%), question 20 ms " \
        "(10%)" in rep.render_markdown(r, chart=None)
    assert rep.build_report(rep.question_table(questions[2:], records))["time_split_ms"] is None


def test_time_split_counts_a_missing_select_step_as_zero():
    """A selector run's records carry "select"; an older run's (or a run without a selector) do not: 0 ms there,
    so the two mix without NaN and the totals stay finite."""
    questions = [q("a", "A"), q("b", "B"), q("c", "C")]
    old = {"decode_tiles": 30.0, "vision": 10.0, "prefill": 50.0, "question": 10.0}
    records = {"a": rec("a", "A", time_split_ms={"select": 40.0, **old}), "b": rec("b", "B", time_split_ms=old),
               "c": rec("c", "C")}  # no split at all (an error record): no time in any step
    table = rep.question_table(questions, records)
    assert table.time_select_ms.tolist()[:2] == [40.0, 0.0] and table.time_select_ms.isna().tolist() == \
        [False, False, True]
    assert table.time_decode_tiles_ms.isna().tolist() == [False, False, True]
    r = rep.build_report(table)
    assert r["time_split_ms"] == {"questions": 2, "select": 20.0, "decode_tiles": 30.0, "vision": 10.0,
                                  "prefill": 50.0, "question": 10.0}
    assert "(mean over 2): select 20 ms (17%), decode + tiles 30 ms (25%)" in rep.render_markdown(r, chart=None)
    # a report.json written before the selector has no "select" in its split: report.md still reads it
    r["time_split_ms"].pop("select")
    assert "(mean over 2): select 0 ms (0%), decode + tiles 30 ms (30%)" in rep.render_markdown(r, chart=None)


def test_selector_summary_hit_rate_over_questions_with_support():
    questions = [q("a", "A", support=(4.0,)), q("b", "B", support=(1.0, 8.0)), q("c", "C", support=(1.0,)),
                 q("d", "D"), q("e", "A", support=(2.0,)), q("f", "B", support=(2.0,))]
    records = {
        "a": rec("a", "A", selector_times=[3.0, 9.0], selector_scores=[4.2, 1.0], support_from="selector"),  # 1.0 s off
        "b": rec("b", "B", selector_times=[5.0, 8.9], selector_scores=[2.0, 1.5],
                 support_from="selector"),  # its second time hits
        "c": rec("c", "C", selector_times=[2.1], selector_scores=[0.3], support_from="selector"),  # 1.1 s off: a miss
        "d": rec("d", "D", selector_times=[6.0], selector_scores=[3.3], support_from="selector"),  # no support
        "e": rec("e", "A", support_from="file"),  # the file's support_frames planned it: no times
        "f": rec("f", "B"),  # a record without a selector's fields
    }
    r = rep.build_report(rep.question_table(questions, records))
    sel = r["selector"]
    assert sel == {"scored": 4, "planned_from": {"selector": 4, "file": 1}, "tolerance_s": 1.0,
                   "hit_questions": 3, "hits": 2, "hit_rate": pytest.approx(2 / 3),
                   "hit_ci95": pytest.approx(list(rep.wilson_interval(2, 3))), "best_hit_rate": pytest.approx(1 / 3)}
    json.dumps(r)
    md = rep.render_markdown(r, chart=None)
    assert ("Frame selector: predicted times for 4 questions; frames planned from its times for 4, from the file's "
            "support_frames for 1. Hit rate (a predicted time within 1 s of a true support timestamp): 66.7% "
            "(2/3; 95% CI") in md
    assert "its best time alone 33.3%." in md
    # scored questions without support_frames (a test file): the counts, no rate
    r = rep.build_report(rep.question_table(questions[3:4], records))
    assert (r["selector"]["scored"], r["selector"]["hit_questions"], r["selector"]["hit_rate"]) == (1, 0, None)
    assert "No question with predicted times has support_frames: no hit rate." in rep.render_markdown(r, chart=None)
    # a run without a selector: no summary, and report.md says nothing of one
    questions, records = sample_run()
    r = rep.build_report(rep.question_table(questions, records))
    assert r["selector"] is None and "selector" not in rep.render_markdown(r, chart=None).lower()


def test_settings_line_names_the_frame_selector():
    settings = {"model": "m", "support_frames": True, "frame_selector": "/s/sel", "scan_fps": 4.0,
                "selector_times": 2, "selector_wins": True, "frame_selector_sha256": "ab12"}
    assert rep.settings_line(settings) == ("model=m, support_frames=True, frame_selector=/s/sel, scan_fps=4.0, "
                                           "selector_times=2, selector_wins=True")


def test_missing_record_counts_as_the_prior_answer():
    table = rep.question_table([q("a", "A"), q("b", "B", n=2)], {})
    assert list(table.answer) == ["A", "B"] and table.correct.all() and table.missing.all()


def test_unlabeled_split_is_refused():
    unlabeled = Question(id="t1", question="?", choices=("a", "b"), raw_choices=("a", "b"),
                         video_path=Path("/x.mp4"), video_rel="x.mp4")
    with pytest.raises(rep.UnlabeledSplitError, match="t1"):
        rep.question_table([unlabeled], {})


def test_comparison_with_a_baseline():
    questions, records = sample_run()
    base_records = dict(records, b=rec("b", "B"), c=rec("c", "A"), e=rec("e", "B"))
    base = rep.build_report(rep.question_table(questions, base_records))
    here = rep.build_report(rep.question_table(questions, records), baseline=base, baseline_path="base/report.json")
    c = here["comparison"]
    assert c["common_questions"] == 6
    assert (c["wins"], c["losses"]) == (2, 1)  # c, e won; b lost
    assert c["win_ids"] == ["c", "e"] and c["loss_ids"] == ["b"]
    assert c["mcnemar_p"] == pytest.approx(1.0) and not c["significant_at_5pct"]
    assert c["changed_answers"] == 3
    assert c["difference"] == pytest.approx(4 / 6 - 3 / 6)


def test_checks_record_pass_and_fail():
    questions, records = sample_run()
    r = rep.build_report(rep.question_table(questions, records))
    assert rep.add_checks(r, min_accuracy=0.5, max_fallback_rate=0.2) == []
    fails = rep.add_checks(r, min_accuracy=0.9, max_fallback_rate=0.1, max_prior_accuracy=0.2)
    assert len(fails) == 3 and "below --min-accuracy" in fails[0]
    assert [c["passed"] for c in r["checks"]] == [False, False, False]


def test_write_report_files(tmp_path):
    questions, records = sample_run()
    base = rep.build_report(rep.question_table(questions, dict(records, b=rec("b", "B"))))
    r = rep.build_report(rep.question_table(questions, records), settings={"split": "s.json", "model": "m"},
                         wall_seconds=1.5, baseline=base, baseline_path="b.json")
    rep.add_checks(r, min_accuracy=0.9)
    paths = rep.write_report(r, tmp_path / "out")
    assert rep.load_report(tmp_path / "out")["accuracy"] == r["accuracy"]
    md = paths["md"].read_text(encoding="utf-8")
    for text in ("**Accuracy 66.7%** (4/6", "Prior baseline", "## Against the baseline", "McNemar", "FAIL",
                 "## By category", "| which_signs | 6 |", "## Confusion", "## Answer-position bias",
                 "p95 250 ms", "Errors (video unreadable, prior answer used): 1"):
        assert text in md, text
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the harness, end to end with the tiny random-weight model --------------------

def test_harness_writes_a_report_resumes_and_compares(tiny_checkpoint, synthetic_dataset, tmp_path):
    cfg = RunConfig(model=str(tiny_checkpoint), test_json=synthetic_dataset, device="cpu", progress=False,
                    max_frames=8)
    ids = [x.id for x in load_questions(synthetic_dataset)][1:4]
    first = harness.run_eval(cfg, tmp_path / "r1", ids=ids, say=lambda _m: None)
    assert first.report["questions"] == 3 and first.report["settings"]["answered_now"] == 3
    assert [x["id"] for x in first.report["per_question"]] == ids
    assert all(first.paths[k].is_file() for k in ("json", "md", "png"))
    again = harness.run_eval(cfg, tmp_path / "r1", ids=ids, baseline=tmp_path / "r1" / "report.json",
                             min_accuracy=1.01, say=lambda _m: None)
    assert again.report["settings"]["resumed"] == 3 and again.report["settings"]["answered_now"] == 0
    c = again.report["comparison"]
    assert (c["wins"], c["losses"], c["changed_answers"], c["mcnemar_p"]) == (0, 0, 0, 1.0)
    assert again.failures and "min-accuracy" in again.failures[0]
    assert json.loads(again.paths["json"].read_text())["checks"][0]["passed"] is False


def test_default_report_dir_follows_the_settings(tmp_path):
    split = tmp_path / "train.json"
    a = harness.default_report_dir(RunConfig(model="/m/ckpt"), split)
    b = harness.default_report_dir(RunConfig(model="/m/ckpt", max_frames=16), split)
    assert a.name.startswith("train-ckpt-") and a != b
    assert a == harness.default_report_dir(RunConfig(model="/m/ckpt", limit=5), split)  # a subset resumes


def test_what_was_evaluated_is_named_by_the_folder_the_titles_and_the_settings_line(tmp_path, monkeypatch):
    """An adapter's eval says so wherever a reader looks first: its folder, report.md's title and settings
    line, report.html's title and heading, report.png's title (report.json alone used to)."""
    adapter = Path(__file__).resolve().parents[1] / "evals" / "tiny-rule-adapter"
    split = tmp_path / "train.json"
    base = harness.default_report_dir(RunConfig(model="/m/ckpt"), split)
    tuned = harness.default_report_dir(RunConfig(model="/m/ckpt", adapter=adapter), split)
    assert base.name.startswith("train-ckpt-") and tuned.name.startswith("train-ckpt+tiny-rule-adapter-")
    questions, records = sample_run()
    settings = {"split": "/d/train.json", "model": "/m/InternVL3_5-4B-HF", "adapter": "/a/qlora-r16/",
                "max_frames": 16, "permutations": 4}
    r = rep.build_report(rep.question_table(questions, records), settings=settings)
    titles = []
    monkeypatch.setattr("matplotlib.figure.Figure.suptitle", lambda fig, text, **kw: titles.append(text))
    paths = rep.write_report(r, tmp_path / "out")
    md = paths["md"].read_text(encoding="utf-8").splitlines()
    assert md[0] == "# Eval report: InternVL3_5-4B-HF + adapter qlora-r16 on train.json"
    assert md[2].startswith("Settings: model=/m/InternVL3_5-4B-HF, adapter=/a/qlora-r16/, split=/d/train.json")
    assert "permutations=4" in md[2]
    assert titles and titles[0].startswith("InternVL3_5-4B-HF + adapter qlora-r16 on train.json (6 questions)")
    page = html_report.render_html(r, questions, records, thumbnails=None, page_dir=tmp_path)
    assert "<title>eval report: InternVL3_5-4B-HF + adapter qlora-r16 on train.json</title>" in page
    assert "<h1>Eval report: InternVL3_5-4B-HF + adapter qlora-r16 on train.json</h1>" in page
    assert "adapter=/a/qlora-r16/" in page
    without = rep.render_markdown(rep.build_report(rep.question_table(questions, records),
                                                   settings={"split": "s.json", "model": "/m/ckpt"}), chart=None)
    assert without.startswith("# Eval report: ckpt on s.json\n") and "adapter" not in without


def _report_file(folder: Path, questions, records, split="train.json") -> Path:
    folder.mkdir(parents=True)
    r = rep.build_report(rep.question_table(questions, records), settings={"split": split, "model": "m"})
    (folder / "report.json").write_text(json.dumps(r))
    return folder


def test_compare_takes_the_first_report_as_the_baseline_whatever_the_folders_names(tmp_path, capsys):
    questions, records = sample_run()
    first = _report_file(tmp_path / "a" / "run", questions, records)
    second = _report_file(tmp_path / "b" / "run", questions, dict(records, b=rec("b", "B")))  # b now right
    table = compare.rows([("run", rep.load_report(first)), ("run", rep.load_report(second))])
    assert table[0]["mcnemar_p"] is None and table[1]["mcnemar_p"] == pytest.approx(1.0)
    assert (table[1]["wins"], table[1]["losses"], table[1]["common"]) == (1, 0, 6)
    assert compare.main([str(first), str(second / "report.json")]) == 0
    assert "| 1 / 0 of 6 | 1 |" in capsys.readouterr().out


def test_compare_shows_the_frame_selector_settings_and_its_hit_rate(tmp_path, capsys):
    questions = [q("a", "A", support=(4.0,)), q("b", "B", support=(1.0,)), q("c", "C")]
    plain = {x.id: rec(x.id, x.answer) for x in questions}
    picked = {"a": rec("a", "A", selector_times=[3.5], support_from="selector"),
              "b": rec("b", "B", selector_times=[6.0], support_from="selector"), "c": rec("c", "C")}
    folders = {}
    for name, records, extra in [
            ("base", plain, {}),
            ("sel", picked, {"frame_selector": "/s/sel", "frame_selector_sha256": "ab12", "scan_fps": 4.0,
                             "selector_wins": True})]:
        r = rep.build_report(rep.question_table(questions, records),
                             settings={"split": "train.json", "model": "m", **extra})
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(r))
        folders[name] = tmp_path / name
    table = compare.rows([(n, rep.load_report(f)) for n, f in folders.items()])
    assert table[1]["changes"] == ("frame_selector=/s/sel, frame_selector_sha256=ab12, scan_fps=4.0, "
                                   "selector_wins=True")
    assert (table[0]["selector_hit_rate"], table[1]["selector_hit_rate"]) == (None, 0.5)
    assert compare.main([str(folders["base"]), str(folders["sel"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("| p95 ms | selector hits | settings changed |") and lines[1].count("---") == 11
    assert lines[2].endswith("| - | - |") and lines[3].endswith("| 50.0% of 2 | frame_selector=/s/sel, "
                                                              "frame_selector_sha256=ab12, scan_fps=4.0, "
                                                              "selector_wins=True |")
    # reports without a selector keep the table they had: no column for it
    assert compare.main([str(folders["base"]), str(folders["base"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "selector" not in lines[0] and lines[1].count("---") == 10 and lines[2].count("|") == 11


def test_compare_refuses_reports_of_other_questions_and_warns_on_a_partial_overlap(tmp_path, capsys):
    questions, records = sample_run()
    first = _report_file(tmp_path / "a", questions, records)
    renamed = [Question(id=f"x{x.id}", question=x.question, choices=x.choices, raw_choices=x.raw_choices,
                        video_path=x.video_path, video_rel=x.video_rel, answer=x.answer) for x in questions]
    other = _report_file(tmp_path / "other", renamed, {f"x{k}": dict(v, id=f"x{k}") for k, v in records.items()},
                         split="public_test.json")
    assert compare.main([str(first), str(other)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1  # one sentence, no table of "0 / 0 of 0"
    assert err.startswith(f"error: {other} shares no question with {first}") and "public_test.json" in err
    part = _report_file(tmp_path / "part", questions[:4], {k: records[k] for k in "abcd"})
    assert compare.main([str(first), str(part)]) == 0
    out, err = capsys.readouterr()
    assert "of 4 |" in out and err.startswith(f"warning: {part} shares 4 questions with {first} (4 and 6 questions)")


def test_resolve_split(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "train.json").write_text("{}")
    assert harness.resolve_split("train.json", tmp_path) == tmp_path / "train" / "train.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        harness.resolve_split("nope.json", tmp_path)


def test_wilson_is_sane_everywhere():
    for n in (1, 2, 5, 50):
        for k in range(n + 1):
            lo, hi = rep.wilson_interval(k, n)
            assert 0 <= lo <= k / n <= hi <= 1 and not math.isnan(lo)
