"""InternVL's hub ids: the original-format (remote-code) ones map to their native twins."""
from __future__ import annotations

import re
from pathlib import Path

_ORIGINAL_IDS = [
    (re.compile(r"^(OpenGVLab/InternVL3_5-[0-9.]+B(?:-\w+)?)$"), "-HF"),
    (re.compile(r"^(OpenGVLab/InternVL3-[0-9.]+B(?:-\w+)?)$"), "-hf"),
]


def resolve_model_id(name: str) -> tuple[str, str | None]:
    """Map an original-format hub id to its native `-HF`/`-hf` twin; returns (id, note)."""
    if Path(name).exists():
        return name, None
    for pattern, suffix in _ORIGINAL_IDS:
        m = pattern.match(name)
        if m and not name.lower().endswith("-hf"):
            twin = name + suffix
            return twin, f"{name} is the original (remote-code) format; loading its native twin {twin}"
    return name, None
