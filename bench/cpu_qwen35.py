"""CPU bench for Qwen3.5's shared prefix (issue 22): how a clip's questions run after one prefill of its frames.

    python -m bench.cpu_qwen35 [--rounds 5] [--questions 4] [--out bench/results]

On a mid-size random Qwen3.5 (the real 3:1 layout of linear- and full-attention layers, 512 wide, 8 layers,
the real vocabulary size of the tiny test tokenizer) and one clip of 16 frames with `--questions` questions,
all through the project's own inputs (prepare_clip, the checkpoint's processor), each round times:
  copies     the pipeline's path: the prefix prefilled once, each question on its own copy of the state
             (families/qwen3_5/family.py: branch = copy.deepcopy), one at a time
  batch      the alternative: the prefix state repeated along the batch (Cache.reorder_cache), the questions
             right-padded side by side in one forward, each read at its last real token
  plain      --no-share-prefix: every question prefills its whole prompt, the vision tower included
The prefix's prefill is timed on its own (once a round); medians over the rounds; ratios to `copies` from the
same run; every path's logits are checked against `copies` first. Written to OUT/cpu-<date>-qwen35.{md,json}.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.machine import cpu_name


def build(root: Path, questions: int):
    from roadbuddy.config import RunConfig
    from roadbuddy.data.questions import group_by_video, load_questions
    from roadbuddy.families import registry
    from roadbuddy.predict import inputs
    from roadbuddy.testing import qwen_checkpoints
    from roadbuddy.testing.checkpoints import write_synthetic_dataset

    tokenizer = qwen_checkpoints.build_qwen_tokenizer("qwen3_5")
    config = qwen_checkpoints.tiny_qwen_config("qwen3_5", tokenizer)
    text = config.text_config
    text.hidden_size, text.intermediate_size, text.num_hidden_layers = 512, 1536, 8
    text.layer_types = (["linear_attention"] * 3 + ["full_attention"]) * 2
    text.num_attention_heads, text.num_key_value_heads, text.head_dim = 8, 2, 64
    text.linear_num_key_heads, text.linear_num_value_heads = 4, 8
    text.linear_key_head_dim = text.linear_value_head_dim = 64
    config.vision_config.out_hidden_size = 512
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config).eval()
    folder = root / "model"
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    for name, settings in qwen_checkpoints.PROCESSOR_FILES["qwen3_5"].items():
        (folder / name).write_text(json.dumps(settings), encoding="utf-8")
    cfg = RunConfig(model=str(folder), device="cpu", min_frames=16, max_frames=16, support_frames=False)
    lm = registry.load_model(cfg)
    data = write_synthetic_dataset(root / "data", clips=3, seconds=8, width=448, height=252)
    doc = json.loads(data.read_text(encoding="utf-8"))
    items = doc["data"]  # 6 questions of 2 and 4 choices, of different lengths: all asked about the first clip
    doc["data"] = [dict(items[i % len(items)], id=f"q{i}", video_path=items[0]["video_path"])
                   for i in range(questions)]
    doc["__count__"] = questions
    data.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    (video, qs), = group_by_video(load_questions(data))
    clip = inputs.prepare_clip(video, qs, cfg, inputs.InputSpec.of(lm))
    return lm, clip


@torch.inference_mode()
def prefilled(lm, clip):
    from roadbuddy.families.decoding import new_cache

    (group,) = clip.groups
    cache = new_cache(lm)
    _, start = lm.ops.prefill(lm, clip, group, None, cache)
    return group, cache, start


@torch.inference_mode()
def copies(lm, clip, prefix) -> list[torch.Tensor]:
    group, cache, start = prefix
    return [lm.ops.extend(lm, group.suffix_ids[q.id], lm.ops.branch(cache), start) for q in group.questions]


@torch.inference_mode()
def batch(lm, clip, prefix) -> list[torch.Tensor]:
    group, cache, start = prefix
    cache = copy.deepcopy(cache)  # reorder_cache repeats it in place
    suffixes = [group.suffix_ids[q.id][0] for q in group.questions]
    width = max(len(s) for s in suffixes)
    ids = torch.full((len(suffixes), width), lm.tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros(len(suffixes), int(cache.get_seq_length()) + width, dtype=torch.long)
    mask[:, : int(cache.get_seq_length())] = 1
    for i, s in enumerate(suffixes):
        ids[i, : len(s)] = s
        mask[i, int(cache.get_seq_length()): int(cache.get_seq_length()) + len(s)] = 1
    cache.reorder_cache(torch.zeros(len(suffixes), dtype=torch.long))
    pos = (start + torch.arange(width)).view(1, 1, -1).expand(3, len(suffixes), -1)
    out = lm.model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=True, **{lm.cache_kwarg: cache})
    return [out.logits[i, len(s) - 1].float() for i, s in enumerate(suffixes)]


@torch.inference_mode()
def plain(lm, clip, prefix=None) -> list[torch.Tensor]:
    from roadbuddy.families.decoding import new_cache

    (group,) = clip.groups
    return [lm.ops.prefill(lm, clip, group, None, new_cache(lm), suffix=group.suffix_ids[q.id])[0]
            for q in group.questions]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu_qwen35", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        lm, clip = build(Path(tmp), args.questions)
        paths = {"copies": copies, "batch": batch, "plain": plain}
        prefix = prefilled(lm, clip)
        reference = copies(lm, clip, prefix)
        agree = {}
        for name, fn in paths.items():  # every path answers alike before it is timed
            got = fn(lm, clip, prefix)
            agree[name] = max(float((a - b).abs().max()) for a, b in zip(got, reference))
        times = {name: [] for name in [*paths, "prefill"]}
        for _ in range(args.rounds):
            started = time.perf_counter()
            prefix = prefilled(lm, clip)
            times["prefill"].append(time.perf_counter() - started)
            for name, fn in paths.items():
                started = time.perf_counter()
                fn(lm, clip, prefix)
                times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(t) for name, t in times.items()}
    # a clip's time on each path: the prefill once, then its questions (plain prefills every question itself)
    clip_s = {"copies": medians["prefill"] + medians["copies"], "batch": medians["prefill"] + medians["batch"],
              "plain": medians["plain"]}
    (group,) = clip.groups
    result = {
        "command": "python -m bench.cpu_qwen35 " + " ".join(argv if argv is not None else sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"), "machine": f"{cpu_name()}, {os.cpu_count()} cores",
        "python": platform.python_version(), "torch": torch.__version__,
        "transformers": __import__("transformers").__version__, "threads": args.threads,
        "questions": args.questions, "prefix_tokens": int(group.prefix_ids.shape[1]),
        "suffix_tokens": [int(group.suffix_ids[q.id].shape[1]) for q in group.questions],
        "median_s": {k: round(v, 4) for k, v in medians.items()},
        "questions_ratio_to_copies": {k: round(medians[k] / medians["copies"], 3) for k in ("copies", "batch")},
        "clip_s": {k: round(v, 4) for k, v in clip_s.items()},
        "clip_ratio_to_copies": {k: round(v / clip_s["copies"], 3) for k, v in clip_s.items()},
        "max_logit_difference_to_copies": agree,
    }
    lines = [f"| {k} | {medians['prefill'] if k != 'plain' else 0:.4f} | "
             f"{medians[k] if k != 'plain' else medians['plain']:.4f} | {clip_s[k]:.4f} | "
             f"{result['clip_ratio_to_copies'][k]:.3f} | {agree[k]:.1e} |" for k in paths]
    table = ("| path | prefix prefill s | questions s | clip s | clip ratio to copies | max logit diff |\n"
             "| --- | --- | --- | --- | --- | --- |\n" + "\n".join(lines))
    print(json.dumps(result, indent=2))
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"cpu-{result['date']}-qwen35"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        stem.with_suffix(".md").write_text(f"# Qwen3.5 shared prefix on the CPU\n\n`{result['command']}`, "
                                           f"{result['date']}, {result['machine']}, torch {result['torch']}, "
                                           f"transformers {result['transformers']}, {args.threads} thread(s); "
                                           f"prefix {result['prefix_tokens']} tokens, {args.questions} questions "
                                           f"of {result['suffix_tokens']} tokens.\n\n{table}\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
