"""The GPU sweep: every quantization x frame setting through the real pipeline.

Used by bench/test_gpu.py (pytest -m gpu bench/) and bench/run_gpu.sh. The model
is the real InternVL3.5-4B architecture from roadbuddy/families/configs with random
weights (built on the GPU, saved once as a safetensors checkpoint so that 8-bit
and 4-bit load through the same from_pretrained path as a real checkpoint),
unless a real checkpoint is given. Results say which.

The other families' rows (Qwen3-VL, Qwen2.5-VL) are bench/gpu_families.py's, measured by `measure` here.
"""
from __future__ import annotations

import gc
import json
import logging
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from roadbuddy.config import RunConfig
from roadbuddy.families.internvl import tiles
from roadbuddy.predict import memory

BENCH_CONFIG = "internvl3_5-4b"
TOKENS_PER_TILE = 256


@dataclass(frozen=True)
class Setting:
    name: str
    frames: int | None  # None: the adaptive default
    max_num: int = 1
    share_prefix: bool = True
    decoder_scaling: bool = True
    batch_questions: bool = True

    def apply(self, cfg: RunConfig) -> RunConfig:
        cfg = cfg.replace(share_prefix=self.share_prefix, decoder_scaling=self.decoder_scaling,
                          batch_questions=self.batch_questions)
        if self.frames is None:
            return cfg
        per_frame = tiles.tiles_per_frame(2560, 1440, self.max_num, True) * TOKENS_PER_TILE
        return cfg.replace(min_frames=self.frames, max_frames=self.frames, max_num=self.max_num,
                           max_visual_tokens=self.frames * per_frame)


SETTINGS = [
    Setting("8f", 8), Setting("16f", 16), Setting("32f", 32), Setting("64f", 64),
    Setting("16f-6t", 16, max_num=6), Setting("adaptive", None),
]
PLAIN_SETTING = Setting("32f-plain", 32, share_prefix=False)  # issue 7: the per-question path beside it
EXTRA_BF16 = [  # issue 7 beside the default: the card's PIL resize; one forward per question on the shared prefix
    Setting("32f-card-resize", 32, decoder_scaling=False), Setting("32f-one-at-a-time", 32, batch_questions=False)]
FUSED_SETTINGS = [Setting("32f", 32), Setting("adaptive", None)]  # issue 14: rerun with --fused-attention beside them
QUANTS = [None, "8bit", "4bit"]

# Real RoadBuddy-style questions (train split wording) so text token counts are realistic.
QUESTIONS = [
    ("Video đang có đèn giao thông màu gì?", ["A. Đỏ", "B. Xanh", "C. Vàng", "D. Không có đèn"]),
    ("Biển báo nào xuất hiện trong video?", ["A. Biển cấm quay đầu, biển cấm rẽ trái",
                                             "B. Biển giới hạn tốc độ 80 km/h, biển cấm quay đầu",
                                             "C. Biển chỉ dẫn hướng đi", "D. Không có biển báo"]),
    ("Nếu xe ô tô đang chạy ở làn ngoài cùng bên phải trong video này thì xe đó chỉ được phép rẽ phải?",
     ["A. Đúng", "B. Sai"]),
    ("Phần đường trong video cho phép các phương tiện đi theo hướng nào khi đến nút giao?",
     ["A. Đi thẳng", "B. Đi thẳng và rẽ phải", "C. Đi thẳng, rẽ trái và rẽ phải", "D. Rẽ trái và rẽ phải"]),
]


def write_bench_dataset(directory: Path, seconds=(6, 8, 10, 12), fps: int = 30) -> Path:
    """RoadBuddy-shaped clips (2560x1440, 30 fps, 6-12 s, H.264) with 2-4 questions each; returns the JSON."""
    from roadbuddy.testing.synth import write_road_clip

    directory.mkdir(parents=True, exist_ok=True)
    items = []
    for c, secs in enumerate(seconds):
        rel = f"videos/bench_{c}.mp4"
        if not (directory / rel).is_file():
            write_road_clip(directory / rel, seconds=secs, fps=fps, width=2560, height=1440,
                            light=["red", "green", "yellow"][c % 3], seed=c)
        for k in range(2 + c % 3):
            text, choices = QUESTIONS[(c + k) % len(QUESTIONS)]
            items.append({"id": f"bench_{c}_{k}", "question": text, "choices": choices, "video_path": rel})
    path = directory / "bench.json"
    path.write_text(json.dumps({"__count__": len(items), "data": items}, ensure_ascii=False, indent=1), "utf-8")
    return path


def bench_tokenizer():
    """The real Qwen vocabulary (roadbuddy.testing.qwen_vocab), so prompts are as long as the real model's, or where it
    cannot be had (no wheel carried, no network) the tests' small BPE; returns (tokenizer, what it is)."""
    from roadbuddy.testing.checkpoints import build_tokenizer
    from roadbuddy.testing.qwen_vocab import QwenVocabUnavailable, qwen_tokenizer

    try:
        return qwen_tokenizer(), "qwen (151,643 BPE ranks + InternVL's special tokens)"
    except QwenVocabUnavailable as exc:
        return build_tokenizer(), f"test BPE (600 entries; prompt lengths differ from the real model's: {exc})"


