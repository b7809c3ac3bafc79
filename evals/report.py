"""The accuracy report of one eval run: numbers (report.json), a page (report.md), a chart (report.png).

Inputs are the labeled questions and the pipeline's predictions.jsonl records;
everything here is plain arithmetic on a pandas table with one row per
question, so it is unit-tested without a model (tests/test_eval_report.py).

- Accuracy comes with a 95% Wilson score interval (good at small n and near 0 or 1; scipy).
- The prior baseline answers B for 2 choices and A otherwise (roadbuddy.data.questions.prior_letter),
  on the same items; the margin is accuracy minus prior accuracy.
- Two runs on the same questions (this one against the prior, or against a
  --baseline report) are compared pairwise: wins (right here, wrong there),
  losses, and McNemar's exact test on the discordant pairs (two-sided binomial
  with p = 1/2), which says whether the difference is more than chance.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from evals import categories
from roadbuddy.data.questions import Question, prior_letter
from roadbuddy.predict.answering import TIME_STEPS
from roadbuddy.selector.times import hit

SCHEMA = 1

# steps a record that splits its time may not name: it was written before the step existed (records before the
# frame selector have no "select"), and spent nothing there, so old runs stay comparable and their sums finite
ABSENT_IS_ZERO = ("select",)
# a selector's predicted time hits when it lies within this many seconds of a true support timestamp
HIT_TOLERANCE_S = 1.0


# --- statistics --------------------------------------------------------------

def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (scipy); (0, 1) when n is 0."""
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    ci = binomtest(successes, n).proportion_ci(confidence_level=confidence, method="wilson")
    # clamp away float noise at the edges (the exact bounds at p = 0 or 1 are 0 and 1)
    lo = 0.0 if successes == 0 else max(0.0, float(ci.low))
    hi = 1.0 if successes == n else min(1.0, float(ci.high))
    return lo, hi


def mcnemar_p(wins: int, losses: int) -> float:
    """McNemar's exact test: two-sided p-value of `wins` vs `losses` discordant pairs under p = 1/2
    (scipy's exact binomial test on the smaller count)."""
    if wins < 0 or losses < 0:
        raise ValueError(f"counts must be >= 0, got {wins} and {losses}")
    if wins + losses == 0:
        return 1.0
    return float(binomtest(min(wins, losses), wins + losses, 0.5).pvalue)


def _rate(k: int, n: int) -> dict:
    lo, hi = wilson_interval(k, n)
    return {"correct": int(k), "n": int(n), "accuracy": (k / n) if n else None, "ci95": [lo, hi]}


def _paired(a: pd.Series, b: pd.Series) -> dict:
    """Wins (a right, b wrong), losses, ties and McNemar's p of two aligned correctness columns."""
    wins = int((a & ~b).sum())
    losses = int((~a & b).sum())
    return {"wins": wins, "losses": losses, "both_right": int((a & b).sum()), "both_wrong": int((~a & ~b).sum()),
            "mcnemar_p": mcnemar_p(wins, losses)}


# --- the per-question table ----------------------------------------------------

class UnlabeledSplitError(ValueError):
    """The split has questions without an answer; an eval needs labels."""


def _step_ms(rec: dict | None, step: str) -> float:
    """A record's ms in one step of its time split: NaN without a split (an error record), 0 for a step the
    record predates (ABSENT_IS_ZERO)."""
    split = rec.get("time_split_ms") if rec else None
    if not isinstance(split, dict):
        return np.nan
    return split.get(step, 0.0 if step in ABSENT_IS_ZERO else np.nan)


def _seconds(values) -> list[float] | None:
    """A record's list of seconds (selector_times), or None where it has none or something else."""
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values):
        return None
    return [float(v) for v in values]


