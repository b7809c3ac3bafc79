"""What a package's predict.sh runs: check the package, then answer its question file with the frozen settings.

Everything that can refuse a package refuses before the first answer, in one sentence, exit 2: a file missing or
changed against SHA256SUMS, settings this roadbuddy cannot run, a model, adapter or frame selector that does not
load as packed (every member's, before the first member answers), no question file. Then each member answers (an
ensemble's members into RESULT/members/<i>/, combined into RESULT/submission.csv), resumable as roadbuddy-predict
is, and the run says its slowest question against the challenge's 30 s.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from roadbuddy.submit import frozen
from roadbuddy.submit.ensemble import TIME_LIMIT_S
from roadbuddy.submit.sealed import PackageError, verify


def member_outputs(result: Path, count: int) -> list[Path]:
    """Where each member writes its submission: RESULT itself for one, RESULT/members/<i>/ for an ensemble."""
    if count == 1:
        return [result / "submission.csv"]
    return [result / "members" / str(i) / "submission.csv" for i in range(count)]


def slowest(time_csv: Path) -> tuple[str, float] | None:
    """The id and seconds of the slowest question in a time_submission.csv."""
    with open(time_csv, encoding="utf-8", newline="") as fh:
        rows = [(row["id"], float(row["time"]) / 1000) for row in csv.DictReader(fh)]
    return max(rows, key=lambda r: r[1]) if rows else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="predict.sh", description="Run a RoadBuddy package made by roadbuddy-pack "
                                "(predict.sh passes these from ROADBUDDY_DATA and ROADBUDDY_RESULT).")
    p.add_argument("--package", type=Path, required=True, help="the package's folder")
    p.add_argument("--test-json", type=Path, required=True, help="the question file (DATA/private_test.json)")
    p.add_argument("--result", type=Path, required=True, help="where submission.csv and time_submission.csv go")
    p.add_argument("--verbose", action="store_true", help="full tracebacks")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    import roadbuddy

    root = args.package.resolve()
    say(f"package {root} (code {Path(roadbuddy.__file__).parent})")
    try:
        verify(root, say)
        settings = frozen.read_settings(root)
        outputs = member_outputs(args.result, len(settings["members"]))
        if not args.test_json.is_file():
            raise PackageError(f"no question file at {args.test_json}: point ROADBUDDY_DATA at the folder that holds "
                               "private_test.json and videos/ (or ROADBUDDY_TEST_JSON at the file)")
        configs = [frozen.thaw(member, root, test_json=args.test_json, output=output)
                   for member, output in zip(settings["members"], outputs)]
        _check_members(configs, root)
    except Exception as exc:  # every refusal before the first answer is one sentence
        if args.verbose:
            raise
        if not _is_refusal(exc):
            from roadbuddy.predict.cli import say_failure

            return say_failure(exc, say, "nothing was answered")
        say(f"error: {exc}")
        return 2
    return _answer(configs, settings, args.result, say, args.verbose)


def _is_refusal(exc: Exception) -> bool:
    from roadbuddy.config import ConfigError
    from roadbuddy.families.adapters import AdapterError
    from roadbuddy.families.checkpoint import ModelLoadError

    return isinstance(exc, (PackageError, ConfigError, ModelLoadError, AdapterError))


def _check_members(configs, root: Path) -> None:
    """Each member's model (its family, read from the packed config.json), adapter and frame selector (a SigLIP
    config.json, readable weights, its tokenizer and processor: pack.check_selector_folder), before any answer."""
    from roadbuddy.families import registry
    from roadbuddy.families.adapters import check_for_base
    from roadbuddy.families.checkpoint import checkpoint_config
    from roadbuddy.submit.pack import check_selector_folder

    for cfg in configs:
        registry.check_model(cfg)
        if cfg.adapter is not None:
            check_for_base(cfg.adapter, checkpoint_config(cfg.model))
        if cfg.frame_selector is not None:
            folder = Path(cfg.frame_selector)
            check_selector_folder(folder, folder.relative_to(root).as_posix() if folder.is_relative_to(root) else None)


def _answer(configs, settings: dict, result: Path, say, verbose: bool) -> int:
    from roadbuddy.predict import cli

    code = 0
    for index, cfg in enumerate(configs):
        if len(configs) > 1:
            say(f"member {index + 1} of {len(configs)}: {Path(cfg.model).name}"
                + (f" + {Path(cfg.adapter).name}" if cfg.adapter else ""))
        code = max(code, cli.run_config(cfg, say, verbose))
        if code not in (0, 1):
            return code
    if len(configs) > 1:
        from roadbuddy.submit import ensemble, ensemble_cli

        weights = settings.get("weights")
        try:
            ensemble_cli.combine_runs([c.output.parent for c in configs], result / "submission.csv", say=say,
                         weights=None if weights is None else ",".join(repr(float(w)) for w in weights))
        except ensemble.EnsembleError as exc:
            say(f"error: {exc}")
            return 2
    worst = slowest(result / "time_submission.csv")
    if worst is not None:
        qid, seconds = worst
        say(f"slowest question {qid}: {seconds:.1f} s" + (
            f"; WARNING: above the challenge's {TIME_LIMIT_S:.0f} s per sample" if seconds > TIME_LIMIT_S else ""))
    return code


if __name__ == "__main__":
    sys.exit(main())
