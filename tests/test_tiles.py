"""roadbuddy.families.internvl.tiles against the model card's own preprocessing (roadbuddy.testing.model_card).

The oracle is the card's `find_closest_aspect_ratio` / `dynamic_preprocess` / `build_transform`
as published, with torchvision's Resize + ToTensor + Normalize written out (PIL bicubic resize,
then float32 /255, - mean, / std); `test_card_transform_is_the_cards_arithmetic` checks that
written-out transform against the arithmetic in numpy with the card's constants.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from roadbuddy.families.internvl import tiles
from roadbuddy.families.internvl.tiles import (candidate_grids, choose_grid, frames_to_pixel_values, frames_to_tiles,
                                               normalize_tiles, tile_image)
from roadbuddy.testing.model_card import (card_dynamic_preprocess, card_find_closest_aspect_ratio, card_target_ratios,
                                          card_transform)

# the card's build_transform constants, written here from the card (not imported from roadbuddy)
CARD_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
CARD_STD = np.array([0.229, 0.224, 0.225], np.float32)


def ref_grid(width, height, image_size, min_num, max_num):
    """The grid the card's dynamic_preprocess picks for an image of this size."""
    return card_find_closest_aspect_ratio(width / height, card_target_ratios(min_num, max_num), width, height,
                                          image_size)


def card_pixel_values(frame_arrays, image_size, max_num, use_thumbnail=True):
    """The loop of the card's load_video over decoded frames: RGB image, dynamic_preprocess, transform each tile."""
    values, counts = [], []
    for arr in frame_arrays:
        image = Image.fromarray(arr).convert("RGB")
        frame_tiles = card_dynamic_preprocess(image, image_size=image_size, use_thumbnail=use_thumbnail,
                                              max_num=max_num)
        values += [card_transform(t, image_size) for t in frame_tiles]
        counts.append(len(frame_tiles))
    if not values:
        return torch.empty((0, 3, image_size, image_size)), counts
    return torch.stack(values), counts


