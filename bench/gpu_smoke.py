"""A one-minute check of the CUDA paths before spending GPU time on the sweep.

    python bench/gpu_smoke.py OUT_DIR      (run by `bench/run_gpu.sh smoke`)

Runs the real CLI on the carried tiny checkpoint and synthetic dataset in bf16,
8-bit and 4-bit on CUDA, decodes a 2560x1440 clip with decord, and checks the
NVML sampler. Prints one line per check and exits non-zero if any failed.
"""
from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CARRY = ROOT / ".gpu"


def main(out: Path) -> int:
    import torch

    from roadbuddy.cli import main as predict
    from roadbuddy.memory import NvmlPeakSampler

    failures = 0
    sampler = NvmlPeakSampler()

    def check(name, fn):
        nonlocal failures
        t = time.perf_counter()
        try:
            detail = fn()
            print(f"OK   {name} ({time.perf_counter() - t:.1f} s) {detail or ''}", flush=True)
        except BaseException:
            failures += 1
            print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)

    data = CARRY / "synth-data" / "train" / "train.json"
    for flag in ([], ["--load-in-8bit"], ["--load-in-4bit"]):
        name = flag[0] if flag else "bf16"

        def cli(flag=flag, name=name):
            target = out / f"smoke-{name}" / "submission.csv"
            rc = predict(["--model", str(CARRY / "tiny"), "--test-json", str(data), "--output", str(target),
                          "--no-progress", "--device", "cuda"] + flag)
            assert rc == 0, f"exit {rc}"
            rows = target.read_text().splitlines()
            recs = [json.loads(x) for x in (target.parent / "predictions.jsonl").read_text().splitlines()]
            assert all(r["probs"] == r["probs"] for r in recs)
            return f"{len(rows) - 1} rows, first {rows[1]}"

        check(f"cli {name}", cli)

    def generate():
        target = out / "smoke-generate" / "submission.csv"
        rc = predict(["--model", str(CARRY / "tiny"), "--test-json", str(data), "--output", str(target),
                      "--no-progress", "--device", "cuda", "--answer-mode", "generate", "--max-new-tokens", "4"])
        assert rc == 0, f"exit {rc}"

    check("cli generate", generate)

    def decode():
        from roadbuddy.video import open_video

        clip = next((CARRY / "bench-data" / "videos").glob("*.mp4"))
        with open_video(clip) as reader:
            t = time.perf_counter()
            frames = reader.get(list(range(0, reader.info.num_frames, max(1, reader.info.num_frames // 32))))
            return f"{reader.info} {frames.shape} in {time.perf_counter() - t:.2f} s"

    check("decode 1440p", decode)

    def nvml():
        x = torch.empty(1024 ** 3, dtype=torch.uint8, device="cuda")
        torch.cuda.synchronize()
        time.sleep(0.05)
        sampler.sample()
        del x
        return f"{sampler.name} driver {sampler.driver}: peak {sampler.peak / 2**30:.2f} GiB " \
               f"(process {sampler.process_peak / 2**30:.2f}, device {sampler.device_peak / 2**30:.2f})"

    check("nvml sampler", nvml)
    sampler.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results")))
