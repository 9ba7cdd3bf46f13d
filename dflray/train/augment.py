"""Training samples from faceset faces: DeepFaceLab's SampleProcessor, as pure numpy/OpenCV functions.

One faceset row (a stored crop, its frame landmarks and frame → crop matrix) becomes one training
sample at the model's face type and resolution, the way DFL's SAEHD builds its four outputs:

- ``warped``: the network input: cropped, colour-transferred toward a dst face (src only), randomly
  HSV-shifted, random-grid-warped, then randomly rotated/scaled/shifted and flipped.
- ``target``: the same crop, colour transfer, rotation/scale/shift and flip, without warp or HSV.
- ``target_mask``: the face mask (stored mask, else the landmark hull) under the same transform.
- ``target_mask_em``: DFL's eyes-and-mouth mask (blurred eye and inner-mouth hulls inside the face mask).

All four share one ``gen_warp_params`` draw, so image and masks always move together. Masks are built
at the stored crop's resolution and warped with linear interpolation as DFL does; images use cubic
interpolation with replicated borders. Arrays come out float32 CHW in [0, 1], RGB.

Example:
    >>> sample = make_sample(face, 128, "full", AugmentConfig(), np.random.default_rng(0),
    ...                      flip_allowed=True)  # doctest: +SKIP
    >>> sample["warped"].shape, sample["target_mask"].shape  # doctest: +SKIP
    ((3, 128, 128), (1, 128, 128))
"""

from __future__ import annotations

from typing import Any, Sequence

import cv2
import numpy as np

from dflray.config import FACE_TYPE_ORDER, AugmentConfig
from dflray.face.align import get_transform_mat, transform_points
from dflray.face.color import color_transfer
from dflray.face.masks import hull_mask

__all__ = ["SAMPLE_KEYS", "eyes_mouth_mask", "gen_warp_params", "make_batch", "make_sample", "random_hsv_shift",
           "train_crop_matrix", "uniform_yaw_weights", "warp_by_params", "yaw_bin_index"]

_CHANNELS = {"warped": 3, "target": 3, "target_mask": 1, "target_mask_em": 1}
SAMPLE_KEYS = tuple(_CHANNELS)  # what make_sample / make_batch return
_MIN_WORK_SIZE = 64  # DFL warps smaller samples at 64 px and resizes back
_FLIP_PROBABILITY = 0.4  # DFL: randint(10) < 4


# ------------------------------------------------------------------------------------ geometry


def _as_mat(mat: np.ndarray) -> np.ndarray:
    mat = np.asarray(mat, dtype=np.float64)
    if mat.size != 6:
        raise ValueError(f"align_mat must have 6 values (2×3), got shape {mat.shape}")
    return mat.reshape(2, 3)


def _as_landmarks(landmarks: np.ndarray) -> np.ndarray:
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.size != 136:
        raise ValueError(f"landmarks must have 136 values (68×2), got shape {landmarks.shape}")
    return landmarks.reshape(68, 2)


def train_crop_matrix(landmarks68: np.ndarray, align_mat: np.ndarray, resolution: int, face_type: str, *,
                      stored_face_type: str | None = None) -> np.ndarray:
    """Affine matrix from the stored faceset crop to the training crop.

    The training crop is ``get_transform_mat(landmarks, resolution, face_type)`` of the frame; the
    stored crop is the frame under ``align_mat``; so stored crop → frame → training crop.

    Args:
        landmarks68: 68 landmarks in frame pixels, (68, 2) or flat (136,).
        align_mat: the stored frame → crop matrix, (2, 3) or flat (6,).
        resolution: training crop side in pixels.
        face_type: the model's face type.
        stored_face_type: the faceset's face type; when given, a wider ``face_type`` is refused.

    Returns:
        (2, 3) float64 matrix for ``cv2.warpAffine(stored_crop, mat, (resolution, resolution))``.

    Raises:
        ValueError: if ``face_type`` is wider than ``stored_face_type`` (the crop lacks those pixels),
            or on malformed inputs.

    Example:
        >>> mat = train_crop_matrix(lm, row["align_mat"], 128, "full", stored_face_type="whole_face")  # doctest: +SKIP
    """
    if stored_face_type is not None:
        for name in (face_type, stored_face_type):
            if name not in FACE_TYPE_ORDER:
                raise ValueError(f"unknown face type {name!r}; known: {', '.join(FACE_TYPE_ORDER)}")
        if FACE_TYPE_ORDER[face_type] > FACE_TYPE_ORDER[stored_face_type]:
            raise ValueError(f"face type {face_type!r} is wider than the stored crop's {stored_face_type!r}")
    to_train = np.vstack([get_transform_mat(_as_landmarks(landmarks68), resolution, face_type), [0, 0, 1]])
    align = _as_mat(align_mat)
    lin_inv = np.linalg.inv(align[:, :2])
    crop_to_frame = np.vstack([np.hstack([lin_inv, -lin_inv @ align[:, 2:]]), [0, 0, 1]])
    return (to_train @ crop_to_frame)[:2].copy()


