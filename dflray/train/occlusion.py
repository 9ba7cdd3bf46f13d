"""Self-supervised XSeg training data: synthetic occluders pasted over aligned face crops.

DeepFaceLab trains XSeg on hand-drawn polygons (``SampleGeneratorFaceXSeg``) and only mixes in a
second labelled face as a translucent background. dflray starts with zero labels: the landmark hull
(:func:`dflray.face.masks.hull_mask`) stands in for the face region, and known occluders are pasted
over it, so the target mask is exact by construction: the hull minus every pixel where the pasted
occluders' alpha exceeds 0.5.

Occluder kinds (:data:`OCCLUDER_KINDS`), drawn on a square RGBA canvas:

- ``shape``: a random polygon, star or ellipse with a flat, gradient, noise or striped texture.
- ``crop``: a crop of another image from a pool (other faces, backgrounds) cut to a random shape.
- ``hand``: a palm ellipse, four finger capsules, a thumb and often a wrist running off the canvas,
  in a skin tone with rounded (distance-based) shading and low-frequency skin texture.
- ``bar``: glasses frames, a microphone (stick and meshed head) or a straight pole/strap.
- ``hair``: a clump of thin Bézier strands in a hair colour.

Every function draws all randomness from the ``np.random.Generator`` it is given, so a seed gives
the same sample.

Example:
    >>> rng = np.random.default_rng(0)
    >>> face = np.zeros((64, 64), np.uint8); face[16:56, 12:52] = 1
    >>> img, target = occlude(np.full((64, 64, 3), 128, np.uint8), face, rng, p_none=0.0)
    >>> img.shape, target.dtype.name, bool((target <= face).all())
    ((64, 64, 3), 'float32', True)
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

from dflray.train.augment import gen_warp_params, random_hsv_shift, warp_by_params

__all__ = ["OCCLUDER_KINDS", "make_xseg_batch", "occlude", "occluder"]

OCCLUDER_KINDS = ("shape", "crop", "hand", "bar", "hair")

# Skin tones from light to dark (RGB); a hand's tone is interpolated between two neighbours.
_SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 130], [198, 134, 96], [161, 102, 68],
                  [120, 75, 50], [86, 54, 38]], np.float32) / 255.0
_HAIR = np.array([[20, 16, 14], [55, 38, 28], [100, 70, 45], [165, 120, 70], [215, 185, 130], [140, 60, 30],
                  [170, 170, 170]], np.float32) / 255.0


# ------------------------------------------------------------------------------------ textures


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, 3).astype(np.float32)


def _lowfreq_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1) -> np.ndarray:
    """Smooth noise in [0, 1]: a random ``cells``×``cells`` grid upsampled bicubically."""
    grid = rng.uniform(0.0, 1.0, (cells, cells, channels)).astype(np.float32)
    out = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(out.reshape(size, size, channels), 0.0, 1.0)


def _ramp(rng: np.random.Generator, size: int) -> np.ndarray:
    """A linear 0..1 ramp across the canvas in a random direction, size×size."""
    theta = rng.uniform(0.0, 2.0 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1) - 0.5
    r = xx * math.cos(theta) + yy * math.sin(theta)
    return (r - r.min()) / max(float(r.max() - r.min()), 1e-6)


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """size×size×3 float32 in [0, 1]: flat, two-colour gradient, coloured noise or stripes."""
    kind = int(rng.integers(4))
    a, b = _colour(rng), _colour(rng)
    if kind == 0:
        tex = np.broadcast_to(a, (size, size, 3)).copy()
    elif kind == 1:
        t = _ramp(rng, size)[..., None]
        tex = a * (1 - t) + b * t
    elif kind == 2:
        t = _lowfreq_noise(rng, size, int(rng.integers(3, 12)))
        tex = a * (1 - t) + b * t + rng.normal(0.0, 0.04, (size, size, 3)).astype(np.float32)
    else:
        period = rng.uniform(0.04, 0.2) * size
        t = (np.sin(2 * math.pi * _ramp(rng, size) * size / period) > 0).astype(np.float32)[..., None]
        tex = a * (1 - t) + b * t
    return np.clip(tex, 0.0, 1.0).astype(np.float32)


def _random_shape(rng: np.random.Generator, size: int) -> np.ndarray:
    """uint8 0/255 alpha of a random polygon, star or ellipse roughly filling the canvas."""
    alpha = np.zeros((size, size), np.uint8)
    c = size / 2.0
    kind = int(rng.integers(3))
    if kind == 0:
        axes = (int(rng.uniform(0.2, 0.48) * size), int(rng.uniform(0.2, 0.48) * size))
        cv2.ellipse(alpha, (int(c), int(c)), axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
    else:
        n = int(rng.integers(3, 10))
        angles = np.sort(rng.uniform(0.0, 2 * math.pi, n))
        radii = rng.uniform(0.25, 0.48, n) * size
        if kind == 2:  # star-like: alternate long and short spokes
            radii[::2] *= rng.uniform(0.35, 0.7)
        pts = np.stack([c + radii * np.cos(angles), c + radii * np.sin(angles)], 1).round().astype(np.int32)
        cv2.fillPoly(alpha, [pts], 255, cv2.LINE_AA)
    return alpha


# ------------------------------------------------------------------------------------ occluder kinds


def _shape_occluder(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    return _texture(rng, size), _random_shape(rng, size)


def _crop_occluder(rng: np.random.Generator, size: int, pool: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    src = _as_rgb_u8(pool[int(rng.integers(len(pool)))], "pool image")
    h, w = src.shape[:2]
    side = max(2, int(min(h, w) * rng.uniform(0.3, 1.0)))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    patch = cv2.resize(src[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.2:  # a whole rectangle: a card, a phone, a photo held up
        alpha = np.zeros((size, size), np.uint8)
        m = int(size * rng.uniform(0.05, 0.2))
        alpha[m:size - m, m:size - m] = 255
    else:
        alpha = _random_shape(rng, size)
    return patch.astype(np.float32) / 255.0, alpha


def _hand_occluder(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    s = float(size)
    alpha = np.zeros((size, size), np.uint8)
    palm_c = np.array([0.5, 0.62]) * s
    palm_ax = np.array([rng.uniform(0.16, 0.21), rng.uniform(0.19, 0.25)]) * s
    cv2.ellipse(alpha, tuple(int(v) for v in palm_c), tuple(int(v) for v in palm_ax), 0, 0, 360, 255, -1,
                cv2.LINE_AA)
    if rng.random() < 0.7:  # the wrist, running off the bottom of the canvas
        half = int(palm_ax[0] * rng.uniform(0.6, 0.85))
        cv2.rectangle(alpha, (int(palm_c[0]) - half, int(palm_c[1])), (int(palm_c[0]) + half, size), 255, -1)
    spread = rng.uniform(0.08, 0.3)  # radians between neighbouring fingers
    width = rng.uniform(0.065, 0.09) * s
    base_y = palm_c[1] - palm_ax[1] * 0.75
    for k, rel_len in enumerate((0.85, 1.0, 0.95, 0.75)):  # index, middle, ring, little
        ang = -math.pi / 2 + (k - 1.5) * spread
        length = rel_len * rng.uniform(0.22, 0.32) * s * (rng.uniform(0.4, 1.0) if rng.random() < 0.2 else 1.0)
        x0 = palm_c[0] + (k - 1.5) * palm_ax[0] * 0.55
        p0 = np.array([x0, base_y])
        p1 = p0 + length * np.array([math.cos(ang), math.sin(ang)])
        cv2.line(alpha, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 255,
                 max(2, int(width * (0.85 if k == 3 else 1.0))), cv2.LINE_AA)
    side = 1.0 if rng.random() < 0.5 else -1.0  # left or right hand
    t0 = palm_c + np.array([side * palm_ax[0] * 0.8, palm_ax[1] * 0.1])
    t_ang = -math.pi / 2 + side * rng.uniform(0.6, 1.3)
    t1 = t0 + rng.uniform(0.16, 0.24) * s * np.array([math.cos(t_ang), math.sin(t_ang)])
    cv2.line(alpha, tuple(int(v) for v in t0), tuple(int(v) for v in t1), 255, max(2, int(width * 1.15)), cv2.LINE_AA)

    t = rng.uniform(0, len(_SKIN) - 1)
    i = min(int(t), len(_SKIN) - 2)
    tone = _SKIN[i] * (1 - (t - i)) + _SKIN[i + 1] * (t - i)
    tone = np.clip(tone * rng.uniform(0.85, 1.1, 3).astype(np.float32), 0, 1)
    # Rounded look: darker toward the silhouette (distance to the edge), lit from a random side.
    dist = cv2.distanceTransform((alpha > 127).astype(np.uint8), cv2.DIST_L2, 3)
    rim = np.sqrt(np.clip(dist / max(width * 0.5, 1.0), 0, 1))
    shade = (0.55 + 0.45 * rim) * (0.8 + 0.35 * _ramp(rng, size)) * (0.92 + 0.16 * _lowfreq_noise(rng, size, 8)[..., 0])
    rgb = tone[None, None, :] * shade[..., None]
    return np.clip(rgb, 0, 1).astype(np.float32), alpha


def _bar_occluder(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    s = float(size)
    alpha = np.zeros((size, size), np.uint8)
    kind = int(rng.integers(3))
    dark = rng.random() < 0.6
    colour = rng.uniform(0.0, 0.25, 3) if dark else _colour(rng)
    rgb = np.broadcast_to(colour.astype(np.float32), (size, size, 3)) * (0.75 + 0.4 * _ramp(rng, size))[..., None]
    if kind == 0:  # glasses: two rims, a bridge, temples to the canvas edges
        th = max(2, int(rng.uniform(0.02, 0.05) * s))
        ax = (int(rng.uniform(0.13, 0.2) * s), int(rng.uniform(0.09, 0.15) * s))
        gap = rng.uniform(0.04, 0.09) * s
        cy = int(s / 2)
        centres = [(int(s / 2 - gap / 2 - ax[0]), cy), (int(s / 2 + gap / 2 + ax[0]), cy)]
        lens_alpha = int(rng.uniform(140, 240)) if rng.random() < 0.3 else 0  # tinted (sun)glasses
        for c in centres:
            if lens_alpha:
                cv2.ellipse(alpha, c, ax, 0, 0, 360, lens_alpha, -1, cv2.LINE_AA)
            cv2.ellipse(alpha, c, ax, 0, 0, 360, 255, th, cv2.LINE_AA)
        cv2.line(alpha, (centres[0][0] + ax[0], cy), (centres[1][0] - ax[0], cy), 255, th, cv2.LINE_AA)
        cv2.line(alpha, (centres[0][0] - ax[0], cy), (0, cy - int(ax[1] * 0.3)), 255, th, cv2.LINE_AA)
        cv2.line(alpha, (centres[1][0] + ax[0], cy), (size - 1, cy - int(ax[1] * 0.3)), 255, th, cv2.LINE_AA)
    elif kind == 1:  # microphone: a stick from the canvas edge to a meshed ball
        head = np.array([rng.uniform(0.35, 0.65), rng.uniform(0.25, 0.45)]) * s
        r = int(rng.uniform(0.1, 0.18) * s)
        cv2.line(alpha, tuple(int(v) for v in head), (int(head[0] + rng.uniform(-0.2, 0.2) * s), size - 1), 255,
                 max(2, int(rng.uniform(0.06, 0.12) * s)), cv2.LINE_AA)
        cv2.circle(alpha, tuple(int(v) for v in head), r, 255, -1, cv2.LINE_AA)
        mesh = np.ones((size, size), np.float32)
        step = max(2, r // 4)
        mesh[::step, :] = 0.55
        mesh[:, ::step] = 0.55
        ball = np.zeros((size, size), np.uint8)
        cv2.circle(ball, tuple(int(v) for v in head), r, 1, -1)
        grey = np.float32(rng.uniform(0.3, 0.8))
        rgb = np.where(ball[..., None] > 0, (grey * mesh)[..., None], rgb)
    else:  # a straight pole or strap across the canvas
        th = max(2, int(rng.uniform(0.03, 0.14) * s))
        y0, y1 = rng.uniform(0.2, 0.8, 2) * s
        cv2.line(alpha, (0, int(y0)), (size - 1, int(y1)), 255, th, cv2.LINE_AA)
        if rng.random() < 0.5:
            rgb = _texture(rng, size)
    return np.clip(rgb, 0, 1).astype(np.float32), alpha


def _hair_occluder(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    s = float(size)
    alpha = np.zeros((size, size), np.uint8)
    rgb = np.zeros((size, size, 3), np.float32)
    base = _HAIR[int(rng.integers(len(_HAIR)))]
    root = np.array([rng.uniform(0.3, 0.7), rng.uniform(0.0, 0.2)]) * s
    flow = np.array([rng.uniform(-0.4, 0.4), 1.0])
    t = np.linspace(0.0, 1.0, 24)[:, None]
    max_th = max(1, int(round(s / 80)))
    for _ in range(int(rng.integers(20, 70))):
        p0 = root + rng.normal(0.0, 0.12, 2) * s
        p3 = p0 + flow * rng.uniform(0.4, 0.9) * s + rng.normal(0.0, 0.1, 2) * s
        p1 = p0 + (p3 - p0) / 3 + rng.normal(0.0, 0.12, 2) * s
        p2 = p0 + 2 * (p3 - p0) / 3 + rng.normal(0.0, 0.12, 2) * s
        curve = ((1 - t) ** 3) * p0 + 3 * ((1 - t) ** 2) * t * p1 + 3 * (1 - t) * t * t * p2 + t ** 3 * p3
        pts = [curve.round().astype(np.int32)]
        th = int(rng.integers(1, max_th + 1))
        shade = tuple(float(v) for v in np.clip(base * rng.uniform(0.7, 1.3), 0, 1))
        cv2.polylines(rgb, pts, False, shade, th, cv2.LINE_AA)
        cv2.polylines(alpha, pts, False, 255, th, cv2.LINE_AA)
    # Anti-aliased colours were drawn over black: undo that darkening where alpha is partial.
    a = alpha.astype(np.float32)[..., None] / 255.0
    rgb = np.where(a > 0, rgb / np.maximum(a, 1e-3), 0.0)
    return np.clip(rgb, 0, 1).astype(np.float32), alpha


def occluder(rng: np.random.Generator, size: int, *, kind: str | None = None,
             pool: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Draws one synthetic occluder on a transparent square canvas.

    Args:
        rng: random generator.
        size: canvas side in pixels (>= 16).
        kind: one of :data:`OCCLUDER_KINDS`; None: uniform over the kinds available (``crop`` only
            with a non-empty ``pool``).
        pool: RGB uint8 images (any size) that ``crop`` occluders are cut from.

    Returns:
        size×size×4 uint8 RGBA; alpha has soft (slightly blurred) edges and is never empty.

    Raises:
        ValueError: on an unknown kind, ``crop`` without a pool, or a size below 16.

    Example:
        >>> rgba = occluder(np.random.default_rng(0), 64, kind="hand")
        >>> rgba.shape, bool(rgba[..., 3].any())
        ((64, 64, 4), True)
    """
    if int(size) < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    size = int(size)
    has_pool = pool is not None and len(pool) > 0
    if kind is None:
        kinds = OCCLUDER_KINDS if has_pool else tuple(k for k in OCCLUDER_KINDS if k != "crop")
        kind = kinds[int(rng.integers(len(kinds)))]
    if kind not in OCCLUDER_KINDS:
        raise ValueError(f"kind must be one of {', '.join(OCCLUDER_KINDS)}, got {kind!r}")
    if kind == "crop" and not has_pool:
        raise ValueError("kind='crop' needs a non-empty pool of images")
    if kind == "shape":
        rgb, alpha = _shape_occluder(rng, size)
    elif kind == "crop":
        rgb, alpha = _crop_occluder(rng, size, pool)  # type: ignore[arg-type]
    elif kind == "hand":
        rgb, alpha = _hand_occluder(rng, size)
    elif kind == "bar":
        rgb, alpha = _bar_occluder(rng, size)
    else:
        rgb, alpha = _hair_occluder(rng, size)
    if rng.random() < 0.3:  # defocus: occluders are often nearer the camera than the face
        sigma = rng.uniform(0.5, 1.5) * size / 256.0 + 0.3
        rgb = cv2.GaussianBlur(rgb, (0, 0), sigma)
        alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
    else:
        alpha = cv2.GaussianBlur(alpha, (0, 0), max(0.5, size / 400.0))
    rgba = np.empty((size, size, 4), np.uint8)
    rgba[..., :3] = np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)
    rgba[..., 3] = alpha
    return rgba


