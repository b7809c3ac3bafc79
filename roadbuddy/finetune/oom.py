"""CUDA running out of memory in fine-tuning, said in one sentence: where it happened and which knobs to turn."""
from __future__ import annotations

import contextlib

import torch


class TrainingOOM(torch.cuda.OutOfMemoryError):
    """CUDA ran out of memory in a training step or a validation; the message names the knobs to turn (still an
    OutOfMemoryError to callers that catch one, as bench/gpu_finetune.py does)."""


KNOBS = ("try --load-in-4bit (QLoRA), fewer --max-frames or --max-visual-tokens, --batch-size 1 with a larger "
         "--grad-accum, or drop --no-gradient-checkpointing")


@contextlib.contextmanager
def oom_named(where: str):
    """CUDA's out-of-memory error as one sentence saying where it happened and which knobs to turn."""
    try:
        yield
    except TrainingOOM:
        raise
    except torch.cuda.OutOfMemoryError:
        raise TrainingOOM(f"CUDA ran out of memory in {where}: {KNOBS}") from None
