"""One run: questions -> clips -> frames -> tiles -> prompts -> model -> answers on disk.

    run(cfg) validates the question file and the output folder before loading
    anything heavy, resumes from predictions.jsonl, prepares the next clips on a
    worker thread (roadbuddy.predict.prefetch, roadbuddy.predict.inputs) while the model answers
    the current one (roadbuddy.predict.answering, through the out-of-memory ladder), and
    writes the CSVs (roadbuddy.data.output).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from roadbuddy.config import RunConfig
from roadbuddy.data.output import (
    OutputPaths,
    PredictionLog,
    RunLock,
    check_run_info,
    load_all_predictions,
    merge_and_write,
    prepare_output,
)
from roadbuddy.data.questions import group_by_video, load_questions, missing_videos, question_file_info, roots_tried
from roadbuddy.levers import letter_prior
from roadbuddy.predict import distributed, memory
from roadbuddy.predict.answering import error_records
from roadbuddy.predict.distributed import Shard
from roadbuddy.predict.inputs import InputSpec, PreparedClip
from roadbuddy.predict.oom_ladder import answer_with_ladder
from roadbuddy.predict.prefetch import iter_prepared
from roadbuddy.predict.progress import JobProgress
from roadbuddy.predict.sample_budget import SampleBudget

log = logging.getLogger(__name__)


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
    hint: str = ""  # where missing videos were looked for

    def lines(self) -> list[str]:
        out = [f"answered {self.answered} new + {self.resumed} resumed of {self.total} questions "
               f"in {self.seconds:.1f} s; modes {dict(self.modes)}"]
        if self.fallbacks:
            out.append(f"{self.fallbacks} generated answers could not be parsed and fell back to the score answer")
        if self.errors:
            out.append(f"{len(self.errors)} questions got the prior answer because their video failed:")
            out += [f"  {qid}: {why}" for qid, why in self.errors.items()]
            if self.hint:
                out.append(self.hint)
        if self.paths:
            out.append(f"wrote {self.paths.submission} and {self.paths.time_submission}")
        return out


def _guarded(records: Iterator[dict], clip: PreparedClip, summary: RunSummary) -> Iterator[dict]:
    """Yield the clip's records; an unexpected error turns its unanswered questions into error rows
    (prior answer) so one bad clip does not stop the run. The run still exits 1 at the end."""
    answered = set()
    try:
        for record in records:
            answered.add(record["id"])
            yield record
    except Exception as exc:  # noqa: BLE001 - anything but a clean answer becomes a recorded error
        log.warning("unexpected error on %s", clip.video, exc_info=True)
        summary.unexpected += 1
        failed = PreparedClip(video=clip.video, questions=[q for q in clip.questions if q.id not in answered],
                              error=f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        yield from error_records(failed)


def _runs_on_gpu(cfg: RunConfig) -> bool:
    return str(cfg.device).startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())


def _load(cfg: RunConfig, model_loader, say):
    from roadbuddy.families import registry

    torch.manual_seed(cfg.seed)
    if model_loader is None:  # a --model that names nothing, or another family, is said before the estimate
        registry.check_model(cfg)
    if _runs_on_gpu(cfg):  # the estimate is of GPU memory: on the CPU it is no figure the run needs
        memory.print_estimate(cfg, say)
    lm = (model_loader or registry.load_model)(cfg)
    for note in lm.notes:
        say(note)
    say(f"model: {lm.source} on {lm.device} ({lm.family}, {lm.parameters:,} parameters, "
        f"{str(lm.dtype).replace('torch.', '')}, {cfg.quantization or 'no quantization'}, attention {lm.attn_impl})")
    warning = registry.over_cap_warning(lm.parameters)
    if warning:
        say(warning)
    return lm


def _load_selector(cfg: RunConfig, lm, say):
    """--frame-selector: the selector on the model's device (None without one)."""
    if cfg.frame_selector is None:
        return None
    from roadbuddy.selector.model import load_selector

    selector = load_selector(cfg.frame_selector, device=lm.device)
    parameters = sum(p.numel() for p in selector.model.parameters())
    say(f"frame selector: {cfg.frame_selector} on {selector.device} ({selector.model_type}, {parameters:,} "
        f"parameters), scanning each clip at {cfg.scan_fps:g} frames/s for the questions "
        + ("it plans (all)" if cfg.selector_wins or not cfg.support_frames else
           "without support_frames of their own"))
    return selector


