"""Train the tiny frame selector (roadbuddy/testing/tiny_selector/) on the brief-evidence task, on CPU, from a seed.

    python -m evals.train_tiny_selector                  # writes roadbuddy/testing/tiny_selector/ (about a minute)
    python -m evals.train_tiny_selector --out /tmp/sel   # elsewhere

All seeded: a random tiny SigLIP (roadbuddy.selector.tiny.write_tiny_selector with --seed), TRAIN_CLIPS
brief clips (roadbuddy.testing.brief_task, scene seeds from brief_task.TRAIN_SEED) encoded as H.264, then the
real command, roadbuddy-finetune-selector with RECIPE and --seed (its validation holds out 10% of those
clips), on one thread. Then the held-out brief clips (brief_task.write_heldout) measure hit@k, k =
tiny_task.FRAMES_SHOWN, for the selector's picks and for k evenly spread frames. --out receives the
selector's files, its card, log and chart, and TRAINING.md with the command and the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import cpu_name
from roadbuddy.testing import brief_task, tiny_task

TRAIN_CLIPS = 160
K = tiny_task.FRAMES_SHOWN
SCAN_FPS = 2.0
RECIPE = ["--scan-fps", str(SCAN_FPS), "--clips-per-step", "8", "--frames-per-clip", "0", "--lr", "2e-3", "--warmup-steps",
          "10", "--max-steps", "300", "--val-every", "25", "--checkpoint-every", "50", "--hit-frames", str(K),
          "--device", "cpu", "--no-progress"]
KEPT = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json",
        "selector_card.json", "training_log.jsonl", "training.png")


def heldout_rates(selector_dir: Path, workdir: Path, clips: int = brief_task.HELDOUT_CLIPS) -> dict:
    """hit@K of the selector in `selector_dir` and of K evenly spread frames on the held-out brief clips."""
    from roadbuddy.finetune.selector.data import questions_with_support, scan_clips
    from roadbuddy.finetune.selector.hits import hit_rates
    from roadbuddy.selector.model import frame_size, load_selector

    split = workdir / "heldout" / "train" / "train.json"
    if not split.is_file():
        brief_task.write_heldout(workdir / "heldout", clips=clips)
    selector = load_selector(selector_dir)
    questions, _ = questions_with_support(split, None)
    scanned, bad = scan_clips(questions, workdir / "heldout-scan", SCAN_FPS, lambda w, h: frame_size(selector, w, h))
    assert not bad, bad
    return hit_rates(selector, scanned, k=K)


def train(out: Path, seed: int, workdir: Path, say=print) -> dict:
    """The whole recipe into `out`; returns {"heldout": hit rates, "seconds": wall time of the training}."""
    from roadbuddy.selector.tiny import write_tiny_selector

    started = time.perf_counter()
    base = write_tiny_selector(workdir / "base", seed=seed)
    split = brief_task.write_split(workdir / "data", clips=TRAIN_CLIPS, seed=brief_task.TRAIN_SEED)
    say(f"wrote a random tiny SigLIP (seed {seed}) and {TRAIN_CLIPS} brief clips in "
        f"{time.perf_counter() - started:.0f} s")
    trained = workdir / "selector"
    command = [sys.executable, "-m", "roadbuddy.finetune.selector.cli", "--model", str(base), "--train-json", str(split),
               "--output", str(trained), *RECIPE, "--seed", str(seed)]
    t0 = time.perf_counter()
    res = subprocess.run(command, check=False, capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"roadbuddy-finetune-selector exited {res.returncode}: {res.stderr[-2000:]}")
    say(res.stderr.strip().splitlines()[-1])
    rates = heldout_rates(trained, workdir)
    out.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        shutil.copyfile(trained / name, out / name)
    card = json.loads((trained / "selector_card.json").read_text(encoding="utf-8"))
    summary = {"heldout": {k: v for k, v in rates.items() if k != "per_question"}, "seconds": round(seconds, 1)}
    (out / "TRAINING.md").write_text(training_md(seed, summary, card), encoding="utf-8")
    return summary


def training_md(seed: int, summary: dict, card: dict) -> str:
    held, last = summary["heldout"], card["validation_curve"][-1]
    return f"""# The tiny frame selector

A random tiny SigLIP (`roadbuddy.selector.tiny.write_tiny_selector(seed={seed})`: 32 px frames in 8 px
patches, two 2-layer 32-wide towers, a 400-token byte-level BPE; weights in float32)
fine-tuned by `roadbuddy-finetune-selector` on {TRAIN_CLIPS} brief-evidence clips
(`roadbuddy.testing.brief_task`: 16 s, the light and a sign each on screen 1 s, 4 s or more apart; one
question about each), made by

    python -m evals.train_tiny_selector --seed {seed}

which ran `roadbuddy-finetune-selector {' '.join(RECIPE)} --seed {seed}` (one thread) in {summary['seconds']:.0f} s
of wall time on a {cpu_name()} (shared with other work), Python {platform.python_version()},
torch {card['versions']['torch']}, transformers {card['versions']['transformers']}.

| measured on | questions | selector hit@{K} | its best pick alone | {K} evenly spread frames |
| --- | --- | --- | --- | --- |
| validation ({card['split']['val']['questions']} questions of the training clips, step {last['step']}) | {last['n']} | {last['selector']:.1%} | {last['selector_top1']:.1%} | {last['even']:.1%} |
| held-out clips (`brief_task.write_heldout`) | {held['n']} | {held['selector']:.1%} | {held['selector_top1']:.1%} | {held['even']:.1%} |

hit@k: one of the k frames is within 1 s of the question's support timestamp. The selector's k frames are its
best-scoring scanned frames ({SCAN_FPS:g} a second), more than 1 s apart. `selector_card.json` holds the settings and
the validation curve, `training_log.jsonl` and `training.png` the run.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evals.train_tiny_selector", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=brief_task.SELECTOR,
                        help="folder to write the selector into (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation and of the "
                        "trainer's split and order (default: %(default)s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tiny-selector-") as tmp:
        summary = train(args.out, args.seed, Path(tmp))
    held = summary["heldout"]
    print(f"held-out hit@{K}: selector {held['selector']:.1%} (best pick alone {held['selector_top1']:.1%}), "
          f"{K} evenly spread frames {held['even']:.1%}, {held['n']} questions; training {summary['seconds']:.0f} s; "
          f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