def random_image(rng, width, height):
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def assert_same_tiles(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.size == b.size and a.mode == b.mode
        assert np.array_equal(np.asarray(a), np.asarray(b))


sizes = st.integers(1, 4000)
grid_limits = st.integers(1, 12).flatmap(lambda hi: st.tuples(st.integers(1, hi), st.just(hi)))


# --- grid choice over the whole size range ------------------------------------------------------

def test_candidate_grids_are_the_cards():
    for lo in range(1, 13):
        for hi in range(lo, 13):
            grids = candidate_grids(lo, hi)
            assert grids == card_target_ratios(lo, hi)
            assert len(grids) == len(set(grids)) and all(lo <= c * r <= hi for c, r in grids)


@settings(max_examples=2000, deadline=None)
@given(w=sizes, h=sizes, limits=grid_limits, image_size=st.sampled_from([14, 28, 56, 448]),
       thumb=st.booleans())
def test_grid_and_tile_count_match_card(w, h, limits, image_size, thumb):
    lo, hi = limits
    grid = ref_grid(w, h, image_size, lo, hi)
    assert choose_grid(w, h, image_size, lo, hi) == grid
    blocks = grid[0] * grid[1]
    expected = blocks + 1 if thumb and blocks != 1 else blocks
    assert tiles.tiles_per_frame(w, h, hi, thumb, image_size=image_size, min_num=lo) == expected


@pytest.mark.parametrize("w,h", [(2560, 1440), (1280, 720), (1920, 1080), (1440, 2560), (640, 480)])
@pytest.mark.parametrize("max_num", range(1, 13))
def test_grid_real_sizes_match_card(w, h, max_num):
    assert choose_grid(w, h, 448, 1, max_num) == ref_grid(w, h, 448, 1, max_num)


def test_known_grids_for_dashcam_frames():
    # 2560/1440 = 1.778. Within 6 tiles: (2,1) is 0.222 away, (3,2) 0.278, (1,1) 0.778.
    assert choose_grid(2560, 1440, 448, 1, 6) == (2, 1)
    # Within 12 tiles (4,2) ties (2,1) exactly; the frame has more than half of 8 tiles' pixels
    # (3.69 M > 0.5 * 448^2 * 8 = 0.80 M), so the larger grid wins.
    assert choose_grid(2560, 1440, 448, 1, 12) == (4, 2)
    assert choose_grid(2560, 1440, 448, 1, 1) == (1, 1)


def test_tie_rule_prefers_larger_grid_only_for_large_images():
    # A square matches (1,1) and (2,2) exactly; (2,2) wins only above 0.5 * 448^2 * 4 pixels.
    assert choose_grid(448, 448, 448, 1, 4) == (1, 1)
    assert choose_grid(633, 633, 448, 1, 4) == (1, 1)  # 400,689 pixels: not enough
    assert choose_grid(634, 634, 448, 1, 4) == (2, 2)  # 401,956 > 401,408
    assert choose_grid(1000, 1000, 448, 1, 4) == (2, 2)
    # 16:9 thumbnails are too small to take the 8-tile grid over the 2-tile one
    assert choose_grid(160, 90, 448, 1, 12) == (2, 1)


def test_tie_between_equal_tile_counts_follows_card_order():
    # With exactly 2 tiles, 5:4 is 0.75 from both (1,2) and (2,1): the card's candidate order puts
    # (1,2) first, and (2,1) replaces it only for an image above 0.5 * 448^2 * 2 pixels.
    assert candidate_grids(2, 2) == [(1, 2), (2, 1)]
    assert choose_grid(125, 100, 448, 2, 2) == ref_grid(125, 100, 448, 2, 2) == (1, 2)
    assert choose_grid(1250, 1000, 448, 2, 2) == ref_grid(1250, 1000, 448, 2, 2) == (2, 1)


# --- tile pixels ---------------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(w=st.integers(1, 300), h=st.integers(1, 300), limits=grid_limits,
       image_size=st.sampled_from([14, 28, 56]), thumb=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_tiles_match_card_pixel_for_pixel(w, h, limits, image_size, thumb, seed):
    lo, hi = limits
    image = random_image(np.random.default_rng(seed), w, h)
    got = tile_image(image, image_size, max_num=hi, min_num=lo, use_thumbnail=thumb)
    assert_same_tiles(got, card_dynamic_preprocess(image, lo, hi, image_size, thumb))


@settings(max_examples=60, deadline=None)
@given(w=st.integers(1, 300), h=st.integers(1, 300), max_num=st.integers(1, 12),
       image_size=st.sampled_from([14, 28, 56]), thumb=st.booleans(), count=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1))
def test_pixel_values_match_card(w, h, max_num, image_size, thumb, count, seed):
    rng = np.random.default_rng(seed)
    batch = rng.integers(0, 256, (count, h, w, 3), dtype=np.uint8)
    values, counts = frames_to_pixel_values(batch, image_size, max_num=max_num, use_thumbnail=thumb)
    expected, expected_counts = card_pixel_values(batch, image_size, max_num, thumb)
    assert counts == expected_counts
    assert values.dtype == torch.float32 and torch.equal(values, expected)  # bit for bit
    assert counts == [tiles.tiles_per_frame(w, h, max_num, thumb, image_size=image_size)] * count