def question_table(questions: list[Question], records: dict[str, dict]) -> pd.DataFrame:
    """One row per question: truth, answer, correctness, the prior, and what the run recorded.

    A question without a record (the run stopped before it) is answered with the
    prior, as the submission would be, and flagged `missing`.
    """
    unlabeled = [q.id for q in questions if not q.answer]
    if unlabeled:
        shown = ", ".join(unlabeled[:5]) + (" ..." if len(unlabeled) > 5 else "")
        raise UnlabeledSplitError(f"{len(unlabeled)} questions have no answer ({shown}); evaluate a labeled split "
                                  "such as train.json")
    rows = []
    for q in questions:
        rec = records.get(q.id)
        prior = prior_letter(q.num_choices)
        answer = str(rec["answer"]).upper() if rec and rec.get("answer") else prior
        frames = rec.get("frames") if rec else None
        rows.append({
            "id": q.id,
            "clip": q.video_rel,
            "question": q.question,
            "num_choices": q.num_choices,
            "truth": q.answer,
            "answer": answer,
            "correct": answer == q.answer,
            "prior": prior,
            "prior_correct": prior == q.answer,
            "categories": categories.categorize(q.question, q.choices),
            "mode": rec.get("mode", "") if rec else "missing",
            "missing": rec is None,
            "fallback": bool(rec.get("fallback")) if rec else False,
            "error": (rec.get("error") or "") if rec else "",
            "frames": len(frames) if frames is not None else np.nan,
            "tiles": rec.get("tiles", np.nan) if rec else np.nan,
            "visual_tokens": rec.get("visual_tokens", np.nan) if rec else np.nan,
            "prompt_tokens": rec.get("prompt_tokens", np.nan) if rec else np.nan,
            "time_ms": rec.get("time_ms", np.nan) if rec else np.nan,
            **{f"time_{step}_ms": _step_ms(rec, step) for step in TIME_STEPS},
            # the model's probability of the right letter (score mode records every valid letter's)
            "p_truth": float(rec["probs"][q.answer]) if rec and q.answer in (rec.get("probs") or {}) else np.nan,
            # the frame selector's predicted support times (best first) and which times planned the frames
            "support_frames": tuple(q.support_frames),
            "selector_times": _seconds(rec.get("selector_times")) if rec else None,
            "support_from": str(rec.get("support_from") or "") if rec else "",
        })
    table = pd.DataFrame(rows)
    for col in ("frames", "tiles", "visual_tokens", "prompt_tokens", "time_ms", "p_truth",
                *(f"time_{step}_ms" for step in TIME_STEPS)):
        table[col] = pd.to_numeric(table[col], errors="coerce")
    return table


# --- the report ----------------------------------------------------------------

def _group_rates(table: pd.DataFrame, key: str) -> list[dict]:
    out = []
    for value, group in table.groupby(key, sort=True):
        row = {key: value.item() if hasattr(value, "item") else value, **_rate(int(group.correct.sum()), len(group))}
        row["prior_accuracy"] = float(group.prior_correct.mean())
        out.append(row)
    return out


def _by_category(table: pd.DataFrame) -> list[dict]:
    exploded = table[["categories", "correct", "prior_correct"]].explode("categories")
    words = dict(categories.describe())
    out = []
    for name in categories.ORDER:
        group = exploded[exploded.categories == name]
        if group.empty:
            continue
        row = {"category": name, **_rate(int(group.correct.sum()), len(group))}
        row["prior_accuracy"] = float(group.prior_correct.mean())
        row["rule"] = words[name]
        out.append(row)
    return out


def _by_clip(table: pd.DataFrame, worst: int = 10) -> dict:
    per = table.groupby("clip", sort=False).agg(n=("correct", "size"), correct=("correct", "sum"))
    per["accuracy"] = per.correct / per.n
    per = per.reset_index()
    ranked = per.assign(wrong=per.n - per.correct).sort_values(["wrong", "n"], ascending=[False, False], kind="stable")
    return {
        "clips": len(per),
        "all_right": int((per.correct == per.n).sum()),
        "all_wrong": int((per.correct == 0).sum()),
        "worst": [{"clip": r.clip, "n": int(r.n), "correct": int(r.correct)}
                  for r in ranked.head(worst).itertuples() if r.wrong > 0],
        "table": [{"clip": r.clip, "n": int(r.n), "correct": int(r.correct)} for r in per.itertuples()],
    }


def _letters(table: pd.DataFrame) -> list[str]:
    return sorted(set(table.truth) | set(table.answer))


def _confusion(table: pd.DataFrame) -> dict:
    letters = _letters(table)
    matrix = pd.crosstab(table.truth, table.answer).reindex(index=letters, columns=letters, fill_value=0)
    return {"letters": letters, "rows": "true position", "columns": "predicted position",
            "matrix": matrix.astype(int).values.tolist()}


