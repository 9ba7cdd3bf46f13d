"""Alignment matches DeepFaceLab's get_transform_mat and round-trips cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from dflray import config
from dflray.face import FACE_TYPES, get_transform_mat, transform_points, warp_to_crop, warp_to_frame

_REF = json.loads((Path(__file__).parents[1] / "data" / "dfl_reference.json").read_text())
CASES = _REF["cases"]
SIZES = _REF["generator"]["sizes"]


def _deviation(lm: np.ndarray, ours: np.ndarray, theirs: np.ndarray, size: int) -> float:
    """Largest pixel disagreement: landmarks in the crop and crop corners in the frame."""
    corners = np.array([[0, 0], [size, 0], [size, size], [0, size], [size / 2, size / 2]], float)
    in_crop = np.abs(transform_points(lm, ours) - transform_points(lm, theirs)).max()
    in_frame = np.abs(transform_points(corners, ours, invert=True)
                      - transform_points(corners, theirs, invert=True)).max()
    return float(max(in_crop, in_frame))


def test_face_types_match_config():
    assert FACE_TYPES == config.FACE_TYPES


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("face_type", FACE_TYPES)
def test_matches_dfl(face_type, size):
    worst = 0.0
    for case in CASES:
        lm = np.asarray(case["landmarks"], dtype=np.float32)
        ours = get_transform_mat(lm, size, face_type)
        assert ours.shape == (2, 3) and ours.dtype == np.float64
        theirs = np.asarray(case["mats"][f"{face_type}_{size}"])
        worst = max(worst, _deviation(lm, ours, theirs, size))
    assert worst < 1e-3, f"{face_type}@{size}: max deviation {worst:.2e} px"


def test_matrix_is_similarity():
    lm = np.asarray(CASES[0]["landmarks"])
    lin = get_transform_mat(lm, 256, "full")[:, :2]
    assert np.allclose(lin @ lin.T, np.eye(2) * np.linalg.det(lin), atol=1e-9)
    assert np.linalg.det(lin) > 0


def test_crop_keeps_face_and_grows_with_padding():
    lm = np.asarray(CASES[0]["landmarks"])
    spans = []
    for face_type in FACE_TYPES:
        crop_lm = transform_points(lm, get_transform_mat(lm, 256, face_type))
        spans.append(np.ptp(crop_lm[:, 0]))
        if face_type in ("whole_face", "head"):  # tighter types may clip the chin by design
            assert crop_lm.min() > 0 and crop_lm.max() < 256
    # Larger face types show more context, so the same face covers fewer crop pixels.
    assert all(a > b for a, b in zip(spans, spans[1:]))


def test_transform_points_round_trip():
    rng = np.random.default_rng(0)
    for case in CASES:
        lm = np.asarray(case["landmarks"])
        mat = get_transform_mat(lm, 512, "whole_face")
        back = transform_points(transform_points(lm, mat), mat, invert=True)
        assert np.abs(back - lm).max() < 1e-6
    pts = rng.uniform(-500, 500, size=(10, 2))
    assert np.allclose(transform_points(pts, np.array([[1.0, 0, 3], [0, 1.0, -2]])), pts + [3, -2])
    assert transform_points(np.array([1.0, 2.0]), np.eye(2, 3)).shape == (2,)


def test_warp_round_trip_reproduces_face_region():
    case = next(c for c in CASES if c["name"] == "obama_1_f0")
    h, w = case["frame_shape"]
    lm = np.asarray(case["landmarks"])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Smooth content: resampling twice must then give back nearly the same values.
    frame = np.dstack([127 + 100 * np.sin(xx / 23.0), 127 + 100 * np.cos(yy / 31.0),
                       (xx + yy) % 256]).astype(np.float32)
    frame[..., 2] = 127 + 100 * np.sin((xx + yy) / 40.0)
    mat = get_transform_mat(lm, 256, "full")
    crop = warp_to_crop(frame, mat, 256)
    assert crop.shape == (256, 256, 3) and crop.dtype == frame.dtype
    back = warp_to_frame(crop, mat, frame.shape)
    assert back.shape == frame.shape
    inside = warp_to_frame(np.ones((256, 256), np.float32), mat, (h, w)) > 0.999
    inside = cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert inside.sum() > 0.5 * np.ptp(lm[:, 0]) * np.ptp(lm[:, 1])
    assert np.abs(back[inside] - frame[inside]).mean() < 1.0
    outside = warp_to_frame(np.ones((256, 256), np.float32), mat, (h, w)) == 0
    assert outside.mean() > 0.5 and np.all(back[outside] == 0)


def test_crop_lands_landmarks_where_the_matrix_says():
    case = CASES[0]
    h, w = case["frame_shape"]
    lm = np.asarray(case["landmarks"])
    frame = np.zeros((h, w), np.uint8)
    x, y = np.round(lm[30]).astype(int)  # nose tip
    cv2.circle(frame, (int(x), int(y)), 6, 255, -1)
    mat = get_transform_mat(lm, 256, "full")
    crop = warp_to_crop(frame, mat, 256).astype(float)
    ys, xs = np.nonzero(crop > 64)
    expected = transform_points(np.array([x, y], float), mat)
    assert np.allclose([xs.mean(), ys.mean()], expected, atol=1.0)


def test_bad_inputs_raise():
    lm = np.asarray(CASES[0]["landmarks"])
    with pytest.raises(ValueError, match="face_type"):
        get_transform_mat(lm, 256, "full_face")
    with pytest.raises(ValueError, match="landmarks"):
        get_transform_mat(lm[:5], 256, "full")
    with pytest.raises(ValueError, match="landmarks"):
        get_transform_mat(np.full((68, 2), np.nan), 256, "full")
    with pytest.raises(ValueError, match="landmarks"):
        get_transform_mat(np.zeros((68, 2)), 256, "full")
    with pytest.raises(ValueError, match="output_size"):
        get_transform_mat(lm, 0, "full")
    with pytest.raises(ValueError, match="mat"):
        transform_points(lm, np.eye(3))
    with pytest.raises(ValueError, match="points"):
        transform_points(np.zeros((4, 3)), np.eye(2, 3))
    with pytest.raises(ValueError, match="frame_shape"):
        warp_to_frame(np.zeros((8, 8)), np.eye(2, 3), (0, 5))
