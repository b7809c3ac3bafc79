"""The VRAM estimate printed before loading, and the GPU's free memory (NVML).

peak = weights + max(vision activations, KV cache + prefill activations) + overhead

- weights: parameters counted exactly on the meta device (AutoModelForImageTextToText of the config, any
  family; tied embeddings once), bytes by quantization (bf16: 2 B each; 8-bit: 1 B for the linear layers
  bitsandbytes quantizes; 4-bit NF4 with double quantization: about 0.52 B for them). What the family's
  skip list names (the vision tower, projector, lm_head) and the embeddings stay bf16, as the loader's
  quantization_config leaves them; the input embedding table is not counted when it lives in host memory
  (RunConfig.embeddings_on_cpu, the default on CUDA, where the family's code path allows it: InternVL's).
- KV cache: 2 (K, V) x layers x kv_heads x head_dim x 2 B per token of prompt.
- activations: the larger of the vision tower at its peak and the language model's prefill over one chunk
  of the prompt (residual, attention projections and the MLP's three intermediates per token; the whole
  prompt at once where the family's prefill does not chunk: Qwen's). The vision term is the family's
  (`family.memory_terms(config)`): InternVL's tower runs over --vision-batch tiles at a time, Qwen's over
  every patch of a frame set at once (families/qwen_vl/vram.py says what it holds per patch).
- prompt buffers: per prompt token, the embeddings looked up on the CPU and
  their GPU copy, the vision features scattered into them, and the allocator's
  per-clip slack: PROMPT_BUFFERS hidden-size bf16 vectors; plus any vision features the family keeps
  through the prefill (Qwen3-VL's deepstack features).
- overhead: the CUDA context and allocator slack that NVML sees beyond torch.
- frame selector (--frame-selector): its weights in bf16 and its vision tower's activations over one batch of
  scanned frames (selector.model.score's batch), added whole: it scores the next clip on the prefetch thread
  while the model answers this one. Derived from its config, not measured.

OVERHEAD_BYTES and PROMPT_BUFFERS were fitted on the NVML peaks of the H200
sweep in bench/results/2026-11-27-nvidia-h200.json (20 configurations, bf16,
8-bit and 4-bit, 2k to 17k prompt tokens: largest error 5.1%), and
tests/test_memory.py checks every committed result against this function.
The Qwen terms are derived from transformers' code, not fitted: no GPU has measured them yet.
"""
from __future__ import annotations

from dataclasses import dataclass

from roadbuddy.families import configs, registry

GiB = 1024 ** 3
OVERHEAD_BYTES = int(0.72 * GiB)  # CUDA context (0.67 GiB seen by NVML on an H200) and allocator slack
PROMPT_BUFFERS = 4  # hidden-size bf16 vectors per prompt token beside the KV cache (fitted, see below)
BYTES_PER_PARAM = {None: 2.0, "8bit": 1.0, "4bit": 0.5 + 1 / 64 + 4 / (64 * 256)}


def load_config(name_or_path: str):
    """The config of a shipped name (roadbuddy/families/configs: a hub id or a file stem), a local checkpoint or a
    cached hub id, as its family's config class. Never touches the network: the estimate must not stall a run
    that has no network (the model load that follows reports that case itself)."""
    return configs.load_config(name_or_path)


def family_of(config):
    """The family object (roadbuddy.families.protocol.Family) of a config; UnsupportedFamily for any other."""
    return registry.ops(registry.family_of(config, getattr(config, "_name_or_path", "") or "this checkpoint"))


def count_parameters(config) -> dict[str, int]:
    """Parameters by how quantization treats them: `lm_linear`, the linear weights bitsandbytes quantizes under the
    family's skip list (transformers' own matching); the rest stays 16-bit: `vision` and `projector` (the
    family's modules), `embed` (an input table not tied to the lm_head, which may live in host memory) and
    `lm_other`. Shared parameters count once."""
    import torch
    from transformers import AutoModelForImageTextToText
    from transformers.quantizers.quantizers_utils import should_convert_module

    family = family_of(config)
    terms = family.memory_terms(config)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is embed.weight
    counts = {"vision": 0, "projector": 0, "lm_linear": 0, "lm_other": 0, "embed": 0}
    seen = set()
    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if isinstance(module, torch.nn.Linear) and pname == "weight" and \
                    should_convert_module(name, family.skip_quantization):
                counts["lm_linear"] += p.numel()
            elif module is embed and not tied:
                counts["embed"] += p.numel()
            elif _under(name, terms.projector_modules):
                counts["projector"] += p.numel()
            elif _under(name, terms.vision_modules):
                counts["vision"] += p.numel()
            else:
                counts["lm_other"] += p.numel()
    return counts


