"""The brief-evidence task: the frame selector's tiny task, where a question's evidence is on screen briefly.

A clip is the tiny task's drawn dashcam scene (roadbuddy.testing.tiny_task.Scene, the same light and signs),
CLIP_SECONDS long, in which the traffic light shows for EVIDENCE_SECONDS at a random time and a road sign
(round or triangle) for as long at another, the two moments at least APART_SECONDS apart. Each clip gets a
4-choice and a 2-choice question phrased like the tiny task's, one about the light and one about the sign
(which asks which drawn at random), each with `support_frames` at the middle of its object's time on screen,
and `_evidence` (first and last second it shows) and `_object` for the evals (the loader ignores fields it
does not know).

Why 16 seconds and not 8: hit@k counts a frame within 1 s of a support timestamp, so k = 4 evenly spread
frames (tiny_task.FRAMES_SHOWN) cover 4 x 2 s of the clip; over 8 s they hit every question, over 16 s about
half. They show the object itself (1 s of 16) in about a quarter of the questions. A selector must find the
moment, and find the right one of two: a question-blind detector of "something salient" picks the other
object's moment first half the time.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from roadbuddy.testing import tiny_task
from roadbuddy.testing.synth import write_clip

SELECTOR = Path(__file__).resolve().parent / "tiny_selector"  # the trained tiny selector (evals/train_tiny_selector.py)
FPS = tiny_task.FPS
CLIP_SECONDS = 16.0
NUM_FRAMES = round(CLIP_SECONDS * FPS)
EVIDENCE_SECONDS = 1.0
EVIDENCE_FRAMES = round(EVIDENCE_SECONDS * FPS)
APART_SECONDS = 4.0  # between the light's and the sign's support timestamps
TRAIN_SEED = 0  # scene seeds of the training split start here
HELDOUT_SEED = 90_000  # and of the held-out split here, far from any training split's
HELDOUT_CLIPS = 48  # 96 questions

SHAPES = {"round": "tròn", "triangle": "tam giác"}
SIGN_Q4 = "Biển báo trong video có hình gì?"
SIGN_CHOICES = ("Hình tròn", "Hình tam giác", "Hình chữ nhật", "Không có biển báo")
SIGN_Q2 = "Trong video có biển báo hình {shape}, đúng hay sai?"


@dataclass(frozen=True)
class BriefClip:
    """A scene whose light shows in frames [light_start, light_start + EVIDENCE_FRAMES) and whose sign in
    [sign_start, sign_start + EVIDENCE_FRAMES)."""

    scene: tiny_task.Scene
    light_start: int
    sign_start: int

    @property
    def sign(self) -> str:
        return self.scene.shows[1][0]

    def evidence(self, obj: str) -> tuple[float, float]:
        """Seconds of the first and the last frame that show `obj` ("light" or "sign")."""
        start = self.light_start if obj == "light" else self.sign_start
        return start / FPS, (start + EVIDENCE_FRAMES - 1) / FPS

    def support(self, obj: str) -> float:
        """The support timestamp of a question about `obj`: the middle of its time on screen."""
        first, last = self.evidence(obj)
        return round((first + last) / 2, 3)


def brief_clip(rng: random.Random, seed: int) -> BriefClip:
    """A clip with the light and a sign each on screen EVIDENCE_SECONDS, APART_SECONDS or more apart."""
    last_start = NUM_FRAMES - EVIDENCE_FRAMES
    apart = round(APART_SECONDS * FPS)
    light = rng.choice([s for s in range(last_start + 1) if s + apart <= last_start or s - apart >= 0])
    sign = rng.choice([s for s in range(last_start + 1) if abs(s - light) >= apart])
    kind = rng.choice(tiny_task.SIGNS)
    shows = (("light", light, light + EVIDENCE_FRAMES), (kind, sign, sign + EVIDENCE_FRAMES))
    return BriefClip(tiny_task.Scene(seed, NUM_FRAMES, rng.choice(list(tiny_task.COLOURS)), shows), light, sign)


def light_question(clip: BriefClip, rng: random.Random, num_choices: int,
                   truth_yes: bool | None = None) -> tiny_task.Item:
    """The tiny task's colour question (4 shuffled choices, or Đúng/Sai right when `truth_yes`)."""
    truth = tiny_task.COLOURS[clip.scene.colour]
    if num_choices == 4:
        choices = [*tiny_task.COLOURS.values(), tiny_task.NO_LIGHT]
        rng.shuffle(choices)
        return tiny_task.Item("light", tiny_task.COLOUR_Q4, tuple(choices), choices.index(truth))
    yes = rng.random() < 0.5 if truth_yes is None else truth_yes
    asked = truth if yes else rng.choice([c for c in tiny_task.COLOURS.values() if c != truth])
    return tiny_task.Item("light", tiny_task.COLOUR_Q2.format(colour=asked.lower()), tiny_task.YES_NO,
                          0 if yes else 1)


