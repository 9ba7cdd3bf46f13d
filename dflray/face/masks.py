"""Landmark hull masks: DFL's default face mask when no XSeg model is used.

DeepFaceLab's ``get_image_hull_mask`` is the union of eight convex hulls over the 68
landmarks (both jaw halves, both cheeks, the nose ridge, both eye regions and the nose).
Before that the eyebrows are pushed away from the eyes by half their distance, so the mask
reaches a little way up the forehead instead of stopping at the brows. The same function
works in frame pixels and in crop pixels; only the landmarks and the shape change.

Example:
    >>> mask = hull_mask(frame.shape[:2], landmarks)  # doctest: +SKIP
    >>> crop_mask = hull_mask((256, 256), transform_points(landmarks, mat))  # doctest: +SKIP
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["hull_mask"]

# Landmark index groups whose convex hulls DFL unions (iBUG 68-point numbering, with
# "right" meaning the subject's right, i.e. the left of the image). Point 8 is the chin.
_HULL_GROUPS = (
    np.r_[0:9, 17],           # right jaw up to the outer end of the right eyebrow
    np.r_[8:17, 26],          # left jaw up to the outer end of the left eyebrow
    np.r_[17:20, 8],          # right cheek
    np.r_[24:27, 8],          # left cheek
    np.r_[19:25, 8],          # nose ridge: inner eyebrows down to the chin
    np.r_[17:22, 27, 31:36, 8],  # right eye region
    np.r_[22:27, 27, 31:36, 8],  # left eye region
    np.r_[27:31, 31:36],      # nose
)


def _expand_eyebrows(landmarks: np.ndarray, amount: float) -> np.ndarray:
    """Integer landmarks with each eyebrow moved away from the eye below it.

    DFL works on integer pixels here: positions are truncated toward zero first, the
    helper points use floor division, and the moved brows are truncated again. Keeping
    the same rounding keeps the masks pixel-identical to DFL's.
    """
    lm = landmarks.astype(np.int64)  # astype truncates toward zero, like DFL's int cast
    # Points a quarter of the way from each outer eye corner toward the jaw's top end;
    # they stand in for the outer brow's "eye below" since the eye ends sooner than the brow.
    mid_r = (lm[36] + lm[0]) // 2
    mid_l = (lm[16] + lm[45]) // 2
    quarter_r = (lm[36] + mid_r) // 2
    quarter_l = (lm[45] + mid_l) // 2
    below_r = np.stack([quarter_r, lm[36], lm[37], lm[38], lm[39]])
    below_l = np.stack([lm[42], lm[43], lm[44], lm[45], quarter_l])
    brow_r, brow_l = lm[17:22], lm[22:27]
    lm[17:22] = (brow_r + amount * 0.5 * (brow_r - below_r)).astype(np.int64)
    lm[22:27] = (brow_l + amount * 0.5 * (brow_l - below_l)).astype(np.int64)
    return lm


def hull_mask(shape: tuple[int, int], landmarks: np.ndarray, *,
              eyebrows_expand: float = 1.0) -> np.ndarray:
    """Rasterise DFL's landmark hull mask.

    Args:
        shape: (H, W) of the image the landmarks live in (extra trailing dims are ignored).
        landmarks: (68, 2) landmark positions (x, y) in that image's pixels.
        eyebrows_expand: How far the brows are pushed up, in halves of the brow-to-eye
            distance; DFL's default is 1.0.

    Returns:
        H×W uint8 array, 1 inside the face and 0 outside.

    Raises:
        ValueError: If ``shape`` is not a positive (H, W) or ``landmarks`` is not a finite
            (68, 2) array.

    Example:
        >>> from dflray.face.align import get_transform_mat, transform_points
        >>> crop_lm = transform_points(lm, get_transform_mat(lm, 256, "full"))  # doctest: +SKIP
        >>> hull_mask((256, 256), crop_lm).max()  # doctest: +SKIP
        1
    """
    if len(shape) < 2 or int(shape[0]) <= 0 or int(shape[1]) <= 0:
        raise ValueError(f"shape must be a positive (H, W), got {tuple(shape)}")
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (68, 2):
        raise ValueError(f"landmarks must have shape (68, 2), got {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise ValueError("landmarks must be finite")
    h, w = int(shape[0]), int(shape[1])
    mask = np.zeros((h, w), dtype=np.uint8)
    # Guard cv2's int32 rasteriser against wild landmarks; only points more than 16 image
    # sides away are clamped, which real faces (even half outside a crop) never reach.
    limit = 16 * max(h, w)
    lm = np.clip(_expand_eyebrows(landmarks, eyebrows_expand), -limit, limit).astype(np.int32)
    for group in _HULL_GROUPS:
        cv2.fillConvexPoly(mask, cv2.convexHull(lm[group]), 1)
    return mask
