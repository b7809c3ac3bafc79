"""One run: questions -> clips -> frames -> tiles -> prompts -> model -> answers on disk.

    run(cfg) validates the question file and the output folder before loading
    anything heavy, resumes from predictions.jsonl, decodes the next clips on a
    worker thread while the model answers the current one, and writes the CSVs.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from roadbuddy import answers, distributed, frames, memory, prompts, tiles
from roadbuddy.config import RunConfig
from roadbuddy.data import Question, group_by_video, load_questions, prior_letter
from roadbuddy.distributed import Shard
from roadbuddy.model import (LoadedModel, can_pack, encode_tiles, forward, forward_packed, greedy, letter_probs,
                             new_cache, rewind, tokenize)
from roadbuddy.output import (OutputError, OutputPaths, PredictionLog, RunLock, check_run_info, load_predictions,
                              prepare_output, write_submissions)
from roadbuddy.video import VideoError, open_video

log = logging.getLogger(__name__)


@dataclass
class ClipWork:
    """A decoded, tiled clip: everything CPU-side that its questions need."""

    video: Path
    questions: list[Question]
    frames_by_question: dict[str, tuple[int, ...]] = field(default_factory=dict)
    frame_order: list[int] = field(default_factory=list)  # decoded frame indices, ascending
    tiles: torch.Tensor | None = None  # uint8 [N,3,S,S]: the tiles of frame_order, concatenated (normalised on the device)
    tiles_per_frame: list[int] = field(default_factory=list)
    prepare_ms: float = 0.0
    error: str | None = None
    frame_cap: int | None = None  # set when --sample-timeout lowered this clip's frame count

    def tile_rows(self, frame_indices: tuple[int, ...]) -> list[int]:
        """Rows of `tiles` (and of the encoded features) holding the tiles of these frames, in order."""
        starts = np.concatenate([[0], np.cumsum(self.tiles_per_frame)])
        pos = {f: i for i, f in enumerate(self.frame_order)}
        return [r for f in frame_indices for r in range(starts[pos[f]], starts[pos[f] + 1])]

    def tiles_of(self, frame_indices: tuple[int, ...]) -> list[int]:
        pos = {f: i for i, f in enumerate(self.frame_order)}
        return [self.tiles_per_frame[pos[f]] for f in frame_indices]


def plan_frames(info, questions: list[Question], cfg: RunConfig, image_size: int,
                tokens_per_tile: int) -> dict[str, tuple[int, ...]]:
    """Frame indices per question: the adaptive count, plus windows around support timestamps."""
    per_frame = tokens_per_tile * frames.tiles_per_frame(info.width, info.height, cfg.max_num, cfg.use_thumbnail,
                                                         image_size=image_size)
    count = frames.frame_count(info.duration, min_frames=cfg.min_frames, max_frames=cfg.max_frames,
                               frames_per_second=cfg.frames_per_second, max_visual_tokens=cfg.max_visual_tokens,
                               tokens_per_frame=per_frame)
    planned = {}
    for q in questions:
        support = q.support_frames if cfg.support_frames else ()
        planned[q.id] = tuple(frames.select_frames(info.num_frames, info.fps, count, support,
                                                   support_window=cfg.support_window,
                                                   support_share=cfg.support_share))
    return planned


def prepare_clip(video: Path, questions: list[Question], cfg: RunConfig, image_size: int,
                 tokens_per_tile: int) -> ClipWork:
    """Decode the union of every question's frames once and tile them (CPU only; safe on a worker thread)."""
    work = ClipWork(video=video, questions=questions)
    if questions[0].video_error:
        work.error = questions[0].video_error
        return work
    start = time.perf_counter()
    try:
        # One tile per frame is one resize to SxS: letting the decoder do it skips the full-size RGB
        # conversion and PIL resize (pixels differ from the card's by about one uint8 level; see
        # bench/README.md). PyAV's sequential decode with swscale's bicubic is the faster reader for it.
        scale = (image_size, image_size) if cfg.decoder_scaling and cfg.max_num == 1 else None
        with open_video(video, threads=cfg.decode_threads, prefer="pyav" if scale else "decord") as reader:
            work.frames_by_question = plan_frames(reader.info, questions, cfg, image_size, tokens_per_tile)
            work.frame_order = sorted({f for idx in work.frames_by_question.values() for f in idx})
            decoded = reader.get(work.frame_order, size=scale)
        work.tiles, work.tiles_per_frame = tiles.frames_to_tiles(
            decoded, image_size, max_num=cfg.max_num, use_thumbnail=cfg.use_thumbnail)
    except VideoError as exc:
        work.error = str(exc)
    work.prepare_ms = (time.perf_counter() - start) * 1000
    return work


