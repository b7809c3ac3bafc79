"""roadbuddy-finetune: parse flags into a RunConfig and a TrainConfig and run the fine-tuning recipe.

Exit codes: 0 done; 1 unexpected failure or CUDA out of memory (the message names the knobs);
2 bad input or usage; 130 interrupted (rerun the same command to resume from the last checkpoint, whose
step the message names).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from roadbuddy import flags
from roadbuddy.config import ConfigError, RunConfig
from roadbuddy.finetune.config import TrainConfig
from roadbuddy.predict.cli import say_failure
from roadbuddy.predict.distributed import Shard

EPILOG = """\
examples:
  # a 24 GB card: QLoRA on the 4B, 16 frames, validation on 10% of the clips after each epoch
  roadbuddy-finetune --train-json DATA/train/train.json --output adapters/r16 --load-in-4bit --max-frames 16 --epochs 2
  roadbuddy-predict --test-json DATA/public_test/public_test.json --adapter adapters/r16 --load-in-4bit --max-frames 16

The frames, tiles, prompt and model flags are roadbuddy-predict's and mean the same: train with the
settings you will predict with. A checkpoint is written every --checkpoint-every steps; rerunning the
same command resumes from it. Under torchrun the same command trains data-parallel.
exit codes: 0 done, 1 unexpected failure or CUDA out of memory, 2 bad input or usage, 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roadbuddy-finetune",
        description="Fine-tune the --model checkpoint (any family roadbuddy-predict runs) with LoRA (QLoRA with "
                    "--load-in-4bit) on a labeled RoadBuddy question file, on exactly the inputs roadbuddy-predict "
                    "builds, and write a peft adapter that roadbuddy-predict --adapter, the evals and the bench load.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = flags.add_to_parser(p, TrainConfig, flags.FINETUNE)
    flags.add_to_parser(p, RunConfig, flags.FINETUNE, groups)
    groups[flags.SPEED].add_argument("--verbose", action="store_true", help="debug logging and full tracebacks")
    return p


def configs_from_args(args: argparse.Namespace, shard: Shard = Shard()) -> tuple[RunConfig, TrainConfig]:
    run_cfg = RunConfig(**flags.values_from_namespace(args, RunConfig, flags.FINETUNE),
                        rank=shard.rank, world_size=shard.world_size, local_rank=shard.local_rank)
    return run_cfg, TrainConfig(**flags.values_from_namespace(args, TrainConfig, flags.FINETUNE))


def main(argv: list[str] | None = None) -> int:
    from roadbuddy.data.questions import QuestionFileError
    from roadbuddy.families.adapters import AdapterError
    from roadbuddy.families.checkpoint import ModelLoadError
    from roadbuddy.finetune.checkpoint import interrupted_message, what_stands
    from roadbuddy.finetune.oom import TrainingOOM
    from roadbuddy.finetune.recipe import FineTune

    parser = build_parser()
    args = parser.parse_args(argv)
    shard = Shard.from_env(os.environ)
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    rank_tag = f"[rank {shard.rank}] " if shard.distributed else ""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format=f"{rank_tag}%(levelname)s %(name)s: %(message)s")

    def say(msg: str) -> None:
        if shard.rank == 0 or args.verbose:
            print(f"{rank_tag}{msg}", file=sys.stderr, flush=True)

    recipe = None
    try:
        run_cfg, train_cfg = configs_from_args(args, shard)
        recipe = FineTune(run_cfg, train_cfg, say=say)
        recipe.setup()
        recipe.train()
        summary = recipe.finish()
    except KeyboardInterrupt:
        say(interrupted_message(recipe))
        return 130
    except (QuestionFileError, ModelLoadError, ConfigError, AdapterError) as exc:
        if args.verbose:
            raise
        say(f"error: {exc}")
        return 2
    except TrainingOOM as exc:
        say(f"error: {exc}")
        return 1
    except Exception as exc:  # one sentence, not a traceback, unless --verbose
        if args.verbose:
            raise
        return say_failure(exc, say, what_stands(recipe))
    best = summary["best"]
    kept = (f"the adapter of step {best['step']} (validation {best['correct']}/{best['n']} = {best['accuracy']:.1%})"
            if best else f"the adapter of the last step ({summary['steps']})")
    say(f"done: {summary['steps']} steps; {summary['output']} holds {kept}"
        + (f"; {summary['skipped']} questions skipped (unreadable clips)" if summary["skipped"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
