"""The tiny model's training feeds it exactly what the pipeline feeds it (in the default test run)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from evals import train_tiny
from roadbuddy.config import RunConfig
from roadbuddy.data.questions import Question
from roadbuddy.families.internvl import tiles
from roadbuddy.families.internvl.model import load_model
from roadbuddy.families.internvl import inputs as internvl_inputs
from roadbuddy.testing import tiny_task
from roadbuddy.testing.checkpoints import build_tokenizer


@pytest.fixture(scope="module")
def lm(tiny_checkpoint):
    return load_model(RunConfig(model=str(tiny_checkpoint), device="cpu"))


def test_training_prompt_tokens_are_the_pipelines(lm):
    encoder = train_tiny.Encoder(lm.tokenizer, lm.tokens_per_tile)
    rng = random.Random(3)
    cfg = RunConfig()
    prefix = internvl_inputs.prefix_ids(lm.tokenizer, [1] * tiny_task.FRAMES_SHOWN, lm.tokens_per_tile, cfg)[0].tolist()
    for seed in range(60):
        _, item = tiny_task.random_example(rng, seed, order_share=0.4, time_share=0.3)
        q = Question(id=f"t{seed}", question=item.question, choices=item.choices, raw_choices=item.choices,
                     video_path=None, video_rel="x.mp4")
        assert encoder.ids(item) == prefix + internvl_inputs.question_ids(lm.tokenizer, q, cfg)[0].tolist(), item


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
    """Rendered frames are tiled and normalised by roadbuddy.families.internvl.tiles, as prepare_clip does (one tile each)."""
    scene, _ = tiny_task.random_example(random.Random(1), 7)
    frames = np.stack([scene.frame(i) for i in scene.shown_frames()])
    expected, counts = tiles.frames_to_pixel_values(frames, 56, max_num=1)
    assert counts == [1] * tiny_task.FRAMES_SHOWN
    encoder = train_tiny.Encoder(build_tokenizer(), tokens_per_tile=4)
    got = train_tiny.make_batch([(scene, tiny_task.question(scene, random.Random(0), 4))], encoder, 56, None)[2]
    assert torch.equal(got, expected)


def test_time_clips_are_the_same_scene_darker_and_asked_about_by_day_or_night():
    rng = random.Random(4)
    scenes = [tiny_task.time_scene(rng, seed, 20) for seed in range(40)]
    assert {s.time for s in scenes} == {"day", "night"} and all(s.kind == "time" for s in scenes)
    for scene in scenes[:6]:
        day = tiny_task.Scene(scene.seed, scene.num_frames, scene.colour, scene.shows)  # the same clip by day
        frame, bright = scene.frame(3).astype(np.float32), day.frame(3).astype(np.float32)
        assert scene.level == 1.0 if scene.time == "day" else tiny_task.NIGHT_LEVEL[0] <= scene.level <= tiny_task.NIGHT_LEVEL[1]
        assert np.abs(frame - np.floor(bright * scene.level)).max() <= 1
        for n in (2, 4):
            item = tiny_task.question(scene, rng, n)
            assert item.kind == "time"
            if n == 4:
                assert item.choices[item.answer] == tiny_task.TIMES[scene.time]
            else:  # Đúng exactly when the asked time is the scene's
                asked = "ban đêm" if "ban đêm" in item.question else "ban ngày"
                assert (item.answer == 0) == (asked == tiny_task.TIMES[scene.time].lower())


def test_without_time_share_no_time_clips_are_drawn():
    rng = random.Random(9)
    kinds = {tiny_task.random_example(rng, seed)[0].kind for seed in range(200)}
    assert kinds == {"colour", "order"}
    rng = random.Random(9)
    kinds = [tiny_task.random_example(rng, seed, order_share=0.3, time_share=0.4)[0].kind for seed in range(300)]
    assert 0.3 < kinds.count("time") / len(kinds) < 0.5


def test_heldout_split_has_each_kind_in_turn_and_a_prior_of_three_eighths(tmp_path):
    from roadbuddy.data.questions import load_questions, prior_letter

    split = tiny_task.write_heldout(tmp_path, clips=6)
    questions = load_questions(split)
    kinds = [q.video_rel.rsplit("_", 1)[1].removesuffix(".mp4") for q in questions[::2]]
    assert kinds == ["colour", "order", "time"] * 2
    full = load_questions(tiny_task.write_heldout(tmp_path / "full"))
    assert sum(prior_letter(q.num_choices) == q.answer for q in full) / len(full) == 0.375
