"""Colour transfer: recolour a face toward a reference, as DeepFaceLab defines each mode.

DFL uses colour transfer in two places. Training (SAEHD's ``ct_mode``) recolours every src sample
toward a random dst face with ``rct``, ``lct``, ``mkl``, ``idt`` or ``sot``. The merger recolours the
predicted face toward the dst face it replaces; there ``rct`` gets the face mask and the ``-m`` modes
multiply both images by the (binarised) face mask first, so the statistics are those of the masked
images: the face plus a black surround. Both are reproduced here: ``color_transfer(mode, src, ref)``
is the training call and ``color_transfer(mode, src, ref, mask)`` the merger's.

All images are float32 BGR in [0, 1], H×W×3 (the channel order matters for ``rct`` and ``mix``, which
work in Lab). ``src`` and ``ref`` may differ in size unless a mask is given. Every function returns a
new float32 image clipped to [0, 1].

- ``rct``: Reinhard et al. 2001, per-channel mean and standard deviation matched in Lab.
- ``lct``: linear transfer ``x -> Cr^½ Cs^-½ (x - μs) + μr`` of the RGB covariance (PCA square roots).
- ``mkl``: Pitié & Kokaram 2007, the Monge-Kantorovitch linear map between the two Gaussians.
- ``idt``: Pitié et al. 2005, iterative distribution transfer: 1-D histogram matching along random
  rotations of colour space, relaxed.
- ``sot``: sliced optimal transport (Bonneel et al. 2015) with a bilateral-filtered displacement.
- ``mix``: light from ``lct`` on Lab L, chroma from ``sot`` on the fixed-lightness images.

``idt``, ``sot`` and ``mix`` are random; they take ``rng`` (a ``numpy.random.Generator`` or a seed)
so a result can be reproduced.

Every mode is a function registered under its DFL name with ``@register_color(name, train=...,
merge=...)``, which also says where the mode may be used; registering a name twice is an error.
``color_transfer`` dispatches through that registry, and the mode sets are derived from it:
``TRAIN_CT_MODES`` (training's), ``MERGE_CT_MODES`` (the merger's), ``CT_MODES`` (all), and
``TRAIN_CT_CHOICES`` / ``MERGE_CT_CHOICES``, the same with ``none`` first: what the configs accept
(``AugmentConfig.ct_mode``, ``MergeSettings.color_transfer``).

Example:
    >>> out = color_transfer("rct", src_bgr, dst_bgr)  # doctest: +SKIP
    >>> merged = color_transfer("mkl-m", predicted_bgr, dst_bgr, mask=face_mask)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

__all__ = ["CT_MODES", "MERGE_CT_CHOICES", "MERGE_CT_MODES", "TRAIN_CT_CHOICES", "TRAIN_CT_MODES", "ColorMode",
           "color_hist_match", "color_mode", "color_transfer", "idt", "lct", "mix", "mkl", "rct", "register_color", "sot"]

Rng = np.random.Generator | int | None


def _image(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] < 1:
        raise ValueError(f"{name} must be an H×W×C image, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{name} must be a float image in [0, 1], got {x.dtype}")
    return x.astype(np.float32, copy=False)


def _pixels(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, x.shape[2]).astype(np.float64)


# ------------------------------------------------------------------------------------ closed form


def rct(src: np.ndarray, ref: np.ndarray, *, src_mask: np.ndarray | None = None,
        ref_mask: np.ndarray | None = None, mask_cutoff: float = 0.5) -> np.ndarray:
    """Reinhard colour transfer: match each Lab channel's mean and standard deviation to ``ref``'s.

    With masks, pixels under ``mask_cutoff`` are set to black (Lab 0) before the statistics are taken,
    as in DFL's merger: they still count, so the statistics are those of the face on a black surround.

    Args:
        src: BGR float image to recolour.
        ref: BGR float image whose colours are taken.
        src_mask: H×W or H×W×1 mask of ``src``'s face, or None for all pixels.
        ref_mask: the same for ``ref``.
        mask_cutoff: mask values below this are outside.

    Returns:
        The recoloured ``src``, float32 in [0, 1] (DFL leaves out-of-gamut values; every DFL caller
        clips them later).

    Example:
        >>> out = rct(np.full((8, 8, 3), 0.2, np.float32), np.random.rand(8, 8, 3).astype(np.float32))
        >>> out.shape, out.dtype
        ((8, 8, 3), dtype('float32'))
    """
    src, ref = _image(src, "src"), _image(ref, "ref")
    src_lab = cv2.cvtColor(src, cv2.COLOR_BGR2LAB)
    ref_lab = cv2.cvtColor(ref, cv2.COLOR_BGR2LAB)

    def stats(lab: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        if mask is not None:
            mask = np.asarray(mask).reshape(lab.shape[:2])
            lab = np.where((mask < mask_cutoff)[..., None], np.float32(0), lab)
        return lab.mean(axis=(0, 1)), lab.std(axis=(0, 1))

    src_mean, src_std = stats(src_lab, src_mask)
    ref_mean, ref_std = stats(ref_lab, ref_mask)
    # DFL divides by the raw std (a flat src gives NaN); a flat src takes ref's mean instead.
    gain = ref_std / np.maximum(src_std, np.float32(1e-6))
    out = (src_lab - src_mean) * gain + ref_mean
    np.clip(out[..., 0], 0, 100, out=out[..., 0])
    np.clip(out[..., 1:], -127, 127, out=out[..., 1:])
    return np.clip(cv2.cvtColor(out.astype(np.float32), cv2.COLOR_LAB2BGR), 0, 1)


def _sqrtm_psd(cov: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(cov)
    return (vecs * np.sqrt(np.maximum(vals, 0.0))) @ vecs.T


def lct(src: np.ndarray, ref: np.ndarray, *, eps: float = 1e-5) -> np.ndarray:
    """Linear colour transfer: an affine map giving ``src`` ``ref``'s mean and covariance.

    The map is ``Cr^½ Cs^-½`` with symmetric (PCA) square roots, DFL's ``linear_color_transfer``
    in its default ``pca`` basis. Works for any channel count.

    Args:
        src: float image to recolour.
        ref: float image whose colours are taken.
        eps: ridge added to both covariances so a flat channel stays invertible.

    Returns:
        The recoloured ``src``, float32 in [0, 1].

    Example:
        >>> lct(np.random.rand(8, 8, 3).astype(np.float32), np.random.rand(6, 6, 3).astype(np.float32)).shape
        (8, 8, 3)
    """
    src, ref = _image(src, "src"), _image(ref, "ref")
    xs, xr = _pixels(src), _pixels(ref)
    mu_s, mu_r = xs.mean(axis=0), xr.mean(axis=0)
    ridge = eps * np.eye(xs.shape[1])
    cov_s = (xs - mu_s).T @ (xs - mu_s) / len(xs) + ridge
    cov_r = (xr - mu_r).T @ (xr - mu_r) / len(xr) + ridge
    lin = _sqrtm_psd(cov_r) @ np.linalg.inv(_sqrtm_psd(cov_s))
    out = (xs - mu_s) @ lin.T + mu_r
    return np.clip(out.reshape(src.shape), 0, 1).astype(np.float32)


def mkl(src: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Monge-Kantorovitch linear colour transfer (Pitié & Kokaram 2007).

    The map ``T = Cs^-½ (Cs^½ Cr Cs^½)^½ Cs^-½`` is the optimal transport between Gaussians fitted to
    the two colour clouds (sample covariances); eigenvalues are floored at machine epsilon as in DFL.

    Args:
        src: float image to recolour.
        ref: float image whose colours are taken.

    Returns:
        The recoloured ``src``, float32 in [0, 1].

    Example:
        >>> mkl(np.random.rand(8, 8, 3).astype(np.float32), np.random.rand(8, 8, 3).astype(np.float32)).dtype
        dtype('float32')
    """
    src, ref = _image(src, "src"), _image(ref, "ref")
    xs, xr = _pixels(src), _pixels(ref)
    eps = np.finfo(np.float64).eps
    vals, vecs = np.linalg.eigh(np.cov(xs.T))
    root = np.sqrt(np.maximum(vals, eps))
    half = vecs * root  # Us Ds: Cs^½ expressed in Cs's eigenbasis
    inner_vals, inner_vecs = np.linalg.eigh(half.T @ np.cov(xr.T) @ half)
    inner = (inner_vecs * np.sqrt(np.maximum(inner_vals, eps))) @ inner_vecs.T
    inv_half = vecs / root
    t = inv_half @ inner @ inv_half.T
    out = (xs - xs.mean(axis=0)) @ t + xr.mean(axis=0)
    return np.clip(out.reshape(src.shape).astype(np.float32), 0, 1)


