"""Fine-tuning on a GPU: peak NVML memory and questions per second of roadbuddy-finetune's recipe.

    python -m pytest -m gpu bench/test_gpu_finetune.py     # or: bench/run_gpu.sh finetune

For each of LoRA in bf16 and QLoRA on a 4-bit base, at 16 and 32 frames a question (one tile each),
gradient checkpointing on, batch 1 with 4 accumulated passes, a few optimizer steps of the real recipe
(roadbuddy.finetune.recipe.FineTune: the predict pipeline's inputs, the loss at two positions, LoRA on the
language model, the vision tower frozen) on the bench's 2560x1440 clips with labels. The model is the
4B architecture with random weights unless --bench-model names a checkpoint: memory and time for a
given number of tokens do not depend on the weights. bench/budgets.toml holds the ceilings.
"""
from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from roadbuddy.config import RunConfig
from roadbuddy.finetune.config import TrainConfig
from roadbuddy.predict import memory


@dataclass(frozen=True)
class TrainSetting:
    name: str
    quantization: str | None
    frames: int

    @property
    def label(self) -> str:
        return f"finetune {self.quantization or 'bf16'} {self.frames}f"


SETTINGS = [TrainSetting("bf16-16f", None, 16), TrainSetting("bf16-32f", None, 32),
            TrainSetting("4bit-16f", "4bit", 16), TrainSetting("4bit-32f", "4bit", 32)]


def labeled_copy(bench_json: Path) -> Path:
    """The bench's question file with an answer per question (the first choice) for training."""
    doc = json.loads(Path(bench_json).read_text(encoding="utf-8"))
    for item in doc["data"]:
        item["answer"] = item["choices"][0]
    path = Path(bench_json).with_name("bench-train.json")
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    return path


def measure(model_path: Path, train_json: Path, work: Path, sampler, setting: TrainSetting, *, device: str = "cuda",
            steps: int = 4, grad_accum: int = 4) -> dict:
    """A few steps of the recipe in one setting; the row of the results table."""
    from roadbuddy.finetune.recipe import FineTune

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    run_cfg = RunConfig(model=str(model_path), device=device, quantization=setting.quantization,
                        min_frames=setting.frames, max_frames=setting.frames, support_frames=False, progress=False)
    train_cfg = TrainConfig(train_json=train_json, output=work / setting.name, max_steps=steps, batch_size=1,
                            grad_accum=grad_accum, val_fraction=0.0, checkpoint_every=10 ** 6, lr=1e-4)
    sampler.reset()
    recipe = FineTune(run_cfg, train_cfg, say=lambda _m: None)
    t = time.perf_counter()
    recipe.setup()
    setup_s = time.perf_counter() - t
    t = time.perf_counter()
    try:
        recipe.train()
    except torch.cuda.OutOfMemoryError as exc:
        return {"label": setting.label, "setting": setting.name, "error": f"CUDA OOM: {str(exc)[:200]}"}
    train_s = time.perf_counter() - t
    sampler.sample()
    log = [json.loads(x) for x in (work / setting.name / "training_log.jsonl").read_text().splitlines()]
    row = {"label": setting.label, "setting": setting.name, "quantization": setting.quantization or "bf16",
           "frames": setting.frames, "steps": steps, "questions": steps * grad_accum,
           "nvml_peak_gib": sampler.peak / memory.GiB, "questions_per_s": steps * grad_accum / train_s,
           "seconds_per_step": train_s / steps, "setup_s": setup_s, "last_loss": log[-1]["loss"],
           "trained_parameters": sum(p.numel() for p in recipe.trainable.values())}
    if device == "cuda":
        row["torch_peak_alloc_gib"] = torch.cuda.max_memory_allocated() / memory.GiB
        torch.cuda.reset_peak_memory_stats()
    del recipe
    gc.collect()
    return row


def sweep(model_path: Path, bench_json: Path, work: Path, sampler, settings=SETTINGS, device: str = "cuda",
          steps: int = 4, log=print) -> dict:
    import platform

    import transformers

    train_json = labeled_copy(bench_json)
    rows = []
    doc = {"date": time.strftime("%Y-%m-%d"), "gpu": sampler.name, "driver": sampler.driver,
           "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version(),
           "what": "roadbuddy-finetune steps (LoRA r16 on the language model, batch 1 x 4 accumulated, gradient "
                   "checkpointing), 2560x1440 bench clips, one tile a frame", "rows": rows}
    for setting in settings:
        if setting.quantization and device != "cuda":
            continue
        row = measure(model_path, train_json, work, sampler, setting, device=device, steps=steps)
        rows.append(row)
        log(format_row(row))
    return doc


def format_row(row: dict) -> str:
    if "error" in row:
        return f"{row['label']:<20} {row['error']}"
    return (f"{row['label']:<20} peak {row['nvml_peak_gib']:.2f} GiB, {row['questions_per_s']:.2f} questions/s, "
            f"{row['seconds_per_step']:.2f} s/step, loss {row['last_loss']:.3f}")


def markdown_table(doc: dict) -> str:
    lines = [f"Fine-tuning on {doc['gpu']} ({doc['date']}, torch {doc['torch']}, transformers {doc['transformers']}): "
             f"{doc['what']}.", "", "| setting | NVML peak GiB | torch peak GiB | questions/s | s/step |",
             "| --- | --- | --- | --- | --- |"]
    for r in doc["rows"]:
        if "error" in r:
            lines.append(f"| {r['label']} | {r['error']} | | | |")
        else:
            lines.append(f"| {r['label']} | {r['nvml_peak_gib']:.2f} | {r.get('torch_peak_alloc_gib', float('nan')):.2f} "
                         f"| {r['questions_per_s']:.2f} | {r['seconds_per_step']:.2f} |")
    return "\n".join(lines) + "\n"
