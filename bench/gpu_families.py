"""The GPU sweep's rows for the other families: Qwen3-VL-4B/8B and Qwen2.5-VL-7B, bf16 and 4-bit, 16 and 32 frames.

    python bench/gpu_families.py OUT [--models qwen3-vl-4b,...] [--quant bf16,4bit] [--data DIR]

Each model is its shipped config (roadbuddy/families/configs) with random bf16 weights, built on the GPU and
saved as a checkpoint the family's own load path reads (safetensors, the tokenizer with the family's chat
template, the published processor files), so 4-bit loads through the same from_pretrained as a real
checkpoint; it is loaded by its family (roadbuddy.families.registry) as roadbuddy-predict loads one, measured
by bench.gpu.measure (NVML peak, the VRAM estimate beside it, latency), then deleted: 9 to 17 GB each, and the
device's disk holds one at a time. Results: OUT/<date>-<gpu>-families.{json,md}, written after every row.
Not yet run on a GPU; bench/test_gpu_harness.py runs this code on the CPU with tiny Qwen checkpoints.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.gpu import (
    Setting,
    document,
    format_row,
    markdown_table,
    measure,
    release,
    results_stem,
    write_bench_dataset,
)
from roadbuddy.config import RunConfig
from roadbuddy.families import registry
from roadbuddy.families.checkpoint import ModelLoadError
from roadbuddy.predict import memory


@dataclass(frozen=True)
class FamilyModel:
    """A model of another family in the sweep: the shipped config its random weights are built from, and its rows'
    quantizations and settings."""
    name: str  # the rows' label
    config: str | None  # the shipped config's stem (None: a checkpoint given to sweep_families)
    quants: tuple = (None, "4bit")
    settings: tuple = (Setting("16f", 16), Setting("32f", 32))


FAMILY_MODELS = [FamilyModel("qwen3-vl-4b", "qwen3-vl-4b-instruct"),
                 FamilyModel("qwen3-vl-8b", "qwen3-vl-8b-instruct"),
                 FamilyModel("qwen2.5-vl-7b", "qwen2_5-vl-7b-instruct")]
_TOKEN_IDS = (("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
              ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))


def family_tokenizer(family: str):
    """The real Qwen vocabulary (the added tokens at their published ids, so prompts are as long as the real
    model's), or where it cannot be had the tests' small BPE with Qwen's added tokens; returns (tokenizer, what)."""
    from roadbuddy.testing.qwen_checkpoints import build_qwen_tokenizer
    from roadbuddy.testing.qwen_vocab import QwenVocabUnavailable, qwen_tokenizer

    try:
        return qwen_tokenizer(), "qwen (151,643 BPE ranks + the added tokens at their published ids)"
    except QwenVocabUnavailable as exc:
        return build_qwen_tokenizer(family), f"test BPE (prompt lengths differ from the real model's: {exc})"


def build_random_family_checkpoint(directory: Path, config, tokenizer, vocabulary: str, device: str = "cuda") -> Path:
    """`config`'s architecture (a Qwen family's) with random bf16 weights, built on `device` and saved as the family's
    load path reads a checkpoint: safetensors, the tokenizer with the family's chat template, the published
    processor files (roadbuddy.testing.qwen_checkpoints), the vision token ids the tokenizer gives."""
    from transformers import AutoModelForImageTextToText

    from roadbuddy.testing.qwen_checkpoints import CHAT_TEMPLATES, PROCESSOR_FILES

    if (directory / "config.json").is_file():
        return directory
    family = config.model_type
    if len(tokenizer) > config.text_config.vocab_size:
        raise ValueError(f"the tokenizer's {len(tokenizer)} tokens overflow the config's vocabulary "
                         f"({config.text_config.vocab_size})")
    for key, token in _TOKEN_IDS:
        setattr(config, key, tokenizer.convert_tokens_to_ids(token))
    config.roadbuddy_weights = "random"  # the loader says "random weights" about this checkpoint
    tokenizer.chat_template = CHAT_TEMPLATES[family]
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    for name, settings in PROCESSOR_FILES[family].items():
        (directory / name).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    (directory / "VOCABULARY.txt").write_text(vocabulary + "\n")
    del model
    release(device)
    return directory


def sweep_families(data_json: Path, work: Path, sampler, models=tuple(FAMILY_MODELS), quants=None, log=print,
                   on_row=None, checkpoints: dict[str, Path] | None = None) -> dict:
    """Every model's (quantization, setting) rows; a model's weights are random ones of its shipped config, built
    under `work` and deleted after its rows, unless `checkpoints` names its folder (the CPU harness test's tiny
    ones). `quants` keeps only those of each model's quantizations. A model that cannot load in one (no CUDA
    for 4-bit, no torchvision for the processor) gets one error row for it, and the sweep goes on."""
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # it warns once per 8-bit matmul call
    checkpoints = checkpoints or {}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    described = ", ".join(f"{m.name} ({m.config or checkpoints[m.name]})" for m in models)
    doc = document(sampler, "random" if not checkpoints else "given checkpoints", described, "the checkpoints'")
    tokenizers = {}
    for model in models:
        path = checkpoints.get(model.name)
        built = path is None
        if built:
            config = memory.load_config(model.config)
            if config.model_type not in tokenizers:
                tokenizers[config.model_type] = family_tokenizer(config.model_type)
            tokenizer, doc["tokenizer"] = tokenizers[config.model_type]
            t = time.perf_counter()
            path = build_random_family_checkpoint(work / model.name, config, tokenizer, doc["tokenizer"], device)
            log(f"random {model.name} checkpoint built and saved in {time.perf_counter() - t:.1f} s")
        base = RunConfig(model=str(path), test_json=data_json, device=device, progress=False, prefetch=2,
                         support_frames=False)
        for quant in [q for q in model.quants if quants is None or q in quants]:
            _rows(model, base, quant, work, sampler, doc, log, on_row)
        if built:
            shutil.rmtree(path, ignore_errors=True)
    return doc


def _rows(model: FamilyModel, base: RunConfig, quant, work: Path, sampler, doc: dict, log, on_row) -> None:
    """One model's rows in one quantization, loaded once (an error row when it cannot load)."""
    tag = quant or "bf16"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    release(device)
    t = time.perf_counter()
    try:
        lm = registry.load_model(base.replace(quantization=quant))
    except (ModelLoadError, torch.cuda.OutOfMemoryError) as exc:
        row = {"label": f"{tag} {model.name}", "quantization": tag, "setting": model.name, "model": model.name,
               "error": str(exc).splitlines()[0]}
        doc["rows"].append(row)
        log(format_row(row))
        return
    load_s = time.perf_counter() - t
    weights = "random" if "random weights" in lm.source else "trained"
    counts = memory.count_parameters(lm.config)
    warm = model.settings[0].apply(base).replace(quantization=quant, limit=2,
                                                 output=work / f"{model.name}-{tag}-warmup" / "s.csv")
    measure(lm, warm, sampler, counts, "warmup")  # kernels, cuBLAS handles and the decoder, outside the rows
    for setting in model.settings:
        name = f"{model.name} {setting.name}"
        out = work / f"{model.name}-{tag}-{setting.name}" / "s.csv"
        cfg = setting.apply(base).replace(quantization=quant, output=out)
        try:
            row = measure(lm, cfg, sampler, counts, f"{tag} {name}")
        except torch.cuda.OutOfMemoryError as exc:
            row = {"label": f"{tag} {name}", "quantization": tag, "error": f"CUDA OOM: {exc}"}
        row.update(setting=name, model=model.name, config=model.config, load_s=load_s, weights=weights)
        doc["rows"].append(row)
        log(format_row(row))
        if on_row:
            on_row(doc)
    del lm
    release(device)


def main(argv=None) -> int:
    """The other families' rows (FAMILY_MODELS) on this machine's GPU, written to OUT/<date>-<gpu>-families.*."""
    from roadbuddy.predict.memory import NvmlPeakSampler

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=Path(".gpu/bench-data"),
                        help="folder with bench.json and its clips (written here when absent)")
    parser.add_argument("--models", default=",".join(m.name for m in FAMILY_MODELS), help="comma-separated names")
    parser.add_argument("--quant", default="bf16,4bit", help="comma-separated quantizations: bf16, 4bit")
    args = parser.parse_args(argv)
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # as roadbuddy-predict sets it
    sampler = NvmlPeakSampler()  # before CUDA is touched, so the device baseline excludes us
    data_json = args.data / "bench.json" if (args.data / "bench.json").is_file() else write_bench_dataset(args.data)
    models = [m for m in FAMILY_MODELS if m.name in args.models.split(",")]
    quants = [None if q == "bf16" else q for q in args.quant.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)

    def write(doc):
        stem = f"{results_stem(doc)}-families"
        (args.out / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
        (args.out / f"{stem}.md").write_text(markdown_table(doc))

    work = Path(tempfile.mkdtemp(prefix="roadbuddy-families-"))  # the checkpoints stay out of OUT
    try:
        doc = sweep_families(data_json, work, sampler, models=models, quants=quants, on_row=write)
    finally:
        sampler.close()
        shutil.rmtree(work, ignore_errors=True)
    write(doc)
    print("\n" + markdown_table(doc))
    return 1 if any("error" in r for r in doc["rows"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
