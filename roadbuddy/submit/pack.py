"""roadbuddy-pack's work: runs' settings -> a sealed folder that answers /data -> /result with nothing else.

    OUTPUT/models/m<i>/        each distinct model's files (config, safetensors, tokenizer, processor), once
    OUTPUT/adapters/a<i>/      LoRA adapters, as roadbuddy-finetune wrote them
    OUTPUT/selectors/s<i>/     frame selectors: the files that load one (no training log, checkpoint/, scan-cache/)
    OUTPUT/prompts/, priors/   a system prompt file, a --debias-prior, where a member has one
    OUTPUT/code/roadbuddy/     this roadbuddy's code (predict.sh puts it first on PYTHONPATH)
    OUTPUT/settings.json       the frozen members (roadbuddy.submit.frozen) and the ensemble's weights
    OUTPUT/predict.sh          runs it all: $ROADBUDDY_DATA (/data) -> $ROADBUDDY_RESULT (/result), hub off
    OUTPUT/requirements.txt    the libraries at the versions installed here, pinned
    OUTPUT/Dockerfile          a CUDA base image, the requirements, the folder, predict.sh as the command
    OUTPUT/SHA256SUMS          every file's sha256, checked before anything runs (roadbuddy.submit.sealed)

Nothing is written to OUTPUT until every member is checked and the parameters (every model, adapter and frame
selector, each once) are counted: the folder is built under OUTPUT.partial and renamed at the end, so a failed or
killed pack never leaves a package that looks whole.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import stat
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from roadbuddy import __version__
from roadbuddy.config import RunConfig
from roadbuddy.submit import frozen
from roadbuddy.submit.sealed import PackageError, write_manifest

SETTINGS_FORMAT = 1
# what from_pretrained may read from a checkpoint folder; pickle weights and remote code never travel
UNSAFE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5", ".msgpack", ".onnx", ".py", ".pyc")
BASE_IMAGE = "nvidia/cuda:12.8.1-runtime-ubuntu24.04"
# what load_selector reads from a frame selector's folder (roadbuddy-finetune-selector writes the first, the
# tokenizer and processor files, and selector_card.json); its log, chart, checkpoint/ and scan-cache/ stay home
SELECTOR_FILES = ("config.json", "model.safetensors.index.json", "selector_card.json")
SELECTOR_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
SELECTOR_VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "vocab.json",
                        "vocab.txt")  # one of these is the tokenizer itself
SELECTOR_TOKENIZER_FILES = (*SELECTOR_VOCAB_FILES, "tokenizer_config.json", "special_tokens_map.json",
                            "added_tokens.json", "merges.txt")


@dataclass
class Plan:
    """What goes where: sources (absolute) -> places (relative to the package), and the parameter count."""
    members: list[RunConfig]
    weights: list[float] | None
    copies: dict[str, Path] = field(default_factory=dict)  # place -> source folder or file
    places: list[dict[str, str]] = field(default_factory=list)  # per member: field -> place
    parameters: dict[str, int] = field(default_factory=dict)  # place of a model, adapter, selector -> parameters

    @property
    def total_parameters(self) -> int:
        return sum(self.parameters.values())


def _cached(name: str, given: str, flag: str) -> Path:
    """The snapshot of hub id `name` in the Hugging Face cache, never downloaded; PackageError when it is not there."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True)).resolve()
    except Exception:  # noqa: BLE001 - not cached, in whatever way the hub client says it
        raise PackageError(f"{flag} {given}: no such folder, and {name} is not in the Hugging Face cache; download "
                           f"it first (hf download {name}) or pass the checkpoint's folder") from None


def model_folder(model: str) -> Path:
    """The folder of the checkpoint --model names: itself, or its snapshot in the Hugging Face cache (packing never
    downloads: the runs being packed had the model)."""
    from roadbuddy.families import registry

    if Path(model).is_dir():
        return Path(model).resolve()
    return _cached(registry.checkpoint_name(model), model, "--model")


