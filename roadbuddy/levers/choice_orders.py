"""Test-time levers on the answer letters: choice-permutation ensembling and the letter-prior correction.

Multiple-choice selectors carry a prior over the letter positions (Zheng et al., "Large Language Models Are
Not Robust Multiple Choice Selectors", ICLR 2024).

- Permutations (`--permutations N`): a question is also asked with its choices in other orders: cyclic
  shifts of a canonical order (the choices sorted by text), so with N equal to the number of choices
  every choice sits at every position once, and the set of orders, hence the answer, does not depend on
  the order in the file. Each order's letter probabilities are mapped back to the file's choices and
  averaged; the answer is the file letter of the choice with the highest mean. N = 1 asks the file's
  order alone: the answer without the lever.
- PriDe (`--debias`): the prior over positions is estimated from questions asked in all their cyclic
  orders (the geometric mean over the orders of the observed probability at each position, normalised;
  then the mean over questions, per number of choices), and later questions' probabilities are divided
  by it and renormalised.

Pure arithmetic on letters and floats: no model, no torch.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from roadbuddy.data.questions import LETTERS, Question


def canonical_order(choices: Sequence[str]) -> list[int]:
    """The file's choice indices sorted by text (ties by position): the same choices in any file order give
    the same sequence of texts."""
    return sorted(range(len(choices)), key=lambda i: (choices[i], i))


def orders(choices: Sequence[str], permutations: int) -> list[tuple[int, ...]]:
    """The orders a question is asked in, each a tuple of file indices in the order shown. One order: the
    file's. More: the first `permutations` cyclic shifts of the canonical order (all of them when
    `permutations` is at least the number of choices)."""
    n = len(choices)
    if permutations <= 1:
        return [tuple(range(n))]
    base = canonical_order(choices)
    return [tuple(base[(k + i) % n] for i in range(n)) for k in range(min(permutations, n))]


def permute_choices(q: Question, order: Sequence[int]) -> Question:
    """The question with its choices in `order` (file indices, in the order shown); the answer letter follows
    its choice's new position, so a choice text repeated at two positions keeps pointing at the right one."""
    order = list(order)
    answer = None if q.answer is None else LETTERS[order.index(LETTERS.index(q.answer))]
    return dataclasses.replace(q, choices=tuple(q.choices[i] for i in order),
                               raw_choices=tuple(q.raw_choices[i] for i in order), answer=answer)


def to_file_letters(order: Sequence[int], shown: dict[str, float]) -> dict[str, float]:
    """An order's probabilities by shown letter -> by the letter each choice has in the file."""
    return {LETTERS[file_index]: shown[LETTERS[position]] for position, file_index in enumerate(order)}


def ensemble(asked: list[tuple[Sequence[int], dict[str, float]]]) -> dict[str, float]:
    """The mean over the orders of each file choice's probability."""
    n = len(asked[0][0])
    total = {letter: 0.0 for letter in LETTERS[:n]}
    for order, shown in asked:
        for letter, p in to_file_letters(order, shown).items():
            total[letter] += p
    return {letter: p / len(asked) for letter, p in total.items()}


def pick(probs: dict[str, float]) -> str:
    """The letter with the highest probability; the earlier letter on a tie (as score mode's argmax)."""
    return max(probs, key=probs.get)


def question_prior(asked: list[tuple[Sequence[int], dict[str, float]]]) -> list[float] | None:
    """PriDe's estimate of one question's position prior from its answers (probabilities) in every cyclic
    order; see question_prior_from_logs, which a confident model needs."""
    return question_prior_from_logs([(order, {letter: math.log(max(p, 1e-12)) for letter, p in shown.items()})
                                     for order, shown in asked])


def question_prior_from_logs(asked: list[tuple[Sequence[int], dict[str, float]]]) -> list[float] | None:
    """PriDe's estimate of one question's position prior from its log-probabilities in every cyclic order:
    the normalised geometric mean over the orders of the probability observed at each position. None unless
    the question was asked in all its cyclic orders. Log-probabilities, because a confident model's wrong
    letters sit 15-20 logits down: as probabilities rounded for a record they are 0, and the prior collapses."""
    n = len(asked[0][0])
    if len(asked) < n:
        return None
    logs = [sum(shown[LETTERS[pos]] for _, shown in asked) / len(asked) for pos in range(n)]
    top = max(logs)
    weights = [math.exp(v - top) for v in logs]
    return [w / sum(weights) for w in weights]


def mean_prior(priors: list[list[float]]) -> list[float]:
    n = len(priors[0])
    return [sum(p[i] for p in priors) / len(priors) for i in range(n)]


def log_normalised(logs: dict[str, float]) -> dict[str, float]:
    """Log-probabilities renormalised to sum to one (a log-sum-exp), in double precision."""
    top = max(logs.values())
    total = top + math.log(sum(math.exp(v - top) for v in logs.values()))
    return {letter: v - total for letter, v in logs.items()}


def log_debias(logs: dict[str, float], prior: Sequence[float]) -> dict[str, float]:
    """`debias` on log-probabilities: a confident answer's wrong letters keep their values instead of 0."""
    return log_normalised({letter: v - math.log(max(prior[LETTERS.index(letter)], 1e-12))
                           for letter, v in logs.items()})


def log_ensemble(asked: list[tuple[Sequence[int], dict[str, float]]]) -> dict[str, float]:
    """`ensemble` on log-probabilities: the log of the mean over the orders of each file choice's probability."""
    per_order = [to_file_letters(order, logs) for order, logs in asked]
    return log_normalised({letter: max(o[letter] for o in per_order)
                           + math.log(sum(math.exp(o[letter] - max(o[letter] for o in per_order)) for o in per_order))
                           for letter in per_order[0]})


def debias(probs: dict[str, float], prior: Sequence[float]) -> dict[str, float]:
    """Probabilities by position with the position prior divided out, renormalised."""
    raw = {letter: probs[letter] / max(prior[LETTERS.index(letter)], 1e-12) for letter in probs}
    total = sum(raw.values())
    return {letter: v / total for letter, v in raw.items()}