@pytest.mark.parametrize("w,h,max_num", [(2560, 1440, 1), (2560, 1440, 6), (1280, 720, 12)])
def test_real_frame_sizes_match_card(w, h, max_num):
    rng = np.random.default_rng(w + max_num)
    # a smooth gradient with noise, so bicubic overshoot and clipping are exercised
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) % 256], axis=-1)
    frame = np.clip(base + rng.integers(-40, 41, base.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(frame)
    got = tile_image(image, 448, max_num=max_num)
    expected = card_dynamic_preprocess(image, 1, max_num, 448, True)
    assert_same_tiles(got, expected)
    values, counts = frames_to_pixel_values([frame], 448, max_num=max_num)
    assert counts == [len(expected)] == [tiles.tiles_per_frame(w, h, max_num, True)]
    assert torch.equal(values, torch.stack([card_transform(t, 448) for t in expected]))


def test_thumbnail_only_with_more_than_one_tile():
    image = random_image(np.random.default_rng(0), 256, 144)
    one = tile_image(image, 56, max_num=1, use_thumbnail=True)
    assert len(one) == 1  # a single tile is never followed by a thumbnail
    many = tile_image(image, 56, max_num=6, use_thumbnail=True)
    assert len(many) == 3  # grid (2,1) + thumbnail
    assert np.array_equal(np.asarray(many[-1]), np.asarray(image.resize((56, 56), Image.BICUBIC)))
    assert len(tile_image(image, 56, max_num=6, use_thumbnail=False)) == 2


def quadrant_image(size):
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]  # TL, TR, BL, BR
    arr = np.zeros((size, size, 3), np.uint8)
    half = size // 2
    arr[:half, :half], arr[:half, half:], arr[half:, :half], arr[half:, half:] = colours
    return Image.fromarray(arr), colours


def test_tiles_are_row_major():
    image, colours = quadrant_image(224)
    got = tile_image(image, 112, max_num=4, use_thumbnail=True)
    assert len(got) == 5  # (2,2) since 224^2 > 0.5 * 112^2 * 4, + thumbnail
    for tile, colour in zip(got[:4], colours):
        assert tuple(np.asarray(tile)[56, 56]) == colour


def test_wide_and_tall_grids_orientation():
    strip = np.zeros((56, 168, 3), np.uint8)
    strip[:, :56, 0] = 255
    strip[:, 56:112, 1] = 255
    strip[:, 112:, 2] = 255
    wide = tile_image(Image.fromarray(strip), 56, max_num=3, use_thumbnail=False)
    assert [int(np.argmax(np.asarray(t)[28, 28])) for t in wide] == [0, 1, 2]
    tall = tile_image(Image.fromarray(strip.transpose(1, 0, 2).copy()), 56, max_num=3, use_thumbnail=False)
    assert [int(np.argmax(np.asarray(t)[28, 28])) for t in tall] == [0, 1, 2]


# --- normalisation ---------------------------------------------------------------------------------

def test_card_transform_is_the_cards_arithmetic():
    """The oracle itself: card_transform (torchvision's ops written out) is PIL's bicubic resize to SxS,
    then (x / 255 - mean) / std with the card's constants, here in numpy."""
    rng = np.random.default_rng(3)
    for image in (random_image(rng, 40, 30), random_image(rng, 28, 28),
                  Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8))):  # a grey image: made RGB
        resized = np.asarray(image.convert("RGB").resize((28, 28), Image.BICUBIC)).astype(np.float32)
        expected = ((resized / np.float32(255) - CARD_MEAN) / CARD_STD).transpose(2, 0, 1)
        got = card_transform(image, 28)
        assert got.dtype == torch.float32 and got.shape == (3, 28, 28)
        # values lie in [-2.2, 2.7], where a float32 ulp is 2.4e-7; torch and numpy may round each of the three
        # operations differently (and vectorise differently on another CPU), never by more than a few ulps
        np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-6)


def test_normalize_known_values():
    """White and black tiles against the card's constants: (1 - mean) / std and -mean / std per channel."""
    white, black = torch.full((3, 28, 28), 255, dtype=torch.uint8), torch.zeros((3, 28, 28), dtype=torch.uint8)
    tiles_u8 = torch.stack([white, black])
    values = normalize_tiles(tiles_u8)
    assert values.shape == (2, 3, 28, 28) and values.dtype == torch.float32
    for c, (mean, std) in enumerate(zip([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])):
        assert torch.allclose(values[0, c], torch.tensor((1 - mean) / std))
        assert torch.allclose(values[1, c], torch.tensor(-mean / std))


