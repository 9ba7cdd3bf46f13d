"""landmark-warp (dflray.methods.landmark_warp) on real faces: the output contract, the dst's landmarks kept,
the source's identity carried, the nearest-pose pick and its temporal stickiness, settings and build errors.

Faces are the built-in sample portraits (astronaut, Grace Hopper) and, when ../shared/media is present, the
Obama and Biden stills; landmarks come from dflray's own dlib HOG detector and 68-point landmarker, crops
from ``get_transform_mat`` / ``warp_to_crop``. No Ray.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dflray.config import ConfigError, DetectConfig, LandmarkConfig
from dflray.face import get_transform_mat, hull_mask, transform_points, warp_to_crop
from dflray.methods import SourceFaces, build_method, method_settings, method_spec
from dflray.methods.landmark_warp import LandmarkWarpSettings
from dflray.sample import load_portrait
from tests.media import shared_media

FACE_TYPE = "whole_face"


@pytest.fixture(scope="module")
def models():
    from dflray.detect import build_detector
    from dflray.detect.dlib_models import Dlib68Landmarker

    return build_detector(DetectConfig(detector="dlib-hog")), Dlib68Landmarker(LandmarkConfig())


@pytest.fixture(scope="module")
def embedder():
    from dflray.detect.dlib_models import IdentityEmbedder

    return IdentityEmbedder()


def _detect(models, rgb: np.ndarray) -> np.ndarray:
    """68 landmarks (frame pixels, float64) of the best-scoring face in ``rgb``."""
    det, lmk = models
    boxes = det.detect([rgb])[0].boxes
    assert len(boxes), "no face found"
    return lmk.landmarks(rgb, boxes[:1])[0].astype(np.float64)


_STILLS: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _still(models, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, frame landmarks) of a sample portrait or a ../shared/media still (skips when absent)."""
    if name not in _STILLS:
        if name in ("astronaut", "grace_hopper"):
            rgb = load_portrait(name)
        else:
            rgb = cv2.cvtColor(cv2.imread(shared_media(f"{name}.jpg")), cv2.COLOR_BGR2RGB)
        _STILLS[name] = rgb, _detect(models, rgb)
    return _STILLS[name]


