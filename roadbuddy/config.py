"""Every knob of a run, with its default, in one place.

The CLI, evals and bench build a `RunConfig` and pass it down; nothing deeper
reads argv or the environment.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL = "OpenGVLab/InternVL3_5-4B-HF"
MAX_FRAMES_LIMIT = 512
ANSWER_MODES = ("score", "generate")
QUANTIZATIONS = (None, "8bit", "4bit")


class ConfigError(ValueError):
    """A flag or setting out of range; one sentence naming it."""


@dataclass(frozen=True)
class RunConfig:
    # what to answer
    test_json: Path = Path("public_test.json")
    data_dir: Path | None = None
    output: Path = Path("output/submission.csv")
    limit: int | None = None

    # model
    model: str = DEFAULT_MODEL
    device: str = "auto"  # auto -> cuda if available, else cpu
    quantization: str | None = None  # None (bf16 on CUDA, fp32 on CPU), "8bit", "4bit"
    flash_attn: bool = True  # use flash_attention_2 when importable on CUDA; False forces SDPA

    # frames: count = clamp(round(duration * frames_per_second), min, max),
    # then capped so frames * tokens_per_frame <= max_visual_tokens
    min_frames: int = 8
    max_frames: int = 32
    frames_per_second: float = 3.0
    max_visual_tokens: int = 8192
    support_frames: bool = True
    support_window: float = 1.0  # seconds either side of a support timestamp
    support_share: float = 0.5  # fraction of the frames spent around support timestamps

    # tiles
    max_num: int = 1  # tiles per frame (1 = model card's video setting)
    use_thumbnail: bool = True
    vision_batch: int = 32  # tiles per vision-tower forward (bounds activation memory)
    embeddings_on_cpu: bool = True  # on CUDA, keep the input embedding table in host memory (saves 0.73 GiB for 4B)
    prefill_chunk: int = 2048  # prompt tokens per language-model forward (bounds activation memory; 0 = all)

    # prompts and answers
    simple_prompts: bool = False
    answer_mode: str = "score"  # "score" or "generate"
    max_new_tokens: int = 24

    # speed
    share_prefix: bool = True  # prefill a clip's frames once for all its questions
    batch_questions: bool = True  # score mode: a clip's question suffixes in one forward on the shared prefix
    decode_threads: int = 0  # 0 = decoder's default
    decoder_scaling: bool = True  # with max_num=1, the decoder scales frames to the tile size (not the card's PIL bicubic)
    prefetch: int = 2  # clips decoded and tiled ahead on a worker thread (0 = in line)
    sample_timeout: float | None = None  # seconds per question; clips get fewer frames to stay under it

    # data parallel (set from torchrun's environment by the CLI)
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    # behaviour
    strict: bool = False
    verbose: bool = False
    progress: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_frames < 1:
            raise ConfigError(f"--min-frames must be >= 1, got {self.min_frames}")
        if not self.min_frames <= self.max_frames <= MAX_FRAMES_LIMIT:
            raise ConfigError(
                f"--max-frames must be between --min-frames ({self.min_frames}) and {MAX_FRAMES_LIMIT}, got {self.max_frames}"
            )
        if self.max_num < 1:
            raise ConfigError(f"--max-num must be >= 1, got {self.max_num}")
        if self.frames_per_second <= 0:
            raise ConfigError(f"--frames-per-second must be > 0, got {self.frames_per_second}")
        if self.max_visual_tokens < 1:
            raise ConfigError(f"--max-visual-tokens must be >= 1, got {self.max_visual_tokens}")
        if self.answer_mode not in ANSWER_MODES:
            raise ConfigError(f"--answer-mode must be one of {ANSWER_MODES}, got {self.answer_mode!r}")
        if self.quantization not in QUANTIZATIONS:
            raise ConfigError(f"quantization must be one of {QUANTIZATIONS}, got {self.quantization!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        if self.sample_timeout is not None and self.sample_timeout <= 0:
            raise ConfigError(f"--sample-timeout must be > 0 seconds, got {self.sample_timeout}")
        if not 0.0 <= self.support_share <= 1.0:
            raise ConfigError(f"support_share must be in [0, 1], got {self.support_share}")

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes)

    # Fields that change which answers a run produces. A resumed run must agree
    # on these with the run that wrote predictions.jsonl.
    ANSWER_FIELDS = (
        "model", "quantization", "min_frames", "max_frames", "frames_per_second",
        "max_visual_tokens", "support_frames", "support_window", "support_share",
        "max_num", "use_thumbnail", "simple_prompts", "answer_mode", "max_new_tokens", "seed", "sample_timeout",
        "decoder_scaling",
    )

    def answer_settings(self) -> dict:
        return {name: getattr(self, name) for name in self.ANSWER_FIELDS}

    def fingerprint(self) -> str:
        blob = json.dumps(self.answer_settings(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
