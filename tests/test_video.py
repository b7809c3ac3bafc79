"""roadbuddy.video on real encoded clips (roadbuddy.testing.synth), both decoders.

Each frame of the coded clips is one flat grey level, 8 * its index, so a
frame's identity survives lossy H.264: round(mean / 8) is its index.
"""
from __future__ import annotations

import logging
import re
import sys
import types
import wave

import numpy as np
import pytest

from roadbuddy.testing import synth
from roadbuddy.video import reader as video
from roadbuddy.video import source
from roadbuddy.video.reader import decoders_available, open_video
from roadbuddy.video.source import VideoError, VideoInfo

HAS_DECORD = decoders_available()["decord"]
needs_decord = pytest.mark.skipif(not HAS_DECORD, reason="decord is not installed")
BACKENDS = [pytest.param("decord", marks=needs_decord), "pyav"]

FRAMES, FPS, W, H = 24, 10, 64, 48


def coded_frame(i: int) -> np.ndarray:
    return np.full((H, W, 3), 8 * i, np.uint8)


def frame_ids(frames: np.ndarray) -> list[int]:
    return [int(round(f.mean() / 8)) for f in frames]


@pytest.fixture(scope="module")
def coded_clip(tmp_path_factory):
    # a short GOP so PyAV's keyframe seeking is exercised, not just decoding from the start
    return synth.write_clip(tmp_path_factory.mktemp("coded") / "coded.mp4", coded_frame, num_frames=FRAMES,
                            fps=FPS, gop=5)


@pytest.fixture(scope="module")
def road_clip(tmp_path_factory):
    return synth.write_road_clip(tmp_path_factory.mktemp("road") / "road.mp4", seconds=2, fps=15, width=160,
                                 height=90, light="green")


def test_decoders_available():
    assert decoders_available() == {"decord": HAS_DECORD, "pyav": True}


@pytest.mark.parametrize("backend", BACKENDS)
def test_info(coded_clip, backend):
    with open_video(coded_clip, backend=backend) as reader:
        assert reader.info == VideoInfo(coded_clip, float(FPS), FRAMES, W, H, backend)
        assert reader.info.duration == pytest.approx(FRAMES / FPS)


def test_auto_prefers_decord(coded_clip):
    with open_video(coded_clip) as reader:
        assert reader.info.backend == ("decord" if HAS_DECORD else "pyav")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_every_frame_in_order(tmp_path, backend, suffix):
    # mkv states no frame count, so PyAV counts packets
    clip = synth.write_clip(tmp_path / f"clip{suffix}", coded_frame, num_frames=FRAMES, fps=FPS, gop=5)
    with open_video(clip, backend=backend) as reader:
        assert reader.info.num_frames == FRAMES
        frames = reader.get(range(FRAMES))
    assert frames.shape == (FRAMES, H, W, 3) and frames.dtype == np.uint8
    assert frame_ids(frames) == list(range(FRAMES))


@pytest.mark.parametrize("backend", BACKENDS)
def test_get_order_duplicates_and_clamping(coded_clip, backend):
    with open_video(coded_clip, backend=backend) as reader:
        frames = reader.get([17, 3, 3, 22, 0, -5, 1000, 11, 17])
        assert frame_ids(frames) == [17, 3, 3, 22, 0, 0, FRAMES - 1, 11, 17]
        assert frame_ids(reader.get([9])) == [9]  # a second read on the same reader, going backwards
        assert reader.get([]).shape == (0, H, W, 3)


def test_raw_h264_stream_decodes_with_pyav_from_the_start(tmp_path, caplog):
    # A raw H.264 stream has no container: no timestamps to seek by, no frame count (PyAV counts
    # packets), and a rate FFmpeg guesses (25). decord refuses it ("broken metadata"), so "auto" falls back.
    clip = synth.write_clip(tmp_path / "raw.h264", coded_frame, num_frames=FRAMES, fps=FPS, gop=5)
    with caplog.at_level(logging.WARNING, logger="roadbuddy.video"):
        with open_video(clip) as reader:
            assert reader.info.backend == "pyav" and reader.info.num_frames == FRAMES
            assert frame_ids(reader.get([20, 2, 13, 2])) == [20, 2, 13, 2]
    # with decord installed it refuses the stream first (logged); without it there is nothing to refuse
    assert any("decord cannot read" in r.getMessage() for r in caplog.records) == HAS_DECORD


