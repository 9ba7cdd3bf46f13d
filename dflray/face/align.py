"""Face alignment: the frame → crop similarity transform for each DFL face type.

DeepFaceLab aligns a face in two steps. First a least-squares similarity (Umeyama 1991)
maps 33 stable landmarks (eyebrows, nose, eyes and the two mouth corners: indices 17–48
and 54) onto a mean-face template that lives in a unit square. Then the crop is a square
around that unit square, grown by a per-face-type padding and, for ``whole_face`` and
``head``, shifted up (more forehead) and for ``head`` also sideways by the estimated yaw.

DFL builds the crop from diagonal vectors and three corner points; because the first step
is a similarity, the same crop is an axis-aligned square in unit-square coordinates, which
is how it is computed here: ``crop_from_frame = crop_from_unit @ unit_from_frame``.

Example:
    >>> mat = get_transform_mat(landmarks, 256, "whole_face")  # doctest: +SKIP
    >>> crop = warp_to_crop(frame, mat, 256)  # doctest: +SKIP
    >>> crop_landmarks = transform_points(landmarks, mat)  # doctest: +SKIP
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["FACE_TYPES", "FACE_TYPE_ORDER", "get_transform_mat", "transform_points", "warp_to_crop", "warp_to_frame"]

# DFL's face types, narrowest crop first (``FACE_TYPE_ORDER``: name -> rank, so a wider type has a higher rank).
FACE_TYPES = ("half", "mid_full", "full", "whole_face", "head")
FACE_TYPE_ORDER = {name: i for i, name in enumerate(FACE_TYPES)}

# DFL's mean face for landmarks 17..48 and 54, in the unit square (x right, y down).
_MEAN_FACE_2D = np.array([
    (0.000213256, 0.106454), (0.0752622, 0.038915), (0.18113, 0.0187482),
    (0.29077, 0.0344891), (0.393397, 0.0773906), (0.586856, 0.0773906),
    (0.689483, 0.0344891), (0.799124, 0.0187482), (0.904991, 0.038915),
    (0.98004, 0.106454), (0.490127, 0.203352), (0.490127, 0.307009),
    (0.490127, 0.409805), (0.490127, 0.515625), (0.36688, 0.587326),
    (0.426036, 0.609345), (0.490127, 0.628106), (0.554217, 0.609345),
    (0.613373, 0.587326), (0.121737, 0.216423), (0.187122, 0.178758),
    (0.265825, 0.179852), (0.334606, 0.231733), (0.260918, 0.245099),
    (0.182743, 0.244077), (0.645647, 0.231733), (0.714428, 0.179852),
    (0.793132, 0.178758), (0.858516, 0.216423), (0.79751, 0.244077),
    (0.719335, 0.245099), (0.254149, 0.780233), (0.726104, 0.780233),
], dtype=np.float64)
# The jaw and lips move with expression, so they are left out of the fit.
_ALIGN_INDICES = np.r_[17:49, 54]

# Extra margin around the unit square, per side, as a fraction of the square's diagonal.
_PADDING = {"half": 0.0, "mid_full": 0.0675, "full": 0.2109375, "whole_face": 0.40, "head": 0.70}
# Upward shift of the crop centre in unit-square heights; whole_face and head keep the forehead.
_UP_SHIFT = {"whole_face": 0.07, "head": 0.50}


def _umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst.

    Umeyama, "Least-squares estimation of transformation parameters between two point
    patterns", PAMI 1991. Returns a (3, 3) homogeneous matrix; reflections are excluded.
    """
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c ** 2).sum() / len(src)
    if src_var <= 0.0:
        raise ValueError("landmarks are degenerate: all alignment points coincide")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # best orthogonal fit is a reflection
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_var
    out = np.eye(3)
    out[:2, :2] = scale * rot
    out[:2, 2] = dst_mean - scale * rot @ src_mean
    return out


