"""Command-line flags declared once, beside the dataclass field they set.

A field of RunConfig (or of fine-tuning's TrainConfig) that a user sets carries
a `Flag` in its metadata: the flag's name, help text, group and the commands
that take it. roadbuddy-predict, roadbuddy-finetune and the eval's pytest
options are all built from those declarations, so a flag means the same
everywhere and exists once.

    max_frames: int = flag(32, "--max-frames", "most frames per clip ...", FRAMES, type=int)

Help texts may hold "{default}", filled in from the field's default.
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

PREDICT, EVAL, FINETUNE = "predict", "eval", "finetune"
ALL = frozenset({PREDICT, EVAL, FINETUNE})

# argument groups (--help shows them in the order the declarations first use them)
IO = "input and output"
MODEL = "model"
FRAMES = "frames and tiles"
PROMPTS = "prompts and answers"
LEVERS = "test-time accuracy levers"
SPEED = "speed and diagnostics"
TRAINING = "fine-tuning"
LORA = "LoRA"


@dataclass(frozen=True)
class Flag:
    """How one field is set from a command line.

    action "store" takes a value (`type` converts it); "store_true" sets the field True when given;
    "store_false" sets it False ("--no-support-frames" -> support_frames=False). `switches` maps
    mutually exclusive switches to the value each gives the field ("--load-in-4bit" -> "4bit").
    """

    name: str | None
    help: str
    group: str
    action: str = "store"
    type: object = None
    choices: tuple | None = None
    metavar: str | None = None
    commands: frozenset = ALL
    switches: tuple[tuple[str, object, str], ...] = ()  # (flag, value, help)
    required: bool = False  # argparse refuses a command line without it (and its usage shows it unbracketed)

    @property
    def names(self) -> list[str]:
        return [s[0] for s in self.switches] if self.switches else [self.name]


def flag(default, name: str | None, help: str, group: str, *, default_factory=None, **kwargs):
    """A dataclass field with its flag (see the module docstring)."""
    meta = {"flag": Flag(name, help, group, **kwargs)}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def declared(cls, command: str | None = None) -> list[tuple[dataclasses.Field, Flag]]:
    """(field, flag) of every field of `cls` with a flag, in declaration order; only those `command` takes."""
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("flag")
        if spec is not None and (command is None or command in spec.commands):
            out.append((f, spec))
    return out


def _default_text(f: dataclasses.Field) -> str:
    value = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return "off" if value is None else str(value)


def _metavar(spec: Flag) -> str | None:
    if spec.metavar or spec.choices:
        return spec.metavar
    return {int: "N", float: "X"}.get(spec.type, "PATH" if getattr(spec.type, "__name__", "") == "Path" else "VALUE")


def _help(f: dataclasses.Field, text: str) -> str:
    return text.replace("{default}", _default_text(f)).replace("%", "%%")


def add_to_parser(parser: argparse.ArgumentParser, cls, command: str,
                  groups: dict[str, argparse._ArgumentGroup] | None = None,
                  skip: Iterable[str] = ()) -> dict[str, argparse._ArgumentGroup]:
    """Add every flag of `cls` that `command` takes, except those of the fields named in `skip` (a command that
    sets them itself); values land under the field's name, given flags only."""
    groups = {} if groups is None else groups
    skip = set(skip)
    for f, spec in declared(cls, command):
        if f.name in skip:
            continue
        group = groups.get(spec.group)
        if group is None:
            group = groups[spec.group] = parser.add_argument_group(spec.group)
        if spec.switches:
            exclusive = group.add_mutually_exclusive_group()
            for name, value, text in spec.switches:
                exclusive.add_argument(name, dest=f.name, action="store_const", const=value,
                                       default=argparse.SUPPRESS, help=_help(f, text))
            continue
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=_help(f, spec.help), required=spec.required)
        if spec.action == "store":
            kwargs.update(type=spec.type, choices=spec.choices, metavar=_metavar(spec))
        else:
            kwargs.update(action="store_const", const=spec.action == "store_true")
        group.add_argument(spec.name, **kwargs)
    return groups


def values_from_namespace(ns: argparse.Namespace, cls, command: str) -> dict:
    """The field values of the flags given on the command line (the others keep their defaults)."""
    return {f.name: getattr(ns, f.name) for f, _ in declared(cls, command) if hasattr(ns, f.name)}


# --- pytest options (the eval takes the predict flags as pytest options) -------------------

def pytest_dest(field_name: str) -> str:
    return f"rb_{field_name}"


def add_to_pytest(group, cls, command: str, taken: Iterable[str] = ()) -> None:
    """pytest's addoption for every flag `command` takes, except names in `taken` (declared by the caller)."""
    taken = set(taken)
    for f, spec in declared(cls, command):
        if spec.switches:
            for name, value, text in spec.switches:
                group.addoption(name, dest=pytest_dest(f.name), action="store_const", const=value, default=None,
                                help=_help(f, text))
            continue
        if spec.name in taken:
            continue
        if spec.action == "store":
            group.addoption(spec.name, dest=pytest_dest(f.name), type=spec.type, choices=spec.choices,
                            metavar=_metavar(spec), default=None, help=_help(f, spec.help))
        else:
            group.addoption(spec.name, dest=pytest_dest(f.name), action="store_const",
                            const=spec.action == "store_true", default=None, help=_help(f, spec.help))


def values_from_pytest(config, cls, command: str) -> dict:
    """The field values of the flags given to pytest."""
    out = {}
    for f, _ in declared(cls, command):
        value = config.getoption(pytest_dest(f.name), None)
        if value is not None:
            out[f.name] = value
    return out


def given_flags(values: dict, cls) -> list[str]:
    """The flags (as typed) that produced `values`: for messages and report settings."""
    out = []
    for f, spec in declared(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if spec.switches:
            out += [name for name, v, _ in spec.switches if v == value]
        elif spec.action == "store":
            out += [spec.name, str(value)]
        else:
            out.append(spec.name)
    return out
