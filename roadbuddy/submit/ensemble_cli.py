"""roadbuddy-ensemble: parse flags, check the runs, choose the weights (given, equal, or fit on a labeled split:
roadbuddy.submit.ensemble_fit) and combine them (roadbuddy.submit.ensemble).

Exit codes: 0 done (also when a question's summed time passes --time-limit: that is said, not refused);
1 unexpected failure; 2 bad input or usage; 130 interrupted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from roadbuddy.submit import ensemble, ensemble_fit
from roadbuddy.submit.ensemble import TIME_LIMIT_S

EPILOG = f"""\
examples:
  # two runs over the public test (say a base model and its adapter), equal weights
  roadbuddy-ensemble out/base out/tuned --output out/ensemble/submission.csv
  # the first run counts twice as much as the second
  roadbuddy-ensemble out/base out/tuned --weights 2,1 --output out/ensemble/submission.csv
  # weights fitted on the same two configurations' runs over the labeled train split
  roadbuddy-ensemble out/base out/tuned --fit runs/eval/base runs/eval/tuned \\
      --output out/ensemble/submission.csv
  # runs made before run.json named its question file
  roadbuddy-ensemble out/a out/b --test-json /data/private_test.json --output /result/submission.csv

Per question the members' letter log-probabilities are averaged with the weights (normalised to sum 1)
and renormalised; the answer is the most probable letter (the earlier one on a tie). A member whose
record is an error is left out of that question. A question's time is the sum of the members' times,
and the command says when that passes --time-limit ({TIME_LIMIT_S:g} s by default, the challenge's).
Beside --output: submission.csv, time_submission.csv, predictions.jsonl, run.json, ensemble.json.
exit codes: 0 done, 1 unexpected failure, 2 bad input or usage, 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roadbuddy-ensemble",
        description="Combine several runs over the same question file (each a roadbuddy-predict output folder or "
                    "an eval report folder) into one submission by a weighted mean of their letter "
                    "log-probabilities.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR",
                   help="the folders of the runs to combine (at least 2): each holds run.json and predictions.jsonl "
                        "(or torchrun shards predictions.rank*.jsonl)")
    p.add_argument("--output", type=Path, required=True, metavar="CSV",
                   help="the submission CSV to write; time_submission.csv, predictions.jsonl, run.json and "
                        "ensemble.json go beside it (not in a member's folder)")
    p.add_argument("--weights", metavar="W1,W2,...",
                   help="one non-negative weight per run, in the runs' order, normalised to sum 1 (default: equal)")
    p.add_argument("--fit", nargs="+", type=Path, metavar="FIT_RUN_DIR",
                   help="the same members' runs (same answer settings, same order) over a labeled split: the weights "
                        "that maximise the log-likelihood of its right letters are used, and the fit split's accuracy "
                        "of each member, of equal and of fitted weights is printed and kept in ensemble.json")
    p.add_argument("--test-json", type=Path, metavar="PATH",
                   help="the question file the runs answered (default: the one their run.json names; its sha256 "
                        "must match); needed for runs whose run.json does not name it")
    p.add_argument("--time-limit", type=float, default=TIME_LIMIT_S, metavar="SECONDS",
                   help="say how many questions take longer than this with the members' times summed "
                        f"(default {TIME_LIMIT_S:g}, the challenge's time per sample); the files are written anyway")
    p.add_argument("--verbose", action="store_true", help="full tracebacks")
    return p


