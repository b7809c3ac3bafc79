"""GPU sweep: `pytest -m gpu bench/` (or bench/run_gpu.sh on a lent machine).

Writes bench/results/<date>-<gpu>.json and .md, then asserts bench/budgets.toml.
Skips with a reason where CUDA or NVML is missing.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib

pytestmark = pytest.mark.gpu
HERE = Path(__file__).parent
BUDGETS = tomllib.loads((HERE / "budgets.toml").read_text())


@pytest.fixture(scope="module")
def results(request, tmp_path_factory):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU: the GPU sweep needs one (see bench/run_gpu.sh)")
    pytest.importorskip("pynvml", reason="nvidia-ml-py is needed for NVML peaks")
    import os

    from bench import gpu
    from roadbuddy.predict.memory import NvmlPeakSampler

    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # as roadbuddy-predict sets it

    sampler = NvmlPeakSampler()  # before CUDA is touched, so the device baseline excludes us
    opt = request.config.getoption
    data_dir = Path(opt("--bench-data") or tmp_path_factory.mktemp("bench-data"))
    data_json = data_dir / "bench.json" if (data_dir / "bench.json").is_file() else gpu.write_bench_dataset(data_dir)
    quants = [None if q == "bf16" else q for q in opt("--bench-quant").split(",")]  # in the order given
    if any(quants) and not _has_bitsandbytes():
        pytest.skip("bitsandbytes is not installed: pip install 'roadbuddy[quant]' or pass --bench-quant bf16")
    model = Path(opt("--bench-model")) if opt("--bench-model") else None
    outs = [HERE / "results"] + ([Path(opt("--bench-out"))] if opt("--bench-out") else [])

    def write(doc):
        stem = gpu.results_stem(doc)
        for out in outs:
            out.mkdir(parents=True, exist_ok=True)
            (out / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
            (out / f"{stem}.md").write_text(gpu.markdown_table(doc))

    try:
        adapter = Path(opt("--bench-adapter")) if opt("--bench-adapter") else None
        doc = gpu.sweep(model, data_json, tmp_path_factory.mktemp("bench-work"), sampler, quants=quants,
                        on_row=write, adapter=adapter)
    finally:
        sampler.close()
    write(doc)
    print("\n" + gpu.markdown_table(doc))
    return doc


def _has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def _row(doc, label):
    rows = [r for r in doc["rows"] if r["label"] == label]
    if not rows:
        pytest.skip(f"{label} was not in this sweep")
    return rows[0]


def test_every_configuration_answered(results):
    for row in results["rows"]:
        assert "error" not in row, f"{row['label']}: {row.get('error')}"
        assert row["errors"] == 0 and row["questions"] > 0, row["label"]
        assert row["nan_answers"] == 0, f"{row['label']} produced NaN letter probabilities"


@pytest.mark.parametrize("label,ceiling", sorted(BUDGETS["vram_gib"].items()))
def test_vram_budget(results, label, ceiling):
    row = _row(results, label)
    assert row["nvml_peak_gib"] <= ceiling, f"{label}: NVML peak {row['nvml_peak_gib']:.2f} GiB > {ceiling} GiB"


def test_latency_budget(results):
    limit = BUDGETS["latency"]["p95_seconds"]
    slow = [(r["label"], r["latency_p95_s"]) for r in results["rows"] if r.get("latency_p95_s", 0) > limit]
    assert not slow, f"p95 latency over {limit} s: {slow}"


def test_estimate_within_tolerance(results):
    tol = BUDGETS["estimate"]["max_relative_error"]
    off = [(r["label"], round(r["estimate_error"], 3)) for r in results["rows"]
           if r.get("estimate_error") is not None and abs(r["estimate_error"]) > tol]
    assert not off, f"VRAM estimate off by more than {tol:.0%}: {off}"
