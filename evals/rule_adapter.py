"""The committed rule adapter (evals/tiny-rule-adapter/) and the recipe that made it (its TRAINING.md):
what the fine-tuning eval checks and evals/choice_shuffle.py retrains without shuffled choices."""
from __future__ import annotations

from pathlib import Path

from roadbuddy.testing import tiny_task

ADAPTER = Path(__file__).resolve().parent / "tiny-rule-adapter"
HELDOUT_CLIPS = 48  # 96 questions, about half of them rule questions
# the committed adapter's recipe (TRAINING.md): what the slow test reruns
TRAIN_CLIPS = 600
RECIPE = ["--model", str(tiny_task.CHECKPOINT), "--device", "cpu", "--min-frames", str(tiny_task.FRAMES_SHOWN),
          "--max-frames", str(tiny_task.FRAMES_SHOWN), "--no-support-frames", "--no-gradient-checkpointing",
          "--batch-size", "16", "--grad-accum", "1", "--lr", "1e-3", "--warmup-steps", "20", "--max-steps", "500",
          "--val-every", "100", "--seed", "0"]
