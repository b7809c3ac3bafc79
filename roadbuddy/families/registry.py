"""Which model family a checkpoint belongs to, told apart by its config.json (`model_type`), and the family's
functions (roadbuddy.families.protocol) by name. A checkpoint of any other family is refused in one sentence
that names the families that run, before its weights load. The names, the refusal and the challenge's cap on
parameters live in names.py (every family module may import it); they are re-exported here.
"""
from __future__ import annotations

import importlib

from roadbuddy.families.names import (COMING, FAMILIES, PARAMETER_CAP, UnsupportedFamily,  # noqa: F401
                                      family_of, over_cap_warning, parameter_count)

# where each family's object lives (module, attribute)
_OPS = {
    "internvl": ("roadbuddy.families.internvl.family", "INTERNVL"),
    "qwen3_vl": ("roadbuddy.families.qwen_vl.family", "QWEN3_VL"),
    "qwen2_5_vl": ("roadbuddy.families.qwen_vl.family", "QWEN2_5_VL"),
    "qwen3_5": ("roadbuddy.families.qwen3_5.family", "QWEN3_5"),
}


def ops(family: str):
    """The family's object (roadbuddy.families.protocol.Family)."""
    module, attribute = _OPS[family]
    return getattr(importlib.import_module(module), attribute)


def checkpoint_name(name: str) -> str:
    """The checkpoint a --model value names (an original-format InternVL id names its native twin)."""
    from roadbuddy.families.internvl.ids import resolve_model_id

    return resolve_model_id(name)[0]


def check_model(cfg):
    """The family of the checkpoint --model names (its config.json read, the family checked to run and to take
    this RunConfig) before anything heavy loads; ModelLoadError or a family's ConfigError in one sentence."""
    from roadbuddy.families.checkpoint import checkpoint_config
    from roadbuddy.families.internvl.ids import resolve_model_id

    config = checkpoint_config(resolve_model_id(cfg.model)[0])
    family = ops(family_of(config, cfg.model))
    family.check_config(cfg)
    return family


def load_model(cfg):
    """The checkpoint --model names, loaded by its family (told apart by its config.json)."""
    return check_model(cfg).load(cfg)
