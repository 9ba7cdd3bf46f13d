"""PyAV decode: probing, frame numbering across ranges, stride, rotation, broken files."""

import numpy as np
import pytest

from dflray.io.video import VideoError, VideoWriter, decode_range, frame_ranges, probe
from tests.media import numbered_frames, read_number, shared_media, truncate, write_video


@pytest.fixture(scope="module")
def numbered(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("v") / "n.mp4", numbered_frames(120), fps=25)


def test_probe(numbered):
    info = probe(numbered)
    assert (info.fps, info.frame_count, info.width, info.height, info.rotation) == (25.0, 120, 96, 64, 0)
    assert info.duration == pytest.approx(4.8, abs=0.05) and info.codec == "h264" and not info.has_audio


def test_ranges_cover_every_frame_once_with_true_indices(numbered):
    got = []
    for a, b in frame_ranges(120, 37):
        got += [(i, read_number(f)) for i, f in decode_range(numbered, a, b)]
    assert [i for i, _ in got] == list(range(120))
    assert all(i % 256 == n for i, n in got)  # the pixels agree with the index after seeking


def test_every_n_and_max_frames(numbered):
    assert [i for i, _ in decode_range(numbered, 0, None, every_n=7)] == list(range(0, 120, 7))
    assert frame_ranges(120, 50, max_frames=60) == [(0, 50), (50, 60)]
    assert frame_ranges(0, 50) == [(0, None)]


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata_is_applied(tmp_path, rotation):
    f = np.zeros((32, 64, 3), np.uint8)
    f[:8, :8] = 255  # marker top-left in the stored picture
    path = write_video(tmp_path / "r.mp4", [f] * 5, rotation=rotation)
    info = probe(path)
    assert info.rotation == rotation
    assert (info.width, info.height) == ((32, 64) if rotation in (90, 270) else (64, 32))
    _, out = next(decode_range(path))
    # display rotation is counter-clockwise: compare with numpy's counter-clockwise rot90
    expected = np.rot90(f, rotation // 90)
    assert out.shape == expected.shape
    ys, xs = np.nonzero(out[..., 0] > 128)
    ey, ex = np.nonzero(expected[..., 0] > 128)
    assert abs(ys.mean() - ey.mean()) < 2 and abs(xs.mean() - ex.mean()) < 2


def test_grayscale_and_odd_size_frames_come_out_rgb(tmp_path):
    g = write_video(tmp_path / "g.mp4", [np.full((48, 64), 100, np.uint8)] * 3, pix_fmt="gray", codec="ffv1")
    _, f = next(decode_range(g))
    assert f.shape == (48, 64, 3) and f.dtype == np.uint8
    odd = write_video(tmp_path / "o.mkv", [np.zeros((47, 61, 3), np.uint8)] * 3, pix_fmt="yuv444p")
    assert (probe(odd).width, probe(odd).height) == (61, 47)
    assert next(decode_range(odd))[1].shape == (47, 61, 3)


def test_bad_files_raise_clear_errors(tmp_path, numbered):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        probe(str(empty))
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    with pytest.raises(VideoError):
        probe(str(text))
    with pytest.raises(VideoError, match="not found|cannot read"):
        probe(str(tmp_path / "missing.mp4"))
    with pytest.raises(VideoError):
        probe(truncate(numbered, tmp_path / "cut.mp4", 0.02))


def test_writer_round_trip(tmp_path):
    frames = numbered_frames(10, 64, 128)
    with VideoWriter(str(tmp_path / "w.mp4"), fps=30, size=(128, 64), crf=0) as w:
        for f in frames:
            w.write(f)
    back = [read_number(f) for _, f in decode_range(str(tmp_path / "w.mp4"))]
    assert back == list(range(10)) and probe(str(tmp_path / "w.mp4")).fps == 30


def test_real_clip_counts():
    path = shared_media("multiface_cuts_hamilton.mp4")
    info = probe(path)
    assert info.frame_count == 275 and info.fps == pytest.approx(29.97, abs=0.01)
    idx = [i for a, b in frame_ranges(info.frame_count, 100) for i, _ in decode_range(path, a, b)]
    assert idx == list(range(275))
