"""roadbuddy-finetune-selector's recipe: a SigLIP selector fine-tuned to find each question's support frames.

    training = SelectorTraining(cfg, say=print)
    training.setup()     # questions with support times, the split, the selector, every clip's scan, optimizer; resume
    training.train()     # the loop: a step's clips -> (question, frame) logits -> sigmoid loss -> AdamW; validation
    training.finish()    # the selector, its card, the log and the chart in the output folder

Features:
- Inputs are prediction's: each clip's scan is decoded once through roadbuddy.video's reader at the selector's
  input size (roadbuddy.selector.scan) and cached; questions and frames go through the checkpoint's own
  tokenizer and image processor (roadbuddy.selector.model), as at prediction.
- The loss is SigLIP's sigmoid loss over the step's (question, frame) pairs: every question of the step's clips
  against every frame they contribute, +1 for frames near its support timestamps, -1 for the clip's frames far
  from them and for every other clip's frame; pairs in between are left out. Summed, divided by the questions.
- AdamW on every weight of both towers (and the logit scale and bias), warm-up then cosine, linear or constant.
- Validation: hit@k of the selector's picks against k evenly spread frames on the held-out clips
  (roadbuddy.finetune.selector.hits), every N steps or each epoch and at the end; the log and the card keep the curve.
  The output folder holds the last step's selector.
- A checkpoint every N steps (roadbuddy.finetune.checkpoint: written aside, swapped in by rename), so a SIGKILL
  costs at most N steps; the same command resumes there and ends with the weights an uninterrupted run makes
  (the data drawn for a step is a function of the seed and the position; SigLIP has no dropout). A checkpoint of
  other settings is refused, naming them.
- Deterministic with a seed on the CPU: two runs give the same weights bit for bit.
"""
from __future__ import annotations

import json
import platform
import shlex
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from roadbuddy.data.atomic import atomic_write_text
from roadbuddy.data.digest import file_sha256
from roadbuddy.finetune import checkpoint as train_checkpoint
from roadbuddy.finetune import log as train_log
from roadbuddy.finetune.data import Split, given_split, split_by_clip
from roadbuddy.finetune.optimizer import adamw
from roadbuddy.finetune.selector import data as selector_data
from roadbuddy.finetune.selector.config import SelectorConfig
from roadbuddy.finetune.selector.hits import hit_rates
from roadbuddy.selector.model import (
    SelectorError,
    frame_embeddings,
    frame_size,
    load_selector,
    pixel_inputs,
    relevance,
    save_selector,
    text_embeddings,
    text_inputs,
)

CARD = "selector_card.json"
CHART = "training.png"
SCAN_CACHE = "scan-cache"


@dataclass
class TrainState:
    """What the checkpoint carries besides tensors; JSON-ready."""

    step: int = 0
    epoch: int = 0
    position: int = 0  # the next clip of the epoch's order
    validations: list = field(default_factory=list)
    seconds: float = 0.0


def sigmoid_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SigLIP's loss over labeled pairs: -sum log sigmoid(label x logit) over pairs labeled +1 or -1, / questions."""
    taught = labels != 0
    return -(F.logsigmoid(labels * logits) * taught).sum() / logits.shape[0]


