"""Frames to the vision tower's input: the model card's dynamic tiling and ImageNet normalisation.

Pixel-for-pixel the card's `dynamic_preprocess` + `build_transform` (PIL bicubic resizes,
/255, (x - mean) / std). Tiling gives uint8 tiles; the normalisation runs once on the stacked
tiles, where they are used (the pipeline normalises on the model's device).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def candidate_grids(min_num: int, max_num: int) -> list[tuple[int, int]]:
    """Every (cols, rows) with min_num <= cols*rows <= max_num, ordered by tile count.

    Built exactly as the card does (a set, then a stable sort on cols*rows): the order of
    grids with equal tile counts decides ties in `choose_grid`, so it must be the card's.
    """
    grids = set(
        (i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1) for j in range(1, n + 1)
        if min_num <= i * j <= max_num
    )
    return sorted(grids, key=lambda g: g[0] * g[1])


def choose_grid(width: int, height: int, image_size: int, min_num: int = 1, max_num: int = 12) -> tuple[int, int]:
    """The card's `find_closest_aspect_ratio`: the grid whose cols/rows is closest to width/height.

    On an exact tie the later (larger) grid wins when the image has more than half its pixels.
    """
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if not 1 <= min_num <= max_num:
        raise ValueError(f"need 1 <= min_num <= max_num, got min_num={min_num}, max_num={max_num}")
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_num, max_num):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * image_size * image_size * cols * rows:
            best = (cols, rows)
    return best


def tile_image(image: Image.Image, image_size: int, max_num: int = 1, min_num: int = 1,
               use_thumbnail: bool = True) -> list[Image.Image]:
    """The card's `dynamic_preprocess`: resize onto the chosen grid, cut row by row, add a thumbnail if >1 tile."""
    cols, rows = choose_grid(image.width, image.height, image_size, min_num, max_num)
    resized = image.resize((image_size * cols, image_size * rows), Image.BICUBIC)
    tiles = [
        resized.crop((c * image_size, r * image_size, (c + 1) * image_size, (r + 1) * image_size))
        for r in range(rows) for c in range(cols)
    ]
    if use_thumbnail and len(tiles) > 1:
        tiles.append(image.resize((image_size, image_size), Image.BICUBIC))
    return tiles


def _planar(stacked: np.ndarray) -> torch.Tensor:
    """uint8 [N,S,S,3] -> uint8 [N,3,S,S], contiguous (a quarter of the bytes of transposing floats)."""
    return torch.from_numpy(np.ascontiguousarray(stacked)).permute(0, 3, 1, 2).contiguous()


def normalize_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """uint8 tiles [N,3,S,S], on any device -> float32 [N,3,S,S] there: the card's ToTensor + Normalize.

    The same float32 operations in the same order (/255, - mean, / std) over contiguous planes, so
    the values equal the card's bit for bit. The divisors are tensors, not Python numbers: CUDA
    divides by a scalar as a multiplication by its reciprocal, which differs in the last bit for
    about half of the 256 levels."""
    device = tiles.device
    scale = torch.full((1, 1, 1, 1), 255.0, dtype=torch.float32, device=device)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
    return tiles.to(torch.float32).div_(scale).sub_(mean).div_(std)


def _stack(tiles: list[Image.Image], image_size: int) -> torch.Tensor:
    """tile_image's RGB SxS tiles -> uint8 [N,3,S,S]."""
    if not tiles:
        return torch.empty((0, 3, image_size, image_size), dtype=torch.uint8)
    return _planar(np.stack([np.asarray(t) for t in tiles]))


def frames_to_tiles(frames: np.ndarray | Sequence[np.ndarray], image_size: int, max_num: int = 1,
                    use_thumbnail: bool = True) -> tuple[torch.Tensor, list[int]]:
    """Tile uint8 RGB frames [K,H,W,3] as the card does, without normalising.

    Returns uint8 tiles [sum of tiles, 3, S, S] (frame by frame, each frame's tiles row-major then
    its thumbnail) and the number of tiles of each frame. `normalize_tiles` turns them into the
    card's pixel values; the pipeline does that on the model's device (a quarter of the bytes to
    move, and no float pass on the CPU).

    Frames that already are one SxS tile (the decoder scaled them, max_num=1) skip PIL: the card's
    1x1 grid resizes an SxS image to SxS and crops all of it, which are copies.
    """
    if max_num == 1 and isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4 \
            and frames.shape[1:] == (image_size, image_size, 3):
        return _planar(frames), [1] * len(frames)
    tiles: list[Image.Image] = []
    counts: list[int] = []
    for frame in frames:
        image = Image.fromarray(np.asarray(frame, dtype=np.uint8))
        if image.mode != "RGB":
            image = image.convert("RGB")
        frame_tiles = tile_image(image, image_size, max_num=max_num, use_thumbnail=use_thumbnail)
        tiles.extend(frame_tiles)
        counts.append(len(frame_tiles))
    return _stack(tiles, image_size), counts


def frames_to_pixel_values(frames: np.ndarray | Sequence[np.ndarray], image_size: int, max_num: int = 1,
                           use_thumbnail: bool = True) -> tuple[torch.Tensor, list[int]]:
    """`frames_to_tiles`, normalised on the CPU: float32 [sum of tiles, 3, S, S], the card's pixel values."""
    tiles, counts = frames_to_tiles(frames, image_size, max_num=max_num, use_thumbnail=use_thumbnail)
    return normalize_tiles(tiles), counts


def tiles_per_frame(width: int, height: int, max_num: int, use_thumbnail: bool, *,
                    image_size: int = 448, min_num: int = 1) -> int:
    """Tiles the tiler makes for one frame of this size: the grid, plus a thumbnail when the grid has >1 tile."""
    cols, rows = choose_grid(width, height, image_size, min_num, max_num)
    blocks = cols * rows
    return blocks + 1 if blocks > 1 and use_thumbnail else blocks
