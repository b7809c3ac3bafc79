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


def normalise_matches_cpu(device: str) -> str:
    """tiles.normalize_tiles on `device` equals the CPU's (the card's values) bit for bit, every level."""
    import torch

    from roadbuddy.families.internvl import tiles

    levels = torch.arange(256, dtype=torch.uint8)
    rows, cols = torch.meshgrid(levels, levels, indexing="ij")
    x = torch.stack([rows, cols, 255 - rows])[None].contiguous()  # [1, 3, 256, 256]: each level in each channel
    on_device = tiles.normalize_tiles(x.to(device)).cpu()
    differ = int((on_device != tiles.normalize_tiles(x)).sum())
    assert differ == 0, f"{differ} of {x.numel()} values differ from the CPU's"
    return "bit for bit with the CPU"


def batched_matches_one_at_a_time(model: Path, data: Path, out: Path, device: str, tol: float) -> str:
    """The CLI with the clip's questions batched (default) and with --no-batch-questions: the same letter
    probabilities within `tol`, and the same answers wherever the top two letters are further apart."""
    return same_answers_with(["--no-batch-questions"], model, data, out, device, tol)


def same_answers_with(flags_: list[str], model: Path, data: Path, out: Path, device: str, tol: float) -> str:
    """The CLI by default and with `flags_` (--no-batch-questions, --fused-attention): the same letter
    probabilities within `tol`, and the same answers wherever the top two letters are further apart."""
    from roadbuddy.predict.cli import main as predict

    runs = {}
    tag = "-".join(f.strip("-") for f in flags_)
    for name, flags in {"batched": [], "one": flags_}.items():
        name = name if name == "batched" else tag
        target = out / f"smoke-{name}" / "submission.csv"
        rc = predict(["--model", str(model), "--test-json", str(data), "--output", str(target), "--no-progress",
                      "--device", device, "--no-support-frames"] + flags)
        assert rc == 0, f"{name}: exit {rc}"
        runs["one" if name == tag else name] = {r["id"]: r for r in map(
            json.loads, (target.parent / "predictions.jsonl").read_text().splitlines())}
    assert runs["batched"].keys() == runs["one"].keys()
    worst = 0.0
    for qid, a in runs["batched"].items():
        b = runs["one"][qid]
        worst = max(worst, max(abs(a["probs"][k] - b["probs"][k]) for k in a["probs"]))
        top = sorted(a["probs"].values(), reverse=True)
        assert a["answer"] == b["answer"] or top[0] - top[1] <= tol, (qid, a["probs"], b["probs"])
    assert worst <= tol, f"letter probabilities differ by {worst:.2g} > {tol}"
    return f"{len(runs['batched'])} questions, largest probability difference {worst:.2g}"


def main(out: Path) -> int:
    import torch

    from roadbuddy.predict.cli import main as predict
    from roadbuddy.predict.memory import NvmlPeakSampler

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
    check("normalisation on cuda", lambda: normalise_matches_cpu("cuda"))
    check("batched questions on cuda (bf16)", lambda: batched_matches_one_at_a_time(
        CARRY / "tiny", data, out, "cuda", tol=2e-2))
    check("--fused-attention on cuda (bf16)", lambda: same_answers_with(
        ["--fused-attention"], CARRY / "tiny", data, out, "cuda", tol=2e-2))

    def decode():
        from roadbuddy.video.reader import open_video

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
