"""DeepfakeBench's crop: template, transform, warps and the 81-point fill (dflray.face.dfb_align)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from skimage.transform import SimilarityTransform

from dflray.face import transform_points
from dflray.face.dfb_align import (
    DFB_POINTS,
    FOREHEAD_ORDER,
    align_face,
    clip_to_crop,
    dfb_binary_mask,
    dfb_points5,
    dfb_template,
    dfb_transform,
    landmarks_81,
    warp_crop,
    warp_mask,
)

_CASES = json.loads((Path(__file__).parents[1] / "data" / "dfl_reference.json").read_text())["cases"]


def _landmarks(i: int = 0) -> np.ndarray:
    return np.asarray(_CASES[i]["landmarks"], dtype=np.float64)


def _template_by_steps(size: int, scale: float) -> np.ndarray:
    """preprocess.py's img_align_crop template, step by step as it documents them (move, then resize)."""
    dst = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655],
                    [62.7299, 92.2041]])
    dst[:, 0] += 8.0
    dst *= size / 112
    margin = size * (scale - 1) / 2
    dst += margin
    return dst * size / (size + 2 * margin)


@pytest.mark.parametrize("size,scale", [(256, 1.3), (224, 1.3), (256, 1.0), (317, 1.7)])
def test_template_is_deepfakebench_s(size, scale):
    assert np.allclose(dfb_template(size, scale), _template_by_steps(size, scale), atol=1e-9)


def test_template_at_256_keeps_the_face_in_the_middle():
    t = dfb_template(256)
    assert np.allclose(t[0], [(38.2946 * 256 / 112 + 38.4) / 1.3, (51.6963 * 256 / 112 + 38.4) / 1.3])
    assert 100 < t[:, 0].mean() < 156 and t.min() > 0 and t.max() < 256


def test_points5_are_deepfakebench_indices():
    lm = np.arange(136, dtype=np.float64).reshape(68, 2)
    assert DFB_POINTS == (37, 44, 30, 49, 55)
    assert np.array_equal(dfb_points5(lm), lm[[37, 44, 30, 49, 55]])
    assert np.array_equal(dfb_points5(np.vstack([lm, np.zeros((13, 2))])), lm[[37, 44, 30, 49, 55]])
    with pytest.raises(ValueError, match="68, 2"):
        dfb_points5(lm[:60])


@pytest.mark.parametrize("case", range(min(4, len(_CASES))))
def test_transform_matches_skimage_similarity(case):
    lm = _landmarks(case)
    src, dst = lm[list(DFB_POINTS)], _template_by_steps(256, 1.3)
    if hasattr(SimilarityTransform, "from_estimate"):  # skimage >= 0.26
        tform = SimilarityTransform.from_estimate(src, dst)
        assert tform
    else:
        tform = SimilarityTransform()
        assert tform.estimate(src, dst)
    ours = dfb_transform(lm, 256)
    assert ours.shape == (2, 3)
    assert np.allclose(ours, tform.params[:2], atol=1e-6)


def test_transform_puts_an_exact_similarity_on_the_template():
    # 68 points whose five alignment points are a rotated, scaled, moved copy of the template.
    rng = np.random.default_rng(1)
    theta, s, t = 0.4, 2.5, np.array([310.0, 95.0])
    rot = s * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    lm = rng.random((68, 2)) * 500
    lm[list(DFB_POINTS)] = dfb_template(256) @ rot.T + t
    m = dfb_transform(lm, 256)
    assert np.allclose(transform_points(lm[list(DFB_POINTS)], m), dfb_template(256), atol=1e-6)
    assert np.isclose(np.linalg.det(m[:, :2]), 1 / s ** 2)


def test_transform_refuses_degenerate_points():
    with pytest.raises(ValueError, match="degenerate"):
        dfb_transform(np.ones((68, 2)), 256)


def test_warp_moves_a_point_where_the_matrix_says():
    lm = _landmarks(0)
    h, w = int(lm[:, 1].max() * 1.5), int(lm[:, 0].max() * 1.5)
    frame = np.zeros((h, w, 3), np.uint8)
    nose = np.round(lm[30]).astype(int)
    frame[nose[1] - 2:nose[1] + 3, nose[0] - 2:nose[0] + 3] = (255, 128, 7)
    m = dfb_transform(lm, 256)
    crop = warp_crop(frame, m, 256)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    ys, xs = np.nonzero(crop[..., 0] > 100)
    at = transform_points(nose[None].astype(float), m)[0]
    assert abs(xs.mean() - at[0]) < 1.5 and abs(ys.mean() - at[1]) < 1.5
    # the colour order is kept (no BGR swap)
    bright = crop[ys, xs].astype(int)
    assert (bright[:, 0] > bright[:, 1]).all() and (bright[:, 1] > bright[:, 2]).all()


