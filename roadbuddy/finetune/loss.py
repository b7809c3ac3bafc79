"""Fine-tuning's loss: the answer letter's cross-entropy at the one position score mode reads (and the end of
the turn after it), from the logits the model's family computes at those two positions; and the dropout
seed of a forward."""
from __future__ import annotations

import hashlib

import torch

from roadbuddy.families.loaded import LoadedModel


def step_seed(seed: int, epoch: int, slot: int) -> int:
    """The dropout seed of the forward pass that starts at this slot.

    At batch size 1 (the default) a forward pass is one example, so its dropout masks are the same in any
    process layout and after any resume. With larger batches the masks are drawn for the micro-batch's whole
    padded tensor, so they depend on which examples share a forward: the same after a resume with the same
    layout, but not between, say, 1 process at batch 4 and 2 processes at batch 2 (--lora-dropout 0 has no
    masks, and the layouts then agree to rounding)."""
    return int.from_bytes(hashlib.sha256(f"dropout:{seed}:{epoch}:{slot}".encode()).digest()[:8], "little") >> 1


def answer_loss(lm: LoadedModel, examples: list, features: list, stop_id: int):
    """The summed cross-entropy of the answer letter after the assistant turn opens and of the end of the turn
    after it (their mean per example), with logits only at those two positions per example (the family's
    `answer_logits`; `features` are its `training_features` of the examples); and, detached, each example's
    letter part alone: -log softmax of the logits score mode reads for that prompt, at the letter
    (tests/test_finetune.py and tests/test_finetune_qwen.py hold them equal)."""
    letter_ids = [lm.letter_ids[e.target] for e in examples]
    logits = lm.ops.answer_logits(lm, examples, letter_ids, features)  # [examples, 2, vocab]
    targets = torch.tensor([[lid, stop_id] for lid in letter_ids], device=logits.device)
    each = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             reduction="none").view(-1, 2)
    return each.sum() / 2, each[:, 0].detach()
