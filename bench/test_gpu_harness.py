"""The GPU sweep's own code, run on the CPU with the tiny checkpoint and a stand-in sampler.

This proves the harness (settings, measurement rows, estimate error, tables)
works end to end; the numbers it produces here mean nothing and are not kept.
"""
from __future__ import annotations

import json

import pytest

from bench import gpu


class CountingSampler:
    """NVML stand-in: reports a fixed 'peak' so the row arithmetic can be checked."""

    name, driver = "CPU stand-in", "none"

    def __init__(self):
        self.process_peak = self.device_peak = 0
        self.resets = 0

    def reset(self):
        self.resets += 1
        self.process_peak = 2 * 1024 ** 3

    def sample(self):
        pass

    @property
    def peak(self):
        return self.process_peak


def test_sweep_rows_and_table(tiny_checkpoint, tmp_path):
    from roadbuddy.testing.checkpoints import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", clips=2, with_answers=False)
    sampler = CountingSampler()
    settings = [gpu.Setting("4f", 4), gpu.Setting("4f-6t", 4, max_num=6), gpu.Setting("adaptive", None)]
    doc = gpu.sweep(tiny_checkpoint, data, tmp_path / "work", sampler, quants=[None], settings=settings,
                    plain=gpu.Setting("4f-plain", 4, share_prefix=False),
                    extra=[gpu.Setting("4f-card", 4, decoder_scaling=False)], fused=[gpu.Setting("4f", 4)],
                    log=lambda _m: None)
    assert doc["weights"] == "trained"
    labels = [r["label"] for r in doc["rows"]]
    assert labels == ["bf16 4f", "bf16 4f-6t", "bf16 adaptive", "bf16 4f-plain", "bf16 4f-card", "bf16 4f-fused"]
    assert sampler.resets == len(labels) + 2  # plus the two warm-ups (the fused rows load their own model)
    answers = {r["setting"]: r for r in doc["rows"]}
    assert answers["4f-fused"]["questions"] == answers["4f"]["questions"]
    by = {r["setting"]: r for r in doc["rows"]}
    n = len(json.loads(data.read_text(encoding="utf-8"))["data"])
    for row in doc["rows"]:
        assert row["questions"] == n and row["errors"] == 0 and row["nan_answers"] == 0
        assert row["latency_p95_s"] >= row["latency_p50_s"] > 0
        assert row["estimate_error"] == (row["estimate_gib"] - 2.0) / 2.0
    # 4 frames of one tile each at 4 tokens per tile; up to 6 tiles means (2,1) + thumbnail on 16:9
    assert by["4f"]["visual_tokens_max"] == 4 * 4
    assert by["4f-6t"]["visual_tokens_max"] == 4 * 3 * 4
    table = gpu.markdown_table(doc)
    assert table.count("\n| bf16 |") == len(labels)
    assert gpu.results_stem(doc).endswith("cpu-stand-in")


@pytest.mark.parametrize("family", ["qwen3_vl", "qwen2_5_vl"])
def test_family_rows_load_through_the_familys_own_path(family, tmp_path):
    """bench/gpu_families.py on the CPU: a random-weight checkpoint written as the GPU run writes its real-size ones
    (here of the tiny config, with the tests' BPE), loaded by its family through the registry and measured as the
    InternVL rows are; 4-bit cannot load on the CPU and leaves one error row, not a crash. The video tokens of
    each row are what the VRAM estimate's spec (read from the folder's processor files) counts."""
    from bench import gpu_families
    from roadbuddy.config import RunConfig
    from roadbuddy.families import registry
    from roadbuddy.predict import memory
    from roadbuddy.testing.checkpoints import write_synthetic_dataset
    from roadbuddy.testing.qwen_checkpoints import build_qwen_tokenizer, tiny_qwen_config

    data = write_synthetic_dataset(tmp_path / "data", clips=2, with_answers=False)  # 128 x 72 clips
    tokenizer = build_qwen_tokenizer(family)
    path = gpu_families.build_random_family_checkpoint(tmp_path / "ckpt", tiny_qwen_config(family, tokenizer),
                                                       tokenizer, "test BPE", device="cpu")
    model = gpu_families.FamilyModel("tiny", None, settings=(gpu.Setting("4f", 4), gpu.Setting("2f", 2)))
    sampler = CountingSampler()
    doc = gpu_families.sweep_families(data, tmp_path / "work", sampler, models=[model], checkpoints={"tiny": path},
                                      log=lambda _m: None)
    assert [r["label"] for r in doc["rows"]] == ["bf16 tiny 4f", "bf16 tiny 2f", "4bit tiny"]
    assert "needs a CUDA GPU" in doc["rows"][-1]["error"]
    assert sampler.resets == 3  # the warm-up and two rows
    config = memory.load_config(str(path))
    spec = registry.ops(family).planning_spec(config, str(path))
    n = len(json.loads(data.read_text(encoding="utf-8"))["data"])
    for row, frames in zip(doc["rows"], (4, 2)):
        assert row["questions"] == n and row["errors"] == 0 and row["nan_answers"] == 0
        assert row["weights"] == "random" and row["model"] == "tiny"
        assert row["visual_tokens_max"] == spec.ops.visual_tokens(spec, 128, 72, frames, 0, RunConfig())
        assert row["estimate_error"] == (row["estimate_gib"] - 2.0) / 2.0
    assert gpu.markdown_table(doc).count("| bf16 | tiny ") == 2