@pytest.mark.parametrize("backend", BACKENDS)
def test_decoder_scales_to_size(coded_clip, backend):
    with open_video(coded_clip, backend=backend) as reader:
        frames = reader.get([4, 1], size=(32, 24))
    assert frames.shape == (2, 24, 32, 3)
    assert frame_ids(frames) == [4, 1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_sorted_request_and_shuffled_request_agree(coded_clip, backend):
    """Sorted distinct indices (what the pipeline asks) skip the gather; any order gives the same frames."""
    with open_video(coded_clip, backend=backend) as reader:
        wanted = [0, 3, 4, 9, 17, 23]
        in_order = reader.get(wanted)
        shuffled = reader.get([17, 0, 23, 4, 9, 3, 4])
    assert frame_ids(in_order) == wanted
    assert np.array_equal(shuffled, in_order[[4, 0, 5, 2, 3, 1, 2]])


def test_pyav_scales_with_bicubic_like_pil(road_clip):
    """PyAV scales with swscale's bicubic (its default is bilinear): within about a level of PIL's bicubic
    resize of the full frame, what the model card does."""
    from PIL import Image

    with open_video(road_clip, backend="pyav") as reader:
        full = reader.get([3, 20])
        scaled = reader.get([3, 20], size=(56, 56)).astype(float)
    pil = np.stack([np.asarray(Image.fromarray(f).resize((56, 56), Image.BICUBIC)) for f in full]).astype(float)
    assert scaled.shape == pil.shape == (2, 56, 56, 3)
    assert np.abs(scaled - pil).mean() < 2.0


def test_prefer_pyav_opens_with_pyav(coded_clip):
    with open_video(coded_clip, prefer="pyav") as reader:
        assert reader.info.backend == "pyav"
        assert frame_ids(reader.get([2, 5])) == [2, 5]


@needs_decord
def test_prefer_pyav_falls_back_to_decord(coded_clip, monkeypatch, caplog):
    def refuse(*_a, **_k):
        raise VideoError(coded_clip, "pretend PyAV cannot read it")
    monkeypatch.setattr(video, "_open_pyav", refuse)
    with caplog.at_level(logging.WARNING), open_video(coded_clip, prefer="pyav") as reader:
        assert reader.info.backend == "decord"
        assert frame_ids(reader.get([2, 5])) == [2, 5]
    assert "PyAV cannot read" in caplog.text


def test_prefer_pyav_reports_pyavs_reason_when_nothing_reads(tmp_path):
    bad = tmp_path / "text.mp4"
    bad.write_text("not a video")
    with pytest.raises(VideoError, match="text.mp4"):
        open_video(bad, prefer="pyav")
    with pytest.raises(ValueError, match="prefer"):
        open_video(bad, prefer="opencv")


@needs_decord
def test_decord_and_pyav_return_the_same_frames(road_clip, coded_clip):
    with open_video(coded_clip, backend="decord") as d, open_video(coded_clip, backend="pyav") as p:
        assert frame_ids(d.get(range(FRAMES))) == frame_ids(p.get(range(FRAMES)))
    with open_video(road_clip, backend="decord") as d, open_video(road_clip, backend="pyav") as p:
        assert d.info.num_frames == p.info.num_frames == 30
        indices = [29, 0, 14, 7, 7, 21]
        a, b = d.get(indices).astype(int), p.get(indices).astype(int)
    assert a.shape == b.shape == (6, 90, 160, 3)
    assert np.abs(a - b).mean() < 2
    # the same frame, not a neighbour: the lane dashes move between frames
    for i in range(len(indices)):
        assert np.abs(a[i] - b[i]).mean() < min(np.abs(a[i] - b[j]).mean() for j in range(len(indices))
                                                if indices[j] != indices[i]) / 2


def test_auto_uses_pyav_when_decord_is_missing(coded_clip, monkeypatch):
    monkeypatch.setitem(sys.modules, "decord", None)
    assert decoders_available() == {"decord": False, "pyav": True}
    with open_video(coded_clip) as reader:
        assert reader.info.backend == "pyav"
        assert frame_ids(reader.get([5, 2])) == [5, 2]
    with pytest.raises(ImportError, match="decord"):
        open_video(coded_clip, backend="decord")


def _broken_decord(error_at: str):
    """A stand-in decord module whose reader fails when opened or when reading a batch."""

    class Reader:
        def __init__(self, *args, **kwargs):
            if error_at == "open":
                raise RuntimeError("[12:00:00] video_reader.cc:83: Error: cannot open the stream")

        def __len__(self):
            return FRAMES

        def __getitem__(self, i):
            return types.SimpleNamespace(asnumpy=lambda: coded_frame(0))

        def get_avg_fps(self):
            return float(FPS)

        def get_batch(self, indices):
            raise RuntimeError("[12:00:00] video_reader.cc:486: Error: av_read_frame failed")

    return types.SimpleNamespace(VideoReader=Reader, cpu=lambda n: None)


@pytest.mark.parametrize("error_at", ["open", "read"])
def test_auto_falls_back_to_pyav_when_decord_fails(coded_clip, monkeypatch, caplog, error_at):
    monkeypatch.setattr(video, "_import_decord", lambda: _broken_decord(error_at))
    with caplog.at_level(logging.WARNING, logger="roadbuddy.video"):
        with open_video(coded_clip) as reader:
            assert frame_ids(reader.get([7, 30, 7])) == [7, FRAMES - 1, 7]
            assert reader.info.backend == "pyav"
    assert any("decord" in r.getMessage() and str(coded_clip) in r.getMessage() for r in caplog.records)

    with pytest.raises(VideoError, match="decord"):  # forced decord reports the failure instead
        with open_video(coded_clip, backend="decord") as reader:
            reader.get([7])


def _file(path, data: bytes):
    path.write_bytes(data)
    return path


def _wav(path):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.zeros(800, np.int16).tobytes())
    return path


