"""What the VRAM estimate (roadbuddy.predict.memory) needs to know of InternVL beside its config: where its vision
tower and projector are, how its code path runs (the prompt in --prefill-chunk pieces, the input embeddings
in host memory), what the vision tower holds at its peak, and the input spec that counts a plan's tokens
without a loaded model."""
from __future__ import annotations

from roadbuddy.families.internvl.inputs import TileSpec
from roadbuddy.families.internvl.model import vision_geometry


class InternVLMemory:
    """InternVL's terms of the estimate, for one config (roadbuddy.families.protocol.Family.memory_terms)."""

    vision_modules = ("model.vision_tower",)  # full module-name prefixes, as the skip list spells them
    projector_modules = ("model.multi_modal_projector",)
    chunked_prefill = True  # model.forward runs the prompt --prefill-chunk tokens at a time
    embeddings_on_host = True  # load_model leaves an untied input table in host memory (RunConfig.embeddings_on_cpu)

    def __init__(self, config):
        self.config = config

    def vision_activations(self, visual_tokens: int, vision_batch: int) -> int:
        """Bytes the tower holds over one batch of `vision_batch` tiles (encode_tiles), whatever the plan's tokens:
        per token of a tile (its patches and the class token) seven hidden-size vectors (residual, norm, q, k, v,
        attention output, projection) and the MLP's intermediate, in bf16."""
        vision = self.config.vision_config
        size, patch, _ = vision_geometry(self.config)
        seq = (size // patch) ** 2 + 1
        return vision_batch * seq * (7 * vision.hidden_size + vision.intermediate_size) * 2

    def prefill_features(self, visual_tokens: int) -> int:
        """Nothing beyond the prompt's own buffers: the spliced features are counted there."""
        return 0


def planning_spec(config) -> TileSpec:
    """The tile size and image tokens per tile of the config: what counts a plan's tokens (no tokenizer)."""
    size, _, tokens_per_tile = vision_geometry(config)
    return TileSpec(size, tokens_per_tile, None)
