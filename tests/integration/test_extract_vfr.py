"""A variable-frame-rate video through extraction on a local Ray (issue 15): segments decoded by different
workers after seeking give every frame one key, no index twice, none missing, each face its frame's time."""

from __future__ import annotations

import numpy as np
import pytest

from dflray.config import ExtractConfig, load_config
from dflray.extract import run_extract
from dflray.faceset import read_errors, read_faces, read_videos
from dflray.io.video import decode_range
from tests.media_vfr import timestamps_by_average_fps_collide, vfr_times, write_timed_video

N = 40


def test_vfr_clip_extracts_one_key_per_frame_with_its_timestamp(ray_local, sample_clips, tmp_path):
    frames = [f for _, f in decode_range(sample_clips[0], 0, N)]
    times = vfr_times(N)
    assert timestamps_by_average_fps_collide(times)
    clip = write_timed_video(tmp_path / "vfr.mp4", times, frames, offset=0.2)
    out = str(tmp_path / "fs")
    cfg = load_config(ExtractConfig, overrides=["align.size=64", "decode.segment_frames=7", "landmarks.embedding=false"])
    run_extract([clip], out, cfg)
    v = read_videos(out).to_pylist()[0]
    assert v["status"] == "ok" and v["frames_decoded"] == N and read_errors(out).num_rows == 0
    faces = read_faces(out, columns=["video_id", "frame_index", "face_index", "timestamp"]).to_pylist()
    keys = [(f["video_id"], f["frame_index"], f["face_index"]) for f in faces]
    assert len(set(keys)) == len(keys)  # no duplicate keys
    assert sorted(f["frame_index"] for f in faces) == list(range(N))  # one face a frame, none missing
    by_frame = {f["frame_index"]: f["timestamp"] for f in faces}
    assert [by_frame[i] for i in range(N)] == pytest.approx(times, abs=1e-4)
    assert (np.diff([by_frame[i] for i in range(N)]) > 0).all()
