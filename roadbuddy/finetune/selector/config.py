"""The knobs of roadbuddy-finetune-selector, each with its flag (declared once, roadbuddy.flags)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from roadbuddy.config import ConfigError
from roadbuddy.flags import IO, MODEL, SPEED, TRAINING, flag

SELECTOR = "selector"  # the command these flags belong to (roadbuddy-finetune-selector)
ONLY = frozenset({SELECTOR})
FRAMES = "scan, labels and hits"
SCHEDULES = ("cosine", "linear", "constant")
DEFAULT_MODEL = "google/siglip2-base-patch16-256"  # SigLIP 2 (fixed resolution): multilingual Gemma tokenizer


@dataclass(frozen=True)
class SelectorConfig:
    train_json: Path | None = flag(None, "--train-json", "labeled question file to learn from (train.json layout: "
                                   "every question used needs support_frames; required)", IO, type=Path,
                                   metavar="PATH", commands=ONLY, required=True)
    output: Path | None = flag(None, "--output", "folder to write: the trained selector (a checkpoint "
                               "folder), its card, the log and chart, the scan cache and "
                               "checkpoint/ to resume from (required)", IO, type=Path, metavar="DIR", commands=ONLY,
                               required=True)
    data_dir: Path | None = flag(None, "--data-dir", "dataset root the video paths are relative to (default: "
                                 "the question file's folder, then its parent)", IO, type=Path, metavar="DIR",
                                 commands=ONLY)
    val_json: Path | None = flag(None, "--val-json", "validation question file (default: --val-fraction of the "
                                 "train file's clips, held out)", IO, type=Path, metavar="PATH", commands=ONLY)

    model: str = flag(DEFAULT_MODEL, "--model", "SigLIP or SigLIP 2 checkpoint to start from: a folder or a hub id "
                      "(safetensors, no remote code; default: {default})", MODEL, metavar="ID|DIR", commands=ONLY)
    device: str = flag("auto", "--device", "auto (CUDA if available), cpu, cuda, cuda:N (default: {default})", MODEL,
                       metavar="DEVICE", commands=ONLY)

    scan_fps: float = flag(2.0, "--scan-fps", "frames per second of a clip the selector scores; each clip's scan "
                           "is decoded once (default: {default})", FRAMES, type=float, commands=ONLY)
    positive_window: float = flag(0.5, "--positive-window", "a scanned frame within this many seconds of a support "
                                  "timestamp is a positive for its question (default: {default})", FRAMES,
                                  type=float, commands=ONLY)
    negative_gap: float = flag(1.0, "--negative-gap", "a frame of the same clip is a negative only when more than "
                               "this many seconds from every support timestamp; frames between the two windows "
                               "teach nothing (default: {default})", FRAMES, type=float, commands=ONLY)
    frames_per_clip: int = flag(32, "--frames-per-clip", "scanned frames of a clip in a step: its positives, then "
                                "negatives drawn with the seed; 0 = all (default: {default})", FRAMES, type=int,
                                commands=ONLY)
    hit_frames: int = flag(4, "--hit-frames", "k of validation's hit@k: frames the selector picks (best peaks, "
                           "--peak-window apart) against k evenly spread frames (default: {default})", FRAMES,
                           type=int, commands=ONLY)
    hit_window: float = flag(1.0, "--hit-window", "a picked frame within this many seconds of a support timestamp "
                             "is a hit (default: {default})", FRAMES, type=float, commands=ONLY)
    peak_window: float = flag(1.0, "--peak-window", "picked frames are more than this many seconds apart (default: "
                              "{default})", FRAMES, type=float, commands=ONLY)

    val_fraction: float = flag(0.1, "--val-fraction", "share of the train file's clips held out for validation, "
                               "drawn with --seed as roadbuddy-finetune draws them; 0 = no validation (default: "
                               "{default})", TRAINING, type=float, commands=ONLY)
    val_every: int = flag(0, "--val-every", "validate every N steps, 0 = after each epoch (and always at the end; "
                          "default: {default})", TRAINING, type=int, commands=ONLY)
    epochs: int = flag(10, "--epochs", "passes over the training clips (default: {default})", TRAINING, type=int,
                       commands=ONLY)
    max_steps: int | None = flag(None, "--max-steps", "stop after N steps (default: the epochs' worth)", TRAINING,
                                 type=int, commands=ONLY)
    clips_per_step: int = flag(8, "--clips-per-step", "clips in a step: their questions against all their frames; "
                               "another clip's frames are negatives (default: {default})", TRAINING, type=int,
                               commands=ONLY)
    lr: float = flag(1e-5, "--lr", "peak learning rate of AdamW (default: {default})", TRAINING, type=float,
                     commands=ONLY)
    lr_schedule: str = flag("cosine", "--lr-schedule", "after the warm-up: cosine or linear decay to 0, or constant "
                            "(default: {default})", TRAINING, choices=SCHEDULES, commands=ONLY)
    warmup_steps: int = flag(0, "--warmup-steps", "steps of linear warm-up from 0 (default: {default})", TRAINING,
                             type=int, commands=ONLY)
    weight_decay: float = flag(0.0, "--weight-decay", "AdamW weight decay (default: {default})", TRAINING,
                               type=float, commands=ONLY)
    max_grad_norm: float = flag(1.0, "--max-grad-norm", "clip the gradient's norm to this, 0 = no clipping "
                                "(default: {default})", TRAINING, type=float, commands=ONLY)
    checkpoint_every: int = flag(50, "--checkpoint-every", "write checkpoint/ (weights, optimizer, scheduler, "
                                 "position) every N steps; a rerun of the same command resumes there (default: "
                                 "{default})", TRAINING, type=int, commands=ONLY)
    seed: int = flag(0, "--seed", "seed of the split, the clip order and the frames drawn per step (default: "
                     "{default})", TRAINING, type=int, commands=ONLY)

    decode_threads: int = flag(0, "--decode-threads", "decoder threads, 0 = the decoder's default (default: "
                               "{default})", SPEED, type=int, commands=ONLY)
    progress: bool = flag(True, "--no-progress", "no progress bar", SPEED, action="store_false", commands=ONLY)

    def __post_init__(self) -> None:
        positive = {"--epochs": self.epochs, "--clips-per-step": self.clips_per_step,
                    "--checkpoint-every": self.checkpoint_every, "--hit-frames": self.hit_frames}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"--max-steps must be >= 1, got {self.max_steps}")
        if not self.scan_fps > 0:
            raise ConfigError(f"--scan-fps must be > 0, got {self.scan_fps}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be > 0, got {self.lr}")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"--lr-schedule must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        if self.positive_window < 0 or self.negative_gap < self.positive_window:
            raise ConfigError(f"--negative-gap ({self.negative_gap}) must be >= --positive-window "
                              f"({self.positive_window}) >= 0")
        others = {"--val-every": self.val_every, "--warmup-steps": self.warmup_steps,
                  "--weight-decay": self.weight_decay, "--max-grad-norm": self.max_grad_norm,
                  "--frames-per-clip": self.frames_per_clip, "--hit-window": self.hit_window,
                  "--peak-window": self.peak_window, "--decode-threads": self.decode_threads}
        for name, value in others.items():
            if value < 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")

    def replace(self, **changes) -> SelectorConfig:
        return dataclasses.replace(self, **changes)

    def settings(self) -> dict:
        """Every field but where it writes and how fast it runs, JSON-ready: what a resumed run must agree on."""
        skip = {"output", "progress", "decode_threads", "device"}
        return {f.name: (str(v) if isinstance(v, Path) else v)
                for f in dataclasses.fields(self) for v in [getattr(self, f.name)] if f.name not in skip}