def combine_runs(folders: list[Path | str], submission: Path | str, *, weights: str | None = None,
        fit_folders: list[Path | str] | None = None, test_json: Path | str | None = None,
        time_limit_s: float = ensemble.TIME_LIMIT_S, say=print) -> dict:
    """roadbuddy-ensemble: check the members (and the --fit runs), choose the weights, combine, write the
    files beside `submission` and say what was done; returns ensemble.json's document."""
    if weights is not None and fit_folders is not None:
        raise ensemble.EnsembleError("--weights and --fit cannot be used together: --fit finds the weights")
    if not time_limit_s > 0:
        raise ensemble.EnsembleError(f"--time-limit {time_limit_s:g} is not a positive number of seconds")
    members = ensemble.load_members(folders)
    ensemble.check_same_question_file(members)
    source = ensemble.question_file(members, test_json)
    questions = ensemble.answered_questions(members, source)
    fit_members = [] if fit_folders is None else [ensemble.load_member(f) for f in fit_folders]
    paths = ensemble.check_output(Path(submission), members + fit_members)
    fit, fit_questions = None, []
    if fit_folders is not None:
        ensemble_fit.check_fit_pairs(members, fit_members)
        ensemble.check_same_question_file(fit_members)
        fit_source = ensemble.question_file(fit_members, role="--fit ")
        fit_questions = ensemble.answered_questions(fit_members, fit_source)
        fit = {"file": str(fit_source), **ensemble_fit.fit_weights(fit_members, fit_questions)}
        for line in ensemble_fit.fit_lines(fit, fit_source):
            say(line)
        chosen = fit["weights"]
    elif weights is not None:
        chosen = ensemble.parse_weights(weights, len(members))
    else:
        chosen = [1 / len(members)] * len(members)
    rounded = [(m, n) for m in members for n in [ensemble.without_logprobs(m, questions)] if n]
    rounded += [(m, n) for m in fit_members for n in [ensemble.without_logprobs(m, fit_questions)] if n]
    if rounded:
        say(f"note: {sum(n for _, n in rounded)} records of {', '.join(str(m.folder) for m, _ in rounded)} have no "
            "full-precision logprobs (runs made before they were recorded): their log-probabilities are the logs "
            f"of the probabilities rounded to 6 decimals (at least {ensemble.PROB_FLOOR:g})")
    records = ensemble.ensemble_records(members, questions, chosen)
    over = ensemble.over_time_limit(records, time_limit_s)
    extra = {"fit": fit, "time_limit_s": time_limit_s, "over_time_limit": over}
    doc = ensemble.write_ensemble(paths, members, questions, source, chosen, records, extra)
    for line in summary_lines(paths, members, questions, source, chosen, records):
        say(line)
    if over:
        say(f"warning: {over['questions']} questions take longer than --time-limit {time_limit_s:g} s with the "
            f"members' times summed (the slowest: {over['worst_id']}, {over['worst_s']:.1f} s)")
    return doc


def summary_lines(paths: ensemble.OutputPaths, members: list[ensemble.Member], questions: list[ensemble.Question], source: Path,
                  weights: list[float], records: list[dict]) -> list[str]:
    """What the ensemble did, in words: files, weights, agreement with each member, left-out members."""
    shown = ", ".join(f"{w:.3f}" for w in weights)
    agree = ", ".join(f"{m.folder.name} {sum(r['answer'] == x['answer'] for r, x in zip(records, col))}"
                      for m, col in zip(members, zip(*(r["members"] for r in records))))
    lines = [(f"ensemble of {len(members)} runs (weights {shown}) answered the {len(questions)} questions of "
              f"{source.name}: {paths.submission}, with time_submission.csv, predictions.jsonl, run.json and "
              f"{ensemble.INFO_FILE} beside it"),
             f"the ensemble's answer is the member's on: {agree} of {len(questions)} questions"]
    partial = sum("left_out" in r for r in records)
    failed = sum(r["mode"] == "error-prior" for r in records)
    if partial or failed:
        lines.append(f"{partial} questions were combined without a member whose record is an error; {failed} got the "
                     "prior letter because every member's record is one")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    from roadbuddy.data.output import OutputError
    from roadbuddy.data.questions import QuestionFileError
    from roadbuddy.predict.cli import say_failure
    try:
        combine_runs(args.runs, args.output, weights=args.weights, fit_folders=args.fit, test_json=args.test_json,
            time_limit_s=args.time_limit, say=say)
    except KeyboardInterrupt:
        say("interrupted: the member runs are unchanged and each file beside --output is either whole or not "
            "written; run the same command again")
        return 130
    except (ensemble.EnsembleError, OutputError, QuestionFileError) as exc:
        if args.verbose:
            raise
        say(f"error: {exc}")
        return 2
    except Exception as exc:  # one sentence, not a traceback, unless --verbose
        if args.verbose:
            raise
        return say_failure(exc, say, "the member runs are unchanged and each file beside --output is either whole "
                                     "or not written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
