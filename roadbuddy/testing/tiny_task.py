"""The synthetic task the tiny "seeing" model learns: answers that are only in the pixels.

A clip is a drawn dashcam scene (`roadbuddy.testing.synth.road_frame`) with up to two
salient objects: the traffic light (upper right, one lamp lit red, yellow or
green) and a road sign (upper left: a blue round sign or a yellow warning
triangle, both called "biển báo"). Two kinds of clip, two kinds of question,
each with 4 shuffled choices or 2 (Đúng/Sai), phrased like the real train
questions:

- colour clips: the light shows in every frame (sometimes with a sign beside it);
  "Video đang có đèn giao thông màu gì?" / "Đèn giao thông trong video có màu
  đỏ, đúng hay sai?"
- order clips: the light shows in the early frames and the sign in the later
  ones, or the other way round; "Trong video, đối tượng nào xuất hiện đầu
  tiên?" / "Trong video, biển báo xuất hiện trước đèn giao thông, đúng hay sai?"

- time clips: the same scenes by day or by night (every pixel at about a third
  of its level); "Video được quay vào thời điểm nào trong ngày?" / "Video được
  quay vào ban đêm, đúng hay sai?"

(A first version named the two sign shapes apart and had order clips with two
signs; after 3,500 steps the model still confused the shapes' names, so the
order task asks only light against sign.)

Colour questions need the pixels and the normalisation; order questions also
need the frames in order and each frame's features in its own slot; time
questions need the absolute pixel levels, which only the normalisation keeps:
the vision tower layer-normalises each patch's embedding, so raw 0-255 values
scaled by a third embed alike (a night and a day frame: cosine 0.9999 without
the normalisation, 0.93 with it), and a model given raw values cannot tell day
from night. The
training script (evals/train_tiny.py) renders frames in memory (`Scene.frame`);
the held-out split (`write_heldout`) encodes real H.264 clips that go through
the real pipeline. The trained checkpoint ships in the package (`CHECKPOINT`),
so `roadbuddy-predict --demo` and the evals use the same model.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from roadbuddy.config import RunConfig
from roadbuddy.testing.synth import road_frame, write_clip
from roadbuddy.video.frames import segment_indices

CHECKPOINT = Path(__file__).resolve().parent / "tiny_seeing"  # the trained tiny model (evals/train_tiny.py)
WIDTH, HEIGHT, FPS = 128, 72, 10.0  # 16:9, like the real 2560x1440 clips
FRAMES_SHOWN = 4  # the eval's min_frames = max_frames
HELDOUT_SEED = 20_000  # scene seeds of the held-out split start here; training uses seeds below it
HELDOUT_CLIPS = 24

COLOURS = {"red": "Đỏ", "yellow": "Vàng", "green": "Xanh"}
NO_LIGHT = "Không có đèn"
SIGNS = ("round", "triangle")  # drawing styles of the one sign object
OBJECTS = {"light": "Đèn giao thông", "sign": "Biển báo"}
ORDER_CHOICES = (*OBJECTS.values(), "Người đi bộ", "Không có đối tượng nào")

TIMES = {"day": "Ban ngày", "night": "Ban đêm"}
TIME_CHOICES = (*TIMES.values(), "Lúc bình minh", "Lúc hoàng hôn")
NIGHT_LEVEL = (0.28, 0.4)  # a night frame is the day frame times a level drawn from this range

COLOUR_Q4 = "Video đang có đèn giao thông màu gì?"
COLOUR_Q2 = "Đèn giao thông trong video có màu {colour}, đúng hay sai?"
ORDER_Q4 = "Trong video, đối tượng nào xuất hiện đầu tiên?"
ORDER_Q2 = "Trong video, {first} xuất hiện trước {second}, đúng hay sai?"
TIME_Q4 = "Video được quay vào thời điểm nào trong ngày?"
TIME_Q2 = "Video được quay vào {time}, đúng hay sai?"
YES_NO = ("Đúng", "Sai")

# The rule questions (fine-tuning's new skill; the checkpoint was never trained on them): what the light
# means for the driver. "What does the traffic light in the video signal?" with four meanings, and "The
# traffic light in the video signals: {meaning}, true or false?"
RULE_Q4 = "Đèn giao thông trong video báo hiệu điều gì?"
RULE_Q2 = "Đèn giao thông trong video báo hiệu: {meaning}, đúng hay sai?"
MEANINGS = {"green": "Được phép đi tiếp", "red": "Phải dừng lại", "yellow": "Giảm tốc độ, chuẩn bị dừng lại"}
MEANING_CHOICES = (*MEANINGS.values(), "Đường đang cấm xe đi vào")
RULE_SEED = 40_000  # scene seeds of the rule splits (training below RULE_HELDOUT_SEED, held out above)
RULE_HELDOUT_SEED = 60_000


@dataclass(frozen=True)
class Scene:
    seed: int  # background (road_frame's scene seed)
    num_frames: int
    colour: str  # the light's lit lamp, when the light shows
    shows: tuple[tuple[str, int, int], ...]  # (object, first frame, end frame) of each object shown
    time: str = ""  # time clips: "day" or "night"
    level: float = 1.0  # every pixel is multiplied by this (below 1 at night)

    @property
    def kind(self) -> str:
        if self.time:
            return "time"
        return "order" if len(self.shows) == 2 and self.shows[0][1] != self.shows[1][1] else "colour"

    def visible(self, index: int) -> list[str]:
        return [name for name, a, b in self.shows if a <= index < b]

    def frame(self, index: int) -> np.ndarray:
        objects = self.visible(index)
        image = road_frame(index, width=WIDTH, height=HEIGHT, light=self.colour if "light" in objects else None,
                           seed=self.seed)
        for name in objects:
            if name in SIGNS:
                draw_sign(image, name)
        if self.level != 1.0:
            image = (image.astype(np.float32) * self.level).astype(np.uint8)
        return image

    def shown_frames(self) -> list[int]:
        """The frames the eval's pipeline shows (uniform segments, no support windows)."""
        return segment_indices(self.num_frames, FPS, FRAMES_SHOWN)


