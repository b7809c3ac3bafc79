"""Test helpers: a tiny random-weight checkpoint of each model family and a synthetic dataset.

    python -m roadbuddy.testing tiny-checkpoint DIR [--family internvl|qwen3_vl|qwen2_5_vl|qwen3_5]
    python -m roadbuddy.testing synthetic-dataset DIR

Both are real: the checkpoint is a native transformers InternVL (safetensors,
config, tokenizer with the real special tokens) that loads through the same
code path as OpenGVLab/InternVL3_5-4B-HF; the dataset is RoadBuddy-shaped JSON
with H.264 clips encoded by PyAV. The Qwen families' checkpoints come from
roadbuddy.testing.qwen_checkpoints (with the published processor settings).
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

from roadbuddy.testing.qwen_checkpoints import FAMILIES as QWEN_FAMILIES
from roadbuddy.testing.qwen_checkpoints import write_tiny_qwen_checkpoint

SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<think>", "</think>",
]

# Enough Vietnamese and English text that the byte-level BPE learns merges for
# the words our prompts use; the exact vocabulary does not matter to any test.
_CORPUS = [
    "Câu hỏi: Video đang có đèn giao thông màu gì? Đáp án: A. Đỏ B. Xanh C. Vàng D. Không có đèn",
    "Biển báo nào xuất hiện trong video? Đúng hay sai? Có hay không? Trả lời bằng một chữ cái.",
    "Phần đường trong video cho phép các phương tiện đi theo hướng nào khi đến nút giao?",
    "Đi thẳng, rẽ trái và rẽ phải. Biển cấm quay đầu, biển giới hạn tốc độ 80 km/h.",
    "Bạn là trợ lý quan sát các khung hình camera hành trình trên đường phố Việt Nam.",
    "Frame1: Frame2: Frame3: The answer is A B C D E F G H. 答案是 A",
]


def build_tokenizer(vocab_size: int = 600):
    """A byte-level BPE tokenizer carrying InternVL's special tokens.

    Single capital letters are single tokens, as in Qwen's tokenizer, which is
    what score mode relies on.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        unk_token=None,
        model_max_length=40960,
    )


