"""Tiny random-weight checkpoints of the Qwen families (Qwen3-VL, Qwen2.5-VL, Qwen3.5).

    write_tiny_qwen_checkpoint(DIR, "qwen3_vl" | "qwen2_5_vl" | "qwen3_5")

Each folder loads like the published checkpoint, offline: `AutoModelForImageTextToText` finds the
family's model class from config.json, `AutoProcessor` finds its processor (Qwen2_5_VLProcessor or
Qwen3VLProcessor, which Qwen3.5 shares) from the processor settings, which are the published ones
(patch size, temporal patch 2, merge 2, mean/std, pixel bounds), so the processor cuts frames into
the same grids and token counts as for the real model. Only the model is small: a 2-layer (Qwen3.5:
3 linear-attention + 1 full-attention) 64-wide text model and a 2-block 32-wide vision tower that
keeps the real patch size. The tokenizer is a byte-level BPE trained here with the `tokenizers`
library on a little Vietnamese and English text; it carries Qwen's added tokens in their published
order (at small ids), so <|vision_start|>, <|video_pad|>, ... are single tokens whose ids the
config names, and the family's real tokenizer class wraps it. Loading the video processor needs
torchvision (a test dependency); writing the checkpoint does not.

What is taken from where (the Qwen repositories cannot be reached here): shared/FAMILIES.md §2-§3
and §6, and third-party copies, found in public code, of the published preprocessor and video
preprocessor files (Qwen2.5-VL-7B-Instruct, Qwen3-VL-*-Instruct, Qwen3.5-4B); not checked against
the Qwen repositories themselves.
"""
from __future__ import annotations

import json
from pathlib import Path

from roadbuddy.testing.qwen_vocab import ADDED_TOKENS

FAMILIES = ("qwen3_vl", "qwen2_5_vl", "qwen3_5")

# Qwen2 and Qwen3 add these tokens after their 151,643 BPE ranks (151643 to 151668); here they
# keep that order from id 0. The ids above 151668 in ADDED_TOKENS are InternVL's.
QWEN_ADDED_TOKENS = tuple((content, special) for token_id, content, special in ADDED_TOKENS if token_id <= 151668)

# Enough of the prompts' text (questions, choices, frame-pair timestamps) that the BPE learns
# merges for their words; the exact vocabulary does not matter to any test.
_TRAINING_TEXT = [
    "Câu hỏi: Video đang có đèn giao thông màu gì? Đáp án: A. Đỏ B. Xanh C. Vàng D. Không có đèn",
    "Biển báo nào xuất hiện trong video? Đúng hay sai? Có hay không? Trả lời bằng một chữ cái.",
    "Phần đường trong video cho phép các phương tiện đi theo hướng nào khi đến nút giao?",
    "Đi thẳng, rẽ trái và rẽ phải. Biển cấm quay đầu, biển giới hạn tốc độ 80 km/h.",
    "Hãy quan sát video hành trình và chọn đáp án đúng. Chỉ trả lời bằng chữ cái của đáp án.",
    "<0.5 seconds><2.5 seconds><4.5 seconds><10.0 seconds> You are a helpful assistant.",
    "The answer is A B C D E F G H.",
]

# OpenAI CLIP's normalisation (Qwen2.5-VL) and the plain 0.5 one (Qwen3-VL, Qwen3.5).
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
_HALF = [0.5, 0.5, 0.5]

# The published preprocessor_config.json (images) and video_preprocessor_config.json of each
# family. Qwen2.5-VL ships no video file: its video processor falls back to the image file's
# min/max pixels, which bound each frame. Qwen3-VL and Qwen3.5 bound the whole clip (t*h*w), so
# their video size is the one that decides how many tokens a frame gets.
_QWEN3_IMAGE = {
    "size": {"longest_edge": 16777216, "shortest_edge": 65536},
    "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": _HALF, "image_std": _HALF,
    "processor_class": "Qwen3VLProcessor", "image_processor_type": "Qwen2VLImageProcessor",
}
_QWEN3_VIDEO = {
    "size": {"longest_edge": 25165824, "shortest_edge": 4096},
    "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
    "image_mean": _HALF, "image_std": _HALF,
    "processor_class": "Qwen3VLProcessor", "video_processor_type": "Qwen3VLVideoProcessor",
}
PROCESSOR_FILES: dict[str, dict[str, dict]] = {
    "qwen2_5_vl": {
        "preprocessor_config.json": {
            "min_pixels": 3136, "max_pixels": 12845056,
            "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
            "image_mean": _CLIP_MEAN, "image_std": _CLIP_STD,
            "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor",
        },
    },
    "qwen3_vl": {"preprocessor_config.json": _QWEN3_IMAGE, "video_preprocessor_config.json": _QWEN3_VIDEO},
    "qwen3_5": {"preprocessor_config.json": _QWEN3_IMAGE, "video_preprocessor_config.json": _QWEN3_VIDEO},
}

