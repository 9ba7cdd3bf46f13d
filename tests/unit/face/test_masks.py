"""Hull masks match DeepFaceLab's get_image_hull_mask in frames and in crops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dflray.face import hull_mask, transform_points

_REF = json.loads((Path(__file__).parents[1] / "data" / "dfl_reference.json").read_text())
CASES = _REF["cases"]


def _decode_rle(runs: list[int], shape: tuple[int, int]) -> np.ndarray:
    """Inverse of the generator's RLE: alternating 0/1 run lengths, row-major, zeros first."""
    values = np.arange(len(runs)) % 2
    return np.repeat(values, runs).astype(np.uint8).reshape(shape)


def _reference_items():
    for case in CASES:
        for key, ref in case["hull_masks"].items():
            yield pytest.param(case, key, ref, id=f"{case['name']}-{key}")


def _inputs(case, key):
    lm = np.asarray(case["landmarks"], dtype=np.float32)
    if key == "frame":
        return tuple(case["frame_shape"]), lm
    size = int(key.rsplit("_", 1)[1])
    # DFL stores crop landmarks as float32; keep that so integer truncation agrees.
    crop_lm = transform_points(lm, np.asarray(case["mats"][key])).astype(np.float32)
    return (size, size), crop_lm


@pytest.mark.parametrize(("case", "key", "ref"), list(_reference_items()))
def test_matches_dfl(case, key, ref):
    shape, lm = _inputs(case, key)
    expected = _decode_rle(ref["rle"], shape)
    assert int(expected.sum()) == ref["area"]
    mask = hull_mask(shape, lm)
    assert mask.shape == shape and mask.dtype == np.uint8
    assert set(np.unique(mask)) <= {0, 1}
    iou = (mask & expected).sum() / (mask | expected).sum()
    assert iou > 0.995, f"IoU {iou:.4f}"


def test_accepts_image_shape_with_channels():
    case = CASES[0]
    h, w = case["frame_shape"]
    lm = np.asarray(case["landmarks"])
    assert np.array_equal(hull_mask((h, w, 3), lm), hull_mask((h, w), lm))


def test_covers_the_face_and_expands_brows():
    lm = np.asarray(CASES[0]["landmarks"])
    h, w = CASES[0]["frame_shape"]
    mask = hull_mask((h, w), lm)
    x, y = np.round(lm[30]).astype(int)  # nose tip
    assert mask[y, x] == 1 and mask[0, 0] == 0
    plain = hull_mask((h, w), lm, eyebrows_expand=0.0)
    assert mask.sum() > plain.sum()
    assert np.all(mask >= plain)  # expanding only adds forehead


def test_face_partly_outside_image():
    lm = np.asarray(CASES[0]["landmarks"]) - [300.0, 300.0]
    mask = hull_mask((400, 400), lm)
    assert 0 < mask.sum() < 400 * 400


def test_bad_inputs_raise():
    lm = np.asarray(CASES[0]["landmarks"])
    with pytest.raises(ValueError, match="landmarks"):
        hull_mask((100, 100), lm[:10])
    with pytest.raises(ValueError, match="landmarks"):
        hull_mask((100, 100), np.full((68, 2), np.inf))
    with pytest.raises(ValueError, match="shape"):
        hull_mask((0, 100), lm)