def test_frames_to_pixel_values_order_and_inputs():
    rng = np.random.default_rng(7)
    batch = rng.integers(0, 256, (3, 36, 64, 3), dtype=np.uint8)
    values, counts = frames_to_pixel_values(batch, 28, max_num=6)
    assert counts == [3, 3, 3] and values.shape == (9, 3, 28, 28)
    from_list, _ = frames_to_pixel_values(list(batch), 28, max_num=6)
    assert torch.equal(values, from_list)
    second, _ = frames_to_pixel_values(batch[1:2], 28, max_num=6)
    assert torch.equal(values[3:6], second)  # frame order kept, each frame's tiles together
    empty, none = frames_to_pixel_values(np.zeros((0, 36, 64, 3), np.uint8), 28)
    assert empty.shape == (0, 3, 28, 28) and none == []


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError):
        choose_grid(0, 10, 448)
    with pytest.raises(ValueError):
        choose_grid(10, 10, 448, min_num=5, max_num=4)


@settings(max_examples=30, deadline=None)
@given(image_size=st.sampled_from([14, 28, 56, 448]), count=st.integers(1, 4), thumb=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_frames_already_one_tile_skip_pil_with_the_same_values(image_size, count, thumb, seed):
    """Decoder-scaled SxS frames with max_num=1 take the no-PIL path; the values are the card's bit for bit."""
    batch = np.random.default_rng(seed).integers(0, 256, (count, image_size, image_size, 3), dtype=np.uint8)
    fast, counts = frames_to_pixel_values(batch, image_size, max_num=1, use_thumbnail=thumb)
    expected, expected_counts = card_pixel_values(batch, image_size, 1, thumb)
    assert counts == expected_counts == [1] * count
    assert fast.is_contiguous() and fast.shape == (count, 3, image_size, image_size)
    assert torch.equal(fast, expected)


def test_normalize_tiles_is_the_cards_totensor_and_normalize_bit_for_bit():
    """Every uint8 level in every channel, against the card's transform (ToTensor + Normalize written out)."""
    levels = np.arange(256, dtype=np.uint8)
    image = np.stack(np.broadcast_arrays(levels[:, None], levels[None, :], levels[::-1, None]), axis=-1)  # 256x256x3
    card = card_transform(Image.fromarray(image), 256)  # an SxS image: the card's resize changes nothing
    ours = normalize_tiles(torch.from_numpy(image).permute(2, 0, 1)[None].contiguous())
    assert ours.dtype == torch.float32 and torch.equal(ours[0], card)


@settings(max_examples=20, deadline=None)
@given(max_num=st.sampled_from([1, 6]), count=st.integers(0, 3), seed=st.integers(0, 2**32 - 1))
def test_frames_to_tiles_are_the_cards_tiles_as_uint8(max_num, count, seed):
    """The pipeline's uint8 tiles are the card's tiles (pixel for pixel), and normalised on the device they
    are the card's transform of them (bit for bit)."""
    batch = np.random.default_rng(seed).integers(0, 256, (count, 36, 64, 3), dtype=np.uint8)
    uint8, counts = frames_to_tiles(batch, 28, max_num=max_num)
    card_tiles = [t for f in batch for t in card_dynamic_preprocess(Image.fromarray(f), image_size=28,
                                                                     use_thumbnail=True, max_num=max_num)]
    expected, expected_counts = card_pixel_values(batch, 28, max_num)
    assert uint8.dtype == torch.uint8 and uint8.is_contiguous() and uint8.shape == (len(card_tiles), 3, 28, 28)
    assert counts == expected_counts
    assert all(np.array_equal(uint8[i].permute(1, 2, 0).numpy(), np.asarray(t)) for i, t in enumerate(card_tiles))
    assert torch.equal(normalize_tiles(uint8), expected)


def test_frames_already_one_tile_become_planar_uint8_unchanged():
    batch = np.random.default_rng(3).integers(0, 256, (2, 28, 28, 3), dtype=np.uint8)
    uint8, counts = frames_to_tiles(batch, 28, max_num=1)
    assert counts == [1, 1]
    assert np.array_equal(uint8.numpy(), batch.transpose(0, 3, 1, 2))
