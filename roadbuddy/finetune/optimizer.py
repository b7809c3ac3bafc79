"""AdamW and its learning-rate schedule, built the same way by both trainers (roadbuddy-finetune's recipe and
roadbuddy-finetune-selector's): a config's lr, weight_decay, lr_schedule and warmup_steps."""
from __future__ import annotations

import torch

# --lr-schedule -> transformers' scheduler name: each decays from the peak after the linear warm-up
SCHEDULERS = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}


def adamw(trainable: dict[str, torch.nn.Parameter], cfg, total_steps: int):
    """(AdamW over the trainable parameters, its scheduler, position -> parameter name for the checkpoint)."""
    from transformers import get_scheduler

    optimizer = torch.optim.AdamW(list(trainable.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_scheduler(SCHEDULERS[cfg.lr_schedule], optimizer, num_warmup_steps=cfg.warmup_steps,
                              num_training_steps=total_steps)
    return optimizer, scheduler, dict(enumerate(trainable))
