"""The sbi and xray-blend methods (dflray.methods.self_blend) on real faces: the output contract, one set
of parameters per video, the nearest source face, and settings checks."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from dflray.config import ConfigError, DetectConfig, LandmarkConfig
from dflray.face import get_transform_mat, hull_mask, transform_points, warp_to_crop
from dflray.methods import SourceFaces, build_method, method_settings, method_spec
from dflray.methods.self_blend import SbiSettings, XRayBlend, XRayBlendSettings
from dflray.sample import load_portrait
from tests.media import shared_media

R = 128
FACE_TYPE = "whole_face"


@pytest.fixture(scope="module")
def find_landmarks():
    """dflray's own dlib HOG detector and 68-point landmarker (no Ray): frame -> 68×2 of the largest face."""
    from dflray.detect import build_detector
    from dflray.detect.dlib_models import Dlib68Landmarker

    det = build_detector(DetectConfig(detector="dlib-hog"))
    lmk = Dlib68Landmarker(LandmarkConfig())

    def find(frame: np.ndarray) -> np.ndarray:
        boxes = det.detect([frame])[0].boxes
        assert len(boxes), "no face found"
        big = boxes[np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))]
        return lmk.landmarks(frame, big[None])[0].astype(np.float64)

    return find


@pytest.fixture(scope="module")
def portraits(find_landmarks):
    """The two built-in sample portraits: name -> (RGB frame, landmarks in frame pixels)."""
    out = {}
    for name in ("astronaut", "grace_hopper"):
        frame = load_portrait(name)
        out[name] = (frame, find_landmarks(frame))
    return out


def aligned(frame: np.ndarray, lm: np.ndarray, resolution: int = R) -> tuple[np.ndarray, np.ndarray]:
    """The aligned crop (float32 RGB in [0, 1]) and its landmarks in crop pixels."""
    mat = get_transform_mat(lm, resolution, FACE_TYPE)
    crop = warp_to_crop(frame, mat, resolution).astype(np.float32) / 255
    return crop, transform_points(lm, mat)


def batch(*faces) -> tuple[np.ndarray, np.ndarray]:
    crops, lms = zip(*faces)
    return np.stack(crops), np.stack(lms)


def check_contract(crops, lms, fakes, masks, dst_masks) -> None:
    """Shapes, dtypes and ranges; the dst mask is the landmark hull; the fake is the dst wherever its mask is
    0 and differs from it inside."""
    n = len(crops)
    assert fakes.shape == (n, R, R, 3) and masks.shape == (n, R, R) and dst_masks.shape == (n, R, R)
    assert fakes.dtype == masks.dtype == dst_masks.dtype == np.float32
    for a in (fakes, masks, dst_masks):
        assert np.isfinite(a).all() and a.min() >= 0.0 and a.max() <= 1.0
    for i in range(n):
        hull = hull_mask((R, R), lms[i])
        np.testing.assert_array_equal(dst_masks[i], hull.astype(np.float32))
        outside = masks[i] == 0
        assert outside.sum() > 0.2 * R * R  # the background is left alone
        assert np.abs(fakes[i] - crops[i])[outside].max() <= 1 / 255
        inside = masks[i] > 0.5
        assert inside.sum() > 0.3 * hull.sum()  # a real part of the face is blended
        assert np.abs(fakes[i] - crops[i])[inside].mean() > 0.01


