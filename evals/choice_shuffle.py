"""Why fine-tuning shuffles the choices: the README's figures, measured.

    python -m evals.choice_shuffle [--work runs/choice-shuffle] [--output evals/choice-shuffle.json]

Two adapters of the tiny seeing checkpoint for the rule questions, by the recipe of
evals/tiny-rule-adapter/TRAINING.md: the committed one (choices shuffled each epoch, the default) and one
trained with --no-shuffle-choices (otherwise the same command: 600 clips, 500 steps of 16; about 14 minutes
on two cores, skipped when --work already holds it: the same command resumes a finished run as a no-op).
Each answers the 96 held-out questions of evals/test_finetune_eval.py through the eval harness, with the
choices in the file's order and reversed (the letters relabelled, the answer following its text), once
and with --permutations 4. The accuracies go to --output with the versions and the machine they were
measured on; evals/test_finetune_eval.py's `slow` test runs this again and compares.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "choice-shuffle.json"
ORDERS = ("file", "reversed")
PERMUTATIONS = (1, 4)


def reversed_split(split: Path) -> Path:
    """The split with every question's choices in reverse order, relabelled A, B, ...; the answer follows its
    text. Written beside the split, so its video paths resolve alike."""
    doc = json.loads(split.read_text(encoding="utf-8"))
    for item in doc["data"]:
        texts = [c.split(". ", 1)[1] for c in item["choices"]]
        right = item["choices"].index(item["answer"])
        item["choices"] = [f"{'ABCD'[i]}. {t}" for i, t in enumerate(reversed(texts))]
        item["answer"] = item["choices"][len(texts) - 1 - right]
    path = split.with_name(f"{split.stem}-reversed.json")
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def train_unshuffled(work: Path, threads: int) -> Path:
    """The committed adapter's command with --no-shuffle-choices (resumes, or does nothing, when run before)."""
    from evals.rule_adapter import RECIPE, TRAIN_CLIPS
    from roadbuddy.testing import tiny_task

    data = work / "train-data"
    split = data / "train" / "train.json"
    if not split.is_file():
        tiny_task.write_labeled_split(data, clips=TRAIN_CLIPS, seed=tiny_task.RULE_SEED)
    out = work / "adapter-unshuffled"
    cmd = [sys.executable, "-m", "roadbuddy.finetune.cli", "--train-json", str(split), "--output", str(out),
           *RECIPE, "--no-shuffle-choices", "--no-progress"]
    subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    return out


def measure(work: Path, *, threads: int = 2, say=print) -> dict:
    """Accuracy of each adapter x choice order x permutations on the held-out rule split."""
    import torch

    from evals import harness
    from evals.rule_adapter import ADAPTER, HELDOUT_CLIPS
    from roadbuddy.testing import tiny_task

    torch.set_num_threads(threads)
    started = time.perf_counter()
    heldout = tiny_task.write_labeled_split(work / "heldout-data", clips=HELDOUT_CLIPS,
                                            seed=tiny_task.RULE_HELDOUT_SEED, rule_share=0.5, prefix="heldout")
    splits = {"file": heldout, "reversed": reversed_split(heldout)}
    adapters = {"shuffled": ADAPTER, "unshuffled": train_unshuffled(work, threads)}
    figures: dict = {}
    for name, adapter in adapters.items():
        for order, split in splits.items():
            for n in PERMUTATIONS:
                cfg = tiny_task.eval_config(tiny_task.CHECKPOINT, split, "unused/submission.csv", adapter=adapter,
                                            permutations=n)
                result = harness.run_eval(cfg, work / "evals" / f"{name}-{order}-perm{n}", fresh=True,
                                          thumbnails=False, say=lambda _m: None)
                acc = result.report["accuracy"]
                figures.setdefault(name, {}).setdefault(order, {})[f"permutations_{n}"] = {
                    "accuracy": round(acc["accuracy"], 4), "correct": acc["correct"], "n": acc["n"]}
                say(f"{name:10s} {order:8s} --permutations {n}: {acc['correct']}/{acc['n']} = {acc['accuracy']:.1%}")
    import peft
    import transformers

    return {"figures": figures,
            "adapters": {"shuffled": "evals/tiny-rule-adapter (committed)",
                         "unshuffled": "its TRAINING.md command with --no-shuffle-choices"},
            "questions": "evals/test_finetune_eval.py's held-out split: 48 clips, seed RULE_HELDOUT_SEED, half rule",
            "machine": {"cpu": _cpu(), "threads": threads,
                        "python": platform.python_version(), "torch": torch.__version__,
                        "transformers": transformers.__version__, "peft": peft.__version__},
            "seconds": round(time.perf_counter() - started, 1)}


def _cpu() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return platform.machine()
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), platform.machine())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals.choice_shuffle", description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, default=Path("runs/choice-shuffle"),
                   help="folder for the data, the unshuffled adapter and the eval reports (kept: a rerun reuses them)")
    p.add_argument("--output", type=Path, default=RESULTS, help="the figures as JSON (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default: %(default)s)")
    args = p.parse_args(argv)
    results = measure(args.work, threads=args.threads)
    args.output.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
