"""The base model wrapped with LoRA layers for fine-tuning, nothing of it cast."""
from __future__ import annotations

import torch

from roadbuddy.families import adapters
from roadbuddy.finetune.config import TrainConfig


def with_lora(model: torch.nn.Module, cfg: TrainConfig, targets: str):
    """The loaded base (bf16, fp32 on the CPU, or 4-bit with predict's skip list) wrapped with LoRA layers on
    the modules `targets` (peft's full-match regex, the family's `lora_targets`) names.

    Nothing of the base is cast: peft's prepare_model_for_kbit_training would upcast every parameter that is
    not 4-bit (vision tower, projector, embeddings, lm_head, norms) to fp32, past the memory QLoRA plans and
    onto another numeric path than predict's bf16. What it does besides is done here: the base is frozen
    (get_peft_model), and gradient checkpointing is non-reentrant, which reaches the LoRA weights inside the
    checkpointed layers without the layers' inputs requiring gradients (so no enable_input_require_grads).
    transformers' checkpointing switch installs those hooks anyway, on every input embedding it finds: a
    vision tower that exposes its patch embedding as one (Qwen2.5-VL's) would then record its whole graph
    inside the model's forward, frozen as it is. They are removed, so the frozen tower runs without gradients.
    """
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)  # the LoRA initialisation: the same on every rank
    lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                      target_modules=targets)
    with adapters.quiet_peft():
        peft_model = get_peft_model(model, lora)
    base = peft_model.get_base_model()
    if cfg.gradient_checkpointing:  # transformers 5.2x renamed it; 5.17 has only the old name
        if hasattr(base, "activation_checkpointing_enable"):
            base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if getattr(base, "_require_grads_hooks", None) or hasattr(base, "_require_grads_hook"):
            base.disable_input_require_grads()
    return peft_model