# what each back-end says: "auto" falls back to PyAV and reports PyAV's reason; decord forced reports its own
UNREADABLE = {
    "missing": (lambda d: d / "missing.mp4", dict.fromkeys(["auto", "decord", "pyav"], "no such file")),
    "directory": (lambda d: d, dict.fromkeys(["auto", "decord", "pyav"], "it is a directory, not a video file")),
    "zero-byte": (lambda d: _file(d / "empty.mp4", b""),
                  dict.fromkeys(["auto", "decord", "pyav"], r"the file is empty \(0 bytes\)")),
    "text": (lambda d: _file(d / "notes.mp4", b"not a video\n" * 50),
             {"auto": r"not a readable video \(Invalid data found", "decord": r"decord cannot read it \(",
              "pyav": r"not a readable video \(Invalid data found"}),
    "audio-only": (lambda d: _wav(d / "sound.wav"),
                   {"auto": "the file has no video stream$", "decord": r"decord cannot read it \(.*video stream",
                    "pyav": "the file has no video stream$"}),
}


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
@pytest.mark.parametrize("case", list(UNREADABLE))
def test_unreadable_files_raise_video_error(tmp_path, backend, case):
    make, reasons = UNREADABLE[case]
    path = make(tmp_path)
    with pytest.raises(VideoError) as caught:
        open_video(path, backend=backend)
    assert re.match(reasons[backend], caught.value.reason), caught.value.reason
    message = str(caught.value)
    assert message == f"cannot decode {path}: {caught.value.reason}" and "\n" not in message
    assert caught.value.path == path


def _half_of_a_clip(tmp_path, suffix):
    whole = synth.write_clip(tmp_path / f"whole{suffix}", coded_frame, num_frames=FRAMES, fps=FPS, gop=5)
    data = whole.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    return cut


def _decoded_prefix(reader) -> list[int]:
    """What a truncated clip gives: its first frames in order, then the last decodable one repeated."""
    count = reader.info.num_frames
    assert 0 < count < FRAMES
    ids = frame_ids(reader.get(range(FRAMES)))
    last = max(ids)
    assert last < FRAMES - 1
    assert ids[: last + 1] == list(range(last + 1)) and set(ids[last:]) == {last}
    return ids


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_truncated_mp4_decodes_its_first_frames_with_pyav(tmp_path, backend):
    """Half an mp4 (its index intact, its data cut): PyAV reads the frames that are there; "auto" gets there
    through decord's refusal when decord is installed."""
    cut = _half_of_a_clip(tmp_path, ".mp4")
    with open_video(cut, backend=backend) as reader:
        _decoded_prefix(reader)
        assert reader.info.backend == "pyav"


