"""An ensemble against its members on a labeled split.

    python -m evals.ensemble_report ENSEMBLE_DIR [--out DIR]

ENSEMBLE_DIR is a folder written by roadbuddy-ensemble over a labeled question file (an eval split). Each
of the ensemble and its members (the folders ensemble.json names) is scored as an eval report scores a
run (evals/report.py: accuracy with its 95% Wilson interval), and the members are compared with the
ensemble as evals.compare compares reports with the first: wins and losses on the same questions and
McNemar's exact p. Writes report.json and report.md into --out (default: ENSEMBLE_DIR) and prints the page.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from evals import compare
from evals import report as rep
from roadbuddy.data.output import OutputError
from roadbuddy.data.questions import load_questions
from roadbuddy.submit.ensemble import INFO_FILE, EnsembleError, read_records

NAME = "ensemble"


def _names(folders: list[str]) -> list[str]:
    """The members' folder names, or their full paths where two share a name."""
    short = [Path(f).name for f in folders]
    return [s if short.count(s) == 1 else f for s, f in zip(short, folders)]


def _distinguishing(settings: list[dict]) -> list[dict]:
    """Each member's settings that are not the same for every member: what tells the members apart."""
    keys = sorted({k for s in settings for k in s})
    differ = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True, default=str) for s in settings}) > 1]
    return [{k: s.get(k) for k in differ} for s in settings]


def build(folder: Path | str) -> dict:
    """The figures of the ensemble in `folder` and of each member on the ensemble's questions."""
    folder = Path(folder)
    try:
        info = json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
        source = Path(info["questions"]["file"])
        count = int(info["questions"]["count"])
        members = info["members"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EnsembleError(f"{folder} is not an ensemble's folder ({INFO_FILE} unreadable: "
                            f"{getattr(exc, 'strerror', None) or exc})") from None
    questions = load_questions(source)[:count]
    runs = [(NAME, folder, {}), *zip(_names([m["folder"] for m in members]), [Path(m["folder"]) for m in members],
                                     _distinguishing([m["settings"] for m in members]))]
    reports = [(name, rep.build_report(rep.question_table(questions, read_records(path)), settings=settings))
               for name, path, settings in runs]
    rows = compare.rows(reports)
    return {
        "ensemble": str(folder.resolve()),
        "question_file": str(source),
        "questions": len(questions),
        "weights": info.get("weights"),
        "accuracy": reports[0][1]["accuracy"],
        # compare.rows counts a member's wins against the first report (the ensemble): the ensemble's wins
        # against that member are the member's losses
        "members": [{"folder": m["folder"], "name": row["report"], "accuracy": r["accuracy"],
                     "ensemble_wins": row["losses"], "ensemble_losses": row["wins"], "mcnemar_p": row["mcnemar_p"]}
                    for m, row, (_, r) in zip(members, rows[1:], reports[1:])],
        "table": rows,
    }


def markdown(report: dict) -> str:
    acc = report["accuracy"]
    weights = ", ".join(f"{w:.3f}" for w in report["weights"] or [])
    lines = [f"# Ensemble of {len(report['members'])} runs on {Path(report['question_file']).name}", "",
             (f"{report['questions']} questions; weights {weights}; ensemble accuracy {acc['accuracy']:.1%} "
              f"({acc['correct']}/{acc['n']}, 95% CI {acc['ci95'][0]:.1%}-{acc['ci95'][1]:.1%})."), "",
             compare.markdown(report["table"]).rstrip(), "",
             "Wins and losses in the table are each member's against the ensemble; the ensemble against each member:",
             ""]
    for m in report["members"]:
        lines.append(f"- {m['name']}: accuracy {m['accuracy']['accuracy']:.1%}; the ensemble wins "
                     f"{m['ensemble_wins']}, loses {m['ensemble_losses']}, McNemar p = {m['mcnemar_p']:.3g}")
    return "\n".join(lines) + "\n"


def write(report: dict, out: Path | str) -> dict[str, Path]:
    """report.json and report.md into `out`; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "md": out / "report.md"}
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    paths["md"].write_text(markdown(report), encoding="utf-8")
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.ensemble_report", description=__doc__.splitlines()[0])
    parser.add_argument("ensemble", type=Path, help="the folder roadbuddy-ensemble wrote (its ensemble.json)")
    parser.add_argument("--out", type=Path, default=None, help="where report.json and report.md go "
                                                               "(default: the ensemble's folder)")
    args = parser.parse_args(argv)
    try:
        report = build(args.ensemble)
    except (OSError, ValueError, OutputError) as exc:  # ValueError: EnsembleError, QuestionFileError, unlabeled
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write(report, args.out or args.ensemble)
    print(markdown(report), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