def _under(name: str, prefixes) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def kv_bytes_per_token(config, dtype_bytes: int = 2) -> int:
    """K and V of every layer that keeps them (Qwen3.5: its full-attention layers only, one in four)."""
    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    layers = getattr(family_of(config).memory_terms(config), "kv_layers", text.num_hidden_layers)
    return 2 * layers * text.num_key_value_heads * head_dim * dtype_bytes


@dataclass(frozen=True)
class MemoryEstimate:
    weights: int
    kv_cache: int
    vision_activations: int
    prefill_activations: int
    prompt_buffers: int
    overhead: int
    selector: int = 0  # --frame-selector: its weights and activations (selector_bytes)

    @property
    def total(self) -> int:
        language = self.kv_cache + self.prefill_activations + self.prompt_buffers
        return self.weights + max(self.vision_activations, language) + self.overhead + self.selector

    def describe(self) -> str:
        def g(x):
            return f"{x / GiB:.2f} GiB"

        return (f"VRAM estimate {g(self.total)}: weights {g(self.weights)}, KV cache {g(self.kv_cache)}, "
                f"prefill {g(self.prefill_activations)}, prompt buffers {g(self.prompt_buffers)}, "
                f"vision {g(self.vision_activations)}, overhead {g(self.overhead)}"
                + (f", frame selector {g(self.selector)}" if self.selector else ""))


