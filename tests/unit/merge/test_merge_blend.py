"""Per-frame merge (dflray.merge.blend): DFL's modes, masks and geometry on real face geometry.

The frame is skimage's astronaut (public domain) with dlib's 68 landmarks; the second-face case uses
two real landmark sets from ``data/dfl_reference.json`` on a synthetic frame. Predictors are fakes:
identity, colour-shifted or constant faces, with soft elliptical "learned" masks.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data

from dflray.config import MergeSettings
from dflray.face.align import get_transform_mat, transform_points
from dflray.face.color import MERGE_CT_MODES
from dflray.face.masks import hull_mask
from dflray.merge.blend import (
    MASK_MODES,
    MERGE_MODES,
    XSEG_MASK_MODES,
    build_mask,
    color_hist_match,
    crop_hull,
    hist_match,
    merge_face,
    output_matrix,
    paste,
    prepare_crop,
    refine_mask,
    xseg_crops,
    xseg_to_model,
)
from dflray.models.xseg import XSeg
from tests.media import ASTRONAUT_LM

R = 128
FACE_TYPE = "whole_face"
_REF = json.loads((Path(__file__).parents[1] / "data" / "dfl_reference.json").read_text())
_CASES = {c["name"]: c for c in _REF["cases"]}

_yy, _xx = np.mgrid[0:R, 0:R] / (R - 1.0)
SOFT_PRD = np.clip(1.2 - 2.2 * np.hypot(_xx - 0.5, _yy - 0.55), 0, 1).astype(np.float32)
SOFT_DST = np.clip(1.3 - 2.0 * np.hypot(_xx - 0.5, _yy - 0.5), 0, 1).astype(np.float32)


def identity(crop):
    return crop, np.ones(crop.shape[:2], np.float32), np.ones(crop.shape[:2], np.float32)


def shifted(crop):
    """A 'swap' whose colours are off: warmer and brighter than dst."""
    face = np.clip(crop * np.array([0.8, 0.9, 1.1], np.float32) + np.array([0.15, 0.02, 0.0], np.float32), 0, 1)
    return face.astype(np.float32), SOFT_PRD, SOFT_DST


def settings(**kw) -> MergeSettings:
    return MergeSettings(**{"color_transfer": "none", **kw})


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return data.astronaut()


def constant_xseg(logit: float, face_type: str = FACE_TYPE, resolution: int = 64) -> XSeg:
    """A real XSeg network whose output layer is set to a constant: every pixel face (+) or none (-)."""
    import torch

    net = XSeg(resolution, 4, 2, face_type)
    with torch.no_grad():
        net.out_conv.weight.zero_()
        net.out_conv.bias.fill_(logit)
    return net.eval()


ALL_FACE = constant_xseg(30.0)


def _weighted_mean(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    w = mask.astype(np.float64)[..., None] / 255.0
    return (img.astype(np.float64) * w).sum(axis=(0, 1)) / w.sum()


# ------------------------------------------------------------------------------------ every mode, every mask


@pytest.mark.parametrize("mask_mode", MASK_MODES)
@pytest.mark.parametrize("mode", MERGE_MODES)
def test_output_contract_and_untouched_outside_mask(frame, mode, mask_mode):
    res = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, settings(mode=mode, mask_mode=mask_mode), rng=0,
                     xseg=ALL_FACE)
    assert res.frame.shape == frame.shape and res.frame.dtype == np.uint8
    assert res.mask.shape == frame.shape[:2] and res.mask.dtype == np.uint8
    assert not res.frame_degraded
    outside = res.mask == 0
    assert np.array_equal(res.frame[outside], frame[outside]), "pixels outside the manipulation mask changed"
    if mode in ("original", "raw-predict"):
        assert np.array_equal(res.frame, frame) and not res.mask.any()
    else:
        inside = res.mask > 128
        assert inside.sum() > 2000, "the face region should be substantial"
        floor = 5 if mode in ("overlay", "raw-rgb") else 1  # hist-match and seamless pull toward dst
        assert np.abs(res.frame[inside].astype(int) - frame[inside]).mean() > floor, "the swap changed nothing"
    if mode == "raw-predict":
        assert res.raw.shape == (R, R, 3) and res.raw.dtype == np.uint8
        assert res.raw_mask.shape == (R, R) and res.raw_mask.dtype == np.uint8
        crop, _ = prepare_crop(frame, ASTRONAUT_LM, FACE_TYPE, R, settings())
        assert np.abs(res.raw.astype(int) - np.round(shifted(crop)[0] * 255)).max() <= 1
    else:
        assert res.raw is None


def test_original_returns_the_frame_without_predicting(frame):
    def boom(crop):
        raise AssertionError("original mode must not run the model")

    res = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, boom, settings(mode="original"))
    assert np.array_equal(res.frame, frame) and not res.mask.any()


def test_raw_rgb_pastes_the_whole_crop_unmasked(frame):
    def green(crop):
        zero = np.zeros(crop.shape[:2], np.float32)  # masks say "nothing", raw-rgb must ignore them
        return np.broadcast_to(np.array([0, 1, 0], np.float32), crop.shape).copy(), zero, zero

    res = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, green, settings(mode="raw-rgb", mask_mode="learned-prd"))
    mat = get_transform_mat(ASTRONAUT_LM, R, FACE_TYPE)
    footprint = R * R / abs(np.linalg.det(mat[:, :2]))  # the crop square's area in frame pixels
    assert abs((res.mask > 0).sum() / footprint - 1) < 0.03
    full = res.mask == 255
    assert np.abs(res.frame[full].astype(int) - [0, 255, 0]).max() <= 2  # bicubic edge pixels within 2


# ------------------------------------------------------------------------------------ geometry


def test_inverse_warp_round_trip(frame):
    """Identity predictor, overlay, full mask, no colour transfer: the face comes back where it was."""
    res = merge_face(frame, ASTRONAUT_LM, "full", R, identity, settings(mode="overlay", mask_mode="full"))
    inside = res.mask == 255
    assert inside.sum() > 5000
    err = np.abs(res.frame.astype(np.float64) - frame)[inside].mean()
    # A one-pixel shift of the same region, for scale: the round trip must be far below it.
    shift_err = np.abs(np.roll(frame, 1, axis=1).astype(np.float64) - frame)[inside].mean()
    assert err < 2.5 and err < 0.3 * shift_err, (err, shift_err)


def test_round_trip_on_other_real_geometry():
    """A large, rotated face (real dlib landmarks from the reference set) on a smooth synthetic frame."""
    case = _CASES["obama_1_rot20_f0"]
    h, w = case["frame_shape"]
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    lm = np.asarray(case["landmarks"], np.float64)
    res = merge_face(img, lm, "full", 256, identity, settings(mode="overlay", mask_mode="full"))
    inside = res.mask == 255
    assert inside.sum() > 20000
    assert np.abs(res.frame.astype(np.float64) - img)[inside].mean() < 1.5
    assert np.array_equal(res.frame[res.mask == 0], img[res.mask == 0])


@pytest.mark.parametrize("face_scale", [-30, 20])
def test_face_scale_scales_the_pasted_face_like_dfl(frame, face_scale):
    base = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, identity, settings(mask_mode="full"))
    scaled = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, identity, settings(mask_mode="full", face_scale=face_scale))
    s = 1 + 0.01 * face_scale  # DFL divides the crop's frame extent by s: a larger scale, a smaller face
    ratio = (scaled.mask > 127).sum() / (base.mask > 127).sum()
    assert abs(ratio * s * s - 1) < 0.03, ratio
    centre = lambda m: np.argwhere(m > 127).mean(axis=0)  # noqa: E731
    assert np.abs(centre(scaled.mask) - centre(base.mask)).max() < 1.5  # scaled about the crop centre


def test_output_matrix_is_dfl_scale():
    mat = get_transform_mat(ASTRONAUT_LM, R, FACE_TYPE)
    out = output_matrix(mat, R, 25)
    centre = transform_points(np.array([[R / 2, R / 2]]), mat, invert=True)
    assert np.allclose(transform_points(centre, out), [[R / 2, R / 2]])
    assert np.allclose(np.linalg.det(out[:, :2]), 1.25 ** 2 * np.linalg.det(mat[:, :2]))
    assert np.allclose(output_matrix(mat, R, 0), mat)


def test_two_faces_pasted_one_after_another():
    case0, case1 = _CASES["two_people_f0"], _CASES["two_people_f1"]
    h, w = case0["frame_shape"]
    img = np.full((h, w, 3), 90, np.uint8)
    img[:, :, 1] = np.linspace(40, 200, w, dtype=np.uint8)[None]
    s = settings(mode="overlay", mask_mode="dst")
    first = merge_face(img, np.asarray(case0["landmarks"]), FACE_TYPE, R, shifted, s)
    second = merge_face(first.frame, np.asarray(case1["landmarks"]), FACE_TYPE, R, shifted, s)
    assert first.mask.any() and second.mask.any() and not (first.mask & second.mask).any()
    keep = second.mask == 0
    assert np.array_equal(second.frame[keep], first.frame[keep])  # the first face survives the second paste
    assert not np.array_equal(second.frame[first.mask > 0], img[first.mask > 0])


def test_two_phase_api_equals_merge_face(frame):
    s = settings(mode="seamless", mask_mode="learned-prd*learned-dst", color_transfer="rct", erode=20, blur=40)
    crop, ctx = prepare_crop(frame, ASTRONAUT_LM, FACE_TYPE, R, s)
    assert crop.shape == (R, R, 3) and crop.dtype == np.float32 and 0 <= crop.min() and crop.max() <= 1
    a = paste(frame, ctx, *shifted(crop), s)
    b = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, s)
    assert np.array_equal(a.frame, b.frame) and np.array_equal(a.mask, b.mask)


def test_face_outside_the_frame_or_too_small_leaves_it_unchanged(frame):
    s = settings(mode="overlay", mask_mode="full")
    off = merge_face(frame, ASTRONAUT_LM + [2000, 0], FACE_TYPE, R, identity, s)
    assert np.array_equal(off.frame, frame) and not off.mask.any()
    tiny = (ASTRONAUT_LM - ASTRONAUT_LM.mean(0)) * 0.01 + 256  # a face under 4 pixels across
    res = merge_face(frame, tiny, FACE_TYPE, R, identity, s)
    assert np.array_equal(res.frame, frame) and not res.mask.any()


def test_face_at_the_frame_edge_seamless(frame):
    res = merge_face(frame, ASTRONAUT_LM - [200, 0], FACE_TYPE, R, shifted, settings(mode="seamless"))
    assert res.mask[:, 0].any()  # the face reaches the left border
    assert np.array_equal(res.frame[res.mask == 0], frame[res.mask == 0])


def test_bad_inputs_are_rejected(frame):
    with pytest.raises(ValueError, match="uint8"):
        merge_face(frame.astype(np.float32), ASTRONAUT_LM, FACE_TYPE, R, identity, settings())
    _, ctx = prepare_crop(frame, ASTRONAUT_LM, FACE_TYPE, R, settings())
    with pytest.raises(ValueError, match="context"):
        paste(frame[:100], ctx, *identity(np.zeros((R, R, 3), np.float32)), settings())
    with pytest.raises(ValueError, match="mask of the swapped face"):
        paste(frame, ctx, np.zeros((R, R, 3), np.float32), None, None, settings(mask_mode="learned-prd"))
    for mode in XSEG_MASK_MODES:
        with pytest.raises(ValueError, match="XSeg"):
            merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, identity, settings(mask_mode=mode))
        with pytest.raises(ValueError, match="XSeg mask"):
            paste(frame, ctx, *identity(np.zeros((R, R, 3), np.float32)), settings(mask_mode=mode))


# ------------------------------------------------------------------------------------ masks


def test_build_mask_modes():
    prd, dst = np.full((4, 4), 0.6, np.float32), np.full((4, 4), 0.5, np.float32)
    hull = np.zeros((4, 4), np.float32)
    hull[1:3, 1:3] = 1
    expect = {"full": 1.0, "learned-prd": 0.6, "learned-dst": 0.5, "learned-prd*learned-dst": 0.3,
              "learned-prd+learned-dst": 1.0}
    for mode, value in expect.items():
        assert np.allclose(build_mask(mode, prd, dst, hull), value), mode
    assert np.array_equal(build_mask("dst", None, None, hull), hull)
    assert np.array_equal(build_mask("full", None, None, None, size=3), np.ones((3, 3)))
    noisy = build_mask("learned-prd", np.full((2, 2), 0.5 / 255, np.float32), None, None)
    assert not noisy.any()  # DFL drops values under one 8-bit step
    xp, xd = np.full((4, 4), 0.8, np.float32), np.full((4, 4), 0.25, np.float32)
    expect = {"XSeg-prd": 0.8, "XSeg-dst": 0.25, "XSeg-prd*XSeg-dst": 0.2,
              "learned-prd*learned-dst*XSeg-prd*XSeg-dst": 0.3 * 0.2}
    for mode, value in expect.items():
        assert np.allclose(build_mask(mode, prd, dst, None, xseg_prd=xp, xseg_dst=xd), value), mode
    with pytest.raises(ValueError, match="the model's mask of dst"):
        build_mask("learned-prd*learned-dst*XSeg-prd*XSeg-dst", prd, None, None, xseg_prd=xp, xseg_dst=xd)
    with pytest.raises(ValueError, match="XSeg mask of dst"):
        build_mask("XSeg-prd*XSeg-dst", None, None, None, xseg_prd=xp)


# ------------------------------------------------------------------------------------ XSeg masks


def test_xseg_modes_with_an_all_face_or_no_face_model(frame):
    """A segmenter that calls everything face gives the non-XSeg mode's frame exactly; one that calls
    nothing face leaves the frame untouched."""
    pairs = {"XSeg-dst": "full", "XSeg-prd": "full", "XSeg-prd*XSeg-dst": "full",
             "learned-prd*learned-dst*XSeg-prd*XSeg-dst": "learned-prd*learned-dst"}
    for xmode, plain in pairs.items():
        a = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, settings(mask_mode=xmode), xseg=ALL_FACE)
        b = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, settings(mask_mode=plain))
        assert np.array_equal(a.frame, b.frame) and np.array_equal(a.mask, b.mask), xmode
        none = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, settings(mask_mode=xmode),
                          xseg=constant_xseg(-30.0))
        assert np.array_equal(none.frame, frame) and not none.mask.any(), xmode


def test_xseg_dst_mask_keeps_an_occluder_in_the_frame(frame):
    """What XSeg is for: a hand over the mouth, excluded from the XSeg-dst mask, stays in the output."""
    occluded = frame.copy()
    lm = ASTRONAUT_LM
    mouth = lm[48:68]
    x0, y0 = mouth.min(0).astype(int) - 6
    x1, y1 = mouth.max(0).astype(int) + 6
    occluded[y0:y1, x0:x1] = (200, 160, 120)  # a skin-coloured block over the mouth
    crop, ctx = prepare_crop(occluded, lm, FACE_TYPE, R, settings())
    occ = np.zeros(occluded.shape[:2], np.float32)
    occ[y0:y1, x0:x1] = 1
    occ_crop = cv2.warpAffine(occ, ctx.face_mat, (R, R), flags=cv2.INTER_LINEAR)
    visible = np.clip(crop_hull(ctx) - cv2.dilate(occ_crop, np.ones((5, 5), np.uint8)), 0, 1)
    face, pm, dm = shifted(crop)
    res = paste(occluded, ctx, face, pm, dm, settings(mask_mode="XSeg-dst"), xseg_dst=visible)
    block = occ > 0
    assert np.array_equal(res.frame[block], occluded[block]), "the occluder was painted over"
    hull_res = paste(occluded, ctx, face, pm, dm, settings(mask_mode="dst"))
    assert np.abs(hull_res.frame[block].astype(int) - occluded[block]).mean() > 5, "the hull mode should not keep it"
    face_px = (res.mask > 200) & ~block
    assert face_px.sum() > 3000 and np.abs(res.frame[face_px].astype(int) - occluded[face_px]).mean() > 5


@pytest.mark.parametrize("xseg_type", [FACE_TYPE, "head", "full"])
def test_xseg_crops_are_the_frame_at_xsegs_face_type(frame, xseg_type):
    """XSeg sees dst and the swapped face cut at its own face type; its mask comes back into the model
    crop in register (the landmark hull through the round trip matches the model crop's hull)."""
    s = 96
    _, ctx = prepare_crop(frame, ASTRONAUT_LM, FACE_TYPE, R, settings())
    prd, dst = xseg_crops(frame, ctx, ctx.crop, face_type=xseg_type, resolution=s)
    mat = get_transform_mat(ASTRONAUT_LM, s, xseg_type)
    expect = cv2.warpAffine(frame, mat, (s, s), flags=cv2.INTER_CUBIC)
    assert prd.shape == dst.shape == (s, s, 3) and dst.dtype == np.uint8
    assert np.abs(dst.astype(int) - expect).max() <= (0 if xseg_type != FACE_TYPE else 1)
    # The 'swap' here is dst's own crop: XSeg's view of it is dst again, in the model crop's footprint.
    cover = cv2.warpAffine(np.ones((R, R), np.float32), (np.vstack([mat, [0, 0, 1]]) @ np.linalg.inv(
        np.vstack([ctx.face_mat, [0, 0, 1]])))[:2], (s, s)) > 0.99
    cover = cv2.erode(cover.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert cover.mean() > 0.3
    err = np.abs(prd.astype(int) - dst)[cover].mean()
    shift_err = np.abs(np.roll(dst, 1, axis=1).astype(int) - dst)[cover].mean()  # for scale: one pixel off
    assert err < 0.4 * shift_err, (err, shift_err)
    hull_x = cv2.warpAffine(hull_mask(frame.shape[:2], ASTRONAUT_LM).astype(np.float32), mat, (s, s),
                            flags=cv2.INTER_CUBIC)
    back = xseg_to_model(hull_x, ctx, xseg_type)
    ref = crop_hull(ctx)
    inter, union = ((back > 0.5) & (ref > 0.5)).sum(), ((back > 0.5) | (ref > 0.5)).sum()
    assert back.shape == (R, R) and inter / union > 0.95, inter / union


def _mask_area(frame, **kw) -> tuple[float, np.ndarray]:
    res = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, settings(mask_mode="dst", **kw))
    return res.mask.sum() / 255.0, res.mask


def test_erode_shrinks_dilate_grows_blur_softens(frame):
    base, base_mask = _mask_area(frame)
    eroded, _ = _mask_area(frame, erode=60)
    dilated, _ = _mask_area(frame, erode=-60)
    assert eroded < 0.9 * base and dilated > 1.1 * base
    blurred, blur_mask = _mask_area(frame, blur=150)
    partial = lambda m: ((m > 0) & (m < 255)).sum()  # noqa: E731
    assert partial(blur_mask) > 1.5 * partial(base_mask)
    edge = lambda m: np.abs(np.diff(m.astype(int), axis=1)).max()  # noqa: E731
    assert edge(blur_mask) < edge(base_mask)


def test_refine_mask_units_are_4x_model_pixels():
    m = np.zeros((64, 64), np.float32)
    m[16:48, 16:48] = 1
    fine = refine_mask(m)
    assert fine.shape == (256, 256)
    # A 41-pixel erosion at 4× is a ~20-pixel-wide band: the 128-pixel square loses ~40 pixels of side.
    side = np.sqrt((refine_mask(m, 41) > 0.5).sum())
    assert abs(side - (128 - 40)) <= 2
    # Blur fades a full mask to (almost) zero at the crop edge, and keeps the inside.
    blurred = refine_mask(np.ones((32, 32), np.float32), blur=20)
    assert blurred[0].max() < 0.01 and blurred[64, 64] == pytest.approx(1)
    assert refine_mask(m, -400).shape == (256, 256)


# ------------------------------------------------------------------------------------ colour


# How far each mode must close the gap between the swap's mean colour and dst's over the face. DFL's
# masked rct/mix take statistics of the face on a black surround, so they only close part of it.
_CT_REMAINING = {"rct": 0.8, "lct": 0.6, "mkl": 0.1, "mkl-m": 0.3, "idt": 0.5, "idt-m": 0.5, "sot-m": 0.3,
                 "mix-m": 0.3}


@pytest.mark.parametrize("ct", MERGE_CT_MODES)
def test_color_transfer_moves_the_face_toward_dst(frame, ct):
    off = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, settings(mask_mode="dst"))
    on = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, settings(mask_mode="dst", color_transfer=ct), rng=0)
    assert np.array_equal(on.mask, off.mask)
    face = (off.mask > 0).astype(np.uint8) * 255  # the region colour transfer works on
    target = _weighted_mean(frame, face)
    before = np.linalg.norm(_weighted_mean(off.frame, face) - target)
    after = np.linalg.norm(_weighted_mean(on.frame, face) - target)
    assert before > 10 and after < _CT_REMAINING[ct] * before, (ct, before, after)