# ------------------------------------------------------------------------------------ pasting


def _as_rgb_u8(img: np.ndarray, name: str) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or min(img.shape[:2]) < 2:
        raise ValueError(f"{name} must be an H×W×3 uint8 RGB image, got {img.dtype} {img.shape}")
    return img


def _as_mask(mask: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    """float32 H×W in [0, 1]; uint8 0/255 masks are scaled, 0/1 masks kept."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.shape != tuple(shape):
        raise ValueError(f"{name} must be H×W matching the crop {tuple(shape)}, got {mask.shape}")
    if mask.dtype == bool:
        return mask.astype(np.float32)
    out = mask.astype(np.float32)
    if np.issubdtype(mask.dtype, np.integer) and out.max(initial=0) > 1:
        out /= 255.0
    return np.clip(out, 0.0, 1.0)


def _placement(rng: np.random.Generator, face_bin: np.ndarray, ys: np.ndarray, xs: np.ndarray, canvas: int,
               face_side: float, gain: float) -> np.ndarray:
    """A 2×3 canvas → crop matrix: random angle and scale, centred on (or near) the face."""
    h, w = face_bin.shape
    if rng.random() < 0.85:
        k = int(rng.integers(len(ys)))
        centre = (float(xs[k]), float(ys[k]))
    else:  # around the face box, so occluders also enter from its sides
        x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
        mx, my = 0.25 * (x1 - x0 + 1), 0.25 * (y1 - y0 + 1)
        centre = (float(np.clip(rng.uniform(x0 - mx, x1 + mx), 0, w - 1)),
                  float(np.clip(rng.uniform(y0 - my, y1 + my), 0, h - 1)))
    side = face_side * rng.uniform(0.5, 1.5) * gain
    mat = cv2.getRotationMatrix2D((canvas / 2.0, canvas / 2.0), float(rng.uniform(0.0, 360.0)), side / canvas)
    mat[:, 2] += (centre[0] - canvas / 2.0, centre[1] - canvas / 2.0)
    return mat


def occlude(crop_rgb: np.ndarray, face_mask: np.ndarray, rng: np.random.Generator,
            pool: Sequence[np.ndarray] | None = None, max_occluders: int = 2,
            coverage: tuple[float, float] = (0.05, 0.45), *, p_none: float = 0.15, tries: int = 8,
            return_alpha: bool = False, kinds: Sequence[str] | None = None) -> tuple[np.ndarray, ...]:
    """Pastes 0..``max_occluders`` synthetic occluders over a face crop and removes them from its mask.

    With probability ``p_none`` (or when the face mask is empty) nothing is pasted. Otherwise
    ``1..max_occluders`` occluders are drawn (:func:`occluder`) and placed with a random rotation,
    a scale relative to the face size, and a centre on a random face pixel (85%) or around the face
    box; the placement is redrawn up to ``tries`` times, shrinking or growing the scale, until the
    fraction of face pixels (mask > 0.5) under the occluders (combined alpha > 0.5) lies within
    ``coverage``. If no placement fits, nothing is pasted. Occluders are alpha-blended (soft edges)
    after a mild relighting toward the crop's brightness.

    Args:
        crop_rgb: H×W×3 uint8 RGB aligned crop.
        face_mask: H×W face region (bool, 0/1 or 0/255 uint8, or float in [0, 1]), e.g. the hull.
        rng: random generator.
        pool: RGB uint8 images for ``crop`` occluders (other faces' crops, backgrounds); None: none.
        max_occluders: most occluders per crop (0: never occlude).
        coverage: (min, max) fraction of the face to cover when occluders are pasted.
        p_none: probability of pasting nothing.
        tries: placement attempts before giving up.
        return_alpha: also return the combined occluder alpha.
        kinds: occluder kinds to draw from, uniformly (None: all of :data:`OCCLUDER_KINDS` that apply).

    Returns:
        ``(occluded_rgb, target_mask)``, plus ``alpha`` with ``return_alpha``: uint8 H×W×3, float32
        H×W ``face_mask * (alpha <= 0.5)``, float32 H×W combined alpha in [0, 1] (0: nothing pasted).

    Raises:
        ValueError: on malformed images or masks, or out-of-range options.

    Example:
        >>> img, target = occlude(crop, hull, np.random.default_rng(1))  # doctest: +SKIP
    """
    if kinds is not None and not kinds:
        raise ValueError("kinds must name at least one occluder kind")
    crop = _as_rgb_u8(crop_rgb, "crop_rgb")
    h, w = crop.shape[:2]
    face = _as_mask(face_mask, (h, w), "face_mask")
    lo, hi = (float(v) for v in coverage)
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"coverage must be (min, max) with 0 <= min <= max <= 1, got {coverage}")
    if max_occluders < 0:
        raise ValueError(f"max_occluders must be >= 0, got {max_occluders}")
    if not 0.0 <= p_none <= 1.0:
        raise ValueError(f"p_none must be in [0, 1], got {p_none}")
    if tries < 1:
        raise ValueError(f"tries must be >= 1, got {tries}")

    face_bin = face > 0.5
    area = int(face_bin.sum())
    none = rng.random() < p_none
    alpha = np.zeros((h, w), np.float32)

    def result(img: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, ...]:
        target = (face * (a <= 0.5)).astype(np.float32)
        return (img, target, a) if return_alpha else (img, target)

    if none or area == 0 or max_occluders == 0:
        return result(crop.copy(), alpha)

    n = int(rng.integers(1, max_occluders + 1))
    canvas = max(32, min(h, w))
    occs = [occluder(rng, canvas, pool=pool,
                     kind=None if kinds is None else kinds[int(rng.integers(len(kinds))) if len(kinds) > 1 else 0])
            for _ in range(n)]
    ys, xs = np.nonzero(face_bin)
    face_side = math.sqrt(area)
    gain = 1.0
    for _ in range(tries):
        mats = [_placement(rng, face_bin, ys, xs, canvas, face_side, gain) for _ in range(n)]
        warped = [cv2.warpAffine(o, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
                  for o, m in zip(occs, mats)]
        keep = np.ones((h, w), np.float32)
        for wo in warped:
            keep *= 1.0 - wo[..., 3].astype(np.float32) / 255.0
        combined = 1.0 - keep
        covered = int(np.count_nonzero(face_bin & (combined > 0.5))) / area
        if lo <= covered <= hi and covered > 0:
            break
        gain *= 0.7 if covered > hi else 1.35
    else:
        return result(crop.copy(), alpha)

    img = crop.astype(np.float32) / 255.0
    crop_lum = float(img.mean())
    for wo in warped:
        a = wo[..., 3:].astype(np.float32) / 255.0
        rgb = wo[..., :3].astype(np.float32) / 255.0
        inside = a[..., 0] > 0.5
        occ_lum = float(rgb[inside].mean()) if inside.any() else crop_lum
        relight = 1.0 + rng.uniform(0.0, 0.6) * (crop_lum / max(occ_lum, 0.05) - 1.0)
        rgb = np.clip(rgb * np.clip(relight, 0.5, 2.0), 0, 1)
        img = img * (1.0 - a) + rgb * a
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return result(out, combined.astype(np.float32))


# ------------------------------------------------------------------------------------ batches


def _resize(img: np.ndarray, res: int, interpolation: int | None = None) -> np.ndarray:
    if img.shape[:2] == (res, res):
        return img
    if interpolation is None:
        interpolation = cv2.INTER_AREA if img.shape[0] > res else cv2.INTER_CUBIC
    return cv2.resize(img, (res, res), interpolation=interpolation)


def _colour_augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Light photometric augmentation of a float32 RGB image in [0, 1] (mask unaffected)."""
    if rng.random() < 0.5:
        img = random_hsv_shift(img, rng, 0.2)
    contrast, bright = rng.uniform(0.8, 1.2), rng.uniform(-0.08, 0.08)
    img = np.clip((img - img.mean()) * contrast + img.mean() + bright, 0, 1).astype(np.float32)
    if rng.random() < 0.2:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.2) * img.shape[0] / 256.0 + 0.2)
    if rng.random() < 0.25:  # facesets store JPEG crops; so will the frames XSeg runs on
        u8 = cv2.cvtColor(np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", u8, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 96))])
        if ok:
            img = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return img


def make_xseg_batch(crops: Sequence[np.ndarray] | np.ndarray, hull_masks: Sequence[np.ndarray] | np.ndarray,
                    rng: np.random.Generator, resolution: int, pool: Sequence[np.ndarray] | None = None,
                    augment: bool = True, *, max_occluders: int = 2, coverage: tuple[float, float] = (0.05, 0.45),
                    p_none: float = 0.15, kinds: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Self-supervised XSeg inputs and targets from aligned crops and their hull masks.

    Per crop: resize crop and mask to ``resolution`` (mask binarised at 0.5), :func:`occlude`, then
    with ``augment`` DFL's XSeg geometry (``gen_warp_params`` with flip, ±10° rotation, ±5% scale
    and shift, plus the random grid warp) applied identically to image and target (target
    re-binarised at 0.5, as DFL does), and light colour changes (HSV shift, contrast/brightness,
    blur, JPEG) on the image only.

    Args:
        crops: N RGB uint8 crops (H×W×3 each, any size) at the faceset's face type.
        hull_masks: N face masks matching the crops (see :func:`occlude` for dtypes).
        rng: random generator; the same seed gives the same batch.
        resolution: model input side.
        pool: images for ``crop`` occluders; None: the other crops of this batch.
        augment: apply geometric and colour augmentation.
        max_occluders: see :func:`occlude`.
        coverage: see :func:`occlude`.
        p_none: see :func:`occlude`.
        kinds: see :func:`occlude`.

    Returns:
        ``(x, y)``: x float32 N×3×R×R RGB in [0, 1], y float32 N×1×R×R in {0, 1}.

    Raises:
        ValueError: on mismatched lengths, malformed crops/masks or a resolution below 16.

    Example:
        >>> x, y = make_xseg_batch(crops, hulls, np.random.default_rng(0), 256)  # doctest: +SKIP
        >>> x.shape, y.shape  # doctest: +SKIP
        ((8, 3, 256, 256), (8, 1, 256, 256))
    """
    if int(resolution) < 16:
        raise ValueError(f"resolution must be >= 16, got {resolution}")
    res = int(resolution)
    if len(crops) != len(hull_masks):
        raise ValueError(f"crops and hull_masks must have the same length, got {len(crops)} and {len(hull_masks)}")
    n = len(crops)
    x = np.zeros((n, 3, res, res), np.float32)
    y = np.zeros((n, 1, res, res), np.float32)
    for i in range(n):
        crop = _as_rgb_u8(crops[i], f"crops[{i}]")
        mask = _as_mask(hull_masks[i], crop.shape[:2], f"hull_masks[{i}]")
        img = _resize(crop, res)
        mask = (_resize(mask, res, cv2.INTER_LINEAR) > 0.5).astype(np.float32)
        sample_pool = pool if pool is not None else [crops[j] for j in range(n) if j != i]
        img, target = occlude(img, mask, rng, sample_pool or None, max_occluders, coverage, p_none=p_none,
                              kinds=kinds)
        img = img.astype(np.float32) / 255.0
        if augment:
            params = gen_warp_params(res, rng, flip=True, rotation=10.0, scale=0.05, shift=0.05)
            img = warp_by_params(params, img, True, True, True, True)
            target = warp_by_params(params, target, True, True, True, False, cv2.INTER_LINEAR)
            target = (target >= 0.5).astype(np.float32)
            img = _colour_augment(np.clip(img, 0, 1), rng)
        x[i] = np.clip(img, 0, 1).transpose(2, 0, 1)
        y[i, 0] = target
    return x, y
