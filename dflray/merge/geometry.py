"""The model crop of a dst face and its geometry: where it sits in the frame and how images move between
the two (DeepFaceLab's merger warps, bicubic).

``prepare_crop`` cuts the model input and records a ``MergeContext``, what ``dflray.merge.blend.paste``
needs to put the swap back; ``output_matrix`` is the paste matrix with the output face scale; ``crop_hull`` is the
dst landmark hull (mask mode ``dst``) in the crop. Only a region of interest around the face is warped,
so a 1080p frame costs little more than a small one.

Example:
    >>> output_matrix(np.array([[1.0, 0, 0], [0, 1.0, 0]]), 100, 0).tolist()
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from dflray.config import MASK_MODES, MERGE_MODES, MergeSettings
from dflray.face.align import get_transform_mat, transform_points
from dflray.face.masks import hull_mask

__all__ = ["MergeContext", "crop_hull", "output_matrix", "prepare_crop"]

_MARGIN = 3  # ROI margin in frame pixels: bicubic reaches 2 pixels past the crop's footprint


@dataclass(frozen=True)
class MergeContext:
    """What ``paste`` needs to put a predicted face back into its frame.

    Attributes:
        frame_shape: (H, W) of the frame.
        resolution: the model's crop side R.
        face_type: the model's face type.
        landmarks: (68, 2) dst landmarks in frame pixels.
        face_mat: (2, 3) frame → model crop.
        output_mat: (2, 3) frame → crop with the output face scale (where the face is pasted).
        roi: (x0, y0, x1, y1) frame region the pasted crop can touch (empty when off-frame).
        crop: R×R×3 float32 RGB dst crop (the model input; the colour reference).
    """

    frame_shape: tuple[int, int]
    resolution: int
    face_type: str
    landmarks: np.ndarray
    face_mat: np.ndarray
    output_mat: np.ndarray
    roi: tuple[int, int, int, int]
    crop: np.ndarray


def output_matrix(face_mat: np.ndarray, resolution: int, face_scale: int) -> np.ndarray:
    """The paste matrix: ``face_mat`` scaled by ``1 + face_scale/100`` about the crop centre.

    DFL's ``get_transform_mat(..., scale)`` divides the crop's frame extent by the scale around the
    same centre; in crop pixels that is this scaling. A positive ``face_scale`` makes the frame window
    smaller, so the pasted face comes out smaller.

    Example:
        >>> output_matrix(np.array([[1.0, 0, 0], [0, 1.0, 0]]), 100, 50).tolist()
        [[1.5, 0.0, -25.0], [0.0, 1.5, -25.0]]
    """
    s = 1.0 + 0.01 * face_scale
    c = resolution / 2.0
    scale = np.array([[s, 0.0, (1 - s) * c], [0.0, s, (1 - s) * c], [0.0, 0.0, 1.0]])
    return (scale @ np.vstack([np.asarray(face_mat, np.float64), [0.0, 0.0, 1.0]]))[:2]


def prepare_crop(frame: np.ndarray, landmarks: np.ndarray, face_type: str, resolution: int,
                 settings: MergeSettings) -> tuple[np.ndarray, MergeContext]:
    """Cuts the dst face for the model and records how to paste the result back.

    Args:
        frame: H×W×3 uint8 RGB dst frame.
        landmarks: (68, 2) dst landmarks in frame pixels (possibly smoothed over time).
        face_type: the model's face type ("half" … "head").
        resolution: the model's crop side R.
        settings: merge settings (the face scale is used here).

    Returns:
        (crop, context): the R×R×3 float32 RGB model input in [0, 1] (bicubic, as DFL), and the
        ``MergeContext`` for ``paste``.

    Raises:
        ValueError: on a bad frame, landmarks, face type or resolution.

    Example:
        >>> crop, ctx = prepare_crop(frame, lm, "full", 128, MergeSettings())  # doctest: +SKIP
        >>> crop.shape, crop.dtype  # doctest: +SKIP
        ((128, 128, 3), dtype('float32'))
    """
    frame = _check_frame(frame)
    _check_modes(settings)  # an unknown mode fails before any work
    landmarks = np.asarray(landmarks, np.float64)
    face_mat = get_transform_mat(landmarks, resolution, face_type)
    out_mat = output_matrix(face_mat, resolution, settings.face_scale)
    shape = frame.shape[:2]
    # Warped in float, as DFL: a uint8 warp would round the model input (and the colour reference).
    x0, y0, x1, y1 = _footprint(face_mat, resolution, shape)
    if x1 > x0 and y1 > y0:
        region = frame[y0:y1, x0:x1].astype(np.float32) / np.float32(255)
        crop = np.clip(_to_crop(region, _shift(face_mat, x0, y0), resolution), 0, 1)
    else:  # the face is entirely off-frame
        crop = np.zeros((resolution, resolution, 3), np.float32)
    ctx = MergeContext(frame_shape=(int(shape[0]), int(shape[1])), resolution=int(resolution), face_type=face_type,
                       landmarks=landmarks, face_mat=face_mat, output_mat=out_mat,
                       roi=_footprint(out_mat, resolution, shape), crop=crop)
    return crop, ctx


def crop_hull(context: MergeContext) -> np.ndarray:
    """The dst landmark hull (mask mode ``dst``) in the model crop, R×R float32 in [0, 1].

    As DFL, the hull is rasterised in frame pixels and warped into the crop (bicubic), which gives it
    a soft edge; only the crop's footprint of the frame is rasterised.
    """
    r = context.resolution
    x0, y0, x1, y1 = _footprint(context.face_mat, r, context.frame_shape)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((r, r), np.float32)
    region = hull_mask((y1 - y0, x1 - x0), context.landmarks - [x0, y0]).astype(np.float32)
    return np.clip(_to_crop(region, _shift(context.face_mat, x0, y0), r), 0, 1)


# ------------------------------------------------------------------------------------ helpers of the merge modules


def _affine3(mat: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(mat, np.float64), [0.0, 0.0, 1.0]])


def _footprint(mat: np.ndarray, size: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """Frame bounding box (x0, y0, x1, y1) of a size×size crop made with ``mat``, plus a margin, clipped."""
    corners = transform_points(np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64), mat, invert=True)
    lo = np.floor(corners.min(axis=0)) - _MARGIN
    hi = np.ceil(corners.max(axis=0)) + _MARGIN
    h, w = shape
    x0, y0 = int(np.clip(lo[0], 0, w)), int(np.clip(lo[1], 0, h))
    x1, y1 = int(np.clip(hi[0], x0, w)), int(np.clip(hi[1], y0, h))
    return x0, y0, x1, y1


def _shift(mat: np.ndarray, x0: int, y0: int) -> np.ndarray:
    """The same matrix for a frame cut at (x0, y0)."""
    out = np.array(mat, np.float64)
    out[:, 2] += out[:, :2] @ np.array([x0, y0], np.float64)
    return out


def _to_frame(img: np.ndarray, mat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Inverse-warps a crop into a (w, h) frame region, bicubic, 0 outside (DFL's paste warp)."""
    return cv2.warpAffine(img, mat, size, flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _to_crop(img: np.ndarray, mat: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(img, mat, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be H×W×3 uint8 RGB, got {frame.dtype} {frame.shape}")
    return frame


def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * np.float32(255) + np.float32(0.5), 0, 255).astype(np.uint8)


def _check_modes(settings: MergeSettings) -> None:
    """Raises ValueError naming the field when a merge or mask mode is not in the config's vocabulary."""
    if settings.mode not in MERGE_MODES:
        raise ValueError(f"mode must be one of {', '.join(MERGE_MODES)}, got {settings.mode!r}")
    if settings.mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode must be one of {', '.join(MASK_MODES)}, got {settings.mask_mode!r}")
