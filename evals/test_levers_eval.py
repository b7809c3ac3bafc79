"""The test-time levers against planted biases, on the tiny task, through the real pipeline.

The model is the tiny seeing checkpoint with the committed rule adapter (evals/tiny-rule-adapter/; its
fine-tune showed every question's choices in a new order each epoch, so it reads choices in any order:
the base checkpoint only ever saw Đúng before Sai and loses 2-choice questions when they are reordered).

Two biases, each adding BIAS to one letter's logit:
- a position bias, on the letter A whatever choice sits there, as a model with a strong position prior
  has. It is the ideal case of both levers, which cancel it by construction: choice-permutation
  ensembling and the PriDe correction must each win the accuracy back to within 3 points of the
  unbiased model.
- a content bias, on the longest choice (the first of them on a tie) wherever it is shown, as a model that
  favours long answers has (on the tiny task the longest choice is always a wrong one at 4 choices, and
  "Đúng" at 2). It moves with the choice, so permuting the choices cannot average it out, and PriDe, which
  estimates a prior over positions from every cyclic order, finds only noise to divide out: neither lever
  wins any of it back (both lose a little more; README quotes the table the test prints).
`evals.compare` gives the tables."""
from __future__ import annotations

import math

import pytest

from evals import compare, harness
from evals.test_finetune_eval import ADAPTER
from roadbuddy.data.questions import LETTERS
from roadbuddy.predict import answering

pytestmark = pytest.mark.eval

BIAS = 10.0  # logits added to one letter: the adapted model's margins are mostly below it
WITHIN = 0.03


def plant_letter_bias(monkeypatch):
    """+BIAS on the logit of the letter A, in both places answering reads the letters' logits."""
    def biased(real):
        def scored(lm, logits, letters):
            logits = logits.clone()
            logits[lm.letter_ids["A"]] += BIAS
            return real(lm, logits, letters)
        return scored

    for name in ("letter_probs", "letter_logprobs"):
        monkeypatch.setattr(answering, name, biased(getattr(answering, name)))


def longest_choice(q) -> int:
    return max(range(q.num_choices), key=lambda i: (len(q.choices[i]), -i))


def plant_length_bias(monkeypatch):
    """+BIAS on the logit of the question's longest choice wherever it is shown: for a question asked once
    (its logits, the file's order) and for each order of a question asked in several (its log-probabilities,
    renormalised as a softmax with that logit raised would be)."""
    real_record, real_ensemble = answering.answer_record, answering.ensemble_record

    def answer_record(lm, q, logits, cache, cfg, prior=None):
        logits = logits.clone()
        logits[lm.letter_ids[LETTERS[longest_choice(q)]]] += BIAS
        return real_record(lm, q, logits, cache, cfg, prior)

    def ensemble_record(q, asked, prior=None):
        favoured = longest_choice(q)
        shifted = []
        for order, logs in asked:
            raised = {letter: v + (BIAS if order[LETTERS.index(letter)] == favoured else 0.0)
                      for letter, v in logs.items()}
            total = math.log(sum(math.exp(v) for v in raised.values()))
            shifted.append((order, {letter: v - total for letter, v in raised.items()}))
        return real_ensemble(q, shifted, prior)

    monkeypatch.setattr(answering, "answer_record", answer_record)
    monkeypatch.setattr(answering, "ensemble_record", ensemble_record)


@pytest.fixture(scope="module")
def adapted_lm(tiny_eval_config):
    from roadbuddy.families.internvl.model import load_model

    return load_model(tiny_eval_config.replace(adapter=ADAPTER))


@pytest.fixture(scope="module")
def evaluate(tiny_report_root, tiny_eval_config, adapted_lm):
    root = tiny_report_root.parent / "tiny-levers"
    base = tiny_eval_config.replace(adapter=ADAPTER)

    def run(name, **changes):
        return harness.run_eval(base.replace(**changes), root / name, fresh=True, thumbnails=False,
                                model_loader=lambda _cfg: adapted_lm, say=lambda _m: None)
    return run


@pytest.fixture(scope="module")
def unbiased(evaluate):
    return evaluate("unbiased")


def levers_table(runs: dict) -> list[dict]:
    table = compare.rows([(name, r.report) for name, r in runs.items()])
    print("\n" + compare.markdown(table))
    return table


def with_each_lever(evaluate, name: str):
    """The biased model evaluated plain, with --permutations 4, and with --debias (8 estimation questions)."""
    return (evaluate(name), evaluate(f"{name}-permutations-4", permutations=4),
            evaluate(f"{name}-debias", debias=True, debias_questions=8))


@pytest.mark.tiny_eval
def test_permutations_and_the_prior_correction_undo_a_letter_bias(monkeypatch, evaluate, unbiased):
    clean = unbiased
    plant_letter_bias(monkeypatch)
    biased, permuted, debiased = with_each_lever(evaluate, "biased")
    table = levers_table({"unbiased": clean, "biased": biased, "+ --permutations 4": permuted,
                          "+ --debias": debiased})
    assert biased.accuracy <= clean.accuracy - 0.2, "the planted bias should cost accuracy"
    assert permuted.accuracy >= clean.accuracy - WITHIN
    assert debiased.accuracy >= clean.accuracy - WITHIN
    assert debiased.report["letter_prior"]["4"][0] > 0.5  # the estimate found the planted prior on A
    bias_of = {row["report"]: row["bias"] for row in table}
    assert bias_of["biased"] > 0.2 > max(bias_of["+ --permutations 4"], bias_of["+ --debias"])


@pytest.mark.tiny_eval
def test_neither_lever_undoes_a_bias_that_moves_with_the_content(monkeypatch, evaluate, unbiased):
    clean = unbiased
    plant_length_bias(monkeypatch)
    biased, permuted, debiased = with_each_lever(evaluate, "length-biased")
    levers_table({"unbiased": clean, "longest choice +10": biased, "+ --permutations 4": permuted,
                  "+ --debias": debiased})
    assert biased.accuracy <= clean.accuracy - 0.2, "the planted bias should cost accuracy"
    # the bias follows the choice into every order: the ensemble keeps it, and the positions carry none of it
    assert permuted.accuracy <= biased.accuracy + WITHIN and debiased.accuracy <= biased.accuracy + WITHIN
    prior = debiased.report["letter_prior"]
    assert all(max(p) < 2 / len(p) for p in prior.values()), prior  # no position stands out
