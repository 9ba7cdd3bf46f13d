"""Merge post-processing (dflray.merge.postprocess): DFL's filters change images the expected way.

Images: a crop of skimage's astronaut (public domain) as float32 in [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data

from dflray.merge.postprocess import (
    _deg_in_crop,
    bicubic_degrade,
    blursharpen,
    color_degrade,
    denoise,
    linear_motion_blur,
    motion_blur,
    motion_blur_kernel,
    motion_kernel_size,
    reduce_colors,
)


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The astronaut's face region, RGB float32."""
    return np.ascontiguousarray(data.astronaut()[40:232, 130:322]).astype(np.float32) / 255


def hf(img: np.ndarray) -> float:
    """High-frequency energy: mean squared Laplacian (borders excluded)."""
    lap = cv2.Laplacian(np.ascontiguousarray(img, np.float32), cv2.CV_32F)
    return float((lap[4:-4, 4:-4] ** 2).mean())


# ------------------------------------------------------------------------------------ blursharpen


@pytest.mark.parametrize("mode", ["box", "gaussian"])
def test_sharpen_raises_and_negative_amount_lowers_high_frequencies(face, mode):
    e = hf(face)
    weak, strong = hf(blursharpen(face, mode, 5)), hf(blursharpen(face, mode, 30))
    assert e < weak < strong
    assert hf(blursharpen(face, mode, -10)) < 0.7 * e
    assert hf(blursharpen(face, mode, -50)) < hf(blursharpen(face, mode, -10))


@pytest.mark.parametrize("mode", ["box", "gaussian"])
def test_sharpen_keeps_flat_regions_and_mean(mode):
    flat = np.full((16, 16, 3), 0.4, np.float32)
    assert np.allclose(blursharpen(flat, mode, 60), 0.4, atol=1e-5)
    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (32, 1))
    out = blursharpen(ramp, mode, 40)
    assert np.allclose(out[4:-4, 4:-4], ramp[4:-4, 4:-4], atol=1e-4)  # linear ramps have no curvature


def test_sharpen_off_and_invalid(face):
    assert np.array_equal(blursharpen(face, "box", 0), face)
    assert np.array_equal(blursharpen(face, "none", 80), face)
    assert np.array_equal(blursharpen(face, "none", -80), face)  # dflray: "none" is no filter at all
    with pytest.raises(ValueError):
        blursharpen(face, "laplace", 10)
    with pytest.raises(ValueError):
        blursharpen((face * 255).astype(np.uint8), "box", 10)


def test_negative_amount_is_graded_median_passes(face):
    one = cv2.medianBlur(face, 5)
    assert np.allclose(blursharpen(face, "box", -10), one)
    assert np.allclose(blursharpen(face, "box", -5), 0.5 * face + 0.5 * one, atol=1e-6)
    assert np.allclose(blursharpen(face, "gaussian", -20), cv2.medianBlur(one, 5))


# ------------------------------------------------------------------------------------ denoise / degrade


def test_denoise_removes_noise_gradually(face):
    rng = np.random.default_rng(0)
    noisy = np.clip(face + rng.normal(0, 0.05, face.shape).astype(np.float32), 0, 1)
    err = lambda img: float(np.abs(img - face).mean())  # noqa: E731
    assert np.array_equal(denoise(noisy, 0), noisy)
    assert err(denoise(noisy, 50)) < 0.7 * err(noisy)
    energies = [hf(noisy)] + [hf(denoise(noisy, p)) for p in (20, 50, 100, 300)]
    assert all(a > b for a, b in zip(energies, energies[1:])), energies


def test_denoise_is_dfl_median_schedule(face):
    one = cv2.medianBlur(face, 5)
    # power 100: one full pass, then nine partial passes of 0.9 … 0.1.
    expect = one
    for w in np.arange(9, 0, -1, dtype=np.float32) / np.float32(10):
        expect = expect * (1 - w) + cv2.medianBlur(expect, 5) * w
    assert np.allclose(denoise(face, 100), expect, atol=1e-5)
    assert np.allclose(denoise(face, 5), face * 0.95 + one * 0.05, atol=1e-6)


