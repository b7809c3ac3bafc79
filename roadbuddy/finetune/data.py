"""Fine-tuning's data: the split by clip, each epoch's order, and examples built by roadbuddy.predict.inputs.

- The split holds clips out whole (no clip on both sides), drawn with the seed, or takes a given file.
- An epoch visits the training clips in a seeded order, a clip's questions together (one decode for
  all of them), each question with its choices in a seeded order of that epoch (the letter moves with
  its text). The order is a function of (seed, epoch), so a position in it is all a resumed run needs.
- A step of the optimizer takes the next `batch_size x grad_accum x processes` slots of the order;
  under torchrun rank r takes every world-th of them.
- Examples come from `inputs.prepare_clip` on the prefetch thread: the frames, the family's pixels (a
  clip's tiles, or a frame set's video inputs) and token ids of an example are what prediction sends for
  the same question and settings (tests/test_finetune.py, tests/test_finetune_qwen.py).
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from roadbuddy.config import RunConfig
from roadbuddy.data.questions import Question, QuestionFileError, group_by_video, load_questions
from roadbuddy.levers.choice_orders import permute_choices
from roadbuddy.predict.inputs import InputSpec
from roadbuddy.predict.prefetch import iter_prepared
from roadbuddy.video.reader import open_video
from roadbuddy.video.source import VideoError


class TrainDataError(QuestionFileError):
    """The training data cannot be trained on (no answers, no readable clip); one sentence naming file and field."""


@dataclass(frozen=True)
class Split:
    train: list[Question]
    val: list[Question]
    source: str  # how the validation questions were chosen

    def describe(self) -> dict:
        return {"source": self.source,
                "train": {"questions": len(self.train), "clips": sorted({q.video_rel for q in self.train})},
                "val": {"questions": len(self.val), "clips": sorted({q.video_rel for q in self.val})}}


def labeled_questions(path: Path, data_dir: Path | None) -> list[Question]:
    """Every question of a training file, each with its answer; TrainDataError naming the first without."""
    questions = load_questions(path, data_dir)
    missing = [q for q in questions if q.answer is None]
    if missing:
        which = "no item has" if len(missing) == len(questions) else f"item {missing[0].id} has no"
        raise TrainDataError(f"{Path(path).name}: {which} field 'answer'; fine-tuning needs every question labeled "
                             f"({len(missing)} of {len(questions)} are not)")
    return questions


def split_by_clip(questions: list[Question], fraction: float, seed: int) -> Split:
    """Hold out round(fraction x clips) whole clips (at least one when fraction > 0), drawn with `seed`."""
    clips = [video for video, _ in group_by_video(questions)]
    held = round(fraction * len(clips))
    if fraction > 0:
        held = min(max(held, 1), len(clips) - 1)
    chosen = set(random.Random(f"split:{seed}").sample(clips, held)) if held > 0 else set()
    return Split(train=[q for q in questions if q.video_path not in chosen],
                 val=[q for q in questions if q.video_path in chosen],
                 source=f"{held} of {len(clips)} clips held out with seed {seed}")


def given_split(train: list[Question], val: list[Question], val_path: Path) -> Split:
    """A validation file: its clips leave the training side, so no clip is on both."""
    val_clips = {q.video_path for q in val}
    kept = [q for q in train if q.video_path not in val_clips]
    dropped = len(train) - len(kept)
    note = f"; {dropped} training questions on its clips left out" if dropped else ""
    return Split(train=kept, val=val, source=f"the file {Path(val_path).name}{note}")


def unreadable_clips(questions: list[Question], threads: int = 0) -> dict[str, str]:
    """Clip -> reason for every clip of these questions that does not open (checked before training)."""
    bad = {}
    for video, qs in group_by_video(questions):
        if qs[0].video_error:
            bad[qs[0].video_rel] = qs[0].video_error
            continue
        try:
            with open_video(video, threads=threads):
                pass
        except VideoError as exc:
            bad[qs[0].video_rel] = exc.reason
    return bad


def choice_order(q: Question, seed: int, epoch: int) -> list[int]:
    """This epoch's order of the question's choices (a string seed is hashed by sha512: the same everywhere)."""
    order = list(range(q.num_choices))
    random.Random(f"choices:{seed}:{epoch}:{q.id}").shuffle(order)
    return order


def epoch_order(questions: list[Question], seed: int, epoch: int, shuffle_choices: bool) -> list[Question]:
    """The epoch's slots: clips in a seeded order, each clip's questions together in file order."""
    clips = group_by_video(questions)
    random.Random(f"order:{seed}:{epoch}").shuffle(clips)
    return [permute_choices(q, choice_order(q, seed, epoch)) if shuffle_choices else q
            for _, qs in clips for q in qs]


def steps_per_epoch(slots: int, per_step: int) -> int:
    return -(-slots // per_step)


@dataclass
class Example:
    """One question as the model sees it in training: its frames' pixels (the family's, as prepare_clip made
    them for prediction), its prompt, its answer."""

    question: Question  # with the choices in this epoch's order
    slot: int  # position in the epoch's order
    # where the family tiles frames: uint8 [tiles, 3, S, S], every view of the clip, shared by its examples; else None
    clip_tiles: torch.Tensor | None
    clip_key: str  # the same for the examples that share clip_tiles (the frozen tower runs once for them)
    tile_rows: list[int]  # rows of clip_tiles this question's frames have
    prefix_ids: torch.Tensor  # [1, T] int64
    suffix_ids: torch.Tensor  # [1, T] int64
    target: str  # the position letter of the answer
    frames: tuple[int, ...]
    error: str | None = None  # the clip failed to decode: the slot counts but teaches nothing
    vision: dict = field(default_factory=dict)  # the frame set's vision inputs, where the family's processor makes them

    @property
    def tiles(self) -> torch.Tensor:
        return self.clip_tiles[self.tile_rows]


def rank_slots(start: int, end: int, rank: int, world: int) -> list[int]:
    """This rank's share of the slots [start, end): every world-th one."""
    return [i for i in range(start, end) if (i - start) % world == rank]


def iter_examples(order: list[Question], slots: list[int], cfg: RunConfig, spec: InputSpec) -> Iterator[Example]:
    """The examples of these slots of an epoch's order, in order; consecutive slots of one clip are prepared
    (decoded, made into the family's pixels, tokenised) once, and the next clips are prepared on a worker thread meanwhile."""
    runs: list[tuple[Path, list[tuple[int, Question]]]] = []
    for slot in slots:
        q = order[slot]
        if runs and runs[-1][0] == q.video_path:
            runs[-1][1].append((slot, q))
        else:
            runs.append((q.video_path, [(slot, q)]))
    clips = [(video, [q for _, q in members]) for video, members in runs]
    for (video, members), clip in zip(runs, iter_prepared(clips, cfg, spec)):
        where = {q.id: g for g in clip.groups for q in g.questions}
        key = f"{video}#{members[0][0]}"
        for slot, q in members:
            if clip.error:
                none = torch.empty(1, 0, dtype=torch.long)
                yield Example(q, slot, torch.empty(0, dtype=torch.uint8), key, [], none, none, q.answer, (),
                              error=clip.error)
                continue
            group = where[q.id]
            yield Example(q, slot, clip.tiles, key, group.tile_rows, group.prefix_ids, group.suffix_ids[q.id],
                          q.answer, group.frames, vision=group.vision)
