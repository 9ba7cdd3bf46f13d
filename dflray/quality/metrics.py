"""Quality metrics of a fake video, as pure numpy/cv2 functions (the identity test is ``identity.py``,
the gates and summaries ``gates.py``).

A face swap should carry the source identity, remove the destination identity, keep the destination's
head pose and expression, be as temporally stable as the real video and leave no visible edge where the
swapped face was pasted. Face-swapping papers (FaceShifter, SimSwap and their successors) score the first
four as identity retrieval, pose error and expression error against the target frame; we measure them
with the models the faceset already uses (dlib's 68 landmarks and 128-D descriptor), and add two
artefact scores over the manipulation mask:

- ``id_distance_source``: dlib descriptor distance of the swapped face to the source identity's mean
  descriptor (dlib's convention: < 0.6 is the same person), so low is good.
- ``id_distance_target``: distance of the swapped face to the destination face it replaced (the same
  frame of the real video), so high is good.
- ``pose_error``: mean of ``|Δyaw|, |Δpitch|, |Δroll|`` (degrees) between the swapped and the real face.
- ``expression_error``: normalised landmark distance (the NME of landmark papers) after a least-squares
  similarity alignment, in inter-ocular distances; 0 means the same expression.
- ``flicker``: mean ``|ΔY|`` between consecutive frames inside the mask, fake minus real (grey levels);
  ~0 is as stable as the real video, > 0 flickers.
- ``seam``: Sobel gradient magnitude in a thin band around the mask edge, fake over real; ~1 is no
  visible seam, > 1 a seam.
- ``swap_success`` (the headline): the share of sampled frames in which the face found in the fake is
  recognised as the source person: nearer the source identity than the real face it replaced, and
  under dlib's same-person distance (``identity.SAME_PERSON_THRESHOLD``). A frame where no face was found in the
  fake counts as a failure. 1 is a swap that always reads as the source, 0 one that never does.
  Blur alone can fool dlib's descriptor (a destination face blurred to a featureless oval drifts toward
  an "average" face and can land nearer the source than its own sharp self), so when the fake is softer
  than the real face, the fake must also be nearer the source than the real face *blurred to the fake's
  detail* (``blur_like``): a blurred copy of the destination is not a swap.
- ``detail``: face-scale detail of the fake face over the real one (``detail_ratio``, median over the
  sampled frames): 1 is as detailed as the real face, ~0 a featureless blur.

Everything here works on arrays already in hand (landmarks, frames, masks): no model, no video
decoding. ``dflray.quality.measure.FaceMeasurer`` produces those arrays from videos and calls these
functions; ``dflray.quality.gates.apply_gates`` checks the resulting metrics against
``QualityConfig.gates`` (``dflray.config``, which also names the metrics in ``QUALITY_METRICS``).

Example:
    >>> m = np.zeros((40, 40), np.uint8); m[10:30, 10:30] = 255
    >>> img = np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    >>> seam_ratio(img, img, m), detail_ratio(img, img, m)
    (1.0, 1.0)
"""

from __future__ import annotations

import math
from itertools import zip_longest
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from dflray.face.align import get_transform_mat, transform_points
from dflray.face.pose import estimate_pitch_yaw_roll_robust

__all__ = [
    "BLUR_LADDER",
    "DETAIL_MATCH",
    "MASK_THRESHOLD",
    "band",
    "blur_like",
    "detail_ratio",
    "flicker",
    "head_pose",
    "luma",
    "pose_error",
    "seam",
    "seam_ratio",
    "similarity_nme",
]