def build_random_checkpoint(directory: Path) -> Path:
    """The 4B architecture with random bf16 weights, built on the GPU and saved as safetensors + tokenizer."""
    from transformers import InternVLForConditionalGeneration

    if (directory / "config.json").is_file():
        return directory
    tokenizer, vocabulary = bench_tokenizer()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "VOCABULARY.txt").write_text(vocabulary + "\n")
    config = memory.load_config(BENCH_CONFIG)
    config.image_token_id = tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = InternVLForConditionalGeneration(config)
    finally:
        torch.set_default_dtype(previous)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return directory


def _percentile(values, q):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def measure(lm, cfg: RunConfig, sampler, counts, label: str) -> dict:
    """One pipeline run with a preloaded model; returns the figures of one results row."""
    from roadbuddy.predict.pipeline import run

    cuda = torch.cuda.is_available()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sampler.reset()
    t = time.perf_counter()
    summary = run(cfg, model_loader=lambda _cfg: lm, say=lambda _msg: None)
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t
    sampler.sample()
    records = [json.loads(line) for line in (Path(cfg.output).parent / "predictions.jsonl").read_text().splitlines()]
    times = [r["time_ms"] / 1000 for r in records]
    prompt_tokens = max(r.get("prompt_tokens", 0) for r in records)
    est = memory.estimate_vram(lm.config, quantization=cfg.quantization, prompt_tokens=prompt_tokens,
                               visual_tokens=max(r.get("visual_tokens", 0) for r in records),
                               vision_batch=cfg.vision_batch, prefill_chunk=cfg.prefill_chunk,
                               embeddings_on_gpu=not cfg.embeddings_on_cpu, counts=counts)
    peak = sampler.peak
    return {
        "label": label,
        "quantization": cfg.quantization or "bf16",
        "frames": f"{cfg.min_frames}-{cfg.max_frames}" if cfg.min_frames != cfg.max_frames else cfg.min_frames,
        "max_num": cfg.max_num,
        "share_prefix": cfg.share_prefix,
        "batch_questions": cfg.batch_questions,
        "questions": summary.answered,
        "errors": len(summary.errors),
        "nan_answers": sum(any(v != v for v in r.get("probs", {}).values()) for r in records),
        "visual_tokens_mean": statistics.mean(r.get("visual_tokens", 0) for r in records),
        "visual_tokens_max": max(r.get("visual_tokens", 0) for r in records),
        "prompt_tokens_max": prompt_tokens,
        "nvml_peak_gib": peak / memory.GiB,
        "nvml_process_peak_gib": sampler.process_peak / memory.GiB,
        "nvml_device_peak_gib": sampler.device_peak / memory.GiB,
        "torch_peak_allocated_gib": torch.cuda.max_memory_allocated() / memory.GiB if cuda else 0.0,
        "torch_peak_reserved_gib": torch.cuda.max_memory_reserved() / memory.GiB if cuda else 0.0,
        "estimate_gib": est.total / memory.GiB,
        "estimate_error": (est.total - peak) / peak if peak else None,
        "latency_p50_s": _percentile(times, 0.5),
        "latency_p95_s": _percentile(times, 0.95),
        "questions_per_s": summary.answered / wall,
        "wall_s": wall,
    }


