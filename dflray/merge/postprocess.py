"""Post-processing of a merged face, with DeepFaceLab's merger definitions and units.

DFL's merger (``MergeMasked``) applies these after the swapped face is pasted. Where each one acts
matters, and is reproduced by :func:`dflray.merge.blend.paste`:

- ``motion_blur`` and ``blursharpen`` act on the **face**: the merged frame is cropped again around
  the face, filtered in crop pixels and pasted back through the same blend mask.
- ``denoise`` and ``bicubic_degrade`` act on the **dst frame around the face** (the background the
  face is blended into), so that a smooth, low-detail prediction does not stand out against a sharp,
  noisy frame. They change every pixel outside the face too.
- ``color_degrade`` acts on the **whole merged frame** (face and background), last.

Every function takes float32 images in [0, 1] (H×W or H×W×C) and returns float32. All are
channel-order agnostic except ``reduce_colors``, whose adaptive palette is built on RGB as DFL's.

Example:
    >>> img = np.random.default_rng(0).random((32, 32, 3), dtype=np.float32)
    >>> blursharpen(img, "gaussian", 20).shape
    (32, 32, 3)
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["SHARPEN_MODES", "bicubic_degrade", "blursharpen", "color_degrade", "denoise", "linear_motion_blur",
           "motion_blur", "motion_blur_kernel", "motion_kernel_size", "reduce_colors"]

SHARPEN_MODES = ("none", "box", "gaussian")


def _float(img: np.ndarray, name: str = "img") -> np.ndarray:
    img = np.asarray(img)
    if img.ndim not in (2, 3) or not np.issubdtype(img.dtype, np.floating):
        raise ValueError(f"{name} must be a float H×W or H×W×C image, got {img.dtype} {img.shape}")
    return img.astype(np.float32, copy=False)


def _median_passes(img: np.ndarray, n: int, full_step: int) -> np.ndarray:
    """DFL's graded median filter: repeated 5×5 median passes, the last ones only partly mixed in.

    ``n`` counts down by 10. While ``n >= full_step`` a pass replaces the image; below that a pass
    is mixed in with weight ``(n % full_step) / full_step``. DFL uses it with ``full_step`` 10 for a
    negative sharpen amount and 100 for the denoise power.
    """
    while n > 0:
        blurred = cv2.medianBlur(img, 5)
        if n >= full_step:
            img = blurred
        else:
            w = (n % full_step) / full_step
            img = img * np.float32(1.0 - w) + blurred * np.float32(w)
        n = max(n - 10, 0)
    return img


def blursharpen(img: np.ndarray, mode: str, amount: int, kernel_size: int = 3) -> np.ndarray:
    """DFL's ``blursharpen``: sharpen for a positive amount, median-blur for a negative one.

    ``box`` adds ``amount`` times (identity − box mean) to an identity kernel; ``gaussian`` is an
    unsharp mask ``img·(1 + amount/2) − blur·amount/2``. Both use a ``kernel_size`` window (DFL's
    merger uses 3) and the raw integer amount, so 100 is very strong. A negative amount runs
    ``-amount / 10`` 5×5 median passes, the remainder mixed in partly.

    Deviation: DFL also median-blurs for a negative amount when the mode is "none"; here "none" means
    no filter at all.

    Args:
        img: float image.
        mode: "none", "box" or "gaussian".
        amount: -100..100.
        kernel_size: filter window; made odd.

    Returns:
        The filtered image, float32 (not clipped: the merger clips after blending).

    Example:
        >>> flat = np.full((8, 8), 0.5, np.float32)
        >>> round(float(blursharpen(flat, "box", 50)[4, 4]), 4)
        0.5
    """
    if mode not in SHARPEN_MODES:
        raise ValueError(f"sharpen mode must be one of {', '.join(SHARPEN_MODES)}, got {mode!r}")
    img = _float(img)
    if mode == "none" or amount == 0:
        return img
    k = kernel_size + (1 - kernel_size % 2)
    if amount < 0:
        return _median_passes(img, -int(amount), 10)
    if mode == "box":
        identity = np.zeros((k, k), np.float32)
        identity[k // 2, k // 2] = 1.0
        kernel = identity + (identity - np.full((k, k), 1.0 / (k * k), np.float32)) * np.float32(amount)
        return cv2.filter2D(img, -1, kernel)
    blur = cv2.GaussianBlur(img, (k, k), 0)
    return cv2.addWeighted(img, 1.0 + 0.5 * amount, blur, -0.5 * amount, 0)


def denoise(img: np.ndarray, power: int) -> np.ndarray:
    """DFL's ``image_denoise_power``: graded 5×5 median filtering (``cv2.medianBlur``), 0..500.

    The power counts down by 10 per pass; passes at 100 or more replace the image and the ones below
    100 are mixed in with weight ``(n % 100) / 100``. So 50 is five light passes (0.5, 0.4 … 0.1)
    and 500 is 41 full passes followed by nine decreasing ones.

    Example:
        >>> noisy = np.random.default_rng(0).random((16, 16), dtype=np.float32)
        >>> bool(denoise(noisy, 100).std() < noisy.std())
        True
    """
    img = _float(img)
    if power <= 0:
        return img
    return _median_passes(img, int(power), 100)


def bicubic_degrade(img: np.ndarray, power: int) -> np.ndarray:
    """DFL's ``bicubic_degrade_power``: bicubic down- then up-scaling by ``1 − power/101`` (0..100).

    Example:
        >>> bicubic_degrade(np.zeros((20, 30, 3), np.float32), 50).shape
        (20, 30, 3)
    """
    img = _float(img)
    if power <= 0:
        return img
    h, w = img.shape[:2]
    p = 1.0 - power / 101.0
    small = cv2.resize(img, (max(int(w * p), 1), max(int(h * p), 1)), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def reduce_colors(img_rgb: np.ndarray, n_colors: int = 256) -> np.ndarray:
    """Quantises an RGB image to an adaptive palette of ``n_colors`` (Pillow's median cut, as DFL).

    Example:
        >>> img = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
        >>> len(np.unique(reduce_colors(img, 8).reshape(-1, 3), axis=0)) <= 8
        True
    """
    from PIL import Image  # DFL's palette reduction is Pillow's adaptive palette

    img_rgb = _float(img_rgb, "img_rgb")
    if img_rgb.ndim != 3 or img_rgb.shape[2] != 3:
        raise ValueError(f"img_rgb must be H×W×3, got {img_rgb.shape}")
    u8 = np.clip(img_rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    pal = Image.fromarray(u8).convert("P", palette=Image.Palette.ADAPTIVE, colors=int(n_colors))
    return np.asarray(pal.convert("RGB"), dtype=np.float32) / np.float32(255)


def color_degrade(img_rgb: np.ndarray, power: int) -> np.ndarray:
    """DFL's ``color_degrade_power``: mix in a 256-colour version of the image, ``power`` % (0..100).

    Example:
        >>> color_degrade(np.zeros((4, 4, 3), np.float32), 100).shape
        (4, 4, 3)
    """
    img_rgb = _float(img_rgb, "img_rgb")
    if power <= 0:
        return img_rgb
    reduced = reduce_colors(img_rgb, 256)
    if power >= 100:
        return reduced
    a = np.float32(power / 100.0)
    return img_rgb * (1 - a) + reduced * a


def motion_blur_kernel(size: int, angle: float) -> np.ndarray:
    """A normalised line kernel of ``size`` pixels at ``angle`` degrees (counter-clockwise, y up).

    The horizontal line through the kernel's middle row is rotated about the kernel centre with
    bilinear resampling, as DFL's ``LinearMotionBlur`` builds it.

    Example:
        >>> k = motion_blur_kernel(5, 0)
        >>> round(float(k.sum()), 6), [round(float(v), 6) for v in k[2]]
        (1.0, [0.2, 0.2, 0.2, 0.2, 0.2])
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    line = np.zeros((size, size), np.float32)
    line[(size - 1) // 2, :] = 1.0
    rot = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), float(angle), 1.0)
    k = cv2.warpAffine(line, rot, (size, size))
    return k / k.sum()


