"""Accuracy evals (marker `eval`; not in the default test run).

    pytest -m eval evals/                      # the tiny-model eval and its planted defects (CI)
    pytest -m eval evals/ --split train.json --data-dir DIR --model M [predict flags]
    torchrun --nproc_per_node 4 -m pytest -m eval evals/ --split train.json ...   # data-parallel, one report

With --split, the real pipeline answers a labeled split and writes report.json,
report.md and report.png (see evals/README.md); --min-accuracy and
--max-fallback-rate fail the test after the report is written.

Without --split, the shipped tiny model (roadbuddy/testing/tiny_seeing/, trained by
evals/train_tiny.py) answers a held-out split of encoded synthetic clips whose
answers are only in the pixels, through the real pipeline: it must score at
least 90% where the prior scores at most 50%, with a mean probability of the
right letter of at least 0.99. Each planted defect (a monkeypatch of one
pipeline step) must fail that bar, which shows the eval would catch that break.
"""
from __future__ import annotations

import pytest
import torch

from evals import harness
from roadbuddy.families import wording
from roadbuddy.families.internvl import model, tiles
from roadbuddy.video import frames

pytestmark = pytest.mark.eval

TINY_MIN_ACCURACY = 0.90
# The trained tiny model gives the right letter a mean probability of 1.000 (min 0.997) on the held-out
# clips; the mildest defect (image features one slot early) keeps its accuracy and lowers this to 0.984.
TINY_MIN_CONFIDENCE = 0.99
TINY_MAX_PRIOR = 0.50


def _say(msg: str) -> None:
    print(msg, flush=True)


def test_split_accuracy(eval_request):
    """The user's eval: one RunConfig on a labeled split, report written, then the user's assertions."""
    if eval_request.split is None:
        pytest.skip("no --split given: the tiny-model eval below runs instead")
    result = harness.run_eval(eval_request.cfg, eval_request.report_dir, ids=eval_request.ids,
                              baseline=eval_request.baseline, min_accuracy=eval_request.min_accuracy,
                              max_fallback_rate=eval_request.max_fallback_rate,
                              thumbnails=eval_request.thumbnails, say=_say)
    if not result.reported:  # torchrun: this rank answered its shard; rank 0 merged them and wrote the report
        pytest.skip(f"rank {result.rank} of {result.world_size}: its clips are answered; rank 0 writes the report "
                    "and checks the assertions")
    for line in harness.summary_lines(result):
        _say(line)
    if result.failures:
        pytest.fail("; ".join(result.failures) + f" (report: {result.paths['md']})", pytrace=False)


def _kind_accuracy(result) -> dict[str, float]:
    kind = result.table["clip"].str.extract(r"_([a-z]+)\.mp4$")[0]
    return {k: float(v) for k, v in result.table.groupby(kind).correct.mean().items()}


@pytest.mark.tiny_eval
def test_tiny_model_sees(eval_request, tiny_report_root, tiny_eval_config, tiny_lm):
    """Clean pipeline: >= 90% on the held-out clips, where the prior baseline scores <= 50%, and a mean
    probability of the right letter of at least 0.99."""
    result = harness.run_eval(tiny_eval_config, tiny_report_root, fresh=True, model_loader=lambda _cfg: tiny_lm,
                              baseline=eval_request.baseline,
                              min_accuracy=eval_request.min_accuracy or TINY_MIN_ACCURACY,
                              max_fallback_rate=eval_request.max_fallback_rate,
                              max_prior_accuracy=TINY_MAX_PRIOR, say=lambda _m: None)
    for line in harness.summary_lines(result):
        _say(line)
    _say(f"by kind: {_kind_accuracy(result)}; mean p(right letter) {result.report['confidence']['mean']:.3f}")
    check_page(result)
    if result.failures:
        pytest.fail("; ".join(result.failures) + f" (report: {result.paths['md']})", pytrace=False)
    assert result.report["confidence"]["mean"] >= TINY_MIN_CONFIDENCE, result.report["confidence"]


def check_page(result) -> None:
    """report.html of a real eval, parsed: one card per question in file order, the true and the predicted
    letter marked as the report has them, wrong cards marked wrong, and every frame the model saw as a
    thumbnail file written by the pipeline, in the order it saw them (reversed, for frames-reversed)."""
    import json as _json
    from urllib.parse import unquote

    from evals.test_html_report import cards, parse

    page = result.paths["html"]
    found = cards(parse(page.read_text(encoding="utf-8")))
    rows = {q["id"]: q for q in result.report["per_question"]}
    assert [c.attrs["data-id"] for c in found] == list(rows)
    records = {r["id"]: r for r in map(_json.loads, (page.parent / "predictions.jsonl").read_text().splitlines())}
    for card in found:
        row = rows[card.attrs["data-id"]]
        choices = card.find_all("div", "ch")
        assert [c.attrs["data-letter"] for c in choices if "truth" in c.classes] == [row["truth"]]
        assert [c.attrs["data-letter"] for c in choices if "pred" in c.classes] == [row["answer"]]
        assert ("wrong" in card.classes) == (not row["correct"])
        frames = [int(f.attrs["data-frame"]) for f in card.find_all("figure")]
        assert frames == records[row["id"]]["frames"]  # in the order the model was shown them
        images = [page.parent / unquote(img.attrs["src"]) for img in card.find_all("img")]  # src is a URL
        assert len(images) == len(frames) and all(p.is_file() for p in images)


