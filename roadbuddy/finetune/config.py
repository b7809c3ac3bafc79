"""The knobs of fine-tuning that prediction does not have, each with its flag.

The frames, tiles, prompt and model knobs are RunConfig's (roadbuddy.config),
taken by roadbuddy-finetune with the same flags, so training sees what
prediction will send.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from roadbuddy.config import ConfigError
from roadbuddy.flags import FINETUNE, IO, LORA, TRAINING, flag

ONLY = frozenset({FINETUNE})
LM_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass(frozen=True)
class TrainConfig:
    train_json: Path | None = flag(None, "--train-json", "labeled question file to learn from (train.json layout: "
                                   "every item with an answer; required)", IO, type=Path, metavar="PATH", commands=ONLY,
                                   required=True)
    output: Path | None = flag(None, "--output", "adapter folder to write: the best adapter and its card, the "
                               "training log and chart, validation answers, and checkpoint/ to resume from "
                               "(required)", IO, type=Path, metavar="DIR", commands=ONLY, required=True)

    # validation
    val_json: Path | None = flag(None, "--val-json", "validation question file (default: --val-fraction of the "
                                 "train file's clips, held out)", TRAINING, type=Path, metavar="PATH", commands=ONLY)
    val_fraction: float = flag(0.1, "--val-fraction", "share of the train file's clips held out for validation, "
                               "drawn with --seed; no clip is on both sides; 0 = no validation, the last step's "
                               "adapter is kept (default: {default})", TRAINING, type=float, commands=ONLY)
    val_every: int = flag(0, "--val-every", "answer the validation questions through the predict pipeline every N "
                          "optimizer steps, 0 = after each epoch; the best adapter is kept (default: {default})",
                          TRAINING, type=int, commands=ONLY)

    # the optimisation
    epochs: int = flag(1, "--epochs", "passes over the training questions (default: {default})", TRAINING, type=int,
                       commands=ONLY)
    max_steps: int | None = flag(None, "--max-steps", "stop after N optimizer steps (default: the epochs' worth)",
                                 TRAINING, type=int, commands=ONLY)
    lr: float = flag(1e-4, "--lr", "peak learning rate of AdamW (default: {default})", TRAINING, type=float,
                     commands=ONLY)
    lr_schedule: str = flag("cosine", "--lr-schedule", "after the warm-up: cosine or linear decay to 0, or constant "
                            "(default: {default})", TRAINING, choices=SCHEDULES, commands=ONLY)
    warmup_steps: int = flag(0, "--warmup-steps", "steps of linear warm-up from 0 (default: {default})", TRAINING,
                             type=int, commands=ONLY)
    weight_decay: float = flag(0.0, "--weight-decay", "AdamW weight decay (default: {default})", TRAINING,
                               type=float, commands=ONLY)
    max_grad_norm: float = flag(1.0, "--max-grad-norm", "clip the gradient's norm to this, 0 = no clipping "
                                "(default: {default})", TRAINING, type=float, commands=ONLY)
    batch_size: int = flag(1, "--batch-size", "questions per forward pass, right-padded (default: {default})",
                           TRAINING, type=int, commands=ONLY)
    grad_accum: int = flag(16, "--grad-accum", "forward passes per optimizer step: a step learns from batch size x "
                           "this x processes questions (default: {default})", TRAINING, type=int, commands=ONLY)
    gradient_checkpointing: bool = flag(True, "--no-gradient-checkpointing", "keep every layer's activations "
                                        "instead of recomputing them in the backward pass (faster, much more "
                                        "memory; default: checkpointing on)", TRAINING, action="store_false",
                                        commands=ONLY)
    shuffle_choices: bool = flag(True, "--no-shuffle-choices", "keep each question's choices in the file's order "
                                 "(default: shuffled anew each epoch, the letter moving with its text, so the model "
                                 "learns the content and not a position)", TRAINING, action="store_false",
                                 commands=ONLY)
    checkpoint_every: int = flag(50, "--checkpoint-every", "write checkpoint/ (LoRA weights, optimizer, scheduler, "
                                 "position in the data order; dropout is reseeded from the position) every N steps; "
                                 "a rerun of the same command resumes there (default: {default})", TRAINING, type=int, commands=ONLY)
    seed: int = flag(0, "--seed", "seed of the split, the data order, the choice orders, the LoRA initialisation and "
                     "dropout (default: {default})", TRAINING, type=int, commands=ONLY)

    # LoRA
    lora_rank: int = flag(16, "--lora-rank", "rank of the LoRA matrices (default: {default})", LORA, type=int,
                          commands=ONLY)
    lora_alpha: float = flag(32.0, "--lora-alpha", "LoRA scaling numerator: updates are scaled by alpha / rank "
                             "(default: {default})", LORA, type=float, commands=ONLY)
    lora_dropout: float = flag(0.05, "--lora-dropout", "dropout on the LoRA path (default: {default})", LORA,
                               type=float, commands=ONLY)
    lora_targets: str = flag(",".join(LM_TARGETS), "--lora-targets", "the language model's linear layers to adapt, "
                             "comma-separated (default: {default}: attention and MLP)", LORA, metavar="NAMES",
                             commands=ONLY)
    lora_vision: bool = flag(False, "--lora-vision", "InternVL: also adapt the vision tower's and the projector's "
                             "linear layers (default: both frozen, and the tower runs without gradients); "
                             "refused for the Qwen families", LORA,
                             action="store_true", commands=ONLY)

    def __post_init__(self) -> None:
        positive = {"--epochs": self.epochs, "--batch-size": self.batch_size, "--grad-accum": self.grad_accum,
                    "--checkpoint-every": self.checkpoint_every, "--lora-rank": self.lora_rank}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--max-steps must be >= 1, got {self.max_steps}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"--lr-schedule must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        if self.val_every < 0 or self.warmup_steps < 0 or self.max_grad_norm < 0 or self.weight_decay < 0:
            raise ConfigError("--val-every, --warmup-steps, --max-grad-norm and --weight-decay must be >= 0")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"--lora-dropout must be in [0, 1), got {self.lora_dropout}")
        unknown = [t for t in self.targets if t not in LM_TARGETS]
        if unknown or not self.targets:
            raise ConfigError(f"--lora-targets takes names from {', '.join(LM_TARGETS)}, got {self.lora_targets!r}")

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.lora_targets.split(",") if t.strip())

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def settings(self) -> dict:
        """Every field, JSON-ready: what a resumed run must agree on (output aside, which names the run)."""
        return {f.name: (str(v) if isinstance(v, Path) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)] if f.name != "output"}