def sign_question(clip: BriefClip, rng: random.Random, num_choices: int,
                  truth_yes: bool | None = None) -> tiny_task.Item:
    """Which shape the sign has (4 shuffled choices), or whether it has a named shape (Đúng/Sai)."""
    if num_choices == 4:
        choices = list(SIGN_CHOICES)
        rng.shuffle(choices)
        return tiny_task.Item("sign", SIGN_Q4, tuple(choices), choices.index(f"Hình {SHAPES[clip.sign]}"))
    yes = rng.random() < 0.5 if truth_yes is None else truth_yes
    asked = clip.sign if yes else next(s for s in SHAPES if s != clip.sign)
    return tiny_task.Item("sign", SIGN_Q2.format(shape=SHAPES[asked]), tiny_task.YES_NO, 0 if yes else 1)


def write_split(directory: Path | str, *, clips: int, seed: int, prefix: str = "brief",
                balanced: bool = False) -> Path:
    """A labeled split in the RoadBuddy train layout (DIR/train/train.json + DIR/train/videos/*.mp4).

    Each clip's 4-choice question asks about the light or the sign (a coin; in turn when `balanced`) and its
    2-choice question about the other; with `balanced` Đúng is right for every other clip. Scene seeds
    start at `seed`.
    """
    rng = random.Random(seed)
    directory = Path(directory)
    items = []
    for c in range(clips):
        clip = brief_clip(rng, seed + c)
        rel = f"train/videos/{prefix}_{c:04d}.mp4"
        write_clip(directory / rel, clip.scene.frame, num_frames=NUM_FRAMES, fps=FPS)
        four = ("light", "sign")[c % 2] if balanced else rng.choice(("light", "sign"))
        for num_choices, obj in ((4, four), (2, "sign" if four == "light" else "light")):
            ask = light_question if obj == "light" else sign_question
            item = ask(clip, rng, num_choices, truth_yes=(c // 2) % 2 == 0 if balanced else None)
            choices = [f"{'ABCD'[i]}. {t}" for i, t in enumerate(item.choices)]
            items.append({"id": f"{prefix}_{len(items) + 1:05d}", "question": item.question, "choices": choices,
                          "answer": choices[item.answer], "support_frames": [clip.support(obj)],
                          "video_path": rel, "_object": obj, "_evidence": list(clip.evidence(obj))})
    path = directory / "train" / "train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"__count__": len(items), "data": items}, ensure_ascii=False, indent=1),
                    encoding="utf-8")
    return path


def write_heldout(directory: Path | str, *, clips: int = HELDOUT_CLIPS, seed: int = HELDOUT_SEED) -> Path:
    """The held-out split the tiny selector's eval measures: scene seeds from HELDOUT_SEED, balanced."""
    return write_split(directory, clips=clips, seed=seed, prefix="brief_heldout", balanced=True)
