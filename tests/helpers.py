"""What the end-to-end tests share: running the CLI (in a subprocess or in this process) and reading its files.

tests/ is not a package: pytest puts this folder on sys.path when it imports a test
module from it, so the tests say `from helpers import predict, ...`.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "roadbuddy", "--no-progress", "--device", "cpu"]


def cli_command(*args) -> list[str]:
    """The roadbuddy-predict command line (CPU, no progress bar) with these arguments."""
    return [*CLI, *map(str, args)]


def predict(*args, timeout: float = 300, env: dict[str, str | None] | None = None,
            **popen) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess; stdout and stderr captured as text. `env` changes this process's
    environment for it (a None value removes the variable)."""
    run_env = dict(os.environ, PYTHONUNBUFFERED="1")
    for name, value in (env or {}).items():
        if value is None:
            run_env.pop(name, None)
        else:
            run_env[name] = value
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout, env=run_env, **popen)


def run_main(*argv) -> tuple[int, str]:
    """The CLI's main() in this process (cheap for runs that stop before the model loads, and open to
    monkeypatching); returns (exit code, stderr)."""
    from roadbuddy.predict import cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["--no-progress", "--device", "cpu", *map(str, argv)])
    return code, err.getvalue()


def read_rows(path: Path) -> list[list[str]]:
    """A CSV's rows, header included."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def records_of(path: Path) -> list[dict]:
    """predictions.jsonl's records, in the order written."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