@needs_decord
def test_truncated_mp4_is_refused_by_decord(tmp_path):
    cut = _half_of_a_clip(tmp_path, ".mp4")
    with pytest.raises(VideoError, match=r"decord cannot read it \(av_read_frame failed") as caught:
        open_video(cut, backend="decord")
    assert str(cut) in str(caught.value)


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
def test_truncated_mkv_decodes_its_first_frames_with_either_decoder(tmp_path, backend):
    """Half an mkv (no index to contradict the data): every decoder reads the frames that are there, the same ones."""
    cut = _half_of_a_clip(tmp_path, ".mkv")
    with open_video(cut, backend="pyav") as reader:
        expected = _decoded_prefix(reader)
    with open_video(cut, backend=backend) as reader:
        assert _decoded_prefix(reader) == expected
        assert reader.info.backend == (("decord" if HAS_DECORD else "pyav") if backend == "auto" else backend)


def test_write_road_clip_is_a_decodable_16_9_clip(tmp_path):
    clip = synth.write_road_clip(tmp_path / "road.mp4", seconds=2, fps=30, width=320, height=180, light="red",
                                 light_frames=(20, 40))
    with open_video(clip) as reader:
        info = reader.info
        assert (info.width, info.height, info.num_frames, info.fps) == (320, 180, 60, 30.0)
        assert info.width * 9 == info.height * 16
        frames = reader.get(range(60)).astype(int)
    # the red lamp: top third of the light box at x = 0.8 W
    y, x = int(0.04 * 180 + 0.42 * 180 / 6), int(0.8 * 320)
    lamp = frames[:, y - 2:y + 3, x - 2:x + 3].mean(axis=(1, 2))
    red_lit = (lamp[:, 0] > 180) & (lamp[:, 1] < 100)
    assert red_lit[22:38].all() and not red_lit[:18].any() and not red_lit[42:].any()
    assert frames.std() > 20  # a scene, not a flat frame
    assert np.abs(frames[1:] - frames[:-1]).mean() > 0  # the road moves


def test_road_frame_draws_the_light_and_moves():
    a = synth.road_frame(0, width=256, height=144, light="green")
    b = synth.road_frame(3, width=256, height=144, light="green")
    none = synth.road_frame(0, width=256, height=144)
    assert a.shape == (144, 256, 3) and a.dtype == np.uint8
    assert (a != b).any() and (a != none).any()
    with pytest.raises(ValueError, match="light"):
        synth.road_frame(0, width=256, height=144, light="blue")


def test_write_clip_takes_iterables_and_scales_to_the_size(tmp_path):
    frames = [np.full((30, 40, 3), 8 * i, np.uint8) for i in range(6)]
    clip = synth.write_clip(tmp_path / "it.mp4", iter(frames), fps=5, width=64, height=48)
    with open_video(clip, backend="pyav") as reader:
        assert (reader.info.width, reader.info.height, reader.info.num_frames) == (64, 48, 6)
        assert frame_ids(reader.get(range(6))) == list(range(6))


def test_write_clip_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="even"):
        synth.write_clip(tmp_path / "odd.mp4", [np.zeros((5, 8, 3), np.uint8)])
    with pytest.raises(ValueError, match="num_frames"):
        synth.write_clip(tmp_path / "f.mp4", coded_frame)
    with pytest.raises(ValueError, match="no frames"):
        synth.write_clip(tmp_path / "none.mp4", [])
    with pytest.raises(ValueError, match="uint8"):
        synth.write_clip(tmp_path / "float.mp4", [np.zeros((8, 8, 3), np.float32)])


def test_missing_frame_rate_comes_from_timestamps_or_is_assumed(caplog):
    with caplog.at_level(logging.WARNING, logger="roadbuddy.video"):
        assert source.resolve_fps("a.mp4", 25, lambda: None) == 25.0
        assert not caplog.records
        assert source.resolve_fps("a.mp4", float("nan"), lambda: 12.5) == 12.5
        assert source.resolve_fps("a.mp4", 0, lambda: None) == source.ASSUMED_FPS
    assert len(caplog.records) == 2 and all("a.mp4" in r.getMessage() for r in caplog.records)
    assert source.fps_from_timestamps([0.0, 0.1, 0.2, 0.3]) == pytest.approx(10.0)
    assert source.fps_from_timestamps([1.0]) is None