# --- planted defects: each is one realistic break of one pipeline step ----------

def reverse_frame_order(monkeypatch):
    """Frames reach the prompt last-first (Frame1 is the end of the clip)."""
    real = frames.select_frames
    monkeypatch.setattr(frames, "select_frames", lambda *a, **k: list(reversed(real(*a, **k))))


def _replace_normalisation(monkeypatch, to_float):
    """tiles.normalize_tiles replaced: uint8 tiles [N,3,S,S] -> to_float(float32 [N,3,S,S] of 0-255)."""
    monkeypatch.setattr(tiles, "normalize_tiles", lambda uint8: to_float(uint8.to(torch.float32)))


def skip_normalisation(monkeypatch):
    """Normalisation skipped: the tiles reach the model as raw 0-255 values (no /255, no ImageNet mean/std)."""
    _replace_normalisation(monkeypatch, lambda x: x)


def skip_mean_std_only(monkeypatch):
    """A milder variant: tiles scaled to [0, 1] but never normalised with the ImageNet mean and std."""
    _replace_normalisation(monkeypatch, lambda x: x.div_(255))


def shift_choice_letters(monkeypatch):
    """The prompt labels the choices B, C, D, A (each letter one off) while answers are read by position."""
    def shifted(choices):
        valid = wording.letters(len(choices))
        labels = valid[1:] + valid[:1]
        return "\n".join(f"{label}. {choice}" for label, choice in zip(labels, choices))
    monkeypatch.setattr(wording, "choices_text", shifted)


def _rearrange_features(monkeypatch, change):
    """model._embed gets change(features [tiles, tokens, dim]) instead of the vision tower's output."""
    real = model._embed
    monkeypatch.setattr(model, "_embed", lambda lm, ids, features: real(
        lm, ids, change(features) if features is not None and features.shape[0] else features))


def misalign_image_tokens(monkeypatch):
    """Image features flattened token-major instead of tile-major (a reshape-order bug): the image slots of
    each frame receive one token position from every tile. The count still matches, so nothing raises."""
    _rearrange_features(monkeypatch, lambda f: f.transpose(0, 1).reshape(f.shape))


def shift_image_tokens_by_one(monkeypatch):
    """A milder variant: image features land one <IMG_CONTEXT> slot early (3 of a tile's 4 tokens stay put)."""
    _rearrange_features(monkeypatch, lambda f: f.reshape(-1, f.shape[-1]).roll(-1, dims=0).reshape(f.shape))


DEFECTS = {
    "frames-reversed": reverse_frame_order,
    "no-normalisation": skip_normalisation,
    "letters-shifted": shift_choice_letters,
    "image-tokens-misaligned": misalign_image_tokens,
    # milder variants of the two above
    "mean-std-skipped": skip_mean_std_only,
    "image-tokens-shifted-one-slot": shift_image_tokens_by_one,
}


@pytest.mark.tiny_eval
@pytest.mark.parametrize("defect", list(DEFECTS))
def test_planted_defect_is_caught(defect, monkeypatch, tiny_report_root, tiny_eval_config, tiny_lm):
    """Each defect fails the clean run's bar: accuracy below 90% or mean right-letter probability below 0.99."""
    DEFECTS[defect](monkeypatch)
    result = harness.run_eval(tiny_eval_config, tiny_report_root / "defects" / defect, fresh=True,
                              model_loader=lambda _cfg: tiny_lm, say=lambda _m: None)
    if defect in ("letters-shifted", "frames-reversed"):  # the page of a broken run shows what went wrong
        check_page(result)
    by_kind = _kind_accuracy(result)
    confidence = result.report["confidence"]["mean"]
    _say(f"{defect}: accuracy {result.accuracy:.1%}, mean p(right letter) {confidence:.3f}, by kind {by_kind}")
    assert result.accuracy < TINY_MIN_ACCURACY or confidence < TINY_MIN_CONFIDENCE, (
        f"{defect} was not caught: accuracy {result.accuracy:.1%}, mean p(right letter) {confidence:.3f}")
    if defect == "frames-reversed":  # it must break exactly the questions about order
        assert by_kind["colour"] >= TINY_MIN_ACCURACY and by_kind["time"] >= TINY_MIN_ACCURACY, by_kind
        assert by_kind["order"] <= 0.5, by_kind
    if defect in ("no-normalisation", "mean-std-skipped"):  # the pixel levels are lost: day and night look alike
        assert by_kind["time"] <= 0.5, by_kind