# ------------------------------------------------------------------------------------ iterative


def _random_rotation(n: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-uniform rotation (det +1): QR of a Gaussian matrix with the sign ambiguity removed."""
    q, r = np.linalg.qr(rng.standard_normal((n, n)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _interp_uniform(x: np.ndarray, x0: float, step: float, fp: np.ndarray) -> np.ndarray:
    """``np.interp(x, x0 + step * arange(len(fp)), fp)`` without the binary search (evenly spaced xp)."""
    if step <= 0:
        return np.full_like(x, fp[-1])
    pos = np.clip((x - x0) / step, 0, len(fp) - 1)
    i = np.minimum(pos.astype(np.int64), len(fp) - 2)
    frac = pos - i
    return fp[i] * (1 - frac) + fp[i + 1] * frac


def idt(src: np.ndarray, ref: np.ndarray, *, bins: int = 256, n_rot: int = 20, rng: Rng = None) -> np.ndarray:
    """Iterative distribution transfer (Pitié, Kokaram & Dahyot 2005).

    Each of ``n_rot`` rounds rotates colour space at random, matches every rotated axis's histogram
    of ``src`` to ``ref``'s (``bins`` bins over their common range) and moves ``src`` ``1 / n_rot`` of
    the way there.

    Args:
        src: float image to recolour.
        ref: float image whose colours are taken.
        bins: histogram bins per axis.
        n_rot: rounds (random rotations); also the inverse relaxation.
        rng: generator or seed for the rotations.

    Returns:
        The recoloured ``src``, float32 in [0, 1].

    Example:
        >>> a, b = np.random.rand(8, 8, 3).astype(np.float32), np.random.rand(8, 8, 3).astype(np.float32)
        >>> np.array_equal(idt(a, b, rng=1), idt(a, b, rng=1))
        True
    """
    src, ref = _image(src, "src"), _image(ref, "ref")
    rng = np.random.default_rng(rng)
    d0, d1 = _pixels(src).T.astype(np.float32), _pixels(ref).T.astype(np.float32)
    relaxation = 1.0 / n_rot
    for _ in range(n_rot):
        rot = _random_rotation(d0.shape[0], rng).astype(np.float32)
        r0, r1 = rot @ d0, rot @ d1
        moved = np.empty_like(r0)
        for j in range(r0.shape[0]):
            lo, hi = min(r0[j].min(), r1[j].min()), max(r0[j].max(), r1[j].max())
            h0, edges = np.histogram(r0[j], bins=bins, range=(lo, hi))
            h1, _ = np.histogram(r1[j], bins=bins, range=(lo, hi))
            cdf0 = np.cumsum(h0).astype(np.float32) / max(h0.sum(), 1)
            cdf1 = np.cumsum(h1).astype(np.float32) / max(h1.sum(), 1)
            # Each bin's upper edge goes to where ref's CDF reaches the same level.
            matched = np.interp(cdf0, cdf1, edges[1:])
            moved[j] = _interp_uniform(r0[j], edges[1], (hi - lo) / bins, matched)
        d0 = d0 + relaxation * (rot.T @ (moved - r0))  # rot is orthogonal: its inverse is its transpose
    return np.clip(d0.T.reshape(src.shape), 0, 1).astype(np.float32)


def sot(src: np.ndarray, ref: np.ndarray, *, steps: int = 10, batch_size: int = 5, reg_sigma_xy: float = 16.0,
        reg_sigma_v: float = 5.0, rng: Rng = None, clip: bool = True) -> np.ndarray:
    """Sliced optimal transport colour transfer (DFL's ``color_transfer_sot``).

    Each step projects both colour clouds on ``batch_size`` random directions, pairs the sorted
    projections and moves every ``src`` pixel by the mean of its 1-D displacements. The total
    displacement is then smoothed by a bilateral filter (``reg_sigma_xy`` pixels, ``reg_sigma_v`` in
    image values) so neighbouring pixels move alike; ``reg_sigma_xy=0`` skips that.

    Args:
        src: float image to recolour (1 or 3 channels when regularised). Any value range.
        ref: float image whose colours are taken; if its pixel count differs from ``src``'s, its
            sorted projections are resampled (DFL requires equal shapes).
        steps: solver steps.
        batch_size: random directions per step.
        reg_sigma_xy: spatial sigma of the regularising filter, in pixels.
        reg_sigma_v: range sigma of the filter, in image units.
        rng: generator or seed for the directions.
        clip: clip the result to [0, 1] (DFL's callers do; ``mix`` works in 0..255 and does not).

    Returns:
        The recoloured ``src``, float32.

    Example:
        >>> a, b = np.random.rand(8, 8, 3).astype(np.float32), np.random.rand(8, 8, 3).astype(np.float32)
        >>> sot(a, b, rng=0).shape
        (8, 8, 3)
    """
    src, ref = _image(src, "src"), _image(ref, "ref")
    if src.shape[2] != ref.shape[2]:
        raise ValueError(f"src and ref channel counts differ: {src.shape[2]} vs {ref.shape[2]}")
    rng = np.random.default_rng(rng)
    h, w, c = src.shape
    x = src.reshape(-1, c).copy()
    y = ref.reshape(-1, c)
    quantiles = None if len(y) == len(x) else np.linspace(0, len(y) - 1, len(x))
    for _ in range(steps):
        advect = np.zeros_like(x)
        for _ in range(batch_size):
            direction = rng.standard_normal(c).astype(np.float32)
            direction /= np.linalg.norm(direction)
            proj_x, proj_y = x @ direction, np.sort(y @ direction)
            if quantiles is not None:
                proj_y = np.interp(quantiles, np.arange(len(proj_y)), proj_y).astype(np.float32)
            order = np.argsort(proj_x)
            advect[order] += (proj_y - proj_x[order])[:, None] * direction
        x += advect / batch_size
    out = x.reshape(h, w, c)
    if reg_sigma_xy != 0.0:
        diff = cv2.bilateralFilter(out - src, 0, reg_sigma_v, reg_sigma_xy)
        out = src + diff.reshape(h, w, c)
    return np.clip(out, 0, 1) if clip else out.astype(np.float32)


def mix(src: np.ndarray, ref: np.ndarray, *, rng: Rng = None) -> np.ndarray:
    """DFL's ``mix``: lightness by ``lct`` on Lab L, chroma by ``sot`` at a fixed lightness.

    Works on 8-bit Lab as DFL does (both images are quantised to uint8 first).

    Args:
        src: BGR float image to recolour.
        ref: BGR float image whose colours are taken.
        rng: generator or seed for ``sot``.

    Returns:
        The recoloured ``src``, float32 in [0, 1].

    Example:
        >>> a, b = np.random.rand(8, 8, 3).astype(np.float32), np.random.rand(8, 8, 3).astype(np.float32)
        >>> mix(a, b, rng=0).shape
        (8, 8, 3)
    """
    src, ref = _image(src, "src"), _image(ref, "ref")
    src_lab = cv2.cvtColor(np.clip(src * 255.0, 0, 255).astype(np.uint8), cv2.COLOR_BGR2LAB)
    ref_lab = cv2.cvtColor(np.clip(ref * 255.0, 0, 255).astype(np.uint8), cv2.COLOR_BGR2LAB)
    light = lct(src_lab[..., :1] / np.float32(255), ref_lab[..., :1] / np.float32(255))[..., 0]
    light = np.clip(light * 255.0, 0, 255).astype(np.uint8)
    # Chroma is matched at one mid lightness (8-bit L 100), so sot moves hue and saturation only.
    src_lab[..., 0] = 100
    ref_lab[..., 0] = 100
    src_chroma = cv2.cvtColor(src_lab, cv2.COLOR_LAB2BGR).astype(np.float32)
    ref_chroma = cv2.cvtColor(ref_lab, cv2.COLOR_LAB2BGR).astype(np.float32)
    moved = sot(src_chroma, ref_chroma, rng=rng, clip=False)
    out_lab = cv2.cvtColor(np.clip(moved, 0, 255).astype(np.uint8), cv2.COLOR_BGR2LAB)
    out_lab[..., 0] = light
    return (cv2.cvtColor(out_lab, cv2.COLOR_LAB2BGR) / np.float32(255)).astype(np.float32)


# ------------------------------------------------------------------------------------ registry

Transfer = Callable[[np.ndarray, np.ndarray, "np.ndarray | None", Rng], np.ndarray]


@dataclass(frozen=True)
class ColorMode:
    """One registered colour-transfer mode.

    Attributes:
        name: DFL's name of the mode (``rct``, ``mkl-m``, ...).
        transfer: ``(src, ref, area, rng) -> image``: validated float32 images, the binarised H×W×1 face
            mask (None without a mask) and the generator or seed of the random modes.
        train: training may use it (``AugmentConfig.ct_mode``).
        merge: the merger may use it (``MergeSettings.color_transfer``).
        masked: the mask shapes its statistics (``rct`` and the ``-m`` modes), so with a mask ``ref``
            must be ``src``'s size; the other modes ignore the mask.
    """

    name: str
    transfer: Transfer
    train: bool
    merge: bool
    masked: bool


_COLOR_MODES: dict[str, ColorMode] = {}


def register_color(name: str, *, train: bool = False, merge: bool = False, masked: bool = False):
    """Function decorator adding a colour-transfer mode under ``name``.

    Args:
        name: the mode's name, as configs spell it.
        train: training may use it.
        merge: the merger may use it.
        masked: the mask shapes its statistics (see ``ColorMode``).

    Raises:
        ValueError: when ``name`` is already registered, or the mode is neither for training nor merging.
    """

    def deco(fn: Transfer) -> Transfer:
        if name in _COLOR_MODES:
            raise ValueError(f"colour transfer mode {name!r} is already registered")
        if not (train or merge):
            raise ValueError(f"colour transfer mode {name!r} must be for training, merging or both")
        _COLOR_MODES[name] = ColorMode(name, fn, train, merge, masked)
        return fn

    return deco


def _masked(src: np.ndarray, ref: np.ndarray, area: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Both images times the face mask (DFL's ``-m`` modes); unchanged without a mask."""
    return (src, ref) if area is None else (src * area, ref * area)


@register_color("rct", train=True, merge=True, masked=True)
def _rct(src, ref, area, rng):
    return rct(src, ref, src_mask=area, ref_mask=area)


@register_color("lct", train=True, merge=True)
def _lct(src, ref, area, rng):
    return lct(src, ref)


@register_color("mkl", train=True, merge=True)
def _mkl(src, ref, area, rng):
    return mkl(src, ref)


@register_color("mkl-m", merge=True, masked=True)
def _mkl_m(src, ref, area, rng):
    return mkl(*_masked(src, ref, area))


@register_color("idt", train=True, merge=True)
def _idt(src, ref, area, rng):
    return idt(src, ref, rng=rng)


@register_color("idt-m", merge=True, masked=True)
def _idt_m(src, ref, area, rng):
    return idt(*_masked(src, ref, area), rng=rng)


@register_color("sot", train=True)
def _sot(src, ref, area, rng):
    return sot(src, ref, rng=rng)  # DFL's training settings: 10 steps of 5 directions


@register_color("sot-m", merge=True, masked=True)
def _sot_m(src, ref, area, rng):
    return sot(*_masked(src, ref, area), batch_size=30, rng=rng)  # the merger's: 10 steps of 30


@register_color("mix-m", merge=True, masked=True)
def _mix_m(src, ref, area, rng):
    return mix(*_masked(src, ref, area), rng=rng)


# The mode sets, in registration order; the configs import them (``none`` first: no transfer).
TRAIN_CT_MODES = tuple(m.name for m in _COLOR_MODES.values() if m.train)
MERGE_CT_MODES = tuple(m.name for m in _COLOR_MODES.values() if m.merge)
CT_MODES = tuple(dict.fromkeys(TRAIN_CT_MODES + MERGE_CT_MODES))  # every registered mode
TRAIN_CT_CHOICES = ("none", *TRAIN_CT_MODES)
MERGE_CT_CHOICES = ("none", *MERGE_CT_MODES)


def color_mode(mode: str) -> ColorMode:
    """The registered mode ``mode``.

    Raises:
        ValueError: on an unknown mode.
    """
    if mode not in _COLOR_MODES:
        raise ValueError(f"unknown colour transfer mode {mode!r}; known: {', '.join(CT_MODES)}")
    return _COLOR_MODES[mode]


# ------------------------------------------------------------------------------------ dispatch


def color_transfer(mode: str, src: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None, *,
                   rng: Rng = None) -> np.ndarray:
    """Recolours ``src`` toward ``ref`` with one of DFL's colour-transfer modes.

    Without a mask this is DFL's training ``color_transfer(ct_mode, src, ref)``. With one it is the
    merger's: the mask is binarised (any value > 0 is face, as the merger does), ``rct`` takes its
    statistics over the masked images, the ``-m`` modes run on ``src * mask`` and ``ref * mask``, and
    ``lct``, ``mkl`` and ``idt`` ignore it. An ``-m`` mode without a mask uses the whole image.
    Outside the mask the result is meaningless; the merger blends it away with the same mask.

    ``sot`` uses DFL's training settings (10 steps of 5 directions), ``sot-m`` the merger's (10 of 30).

    Args:
        mode: a registered mode (``CT_MODES``): rct, lct, mkl, mkl-m, idt, idt-m, sot, sot-m, mix-m.
        src: BGR float32 image in [0, 1] to recolour.
        ref: BGR float32 image in [0, 1] whose colours are taken (same H×W as ``src`` for a mask).
        mask: H×W or H×W×1 face mask of both images, or None.
        rng: generator or seed for the random modes (idt, sot, mix).

    Returns:
        The recoloured ``src``, float32 in [0, 1].

    Raises:
        ValueError: on an unknown mode, a non-float or non-H×W×C image, or a mask of another size.

    Example:
        >>> a, b = np.random.rand(8, 8, 3).astype(np.float32), np.random.rand(8, 8, 3).astype(np.float32)
        >>> color_transfer("mkl-m", a, b, mask=np.ones((8, 8), np.float32)).shape
        (8, 8, 3)
    """
    spec = color_mode(mode)
    src, ref = _image(src, "src"), _image(ref, "ref")
    area = None
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape[:2] != src.shape[:2] or mask.size != src.shape[0] * src.shape[1]:
            raise ValueError(f"mask must be H×W or H×W×1 of src's size {src.shape[:2]}, got {mask.shape}")
        if ref.shape[:2] != src.shape[:2] and spec.masked:
            raise ValueError(f"with a mask, ref must be src's size {src.shape[:2]}, got {ref.shape[:2]}")
        area = (mask.reshape(src.shape[:2]) > 0).astype(np.float32)[..., None]
    return spec.transfer(src, ref, area, rng)


# ------------------------------------------------------------------------------------ histogram matching
# DeepFaceLab's merger histogram matching (``hist-match`` modes and ``masked_hist_match``): a pure image
# function like the colour transfers; the merge's mode logic around it lives in ``dflray.merge.blend``.


def _channel_hist_match(src: np.ndarray, ref: np.ndarray, threshold: float) -> np.ndarray:
    """Histogram specification of one channel; ``threshold`` < 255 maps src's top to ref's lower quantile."""
    values, inverse, counts = np.unique(src.ravel(), return_inverse=True, return_counts=True)
    ref_values, ref_counts = np.unique(ref.ravel(), return_counts=True)
    src_q = np.cumsum(counts, dtype=np.float64) * (threshold / counts.sum())
    ref_q = np.cumsum(ref_counts, dtype=np.float64) * (255.0 / ref_counts.sum())
    return np.interp(src_q, ref_q, ref_values)[inverse.ravel()].reshape(src.shape)


def color_hist_match(src: np.ndarray, ref: np.ndarray, threshold: int = 255) -> np.ndarray:
    """Per-channel histogram matching of ``src`` to ``ref`` (DFL's ``color_hist_match``).

    Each value of ``src`` goes to the value of ``ref`` at the same cumulative quantile, with src's
    quantiles scaled by ``threshold / 255``: 255 is plain histogram matching, lower values map the
    whole of src into the lower part of ref's distribution (darker, fewer highlights).

    Example:
        >>> a = np.linspace(0, 1, 48, dtype=np.float32).reshape(4, 4, 3)
        >>> float(np.abs(color_hist_match(a, a) - a).max()) < 1e-6
        True
    """
    src, ref = np.asarray(src, np.float32), np.asarray(ref, np.float32)
    out = np.stack([_channel_hist_match(src[..., c], ref[..., c], threshold) for c in range(src.shape[2])], -1)
    return out.astype(np.float32)
