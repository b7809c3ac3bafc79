"""roadbuddy-predict: parse flags into a RunConfig and run the pipeline.

Exit codes: 0 done; 1 unexpected failure (or --strict with unreadable videos);
2 bad input or usage; 130 interrupted (answers so far are kept; rerun to resume).
"""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import tempfile
from pathlib import Path

from roadbuddy.config import DEFAULT_MODEL, MAX_FRAMES_LIMIT, ConfigError, RunConfig
from roadbuddy.distributed import Shard

# A full disk, a quota or a file-size limit: the run cannot go on, but what is on disk stands.
DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}

EPILOG = """\
examples:
  roadbuddy-predict --test-json /data/public_test/public_test.json --output out/submission.csv
  roadbuddy-predict --test-json /data/private_test.json --output /result/submission.csv --load-in-4bit
  roadbuddy-predict --demo          # tiny model + generated clips, no downloads

Answers are appended to predictions.jsonl next to the CSV as they are made;
rerunning the same command resumes where it stopped.
exit codes: 0 done, 1 unexpected failure (or --strict with failed videos),
2 bad input or usage, 130 interrupted.
"""


def build_parser() -> argparse.ArgumentParser:
    d = RunConfig()
    p = argparse.ArgumentParser(
        prog="roadbuddy-predict",
        description="Answer RoadBuddy multiple-choice questions about dashcam videos with InternVL3.5 "
                    "and write submission.csv (id,answer) and time_submission.csv (id,answer,time).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = p.add_argument_group("input and output")
    io.add_argument("--test-json", type=Path, help="question file (RoadBuddy JSON: {'data': [...]})")
    io.add_argument("--data-dir", type=Path, default=None,
                    help="dataset root that video_path is relative to (default: tried in order: the JSON's "
                         "folder, then its parent; covers both the train/public and the private layout)")
    io.add_argument("--output", type=Path, default=d.output,
                    help=f"submission CSV to write; predictions.jsonl, run.json and time_submission.csv go "
                         f"beside it (default: {d.output})")
    io.add_argument("--limit", type=int, default=None, help="answer only the first N questions (smoke run)")
    io.add_argument("--strict", action="store_true",
                    help="exit 1 when any video could not be read (its questions still get the prior answer)")
    io.add_argument("--demo", action="store_true",
                    help="run the whole pipeline on a generated synthetic dataset with a tiny random-weight "
                         "model (no downloads; answers are random, the point is to see it work)")

    m = p.add_argument_group("model")
    m.add_argument("--model", default=d.model,
                   help=f"hub id or local path of a native InternVL checkpoint (default: {DEFAULT_MODEL}); "
                        "original-format ids such as OpenGVLab/InternVL3_5-4B map to their -HF twin")
    m.add_argument("--device", default=d.device, help="auto (CUDA if available), cpu, cuda, cuda:N (default: auto)")
    q = m.add_mutually_exclusive_group()
    q.add_argument("--load-in-8bit", action="store_true", help="8-bit LLM.int8 language model (bitsandbytes, CUDA)")
    q.add_argument("--load-in-4bit", action="store_true", help="4-bit NF4 language model (bitsandbytes, CUDA)")
    m.add_argument("--no-flash-attn", action="store_true",
                   help="use PyTorch SDPA even when flash-attn is installed (default: flash_attention_2 "
                        "when flash-attn imports and CUDA is present, else SDPA)")

    f = p.add_argument_group("frames and tiles")
    f.add_argument("--min-frames", type=int, default=d.min_frames, help=f"fewest frames per clip (default: {d.min_frames})")
    f.add_argument("--max-frames", type=int, default=d.max_frames,
                   help=f"most frames per clip, at most {MAX_FRAMES_LIMIT} (default: {d.max_frames})")
    f.add_argument("--frames-per-second", type=float, default=d.frames_per_second,
                   help="adaptive rate: a clip gets duration x this many frames, within [min, max] "
                        f"(default: {d.frames_per_second})")
    f.add_argument("--max-visual-tokens", type=int, default=d.max_visual_tokens,
                   help="cap on frames x tiles x tokens per tile, which bounds KV cache and prefill memory; "
                        f"wins over --min-frames (default: {d.max_visual_tokens}, fits a 12 GB budget in bf16)")
    f.add_argument("--max-num", type=int, default=d.max_num,
                   help=f"tiles per frame for dynamic tiling, plus a thumbnail when >1 (default: {d.max_num})")
    f.add_argument("--no-support-frames", action="store_true",
                   help="ignore support_frames timestamps (train files) and sample uniformly")

    a = p.add_argument_group("prompts and answers")
    a.add_argument("--simple-prompts", action="store_true", help="short prompt template instead of the detailed one")
    a.add_argument("--answer-mode", choices=["score", "generate"], default=d.answer_mode,
                   help="score: one forward pass, argmax over the valid letters' logits (default); generate: "
                        "greedy text, parsed, falling back to the score answer when unparseable (recorded)")
    a.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens,
                   help=f"generate mode's token budget (default: {d.max_new_tokens})")

    s = p.add_argument_group("speed and diagnostics")
    s.add_argument("--no-share-prefix", action="store_true",
                   help="plain path: every question re-encodes its frames and prefills the whole prompt "
                        "(default: a clip's frames are encoded and prefilled once for all its questions)")
    s.add_argument("--no-batch-questions", action="store_true",
                   help="score mode on the shared prefix: one forward pass per question (default: a clip's "
                        "questions go through together, each seeing only the frames and its own tokens)")
    s.add_argument("--prefetch", type=int, default=d.prefetch,
                   help=f"clips decoded ahead on a worker thread, 0 = none (default: {d.prefetch})")
    s.add_argument("--sample-timeout", type=float, default=None, metavar="SECONDS",
                   help="keep each question under this many seconds by giving clips fewer frames; the cost "
                        "per frame is learned from the clips answered so far, so the first clip calibrates "
                        "it (default: off)")
    s.add_argument("--embeddings-on-gpu", action="store_true",
                   help="keep the input embedding table on the GPU (default on CUDA: in host memory, where "
                        "its lookup runs; saves 0.73 GiB of VRAM for the 4B at no measurable cost)")
    s.add_argument("--no-decoder-scaling", action="store_true",
                   help="read full-size frames (decord first) and resize them with PIL bicubic exactly as the "
                        "model card does (default with --max-num 1: PyAV decodes and scales frames to the tile "
                        "size with swscale's bicubic, 1.5-6x faster on 1440p clips, pixels within about 1 level "
                        "of 255 on average; see bench/README.md)")
    s.add_argument("--decode-threads", type=int, default=d.decode_threads,
                   help="decoder threads, 0 = the decoder's default (default: 0)")
    s.add_argument("--seed", type=int, default=d.seed, help=f"torch seed (answers are greedy; default: {d.seed})")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--verbose", action="store_true", help="debug logging and full tracebacks")
    return p


