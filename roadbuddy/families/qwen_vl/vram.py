"""What the VRAM estimate (roadbuddy.predict.memory) needs to know of Qwen3-VL and Qwen2.5-VL beside their
config: where the vision tower is, how the code path runs, what the tower holds at its peak, and the input spec
that counts a plan's tokens without a loaded model (the checkpoint's video and image processor settings in
SimpleNamespaces: only `size`, `patch_size`, `merge_size` and `temporal_patch_size` count tokens).

The vision tower (`model.visual`) sees every patch of a frame set at once, inside the prefill's forward: t x h x w
patches = the frame set's video tokens x merge^2 (no batching by tiles, so --vision-batch does not bound it).
Per patch, at its peak, it holds in bf16 (transformers 5.25, modeling_qwen3_vl.py / modeling_qwen2_5_vl.py;
derived from the code, not yet measured on a GPU):
- in a block, the larger of: the attention at its rotary step, 17 hidden-size vectors (the residual, the
  normed input, q, k, v; then `apply_rotary_pos_emb_vision` works in float32: q and k cast (4), q rotated (2),
  and k's product, rotated product and their sum (6)); and the MLP, 2 hidden + 3 intermediate (Qwen2.5-VL's
  gated MLP: gate activation, up, their product; Qwen3-VL's plain one holds 2: a bound);
- the patches' pixels (3 x temporal patch x patch^2 values) and the deepstack features taken so far (Qwen3-VL:
  one out-hidden vector per merged token per deepstack layer), which also stay through the language model's
  prefill (prefill_features).
Detail frames, where a run has them, go through the tower as images in a pass of their own; their tokens are
added to the video's here, a bound on the larger of the two passes.
The patch merger(s) (`model.visual.merger`, Qwen3-VL's `deepstack_merger_list`) count as the projector, like
InternVL's multi_modal_projector; all of model.visual stays bf16 under 8-bit and 4-bit (the skip list).
"""
from __future__ import annotations

from types import SimpleNamespace

from roadbuddy.families import configs
from roadbuddy.families.qwen_vl.inputs import VideoSpec

ATTENTION_PEAK = 17  # hidden-size vectors per patch in a vision block at its float32 rotary step (see above)


class QwenVLMemory:
    """Qwen-VL's terms of the estimate, for one config (roadbuddy.families.protocol.Family.memory_terms)."""

    vision_modules = ("model.visual",)
    projector_modules = ("model.visual.merger", "model.visual.deepstack_merger_list")
    chunked_prefill = False  # model.prefill sends the whole prefix in one forward, the vision tower inside it
    embeddings_on_host = False  # the forward looks its embeddings up itself: the table stays on the GPU

    def __init__(self, config):
        self.config = config

    def _deepstack(self) -> int:
        return len(getattr(self.config.vision_config, "deepstack_visual_indexes", None) or ())

    def vision_activations(self, visual_tokens: int, vision_batch: int) -> int:
        """Bytes the tower holds at its peak over a frame set of `visual_tokens` video tokens (module docstring)."""
        vision = self.config.vision_config
        merge = vision.spatial_merge_size ** 2
        block = max(ATTENTION_PEAK * vision.hidden_size, 2 * vision.hidden_size + 3 * vision.intermediate_size)
        pixels = getattr(vision, "in_channels", 3) * vision.temporal_patch_size * vision.patch_size ** 2
        deepstack = self._deepstack() * vision.out_hidden_size / merge
        return int(visual_tokens * merge * (block + pixels + deepstack) * 2)

    def prefill_features(self, visual_tokens: int) -> int:
        """Bytes of the deepstack features held through the language model's prefill (Qwen3-VL; 0 for Qwen2.5-VL)."""
        return self._deepstack() * visual_tokens * self.config.vision_config.out_hidden_size * 2


def token_counter(settings: dict) -> SimpleNamespace:
    """What counts tokens in a video or image processor built from `settings` (a preprocessor file's dict), as
    transformers builds it: `size`, with Qwen2.5-VL's min_pixels / max_pixels taking its shortest / longest edge."""
    size = dict(settings.get("size") or {})
    for key, edge in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
        if settings.get(key) is not None:
            size[edge] = settings[key]
    if "shortest_edge" not in size or "longest_edge" not in size:
        raise ValueError(f"video processor settings without pixel bounds: {sorted(settings)}")
    return SimpleNamespace(size=SimpleNamespace(shortest_edge=size["shortest_edge"], longest_edge=size["longest_edge"]),
                           patch_size=settings["patch_size"], merge_size=settings["merge_size"],
                           temporal_patch_size=settings["temporal_patch_size"])


def planning_spec(family, name: str) -> VideoSpec:
    """The spec that counts `name`'s video (and detail frames' image) tokens, no tokenizer: its processors' settings,
    shipped or the checkpoint's own (roadbuddy.families.configs.processor_settings)."""
    video = configs.processor_settings(name, family.name, configs.VIDEO_PROCESSOR_FILES)
    image = configs.processor_settings(name, family.name, configs.IMAGE_PROCESSOR_FILES)
    return VideoSpec(family, None, SimpleNamespace(video_processor=token_counter(video),
                                                   image_processor=token_counter(image)))
