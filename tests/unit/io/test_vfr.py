"""Frame numbering by presentation order (issue 15): variable frame rate, B-frames, seeks, late starts.

A frame's index is its position in presentation order and its timestamp its presentation time from the
stream's start, whichever reader decodes it (a whole decode, segments after a seek, the merge's
transcoder, the mask reader), so extraction's keys and the merge's frames pair exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from dflray.io import video
from dflray.io.video import Transcoder, decode_range, frame_ranges, read_masks
from tests.media import read_number
from tests.media_vfr import timestamps_by_average_fps_collide, vfr_times, write_timed_video

N = 40
CFR = [i / 25 for i in range(N)]
# name: (times, writer options, file name); every clip has a keyframe every 8 frames, so segments seek.
CLIPS = {
    "vfr-bframes-mp4": (vfr_times(N), {}, "a.mp4"),
    "vfr-no-bframes-mp4": (vfr_times(N), {"bframes": False}, "b.mp4"),
    "vfr-late-start-mp4": (vfr_times(N), {"offset": 0.5}, "c.mp4"),
    "vfr-late-start-mkv": (vfr_times(N), {"offset": 0.5}, "d.mkv"),
    "vfr-mpegts": (vfr_times(N), {"fmt": "mpegts"}, "e.ts"),
    "cfr-bframes-mp4": (CFR, {"rate": 25}, "f.mp4"),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("vfr")
    return {name: (write_timed_video(d / file, times, **opts), times) for name, (times, opts, file) in CLIPS.items()}


@pytest.fixture(params=list(CLIPS))
def clip(request, clips):
    return clips[request.param]


def test_the_clip_is_one_that_timestamp_times_average_fps_gets_wrong():
    assert timestamps_by_average_fps_collide(vfr_times(N))
    assert not timestamps_by_average_fps_collide(CFR)


def test_whole_decode_numbers_frames_in_presentation_order(clip):
    path, _ = clip
    got = [(i, read_number(f)) for i, f in decode_range(path)]
    assert [i for i, _ in got] == list(range(N))  # no repeated and no missing index
    assert all(i == n for i, n in got)  # and each index is that frame's


@pytest.mark.parametrize("segment", [1, 3, 7, 16])
def test_segments_decoded_after_a_seek_agree_with_the_whole_decode(clip, segment):
    path, _ = clip
    got = [(i, read_number(f)) for a, b in frame_ranges(N, segment) for i, f in decode_range(path, a, b)]
    assert got == [(i, i) for i in range(N)]
    strided = [i for a, b in frame_ranges(N, segment) for i, _ in decode_range(path, a, b, every_n=3)]
    assert strided == list(range(0, N, 3))


def test_timestamps_are_the_presentation_times_from_the_stream_start(clip):
    path, times = clip
    frames = list(video.decode_frames(path))
    assert [f.index for f in frames] == list(range(N))
    got = np.array([f.time for f in frames])
    assert got == pytest.approx(times, abs=1e-3)  # mkv stores milliseconds
    assert (np.diff(got) > 0).all()
    seg = list(video.decode_frames(path, 13, 29))
    assert [(f.index, f.pts, f.time) for f in seg] == [(f.index, f.pts, f.time) for f in frames[13:29]]


def test_frame_times_lists_every_frame_and_places_a_segment(clip):
    path, times = clip
    t = video.frame_times(path)
    assert t.complete and len(t.pts) == N and (np.diff(t.pts) > 0).all()
    assert [t.seconds(i) for i in range(N)] == pytest.approx(times, abs=1e-3)
    whole = list(video.decode_frames(path))
    assert [f.pts for f in whole] == t.pts.tolist()
    # A caller that knows a segment's first pts (a probe did the scan) gets the same frames without one.
    hinted = list(video.decode_frames(path, 21, 30, start_pts=int(t.pts[21])))
    assert [(f.index, read_number(f.rgb)) for f in hinted] == [(i, i) for i in range(21, 30)]


def test_transcoder_and_mask_reader_number_frames_like_the_decoder(clip, tmp_path):
    path, times = clip
    out, mask = str(tmp_path / "o.mp4"), str(tmp_path / "m.mp4")
    seen = []
    with Transcoder(path, out, mask_path=mask, lossless=True) as t:
        for f in t.frames():
            seen.append((f.index, read_number(f.rgb), f.time))
            t.write(f, f.rgb, np.full(f.rgb.shape[:2], 255 if f.index % 2 else 0, np.uint8))
    assert [(i, n) for i, n, _ in seen] == [(i, i) for i in range(N)]
    assert [s for *_, s in seen] == pytest.approx(times, abs=1e-3)
    # The output keeps the input's timestamps, so it numbers (and seeks) the same way.
    assert [(i, read_number(f)) for a, b in frame_ranges(N, 9) for i, f in decode_range(out, a, b)] == \
        [(i, i) for i in range(N)]
    masks = list(read_masks(mask))
    assert [i for i, _ in masks] == list(range(N))
    assert all(bool(m.mean() > 128) == bool(i % 2) for i, m in masks)


def test_a_stream_without_timestamps_is_numbered_in_decode_order(tmp_path):
    path = write_timed_video(tmp_path / "raw.h264", vfr_times(20), fmt="h264")
    assert not video.frame_times(path).complete
    assert [(i, read_number(f)) for i, f in decode_range(path)] == [(i, i) for i in range(20)]
    got = [(i, read_number(f)) for a, b in frame_ranges(20, 6) for i, f in decode_range(path, a, b)]
    assert got == [(i, i) for i in range(20)]


def test_a_decode_from_the_start_does_not_scan_the_file(clips, monkeypatch):
    path, _ = clips["cfr-bframes-mp4"]

    def scan(uri):
        raise AssertionError("frame_times called for a range that starts at frame 0")

    monkeypatch.setattr(video, "frame_times", scan)
    assert [i for i, _ in decode_range(path, 0, 20)] == list(range(20))


def test_frame_times_are_scanned_once_per_file_version(tmp_path, monkeypatch):
    path = write_timed_video(tmp_path / "v.mp4", vfr_times(12))
    scans = []
    real = video._scan_times
    monkeypatch.setattr(video, "_scan_times", lambda c, s: scans.append(1) or real(c, s))
    assert len(video.frame_times(path).pts) == 12
    list(decode_range(path, 5, 9))
    assert len(scans) == 1  # the segment used the kept scan
    write_timed_video(path, vfr_times(16))  # the file changes: scanned again
    assert len(video.frame_times(path).pts) == 16 and len(scans) == 2


def test_ranges_past_the_last_frame_are_empty(clip):
    path, _ = clip
    assert list(decode_range(path, N, N + 10)) == [] and list(decode_range(path, N + 5, None)) == []
    assert list(decode_range(path, 10, 10)) == []


def test_probe_counts_the_frames_of_a_container_without_a_count(clips):
    info = video.probe(clips["vfr-late-start-mkv"][0])  # Matroska stores no frame count
    assert (info.frame_count, info.frame_count_exact) == (N, True)
    assert video.probe(clips["vfr-bframes-mp4"][0]).frame_count == N
