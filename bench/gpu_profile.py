"""Issue 14: one clip's model side step by step, beside its arithmetic floor, for each attention path.

    python bench/gpu_profile.py OUT [--model DIR] [--frames 32] [--questions 3]     # on a GPU

Steps: the vision tower over the clip's tiles, the embedding lookup and splice, each prefill chunk, and
the packed pass of the clip's question suffixes. Each is timed with CUDA events (perf_counter on the
CPU) after a warm-up, median of --rounds, for transformers' SDPA and for --fused-attention. Beside each
time: the step's FLOP over the matrix-product rate measured in the same run (a large bf16 matmul) and
its weight and KV bytes over the measured copy bandwidth; the floor is the larger of the two. FLOP are
counted from the config: 2 x the linear layers' parameters per token, plus 4 x heads x head_dim x
queries x keys for attention. Writes OUT/profile.json and OUT/profile.md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch


def _timer(device: torch.device):
    if device.type == "cuda":
        def timed(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            return out, start.elapsed_time(end) / 1000
    else:
        def timed(fn):
            t = time.perf_counter()
            out = fn()
            return out, time.perf_counter() - t
    return timed


def machine_rates(device: torch.device, dtype: torch.dtype, size: int = 8192) -> dict:
    """A large matrix product's FLOP/s and a large copy's bytes/s on this device (the floors' denominators)."""
    timed = _timer(device)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    timed(lambda: a @ b)
    mm = min(timed(lambda: a @ b)[1] for _ in range(5))
    big = torch.empty(256 * 1024 * 1024 // 2, device=device, dtype=dtype)  # 256 MiB
    dst = torch.empty_like(big)
    timed(lambda: dst.copy_(big))
    cp = min(timed(lambda: dst.copy_(big))[1] for _ in range(5))
    return {"matmul_flops": 2 * size ** 3 / mm, "copy_bytes_per_s": 2 * big.numel() * big.element_size() / cp}


def _linear_params(module) -> int:
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Linear))


def step_costs(lm, tiles: int, prefix_len: int, chunk: int, suffix_tokens: int) -> dict:
    """FLOP and bytes of each step, from the model's own modules and config."""
    cfg = lm.config
    text, vision = cfg.text_config, cfg.vision_config
    layers = text.num_hidden_layers
    lm_linear = _linear_params(lm.model.model.language_model)
    tower_linear = _linear_params(lm.model.model.vision_tower)
    projector_linear = _linear_params(lm.model.model.multi_modal_projector)  # runs on the pixel-shuffled tokens
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    patch_tokens = (lm.image_size // (vision.patch_size[0] if isinstance(vision.patch_size, (list, tuple))
                                      else vision.patch_size)) ** 2 + 1
    kv_per_token = 2 * layers * text.num_key_value_heads * head_dim * 2
    weight_bytes = {"lm": lm_linear * 2, "tower": (tower_linear + projector_linear) * 2}
    tower = 2 * tower_linear * patch_tokens + 4 * vision.num_hidden_layers * vision.hidden_size * patch_tokens ** 2
    costs = {"vision": {"flop": tiles * (tower + 2 * projector_linear * lm.tokens_per_tile),
                        "bytes": weight_bytes["tower"]}}
    start = 0
    while start < prefix_len:
        q = min(chunk, prefix_len - start)
        keys = start + q
        attn = 4 * layers * text.num_attention_heads * head_dim * q * (start + (q + 1) / 2)
        costs[f"prefill {start}-{keys}"] = {"flop": 2 * lm_linear * q + attn,
                                            "bytes": weight_bytes["lm"] + kv_per_token * keys}
        start = keys
    attn = 4 * layers * text.num_attention_heads * head_dim * suffix_tokens * (prefix_len + suffix_tokens)
    costs["questions (packed)"] = {"flop": 2 * lm_linear * suffix_tokens + attn,
                                   "bytes": weight_bytes["lm"] + kv_per_token * (prefix_len + suffix_tokens)}
    return costs


def profile_clip(lm, clip, cfg, rounds: int = 3) -> dict[str, float]:
    """Median seconds of each step of one clip's model side (the pipeline's own functions, one group)."""
    from roadbuddy.families.internvl.model import _embed, encode_tiles, forward_packed, new_cache, rewind

    timed = _timer(lm.device)
    group = clip.groups[0]
    prefix = group.prefix_ids.to(lm.device)
    suffixes = [group.suffix_ids[q.id].to(lm.device) for q in group.questions]
    times: dict[str, list[float]] = {}
    for _ in range(rounds + 1):  # the first round warms up
        row = {}
        features, row["vision"] = timed(lambda: encode_tiles(lm, clip.tiles, cfg.vision_batch))
        features = features[group.tile_rows]
        embeds, row["embed + splice"] = timed(lambda: _embed(lm, prefix, features))
        cache = new_cache(lm)
        with torch.inference_mode():
            for start in range(0, embeds.shape[1], cfg.prefill_chunk):
                part = embeds[:, start:start + cfg.prefill_chunk]
                _, row[f"prefill {start}-{start + part.shape[1]}"] = timed(lambda: lm.model(
                    inputs_embeds=part, use_cache=True, logits_to_keep=1, **{lm.cache_kwarg: cache}))
        length = cache.get_seq_length()
        _, row["questions (packed)"] = timed(lambda: forward_packed(lm, suffixes, cache))
        rewind(cache, length)
        if times or rounds == 0:
            for k, v in row.items():
                times.setdefault(k, []).append(v)
        else:
            times = {k: [] for k in row}
    return {k: statistics.median(v) for k, v in times.items()}