def linear_motion_blur(img: np.ndarray, size: int, angle: float) -> np.ndarray:
    """Blurs along a line of ``size`` pixels at ``angle`` degrees (DFL's ``LinearMotionBlur``)."""
    return cv2.filter2D(_float(img), -1, motion_blur_kernel(size, angle))


def motion_kernel_size(motion_power: float, amount: int) -> int:
    """DFL's kernel length for a face that moved ``motion_power`` pixels and a setting of ``amount``.

    ``int(motion_power · amount / 100)``; 0 (no blur) below 1, else one more, clipped to 2..50.

    Example:
        >>> motion_kernel_size(30.0, 50), motion_kernel_size(0.5, 100), motion_kernel_size(500.0, 100)
        (16, 0, 50)
    """
    k = int(motion_power * amount / 100.0)
    return 0 if k < 1 else int(np.clip(k + 1, 2, 50))


def motion_blur(img: np.ndarray, motion_power: float, motion_deg: float, amount: int) -> np.ndarray:
    """DFL's merger motion blur from the face's motion between frames.

    Args:
        img: float image (DFL applies it to the face crop).
        motion_power: how far the face centre moved from the previous to the next frame, in frame
            pixels (``dflray.merge.temporal.face_motion``).
        motion_deg: direction of that motion in degrees, counter-clockwise with y up.
        amount: ``motion_blur`` setting, 0..100.

    Returns:
        The blurred image, or ``img`` itself when the kernel would be shorter than 1 pixel.

    Example:
        >>> img = np.zeros((9, 9), np.float32); img[4, 4] = 1
        >>> out = motion_blur(img, 10.0, 0.0, 40)  # a 5-pixel horizontal streak
        >>> int((out[4] > 0).sum()), int((out[:, 4] > 0).sum())
        (5, 1)
    """
    size = motion_kernel_size(motion_power, amount)
    if size == 0:
        return _float(img)
    return linear_motion_blur(img, size, motion_deg)


def _deg_in_crop(motion_deg: float, mat: np.ndarray) -> float:
    """Re-expresses a frame-space direction in the pixels of a crop made with ``mat``."""
    rad = math.radians(motion_deg)
    v = np.asarray(mat, np.float64)[:, :2] @ np.array([math.cos(rad), -math.sin(rad)])
    return -math.degrees(math.atan2(v[1], v[0]))