def _shares(series: pd.Series, letters: list[str]) -> dict[str, float]:
    counts = series.value_counts()
    return {letter: float(counts.get(letter, 0) / len(series)) for letter in letters} if len(series) else {}


def _position_bias(table: pd.DataFrame) -> list[dict]:
    """Per number of choices: how often each position is predicted, against how often it is right."""
    out = []
    for num, group in table.groupby("num_choices", sort=True):
        letters = [chr(ord("A") + i) for i in range(int(num))]
        predicted, true = _shares(group.answer, letters), _shares(group.truth, letters)
        out.append({"num_choices": int(num), "n": len(group), "predicted_share": predicted, "true_share": true,
                    "excess": {k: predicted[k] - true[k] for k in letters}})
    return out


def _describe(series: pd.Series) -> dict | None:
    s = series.dropna()
    if s.empty:
        return None
    return {"mean": float(s.mean()), "min": float(s.min()), "max": float(s.max()), "median": float(s.median())}


def _time_split(table: pd.DataFrame) -> dict | None:
    """Mean ms per question spent in each step, over the questions whose records split their time."""
    cols = [f"time_{step}_ms" for step in TIME_STEPS]
    split = table[cols].dropna()
    if split.empty:
        return None
    return {"questions": len(split), **{step: float(split[col].mean()) for step, col in zip(TIME_STEPS, cols)}}


def _selector(table: pd.DataFrame) -> dict | None:
    """The frame selector's figures, where records carry them (None otherwise): how many questions it scored,
    whose times planned the frames, and its hit rate (a predicted time within HIT_TOLERANCE_S of a true
    support timestamp; best_hit_rate: its best time alone) over the questions with both."""
    scored = table.selector_times.map(lambda t: t is not None)
    planned = table.support_from.value_counts()
    if not scored.any() and planned.drop("", errors="ignore").empty:
        return None
    both = table[scored & table.support_frames.map(bool)]
    hits = sum(hit(r.selector_times, r.support_frames, HIT_TOLERANCE_S) for r in both.itertuples())
    best = sum(hit(r.selector_times[:1], r.support_frames, HIT_TOLERANCE_S) for r in both.itertuples())
    n = len(both)
    return {
        "scored": int(scored.sum()),
        "planned_from": {"selector": int(planned.get("selector", 0)), "file": int(planned.get("file", 0))},
        "tolerance_s": HIT_TOLERANCE_S,
        "hit_questions": n,
        "hits": int(hits),
        "hit_rate": hits / n if n else None,
        "hit_ci95": list(wilson_interval(int(hits), n)) if n else None,
        "best_hit_rate": best / n if n else None,
    }


def build_report(table: pd.DataFrame, *, settings: dict | None = None, wall_seconds: float | None = None,
                 baseline: dict | None = None, baseline_path: str | None = None) -> dict:
    """Every number of the report, JSON-ready."""
    n = len(table)
    if n == 0:
        raise ValueError("no questions to report on")
    correct, prior_correct = int(table.correct.sum()), int(table.prior_correct.sum())
    times = table.time_ms.dropna()
    answered = int((~table.missing).sum())
    fallbacks = int(table.fallback.sum())
    errors = table[table.error != ""]
    report = {
        "schema": SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings or {},
        "questions": n,
        "clips": int(table["clip"].nunique()),
        "accuracy": _rate(correct, n),
        "prior": {**_rate(prior_correct, n), "rule": "B for 2 choices, A otherwise"},
        "margin_over_prior": (correct - prior_correct) / n,
        "vs_prior": _paired(table.correct, table.prior_correct),
        "by_num_choices": _group_rates(table, "num_choices"),
        "by_category": _by_category(table),
        "by_clip": _by_clip(table),
        "confusion": _confusion(table),
        "position_bias": _position_bias(table),
        "modes": {str(k): int(v) for k, v in table["mode"].value_counts().items()},
        "missing": int(table.missing.sum()),
        "fallbacks": {"count": fallbacks, "rate": fallbacks / answered if answered else 0.0},
        "errors": {"count": len(errors), "rate": len(errors) / n,
                   "examples": {r.id: r.error for r in errors.head(20).itertuples()}},
        "inputs": {col: _describe(table[col]) for col in ("frames", "tiles", "visual_tokens", "prompt_tokens")},
        # mean probability the model gave the right letter: moves with a subtle break before accuracy does
        "confidence": ({**_describe(table.p_truth), "n": int(table.p_truth.notna().sum())}
                       if table.p_truth.notna().any() else None),
        "time_ms": ({"mean": float(times.mean()), "median": float(times.median()),
                     "p95": float(np.percentile(times, 95)), "max": float(times.max()),
                     "sum_s": float(times.sum() / 1000)} if not times.empty else None),
        "time_split_ms": _time_split(table),
        "selector": _selector(table),
        "wall_seconds": wall_seconds,
        "comparison": compare(table, baseline, baseline_path) if baseline is not None else None,
        "checks": [],
        "per_question": [
            {"id": r.id, "clip": r.clip, "num_choices": int(r.num_choices), "truth": r.truth, "answer": r.answer,
             "correct": bool(r.correct), "prior": r.prior, "categories": list(r.categories), "mode": r.mode,
             "time_ms": None if pd.isna(r.time_ms) else float(r.time_ms)}
            for r in table.itertuples()
        ],
    }
    return report


