"""Mask modes: the face mask a swapped face is blended with, as DeepFaceLab's merger builds it.

A mask mode names the masks it combines and how: ``learned-prd*learned-dst`` is the product of the
model's mask of the swapped face and its mask of dst, ``learned-prd+learned-dst`` their sum clipped to
1, ``XSeg-dst`` the XSeg model's mask of dst alone. Each mode string is parsed once, when it is
registered, into a frozen ``MaskSpec`` (its sources and how they combine); the merge code branches on
the spec's fields, never on the string. The modes are registered with ``@register_mask_mode(...)``
on the function that combines their masks (a name registered twice is an error), and the registry
must hold exactly ``dflray.config.MASK_MODES``, the vocabulary YAML and the CLI accept (checked on
import, with ``XSEG_MASK_MODES`` against the specs that need XSeg).

Also here: the mask refinement of every mode (``refine_mask``: DFL's erode and blur at 4× the model
resolution) and the XSeg masks' way into the model crop: ``xseg_crops`` cuts the XSeg model's inputs,
``xseg_to_model`` brings its masks into the model crop. DFL cuts both at the model's face type; here
they are cut at the XSeg model's own face type, the same when the two agree.

Example:
    >>> mask_spec("XSeg-prd*XSeg-dst").needs_xseg, mask_spec("learned-prd+learned-dst").combine
    (True, 'add')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

import cv2
import numpy as np

from dflray.config import MASK_MODES, XSEG_MASK_MODES, MergeSettings
from dflray.face.align import get_transform_mat
from dflray.merge.geometry import MergeContext, _affine3, _check_frame, _u8

__all__ = ["MASK_MODES", "MASK_SOURCES", "XSEG_MASK_MODES", "MaskSpec", "build_mask", "mask_spec", "refine_mask",
           "register_mask_mode", "xseg_crops", "xseg_masks", "xseg_needs", "xseg_to_model"]

_NOISE = np.float32(1.0 / 255.0)  # DFL zeroes mask values below one 8-bit step
_MASK_SUBRES = 4  # DFL refines the mask at 4× the model resolution

# The masks a mode can draw on, and what each is (for error messages). ``full`` is the whole crop.
MASK_SOURCES = {"full": "the whole crop", "dst": "the landmark hull",
                "learned-prd": "the model's mask of the swapped face", "learned-dst": "the model's mask of dst",
                "XSeg-prd": "the XSeg mask of the swapped face", "XSeg-dst": "the XSeg mask of dst"}
_OPERATORS = {"*": "mul", "+": "add"}


@dataclass(frozen=True)
class MaskSpec:
    """A parsed mask mode.

    Attributes:
        sources: the masks combined, in the mode's order (keys of ``MASK_SOURCES``).
        combine: ``single`` (one source), ``mul`` (their product) or ``add`` (their sum clipped to 1).
    """

    sources: tuple[str, ...]
    combine: Literal["single", "mul", "add"]

    @property
    def mode(self) -> str:
        """The mode string this spec is parsed from."""
        op = next((k for k, v in _OPERATORS.items() if v == self.combine), "")
        return op.join(self.sources)

    @property
    def needs_xseg_prd(self) -> bool:
        """Whether the XSeg model's mask of the swapped face is a source."""
        return "XSeg-prd" in self.sources

    @property
    def needs_xseg_dst(self) -> bool:
        """Whether the XSeg model's mask of dst is a source."""
        return "XSeg-dst" in self.sources

    @property
    def needs_xseg(self) -> bool:
        """Whether the XSeg model runs (``MergeConfig.xseg``)."""
        return self.needs_xseg_prd or self.needs_xseg_dst

    @property
    def needs_learned(self) -> bool:
        """Whether one of the swap model's own masks is a source."""
        return "learned-prd" in self.sources or "learned-dst" in self.sources

    @property
    def needs_hull(self) -> bool:
        """Whether the dst landmark hull is a source (``crop_hull``)."""
        return "dst" in self.sources


def _parse(mode: str) -> MaskSpec:
    """Parses a mask mode string: sources joined by one operator, ``*`` (product) or ``+`` (sum).

    Raises:
        ValueError: on mixed operators or an unknown source.
    """
    ops = [op for op in _OPERATORS if op in mode]
    if len(ops) > 1:
        raise ValueError(f"mask mode {mode!r} mixes {' and '.join(ops)}")
    sources = tuple(mode.split(ops[0])) if ops else (mode,)
    unknown = [s for s in sources if s not in MASK_SOURCES]
    if unknown:
        raise ValueError(f"mask mode {mode!r}: unknown mask {unknown[0]!r} (known: {', '.join(MASK_SOURCES)})")
    if ops and ("full" in sources or len(set(sources)) != len(sources)):
        raise ValueError(f"mask mode {mode!r} combines full or a mask with itself")
    return MaskSpec(sources, _OPERATORS[ops[0]] if ops else "single")


Combine = Callable[[Sequence[np.ndarray]], np.ndarray]
_MASK_MODES: dict[str, tuple[MaskSpec, Combine]] = {}


