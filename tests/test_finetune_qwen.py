"""roadbuddy-finetune on Qwen3-VL and Qwen2.5-VL (tiny random checkpoints, the synthetic dataset, the CPU):
the loss reads the logits score mode reads, with the forward prediction runs (the frame set's video inputs,
explicit M-RoPE positions) under LoRA, gradient checkpointing and a frozen tower; a short fine-tune writes an
adapter whose card names the family and that roadbuddy-predict --adapter answers with; an adapter of another
family is refused in one sentence before the weights load. InternVL's side is tests/test_finetune.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from roadbuddy.config import RunConfig
from roadbuddy.data.questions import group_by_video, load_questions
from roadbuddy.families import adapters, registry
from roadbuddy.families.checkpoint import checkpoint_config
from roadbuddy.finetune import cli as finetune_cli
from roadbuddy.finetune import data as train_data
from roadbuddy.finetune.config import TrainConfig
from roadbuddy.finetune.loss import answer_loss
from roadbuddy.finetune.recipe import FineTune
from roadbuddy.predict import answering, inputs
from roadbuddy.predict import cli as predict_cli
from roadbuddy.testing import tiny_task
from roadbuddy.testing.qwen_checkpoints import write_tiny_qwen_checkpoint

FAMILIES = ("qwen3_vl", "qwen2_5_vl", "qwen3_5")
INTERNVL_ADAPTER = Path(__file__).resolve().parents[1] / "evals" / "tiny-rule-adapter"  # for tiny_task.CHECKPOINT
FRAMES = ["--min-frames", "4", "--max-frames", "4"]


@pytest.fixture(scope="module", params=FAMILIES)
def checkpoint(request, tmp_path_factory) -> Path:
    return write_tiny_qwen_checkpoint(tmp_path_factory.mktemp(request.param), request.param)


def tower_outputs(module, seen: list):
    """Record whether anything the module returns carries an autograd graph."""
    def hook(_module, _inputs, output):
        values = output.values() if hasattr(output, "values") else output if isinstance(output, tuple) else [output]
        flat = [t for v in values for t in (v if isinstance(v, (list, tuple)) else [v]) if torch.is_tensor(t)]
        seen.append(any(t.requires_grad for t in flat))
    return module.register_forward_hook(hook)


def test_the_letter_loss_is_minus_log_softmax_of_score_modes_logits(checkpoint, synthetic_dataset, tmp_path,
                                                                     monkeypatch):
    """Each training example's letter part of the loss, computed as training computes it (peft's LoRA in place,
    train mode, gradient checkpointing), equals -log softmax at the answer's letter of the logits predict's
    score mode read for the question (shared prefix, packed suffixes; support windows give questions frame sets
    of their own), within 1e-5 nats; the backward reaches every LoRA weight and nothing of the vision tower.
    6 frames of a 2 s clip: Qwen2.5-VL's frame pairs are 2/3 s apart (second_per_grid_ts), which the
    model's own positions would take as 1 s without the explicit ones. Measured: 5e-7 nats at most; the
    model's own positions move Qwen2.5-VL's by 1e-4, 1D positions by 2e-2, a position late or early by 0.3."""
    cfg = RunConfig(model=str(checkpoint), device="cpu", min_frames=6, max_frames=6, prefetch=0)
    lm = registry.load_model(cfg)
    spec = inputs.InputSpec.of(lm)
    questions = load_questions(synthetic_dataset)
    read, real_record = {}, answering.answer_record

    def answer_record(lm_, q, logits, *args, **kwargs):  # the next-token logits score mode reads for q
        read[q.id] = logits.clone()
        return real_record(lm_, q, logits, *args, **kwargs)

    monkeypatch.setattr(answering, "answer_record", answer_record)
    frame_sets = set()
    for video, qs in group_by_video(questions):
        clip = inputs.prepare_clip(video, qs, cfg, spec)
        frame_sets |= {(video, g.frames) for g in clip.groups}
        list(answering.answer_clip(lm, clip, cfg))
    monkeypatch.undo()
    assert read.keys() == {q.id for q in questions} and len(frame_sets) > len(group_by_video(questions))

    recipe = FineTune(cfg, TrainConfig(train_json=synthetic_dataset, output=tmp_path / "o", lora_dropout=0.0),
                      model_loader=lambda _cfg: lm, say=lambda _m: None)
    recipe._model()  # LoRA into lm.model, in place (lora_B = 0: the function is the base's)
    recipe.peft.train()
    tower = lm.ops.vision_tower(recipe.lm)
    tower.eval()
    assert recipe.lm.model.model.language_model.gradient_checkpointing and recipe.lm.model.model.language_model.training
    assert not any(p.requires_grad for p in tower.parameters())
    examples = list(train_data.iter_examples(questions, list(range(len(questions))), cfg, recipe.spec))
    assert all(e.error is None and e.vision["pixel_values_videos"].shape[0] for e in examples)
    feats = lm.ops.training_features(recipe.lm, examples, {}, False, cfg.vision_batch)
    grads_in_tower: list[bool] = []
    handle = tower_outputs(tower, grads_in_tower)
    loss, letters = answer_loss(recipe.lm, examples, feats, recipe.stop_id)
    handle.remove()
    expected = torch.stack([-torch.log_softmax(read[e.question.id], -1)[lm.letter_ids[e.target]] for e in examples])
    assert letters.tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    loss.backward()
    assert grads_in_tower == [False] * len(examples)  # the tower ran once per example, recording nothing
    assert all(p.grad is not None for p in recipe.trainable.values())
    assert all(float(p.grad.abs().sum()) > 0 for n, p in recipe.trainable.items() if "lora_B" in n)


@pytest.fixture(scope="module")
def trained(checkpoint, synthetic_dataset, tmp_path_factory) -> Path:
    """2 steps (2 examples each) of roadbuddy-finetune, validated at the end through the predict pipeline."""
    out = tmp_path_factory.mktemp("qwen-ft") / "adapter"
    code = finetune_cli.main([str(a) for a in [
        "--model", checkpoint, "--device", "cpu", "--train-json", synthetic_dataset, "--output", out, *FRAMES,
        "--max-steps", "2", "--grad-accum", "2", "--val-fraction", "0.25", "--lr", "1e-2", "--no-progress"]])
    assert code == 0
    return out


def predict(capsys, *args) -> tuple[int, str]:
    code = predict_cli.main(["--no-progress", "--device", "cpu", *map(str, args)])
    return code, capsys.readouterr().err


def probabilities(folder: Path) -> list[dict]:
    return [json.loads(x)["probs"] for x in (folder / "predictions.jsonl").read_text().splitlines()]


def test_a_short_fine_tune_writes_an_adapter_predict_answers_with(trained, checkpoint, synthetic_dataset,
                                                                   tmp_path, capsys):
    family = json.loads((checkpoint / "config.json").read_text())["model_type"]
    card = json.loads((trained / "roadbuddy_adapter.json").read_text())
    assert card["base_architecture"]["model_type"] == family and card["base_model"] == str(checkpoint)
    assert [v["step"] for v in card["validation_curve"]] == [2]
    assert [e["step"] for e in map(json.loads, (trained / "training_log.jsonl").read_text().splitlines())
            if "loss" in e] == [1, 2]
    common = ["--model", checkpoint, "--test-json", synthetic_dataset, *FRAMES]
    code, err = predict(capsys, *common, "--output", tmp_path / "base" / "submission.csv")
    assert code == 0, err
    code, err = predict(capsys, *common, "--output", tmp_path / "adapted" / "submission.csv", "--adapter", trained)
    assert code == 0 and f"adapter {trained} (merged into the weights)" in err, err
    base, adapted = probabilities(tmp_path / "base"), probabilities(tmp_path / "adapted")
    assert len(base) == len(adapted) == 7 and base != adapted


def test_an_adapter_of_another_family_is_one_sentence_exit_2_before_the_weights_load(
        trained, checkpoint, synthetic_dataset, tmp_path, capsys, monkeypatch):
    from transformers import AutoModelForImageTextToText

    family = json.loads((checkpoint / "config.json").read_text())["model_type"]

    def load_weights(*_args, **_kwargs):
        pytest.fail("the weights were loaded before a refusal that needs config.json only")

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", load_weights)
    # a card that names no family was written when roadbuddy-finetune trained InternVL only: it is InternVL's
    assert "model_type" not in json.loads((INTERNVL_ADAPTER / "roadbuddy_adapter.json").read_text())["base_architecture"]
    assert adapters.check_for_base(INTERNVL_ADAPTER, checkpoint_config(str(tiny_task.CHECKPOINT))) == INTERNVL_ADAPTER
    pairs = [(checkpoint, INTERNVL_ADAPTER, "internvl", family), (tiny_task.CHECKPOINT, trained, family, "internvl")]
    for model, adapter, made_for, loaded in pairs:
        code, err = predict(capsys, "--model", model, "--test-json", synthetic_dataset, "--adapter", adapter,
                            "--output", tmp_path / made_for / "submission.csv")
        assert code == 2 and err.splitlines()[-1] == (
            f"error: --adapter {adapter} was made for a model of the {made_for} family "
            f"({json.loads((adapter / 'roadbuddy_adapter.json').read_text())['base_model']}), not for the {loaded} "
            "model loaded: an adapter fits only the model family it was trained on"), err
    # and --lora-vision, which only InternVL's tower takes, before any weights load too
    code = finetune_cli.main([str(a) for a in ["--model", checkpoint, "--device", "cpu", "--train-json",
                                               synthetic_dataset, "--output", tmp_path / "v", "--lora-vision"]])
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines()[-1].startswith("error: --lora-vision adapts InternVL's vision tower"), err