def compare(table: pd.DataFrame, baseline: dict, baseline_path: str | None = None) -> dict:
    """This run against a baseline report, on the questions both answered."""
    theirs = {q["id"]: q for q in baseline.get("per_question", [])}
    common = table[table.id.isin(theirs)]
    base_correct = common.id.map(lambda i: bool(theirs[i]["correct"])).astype(bool)
    base_answer = common.id.map(lambda i: theirs[i]["answer"])
    here = common.correct.astype(bool)
    paired = _paired(here, base_correct)
    n = len(common)
    return {
        "baseline": baseline_path,
        "baseline_settings": baseline.get("settings", {}),
        "common_questions": n,
        "only_here": int((~table.id.isin(theirs)).sum()),
        "only_baseline": len(set(theirs) - set(table.id)),
        "accuracy_here": float(here.mean()) if n else None,
        "accuracy_baseline": float(base_correct.mean()) if n else None,
        "difference": float(here.mean() - base_correct.mean()) if n else None,
        "changed_answers": int((common.answer.values != base_answer.values).sum()) if n else 0,
        **paired,
        "significant_at_5pct": paired["mcnemar_p"] < 0.05,
        "win_ids": common.id[here & ~base_correct].tolist(),
        "loss_ids": common.id[~here & base_correct].tolist(),
    }


def add_checks(report: dict, *, min_accuracy: float | None = None, max_fallback_rate: float | None = None,
               max_prior_accuracy: float | None = None) -> list[str]:
    """Record the user's assertions in the report; returns one sentence per failed check."""
    failures = []
    checks = []
    if min_accuracy is not None:
        value = report["accuracy"]["accuracy"]
        checks.append({"check": "min_accuracy", "threshold": min_accuracy, "value": value, "passed": value >= min_accuracy})
        if value < min_accuracy:
            failures.append(f"accuracy {value:.1%} is below --min-accuracy {min_accuracy:.1%}")
    if max_fallback_rate is not None:
        value = report["fallbacks"]["rate"]
        checks.append({"check": "max_fallback_rate", "threshold": max_fallback_rate, "value": value,
                       "passed": value <= max_fallback_rate})
        if value > max_fallback_rate:
            failures.append(f"fallback rate {value:.1%} is above --max-fallback-rate {max_fallback_rate:.1%}")
    if max_prior_accuracy is not None:
        value = report["prior"]["accuracy"]
        checks.append({"check": "max_prior_accuracy", "threshold": max_prior_accuracy, "value": value,
                       "passed": value <= max_prior_accuracy})
        if value > max_prior_accuracy:
            failures.append(f"the prior baseline scores {value:.1%}, above {max_prior_accuracy:.1%}: the split is too easy")
    report["checks"] = checks
    return failures


# --- files ---------------------------------------------------------------------

def load_report(path: Path | str) -> dict:
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    if "per_question" not in report:
        raise ValueError(f"{path} is not an eval report (no per_question records)")
    return report