def within_dilated_hull(mask: np.ndarray, lm: np.ndarray, radius: float) -> bool:
    r = int(math.ceil(radius))
    grown = cv2.dilate(hull_mask((R, R), lm), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return bool((grown[mask > 0] == 1).all())


# ------------------------------------------------------------------------------------ sbi


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sbi_contract_on_real_faces(portraits, seed):
    crops, lms = batch(aligned(*portraits["astronaut"]), aligned(*portraits["grace_hopper"]))
    sbi = build_method("sbi", {}, resolution=R, face_type=FACE_TYPE, seed=seed)
    fakes, masks, dst_masks = sbi(crops, lms)
    check_contract(crops, lms, fakes, masks, dst_masks)
    # The mask is the hull moved with the pasted face (rescale about the centre, shift), deformed and
    # blurred: it cannot reach further from the hull than those moves and the blur's half-width.
    p = sbi.params
    reach = (abs(p["scale"] - 1) * R / math.sqrt(2) / p["scale"] + math.hypot(*p["shift"]) * R / p["scale"]
             + math.sqrt(2) * p["deform_px"] + math.sqrt(2) * (p["blur_px"] // 2) + 2)
    for i in range(2):
        assert within_dilated_hull(masks[i], lms[i], reach)


def test_sbi_without_jitter_is_the_dst(portraits):
    """With every transform at zero the pasted copy is the dst crop itself, so the fake is the dst."""
    none = {"rgb_shift": 0, "hue": 0, "saturation": 0, "brightness": 0, "contrast": 0, "p_sharpen": 1.0,
            "sharpen": [0, 0], "scale": 0, "shift": [0, 0], "deform": 0, "blend_ratio": [1, 1]}
    crops, lms = batch(aligned(*portraits["astronaut"]))
    fakes, masks, _ = build_method("sbi", none, resolution=R, face_type=FACE_TYPE, seed=4)(crops, lms)
    assert (masks > 0.5).sum() > 1000
    assert np.abs(fakes - crops).max() <= 1e-5


def test_sbi_draws_its_parameters_once_per_video(portraits, find_landmarks):
    astronaut, lm = portraits["astronaut"]
    # The same face a frame later: the camera moved a little and the landmarks are detected anew.
    move = cv2.getRotationMatrix2D((220.0, 130.0), 2.0, 1.03)
    move[:, 2] += (3.0, -2.0)
    moved = cv2.warpAffine(astronaut, move, astronaut.shape[1::-1], flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
    crops, lms = batch(aligned(astronaut, lm), aligned(moved, find_landmarks(moved)))
    assert 0 < np.abs(crops[0] - crops[1]).mean() < 0.05  # near, not equal

    sbi = build_method("sbi", {}, resolution=R, face_type=FACE_TYPE, seed=11)
    fakes, masks, _ = sbi(crops, lms)
    # Called again, or built again from the same seed: the same fakes, bit for bit.
    again = sbi(crops, lms)
    rebuilt = build_method("sbi", {}, resolution=R, face_type=FACE_TYPE, seed=11)
    assert rebuilt.params == sbi.params
    for a, b in zip((fakes, masks), again[:2]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(rebuilt(crops, lms)[0], fakes)
    # A crop's fake does not depend on the rest of its batch.
    np.testing.assert_array_equal(sbi(crops[1:], lms[1:])[0][0], fakes[1])

    # The two frames get the same treatment: their fakes differ about as little as the crops do, and
    # their masks overlap almost entirely. Another video's seed makes a clearly different fake.
    other = build_method("sbi", {}, resolution=R, face_type=FACE_TYPE, seed=12)
    assert other.params != sbi.params
    other_fakes, other_masks, _ = other(crops, lms)
    same = np.abs(fakes[0] - fakes[1]).mean()
    across = np.abs(fakes[1] - other_fakes[1]).mean()
    assert same < 1.5 * np.abs(crops[0] - crops[1]).mean() + 0.003
    assert across > 2 * same
    a, b = masks[0] > 0.5, masks[1] > 0.5
    assert (a & b).sum() / (a | b).sum() > 0.9
    assert not np.array_equal(other_masks[1], masks[1])


# ------------------------------------------------------------------------------------ xray-blend


def nearest_by_landmarks(dst_lms: np.ndarray, src_lms: np.ndarray) -> np.ndarray:
    return np.array([int(np.argmin(((src_lms - lm[None]) ** 2).sum(axis=(1, 2)))) for lm in dst_lms])


def align_to(crop: np.ndarray, src_lm: np.ndarray, dst_lm: np.ndarray) -> np.ndarray:
    """The source crop moved onto the dst landmarks by OpenCV's own similarity fit (an independent check)."""
    mat, _ = cv2.estimateAffinePartial2D(src_lm.astype(np.float32), dst_lm.astype(np.float32), method=cv2.LMEDS)
    return cv2.warpAffine(crop, mat, (R, R), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def source_faces(faces) -> tuple[SourceFaces, np.ndarray]:
    crops, lms = batch(*faces)
    return SourceFaces((crops * 255).round().astype(np.uint8), lms.astype(np.float32)), crops


def check_pasted_from(fakes, masks, crops, lms, sources, src_crops, picked) -> None:
    """Inside the mask's core each fake is its picked source face, aligned: closer to it than to the dst or
    to any other source face aligned the same way."""
    for i, j in enumerate(picked):
        core = masks[i] > 0.95
        assert core.sum() > 500
        errs = [np.abs(fakes[i] - align_to(c, sl, lms[i]))[core].mean() for c, sl in zip(src_crops, sources.landmarks)]
        to_dst = np.abs(fakes[i] - crops[i])[core].mean()
        assert errs[j] < 0.5 * to_dst
        assert all(errs[j] < 0.6 * e for k, e in enumerate(errs) if k != j)


def test_xray_blend_pastes_the_nearest_source_face(portraits):
    hopper, hopper_lm = portraits["grace_hopper"]
    # A second source face, far from the first in landmarks: the same portrait stretched sideways.
    stretch = np.array([[1.3, 0.0, -80.0], [0.0, 1.0, 0.0]])
    wide = cv2.warpAffine(hopper, stretch, (700, 600), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    sources, src_crops = source_faces([aligned(hopper, hopper_lm), aligned(wide, transform_points(hopper_lm, stretch))])
    dst = aligned(*portraits["astronaut"])
    crops, lms = batch(dst, aligned(wide, transform_points(hopper_lm, stretch)))

    xray = build_method("xray-blend", {"color_correct": "none"}, resolution=R, face_type=FACE_TYPE, seed=5,
                        sources=sources)
    picked = nearest_by_landmarks(lms, sources.landmarks)
    assert picked[1] == 1  # the stretched face is its own nearest
    np.testing.assert_array_equal(xray.nearest(lms), picked)
    fakes, masks, dst_masks = xray(crops[:1], lms[:1])
    check_contract(crops[:1], lms[:1], fakes, masks, dst_masks)
    check_pasted_from(fakes, masks, crops[:1], lms[:1], sources, src_crops, picked[:1])
    # Its mask is the same generator's: the dst hull deformed and blurred, within its reach of the hull.
    p = xray.params
    assert within_dilated_hull(masks[0], lms[0], math.sqrt(2) * (p["deform_px"] + p["blur_px"] // 2) + 2)

    # Colour-corrected (the default), the pasted face keeps the source's structure but takes the dst's
    # colours: its mean colour in the mask moves toward the dst's.
    fakes_cc, masks_cc, _ = build_method("xray-blend", {}, resolution=R, face_type=FACE_TYPE, seed=5,
                                         sources=sources)(crops[:1], lms[:1])
    np.testing.assert_array_equal(masks_cc, masks)
    core = masks[0] > 0.95
    src = align_to(src_crops[picked[0]], sources.landmarks[picked[0]], lms[0])
    gap_before = np.abs(src[core].mean(axis=0) - crops[0][core].mean(axis=0)).sum()
    gap_after = np.abs(fakes_cc[0][core].mean(axis=0) - crops[0][core].mean(axis=0)).sum()
    assert gap_after < 0.5 * gap_before

    def corr(a, b):
        return np.corrcoef(a[core].mean(axis=1), b[core].mean(axis=1))[0, 1]

    assert corr(fakes_cc[0], src) > 0.9 and corr(fakes_cc[0], src) > corr(fakes_cc[0], crops[0]) + 0.2


def test_xray_blend_on_real_photos(find_landmarks, portraits):
    def face(name):
        frame = cv2.cvtColor(cv2.imread(shared_media(name)), cv2.COLOR_BGR2RGB)
        return aligned(frame, find_landmarks(frame))

    crops, lms = batch(face("obama_1.jpg"), face("obama_2.jpg"))
    others = [face("biden.jpg"), aligned(*portraits["grace_hopper"]), aligned(*portraits["astronaut"])]
    sources, src_crops = source_faces(others)
    # switch_margin=0: the nearest source face in every frame, however near the previous pick is
    xray = build_method("xray-blend", {"color_correct": "none", "switch_margin": 0.0}, resolution=R,
                        face_type=FACE_TYPE, seed=9, sources=sources)
    picked = nearest_by_landmarks(lms, sources.landmarks)
    np.testing.assert_array_equal(xray.nearest(lms), picked)
    fakes, masks, dst_masks = xray(crops, lms)
    check_contract(crops, lms, fakes, masks, dst_masks)
    check_pasted_from(fakes, masks, crops, lms, sources, src_crops, picked)
    # Per video: the same mask parameters for both photos, the same fakes on a second call.
    np.testing.assert_array_equal(xray(crops, lms)[0], fakes)
    np.testing.assert_array_equal(xray(crops[1:], lms[1:])[0][0], fakes[1])


def test_xray_blend_keeps_its_source_face_until_another_is_clearly_nearer(portraits):
    """Frame after frame the dst face drifts between two near-equal source faces: by default the first pick
    stays (no flicker between sources); with switch_margin=0 the pick follows the nearest."""
    _, lm = aligned(*portraits["grace_hopper"])
    delta = np.zeros_like(lm)
    delta[48:68, 1] = 3.0  # the second source face: the mouth 3 px lower
    sources = SourceFaces(np.zeros((2, R, R, 3), np.uint8), np.stack([lm, lm + delta]).astype(np.float32))
    frames = np.stack([lm + f * delta for f in (0.3, 0.52, 0.48, 0.51, 0.9)])  # 0.52: 8% farther from 0
    sticky = build_method("xray-blend", {}, resolution=R, face_type=FACE_TYPE, seed=1, sources=sources)
    follow = build_method("xray-blend", {"switch_margin": 0.0}, resolution=R, face_type=FACE_TYPE, seed=1,
                          sources=sources)
    assert follow.select(frames).tolist() == [0, 1, 0, 1, 1]
    assert sticky.select(frames[:2]).tolist() + sticky.select(frames[2:]).tolist() == [0, 0, 0, 0, 1]


def test_xray_blend_aligns_the_source_face(portraits):
    """A source face turned and shrunk in its crop is moved back onto the dst face before pasting."""
    crop, lm = aligned(*portraits["grace_hopper"])
    turn = cv2.getRotationMatrix2D((R / 2, R / 2), 12.0, 0.85)
    turned = cv2.warpAffine(crop, turn, (R, R), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    sources, src_crops = source_faces([(turned, transform_points(lm, turn))])
    crops, lms = batch(aligned(*portraits["astronaut"]))
    xray = build_method("xray-blend", {"color_correct": "none"}, resolution=R, face_type=FACE_TYPE, seed=2,
                        sources=sources)
    fakes, masks, _ = xray(crops, lms)
    check_pasted_from(fakes, masks, crops, lms, sources, src_crops, [0])
    core = masks[0] > 0.95
    assert np.abs(fakes[0] - align_to(src_crops[0], sources.landmarks[0], lms[0]))[core].mean() < \
        0.3 * np.abs(fakes[0] - src_crops[0])[core].mean()


def test_xray_blend_sources_of_another_resolution(portraits):
    """Source crops of another side are resized, with their landmarks, to the method's."""
    sources, _ = source_faces([aligned(*portraits["grace_hopper"], resolution=2 * R)])
    crops, lms = batch(aligned(*portraits["astronaut"]))
    xray = build_method("xray-blend", {}, resolution=R, face_type=FACE_TYPE, seed=1, sources=sources)
    fakes, masks, dst_masks = xray(crops, lms)
    check_contract(crops, lms, fakes, masks, dst_masks)
    aligned_src, idx = xray.aligned_sources(lms)
    small, small_lm = aligned(*portraits["grace_hopper"])
    assert idx.tolist() == [0]
    core = masks[0] > 0.95
    assert np.abs(aligned_src[0] - align_to(small, small_lm, lms[0]))[core].mean() < 0.03


# ------------------------------------------------------------------------------------ spec, settings, inputs


def test_specs():
    sbi, xray = method_spec("sbi"), method_spec("xray-blend")
    assert (sbi.model, sbi.reads, sbi.settings) == ("none", (), SbiSettings)
    assert (xray.model, xray.reads, xray.settings) == ("none", ("source",), XRayBlendSettings)


@pytest.mark.parametrize("name, key, value", [
    ("sbi", "blur", [0.1, 0.05]),
    ("sbi", "erode", [0.01]),
    ("sbi", "blend_ratio", [0.0, 1.0]),
    ("sbi", "hue", 200),
    ("sbi", "rgb_shift", -0.1),
    ("sbi", "shift", [0.03]),
    ("sbi", "shift", [0.03, 0.5]),
    ("sbi", "downscale", [0.0, 0.5]),
    ("sbi", "sharpen", [0.5, 0.2]),
    ("sbi", "p_sharpen", 1.5),
    ("sbi", "scale", 0.5),
    ("xray-blend", "deform", 0.5),
    ("xray-blend", "deform_cells", 0),
    ("xray-blend", "color_correct", "mkl"),
    ("xray-blend", "blend_ratio", [0.5, 1.5]),
    ("xray-blend", "nope", 1),
])
def test_bad_settings_name_the_field(name, key, value):
    with pytest.raises(ConfigError) as e:
        method_settings(name, {key: value})
    assert e.value.path == f"method.settings.{key}"


def test_settings_checked_when_built_directly():
    with pytest.raises(ConfigError) as e:
        SbiSettings(contrast=2.0)
    assert e.value.path == "contrast"
    with pytest.raises(ConfigError) as e:
        XRayBlendSettings(blur=(0.2, 0.3))
    assert e.value.path == "blur"


def test_xray_blend_needs_sources():
    with pytest.raises(ValueError, match="sources="):
        build_method("xray-blend", {}, resolution=R, face_type=FACE_TYPE, seed=0)
    with pytest.raises(ValueError, match="sources="):
        XRayBlend(XRayBlendSettings(), resolution=R, face_type=FACE_TYPE, seed=0, sources=None)


def test_inputs_checked_and_empty_batches(portraits):
    sbi = build_method("sbi", {}, resolution=R, face_type=FACE_TYPE, seed=0)
    crops, lms = batch(aligned(*portraits["astronaut"]))
    with pytest.raises(ValueError, match="crops must be"):
        sbi(crops[:, :64], lms)
    with pytest.raises(ValueError, match="float RGB"):
        sbi((crops * 255).astype(np.uint8), lms)
    with pytest.raises(ValueError, match="landmarks must be"):
        sbi(crops, lms[:, :5])
    fakes, masks, dst_masks = sbi(crops[:0], lms[:0])
    assert fakes.shape == (0, R, R, 3) and masks.shape == dst_masks.shape == (0, R, R)
