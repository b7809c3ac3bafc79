"""Issue 5, CPU part: the data path (decode + frame selection + tiling) beside the model card's.

Every benchmark times our path, pipeline.prepare_clip itself (today open_video -> frames.select_frames ->
VideoReader.get -> tiles.frames_to_tiles -> tiles.normalize_tiles), with pytest-benchmark, and runs the model card's
load_video (bench.cpu.card: per-frame decord access, PIL resizes, ToTensor + Normalize) on the same
clip just before each round. Both times and their ratio go to the benchmark's extra_info
(`--benchmark-json`) and to the table printed at the end of the module. Asserts: the frame indices are
the card's, the shapes and tile counts are right, and the pixel values match the card's.

The full grid is {1280x720, 2560x1440} x {8, 32, 64} frames x {1, 6} tiles x {decord, pyav}, on
9 s 30 fps H.264 clips from synth.write_road_clip. CI (the default `-m 'not slow'`) runs, with both
backends, 1280x720 x 8 frames x {1, 6} tiles, 1280x720 x 32 x 1 and 2560x1440 x 32 x 1 (issue 7's
setting), plus the card-exact one-tile path (--no-decoder-scaling) and the decode floor at 2560x1440; the rest is
marked slow (`pytest -m slow bench/test_cpu_datapath.py`). One round each in CI, three when slow.
"""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from bench import cpu

pytest.importorskip("decord", reason="the model card's path reads frames with decord")

GRID = [(res, k, tiles) for res in cpu.RESOLUTIONS for k in (8, 32, 64) for tiles in (1, 6)]
CI_SUBSET = {("720p", 8, 1), ("720p", 8, 6), ("720p", 32, 1), ("1440p", 32, 1)}
CI_ROUNDS, SLOW_ROUNDS = 1, 3
# Full-size frames: our decoders give the card's RGB bit for bit on these clips; a backend that
# converts colours differently may differ by rounding (1 uint8 level is about 0.017 after
# normalisation).
FULL_SIZE_MAD = {"decord": 0.0, "pyav": 0.02}
# Decoder-scaled frames (the default with one tile: swscale's bicubic from YUV straight to 448x448)
# against PIL's bicubic on full-size RGB: measured 0.018-0.019 (about 1 level) on these clips; a
# wrong frame, filter or channel order is far above this.
SCALED_MAD = 0.03


def _params():
    for res, k, tiles in GRID:
        for backend in ("decord", "pyav"):
            slow = (res, k, tiles) not in CI_SUBSET
            yield pytest.param(res, k, tiles, backend, id=f"{res}-{k}f-{tiles}t-{backend}",
                               marks=[pytest.mark.slow] if slow else [])


@pytest.fixture(scope="module")
def clips(request, tmp_path_factory):
    directory = cpu.clip_directory(request.config, tmp_path_factory)
    return lambda res: cpu.road_clip(directory, res)


@pytest.fixture(scope="module")
def table(request):
    rows: list[dict] = []
    yield rows
    if rows:
        cpu.report(request.config, "bench/test_cpu_datapath.py: seconds (min over rounds) and ratios",
                   pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.3f}"))


def _rounds(request) -> int:
    return SLOW_ROUNDS if request.node.get_closest_marker("slow") else CI_ROUNDS


def _row(table, benchmark, name, res, k, tiles, backend, mad=None):
    info = benchmark.extra_info
    row = {"path": name, "clip": res, "frames": k, "tiles": tiles, "backend": backend, "ours_s": info["ours_s"]}
    if "card_s" in info:
        row.update({"card_s": info["card_s"], "card/ours": info["card_over_ours"], "mad": mad})
    else:  # the floor: how far above one plain decode of the clip our path is
        row.update({"floor_s": info["floor_s"], "ours/floor": 1 / info["floor_over_ours"]})
    table.append(row)


