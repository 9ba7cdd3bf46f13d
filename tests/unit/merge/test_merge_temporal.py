"""Temporal smoothing (dflray.merge.temporal): less jitter on a real face track, no lag on smooth motion.

The tracks are real dlib landmark sets from ``data/dfl_reference.json`` moved along smooth camera
paths, with synthetic detector noise (a per-frame shift of the whole face plus per-point noise).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dflray.merge.temporal import crop_corners, face_motion, jitter, savgol_weights, smooth_landmarks

_REF = json.loads((Path(__file__).parents[1] / "data" / "dfl_reference.json").read_text())
_CASES = {c["name"]: c for c in _REF["cases"]}
T = 90


def _landmarks(name: str = "obama_1_f0") -> np.ndarray:
    return np.asarray(_CASES[name]["landmarks"], np.float64)


def _move(lm: np.ndarray, shift: np.ndarray, angle_deg: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(T, 68, 2): ``lm`` turned and scaled about its centroid, then shifted, per frame."""
    c = lm.mean(axis=0)
    a = np.radians(angle_deg)
    rot = np.stack([np.stack([np.cos(a), -np.sin(a)], -1), np.stack([np.sin(a), np.cos(a)], -1)], -2)
    return np.einsum("tij,nj->tni", rot * scale[:, None, None], lm - c) + c + shift[:, None, :]


def _camera_path(lm: np.ndarray) -> np.ndarray:
    """A smooth hand-held move: sway, slow turn and zoom, over T frames."""
    t = np.arange(T, dtype=np.float64)
    shift = np.stack([40 * np.sin(2 * np.pi * t / T) + 0.5 * t, 15 * np.sin(2 * np.pi * t / (0.7 * T))], -1)
    return _move(lm, shift, 6 * np.sin(2 * np.pi * t / (1.3 * T)), 1 + 0.08 * np.sin(2 * np.pi * t / (1.1 * T)))


def _detector_noise(shape, rng, shared: float = 0.8, per_point: float = 1.0) -> np.ndarray:
    return rng.normal(0, shared, (shape[0], 1, 2)) + rng.normal(0, per_point, shape)


@pytest.mark.parametrize("name", ["obama_1_f0", "biden_rot20_f0", "two_people_f1"])
def test_smoothing_removes_jitter_of_a_real_face_track(name):
    rng = np.random.default_rng(0)
    truth = _camera_path(_landmarks(name))
    noisy = truth + _detector_noise(truth.shape, rng)
    smooth = smooth_landmarks(noisy, 9)
    # What the viewer sees: the pasted crop's corners and centre.
    before = jitter(crop_corners(noisy, "whole_face"))
    after = jitter(crop_corners(smooth, "whole_face"))
    true = jitter(crop_corners(truth, "whole_face"))
    assert after < 0.3 * before, (before, after)
    assert after < true + 0.2 * (before - true)
    assert jitter(smooth) < 0.3 * jitter(noisy)
    # And the smoothed landmarks are closer to the truth, not just calmer.
    rmse = lambda x: float(np.sqrt(((x - truth) ** 2).sum(-1).mean()))  # noqa: E731
    assert rmse(smooth) < 0.6 * rmse(noisy)


def test_smooth_motion_is_kept_without_lag():
    truth = _camera_path(_landmarks())
    smooth = smooth_landmarks(truth, 9)
    err = np.linalg.norm(smooth - truth, axis=-1)
    assert err.max() < 0.5, err.max()  # sub-pixel on a 40-pixel sway, ends included
    corners_err = np.linalg.norm(crop_corners(smooth, "full") - crop_corners(truth, "full"), axis=-1)
    assert corners_err.max() < 0.5


def test_linear_pan_and_constant_acceleration_are_exact():
    lm = _landmarks()
    t = np.arange(40, dtype=np.float64)
    pan = lm[None] + np.stack([3.0 * t, -1.5 * t], -1)[:, None]
    assert np.abs(smooth_landmarks(pan, 9) - pan).max() < 1e-8
    assert np.abs(smooth_landmarks(pan, 9, order=1) - pan).max() < 1e-8
    zoom = lm[None] + (0.05 * t ** 2)[:, None, None] * (lm - lm.mean(0))[None] / 100
    assert np.abs(smooth_landmarks(zoom, 11) - zoom).max() < 1e-8


