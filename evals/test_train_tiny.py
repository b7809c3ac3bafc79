"""The tiny model's training feeds it exactly what the pipeline feeds it (in the default test run)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from evals import tiny_task, train_tiny
from roadbuddy import pipeline, tiles
from roadbuddy.config import RunConfig
from roadbuddy.data import Question
from roadbuddy.model import load_model
from roadbuddy.testing import build_tokenizer


@pytest.fixture(scope="module")
def lm(tiny_checkpoint):
    return load_model(RunConfig(model=str(tiny_checkpoint), device="cpu"))


def test_training_prompt_tokens_are_the_pipelines(lm):
    encoder = train_tiny.Encoder(lm.tokenizer, lm.tokens_per_tile)
    rng = random.Random(3)
    cfg = RunConfig()
    prefix = pipeline.prefix_ids_of(lm, [1] * tiny_task.FRAMES_SHOWN, cfg)[0].tolist()
    for seed in range(40):
        _, item = tiny_task.random_example(rng, seed)
        q = Question(id=f"t{seed}", question=item.question, choices=item.choices, raw_choices=item.choices,
                     video_path=None, video_rel="x.mp4")
        assert encoder.ids(item) == prefix + pipeline.question_ids(lm, q, cfg)[0].tolist(), item


def test_relabeled_prompt_prints_the_given_letters_and_targets_them(lm):
    encoder = train_tiny.Encoder(lm.tokenizer, lm.tokens_per_tile)
    rng = random.Random(0)
    scene, item = tiny_task.random_example(rng, 5)
    while len(item.choices) != 4:
        scene, item = tiny_task.random_example(rng, 5)
    text = lm.tokenizer.decode(encoder.ids(item, "CADB"))
    assert all(f"{label}. {choice}" in text for label, choice in zip("CADB", item.choices))
    *_, targets, _ = train_tiny.make_batch([(scene, item)], encoder, 56, None, ["CADB"])
    assert int(targets[0]) == "ABCD".index("CADB"[item.answer])


def test_training_frames_are_the_pipelines_tiles():
    """Rendered frames are tiled and normalised by roadbuddy.tiles, as prepare_clip does (one tile each)."""
    scene, _ = tiny_task.random_example(random.Random(1), 7)
    frames = np.stack([scene.frame(i) for i in scene.shown_frames()])
    expected, counts = tiles.frames_to_pixel_values(frames, 56, max_num=1)
    assert counts == [1] * tiny_task.FRAMES_SHOWN
    encoder = train_tiny.Encoder(build_tokenizer(), tokens_per_tile=4)
    got = train_tiny.make_batch([(scene, tiny_task.question(scene, random.Random(0), 4))], encoder, 56, None)[2]
    assert torch.equal(got, expected)