def write_report(report: dict, folder: Path | str) -> dict[str, Path]:
    """report.json, report.md and report.png into `folder`; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / "report.json", "md": folder / "report.md", "png": folder / "report.png"}
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    paths["md"].write_text(render_markdown(report, chart=paths["png"].name), encoding="utf-8")
    plot(report, paths["png"])
    return paths


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(rate: dict) -> str:
    lo, hi = rate["ci95"]
    return f"{_pct(lo)} to {_pct(hi)}"


def _md_table(header: list[str], rows: list[list]) -> str:
    """A GitHub markdown table (pandas' to_markdown needs the tabulate package, which we do not depend on)."""
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# the settings line of report.md and report.html: what was evaluated, on what, and the answer settings a reader
# compares first (the adapter and the levers only when a run has them)
SETTINGS_LINE = ("model", "adapter", "split", "questions_selected", "min_frames", "max_frames", "max_num",
                 "max_visual_tokens", "support_frames", "frame_selector", "scan_fps", "selector_times",
                 "selector_wins", "simple_prompts", "answer_mode", "quantization",
                 "system_prompt", "permutations", "debias", "detail_frames", "device")


def evaluated(settings: dict) -> str:
    """What an eval evaluated, for titles: the model's name, and the adapter's when one was loaded (an eval of
    an adapter must not read as one of its base model)."""
    def name(path) -> str:
        return Path(str(path).rstrip("/")).name or str(path)

    adapter = settings.get("adapter")
    model = name(settings.get("model") or "model")
    return f"{model} + adapter {name(adapter)}" if adapter else model


def settings_line(settings: dict) -> str:
    return ", ".join(f"{k}={settings[k]}" for k in SETTINGS_LINE if k in settings)


def render_markdown(report: dict, chart: str | None = "report.png") -> str:
    acc, prior = report["accuracy"], report["prior"]
    s = report.get("settings", {})
    out = [f"# Eval report: {evaluated(s)} on {Path(s.get('split') or 'split').name}", ""]
    if s:
        out.append("Settings: " + settings_line(s) + ".")
        out.append("")
    out += [
        f"**Accuracy {_pct(acc['accuracy'])}** ({acc['correct']}/{acc['n']}; 95% CI {_ci(acc)}) on "
        f"{report['questions']} questions from {report['clips']} clips.",
        "",
        f"Prior baseline ({prior['rule']}): {_pct(prior['accuracy'])} ({prior['correct']}/{prior['n']}); "
        f"margin {100 * report['margin_over_prior']:+.1f} points "
        f"({report['vs_prior']['wins']} wins, {report['vs_prior']['losses']} losses against it, "
        f"McNemar p = {report['vs_prior']['mcnemar_p']:.3g}).",
        "",
    ]
    if chart:
        out += [f"![accuracy by category, choices, confusion and position bias]({chart})", ""]
    cmp_ = report.get("comparison")
    if cmp_:
        verdict = "a real difference (p < 0.05)" if cmp_["significant_at_5pct"] else "not distinguishable from chance (p >= 0.05)"
        out += [
            "## Against the baseline",
            "",
            f"Baseline: `{cmp_['baseline']}`. On the {cmp_['common_questions']} questions both runs answered: "
            f"{_pct(cmp_['accuracy_here'])} here vs {_pct(cmp_['accuracy_baseline'])} "
            f"({100 * (cmp_['difference'] or 0):+.1f} points); {cmp_['wins']} wins, {cmp_['losses']} losses, "
            f"{cmp_['both_right']} both right, {cmp_['both_wrong']} both wrong; {cmp_['changed_answers']} answers "
            f"changed. McNemar exact p = {cmp_['mcnemar_p']:.3g}: {verdict}.",
            "",
        ]
        if cmp_["only_here"] or cmp_["only_baseline"]:
            out += [f"({cmp_['only_here']} questions only here, {cmp_['only_baseline']} only in the baseline: "
                    "not compared.)", ""]
    if report.get("checks"):
        out += ["## Checks", "", _md_table(["check", "threshold", "value", "result"], [
            [c["check"], _pct(c["threshold"]), _pct(c["value"]), "pass" if c["passed"] else "FAIL"]
            for c in report["checks"]]), ""]
    out += ["## By number of choices", "", _md_table(
        ["choices", "n", "accuracy", "95% CI", "prior"],
        [[r["num_choices"], r["n"], _pct(r["accuracy"]), _ci(r), _pct(r["prior_accuracy"])]
         for r in report["by_num_choices"]]), ""]
    out += ["## By category", "",
            "Categories come from the question text (rules in evals/categories.py); a question can be in several.",
            "", _md_table(
                ["category", "n", "accuracy", "95% CI", "prior", "rule"],
                [[r["category"], r["n"], _pct(r["accuracy"]), _ci(r), _pct(r["prior_accuracy"]), r["rule"]]
                 for r in report["by_category"]]), ""]
    clips = report["by_clip"]
    out += ["## By clip", "",
            f"{clips['clips']} clips: {clips['all_right']} with every question right, {clips['all_wrong']} with every "
            "question wrong (all clips are in report.json).", ""]
    if clips["worst"]:
        out += ["Most wrong answers:", "", _md_table(
            ["clip", "questions", "right"], [[c["clip"], c["n"], c["correct"]] for c in clips["worst"]]), ""]
    conf = report["confusion"]
    out += ["## Confusion (rows: true position, columns: predicted)", "", _md_table(
        ["true \\ predicted", *conf["letters"]],
        [[letter, *row] for letter, row in zip(conf["letters"], conf["matrix"])]), ""]
    out += ["## Answer-position bias", "",
            "Share of answers given at each position against the share of questions whose answer is there.", ""]
    for b in report["position_bias"]:
        out += [f"{b['num_choices']} choices ({b['n']} questions):", "", _md_table(
            ["", *b["predicted_share"]],
            [["predicted", *map(_pct, b["predicted_share"].values())],
             ["true", *map(_pct, b["true_share"].values())],
             ["excess", *(f"{100 * v:+.1f}" for v in b["excess"].values())]]), ""]
    fb, err = report["fallbacks"], report["errors"]
    out += ["## Run", "",
            f"Answer modes: {', '.join(f'{k} {v}' for k, v in report['modes'].items())}. "
            f"Fallbacks (generated text unparseable, score answer used): {fb['count']} ({_pct(fb['rate'])}). "
            f"Errors (video unreadable, prior answer used): {err['count']} ({_pct(err['rate'])})."
            + (f" Missing answers: {report['missing']}." if report.get("missing") else "")
            + (f" Mean probability of the right letter: {report['confidence']['mean']:.3f} (min "
               f"{report['confidence']['min']:.3f}, {report['confidence']['n']} questions)."
               if report.get("confidence") else ""), ""]
    for qid, why in err["examples"].items():
        out.append(f"- {qid}: {why}")
    if err["examples"]:
        out.append("")
    sel = report.get("selector")
    if sel:
        line = (f"Frame selector: predicted times for {sel['scored']} questions; frames planned from its times for "
                f"{sel['planned_from']['selector']}, from the file's support_frames for {sel['planned_from']['file']}.")
        if sel["hit_questions"]:
            lo, hi = sel["hit_ci95"]
            line += (f" Hit rate (a predicted time within {sel['tolerance_s']:g} s of a true support timestamp): "
                     f"{_pct(sel['hit_rate'])} ({sel['hits']}/{sel['hit_questions']}; 95% CI {_pct(lo)} to "
                     f"{_pct(hi)}); its best time alone {_pct(sel['best_hit_rate'])}.")
        else:
            line += " No question with predicted times has support_frames: no hit rate."
        out += [line, ""]
    rows = [[name, f"{d['mean']:.1f}", f"{d['min']:.0f}", f"{d['max']:.0f}"]
            for name, d in report["inputs"].items() if d]
    if rows:
        out += [_md_table(["per question", "mean", "min", "max"], rows), ""]
    t = report.get("time_ms")
    if t:
        out.append(f"Time per question: mean {t['mean']:.0f} ms, median {t['median']:.0f} ms, p95 {t['p95']:.0f} ms, "
                   f"max {t['max']:.0f} ms (sum {t['sum_s']:.1f} s).")
    split = report.get("time_split_ms")
    if split:
        ms = {step: split.get(step, 0.0) for step in TIME_STEPS}  # a report.json from before the selector: no "select"
        total = sum(ms.values()) or 1.0
        parts = ", ".join(f"{step.replace('_', ' + ')} {v:.0f} ms ({v / total:.0%})" for step, v in ms.items())
        out.append(f"Where a question's time goes (mean over {split['questions']}): {parts}; decoding runs "
                   "on a worker thread beside the model, so it only adds to the wall time where it is not hidden.")
    if report.get("wall_seconds") is not None:
        out.append(f"Wall time of the eval (load, decode, answer, report): {report['wall_seconds']:.1f} s.")
    out.append("")
    return "\n".join(out)


def plot(report: dict, path: Path | str) -> None:
    """Four panels: accuracy by category and by number of choices (95% CI, prior marked), confusion, position bias."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    acc = report["accuracy"]["accuracy"]

    def bars(ax, rows, label_key, title, horizontal):
        labels = [f"{r[label_key]} ({r['n']})" for r in rows]
        values = np.array([r["accuracy"] for r in rows])
        err = np.array([[r["accuracy"] - r["ci95"][0], r["ci95"][1] - r["accuracy"]] for r in rows]).T
        pos = np.arange(len(rows))
        priors = [r["prior_accuracy"] for r in rows]
        if horizontal:
            ax.barh(pos, values, xerr=err, color="#9DB8DC", capsize=3)
            ax.scatter(priors, pos, marker="|", s=200, color="#C44E52", zorder=3, label="prior")
            ax.axvline(acc, color="grey", ls="--", lw=1, label=f"overall {acc:.1%}")
            ax.set_yticks(pos, labels)
            ax.invert_yaxis()
            ax.set_xlim(0, 1)
            ax.set_xlabel("accuracy (95% CI)")
        else:
            ax.bar(pos, values, yerr=err, color="#9DB8DC", capsize=4)
            ax.scatter(pos, priors, marker="_", s=600, color="#C44E52", zorder=3, label="prior")
            ax.axhline(acc, color="grey", ls="--", lw=1, label=f"overall {acc:.1%}")
            ax.set_xticks(pos, labels)
            ax.set_ylim(0, 1)
            ax.set_ylabel("accuracy (95% CI)")
        ax.set_title(title)
        ax.legend(loc="lower right", fontsize=8)

    bars(axes[0, 0], report["by_category"], "category", "by question category (n)", horizontal=True)
    bars(axes[0, 1], report["by_num_choices"], "num_choices", "by number of choices (n)", horizontal=False)

    conf = report["confusion"]
    matrix = np.array(conf["matrix"])
    ax = axes[1, 0]
    ax.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(conf["letters"]))
    ax.set_xticks(ticks, conf["letters"])
    ax.set_yticks(ticks, conf["letters"])
    ax.set_xlabel("predicted position")
    ax.set_ylabel("true position")
    ax.set_title("confusion")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > matrix.max() / 2 else "black", fontsize=8)

    ax = axes[1, 1]
    width = 0.8 / max(1, len(report["position_bias"]))
    for k, b in enumerate(report["position_bias"]):
        letters = list(b["excess"])
        x = np.arange(len(letters)) + k * width
        ax.bar(x, [100 * v for v in b["excess"].values()], width, label=f"{b['num_choices']} choices (n={b['n']})")
    ax.axhline(0, color="black", lw=0.8)
    most = max((len(b["excess"]) for b in report["position_bias"]), default=0)
    ax.set_xticks(np.arange(most) + width * (len(report["position_bias"]) - 1) / 2,
                  [chr(ord("A") + i) for i in range(most)])
    ax.set_ylabel("predicted share - true share (points)")
    ax.set_title("answer-position bias")
    ax.legend(fontsize=8)

    s = report.get("settings", {})
    split = Path(str(s.get("split") or "split")).name
    fig.suptitle(f"{evaluated(s)} on {split} ({report['questions']} questions): accuracy {acc:.1%} "
                 f"(95% CI {report['accuracy']['ci95'][0]:.1%}-{report['accuracy']['ci95'][1]:.1%}), "
                 f"prior {report['prior']['accuracy']:.1%}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