@pytest.mark.parametrize("mode", ["hist-match", "seamless-hist-match"])
def test_hist_match_modes_move_the_face_toward_dst(frame, mode):
    plain = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, settings(mode=mode.replace("-hist-match", "")
                                                                              .replace("hist-match", "overlay")))
    matched = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, settings(mode=mode, hist_match_threshold=255))
    target = _weighted_mean(frame, plain.mask)
    before = np.linalg.norm(_weighted_mean(plain.frame, plain.mask) - target)
    after = np.linalg.norm(_weighted_mean(matched.frame, matched.mask) - target)
    assert after < 0.5 * before, (before, after)


def test_hist_match_threshold_darkens(frame):
    hi = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, settings(mode="hist-match", hist_match_threshold=255))
    lo = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, settings(mode="hist-match", hist_match_threshold=180))
    inside = hi.mask > 200
    assert lo.frame[inside].mean() < hi.frame[inside].mean() - 3


def test_color_hist_match_functions():
    rng = np.random.default_rng(0)
    src = rng.random((32, 32, 3), dtype=np.float32)
    ref = rng.random((32, 32, 3), dtype=np.float32) ** 2
    out = color_hist_match(src, ref)
    assert np.allclose(np.sort(out.ravel()), np.sort(ref.ravel()), atol=2e-3)  # same distribution as ref
    assert np.array_equal(np.argsort(out[..., 0].ravel()), np.argsort(src[..., 0].ravel()))  # order kept
    mask = np.zeros((32, 32), np.float32)
    mask[8:24, 8:24] = 1
    masked = hist_match(src, ref, mask)
    inside = mask > 0
    assert np.allclose(np.sort(masked[inside][:, 0]), np.sort(ref[inside][:, 0]), atol=2e-3)


