"""The merge pairs a variable-frame-rate video's frames with the faceset's ``frame_index`` (issue 15):
frames are numbered by presentation order, as extraction numbers them, one per-frame row per frame."""

from __future__ import annotations

import numpy as np
import pytest

from dflray.config import MergeSettings
from dflray.io.video import Transcoder, decode_range, read_masks
from dflray.merge.video import InlinePredict, merge_video, plan_faces
from tests.media import ASTRONAUT_LM, numbered_frames, read_number
from tests.media_vfr import vfr_times, write_timed_video

N = 40
PLANNED = [3, 4, 5, 6, 7, 12, 20, 21, 33]  # frames of the faceset with a face to swap


def _inverting_model(crops):
    n, r = crops.shape[:2]
    return 1.0 - crops, np.ones((n, r, r), np.float32), np.ones((n, r, r), np.float32)


@pytest.mark.parametrize("opts", [{}, {"bframes": False, "offset": 0.5}], ids=["bframes", "late-start"])
def test_merge_rows_and_masks_pair_with_the_faceset_frames(tmp_path, opts):
    times = vfr_times(N)
    frames = [np.pad(f, ((0, 64), (0, 32), (0, 0))) for f in numbered_frames(N, 64, 96)]  # 128×128, face below
    path = write_timed_video(tmp_path / "dst.mp4", times, frames, **opts)
    lm = (ASTRONAUT_LM - ASTRONAUT_LM.mean(0)) * 0.5 + [64, 96]  # a ~45 px face in the lower half
    plan = plan_faces(np.array(PLANNED), np.stack([lm] * len(PLANNED)), np.ones(len(PLANNED), bool))
    out, mask = str(tmp_path / "o.mp4"), str(tmp_path / "m.mp4")
    with Transcoder(path, out, mask_path=mask, lossless=True) as t:
        rows = merge_video(t, plan, InlinePredict(_inverting_model, batch_size=4),
                           MergeSettings(mask_mode="full", color_transfer="none"), face_type="whole_face",
                           resolution=32, seed=0, batch_frames=6, faces_per_frame=dict.fromkeys(PLANNED, 1))
    assert [r["frame_index"] for r in rows] == list(range(N))  # one row per frame, none repeated
    assert [r["timestamp"] for r in rows] == pytest.approx(times, abs=1e-4)
    assert [i for i, r in enumerate(rows) if r["faces_swapped"]] == PLANNED
    assert [i for i, r in enumerate(rows) if r["faces"]] == PLANNED
    # The swap landed on the planned frames themselves: their masks, and only theirs, are set, and the
    # frame number in the untouched top of each output frame is the row's.
    assert [i for i, m in read_masks(mask) if m.any()] == PLANNED
    assert [(i, read_number(f[:64, :96])) for i, f in decode_range(out)] == [(i, i) for i in range(N)]