def _aligned(models, name: str, r: int, turn: float = 0.0, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 R×R crop, crop landmarks) of a still; ``turn`` degrees and ``scale`` about the crop centre
    misalign it on purpose (a source face in another pose within the crop)."""
    rgb, lm = _still(models, name)
    mat = get_transform_mat(lm, r, FACE_TYPE)
    mat = cv2.getRotationMatrix2D(((r - 1) / 2, (r - 1) / 2), turn, scale) @ np.vstack([mat, [0, 0, 1]])
    return warp_to_crop(rgb, mat, r, interpolation=cv2.INTER_AREA), transform_points(lm, mat)


def _build(sources: list[tuple[np.ndarray, np.ndarray]], r: int, **settings):
    src = SourceFaces(np.stack([c for c, _ in sources]), np.stack([lm for _, lm in sources]).astype(np.float32))
    return build_method("landmark-warp", settings, resolution=r, face_type=FACE_TYPE, seed=0, sources=src)


def _swap(method, crop: np.ndarray, lm: np.ndarray):
    faces, fake_masks, dst_masks = method(crop[None].astype(np.float32) / 255, lm[None])
    return faces[0], fake_masks[0], dst_masks[0]


def _landmark_error(found: np.ndarray, target: np.ndarray) -> float:
    """Mean point distance in outer-inter-ocular distances (points 36 and 45), the usual 300-W measure."""
    return float(np.linalg.norm(found - target, axis=1).mean() / np.linalg.norm(target[45] - target[36]))


# ------------------------------------------------------------------------------------ contract


def test_output_contract_fake_only_inside_the_dst_hull(models):
    r = 128
    dst = [_aligned(models, "astronaut", r), _aligned(models, "astronaut", r, turn=10, scale=0.9)]
    crops = np.stack([c for c, _ in dst]).astype(np.float32) / 255
    lms = np.stack([lm for _, lm in dst])
    method = _build([_aligned(models, "grace_hopper", r)], r)
    faces, fake_masks, dst_masks = method(crops, lms)

    assert faces.shape == (2, r, r, 3) and fake_masks.shape == dst_masks.shape == (2, r, r)
    assert faces.dtype == fake_masks.dtype == dst_masks.dtype == np.float32
    for a in (faces, fake_masks, dst_masks):
        assert a.min() >= 0 and a.max() <= 1
    far = np.ones((9, 9), np.uint8)
    for i in range(2):
        hull = hull_mask((r, r), lms[i])
        np.testing.assert_array_equal(dst_masks[i], hull)
        # The fake's mask is the warped face within the dst hull, and covers nearly all of it.
        assert (fake_masks[i] <= dst_masks[i]).all()
        assert fake_masks[i].sum() > 0.95 * dst_masks[i].sum()
        # Well outside the hull the face is the dst's own pixels; well inside, Hopper's face replaced it.
        outside = cv2.dilate(hull, far) == 0
        np.testing.assert_array_equal(faces[i][outside], crops[i][outside])
        inside = cv2.erode(hull, far).astype(bool)
        assert np.abs(faces[i] - crops[i])[inside].mean() > 0.08  # measured 0.14


def test_mouth_setting_keeps_the_dst_inner_mouth(models):
    """The astronaut smiles with her teeth showing: with mouth=true her inner mouth is not replaced."""
    r = 128
    crop, lm = _aligned(models, "astronaut", r)
    src = [_aligned(models, "grace_hopper", r)]
    mouth = np.zeros((r, r), np.uint8)
    cv2.fillPoly(mouth, [np.round(lm[60:68]).astype(np.int32)], 1)
    mouth = cv2.erode(mouth, np.ones((3, 3), np.uint8)).astype(bool)
    assert mouth.sum() > 30

    _, replaced, _ = _swap(_build(src, r), crop, lm)
    face, kept, _ = _swap(_build(src, r, mouth=True), crop, lm)
    assert replaced[mouth].min() > 0.5
    assert kept[mouth].max() == 0
    assert kept.sum() > 0.9 * replaced.sum()


# ------------------------------------------------------------------------------------ geometry and identity


def test_warped_face_keeps_the_dst_landmarks(models):
    """dlib re-finds the dst's landmarks on the fake, though the source face is turned and scaled in its crop.

    Measured (256 px whole_face, mean error in inter-ocular distances): fake 0.024-0.027 for Hopper or
    Obama onto the astronaut or Biden; dlib on the untouched dst crop 0.012-0.017; the source's own
    landmarks, unwarped, 0.13-0.16 (turned 12°/-10°, scaled 0.85/1.1).
    """
    r = 256
    crop, lm = _aligned(models, "astronaut", r)
    for turn, scale in ((12, 0.85), (-10, 1.1)):
        src_crop, src_lm = _aligned(models, "grace_hopper", r, turn=turn, scale=scale)
        face, _, _ = _swap(_build([(src_crop, src_lm)], r), crop, lm)
        fake = np.round(face * 255).astype(np.uint8)
        assert _landmark_error(src_lm, lm) > 0.1
        assert _landmark_error(_detect(models, fake), lm) < 0.05


@pytest.mark.parametrize("dst,src", [
    ("astronaut", "grace_hopper"),
    pytest.param("biden", "obama_1", marks=pytest.mark.media),
])
def test_fake_carries_the_source_identity(models, embedder, dst, src):
    """dlib's identity descriptor of the fake is the source person's, not the dst's.

    Measured (256 px): Hopper onto the astronaut: 0.35 to Hopper, 0.67 to the astronaut; Obama onto Biden:
    0.48 to Obama, 0.76 to Biden (same person below 0.6).
    """
    r = 256
    crop, lm = _aligned(models, dst, r)
    src_crop, src_lm = _aligned(models, src, r)
    face, _, _ = _swap(_build([(src_crop, src_lm)], r), crop, lm)
    fake = np.round(face * 255).astype(np.uint8)
    e_fake, e_dst, e_src = (embedder.embed(img, pts[None])[0]
                            for img, pts in ((fake, lm), (crop, lm), (src_crop, src_lm)))
    to_src, to_dst = np.linalg.norm(e_fake - e_src), np.linalg.norm(e_fake - e_dst)
    assert to_src < 0.6
    assert to_src < to_dst - 0.1


# ------------------------------------------------------------------------------------ picking the source face


def _shape_variants(lm: np.ndarray) -> dict[str, np.ndarray]:
    """The same face with its mouth opened, its jaw swung sideways (a yaw), its eyes shut, or re-landmarked."""
    iod = np.linalg.norm(lm[45] - lm[36])
    mouth_open = lm.copy()
    mouth_open[np.r_[5:12, 55:60, 65:68]] += (0, 0.25 * iod)
    turned = lm.copy()
    turned[np.r_[0:17, 27:36, 48:68]] += (0.15 * iod, 0)
    shut = lm.copy()
    shut[[37, 38, 43, 44]] = lm[[41, 40, 47, 46]]
    noisy = lm + np.random.default_rng(0).normal(0, 0.005 * iod, lm.shape)
    return {"mouth_open": mouth_open, "turned": turned, "shut": shut, "noisy": noisy}


def test_picks_the_source_face_nearest_in_pose_and_expression(models):
    r = 128
    crop, lm = _aligned(models, "astronaut", r)
    variants = _shape_variants(lm)
    names = list(variants)
    method = _build([(crop, variants[n]) for n in names], r, candidates=1)
    for want, dst_lm in (("noisy", lm), ("mouth_open", variants["mouth_open"] + 0.3),
                         ("turned", 0.6 * variants["turned"] + 0.4 * lm), ("shut", variants["shut"])):
        assert names[int(method.select(dst_lm[None])[0])] == want


def test_keeps_its_recent_pick_until_another_is_clearly_nearer(models):
    """Frames between two source shapes A and B: the pick stays on A while B is nearer by less than the margin."""
    r = 128
    crop, lm = _aligned(models, "astronaut", r)
    v = _shape_variants(lm)
    a, b = v["mouth_open"], v["turned"]
    alphas = (0.3, 0.45, 0.54, 0.46, 0.53, 0.9)  # B's share: nearest is A, A, B, A, B, B
    frames = np.stack([(1 - t) * a + t * b for t in alphas])
    crops = np.repeat(crop[None].astype(np.float32) / 255, len(alphas), axis=0)

    nearest = _build([(crop, a), (crop, b)], r, candidates=1)
    assert nearest.select(frames).tolist() == [0, 0, 1, 0, 1, 1]

    sticky = _build([(crop, a), (crop, b)], r, candidates=2, switch_margin=0.25)
    picks = [sticky.select(frames[:3]), sticky.select(frames[3:])]  # state carries over calls
    assert np.concatenate(picks).tolist() == [0, 0, 0, 0, 0, 1]
    # The calls that make fakes pick the same way (the fake of frame 2 is A's face, like frame 1's).
    sticky = _build([(crop, a), (crop, b)], r, candidates=2, switch_margin=0.25)
    faces, _, _ = sticky(crops[:3], frames[:3])
    ref = _build([(crop, a)], r)(crops[2:3], frames[2:3])[0][0]
    np.testing.assert_allclose(faces[2], ref, atol=1e-6)


def test_sources_of_another_size_are_resized_to_the_crop(models):
    r = 128
    crop, lm = _aligned(models, "astronaut", r)
    direct = _swap(_build([_aligned(models, "grace_hopper", r)], r), crop, lm)[0]
    resized = _swap(_build([_aligned(models, "grace_hopper", 2 * r)], r), crop, lm)[0]
    assert np.abs(direct - resized).mean() < 0.02
    assert np.abs(direct - crop / 255).mean() > 0.02


# ------------------------------------------------------------------------------------ spec, settings, errors


def test_spec_reads_the_source_faceset_and_needs_no_model():
    spec = method_spec("landmark-warp")
    assert spec.model == "none" and spec.reads == ("source",) and spec.version == 1
    assert spec.settings is LandmarkWarpSettings


@pytest.mark.parametrize("key,value", [("candidates", 0), ("switch_margin", -0.1), ("switch_margin", float("nan")),
                                       ("color", "sepia"), ("mouth", "yes"), ("warp", "tps")])
def test_bad_setting_names_its_field(key, value):
    with pytest.raises(ConfigError) as e:
        method_settings("landmark-warp", {key: value})
    assert e.value.path == f"method.settings.{key}"


def test_settings_defaults_and_direct_check():
    assert method_settings("landmark-warp", {}) == LandmarkWarpSettings(candidates=4, switch_margin=0.1, color="rct")
    with pytest.raises(ConfigError) as e:
        LandmarkWarpSettings(color="bogus")
    assert e.value.path == "color"


def test_build_without_sources_raises():
    with pytest.raises(ValueError, match="sources"):
        build_method("landmark-warp", {}, resolution=128, face_type=FACE_TYPE, seed=0)


def test_wrong_crop_size_raises(models):
    crop, lm = _aligned(models, "astronaut", 128)
    method = _build([(crop, lm)], 128)
    with pytest.raises(ValueError, match="crops must be"):
        method(np.zeros((1, 64, 64, 3), np.float32), lm[None] / 2)
