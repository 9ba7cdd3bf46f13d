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

Each merge mode is a function registered with ``@register_blend_mode(name)`` (twice is an error), its
name parsed there into a frozen ``BlendSpec``; the registry must hold exactly ``dflray.config.MERGE_MODES``
(checked on import). ``merge_spec(settings)`` gives the parsed modes of a setting (``MergeSpec``: its
``BlendSpec``, the ``MaskSpec`` of ``dflray.merge.masks``, the colour transfer); the code branches on them.

Semantics follow DFL's ``MergeMaskedFace`` step by step (see ``MergeSettings`` for the options):

- The working mask (``dflray.merge.masks.build_mask``) is resized to 4× the model resolution and
  eroded/dilated and blurred there (``refine_mask``), so ``erode`` and ``blur`` are pixels of that 4R mask: their effect
  relative to the face is the same for every frame size, and scales with the model resolution.
- The face, and its mask, are pasted with the output matrix, the model matrix scaled by
  ``1 + face_scale/100`` about the crop centre (a positive scale shrinks the pasted face, as DFL).
- Colour transfer (``dflray.face.color``) recolours the predicted face toward the dst crop inside
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
- XSeg masks are cut at the XSeg model's own face type (see ``dflray.merge.masks``).
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

from dflray.config import MASK_MODES, MERGE_MODES, XSEG_MASK_MODES, MergeSettings
from dflray.face.color import color_hist_match, color_transfer
from dflray.merge import postprocess as pp
from dflray.merge.geometry import (
    MergeContext,
    _check_frame,
    _check_modes,
    _shift,
    _to_crop,
    _to_frame,
    _u8,
    crop_hull,
    output_matrix,
    prepare_crop,
)
from dflray.merge.masks import (
    _NOISE,
    MaskSpec,
    build_mask,
    mask_spec,
    refine_mask,
    xseg_crops,
    xseg_masks,
    xseg_needs,
    xseg_to_model,
)

__all__ = ["MASK_MODES", "MERGE_MODES", "XSEG_MASK_MODES", "BlendSpec", "MergeContext", "MergeResult", "MergeSpec",
           "build_mask", "color_hist_match", "crop_hull", "hist_match", "merge_face", "merge_spec", "output_matrix",
           "paste", "prepare_crop", "refine_mask", "register_blend_mode", "xseg_crops", "xseg_masks", "xseg_needs",
           "xseg_to_model"]

log = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


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


# ------------------------------------------------------------------------------------ merge modes


@dataclass(frozen=True)
class BlendSpec:
    """A parsed merge mode.

    Attributes:
        swap: the swapped face is used; False for ``original`` (the frame passes through, no model runs).
        raw: the prediction as it comes, its mask neither eroded nor blurred and the face not recoloured
            (``raw-rgb``, ``raw-predict``).
        to_frame: the face is pasted into the frame; False for ``raw-predict``, which returns the crop.
        seamless: OpenCV Poisson blending, the colour transfer after it (``seamless*``).
        hist_match: histogram matching toward dst: of the face before it is pasted (``hist-match``), or
            of the seamless result (``seamless-hist-match``).
    """

    swap: bool = True
    raw: bool = False
    to_frame: bool = True
    seamless: bool = False
    hist_match: bool = False

    @property
    def mode(self) -> str:
        """The mode string this spec is parsed from."""
        if not self.swap:
            return "original"
        if self.raw:
            return "raw-rgb" if self.to_frame else "raw-predict"
        return "-".join([w for w, on in (("seamless", self.seamless), ("hist-match", self.hist_match)) if on]
                        or ["overlay"])


def _parse(mode: str) -> BlendSpec:
    """Parses a merge mode string: ``original``, ``overlay``, ``raw-rgb``, ``raw-predict``, or ``seamless``
    and/or ``hist-match`` joined by ``-``.

    Raises:
        ValueError: on a string of none of these forms.
    """
    fixed = {"original": BlendSpec(swap=False), "raw-rgb": BlendSpec(raw=True),
             "raw-predict": BlendSpec(raw=True, to_frame=False)}
    spec = fixed.get(mode) or BlendSpec(seamless=mode.startswith("seamless"), hist_match=mode.endswith("hist-match"))
    if spec.mode != mode:  # what does not print back as itself is none of the forms
        raise ValueError(f"merge mode {mode!r} is not original, overlay, raw-rgb, raw-predict or "
                         "[seamless-][hist-match]")
    return spec


