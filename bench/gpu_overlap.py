"""Issue 7 on a GPU: decoding hidden behind the model (target 3) and the shared prefix beside the plain path.

    python bench/gpu_overlap.py OUT_DIR [--data DIR] [--model DIR] [--frames 32] [--rounds 2]

The 4B architecture with random bf16 weights (bench.gpu.build_random_checkpoint,
unless --model names a checkpoint) answers a dataset of at least 10 RoadBuddy-
shaped clips (2560x1440 30 fps H.264): the bench clips of --data, copied until
there are 10 when fewer. bench.cpu.measure_overlap times, interleaved:
the data path alone (prepare_clip for every clip), the model alone (answer_clip on
the prepared clips), and pipeline.run end to end with prefetch 2 and 0. On a GPU
the data path runs on CPU cores and the model on the GPU, so they do not compete.
Writes OUT_DIR/gpu-overlap-<date>-<gpu>.json and prints one line.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def ten_clip_dataset(source_json: Path, directory: Path, clips: int = 10) -> Path:
    """The bench clips, each copied as often as needed for `clips` clips, with their questions."""
    from roadbuddy.data.questions import load_questions

    located = {q.id: q.video_path for q in load_questions(source_json)}  # the pipeline's path rules
    by_video: dict[Path, list[dict]] = {}
    for item in json.loads(source_json.read_text(encoding="utf-8"))["data"]:
        by_video.setdefault(located[item["id"]], []).append(item)
    videos = sorted(by_video)
    out_items = []
    (directory / "videos").mkdir(parents=True, exist_ok=True)
    for c in range(clips):
        src = videos[c % len(videos)]
        rel = f"videos/clip_{c:02d}{src.suffix}"
        shutil.copyfile(src, directory / rel)
        for q in by_video[src]:
            out_items.append({**q, "id": f"{q['id']}_c{c:02d}", "video_path": rel})
    path = directory / "overlap.json"
    path.write_text(json.dumps({"__count__": len(out_items), "data": out_items}, ensure_ascii=False), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=ROOT / ".gpu" / "bench-data",
                        help="folder with bench.json and its clips (written by bench.gpu.write_bench_dataset if absent)")
    parser.add_argument("--model", type=Path, default=None, help="a checkpoint; default: random 4B weights")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--decode-threads", default="0",
                        help="comma-separated --decode-threads values to measure (0 = the pipeline's automatic rule)")
    args = parser.parse_args(argv)

    import torch

    from bench import gpu
    from roadbuddy.config import RunConfig
    from roadbuddy.families.internvl.model import load_model

    if not torch.cuda.is_available():
        print("no CUDA GPU: this measurement needs one", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="roadbuddy-gpu-overlap-"))
    source = args.data / "bench.json"
    if not source.is_file():
        source = gpu.write_bench_dataset(args.data)
    data = ten_clip_dataset(source, work / "data")
    model = args.model or gpu.build_random_checkpoint(work / "random-4b")
    lm = load_model(RunConfig(model=str(model), device="cuda"))
    for threads in (int(t) for t in args.decode_threads.split(",")):
        measure_one(args, lm, data, work / f"runs-{threads}", threads)
    return 0


def measure_one(args, lm, data, work: Path, threads: int) -> None:
    import torch

    from bench import cpu

    started = time.perf_counter()
    figures = cpu.measure_overlap(lm, data, work, rounds=args.rounds, frames_per_clip=args.frames,
                                  model_threads=None, decode_threads=threads, device="cuda")
    figures.update(decode_threads=threads, cores=os.cpu_count(), gpu=torch.cuda.get_device_name(0), torch=torch.__version__,
                   transformers=__import__("transformers").__version__, date=time.strftime("%Y-%m-%d %H:%M"),
                   weights="trained" if args.model else "random", rounds=args.rounds,
                   clips_note="10 clips: the 4 bench clips (2560x1440 30 fps, 6-12 s) copied to 10 files",
                   seconds=round(time.perf_counter() - started, 1))
    args.out.mkdir(parents=True, exist_ok=True)
    name = "".join(ch if ch.isalnum() else "-" for ch in figures["gpu"]).strip("-").lower()
    (args.out / f"gpu-overlap-{time.strftime('%Y-%m-%d')}-{name}-threads{threads}.json").write_text(
        json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures))
    bound = max(figures["data_s"], figures["model_s"])
    print(f"overlap: data {figures['data_s']:.2f} s, model {figures['model_s']:.2f} s, end to end prefetch 2 "
          f"{figures['e2e_prefetch2_s']:.2f} s = {figures['e2e_prefetch2_s'] / bound:.2f}x the larger "
          f"(prefetch 0: {figures['e2e_prefetch0_s'] / bound:.2f}x); answers equal: {figures['same_answers']}; "
          f"--decode-threads {threads}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
