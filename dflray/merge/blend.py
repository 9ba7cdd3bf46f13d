"""Per-frame merge: crop the dst face, predict the swap, and blend it back as DeepFaceLab's merger.

One face is merged in two phases so a model can run on batches of faces from many frames:

1. ``prepare_crop(frame, landmarks, face_type, resolution, settings)`` cuts the dst face at the
   model's face type and resolution (the model input: float32 RGB R×R×3 in [0, 1]) and returns a
   ``MergeContext`` with the geometry needed to put it back.
2. The model maps the crop to (swapped face, its mask, dst mask), all at R×R.
3. ``paste(frame, context, face, face_mask, dst_mask, settings)`` builds the blend mask, recolours,
   warps the face back with the inverse matrix, blends and post-processes, and returns a
   ``MergeResult``: the output frame and the manipulation mask (where the swap changed the frame).

``merge_face`` does the three steps with a callable predictor. Several faces in a frame are merged
one after another, each ``paste`` taking the previous result's frame.

Semantics follow DFL's ``MergeMaskedFace`` step by step (see ``MergeSettings`` for the options):

- The working mask (``build_mask``) is resized to 4× the model resolution and eroded/dilated and
  blurred there (``refine_mask``), so ``erode`` and ``blur`` are pixels of that 4R mask: their effect
  relative to the face is the same for every frame size, and scales with the model resolution.
- The face, and its mask, are pasted with the output matrix, the model matrix scaled by
  ``1 + face_scale/100`` about the crop centre (a positive scale shrinks the pasted face, as DFL).
- Colour transfer (``dflray.merge.color``) recolours the predicted face toward the dst crop inside
  the mask, before pasting, except in the seamless modes, where it recolours the merged result.
- ``hist-match`` matches per-channel histograms (optionally inside the mask only) with DFL's
  threshold; ``seamless`` is OpenCV's Poisson blending (``cv2.seamlessClone``) under the mask
  thresholded at 0.1, then blended with the soft mask again.
- Post-processing (``dflray.merge.postprocess``): motion blur and sharpen on the re-cropped face;
  denoise and bicubic degrade on the background frame; colour degrade on the whole frame.

Images: frames are uint8 RGB (dflray's convention). Internally the merge works on float32 BGR in
[0, 1] like DFL, because colour transfer (Lab) needs BGR. Only a region of interest around the face is
processed, so a 1080p frame costs little more than a small one, except for the options that change
the whole frame (denoise, bicubic and colour degrade).

Where dflray departs from DFL (outputs otherwise agree with DFL's own code to 8-bit rounding):

- Post-processing re-crops the merged face with the output matrix, not the unscaled one, so the
  crop lines up with the mask; DFL pastes black where the mask leaves its crop (face_scale < 0).
- The motion-blur direction is turned into crop pixels; DFL applies the frame angle in the crop.
- ``raw-rgb`` clips the pasted square's bicubic weights to [0, 1], and its manipulation mask is that
  square (what changed), where DFL reports the face mask. ``original`` and ``raw-predict`` report an
  empty manipulation mask (nothing changed).
- Output bytes are rounded, not truncated; mask weights round up so any change is inside the mask.
- XSeg mask modes take the XSeg masks as inputs (``xseg_crops`` cuts the XSeg model's inputs,
  ``xseg_to_model`` brings its masks into the model crop). DFL cuts both at the model's face type;
  here they are cut at the XSeg model's own face type, the same when the two agree.
- No super resolution (it needs a network dflray does not ship).

Example:
    >>> crop, ctx = prepare_crop(frame, landmarks, "whole_face", 256, settings)  # doctest: +SKIP
    >>> face, face_mask, dst_mask = model(crop)  # doctest: +SKIP
    >>> result = paste(frame, ctx, face, face_mask, dst_mask, settings)  # doctest: +SKIP
    >>> result.frame.shape, result.mask.dtype  # doctest: +SKIP
    ((1080, 1920, 3), dtype('uint8'))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import cv2
import numpy as np

from dflray.config import MASK_MODES, XSEG_MASK_MODES, MergeSettings
from dflray.face.align import get_transform_mat, transform_points
from dflray.face.masks import hull_mask
from dflray.merge import postprocess as pp
from dflray.merge.color import color_transfer

__all__ = ["MASK_MODES", "MERGE_MODES", "XSEG_MASK_MODES", "MergeContext", "MergeResult", "build_mask",
           "color_hist_match", "crop_hull", "hist_match", "merge_face", "output_matrix", "paste", "prepare_crop",
           "refine_mask", "xseg_crops", "xseg_masks", "xseg_needs", "xseg_to_model"]

log = logging.getLogger(__name__)

MERGE_MODES = ("original", "overlay", "hist-match", "seamless", "seamless-hist-match", "raw-rgb", "raw-predict")
_NOISE = np.float32(1.0 / 255.0)  # DFL zeroes mask values below one 8-bit step
_MASK_SUBRES = 4  # DFL refines the mask at 4× the model resolution
_MARGIN = 3  # ROI margin in frame pixels: bicubic reaches 2 pixels past the crop's footprint

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


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


@dataclass(frozen=True)
class MergeResult:
    """One merged face.

    Attributes:
        frame: H×W×3 uint8 RGB output frame.
        mask: H×W uint8 manipulation mask, 0..255: the blend weight of the swapped face, nonzero
            exactly where the swap may have changed the frame (FaceForensics++-style). All zero for
            ``original`` and ``raw-predict``.
        raw: for ``raw-predict``, the R×R×3 uint8 RGB predicted face (the frame is returned as is).
        raw_mask: for ``raw-predict``, its R×R uint8 working mask.
        frame_degraded: True when denoise, bicubic or colour degrade also changed pixels outside
            ``mask`` (DFL applies them to the whole frame).
    """

    frame: np.ndarray
    mask: np.ndarray
    raw: np.ndarray | None = None
    raw_mask: np.ndarray | None = None
    frame_degraded: bool = False


# ------------------------------------------------------------------------------------ masks


def xseg_needs(mask_mode: str | MergeSettings) -> tuple[bool, bool]:
    """(needs XSeg-prd, needs XSeg-dst) for a mask mode."""
    mode = mask_mode.mask_mode if isinstance(mask_mode, MergeSettings) else mask_mode
    return "XSeg-prd" in mode, "XSeg-dst" in mode


def build_mask(mask_mode: str | MergeSettings, prd_mask: np.ndarray | None, dst_mask: np.ndarray | None,
               hull: np.ndarray | None, *, xseg_prd: np.ndarray | None = None, xseg_dst: np.ndarray | None = None,
               size: int | None = None) -> np.ndarray:
    """The working face mask in crop pixels for a DFL mask mode.

    Args:
        mask_mode: one of ``MASK_MODES`` (or the settings holding it): ``full`` (the whole crop),
            ``dst`` (landmark hull), ``learned-prd`` (the model's mask of the swapped face),
            ``learned-dst`` (its mask of dst), their product or their clipped sum; ``XSeg-prd``,
            ``XSeg-dst`` (the XSeg model's masks of the swapped face and of dst), their product, or the
            product of all four learned masks (``learned-prd*learned-dst*XSeg-prd*XSeg-dst``).
        prd_mask: R×R model mask of the swapped face, float in [0, 1].
        dst_mask: R×R model mask of the dst face.
        hull: R×R landmark hull mask of dst in the crop (``crop_hull``).
        xseg_prd: R×R XSeg mask of the swapped face in the model crop (``xseg_to_model``).
        xseg_dst: R×R XSeg mask of dst in the model crop.
        size: R, needed only for ``full`` when no mask is given.

    Returns:
        R×R float32 in [0, 1], values under 1/255 set to 0.

    Raises:
        ValueError: on an unknown mode or when the mode's input is missing.

    Example:
        >>> m = build_mask("learned-prd*learned-dst", np.full((4, 4), .5), np.full((4, 4), .5), None)
        >>> float(m[0, 0])
        0.25
        >>> float(build_mask("XSeg-prd*XSeg-dst", None, None, None, xseg_prd=np.full((4, 4), .5),
        ...                  xseg_dst=np.ones((4, 4)))[0, 0])
        0.5
    """
    mode = mask_mode.mask_mode if isinstance(mask_mode, MergeSettings) else mask_mode
    if mode not in MASK_MODES:
        raise ValueError(f"mask mode must be one of {', '.join(MASK_MODES)}, got {mode!r}")
    inputs = {"learned-prd": ("the model's mask of the swapped face", prd_mask),
              "learned-dst": ("the model's mask of dst", dst_mask), "dst": ("the landmark hull", hull),
              "XSeg-prd": ("the XSeg mask of the swapped face", xseg_prd), "XSeg-dst": ("the XSeg mask of dst", xseg_dst)}
    if mode == "full":
        terms: list[str] = []
    elif mode == "learned-prd+learned-dst":
        terms = ["learned-prd", "learned-dst"]
    else:
        terms = mode.split("*")
    missing = [inputs[t][0] for t in terms if inputs[t][1] is None]
    if missing:
        raise ValueError(f"mask mode {mode!r} needs {' and '.join(missing)}")
    given = [m for m in (prd_mask, dst_mask, hull, xseg_prd, xseg_dst) if m is not None]
    if not given and size is None:
        raise ValueError("mask mode 'full' needs a mask or the size")
    shape = np.asarray(given[0]).shape[:2] if given else (size, size)

    def get(term):
        return np.clip(np.asarray(inputs[term][1], np.float32).reshape(shape), 0, 1)

    if mode == "full":
        out = np.ones(shape, np.float32)
    elif mode == "learned-prd+learned-dst":
        out = np.minimum(get("learned-prd") + get("learned-dst"), 1)
    else:
        out = get(terms[0])
        for t in terms[1:]:
            out = out * get(t)
    out[out < _NOISE] = 0
    return out


def _affine3(mat: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(mat, np.float64), [0.0, 0.0, 1.0]])


def _xseg_mat(context: MergeContext, face_type: str, resolution: int) -> tuple[np.ndarray, bool]:
    """(frame → XSeg crop matrix, whether the XSeg crop is the model crop scaled)."""
    if face_type == context.face_type:  # get_transform_mat scales linearly with the output size
        scale = resolution / context.resolution
        return np.asarray(context.face_mat, np.float64) * scale, True
    return get_transform_mat(context.landmarks, resolution, face_type), False


def xseg_crops(frame: np.ndarray, context: MergeContext, face: np.ndarray | None, *, face_type: str,
               resolution: int, prd: bool = True, dst: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The XSeg model's inputs for one face: the swapped face and the dst face at XSeg's crop.

    DFL segments dst in a crop of the frame at the model's face type and the swapped face by resizing the
    prediction to XSeg's input. Here both crops are cut at the XSeg model's own face type (the one it
    was trained at), which is the same thing when the face types agree. When they differ, the swapped
    face is warped into XSeg's crop and laid over the dst crop, so XSeg sees it in its frame as trained.

    Args:
        frame: H×W×3 uint8 RGB dst frame (before any face of it is pasted).
        context: ``prepare_crop``'s context of this face.
        face: R×R×3 float RGB swapped face in [0, 1] (needed for ``prd``).
        face_type: the XSeg model's face type.
        resolution: the XSeg model's input side S.
        prd: cut the swapped face's crop.
        dst: cut the dst face's crop.

    Returns:
        (prd crop, dst crop): S×S×3 uint8 RGB each, or None where not asked for.

    Raises:
        ValueError: on a bad frame or a missing face when ``prd`` is asked for.
    """
    frame = _check_frame(frame)
    mat, scaled = _xseg_mat(context, face_type, resolution)
    s = int(resolution)
    dst_crop = None
    if dst or (prd and not scaled):
        dst_crop = cv2.warpAffine(frame, mat, (s, s), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT)
    prd_crop = None
    if prd:
        if face is None:
            raise ValueError("the XSeg-prd mask needs the swapped face")
        f = np.clip(np.asarray(face, np.float32), 0, 1)
        r = context.resolution
        if f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"face must be H×W×3 RGB, got {f.shape}")
        if f.shape[:2] != (r, r):
            f = cv2.resize(f, (r, r), interpolation=cv2.INTER_CUBIC)
        if scaled:
            warped = cv2.resize(f, (s, s), interpolation=cv2.INTER_CUBIC)
        else:
            to_xseg = (_affine3(mat) @ np.linalg.inv(_affine3(context.face_mat)))[:2]
            warped = cv2.warpAffine(f, to_xseg, (s, s), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
            cover = cv2.warpAffine(np.ones((r, r), np.float32), to_xseg, (s, s), flags=cv2.INTER_LINEAR)
            cover = np.clip(cover, 0, 1)[..., None]
            warped = warped * cover + (dst_crop.astype(np.float32) / np.float32(255)) * (1 - cover)
        prd_crop = _u8(warped)
    return prd_crop, (dst_crop if dst else None)


def xseg_masks(xseg: Any, items: list[tuple[np.ndarray, MergeContext, np.ndarray]], prd: bool,
               dst: bool) -> list[dict[str, np.ndarray]]:
    """XSeg masks in the model crop for (dst frame, context, swapped face) items, one model call per kind.

    Returns:
        Per item, ``paste``'s keyword arguments: ``xseg_prd`` and/or ``xseg_dst`` (R×R float32).
    """
    from dflray.models.xseg import predict_mask

    ft, s = xseg.face_type, xseg.resolution
    crops = [xseg_crops(rgb, ctx, face, face_type=ft, resolution=s, prd=prd, dst=dst) for rgb, ctx, face in items]
    out: list[dict[str, np.ndarray]] = [{} for _ in items]
    for j, key in enumerate(("xseg_prd", "xseg_dst")):
        if crops and crops[0][j] is not None:
            masks = predict_mask(xseg, np.stack([c[j] for c in crops]), batch_size=32)
            for o, m, (_, ctx, _) in zip(out, masks, items):
                o[key] = xseg_to_model(m, ctx, ft)
    return out


def xseg_to_model(mask: np.ndarray, context: MergeContext, face_type: str) -> np.ndarray:
    """An XSeg mask (S×S, XSeg's crop) in the model crop, R×R float32 in [0, 1].

    A bicubic resize when XSeg's face type is the model's (as DFL), else a warp through the frame;
    model-crop pixels outside XSeg's crop take the value at its nearest edge (XSeg saw nothing there; a
    zero would cut the face at the crop's edge). Train XSeg at a face type at least as wide as the model's.
    """
    mask = np.asarray(mask, np.float32)
    s, r = mask.shape[0], context.resolution
    mat, scaled = _xseg_mat(context, face_type, s)
    if scaled:
        out = mask if s == r else cv2.resize(mask, (r, r), interpolation=cv2.INTER_CUBIC)
    else:
        to_model = (_affine3(context.face_mat) @ np.linalg.inv(_affine3(mat)))[:2]
        out = cv2.warpAffine(mask, to_model, (r, r), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    return np.clip(out, 0, 1)


def refine_mask(mask: np.ndarray, erode: int = 0, blur: int = 0, *, subres: int = _MASK_SUBRES) -> np.ndarray:
    """Erodes (or dilates) and blurs a crop mask at ``subres`` × its resolution, in DFL's units.

    The R×R mask is resized (bicubic) to ``subres·R``; ``erode`` > 0 erodes it with an elliptical
    ``erode × erode`` kernel and ``erode`` < 0 dilates with ``|erode|``; a ``blur`` > 0 zeroes the
    outer ``blur // 2`` pixels (so the blur fades to 0 at the crop edge) and applies a Gaussian of
    that odd size. Dilation may grow past the crop edge only into a zero margin of R pixels, which
    is cut off again: the mask never leaves the predicted area.

    Args:
        mask: R×R float mask in [0, 1].
        erode: -400..400, pixels at ``subres·R`` (DFL's ``erode_mask_modifier``).
        blur: 0..400, pixels at ``subres·R`` (DFL's ``blur_mask_modifier``).
        subres: refinement scale (DFL: 4).

    Returns:
        (subres·R)×(subres·R) float32 mask in [0, 1].

    Example:
        >>> m = np.zeros((32, 32), np.float32); m[8:24, 8:24] = 1
        >>> bool(refine_mask(m, 20).sum() < refine_mask(m).sum() < refine_mask(m, -20).sum())
        True
    """
    mask = np.asarray(mask, np.float32)
    r = mask.shape[0]
    size = r * subres
    if mask.shape[:2] != (size, size):
        mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_CUBIC)
    if erode == 0 and blur <= 0:
        return np.clip(mask, 0, 1)
    pad = r
    m = np.pad(mask, pad)
    if erode:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (abs(erode), abs(erode)))
        m = cv2.erode(m, k) if erode > 0 else cv2.dilate(m, k)
    clip = pad + max(blur, 0) // 2
    m[:clip], m[-clip:], m[:, :clip], m[:, -clip:] = 0, 0, 0, 0
    if blur > 0:
        k = blur + (1 - blur % 2)
        m = cv2.GaussianBlur(m, (k, k), 0)
    return np.clip(m[pad:-pad, pad:-pad], 0, 1)


# ------------------------------------------------------------------------------------ histogram matching


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


def hist_match(src: np.ndarray, ref: np.ndarray, mask: np.ndarray | None = None, threshold: int = 255) -> np.ndarray:
    """DFL's merger hist-match: both images white outside the (binary) mask, then ``color_hist_match``.

    Outside the mask both images are set to 1.0, so the same number of white pixels sits at the top
    of both histograms and the face's own distribution is what gets matched.

    Args:
        src: H×W×3 float image to recolour.
        ref: H×W×3 float image whose histograms are taken.
        mask: H×W mask; values > 0 are inside. None matches the whole images.
        threshold: DFL's hist-match threshold, 0..255.

    Returns:
        H×W×3 float32.
    """
    src, ref = np.asarray(src, np.float32), np.asarray(ref, np.float32)
    if mask is not None:
        inside = (np.asarray(mask).reshape(src.shape[:2]) > 0)[..., None]
        src = np.where(inside, np.minimum(src, 1), np.float32(1))
        ref = np.where(inside, np.minimum(ref, 1), np.float32(1))
    return color_hist_match(src, ref, threshold)


# ------------------------------------------------------------------------------------ geometry


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


def _check_settings(settings: MergeSettings) -> None:
    if settings.mode not in MERGE_MODES:
        raise ValueError(f"mode must be one of {', '.join(MERGE_MODES)}, got {settings.mode!r}")
    if settings.mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode must be one of {', '.join(MASK_MODES)}, got {settings.mask_mode!r}")


# ------------------------------------------------------------------------------------ phases


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
    _check_settings(settings)
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


def _prediction(face, face_mask, dst_mask, r: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    face = np.asarray(face, np.float32)
    if face.ndim != 3 or face.shape[2] != 3:
        raise ValueError(f"face must be H×W×3 RGB, got {face.shape}")
    if face.shape[:2] != (r, r):
        face = cv2.resize(face, (r, r), interpolation=cv2.INTER_CUBIC)
    bgr = np.ascontiguousarray(np.clip(face[..., ::-1], 0, 1))

    def mask(m):
        if m is None:
            return None
        m = np.asarray(m, np.float32)
        m = m.reshape(m.shape[:2])
        if m.shape != (r, r):
            m = cv2.resize(m, (r, r), interpolation=cv2.INTER_CUBIC)
        return np.clip(m, 0, 1)

    return bgr, mask(face_mask), mask(dst_mask)


def _model_mask(m: np.ndarray | None, r: int) -> np.ndarray | None:
    if m is None:
        return None
    m = np.asarray(m, np.float32)
    m = m.reshape(m.shape[:2])
    if m.shape != (r, r):
        raise ValueError(f"XSeg masks must be in the model crop ({r}×{r}), got {m.shape}")
    return m


def _u8(img: np.ndarray) -> np.ndarray:
    return np.clip(img * np.float32(255) + np.float32(0.5), 0, 255).astype(np.uint8)


def _unchanged(frame: np.ndarray) -> MergeResult:
    return MergeResult(frame=frame.copy(), mask=np.zeros(frame.shape[:2], np.uint8))


def _recolor(mode: str, face: np.ndarray, dst: np.ndarray, mask: np.ndarray, rng) -> np.ndarray:
    return np.clip(color_transfer(mode, face, dst, mask=mask, rng=rng), 0, 1)


def _seamless(face: np.ndarray, bg: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """OpenCV Poisson cloning of ``face`` into ``bg`` under DFL's seamless mask; ``face`` on failure."""
    binary = None
    for i in range(1, 10):  # DFL: the first tenth-threshold that leaves any pixel
        above = mask > i / 10.0
        if above.any():
            binary = above.astype(np.uint8) * 255
            break
    if binary is None:
        return face
    x, y, w, h = cv2.boundingRect(binary)
    # Centre of the mask's own bounding box: seamlessClone then places the face where it already is.
    centre = (int(x + w / 2), int(y + h / 2))
    try:
        out = cv2.seamlessClone(_u8(face), _u8(bg), binary, centre, cv2.NORMAL_CLONE)
    except cv2.error as e:  # DFL also carries on with the plain paste when cloning fails
        log.warning("seamlessClone failed, pasting without it: %s", str(e).strip().splitlines()[-1])
        return face
    return out.astype(np.float32) / np.float32(255)


def paste(frame: np.ndarray, context: MergeContext, face: np.ndarray, face_mask: np.ndarray | None,
          dst_mask: np.ndarray | None, settings: MergeSettings, *, rng: np.random.Generator | int | None = None,
          motion: tuple[float, float] | None = None, xseg_prd: np.ndarray | None = None,
          xseg_dst: np.ndarray | None = None) -> MergeResult:
    """Blends a predicted face back into its frame (DFL's ``MergeMaskedFace`` after the prediction).

    Args:
        frame: H×W×3 uint8 RGB frame to paste into: the dst frame, or a previous ``paste``'s output
            when the frame has several faces.
        context: from ``prepare_crop`` on this frame's dst face.
        face: R×R×3 float RGB swapped face in [0, 1] (resized to R if it differs).
        face_mask: R×R model mask of the swapped face (``learned-prd``), or None if unused.
        dst_mask: R×R model mask of dst (``learned-dst``), or None if unused.
        settings: merge settings.
        rng: generator or seed for the random colour transfers (idt, sot, mix).
        motion: (power, degrees) of the face's motion (``dflray.merge.temporal.face_motion``), for
            ``motion_blur``; None means no motion.
        xseg_prd: R×R XSeg mask of the swapped face in the model crop (``XSeg-prd`` modes; see
            ``xseg_crops`` and ``xseg_to_model``), or None if unused.
        xseg_dst: R×R XSeg mask of dst in the model crop (``XSeg-dst`` modes), or None if unused.

    Returns:
        The ``MergeResult``. Outside ``result.mask`` the frame is unchanged pixel for pixel unless
        ``result.frame_degraded``.

    Raises:
        ValueError: on a frame of another size than the context's, bad arrays, or a mask mode whose
            masks are missing.
    """
    frame = _check_frame(frame)
    _check_settings(settings)
    if frame.shape[:2] != context.frame_shape:
        raise ValueError(f"frame is {frame.shape[:2]}, the context was made for {context.frame_shape}")
    mode = settings.mode
    if mode == "original":
        return _unchanged(frame)
    r = context.resolution
    prd, prd_mask, prd_dst_mask = _prediction(face, face_mask, dst_mask, r)
    raw = mode.startswith("raw")
    work = build_mask(settings.mask_mode, prd_mask, prd_dst_mask,
                      crop_hull(context) if settings.mask_mode == "dst" else None,
                      xseg_prd=_model_mask(xseg_prd, r), xseg_dst=_model_mask(xseg_dst, r), size=r)
    fine = refine_mask(work, 0 if raw else settings.erode, 0 if raw else settings.blur)
    work = cv2.resize(fine, (r, r), interpolation=cv2.INTER_CUBIC) if fine.shape[0] != r else fine

    if mode == "raw-predict":
        return MergeResult(frame=frame.copy(), mask=np.zeros(frame.shape[:2], np.uint8),
                           raw=_u8(prd[..., ::-1]), raw_mask=_u8(np.clip(work, 0, 1)))

    x0, y0, x1, y1 = context.roi
    if x1 <= x0 or y1 <= y0:
        return _unchanged(frame)
    size = (x1 - x0, y1 - y0)
    out_mat = _shift(context.output_mat, x0, y0)
    bg = np.ascontiguousarray(frame[y0:y1, x0:x1, ::-1]).astype(np.float32) / np.float32(255)

    if mode == "raw-rgb":  # the whole predicted square, unmasked
        square = np.clip(_to_frame(np.ones((r, r), np.float32), out_mat, size), 0, 1)
        square[square < _NOISE] = 0
        pasted = np.clip(_to_frame(prd, out_mat, size), 0, 1)
        out = bg * (1 - square[..., None]) + pasted * square[..., None]
        return _compose(frame, context.roi, np.clip(out, 0, 1), square, None)

    m = np.clip(_to_frame(fine, out_mat * (fine.shape[0] / r), size), 0, 1)
    m[m < _NOISE] = 0
    ys, xs = np.nonzero(m >= 0.1)
    if ys.size == 0 or min(xs.max() - xs.min(), ys.max() - ys.min()) < 4:
        return _unchanged(frame)  # DFL skips faces whose mask is smaller than 4 pixels across

    dst = np.ascontiguousarray(context.crop[..., ::-1])
    seamless = mode.startswith("seamless")
    ct = settings.color_transfer
    if ct != "none" and not seamless:
        prd = _recolor(ct, prd, dst, work, rng)
    if mode == "hist-match":
        prd = hist_match(prd, dst, work if settings.masked_hist_match else None, settings.hist_match_threshold)

    pasted = np.clip(_to_frame(prd, out_mat, size), 0, 1)
    if seamless:
        pasted = _seamless(pasted, bg, m)
    m3 = m[..., None]
    out = bg * (1 - m3) + pasted * m3

    sharpen = settings.sharpen_mode != "none" and settings.sharpen_amount != 0
    global_bg = settings.denoise != 0 or settings.bicubic_degrade != 0
    full_bg = None
    if (seamless and ct != "none") or mode == "seamless-hist-match" or settings.motion_blur != 0 or sharpen \
            or global_bg:
        # DFL re-crops the merged face, filters it in crop pixels and pastes it back. It re-crops with
        # the unscaled matrix; the output matrix is used here so the crop lines up with the mask
        # (identical at face_scale 0, and no black border when face_scale < 0).
        face_c = np.clip(_to_crop(out, out_mat, r), 0, 1)
        if seamless and ct != "none":
            face_c = _recolor(ct, face_c, dst, work, rng)
        if mode == "seamless-hist-match":
            face_c = color_hist_match(face_c, dst, settings.hist_match_threshold)
        if settings.motion_blur != 0 and motion is not None:
            power, deg = motion
            face_c = pp.motion_blur(face_c, float(power), pp._deg_in_crop(float(deg), out_mat),
                                    settings.motion_blur)
        if sharpen:
            face_c = pp.blursharpen(face_c, settings.sharpen_mode, settings.sharpen_amount)
        if global_bg:
            full_bg = np.ascontiguousarray(frame[..., ::-1]).astype(np.float32) / np.float32(255)
            full_bg = pp.bicubic_degrade(pp.denoise(full_bg, settings.denoise), settings.bicubic_degrade)
            bg = full_bg[y0:y1, x0:x1]
        out = np.clip(bg * (1 - m3) + _to_frame(face_c, out_mat, size) * m3, 0, 1)
    return _compose(frame, context.roi, out, m, full_bg, color_degrade=settings.color_degrade)


def _compose(frame: np.ndarray, roi: tuple[int, int, int, int], out_bgr: np.ndarray, weight: np.ndarray,
             full_bg: np.ndarray | None, color_degrade: int = 0) -> MergeResult:
    """Writes the ROI result into a copy of the frame; outside the mask the frame's own bytes are kept."""
    x0, y0, x1, y1 = roi
    mask = np.zeros(frame.shape[:2], np.uint8)
    # ceil keeps every pixel with a nonzero weight nonzero in the uint8 mask.
    mask[y0:y1, x0:x1] = np.ceil(np.clip(weight, 0, 1) * 255).astype(np.uint8)
    roi_rgb = _u8(out_bgr[..., ::-1])
    degraded = full_bg is not None or color_degrade != 0
    if full_bg is None:
        result = frame.copy()
        inside = mask[y0:y1, x0:x1, None] > 0
        result[y0:y1, x0:x1] = np.where(inside, roi_rgb, frame[y0:y1, x0:x1])
    else:
        result = _u8(full_bg[..., ::-1])
        result[y0:y1, x0:x1] = roi_rgb
    if color_degrade != 0:
        result = _u8(pp.color_degrade(result.astype(np.float32) / np.float32(255), color_degrade))
    return MergeResult(frame=result, mask=mask, frame_degraded=degraded)


def merge_face(frame: np.ndarray, landmarks: np.ndarray, face_type: str, resolution: int, predict: Predictor,
               settings: MergeSettings, *, rng: np.random.Generator | int | None = None,
               motion: tuple[float, float] | None = None, xseg: Any = None) -> MergeResult:
    """Swaps one face: ``prepare_crop``, ``predict``, ``paste``.

    Args:
        frame: H×W×3 uint8 RGB frame.
        landmarks: (68, 2) dst landmarks in frame pixels.
        face_type: the model's face type.
        resolution: the model's crop side R.
        predict: maps the R×R×3 float32 RGB crop in [0, 1] to (face R×R×3, face mask R×R, dst mask
            R×R), float32 in [0, 1].
        settings: merge settings.
        rng: generator or seed for the random colour transfers.
        motion: (power, degrees) of the face's motion for ``motion_blur``.
        xseg: an ``XSeg`` model (``dflray.models.xseg``) for the ``XSeg-*`` mask modes.

    Returns:
        The ``MergeResult``.

    Raises:
        ValueError: on bad inputs, or an ``XSeg-*`` mask mode without ``xseg``.

    Example:
        >>> identity = lambda crop: (crop, np.ones(crop.shape[:2]), np.ones(crop.shape[:2]))
        >>> res = merge_face(frame, lm, "full", 128, identity, MergeSettings())  # doctest: +SKIP
    """
    crop, ctx = prepare_crop(frame, landmarks, face_type, resolution, settings)
    if settings.mode == "original":
        return _unchanged(frame)
    face, face_mask, dst_mask = predict(crop)
    need_prd, need_dst = xseg_needs(settings)
    masks: dict[str, np.ndarray] = {}
    if need_prd or need_dst:
        if xseg is None:
            raise ValueError(f"mask mode {settings.mask_mode!r} needs an XSeg model")
        masks = xseg_masks(xseg, [(frame, ctx, face)], need_prd, need_dst)[0]
    return paste(frame, ctx, face, face_mask, dst_mask, settings, rng=rng, motion=motion, **masks)
