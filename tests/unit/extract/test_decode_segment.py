"""Extraction's decode rows (issue 15): a variable-frame-rate video's segments give each frame one index,
its position in presentation order, and its own presentation time, which the faces rows keep."""

from __future__ import annotations

import numpy as np
import pytest

from dflray.config import DecodeConfig
from dflray.extract.stages import decode_segment
from dflray.io.video import frame_ranges
from tests.media import read_number
from tests.media_vfr import vfr_times, write_timed_video

N = 40


def _segments(path, size, fps=600 / 37):
    return [{"video_id": "v", "uri": path, "segment": k, "start": a, "end": -1 if b is None else b, "fps": fps}
            for k, (a, b) in enumerate(frame_ranges(N, size))]


@pytest.mark.parametrize("size", [7, 16])
def test_segments_give_every_frame_once_with_its_presentation_time(tmp_path, size):
    times = vfr_times(N)
    path = write_timed_video(tmp_path / "v.mp4", times, offset=0.25)
    rows = [r for seg in _segments(path, size) for r in decode_segment(seg, DecodeConfig())]
    assert [r["frame_index"] for r in rows] == list(range(N))
    assert [read_number(r["frame"]) for r in rows] == list(range(N))
    assert [r["timestamp"] for r in rows] == pytest.approx(times, abs=1e-4)


def test_segment_start_pts_from_the_caller_is_used(tmp_path, monkeypatch):
    from dflray.io import video

    path = write_timed_video(tmp_path / "v.mp4", vfr_times(N))
    pts = video.frame_times(path).pts
    monkeypatch.setattr(video, "frame_times", lambda uri: pytest.fail("scanned despite start_pts"))
    seg = {**_segments(path, 16)[1], "start_pts": int(pts[16])}
    assert [r["frame_index"] for r in decode_segment(seg, DecodeConfig())] == list(range(16, 32))


def test_faces_rows_keep_the_frame_timestamp():
    from dflray.config import AlignConfig, LandmarkConfig
    from dflray.detect import Detections
    from dflray.extract.stages import FaceStage, pack_detections
    from dflray.sample import load_portrait

    img = load_portrait("astronaut")
    det = pack_detections(Detections(np.array([[175, 76, 266, 167]], np.float32), np.array([0.99], np.float32)))
    batch = {"video_id": np.array(["v", "v"]), "uri": np.array(["u", "u"]), "fps": np.array([16.2, 16.2]),
             "frame_index": np.array([7, 8]), "timestamp": np.array([0.4, 0.5]), "frame": np.stack([img, img]),
             "detector": np.array(["x", "x"]), "dets": np.array([det, det], dtype=object)}
    stage = FaceStage(LandmarkConfig(embedding=False), AlignConfig(size=64))
    table = stage(batch)
    assert table.column("frame_index").to_pylist() == [7, 8]
    assert table.column("timestamp").to_pylist() == pytest.approx([0.4, 0.5])  # not index / average fps
    del batch["timestamp"]  # rows from elsewhere without one: index / fps as before
    assert stage(batch).column("timestamp").to_pylist() == pytest.approx([7 / 16.2, 8 / 16.2])


@pytest.mark.parametrize("missing", [None, np.float32("nan"), np.float64("nan"), np.array(np.nan)])
def test_segment_without_start_pts_as_ray_data_hands_it(tmp_path, missing):
    """A start_pts column with nulls arrives from Ray Data as NaN (of any float width, or a 0-d array):
    the segment then finds its start itself (the dataset job's extraction once lost every video to it)."""
    path = write_timed_video(tmp_path / "v.mp4", vfr_times(N))
    seg = {**_segments(path, 16)[1], "start_pts": missing}
    assert [r["frame_index"] for r in decode_segment(seg, DecodeConfig())] == list(range(16, 32))
