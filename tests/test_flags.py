"""Every flag is declared once, beside its RunConfig or TrainConfig field, and shows up everywhere it must:
roadbuddy-predict --help, roadbuddy-finetune --help, the eval's pytest options and the README's tables."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from roadbuddy import flags
from roadbuddy.config import RunConfig
from roadbuddy.finetune.cli import build_parser as finetune_parser
from roadbuddy.finetune.config import TrainConfig
from roadbuddy.predict.cli import build_parser as predict_parser

ROOT = Path(__file__).resolve().parents[1]
# RunConfig fields no user sets: internal knobs, torchrun's placement, the eval's thumbnail folder
INTERNAL = {"support_window", "support_share", "use_thumbnail", "vision_batch", "prefill_chunk", "thumbnail_dir",
            "rank", "world_size", "local_rank"}
CLI_ONLY = {"--demo", "--verbose", "--help"}  # flags of a command with no field behind them


def _options(parser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings if o.startswith("--")}


def _readme_table_flags(text: str) -> set[str]:
    rows = [line for line in text.splitlines() if line.startswith("| `--")]
    return {m for row in rows for m in re.findall(r"`(--[a-z0-9-]+)", row.split("|")[1])}


def test_every_user_field_declares_its_flag_exactly_once():
    for cls, internal in ((RunConfig, INTERNAL), (TrainConfig, set())):
        declared = {f.name for f, _ in flags.declared(cls)}
        assert declared | internal == {f.name for f in dataclasses.fields(cls)}, cls.__name__
    names = [(n, cmd) for cls in (RunConfig, TrainConfig) for _, spec in flags.declared(cls)
             for n in spec.names for cmd in spec.commands]
    assert len(names) == len(set(names)), "a flag is declared twice for one command"


@pytest.mark.parametrize("command,parser", [(flags.PREDICT, predict_parser), (flags.FINETUNE, finetune_parser)])
def test_each_command_takes_exactly_its_declared_flags(command, parser):
    declared = {n for cls in (RunConfig, TrainConfig) for _, spec in flags.declared(cls, command) for n in spec.names}
    assert _options(parser()) - CLI_ONLY == declared


@pytest.mark.parametrize("module", ["roadbuddy", "roadbuddy.finetune.cli"])
def test_help_documents_every_flag(module):
    res = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    parser = predict_parser() if module == "roadbuddy" else finetune_parser()
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--"):
                assert option in res.stdout
                assert action.help and len(action.help) > 8, f"{option} has no help text"


def test_readme_tables_list_every_flag_of_both_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = _readme_table_flags(readme)
    for parser in (predict_parser(), finetune_parser()):
        missing = _options(parser) - {"--help"} - table
        assert not missing, f"README's flag tables lack {sorted(missing)}"


def test_the_eval_takes_every_flag_declared_for_it(pytestconfig):
    """pytest -m eval registers each flag declared for the eval; the harness's own options are separate."""
    for f, spec in flags.declared(RunConfig, flags.EVAL):
        pytestconfig.getoption(flags.pytest_dest(f.name))  # raises ValueError when it is not registered
    taken = {n for _, spec in flags.declared(RunConfig, flags.EVAL) for n in spec.names}
    assert {"--model", "--adapter", "--max-frames", "--load-in-4bit", "--data-dir", "--limit"} <= taken
    assert not taken & {"--test-json", "--output", "--strict", "--no-progress"}  # the harness sets those itself


def test_flags_turn_into_the_fields_they_declare():
    args = predict_parser().parse_args(["--test-json", "q.json", "--load-in-4bit", "--no-support-frames",
                                        "--embeddings-on-gpu", "--max-frames", "16", "--adapter", "a"])
    values = flags.values_from_namespace(args, RunConfig, flags.PREDICT)
    assert values == {"test_json": Path("q.json"), "quantization": "4bit", "support_frames": False,
                      "embeddings_on_cpu": False, "max_frames": 16, "adapter": Path("a")}
    assert flags.given_flags(values, RunConfig) == ["--test-json", "q.json", "--adapter", "a", "--load-in-4bit",
                                                    "--max-frames", "16", "--no-support-frames",
                                                    "--embeddings-on-gpu"]
    cfg = RunConfig(**values)
    assert cfg.quantization == "4bit" and not cfg.support_frames and cfg.max_frames == 16
    assert cfg.min_frames == RunConfig().min_frames  # flags not given keep the field's default
