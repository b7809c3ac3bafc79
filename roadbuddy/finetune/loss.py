"""Fine-tuning's loss and what it adapts: the answer letter's cross-entropy at the one position score mode
reads (and the end of the turn after it), the LoRA target modules, and the dropout seed of a forward."""
from __future__ import annotations

import hashlib

import torch

from roadbuddy.families.internvl.model import LoadedModel, _embed
from roadbuddy.finetune.config import TrainConfig

LM_LAYERS = r"model\.language_model\.layers\.\d+\.(?:self_attn|mlp)\.(?:{names})"
VISION_LAYERS = (r"model\.vision_tower\.encoder\.layer\.\d+\.(?:attention\.(?:q_proj|k_proj|v_proj|projection_layer)"
                 r"|mlp\.(?:fc1|fc2))|model\.multi_modal_projector\.linear_\d+")


def lora_target_regex(cfg: TrainConfig) -> str:
    pattern = LM_LAYERS.format(names="|".join(cfg.targets))
    return f"{pattern}|{VISION_LAYERS}" if cfg.lora_vision else pattern


def step_seed(seed: int, epoch: int, slot: int) -> int:
    """The dropout seed of the forward pass that starts at this slot.

    At batch size 1 (the default) a forward pass is one example, so its dropout masks are the same in any
    process layout and after any resume. With larger batches the masks are drawn for the micro-batch's whole
    padded tensor, so they depend on which examples share a forward: the same after a resume with the same
    layout, but not between, say, 1 process at batch 4 and 2 processes at batch 2 (--lora-dropout 0 has no
    masks, and the layouts then agree to rounding)."""
    return int.from_bytes(hashlib.sha256(f"dropout:{seed}:{epoch}:{slot}".encode()).digest()[:8], "little") >> 1


def answer_loss(lm: LoadedModel, examples: list, features: list[torch.Tensor], stop_id: int):
    """The summed cross-entropy of the answer letter after the assistant turn opens and of the end of the turn
    after it (their mean per example), for right-padded examples in one forward, with logits only at those
    two positions per example; and, detached, each example's letter part alone: -log softmax of the logits
    score mode reads for that prompt, at the letter (tests/test_finetune.py holds them equal)."""
    letter_ids = [lm.letter_ids[e.target] for e in examples]
    rows = [torch.cat([e.prefix_ids, e.suffix_ids, torch.tensor([[lid]])], dim=1)[0]
            for e, lid in zip(examples, letter_ids)]
    embeds = [_embed(lm, r[None].to(lm.device), f)[0] for r, f in zip(rows, features)]
    width = max(len(r) for r in rows)
    hidden_size = embeds[0].shape[-1]
    batch = embeds[0].new_zeros(len(rows), width, hidden_size)
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=lm.device)
    for i, e in enumerate(embeds):
        batch[i, : e.shape[0]] = e
        mask[i, : e.shape[0]] = 1
    out = lm.model.model.language_model(inputs_embeds=batch, attention_mask=mask, use_cache=False)
    ends = torch.tensor([len(r) for r in rows], device=lm.device)
    at = torch.stack([ends - 2, ends - 1], dim=1)  # the position before the letter, and the letter itself
    picked = out.last_hidden_state[torch.arange(len(rows), device=lm.device)[:, None], at]
    logits = lm.model.lm_head(picked).float()  # [examples, 2, vocab]
    targets = torch.tensor([[lid, stop_id] for lid in letter_ids], device=lm.device)
    each = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             reduction="none").view(-1, 2)
    return each.sum() / 2, each[:, 0].detach()