def test_seamless_hides_the_colour_seam(frame):
    """Poisson blending pulls the swap's border to dst's colours; overlay keeps the offset."""
    ov = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, settings(mode="overlay", mask_mode="learned-prd"))
    sl = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, settings(mode="seamless", mask_mode="learned-prd"))
    core = (ov.mask > 30).astype(np.uint8)
    band = core.astype(bool) & ~cv2.erode(core, np.ones((7, 7), np.uint8)).astype(bool)  # just inside the edge
    seam = lambda img: np.abs(img[band].astype(int) - frame[band]).mean()  # noqa: E731
    assert seam(sl.frame) < 0.5 * seam(ov.frame)


# ------------------------------------------------------------------------------------ post-processing in merge


def _hf_energy(img: np.ndarray, mask: np.ndarray) -> float:
    lap = cv2.Laplacian(img.astype(np.float32), cv2.CV_32F)
    return float((lap[mask] ** 2).mean())


def test_sharpen_in_merge_acts_on_the_face(frame):
    base = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, identity, settings(mask_mode="full"))
    sharp = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, identity,
                       settings(mask_mode="full", sharpen_mode="gaussian", sharpen_amount=10))
    soft = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, identity,
                      settings(mask_mode="full", sharpen_mode="box", sharpen_amount=-30))
    inside = cv2.erode((base.mask == 255).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    e = _hf_energy(base.frame, inside)
    assert _hf_energy(sharp.frame, inside) > 1.5 * e > 1.5 * _hf_energy(soft.frame, inside)
    for res in (sharp, soft):
        assert np.array_equal(res.frame[res.mask == 0], frame[res.mask == 0])


@pytest.mark.parametrize("option", [{"denoise": 200}, {"bicubic_degrade": 60}, {"color_degrade": 100}])
def test_frame_wide_degradations_are_flagged(frame, option):
    res = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, settings(**option))
    assert res.frame_degraded
    outside = res.mask == 0
    changed = (res.frame[outside] != frame[outside]).any(-1).mean()
    assert changed > 0.3  # DFL degrades the background (and colour-degrades everything)
    if "color_degrade" in option:
        assert len(np.unique(res.frame.reshape(-1, 3), axis=0)) <= 256
    else:
        inside = cv2.erode((res.mask == 255).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        ref = merge_face(frame, ASTRONAUT_LM, FACE_TYPE, R, shifted, settings())
        outside_ring = ~cv2.dilate((res.mask > 0).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
        # The background loses detail; the face itself is not degraded.
        assert _hf_energy(res.frame, outside_ring) < 0.8 * _hf_energy(frame, outside_ring)
        assert np.abs(res.frame[inside].astype(int) - ref.frame[inside]).mean() < 2


@pytest.mark.parametrize("deg", [0, 45, 90])
def test_motion_blur_follows_the_motion_in_a_rolled_face(deg):
    """A face rolled by 35° is blurred along its motion in the frame, not along the crop's axes."""
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.random((512, 512, 3)).astype(np.float32), (0, 0), 1.5)  # isotropic texture
    tex = np.clip((tex - tex.mean()) * 6 * 255 + 128, 0, 255).astype(np.uint8)
    rot = cv2.getRotationMatrix2D((256, 256), 35, 1.0)
    lm = transform_points(ASTRONAUT_LM, rot)
    s = settings(mask_mode="full", motion_blur=100)
    still = merge_face(tex, lm, "full", R, identity, s, motion=(0.0, 0.0))
    moving = merge_face(tex, lm, "full", R, identity, s, motion=(12.0, float(deg)))
    inside = cv2.erode((still.mask == 255).astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)

    def grads(img):
        g = img.astype(np.float32).mean(-1)
        return cv2.Sobel(g, cv2.CV_32F, 1, 0)[inside], cv2.Sobel(g, cv2.CV_32F, 0, 1)[inside]

    (sx, sy), (mx, my) = grads(still.frame), grads(moving.frame)
    angles = np.arange(0, 180, 5)
    # Derivative along angle a (counter-clockwise, y up): the blur direction loses the most of it.
    along = lambda gx, gy, a: np.abs(np.cos(np.radians(a)) * gx - np.sin(np.radians(a)) * gy).mean()  # noqa: E731
    kept = np.array([along(mx, my, a) / along(sx, sy, a) for a in angles])
    found = angles[kept.argmin()]
    assert min(abs(found - deg), 180 - abs(found - deg)) <= 10, (deg, found)
    assert kept.min() < 0.4 and kept.max() > 0.5

