"""roadbuddy-pack: runs' settings -> a sealed offline package (roadbuddy.submit.pack) that answers /data -> /result.

Exit codes: 0 packed; 1 unexpected failure (nothing left at --output); 2 bad input or usage, above the parameter
cap, or a run that cannot be packed (one sentence).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from roadbuddy import flags
from roadbuddy.config import ConfigError, RunConfig
from roadbuddy.families.names import PARAMETER_CAP
from roadbuddy.submit import frozen
from roadbuddy.submit.sealed import PackageError

# set by whoever runs the package, not frozen in it
NOT_PACKED_FLAGS = ("test_json", "output", "data_dir", "limit")
ENSEMBLE_FILE = "ensemble.json"

EPILOG = """\
examples:
  # what the flags say, as roadbuddy-predict takes them
  roadbuddy-pack --output submission-pkg --model Qwen/Qwen3-VL-8B-Instruct --load-in-4bit --permutations 2
  # the settings of an eval or predict run (its run.json), or of an ensemble made by roadbuddy-ensemble
  roadbuddy-pack --output submission-pkg --from-run runs/eval/train-InternVL3_5-4B-HF-1a2b3c4d
  # then: try it as the organisers will, and build the image
  ROADBUDDY_DATA=/data ROADBUDDY_RESULT=/tmp/result submission-pkg/predict.sh
  docker build -t roadbuddy-submission submission-pkg

The package holds the weights (safetensors), tokenizer and processor files, adapters, a --frame-selector's
checkpoint (not its training log or checkpoint/), the code, the frozen settings (settings.json), predict.sh, a
pinned requirements.txt, a Dockerfile and SHA256SUMS, which predict.sh checks before anything loads. The Hugging
Face hub is switched off when it runs.
exit codes: 0 packed, 1 unexpected failure, 2 bad input or a package that breaks the rules.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="roadbuddy-pack",
        description="Write a sealed, offline package of a RoadBuddy run (or an ensemble of runs): weights, code, "
                    "frozen settings, predict.sh (/data -> /result), requirements.txt and a Dockerfile.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    package = p.add_argument_group("package")
    package.add_argument("--output", type=Path, required=True, metavar="DIR",
                         help="the package folder to write (must not exist, or be empty)")
    package.add_argument("--from-run", type=Path, metavar="RUN_DIR",
                         help="take the answer settings from this run's run.json (a roadbuddy-predict output folder "
                              "or an eval report folder), or every member's from a roadbuddy-ensemble folder; the "
                              "flags below may then only change speed settings")
    package.add_argument("--max-params", type=float, default=PARAMETER_CAP, metavar="N",
                         help="refuse a package holding more parameters than this, every model, adapter and frame "
                              "selector counted once (default: 8e9, the challenge's rule)")
    groups = {"package": package}
    flags.add_to_parser(p, RunConfig, flags.PREDICT, groups, skip=NOT_PACKED_FLAGS)
    groups[flags.SPEED].add_argument("--verbose", action="store_true", help="full tracebacks")
    return p


def _run_settings(run_dir: Path) -> dict:
    path = run_dir / "run.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))["settings"]
    except (OSError, ValueError, KeyError, TypeError):
        raise PackageError(f"--from-run {run_dir}: no run.json with a run's settings (a roadbuddy-predict output "
                           "folder, an eval report folder or a roadbuddy-ensemble folder)") from None


def members_from_run(run_dir: Path, given: dict) -> tuple[list[RunConfig], list[float] | None]:
    """The members (and an ensemble's weights) a --from-run folder gives, with the speed flags `given` applied."""
    answer_flags = [name for name in given if name in RunConfig.ANSWER_FIELDS + RunConfig.OPTIONAL_FIELDS]
    if answer_flags:
        shown = " ".join(flags.given_flags({n: given[n] for n in answer_flags}, RunConfig))
        raise PackageError(f"{shown} with --from-run: the run's answer settings are what gets packed; drop them, or "
                           "pack from flags alone")
    ensemble_file = run_dir / ENSEMBLE_FILE
    if ensemble_file.is_file():
        try:
            doc = json.loads(ensemble_file.read_text(encoding="utf-8"))
            members = [(Path(m["folder"]), m["settings"]) for m in doc["members"]]
            weights = doc.get("weights")
        except (ValueError, KeyError, TypeError):
            raise PackageError(f"{ensemble_file} is not an ensemble made by roadbuddy-ensemble") from None
    else:
        members, weights = [(run_dir, _run_settings(run_dir))], None
    return [RunConfig(**frozen.from_run(settings, folder), **given) for folder, settings in members], weights


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    from roadbuddy.families.adapters import AdapterError
    from roadbuddy.families.checkpoint import ModelLoadError
    from roadbuddy.levers.letter_prior import PriorError
    from roadbuddy.predict.cli import say_failure
    from roadbuddy.submit import pack

    given = flags.values_from_namespace(args, RunConfig, flags.PREDICT)
    try:
        if args.from_run is not None:
            members, weights = members_from_run(args.from_run, given)
        else:
            members, weights = [RunConfig(**given)], None
        plan = pack.plan(members, weights, args.max_params)
        say(f"packing {len(members)} member{'s' if len(members) > 1 else ''}: "
            + "; ".join(f"{place} {count / 1e9:.3f}B parameters" for place, count in plan.parameters.items())
            + f"; {plan.total_parameters / 1e9:.3f}B in all (cap {args.max_params / 1e9:.2f}B)")
        out = pack.build(plan, args.output, progress=members[0].progress)
    except (PackageError, ConfigError, ModelLoadError, AdapterError, PriorError) as exc:
        if args.verbose:
            raise
        say(f"error: {exc}")
        return 2
    except Exception as exc:  # one sentence, not a traceback, unless --verbose
        if args.verbose:
            raise
        return say_failure(exc, say, f"nothing is left at {args.output}")
    say(f"wrote {out}: {plan.total_parameters:,} parameters; run it with "
        f"ROADBUDDY_DATA=DIR ROADBUDDY_RESULT=DIR {out / 'predict.sh'}, build it with docker build {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