def _answer_pending(cfg: RunConfig, clips, loaded, paths: OutputPaths, summary: RunSummary, progress: JobProgress,
                    prior: dict[int, list[float]] | None = None) -> None:
    lm, selector = loaded
    budget = SampleBudget(cfg.sample_timeout) if cfg.sample_timeout else None
    with PredictionLog(paths.predictions) as out:
        spec = InputSpec.of(lm)
        for clip in iter_prepared(clips, cfg, spec, budget, selector):
            records = (error_records(clip) if clip.error else
                       _guarded(answer_with_ladder(lm, clip, cfg, spec, prior), clip, summary))
            clip_records = []
            for record in records:
                if clip.frame_cap is not None:
                    record["frame_cap"] = clip.frame_cap
                clip_records.append(record)
                out.append(record)
                summary.answered += 1
                summary.modes[record["mode"]] += 1
                summary.fallbacks += bool(record.get("fallback"))
                if record.get("error"):
                    summary.errors[record["id"]] = record["error"]
                progress.answered()
            if budget:
                budget.observe(clip, clip_records)


def _letter_prior(cfg: RunConfig, questions, clips, done, shard: Shard, paths: OutputPaths, load, summary,
                  progress, say) -> tuple[dict[int, list[float]], set[str]]:
    """--debias: the run's one prior, and the ids of the estimation questions (answered here by rank 0 in
    all their cyclic orders, unless a prior.json or --debias-prior already gives it)."""
    doc = letter_prior.load(cfg.debias_prior) if cfg.debias_prior else letter_prior.read(paths)
    ids = set() if cfg.debias_prior else set(letter_prior.estimation_ids(questions, cfg.debias_questions))
    if shard.rank == 0:
        todo = letter_prior.pending(clips, ids, done)  # on a resume: those whose clip failed, tried again
        if todo:
            say(f"--debias: estimating the letter prior from {len(ids)} questions asked in all their choice orders"
                if doc is None else f"--debias: answering {sum(len(qs) for _, qs in todo)} estimation questions "
                "that failed before in all their choice orders (the prior already written stays)")
            estimating = cfg.replace(permutations=max(q.num_choices for q in questions))
            _answer_pending(estimating, todo, load(), paths, summary, progress)
        if doc is None:
            doc = letter_prior.estimate(load_all_predictions(paths), questions, sorted(ids))
            letter_prior.write(paths, doc)
    distributed.barrier(shard)
    if doc is None:
        doc = letter_prior.read(paths)
    elif shard.rank == 0:
        letter_prior.write(paths, doc)  # run.json was rewritten at the start of this run
    table = letter_prior.as_table(doc)
    say("--debias: letter prior " + "; ".join(f"{n} choices " + " ".join(f"{p:.3f}" for p in prior)
                                             for n, prior in table.items()))
    for n in letter_prior.unestimated(table, questions):
        why = (f"{cfg.debias_prior} holds none" if cfg.debias_prior else
               "none of its estimation questions could be answered in all their orders")
        say(f"WARNING: --debias has no letter prior for {n} choices ({why}): the questions with {n} choices are "
            "answered without the correction")
    return table, ids


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
    missing = missing_videos(questions, cfg.test_json, cfg.data_dir)  # all missing: refused before the model loads
    if cfg.frame_selector is not None:  # a folder that cannot be a selector: said before anything loads
        from roadbuddy.selector.model import check_selector

        check_selector(cfg.frame_selector)
    paths = OutputPaths.for_submission(Path(cfg.output), shard.rank, shard.world_size)
    prepare_output(paths)
    summary = RunSummary(total=len(questions), paths=paths)
    if missing:
        summary.hint = (f"{len(missing)} of {len(group_by_video(questions))} videos do not exist under "
                        f"{roots_tried(cfg.test_json, cfg.data_dir)}; if they are elsewhere, pass --data-dir")
    distributed.init(shard, "cuda" if str(cfg.device).startswith("cuda") else "cpu")
    try:
        with RunLock(paths.lock):
            if shard.rank == 0:
                check_run_info(paths, cfg.answer_settings(), questions=question_file_info(cfg.test_json, questions))
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
            if pending or cfg.debias:  # --debias: every rank meets at the prior's barrier
                others = [p for p in paths.prediction_files() if p != paths.predictions] if shard.distributed else []
                progress = JobProgress(all_pending if shard.distributed else pending,
                                       enabled=cfg.progress and shard.rank == 0, other_shards=others)
                loaded = None

                def load():
                    """(the model, the frame selector or None), loaded on first use."""
                    nonlocal loaded
                    if loaded is None:
                        lm = _load(cfg, model_loader, say)
                        loaded = (lm, _load_selector(cfg, lm, say))
                        progress.start()  # after the loading lines, so none of them breaks up the bar
                    return loaded

                try:
                    prior = None
                    if cfg.debias:  # rank 0 may answer estimation questions of any rank's clips first
                        prior, estimated = _letter_prior(cfg, questions, group_by_video(questions), done, shard,
                                                         paths, load, summary, progress,
                                                         lambda message: progress.say_above(say, message))
                        clips = [(video, [q for q in qs if q.id not in estimated]) for video, qs in clips]
                        clips = [(video, qs) for video, qs in clips if qs]
                    if clips:
                        _answer_pending(cfg, clips, load(), paths, summary, progress, prior)
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