class SelectorTraining:
    def __init__(self, cfg: SelectorConfig, *, say=print, loader=load_selector):
        self.cfg, self.say, self.loader = cfg, say, loader
        self.out = Path(cfg.output)
        self.state = TrainState()
        self.checkpoint_step: int | None = None  # the step of the checkpoint on disk, once there is one

    # --- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        from roadbuddy.families.checkpoint import pick_device

        cfg = self.cfg
        questions, self.unsupported = selector_data.questions_with_support(cfg.train_json, cfg.data_dir)
        self.split = self._split(questions)
        self.device = pick_device(cfg.device)
        self.selector = self.loader(cfg.model, self.device, torch.float32)
        self.settings = {"selector": cfg.settings(), "train_json_sha256": file_sha256(cfg.train_json),
                         "val_json_sha256": file_sha256(cfg.val_json) if cfg.val_json else None}
        self.out.mkdir(parents=True, exist_ok=True)
        self.train_clips, self.unreadable = self._scan(self.split.train, "training")
        if not self.train_clips:
            first = next(iter(self.unreadable.items()), ("-", "no clips"))
            raise selector_data.SelectorDataError(
                f"{Path(cfg.train_json).name}: field 'video_path': none of the {len(self.unreadable)} training clips "
                f"can be read (first: {first[0]}: {first[1]}); check --data-dir")
        self.val_clips, bad_val = self._scan(self.split.val, "validation")
        self.unreadable.update(bad_val)
        if self.unreadable:
            self.say(f"{len(self.unreadable)} clips cannot be read; their questions are left out: "
                     + "; ".join(f"{k}: {v}" for k, v in list(self.unreadable.items())[:5])
                     + (" ..." if len(self.unreadable) > 5 else ""))
        self.epoch_steps = selector_data.steps_per_epoch(len(self.train_clips), cfg.clips_per_step)
        self.total_steps = cfg.max_steps or cfg.epochs * self.epoch_steps
        self._optimizer()
        self._resume()

    def _split(self, questions) -> Split:
        cfg = self.cfg
        if cfg.val_json is not None:
            val, _ = selector_data.questions_with_support(cfg.val_json, cfg.data_dir)
            return given_split(questions, val, cfg.val_json)
        return split_by_clip(questions, cfg.val_fraction, cfg.seed)

    def _scan(self, questions, side: str):
        from tqdm import tqdm

        def progress(items):
            return tqdm(items, desc=f"scanning {side} clips", unit="clip", dynamic_ncols=True,
                        disable=not self.cfg.progress or not items)

        return selector_data.scan_clips(questions, self.out / SCAN_CACHE, self.cfg.scan_fps,
                                        lambda w, h: frame_size(self.selector, w, h), self.cfg.decode_threads,
                                        progress)

    def _optimizer(self) -> None:
        self.trainable = {n: p for n, p in self.selector.model.named_parameters() if p.requires_grad}
        self.optimizer, self.scheduler, self.param_names = adamw(self.trainable, self.cfg, self.total_steps)

    def _resume(self) -> None:
        found = train_checkpoint.find(self.out)
        if found is None:
            (self.out / train_log.LOG_NAME).unlink(missing_ok=True)
            return
        state, diff = train_checkpoint.restore(found, self.settings, self.trainable, self.optimizer,
                                               self.param_names, self.scheduler)
        if diff:
            raise SelectorError(f"{self.out} holds a checkpoint of a run with other settings ({'; '.join(diff[:6])}); "
                                "resume with the same command or choose another --output")
        self.state = TrainState(**state["progress"])
        self.checkpoint_step = self.state.step
        train_log.truncate(self.out / train_log.LOG_NAME, self.state.step)
        self.say(f"resuming at step {self.state.step} of {self.total_steps} from {found}")

    # --- the loop -------------------------------------------------------------------------------

    def train(self) -> None:
        from tqdm import tqdm

        cfg, st = self.cfg, self.state
        bar = tqdm(total=self.total_steps, initial=st.step, unit="step", dynamic_ncols=True, disable=not cfg.progress)
        started, seconds_before = time.perf_counter(), st.seconds
        try:
            while st.step < self.total_steps:
                order = selector_data.clip_order(self.train_clips, cfg.seed, st.epoch)
                while st.position < len(order) and st.step < self.total_steps:
                    end = min(st.position + cfg.clips_per_step, len(order))
                    lr = self.scheduler.get_last_lr()[0]  # what this step's update uses
                    loss, pairs = self._step(order[st.position:end], st.position)
                    st.position, st.step = end, st.step + 1
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", epoch=st.epoch)
                    bar.update(1)
                    train_log.append(self.out / train_log.LOG_NAME, {"step": st.step, "epoch": st.epoch,
                                                                     "loss": loss, "lr": lr, "pairs": pairs})
                    epoch_done = st.position >= len(order)
                    if epoch_done:  # the checkpoint then holds the next epoch's start
                        st.epoch, st.position = st.epoch + 1, 0
                    if self._validation_due(epoch_done):
                        self.validate()
                    if st.step % cfg.checkpoint_every == 0 or st.step == self.total_steps:
                        self.save_checkpoint(seconds_before + time.perf_counter() - started)
                    if epoch_done:
                        break
        finally:
            bar.close()
        st.seconds = seconds_before + time.perf_counter() - started

    def _validation_due(self, epoch_done: bool) -> bool:
        if not self.val_clips:
            return False
        if self.state.step == self.total_steps:
            return True
        return self.state.step % self.cfg.val_every == 0 if self.cfg.val_every else epoch_done

    def _step(self, clips, position: int) -> tuple[float, int]:
        """One AdamW step on these clips' questions against their frames; (loss, labeled pairs)."""
        cfg, selector = self.cfg, self.selector
        batch = selector_data.step_batch(clips, seed=cfg.seed, epoch=self.state.epoch, position=position,
                                         frames_per_clip=cfg.frames_per_clip, positive_window=cfg.positive_window,
                                         negative_gap=cfg.negative_gap)
        selector.model.train()
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        with autocast:
            text = text_embeddings(selector, text_inputs(selector, batch.texts))
            frames = frame_embeddings(selector, pixel_inputs(selector, batch.frames))
            logits = relevance(selector, text, frames).float()
        loss = sigmoid_loss(logits, batch.labels.to(logits.device))
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(list(self.trainable.values()), cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach()), int((batch.labels != 0).sum())

    # --- validation, checkpoints, the end --------------------------------------------------------

    def validate(self) -> dict:
        """hit@k of the selector's picks and of evenly spread frames on the validation clips."""
        cfg, st = self.cfg, self.state
        self.selector.model.eval()
        rates = hit_rates(self.selector, self.val_clips, k=cfg.hit_frames, hit_window=cfg.hit_window,
                          peak_window=cfg.peak_window)
        result = {"step": st.step, "epoch": st.epoch, **{k: v for k, v in rates.items() if k != "per_question"}}
        st.validations.append(result)
        train_log.append(self.out / train_log.LOG_NAME, {"step": st.step, "validation": result})
        self.say(f"step {st.step}: hit@{cfg.hit_frames} {result['selector']:.1%} (best pick alone "
                 f"{result['selector_top1']:.1%}) against {result['even']:.1%} for {cfg.hit_frames} evenly spread "
                 f"frames, {result['n']} validation questions")
        return result

    def save_checkpoint(self, seconds: float) -> None:
        self.state.seconds = seconds
        state = {"settings": self.settings, "scheduler": self.scheduler.state_dict(), "progress": asdict(self.state)}
        train_checkpoint.save(self.out, self.trainable, self.optimizer, self.param_names, state)
        self.checkpoint_step = self.state.step

    def save_selector(self) -> None:
        """The selector's checkpoint files in the output folder, each replaced whole."""
        tmp = self.out / ".selector.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_selector(self.selector, tmp)
        for path in sorted(tmp.iterdir()):
            path.replace(self.out / path.name)
        shutil.rmtree(tmp, ignore_errors=True)

    def write_card(self) -> None:
        import transformers

        cfg = self.cfg
        card = {
            "base_model": cfg.model,
            "made_by": "roadbuddy-finetune-selector",
            "command": "roadbuddy-finetune-selector " + shlex.join(sys.argv[1:]),
            "settings": self.settings,
            "train_json": str(cfg.train_json),
            "split": self.split.describe(),
            "questions_without_support_frames": self.unsupported,
            "unreadable_clips": self.unreadable,
            "steps": self.state.step, "total_steps": self.total_steps, "seconds": round(self.state.seconds, 1),
            "validation_curve": self.state.validations,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__},
        }
        atomic_write_text(self.out / CARD, json.dumps(card, indent=1, ensure_ascii=False, default=str) + "\n")

    def finish(self) -> dict:
        """The last step's selector, its card and the chart in the output folder."""
        self.save_selector()
        self.write_card()
        plot(self.out / train_log.LOG_NAME, self.out / CHART, self.cfg.hit_frames)
        last = self.state.validations[-1] if self.state.validations else None
        return {"steps": self.state.step, "validation": last, "output": self.out}


def plot(log_path: Path, png: Path, k: int) -> None:
    """training.png: the loss per step and validation's hit@k, the selector's against even frames'."""
    steps, vals = train_log.entries(log_path)
    fig, ax = train_log.figure()
    ax.plot([e["step"] for e in steps], [e["loss"] for e in steps], color="tab:blue", lw=1, label="loss")
    ax.set_xlabel("step")
    ax.set_ylabel("sigmoid loss (per question)")
    ax.legend(loc="upper left")
    if vals:
        ax2 = ax.twinx()
        x = [e["step"] for e in vals]
        ax2.plot(x, [e["validation"]["selector"] for e in vals], "o-", color="tab:orange",
                 label=f"selector hit@{k}")
        ax2.plot(x, [e["validation"]["selector_top1"] for e in vals], ".-", color="tab:red", label="its best pick")
        ax2.plot(x, [e["validation"]["even"] for e in vals], "s--", color="tab:gray", label=f"{k} even frames")
        ax2.set_ylim(0, 1.02)
        ax2.set_ylabel("validation hit rate")
        ax2.legend(loc="upper right")
    ax.set_title("roadbuddy-finetune-selector")
    train_log.save(fig, png)
