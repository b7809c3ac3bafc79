"""The real Qwen2/Qwen3 tokenizer, built offline, for tests, benches and prompt-length figures.

The -HF checkpoint (and so its tokenizer.json) cannot be downloaded here, and the 600-entry
test BPE (`roadbuddy.testing.checkpoints.build_tokenizer`) makes every reported prompt length wrong. The
base vocabulary of Qwen2 and Qwen3 (151,643 byte-level BPE ranks) ships inside the `dashscope`
wheel on PyPI as `dashscope/resources/qwen.tiktoken`; transformers' `TikTokenConverter` turns it
into a `tokenizers` BPE whose ids match the published ones. The added tokens are then placed at
their published ids (see ADDED_TOKENS), so `<IMG_CONTEXT>` is 151671 as in the InternVL3.5 config.

Where the ranks come from, first hit wins:
  1. $ROADBUDDY_QWEN_VOCAB: a qwen.tiktoken file, a dashscope wheel, or a folder holding either;
  2. an installed dashscope package;
  3. the cache folder (default ~/.cache/roadbuddy/qwen-vocab/): qwen.tiktoken or the wheel;
  4. `pip download dashscope==2.0.2 --no-deps` into the cache folder (the only network use).
The ranks file is refused unless its sha256 is TIKTOKEN_SHA256. The converted tokenizer.json is
cached in the cache folder, so later calls only load it (well under a second, no tiktoken, no
network). The cold build needs neither tiktoken nor dashscope installed: the ranks file is read
here (it is base64 token + rank per line, exactly what tiktoken's own loader parses).
"""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ENV_VAR = "ROADBUDDY_QWEN_VOCAB"
DASHSCOPE_VERSION = "2.0.2"
WHEEL_MEMBER = "dashscope/resources/qwen.tiktoken"
# sha256 of qwen.tiktoken as shipped in dashscope 2.0.2 (151,643 lines; recorded 2026-12).
TIKTOKEN_SHA256 = "b2b1b8dfb5cc5f024bafc373121c6aba3f66f9a5a0269e243470a1de16a33186"
NUM_RANKS = 151643
# Bump when the tokenizer built below changes, so stale caches are rebuilt, not reused.
CACHE_NAME = "qwen-tokenizer-v1.json"

# Qwen2's pre-tokenizer (one digit per token, unlike the converter's default \p{N}{1,3}).
PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# (id, content, special). 151643-151668 and their special flags are Qwen3's published
# tokenizer_config.json added_tokens_decoder (Qwen3-4B, read from a public copy). Qwen3 marks
# <tool_call>..</think> special=False: they stay single tokens even with split_special_tokens=True.
# 151669-151671 are InternVL3.5's image tokens; their ids are inferred (shared/INTERNVL.md) and
# special=True follows InternVL's Qwen2.5-based tokenizer, where <img> and <IMG_CONTEXT> are special.
# The -HF tokenizer's later tokens (<quad>, <ref>, <box>, ..., maybe <video>) are left out.
ADDED_TOKENS: tuple[tuple[int, str, bool], ...] = (
    (151643, "<|endoftext|>", True), (151644, "<|im_start|>", True), (151645, "<|im_end|>", True),
    (151646, "<|object_ref_start|>", True), (151647, "<|object_ref_end|>", True),
    (151648, "<|box_start|>", True), (151649, "<|box_end|>", True),
    (151650, "<|quad_start|>", True), (151651, "<|quad_end|>", True),
    (151652, "<|vision_start|>", True), (151653, "<|vision_end|>", True),
    (151654, "<|vision_pad|>", True), (151655, "<|image_pad|>", True), (151656, "<|video_pad|>", True),
    (151657, "<tool_call>", False), (151658, "</tool_call>", False),
    (151659, "<|fim_prefix|>", False), (151660, "<|fim_middle|>", False),
    (151661, "<|fim_suffix|>", False), (151662, "<|fim_pad|>", False),
    (151663, "<|repo_name|>", False), (151664, "<|file_sep|>", False),
    (151665, "<tool_response>", False), (151666, "</tool_response>", False),
    (151667, "<think>", False), (151668, "</think>", False),
    (151669, "<img>", True), (151670, "</img>", True), (151671, "<IMG_CONTEXT>", True),
)
MODEL_MAX_LENGTH = 40960  # the 4B config's max_position_embeddings; Qwen3's own file says 262144


class QwenVocabUnavailable(RuntimeError):
    """The Qwen vocabulary cannot be had here (no wheel, no pip, no network); str(err) is one sentence."""


class QwenVocabMismatch(QwenVocabUnavailable):
    """A qwen.tiktoken was found but is not the recorded file; refused rather than silently used."""


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "roadbuddy" / "qwen-vocab"


