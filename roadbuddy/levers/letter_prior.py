"""--debias: one estimate of the model's prior over letter positions for a whole run (PriDe).

The first --debias-questions questions of each number of choices, in the file's order, are the estimation
questions: they are asked in all their cyclic orders (roadbuddy.levers.choice_orders), answered by that ensemble,
and their observed log-probabilities (kept at full precision in the records: a confident model's wrong
letters round to 0) give the prior. It is written to prior.json in the output folder (and into run.json)
before any other question is answered, so a resumed run and every torchrun rank divide the same prior out;
rank 0 answers the estimation questions, and on a resume those whose clip failed, which then no longer
change the prior. A number of choices none of whose estimation questions could be answered has no prior:
the run warns, naming it. --debias-prior takes the prior from an eval report (its `letter_prior`) or a
run's prior.json instead.
"""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from roadbuddy.data.atomic import atomic_write_text
from roadbuddy.data.output import OutputPaths
from roadbuddy.data.questions import Question
from roadbuddy.levers import choice_orders

FILE = "prior.json"


class PriorError(ValueError):
    """A --debias-prior file that holds no prior; one sentence naming it."""


def estimation_ids(questions: list[Question], per_choices: int) -> list[str]:
    """The first `per_choices` questions of each number of choices, in file order."""
    seen: dict[int, int] = defaultdict(int)
    out = []
    for q in questions:
        if seen[q.num_choices] < per_choices:
            seen[q.num_choices] += 1
            out.append(q.id)
    return out


def estimate(records: dict[str, dict], questions: list[Question], ids: list[str]) -> dict:
    """The prior per number of choices from the estimation questions' records (each order's log-probabilities
    at full precision; the rounded probabilities of records written before they were kept), with the ids it
    came from."""
    wanted = set(ids)
    priors: dict[int, list[list[float]]] = defaultdict(list)
    used = []
    for q in questions:
        record = records.get(q.id)
        if q.id not in wanted or not record or not record.get("orders"):
            continue
        orders = record["orders"]
        if all("logprobs" in o for o in orders):
            prior = choice_orders.question_prior_from_logs([(o["order"], o["logprobs"]) for o in orders])
        else:
            prior = choice_orders.question_prior([(o["order"], o["probs"]) for o in orders])
        if prior is not None:
            priors[q.num_choices].append(prior)
            used.append(q.id)
    return {"prior": {str(n): choice_orders.mean_prior(p) for n, p in sorted(priors.items())},
            "questions": {str(n): len(p) for n, p in sorted(priors.items())}, "ids": used}


def as_table(doc: dict) -> dict[int, list[float]]:
    return {int(n): list(p) for n, p in doc["prior"].items()}


def pending(clips: list[tuple[Path, list[Question]]], ids: set[str], done: dict[str, dict]) -> list:
    """The clips of the estimation questions still to answer in all their orders: never answered, or
    answered with an error (a resumed run tries failed clips again; the prior already written stays)."""
    todo = [(video, [q for q in qs if q.id in ids and q.id not in done]) for video, qs in clips]
    return [(video, qs) for video, qs in todo if qs]


def unestimated(table: dict[int, list[float]], questions: list[Question]) -> list[int]:
    """The numbers of choices among `questions` that the prior has no estimate for (every estimation
    question of that number failed): those questions are answered without the correction."""
    return sorted({q.num_choices for q in questions} - set(table))


def write(paths: OutputPaths, doc: dict) -> None:
    """prior.json, and the prior beside the settings in run.json."""
    atomic_write_text(paths.folder / FILE, json.dumps(doc, indent=1) + "\n")
    info = json.loads(paths.run_info.read_text(encoding="utf-8")) if paths.run_info.is_file() else {}
    info["letter_prior"] = doc["prior"]
    atomic_write_text(paths.run_info, json.dumps(info, indent=2, default=str) + "\n")


def read(paths: OutputPaths) -> dict | None:
    path = paths.folder / FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def load(path: Path | str) -> dict:
    """A prior from an eval report.json (`letter_prior`), its folder, or a run's prior.json."""
    path = Path(path)
    if path.is_dir():
        path = path / ("report.json" if (path / "report.json").is_file() else FILE)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PriorError(f"--debias-prior {path}: cannot read a prior ({exc})") from None
    found = doc.get("letter_prior", doc.get("prior")) if isinstance(doc, dict) else None  # report, run.json, prior.json
    if isinstance(found, dict) and "prior" in found:
        found = found["prior"]
    try:
        prior = {str(int(n)): [float(x) for x in p] for n, p in found.items()}
        usable = bool(prior) and all(len(p) == int(n) and abs(sum(p) - 1) < 1e-3 for n, p in prior.items())
    except (AttributeError, TypeError, ValueError):
        usable = False
    if not usable:
        raise PriorError(f"--debias-prior {path} holds no letter prior (an eval report or run.json of a run with "
                         "--debias, or its prior.json)")
    return {"prior": prior, "source": str(path)}
