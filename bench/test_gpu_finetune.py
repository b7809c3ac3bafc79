"""Fine-tuning on a GPU: `pytest -m gpu bench/test_gpu_finetune.py` (or bench/run_gpu.sh finetune).

Writes bench/results/<date>-<gpu>-finetune.json and .md, then asserts bench/budgets.toml's
[finetune_vram_gib]. Skips with a reason where CUDA or NVML is missing. The same code runs on the CPU
with the tiny model in bench/test_gpu_harness.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib

pytestmark = pytest.mark.gpu
HERE = Path(__file__).parent
BUDGETS = tomllib.loads((HERE / "budgets.toml").read_text())["finetune_vram_gib"]


@pytest.fixture(scope="module")
def results(request, tmp_path_factory):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: fine-tuning's GPU figures need one (see bench/run_gpu.sh finetune)")
    pytest.importorskip("pynvml", reason="nvidia-ml-py is needed for NVML peaks")
    import importlib.util
    import os

    from bench import gpu, gpu_finetune
    from roadbuddy.predict.memory import NvmlPeakSampler

    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    sampler = NvmlPeakSampler()
    opt = request.config.getoption
    data_dir = Path(opt("--bench-data") or tmp_path_factory.mktemp("bench-data"))
    bench_json = data_dir / "bench.json" if (data_dir / "bench.json").is_file() else gpu.write_bench_dataset(data_dir)
    work = tmp_path_factory.mktemp("finetune-work")
    model = Path(opt("--bench-model")) if opt("--bench-model") else gpu.build_random_checkpoint(work / "random-4b")
    settings = [s for s in gpu_finetune.SETTINGS
                if s.quantization is None or importlib.util.find_spec("bitsandbytes") is not None]
    try:
        doc = gpu_finetune.sweep(model, bench_json, work, sampler, settings=settings)
    finally:
        sampler.close()
    outs = [HERE / "results"] + ([Path(opt("--bench-out"))] if opt("--bench-out") else [])
    stem = f"{gpu.results_stem({**doc, 'rows': []})}-finetune"
    for out in outs:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
        (out / f"{stem}.md").write_text(gpu_finetune.markdown_table(doc))
    print("\n" + gpu_finetune.markdown_table(doc))
    return doc


def test_every_setting_trained(results):
    for row in results["rows"]:
        assert "error" not in row, f"{row['label']}: {row.get('error')}"
        assert row["questions_per_s"] > 0 and row["last_loss"] == row["last_loss"], row["label"]  # not NaN


@pytest.mark.parametrize("label,ceiling", sorted(BUDGETS.items()))
def test_finetune_vram_budget(results, label, ceiling):
    rows = [r for r in results["rows"] if r["label"] == label]
    if not rows:
        pytest.skip(f"{label} was not measured (bitsandbytes missing?)")
    assert rows[0]["nvml_peak_gib"] <= ceiling, f"{label}: NVML peak {rows[0]['nvml_peak_gib']:.2f} GiB > {ceiling}"