def qwen_tokenizer(cache_dir: Path | str | None = None):
    """The real Qwen tokenizer with InternVL3.5's tokens, as a transformers.PreTrainedTokenizerFast.

    eos <|im_end|>, pad <|endoftext|>, no bos, no unk. Builds and caches tokenizer.json on the
    first call (a few seconds); raises QwenVocabUnavailable when the vocabulary cannot be found
    or fetched, QwenVocabMismatch when the file found is not the recorded one.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / CACHE_NAME
    if path.is_file():
        try:
            return _wrap(path)
        except Exception:  # an unreadable or foreign cache file: rebuild it below
            pass
    tokenizer = _convert(_parse_ranks(_find_ranks(cache)))
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tokenizer.save(str(tmp))
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
    except OSError:  # read-only cache: still usable, just rebuilt next time
        return _wrap_object(tokenizer)
    return _wrap(path)


# --- finding the ranks file ------------------------------------------------------------------

def _find_ranks(cache: Path) -> bytes:
    env = os.environ.get(ENV_VAR)
    if env:
        found = _ranks_in(Path(env).expanduser())
        if found is None:
            raise QwenVocabUnavailable(f"{ENV_VAR}={env} names no qwen.tiktoken file, dashscope wheel "
                                       "or folder holding one.")
        return found
    spec = importlib.util.find_spec("dashscope")  # locates the package without importing it
    if spec is not None and spec.origin:
        found = _ranks_in(Path(spec.origin).parent / "resources" / "qwen.tiktoken")
        if found is not None:
            return found
    found = _ranks_in(cache)
    if found is None:
        _pip_download(cache)
        found = _ranks_in(cache)
    if found is None:
        raise QwenVocabUnavailable(f"pip download of dashscope=={DASHSCOPE_VERSION} left no wheel holding "
                                   f"{WHEEL_MEMBER} in {cache}.")
    return found


def _ranks_in(where: Path) -> bytes | None:
    """The checked bytes of qwen.tiktoken at `where` (the file, a wheel, or a folder), or None."""
    if where.is_dir():
        for candidate in [where / "qwen.tiktoken", *sorted(where.glob("dashscope-*.whl"), reverse=True)]:
            found = _ranks_in(candidate)
            if found is not None:
                return found
        return None
    if not where.is_file():
        return None
    if where.suffix == ".whl":
        try:
            with zipfile.ZipFile(where) as wheel:
                data = wheel.read(WHEEL_MEMBER)
        except (zipfile.BadZipFile, KeyError, OSError):
            return None
    else:
        data = where.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != TIKTOKEN_SHA256:
        raise QwenVocabMismatch(f"{where} holds a qwen.tiktoken with sha256 {digest}, not the recorded "
                                f"{TIKTOKEN_SHA256}; refusing a different vocabulary.")
    return data


def _pip_download(cache: Path) -> None:
    try:
        cache.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", f"dashscope=={DASHSCOPE_VERSION}", "--no-deps",
             "--only-binary=:all:", "--disable-pip-version-check", "--timeout", "15", "--retries", "1",
             "-q", "-d", str(cache)],
            capture_output=True, text=True, timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise QwenVocabUnavailable(f"cannot fetch dashscope=={DASHSCOPE_VERSION} with pip into {cache} "
                                   f"({type(exc).__name__}); set {ENV_VAR} to a qwen.tiktoken or the wheel.") from None
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise QwenVocabUnavailable(f"pip could not download dashscope=={DASHSCOPE_VERSION} into {cache} "
                                   f"({why}); set {ENV_VAR} to a qwen.tiktoken or the wheel.")


# --- building the tokenizer ------------------------------------------------------------------

def _parse_ranks(data: bytes) -> dict[bytes, int]:
    ranks = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _convert(ranks: dict[bytes, int]):
    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class _Converter(TikTokenConverter):
        # The ranks are already read and checked; this skips tiktoken's loader (and the dependency).
        @staticmethod
        def load_tiktoken_bpe(_url):
            return ranks

    tok = _Converter(vocab_file="qwen.tiktoken", pattern=PATTERN).converted()
    # As Qwen's published tokenizer.json: NFC first, and plain BPE merging (the converter's
    # whole-word shortcut gives the same ids on RoadBuddy text, checked against tiktoken).
    tok.normalizer = normalizers.NFC()
    tok.model.ignore_merges = False
    if tok.get_vocab_size() != NUM_RANKS:
        raise QwenVocabUnavailable(f"the converted vocabulary has {tok.get_vocab_size()} entries, not {NUM_RANKS}.")
    for token_id, content, special in ADDED_TOKENS:  # ids are dense from NUM_RANKS, so order fixes them
        tok.add_tokens([AddedToken(content, special=special, normalized=False)])
        if tok.token_to_id(content) != token_id:
            raise QwenVocabUnavailable(f"{content} landed at id {tok.token_to_id(content)}, not {token_id}.")
    return tok


def _wrap_kwargs() -> dict:
    return dict(eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None,
                model_max_length=MODEL_MAX_LENGTH, clean_up_tokenization_spaces=False)


def _wrap_object(tok):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, **_wrap_kwargs())


def _wrap(path: Path):
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(tokenizer_file=str(path), **_wrap_kwargs())
    last_id, last = ADDED_TOKENS[-1][:2]
    if len(wrapped) != last_id + 1 or wrapped.convert_tokens_to_ids(last) != last_id:
        raise ValueError(f"{path} is not the tokenizer this module builds")
    return wrapped