def _sync(lm: LoadedModel) -> None:
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)


# a record's time_split_ms: its shares of the clip's decode and tiling, vision tower and prefill, and its own pass
TIME_STEPS = ("decode_tiles", "vision", "prefill", "question")


def answer_clip(lm: LoadedModel, work: ClipWork, cfg: RunConfig) -> Iterator[dict]:
    """Answer every question of a prepared clip, yielding each record as soon as it is made."""
    by_frames: dict[tuple[int, ...], list[Question]] = {}
    for q in work.questions:
        by_frames.setdefault(work.frames_by_question[q.id], []).append(q)

    vision_ms = 0.0
    features = None
    if cfg.share_prefix:
        t = time.perf_counter()
        features = encode_tiles(lm, work.tiles, cfg.vision_batch)
        _sync(lm)
        vision_ms = (time.perf_counter() - t) * 1000
    clip_ms = work.prepare_ms + vision_ms
    n = len(work.questions)

    for frame_idx, group in by_frames.items():
        rows = work.tile_rows(frame_idx)
        tiles_per_frame = work.tiles_of(frame_idx)
        prefix_ids = prefix_ids_of(lm, tiles_per_frame, cfg)
        suffixes = {q.id: question_ids(lm, q, cfg) for q in group}
        group_ms = 0.0
        if cfg.share_prefix:
            t = time.perf_counter()
            cache = new_cache(lm)
            forward(lm, prefix_ids, features[rows], cache, chunk=cfg.prefill_chunk)
            prefix_len = cache.get_seq_length()
            _sync(lm)
            group_ms = (time.perf_counter() - t) * 1000
        packed = {}
        if cfg.share_prefix and cfg.batch_questions and cfg.answer_mode == "score" and can_pack(lm):
            packed = _packed_logits(lm, [suffixes[q.id] for q in group], [q.id for q in group], cache, prefix_len,
                                    cfg.prefill_chunk)
        for q in group:
            t = time.perf_counter()
            suffix_ids = suffixes[q.id]
            pass_ms = 0.0
            if q.id in packed:
                logits, pass_ms = packed[q.id]
            elif cfg.share_prefix:
                logits = forward(lm, suffix_ids, None, cache)
            else:  # the plain path: re-encode this question's frames, prefill the whole prompt
                cache = new_cache(lm)
                q_features = encode_tiles(lm, work.tiles[rows], cfg.vision_batch)
                logits = forward(lm, torch.cat([prefix_ids, suffix_ids], dim=1), q_features, cache,
                                 chunk=cfg.prefill_chunk)
            record = _answer(lm, q, logits, cache, cfg)
            if cfg.share_prefix:
                rewind(cache, prefix_len)
            _sync(lm)
            own_ms = (time.perf_counter() - t) * 1000 + pass_ms
            record.update(
                frames=list(frame_idx),
                tiles=int(sum(tiles_per_frame)),
                visual_tokens=int(sum(tiles_per_frame) * lm.tokens_per_tile),
                prompt_tokens=int(prefix_ids.shape[1] + suffix_ids.shape[1]),
                time_ms=round(clip_ms / n + group_ms / len(group) + own_ms, 3),
                timings_ms={"clip_shared": round(clip_ms, 3), "group_prefill": round(group_ms, 3),
                            "question": round(own_ms, 3)},
                # this question's time_ms, split by step (they add up to it): its share of the clip's decode
                # and tiling, of the vision tower and of its frame set's prefill, and its own forward (on the
                # plain path that holds its vision tower and whole prefill)
                time_split_ms=dict(zip(TIME_STEPS, (round(work.prepare_ms / n, 3), round(vision_ms / n, 3),
                                                    round(group_ms / len(group), 3), round(own_ms, 3)))),
            )
            yield record


def _packed_logits(lm: LoadedModel, suffixes: list[torch.Tensor], ids: list[str], cache, prefix_len: int,
                   max_tokens: int) -> dict[str, tuple[torch.Tensor, float]]:
    """Next-token logits of every question that shares a forward pass with another, by id, with its share
    of that pass in ms; a question alone in its pack is left out (it takes the one-question path)."""
    out = {}
    for pack in question_packs(suffixes, max_tokens):
        if len(pack) < 2:
            continue
        t = time.perf_counter()
        logits = forward_packed(lm, [suffixes[i] for i in pack], cache)
        rewind(cache, prefix_len)
        _sync(lm)
        share = (time.perf_counter() - t) * 1000 / len(pack)
        out.update({ids[i]: (logits[j], share) for j, i in enumerate(pack)})
    return out


