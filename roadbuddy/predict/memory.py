"""The VRAM estimate printed before loading, and the GPU's free memory (NVML).

peak = weights + max(vision activations, KV cache + prefill activations) + overhead

- weights: parameters counted exactly on the meta device, bytes by quantization
  (bf16: 2 B each; 8-bit: 1 B for the language model's linear layers; 4-bit NF4
  with double quantization: about 0.52 B for them). The vision tower, projector,
  embeddings and lm_head stay bf16, as model.quantization_config leaves them;
  the input embedding table is not counted when it lives in host memory
  (RunConfig.embeddings_on_cpu, the default on CUDA).
- KV cache: 2 (K, V) x layers x kv_heads x head_dim x 2 B per token of prompt.
- activations: the larger of the vision tower over one batch of tiles and the
  language model's prefill over one chunk of the prompt (residual, attention
  projections and the MLP's three intermediates per token).
- prompt buffers: per prompt token, the embeddings looked up on the CPU and
  their GPU copy, the vision features scattered into them, and the allocator's
  per-clip slack: PROMPT_BUFFERS hidden-size bf16 vectors.
- overhead: the CUDA context and allocator slack that NVML sees beyond torch.

OVERHEAD_BYTES and PROMPT_BUFFERS were fitted on the NVML peaks of the H200
sweep in bench/results/2026-11-27-nvidia-h200.json (20 configurations, bf16,
8-bit and 4-bit, 2k to 17k prompt tokens: largest error 5.1%), and
tests/test_memory.py checks every committed result against this function.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

GiB = 1024 ** 3
CONFIG_DIR = Path(__file__).resolve().parents[1] / "families" / "configs"
OVERHEAD_BYTES = int(0.72 * GiB)  # CUDA context (0.67 GiB seen by NVML on an H200) and allocator slack
PROMPT_BUFFERS = 4  # hidden-size bf16 vectors per prompt token beside the KV cache (fitted, see below)
BYTES_PER_PARAM = {None: 2.0, "8bit": 1.0, "4bit": 0.5 + 1 / 64 + 4 / (64 * 256)}


SHIPPED = {"OpenGVLab/InternVL3_5-4B-HF": "internvl3_5-4b"}


def load_config(name_or_path: str):
    """The InternVLConfig for a shipped name (configs/*.json), a local checkpoint, or a cached hub id.

    Never touches the network: the estimate must not stall a run that has no
    network (the model load that follows reports that case itself).
    """
    from transformers import AutoConfig, InternVLConfig

    shipped = CONFIG_DIR / f"{SHIPPED.get(name_or_path, name_or_path)}.json"
    if shipped.is_file():
        return InternVLConfig(**json.loads(shipped.read_text()))
    return AutoConfig.from_pretrained(name_or_path, trust_remote_code=False, local_files_only=True)


def count_parameters(config) -> dict[str, int]:
    """Parameters by how quantization treats them: kept 16-bit vs the language model's quantizable linears."""
    import torch
    from transformers import InternVLForConditionalGeneration

    with torch.device("meta"):
        model = InternVLForConditionalGeneration(config)
    counts = {"vision": 0, "projector": 0, "lm_linear": 0, "lm_other": 0, "embed": 0}
    embed = model.get_input_embeddings()
    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if module is embed:
                counts["embed"] += p.numel()
            elif ".vision_tower." in f".{name}." or name.startswith("model.vision_tower"):
                counts["vision"] += p.numel()
            elif "multi_modal_projector" in name:
                counts["projector"] += p.numel()
            elif isinstance(module, torch.nn.Linear) and name != "lm_head" and pname == "weight":
                counts["lm_linear"] += p.numel()
            else:
                counts["lm_other"] += p.numel()
    return counts


def kv_bytes_per_token(config, dtype_bytes: int = 2) -> int:
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return 2 * text.num_hidden_layers * text.num_key_value_heads * head_dim * dtype_bytes


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    vision_activations: int
    prefill_activations: int
    prompt_buffers: int
    overhead: int

    @property
    def total(self) -> int:
        language = self.kv_cache + self.prefill_activations + self.prompt_buffers
        return self.weights + max(self.vision_activations, language) + self.overhead

    def describe(self) -> str:
        def g(x):
            return f"{x / GiB:.2f} GiB"

        return (f"VRAM estimate {g(self.total)}: weights {g(self.weights)}, KV cache {g(self.kv_cache)}, "
                f"prefill {g(self.prefill_activations)}, prompt buffers {g(self.prompt_buffers)}, "
                f"vision {g(self.vision_activations)}, overhead {g(self.overhead)}")


def estimate_vram(config, *, quantization: str | None, prompt_tokens: int, vision_batch: int,
                  prefill_chunk: int = 0, embeddings_on_gpu: bool = True,
                  counts: dict[str, int] | None = None) -> MemoryEstimate:
    """Peak GPU memory for one question with `prompt_tokens` tokens (visual + text) in bf16 compute,
    the prompt prefilled `prefill_chunk` tokens at a time (0: all at once)."""
    counts = counts or count_parameters(config)
    kept = counts["vision"] + counts["projector"] + counts["lm_other"] + counts["embed"] * embeddings_on_gpu
    weights = int(kept * 2 + counts["lm_linear"] * BYTES_PER_PARAM[quantization])

    text, vision = config.text_config, config.vision_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    qkv = (text.num_attention_heads + 2 * text.num_key_value_heads) * head_dim
    step = min(prompt_tokens, prefill_chunk) if prefill_chunk > 0 else prompt_tokens
    prefill = step * (6 * text.hidden_size + qkv + 3 * text.intermediate_size) * 2

    from roadbuddy.families.internvl.model import vision_geometry

    size, patch, _ = vision_geometry(config)
    seq = (size // patch) ** 2 + 1
    vision_act = vision_batch * seq * (7 * vision.hidden_size + vision.intermediate_size) * 2

    return MemoryEstimate(
        weights=weights,
        kv_cache=prompt_tokens * kv_bytes_per_token(config),
        vision_activations=vision_act,
        prefill_activations=prefill,
        prompt_buffers=prompt_tokens * PROMPT_BUFFERS * text.hidden_size * 2,
        overhead=OVERHEAD_BYTES,
    )


# Text tokens of a prompt with the real Qwen vocabulary (bench/prompt_lengths.py over train.json, detailed
# prompts): the prefix holds 146 + about 8 per frame ("Frame12: <img>" and "</img>\n"; 393 at 32 frames),
# and the longest question suffix is 353 tokens (mean 91). A pack of questions is bounded by the prefill
# chunk, so the longest single prompt is what the KV cache must hold.
PREFIX_TEXT_TOKENS, TEXT_TOKENS_PER_FRAME, LONGEST_SUFFIX_TOKENS = 146, 8, 353


def planned_prompt_tokens(cfg, spec) -> int:
    """Tokens of the largest prompt a RunConfig allows on a 16:9 clip (what the estimate plans for): the
    frames and detail frames inputs.frame_budget gives a clip long enough for --max-frames, counted by the
    family (`spec.ops.visual_tokens`), each question seeing only its own detail frames (inputs.plan_detail)."""
    from types import SimpleNamespace

    from roadbuddy.predict.inputs import frame_budget

    longest = SimpleNamespace(width=2560, height=1440, duration=1e9)
    frames, detail = frame_budget(longest, cfg, spec)
    visual = spec.ops.visual_tokens(spec, longest.width, longest.height, frames, detail, cfg)
    suffixes = LONGEST_SUFFIX_TOKENS * max(1, min(cfg.permutations, 4))  # a question's orders pack together
    return visual + PREFIX_TEXT_TOKENS + TEXT_TOKENS_PER_FRAME * frames + suffixes


def print_estimate(cfg, say, free_memory=None) -> MemoryEstimate | None:
    """Say the VRAM estimate of a RunConfig before its model loads, and warn when the GPU has less free
    (`free_memory()` -> (free, total) bytes or None; NVML's by default, on CUDA machines)."""
    from roadbuddy.families.internvl.model import resolve_model_id, vision_geometry

    try:
        config = load_config(resolve_model_id(cfg.model)[0])
    except Exception as exc:  # offline with no cached config: nothing to estimate from
        say(f"VRAM estimate skipped: no config for {cfg.model} ({str(exc).splitlines()[0]})")
        return None
    from roadbuddy.families.internvl.inputs import TileSpec

    size, _, tokens_per_tile = vision_geometry(config)
    est = estimate_vram(config, quantization=cfg.quantization,
                        prompt_tokens=planned_prompt_tokens(cfg, TileSpec(size, tokens_per_tile, None)),
                        vision_batch=cfg.vision_batch, prefill_chunk=cfg.prefill_chunk,
                        embeddings_on_gpu=not cfg.embeddings_on_cpu)
    say(est.describe())
    if free_memory is None:
        import torch

        free_memory = gpu_memory if torch.cuda.is_available() else (lambda: None)
    gpu = free_memory()
    if gpu and est.total > gpu[0]:
        say(f"WARNING: the estimate exceeds the GPU's free memory ({gpu[0] / GiB:.2f} GiB); "
            "try --load-in-4bit, fewer --max-frames or a lower --max-visual-tokens")
    return est


def gpu_memory(index: int = 0) -> tuple[int, int] | None:
    """(free, total) bytes on GPU `index` from NVML, or None when NVML is unavailable."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index))
            return int(info.free), int(info.total)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no GPU, no library: the estimate just goes unchecked
        return None


class NvmlPeakSampler:
    """Polls NVML every `interval` seconds on a thread and keeps the peak GPU memory.

    `process_peak` is this process's own usage when the driver reports it (it
    does not inside some containers and VMs); `device_peak` is the device's used
    memory minus what was used when the sampler was created, so create it
    before this process touches CUDA.
    """

    def __init__(self, index: int = 0, interval: float = 0.005):
        import os
        import threading

        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self._pid = os.getpid()
        self._interval = interval
        self.baseline = int(pynvml.nvmlDeviceGetMemoryInfo(self._handle).used)
        self.name = pynvml.nvmlDeviceGetName(self._handle)
        self.name = self.name.decode() if isinstance(self.name, bytes) else self.name
        self.driver = pynvml.nvmlSystemGetDriverVersion()
        self.driver = self.driver.decode() if isinstance(self.driver, bytes) else self.driver
        self.process_peak = 0
        self.device_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="nvml-sampler", daemon=True)
        self._thread.start()

    def _process_used(self) -> int | None:
        try:
            for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                if p.pid == self._pid and p.usedGpuMemory:
                    return int(p.usedGpuMemory)
        except self._nvml.NVMLError:
            pass
        return None

    def sample(self) -> None:
        used = int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used) - self.baseline
        self.device_peak = max(self.device_peak, used)
        mine = self._process_used()
        if mine is not None:
            self.process_peak = max(self.process_peak, mine)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self._interval)

    def reset(self) -> None:
        self.process_peak = 0
        self.device_peak = 0
        self.sample()

    @property
    def peak(self) -> int:
        """This process's peak when the driver reports it, else the device's peak above the baseline."""
        return self.process_peak or self.device_peak

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._nvml.nvmlShutdown()
