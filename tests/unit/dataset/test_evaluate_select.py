"""``dflray evaluate``'s pure parts: which videos train and test (the holdout), the crop cache's round trip."""

from __future__ import annotations

import numpy as np
import pytest

from dflray.dataset.crops import VideoCrops
from dflray.dataset.evaluate import crops_table, decode_crops, select_videos


def _rows(split_of: dict[str, str], compressions=("c23",)) -> list[dict]:
    """Per real input video (its identity → split): a REAL row and one FAKE made onto it, per compression."""
    rows = []
    people = sorted(split_of)
    for k, who in enumerate(people):
        for c in compressions:
            real = {"video_id": f"{who}-real-{c}", "label": "REAL", "split": split_of[who], "source_uri": f"/v/{who}",
                    "target_identity": who, "compression": c, "status": "ok"}
            fake = {"video_id": f"{who}-fake-{c}", "label": "FAKE", "split": split_of[who], "source_uri": f"/v/{who}",
                    "original": real["video_id"], "target_identity": who, "source_identity": people[k - 1],
                    "compression": c, "status": "ok"}
            rows += [real, fake]
    return rows


def test_test_split_is_used_when_it_has_both_labels():
    rows = _rows({"a": "train", "b": "train", "c": "test", "d": "test", "e": "val"})
    sel = select_videos(rows, rows, holdout=0.5, seed=0, same_dataset=True)
    assert sel.protocol == "test-split"
    assert {r["target_identity"] for r in sel.test} == {"c", "d"}
    assert {r["target_identity"] for r in sel.train} == {"a", "b"}, "val is neither trained nor tested on"
    assert sel.shared_identities == 1  # c's fake carries b's face, and b is trained on


def test_holdout_keeps_a_fake_with_its_original_and_is_seeded():
    rows = _rows({p: "train" for p in "abcdefgh"}, compressions=("c23", "c40"))
    rows.append({"video_id": "x", "label": "FAKE", "split": "train", "source_uri": "/v/a", "status": "error"})
    picks = set()
    for seed in range(6):
        sel = select_videos(rows, rows, holdout=0.25, seed=seed, same_dataset=True)
        assert sel == select_videos(rows, rows, holdout=0.25, seed=seed, same_dataset=True)
        assert sel.protocol == "holdout"
        tested = {r["source_uri"] for r in sel.test}
        assert len(tested) == 2  # a quarter of the 8 real input videos, with both compression levels and fakes
        assert len(sel.test) == 2 * 2 * 2
        assert not tested & {r["source_uri"] for r in sel.train}
        assert len(sel.train) + len(sel.test) == 32, "published rows only, each on one side"
        picks.add(frozenset(tested))
    assert len(picks) > 1, "the seed draws the holdout"


def test_holdout_on_a_tiny_dataset_leaves_something_to_train_on():
    rows = _rows({"a": "train", "b": "train"})
    sel = select_videos(rows, rows, holdout=0.9, seed=0, same_dataset=True)
    assert len({r["source_uri"] for r in sel.test}) == 1 and len(sel.train) == 2


def test_nothing_to_test_or_train_on_fails_saying_why():
    rows = _rows({"a": "train", "b": "train", "c": "test"})
    rows = [r for r in rows if not (r["split"] == "test" and r["label"] == "FAKE")]
    with pytest.raises(ValueError, match="no FAKE video to test on.*holdout=0.5"):
        select_videos(rows, rows, holdout=0.0, seed=0, same_dataset=True)
    reals_only = [r for r in rows if r["label"] == "REAL"]
    with pytest.raises(ValueError, match="nothing to test on"):
        select_videos(reals_only, reals_only, holdout=0.5, seed=0, same_dataset=True)
    tested = _rows({"c": "test", "d": "test"})
    with pytest.raises(ValueError, match="nothing to train on"):
        select_videos(tested, tested, holdout=0.5, seed=0, same_dataset=True)
    sel = select_videos(tested, tested, holdout=0.5, seed=0, same_dataset=True, need_train=False)
    assert sel.train == [] and len(sel.test) == 4


def test_cross_dataset_leaves_out_videos_made_from_tested_reals():
    test_rows = _rows({"a": "test", "b": "test"})
    train_rows = _rows({"a": "train", "b": "train", "c": "train", "d": "train"})
    sel = select_videos(test_rows, train_rows, holdout=0.5, seed=0, same_dataset=False)
    assert sel.protocol == "test-split" and sel.shared_identities is None
    assert {r["target_identity"] for r in sel.train} == {"c", "d"} and sel.excluded == 4


def test_crop_cache_round_trip_is_lossless():
    rng = np.random.default_rng(0)
    crops = VideoCrops(video_id="v1", frame_indices=np.array([3, 9, 12], np.int64),
                       images=rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8),
                       masks=np.zeros((3, 24, 24), np.uint8), landmarks=np.zeros((3, 81, 2), np.float32))
    table = crops_table(crops, 1)
    assert table.column_names == ["video_id", "frame_index", "label", "image"]
    batch = decode_crops({k: np.array(table.column(k).to_pylist(), dtype=object if k == "image" else None)
                          for k in table.column_names})
    np.testing.assert_array_equal(batch["image"], crops.images)
    assert batch["image"].dtype == np.uint8 and batch["label"].tolist() == [1.0, 1.0, 1.0]
    assert batch["frame_index"].tolist() == [3, 9, 12]