def _truncated_normal(rng: np.random.Generator, shape: tuple[int, ...], limit: float = 2.5) -> np.ndarray:
    """Standard normal redrawn outside ±limit, divided by limit: values in [-1, 1] (DFL's random_normal)."""
    x = rng.standard_normal(shape)
    while True:
        bad = np.abs(x) > limit
        if not bad.any():
            return x / limit
        x[bad] = rng.standard_normal(int(bad.sum()))


def _grid_maps(w: int, cell: int, jitter_a: np.ndarray, jitter_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel remap tables from a jittered coarse grid; jitters are in [-1, 1], 0.24 cell at most."""
    n = w // cell + 1
    grid = np.broadcast_to(np.linspace(0, w, n), (n, n))
    jitter = np.zeros((n, n))
    jitter[1:-1, 1:-1] = jitter_a
    jitter[1:-1, 1:-1] += jitter_b.T
    coarse_x = grid + jitter * (cell * 0.24)
    half = cell // 2
    # Bilinear upsampling to w + cell, trimmed by half a cell each side, as DFL does.
    mapx = cv2.resize(coarse_x, (w + cell, w + cell))[half:-half, half:-half].astype(np.float32)
    return mapx, np.ascontiguousarray(mapx.T)


def gen_warp_params(resolution: int, rng: np.random.Generator, flip: bool = False, rotation: float = 10.0,
                    scale: float = 0.15, shift: float = 0.05) -> dict[str, Any]:
    """Draws one sample's random grid warp, affine transform and flip (DFL's ``gen_warp_params``).

    The warp is a coarse grid (cell ``w/2``, ``w/4`` or ``w/8``, chosen uniformly) whose inner
    points are jittered by a truncated normal of at most 0.24 cells, bilinearly upsampled to a
    per-pixel map. As in DFL, where ``mapy`` is a view of ``mapx.T`` when both are jittered, the x and
    y maps are transposes of each other and each jitter is the sum of two draws. The affine part
    rotates by ``U(-rotation, rotation)`` degrees and scales by ``U(1 / (1 + scale), 1 + scale)``
    about the centre, then shifts by ``U(-shift, shift)`` crop widths in x and y. A flip happens with
    probability 0.4 when ``flip``. Every call draws the same amount from ``rng``, whatever the options.

    Args:
        resolution: sample side in pixels (below 64 the warp runs at 64 and is resized back).
        rng: random generator.
        flip: allow a random horizontal flip.
        rotation: rotation range in degrees.
        scale: scale range (SAEHD: 0.15; DFL's SampleProcessor default 0.05).
        shift: shift range as a fraction of the crop.

    Returns:
        Params for ``warp_by_params``: ``mapx``, ``mapy`` (float32 maps), ``rmat`` (2×3), ``flip``,
        ``resolution``, ``work_size`` and the drawn ``rotation``, ``scale``, ``tx``, ``ty``,
        ``cell_size``.

    Example:
        >>> p = gen_warp_params(64, np.random.default_rng(0), flip=True)
        >>> p["mapx"].shape, p["rmat"].shape
        ((64, 64), (2, 3))
    """
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    w = max(int(resolution), _MIN_WORK_SIZE)
    angle = rng.uniform(-rotation, rotation)
    zoom = rng.uniform(1.0 / (1.0 + scale), 1.0 + scale)
    tx, ty = rng.uniform(-shift, shift), rng.uniform(-shift, shift)
    do_flip = bool(rng.random() < _FLIP_PROBABILITY) and flip

    cell = w // 2 ** int(rng.integers(1, 4))
    inner = (w // cell - 1,) * 2
    mapx, mapy = _grid_maps(w, cell, _truncated_normal(rng, inner), _truncated_normal(rng, inner))

    rmat = cv2.getRotationMatrix2D((w // 2, w // 2), angle, zoom)
    rmat[:, 2] += (tx * w, ty * w)
    return {"mapx": mapx, "mapy": mapy, "rmat": rmat, "flip": do_flip, "resolution": int(resolution),
            "work_size": w, "rotation": angle, "scale": zoom, "tx": tx, "ty": ty, "cell_size": cell}


def warp_by_params(params: dict[str, Any], img: np.ndarray, can_warp: bool, can_transform: bool, can_flip: bool,
                   border_replicate: bool, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Applies ``gen_warp_params``' draw to one image: grid warp, then affine, then flip.

    Args:
        params: from ``gen_warp_params``.
        img: H×W or H×W×C image of the params' resolution.
        can_warp: apply the random grid warp (its own border is black, as in DFL).
        can_transform: apply the rotation/scale/shift.
        can_flip: apply the flip if one was drawn.
        border_replicate: replicate the edge under the affine transform (images); else black (masks).
        interpolation: cv2 flag; DFL uses cubic for images and linear for masks.

    Returns:
        The image, same shape and dtype.

    Example:
        >>> p = gen_warp_params(64, np.random.default_rng(0))
        >>> warp_by_params(p, np.zeros((64, 64, 3), np.float32), True, True, True, True).shape
        (64, 64, 3)
    """
    res, w = params["resolution"], params["work_size"]
    if img.shape[:2] != (res, res):
        raise ValueError(f"img must be {res}×{res}, got {img.shape[:2]}")
    shape = img.shape
    resized = (can_warp or can_transform) and w != res
    if resized:
        img = cv2.resize(img, (w, w), interpolation=interpolation)
    if can_warp:
        img = cv2.remap(img, params["mapx"], params["mapy"], interpolation)
    if can_transform:
        border = cv2.BORDER_REPLICATE if border_replicate else cv2.BORDER_CONSTANT
        img = cv2.warpAffine(img, params["rmat"], (w, w), borderMode=border, flags=interpolation)
    if resized:
        img = cv2.resize(img, (res, res), interpolation=interpolation)
    img = img.reshape(shape)  # cv2 drops a trailing channel of 1
    if can_flip and params["flip"]:
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


# ------------------------------------------------------------------------------------ colour and masks


def random_hsv_shift(img: np.ndarray, rng: np.random.Generator, power: float) -> np.ndarray:
    """DFL's ``random_hsv_shift_amount``: random hue, saturation and value offsets.

    Hue moves by a whole number of degrees in ``±max(1, int(180 * power))``; saturation and value by
    ``U(-power/2, power/2)`` each, clipped to [0, 1].

    Args:
        img: RGB float32 image in [0, 1].
        rng: random generator.
        power: DFL's ``random_hsv_power`` (0..0.3).

    Returns:
        The shifted image, float32 in [0, 1].

    Example:
        >>> random_hsv_shift(np.full((4, 4, 3), 0.5, np.float32), np.random.default_rng(0), 0.1).shape
        (4, 4, 3)
    """
    h_amount = max(1, int(360 * power * 0.5))
    hue, sat, val = cv2.split(cv2.cvtColor(img.astype(np.float32, copy=False), cv2.COLOR_RGB2HSV))
    hue = (hue + float(rng.integers(-h_amount, h_amount + 1))) % 360
    sat = np.clip(sat + float(rng.random() - 0.5) * power, 0, 1)
    val = np.clip(val + float(rng.random() - 0.5) * power, 0, 1)
    hsv = np.dstack([hue, sat, val]).astype(np.float32)
    return np.clip(cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), 0, 1)


