"""The ensemble's weights fit on a labeled split: the same members' runs over it, the weights that maximise the
log-likelihood of the right letters (scipy, softmax-parametrised, from equal weights), and the fit's report.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from roadbuddy.data.questions import Question
from roadbuddy.submit.ensemble import EnsembleError, Member, ensemble_records, member_logprobs


def check_fit_pairs(members: list[Member], fit_members: list[Member]) -> None:
    """Each --fit run must be its member's run on the labeled split: the same answer settings, in order."""
    if len(fit_members) != len(members):
        raise EnsembleError(f"--fit gives {len(fit_members)} runs for {len(members)} members: give each member's "
                            "run on a labeled split, in the members' order")
    for member, fit in zip(members, fit_members):
        keys = sorted(set(member.settings) | set(fit.settings))
        differ = next((k for k in keys if member.settings.get(k) != fit.settings.get(k)), None)
        if differ is not None:
            raise EnsembleError(f"--fit run {fit.folder} has other answer settings than the member {member.folder} "
                                f"({differ}: {fit.settings.get(differ)!r} in the --fit run, "
                                f"{member.settings.get(differ)!r} in the member): give each member's run on a labeled "
                                "split, in the members' order")


def _fit_arrays(members: list[Member], questions: list[Question]):
    """Log-probabilities [question, member, letter] (0 where absent), which members answered each question,
    which letters each question has, and the right letter's index; questions no member answered are dropped."""
    rows = []
    width = max(q.num_choices for q in questions)
    for q in questions:
        logs = [member_logprobs(m.records[q.id], q.letters, m.folder) for m in members]
        if any(entry is not None for entry in logs):
            rows.append((q, logs))
    values = np.zeros((len(rows), len(members), width))
    present = np.zeros((len(rows), len(members)), dtype=bool)
    valid = np.zeros((len(rows), width), dtype=bool)
    truth = np.zeros(len(rows), dtype=int)
    for i, (q, logs) in enumerate(rows):
        valid[i, :q.num_choices] = True
        truth[i] = q.letters.index(q.answer)
        for j, entry in enumerate(logs):
            if entry is not None:
                values[i, j, :q.num_choices] = [entry[letter] for letter in q.letters]
                present[i, j] = True
    return values, present, valid, truth


def mean_log_likelihood(weights: np.ndarray, values, present, valid, truth) -> float:
    """Mean over questions of the log-probability the combination gives the right letter."""
    from scipy.special import logsumexp

    per_question = weights[None, :] * present
    per_question = per_question / per_question.sum(axis=1, keepdims=True)
    combined = np.einsum("nm,nmk->nk", per_question, values)
    combined = np.where(valid, combined, -np.inf)
    return float(np.mean(combined[np.arange(len(truth)), truth] - logsumexp(combined, axis=1)))


def _accuracy(records: list[dict], questions: list[Question]) -> float:
    return sum(r["answer"] == q.answer for r, q in zip(records, questions)) / len(questions)


def fit_weights(fit_members: list[Member], questions: list[Question]) -> dict:
    """Weights maximising the log-likelihood of the right letters on a labeled split (softmax-parametrised,
    from equal weights), and the fit split's accuracy of each member, of equal and of fitted weights."""
    from scipy.optimize import minimize
    from scipy.special import softmax

    unlabeled = [q.id for q in questions if not q.answer]
    if unlabeled:
        raise EnsembleError(f"--fit runs answered a question file with {len(unlabeled)} questions without an answer "
                            f"(first: {', '.join(unlabeled[:3])}): fit on a labeled split such as train.json")
    arrays = _fit_arrays(fit_members, questions)
    if not len(arrays[3]):
        raise EnsembleError("--fit runs hold only error records: no question to fit the weights on")
    count = len(fit_members)
    result = minimize(lambda theta: -mean_log_likelihood(softmax(theta), *arrays), np.zeros(count), method="BFGS")
    weights = [float(w) for w in softmax(result.x)]
    equal = [1 / count] * count
    return {
        "questions": len(questions),
        "members": [{"folder": str(m.folder),
                     "accuracy": sum(str(m.records[q.id].get("answer", "")).upper() == q.answer
                                     for q in questions) / len(questions)} for m in fit_members],
        "equal_weights": {"accuracy": _accuracy(ensemble_records(fit_members, questions, equal), questions),
                          "mean_log_likelihood": mean_log_likelihood(np.array(equal), *arrays)},
        "fitted_weights": {"accuracy": _accuracy(ensemble_records(fit_members, questions, weights), questions),
                           "mean_log_likelihood": mean_log_likelihood(np.array(weights), *arrays)},
        "weights": weights,
        "optimizer": {"converged": bool(result.success), "message": str(result.message), "iterations": int(result.nit)},
    }


def fit_lines(fit: dict, source: Path) -> list[str]:
    """The fit report in words, a line per figure."""
    eq, fitted = fit["equal_weights"], fit["fitted_weights"]
    shown = ", ".join(f"{w:.3f}" for w in fit["weights"])
    return [f"fit on the {fit['questions']} questions of {source}:",
            *(f"  member {i + 1} {m['folder']}: accuracy {m['accuracy']:.1%}" for i, m in enumerate(fit["members"])),
            f"  equal weights: accuracy {eq['accuracy']:.1%}, mean log-likelihood {eq['mean_log_likelihood']:.4f}",
            f"  fitted weights {shown}: accuracy {fitted['accuracy']:.1%}, mean log-likelihood "
            f"{fitted['mean_log_likelihood']:.4f}" + ("" if fit["optimizer"]["converged"] else
                                                      f" (the optimizer: {fit['optimizer']['message']})")]