def test_gaps_and_short_runs():
    rng = np.random.default_rng(1)
    truth = _camera_path(_landmarks())
    noisy = truth + _detector_noise(truth.shape, rng)
    noisy[30:33] = np.nan  # the face was lost for three frames
    noisy[60] = np.nan
    noisy[62] = np.nan  # frame 61 alone: a run too short to smooth
    smooth = smooth_landmarks(noisy, 9)
    assert np.isnan(smooth[[30, 31, 32, 60, 62]]).all()
    assert np.array_equal(smooth[61], noisy[61])
    assert np.isfinite(smooth[np.r_[0:30, 33:60, 63:T]]).all()
    seg = np.r_[33:60]
    assert jitter(smooth[seg]) < 0.35 * jitter(noisy[seg])


def test_a_cut_is_not_smoothed_across():
    lm = _landmarks()
    track = np.repeat(lm[None], 30, axis=0)
    track[15:] += [400.0, 0.0]  # a different shot: the face jumps by more than its size
    smooth = smooth_landmarks(track, 9)
    assert np.abs(smooth - track).max() < 1e-8
    blended = smooth_landmarks(track, 9, max_jump=None)
    assert np.abs(blended - track).max() > 10  # without the split the jump would be smeared


def test_small_windows_and_validation():
    track = _camera_path(_landmarks())[:5]
    assert np.array_equal(smooth_landmarks(track, 1), track)
    assert smooth_landmarks(track[:2], 9).shape == (2, 68, 2)
    assert smooth_landmarks(track, 8).shape == track.shape  # even windows become odd
    with pytest.raises(ValueError):
        smooth_landmarks(track[..., 0], 5)
    with pytest.raises(ValueError):
        smooth_landmarks(track, 0)


def test_savgol_weights():
    w = savgol_weights(7, 2)
    assert np.allclose(w.sum(axis=1), 1)
    x = np.arange(7.0)
    for p in (x, x ** 2):
        assert np.allclose(w @ p, p)  # polynomials up to the order pass unchanged
    assert np.allclose(savgol_weights(5, 0)[2], 0.2)


def test_jitter_measure():
    t = np.arange(10, dtype=np.float64)
    assert jitter(np.stack([2 * t, -t], -1)) == 0.0  # constant velocity
    assert jitter(np.stack([t ** 2, 0 * t], -1)) == pytest.approx(2.0)  # constant acceleration
    rng = np.random.default_rng(0)
    assert jitter(rng.normal(0, 1, (20000, 2))) == pytest.approx(np.sqrt(6) * np.sqrt(np.pi / 2), rel=0.03)
    assert np.isnan(jitter(np.zeros((2, 68, 2))))
    with_gap = np.stack([t, t], -1)
    with_gap[5] = np.nan
    assert jitter(with_gap) == 0.0


def test_face_motion_like_dfl():
    lm = _landmarks()
    t = np.arange(6, dtype=np.float64)
    right = lm[None] + (4 * t)[:, None, None] * np.array([1.0, 0.0])
    power, deg = face_motion(right)
    # Centre at t+1 minus centre at t-1: 8 pixels inside, 4 at the clamped ends; +x is 0°.
    assert np.allclose(power[1:-1], 8.0) and np.allclose(power[[0, -1]], 4.0)
    assert np.allclose(deg, 0.0)
    down = lm[None] + (3 * t)[:, None, None] * np.array([0.0, 1.0])
    _, deg = face_motion(down)
    assert np.allclose(deg, -90.0)  # y down in the frame is -90° (counter-clockwise, y up)
    still = np.repeat(lm[None], 3, axis=0)
    assert np.allclose(face_motion(still)[0], 0)
    right[3] = np.nan
    power, _ = face_motion(right)
    assert power[2] == 0 and power[4] == 0 and power[1] > 0
