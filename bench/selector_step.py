"""The frame selector's step per clip: the scan's decode and its scores, with a selector of the default's shape.

    python -m bench.selector_step [--device cpu|cuda] [--rounds 3] [--out DIR]

The selector is a random SigLIP with the shape of google/siglip2-base-patch16-256 (the default of
roadbuddy-finetune-selector: two 12-layer 768-wide towers, 256 px frames in 16 px patches, a 256,000-token
text table, 64 text positions) and the tiny selector's tokenizer (no download; the text tower's cost does not
depend on which ids it sees). Per clip it times what roadbuddy-predict does before planning a clip's frames
(roadbuddy.selector.scan.predict_support: the scan decoded at the selector's input size, its frames and the
clip's questions through the towers), on road clips the CPU benches use (bench.cpu.road_clip: 720p and 1440p,
9 s, 30 fps), at --scan-fps 2 and 4, with 2 questions. On CUDA it also records the peak memory torch allocated
for the step beside the weights, and the VRAM estimate's figure for the selector
(roadbuddy.predict.memory.selector_bytes). Results: DIR/selector-step-<date>-<device>.{json,md}.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

QUESTIONS = ["Biển báo trong video có hình gì?", "Video đang có đèn giao thông màu gì?"]


def default_shaped_config(tokenizer):
    """A SiglipConfig with google/siglip2-base-patch16-256's sizes (its config.json as published)."""
    from transformers import SiglipConfig

    text = {"vocab_size": 256_000, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
            "num_attention_heads": 12, "max_position_embeddings": 64, "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": None, "eos_token_id": tokenizer.eos_token_id}
    vision = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
              "image_size": 256, "patch_size": 16}
    return SiglipConfig(text_config=text, vision_config=vision)


def random_selector(device: str):
    from transformers import SiglipModel

    from roadbuddy.selector.model import Selector
    from roadbuddy.selector.tiny import build_tokenizer, image_processor

    tokenizer = build_tokenizer()
    tokenizer.model_max_length = 64
    config = default_shaped_config(tokenizer)
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = SiglipModel(config).to(device, dtype).eval()
    return Selector(model, tokenizer, image_processor(image_size=256, patch_size=16), "random siglip2-base shape"), config


def measure(device: str, rounds: int, clip_dir: Path) -> list[dict]:
    from bench.cpu import road_clip
    from roadbuddy.predict.memory import GiB, selector_bytes
    from roadbuddy.selector.scan import predict_support
    from roadbuddy.video.reader import open_video

    selector, config = random_selector(device)
    cuda = device.startswith("cuda")
    rows = []
    for resolution in ("720p", "1440p"):
        clip = road_clip(clip_dir, resolution)
        for scan_fps in (2.0, 4.0):
            times, peak = [], 0
            for _ in range(rounds + 1):  # the first round warms the decoder and the kernels
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start = time.perf_counter()
                with open_video(clip) as reader:
                    predict_support(selector, reader, QUESTIONS, scan_fps=scan_fps)
                if cuda:
                    torch.cuda.synchronize()
                    peak = max(peak, torch.cuda.max_memory_allocated())
                times.append(time.perf_counter() - start)
            rows.append({"resolution": resolution, "scan_fps": scan_fps, "questions": len(QUESTIONS),
                         "median_ms": round(statistics.median(times[1:]) * 1000, 1),
                         "min_ms": round(min(times[1:]) * 1000, 1),
                         "peak_allocated_gib": round(peak / GiB, 3) if cuda else None,
                         "estimate_gib": round(selector_bytes(config) / GiB, 3)})
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.selector_step", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per row, after one warm-up (median)")
    parser.add_argument("--out", type=Path, default=None, help="write selector-step-<date>-<device>.{json,md} here")
    args = parser.parse_args(argv)
    from bench.machine import cpu_name

    with tempfile.TemporaryDirectory() as tmp:
        rows = measure(args.device, args.rounds, Path(tmp))
    machine = (torch.cuda.get_device_name(0) if args.device.startswith("cuda") else cpu_name())
    doc = {"date": datetime.date.today().isoformat(), "device": args.device, "machine": machine,
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "command": "python -m bench.selector_step " + " ".join(argv or []), "rows": rows}
    lines = [f"# Frame selector step per clip ({doc['date']}, {machine}, {args.device}, {doc['threads']} threads)", "",
             "| clip | scan fps | questions | median ms | min ms | peak allocated GiB | estimate GiB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['resolution']} 9 s | {r['scan_fps']:g} | {r['questions']} | {r['median_ms']} | {r['min_ms']} | "
              f"{r['peak_allocated_gib'] if r['peak_allocated_gib'] is not None else '-'} | {r['estimate_gib']} |"
              for r in rows]
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"selector-step-{doc['date']}-{args.device.split(':')[0]}"
        stem.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        stem.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