def selector_folder(selector: str) -> Path:
    """The folder of the frame selector --frame-selector names: itself, or its snapshot in the Hugging Face cache
    (never downloaded, as models are not)."""
    path = Path(selector)
    if path.is_dir():
        return path.resolve()
    if path.exists():
        raise PackageError(f"--frame-selector {selector} is a file; give the selector's folder or a hub id")
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(selector)
    except HFValidationError:
        raise PackageError(f"--frame-selector {selector}: no such folder") from None
    return _cached(selector, selector, "--frame-selector")


def selector_files(folder: Path) -> list[Path]:
    """The files of a frame selector that travel: its config, safetensors weights, tokenizer and processor files
    and selector_card.json, top level only (a checkpoint/ or scan-cache/ of its training stays behind, as do its
    log and chart; pickles and code never travel)."""
    wanted = (*SELECTOR_FILES, *SELECTOR_PROCESSOR_FILES, *SELECTOR_TOKENIZER_FILES)
    return sorted(p for p in folder.iterdir() if p.is_file() and (p.name in wanted or p.suffix == ".safetensors"))


def check_selector_folder(folder: Path, shown: str | None = None) -> int:
    """Check a frame selector's folder as load_selector will read it, without loading its weights: a SigLIP or
    SigLIP 2 config.json, readable safetensors weights, a tokenizer and an image processor; its parameters.
    PackageError (one sentence naming `shown`, the folder by default) otherwise."""
    from roadbuddy.selector.model import MODEL_TYPES

    shown = shown or str(folder)
    if not folder.is_dir():
        raise PackageError(f"frame selector {shown} is not a folder")
    try:
        model_type = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        raise PackageError(f"frame selector {shown} has no readable config.json; it is not a checkpoint made by "
                           "roadbuddy-finetune-selector") from None
    if model_type not in MODEL_TYPES:
        raise PackageError(f"frame selector {shown} is a checkpoint of model_type {model_type or 'none'}; the frame "
                           "selector takes SigLIP or SigLIP 2 checkpoints (model_type siglip or siglip2)")
    files = selector_files(folder)
    names = {p.name for p in files}
    weights = [p for p in files if p.suffix == ".safetensors"]
    missing = [what for what, ok in (("safetensors weights", weights),
                                     ("tokenizer (" + " or ".join(SELECTOR_VOCAB_FILES[:3]) + ")",
                                      names & set(SELECTOR_VOCAB_FILES)),
                                     ("image processor (preprocessor_config.json)",
                                      names & set(SELECTOR_PROCESSOR_FILES))) if not ok]
    if missing:
        raise PackageError(f"frame selector {shown} has no {' and no '.join(missing)}, so it cannot be loaded")
    try:
        return safetensors_parameters(weights)
    except Exception as exc:  # noqa: BLE001 - a header safetensors cannot read, in whatever words it says so
        raise PackageError(f"frame selector {shown}: its weights cannot be read "
                           f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None


def checkpoint_files(folder: Path) -> list[Path]:
    """The files of a checkpoint that travel: every top-level file but pickles and code; PackageError without
    config.json or safetensors weights."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and not p.name.endswith(UNSAFE_SUFFIXES))
    if not (folder / "config.json").is_file() or not any(p.suffix == ".safetensors" for p in files):
        raise PackageError(f"{folder} is not a checkpoint that can be packed (it needs config.json and safetensors "
                           "weights)")
    return files


def safetensors_parameters(paths: list[Path]) -> int:
    """Parameters held in these safetensors files, read from their headers (no tensor is loaded)."""
    from safetensors import safe_open

    total = 0
    for path in paths:
        with safe_open(str(path), framework="pt") as fh:
            for key in fh.keys():  # noqa: SIM118 - safe_open is not iterable
                count = 1
                for size in fh.get_slice(key).get_shape():
                    count *= size
                total += count
    return total


def plan(members: list[RunConfig], weights: list[float] | None, max_params: float) -> Plan:
    """Check every member (its model's family and settings, its adapter, its frame selector), place each distinct
    file once, count the parameters (models, adapters and frame selectors); PackageError (one sentence) for what
    cannot be packed or breaks the parameter cap."""
    from roadbuddy.families import registry
    from roadbuddy.families.adapters import check_for_base
    from roadbuddy.families.checkpoint import checkpoint_config

    out = Plan(members=members, weights=weights)
    placed: dict[tuple[str, Path], str] = {}
    for index, cfg in enumerate(members):
        registry.check_model(cfg)
        sources = frozen.packed_sources(cfg)
        places = {}
        for name, value in sources.items():
            if name == "model":
                source, kind = model_folder(value), "models/m"
            elif name == "adapter":
                source = check_for_base(value, checkpoint_config(registry.checkpoint_name(cfg.model))).resolve()
                kind = "adapters/a"
            elif name == "frame_selector":
                source, kind = selector_folder(value), "selectors/s"
            elif name == "system_prompt":
                source, kind = Path(value).resolve(), "prompts/system"
            else:
                source, kind = Path(value).resolve(), "priors/prior"
            key = (kind, source)
            if key not in placed:
                number = sum(k[0] == kind for k in placed)
                placed[key] = f"{kind}{number}" + (".txt" if kind == "prompts/system" else
                                                   ".json" if kind == "priors/prior" else "")
                out.copies[placed[key]] = source
                if kind == "models/m":
                    out.parameters[placed[key]] = safetensors_parameters(
                        [p for p in checkpoint_files(source) if p.suffix == ".safetensors"])
                elif kind == "adapters/a":
                    out.parameters[placed[key]] = safetensors_parameters(sorted(source.glob("*.safetensors")))
                elif kind == "selectors/s":
                    out.parameters[placed[key]] = check_selector_folder(source, value)
            places[name] = placed[key]
        out.places.append(places)
    if out.total_parameters > max_params:
        shown = ", ".join(f"{place} {count / 1e9:.2f}B" for place, count in out.parameters.items())
        raise PackageError(f"the package would hold {out.total_parameters / 1e9:.2f}B parameters ({shown}), above "
                           f"--max-params {max_params / 1e9:.2f}B (the challenge allows 8B in all at inference, "
                           "every model, adapter and frame selector counted)")
    return out


def _copy(source: Path, target: Path, progress) -> str:
    """Copy one file, hashing it on the way; its sha256."""
    digest = hashlib.sha256()
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src, open(target, "wb") as dst:
        for block in iter(lambda: src.read(1 << 22), b""):
            digest.update(block)
            dst.write(block)
            progress.update(len(block))
    return digest.hexdigest()


def code_files() -> tuple[Path, list[Path]]:
    """This roadbuddy's package folder and its files (no bytecode)."""
    import roadbuddy

    root = Path(roadbuddy.__file__).resolve().parent
    return root, sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                        and p.suffix != ".pyc")


def requirements(members: list[RunConfig]) -> list[str]:
    """The libraries roadbuddy needs to answer, at the versions installed here (torch without its local build
    tag: a CUDA wheel from PyPI), plus bitsandbytes for a quantized member and torchvision where it is installed
    (the Qwen processors need it)."""
    from packaging.requirements import Requirement

    names = [Requirement(r).name for r in metadata.requires("roadbuddy") or [] if "extra ==" not in r]
    if any(cfg.quantization for cfg in members):
        names.append("bitsandbytes")
    names += ["torchvision", "huggingface_hub", "accelerate"]
    pins = []
    for name in dict.fromkeys(names):
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name == "bitsandbytes":
                raise PackageError("a member loads in 8 or 4 bits but bitsandbytes is not installed here, so its "
                                   "version cannot be pinned: pip install bitsandbytes") from None
            continue
        pins.append(f"{name}=={version.split('+')[0]}")
    return pins


PREDICT_SH = """#!/bin/sh
# RoadBuddy sealed package: answers $ROADBUDDY_DATA/private_test.json (default /data) about the clips in its
# videos/ folder and writes $ROADBUDDY_RESULT/submission.csv and time_submission.csv (default /result), with the
# frozen settings of settings.json, the Hugging Face hub switched off, after checking every file against SHA256SUMS.
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
DATA="${ROADBUDDY_DATA:-/data}"
RESULT="${ROADBUDDY_RESULT:-/result}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$HERE/code${PYTHONPATH:+:$PYTHONPATH}"
exec "${ROADBUDDY_PYTHON:-python3}" -m roadbuddy.submit.run_package --package "$HERE" \\
    --test-json "${ROADBUDDY_TEST_JSON:-$DATA/private_test.json}" --result "$RESULT" "$@"
"""

DOCKERFILE = """# The RoadBuddy submission: docker build -t roadbuddy-submission .
# docker run --gpus all -v /path/to/data:/data:ro -v /path/to/result:/result roadbuddy-submission
ARG BASE={base}
FROM ${{BASE}}
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \\
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH ROADBUDDY_PYTHON=/opt/venv/bin/python HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
COPY requirements.txt /opt/roadbuddy/requirements.txt
RUN pip install --no-cache-dir -r /opt/roadbuddy/requirements.txt
COPY . /opt/roadbuddy
RUN chmod +x /opt/roadbuddy/predict.sh
CMD ["/opt/roadbuddy/predict.sh"]
"""


def build(pack: Plan, output: Path, *, progress: bool = True) -> Path:
    """Write the package of `pack` to `output` (which must not exist or be empty); its path."""
    from tqdm import tqdm

    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise PackageError(f"--output {output} exists and is not an empty folder; choose a new one")
    partial = output.with_name(output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    jobs: list[tuple[Path, Path]] = []  # source file -> place
    for place, source in pack.copies.items():
        if source.is_dir():
            if place.startswith("models/"):
                files = checkpoint_files(source)
            elif place.startswith("selectors/"):
                files = selector_files(source)
            else:
                files = sorted(p for p in source.iterdir() if p.is_file() and not p.name.endswith(UNSAFE_SUFFIXES))
            jobs += [(f, Path(place) / f.name) for f in files]
        elif place.startswith("priors/"):
            from roadbuddy.levers import letter_prior

            doc = letter_prior.load(source)  # a report, run.json or prior.json: the prior alone travels
            (partial / place).parent.mkdir(parents=True, exist_ok=True)
            (partial / place).write_text(json.dumps({"prior": doc["prior"]}, indent=1) + "\n", encoding="utf-8")
        else:
            jobs.append((source, Path(place)))
    code_root, code = code_files()
    jobs += [(f, Path("code") / "roadbuddy" / f.relative_to(code_root)) for f in code]
    digests = {}
    with tqdm(total=sum(f.stat().st_size for f, _ in jobs), unit="B", unit_scale=True, desc="packing",
              disable=not progress) as bar:
        for source, place in jobs:
            digests[place] = _copy(source, partial / place, bar)
    settings = {"format": SETTINGS_FORMAT, "roadbuddy": __version__,
                "members": [frozen.freeze(cfg, places) for cfg, places in zip(pack.members, pack.places)],
                "weights": pack.weights, "parameters": pack.parameters, "total_parameters": pack.total_parameters}
    (partial / frozen.SETTINGS).write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (partial / "requirements.txt").write_text("\n".join(requirements(pack.members)) + "\n", encoding="utf-8")
    script = partial / "predict.sh"
    script.write_text(PREDICT_SH, encoding="utf-8")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    (partial / "Dockerfile").write_text(DOCKERFILE.format(base=BASE_IMAGE), encoding="utf-8")
    write_manifest(partial, digests)
    if output.exists():
        output.rmdir()
    partial.rename(output)
    return output
