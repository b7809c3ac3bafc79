"""roadbuddy.video.frames against the model card's `get_index` as published (roadbuddy.testing.model_card)."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roadbuddy.families.internvl import tiles
from roadbuddy.testing.model_card import card_get_index
from roadbuddy.video.frames import frame_count, segment_indices, select_frames


def reference_indices(n, fps, k, start=None, end=None):
    """The card, with the one documented change: a window holding no frame collapses to one frame."""
    start = -100000 if start is None else start
    end = 100000 if end is None else end
    first, last = max(0, round(start * fps)), min(round(end * fps), n - 1)
    if first > last:
        return [min(first, n - 1)] * k
    return card_get_index((start, end), fps, n - 1, num_segments=k).tolist()


# --- segment_indices ----------------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(n=st.integers(1, 2000), fps=st.floats(1, 60), k=st.integers(1, 128))
def test_uniform_matches_model_card(n, fps, k):
    assert segment_indices(n, fps, k) == card_get_index(None, fps, n - 1, num_segments=k).tolist()


@settings(max_examples=400, deadline=None)
@given(n=st.integers(1, 2000), fps=st.floats(1, 60), k=st.integers(1, 128), data=st.data())
def test_windowed_matches_model_card(n, fps, k, data):
    duration = n / fps
    times = st.floats(-10, duration + 10)
    start = data.draw(st.one_of(st.none(), times))
    end = data.draw(st.one_of(st.none(), times))
    got = segment_indices(n, fps, k, start, end)
    assert got == reference_indices(n, fps, k, start, end)
    assert len(got) == k and all(0 <= i < n for i in got)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 2000), fps=st.floats(1, 60), k=st.integers(1, 128), data=st.data())
def test_window_inside_clip_is_exactly_the_card(n, fps, k, data):
    a = data.draw(st.floats(0, (n - 1) / fps))
    b = data.draw(st.floats(a, (n - 1) / fps))
    expected = card_get_index((a, b), fps, n - 1, num_segments=k).tolist()
    got = segment_indices(n, fps, k, a, b)
    assert got == expected
    assert got == sorted(got) and round(a * fps) <= got[0] and got[-1] <= round(b * fps)


def test_known_clip_indices():
    # 20 s at 30 fps, 8 segments: seg = 599/8 = 74.875
    assert segment_indices(600, 30.0, 8) == [37, 112, 187, 262, 337, 411, 486, 561]
    # seg = 2.5: round(2.5) is 2 under the card's banker's rounding (3 rounding half up)
    assert segment_indices(11, 30.0, 4) == [1, 3, 6, 9]


def test_single_frame_and_more_segments_than_frames():
    assert segment_indices(1, 30.0, 5) == [0] * 5
    got = segment_indices(4, 30.0, 10)
    assert len(got) == 10 and got == sorted(got) and set(got) <= {0, 1, 2, 3}


def test_empty_windows_collapse_to_the_nearest_edge():
    assert segment_indices(100, 10.0, 3, 50.0, 60.0) == [99, 99, 99]  # past the end
    assert segment_indices(100, 10.0, 3, -9.0, -5.0) == [0, 0, 0]  # before the start
    assert segment_indices(100, 10.0, 2, 5.0, 3.0) == [50, 50]  # inverted


def test_degenerate_inputs():
    assert segment_indices(0, 30.0, 4) == []
    assert segment_indices(10, 30.0, 0) == []
    assert segment_indices(100, 0.0, 4, 1.0, 2.0) == segment_indices(100, 0.0, 4)  # no fps: window ignored
    assert segment_indices(100, 10.0, 2, -math.inf, math.inf) == segment_indices(100, 10.0, 2)
    assert segment_indices(100, 10.0, 2, math.nan, None) == segment_indices(100, 10.0, 2)


# --- tiles_per_frame ----------------------------------------------------------------------------

def test_tiles_per_frame_real_sizes():
    assert tiles.tiles_per_frame(2560, 1440, 1, True) == 1
    assert tiles.tiles_per_frame(2560, 1440, 6, True) == 3  # grid (2, 1) + thumbnail
    assert tiles.tiles_per_frame(2560, 1440, 6, False) == 2
    assert tiles.tiles_per_frame(2560, 1440, 12, True) == 9  # grid (4, 2) + thumbnail
    assert tiles.tiles_per_frame(1280, 720, 12, True) == 9


# --- frame_count --------------------------------------------------------------------------------

BUDGET = dict(min_frames=8, max_frames=32, frames_per_second=1.0, max_visual_tokens=8192, tokens_per_frame=256)


def test_frame_count_grows_with_duration_and_clamps():
    counts = [frame_count(d, **BUDGET) for d in (0, 5, 8, 12, 20, 31.6, 32, 60, 600)]
    assert counts == [8, 8, 8, 12, 20, 32, 32, 32, 32]
    assert counts == sorted(counts)


def test_frame_count_budget_wins_over_min_frames():
    # max_num 6 on a 16:9 clip: 7 tiles of 256 tokens per frame; 8192 // 1792 = 4 < min_frames
    assert frame_count(20, **{**BUDGET, "tokens_per_frame": 256 * 7}) == 4
    assert frame_count(20, **{**BUDGET, "tokens_per_frame": 10_000}) == 1  # never 0
    assert frame_count(20, **{**BUDGET, "tokens_per_frame": 0}) == 20


@given(d=st.floats(0, 10_000), lo=st.integers(1, 64), extra=st.integers(0, 64), rate=st.floats(0.1, 10),
       budget=st.integers(1, 100_000), per=st.integers(1, 5000))
def test_frame_count_bounds(d, lo, extra, rate, budget, per):
    n = frame_count(d, min_frames=lo, max_frames=lo + extra, frames_per_second=rate,
                    max_visual_tokens=budget, tokens_per_frame=per)
    assert 1 <= n <= lo + extra
    assert n * per <= budget or n == 1
    assert n >= min(lo, budget // per) or n == 1


def test_frame_count_odd_durations():
    assert frame_count(math.nan, **BUDGET) == 8
    assert frame_count(-3, **BUDGET) == 8


# --- select_frames ------------------------------------------------------------------------------

def check_selection(got, n, count):
    assert got == sorted(set(got))
    assert all(isinstance(i, int) and 0 <= i < n for i in got)
    assert len(got) == min(count, n)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 2000), fps=st.floats(1, 60), count=st.integers(1, 128),
       times=st.lists(st.floats(-100, 1000, allow_nan=False), max_size=6),
       window=st.floats(0, 5), share=st.floats(0, 1))
def test_select_frames_properties(n, fps, count, times, window, share):
    got = select_frames(n, fps, count, times, support_window=window, support_share=share)
    check_selection(got, n, count)
    assert got == select_frames(n, fps, count, times, support_window=window, support_share=share)
    distinct = sorted({min(max(t, 0.0), n / fps) for t in times})
    if share > 0 and len(distinct) <= count:
        for t in distinct:  # every timestamp got a frame inside its (clamped) window
            assert any(abs(f / fps - t) <= window + 1 / fps + 1e-9 for f in got), t


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 2000), fps=st.floats(1, 60), count=st.integers(1, 128))
def test_select_frames_without_support_is_the_card(n, fps, count):
    got = select_frames(n, fps, count)
    check_selection(got, n, count)
    card = card_get_index(None, fps, n - 1, num_segments=count).tolist()
    assert set(card) <= set(got)
    if len(set(card)) == count:
        assert got == card


def test_select_frames_spends_the_share_near_the_timestamp():
    got = select_frames(600, 30.0, 32, [10.0], support_window=1.0, support_share=0.5)
    check_selection(got, 600, 32)
    near = [f for f in got if 270 <= f <= 330]
    assert len(near) >= 16


def test_select_frames_splits_between_timestamps_earliest_first():
    # 5 support frames over 2 timestamps: 3 to the earlier one (given last), 2 to the later
    got = select_frames(3000, 30.0, 10, [80.0, 20.0], support_window=0.5, support_share=0.5)
    check_selection(got, 3000, 10)
    assert len([f for f in got if 585 <= f <= 615]) == 3
    assert len([f for f in got if 2385 <= f <= 2415]) == 2


def test_select_frames_clamps_timestamps_outside_the_clip():
    got = select_frames(300, 30.0, 16, [-50.0, 1e9], support_window=1.0)
    check_selection(got, 300, 16)
    assert min(got) <= 30 and max(got) >= 269


def test_select_frames_more_timestamps_than_frames():
    got = select_frames(300, 30.0, 2, [1.0, 5.0, 9.0], support_window=0.2)
    check_selection(got, 300, 2)
    assert all(abs(f / 30 - t) <= 0.25 for f, t in zip(got, [1.0, 5.0]))


def test_select_frames_short_clips_and_broken_fps():
    assert select_frames(5, 30.0, 32) == [0, 1, 2, 3, 4]
    assert select_frames(5, 30.0, 32, [0.1]) == [0, 1, 2, 3, 4]
    assert select_frames(100, 0.0, 8, [1.0]) == select_frames(100, 0.0, 8) == select_frames(100, 30.0, 8)
    assert select_frames(0, 30.0, 8) == []
    assert select_frames(100, 30.0, 0) == []


def test_select_frames_no_share_means_uniform():
    assert select_frames(600, 30.0, 16, [3.0], support_share=0.0) == select_frames(600, 30.0, 16)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_select_frames_tiny_counts_still_see_the_timestamp(count):
    got = select_frames(900, 30.0, count, [12.0], support_window=1.0)
    assert any(330 <= f <= 390 for f in got)