def question_packs(suffixes: list[torch.Tensor], max_tokens: int) -> list[list[int]]:
    """Consecutive questions grouped so each group's suffix tokens stay within `max_tokens` (0 = no bound);
    a question longer than that goes alone. The pipeline passes the prefill chunk: a pack then attends
    to at most the prefix plus a chunk's worth of tokens, as the prefill's last chunk did, so its
    activations and attention scores never exceed the prefill's (the peak the VRAM estimate covers)."""
    packs: list[list[int]] = []
    tokens = 0
    for i, suffix in enumerate(suffixes):
        n = suffix.shape[1]
        if not packs or (max_tokens > 0 and tokens + n > max_tokens):
            packs.append([])
            tokens = 0
        packs[-1].append(i)
        tokens += n
    return packs


def prefix_ids_of(lm: LoadedModel, tiles_per_frame, cfg: RunConfig) -> torch.Tensor:
    """The shared prefix: system turn, the frames' image slots and the question-independent intro."""
    frames_block = prompts.frames_text(tiles_per_frame, lm.tokens_per_tile) + prompts.intro_text(cfg.simple_prompts)
    return tokenize(lm, prompts.prompt_prefix(frames_block))


def question_ids(lm: LoadedModel, q: Question, cfg: RunConfig) -> torch.Tensor:
    """The suffix: the question from the file with its choices, tokenized as plain text, then the turn's end."""
    block = tokenize(lm, prompts.question_body(q.question, q.choices, simple=cfg.simple_prompts), as_text=True)
    return torch.cat([block, tokenize(lm, prompts.prompt_suffix(""))], dim=1)


