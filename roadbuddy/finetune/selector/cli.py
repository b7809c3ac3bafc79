"""roadbuddy-finetune-selector: parse flags into a SelectorConfig and run the selector's training recipe.

Exit codes: 0 done; 1 unexpected failure; 2 bad input or usage (one sentence naming the file, item or
field); 130 interrupted (rerun the same command to resume from the last checkpoint, whose step the message
names).
"""
from __future__ import annotations

import argparse
import logging
import sys

from roadbuddy import flags
from roadbuddy.finetune.selector.config import SELECTOR, SelectorConfig

EPILOG = """\
examples:
  # SigLIP 2 on the train split's support frames, 2 frames a second scanned, 10% of the clips held out
  roadbuddy-finetune-selector --train-json DATA/train/train.json --data-dir DATA --output selectors/s2 --epochs 10
  # then answer with it: each question's frames placed around its predicted support times
  roadbuddy-predict --test-json DATA/public_test/public_test.json --frame-selector selectors/s2

Validation reports hit@k: a picked frame within --hit-window seconds of a support timestamp, for the selector's
k best peaks and for k evenly spread frames. A checkpoint is written every --checkpoint-every steps; rerunning
the same command resumes from it.
exit codes: 0 done, 1 unexpected failure, 2 bad input or usage, 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roadbuddy-finetune-selector",
        description="Fine-tune a SigLIP or SigLIP 2 checkpoint to score how relevant each frame of a clip is to a "
                    "question, from a labeled file's support_frames, and write the frame selector (a checkpoint "
                    "folder).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = flags.add_to_parser(p, SelectorConfig, SELECTOR)
    groups[flags.SPEED].add_argument("--verbose", action="store_true", help="debug logging and full tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    from roadbuddy.config import ConfigError
    from roadbuddy.data.questions import QuestionFileError
    from roadbuddy.families.checkpoint import ModelLoadError
    from roadbuddy.finetune.checkpoint import interrupted_message, what_stands
    from roadbuddy.finetune.selector.train import SelectorTraining
    from roadbuddy.predict.cli import say_failure
    from roadbuddy.selector.model import SelectorError

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    training = None
    try:
        cfg = SelectorConfig(**flags.values_from_namespace(args, SelectorConfig, SELECTOR))
        training = SelectorTraining(cfg, say=say)
        training.setup()
        training.train()
        summary = training.finish()
    except KeyboardInterrupt:
        say(interrupted_message(training))
        return 130
    except (QuestionFileError, SelectorError, ConfigError, ModelLoadError) as exc:
        if args.verbose:
            raise
        say(f"error: {exc}")
        return 2
    except Exception as exc:  # one sentence, not a traceback, unless --verbose
        if args.verbose:
            raise
        return say_failure(exc, say, what_stands(training))
    last = summary["validation"]
    measured = (f"; validation hit@{last['k']} {last['selector']:.1%} against {last['even']:.1%} for evenly spread "
                f"frames ({last['n']} questions)" if last else "")
    say(f"done: {summary['steps']} steps; {summary['output']} holds the selector{measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
