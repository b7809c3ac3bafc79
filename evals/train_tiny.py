"""Train the tiny InternVL that can see (roadbuddy/testing/tiny_seeing/), on CPU, from nothing.

    python -m evals.train_tiny                      # writes roadbuddy/testing/tiny_seeing/ (about 75 min on one core)
    python -m evals.train_tiny --steps 50 --out /tmp/x   # a smoke run
    python -m evals.train_tiny --init roadbuddy/testing/tiny_seeing ...   # fine-tune a checkpoint (see its TRAINING.md)

The model is `roadbuddy.testing.checkpoints.tiny_config` at the size DESIGN.md measured
(2-layer 64-wide vision tower on 56 px tiles = 4 tokens per tile, 4-layer
128-wide Qwen3 text model) with the tokenizer of `roadbuddy.testing`. It is
trained on exactly what the pipeline feeds it for `roadbuddy.testing.tiny_task` questions:
the frames the eval shows (uniform segments of the clip), tiled and normalised
by `roadbuddy.families.internvl.tiles`, the prompt prefix and suffix of `roadbuddy.families.internvl.prompts`
tokenised separately as the pipeline does, and the loss on the answer letter
after the suffix. Frames are rendered in memory, with the colour subsampling
and noise a video codec adds; at the end the saved checkpoint answers a
held-out split of real encoded clips through `roadbuddy.predict.pipeline.run`.
Everything is seeded: the same command on the same library versions gives the
same weights.
"""
from __future__ import annotations

import argparse
import inspect
import json
import math
import platform
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from roadbuddy.families.internvl import prompts, tiles
from roadbuddy.testing import tiny_task

DEFAULT_OUT = tiny_task.CHECKPOINT
MODEL_SIZE = dict(image_size=56, text_hidden=128, text_layers=4, vision_hidden=64, vision_layers=2)
VALIDATION_SEED = 900_000  # in-memory validation scenes; the held-out clips use tiny_task.HELDOUT_SEED


