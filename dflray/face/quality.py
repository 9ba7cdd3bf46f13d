"""Image quality scores for face crops.

``blur_score`` is the variance of the Laplacian: the Laplacian responds to edges and fine
texture, which defocus and motion blur remove, so its spread drops as an image gets
blurrier. (DFL's "sort by motion blur" uses the same statistic with an 11-pixel kernel on
the hull-masked colour crop; its default "sort by blur" uses a CPBD-style estimator.) We
use the 3×3 kernel on grayscale, which is cheap and fine for ranking. Scores depend on
content and size, so compare them between crops of the same size and face type.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["blur_score"]


def _to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 1:
        gray = image[..., 0]
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        # Float input so uint8 images are not rounded to integer luma (keeps uint8 and
        # 0-1 float scores equal). BGR order matches cv2.imread and the stored crops.
        gray = cv2.cvtColor(np.ascontiguousarray(image[..., :3], dtype=np.float32), cv2.COLOR_BGR2GRAY)
    else:
        raise ValueError(f"image must be H×W, H×W×1, H×W×3 or H×W×4, got shape {image.shape}")
    return gray


def blur_score(image: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Sharpness as the variance of the Laplacian of the grayscale image.

    Args:
        image: H×W or H×W×C (BGR or BGRA) image, uint8 or float. Float images are taken
            on the 0–1 scale and scored as if they were 0–255, so both give the same score.
        mask: Optional H×W (or H×W×1) mask; only pixels where it is > 0 are scored, e.g.
            the hull mask, so background texture does not count as sharp face.

    Returns:
        Non-negative score; higher is sharper. 0.0 for a flat image or an empty mask.

    Raises:
        ValueError: If the image has an unsupported shape or the mask's size differs.

    Example:
        >>> img = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
        >>> blur_score(img) > blur_score(cv2.GaussianBlur(img, (5, 5), 2))
        True
    """
    image = np.asarray(image)
    gray = _to_gray(image).astype(np.float64)
    if not np.issubdtype(image.dtype, np.integer):
        gray = gray * 255.0
    # 64-bit output keeps negative responses and avoids uint8 saturation of the Laplacian.
    lap = cv2.Laplacian(gray, cv2.CV_64F)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.ndim == 3 and mask.shape[2] == 1:
            mask = mask[..., 0]
        if mask.shape != gray.shape:
            raise ValueError(f"mask must have shape {gray.shape}, got {mask.shape}")
        lap = lap[mask > 0]
    if lap.size == 0:
        return 0.0
    return float(lap.var())
