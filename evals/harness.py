"""Run one eval: a RunConfig on a labeled split -> pipeline.run -> report folder.

The pipeline writes predictions.jsonl into the report folder (cfg.output points
there), so an interrupted eval resumes by running the same command again:
pipeline.run skips every question already answered with the same answer
settings. The report is built from predictions.jsonl, never from memory.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from evals import html_report
from evals import report as rep
from roadbuddy.config import RunConfig
from roadbuddy.data.output import OutputPaths
from roadbuddy.data.questions import Question, load_questions, write_subset
from roadbuddy.levers import letter_prior

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REPORTS = REPO / "runs" / "eval"  # /runs/ is git-ignored
THUMBNAILS = "thumbnails"  # the report folder's frame thumbnails, for report.html


@dataclass
class EvalResult:
    report: dict | None  # None on a torchrun rank other than 0: rank 0 writes the one report
    paths: dict[str, Path] | None
    failures: list[str]  # one sentence per failed user assertion
    table: "rep.pd.DataFrame | None"  # one row per question (report.question_table)
    rank: int = 0
    world_size: int = 1

    @property
    def reported(self) -> bool:
        return self.report is not None

    @property
    def accuracy(self) -> float:
        return self.report["accuracy"]["accuracy"]


def resolve_split(split: Path | str, data_dir: Path | str | None) -> Path:
    """The question file: as given, else under --data-dir, else under --data-dir/train."""
    split = Path(split)
    candidates = [split]
    if data_dir is not None and not split.is_absolute():
        candidates += [Path(data_dir) / split, Path(data_dir) / "train" / split]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"split {split} not found (tried {tried})")


def default_report_dir(cfg: RunConfig, split: Path) -> Path:
    """runs/eval/<split>-<model>[+<adapter>]-<settings hash>: the same command lands in the same folder and
    resumes; the folder names what was evaluated (an adapter's eval is not its base model's)."""
    model = Path(cfg.model.rstrip("/")).name or "model"
    if cfg.adapter is not None:
        model += "+" + (Path(str(cfg.adapter).rstrip("/")).name or "adapter")
    return DEFAULT_REPORTS / f"{split.stem}-{model}-{cfg.fingerprint()[:8]}"


def select_questions(split: Path, data_dir: Path | None, ids: list[str] | None, limit: int | None) -> list[Question]:
    questions = load_questions(split, data_dir)
    if ids:
        known = {q.id for q in questions}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ValueError(f"--ids names questions that are not in {split.name}: {', '.join(unknown[:10])}")
        wanted = set(ids)
        questions = [q for q in questions if q.id in wanted]
    return questions[:limit] if limit else questions


def run_eval(cfg: RunConfig, report_dir: Path | str, *, ids: list[str] | None = None, baseline: Path | str | None = None,
             min_accuracy: float | None = None, max_fallback_rate: float | None = None,
             max_prior_accuracy: float | None = None, fresh: bool = False, thumbnails: bool = True,
             model_loader=None, say=print) -> EvalResult:
    """Answer the split with `cfg` (resuming from the report folder), then write report.json/.md/.png and
    report.html there; with `thumbnails` the pipeline writes small JPEGs of the frames it decodes into
    thumbnails/ for the page (no second decode).

    `fresh` deletes earlier predictions first (the tiny-model eval and the defect
    runs always start over: their predictions must come from this code).

    Under torchrun (cfg.rank / cfg.world_size, set from the environment) every rank
    answers its share of the clips into its own predictions shard; rank 0 merges
    them after the barrier and alone builds and writes the report. The other ranks
    return a result with no report.
    """
    from roadbuddy.data.output import load_all_predictions
    from roadbuddy.predict.pipeline import run

    started = time.perf_counter()
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    split = Path(cfg.test_json)
    questions = select_questions(split, cfg.data_dir, ids, cfg.limit)
    if not questions:
        raise ValueError(f"no questions selected from {split}")
    unlabeled = [q.id for q in questions if not q.answer]
    if unlabeled:
        raise rep.UnlabeledSplitError(f"{split.name} has {len(unlabeled)} questions without an answer "
                                      f"(first: {unlabeled[0]}); evaluate a labeled split such as train.json")
    run_cfg = cfg.replace(output=report_dir / "submission.csv",
                          thumbnail_dir=report_dir / THUMBNAILS if thumbnails else None)
    paths = OutputPaths.for_submission(run_cfg.output, cfg.rank, cfg.world_size)
    if fresh:
        _forget_earlier_run(paths, cfg.rank, cfg.world_size)
    if ids:
        subset, root = write_subset(split, questions, report_dir)
        run_cfg = run_cfg.replace(test_json=subset, data_dir=root, limit=None)
    summary = run(run_cfg, model_loader=model_loader, say=say)
    if cfg.rank != 0:
        return EvalResult(report=None, paths=None, failures=[], table=None, rank=cfg.rank, world_size=cfg.world_size)
    records = load_all_predictions(paths)
    table = rep.question_table(questions, records)
    settings = {**cfg.answer_settings(), "split": str(split), "data_dir": str(cfg.data_dir) if cfg.data_dir else None,
                "device": cfg.device, "limit": cfg.limit, "ids": ids, "questions_selected": len(questions),
                "fingerprint": cfg.fingerprint(), "answered_now": summary.answered, "resumed": summary.resumed}
    base = rep.load_report(baseline) if baseline else None
    report = rep.build_report(table, settings=settings, wall_seconds=time.perf_counter() - started,
                              baseline=base, baseline_path=str(baseline) if baseline else None)
    estimated = letter_prior.read(paths)  # --debias: the prior divided out of the answers
    report["letter_prior"] = estimated["prior"] if estimated else None
    failures = rep.add_checks(report, min_accuracy=min_accuracy, max_fallback_rate=max_fallback_rate,
                              max_prior_accuracy=max_prior_accuracy)
    written = rep.write_report(report, report_dir)
    written["html"] = html_report.write_html(report, questions, records, baseline=base, page_dir=report_dir,
                                             thumbnails=report_dir / THUMBNAILS if thumbnails else None)
    return EvalResult(report=report, paths=written, failures=failures, table=table, world_size=cfg.world_size)


def _forget_earlier_run(paths: OutputPaths, rank: int, world_size: int) -> None:
    """Delete what an earlier run left, before this one starts. Each rank deletes only its own shard
    (another rank may already hold its file open); rank 0 also the CSVs, run.json, a single-process
    run's predictions and shards of ranks this job does not have."""
    paths.predictions.unlink(missing_ok=True)
    if rank != 0:
        return
    own = {OutputPaths.for_submission(paths.submission, r, world_size).predictions for r in range(world_size)}
    for stale in paths.prediction_files():
        if stale not in own:
            stale.unlink(missing_ok=True)
    for name in ("run.json", "submission.csv", "time_submission.csv", letter_prior.FILE):
        (paths.folder / name).unlink(missing_ok=True)
    shutil.rmtree(paths.folder / THUMBNAILS, ignore_errors=True)


def summary_lines(result: EvalResult) -> list[str]:
    r = result.report
    acc, prior = r["accuracy"], r["prior"]
    lines = [f"accuracy {acc['accuracy']:.1%} ({acc['correct']}/{acc['n']}, 95% CI "
             f"{acc['ci95'][0]:.1%}-{acc['ci95'][1]:.1%}); prior {prior['accuracy']:.1%}; "
             f"margin {100 * r['margin_over_prior']:+.1f} points"]
    if r.get("comparison"):
        c = r["comparison"]
        lines.append(f"vs baseline: {c['wins']} wins, {c['losses']} losses, McNemar p = {c['mcnemar_p']:.3g}")
    if r.get("wall_seconds") is not None:
        lines.append(f"wall time {r['wall_seconds']:.1f} s")
    lines.append(f"report: {result.paths['md']} and the error browser {result.paths['html']}")
    return lines