@dataclass(frozen=True)
class Item:
    kind: str  # "colour", "order" or "time"
    question: str
    choices: tuple[str, ...]
    answer: int  # index into choices


def draw_sign(frame: np.ndarray, kind: str) -> None:
    """A road sign on a pole in the upper left: blue disc with a white rim, or a red-edged yellow triangle."""
    height, width = frame.shape[:2]
    size = max(8, int(0.36 * height))
    cx, top = int(0.2 * width), max(1, int(0.06 * height))
    cy = top + size / 2
    ys = np.arange(height, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(width, dtype=np.float32)[None, :] + 0.5
    pole = (np.abs(xs - cx) < max(1.0, 0.012 * width)) & (ys > cy) & (ys < 0.62 * height)
    frame[pole] = (150, 150, 150)
    if kind == "round":
        r = ((xs - cx) ** 2 + (ys - cy) ** 2) ** 0.5
        frame[r <= size / 2] = (235, 235, 235)
        frame[r <= size / 2 - max(1.5, 0.08 * size)] = (20, 70, 200)
    elif kind == "triangle":
        # point up: inside when below both slanted edges and above the base
        def inside(margin: float) -> np.ndarray:
            half = size / 2 - margin * 1.7
            y0, y1 = top + margin * 2.0, top + size - margin
            t = (ys - y0) / max(y1 - y0, 1.0)
            return (t >= 0) & (t <= 1) & (np.abs(xs - cx) <= half * t)
        frame[inside(0.0)] = (220, 30, 30)
        frame[inside(max(1.5, 0.1 * size))] = (250, 205, 20)
    else:
        raise ValueError(f"unknown sign {kind!r}")


def colour_scene(rng: random.Random, seed: int, num_frames: int) -> Scene:
    shows = [("light", 0, num_frames)]
    if rng.random() < 0.5:
        shows.append((rng.choice(SIGNS), 0, num_frames))
    return Scene(seed, num_frames, rng.choice(list(COLOURS)), tuple(shows))


def order_scene(rng: random.Random, seed: int, num_frames: int) -> Scene:
    """Two different objects; the first shows only in the first k shown frames, the second only after."""
    sign = rng.choice(SIGNS)
    first, second = rng.sample(["light", sign], 2)
    shown = segment_indices(num_frames, FPS, FRAMES_SHOWN)
    k = rng.choice([1, 2, 2, 3])  # how many shown frames see the first object
    cut_lo, cut_hi = shown[k - 1] + 1, shown[k]  # the first object leaves, the second arrives, in between
    end_first = rng.randint(cut_lo, cut_hi)
    start_second = rng.randint(end_first, cut_hi)
    return Scene(seed, num_frames, rng.choice(list(COLOURS)),
                 ((first, 0, end_first), (second, start_second, num_frames)))


def time_scene(rng: random.Random, seed: int, num_frames: int) -> Scene:
    """A colour clip's objects, by day or by night."""
    base = colour_scene(rng, seed, num_frames)
    time = rng.choice(list(TIMES))
    level = rng.uniform(*NIGHT_LEVEL) if time == "night" else 1.0
    return Scene(base.seed, base.num_frames, base.colour, base.shows, time=time, level=level)


def object_name(shown: str) -> str:
    """What questions call a shown object: the light, or any sign style."""
    return OBJECTS["sign" if shown in SIGNS else shown]


def question(scene: Scene, rng: random.Random, num_choices: int, truth_yes: bool | None = None,
             shuffle: bool = True) -> Item:
    """One question about the scene; for 2 choices, `truth_yes` (default: a coin) says whether Đúng is right.

    4 choices are shuffled unless `shuffle` is False (the training curriculum starts with them in a fixed order).
    """
    yes = rng.random() < 0.5 if truth_yes is None else truth_yes
    order = rng.shuffle if shuffle else (lambda _x: None)
    if scene.kind == "colour":
        truth = COLOURS[scene.colour]
        if num_choices == 4:
            choices = [*COLOURS.values(), NO_LIGHT]
            order(choices)
            return Item("colour", COLOUR_Q4, tuple(choices), choices.index(truth))
        asked = truth if yes else rng.choice([c for c in COLOURS.values() if c != truth])
        return Item("colour", COLOUR_Q2.format(colour=asked.lower()), YES_NO, 0 if yes else 1)
    if scene.kind == "time":
        truth = TIMES[scene.time]
        if num_choices == 4:
            choices = list(TIME_CHOICES)
            order(choices)
            return Item("time", TIME_Q4, tuple(choices), choices.index(truth))
        asked = truth if yes else next(t for t in TIMES.values() if t != truth)
        return Item("time", TIME_Q2.format(time=asked.lower()), YES_NO, 0 if yes else 1)
    first, second = scene.shows[0][0], scene.shows[1][0]
    if num_choices == 4:
        choices = list(ORDER_CHOICES)
        order(choices)
        return Item("order", ORDER_Q4, tuple(choices), choices.index(object_name(first)))
    a, b = (first, second) if yes else (second, first)
    text = ORDER_Q2.format(first=object_name(a).lower(), second=object_name(b).lower())
    return Item("order", text, YES_NO, 0 if yes else 1)


def rule_question(scene: Scene, rng: random.Random, num_choices: int, truth_yes: bool | None = None) -> Item:
    """A rule question about a colour clip: green lets the car go on, red stops it, yellow slows it down."""
    truth = MEANINGS[scene.colour]
    if num_choices == 4:
        choices = list(MEANING_CHOICES)
        rng.shuffle(choices)
        return Item("rule", RULE_Q4, tuple(choices), choices.index(truth))
    yes = rng.random() < 0.5 if truth_yes is None else truth_yes
    asked = truth if yes else rng.choice([m for m in MEANINGS.values() if m != truth])
    return Item("rule", RULE_Q2.format(meaning=asked.lower()), YES_NO, 0 if yes else 1)


def write_labeled_split(directory: Path | str, *, clips: int, seed: int, rule_share: float = 0.7,
                        prefix: str = "rule") -> Path:
    """A labeled split in the RoadBuddy train layout (DIR/train/train.json + encoded clips) for fine-tuning
    and its evals: about `rule_share` of the clips are colour clips asked two rule questions (4 meanings,
    and Có/Không), the rest colour, order and time clips asked their old questions, so a fine-tune that
    learns the rule can be seen not to forget the rest. Each item carries its question kind in `_kind`
    (the loader ignores fields it does not know). In every clip one question has 4 choices and one 2
    (Đúng/Sai, right half the time).
    """
    rng = random.Random(seed)
    directory = Path(directory)
    items = []
    for c in range(clips):
        num_frames = rng.randint(18, 30)
        rule = rng.random() < rule_share
        make = colour_scene if rule else (colour_scene, order_scene, time_scene)[c % 3]
        scene = make(rng, seed + c, num_frames)
        rel = f"train/videos/{prefix}_{c:04d}_{'rule' if rule else scene.kind}.mp4"
        write_clip(directory / rel, scene.frame, num_frames=num_frames, fps=FPS)
        for num_choices in (4, 2):
            item = rule_question(scene, rng, num_choices) if rule else question(scene, rng, num_choices)
            choices = [f"{'ABCD'[i]}. {t}" for i, t in enumerate(item.choices)]
            items.append({"id": f"{prefix}_{len(items) + 1:05d}", "question": item.question, "choices": choices,
                          "answer": choices[item.answer], "support_frames": [round(num_frames / FPS / 2, 3)],
                          "video_path": rel, "_kind": item.kind})
    path = directory / "train" / "train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"__count__": len(items), "data": items}, ensure_ascii=False, indent=1),
                    encoding="utf-8")
    return path


