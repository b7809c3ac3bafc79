"""An ensemble of two runs with complementary blind spots, on the tiny task, through the real pipeline.

The shipped tiny seeing model answers the 48 held-out questions (colour, order and time-of-day clips) twice,
each time with one planted blind spot in the frames it is fed (`tiles.normalize_tiles`, where the planted
defects of evals/test_eval.py patch):
- colour-blind: the frames in grey, and the traffic light's lamps moved a third of the light down in each
  frame, so neither the hue nor which lamp is lit (red on top, green at the bottom) tells the colour;
- order-blind: every frame is the clip's last shown frame, so what came first is not in the frames.
Each loses only its own kind of question. roadbuddy-ensemble combines the two runs (equal weights, mean of
the letter log-probabilities) and must beat both; evals.ensemble_report gives McNemar's p against each.

The tiny model is confidently wrong rather than unsure under every blind spot tried here (greyscale alone,
blurs, flattening the light, blending or repeating frames): the mean of log-probabilities lets the sighted
member win a disagreement only when it is the more confident of the two, which these two blind spots give
on all but one of the questions they disagree on.
"""
from __future__ import annotations

import pytest
import torch

from evals import ensemble_report, harness
from evals.test_eval import _kind_accuracy
from roadbuddy.families.internvl import tiles
from roadbuddy.submit import ensemble_cli
from roadbuddy.testing import tiny_task

pytestmark = pytest.mark.eval

LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's convert("L")
BLIND_KIND_MAX = 0.7  # a member's accuracy on the kind it is blind to
SIGHTED_KIND_MIN = 0.9  # and on the others


def _say(msg: str) -> None:
    print(msg, flush=True)


def _feed_tiles(monkeypatch, change) -> None:
    """The model is fed change(uint8 tiles [N,3,S,S] of one frame set, one tile a frame) instead of its frames."""
    real = tiles.normalize_tiles
    monkeypatch.setattr(tiles, "normalize_tiles", lambda uint8: real(change(uint8)))


def light_box(size: int) -> tuple[slice, slice]:
    """Rows and columns of a size x size tile (the whole frame, resized) where the traffic light stands, from
    the frame size and the proportions synth.road_frame draws it with."""
    width, height = tiny_task.WIDTH, tiny_task.HEIGHT
    box_h = max(6, int(0.42 * height))
    box_w = max(3, int(0.36 * box_h))
    x0, y0 = int(0.8 * width) - box_w // 2, max(1, int(0.04 * height))
    return (slice(round(y0 * size / height), round((y0 + box_h) * size / height)),
            slice(int(x0 * size / width), int((x0 + box_w) * size / width) + 1))


def blind_to_colour(monkeypatch) -> None:
    """Frames in grey, and in frame i the light's content rolled down by (i mod 3) thirds of the light."""
    def grey_and_lamps_moved(uint8: torch.Tensor) -> torch.Tensor:
        grey = (uint8.float() * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True).expand(-1, 3, -1, -1).clone()
        rows, cols = light_box(uint8.shape[-1])
        third = (rows.stop - rows.start) / 3
        for i in range(grey.shape[0]):
            grey[i, :, rows, cols] = grey[i, :, rows, cols].roll(round((i % 3) * third), dims=1)
        return grey.round().clamp(0, 255).to(torch.uint8).contiguous()
    _feed_tiles(monkeypatch, grey_and_lamps_moved)


def blind_to_order(monkeypatch) -> None:
    """Every frame is the last frame shown: the clip's content without its order."""
    _feed_tiles(monkeypatch, lambda uint8: uint8[-1:].expand_as(uint8).contiguous())


MEMBERS = {"colour-blind": (blind_to_colour, "colour"), "order-blind": (blind_to_order, "order")}


@pytest.mark.tiny_eval
def test_an_ensemble_of_complementary_runs_beats_each(monkeypatch, tiny_report_root, tiny_eval_config, tiny_lm):
    root = tiny_report_root.parent / "tiny-ensemble"
    accuracy = {}
    for name, (plant, blind_kind) in MEMBERS.items():
        with monkeypatch.context() as patch:
            plant(patch)
            result = harness.run_eval(tiny_eval_config, root / name, fresh=True, thumbnails=False,
                                      model_loader=lambda _cfg: tiny_lm, say=lambda _m: None)
        by_kind = _kind_accuracy(result)
        accuracy[name] = result.accuracy
        _say(f"{name}: accuracy {result.accuracy:.1%}, by kind {by_kind}")
        assert by_kind[blind_kind] <= BLIND_KIND_MAX, (name, by_kind)  # the blind spot is planted...
        assert all(v >= SIGHTED_KIND_MIN for k, v in by_kind.items() if k != blind_kind), (name, by_kind)  # ...alone

    out = root / "ensemble"
    assert ensemble_cli.main([*(str(root / name) for name in MEMBERS), "--output", str(out / "submission.csv")]) == 0
    report = ensemble_report.build(out)
    ensemble_report.write(report, out)
    ensemble_accuracy = report["accuracy"]["accuracy"]
    _say(f"ensemble (equal weights): accuracy {ensemble_accuracy:.1%}; "
         + "; ".join(f"against {m['name']}: {m['ensemble_wins']} wins, {m['ensemble_losses']} losses, McNemar p = "
                     f"{m['mcnemar_p']:.3g}" for m in report["members"]))
    for m in report["members"]:  # the ensemble's wins and losses, not the member's
        assert m["ensemble_wins"] - m["ensemble_losses"] == round((ensemble_accuracy - accuracy[m["name"]]) * 48), m
    assert ensemble_accuracy > max(accuracy.values()), (ensemble_accuracy, accuracy)
