"""blur_score ranks sharp images above blurred ones."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dflray.face import blur_score


def _textured(seed=0, size=128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_blurred_scores_lower():
    img = _textured()
    scores = [blur_score(cv2.GaussianBlur(img, (0, 0), s)) if s else blur_score(img)
              for s in (0, 1, 2, 4)]
    assert all(a > b for a, b in zip(scores, scores[1:]))


def test_flat_image_scores_zero():
    assert blur_score(np.full((32, 32), 77, np.uint8)) == 0.0


def test_mask_restricts_the_region():
    img = _textured()
    img[:, 64:] = cv2.GaussianBlur(img, (0, 0), 5)[:, 64:]
    left = np.zeros(img.shape[:2], np.uint8)
    left[8:-8, 8:56] = 1
    right = np.zeros_like(left)
    right[8:-8, 72:-8] = 1
    assert blur_score(img, left) > 10 * blur_score(img, right)
    assert blur_score(img, np.zeros_like(left)) == 0.0
    assert blur_score(img, left[..., None]) == blur_score(img, left)


def test_float_and_uint8_agree():
    img = _textured()
    assert blur_score(img.astype(np.float32) / 255.0) == pytest.approx(blur_score(img), rel=1e-5)
    assert isinstance(blur_score(img), float)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="mask"):
        blur_score(_textured(), np.ones((3, 3)))
    with pytest.raises(ValueError, match="image"):
        blur_score(np.zeros((4, 4, 2)))