# The chat templates render system / user (images, videos, text) / assistant turns as the published
# templates do (FAMILIES.md §3); tools and reasoning history are left out. Qwen2.5-VL opens with
# "You are a helpful assistant." when the first message is not a system one; Qwen3-VL (Instruct)
# adds nothing; Qwen3.5 trims each turn's text, opens the answer with "<think>\n" unless called
# with enable_thinking=False (then an empty think block), and writes that empty block before an
# assistant turn that follows the last user turn.
_RENDER_CONTENT = """\
{%- macro render_content(content) %}
    {%- if content is string %}
        {{- content }}
    {%- else %}
        {%- for item in content %}
            {%- if item.type == 'image' or 'image' in item or 'image_url' in item %}
                {%- set image_count.value = image_count.value + 1 %}
                {%- if add_vision_id %}{{- 'Picture ' ~ image_count.value ~ ': ' }}{%- endif %}
                {{- '<|vision_start|><|image_pad|><|vision_end|>' }}
            {%- elif item.type == 'video' or 'video' in item %}
                {%- set video_count.value = video_count.value + 1 %}
                {%- if add_vision_id %}{{- 'Video ' ~ video_count.value ~ ': ' }}{%- endif %}
                {{- '<|vision_start|><|video_pad|><|vision_end|>' }}
            {%- elif 'text' in item %}
                {{- item.text }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
{%- endmacro %}
{%- set image_count = namespace(value=0) %}
{%- set video_count = namespace(value=0) %}
"""
CHAT_TEMPLATES = {
    "qwen2_5_vl": _RENDER_CONTENT + """\
{%- for message in messages %}
    {%- if loop.first and message.role != 'system' %}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
    {{- '<|im_start|>' + message.role + '\\n' }}{{- render_content(message.content) }}{{- '<|im_end|>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
""",
    "qwen3_vl": _RENDER_CONTENT + """\
{%- for message in messages %}
    {{- '<|im_start|>' + message.role + '\\n' }}{{- render_content(message.content) }}{{- '<|im_end|>\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
""",
    "qwen3_5": _RENDER_CONTENT + """\
{%- set last = namespace(user=0) %}
{%- for message in messages %}
    {%- if message.role == 'user' %}{%- set last.user = loop.index0 %}{%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- set content = render_content(message.content)|trim %}
    {%- if message.role == 'assistant' and loop.index0 > last.user %}
        {{- '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + content + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- else %}
        {{- '<think>\\n' }}
    {%- endif %}
{%- endif %}
""",
}

# Context lengths of the published tokenizers (Qwen3.5's: not checked; it is Qwen3-VL's).
_MODEL_MAX_LENGTH = {"qwen2_5_vl": 131072, "qwen3_vl": 262144, "qwen3_5": 262144}