def eyes_mouth_mask(shape: tuple[int, int], landmarks: np.ndarray) -> np.ndarray:
    """DFL's eyes-and-mouth mask: eye and inner-lip hulls, dilated by h/32 and blurred by h/16.

    Args:
        shape: (H, W) of the image the landmarks live in.
        landmarks: (68, 2) landmarks in that image's pixels.

    Returns:
        H×W float32 in [0, 1].

    Example:
        >>> eyes_mouth_mask((256, 256), crop_landmarks).max()  # doctest: +SKIP
        1.0
    """
    h, w = int(shape[0]), int(shape[1])
    lm = _as_landmarks(landmarks).astype(np.int64).astype(np.int32)  # DFL truncates to int
    dilate, blur = h // 32, h // 16
    blur += 1 - blur % 2
    out = np.zeros((h, w), np.float32)
    # DFL blurs eyes and mouth separately and sums them; they never overlap on a real face.
    for groups in ((lm[36:42], lm[42:48]), (lm[60:68],)):
        part = np.zeros((h, w), np.float32)
        for pts in groups:
            cv2.fillConvexPoly(part, cv2.convexHull(pts), 1.0)
        if dilate > 0:
            part = cv2.dilate(part, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (dilate, dilate)))
        out += cv2.GaussianBlur(part, (blur, blur), 0)
    return np.clip(out, 0, 1)


