#!/usr/bin/env bash
# The whole GPU sweep as one prepared command, for a machine with no registry:
#   bench/run_gpu.sh [smoke|sweep|issue7|issue14|finetune|families|selector] [extra args]
# selector: the frame selector's step per clip (scan decode + scores) and its peak memory, default's shape.
# families: Qwen3-VL-4B/8B and Qwen2.5-VL-7B random weights, bf16 and 4-bit, 16 and 32 frames (bench/gpu_families.py;
# needs a torchvision matching torch; pass --models qwen3-vl-4b to fit a short device lease).
# finetune: roadbuddy-finetune steps, LoRA bf16 and QLoRA 4-bit at 16 and 32 frames (bench/gpu_finetune.py).
# issue14: the smoke checks (--fused-attention among them), the per-step profile of one clip against its
# arithmetic floor for both attention paths (bench/gpu_profile.py), and the bf16 sweep with its -fused rows.
# issue7: bench/gpu_smoke.py (the CUDA paths, about a minute), bench/gpu_overlap.py, the CPU benches (python -m bench.cpu datapath/model) on the
# machine's quiet cores, and the bf16 rows of the sweep.
# Carried packages: .gpu/site (an unpacked, slimmed bitsandbytes), .gpu/*.whl (decord) and
# .gpu/qwen-vocab/ (the dashscope wheel), prepared with pip download on a machine with pip (bench/README.md).
# Results: bench/results/<date>-<gpu>.{json,md}, and $OUT when set.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=${1:-sweep}; shift || true
out=${OUT:-bench/results}
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -d .gpu/site ]; then export PYTHONPATH="$PWD/.gpu/site:$PYTHONPATH"; fi
if ls .gpu/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/*.whl \
    && export PYTHONPATH="/tmp/site:$PYTHONPATH"
fi
# the real Qwen vocabulary for the random-weight 4B: the dashscope wheel carried in .gpu/qwen-vocab/ (roadbuddy/testing/qwen_vocab.py)
if [ -d .gpu/qwen-vocab ]; then export ROADBUDDY_QWEN_VOCAB="$PWD/.gpu/qwen-vocab"; fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}
python3 - <<'PY'
import importlib, torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
print("transformers", transformers.__version__)
for name in ("bitsandbytes", "decord", "av", "pynvml", "flash_attn"):
    try:
        m = importlib.import_module(name); print(name, getattr(m, "__version__", "ok"))
    except Exception as exc:
        print(name, "MISSING", type(exc).__name__, str(exc)[:120])
PY
if [ "$mode" = issue7 ]; then  # throughput figures: GPU overlap, CPU data path and model side, bf16 sweep
  rc=0
  python3 bench/gpu_smoke.py "$out" 2>&1 | tee "$out/smoke.log"; rc=$((rc | PIPESTATUS[0]))
  python3 bench/gpu_overlap.py "$out" 2>&1 | tee "$out/gpu-overlap.log"; rc=$((rc | PIPESTATUS[0]))
  python3 -m bench.cpu datapath --rounds 3 --decode-threads 1 --out "$out" 2>&1 | tee "$out/cpu-datapath.log"; rc=$((rc | PIPESTATUS[0]))
  python3 -m bench.cpu model --rounds 3 --model-threads 1,2 --out "$out" 2>&1 | tee "$out/cpu-model.log"; rc=$((rc | PIPESTATUS[0]))
  python3 -m pytest -m gpu bench/test_gpu.py -p no:cacheprovider -q -s -rA --bench-out "$out" \
    --bench-data .gpu/bench-data --bench-quant bf16 "$@" 2>&1 | tee "$out/bench.log"; rc=$((rc | PIPESTATUS[0]))
  exit "$rc"
fi
if [ "$mode" = issue14 ]; then
  rc=0
  python3 bench/gpu_smoke.py "$out" 2>&1 | tee "$out/smoke.log"; rc=$((rc | PIPESTATUS[0]))
  python3 bench/gpu_profile.py "$out/profile" --data .gpu/bench-data 2>&1 | tee "$out/profile.log"; rc=$((rc | PIPESTATUS[0]))
  python3 -m pytest -m gpu bench/test_gpu.py -p no:cacheprovider -q -s -rA --bench-out "$out" \
    --bench-data .gpu/bench-data --bench-quant bf16 "$@" 2>&1 | tee "$out/bench.log"; rc=$((rc | PIPESTATUS[0]))
  exit "$rc"
fi
if [ "$mode" = selector ]; then  # the frame selector's step per clip and its memory (bench/selector_step.py)
  python3 -m bench.selector_step --device cuda --rounds 3 --out "$out" 2>&1 | tee "$out/selector.log"
  exit "${PIPESTATUS[0]}"
fi
if [ "$mode" = finetune ]; then
  python3 -m pytest -m gpu bench/test_gpu_finetune.py -p no:cacheprovider -q -s -rA --bench-out "$out" \
    --bench-data .gpu/bench-data "$@" 2>&1 | tee "$out/finetune.log"
  exit "${PIPESTATUS[0]}"
fi
if [ "$mode" = families ]; then
  python3 bench/gpu_families.py "$out" --data .gpu/bench-data "$@" 2>&1 | tee "$out/families.log"
  exit "${PIPESTATUS[0]}"
fi
if [ "$mode" = smoke ]; then
  python3 bench/gpu_smoke.py "$out" "$@" 2>&1 | tee "$out/smoke.log"
  exit "${PIPESTATUS[0]}"
fi
python3 -m pytest -m gpu bench/test_gpu.py -p no:cacheprovider -q -s -rA \
  --bench-out "$out" --bench-data .gpu/bench-data "$@" 2>&1 | tee "$out/bench.log"
exit "${PIPESTATUS[0]}"