def config_from_args(args: argparse.Namespace, shard: Shard = Shard()) -> RunConfig:
    return RunConfig(
        test_json=args.test_json, data_dir=args.data_dir, output=args.output, limit=args.limit,
        model=args.model, device=args.device,
        quantization="8bit" if args.load_in_8bit else "4bit" if args.load_in_4bit else None,
        flash_attn=not args.no_flash_attn, min_frames=args.min_frames, max_frames=args.max_frames,
        frames_per_second=args.frames_per_second, max_visual_tokens=args.max_visual_tokens,
        support_frames=not args.no_support_frames, max_num=args.max_num, simple_prompts=args.simple_prompts,
        answer_mode=args.answer_mode, max_new_tokens=args.max_new_tokens, share_prefix=not args.no_share_prefix,
        batch_questions=not args.no_batch_questions,
        prefetch=args.prefetch, sample_timeout=args.sample_timeout, decode_threads=args.decode_threads,
        decoder_scaling=not args.no_decoder_scaling, embeddings_on_cpu=not args.embeddings_on_gpu,
        seed=args.seed, strict=args.strict,
        verbose=args.verbose, progress=not args.no_progress,
        rank=shard.rank, world_size=shard.world_size, local_rank=shard.local_rank,
    )


def _demo_config(cfg: RunConfig, say) -> RunConfig:
    from roadbuddy.testing import write_synthetic_dataset, write_tiny_checkpoint

    root = Path(tempfile.mkdtemp(prefix="roadbuddy-demo-"))
    say(f"demo: writing a tiny random-weight model and a synthetic dataset under {root}")
    model = write_tiny_checkpoint(root / "tiny-model")
    questions = write_synthetic_dataset(root / "data")
    output = cfg.output if cfg.output != RunConfig().output else root / "output" / "submission.csv"
    return cfg.replace(model=str(model), test_json=questions, data_dir=None, output=output, device="cpu")


def main(argv: list[str] | None = None) -> int:
    from roadbuddy.data import QuestionFileError
    from roadbuddy.model import ModelLoadError
    from roadbuddy.output import OutputError

    parser = build_parser()
    args = parser.parse_args(argv)
    shard = Shard.from_env(os.environ)  # torchrun sets RANK, WORLD_SIZE, LOCAL_RANK
    # Clips differ in frame count, so tensor sizes vary from clip to clip; expandable segments keep the
    # CUDA caching allocator from fragmenting into reserved-but-unused blocks (bench: +0.5 GiB without).
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    rank_tag = f"[rank {shard.rank}] " if shard.distributed else ""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format=f"{rank_tag}%(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # bitsandbytes warns once per 8-bit matmul call
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

    def say(msg: str) -> None:
        print(f"{rank_tag}{msg}", file=sys.stderr, flush=True)

    if not args.demo and args.test_json is None:
        parser.error("--test-json is required (or --demo)")
    try:
        cfg = config_from_args(args, shard)
        if args.demo:
            cfg = _demo_config(cfg, say)
        from roadbuddy.pipeline import run

        summary = run(cfg, say=say)
    except KeyboardInterrupt:
        say("interrupted: every answer so far is saved in predictions.jsonl; run the same command again to resume")
        return 130
    except (QuestionFileError, OutputError, ModelLoadError, ConfigError) as exc:
        if args.verbose:
            raise
        say(f"error: {exc}")
        return 2
    except Exception as exc:  # one sentence, not a traceback, unless --verbose
        if args.verbose:
            raise
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            say(f"error: cannot write the output ({exc.strerror}); every answer finished so far is saved in "
                "predictions.jsonl: free some space and run the same command again to resume")
            return 1
        say(f"error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
            "(answers so far are saved; rerun with --verbose for the traceback)")
        return 1
    for line in summary.lines():
        say(line)
    if summary.unexpected:
        say(f"{summary.unexpected} clips failed with an unexpected error (see above); their questions got the "
            "prior answer. Rerun with --verbose for the tracebacks.")
        return 1
    if cfg.strict and summary.errors:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
