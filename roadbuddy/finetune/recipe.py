"""roadbuddy-finetune's recipe: LoRA (or QLoRA) on a labeled split, through prediction's own inputs.

    recipe = FineTune(run_cfg, train_cfg, say=print)
    recipe.setup()      # questions, split, the model with LoRA, optimizer, scheduler; resumes a checkpoint
    recipe.train()      # the loop: examples -> loss at the answer -> step; validation; checkpoints
    recipe.finish()     # the best adapter, its card, the log and the chart

Features:
- Inputs are prediction's: examples come from roadbuddy.predict.inputs (frame plan with support windows,
  decode, the family's pixels, prompt prefix and suffix tokenised as predict does); the target is the position
  letter right after the assistant turn opens (what score mode reads), then the end of the turn after
  it, so generate mode still stops. Choices are shuffled each epoch, the letter moving with its text.
- The model's family (roadbuddy.families.protocol; families/*/training.py) names LoRA's target modules and
  computes the logits at those two positions with the forward prediction runs; the card names the family.
- Memory: logits at those two positions only (never the vocabulary over the whole prompt), gradient
  checkpointing in the language model, the frozen vision tower without gradients, QLoRA on a 4-bit
  base with predict's quantization skip list; what is not 4-bit stays bf16 (nothing is upcast to fp32).
- Validation through the real predict pipeline in score mode, every N steps or each epoch; the best
  adapter is the one kept in the output folder, and the log says which step it is. The checkpoint
  carries the best step's adapter too, and a resume puts it back, so the folder and its card agree.
- A checkpoint every N steps (roadbuddy.finetune.checkpoint), written atomically; the same command
  resumes there and ends with the adapter an uninterrupted run makes (dropout is reseeded from the
  seed and the position before each forward, so no random state is lost with the process).
- torchrun: each rank takes every world-th example of a step; the LoRA gradients are summed across
  ranks (all_reduce; a rank with no example in a step sends zeros, so every rank takes part in every
  collective with the same tensors) and every rank steps alike; rank 0 validates and writes.
- CUDA out of memory anywhere in a step (forward, backward, optimizer) or in validation: one sentence
  naming the knobs (TrainingOOM); the last checkpoint stands.
- Deterministic with a seed: two CPU runs give the same adapter bit for bit.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import platform
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from roadbuddy.config import RunConfig
from roadbuddy.data.atomic import atomic_write_text
from roadbuddy.data.digest import file_sha256
from roadbuddy.families import adapters, registry
from roadbuddy.finetune import checkpoint as train_checkpoint
from roadbuddy.finetune import data as train_data
from roadbuddy.finetune import log as train_log
from roadbuddy.finetune.config import TrainConfig
from roadbuddy.finetune.lora import with_lora
from roadbuddy.finetune.loss import answer_loss, step_seed
from roadbuddy.finetune.oom import oom_named
from roadbuddy.finetune.optimizer import adamw
from roadbuddy.predict import distributed
from roadbuddy.predict.distributed import Shard
from roadbuddy.predict.inputs import InputSpec

log = logging.getLogger(__name__)

BEST_ADAPTER = "best-adapter"  # in checkpoint/: the adapter of the best validated step so far


@dataclass
class TrainState:
    """What the checkpoint carries besides tensors; JSON-ready."""

    step: int = 0
    epoch: int = 0
    slot: int = 0  # the next slot of the epoch's order
    best: dict | None = None  # {"step", "accuracy", "correct", "n"} of the adapter kept in the output folder
    validations: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)  # question id -> why it taught nothing (an unreadable clip)
    seconds: float = 0.0


class FineTune:
    def __init__(self, run_cfg: RunConfig, train_cfg: TrainConfig, *, say=print, model_loader=None):
        self.run_cfg, self.cfg, self.say = run_cfg, train_cfg, say
        self.model_loader = model_loader or registry.load_model
        self.shard = Shard(run_cfg.rank, run_cfg.world_size, run_cfg.local_rank)
        self.out = Path(train_cfg.output)
        self.state = TrainState()
        self.checkpoint_step: int | None = None  # the step of the checkpoint on disk, once there is one

    # --- setup ---------------------------------------------------------------------------------

    def setup(self) -> None:
        cfg, run_cfg = self.cfg, self.run_cfg
        questions = train_data.labeled_questions(cfg.train_json, run_cfg.data_dir)
        if cfg.val_json is not None:
            val = train_data.labeled_questions(cfg.val_json, run_cfg.data_dir)
            self.split = train_data.given_split(questions, val, cfg.val_json)
        else:
            self.split = train_data.split_by_clip(questions, cfg.val_fraction, cfg.seed)
        bad = train_data.unreadable_clips(self.split.train, run_cfg.decode_threads)
        if len(bad) == len({q.video_path for q in self.split.train}):
            first = next(iter(bad.items()), ("-", "no clips"))
            raise train_data.TrainDataError(
                f"{Path(cfg.train_json).name}: field 'video_path': none of the {len(bad)} training clips can be "
                f"read (first: {first[0]}: {first[1]})")
        if bad:
            self.say(f"{len(bad)} training clips cannot be read; their questions are skipped: "
                     + "; ".join(f"{k}: {v}" for k, v in list(bad.items())[:10]) + (" ..." if len(bad) > 10 else ""))
        self.unreadable = bad
        self.train_questions = [q for q in self.split.train if q.video_rel not in bad]
        self.per_step = cfg.batch_size * cfg.grad_accum * self.shard.world_size
        self.epoch_steps = train_data.steps_per_epoch(len(self.train_questions), self.per_step)
        self.total_steps = cfg.max_steps or cfg.epochs * self.epoch_steps
        self.settings = {"run": {k: str(v) if isinstance(v, Path) else v for k, v in run_cfg.answer_settings().items()},
                         "train": cfg.settings(), "train_json_sha256": file_sha256(cfg.train_json),
                         "world_size": self.shard.world_size}
        distributed.init(self.shard, "cuda" if str(run_cfg.device).startswith("cuda") else "cpu")
        self._model()
        self._optimizer()
        self._resume()

    def _model(self) -> None:
        cfg = self.cfg
        run_cfg = self.run_cfg.replace(adapter=None)
        if self.shard.distributed and torch.cuda.is_available() and run_cfg.device in ("auto", "cuda"):
            run_cfg = run_cfg.replace(device=f"cuda:{self.shard.local_rank}")
        # the family's LoRA targets from config.json, so a setting it cannot train is refused before the load
        targets = registry.check_model(run_cfg).lora_targets(cfg.targets, cfg.lora_vision)
        lm = self.model_loader(run_cfg)
        self.peft = with_lora(lm.model, cfg, targets)
        base = self.peft.get_base_model()
        self.lm = dataclasses.replace(lm, model=base)
        self.spec = InputSpec.of(self.lm)
        self.stop_id = lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.trainable = {n: p for n, p in self.peft.named_parameters() if p.requires_grad}
        count = sum(p.numel() for p in self.trainable.values())
        total = sum(p.numel() for p in self.peft.parameters())
        self.say(f"LoRA rank {cfg.lora_rank} on {'the language model and vision tower' if cfg.lora_vision else 'the language model'}: "
                 f"{count:,} trained parameters of {total:,} ({100 * count / total:.2f}%)")

    def _optimizer(self) -> None:
        self.optimizer, self.scheduler, self.param_names = adamw(self.trainable, self.cfg, self.total_steps)

    def _resume(self) -> None:
        found = train_checkpoint.find(self.out)
        if found is None:
            if self.shard.rank == 0:
                self.out.mkdir(parents=True, exist_ok=True)
                (self.out / train_log.LOG_NAME).unlink(missing_ok=True)
            return
        state, diff = train_checkpoint.restore(found, self.settings, self.trainable, self.optimizer,
                                               self.param_names, self.scheduler)
        if diff:
            raise train_data.TrainDataError(
                f"{self.out} holds a checkpoint of a run with other settings ({'; '.join(diff[:6])}); resume with "
                "the same command or choose another --output")
        self.state = TrainState(**state["progress"])
        self.checkpoint_step = self.state.step
        if self.shard.rank == 0:
            train_log.truncate(self.out / train_log.LOG_NAME, self.state.step)
            self._restore_best(found)
        self.say(f"resuming at step {self.state.step} of {self.total_steps} from {found}")

    def _restore_best(self, checkpoint: Path) -> None:
        """Make the output folder's adapter the checkpoint's best one again: a validation after the checkpoint
        may have written a newer best before the run was stopped, which the resumed run's card would not name."""
        kept = checkpoint / BEST_ADAPTER
        if self.state.best is not None and (kept / adapters.ADAPTER_WEIGHTS).is_file():
            for name in (adapters.ADAPTER_CONFIG, adapters.ADAPTER_WEIGHTS):
                tmp = self.out / f".{name}.tmp"
                shutil.copyfile(kept / name, tmp)
                tmp.replace(self.out / name)
            self.write_card()
        elif self.state.best is None:  # no best yet at the checkpoint: an adapter here is a lost run's
            for name in (adapters.ADAPTER_CONFIG, adapters.ADAPTER_WEIGHTS, adapters.CARD):
                (self.out / name).unlink(missing_ok=True)
        else:
            log.warning("%s predates best-adapter checkpoints; the adapter in %s is left as it is", checkpoint,
                        self.out)

    # --- the loop -------------------------------------------------------------------------------

    def train(self) -> None:
        from tqdm import tqdm

        cfg, st = self.cfg, self.state
        bar = tqdm(total=self.total_steps, initial=st.step, unit="step", dynamic_ncols=True,
                   disable=not self.run_cfg.progress or self.shard.rank != 0)
        started, seconds_before = time.perf_counter(), st.seconds
        examples_seen = 0
        try:
            while st.step < self.total_steps:
                order = train_data.epoch_order(self.train_questions, cfg.seed, st.epoch, cfg.shuffle_choices)
                while st.slot < len(order) and st.step < self.total_steps:
                    end = min(st.slot + self.per_step, len(order))
                    lr = self.scheduler.get_last_lr()[0]  # what this step's update uses (the scheduler then moves on)
                    loss, letter_loss = self._step(order, st.slot, end)
                    examples_seen += end - st.slot
                    st.slot, st.step = end, st.step + 1
                    rate = examples_seen / max(time.perf_counter() - started, 1e-9)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", samples_s=f"{rate:.2f}", epoch=st.epoch)
                    bar.update(1)
                    self._log({"step": st.step, "epoch": st.epoch, "loss": loss, "letter_loss": letter_loss,
                               "lr": lr, "samples_per_s": round(rate, 3)})
                    epoch_done = st.slot >= len(order)
                    if self._validation_due(epoch_done):
                        self.validate()
                    if st.step % cfg.checkpoint_every == 0 or st.step == self.total_steps:
                        self.save_checkpoint(seconds_before + time.perf_counter() - started)
                if st.slot >= len(order):
                    st.epoch, st.slot = st.epoch + 1, 0
        finally:
            bar.close()
        st.seconds = seconds_before + time.perf_counter() - started

    def _validation_due(self, epoch_done: bool) -> bool:
        if not self.split.val:
            return False
        if self.state.step == self.total_steps:
            return True
        return self.state.step % self.cfg.val_every == 0 if self.cfg.val_every else epoch_done

    def _step(self, order, start: int, end: int) -> tuple[float, float]:
        """One optimizer step over the slots [start, end) of the epoch's order (this rank's share of them)."""
        cfg, lm, st = self.cfg, self.lm, self.state
        self.peft.train()
        if not cfg.lora_vision:
            lm.ops.vision_tower(lm).eval()
        mine = train_data.rank_slots(start, end, self.shard.rank, self.shard.world_size)
        scale = 1.0 / (end - start)  # the step's loss is the mean over all its examples, on every rank
        total = torch.zeros(2, dtype=torch.float64, device=lm.device)  # the step's mean loss, and its letter part
        memo: dict = {}  # the family's frozen-tower output kept over the step (one clip's, for its examples)
        batch: list = []
        with oom_named(f"step {st.step + 1}"):
            for example in train_data.iter_examples(order, mine, self.run_cfg, self.spec):
                if example.error:
                    st.skipped[example.question.id] = example.error
                    continue
                batch.append(example)
                if len(batch) == cfg.batch_size:
                    self._backward(batch, scale, total, memo, st.epoch)
                    batch = []
            if batch:
                self._backward(batch, scale, total, memo, st.epoch)
            for p in self.trainable.values():
                if p.grad is None:  # no example on this rank in this step (the last, short step, or unreadable clips):
                    p.grad = torch.zeros_like(p)  # it still sends its share, the same tensors as every other rank
            distributed.all_reduce_sum([p.grad for p in self.trainable.values()] + [total], self.shard)
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(list(self.trainable.values()), cfg.max_grad_norm)
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(total[0]), float(total[1])

    def _backward(self, batch, scale: float, total: torch.Tensor, memo: dict, epoch: int) -> None:
        """Forward and backward of one micro-batch (the family's vision features first: the frozen tower's,
        kept in `memo` across the step, or with gradients under --lora-vision; None where its forward runs it)."""
        lm = self.lm
        feats = lm.ops.training_features(lm, batch, memo, self.cfg.lora_vision, self.run_cfg.vision_batch)
        torch.manual_seed(step_seed(self.cfg.seed, epoch, batch[0].slot))
        loss, letters = answer_loss(lm, batch, feats, self.stop_id)
        (loss * scale).backward()
        total[0] += float(loss.detach()) * scale
        total[1] += float(letters.sum()) * scale

    # --- validation, checkpoints, the end --------------------------------------------------------

    def validate(self) -> dict | None:
        """Answer the validation questions through the predict pipeline (score mode) on rank 0; keep the best."""
        from roadbuddy.data.output import OutputPaths, load_predictions
        from roadbuddy.data.questions import write_subset
        from roadbuddy.predict.pipeline import run

        st = self.state
        result = None
        if self.shard.rank == 0:
            folder = self.out / "validation" / f"step-{st.step:06d}"
            shutil.rmtree(folder, ignore_errors=True)
            subset, root = write_subset(self.cfg.val_json or self.cfg.train_json, self.split.val, folder, "val.json")
            val_cfg = self.run_cfg.replace(test_json=subset, data_dir=root, output=folder / "submission.csv",
                                           answer_mode="score", adapter=None, limit=None, progress=False,
                                           rank=0, world_size=1, local_rank=0)
            self.peft.eval()
            with oom_named(f"the validation at step {st.step}"):
                run(val_cfg, model_loader=lambda _cfg: self.lm, say=lambda _m: None)
            records = load_predictions(OutputPaths.for_submission(val_cfg.output).predictions, truncate=False)
            correct = sum(records.get(q.id, {}).get("answer") == q.answer for q in self.split.val)
            result = {"step": st.step, "epoch": st.epoch, "accuracy": correct / len(self.split.val),
                      "correct": correct, "n": len(self.split.val)}
            st.validations.append(result)
            better = st.best is None or result["accuracy"] > st.best["accuracy"]
            if better:
                st.best = dict(result)
                self.save_adapter()
            self.say(f"step {st.step}: validation {correct}/{len(self.split.val)} = {result['accuracy']:.1%}; best "
                     f"step {st.best['step']} ({st.best['accuracy']:.1%}){' (new best, saved)' if better else ''}")
            self._log({"step": st.step, "validation": result, "best_step": st.best["step"]})
        distributed.barrier(self.shard)
        return result

    def save_adapter(self) -> None:
        """The current LoRA weights as a standard peft adapter in the output folder (replacing its files whole)."""
        tmp = self.out / ".adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.peft.save_pretrained(str(tmp), safe_serialization=True)
        for name in (adapters.ADAPTER_CONFIG, adapters.ADAPTER_WEIGHTS):
            (tmp / name).replace(self.out / name)
        shutil.rmtree(tmp, ignore_errors=True)
        self.write_card()

    def save_checkpoint(self, seconds: float) -> None:
        """The checkpoint, with a copy of the best step's adapter (the output folder's, written when it was
        validated) so that a resume can put back the adapter its card names."""
        self.state.seconds = seconds
        if self.shard.rank == 0:
            progress = {k: v for k, v in self.state.__dict__.items()}
            state = {"settings": self.settings, "scheduler": self.scheduler.state_dict(), "progress": progress}
            best = {f"{BEST_ADAPTER}/{name}": self.out / name
                    for name in (adapters.ADAPTER_CONFIG, adapters.ADAPTER_WEIGHTS)} if self.state.best else {}
            train_checkpoint.save(self.out, self.trainable, self.optimizer, self.param_names, state, files=best)
        self.checkpoint_step = self.state.step
        distributed.barrier(self.shard)

    def write_card(self) -> None:
        import peft
        import transformers

        card = {
            "base_model": self.run_cfg.model,
            "base_architecture": adapters.architecture(self.lm.config),
            "made_by": "roadbuddy-finetune",
            "command": "roadbuddy-finetune " + shlex.join(sys.argv[1:]),
            "settings": self.settings,
            "train_json": str(self.cfg.train_json),
            "split": self.split.describe(),
            "unreadable_clips": self.unreadable,
            "skipped_questions": self.state.skipped,
            "steps": self.state.step, "total_steps": self.total_steps,
            "best": self.state.best, "validation_curve": self.state.validations,
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__, "peft": peft.__version__},
        }
        atomic_write_text(self.out / adapters.CARD, json.dumps(card, indent=1, ensure_ascii=False, default=str) + "\n")

    def finish(self) -> dict:
        """The adapter in the output folder: the best validated one, or the last without validation."""
        if self.shard.rank == 0:
            if not self.split.val:
                self.save_adapter()
            else:
                self.write_card()
            train_log.plot(self.out / train_log.LOG_NAME, self.out / train_log.CHART_NAME)
        distributed.finish(self.shard)
        return {"steps": self.state.step, "best": self.state.best, "skipped": len(self.state.skipped),
                "output": self.out}

    def _log(self, entry: dict) -> None:
        if self.shard.rank == 0:
            train_log.append(self.out / train_log.LOG_NAME, entry)