def _decode(data: Any) -> np.ndarray:
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim >= 2:
        return data  # already decoded
    img = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError("cannot decode image bytes")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.ndim == 3 else img


def _face_mask(face: dict[str, Any], shape: tuple[int, int], crop_lm: np.ndarray) -> np.ndarray:
    """The stored crop's face mask, float32 in [0, 1]: the stored mask if any, else the landmark hull."""
    if face.get("mask") is None:
        return hull_mask(shape, crop_lm).astype(np.float32)
    mask = _decode(face["mask"])
    mask = mask[..., 0] if mask.ndim == 3 else mask
    scale = np.iinfo(mask.dtype).max if np.issubdtype(mask.dtype, np.integer) else 1.0
    mask = mask.astype(np.float32) / np.float32(scale)
    if mask.shape != tuple(shape):
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return np.clip(mask, 0, 1)


def _warp_mask(mask: np.ndarray, mat: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Stored-crop mask → training crop → random transform; linear, black border, never grid-warped.

    Masks go one at a time: OpenCV interpolates 2-channel images slightly differently from 1-channel.
    """
    size = (params["resolution"],) * 2
    mask = cv2.warpAffine(mask, mat, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    return warp_by_params(params, mask, False, True, True, False, cv2.INTER_LINEAR)


def _bgr_transfer(mode: str, img: np.ndarray, ref: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = color_transfer(mode, np.ascontiguousarray(img[..., ::-1]), np.ascontiguousarray(ref[..., ::-1]), rng=rng)
    return np.ascontiguousarray(out[..., ::-1])


# ------------------------------------------------------------------------------------ samples


def make_sample(face: dict[str, Any], resolution: int, face_type: str, aug: AugmentConfig,
                rng: np.random.Generator, *, flip_allowed: bool, ct_ref: np.ndarray | None = None
                ) -> dict[str, np.ndarray]:
    """Builds one training sample from one faceset face.

    Args:
        face: ``image`` (encoded bytes) or ``crop`` (RGB uint8 H×W×3), ``landmarks`` (frame pixels,
            136 or 68×2), ``align_mat`` (6 or 2×3), ``face_type`` (the stored crop's), and optionally
            ``mask`` (encoded or uint8 0/255 mask of the stored crop; None: the landmark hull).
        resolution: training crop side.
        face_type: the model's face type (at most the stored one).
        aug: augmentation settings (``random_warp``, ``rotation``, ``scale``, ``shift``,
            ``random_hsv_power``, ``ct_mode``).
        rng: random generator; the same seed gives the same sample.
        flip_allowed: allow a random horizontal flip (DFL's random_src_flip / random_dst_flip).
        ct_ref: RGB uint8 training crop of a dst face to colour-transfer toward (resized to
            ``resolution`` if needed); used when ``aug.ct_mode`` is not ``none``.

    Returns:
        float32 CHW arrays in [0, 1]: ``warped`` and ``target`` (3×R×R, RGB), ``target_mask`` and
        ``target_mask_em`` (1×R×R).

    Raises:
        ValueError: if ``face_type`` is wider than the stored one, or the face is malformed.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> s = make_sample(row, 128, "full", AugmentConfig(), rng, flip_allowed=True)  # doctest: +SKIP
        >>> s["target"].shape  # doctest: +SKIP
        (3, 128, 128)
    """
    crop = _decode(face["crop"] if face.get("crop") is not None else face["image"])
    if crop.ndim != 3 or crop.shape[2] != 3:
        raise ValueError(f"face crop must be H×W×3, got {crop.shape}")
    lm, align = _as_landmarks(face["landmarks"]), _as_mat(face["align_mat"])
    mat = train_crop_matrix(lm, align, resolution, face_type, stored_face_type=str(face["face_type"]))
    size = (resolution, resolution)
    # Draw the geometry first so colour randomness never changes where the face lands.
    params = gen_warp_params(resolution, rng, flip_allowed, aug.rotation, aug.scale, aug.shift)

    img = cv2.warpAffine(crop.astype(np.float32) / 255.0, mat, size, flags=cv2.INTER_CUBIC,
                         borderMode=cv2.BORDER_REPLICATE)
    if aug.ct_mode != "none" and ct_ref is not None:
        ref = np.asarray(ct_ref).astype(np.float32) / 255.0
        if ref.shape[:2] != size:
            ref = cv2.resize(ref, size, interpolation=cv2.INTER_LINEAR)
        img = np.clip(_bgr_transfer(aug.ct_mode, img, ref, rng), 0, 1)
    inp = random_hsv_shift(img, rng, aug.random_hsv_power) if aug.random_hsv_power > 0 else img
    warped = warp_by_params(params, inp, aug.random_warp, True, True, True)
    target = warp_by_params(params, img, False, True, True, True)

    crop_lm = transform_points(lm, align)
    full = _face_mask(face, crop.shape[:2], crop_lm)
    em = eyes_mouth_mask(crop.shape[:2], crop_lm) * (full > 0)
    full, em = _warp_mask(full, mat, params), _warp_mask(em, mat, params)
    peak = em.max()
    if peak > 0:
        em = em / peak  # DFL renormalises the eyes-mouth mask to 1 after warping

    def chw(x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.clip(x, 0, 1).transpose(2, 0, 1), dtype=np.float32)

    return {"warped": chw(warped), "target": chw(target), "target_mask": chw(full[..., None]),
            "target_mask_em": chw(em[..., None])}


def make_batch(batch: dict[str, np.ndarray], resolution: int, face_type: str, aug: AugmentConfig,
               rng: np.random.Generator, flip_allowed: bool, ct_refs: Sequence[np.ndarray] | np.ndarray | None = None
               ) -> dict[str, np.ndarray]:
    """``make_sample`` over a Ray Data numpy batch, stacked to N×C×R×R.

    Args:
        batch: columns ``image`` (encoded bytes; or ``crop``, decoded RGB uint8), ``landmarks``
            (N×136), ``align_mat`` (N×6), ``face_type`` (N), optional ``mask`` (bytes or None each).
        resolution: training crop side.
        face_type: the model's face type.
        aug: augmentation settings.
        rng: random generator, consumed row by row.
        flip_allowed: allow random horizontal flips.
        ct_refs: pool of dst training crops (K×R×R×3 uint8 RGB); each row is colour-transferred toward
            one drawn at random, as DFL draws a random dst sample per src sample. None: no transfer.

    Returns:
        ``warped``, ``target`` (N×3×R×R), ``target_mask``, ``target_mask_em`` (N×1×R×R), float32.

    Example:
        >>> out = make_batch(batch, 128, "full", AugmentConfig(), np.random.default_rng(0), True)  # doctest: +SKIP
        >>> out["warped"].shape  # doctest: +SKIP
        (8, 3, 128, 128)
    """
    images = batch["crop"] if "crop" in batch else batch["image"]
    masks = batch.get("mask")
    use_ct = aug.ct_mode != "none" and ct_refs is not None and len(ct_refs) > 0
    samples = []
    for i in range(len(images)):
        face = {"crop" if "crop" in batch else "image": images[i], "landmarks": batch["landmarks"][i],
                "align_mat": batch["align_mat"][i], "face_type": batch["face_type"][i],
                "mask": None if masks is None else masks[i]}
        ref = ct_refs[int(rng.integers(len(ct_refs)))] if use_ct else None
        samples.append(make_sample(face, resolution, face_type, aug, rng, flip_allowed=flip_allowed, ct_ref=ref))
    return {k: np.stack([s[k] for s in samples]) if samples else np.zeros((0, c, resolution, resolution), np.float32)
            for k, c in _CHANNELS.items()}


# ------------------------------------------------------------------------------------ yaw sampling


def yaw_bin_index(yaw: np.ndarray, bins: int = 128, *, degrees: bool = True, limit: float = 1.2) -> np.ndarray:
    """DFL's uniform-yaw bin of each face (0..bins-1).

    DFL spaces ``bins`` bin starts evenly over ``[-limit, limit]`` radians (1.2: the widest yaw its
    landmarks give), on the negated yaw; the first bin also takes everything below, the last bin holds
    only ``>= limit``.

    Args:
        yaw: per-face yaw (the faceset's ``yaw`` column is in degrees).
        bins: bin count (DFL: 128).
        degrees: whether ``yaw`` is in degrees (else radians).
        limit: half-range in radians.

    Returns:
        int64 bin index per face.

    Raises:
        ValueError: on a non-finite yaw.

    Example:
        >>> yaw_bin_index(np.array([0.0, 80.0, -80.0])).tolist()
        [63, 0, 127]
    """
    yaw = np.asarray(yaw, dtype=np.float64)
    if not np.isfinite(yaw).all():
        raise ValueError("yaw must be finite")
    starts = np.linspace(-limit, limit, bins)
    flipped = -(np.deg2rad(yaw) if degrees else yaw)
    return np.clip(np.searchsorted(starts, flipped, side="right") - 1, 0, bins - 1).astype(np.int64)


def uniform_yaw_weights(yaw: np.ndarray, bins: int = 128, *, degrees: bool = True, limit: float = 1.2
                        ) -> np.ndarray:
    """Sampling weights that make every occupied yaw bin equally likely (DFL's ``uniform_yaw``).

    DFL picks a non-empty bin uniformly, then a face in it; a face's probability is therefore
    ``1 / (occupied bins * faces in its bin)``, which is its weight here.

    Args:
        yaw: per-face yaw (the faceset's ``yaw`` column is in degrees).
        bins: bin count (DFL: 128).
        degrees: whether ``yaw`` is in degrees (else radians).
        limit: half-range in radians (DFL: 1.2).

    Returns:
        float64 weights summing to 1 (empty input: empty array).

    Example:
        >>> uniform_yaw_weights(np.array([0.0, 0.1, 0.2, 45.0])).round(3).tolist()
        [0.167, 0.167, 0.167, 0.5]
    """
    idx = yaw_bin_index(yaw, bins, degrees=degrees, limit=limit)
    if idx.size == 0:
        return np.zeros(0, np.float64)
    counts = np.bincount(idx, minlength=bins)
    return 1.0 / (np.count_nonzero(counts) * counts[idx])

