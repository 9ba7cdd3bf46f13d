"""DeepfakeBench's face crop: 5 points from the 68, a similarity onto its template, 256 px at scale 1.3.

DeepfakeBench (SCLBD/DeepfakeBench, the benchmark most detection papers report on) crops every face the
same way in ``preprocessing/preprocess.py``; these are its definitions, re-implemented (no code of theirs):

- ``get_keypts``: five points of dlib's landmark model — indices 37 and 44 (a point of each eye's upper
  lid), 30 (nose tip), 49 and 55 (points on the upper and lower lip next to the mouth corners), 0-based,
  exactly as it indexes them (``DFB_POINTS``). Its 81-point model shares points 0..67 with dlib's 68.
- ``img_align_crop`` (inside ``extract_aligned_face_dlib``): the ArcFace 112×112 five-point template
  shifted right by 8 px (as for a 112-wide crop), scaled to the output size, then shrunk around the crop
  centre by ``scale`` = 1.3 (a margin of 0.15 of the side on each edge): ``dst = (t · size/112 +
  0.15 · size) / 1.3`` (``dfb_template``). A least-squares similarity (Umeyama, as skimage's
  ``SimilarityTransform.estimate``) maps the five points onto it (``dfb_transform``); image and mask are
  warped with bilinear interpolation and black borders (``cv2.warpAffine``'s defaults; its resize to
  the same size is a no-op).
- The mask is warped with the same matrix; ``preprocess.py`` then keeps it binary (``> 1`` → 255,
  ``dfb_binary_mask``).

Where dflray differs, and why:

- Landmarks: DeepfakeBench re-detects the face in the crop and runs its 81-point predictor on it. dflray
  moves the faceset's 68 landmarks (found on the real input video) into the crop with the same matrix
  and estimates the 13 extra points (``landmarks_81``), so no second detector and no non-redistributed
  81-point model is needed, and a fake and its real share the landmarks of the same frame.
- The 13 extra points (68..80) are forehead points, a documented estimate, not a model's output: an arc
  over the face (the upper half of an ellipse) whose ends lie above jaw points 0 and 16 and whose top is
  one "facial third" above the eyebrows (the brow-to-nose-base height, the rule of thirds of the face),
  in the face's own frame (so it follows roll). The 13 points are evenly spaced in angle from the jaw-0
  side to the jaw-16 side and stored in the 81-point model's index order: DeepfakeBench's SBI and I2G
  loaders (``reorder_landmark``) read them left to right through the permutation
  ``[77, 75, 76, 68, 69, 70, 71, 80, 72, 73, 79, 74, 78]``, and that permutation yields this arc in order.
- Points that fall outside the crop are clamped to its edge (``clip_to_crop``): albumentations, which
  DeepfakeBench's augmentations use, drops key points outside the image, which would change their count.

Example:
    >>> crop, mask_crop, lm81 = align_face(frame, landmarks68, 256, mask=mask)  # doctest: +SKIP
"""

from __future__ import annotations

import cv2
import numpy as np

from dflray.face.align import _umeyama, transform_points

__all__ = ["DFB_POINTS", "DFB_SCALE", "FOREHEAD_ORDER", "align_face", "clip_to_crop", "dfb_binary_mask", "dfb_points5",
           "dfb_template", "dfb_transform", "landmarks_81", "warp_crop", "warp_mask"]

# preprocess.py's get_keypts: the 0-based indices of dlib's landmarks it aligns on (eyes, nose tip, mouth).
DFB_POINTS = (37, 44, 30, 49, 55)
# img_align_crop's default scale: the face template is shrunk by this around the crop centre.
DFB_SCALE = 1.3
# ArcFace's 112×112 five-point template (left eye, right eye, nose, left and right mouth corner).
_ARCFACE_112 = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                         [33.5493, 92.3655], [62.7299, 92.2041]], dtype=np.float64)
# The 81-point model's forehead indices in order along the hairline (DeepfakeBench's reorder_landmark).
FOREHEAD_ORDER = (77, 75, 76, 68, 69, 70, 71, 80, 72, 73, 79, 74, 78)


def dfb_points5(landmarks: np.ndarray) -> np.ndarray:
    """The five points DeepfakeBench aligns on, from 68 (or 81) dlib landmarks.

    Args:
        landmarks: (68, 2) or (81, 2) points, x then y.

    Returns:
        (5, 2) float64: points 37, 44, 30, 49, 55.

    Raises:
        ValueError: when ``landmarks`` is not (68, 2) or (81, 2).

    Example:
        >>> dfb_points5(np.arange(136, dtype=float).reshape(68, 2))[2]
        array([60., 61.])
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape not in ((68, 2), (81, 2)):
        raise ValueError(f"landmarks must have shape (68, 2) or (81, 2), got {lm.shape}")
    return lm[list(DFB_POINTS)]


def dfb_template(size: int = 256, scale: float = DFB_SCALE) -> np.ndarray:
    """Where DeepfakeBench puts the five points in a ``size``×``size`` crop.

    Args:
        size: crop side in pixels (DeepfakeBench: 256).
        scale: margin factor (DeepfakeBench: 1.3); 1 puts the points where ArcFace's template does.

    Returns:
        (5, 2) float64 target points (x, y).

    Example:
        >>> dfb_template(112, 1.0)[0]
        array([38.2946, 51.6963])
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    dst = _ARCFACE_112 + np.array([8.0, 0.0])
    dst = dst * (size / 112.0)
    return (dst + size * (scale - 1) / 2) / scale


