"""The pure quality metrics (dflray.quality.metrics) measure what they claim, and gates flag fakes that fail them."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from dflray.config import ConfigError, QualityConfig, QualityGate, from_dict
from dflray.face.pose import _LANDMARKS_68_3D
from dflray.quality.gates import apply_gates, format_success, success_stats
from dflray.quality.identity import identity_distance, swap_success
from dflray.quality.metrics import (
    BLUR_LADDER,
    band,
    blur_like,
    detail_ratio,
    flicker,
    head_pose,
    luma,
    pose_error,
    seam,
    seam_ratio,
    similarity_nme,
)
from dflray.sample import load_portrait
from tests.media import ASTRONAUT_LM


def _rotate(lm: np.ndarray, deg: float, scale: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
    t = math.radians(deg)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]) * scale
    c = lm.mean(0)
    return (lm - c) @ rot.T + c + np.asarray(shift)


def _projected(yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """The 3D face model seen by a 1000-px camera: landmarks of a head with a known pose."""
    cam = np.array([[1000.0, 0, 400], [0, 1000.0, 300], [0, 0, 1]])
    pts, _ = cv2.projectPoints(_LANDMARKS_68_3D.astype(np.float64), np.deg2rad([pitch, yaw, roll]),
                               np.array([0, 0, 900.0]), cam, np.zeros(4))
    return pts.reshape(68, 2)


def test_identity_distance_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="descriptors"):
        identity_distance(np.zeros(128), np.zeros(64))


# ------------------------------------------------------------------------------------ pose


def test_pose_error_zero_for_identical_landmarks():
    assert pose_error(ASTRONAUT_LM, ASTRONAUT_LM.copy()) == 0.0


@pytest.mark.parametrize("deg", [-25.0, 10.0, 30.0])
def test_in_plane_rotation_shows_as_roll(deg):
    turned = _rotate(ASTRONAUT_LM, deg, scale=1.3, shift=(20, -15))
    (y0, p0, r0), (y1, p1, r1) = head_pose(ASTRONAUT_LM), head_pose(turned)
    # Rotating the image y-down by +deg turns the head clockwise on screen: roll grows by deg.
    assert r1 - r0 == pytest.approx(deg, abs=0.5)
    assert (y1, p1) == pytest.approx((y0, p0), abs=0.5)
    assert pose_error(turned, ASTRONAUT_LM) == pytest.approx(abs(deg) / 3, abs=0.5)


def test_pose_error_grows_with_yaw():
    errors = [pose_error(_projected(yaw=y), _projected()) for y in (0, 10, 20, 30)]
    assert errors[0] == 0.0
    assert all(a < b for a, b in zip(errors, errors[1:]))
    assert errors[-1] > 5.0


# ------------------------------------------------------------------------------------ expression


@pytest.mark.parametrize("deg,scale,shift", [(0, 1, (0, 0)), (17, 0.6, (30, -40)), (-40, 2.5, (-100, 5))])
def test_expression_error_zero_under_similarity(deg, scale, shift):
    assert similarity_nme(_rotate(ASTRONAUT_LM, deg, scale, shift), ASTRONAUT_LM) < 1e-9


def test_expression_error_grows_with_an_opening_mouth():
    iod = np.linalg.norm(ASTRONAUT_LM[36] - ASTRONAUT_LM[45])
    errors = []
    for amount in (0.0, 0.1, 0.3):
        lm = ASTRONAUT_LM.copy()
        lower = [55, 56, 57, 58, 59, 64, 65, 66, 67]  # lower lip, outer and inner
        lm[lower, 1] += amount * iod
        errors.append(similarity_nme(_rotate(lm, 12, 1.4), ASTRONAUT_LM))
    assert errors[0] < 1e-9
    assert 0 < errors[1] < errors[2]
    assert errors[2] > 0.02


def test_similarity_nme_rejects_bad_landmarks():
    with pytest.raises(ValueError, match="lm_a"):
        similarity_nme(np.zeros((5, 2)), ASTRONAUT_LM)


# ------------------------------------------------------------------------------------ flicker


def _clip(n=6, h=48, w=64, seed=0):
    """A real clip with motion (a smooth texture panning 3 px a frame) and a fixed central mask."""
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.integers(0, 200, (h, w + n * 3, 3), dtype=np.uint8), (0, 0), 2)
    frames = [np.ascontiguousarray(tex[:, 3 * i:3 * i + w]) for i in range(n)]
    mask = np.zeros((h, w), np.uint8)
    mask[12:36, 16:48] = 255
    return frames, [mask] * n


def test_flicker_zero_for_identical_videos():
    frames, masks = _clip()
    assert flicker(frames, frames, masks) == 0.0


def test_flicker_positive_for_per_frame_noise_inside_the_mask():
    frames, masks = _clip()
    rng = np.random.default_rng(1)
    inside = masks[0] > 0
    fake = []
    for f in frames:
        g = f.astype(np.int16)
        g[inside] += rng.integers(-20, 21, (inside.sum(), 1), dtype=np.int16)
        fake.append(np.clip(g, 0, 255).astype(np.uint8))
    assert flicker(fake, frames, masks) > 5.0
    # The same noise frozen (identical in every frame) is a stable fake.
    still = [np.clip(f.astype(np.int16) + (fake[0].astype(np.int16) - frames[0]), 0, 255).astype(np.uint8)
             for f in frames]
    assert abs(flicker(still, frames, masks)) < 1.0


def test_flicker_ignores_changes_outside_the_mask():
    frames, masks = _clip()
    rng = np.random.default_rng(2)
    outside = masks[0] == 0
    fake = []
    for f in frames:
        g = f.copy()
        g[outside] = rng.integers(0, 256, (outside.sum(), 3), dtype=np.uint8)
        fake.append(g)
    assert flicker(fake, frames, masks) == 0.0


def test_flicker_needs_two_frames_and_equal_lengths():
    frames, masks = _clip(n=2)
    assert flicker(frames[:1], frames[:1], masks[:1]) is None
    with pytest.raises(ValueError, match="length"):
        flicker(frames, frames[:1], masks)


# ------------------------------------------------------------------------------------ seam


def _face_patch():
    real = cv2.resize(load_portrait("astronaut")[60:200, 150:290], (128, 128))
    mask = np.zeros((128, 128), np.uint8)
    cv2.circle(mask, (64, 64), 36, 255, -1)
    return real, mask


def test_band_follows_the_mask_edge():
    m = np.zeros((40, 40), bool)
    m[10:30, 10:30] = True
    b = band(m, 5)
    assert b[10, 20] and b[9, 20] and b[20, 10] and not b[20, 20] and not b[0, 0]
    assert band(m, 9).sum() > b.sum()
    assert not band(np.zeros((8, 8), np.uint8), 5).any()


def test_seam_one_for_identical_frames():
    real, mask = _face_patch()
    assert seam_ratio(real, real, mask) == pytest.approx(1.0)
    assert seam([real] * 3, [real] * 3, [mask] * 3) == pytest.approx(1.0)


def test_seam_above_one_for_a_pasted_patch_with_a_colour_offset():
    real, mask = _face_patch()
    fake = real.astype(np.int16)
    fake[mask > 0] += 40
    fake = np.clip(fake, 0, 255).astype(np.uint8)
    assert seam_ratio(fake, real, mask) > 1.5
    # The same offset feathered across the band leaves a far smaller edge.
    alpha = cv2.GaussianBlur((mask > 0).astype(np.float32), (0, 0), 6)[..., None]
    soft = np.clip(real + 40.0 * alpha, 0, 255).astype(np.uint8)
    assert seam_ratio(soft, real, mask) < seam_ratio(fake, real, mask)


def test_seam_undefined_without_a_mask_edge():
    real, _ = _face_patch()
    assert seam_ratio(real, real, np.zeros(real.shape[:2], np.uint8)) is None
    with pytest.raises(ValueError, match="sizes differ"):
        seam_ratio(real, real[:64], np.zeros(real.shape[:2], np.uint8))


# ------------------------------------------------------------------------------------ detail, blur guard


@pytest.fixture(scope="module")
def portrait_face():
    """The astronaut portrait (a real face) and its landmark-hull mask."""
    from dflray.face import hull_mask

    rgb = load_portrait("astronaut")
    return rgb, (hull_mask(rgb.shape, ASTRONAUT_LM) * 255).astype(np.uint8)


def test_detail_ratio_falls_with_blur_and_ignores_outside(portrait_face):
    rgb, mask = portrait_face
    inside = mask[..., None] > 0
    ratios = [detail_ratio(np.where(inside, cv2.GaussianBlur(rgb, (0, 0), s), rgb), rgb, mask) for s in (1, 3, 6, 12)]
    assert detail_ratio(rgb, rgb, mask) == pytest.approx(1.0)
    assert all(a > b for a, b in zip(ratios, ratios[1:])), ratios
    assert ratios[-1] < 0.1
    # Changes outside the mask (and on its edge, eroded away) do not count.
    outside = np.where(inside, rgb, cv2.GaussianBlur(rgb, (0, 0), 8))
    assert detail_ratio(outside, rgb, mask) == pytest.approx(1.0, abs=0.02)
    assert detail_ratio(rgb, rgb, np.zeros_like(mask)) is None
    with pytest.raises(ValueError, match="sizes differ"):
        detail_ratio(rgb[:100], rgb, mask)


@pytest.mark.parametrize("target", [0.6, 0.3, 0.1, 0.03])
def test_blur_like_reaches_the_fakes_detail_and_no_softer_than_needed(portrait_face, target):
    rgb, mask = portrait_face
    soft, share = blur_like(rgb, mask, target)
    got = detail_ratio(soft, rgb, mask)
    assert got <= target and share in BLUR_LADDER
    i = BLUR_LADDER.index(share)
    if i:  # the previous, smaller sigma was not soft enough: the copy is the least blur that matches
        prev, _ = blur_like(rgb, mask, target, ladder=BLUR_LADDER[i - 1:i])
        assert detail_ratio(prev, rgb, mask) > target
    assert (soft[mask == 0] == rgb[mask == 0]).mean() > 0.9  # the face is blurred, not the frame
    same, share = blur_like(rgb, mask, 1.2)
    assert share == 0.0 and (same == rgb).all()


def test_swap_success_blur_guard():
    src, real = np.zeros(128), np.full(128, 0.1)
    blurred_real = np.full(128, 0.03)  # the real face blurred: 0.34 from the source, nearer than its sharp self
    swap = src + 0.01
    assert swap_success([blurred_real], [real], src) == 1.0  # fooled without the guard
    assert swap_success([blurred_real], [real], src, soft_embeddings=[blurred_real]) == 0.0
    # A real swap is still one: nearer the source than the blurred destination too; frames with no soft
    # reference (as detailed as the real face) are judged against the real face only.
    assert swap_success([swap, swap], [real, real], src, soft_embeddings=[blurred_real, None]) == 1.0
    with pytest.raises(ValueError, match="soft_embeddings has 1 frames"):
        swap_success([swap, swap], [real, real], src, soft_embeddings=[None])


def test_luma_is_bt601():
    px = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    assert luma(px)[0].tolist() == pytest.approx([76.245, 149.685, 29.07], abs=1e-3)


# ------------------------------------------------------------------------------------ gates


def test_gates_pass_and_fail_with_reasons():
    metrics = {"seam": 2.31, "id_distance_source": 0.45, "id_distance_target": 0.5, "pose_error": None,
               "expression_error": float("nan"), "flicker": 0.2}
    assert apply_gates(metrics, ()) == (True, [])
    assert apply_gates(metrics, (QualityGate("seam", max=3.0), QualityGate("flicker", min=-1, max=1))) == (True, [])
    ok, reasons = apply_gates(metrics, (
        QualityGate("seam", max=1.5),
        QualityGate("id_distance_source", max=0.6),
        QualityGate("id_distance_target", min=0.6),
        QualityGate("pose_error", max=10),
        QualityGate("expression_error", max=0.2),
    ))
    assert not ok
    assert reasons == ["seam 2.31 > max 1.5", "id_distance_target 0.5 < min 0.6", "pose_error not measured",
                       "expression_error not measured"]


def test_gate_with_both_bounds_and_missing_metric():
    assert apply_gates({"flicker": 3.0}, (QualityGate("flicker", min=0.0, max=2.0),)) == (
        False, ["flicker 3 > max 2"])
    assert apply_gates({}, (QualityGate("seam", max=1.5),)) == (False, ["seam not measured"])


def test_a_gate_for_some_methods_skips_the_fakes_of_others():
    """An identity gate on the swaps only: an sbi fake (the target's own face by design) is not held to it."""
    gates = (QualityGate("swap_success", min=0.5, methods=("liae", "landmark-warp")), QualityGate("seam", max=3.0))
    sbi = {"swap_success": 0.0, "seam": 1.2}
    assert apply_gates(sbi, gates, method="sbi") == (True, [])
    assert apply_gates(sbi, gates, method="liae") == (False, ["swap_success 0 < min 0.5"])
    assert apply_gates({**sbi, "seam": 4.0}, gates, method="sbi") == (False, ["seam 4 > max 3"])
    assert apply_gates(sbi, gates) == (True, [])  # a fake of no known method: only the gates for every fake
    assert from_dict(QualityConfig, {"gates": [{"metric": "seam", "max": 1, "methods": ["sbi"]}]}).gates[0].methods \
        == ("sbi",)


def test_weak_mask_still_defines_the_manipulated_region():
    """A tiny model's learned mask may never reach half grey; the region is then cut at half its peak."""
    m = np.zeros((64, 64), np.uint8)
    m[16:48, 16:48] = 100  # peak 100 < MASK_THRESHOLD
    m[20:44, 20:44] = 118
    assert band(m, 3).sum() > 0
    real = np.full((64, 64, 3), 120, np.uint8)
    fake = real.copy()
    fake[16:48, 16:48] += 40
    assert seam_ratio(fake, real, m) > 1.5
    assert band(np.zeros((64, 64), np.uint8), 3).sum() == 0


# ------------------------------------------------------------------------------------ swap success


def test_gate_on_swap_success_with_min():
    cfg = from_dict(QualityConfig, {"gates": [{"metric": "swap_success", "min": 0.8}], "action": "drop"})
    gate = cfg.gates[0]
    assert (gate.metric, gate.min, gate.max) == ("swap_success", 0.8, None)
    assert apply_gates({"swap_success": 0.875}, cfg.gates) == (True, [])
    assert apply_gates({"swap_success": 0.8}, cfg.gates) == (True, [])
    assert apply_gates({"swap_success": 0.75}, cfg.gates) == (False, ["swap_success 0.75 < min 0.8"])
    assert apply_gates({"swap_success": None}, cfg.gates) == (False, ["swap_success not measured"])
    with pytest.raises(ConfigError, match="metric"):
        from_dict(QualityConfig, {"gates": [{"metric": "swap_sucess", "min": 0.8}]})


def test_success_stats_distribution():
    s = success_stats([0.0, 0.25, 0.5, 0.75, 1.0, float("nan"), None])
    assert (s["n"], s["unmeasured"], s["ge_50"], s["ge_80"]) == (5, 2, 3, 1)
    assert (s["min"], s["q1"], s["median"], s["q3"], s["max"]) == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert s["mean"] == pytest.approx(0.5)
    assert "mean 0.5 over 5 fakes" in format_success(s) and "≥0.8: 1 (20%)" in format_success(s)
    empty = success_stats([])
    assert empty["n"] == 0 and empty["mean"] is None and "not measured" in format_success(empty)
