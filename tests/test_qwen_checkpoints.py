"""The tiny Qwen checkpoints load like the published ones and their processors behave as FAMILIES.md says.

Each family's checkpoint is written once and loaded with AutoTokenizer and AutoModelForImageTextToText
(offline, safetensors, no remote code), then with the family's AutoProcessor (its video processor needs
torchvision, a test dependency), fed one processor-built prompt: four 448x448 RGB frames (noise), taken
at 0, 1, 2 and 3 s of a 9 s 30 fps clip and passed as the harness will pass them (do_sample_frames=False
and the clip's metadata).
"""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from roadbuddy.testing.qwen_checkpoints import FAMILIES, write_tiny_qwen_checkpoint

FRAMES = np.random.default_rng(0).integers(0, 256, (4, 448, 448, 3), dtype=np.uint8)
METADATA = {"fps": 30, "frames_indices": [0, 30, 60, 90], "total_num_frames": 270}
QUESTION = "Câu hỏi: Đèn giao thông màu gì?\nA. Đỏ\nB. Xanh\nC. Vàng\nD. Không có đèn"

# What the published checkpoints give for these frames (FAMILIES.md §2): Qwen2.5-VL bounds each
# frame (448 px stays 448: 32x32 patches of 14 px, merged 2x2 -> 256 tokens per frame pair);
# Qwen3-VL and Qwen3.5 bound the whole clip (448 -> 448: 28x28 patches of 16 px -> 196).
EXPECTED = {
    "qwen3_vl": SimpleNamespace(processor="Qwen3VLProcessor", video_processor="Qwen3VLVideoProcessor",
                                model="Qwen3VLForConditionalGeneration", grid=[2, 28, 28], tokens_per_pair=196),
    "qwen2_5_vl": SimpleNamespace(processor="Qwen2_5_VLProcessor", video_processor="Qwen2VLVideoProcessor",
                                  model="Qwen2_5_VLForConditionalGeneration", grid=[2, 32, 32], tokens_per_pair=256),
    "qwen3_5": SimpleNamespace(processor="Qwen3VLProcessor", video_processor="Qwen3VLVideoProcessor",
                               model="Qwen3_5ForConditionalGeneration", grid=[2, 28, 28], tokens_per_pair=196),
}


def video_messages(question: str, system: str | None = None) -> list[dict]:
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    return messages


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory):
    """One family's checkpoint, written and loaded: its model and tokenizer."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    family = request.param
    directory = write_tiny_qwen_checkpoint(tmp_path_factory.mktemp(family), family)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    model = AutoModelForImageTextToText.from_pretrained(directory, local_files_only=True, use_safetensors=True,
                                                        trust_remote_code=False).eval()
    return SimpleNamespace(family=family, directory=directory, tokenizer=tokenizer, model=model,
                           expected=EXPECTED[family])


@pytest.fixture(scope="module")
def loaded(checkpoint):
    """The checkpoint with its processor and the processor's inputs for the video prompt."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(checkpoint.directory, local_files_only=True)
    text = processor.apply_chat_template(video_messages(QUESTION), add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], videos=[FRAMES], do_sample_frames=False, video_metadata=[METADATA],
                       return_tensors="pt")
    return SimpleNamespace(**vars(checkpoint), processor=processor, inputs=inputs)


def test_loads_the_family_model_from_a_small_random_checkpoint(checkpoint):
    assert type(checkpoint.model).__name__ == checkpoint.expected.model
    assert checkpoint.model.config.roadbuddy_weights == "random"
    assert (checkpoint.directory / "model.safetensors").stat().st_size < 2 * 2**20


def test_config_token_ids_are_the_tokenizers(checkpoint):
    config, tokenizer = checkpoint.model.config, checkpoint.tokenizer
    for field, token in [("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
                         ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]:
        assert getattr(config, field) == tokenizer.convert_tokens_to_ids(token) == tokenizer.encode(token)[0], field
        assert len(tokenizer.encode(token)) == 1, token
    assert config.text_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_loads_the_family_processor(loaded):
    assert type(loaded.processor).__name__ == loaded.expected.processor
    assert type(loaded.processor.video_processor).__name__ == loaded.expected.video_processor
    assert loaded.processor.video_token_id == loaded.model.config.video_token_id


def test_letters_are_single_tokens_and_vietnamese_round_trips(checkpoint):
    tokenizer = checkpoint.tokenizer
    for letter in "ABCDEFGH":
        assert len(tokenizer.encode(letter, add_special_tokens=False)) == 1, letter
    assert tokenizer.decode(tokenizer.encode(QUESTION, add_special_tokens=False)) == QUESTION


def test_video_tokens_per_frame_pair(loaded):
    assert loaded.inputs["video_grid_thw"].tolist() == [loaded.expected.grid]
    video_tokens = (loaded.inputs["input_ids"] == loaded.model.config.video_token_id).sum().item()
    assert video_tokens == 2 * loaded.expected.tokens_per_pair
    assert loaded.inputs["mm_token_type_ids"].eq(2).sum().item() == video_tokens


@pytest.mark.parametrize("checkpoint", ["qwen3_vl", "qwen3_5"], indirect=True)
def test_qwen3_prompts_carry_each_frame_pairs_timestamp(loaded):
    prompt = loaded.processor.tokenizer.decode(loaded.inputs["input_ids"][0])
    pairs = re.findall(r"<(\d+\.\d) seconds><\|vision_start\|>((?:<\|video_pad\|>)+)<\|vision_end\|>", prompt)
    # each pair's time is the mean of its two frames' times: (0 + 1) / 2 and (2 + 3) / 2
    assert [seconds for seconds, _ in pairs] == ["0.5", "2.5"]
    assert [pads.count("<|video_pad|>") for _, pads in pairs] == [loaded.expected.tokens_per_pair] * 2


@pytest.mark.parametrize("checkpoint", ["qwen2_5_vl"], indirect=True)
def test_qwen2_5_seconds_per_grid_follow_the_sampled_rate(loaded):
    # Qwen2.5-VL spaces frame pairs in its M-RoPE positions by this, not by timestamps in the text
    sampled_fps = len(METADATA["frames_indices"]) / METADATA["total_num_frames"] * METADATA["fps"]
    assert loaded.inputs["second_per_grid_ts"].tolist() == pytest.approx([2 / sampled_fps])


def test_chat_template_system_turn(checkpoint):
    processor = checkpoint.tokenizer  # the tokenizer carries the chat template the processor renders
    bare = processor.apply_chat_template(video_messages("Q?"), add_generation_prompt=True, tokenize=False)
    default_system = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    user = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|>Q?<|im_end|>\n<|im_start|>assistant\n"
    assert bare.startswith(default_system + user if checkpoint.family == "qwen2_5_vl" else user)
    with_system = processor.apply_chat_template(video_messages("Q?", system="SYS"), add_generation_prompt=True,
                                                tokenize=False)
    assert with_system.startswith("<|im_start|>system\nSYS<|im_end|>\n" + user)


def test_forward_on_the_processor_outputs_gives_finite_logits(loaded):
    import torch

    with torch.no_grad():
        logits = loaded.model(**loaded.inputs).logits
    assert logits.shape == (1, loaded.inputs["input_ids"].shape[1], loaded.model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_the_testing_command_writes_each_familys_checkpoint(family, tmp_path):
    import json
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "roadbuddy.testing", "tiny-checkpoint", str(tmp_path / family),
                          "--family", family], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(tmp_path / family)
    assert json.loads((tmp_path / family / "config.json").read_text())["model_type"] == family