# A mask pixel at or above half grey is inside the manipulation (masks are 0..255, feathered at the edge).
# A weak mask (a model's learned mask that never reaches full weight) is cut at half its own peak instead,
# so the manipulated region is never empty while pixels were changed.
MASK_THRESHOLD = 128
# Gradient floor (grey levels per pixel) added to both sides of the seam ratio, so a flat real band
# (zero gradient) gives a finite score.
_SEAM_EPS = 1.0
# Band kernel side at a face (mask) of 256 pixels; scaled with the mask's size.
_SEAM_WIDTH_AT_256 = 5
# A fake face with at least this share of the real face's detail needs no blur-matched reference in
# ``swap_success``: it is not soft enough for blur to move its descriptor.
DETAIL_MATCH = 0.9
# Gaussian sigmas, as shares of the mask's width, that ``blur_like`` tries in turn (bench/quality.py's blur
# control: 0.04 of the face width already turned 7 of 20 frames of a real face into the source by dlib).
BLUR_LADDER = (0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.035, 0.04, 0.05, 0.06, 0.08, 0.1)
# The pose estimate's mirror solution reports a roll clipped to exactly ±90° (see tests/unit/test_pose.py).
_FLIPPED_ROLL = 89.99
_OUTER_EYE_CORNERS = (36, 45)


# ------------------------------------------------------------------------------------ pure metrics