def register_mask_mode(*modes: str, combine: Literal["single", "mul", "add"]):
    """Function decorator adding mask modes whose masks the function combines.

    The function takes the modes' source masks (R×R float32 in [0, 1], in the mode's order) and returns
    the combined R×R float32 mask.

    Args:
        modes: the mode strings, each parsed into its ``MaskSpec``.
        combine: how the function combines (every mode's parsed ``combine`` must be this).

    Raises:
        ValueError: on a mode registered twice, a mode that does not parse, or one that combines otherwise.
    """

    def deco(fn: Combine) -> Combine:
        for mode in modes:
            if mode in _MASK_MODES:
                raise ValueError(f"mask mode {mode!r} is already registered")
            spec = _parse(mode)
            if spec.combine != combine:
                raise ValueError(f"mask mode {mode!r} combines by {spec.combine}, not {combine}")
            _MASK_MODES[mode] = (spec, fn)
        return fn

    return deco


@register_mask_mode("full", "dst", "learned-prd", "learned-dst", "XSeg-prd", "XSeg-dst", combine="single")
def _single(masks: Sequence[np.ndarray]) -> np.ndarray:
    return masks[0]


@register_mask_mode("learned-prd*learned-dst", "XSeg-prd*XSeg-dst", "learned-prd*learned-dst*XSeg-prd*XSeg-dst",
                    combine="mul")
def _product(masks: Sequence[np.ndarray]) -> np.ndarray:
    out = masks[0]
    for m in masks[1:]:
        out = out * m
    return out


@register_mask_mode("learned-prd+learned-dst", combine="add")
def _clipped_sum(masks: Sequence[np.ndarray]) -> np.ndarray:
    return np.minimum(sum(masks[1:], masks[0]), 1)


def _check_vocabulary() -> None:
    """The registry must implement exactly the config's mask modes, and agree on which need XSeg."""
    if set(_MASK_MODES) != set(MASK_MODES):
        raise RuntimeError(f"mask mode registry {sorted(_MASK_MODES)} differs from dflray.config.MASK_MODES "
                           f"{sorted(MASK_MODES)}")
    xseg = tuple(m for m in MASK_MODES if _MASK_MODES[m][0].needs_xseg)
    if xseg != XSEG_MASK_MODES:
        raise RuntimeError(f"the mask modes needing XSeg are {xseg}, dflray.config.XSEG_MASK_MODES says "
                           f"{XSEG_MASK_MODES}")


_check_vocabulary()


def mask_spec(mask_mode: str | MergeSettings | MaskSpec) -> MaskSpec:
    """The parsed spec of a mask mode (or of the settings holding it).

    Raises:
        ValueError: on an unknown mode.

    Example:
        >>> mask_spec("learned-prd*learned-dst")
        MaskSpec(sources=('learned-prd', 'learned-dst'), combine='mul')
    """
    if isinstance(mask_mode, MaskSpec):
        return mask_mode
    mode = mask_mode.mask_mode if isinstance(mask_mode, MergeSettings) else mask_mode
    if mode not in _MASK_MODES:
        raise ValueError(f"mask mode must be one of {', '.join(MASK_MODES)}, got {mode!r}")
    return _MASK_MODES[mode][0]


def xseg_needs(mask_mode: str | MergeSettings | MaskSpec) -> tuple[bool, bool]:
    """(needs XSeg-prd, needs XSeg-dst) for a mask mode."""
    spec = mask_spec(mask_mode)
    return spec.needs_xseg_prd, spec.needs_xseg_dst


def build_mask(mask_mode: str | MergeSettings | MaskSpec, prd_mask: np.ndarray | None, dst_mask: np.ndarray | None,
               hull: np.ndarray | None, *, xseg_prd: np.ndarray | None = None, xseg_dst: np.ndarray | None = None,
               size: int | None = None) -> np.ndarray:
    """The working face mask in crop pixels for a DFL mask mode.

    Args:
        mask_mode: one of ``MASK_MODES`` (or the settings holding it, or its ``MaskSpec``): ``full`` (the
            whole crop), ``dst`` (landmark hull), ``learned-prd`` (the model's mask of the swapped face),
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
    spec = mask_spec(mask_mode)
    given_by = {"learned-prd": prd_mask, "learned-dst": dst_mask, "dst": hull, "XSeg-prd": xseg_prd,
                "XSeg-dst": xseg_dst}
    missing = [MASK_SOURCES[s] for s in spec.sources if s != "full" and given_by[s] is None]
    if missing:
        raise ValueError(f"mask mode {spec.mode!r} needs {' and '.join(missing)}")
    given = [m for m in (prd_mask, dst_mask, hull, xseg_prd, xseg_dst) if m is not None]
    if not given and size is None:
        raise ValueError("mask mode 'full' needs a mask or the size")
    shape = np.asarray(given[0]).shape[:2] if given else (size, size)

    def get(source: str) -> np.ndarray:
        if source == "full":
            return np.ones(shape, np.float32)
        return np.clip(np.asarray(given_by[source], np.float32).reshape(shape), 0, 1)

    out = _MASK_MODES[spec.mode][1]([get(s) for s in spec.sources])
    out[out < _NOISE] = 0
    return out


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


# ------------------------------------------------------------------------------------ XSeg masks


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