def selector_bytes(config, batch: int | None = None) -> int:
    """A frame selector's share of the estimate from its config (SiglipConfig or Siglip2Config): its parameters
    in bf16 (counted on the meta device) plus its vision tower over `batch` frames at once (the default:
    selector.model.score's): per patch token the residual, the attention projections and the MLP's
    intermediate, and each head's attention scores, in bf16."""
    import inspect

    import torch
    from transformers import Siglip2Model, SiglipModel

    from roadbuddy.selector.model import score

    batch = batch or inspect.signature(score).parameters["batch"].default
    with torch.device("meta"):
        model = (Siglip2Model if config.model_type == "siglip2" else SiglipModel)(config)
    weights = sum(p.numel() for p in model.parameters()) * 2
    vision = config.vision_config
    tokens = getattr(vision, "num_patches", None) or (vision.image_size // vision.patch_size) ** 2
    per_token = 4 * vision.hidden_size + vision.intermediate_size + vision.num_attention_heads * tokens
    return int(weights + batch * tokens * per_token * 2)


def estimate_vram(config, *, quantization: str | None, prompt_tokens: int, vision_batch: int,
                  prefill_chunk: int = 0, embeddings_on_gpu: bool = True,
                  counts: dict[str, int] | None = None, visual_tokens: int | None = None) -> MemoryEstimate:
    """Peak GPU memory for one question with `prompt_tokens` tokens (`visual_tokens` of them the frame set's vision
    tokens; None: as many as the prompt's) in bf16 compute, the prompt prefilled `prefill_chunk` tokens at a time
    (0: all at once) where the family's prefill chunks, the input embeddings in host memory unless
    `embeddings_on_gpu` or the family keeps them on the GPU."""
    terms = family_of(config).memory_terms(config)
    counts = counts or count_parameters(config)
    on_gpu = embeddings_on_gpu or not terms.embeddings_on_host
    kept = counts["vision"] + counts["projector"] + counts["lm_other"] + counts["embed"] * on_gpu
    weights = int(kept * 2 + counts["lm_linear"] * BYTES_PER_PARAM[quantization])

    text = config.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    qkv = (text.num_attention_heads + 2 * text.num_key_value_heads) * head_dim
    chunk = prefill_chunk if terms.chunked_prefill else 0
    step = min(prompt_tokens, chunk) if chunk > 0 else prompt_tokens
    prefill = step * (6 * text.hidden_size + qkv + 3 * text.intermediate_size) * 2
    visual = prompt_tokens if visual_tokens is None else visual_tokens

    return MemoryEstimate(
        weights=weights,
        # the prefix's cache, and where questions run on copies of its state (Qwen3.5), one copy beside it; plus
        # the fixed-size recurrent states of the layers that keep no keys and values
        kv_cache=(prompt_tokens * kv_bytes_per_token(config) + getattr(terms, "state_bytes", 0))
        * getattr(terms, "cache_copies", 1),
        vision_activations=terms.vision_activations(visual, vision_batch),
        prefill_activations=prefill,
        prompt_buffers=prompt_tokens * PROMPT_BUFFERS * text.hidden_size * 2 + terms.prefill_features(visual),
        overhead=OVERHEAD_BYTES,
    )


# Text tokens of a prompt with the real Qwen vocabulary (bench/prompt_lengths.py over train.json, detailed
# prompts): the prefix holds 146 + about 8 per frame ("Frame12: <img>" and "</img>\n"; 393 at 32 frames),
# and the longest question suffix is 353 tokens (mean 91). A pack of questions is bounded by the prefill
# chunk, so the longest single prompt is what the KV cache must hold. Measured on InternVL's prompt; the Qwen
# prompts' text around a frame pair is shorter (a timestamp and the vision start/end), so it is a bound there.
PREFIX_TEXT_TOKENS, TEXT_TOKENS_PER_FRAME, LONGEST_SUFFIX_TOKENS = 146, 8, 353


def planned_tokens(cfg, spec) -> tuple[int, int]:
    """(vision tokens, all tokens) of the largest prompt a RunConfig allows on a 16:9 clip (what the estimate
    plans for): the frames and detail frames inputs.frame_budget gives a clip long enough for --max-frames,
    counted by the family (`spec.ops.visual_tokens`), each question seeing only its own detail frames
    (inputs.plan_detail)."""
    from types import SimpleNamespace

    from roadbuddy.predict.inputs import frame_budget

    longest = SimpleNamespace(width=2560, height=1440, duration=1e9)
    frames, detail = frame_budget(longest, cfg, spec)
    visual = spec.ops.visual_tokens(spec, longest.width, longest.height, frames, detail, cfg)
    suffixes = LONGEST_SUFFIX_TOKENS * max(1, min(cfg.permutations, 4))  # a question's orders pack together
    return visual, visual + PREFIX_TEXT_TOKENS + TEXT_TOKENS_PER_FRAME * frames + suffixes


def planned_prompt_tokens(cfg, spec) -> int:
    """Tokens of the largest prompt a RunConfig allows (planned_tokens' second figure)."""
    return planned_tokens(cfg, spec)[1]


def print_estimate(cfg, say, free_memory=None) -> MemoryEstimate | None:
    """Say the VRAM estimate of a RunConfig before its model loads, and warn when the GPU has less free
    (`free_memory()` -> (free, total) bytes or None; NVML's by default, on CUDA machines). The checkpoint's
    family says how its tokens are counted (`family.planning_spec`) and what its code path holds."""
    from roadbuddy.families.registry import checkpoint_name

    name = checkpoint_name(cfg.model)
    try:
        config = load_config(name)
        family = family_of(config)
        spec = family.planning_spec(config, name)
    except Exception as exc:  # offline with no cached config, another family: nothing to estimate from
        say(f"VRAM estimate skipped: no config for {cfg.model} ({str(exc).splitlines()[0]})")
        return None
    visual, prompt = planned_tokens(cfg, spec)
    est = estimate_vram(config, quantization=cfg.quantization, prompt_tokens=prompt, visual_tokens=visual,
                        vision_batch=cfg.vision_batch, prefill_chunk=cfg.prefill_chunk,
                        embeddings_on_gpu=not cfg.embeddings_on_cpu)
    if cfg.frame_selector is not None:
        from dataclasses import replace

        from roadbuddy.families.checkpoint import from_pretrained

        try:
            from transformers import AutoConfig

            est = replace(est, selector=selector_bytes(from_pretrained(AutoConfig, str(cfg.frame_selector),
                                                                      trust_remote_code=False)))
        except Exception as exc:  # noqa: BLE001 - the selector's own load says what is wrong with it
            say(f"VRAM estimate leaves out the frame selector: no config for {cfg.frame_selector} "
                f"({str(exc).splitlines()[0]})")
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