def sweep(model_path: Path | None, data_json: Path, work: Path, sampler, quants=QUANTS, settings=SETTINGS,
          log=print, plain: Setting | None = PLAIN_SETTING, extra=tuple(EXTRA_BF16), on_row=None,
          adapter: Path | None = None, fused=tuple(FUSED_SETTINGS)) -> dict:
    """Run every (quantization, setting); returns the results document (environment + rows).

    `adapter` (a roadbuddy-finetune adapter) is loaded as roadbuddy-predict --adapter loads it: merged in
    bf16, beside the weights when quantized. `on_row(doc)` is called after every row, so a sweep cut short
    still leaves its figures."""
    from roadbuddy.families.internvl.model import load_model

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # it warns once per 8-bit matmul call
    weights = "trained" if model_path else "random"
    if model_path is None:
        t = time.perf_counter()
        model_path = build_random_checkpoint(work / "random-4b")
        log(f"random 4B checkpoint built and saved in {time.perf_counter() - t:.1f} s")
    device = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: the harness's own test, tiny model
    base = RunConfig(model=str(model_path), test_json=data_json, device=device, progress=False, prefetch=2,
                     support_frames=False, adapter=adapter)
    doc = document(sampler, weights, str(model_path) if weights == "trained" else
                    f"{BENCH_CONFIG} architecture, random weights", _vocabulary(model_path), adapter)
    rows = doc["rows"]
    for quant in quants:
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
        t = time.perf_counter()
        lm = load_model(base.replace(quantization=quant))
        load_s = time.perf_counter() - t
        counts = memory.count_parameters(lm.config)
        tag = quant or "bf16"
        # warm-up: kernels, cuBLAS handles and the decoder, outside the measurements
        run_settings = list(settings) + ([plain, *extra] if quant is None and plain else [])
        warm = run_settings[0].apply(base).replace(quantization=quant, limit=2, output=work / f"{tag}-warmup" / "s.csv")
        measure(lm, warm, sampler, counts, "warmup")

        def rows_of(lm, settings_, changes: dict, suffix: str = "") -> None:
            for setting in settings_:
                name = f"{setting.name}{suffix}"
                cfg = setting.apply(base).replace(output=work / f"{tag}-{name}" / "s.csv", **changes)
                try:
                    row = measure(lm, cfg, sampler, counts, f"{tag} {name}")
                except torch.cuda.OutOfMemoryError as exc:
                    row = {"label": f"{tag} {name}", "quantization": tag, "error": f"CUDA OOM: {exc}"}
                row.update(setting=name, load_s=load_s, weights=weights,
                           config=BENCH_CONFIG if weights == "random" else None)
                rows.append(row)
                log(format_row(row))
                if on_row:
                    on_row(doc)

        rows_of(lm, run_settings, {"quantization": quant})
        del lm
        release(device)
        if quant is None and fused:  # issue 14: the same rows with --fused-attention (a model loaded with it)
            lm = load_model(base.replace(fused_attention=True))
            measure(lm, run_settings[0].apply(base).replace(limit=2, output=work / "fused-warmup" / "s.csv"),
                    sampler, counts, "warmup")
            rows_of(lm, fused, {"fused_attention": True}, "-fused")
            del lm
            release(device)
    return doc


def release(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def document(sampler, weights: str, model: str, tokenizer: str, adapter: Path | None = None) -> dict:
    """A results document: the environment, what was measured, and its rows (filled by the sweep)."""
    import transformers

    return {
        "date": time.strftime("%Y-%m-%d"), "gpu": sampler.name, "driver": sampler.driver, "torch": torch.__version__,
        "transformers": transformers.__version__, "python": platform.python_version(), "weights": weights,
        "model": model, "adapter": str(adapter) if adapter else None, "tokenizer": tokenizer,
        "clips": "2560x1440 30 fps H.264, 6/8/10/12 s, 2-4 questions each (bench.json)", "rows": [],
    }


def _vocabulary(model_path: Path) -> str:
    marker = Path(model_path) / "VOCABULARY.txt"
    return marker.read_text().strip() if marker.is_file() else "the checkpoint's"


def format_row(row: dict) -> str:
    if "error" in row and "nvml_peak_gib" not in row:
        return f"{row['label']:<18} {row['error']}"
    return (f"{row['label']:<18} peak {row['nvml_peak_gib']:.2f} GiB (est {row['estimate_gib']:.2f}, "
            f"{100 * (row['estimate_error'] or 0):+.1f}%) torch {row['torch_peak_allocated_gib']:.2f}/"
            f"{row['torch_peak_reserved_gib']:.2f} tokens {row['visual_tokens_max']} "
            f"p50 {row['latency_p50_s']:.3f}s p95 {row['latency_p95_s']:.3f}s {row['questions_per_s']:.2f} q/s "
            f"nan {row['nan_answers']}")


def markdown_table(doc: dict) -> str:
    lines = [
        f"Measured {doc['date']} on {doc['gpu']} (driver {doc['driver']}), torch {doc['torch']}, "
        f"transformers {doc['transformers']}, weights: {doc['weights']}; clips: {doc['clips']}.",
        "",
        "| quantization | setting | visual tokens (max) | NVML peak GiB | estimate GiB (error) | torch alloc / reserved GiB "
        "| p50 s | p95 s | questions/s | load s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in doc["rows"]:
        if "nvml_peak_gib" not in r:
            lines.append(f"| {r['quantization']} | {r.get('setting')} | - | {r['error']} | | | | | | |")
            continue
        lines.append(
            f"| {r['quantization']} | {r['setting']} | {r['visual_tokens_max']} | {r['nvml_peak_gib']:.2f} | "
            f"{r['estimate_gib']:.2f} ({100 * r['estimate_error']:+.1f}%) | {r['torch_peak_allocated_gib']:.2f} / "
            f"{r['torch_peak_reserved_gib']:.2f} | {r['latency_p50_s']:.3f} | {r['latency_p95_s']:.3f} | "
            f"{r['questions_per_s']:.2f} | {r['load_s']:.1f} |")
    return "\n".join(lines) + "\n"


def results_stem(doc: dict) -> str:
    gpu = "".join(ch if ch.isalnum() else "-" for ch in doc["gpu"]).strip("-").lower()
    return f"{doc['date']}-{gpu}"