def smaller_config(cfg: RunConfig, work: ClipWork) -> RunConfig | None:
    """The next rung of the out-of-memory ladder: one tile per frame, then half the frames, down to one."""
    if cfg.max_num > 1:
        return cfg.replace(max_num=1)
    used = max((len(f) for f in work.frames_by_question.values()), default=cfg.max_frames)
    if used <= 1:
        return None
    fewer = max(1, used // 2)
    return cfg.replace(max_frames=fewer, min_frames=min(cfg.min_frames, fewer))


def _free_gpu_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def answer_with_ladder(lm: LoadedModel, work: ClipWork, cfg: RunConfig) -> Iterator[dict]:
    """answer_clip, retrying the unanswered questions with fewer tiles, then fewer frames, on CUDA OOM."""
    attempt_cfg, retries = cfg, 0
    while True:
        answered = set()
        try:
            for record in answer_clip(lm, work, attempt_cfg):
                if retries:
                    record.update(oom_retries=retries, degraded={"max_num": attempt_cfg.max_num,
                                                                 "max_frames": attempt_cfg.max_frames})
                answered.add(record["id"])
                yield record
            return
        except torch.cuda.OutOfMemoryError:
            pass  # handled below, outside the except block, so the failed attempt's tensors can be freed
        _free_gpu_memory()
        remaining = [q for q in work.questions if q.id not in answered]
        next_cfg = smaller_config(attempt_cfg, work)
        if next_cfg is None:
            work = ClipWork(video=work.video, questions=remaining, error="CUDA out of memory even with one frame")
            yield from error_records(work)
            return
        log.warning("CUDA out of memory on %s; retrying %d questions with max_num=%d, max_frames=%d",
                    work.video, len(remaining), next_cfg.max_num, next_cfg.max_frames)
        attempt_cfg, retries = next_cfg, retries + 1
        work = prepare_clip(work.video, remaining, attempt_cfg, lm.image_size, lm.tokens_per_tile)
        if work.error:
            yield from error_records(work)
            return


def _answer(lm: LoadedModel, q: Question, logits: torch.Tensor, cache, cfg: RunConfig) -> dict:
    probs = letter_probs(lm, logits, q.letters)
    scored = max(probs, key=probs.get)
    record = {"id": q.id, "answer": scored, "mode": "score", "probs": {k: round(v, 6) for k, v in probs.items()}}
    if cfg.answer_mode == "generate":
        text = greedy(lm, logits, cache, cfg.max_new_tokens)
        parsed = answers.parse_answer(text, q.choices)
        record.update(raw=text, mode="generate")
        if parsed is None:
            record.update(mode="generate-fallback-score", fallback=True)
        else:
            record["answer"] = parsed
    return record


def error_records(work: ClipWork) -> list[dict]:
    return [{"id": q.id, "answer": prior_letter(q.num_choices), "mode": "error-prior", "error": work.error,
             "time_ms": round(work.prepare_ms / len(work.questions), 3)} for q in work.questions]


@dataclass
class RunSummary:
    total: int = 0
    answered: int = 0
    resumed: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # question id -> reason
    fallbacks: int = 0
    unexpected: int = 0  # clips that failed with an unexpected error (the CLI exits 1)
    seconds: float = 0.0
    paths: OutputPaths | None = None
    modes: Counter = field(default_factory=Counter)

    def lines(self) -> list[str]:
        out = [f"answered {self.answered} new + {self.resumed} resumed of {self.total} questions "
               f"in {self.seconds:.1f} s; modes {dict(self.modes)}"]
        if self.fallbacks:
            out.append(f"{self.fallbacks} generated answers could not be parsed and fell back to the score answer")
        if self.errors:
            out.append(f"{len(self.errors)} questions got the prior answer because their video failed:")
            out += [f"  {qid}: {why}" for qid, why in self.errors.items()]
        if self.paths:
            out.append(f"wrote {self.paths.submission} and {self.paths.time_submission}")
        return out


def planned_prompt_tokens(cfg: RunConfig, image_size: int, tokens_per_tile: int) -> int:
    """Tokens of the largest prompt this configuration allows on a 16:9 clip (for the VRAM estimate)."""
    per_frame = tokens_per_tile * frames.tiles_per_frame(2560, 1440, cfg.max_num, cfg.use_thumbnail,
                                                         image_size=image_size)
    visual = min(cfg.max_frames * per_frame, max(per_frame, cfg.max_visual_tokens // per_frame * per_frame))
    return visual + 400  # system prompt, frame labels, question and choices


def print_estimate(cfg: RunConfig, say) -> None:
    from roadbuddy.model import resolve_model_id

    try:
        config = memory.load_config(resolve_model_id(cfg.model)[0])
    except Exception as exc:  # offline with no cached config: nothing to estimate from
        say(f"VRAM estimate skipped: no config for {cfg.model} ({str(exc).splitlines()[0]})")
        return
    vision = config.vision_config
    size = vision.image_size[0] if isinstance(vision.image_size, (list, tuple)) else vision.image_size
    patch = vision.patch_size[0] if isinstance(vision.patch_size, (list, tuple)) else vision.patch_size
    tokens_per_tile = int((size // patch) ** 2 * config.downsample_ratio ** 2)
    est = memory.estimate_vram(config, quantization=cfg.quantization,
                               prompt_tokens=planned_prompt_tokens(cfg, size, tokens_per_tile),
                               vision_batch=cfg.vision_batch, prefill_chunk=cfg.prefill_chunk,
                               embeddings_on_gpu=not cfg.embeddings_on_cpu)
    say(est.describe())
    gpu = memory.gpu_memory() if torch.cuda.is_available() else None
    if gpu and est.total > gpu[0]:
        say(f"WARNING: the estimate exceeds the GPU's free memory ({gpu[0] / memory.GiB:.2f} GiB); "
            "try --load-in-4bit, fewer --max-frames or a lower --max-visual-tokens")


class SampleBudget:
    """--sample-timeout: learns what a frame costs per clip and caps the frames so each question fits.

    A question's time is its clip's shared work (decode, tiles, vision tower,
    prefill: all proportional to the frames) divided among the clip's questions,
    plus its own short forward pass. Both rates are learned from the clips
    answered so far (the first clip runs as configured and calibrates them), and
    a clip with n questions gets at most (timeout x 0.8 - own) x n / (ms per frame) frames.
    """

    SAFETY = 0.8

    def __init__(self, timeout_s: float):
        self.timeout_ms = timeout_s * 1000
        self.ms_per_frame: float | None = None
        self.own_ms: float | None = None

    def cap(self, questions: int) -> int | None:
        if self.ms_per_frame is None:
            return None
        room = self.timeout_ms * self.SAFETY - (self.own_ms or 0.0)
        return max(1, int(room * questions / self.ms_per_frame))

    def config_for(self, cfg: RunConfig, questions: list[Question]) -> tuple[RunConfig, int | None]:
        """The clip's config with max_frames capped; with support frames each question has its own frames,
        so the clip decodes up to one set per question and the cap is shared among them."""
        cap = self.cap(len(questions))
        if cap is None:
            return cfg, None
        plans = sum(bool(q.support_frames) for q in questions) if cfg.support_frames else 0
        cap = max(1, cap // max(1, plans))
        if cap >= cfg.max_frames:
            return cfg, None
        return cfg.replace(max_frames=cap, min_frames=min(cfg.min_frames, cap)), cap

    def observe(self, work: ClipWork, records: list[dict]) -> None:
        timed = [r["time_split_ms"] for r in records if "time_split_ms" in r]
        if not timed or not work.frame_order:
            return
        # the records' shares of the clip's decode, vision tower and prefills add up to the clip's shared work
        shared = sum(t["decode_tiles"] + t["vision"] + t["prefill"] for t in timed)
        per_frame = shared / len(work.frame_order)
        own = max(t["question"] for t in timed)
        # the slower of the latest clip and the running mean, so one fast clip does not lift the cap
        self.ms_per_frame = per_frame if self.ms_per_frame is None else max(per_frame, (self.ms_per_frame + per_frame) / 2)
        self.own_ms = own if self.own_ms is None else max(own, (self.own_ms + own) / 2)


def iter_prepared(clips, cfg: RunConfig, image_size: int, tokens_per_tile: int, budget: SampleBudget | None = None):
    """Prepared clips in order; with cfg.prefetch > 0 the next clips decode on a worker thread."""

    def prepare(video, qs):
        clip_cfg, cap = budget.config_for(cfg, qs) if budget else (cfg, None)
        work = prepare_clip(video, qs, clip_cfg, image_size, tokens_per_tile)
        work.frame_cap = cap
        return work

    if cfg.prefetch <= 0:
        for video, qs in clips:
            yield prepare(video, qs)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
        pending = []
        for video, qs in clips:
            pending.append(pool.submit(prepare, video, qs))
            if len(pending) > cfg.prefetch:
                yield pending.pop(0).result()
        for fut in pending:
            yield fut.result()


def _merge_records(records: dict[str, dict], more: dict[str, dict]) -> None:
    """Fold `more` into `records`; an answer always wins over an error record for the same id."""
    for qid, record in more.items():
        if qid not in records or records[qid].get("error") or not record.get("error"):
            records[qid] = record


def load_all_predictions(paths: OutputPaths) -> dict[str, dict]:
    """Every record in the folder (this run's file and any other rank's shard), own torn tail cut."""
    records = load_predictions(paths.predictions)
    for other in paths.prediction_files():
        if other != paths.predictions:
            _merge_records(records, load_predictions(other, truncate=False))
    return records


def merge_and_write(paths: OutputPaths, questions: list[Question]) -> None:
    """Write the CSVs from every predictions file; refuse, naming the ids, if any question has no record."""
    records = load_all_predictions(paths)
    missing = [q.id for q in questions if q.id not in records]
    if missing:
        raise OutputError(
            f"{len(missing)} questions have no answer in any predictions file in {paths.folder} "
            f"(first: {', '.join(missing[:5])}); run the same command again to finish them")
    write_submissions(paths, questions, records)


class _JobProgress:
    """tqdm over the whole job: this rank's answers, plus (on rank 0 of a torchrun job) the other shards'."""

    def __init__(self, cfg: RunConfig, shard: Shard, paths: OutputPaths, total: int):
        from tqdm import tqdm

        self.others = [p for p in paths.prediction_files() if p != paths.predictions] if shard.distributed else []
        self.others_base = self._others_lines()
        self.mine = 0
        self.last_poll = time.monotonic()
        self.bar = tqdm(total=total, unit="q", dynamic_ncols=True, disable=not cfg.progress or shard.rank != 0)

    def _others_lines(self) -> int:
        return sum(p.read_bytes().count(b"\n") for p in getattr(self, "others", []) if p.is_file())

    def answered(self) -> None:
        self.mine += 1
        others = 0
        if self.others and time.monotonic() - self.last_poll > 1.0:
            self.last_poll = time.monotonic()
            others = max(0, self._others_lines() - self.others_base)
        self.bar.update(self.mine + others - self.bar.n if others else 1)

    def close(self) -> None:
        self.bar.close()


def _guarded(records: Iterator[dict], work: ClipWork, summary: "RunSummary") -> Iterator[dict]:
    """Yield the clip's records; an unexpected error turns its unanswered questions into error rows
    (prior answer) so one bad clip does not stop the run. The run still exits 1 at the end."""
    answered = set()
    try:
        for record in records:
            answered.add(record["id"])
            yield record
    except Exception as exc:  # noqa: BLE001 - anything but a clean answer becomes a recorded error
        log.warning("unexpected error on %s", work.video, exc_info=True)
        summary.unexpected += 1
        failed = ClipWork(video=work.video, questions=[q for q in work.questions if q.id not in answered],
                          error=f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        yield from error_records(failed)


def _answer_pending(cfg: RunConfig, clips, paths: OutputPaths, summary: RunSummary, progress: _JobProgress,
                    model_loader, say) -> None:
    from roadbuddy.model import load_model

    torch.manual_seed(cfg.seed)
    print_estimate(cfg, say)
    lm = (model_loader or load_model)(cfg)
    for note in lm.notes:
        say(note)
    say(f"model: {lm.source} on {lm.device} ({str(lm.dtype).replace('torch.', '')}, "
        f"{cfg.quantization or 'no quantization'}, attention {lm.attn_impl})")
    budget = SampleBudget(cfg.sample_timeout) if cfg.sample_timeout else None
    with PredictionLog(paths.predictions) as out:
        for work in iter_prepared(clips, cfg, lm.image_size, lm.tokens_per_tile, budget):
            records = error_records(work) if work.error else _guarded(answer_with_ladder(lm, work, cfg), work, summary)
            clip_records = []
            for record in records:
                if work.frame_cap is not None:
                    record["frame_cap"] = work.frame_cap
                clip_records.append(record)
                out.append(record)
                summary.answered += 1
                summary.modes[record["mode"]] += 1
                summary.fallbacks += bool(record.get("fallback"))
                if record.get("error"):
                    summary.errors[record["id"]] = record["error"]
                progress.answered()
            if budget:
                budget.observe(work, clip_records)


def run(cfg: RunConfig, *, model_loader=None, say=print) -> RunSummary:
    """The whole job (or one rank's share of it under torchrun, rank 0 writing the merged CSVs).

    `model_loader(cfg) -> LoadedModel` is injectable for benches and tests.
    """
    shard = Shard(rank=cfg.rank, world_size=cfg.world_size, local_rank=cfg.local_rank)
    if shard.distributed:
        if torch.cuda.is_available() and cfg.device in ("auto", "cuda"):
            cfg = cfg.replace(device=f"cuda:{shard.local_rank}")  # each rank pins its own GPU
            torch.cuda.set_device(shard.local_rank)
    started = time.perf_counter()
    questions = load_questions(cfg.test_json, cfg.data_dir)
    if cfg.limit:
        questions = questions[:cfg.limit]
    paths = OutputPaths.for_submission(Path(cfg.output), shard.rank, shard.world_size)
    prepare_output(paths)
    summary = RunSummary(total=len(questions), paths=paths)
    distributed.init(shard, "cuda" if str(cfg.device).startswith("cuda") else "cpu")
    try:
        with RunLock(paths.lock):
            if shard.rank == 0:
                check_run_info(paths, cfg.answer_settings())
            distributed.barrier(shard)
            if shard.rank != 0:
                check_run_info(paths, cfg.answer_settings(), write=False)
            done = {k: v for k, v in load_all_predictions(paths).items() if not v.get("error")}
            clips = group_by_video(questions)
            if shard.distributed:
                ranks = distributed.assign_clips(clips, shard.world_size)
                all_pending = sum(q.id not in done for q in questions)
                clips = [clip for clip, rank in zip(clips, ranks) if rank == shard.rank]
            clips = [(video, [q for q in qs if q.id not in done]) for video, qs in clips]
            clips = [(video, qs) for video, qs in clips if qs]
            pending = sum(len(qs) for _, qs in clips)
            summary.resumed = len(done)
            if summary.resumed:
                say(f"resuming: {summary.resumed} of {len(questions)} questions already answered in {paths.folder}")
            if pending:
                progress = _JobProgress(cfg, shard, paths, all_pending if shard.distributed else pending)
                try:
                    _answer_pending(cfg, clips, paths, summary, progress, model_loader, say)
                finally:
                    progress.close()
            else:
                say("nothing to do here: every question of this run already has an answer")
        distributed.barrier(shard)
        if shard.rank == 0:
            merge_and_write(paths, questions)
        else:
            summary.paths = None  # rank 0 writes the CSVs
    finally:
        distributed.finish(shard)
    summary.seconds = time.perf_counter() - started
    return summary