def _face_crop(mask: np.ndarray, *frames: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray] | None:
    """The mask's box padded by a fifth of its width (clipped to the frame), and the bool mask inside it."""
    m = _binary(mask)
    box = _bbox(m)
    if box is None:
        return None
    x1, y1, x2, y2 = box
    pad = max(8, (x2 - x1) // 5)
    h, w = m.shape
    sl = (slice(max(0, y1 - pad), min(h, y2 + pad)), slice(max(0, x1 - pad), min(w, x2 + pad)))
    for f in frames:
        if f.shape[:2] != m.shape:
            raise ValueError(f"frame and mask sizes differ: {f.shape[:2]} and {m.shape}")
    return sl, m[sl]


def _detail(gray: np.ndarray, inner: np.ndarray, sigma: float) -> float:
    """Variance of the Laplacian of ``gray`` inside ``inner`` after a Gaussian prefilter of ``sigma``."""
    g = cv2.GaussianBlur(gray, (0, 0), sigma)
    lap = cv2.Laplacian(g, cv2.CV_32F)[inner]
    return float(lap.var()) if lap.size else 0.0


def detail_ratio(fake: np.ndarray, real: np.ndarray, mask: np.ndarray) -> float | None:
    """Face-scale detail of a fake frame relative to the real one, inside the manipulation mask.

    The variance of the Laplacian after a Gaussian prefilter of 1.5% of the mask's width, inside the
    mask eroded by ~2% of its width (5 px at 256 px) so the paste's own edge does not count. The
    prefilter removes pixel noise and compression artefacts: unfiltered, a blur of a pixel or two already
    takes the ratio near 0.

    Args:
        fake: H×W×3 RGB uint8 fake frame (or H×W grey).
        real: the real frame it was made from.
        mask: H×W manipulation mask (uint8 0..255, feathered; see ``band`` for the threshold).

    Returns:
        fake / real detail: 1 is as detailed as the real face, ~0 a featureless blur (sharpened fakes
        exceed 1); None when the eroded mask is (nearly) empty or the real face has no detail.

    Raises:
        ValueError: when the sizes differ.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> real = cv2.resize(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), (96, 96))
        >>> mask = np.zeros((96, 96), np.uint8); mask[16:80, 16:80] = 255
        >>> detail_ratio(real, real, mask), detail_ratio(cv2.GaussianBlur(real, (0, 0), 3), real, mask) < 0.2
        (1.0, True)
    """
    crop = _face_crop(mask, fake, real)
    if crop is None:
        return None
    sl, m = crop
    xs = np.flatnonzero(m.any(0))
    width = xs[-1] - xs[0] + 1
    # Erode by ~2% of the mask's width (5 px at 256 px), so the paste's own edge does not count; a mask too
    # thin or broken up for that (a weak learned mask) is read as it is.
    k = max(3, int(round(0.04 * width)) | 1)
    inner = cv2.erode(m.astype(np.uint8), np.ones((k, k), np.uint8)) > 0
    if inner.sum() < 100:
        inner = m
        if inner.sum() < 100:
            return None
    sigma = max(1.0, 0.015 * width)
    r = _detail(luma(real[sl]), inner, sigma)
    return _detail(luma(fake[sl]), inner, sigma) / r if r > 0 else None


def blur_like(real: np.ndarray, mask: np.ndarray, detail: float,
              ladder: Sequence[float] = BLUR_LADDER) -> tuple[np.ndarray, float]:
    """The real frame with its face blurred to a given detail: what a fake that soft would be without a swap.

    Tries the Gaussian sigmas of ``ladder`` (shares of the mask's width) in turn and keeps the first whose
    ``detail_ratio`` against the real frame is at most ``detail``; the blur is blended in through the
    mask (feathered by a sigma of its own), as a merge pastes its face. ``swap_success`` judges a soft fake
    against this copy as well as against the sharp real face.

    Args:
        real: H×W×3 RGB uint8 real frame.
        mask: its H×W manipulation mask (as in ``detail_ratio``).
        detail: the fake's ``detail_ratio``; at or above 1 the real frame comes back unchanged.
        ladder: ascending sigmas as shares of the mask's width (the last is used when none is soft enough).

    Returns:
        ``(frame, share)``: the blurred copy (uint8, same shape) and the sigma share used (0.0: unchanged).

    Raises:
        ValueError: when the sizes differ or the ladder is empty.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> real = cv2.resize(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8), (96, 96))
        >>> mask = np.zeros((96, 96), np.uint8); mask[16:80, 16:80] = 255
        >>> soft, share = blur_like(real, mask, 0.3)
        >>> share > 0 and detail_ratio(soft, real, mask) <= 0.3
        True
    """
    if not len(ladder):
        raise ValueError("ladder must not be empty")
    real = np.asarray(real)
    crop = _face_crop(mask, real)
    if crop is None or detail >= 1.0:
        return real.copy(), 0.0
    sl, m = crop
    xs = np.flatnonzero(m.any(0))
    width = float(xs[-1] - xs[0] + 1)
    alpha = cv2.GaussianBlur(m.astype(np.float32), (0, 0), max(1.0, 0.02 * width))[..., None]
    part = real[sl].astype(np.float32)
    out = real.copy()
    for share in ladder:
        blurred = cv2.GaussianBlur(part, (0, 0), max(0.3, share * width))
        out[sl] = np.clip(part * (1 - alpha) + blurred * alpha + 0.5, 0, 255).astype(np.uint8)
        got = detail_ratio(out, real, mask)
        if got is None or got <= detail:
            break
    return out, float(share)


def _landmarks(lm: np.ndarray, name: str) -> np.ndarray:
    lm = np.asarray(lm, np.float64)
    if lm.shape == (136,):
        lm = lm.reshape(68, 2)
    if lm.shape != (68, 2):
        raise ValueError(f"{name} must be (68, 2) landmarks, got shape {lm.shape}")
    if not np.isfinite(lm).all():
        raise ValueError(f"{name} must be finite")
    return lm


def _pose(landmarks: np.ndarray, face_type: str, size: int) -> tuple[float, float, float, bool]:
    """(yaw, pitch, frame roll) in degrees, and whether solvePnP took the mirror solution."""
    lm = _landmarks(landmarks, "landmarks")
    mat = get_transform_mat(lm, size, face_type)
    pitch, yaw, roll = estimate_pitch_yaw_roll_robust(transform_points(lm, mat).astype(np.float32), size)
    flipped = abs(math.degrees(roll)) >= _FLIPPED_ROLL
    # mat maps frame to crop; its rotation angle is the frame tilt the crop took out.
    align_angle = math.atan2(mat[1, 0], mat[0, 0])
    roll_frame = (math.degrees(roll - align_angle) + 180.0) % 360.0 - 180.0
    return math.degrees(yaw), math.degrees(pitch), (180.0 if roll_frame == -180.0 else roll_frame), flipped


def head_pose(landmarks: np.ndarray, face_type: str = "whole_face", size: int = 512) -> tuple[float, float, float]:
    """Head pose of a face in a frame, in degrees: ``(yaw, pitch, roll)``.

    Yaw and pitch are the faceset's (DFL's solvePnP on the aligned crop, ``extract.stages.face_rows``).
    The aligned crop has the in-plane rotation taken out, so its roll is only the residual; here the
    alignment's own rotation is added back, so roll is the head's tilt in the frame. (Rotating the image
    about the crop camera's principal point composes a rotation about the optical axis with the head's
    rotation, which changes the z Euler angle by exactly that angle and leaves x and y alone.)

    Args:
        landmarks: (68, 2) landmarks in frame pixels.
        face_type: crop type the pose is estimated in (the faceset's ``align.face_type``).
        size: crop side (the faceset's ``align.size``).

    Returns:
        ``(yaw, pitch, roll)`` in degrees; roll in (-180, 180].

    Raises:
        ValueError: for landmarks that are not a finite (68, 2) array or degenerate.

    Example:
        >>> yaw, pitch, roll = head_pose(landmarks)  # doctest: +SKIP
    """
    return _pose(landmarks, face_type, size)[:3]


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


def pose_error(lm_a: np.ndarray, lm_b: np.ndarray, face_type: str = "whole_face", size: int = 512) -> float:
    """Mean absolute yaw, pitch and roll difference (degrees) between two faces given by frame landmarks.

    Args:
        lm_a: (68, 2) landmarks of one face (the fake's), frame pixels.
        lm_b: (68, 2) landmarks of the other (the real destination face).
        face_type: crop type the pose is estimated in, see ``head_pose``.
        size: crop side, see ``head_pose``.

    Returns:
        ``mean(|Δyaw|, |Δpitch|, |Δroll|)`` in degrees (angles compared on the circle).

    Raises:
        ValueError: for bad landmarks.

    Example:
        >>> pose_error(lm, lm)  # doctest: +SKIP
        0.0
    """
    pa_, pb = head_pose(lm_a, face_type, size), head_pose(lm_b, face_type, size)
    return float(np.mean([_angle_diff(x, y) for x, y in zip(pa_, pb)]))


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares similarity (Umeyama 1991, no reflection) taking src points onto dst."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var = (s_c ** 2).sum() / len(src)
    if var <= 0:
        raise ValueError("landmarks are degenerate: all points coincide")
    u, sv, vt = np.linalg.svd(d_c.T @ s_c / len(src))
    sign = np.array([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rot = u @ np.diag(sign) @ vt
    scale = float((sv * sign).sum() / var)
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def similarity_nme(lm_a: np.ndarray, lm_b: np.ndarray) -> float:
    """Expression difference: landmark distance after a similarity alignment, in inter-ocular distances.

    ``lm_a`` is aligned onto ``lm_b`` by the least-squares similarity (rotation, uniform scale,
    translation) over all 68 points, so where the face is and how big it is do not count, only its
    shape. The mean point-to-point distance is divided by ``lm_b``'s outer-eye-corner distance
    (points 36 and 45), the normalised mean error (NME) of the 300-W landmark benchmark.

    Args:
        lm_a: (68, 2) landmarks (the fake face's).
        lm_b: (68, 2) reference landmarks (the destination face's).

    Returns:
        The NME, >= 0; 0 when the two differ by a similarity transform.

    Raises:
        ValueError: for landmarks that are not finite (68, 2) arrays, or coinciding eye corners.

    Example:
        >>> lm = np.random.default_rng(0).uniform(0, 100, (68, 2))
        >>> round(similarity_nme(lm * 2 + 5, lm), 6)
        0.0
    """
    a = _landmarks(lm_a, "lm_a")
    b = _landmarks(lm_b, "lm_b")
    iod = float(np.linalg.norm(b[_OUTER_EYE_CORNERS[0]] - b[_OUTER_EYE_CORNERS[1]]))
    if iod <= 0:
        raise ValueError("lm_b: outer eye corners (36, 45) coincide")
    m = _similarity(a, b)
    aligned = a @ m[:, :2].T + m[:, 2]
    return float(np.linalg.norm(aligned - b, axis=1).mean() / iod)


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` as float32 grey levels (a 2-D input is returned as float32).

    Raises:
        ValueError: for an array that is not H×W or H×W×3/4.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        return rgb.astype(np.float32)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"rgb must be H×W or H×W×3, got shape {rgb.shape}")
    x = rgb[..., :3].astype(np.float32)
    return x[..., 0] * 0.299 + x[..., 1] * 0.587 + x[..., 2] * 0.114


def _binary(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise ValueError(f"mask must be H×W, got shape {mask.shape}")
    if mask.dtype == bool:
        return mask
    peak = float(mask.max(initial=0))
    if np.issubdtype(mask.dtype, np.floating) and peak <= 1.0:
        return mask >= min(0.5, peak / 2) if peak > 0 else np.zeros(mask.shape, bool)
    return mask >= max(1.0, min(MASK_THRESHOLD, peak / 2))


def band(mask: np.ndarray, width: int) -> np.ndarray:
    """The pixels near a mask's edge: dilation minus erosion with a ``width``-pixel elliptical kernel.

    Args:
        mask: H×W mask (bool; uint8 0..255 thresholded at ``MASK_THRESHOLD``, or at half its peak when
            weaker; float 0..1 at 0.5, likewise).
        width: kernel side in pixels (made odd); the band reaches about ``width // 2`` pixels to each
            side of the edge.

    Returns:
        H×W bool mask of the band (empty for an empty or full mask).

    Raises:
        ValueError: for a mask that is not 2-D or a width < 1.

    Example:
        >>> m = np.zeros((20, 20), bool); m[5:15, 5:15] = True
        >>> int(band(m, 3).sum())
        76
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    m = _binary(mask).astype(np.uint8)
    k = int(width) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    # Border value 0 on erosion too: a mask that touches the frame edge has no seam there.
    grown = cv2.dilate(m, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    shrunk = cv2.erode(m, kernel, borderType=cv2.BORDER_REPLICATE)
    return (grown > 0) & ~(shrunk > 0)


def _bbox(m: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2), exclusive, of a bool mask's true pixels; None when empty."""
    rows = np.flatnonzero(m.any(1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _seam_width(m: np.ndarray) -> int:
    side = math.sqrt(float(m.sum()))  # the side of a square of the mask's area: a rotation-free face size
    return max(3, int(round(_SEAM_WIDTH_AT_256 * side / 256.0)))


def _check_pair(fake: np.ndarray, real: np.ndarray, mask: np.ndarray) -> None:
    if fake.shape[:2] != real.shape[:2] or fake.shape[:2] != np.shape(mask)[:2]:
        raise ValueError(f"fake, real and mask sizes differ: {fake.shape[:2]}, {real.shape[:2]}, "
                         f"{np.shape(mask)[:2]}")


def seam_ratio(fake: np.ndarray, real: np.ndarray, mask: np.ndarray, width: int | None = None) -> float | None:
    """Seam score of one frame: Sobel gradient magnitude of the fake's luma over the real's, on the mask edge.

    Args:
        fake: H×W×3 RGB (or H×W grey) fake frame.
        real: the same frame of the real video.
        mask: H×W manipulation mask (see ``band``).
        width: band kernel side; default ``5`` pixels at a 256-pixel mask (the side of a square of the
            mask's area), scaled with it, at least 3.

    Returns:
        ``(mean |∇Y_fake| + 1) / (mean |∇Y_real| + 1)`` over the band (the +1 grey level keeps a flat
        real band finite); ~1 means no visible edge. None when the mask is empty or covers the frame.

    Raises:
        ValueError: when the three sizes differ.
    """
    _check_pair(fake, real, mask)
    m = _binary(mask)
    if not m.any() or m.all():
        return None
    w = width if width is not None else _seam_width(m)
    x1, y1, x2, y2 = _bbox(m)
    pad = (w | 1) // 2 + 2  # the band and the 3×3 Sobel reach this far past the mask
    h_, w_ = m.shape
    x1, y1, x2, y2 = max(0, x1 - pad), max(0, y1 - pad), min(w_, x2 + pad), min(h_, y2 + pad)
    b = band(m[y1:y2, x1:x2], w)
    if not b.any():
        return None
    grads = []
    for img in (fake, real):
        y = luma(np.asarray(img)[y1:y2, x1:x2])
        gx = cv2.Sobel(y, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(y, cv2.CV_32F, 0, 1, ksize=3)
        grads.append(float(np.sqrt(gx * gx + gy * gy)[b].mean()))
    return (grads[0] + _SEAM_EPS) / (grads[1] + _SEAM_EPS)


def seam(fakes: Iterable[np.ndarray], reals: Iterable[np.ndarray], masks: Iterable[np.ndarray]) -> float | None:
    """Mean ``seam_ratio`` over frames (streamed; frames whose mask is empty or full are skipped).

    Args:
        fakes: fake frames, in order.
        reals: the real video's frames, in the same order.
        masks: manipulation masks, one per frame.

    Returns:
        The mean ratio (~1: no seam, > 1: a seam), or None when no frame had a mask edge.

    Raises:
        ValueError: when the three sequences differ in length or a frame's sizes differ.

    Example:
        >>> seam(fake_frames, real_frames, masks)  # doctest: +SKIP
        1.02
    """
    acc = _SeamAcc()
    for fake, real, m in _in_step(fakes, reals, masks):
        acc.add(fake, real, m)
    return acc.value()


def flicker(fakes: Iterable[np.ndarray], reals: Iterable[np.ndarray], masks: Iterable[np.ndarray]) -> float | None:
    """Temporal instability inside the mask, fake minus real, in grey levels (streamed; keeps one frame).

    For each pair of consecutive frames, over the union of both frames' masks, the mean ``|ΔY|`` (luma
    change) of the fake minus that of the real video on the same pixels; the pairs are averaged.
    Camera and face motion change both videos alike and cancel; what remains is the swap's own
    frame-to-frame change (a model's output that wobbles or flickers). Pixels outside the mask do not
    count.

    Args:
        fakes: fake frames (H×W×3 RGB or H×W grey), in order.
        reals: the real video's frames, same order.
        masks: manipulation masks, one per frame.

    Returns:
        ~0 for a fake as stable as the real video, > 0 for flicker; None when no consecutive pair has a
        non-empty mask.

    Raises:
        ValueError: when the sequences differ in length or a frame's sizes differ.

    Example:
        >>> frames = [np.full((8, 8, 3), v, np.uint8) for v in (10, 20, 30)]
        >>> masks = [np.full((8, 8), 255, np.uint8)] * 3
        >>> flicker(frames, frames, masks)
        0.0
    """
    acc = _FlickerAcc()
    for fake, real, m in _in_step(fakes, reals, masks):
        acc.add(fake, real, m)
    return acc.value()


def _in_step(*seqs: Iterable[Any], error: str = "fakes, reals and masks differ in length"):
    for items in zip_longest(*seqs):
        if any(x is None for x in items):
            raise ValueError(error)
        yield items


class _FlickerAcc:
    """Running flicker: keeps the previous frame's lumas and mask only."""

    def __init__(self):
        self._prev: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._sum = 0.0
        self._n = 0

    def add(self, fake: np.ndarray, real: np.ndarray, mask: np.ndarray) -> None:
        _check_pair(fake, real, mask)
        cur = (luma(fake), luma(real), _binary(mask))
        if self._prev is not None:
            yf0, yr0, m0 = self._prev
            union = m0 | cur[2]
            box = _bbox(union)
            if box is not None:
                x1, y1, x2, y2 = box
                u = union[y1:y2, x1:x2]
                df = np.abs(cur[0][y1:y2, x1:x2] - yf0[y1:y2, x1:x2])[u].mean()
                dr = np.abs(cur[1][y1:y2, x1:x2] - yr0[y1:y2, x1:x2])[u].mean()
                self._sum += float(df - dr)
                self._n += 1
        self._prev = cur

    def value(self) -> float | None:
        return self._sum / self._n if self._n else None


class _SeamAcc:
    def __init__(self):
        self._sum = 0.0
        self._n = 0

    def add(self, fake: np.ndarray, real: np.ndarray, mask: np.ndarray) -> None:
        r = seam_ratio(fake, real, mask)
        if r is not None:
            self._sum += r
            self._n += 1

    def value(self) -> float | None:
        return self._sum / self._n if self._n else None