def dfb_transform(landmarks: np.ndarray, size: int = 256, scale: float = DFB_SCALE) -> np.ndarray:
    """DeepfakeBench's frame → crop similarity of a face.

    Args:
        landmarks: (68, 2) dlib landmarks in frame pixels.
        size: crop side.
        scale: margin factor.

    Returns:
        (2, 3) float64 matrix.

    Raises:
        ValueError: for a bad shape or when the five points coincide.
    """
    return _umeyama(dfb_points5(landmarks), dfb_template(size, scale))[:2]


def warp_crop(image: np.ndarray, mat: np.ndarray, size: int = 256) -> np.ndarray:
    """The ``size``×``size`` crop of a frame (or a mask) through ``mat``, as DeepfakeBench warps: bilinear,
    black outside the frame."""
    mat = np.asarray(mat, dtype=np.float64)
    if mat.shape != (2, 3):
        raise ValueError(f"mat must have shape (2, 3), got {mat.shape}")
    return cv2.warpAffine(image, mat, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def warp_mask(mask: np.ndarray, mat: np.ndarray, size: int = 256) -> np.ndarray:
    """A grey (H, W) uint8 mask warped into the crop (soft values kept)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got {mask.shape}")
    return warp_crop(mask.astype(np.uint8, copy=False), mat, size)


def dfb_binary_mask(mask: np.ndarray) -> np.ndarray:
    """DeepfakeBench's stored mask: 255 where the warped mask is above 1, else 0 (uint8)."""
    return np.where(np.asarray(mask) > 1, 255, 0).astype(np.uint8)


def landmarks_81(landmarks: np.ndarray) -> np.ndarray:
    """68 dlib landmarks plus 13 estimated forehead points, in the 81-point model's layout.

    The forehead points lie on the upper half of an ellipse in the face's own frame: its centre is the
    midpoint of jaw points 0 and 16, its horizontal half-axis half their distance, its vertical half-axis
    the height (above that centre, away from the chin) of the highest eyebrow point plus the
    eyebrow-to-nose-base height (point 33). They are evenly spaced in angle, from just above jaw point 0
    (angle 13π/14) to just above jaw point 16 (π/14), and point ``k`` of that sequence is stored at index
    ``FOREHEAD_ORDER[k]``.

    Args:
        landmarks: (68, 2) points (any pixel frame: frame or crop).

    Returns:
        (81, 2) float64.

    Example:
        >>> lm = landmarks_81(np.random.default_rng(0).random((68, 2)) * 100)
        >>> lm.shape
        (81, 2)
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2):
        raise ValueError(f"landmarks must have shape (68, 2), got {lm.shape}")
    left, right = lm[0], lm[16]
    centre = (left + right) / 2
    across = right - left
    half_width = float(np.linalg.norm(across)) / 2
    if half_width <= 0:
        raise ValueError("landmarks are degenerate: jaw points 0 and 16 coincide")
    u = across / (2 * half_width)
    up = np.array([u[1], -u[0]])  # perpendicular to u; flipped below so that the chin lies on its negative side
    if (lm[8] - centre) @ up > 0:
        up = -up
    brow = float(((lm[17:27] - centre) @ up).max())
    nose_base = float((lm[33] - centre) @ up)
    height = max(brow + (brow - nose_base), 1e-6)
    angles = np.pi * np.arange(13, 0, -1) / 14
    arc = centre + np.outer(half_width * np.cos(angles), u) + np.outer(height * np.sin(angles), up)
    out = np.empty((81, 2), dtype=np.float64)
    out[:68] = lm
    out[list(FOREHEAD_ORDER)] = arc
    return out


def clip_to_crop(points: np.ndarray, size: int) -> np.ndarray:
    """Points clamped into the crop, ``[0, size - 1]`` on both axes."""
    return np.clip(np.asarray(points, dtype=np.float64), 0.0, float(size - 1))


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 256, mask: np.ndarray | None = None,
               scale: float = DFB_SCALE) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """One face as DeepfakeBench crops it: the crop, its mask and its 81 landmarks.

    Args:
        image: (H, W, 3) uint8 frame.
        landmarks: (68, 2) dlib landmarks of the face in frame pixels.
        size: crop side.
        mask: (H, W) uint8 manipulation mask of the frame, or None.
        scale: margin factor.

    Returns:
        (crop (size, size, 3) uint8, warped mask (size, size) uint8 with soft values or None,
        (81, 2) float32 landmarks in crop pixels, clamped into the crop).

    Example:
        >>> crop, m, lm = align_face(frame, landmarks68, 256, mask)  # doctest: +SKIP
    """
    mat = dfb_transform(landmarks, size, scale)
    crop = warp_crop(image, mat, size)
    warped = warp_mask(mask, mat, size) if mask is not None else None
    lm = clip_to_crop(landmarks_81(transform_points(landmarks, mat)), size).astype(np.float32)
    return crop, warped, lm
