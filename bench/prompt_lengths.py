"""Prompt lengths with the real Qwen tokenizer, over a question file (train.json by default).

    python -m bench.prompt_lengths [--train-json challenge-data/train.json] [--family internvl]
                                   [--frames 32] [--tiles 1] [--simple-prompts] [--json]

Why: the VRAM estimate and the prefill benches need the text tokens a real prompt carries, and
the test BPE (roadbuddy.testing) gets them wrong. InternVL3.5, Qwen3-VL and Qwen2.5-VL share the
Qwen2/Qwen3 vocabulary. The token ids are built by the family's own functions (InternVL:
families/internvl/inputs.py's prefix_ids and question_ids; Qwen: families/qwen_vl/inputs.py's chat
texts, from the published chat template, and question_ids), so the figures follow the prompts when they
change. A Qwen prefix's text is its chat text plus, per frame pair, what the processor writes around
the video tokens (Qwen3-VL: `<t seconds>` and the vision start/end tokens; Qwen2.5-VL: start/end once).
Without --simple-prompts both the detailed and the simple figures are printed.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from roadbuddy.data import questions as data
from roadbuddy.testing.qwen_vocab import QwenVocabUnavailable, qwen_tokenizer

DEFAULT_TRAIN = Path(__file__).resolve().parents[1] / "challenge-data" / "train.json"
TOKENS_PER_TILE = 256  # InternVL3.5: 448 px tiles, 14 px patches, pixel shuffle 0.5


def _p95(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest-rank


def measure(tokenizer, questions, *, frames: int = 32, tiles: int = 1, simple: bool = False) -> dict:
    """Token counts of the shared prefix and of every question's suffix, built by the pipeline's own functions."""
    from roadbuddy.config import RunConfig
    from roadbuddy.families.internvl.inputs import prefix_ids, question_ids

    cfg = RunConfig(simple_prompts=simple)
    prefix_len = prefix_ids(tokenizer, [tiles] * frames, TOKENS_PER_TILE, cfg).shape[1]
    visual = frames * tiles * TOKENS_PER_TILE
    suffixes = [question_ids(tokenizer, q, cfg).shape[1] for q in questions]
    return {
        "simple_prompts": simple, "frames": frames, "tiles_per_frame": tiles, "questions": len(suffixes),
        "prefix_tokens": prefix_len, "prefix_visual_tokens": visual, "prefix_text_tokens": prefix_len - visual,
        "suffix_mean": round(statistics.fmean(suffixes), 1), "suffix_p95": _p95(suffixes),
        "suffix_max": max(suffixes),
        # the longest prompt the file can make: what a VRAM estimate must plan for
        "longest_prompt_text_tokens": prefix_len - visual + max(suffixes),
    }


def measure_qwen(tokenizer, questions, family: str, *, frames: int = 32, simple: bool = False) -> dict:
    """The same figures for a Qwen family: the chat template's text around the question and the processor's text
    around the video (timestamps of 30 s clips' pairs for Qwen3-VL), measured with the real vocabulary."""
    from types import SimpleNamespace

    from roadbuddy.config import RunConfig
    from roadbuddy.families import registry
    from roadbuddy.families.qwen_vl import inputs
    from roadbuddy.testing.qwen_checkpoints import CHAT_TEMPLATES

    tokenizer.chat_template = CHAT_TEMPLATES[family]
    ops = registry.ops(family)
    spec = inputs.VideoSpec(ops, tokenizer, SimpleNamespace(apply_chat_template=tokenizer.apply_chat_template))
    cfg = RunConfig(simple_prompts=simple)
    before, _ = inputs.chat_texts(spec, cfg)
    pairs = math.ceil(frames / 2)
    if ops.frames_wrapped:  # Qwen3-VL: the bare video token becomes one "<t seconds><|vision_start|>...<|vision_end|>" a pair
        seconds = [30 * (2 * i + 1) / (2 * pairs) for i in range(pairs)]
        video = "".join(f"<{t:.1f} seconds><|vision_start|><|vision_end|>" for t in seconds)
    else:
        video = "<|vision_start|><|vision_end|>"
    marker = "<|video_pad|>" if ops.frames_wrapped else "<|vision_start|><|video_pad|><|vision_end|>"
    prefix_text = len(tokenizer(before.replace(marker, video), add_special_tokens=False).input_ids)
    suffixes = [inputs.question_ids(spec, q, cfg).shape[1] for q in questions]
    return {
        "family": family, "simple_prompts": simple, "frames": frames, "tiles_per_frame": 1, "questions": len(suffixes),
        "prefix_tokens": prefix_text, "prefix_visual_tokens": 0, "prefix_text_tokens": prefix_text,
        "suffix_mean": round(statistics.fmean(suffixes), 1), "suffix_p95": _p95(suffixes), "suffix_max": max(suffixes),
        "longest_prompt_text_tokens": prefix_text + max(suffixes),
    }


def describe(m: dict) -> str:
    kind = "simple" if m["simple_prompts"] else "detailed"
    family = m.get("family", "internvl")
    return (f"{family}, {kind} prompts, {m['frames']} frames x {m['tiles_per_frame']} tile(s), {m['questions']} questions: "
            f"prefix {m['prefix_tokens']} tokens = {m['prefix_visual_tokens']} visual + "
            f"{m['prefix_text_tokens']} text; question suffix mean {m['suffix_mean']}, p95 {m['suffix_p95']}, "
            f"max {m['suffix_max']}; longest prompt's text {m['longest_prompt_text_tokens']} tokens")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prompt_lengths", description=__doc__.splitlines()[0])
    parser.add_argument("--train-json", type=Path, default=DEFAULT_TRAIN, help="question file (default: %(default)s)")
    parser.add_argument("--family", choices=("internvl", "qwen3_vl", "qwen2_5_vl"), default="internvl",
                        help="whose prompt format (default: %(default)s); Qwen prefixes count text only")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--tiles", type=int, default=1, help="tiles per frame (default 1)")
    parser.add_argument("--simple-prompts", action="store_true", help="only the --simple-prompts figures")
    parser.add_argument("--json", action="store_true", help="write the figures as JSON to stdout")
    parser.add_argument("--cache-dir", type=Path, default=None, help="qwen_vocab cache folder")
    args = parser.parse_args(argv)
    try:
        tokenizer = qwen_tokenizer(args.cache_dir)
        questions = data.load_questions(args.train_json)
    except (QwenVocabUnavailable, data.QuestionFileError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kinds = [True] if args.simple_prompts else [False, True]
    if args.family == "internvl":
        results = [measure(tokenizer, questions, frames=args.frames, tiles=args.tiles, simple=s) for s in kinds]
    else:
        results = [measure_qwen(tokenizer, questions, args.family, frames=args.frames, simple=s) for s in kinds]
    if args.json:
        json.dump({"file": str(args.train_json), "results": results}, sys.stdout, indent=2)
        print()
    else:
        for m in results:
            print(describe(m))
    return 0


if __name__ == "__main__":
    sys.exit(main())
