"""Several eval reports side by side: one row per configuration, against the first.

    python -m evals.compare runs/eval/base runs/eval/perm4 runs/eval/debias [--out compare.md]

Each argument is a report folder or its report.json. A row gives the accuracy with its 95% interval,
McNemar's exact p against the first report on the questions both answered (wins and losses), the
answer-position bias (the largest share of answers at one letter above the share of questions whose
answer is there), the mean and p95 time per question, and what its settings change from the first's; where
a report has a frame selector's hit rate (report.json's "selector"), a column gives each report's.
A report that shares no question with the first is refused (exit 2): it was made from another question
file; one that shares only some is compared on those, with a warning.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from evals import report as rep

# settings that say which run it was, not how it answered
IGNORED = {"answered_now", "resumed", "fingerprint", "questions_selected", "split", "data_dir", "device", "ids",
           "limit"}


def _bias(report: dict) -> tuple[float, str]:
    worst, where = 0.0, ""
    for row in report["position_bias"]:
        for letter, excess in row["excess"].items():
            if excess > worst:
                worst, where = excess, f"{letter} of {row['num_choices']}"
    return worst, where


def _changes(first: dict, settings: dict) -> str:
    keys = sorted((set(first) | set(settings)) - IGNORED)
    changed = [f"{k}={settings.get(k)}" for k in keys if str(first.get(k)) != str(settings.get(k))]
    return ", ".join(changed) or "(the first's settings)"


def rows(reports: list[tuple[str, dict]]) -> list[dict]:
    """One dict per report: the figures of the table; the first report (by position, whatever its name) is
    the baseline of the others."""
    first = reports[0][1]
    first_right = {q["id"]: bool(q["correct"]) for q in first["per_question"]}
    out = []
    for index, (name, r) in enumerate(reports):
        acc = r["accuracy"]
        right = {q["id"]: bool(q["correct"]) for q in r["per_question"]}
        common = sorted(set(right) & set(first_right))
        wins = sum(right[i] and not first_right[i] for i in common)
        losses = sum(first_right[i] and not right[i] for i in common)
        times = [q["time_ms"] for q in r["per_question"] if q.get("time_ms") is not None]
        bias, where = _bias(r)
        sel = r.get("selector") or {}
        out.append({
            "report": name, "questions": r["questions"], "accuracy": acc["accuracy"], "ci95": acc["ci95"],
            "wins": wins, "losses": losses, "common": len(common),
            "mcnemar_p": None if index == 0 else rep.mcnemar_p(wins, losses),
            "bias": bias, "bias_at": where,
            "mean_ms": float(np.mean(times)) if times else None,
            "p95_ms": float(np.percentile(times, 95)) if times else None,
            "selector_hit_rate": sel.get("hit_rate"), "selector_hit_questions": sel.get("hit_questions") or 0,
            "changes": "-" if index == 0 else _changes(first.get("settings", {}), r.get("settings", {})),
        })
    return out


class IncomparableReports(ValueError):
    """A report shares no question with the first: one sentence naming both."""


def overlap_warnings(reports: list[tuple[str, dict]]) -> list[str]:
    """One sentence per report that shares only some of its questions with the first; raises
    IncomparableReports for one that shares none (another question file: 0 wins and losses of 0 say nothing)."""
    first_name, first = reports[0]
    first_ids = {q["id"] for q in first["per_question"]}
    out = []
    for name, r in reports[1:]:
        ids = {q["id"] for q in r["per_question"]}
        common = len(ids & first_ids)
        splits = (first.get("settings", {}).get("split"), r.get("settings", {}).get("split"))
        made_from = f" (made from {splits[1]} and {splits[0]})" if splits[0] != splits[1] else ""
        if not common:
            raise IncomparableReports(f"{name} shares no question with {first_name}{made_from}: compare reports "
                                      "of the same question file")
        if ids != first_ids:
            out.append(f"warning: {name} shares {common} questions with {first_name} ({len(ids)} and "
                       f"{len(first_ids)} questions){made_from}: its wins, losses and McNemar p count only those")
    return out


def markdown(table: list[dict]) -> str:
    def ms(x):
        return "-" if x is None else f"{x:.0f}"

    # the selector's hit rate only where a report has one: runs without a selector keep the table they had
    hits = any(r.get("selector_hit_rate") is not None for r in table)
    lines = ["| report | n | accuracy | 95% CI | vs first: wins / losses | McNemar p | position bias | mean ms "
             "| p95 ms |" + (" selector hits |" if hits else "") + " settings changed |",
             "| --- " * (11 if hits else 10) + "|"]
    for r in table:
        p = "-" if r["mcnemar_p"] is None else f"{r['mcnemar_p']:.3g}"
        vs = "-" if r["mcnemar_p"] is None else f"{r['wins']} / {r['losses']} of {r['common']}"
        bias = f"+{100 * r['bias']:.1f} pts ({r['bias_at']})" if r["bias_at"] else "0"
        rate = r.get("selector_hit_rate")
        sel = ("-" if rate is None else f"{100 * rate:.1f}% of {r['selector_hit_questions']}") if hits else None
        lines.append(f"| {r['report']} | {r['questions']} | {100 * r['accuracy']:.1f}% | {100 * r['ci95'][0]:.1f}-"
                     f"{100 * r['ci95'][1]:.1f}% | {vs} | {p} | {bias} | {ms(r['mean_ms'])} | {ms(r['p95_ms'])} "
                     + ("" if sel is None else f"| {sel} ") + f"| {r['changes']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.compare", description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", type=Path, help="report folders or report.json files; the first is "
                                                              "the baseline")
    parser.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    try:
        loaded = [(str(p.parent if p.suffix == ".json" else p), rep.load_report(p)) for p in args.reports]
        warnings = overlap_warnings(loaded)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in warnings:
        print(line, file=sys.stderr)
    text = markdown(rows(loaded))
    print(text, end="")
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
