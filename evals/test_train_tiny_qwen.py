"""The tiny Qwen3-VL's training (evals/train_tiny_qwen.py) feeds it exactly what the pipeline sends a Qwen3-VL for
tiny-task questions: the same prompt ids, video tokens and timestamps, from the same processor settings."""
from __future__ import annotations

import random

import pytest
import torch

from evals import train_tiny_qwen
from roadbuddy.config import RunConfig
from roadbuddy.data.questions import Question
from roadbuddy.families import registry
from roadbuddy.predict import inputs
from roadbuddy.testing import tiny_task
from roadbuddy.testing.qwen_checkpoints import write_tiny_qwen_checkpoint
from roadbuddy.testing.synth import write_clip


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    directory = write_tiny_qwen_checkpoint(tmp_path_factory.mktemp("q3"), "qwen3_vl")
    return registry.load_model(RunConfig(model=str(directory), device="cpu"))


def test_training_prompts_are_the_pipelines(lm, tmp_path):
    """Scenes encoded as H.264 clips and answered through prepare_clip with the eval's settings give token for
    token the ids the trainer builds for the same scenes and questions (processor on the rendered frames), and the
    trainer's target is the question's answer letter."""
    batcher = train_tiny_qwen.Batcher(lm.processor)
    rng = random.Random(4)
    for seed in range(6):
        scene, item = tiny_task.random_example(rng, seed, order_share=0.4, time_share=0.3)
        video = write_clip(tmp_path / f"s{seed}.mp4", scene.frame, num_frames=scene.num_frames, fps=tiny_task.FPS,
                           width=tiny_task.WIDTH, height=tiny_task.HEIGHT)
        labels = tuple(f"{'ABCD'[i]}. {c}" for i, c in enumerate(item.choices))
        q = Question(id=f"t{seed}", question=item.question, choices=item.choices, raw_choices=labels,
                     video_path=video, video_rel=video.name)
        cfg = tiny_task.eval_config("tiny", tmp_path / "split.json", tmp_path / "out.csv")
        clip = inputs.prepare_clip(video, [q], cfg, inputs.InputSpec.of(lm))
        (group,) = clip.groups
        assert list(group.frames) == scene.shown_frames()
        batch, targets, sizes = batcher([(scene, item)], None)
        pipeline_ids = torch.cat([group.prefix_ids, group.suffix_ids[q.id]], dim=1)
        assert torch.equal(batch["input_ids"], pipeline_ids), seed
        assert torch.equal(batch["video_grid_thw"], group.vision["video_grid_thw"])
        assert int(targets[0]) == item.answer and int(sizes[0]) == len(item.choices)


def test_relabeled_prompts_print_the_given_letters_and_target_the_printed_one(lm):
    batcher = train_tiny_qwen.Batcher(lm.processor)
    rng = random.Random(0)
    scene, item = tiny_task.random_example(rng, 5)
    while len(item.choices) != 4:
        scene, item = tiny_task.random_example(rng, 5)
    batch, targets, _ = batcher([(scene, item)], None, ["CADB"])
    text = lm.tokenizer.decode(batch["input_ids"][0])
    assert all(f"{label}. {choice}" in text for label, choice in zip("CADB", item.choices))
    assert int(targets[0]) == "ABCD".index("CADB"[item.answer])
    assert RunConfig().system_prompt == "project" and text.startswith("<|im_start|>system\n")