def _averaged_yaw(unit_landmarks: np.ndarray) -> float:
    """DFL's yaw proxy: right minus left jaw-to-nose-ridge width, in unit-square widths.

    It compares jaw points 0-2 and 14-16 with nose ridge points 27-29; DFL prefers it to
    solvePnP for placing ``head`` crops.
    """
    x = unit_landmarks[:, 0]
    left = (x[27:30] - x[0:3]).mean()
    right = (x[16:13:-1] - x[27:30]).mean()
    return float(right - left)


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (68, 2):
        raise ValueError(f"landmarks must have shape (68, 2), got {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise ValueError("landmarks must be finite")
    return landmarks


def get_transform_mat(landmarks: np.ndarray, output_size: int, face_type: str) -> np.ndarray:
    """Affine matrix taking frame pixels to the pixels of an aligned square crop.

    Matches DeepFaceLab's ``LandmarksProcessor.get_transform_mat`` (scale 1.0).

    Args:
        landmarks: (68, 2) dlib/iBUG landmarks in frame pixels (x, y).
        output_size: Side of the square crop in pixels.
        face_type: One of ``FACE_TYPES``: "half", "mid_full", "full", "whole_face", "head".

    Returns:
        (2, 3) float64 matrix ``M`` with ``crop_xy = M @ [x, y, 1]``; a similarity.

    Raises:
        ValueError: If ``face_type`` is unknown, ``landmarks`` is not a finite (68, 2)
            array, or ``output_size`` is not positive.

    Example:
        >>> mat = get_transform_mat(landmarks, 256, "full")  # doctest: +SKIP
        >>> mat.shape  # doctest: +SKIP
        (2, 3)
    """
    if face_type not in _PADDING:
        raise ValueError(f"face_type must be one of {', '.join(FACE_TYPES)}, got {face_type!r}")
    if output_size <= 0:
        raise ValueError(f"output_size must be positive, got {output_size}")
    landmarks = _check_landmarks(landmarks)
    unit_from_frame = _umeyama(landmarks[_ALIGN_INDICES], _MEAN_FACE_2D)

    # DFL pads along the diagonal: half-diagonal = diag * (padding * sqrt2 + 0.5), which
    # is a half-side of (padding * sqrt2 + 0.5) unit-square sides.
    half_side = _PADDING[face_type] * math.sqrt(2.0) + 0.5
    cx, cy = 0.5, 0.5 - _UP_SHIFT.get(face_type, 0.0)
    if face_type == "head":
        unit_lm = landmarks @ unit_from_frame[:2, :2].T + unit_from_frame[:2, 2]
        yaw = _averaged_yaw(unit_lm)
        # tanh damping keeps near-frontal heads centred; turned heads slide toward the
        # back of the head, which the landmarks do not cover.
        cx += yaw * abs(math.tanh(2.0 * yaw)) / 2.0

    k = output_size / (2.0 * half_side)
    crop_from_unit = np.array([[k, 0.0, k * (half_side - cx)],
                               [0.0, k, k * (half_side - cy)],
                               [0.0, 0.0, 1.0]])
    return (crop_from_unit @ unit_from_frame)[:2].copy()


def _invert(mat: np.ndarray) -> np.ndarray:
    lin_inv = np.linalg.inv(mat[:, :2])
    return np.hstack([lin_inv, -lin_inv @ mat[:, 2:3]])


def transform_points(points: np.ndarray, mat: np.ndarray, invert: bool = False) -> np.ndarray:
    """Apply a (2, 3) affine matrix to points.

    Args:
        points: (N, 2) or (2,) array of (x, y).
        mat: (2, 3) affine matrix, e.g. from ``get_transform_mat``.
        invert: Apply the inverse instead (crop → frame for an alignment matrix).

    Returns:
        float64 array of the same shape as ``points``.

    Raises:
        ValueError: If ``mat`` is not (2, 3), or ``points`` does not end in 2.

    Example:
        >>> transform_points(np.array([[1.0, 2.0]]), np.array([[2.0, 0, 1], [0, 2.0, 0]]))
        array([[3., 4.]])
    """
    mat = np.asarray(mat, dtype=np.float64)
    if mat.shape != (2, 3):
        raise ValueError(f"mat must have shape (2, 3), got {mat.shape}")
    points = np.asarray(points, dtype=np.float64)
    if points.shape[-1:] != (2,):
        raise ValueError(f"points must have shape (N, 2), got {points.shape}")
    if invert:
        mat = _invert(mat)
    return points @ mat[:, :2].T + mat[:, 2]


def warp_to_crop(image: np.ndarray, mat: np.ndarray, output_size: int,
                 *, interpolation: int = cv2.INTER_LANCZOS4) -> np.ndarray:
    """Cut the aligned square crop out of a frame.

    Args:
        image: H×W or H×W×C frame.
        mat: (2, 3) frame → crop matrix from ``get_transform_mat``.
        output_size: Crop side in pixels (the size the matrix was made for).
        interpolation: cv2 interpolation flag; Lanczos keeps fine detail for training.

    Returns:
        output_size×output_size(×C) crop, same dtype as ``image``; outside the frame is 0.

    Example:
        >>> crop = warp_to_crop(frame, get_transform_mat(lm, 256, "full"), 256)  # doctest: +SKIP
    """
    mat = np.asarray(mat, dtype=np.float64)
    if mat.shape != (2, 3):
        raise ValueError(f"mat must have shape (2, 3), got {mat.shape}")
    if output_size <= 0:
        raise ValueError(f"output_size must be positive, got {output_size}")
    return cv2.warpAffine(image, mat, (output_size, output_size), flags=interpolation,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_to_frame(crop: np.ndarray, mat: np.ndarray, frame_shape: tuple[int, ...],
                  *, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Paste a crop back into frame geometry (the merge direction).

    Pixels outside the crop come out 0, so the caller blends with a mask warped the same way.

    Args:
        crop: S×S or S×S×C aligned crop.
        mat: (2, 3) frame → crop matrix the crop was made with.
        frame_shape: Frame shape; only (H, W) is used.
        interpolation: cv2 interpolation flag; DFL's merger uses cubic.

    Returns:
        H×W(×C) array, same dtype as ``crop``.

    Example:
        >>> back = warp_to_frame(crop, mat, frame.shape)  # doctest: +SKIP
    """
    mat = np.asarray(mat, dtype=np.float64)
    if mat.shape != (2, 3):
        raise ValueError(f"mat must have shape (2, 3), got {mat.shape}")
    if len(frame_shape) < 2 or min(frame_shape[:2]) <= 0:
        raise ValueError(f"frame_shape must start with a positive (H, W), got {frame_shape}")
    h, w = int(frame_shape[0]), int(frame_shape[1])
    # WARP_INVERSE_MAP lets cv2 sample the crop through mat itself, no explicit inverse.
    return cv2.warpAffine(crop, mat, (w, h), flags=interpolation | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