def test_bicubic_degrade_loses_detail_with_power(face):
    assert np.array_equal(bicubic_degrade(face, 0), face)
    out = [bicubic_degrade(face, p) for p in (20, 60, 100)]
    assert all(o.shape == face.shape and o.dtype == np.float32 for o in out)
    energies = [hf(face)] + [hf(o) for o in out]
    assert all(a > b for a, b in zip(energies, energies[1:])), energies
    assert abs(float(out[1].mean()) - float(face.mean())) < 0.01  # a resampling, not a recolouring


def test_reduce_and_degrade_colors(face):
    reduced = reduce_colors(face, 16)
    assert reduced.shape == face.shape and reduced.dtype == np.float32
    assert len(np.unique(reduced.reshape(-1, 3), axis=0)) <= 16
    assert np.array_equal(color_degrade(face, 0), face)
    full = color_degrade(face, 100)
    assert np.array_equal(full, reduce_colors(face, 256))
    assert len(np.unique(full.reshape(-1, 3), axis=0)) <= 256 < len(np.unique(face.reshape(-1, 3), axis=0))
    half = color_degrade(face, 50)
    assert np.allclose(half, 0.5 * face + 0.5 * full, atol=1e-6)
    with pytest.raises(ValueError):
        reduce_colors(face[..., 0])


# ------------------------------------------------------------------------------------ motion blur


def test_motion_kernel_is_a_normalised_line():
    for size, angle in [(2, 0), (7, 0), (9, 90), (15, 30), (50, 123)]:
        k = motion_blur_kernel(size, angle)
        assert k.shape == (size, size) and k.dtype == np.float32
        assert abs(float(k.sum()) - 1) < 1e-5 and k.min() >= 0
    horizontal, vertical = motion_blur_kernel(9, 0), motion_blur_kernel(9, 90)
    assert np.count_nonzero(horizontal[4]) == 9 and np.count_nonzero(horizontal.sum(axis=1)) == 1
    assert np.allclose(vertical[:, 4].sum(), 1, atol=0.05)
    with pytest.raises(ValueError):
        motion_blur_kernel(0, 0)


def test_motion_kernel_size_follows_dfl():
    # int(power · amount / 100), then + 1 and clipped to 2..50; under 1 means no blur.
    assert motion_kernel_size(0.0, 100) == 0
    assert motion_kernel_size(1.9, 50) == 0
    assert motion_kernel_size(2.0, 50) == 2
    assert motion_kernel_size(10.0, 100) == 11
    assert motion_kernel_size(1000.0, 100) == 50


def test_motion_blur_blurs_along_the_motion(face):
    g = face.mean(-1)
    gx = lambda img: float(np.abs(cv2.Sobel(img, cv2.CV_32F, 1, 0))[8:-8, 8:-8].mean())  # noqa: E731
    gy = lambda img: float(np.abs(cv2.Sobel(img, cv2.CV_32F, 0, 1))[8:-8, 8:-8].mean())  # noqa: E731
    sideways = motion_blur(g, 20.0, 0.0, 50)  # an 11-pixel horizontal streak
    upward = motion_blur(g, 20.0, 90.0, 50)
    # Each loses more of the derivative along its motion than across it (the face has diagonal edges).
    assert gx(sideways) / gx(g) < gy(sideways) / gy(g) - 0.15
    assert gy(upward) / gy(g) < gx(upward) / gx(g) - 0.15
    assert gx(sideways) < 0.7 * gx(g) and gy(upward) < 0.7 * gy(g)
    assert np.array_equal(motion_blur(g, 0.5, 0.0, 100), g)  # under one pixel: untouched
    assert np.allclose(motion_blur(g, 20.0, 30.0, 50), linear_motion_blur(g, 11, 30.0))


def test_direction_is_re_expressed_in_crop_pixels():
    assert _deg_in_crop(30.0, np.array([[2.0, 0, 5], [0, 2.0, 1]])) == pytest.approx(30.0)
    rot = cv2.getRotationMatrix2D((0, 0), 20, 1.5)  # the crop is the frame turned 20° counter-clockwise
    assert _deg_in_crop(0.0, rot) == pytest.approx(20.0)
    assert _deg_in_crop(100.0, rot) == pytest.approx(120.0)