def random_example(rng: random.Random, seed: int, order_share: float = 0.5,
                   shuffle_share: float = 1.0, time_share: float = 0.0) -> tuple[Scene, Item]:
    """A training example: a random clip length, kind (order with probability `order_share`, time with
    `time_share`, else colour), question form and answer; 4 choices are shuffled with probability
    `shuffle_share`. With time_share 0 the draws are those of the version without time clips."""
    num_frames = rng.randint(16, 40)
    pick = rng.random()
    make = order_scene if pick < order_share else time_scene if pick < order_share + time_share else colour_scene
    scene = make(rng, seed, num_frames)
    return scene, question(scene, rng, rng.choice([2, 4]), shuffle=rng.random() < shuffle_share)


def eval_config(model: Path | str, split: Path | str, output: Path | str, **changes) -> RunConfig:
    """The one RunConfig of the tiny-model eval: the frames the model was trained on, otherwise the defaults
    (detailed prompts, score mode, one tile per frame), on CPU."""
    settings = dict(model=str(model), test_json=Path(split), output=Path(output), device="cpu",
                    min_frames=FRAMES_SHOWN, max_frames=FRAMES_SHOWN, support_frames=False, progress=False)
    settings.update(changes)
    return RunConfig(**settings)


def write_heldout(directory: Path | str, *, clips: int = HELDOUT_CLIPS, seed: int = HELDOUT_SEED) -> Path:
    """A labeled split in the RoadBuddy train layout: DIR/train/train.json + DIR/train/videos/*.mp4.

    A third of the clips each are colour, order and time clips (in turn); each clip
    gets a 4-choice and a 2-choice question. Đúng is right for exactly half the 2-choice
    questions, and the shuffled 4 choices are rotated so that right answers
    cycle through A-D, so the prior baseline (B for 2 choices, A otherwise)
    scores exactly 37.5%. Scene seeds start at `seed`,
    disjoint from the training seeds.
    """
    rng = random.Random(seed)
    directory = Path(directory)
    items = []
    for c in range(clips):
        num_frames = rng.randint(18, 30)
        make = (colour_scene, order_scene, time_scene)[c % 3]
        scene = make(rng, seed + c, num_frames)
        rel = f"train/videos/seeing_{c:03d}_{scene.kind}.mp4"
        write_clip(directory / rel, scene.frame, num_frames=num_frames, fps=FPS)
        for num_choices, yes in ((4, None), (2, (c // 2) % 2 == 0)):
            item = question(scene, rng, num_choices, truth_yes=yes)
            if num_choices == 4:  # rotate the shuffled choices so right answers cycle through A, B, C, D
                turn = (item.answer - (c // 2) % 4) % 4
                item = Item(item.kind, item.question, item.choices[turn:] + item.choices[:turn], (c // 2) % 4)
            choices = [f"{'ABCD'[i]}. {t}" for i, t in enumerate(item.choices)]
            items.append({
                "id": f"seeing_{len(items) + 1:04d}",
                "question": item.question,
                "choices": choices,
                "answer": choices[item.answer],
                "support_frames": [round(num_frames / FPS / 2, 3)],
                "video_path": rel,
            })
    path = directory / "train" / "train.json"
    path.write_text(json.dumps({"__count__": len(items), "data": items}, ensure_ascii=False, indent=2),
                    encoding="utf-8")
    return path