def codec_like(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What H.264 at yuv420p does to a drawn frame, roughly: chroma at half resolution, a little noise."""
    x = frame.astype(np.float32)
    y = x @ np.array([0.299, 0.587, 0.114], np.float32)
    chroma = x - y[..., None]
    h, w = y.shape
    small = chroma[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    chroma = np.repeat(np.repeat(small, 2, axis=0), 2, axis=1)
    out = y[..., None] + chroma + rng.normal(0, 2.0, x.shape).astype(np.float32)
    return np.clip(out * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)


def lr_factor(step: int, args) -> float:
    """The learning rate's factor at `step`: linear warm-up over args.warmup steps, constant, then cosine to 10%
    over the last args.decay share of args.steps (both tiny trainers)."""
    if step < args.warmup:
        return (step + 1) / args.warmup
    decay_from = args.steps * (1 - args.decay)
    if step < decay_from:
        return 1.0
    t = (step - decay_from) / max(1.0, args.steps - decay_from)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))


def one_off_letters(examples) -> list[str]:
    """For (scene, item) examples, choice letters printed one off (B, C, D, A for four choices): the validation
    that tells whether a model reads the printed letters or counts lines."""
    return ["".join("ABCD"[(i + 1) % len(item.choices)] for i in range(len(item.choices))) for _, item in examples]


class Encoder:
    """Prompt token ids as the pipeline builds them (prefix and suffix tokenised separately)."""

    def __init__(self, tokenizer, tokens_per_tile: int):
        self.tokenizer = tokenizer
        frames = prompts.frames_text([1] * tiny_task.FRAMES_SHOWN, tokens_per_tile)
        self.prefix = self._ids(prompts.prompt_prefix(frames + prompts.intro_text()))  # as families/internvl/inputs.prefix_ids
        self._suffix: dict[tuple, list[int]] = {}
        self.letter_ids = [tokenizer.convert_tokens_to_ids(c) for c in "ABCD"]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def ids(self, item: tiny_task.Item, labels: str | None = None) -> list[int]:
        """The prompt; with `labels`, the choice lines carry those letters instead of A, B, C, D in order."""
        key = (item.question, item.choices, labels)
        if key not in self._suffix:
            block = prompts.question_body(item.question, item.choices)
            if labels:
                lines = "\n".join(f"{label}. {choice}" for label, choice in zip(labels, item.choices))
                block = block.replace(prompts.choices_text(item.choices), lines, 1)
            self._suffix[key] = self._ids(prompts.prompt_suffix(block))
        return self.prefix + self._suffix[key]


def make_batch(examples, encoder: Encoder, image_size: int, noise: np.random.Generator | None,
               labels: list[str | None] | None = None):
    """Token ids (right-padded), lengths, pixel values and target letter indices of (scene, item) examples.

    `labels[i]`, when given, relabels example i's choice lines; its target is then the label printed on
    the right line, so the model learns to read the printed letter rather than count lines (a model
    that counts would not notice choice letters shifted in the prompt, one of the planted defects).
    """
    ids, pixel_values, targets, sizes = [], [], [], []
    labels = labels or [None] * len(examples)
    for (scene, item), relabel in zip(examples, labels):
        frames = [scene.frame(i) for i in scene.shown_frames()]
        if noise is not None:
            frames = [codec_like(f, noise) for f in frames]
        pv, _ = tiles.frames_to_pixel_values(frames, image_size, max_num=1)
        pixel_values.append(pv)
        ids.append(encoder.ids(item, relabel))
        targets.append("ABCD".index(relabel[item.answer]) if relabel else item.answer)
        sizes.append(len(item.choices))
    width = max(map(len, ids))
    pad = encoder.tokenizer.pad_token_id
    batch = torch.full((len(ids), width), pad, dtype=torch.long)
    for row, seq in enumerate(ids):
        batch[row, : len(seq)] = torch.tensor(seq)
    lengths = torch.tensor([len(s) for s in ids])
    return batch, lengths, torch.cat(pixel_values), torch.tensor(targets), torch.tensor(sizes)


def answer_logits(model, ids, lengths, pixel_values, image_token_id):
    """Next-token logits after each (right-padded) prompt, the image features in the image-token slots.

    Every prompt starts with the same tokens (system prompt up to the first image
    token); they go through the language model once, batch 1, and their keys and
    values are shared by the batch. Same numbers as the full batch, a third cheaper.
    """
    from transformers import DynamicCache

    lm = model.model.language_model
    embed = model.get_input_embeddings()
    first = int((ids[0] == image_token_id).nonzero()[0])
    if not bool((ids[:, :first] == ids[:1, :first]).all()):
        raise ValueError("prompts of a batch must share their text before the first image")
    kwarg = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
    head = lm(inputs_embeds=embed(ids[:1, :first]), use_cache=True)
    past = getattr(head, kwarg)
    cache = DynamicCache()
    for i, layer in enumerate(past.layers):
        cache.update(layer.keys.expand(ids.shape[0], -1, -1, -1), layer.values.expand(ids.shape[0], -1, -1, -1), i)
    rest = ids[:, first:]
    embeds = embed(rest)
    out = model.get_image_features(pixel_values=pixel_values)
    features = out.pooler_output if hasattr(out, "pooler_output") else out
    mask = (rest == image_token_id).unsqueeze(-1)
    embeds = embeds.masked_scatter(mask, features.reshape(-1, features.shape[-1]).to(embeds.dtype))
    hidden = lm(inputs_embeds=embeds, use_cache=True, **{kwarg: cache}).last_hidden_state
    last = hidden[torch.arange(ids.shape[0]), lengths - 1 - first]
    return model.lm_head(last)


@torch.no_grad()
def letter_accuracy(model, batches, encoder, image_token_id) -> dict[str, float]:
    model.eval()
    right: dict[str, list[int]] = {}
    for examples, batch in batches:
        ids, lengths, pv, targets, sizes = batch
        logits = answer_logits(model, ids, lengths, pv, image_token_id)[:, encoder.letter_ids]
        for row, (_, item) in enumerate(examples):
            guess = int(torch.argmax(logits[row, : sizes[row]]))
            counts = right.setdefault(item.kind, [0, 0])
            counts[0] += guess == int(targets[row])
            counts[1] += 1
    model.train()
    total = sum(r for r, _ in right.values()) / sum(n for _, n in right.values())
    return {"all": total, **{k: r / n for k, (r, n) in right.items() if n}}


def heldout_accuracy(model_dir: Path) -> dict:
    """The real thing: encoded clips, decode, frames, tiles, prompts, score mode, via pipeline.run."""
    from evals import report
    from roadbuddy.data.output import load_predictions
    from roadbuddy.data.questions import load_questions
    from roadbuddy.predict.pipeline import run

    with tempfile.TemporaryDirectory() as tmp:
        split = tiny_task.write_heldout(Path(tmp) / "data")
        cfg = tiny_task.eval_config(model_dir, split, Path(tmp) / "out" / "submission.csv")
        run(cfg, say=lambda _m: None)
        questions = load_questions(split)
        records = load_predictions(Path(tmp) / "out" / "predictions.jsonl")
        frame = report.question_table(questions, records)
    return {"questions": len(frame), "accuracy": float(frame.correct.mean()),
            "prior": float(frame.prior_correct.mean()),
            "by_kind": {k: float(v) for k, v in frame.groupby(frame["clip"].str.extract(r"_([a-z]+)\.mp4$")[0]).correct.mean().items()}}


def _held_line(log: dict) -> str:
    held = log["heldout_pipeline"]
    note = f" ({log['heldout_note']})" if log.get("heldout_note") else ""
    return (f"{100 * held['accuracy']:.1f}% on {held['questions']} questions (prior {100 * held['prior']:.1f}%; "
            + ", ".join(f"{k} {100 * v:.1f}%" for k, v in held.get("by_kind", {}).items()) + ")"
            if "accuracy" in held else f"not measured ({held.get('error')})") + note


def _history_rows(log: dict) -> str:
    def pct(h, key):
        return f"{100 * h[key]:.1f}%" if key in h else "-"

    return "\n".join(f"| {h['step']} | {h['loss']:.4f} | {pct(h, 'val_all')} | {pct(h, 'val_colour')} "
                     f"| {pct(h, 'val_order')} | {pct(h, 'val_time')} | {pct(h, 'val_relabeled')} | {h['seconds']} |"
                     for h in log["history"])


def _fine_tune_markdown(log: dict) -> str:
    a, final = log["args"], log["final_validation"] or {}
    return f"""Fine-tuned from the stage 1 checkpoint (below) by `evals/train_tiny.py --init`, every weight trained:

    {log['command']}

{a['steps']} steps of batch {a['batch']}, AdamW lr {a['lr']} (warm-up {a['warmup']}, constant, then cosine to 10% \
over the last {float(a['decay']):.0%} of the steps), no curriculum; each example is an order question with \
probability {a['order_share']}, a time question with probability {a['time_share']}, else a colour question; \
{a['relabel']} of them print permuted choice letters. Seed {a['seed']}, \
{log['train_seconds'] / 60:.0f} minutes on one core of a 2-core CPU; python {log['versions']['python']}, \
torch {log['versions']['torch']}, transformers {log['versions']['transformers']}.

Final in-memory validation ({a['validation']} examples): {100 * final.get('val_all', 0):.1f}% (colour \
{100 * final.get('val_colour', 0):.1f}%, order {100 * final.get('val_order', 0):.1f}%, time \
{100 * final.get('val_time', 0):.1f}%); with the choice letters printed one off, the letter printed on the right \
line: {100 * final.get('val_relabeled', 0):.1f}%.

Held-out split through the real pipeline (encoded H.264 clips, decode, frames, tiles, prompts, score mode): \
{_held_line(log)}.

| step | train loss | val | val colour | val order | val time | val relabeled | seconds |
| --- | --- | --- | --- | --- | --- | --- | --- |
{_history_rows(log)}
"""


def training_markdown(log: dict) -> str:
    """TRAINING.md of a checkpoint folder, from its training_log.json (with its base's, when fine-tuned)."""
    title = "# roadbuddy/testing/tiny_seeing: how it was trained\n\n"
    if not log.get("base"):
        return title + _from_scratch_markdown(log)
    return (title + "Two stages: a model trained from random initialisation on colour and order questions "
            "(stage 1), then fine-tuned with time-of-day questions added (stage 2). Regenerate by running "
            "stage 1's command, then stage 2's with `--init` pointing at stage 1's output.\n\n"
            "## Stage 2: time-of-day questions added\n\n" + _fine_tune_markdown(log)
            + "\n## Stage 1: from random initialisation\n\n(Its held-out figures are on the split of the time, "
            "half colour and half order clips, without time clips.)\n\n" + _from_scratch_markdown(log["base"]))


def _from_scratch_markdown(log: dict) -> str:
    """The section of TRAINING.md for a run from random initialisation."""
    a, final = log["args"], log["final_validation"] or {}
    rows, held_line = _history_rows(log), _held_line(log)
    return f"""A {log['parameters'] / 1e6:.2f} M-parameter InternVL ({log['model_size']['vision_layers']}-layer, \
{log['model_size']['vision_hidden']}-wide vision tower on {log['model_size']['image_size']} px tiles, \
{log['model_size']['text_layers']}-layer, {log['model_size']['text_hidden']}-wide Qwen3 text model), random \
initialisation, trained on CPU by `evals/train_tiny.py` on the synthetic task of `roadbuddy/testing/tiny_task.py`. \
Weights are stored in float16 (the loader upcasts to float32 on CPU).

Regenerate (everything is seeded, so the same command with `--threads 1` on the same library versions should give the same weights; this was not re-run to check it):

    python -m evals.train_tiny --steps {a['steps']} --fixed-steps {a['fixed_steps']} --ramp-steps {a['ramp_steps']} \\
        --relabel {a['relabel']} --order-share {a['order_share']} --decay {a['decay']} --warmup {a['warmup']} --batch {a['batch']} --lr {a['lr']} --seed {a['seed']}

This run: `{log['command']}`; seed {a['seed']}, {a['steps']} steps of batch {a['batch']}, AdamW lr {a['lr']} \
(warm-up {a['warmup']}, constant, then cosine to 10% over the last {float(a['decay']):.0%} of the steps), \
{log['train_seconds'] / 60:.0f} minutes of training on a shared 2-core CPU; \
python {log['versions']['python']}, torch {log['versions']['torch']}, transformers {log['versions']['transformers']}.

Curriculum: colour questions only, 4 choices in a fixed order, for the first {a['fixed_steps']} steps (the model \
learns to see before it learns to match a choice's text to its letter); then over {a['ramp_steps']} steps the \
share of shuffled choices rises to 1, the share of order questions to {a['order_share']}, and the share of examples whose \
choice lines carry permuted letters to {a['relabel']} (their target is the letter printed on the right line, so the \
model reads the printed letters instead of counting lines); then the full task.

Final in-memory validation ({a['validation']} examples, rendered frames): {100 * final.get('val_all', 0):.1f}% \
(colour {100 * final.get('val_colour', 0):.1f}%, order {100 * final.get('val_order', 0):.1f}%); with the choice letters \
printed one off, the letter printed on the right line: {100 * final.get('val_relabeled', 0):.1f}%.

Held-out split through the real pipeline (encoded H.264 clips, decode, frames, tiles, prompts, score mode): \
{held_line}.

| step | train loss | val | val colour | val order | val time | val relabeled | seconds |
| --- | --- | --- | --- | --- | --- | --- | --- |
{rows}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.train_tiny", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--steps", type=int, default=4500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--fixed-steps", type=int, default=300,
                        help="curriculum: first steps on colour questions only, 4 choices in a fixed order "
                             "(the model learns to see before it learns to match a choice's text to its letter)")
    parser.add_argument("--ramp-steps", type=int, default=1200,
                        help="curriculum: then this many steps over which the share of shuffled choices rises "
                             "to 1 and the share of order questions to --order-share")
    parser.add_argument("--relabel", type=float, default=0.3,
                        help="after the ramp, share of examples whose choice lines carry permuted letters "
                             "(target: the letter printed on the right line)")
    parser.add_argument("--order-share", type=float, default=0.65,
                        help="after the ramp, share of order questions (the rest are colour questions)")
    parser.add_argument("--time-share", type=float, default=0.0,
                        help="after the ramp, share of time-of-day questions (default 0: stage 1 had none)")
    parser.add_argument("--init", type=Path, default=None,
                        help="start from this checkpoint instead of random weights (fine-tuning; pass "
                             "--fixed-steps 0 --ramp-steps 0 to skip the curriculum); its training log is kept")
    parser.add_argument("--decay", type=float, default=0.25, help="share of the steps at the end that decay the lr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest on a shared 2-core box: 2 threads spin-wait)")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--validation", type=int, default=256, help="in-memory validation examples")
    args = parser.parse_args(argv)

    from transformers import InternVLForConditionalGeneration

    from roadbuddy.testing.checkpoints import build_tokenizer, tiny_config

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    noise = np.random.default_rng(args.seed)
    tokenizer = build_tokenizer()
    config = tiny_config(tokenizer, **MODEL_SIZE)
    if args.init:
        model = InternVLForConditionalGeneration.from_pretrained(args.init, dtype=torch.float32)
        fresh = InternVLForConditionalGeneration(config)
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if shapes != {k: tuple(v.shape) for k, v in fresh.state_dict().items()}:
            raise SystemExit(f"{args.init} is not a model of this script's size (MODEL_SIZE) and tokenizer")
        config = model.config
    else:
        model = InternVLForConditionalGeneration(config)
    model.train()
    image_size = MODEL_SIZE["image_size"]
    tokens_per_tile = config.image_seq_length
    encoder = Encoder(tokenizer, tokens_per_tile)
    image_token_id = config.image_token_id
    params = sum(p.numel() for p in model.parameters())
    print(f"{params / 1e6:.3f} M parameters; {tokens_per_tile} tokens per {image_size} px tile", flush=True)

    val_rng = random.Random(VALIDATION_SEED)
    val_examples = [tiny_task.random_example(val_rng, VALIDATION_SEED + i, time_share=args.time_share)
                    for i in range(args.validation)]
    val_noise = np.random.default_rng(VALIDATION_SEED)
    val_batches = [(val_examples[i:i + 64], make_batch(val_examples[i:i + 64], encoder, image_size, val_noise))
                   for i in range(0, len(val_examples), 64)]
    # the same kind of examples with the choice letters printed in another order: does the model read them?
    relabeled = val_examples[:128]
    shifted = one_off_letters(relabeled)
    relabeled_batches = [(relabeled[i:i + 64], make_batch(relabeled[i:i + 64], encoder, image_size, val_noise,
                                                          shifted[i:i + 64])) for i in range(0, len(relabeled), 64)]

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, args))
    history = []
    started = time.perf_counter()
    seed_counter = 0
    losses = []
    for step in range(1, args.steps + 1):
        examples, relabels = [], []
        for _ in range(args.batch):
            ramp = min(1.0, max(0.0, (step - args.fixed_steps) / max(1, args.ramp_steps)))
            example = tiny_task.random_example(rng, seed_counter % tiny_task.HELDOUT_SEED,
                                               order_share=args.order_share * ramp, shuffle_share=ramp,
                                               time_share=args.time_share * ramp)
            examples.append(example)
            letters = "ABCD"[: len(example[1].choices)]
            relabels.append("".join(rng.sample(letters, len(letters))) if rng.random() < args.relabel * ramp else None)
            seed_counter += 1
        ids, lengths, pv, targets, _ = make_batch(examples, encoder, image_size, noise, relabels)
        logits = answer_logits(model, ids, lengths, pv, image_token_id)
        target_ids = torch.tensor(encoder.letter_ids)[targets]
        loss = torch.nn.functional.cross_entropy(logits, target_ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
        if step % 25 == 0:
            print(f"step {step} loss {np.mean(losses[-25:]):.4f} {(time.perf_counter() - started) / step:.2f} s/step",
                  flush=True)
        if step % args.eval_every == 0 or step == args.steps:
            acc = letter_accuracy(model, val_batches, encoder, image_token_id)
            acc["relabeled"] = letter_accuracy(model, relabeled_batches, encoder, image_token_id)["all"]
            entry = {"step": step, "loss": round(float(np.mean(losses)), 4), "seconds": round(time.perf_counter() - started),
                     **{f"val_{k}": round(v, 4) for k, v in acc.items()}}
            losses = []
            history.append(entry)
            print(json.dumps(entry), flush=True)
    train_seconds = time.perf_counter() - started

    args.out.mkdir(parents=True, exist_ok=True)
    model.eval()
    # float16 halves the file (about 1.8 MB); the loader upcasts to float32 on CPU
    model.to(torch.float16).save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    model.to(torch.float32)
    try:
        heldout = heldout_accuracy(args.out)
    except Exception as exc:  # the weights are saved; a pipeline problem must not lose the training log
        heldout = {"error": f"{type(exc).__name__}: {exc}"}
    print("held-out split through the pipeline:", json.dumps(heldout), flush=True)
    log = {
        "command": "python -m evals.train_tiny " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "args": {k: str(v) for k, v in vars(args).items()},
        "model_size": MODEL_SIZE, "parameters": params, "train_seconds": round(train_seconds),
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": __import__("transformers").__version__},
        "history": history, "final_validation": history[-1] if history else None, "heldout_pipeline": heldout,
    }
    base_log = args.init / "training_log.json" if args.init else None
    if base_log is not None and base_log.is_file():
        log["base"] = json.loads(base_log.read_text(encoding="utf-8"))
    (args.out / "training_log.json").write_text(json.dumps(log, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (args.out / "TRAINING.md").write_text(training_markdown(log), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