@pytest.mark.parametrize("res,k,tiles,backend", list(_params()))
def test_ours_vs_card(benchmark, request, clips, table, res, k, tiles, backend):
    path = clips(res)
    benchmark.group = f"data path {res} {k}f {tiles}t"
    ours, card = cpu.side_by_side(benchmark, lambda: cpu.ours(path, k, tiles, backend=backend),
                                  lambda: cpu.card(path, k, tiles), rounds=_rounds(request))

    assert ours.indices == card.indices  # the card's get_index, frame for frame
    assert len(set(ours.indices)) == k
    per_frame = 1 if tiles == 1 else 3  # 16:9 with up to 6 tiles: a 2x1 grid plus the thumbnail
    assert ours.tiles_per_frame == card.tiles_per_frame == [per_frame] * k
    assert ours.pixel_values.shape == card.pixel_values.shape == (k * per_frame, 3, cpu.IMAGE_SIZE, cpu.IMAGE_SIZE)
    assert ours.pixel_values.dtype == torch.float32
    mad = cpu.mean_abs_diff(ours.pixel_values, card.pixel_values)
    benchmark.extra_info["mad"] = mad
    _row(table, benchmark, "ours", res, k, tiles, backend, mad)
    if tiles == 1:  # decoder-scaled by default: close to the card's pixels, not equal
        assert 0 < mad <= SCALED_MAD, f"{backend}: mean |ours - card| = {mad:.4f} after normalisation"
    else:
        assert mad <= FULL_SIZE_MAD[backend], f"{backend}: mean |ours - card| = {mad:.4f} after normalisation"


CARD_EXACT = {  # --no-decoder-scaling: full-size frames and PIL's bicubic, the card's pixels (bench/cpu.py)
    "decord": lambda path, k: cpu.ours(path, k, backend="decord", decoder_scaling=False),
    "pyav": lambda path, k: cpu.ours(path, k, backend="pyav", decoder_scaling=False),
}


@pytest.mark.parametrize("res,backend", [
    pytest.param(res, backend, id=f"{res}-{backend}", marks=[] if res == "1440p" else [pytest.mark.slow])
    for res in ("1440p", "720p") for backend in CARD_EXACT])
def test_no_decoder_scaling_is_the_cards_path(benchmark, request, clips, table, res, backend):
    """With --no-decoder-scaling one tile is the card's exact path: decord's frames give its pixels bit for bit."""
    path, k = clips(res), 32
    benchmark.group = f"data path {res} {k}f 1t"
    ours, card = cpu.side_by_side(benchmark, lambda: CARD_EXACT[backend](path, k), lambda: cpu.card(path, k),
                                  rounds=_rounds(request))
    assert ours.indices == card.indices
    assert ours.tiles_per_frame == [1] * k
    assert ours.pixel_values.shape == card.pixel_values.shape == (k, 3, cpu.IMAGE_SIZE, cpu.IMAGE_SIZE)
    mad = cpu.mean_abs_diff(ours.pixel_values, card.pixel_values)
    benchmark.extra_info["mad"] = mad
    _row(table, benchmark, "no-decoder-scaling", res, k, 1, backend, mad)
    assert mad <= FULL_SIZE_MAD[backend], f"{backend}: mean |ours - card| = {mad:.4f} after normalisation"


@pytest.mark.parametrize("res", [pytest.param("1440p"), pytest.param("720p", marks=pytest.mark.slow)])
def test_floor_vs_ours(benchmark, request, clips, table, res):
    """The floor: one sequential decode of the whole clip, same threads, no colour conversion."""
    path, k = clips(res), 32
    benchmark.group = f"data path {res} {k}f 1t"
    ours, frames = cpu.side_by_side(benchmark, lambda: cpu.ours(path, k), lambda: cpu.decode_floor(path),
                                    rounds=_rounds(request), other="floor")
    assert frames == cpu.CLIP_SECONDS * cpu.CLIP_FPS
    assert ours.pixel_values.shape == (k, 3, cpu.IMAGE_SIZE, cpu.IMAGE_SIZE)
    _row(table, benchmark, "ours", res, k, 1, "auto")
