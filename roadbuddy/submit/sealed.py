"""A package's hash list (SHA256SUMS): written last when it is packed, checked first when it runs.

Every file of the package is listed with its sha256 (the `sha256sum` format, so `sha256sum -c SHA256SUMS` checks
it too). A package whose file is missing, changed (a corrupted weight, settings edited by hand) or unlisted where
it must be is refused in one sentence before anything loads.
"""
from __future__ import annotations

from pathlib import Path

from roadbuddy.data.atomic import atomic_write_text
from roadbuddy.data.digest import file_sha256

MANIFEST = "SHA256SUMS"


class PackageError(ValueError):
    """The package cannot run as packed (missing, changed or unlisted file, bad settings); one sentence."""


def package_files(root: Path) -> list[Path]:
    """Every file of the package but the hash list itself, relative to `root`, sorted (bytecode caches aside)."""
    return sorted(p.relative_to(root) for p in root.rglob("*")
                  if p.is_file() and p.name != MANIFEST and "__pycache__" not in p.parts)


def write_manifest(root: Path, digests: dict[Path, str] | None = None) -> Path:
    """SHA256SUMS for every file under `root`; `digests` gives those already hashed while they were copied."""
    digests = digests or {}
    lines = [f"{digests.get(rel) or file_sha256(root / rel)}  {rel.as_posix()}" for rel in package_files(root)]
    atomic_write_text(root / MANIFEST, "\n".join(lines) + "\n")
    return root / MANIFEST


def read_manifest(root: Path) -> dict[str, str]:
    """Relative path -> sha256, from the package's SHA256SUMS."""
    path = root / MANIFEST
    if not path.is_file():
        raise PackageError(f"{root} has no {MANIFEST}: it is not a package made by roadbuddy-pack (or is "
                           "incomplete); pack it again")
    listed = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise PackageError(f"{path} line {number} is not '<sha256>  <relative path>'; pack the package again")
        listed[rel] = digest
    return listed


def verify(root: Path, say=lambda _m: None) -> int:
    """Check every listed file against its sha256; PackageError naming the first missing or changed one. Returns
    the number of bytes checked."""
    listed = read_manifest(root)
    missing = [rel for rel in listed if not (root / rel).is_file()]
    if missing:
        raise PackageError(f"package file {missing[0]} is missing ({len(missing)} of the {len(listed)} files in "
                           f"{MANIFEST} are): the package is incomplete; copy it whole or pack it again")
    total = sum((root / rel).stat().st_size for rel in listed)
    say(f"checking the package's {len(listed)} files ({total / 2**30:.2f} GiB) against {MANIFEST}")
    for rel, digest in listed.items():
        if file_sha256(root / rel) != digest:
            raise PackageError(f"package file {rel} does not match its sha256 in {MANIFEST} (corrupted, or edited "
                               "after packing): restore it, or pack again with the settings you want")
    return total