def build_qwen_tokenizer(family: str, vocab_size: int = 640):
    """A byte-level BPE with Qwen's added tokens at ids 0..25, as the family's tokenizer class.

    The BPE is trained under that class's own NFC normaliser and pre-tokenizer regex (Qwen3.5's
    also keeps combining marks inside words), which the class sets again when it loads, as it
    does for the published tokenizer.json. Single capital letters are single tokens (the byte
    alphabet is in the vocabulary), which score mode relies on.
    """
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers

    tokenizer_class = _tokenizer_class(family)
    pipeline = tokenizer_class()._tokenizer
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = pipeline.normalizer
    bpe.pre_tokenizer = pipeline.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[content for content, _ in QWEN_ADDED_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_TRAINING_TEXT * 4, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    tokenizer = tokenizer_class(
        vocab=model["vocab"],
        merges=[tuple(merge) for merge in model["merges"]],
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        model_max_length=_MODEL_MAX_LENGTH[family],
        errors="replace",
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
    )
    # Qwen marks <tool_call>..</think> non-special: single tokens that decoding keeps.
    tokenizer.add_tokens([AddedToken(content, special=special, normalized=False)
                          for content, special in QWEN_ADDED_TOKENS])
    tokenizer.chat_template = CHAT_TEMPLATES[family]
    return tokenizer


def _tokenizer_class(family: str):
    if family == "qwen3_5":
        from transformers import Qwen3_5Tokenizer
        return Qwen3_5Tokenizer
    from transformers import Qwen2Tokenizer
    return Qwen2Tokenizer


def tiny_qwen_config(family: str, tokenizer):
    """The family's config, tiny in width and depth, with the real vision patch geometry and rope layout.

    The vocabulary is padded to a multiple of 64 past the tokenizer, as the published configs are
    (151,936 rows for 151,665 tokens), so code that confuses the two sizes shows it.
    """
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"))}
    vocab_size = -(-len(tokenizer) // 64) * 64
    text = dict(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
        tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                  spatial_merge_size=2, temporal_patch_size=2)
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig
        # head_dim = 64 / 4 = 16: 8 rotary frequencies, split T/H/W in the published 16:24:24 ratio
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [2, 3, 3]}
        # Window attention over 112 px (4x4 merged patches) in block 0, full attention in block 1,
        # as the published blocks alternate (full at 7, 15, 23, 31).
        vision.update(patch_size=14, window_size=112, fullatt_block_indexes=[1], tokens_per_second=2,
                      hidden_act="silu")
        config_class = Qwen2_5_VLConfig
    elif family == "qwen3_vl":
        from transformers import Qwen3VLConfig
        text.update(head_dim=16)
        # 8 rotary frequencies, interleaved as the published [24, 20, 20]
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 5_000_000.0,
                                   "mrope_section": [4, 2, 2], "mrope_interleaved": True}
        # Both vision blocks feed the text model (deepstack), as three of the published 24 do.
        vision.update(patch_size=16, num_position_embeddings=2304, deepstack_visual_indexes=[0, 1])
        config_class = Qwen3VLConfig
    elif family == "qwen3_5":
        from transformers import Qwen3_5Config
        # Three Gated-DeltaNet layers and one full-attention layer, the published 3:1 pattern.
        # head_dim 32 at the published partial rotary factor 0.25 rotates 8 dims: 4 frequencies
        # split T/H/W as [11, 11, 10] is, interleaved.
        text.update(num_hidden_layers=4,
                    layer_types=["linear_attention"] * 3 + ["full_attention"],
                    head_dim=32, linear_num_key_heads=2, linear_num_value_heads=4,
                    linear_key_head_dim=16, linear_value_head_dim=16, linear_conv_kernel_dim=4)
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25,
                                   "mrope_section": [2, 1, 1], "mrope_interleaved": True}
        vision.update(patch_size=16, num_position_embeddings=2304)
        config_class = Qwen3_5Config
    else:
        raise ValueError(f"unknown Qwen family {family!r}; expected one of {', '.join(FAMILIES)}")
    return config_class(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)


def write_tiny_qwen_checkpoint(directory: Path | str, family: str, seed: int = 0) -> Path:
    """Write a random-weight tiny checkpoint of `family` (safetensors, config, tokenizer, processor files)."""
    import torch
    from transformers import AutoModelForImageTextToText

    if family not in FAMILIES:
        raise ValueError(f"unknown Qwen family {family!r}; expected one of {', '.join(FAMILIES)}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_qwen_tokenizer(family)
    config = tiny_qwen_config(family, tokenizer)
    config.roadbuddy_weights = "random"  # the loader says "random weights" about this checkpoint
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config).eval()
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    for name, settings in PROCESSOR_FILES[family].items():
        (directory / name).write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return directory