def table(measured: dict[str, dict[str, float]], costs: dict, rates: dict) -> list[dict]:
    rows = []
    for step in next(iter(measured.values())):
        cost = costs.get(step, {"flop": 0.0, "bytes": 0.0})
        floor = max(cost["flop"] / rates["matmul_flops"], cost["bytes"] / rates["copy_bytes_per_s"])
        row = {"step": step, "tflop": cost["flop"] / 1e12, "gbytes": cost["bytes"] / 1e9,
               "flop_floor_s": cost["flop"] / rates["matmul_flops"],
               "bytes_floor_s": cost["bytes"] / rates["copy_bytes_per_s"], "floor_s": floor}
        for path, steps in measured.items():
            row[f"{path}_s"] = steps[step]
            row[f"{path}_over_floor"] = steps[step] / floor if floor else None
        rows.append(row)
    return rows


def markdown(doc: dict) -> str:
    paths = list(doc["paths"])
    head = "| step | TFLOP | GB | FLOP floor s | bytes floor s | " + " | ".join(f"{p} s | {p} / floor" for p in paths) + " |"
    lines = [f"{doc['device']}, {doc['date']}: matmul {doc['rates']['matmul_flops'] / 1e12:.0f} TFLOP/s, copy "
             f"{doc['rates']['copy_bytes_per_s'] / 1e9:.0f} GB/s; {doc['frames']} frames, {doc['questions']} questions",
             "", head, "|" + " --- |" * (5 + 2 * len(paths))]
    for r in doc["rows"]:
        cells = [r["step"], f"{r['tflop']:.2f}", f"{r['gbytes']:.2f}", f"{r['flop_floor_s']:.4f}",
                 f"{r['bytes_floor_s']:.4f}"]
        for p in paths:
            ratio = r[f"{p}_over_floor"]
            cells += [f"{r[f'{p}_s']:.4f}", "-" if ratio is None else f"{ratio:.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(model_path: Path, data_json: Path, out: Path, *, frames: int = 32, device: str = "cuda",
        rounds: int = 3, matmul_size: int = 8192) -> dict:
    from roadbuddy.config import RunConfig
    from roadbuddy.data.questions import group_by_video, load_questions
    from roadbuddy.families.internvl.model import load_model
    from roadbuddy.predict import inputs

    base = RunConfig(model=str(model_path), device=device, min_frames=frames, max_frames=frames,
                     max_visual_tokens=frames * 256 * 8, support_frames=False, progress=False)
    video, qs = max(group_by_video(load_questions(data_json)), key=lambda c: len(c[1]))
    measured, costs, lm = {}, None, None
    for path, fused in (("sdpa", False), ("fused", True)):
        lm = load_model(base.replace(fused_attention=fused))
        clip = inputs.prepare_clip(video, qs, base, inputs.InputSpec.of(lm))
        if clip.error:
            raise RuntimeError(clip.error)
        measured[path] = profile_clip(lm, clip, base, rounds)
        group = clip.groups[0]
        costs = step_costs(lm, len(group.tile_rows), group.prefix_ids.shape[1], base.prefill_chunk,
                           sum(group.suffix_ids[q.id].shape[1] for q in group.questions))
        if path == "sdpa":
            del lm
            if device == "cuda":
                torch.cuda.empty_cache()
    rates = machine_rates(torch.device(device), lm.dtype, matmul_size)
    doc = {"date": time.strftime("%Y-%m-%d"), "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
           "torch": torch.__version__, "frames": frames, "questions": len(qs), "rates": rates, "paths": list(measured),
           "rows": table(measured, costs, rates)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "profile.md").write_text(markdown(doc))
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/gpu_profile.py", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--model", type=Path, default=None, help="checkpoint (default: the random-weight 4B)")
    parser.add_argument("--data", type=Path, default=None, help="folder of the bench clips (bench.json)")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    from bench import gpu

    data_dir = args.data or args.out / "bench-data"
    data_json = data_dir / "bench.json" if (data_dir / "bench.json").is_file() else gpu.write_bench_dataset(data_dir)
    model = args.model or gpu.build_random_checkpoint(args.out / "random-4b")
    doc = run(model, data_json, args.out, frames=args.frames, rounds=args.rounds)
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
