"""Train a tiny Qwen3-VL that can see (roadbuddy/testing/tiny_seeing_qwen3_vl/), on CPU, from nothing.

    python -m evals.train_tiny_qwen                          # writes roadbuddy/testing/tiny_seeing_qwen3_vl/
    python -m evals.train_tiny_qwen --steps 20 --out /tmp/x  # a smoke run
    python -m evals.train_tiny_qwen --init DIR --fixed-steps 0 --ramp-steps 0 ...   # continue from a run

The shipped model came from three stages of this script (roadbuddy/testing/tiny_seeing_qwen3_vl/TRAINING.md:
commands, seeds, the validation curve); it answers 93.8% of the held-out split through the pipeline
(evals/test_eval_qwen.py). evals/test_train_tiny_qwen.py checks that what it trains on is what the pipeline
sends.

The Qwen3-VL twin of evals/train_tiny.py (the tiny InternVL): the same task (roadbuddy.testing.tiny_task:
colour, order and time-of-day questions whose answers are only in the pixels), the same curriculum,
schedule and letter relabelling, a model of the family's real architecture, tiny in width and depth
(roadbuddy.testing.qwen_checkpoints.tiny_qwen_config widened to a 4-layer 128-wide text model and a
2-block 64-wide vision tower with the real 16 px patches, temporal pairs and 2x2 merge). It is trained on
exactly what the pipeline sends a Qwen3-VL for tiny-task questions: the checkpoint's own processor on the
shown frames with their real indices and fps (timestamps per frame pair), the chat texts of
roadbuddy.families.qwen_vl.inputs around the project's words, and the loss on the answer letter after
the suffix, read where score mode reads it. Frames are rendered in memory with the colour subsampling and
noise a codec adds; at the end the saved checkpoint answers the held-out split of real encoded clips
through roadbuddy.predict.pipeline.run. Everything is seeded.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from evals.train_tiny import codec_like, heldout_accuracy, lr_factor, one_off_letters
from roadbuddy.testing import tiny_task

DEFAULT_OUT = Path(tiny_task.__file__).resolve().parent / "tiny_seeing_qwen3_vl"
FAMILY = "qwen3_vl"
MODEL_SIZE = {"text_hidden": 128, "text_layers": 4, "text_intermediate": 256, "vision_hidden": 64,
              "vision_intermediate": 128, "vision_layers": 2}
VALIDATION_SEED = 900_000


def tiny_seeing_config(tokenizer):
    from roadbuddy.testing.qwen_checkpoints import tiny_qwen_config

    config = tiny_qwen_config(FAMILY, tokenizer)
    text, vision = config.text_config, config.vision_config
    text.hidden_size, text.num_hidden_layers = MODEL_SIZE["text_hidden"], MODEL_SIZE["text_layers"]
    text.intermediate_size = MODEL_SIZE["text_intermediate"]
    text.layer_types = ["full_attention"] * MODEL_SIZE["text_layers"]
    vision.hidden_size, vision.depth = MODEL_SIZE["vision_hidden"], MODEL_SIZE["vision_layers"]
    vision.intermediate_size, vision.out_hidden_size = MODEL_SIZE["vision_intermediate"], MODEL_SIZE["text_hidden"]
    return config


class Batcher:
    """Processor inputs for (scene, item) examples, with the prompt text the pipeline sends."""

    def __init__(self, processor):
        from roadbuddy.config import RunConfig
        from roadbuddy.families import registry
        from roadbuddy.families.qwen_vl import inputs

        self.processor = processor
        self.spec = inputs.VideoSpec(registry.ops(FAMILY), processor.tokenizer, processor)
        self.cfg = tiny_task.eval_config("tiny", "split.json", "out.csv")
        assert isinstance(self.cfg, RunConfig)
        self.prefix, self.suffix = inputs.chat_texts(self.spec, self.cfg)
        self.size = inputs.processor_size(self.spec, tiny_task.FRAMES_SHOWN, self.cfg)
        self.letter_ids = [processor.tokenizer.convert_tokens_to_ids(c) for c in "ABCD"]

    def text(self, item: tiny_task.Item, labels: str | None) -> str:
        from roadbuddy.families import wording

        body = wording.question_body(item.question, item.choices)
        if labels:
            lines = "\n".join(f"{label}. {choice}" for label, choice in zip(labels, item.choices))
            body = body.replace(wording.choices_text(item.choices), lines, 1)
        return self.prefix + body + self.suffix

    def __call__(self, examples, noise, labels=None):
        labels = labels or [None] * len(examples)
        videos, metadata, texts, targets, sizes = [], [], [], [], []
        for (scene, item), relabel in zip(examples, labels):
            shown = scene.shown_frames()
            frames = [scene.frame(i) for i in shown]
            if noise is not None:
                frames = [codec_like(f, noise) for f in frames]
            videos.append(np.stack(frames))
            metadata.append({"fps": tiny_task.FPS, "frames_indices": list(shown), "total_num_frames": scene.num_frames})
            texts.append(self.text(item, relabel))
            targets.append("ABCD".index(relabel[item.answer]) if relabel else item.answer)
            sizes.append(len(item.choices))
        extra = {"cap_pixels_per_frame": False} if hasattr(type(self.processor.video_processor),
                                                           "cap_pixels_per_frame") else {}
        batch = self.processor(text=texts, videos=videos, video_metadata=metadata, do_sample_frames=False,
                               size=self.size, padding=True, padding_side="right", return_tensors="pt", **extra)
        return batch, torch.tensor(targets), torch.tensor(sizes)


def answer_logits(model, batch, letter_ids) -> torch.Tensor:
    """The letters' logits after each right-padded prompt (its last real token), positions the model's own."""
    last = batch["attention_mask"].sum(dim=1) - 1
    out = model(**batch, use_cache=False)
    return out.logits[torch.arange(len(last)), last][:, letter_ids]


@torch.no_grad()
def letter_accuracy(model, batches, letter_ids) -> dict[str, float]:
    model.eval()
    right: dict[str, list[int]] = {}
    for examples, (batch, targets, sizes) in batches:
        logits = answer_logits(model, batch, letter_ids)
        for row, (_, item) in enumerate(examples):
            counts = right.setdefault(item.kind, [0, 0])
            counts[0] += int(torch.argmax(logits[row, : sizes[row]])) == int(targets[row])
            counts[1] += 1
    model.train()
    total = sum(r for r, _ in right.values()) / sum(n for _, n in right.values())
    return {"all": total, **{k: r / n for k, (r, n) in right.items() if n}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.train_tiny_qwen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--decay", type=float, default=0.25, help="share of the steps at the end that decay the lr")
    parser.add_argument("--fixed-steps", type=int, default=300,
                        help="curriculum: first steps on colour questions only, 4 choices in a fixed order")
    parser.add_argument("--ramp-steps", type=int, default=1200,
                        help="curriculum: then the shares of shuffled choices, order and time questions and "
                             "relabelled letters rise to their values over this many steps")
    parser.add_argument("--order-share", type=float, default=0.4)
    parser.add_argument("--time-share", type=float, default=0.3)
    parser.add_argument("--relabel", type=float, default=0.3,
                        help="share of examples whose choice lines carry permuted letters (target: the letter "
                             "printed on the right line)")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from this checkpoint's weights (a run of this script) instead of random ones")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--stop-at", type=int, default=None,
                        help="end after this step (an evaluation step), the schedule still planned for --steps: "
                             "how the shipped model's earlier stages ended (see its TRAINING.md)")
    parser.add_argument("--validation", type=int, default=256)
    args = parser.parse_args(argv)

    from transformers import AutoModelForImageTextToText

    from roadbuddy.testing.qwen_checkpoints import PROCESSOR_FILES, build_qwen_tokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng, noise = random.Random(args.seed), np.random.default_rng(args.seed)
    tokenizer = build_qwen_tokenizer(FAMILY)
    model = AutoModelForImageTextToText.from_config(tiny_seeing_config(tokenizer))
    if args.init is not None:
        trained = AutoModelForImageTextToText.from_pretrained(args.init, dtype=torch.float32)
        model.load_state_dict(trained.state_dict())
    model.train()
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(args.out)
    for name, settings in PROCESSOR_FILES[FAMILY].items():
        (args.out / name).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(args.out)
    batcher = Batcher(processor)
    params = sum(p.numel() for p in model.parameters())
    print(f"{params / 1e6:.3f} M parameters", flush=True)

    val_rng, val_noise = random.Random(VALIDATION_SEED), np.random.default_rng(VALIDATION_SEED)
    val = [tiny_task.random_example(val_rng, VALIDATION_SEED + i, order_share=args.order_share,
                                    time_share=args.time_share) for i in range(args.validation)]
    val_batches = [(val[i:i + 64], batcher(val[i:i + 64], val_noise)) for i in range(0, len(val), 64)]
    relabeled = val[:128]
    shifted = one_off_letters(relabeled)
    relabeled_batches = [(relabeled[i:i + 64], batcher(relabeled[i:i + 64], val_noise, shifted[i:i + 64]))
                         for i in range(0, len(relabeled), 64)]

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, args))
    letter_ids = torch.tensor(batcher.letter_ids)
    history, losses, started = [], [], time.perf_counter()
    for step in range(1, min(args.steps, args.stop_at or args.steps) + 1):
        examples, relabels = [], []
        ramp = min(1.0, max(0.0, (step - args.fixed_steps) / max(1, args.ramp_steps)))
        for k in range(args.batch):
            example = tiny_task.random_example(rng, ((step - 1) * args.batch + k) % tiny_task.HELDOUT_SEED,
                                               order_share=args.order_share * ramp, shuffle_share=ramp,
                                               time_share=args.time_share * ramp)
            examples.append(example)
            letters = "ABCD"[: len(example[1].choices)]
            relabels.append("".join(rng.sample(letters, len(letters))) if rng.random() < args.relabel * ramp
                            else None)
        batch, targets, _ = batcher(examples, noise, relabels)
        loss = torch.nn.functional.cross_entropy(answer_logits(model, batch, letter_ids).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if step % 25 == 0:
            print(f"step {step} loss {np.mean(losses[-25:]):.4f} {(time.perf_counter() - started) / step:.2f} s/step",
                  flush=True)
        if step % args.eval_every == 0 or step == args.steps or step == args.stop_at:
            acc = letter_accuracy(model, val_batches, letter_ids)
            acc["relabeled"] = letter_accuracy(model, relabeled_batches, letter_ids)["all"]
            history.append({"step": step, "loss": round(float(np.mean(losses)), 4),
                            "seconds": round(time.perf_counter() - started),
                            **{f"val_{k}": round(v, 4) for k, v in acc.items()}})
            losses = []
            print(json.dumps(history[-1]), flush=True)
            model.save_pretrained(args.out, safe_serialization=True)  # a killed run keeps its last evaluation's weights
    train_seconds = time.perf_counter() - started
    model.eval()
    model.to(torch.float16).save_pretrained(args.out, safe_serialization=True)  # the loader upcasts on CPU
    model.to(torch.float32)
    try:
        heldout = heldout_accuracy(args.out)
    except Exception as exc:  # the weights are saved; a pipeline problem must not lose the training log
        heldout = {"error": f"{type(exc).__name__}: {exc}"}
    print("held-out split through the pipeline:", json.dumps(heldout), flush=True)
    log = {
        "command": "python -m evals.train_tiny_qwen "
                   + " ".join(map(shlex.quote, argv if argv is not None else sys.argv[1:])),
        "args": {k: str(v) for k, v in vars(args).items()}, "model_size": MODEL_SIZE, "parameters": params,
        "train_seconds": round(train_seconds), "history": history, "heldout_pipeline": heldout,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": __import__("transformers").__version__},
    }
    (args.out / "training_log.json").write_text(json.dumps(log, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