def test_sweep_loads_an_adapter_as_predict_does(tiny_checkpoint, tmp_path):
    """--bench-adapter: the sweep's model is the base with the adapter merged, and the results say which."""
    from roadbuddy.testing.checkpoints import write_synthetic_dataset, write_tiny_adapter

    data = write_synthetic_dataset(tmp_path / "data", clips=1, with_answers=False)
    adapter = write_tiny_adapter(tiny_checkpoint, tmp_path / "adapter")
    probs = {}
    for name, extra in {"base": {}, "adapted": {"adapter": adapter}}.items():
        doc = gpu.sweep(tiny_checkpoint, data, tmp_path / name, CountingSampler(), quants=[None],
                        settings=[gpu.Setting("4f", 4)], plain=None, extra=(), fused=(), log=lambda _m: None, **extra)
        assert doc["adapter"] == (str(adapter) if extra else None) and doc["rows"][0]["errors"] == 0
        preds = (tmp_path / name / "bf16-4f" / "predictions.jsonl").read_text().splitlines()
        probs[name] = [json.loads(x)["probs"] for x in preds]
    assert probs["base"] != probs["adapted"]  # the adapter was applied


def test_finetune_bench_rows_on_the_cpu(tiny_checkpoint, tmp_path):
    """bench/gpu_finetune.py's sweep, on the CPU with the tiny checkpoint (bf16 rows only: 4-bit needs CUDA)."""
    from bench import gpu_finetune
    from roadbuddy.testing.checkpoints import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", clips=2, with_answers=False)
    settings = [gpu_finetune.TrainSetting("4f", None, 4), gpu_finetune.TrainSetting("4f-4bit", "4bit", 4)]
    doc = gpu_finetune.sweep(tiny_checkpoint, data, tmp_path / "work", CountingSampler(), settings=settings,
                             device="cpu", steps=2, log=lambda _m: None)
    (row,) = doc["rows"]  # the 4-bit row needs CUDA and is left out here
    assert row["label"] == "finetune bf16 4f" and row["questions"] == 8 and row["nvml_peak_gib"] == 2.0
    assert row["questions_per_s"] > 0 and row["trained_parameters"] > 0
    assert "| finetune bf16 4f | 2.00 |" in gpu_finetune.markdown_table(doc)


def test_profile_script_runs_on_the_cpu(tiny_checkpoint, tmp_path):
    """bench/gpu_profile.py (issue 14) with the tiny model on the CPU: every step timed for both attention
    paths, costs and floors computed, the table written."""
    from bench import gpu_profile
    from roadbuddy.testing.checkpoints import write_synthetic_dataset

    data = write_synthetic_dataset(tmp_path / "data", clips=3, with_answers=False)
    doc = gpu_profile.run(tiny_checkpoint, data, tmp_path / "out", frames=4, device="cpu", rounds=1, matmul_size=256)
    steps = [r["step"] for r in doc["rows"]]
    assert steps[:2] == ["vision", "embed + splice"] and steps[-1] == "questions (packed)"
    assert any(s.startswith("prefill 0-") for s in steps) and doc["paths"] == ["sdpa", "fused"]
    for r in doc["rows"]:
        assert r["sdpa_s"] > 0 and r["fused_s"] > 0
        if r["step"] != "embed + splice":
            assert r["tflop"] > 0 and r["floor_s"] > 0
    assert "| vision |" in (tmp_path / "out" / "profile.md").read_text()


def test_gpu_overlap_dataset_and_measurement_on_the_cpu(tiny_checkpoint, tmp_path):
    """bench/gpu_overlap.py's dataset (clips copied up to 10) and bench.cpu.measure_overlap as it calls them."""
    from bench import cpu, gpu_overlap
    from roadbuddy.config import RunConfig
    from roadbuddy.data.questions import group_by_video, load_questions
    from roadbuddy.families.internvl.model import load_model
    from roadbuddy.testing.checkpoints import write_synthetic_dataset

    source = write_synthetic_dataset(tmp_path / "src", clips=3)
    data = gpu_overlap.ten_clip_dataset(source, tmp_path / "ten")
    questions = load_questions(data)
    clips = group_by_video(questions)
    assert len(clips) == 10 and len({q.id for q in questions}) == len(questions)
    per_source = [len(qs) for _, qs in group_by_video(load_questions(source))]
    assert [len(qs) for _, qs in clips] == [per_source[c % 3] for c in range(10)]
    lm = load_model(RunConfig(model=str(tiny_checkpoint), device="cpu"))
    figures = cpu.measure_overlap(lm, data, tmp_path / "runs", rounds=1, frames_per_clip=4, model_threads=None,
                                  decode_threads=0, device="cpu")
    assert figures["clips"] == 10 and figures["questions"] == len(questions)
    assert figures["same_answers"] and figures["max_prob_diff"] <= 1e-6
    assert figures["data_s"] > 0 and figures["model_s"] > 0 and figures["e2e_prefetch2_s"] > 0


def test_smoke_checks_of_this_session_run_on_the_cpu(tiny_checkpoint, synthetic_dataset, tmp_path):
    """gpu_smoke's checks of the on-device normalisation and of batched questions, run here on the CPU so
    their code is known to work before GPU time is spent on them. The normalisation check compares the CPU
    with itself here (only the GPU run can disagree; tests/test_tiles.py checks the CPU against the card);
    the batched check compares two real runs and must hold to 1e-5."""
    from bench import gpu_smoke

    assert gpu_smoke.normalise_matches_cpu("cpu") == "bit for bit with the CPU"
    detail = gpu_smoke.batched_matches_one_at_a_time(tiny_checkpoint, synthetic_dataset, tmp_path, "cpu", tol=1e-5)
    assert detail.startswith(f"{len(json.loads(synthetic_dataset.read_text())['data'])} questions")