@dataclass(frozen=True)
class _Job:
    """One ``paste`` call, as the merge mode functions take it."""

    frame: np.ndarray
    context: MergeContext
    face: Any
    face_mask: Any
    dst_mask: Any
    settings: MergeSettings
    spec: "MergeSpec"
    rng: Any
    motion: tuple[float, float] | None
    xseg_prd: Any
    xseg_dst: Any


BlendFn = Callable[[_Job], MergeResult]
_BLEND_MODES: dict[str, tuple[BlendSpec, BlendFn]] = {}


def register_blend_mode(mode: str):
    """Function decorator adding a merge mode: the function blends one ``paste`` call's face.

    Raises:
        ValueError: when ``mode`` is already registered or does not parse.
    """

    def deco(fn: BlendFn) -> BlendFn:
        if mode in _BLEND_MODES:
            raise ValueError(f"merge mode {mode!r} is already registered")
        _BLEND_MODES[mode] = (_parse(mode), fn)
        return fn

    return deco


@dataclass(frozen=True)
class MergeSpec:
    """The mode strings of one ``MergeSettings``, parsed.

    Attributes:
        blend: the merge mode's spec.
        mask: the mask mode's spec.
        color: the colour transfer mode (``dflray.face.color``), None for ``none``.
    """

    blend: BlendSpec
    mask: MaskSpec
    color: str | None


def merge_spec(settings: MergeSettings) -> MergeSpec:
    """The parsed merge, mask and colour modes of ``settings``.

    Raises:
        ValueError: on an unknown merge or mask mode.

    Example:
        >>> merge_spec(MergeSettings(mode="seamless")).blend.seamless
        True
    """
    _check_modes(settings)
    ct = settings.color_transfer
    return MergeSpec(_BLEND_MODES[settings.mode][0], mask_spec(settings.mask_mode), None if ct == "none" else ct)


# ------------------------------------------------------------------------------------ histogram matching


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


# ------------------------------------------------------------------------------------ phases


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
    spec = merge_spec(settings)
    if frame.shape[:2] != context.frame_shape:
        raise ValueError(f"frame is {frame.shape[:2]}, the context was made for {context.frame_shape}")
    job = _Job(frame, context, face, face_mask, dst_mask, settings, spec, rng, motion, xseg_prd, xseg_dst)
    return _BLEND_MODES[settings.mode][1](job)