def tiny_config(tokenizer, *, image_size: int = 56, text_hidden: int = 64, text_layers: int = 2,
                vision_hidden: int = 32, vision_layers: int = 2, **overrides):
    """A small InternVLConfig: 56 px tiles of 14 px patches -> 4 tokens per tile."""
    from transformers import InternVLConfig, Qwen3Config

    downsample = 0.5
    patch = 14
    tokens_per_tile = int((image_size // patch * downsample) ** 2)
    text = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=text_hidden,
        intermediate_size=text_hidden * 2,
        num_hidden_layers=text_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=text_hidden // 4,
        max_position_embeddings=40960,
        rope_theta=1_000_000.0,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(
        hidden_size=vision_hidden,
        num_hidden_layers=vision_layers,
        num_attention_heads=2,
        intermediate_size=vision_hidden * 2,
        image_size=[image_size, image_size],
        patch_size=[patch, patch],
    )
    kwargs = dict(
        vision_config=vision,
        text_config=text.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=tokens_per_tile,
        downsample_ratio=downsample,
        tie_word_embeddings=False,
    )
    kwargs.update(overrides)
    return InternVLConfig(**kwargs)


def write_tiny_checkpoint(directory: Path | str, *, seed: int = 0, **config_overrides) -> Path:
    """Write a random-weight tiny InternVL checkpoint (safetensors + tokenizer) to `directory`."""
    import torch
    from transformers import InternVLForConditionalGeneration

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = tiny_config(tokenizer, **config_overrides)
    config.roadbuddy_weights = "random"  # the loader says "random weights" about this checkpoint
    torch.manual_seed(seed)
    model = InternVLForConditionalGeneration(config).eval()
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def write_tiny_adapter(checkpoint: Path | str, directory: Path | str, *, seed: int = 0, rank: int = 4) -> Path:
    """A LoRA adapter with random (non-zero) weights for a tiny checkpoint, in roadbuddy-finetune's layout
    (peft adapter + card), so loading it visibly changes the answers; for tests of --adapter."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import InternVLForConditionalGeneration

    from roadbuddy.families import adapters
    from roadbuddy.families.internvl.training import LM_LAYERS
    from roadbuddy.finetune.config import LM_TARGETS

    directory = Path(directory)
    model = InternVLForConditionalGeneration.from_pretrained(str(checkpoint))
    torch.manual_seed(seed)
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, init_lora_weights=False,  # random B: not a no-op
                      target_modules=LM_LAYERS.format(names="|".join(LM_TARGETS)))
    with adapters.quiet_peft():
        get_peft_model(model, lora).save_pretrained(str(directory), safe_serialization=True)
    card = {"base_model": str(checkpoint), "base_architecture": adapters.architecture(model.config),
            "made_by": "roadbuddy.testing.checkpoints.write_tiny_adapter"}
    (directory / adapters.CARD).write_text(json.dumps(card, indent=1), encoding="utf-8")
    return directory


_COLOURS = {"red": "Đỏ", "yellow": "Vàng", "green": "Xanh"}


def write_synthetic_dataset(directory: Path | str, *, clips: int = 4, seconds: float = 2.0, fps: float = 10,
                            width: int = 128, height: int = 72, with_answers: bool = True, seed: int = 0) -> Path:
    """Write a RoadBuddy-layout dataset: DIR/train/train.json and DIR/train/videos/*.mp4.

    Each clip shows a traffic light of one colour; its questions (1 to 3 per
    clip, 2 and 4 choices, shuffled) ask about it, so a model that sees can
    answer them. Returns the JSON path. Paths in the JSON are relative to DIR,
    as in the real train release.
    """
    from roadbuddy.testing.synth import write_road_clip

    rng = random.Random(seed)
    directory = Path(directory)
    videos = directory / "train" / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    items = []
    n = 0
    for c in range(clips):
        light = list(_COLOURS)[c % 3]
        rel = f"train/videos/synthetic_{c:03d}.mp4"
        write_road_clip(directory / rel, seconds=seconds, fps=fps, width=width, height=height, light=light, seed=seed + c)
        for q in range(1 + c % 3):
            n += 1
            truth = _COLOURS[light]
            if q % 2 == 0:
                texts = list(_COLOURS.values()) + ["Không có đèn"]
                rng.shuffle(texts)
                question = "Video đang có đèn giao thông màu gì?"
            else:
                texts = ["Đúng", "Sai"]
                asked = rng.choice(list(_COLOURS.values()))
                question = f"Đèn giao thông trong video có màu {asked.lower()}, đúng hay sai?"
                truth = "Đúng" if asked == _COLOURS[light] else "Sai"
            choices = [f"{'ABCD'[i]}. {t}" for i, t in enumerate(texts)]
            item = {"id": f"synth_{n:04d}", "question": question, "choices": choices, "video_path": rel}
            if with_answers:
                item["answer"] = choices[texts.index(truth)]
                item["support_frames"] = [round(rng.uniform(0.2, seconds - 0.2), 3)]
            items.append(item)
    path = directory / "train" / "train.json"
    path.write_text(json.dumps({"__count__": len(items), "data": items}, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m roadbuddy.testing", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("tiny-checkpoint", help="write a tiny random-weight checkpoint (InternVL or a Qwen family)",
                       description="Write a tiny random-weight checkpoint (safetensors, config, tokenizer with the "
                                   "real special tokens; for the Qwen families also the published processor "
                                   "settings) that loads like the published one; roadbuddy-predict --model DIR "
                                   "loads the InternVL one.")
    p.add_argument("directory", type=Path, metavar="DIR",
                   help="folder to write the checkpoint into (created if missing)")
    p.add_argument("--family", choices=("internvl", *QWEN_FAMILIES), default="internvl",
                   help="model family of the checkpoint (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="torch seed of the random weights (default: %(default)s)")
    p = sub.add_parser("synthetic-dataset", help="write a small RoadBuddy-layout dataset with encoded clips",
                       description="Write DIR/train/train.json and DIR/train/videos/*.mp4: H.264 clips of a "
                                   "traffic light, 1 to 3 questions each about its colour.")
    p.add_argument("directory", type=Path, metavar="DIR",
                   help="dataset root to write (video paths in the JSON are relative to it)")
    p.add_argument("--clips", type=int, default=4, help="number of clips (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=2.0, help="length of each clip in seconds (default: %(default)s)")
    p.add_argument("--no-answers", action="store_true", help="write a test-style file (no answer, no support_frames)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the clips' scenes, the choice orders and the support timestamps "
                        "(default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "tiny-checkpoint" and args.family == "internvl":
        print(write_tiny_checkpoint(args.directory, seed=args.seed))
    elif args.command == "tiny-checkpoint":
        print(write_tiny_qwen_checkpoint(args.directory, args.family, seed=args.seed))
    else:
        print(write_synthetic_dataset(args.directory, clips=args.clips, seconds=args.seconds,
                                      with_answers=not args.no_answers, seed=args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