def test_mask_warps_with_the_image_and_binarises_like_deepfakebench():
    lm = _landmarks(0)
    h, w = int(lm[:, 1].max() * 1.5), int(lm[:, 0].max() * 1.5)
    mask = np.zeros((h, w), np.uint8)
    x0, y0 = np.floor(lm.min(0)).astype(int)
    x1, y1 = np.ceil(lm.max(0)).astype(int)
    mask[y0:y1, x0:x1] = 200
    frame = np.repeat(mask[..., None], 3, axis=2)
    m = dfb_transform(lm, 256)
    crop, warped, lm81 = align_face(frame, lm, 256, mask)
    assert warped.shape == (256, 256) and warped.dtype == np.uint8
    assert np.array_equal(warped, warp_mask(mask, m, 256))
    assert np.array_equal(warped, crop[..., 0])  # same matrix, same interpolation
    binary = dfb_binary_mask(warped)
    assert set(np.unique(binary)) <= {0, 255}
    assert np.array_equal(binary == 255, warped > 1)
    assert lm81.shape == (81, 2) and lm81.dtype == np.float32
    assert align_face(frame, lm, 256)[1] is None
    with pytest.raises(ValueError, match="mask"):
        warp_mask(frame, m, 256)


def _up(lm: np.ndarray) -> np.ndarray:
    """Unit vector from the chin towards the brows (the face's 'up')."""
    v = lm[27] - lm[8]
    return v / np.linalg.norm(v)


@pytest.mark.parametrize("case", range(min(4, len(_CASES))))
def test_forehead_points_lie_above_the_brows_in_order(case):
    lm = _landmarks(case)
    out = landmarks_81(lm)
    assert out.shape == (81, 2)
    assert np.array_equal(out[:68], lm)
    up = _up(lm)
    brows = (lm[17:27] @ up).max()
    arc = out[list(FOREHEAD_ORDER)]  # DeepfakeBench's reorder_landmark order
    middle = arc[3:10]
    assert (middle @ up > brows).all(), "the middle of the forehead arc lies above every eyebrow point"
    across = lm[16] - lm[0]
    pos = arc @ across
    assert (np.diff(pos) > 0).all(), "reordered, the arc runs from the jaw-0 side to the jaw-16 side"
    assert pos[0] > lm[0] @ across and pos[-1] < lm[16] @ across
    # its top is one brow-to-nose-base height above the brows, measured from the jaw midpoint
    centre = (lm[0] + lm[16]) / 2
    top = ((arc - centre) @ up).max()
    brow_h = ((lm[17:27] - centre) @ up).max()
    third = brow_h - (lm[33] - centre) @ up
    assert brow_h + 0.9 * third < top <= brow_h + third + 1e-9


def test_forehead_follows_rotation_scale_and_translation():
    lm = _landmarks(0)
    theta, s, t = np.deg2rad(35), 0.7, np.array([40.0, -12.0])
    rot = s * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    moved = lm @ rot.T + t
    assert np.allclose(landmarks_81(moved), landmarks_81(lm) @ rot.T + t, atol=1e-6)


def test_forehead_refuses_bad_input():
    with pytest.raises(ValueError, match="68, 2"):
        landmarks_81(np.zeros((81, 2)))
    with pytest.raises(ValueError, match="degenerate"):
        landmarks_81(np.zeros((68, 2)))


def test_landmarks_in_the_crop_at_deepfakebench_scale():
    lm = _landmarks(0)
    m = dfb_transform(lm, 256)
    inside = landmarks_81(transform_points(lm, m))
    # a frontal face at scale 1.3 fits: chin, jaw and forehead stay in the crop
    assert inside.min() > 0 and inside.max() < 255
    assert np.array_equal(clip_to_crop(inside, 256), inside)
    assert clip_to_crop(np.array([[-3.0, 300.0]]), 256).tolist() == [[0.0, 255.0]]
