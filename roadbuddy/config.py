"""Every knob of a run, with its default and its flag, in one place.

The CLI, evals, fine-tuning and bench build a `RunConfig` and pass it down;
nothing deeper reads argv or the environment. A field a user sets declares its
flag beside it (roadbuddy.flags), and every command builds its options from
those declarations.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from roadbuddy.flags import EVAL, FINETUNE, FRAMES, IO, LEVERS, MODEL, PREDICT, PROMPTS, SPEED, flag

DEFAULT_MODEL = "OpenGVLab/InternVL3_5-4B-HF"
MAX_FRAMES_LIMIT = 512
ANSWER_MODES = ("score", "generate")
QUANTIZATIONS = (None, "8bit", "4bit")
ANSWERING = frozenset({PREDICT, EVAL})  # flags that only change how questions are answered, not what is learned
SYSTEM_PROMPT_NAMES = ("project", "none", "internvl")  # roadbuddy.families.internvl.prompts.SYSTEM_PROMPTS


class ConfigError(ValueError):
    """A flag or setting out of range; one sentence naming it."""


@dataclass(frozen=True)
class RunConfig:
    # what to answer
    test_json: Path = flag(Path("public_test.json"), "--test-json",
                           "question file (RoadBuddy JSON: {'data': [...]})", IO, type=Path,
                           metavar="PATH", commands=frozenset({PREDICT}))
    data_dir: Path | None = flag(None, "--data-dir",
                                 "dataset root that video_path is relative to; when given, the only one tried "
                                 "(default: tried in order: the JSON's folder, then its parent; covers both the "
                                 "train/public and the private layout)",
                                 IO, type=Path, metavar="DIR")
    output: Path = flag(Path("output/submission.csv"), "--output",
                        "submission CSV to write; predictions.jsonl, run.json and time_submission.csv go beside "
                        "it (default: {default})", IO, type=Path, metavar="CSV", commands=frozenset({PREDICT}))
    limit: int | None = flag(None, "--limit", "answer only the first N questions (smoke run)", IO, type=int,
                             commands=ANSWERING)

    # model
    model: str = flag(DEFAULT_MODEL, "--model",
                      "hub id or local folder of a checkpoint of a family roadbuddy runs, told apart by its "
                      "config.json: InternVL3/3.5 (-hf/-HF; original-format ids such as OpenGVLab/InternVL3_5-4B map "
                      "to their -HF twin), Qwen3-VL (Qwen/Qwen3-VL-4B-Instruct, -8B-), Qwen2.5-VL "
                      "(Qwen/Qwen2.5-VL-3B-Instruct, -7B-), Qwen3.5 (Qwen/Qwen3.5-2B, -4B; transformers >= 5.7) "
                      "(default: {default})", MODEL, metavar="ID_OR_DIR")
    adapter: Path | None = flag(None, "--adapter",
                                "a LoRA adapter folder made by roadbuddy-finetune for this --model; merged into "
                                "the weights in bf16, kept beside them with --load-in-8bit/4bit (default: none)",
                                MODEL, type=Path, metavar="DIR", commands=ANSWERING)
    device: str = flag("auto", "--device", "auto (CUDA if available), cpu, cuda, cuda:N (default: {default})", MODEL,
                       metavar="DEVICE")
    quantization: str | None = flag(None, None, "", MODEL, switches=(
        ("--load-in-8bit", "8bit", "8-bit LLM.int8 language model (bitsandbytes, CUDA)"),
        ("--load-in-4bit", "4bit", "4-bit NF4 language model (bitsandbytes, CUDA)"),
    ))  # None: bf16 on CUDA, fp32 on CPU
    fused_attention: bool = flag(False, "--fused-attention",
                                 "experimental: the language model's attention without materialised masks (SDPA "
                                 "with a bottom-right causal bias and grouped-query heads, roadbuddy/families/attention.py); "
                                 "same answers, speed not yet measured on a GPU; InternVL only (default: "
                                 "transformers' SDPA)",
                                 MODEL, action="store_true")
    flash_attn: bool = flag(True, "--no-flash-attn",
                            "use PyTorch SDPA even when flash-attn is installed (default: flash_attention_2 when "
                            "flash-attn imports and CUDA is present, else SDPA)", MODEL, action="store_false")

    # frames: count = clamp(round(duration * frames_per_second), min, max),
    # then capped so frames * tokens_per_frame <= max_visual_tokens
    min_frames: int = flag(8, "--min-frames", "fewest frames per clip (default: {default})", FRAMES, type=int)
    max_frames: int = flag(32, "--max-frames", f"most frames per clip, at most {MAX_FRAMES_LIMIT} "
                           "(default: {default})", FRAMES, type=int)
    frames_per_second: float = flag(3.0, "--frames-per-second",
                                    "adaptive rate: a clip gets duration x this many frames, within [min, max] "
                                    "(default: {default})", FRAMES, type=float)
    max_visual_tokens: int = flag(8192, "--max-visual-tokens",
                                  "cap on the frames' vision tokens as the family counts them (InternVL: 256 per "
                                  "tile; Qwen3-VL: 196 per 448x448 frame pair, Qwen2.5-VL: 256), which bounds KV "
                                  "cache and prefill memory; wins over --min-frames (default: {default}, fits a 12 GB "
                                  "budget in bf16)",
                                  FRAMES, type=int)
    support_frames: bool = flag(True, "--no-support-frames",
                                "ignore the file's support_frames timestamps (train files): frames spread evenly, or placed by "
                                "--frame-selector", FRAMES,
                                action="store_false")
    frame_selector: str | None = flag(None, "--frame-selector",
                                      "a frame selector made by roadbuddy-finetune-selector (folder or hub id of a "
                                      "SigLIP/SigLIP 2 checkpoint): each clip is scanned at --scan-fps, and each "
                                      "question's predicted support times place half its frames around them, as "
                                      "train.json's support_frames do (default: none, frames spread evenly)",
                                      FRAMES, metavar="DIR_OR_ID", commands=ANSWERING)
    scan_fps: float = flag(2.0, "--scan-fps", "frames per second of the clip the frame selector scores "
                           "(default: {default})", FRAMES, type=float, commands=ANSWERING)
    selector_times: int = flag(1, "--selector-times",
                               "support times the frame selector predicts per question, more than "
                               "--support-window apart (default: {default})", FRAMES, type=int, commands=ANSWERING)
    selector_wins: bool = flag(False, "--selector-wins",
                               "with --frame-selector, use its predicted times also for questions whose file gives "
                               "support_frames (train.json), to measure it on labelled questions (default: the "
                               "file's timestamps win where given)", FRAMES, action="store_true", commands=ANSWERING)
    support_window: float = flag(1.0, "--support-window",
                                 "seconds either side of a support time (the file's or the frame selector's) in "
                                 "which half the question's frames are taken; the frame selector's times are also "
                                 "more than this apart (default: {default})", FRAMES, type=float)
    support_share: float = 0.5  # fraction of the frames spent around support timestamps

    # tiles
    max_num: int = flag(1, "--max-num", "InternVL: tiles per frame for dynamic tiling, plus a thumbnail when >1; "
                        "Qwen: each frame's pixel budget, --max-num x 448 x 448 (default: {default})", FRAMES,
                        type=int)
    use_thumbnail: bool = True
    vision_batch: int = 32  # tiles per vision-tower forward (bounds activation memory)
    embeddings_on_cpu: bool = flag(True, "--embeddings-on-gpu",
                                   "keep the input embedding table on the GPU (default on CUDA: in host memory, "
                                   "where its lookup runs; saves 0.73 GiB of VRAM for the 4B at no measurable cost)",
                                   SPEED, action="store_false")
    prefill_chunk: int = 2048  # prompt tokens per language-model forward (bounds activation memory; 0 = all)

    # prompts and answers
    simple_prompts: bool = flag(False, "--simple-prompts", "short prompt template instead of the detailed one",
                                PROMPTS, action="store_true")
    answer_mode: str = flag("score", "--answer-mode",
                            "score: one forward pass, argmax over the valid letters' logits (default); generate: "
                            "greedy text, parsed, falling back to the score answer when unparseable (recorded)",
                            PROMPTS, choices=ANSWER_MODES, commands=ANSWERING)
    max_new_tokens: int = flag(24, "--max-new-tokens", "generate mode's token budget (default: {default})",
                               PROMPTS, type=int, commands=ANSWERING)
    system_prompt: str = flag("project", "--system-prompt",
                              "the system turn: project (the project's Vietnamese prompt), none (what the "
                              "checkpoint's chat template sends without one: nothing for InternVL -HF and Qwen3-VL, "
                              "\"You are a helpful assistant.\" for Qwen2.5-VL), internvl (the original InternVL "
                              "chat default), or a UTF-8 text file (default: {default})", PROMPTS,
                              metavar="NAME_OR_FILE")

    # test-time levers (score mode; off by default)
    permutations: int = flag(1, "--permutations",
                             "ask each question in N orders of its choices (cyclic shifts of the choices sorted by "
                             "text; N >= the number of choices: all of them) on the clip's cached prefix and "
                             "average the probabilities per choice, which cancels the model's letter prior "
                             "(default: {default}, the file's order only)", LEVERS, type=int, commands=ANSWERING)
    debias: bool = flag(False, "--debias",
                        "divide the model's prior over letter positions (PriDe) out of every answer; the prior is "
                        "estimated from the first --debias-questions questions of each number of choices, asked "
                        "in all their cyclic orders, or taken from --debias-prior (default: off)", LEVERS,
                        action="store_true", commands=ANSWERING)
    debias_questions: int = flag(40, "--debias-questions",
                                 "questions per number of choices that estimate the prior for --debias "
                                 "(default: {default})", LEVERS, type=int, commands=ANSWERING)
    debias_prior: Path | None = flag(None, "--debias-prior",
                                     "the prior for --debias from an eval report.json or a run's prior.json "
                                     "instead of estimating it (default: estimated)", LEVERS, type=Path,
                                     metavar="PATH", commands=ANSWERING)
    detail_frames: int = flag(0, "--detail-frames",
                              "K frames per question (those nearest its support timestamps, else spread across "
                              "the clip) get dynamic tiling up to --detail-max-num tiles plus a thumbnail, the "
                              "others one tile (Qwen: shown again after the video as images of up to "
                              "--detail-max-num x 448 x 448 pixels); --max-visual-tokens counts them (default: "
                              "{default}, none)",
                              FRAMES, type=int)
    detail_max_num: int = flag(6, "--detail-max-num", "tiles of a detail frame, before its thumbnail "
                               "(default: {default})", FRAMES, type=int)

    # speed
    share_prefix: bool = flag(True, "--no-share-prefix",
                              "plain path: every question re-encodes its frames and prefills the whole prompt "
                              "(default: a clip's frames are encoded and prefilled once for all its questions)",
                              SPEED, action="store_false", commands=ANSWERING)
    batch_questions: bool = flag(True, "--no-batch-questions",
                                 "score mode on the shared prefix: one forward pass per question (default: a "
                                 "clip's questions go through together, each seeing only the frames and its own "
                                 "tokens)", SPEED, action="store_false", commands=ANSWERING)
    decode_threads: int = flag(0, "--decode-threads", "decoder threads, 0 = the decoder's default (default: {default})",
                               SPEED, type=int)
    decoder_scaling: bool = flag(True, "--no-decoder-scaling",
                                 "read full-size frames (decord first) and resize them with PIL bicubic exactly as "
                                 "the model card does (default with --max-num 1: PyAV decodes and scales frames to "
                                 "the tile size with swscale's bicubic, 1.5-6x faster on 1440p clips, pixels within "
                                 "about 1 level of 255 on average; see bench/README.md)", SPEED, action="store_false")
    prefetch: int = flag(2, "--prefetch", "clips decoded ahead on a worker thread, 0 = none (default: {default})",
                         SPEED, type=int)
    sample_timeout: float | None = flag(None, "--sample-timeout",
                                        "keep each question under this many seconds by giving clips fewer frames; "
                                        "the cost per frame is learned from the clips answered so far, so the first "
                                        "clip calibrates it (default: off)", SPEED, type=float, metavar="SECONDS",
                                        commands=ANSWERING)
    thumbnail_dir: Path | None = None  # evals: small JPEGs of the frames each clip decoded, for report.html

    # data parallel (set from torchrun's environment by the CLI)
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    # behaviour
    strict: bool = flag(False, "--strict",
                        "exit 1 when any video could not be read (its questions still get the prior answer)", IO,
                        action="store_true", commands=frozenset({PREDICT}))
    progress: bool = flag(True, "--no-progress", "no progress bar", SPEED, action="store_false",
                          commands=frozenset({PREDICT, FINETUNE}))
    seed: int = flag(0, "--seed", "torch seed (answers are greedy; default: {default})", SPEED, type=int,
                     commands=ANSWERING)

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
        if not self.support_window >= 0:
            raise ConfigError(f"--support-window must be >= 0 seconds, got {self.support_window}")
        if not 0.0 <= self.support_share <= 1.0:
            raise ConfigError(f"support_share must be in [0, 1], got {self.support_share}")
        if self.prefetch < 0:
            raise ConfigError(f"--prefetch must be >= 0, got {self.prefetch}")
        if self.permutations < 1 or self.debias_questions < 1:
            raise ConfigError("--permutations and --debias-questions must be >= 1")
        if (self.permutations > 1 or self.debias) and self.answer_mode != "score":
            raise ConfigError("--permutations and --debias are levers of score mode; drop --answer-mode generate")
        if self.detail_frames < 0 or self.detail_max_num < 1:
            raise ConfigError("--detail-frames must be >= 0 and --detail-max-num >= 1")
        if not (self.scan_fps > 0 and self.selector_times >= 1):
            raise ConfigError(f"--scan-fps must be > 0 and --selector-times >= 1, got {self.scan_fps} and "
                              f"{self.selector_times}")
        if self.system_prompt not in SYSTEM_PROMPT_NAMES and not Path(self.system_prompt).is_file():
            raise ConfigError(f"--system-prompt takes {', '.join(SYSTEM_PROMPT_NAMES)} or a text file, got "
                              f"{self.system_prompt!r} (no such file)")

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

    # The adapter and the levers join the answer settings only when switched on, so runs without them keep
    # the settings (and the eval folders, named by their hash) they had before these existed.
    OPTIONAL_FIELDS = ("adapter", "system_prompt", "permutations", "debias", "debias_questions", "debias_prior",
                       "detail_frames", "detail_max_num", "frame_selector", "scan_fps", "selector_times",
                       "selector_wins")

    def answer_settings(self) -> dict:
        settings = {name: getattr(self, name) for name in self.ANSWER_FIELDS}
        default = RunConfig()
        selecting = self.frame_selector is not None
        active = {"debias_questions": self.debias, "debias_prior": self.debias, "detail_max_num": self.detail_frames,
                  "scan_fps": selecting, "selector_times": selecting, "selector_wins": selecting}
        for name in self.OPTIONAL_FIELDS:
            if getattr(self, name) != getattr(default, name) and active.get(name, True):
                settings[name] = getattr(self, name)
        if self.system_prompt not in SYSTEM_PROMPT_NAMES:  # a file: its text decides, not its name
            settings["system_prompt_sha256"] = hashlib.sha256(Path(self.system_prompt).read_bytes()).hexdigest()[:16]
        if self.adapter is not None:  # the same folder with other weights in it gives other answers
            from roadbuddy.families.adapters import adapter_digest

            settings["adapter_sha256"] = adapter_digest(self.adapter)
        if selecting:  # likewise a selector folder retrained in place
            from roadbuddy.data.digest import weights_digest

            digest = weights_digest(self.frame_selector)
            if digest:
                settings["frame_selector_sha256"] = digest
        return settings

    def fingerprint(self) -> str:
        blob = json.dumps(self.answer_settings(), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
