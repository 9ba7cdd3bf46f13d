"""The extraction ledger: files in staging, so no process is a single point of failure."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from dflray.extract.ledger import FileLedger


def test_ledger_records_survive_the_writer_and_retries_do_not_double_count(tmp_path):
    led = FileLedger(str(tmp_path / "ledger"))
    led.record("v1", 0, 300, None)
    led.record("v1", 1, 120, ("VideoError", "decode failed near frame 120"))
    led.fail("v1", 17, "faces", "ValueError", "degenerate")
    # A retried task (another process, after a lost node) writes the same records again.
    again = pickle.loads(pickle.dumps(led))
    again.record("v1", 0, 300, None)
    again.fail("v1", 17, "faces", "ValueError", "degenerate")
    segments, failures = FileLedger(str(tmp_path / "ledger")).dump()
    assert segments == {("v1", 0): (300, None), ("v1", 1): (120, ("VideoError", "decode failed near frame 120"))}
    assert failures == {("v1", 17, "faces"): ("ValueError", "degenerate")}


def test_ledger_of_a_chunk_with_nothing_recorded_is_empty(tmp_path):
    assert FileLedger(str(tmp_path / "none")).dump() == ({}, {})


def test_a_frame_that_fails_becomes_an_error_row(tmp_path):
    from dflray.config import AlignConfig, LandmarkConfig
    from dflray.detect import Detections
    from dflray.extract.stages import FaceStage, pack_detections
    from dflray.sample import load_portrait

    img = load_portrait("astronaut")
    good = Detections(np.array([[175, 76, 266, 167]], np.float32), np.array([0.99], np.float32))
    # A zero-size box: dlib puts all 68 points on one spot, which has no alignment.
    bad = Detections(np.array([[50, 50, 50, 50]], np.float32), np.array([0.99], np.float32))
    batch = {"video_id": np.array(["v", "v"]), "uri": np.array(["u", "u"]), "fps": np.array([25.0, 25.0]),
             "frame_index": np.array([0, 1]), "frame": np.stack([img, img]), "detector": np.array(["x", "x"]),
             "dets": np.array([pack_detections(good), pack_detections(bad)], dtype=object)}
    ledger = FileLedger(str(tmp_path / "ledger"))
    stage = FaceStage(LandmarkConfig(embedding=False), AlignConfig(size=64), ledger)
    table = stage(batch)
    assert table.column("frame_index").to_pylist() == [0]
    _, failures = ledger.dump()
    assert list(failures) == [("v", 1, "faces")] and failures[("v", 1, "faces")][1]
    with pytest.raises(ValueError):
        FaceStage(LandmarkConfig(embedding=False), AlignConfig(size=64))(batch)  # without a ledger it raises
