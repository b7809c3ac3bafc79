"""roadbuddy-predict: parse flags into a RunConfig and run the pipeline.

Exit codes: 0 done; 1 unexpected failure (or --strict with unreadable videos);
2 bad input or usage; 130 interrupted (answers so far are kept; rerun to resume).
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import tempfile
from pathlib import Path

from roadbuddy import flags
from roadbuddy.config import ConfigError, RunConfig
from roadbuddy.predict.distributed import Shard

# A full disk, a quota or a file-size limit: the run cannot go on, but what is on disk stands.
DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}

EPILOG = """\
examples:
  roadbuddy-predict --test-json /data/public_test/public_test.json --output out/submission.csv
  roadbuddy-predict --test-json /data/private_test.json --output /result/submission.csv --load-in-4bit
  roadbuddy-predict --test-json /data/public_test/public_test.json --frame-selector selectors/s2   # frames per question
  roadbuddy-predict --demo          # a small trained model + generated clips, no downloads

Answers are appended to predictions.jsonl next to the CSV as they are made;
rerunning the same command resumes where it stopped.
exit codes: 0 done, 1 unexpected failure (or --strict with failed videos),
2 bad input or usage, 130 interrupted.
"""


def say_failure(exc: Exception, say, kept: str) -> int:
    """One sentence for a failure that is not bad input (a full disk, a bug), saying what stands; exit 1."""
    if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
        say(f"error: cannot write the output ({exc.strerror}); {kept}: free some space and run the same command "
            "again to resume")
    else:
        say(f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} ({kept}; "
            "rerun with --verbose for the traceback)")
    return 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roadbuddy-predict",
        description="Answer RoadBuddy multiple-choice questions about dashcam videos with InternVL3.5 "
                    "and write submission.csv (id,answer) and time_submission.csv (id,answer,time).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {flags.IO: p.add_argument_group(flags.IO)}
    groups[flags.IO].add_argument(
        "--demo", action="store_true",
        help="answer the tiny task's generated clips with the small trained model shipped in the package and "
             "say how many it got right (no downloads; shows the whole pipeline seeing)")
    flags.add_to_parser(p, RunConfig, flags.PREDICT, groups)
    groups[flags.SPEED].add_argument("--verbose", action="store_true", help="debug logging and full tracebacks")
    return p


def config_from_args(args: argparse.Namespace, shard: Shard = Shard()) -> RunConfig:
    return RunConfig(**flags.values_from_namespace(args, RunConfig, flags.PREDICT),
                     rank=shard.rank, world_size=shard.world_size, local_rank=shard.local_rank)


def _demo_config(cfg: RunConfig, say, root: Path) -> RunConfig:
    """The demo's run: the tiny task's clips written under `root` (removed when the demo ends), answered there
    unless --output names a place to keep the answers."""
    from roadbuddy.testing import tiny_task

    say(f"demo: writing the tiny task's {tiny_task.HELDOUT_CLIPS} clips (answers only in the pixels) under {root} "
        "(removed at the end)")
    questions = tiny_task.write_heldout(root / "data")
    output = cfg.output if cfg.output != RunConfig().output else root / "output" / "submission.csv"
    return tiny_task.eval_config(tiny_task.CHECKPOINT, questions, output, progress=cfg.progress)


def _demo_score(cfg: RunConfig) -> str:
    from roadbuddy.data.output import OutputPaths, load_predictions
    from roadbuddy.data.questions import load_questions, prior_letter

    questions = load_questions(cfg.test_json)
    records = load_predictions(OutputPaths.for_submission(cfg.output).predictions, truncate=False)
    right = sum(records.get(q.id, {}).get("answer") == q.answer for q in questions)
    prior = sum(prior_letter(q.num_choices) == q.answer for q in questions)
    return (f"demo: {right} of {len(questions)} answers right ({right / len(questions):.0%}); always answering "
            f"the prior letter would get {prior} ({prior / len(questions):.0%})")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    shard = Shard.from_env(os.environ)  # torchrun sets RANK, WORLD_SIZE, LOCAL_RANK
    # Clips differ in frame count, so tensor sizes vary from clip to clip; expandable segments keep the
    # CUDA caching allocator from fragmenting into reserved-but-unused blocks (bench: +0.5 GiB without).
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    rank_tag = f"[rank {shard.rank}] " if shard.distributed else ""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format=f"{rank_tag}%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # bitsandbytes warns once per 8-bit matmul call
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

    def say(msg: str) -> None:
        print(f"{rank_tag}{msg}", file=sys.stderr, flush=True)

    if not args.demo and "test_json" not in vars(args):
        parser.error("--test-json is required (or --demo)")
    if not args.demo:
        return _predict(args, shard, say, None)
    with tempfile.TemporaryDirectory(prefix="roadbuddy-demo-") as root:
        return _predict(args, shard, say, Path(root))


def _predict(args: argparse.Namespace, shard: Shard, say, demo_root: Path | None) -> int:
    """The run and its exit code; with `demo_root`, the demo's run in that folder."""
    try:
        cfg = config_from_args(args, shard)
        if demo_root is not None:
            cfg = _demo_config(cfg, say, demo_root)
    except ConfigError as exc:
        if args.verbose:
            raise
        say(f"error: {exc}")
        return 2
    removed = demo_root is not None and "output" not in vars(args)  # the demo's answers go with its folder
    code = run_config(cfg, say, args.verbose, interrupted="interrupted: the demo's files are removed" if removed
                      else None)
    if demo_root is not None and code in (0, 1):
        say(_demo_score(cfg))
        if cfg.output.is_relative_to(demo_root):
            say("demo: its files are removed now; pass --output CSV to keep the answers")
    return code


def run_config(cfg: RunConfig, say, verbose: bool = False, interrupted: str | None = None) -> int:
    """Run `cfg` as roadbuddy-predict does (a sealed package's predict.sh too) and give its exit code: bad input
    in one sentence (2), an interrupt (130, `interrupted` said), an unexpected failure (1)."""
    from roadbuddy.data.output import OutputError
    from roadbuddy.data.questions import QuestionFileError
    from roadbuddy.families.adapters import AdapterError
    from roadbuddy.families.checkpoint import ModelLoadError
    from roadbuddy.levers.letter_prior import PriorError
    from roadbuddy.selector.model import SelectorError

    try:
        from roadbuddy.predict.pipeline import run

        summary = run(cfg, say=say)
    except KeyboardInterrupt:
        say(interrupted or "interrupted: every answer so far is saved in predictions.jsonl; run the same command "
            "again to resume")
        return 130
    except (QuestionFileError, OutputError, ModelLoadError, ConfigError, AdapterError, PriorError,
            SelectorError) as exc:
        if verbose:
            raise
        say(f"error: {exc}")
        return 2
    except Exception as exc:  # one sentence, not a traceback, unless --verbose
        if verbose:
            raise
        return say_failure(exc, say, "every answer finished so far is saved in predictions.jsonl")
    for line in summary.lines():
        say(line)
    if summary.unexpected:
        say(f"{summary.unexpected} clips failed with an unexpected error (see above); their questions got the "
            "prior answer. Rerun with --verbose for the tracebacks.")
        return 1
    if cfg.strict and summary.errors:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
