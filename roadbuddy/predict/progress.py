"""The progress bar of a job: this rank's answers, plus (on rank 0 of a torchrun job) the other shards'."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm


class JobProgress:
    """tqdm over the whole job; on rank 0 of several it polls the other ranks' shards once a second."""

    def __init__(self, total: int, *, enabled: bool, other_shards: list[Path] = ()):
        self.others = list(other_shards)
        self.others_base = self._others_lines()
        self.mine = 0
        self.last_poll = time.monotonic()
        self.total = total
        self.enabled = enabled
        self.bar = None  # drawn by start(): a bar drawn before the model loads is broken up by the loading lines

    def start(self) -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.total, unit="q", dynamic_ncols=True, disable=not self.enabled)

    def _others_lines(self) -> int:
        return sum(p.read_bytes().count(b"\n") for p in self.others if p.is_file())

    def answered(self) -> None:
        self.start()
        self.mine += 1
        others = 0
        if self.others and time.monotonic() - self.last_poll > 1.0:
            self.last_poll = time.monotonic()
            others = max(0, self._others_lines() - self.others_base)
        self.bar.update(self.mine + others - self.bar.n if others else 1)

    def say_above(self, say, message: str) -> None:
        """say(message) with the bar cleared first and drawn again below it, so the line does not break it up."""
        if self.bar is None or self.bar.disable:
            say(message)
            return
        with tqdm.external_write_mode(file=sys.stderr):
            say(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
