"""The test-time levers against a planted letter bias, on the tiny task, through the real pipeline.

The model is the tiny seeing checkpoint with the committed rule adapter (evals/tiny-rule-adapter/; its
fine-tune showed every question's choices in a new order each epoch, so it reads choices in any order:
the base checkpoint only ever saw Đúng before Sai and loses 2-choice questions when they are reordered).
The defect adds a constant to the logit of the letter A, as a model with a strong position prior would
have; it costs accuracy, and choice-permutation ensembling and the PriDe correction must each win it
back to within 3 points of the unbiased model. `evals.compare` gives the table."""
from __future__ import annotations

import pytest

from evals import compare, harness
from roadbuddy import answering
from roadbuddy.model import letter_probs

from evals.test_finetune_eval import ADAPTER

pytestmark = pytest.mark.eval

BIAS = 10.0  # logits added to the letter A: the adapted model's margins are mostly below it
WITHIN = 0.03


def plant_letter_bias(monkeypatch):
    def biased(lm, logits, letters):
        logits = logits.clone()
        logits[lm.letter_ids["A"]] += BIAS
        return letter_probs(lm, logits, letters)

    monkeypatch.setattr(answering, "letter_probs", biased)


@pytest.fixture(scope="module")
def adapted_lm(tiny_eval_config):
    from roadbuddy.model import load_model

    return load_model(tiny_eval_config.replace(adapter=ADAPTER))


@pytest.mark.tiny_eval
def test_permutations_and_the_prior_correction_undo_a_letter_bias(monkeypatch, tiny_report_root, tiny_eval_config,
                                                                  adapted_lm):
    root = tiny_report_root.parent / "tiny-levers"
    base = tiny_eval_config.replace(adapter=ADAPTER)

    def evaluate(name, **changes):
        return harness.run_eval(base.replace(**changes), root / name, fresh=True, thumbnails=False,
                                model_loader=lambda _cfg: adapted_lm, say=lambda _m: None)

    clean = evaluate("unbiased")
    plant_letter_bias(monkeypatch)
    biased = evaluate("biased")
    permuted = evaluate("biased-permutations-4", permutations=4)
    debiased = evaluate("biased-debias", debias=True, debias_questions=8)
    table = compare.rows([(name, r.report) for name, r in
                          (("unbiased", clean), ("biased", biased), ("+ --permutations 4", permuted),
                           ("+ --debias", debiased))])
    print("\n" + compare.markdown(table))
    assert biased.accuracy <= clean.accuracy - 0.2, "the planted bias should cost accuracy"
    assert permuted.accuracy >= clean.accuracy - WITHIN
    assert debiased.accuracy >= clean.accuracy - WITHIN
    assert debiased.report["letter_prior"]["4"][0] > 0.5  # the estimate found the planted prior on A
    bias_of = {row["report"]: row["bias"] for row in table}
    assert bias_of["biased"] > 0.2 > max(bias_of["+ --permutations 4"], bias_of["+ --debias"])