def _working(job: _Job) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(BGR prediction, R×R working mask, its refined (4R)² version) of a job."""
    r, s, raw = job.context.resolution, job.settings, job.spec.blend.raw
    prd, prd_mask, prd_dst_mask = _prediction(job.face, job.face_mask, job.dst_mask, r)
    hull = crop_hull(job.context) if job.spec.mask.needs_hull else None
    work = build_mask(job.spec.mask, prd_mask, prd_dst_mask, hull,
                      xseg_prd=_model_mask(job.xseg_prd, r), xseg_dst=_model_mask(job.xseg_dst, r), size=r)
    fine = refine_mask(work, 0 if raw else s.erode, 0 if raw else s.blur)
    work = cv2.resize(fine, (r, r), interpolation=cv2.INTER_CUBIC) if fine.shape[0] != r else fine
    return prd, work, fine


def _roi(frame: np.ndarray, context: MergeContext) -> tuple[tuple[int, int], np.ndarray, np.ndarray] | None:
    """(size, paste matrix, BGR float background) of the frame region the face can touch; None off-frame."""
    x0, y0, x1, y1 = context.roi
    if x1 <= x0 or y1 <= y0:
        return None
    bg = np.ascontiguousarray(frame[y0:y1, x0:x1, ::-1]).astype(np.float32) / np.float32(255)
    return (x1 - x0, y1 - y0), _shift(context.output_mat, x0, y0), bg


@register_blend_mode("original")
def _original(job: _Job) -> MergeResult:
    return _unchanged(job.frame)


@register_blend_mode("raw-predict")
def _raw_predict(job: _Job) -> MergeResult:
    prd, work, _ = _working(job)
    return MergeResult(frame=job.frame.copy(), mask=np.zeros(job.frame.shape[:2], np.uint8),
                       raw=_u8(prd[..., ::-1]), raw_mask=_u8(np.clip(work, 0, 1)))


@register_blend_mode("raw-rgb")
def _raw_rgb(job: _Job) -> MergeResult:
    """The whole predicted square, unmasked (the mask is still built, so a missing input is an error)."""
    prd, _, _ = _working(job)
    frame, r = job.frame, job.context.resolution
    roi = _roi(frame, job.context)
    if roi is None:
        return _unchanged(frame)
    size, out_mat, bg = roi
    square = np.clip(_to_frame(np.ones((r, r), np.float32), out_mat, size), 0, 1)
    square[square < _NOISE] = 0
    pasted = np.clip(_to_frame(prd, out_mat, size), 0, 1)
    out = bg * (1 - square[..., None]) + pasted * square[..., None]
    return _compose(frame, job.context.roi, np.clip(out, 0, 1), square, None)


@register_blend_mode("seamless-hist-match")
@register_blend_mode("seamless")
@register_blend_mode("hist-match")
@register_blend_mode("overlay")
def _masked(job: _Job) -> MergeResult:
    """The face pasted under the refined mask, recoloured, histogram-matched or Poisson-blended per the spec."""
    prd, work, fine = _working(job)
    frame, context, settings, blend = job.frame, job.context, job.settings, job.spec.blend
    rng, r = job.rng, context.resolution
    roi = _roi(frame, context)
    if roi is None:
        return _unchanged(frame)
    size, out_mat, bg = roi

    m = np.clip(_to_frame(fine, out_mat * (fine.shape[0] / r), size), 0, 1)
    m[m < _NOISE] = 0
    ys, xs = np.nonzero(m >= 0.1)
    if ys.size == 0 or min(xs.max() - xs.min(), ys.max() - ys.min()) < 4:
        return _unchanged(frame)  # DFL skips faces whose mask is smaller than 4 pixels across

    dst = np.ascontiguousarray(context.crop[..., ::-1])
    seamless, ct = blend.seamless, job.spec.color
    if ct is not None and not seamless:
        prd = _recolor(ct, prd, dst, work, rng)
    if blend.hist_match and not seamless:
        prd = hist_match(prd, dst, work if settings.masked_hist_match else None, settings.hist_match_threshold)

    pasted = np.clip(_to_frame(prd, out_mat, size), 0, 1)
    if seamless:
        pasted = _seamless(pasted, bg, m)
    m3 = m[..., None]
    out = bg * (1 - m3) + pasted * m3

    sharpen = settings.sharpen_mode != "none" and settings.sharpen_amount != 0
    global_bg = settings.denoise != 0 or settings.bicubic_degrade != 0
    full_bg = None
    if (seamless and ct is not None) or (seamless and blend.hist_match) or settings.motion_blur != 0 or sharpen \
            or global_bg:
        # DFL re-crops the merged face, filters it in crop pixels and pastes it back. It re-crops with
        # the unscaled matrix; the output matrix is used here so the crop lines up with the mask
        # (identical at face_scale 0, and no black border when face_scale < 0).
        face_c = np.clip(_to_crop(out, out_mat, r), 0, 1)
        if seamless and ct is not None:
            face_c = _recolor(ct, face_c, dst, work, rng)
        if seamless and blend.hist_match:
            face_c = color_hist_match(face_c, dst, settings.hist_match_threshold)
        if settings.motion_blur != 0 and job.motion is not None:
            power, deg = job.motion
            face_c = pp.motion_blur(face_c, float(power), pp._deg_in_crop(float(deg), out_mat),
                                    settings.motion_blur)
        if sharpen:
            face_c = pp.blursharpen(face_c, settings.sharpen_mode, settings.sharpen_amount)
        if global_bg:
            full_bg = np.ascontiguousarray(frame[..., ::-1]).astype(np.float32) / np.float32(255)
            full_bg = pp.bicubic_degrade(pp.denoise(full_bg, settings.denoise), settings.bicubic_degrade)
            x0, y0, x1, y1 = context.roi
            bg = full_bg[y0:y1, x0:x1]
        out = np.clip(bg * (1 - m3) + _to_frame(face_c, out_mat, size) * m3, 0, 1)
    return _compose(frame, context.roi, out, m, full_bg, color_degrade=settings.color_degrade)


def _check_vocabulary() -> None:
    """The registry must implement exactly the config's merge modes (a mode added on one side fails on import)."""
    if set(_BLEND_MODES) != set(MERGE_MODES):
        raise RuntimeError(f"merge mode registry {sorted(_BLEND_MODES)} differs from dflray.config.MERGE_MODES "
                           f"{sorted(MERGE_MODES)}")


_check_vocabulary()


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
    spec = merge_spec(settings)
    if not spec.blend.swap:
        return _unchanged(frame)
    face, face_mask, dst_mask = predict(crop)
    masks: dict[str, np.ndarray] = {}
    if spec.mask.needs_xseg:
        if xseg is None:
            raise ValueError(f"mask mode {settings.mask_mode!r} needs an XSeg model")
        masks = xseg_masks(xseg, [(frame, ctx, face)], spec.mask.needs_xseg_prd, spec.mask.needs_xseg_dst)[0]
    return paste(frame, ctx, face, face_mask, dst_mask, settings, rng=rng, motion=motion, **masks)
