"""Blended-face forgeries without a model: ``sbi`` (self-blended images) and ``xray-blend`` (Face X-ray).

Both make a fake by pasting a face over the dst face through a soft, irregular blend mask, so the fake
carries the traces a face swap leaves (a blending boundary, a colour and sharpness mismatch, a slight
misfit of the pasted face) without any identity change or trained generator. Detectors trained on such
fakes generalise across forgery methods, which is why they belong in a forgery dataset.

- ``sbi``: Self-Blended Images (K. Shiohara and T. Yamasaki, "Detecting Deepfakes with Self-Blended
  Images", CVPR 2022). The pasted face is the dst face itself, transformed: colour jitter (an RGB
  shift, hue, saturation, brightness and contrast), a sharpness change (unsharp masking, or a
  down-and-up resampling that blurs) and a slight rescale and shift. The blend mask follows the
  transformed face. Unlike the paper, which may transform either the source or the target copy, only
  the pasted copy is transformed: outside the mask the fake must stay the dst crop.
- ``xray-blend``: the blended images of Face X-ray (L. Li, J. Bao, T. Zhang, H. Yang, D. Chen, F. Wen and
  B. Guo, "Face X-ray for More General Face Forgery Detection", CVPR 2020). The pasted face is another
  person's: the face of the source faceset nearest to the dst face in landmarks (pose and shape),
  aligned to the dst by a similarity fit on the landmarks and colour-corrected toward the dst (matching
  mean and spread of each YCbCr channel over the dst face, Reinhard-style). The paper picks at random
  among the nearest; here it is always the nearest, so identical crops give identical fakes.

The blend mask (``BlendMask``, shared by both) is the dst's landmark hull (``dflray.face.masks``),
deformed by a smooth random displacement field (an elastic deformation, plus the pasted face's own
rescale and shift for ``sbi``), eroded and Gaussian-blurred by random kernels, as both papers build
theirs. The fake is ``dst + ratio * mask * (pasted - dst)``: exactly the dst crop where the mask is 0.

Everything random is drawn once per video from the video's seed, when the method is built, so every
crop of a video gets the same colour shift, sharpness, rescale, mask deformation and kernels: the fake is
temporally consistent, and a crop's fake does not depend on the other crops of its batch. The mask
deformation lives in aligned-crop coordinates, where the face sits at the same place in every frame.

Example:
    >>> from dflray.methods import build_method
    >>> fake = build_method("sbi", {"blend_ratio": [1.0, 1.0]}, resolution=256, face_type="whole_face", seed=3)
    >>> faces, fake_masks, dst_masks = fake(crops, landmarks)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal

import cv2
import numpy as np

from dflray.config import ConfigError
from dflray.face.align import FACE_TYPES
from dflray.face.masks import hull_mask
from dflray.methods._picks import StickyPicks
from dflray.methods.base import SourceFaces, register_method

__all__ = ["BlendMask", "BlendMaskSettings", "SbiSettings", "SelfBlendedImages", "XRayBlend", "XRayBlendSettings"]

# RGB -> YIQ (NTSC). Hue is a rotation of the (I, Q) chroma plane and saturation its scale, which makes
# the whole colour jitter one affine map of RGB.
_YIQ = np.array([[0.299, 0.587, 0.114],
                 [0.596, -0.274, -0.322],
                 [0.211, -0.523, 0.312]])
# RGB -> YCbCr (BT.601, without offsets): a decorrelated luma/chroma space for the colour correction.
_YCBCR = np.array([[0.299, 0.587, 0.114],
                   [-0.168736, -0.331264, 0.5],
                   [0.5, -0.418688, -0.081312]])
# Independent random streams per method: the same video seed draws unrelated parameters for each.
_SBI_STREAM, _XRAY_STREAM = 0x5B1, 0xF4CE


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(field, message)


def _check_range(value: Any, field: str, lo: float, hi: float, *, open_low: bool = False) -> None:
    """``value`` must be a ``(low, high)`` pair with ``lo <= low <= high <= hi`` (``lo < low`` if open)."""
    ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if ok:
        a, b = value
        ok = (lo < a if open_low else lo <= a) and a <= b <= hi
    low = f"{lo} <" if open_low else f"{lo} <="
    _require(ok, field, f"must be [low, high] with {low} low <= high <= {hi}, got {value!r}")


def _check_number(value: Any, field: str, lo: float, hi: float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and lo <= value <= hi
    _require(ok, field, f"must be a number in {lo}..{hi}, got {value!r}")


# ------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class BlendMaskSettings:
    """How the blend mask is made (``BlendMask``); both methods take these.

    Lengths are fractions of the crop side, so a setting means the same face-relative amount at every
    resolution. Kernel sizes are drawn once per video and rounded to odd pixel counts.

    Attributes:
        deform: largest displacement of the elastic deformation of the hull, 0..0.1 (0: none).
        deform_cells: cells per side of the deformation's random control grid, 1..16: fewer cells give
            broader bulges, more give a wavier edge.
        erode: range of the erosion kernel's diameter (the papers' first blur-and-threshold), 0..0.25.
        blur: range of the Gaussian blur kernel that softens the mask edge, 0..0.25.
        blend_ratio: range of the pasted face's opacity inside the mask, 0 < low <= high <= 1.
    """

    deform: float = 0.02
    deform_cells: int = 4
    # SBI blurs by 5..25 px kernels at its 380 px crops: 0.013..0.066 of the side.
    erode: tuple[float, float] = (0.013, 0.066)
    blur: tuple[float, float] = (0.013, 0.066)
    blend_ratio: tuple[float, float] = (1.0, 1.0)

    def __post_init__(self) -> None:
        self._check_mask()

    def _check_mask(self) -> None:
        _check_number(self.deform, "deform", 0.0, 0.1)
        _require(isinstance(self.deform_cells, int) and not isinstance(self.deform_cells, bool)
                 and 1 <= self.deform_cells <= 16, "deform_cells", f"must be an integer in 1..16, got {self.deform_cells!r}")
        _check_range(self.erode, "erode", 0.0, 0.25)
        _check_range(self.blur, "blur", 0.0, 0.25)
        _check_range(self.blend_ratio, "blend_ratio", 0.0, 1.0, open_low=True)


@dataclass(frozen=True)
class SbiSettings(BlendMaskSettings):
    """Settings of ``sbi``: the jitter of the pasted copy of the face, and its blend mask.

    Each strength is the largest amount; the video's amount is drawn uniformly in ``[-s, s]`` (or the
    given range). The defaults are of the order of the SBI paper's source-target augmentation.

    Attributes:
        rgb_shift: per-channel additive shift, 0..0.5 (of the [0, 1] range; SBI: 20/255).
        hue: hue rotation in degrees, 0..180.
        saturation: relative saturation change, 0..0.9.
        brightness: additive brightness change, 0..0.5.
        contrast: relative contrast change about mid-grey, 0..0.9.
        p_sharpen: chance the video's sharpness change is a sharpening (else a blur), 0..1.
        sharpen: range of the unsharp-masking amount, 0..2.
        downscale: range of the scale the blur resamples through (down, then back up), 0 < low <= high <= 1.
        scale: largest relative rescale of the pasted face, 0..0.3 (SBI: 0.95..1/0.95).
        shift: largest (x, y) shift of the pasted face, each 0..0.2 of the side (SBI: 3% and 1.5%).
        deform, deform_cells, erode, blur: the blend mask (``BlendMaskSettings``).
        blend_ratio: range of the pasted face's opacity (SBI draws from 0.25..1).
    """

    rgb_shift: float = 20 / 255
    hue: float = 10.0
    saturation: float = 0.3
    brightness: float = 0.1
    contrast: float = 0.1
    p_sharpen: float = 0.5
    sharpen: tuple[float, float] = (0.2, 0.5)
    downscale: tuple[float, float] = (0.25, 0.5)
    scale: float = 0.05
    shift: tuple[float, float] = (0.03, 0.015)
    blend_ratio: tuple[float, float] = (0.25, 1.0)

    def __post_init__(self) -> None:
        self._check_mask()
        _check_number(self.rgb_shift, "rgb_shift", 0.0, 0.5)
        _check_number(self.hue, "hue", 0.0, 180.0)
        _check_number(self.saturation, "saturation", 0.0, 0.9)
        _check_number(self.brightness, "brightness", 0.0, 0.5)
        _check_number(self.contrast, "contrast", 0.0, 0.9)
        _check_number(self.p_sharpen, "p_sharpen", 0.0, 1.0)
        _check_range(self.sharpen, "sharpen", 0.0, 2.0)
        _check_range(self.downscale, "downscale", 0.0, 1.0, open_low=True)
        _check_number(self.scale, "scale", 0.0, 0.3)
        ok = isinstance(self.shift, (tuple, list)) and len(self.shift) == 2
        _require(ok, "shift", f"must be [x, y], got {self.shift!r}")
        for v in self.shift:
            _check_number(v, "shift", 0.0, 0.2)


@dataclass(frozen=True)
class XRayBlendSettings(BlendMaskSettings):
    """Settings of ``xray-blend``: colour correction and the blend mask.

    Attributes:
        color_correct: ``rct`` is Reinhard colour transfer over the dst hull: each YCbCr channel of the
            aligned source face gets the dst face's mean and spread there (YCbCr rather than the Lab of
            ``dflray.face.color.rct``: one affine map per crop, no per-pixel Lab conversion), as Face
            X-ray colour-corrects its foreground; ``none`` pastes the source's own colours.
        deform, deform_cells, erode, blur: the blend mask (``BlendMaskSettings``); Face X-ray deforms its
            masks more than SBI, hence the larger default ``deform``.
        blend_ratio: range of the pasted face's opacity (Face X-ray pastes it opaque: 1).
        candidates: a recent pick of source face is kept only while it is among this many nearest (1: the
            nearest in every frame), so near-equal source faces do not alternate from frame to frame.
        switch_margin: ... and while its landmark distance is at most ``1 + switch_margin`` times the
            nearest's.
    """

    deform: float = 0.04
    color_correct: Literal["rct", "none"] = "rct"
    candidates: int = 4
    switch_margin: float = 0.1

    def __post_init__(self) -> None:
        self._check_mask()
        _require(self.color_correct in ("rct", "none"), "color_correct",
                 f"must be rct or none, got {self.color_correct!r}")
        _require(self.candidates >= 1, "candidates", f"must be >= 1, got {self.candidates}")
        _require(bool(np.isfinite(self.switch_margin)) and 0.0 <= self.switch_margin <= 10.0, "switch_margin",
                 f"must be in [0, 10], got {self.switch_margin}")


# ------------------------------------------------------------------------------------ helpers
# Crops are processed one at a time: single-threaded OpenCV on one crop keeps it in cache and beats
# stacking a batch into one many-channel image (the stacking copy alone costs more), and a crop's fake
# cannot depend on the rest of its batch.


def _odd_kernel(fraction: float, resolution: int) -> int:
    """A kernel of ``fraction`` of the crop side, in odd pixels (1: none)."""
    k = int(round(fraction * resolution))
    return k + 1 if k % 2 == 0 else k


def _check_batch(crops, landmarks, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (resolution, resolution, 3):
        raise ValueError(f"crops must be N x {resolution} x {resolution} x 3, got {crops.shape}")
    if not np.issubdtype(crops.dtype, np.floating):
        raise ValueError(f"crops must be float RGB in [0, 1], got {crops.dtype}")
    landmarks = np.asarray(landmarks, np.float64)
    if landmarks.shape != (len(crops), 68, 2):
        raise ValueError(f"landmarks must be {len(crops)} x 68 x 2, got {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise ValueError("landmarks must be finite")
    return crops.astype(np.float32, copy=False), landmarks


def _outputs(n: int, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r = resolution
    return np.empty((n, r, r, 3), np.float32), np.empty((n, r, r), np.float32), np.empty((n, r, r), np.float32)


def _blend(dst: np.ndarray, pasted: np.ndarray, weight: np.ndarray, out: np.ndarray) -> None:
    """``out = dst + weight * (pasted - dst)``, using ``pasted`` as scratch: exactly ``dst`` where the
    weight is 0 (no ``a*w + b*(1-w)`` rounding)."""
    pasted -= dst
    pasted *= weight[..., None]
    np.add(pasted, dst, out=out)
    np.clip(out, 0.0, 1.0, out=out)


# ------------------------------------------------------------------------------------ the blend mask


@dataclass(frozen=True)
class BlendMask:
    """One video's blend-mask generator: the landmark hull, deformed, eroded and blurred.

    Drawn once per video (``draw``), then applied to every crop, so every frame's mask is deformed the
    same way relative to its face. The deformation is a remap: the mask at output pixel ``p`` is the
    hull at ``map(p)``, where ``map`` is ``p`` moved by a smooth random displacement field and, for a
    pasted face that was rescaled and shifted, taken back through that move (so the mask follows it).
    The deformed hull is eroded by an ellipse of ``erode`` pixels and blurred by a Gaussian of ``blur``
    pixels, as the papers blur, threshold and blur again: the soft edge lies around the hull's edge,
    mostly inside it, and the mask is exactly 0 beyond the blur's reach.

    Attributes:
        map_x: R×R float32 x of the hull pixel each output pixel takes.
        map_y: R×R float32 y of it.
        erode: erosion kernel diameter in pixels (odd; 1: none).
        blur: Gaussian kernel size in pixels (odd; 1: none).
        ratio: opacity of the pasted face inside the mask.
        displacement: largest displacement of the elastic field, pixels.
    """

    map_x: np.ndarray
    map_y: np.ndarray
    erode: int
    blur: int
    ratio: float
    displacement: float

    @classmethod
    def draw(cls, settings: BlendMaskSettings, resolution: int, rng: np.random.Generator,
             follow: np.ndarray | None = None) -> BlendMask:
        """Draws a video's mask parameters.

        Args:
            settings: the method's settings.
            resolution: the crop side R.
            rng: the video's generator. Every value is drawn whatever the settings, so changing one
                setting does not reshuffle the others.
            follow: a 2×3 affine map moving the pasted face within the crop, for a mask that follows
                it; None for none.

        Returns:
            The generator.
        """
        r = resolution
        cells = settings.deform_cells
        # Elastic deformation: random offsets on a coarse control grid, interpolated smoothly to every
        # pixel (bicubic), so the hull's edge bulges in and out in a few broad waves.
        grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1, 2)).astype(np.float32)
        limit = settings.deform * r
        flow = np.clip(cv2.resize(grid * np.float32(limit), (r, r), interpolation=cv2.INTER_CUBIC), -limit, limit)
        erode = _odd_kernel(rng.uniform(*settings.erode), r)
        blur = _odd_kernel(rng.uniform(*settings.blur), r)
        ratio = float(rng.uniform(*settings.blend_ratio))
        xs, ys = np.meshgrid(np.arange(r, dtype=np.float64), np.arange(r, dtype=np.float64))
        px, py = xs + flow[..., 0], ys + flow[..., 1]
        if follow is not None:
            inv = cv2.invertAffineTransform(np.asarray(follow, np.float64))
            px, py = inv[0, 0] * px + inv[0, 1] * py + inv[0, 2], inv[1, 0] * px + inv[1, 1] * py + inv[1, 2]
        return cls(map_x=px.astype(np.float32), map_y=py.astype(np.float32), erode=erode, blur=blur, ratio=ratio,
                   displacement=float(np.abs(flow).max()))

    def one(self, hull: np.ndarray) -> np.ndarray:
        """The blend mask of one face.

        Args:
            hull: R×R uint8 landmark hull mask (0/1) of the dst face.

        Returns:
            R×R float32 mask in [0, 1] (the opacity ``ratio`` not applied).
        """
        # Remapped at 0/255 so linear interpolation, thresholded at half, gives a clean deformed edge.
        moved = cv2.remap(hull * np.uint8(255), self.map_x, self.map_y, cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        _, mask = cv2.threshold(moved, 127, 1, cv2.THRESH_BINARY)
        if self.erode > 1:
            kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (self.erode, self.erode))
            mask = cv2.erode(mask, kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
        mask = mask.astype(np.float32)
        if self.blur > 1:
            # A kernel of fixed size: exactly 0 beyond its reach, so the fake is exactly dst there.
            mask = cv2.GaussianBlur(mask, (self.blur, self.blur), 0, borderType=cv2.BORDER_CONSTANT)
        return np.clip(mask, 0.0, 1.0, out=mask)

    def __call__(self, hulls: np.ndarray) -> np.ndarray:
        """The blend masks of a batch: N×R×R uint8 hulls (0/1) to N×R×R float32 masks in [0, 1]."""
        out = np.empty(hulls.shape, np.float32)
        for i, hull in enumerate(hulls):
            out[i] = self.one(hull)
        return out


def _hull(landmarks: np.ndarray, resolution: int) -> np.ndarray:
    return hull_mask((resolution, resolution), landmarks)


# ------------------------------------------------------------------------------------ sbi


class _Blended:
    """What sbi and xray-blend share: a face pasted into each crop through the video's ``BlendMask``."""

    resolution: int
    mask: BlendMask

    def _pasted(self, crops: np.ndarray, landmarks: np.ndarray) -> Callable[[int, np.ndarray], np.ndarray]:
        """For a batch: ``one(i, hull)``, the face pasted into crop ``i`` (R×R×3 float32 in [0, 1])."""
        raise NotImplementedError

    def __call__(self, crops: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fakes of a batch of the video's dst crops.

        Args:
            crops: N×R×R×3 float32 RGB in [0, 1].
            landmarks: N×68×2 crop pixels.

        Returns:
            (fake faces N×R×R×3, blend masks N×R×R, dst hull masks N×R×R), float32 in [0, 1]. Where the
            blend mask is 0 the fake is the crop.

        Raises:
            ValueError: on inputs of the wrong shape or non-finite landmarks.
        """
        crops, landmarks = _check_batch(crops, landmarks, self.resolution)
        fakes, masks, dst_masks = _outputs(len(crops), self.resolution)
        if not len(crops):
            return fakes, masks, dst_masks
        pasted = self._pasted(crops, landmarks)
        ratio = np.float32(self.mask.ratio)
        for i, lm in enumerate(landmarks):
            hull = _hull(lm, self.resolution)
            masks[i] = self.mask.one(hull)
            dst_masks[i] = hull
            _blend(crops[i], pasted(i, hull), masks[i] * ratio, fakes[i])
        return fakes, masks, dst_masks


@register_method("sbi", version=1, model="none", settings=SbiSettings,
                 summary="Self-Blended Images (Shiohara & Yamasaki, CVPR 2022): the dst face blended with a "
                         "colour-, sharpness- and scale-jittered copy of itself through a deformed hull mask")
class SelfBlendedImages(_Blended):
    """``sbi`` for one video: every crop blended with its own jittered copy, by the video's parameters.

    Args:
        settings: ``SbiSettings``.
        resolution: the crop side R.
        face_type: the crops' face type.
        seed: the video's seed; all parameters are drawn from it here, once.
        sources: unused (``sbi`` reads no faceset).

    Attributes:
        params: the drawn parameters, plain numbers (for provenance records and tests).
        mask: the video's ``BlendMask``.

    Example:
        >>> sbi = SelfBlendedImages(SbiSettings(), resolution=128, face_type="whole_face", seed=1)
        >>> sorted(sbi.params)[:3]
        ['blend_ratio', 'blur_px', 'brightness']
    """

    spec: Any  # set by register_method

    def __init__(self, settings: SbiSettings, *, resolution: int, face_type: str, seed: int,
                 sources: SourceFaces | None = None):
        if resolution < 16:
            raise ValueError(f"resolution must be >= 16, got {resolution}")
        if face_type not in FACE_TYPES:
            raise ValueError(f"face_type must be one of {', '.join(FACE_TYPES)}, got {face_type!r}")
        self.settings, self.resolution, self.face_type = settings, int(resolution), face_type
        r, s = self.resolution, settings
        rng = np.random.default_rng(np.random.SeedSequence([int(seed) % 2**64, _SBI_STREAM]))
        rgb = rng.uniform(-s.rgb_shift, s.rgb_shift, 3)
        hue = rng.uniform(-s.hue, s.hue)
        sat = rng.uniform(-s.saturation, s.saturation)
        bright = rng.uniform(-s.brightness, s.brightness)
        contrast = rng.uniform(-s.contrast, s.contrast)
        sharpening = bool(rng.random() < s.p_sharpen)
        amount, factor = rng.uniform(*s.sharpen), rng.uniform(*s.downscale)
        scale = 1.0 + rng.uniform(-s.scale, s.scale)
        shift = rng.uniform(-1.0, 1.0, 2) * np.asarray(s.shift, np.float64)

        # Colour: hue rotates and saturation scales YIQ's chroma plane, contrast scales about mid-grey,
        # brightness and the RGB shift add; together one affine map of RGB, applied in one pass.
        t = math.radians(hue)
        yiq = np.eye(3)
        yiq[1:, 1:] = (1.0 + sat) * np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        lin = (1.0 + contrast) * (np.linalg.inv(_YIQ) @ yiq @ _YIQ)
        off = 0.5 * (1.0 - (1.0 + contrast)) + bright + rgb
        self._color = np.hstack([lin, off[:, None]]).astype(np.float32)
        self._sharpen = float(amount) if sharpening else 0.0
        self._downscale = 1.0 if sharpening else float(factor)
        # Rescale about the crop centre, then shift: aligned crops put the face at the same place, so
        # this moves every frame's face alike.
        c = (r - 1) / 2.0
        self._affine = np.array([[scale, 0.0, c * (1 - scale) + shift[0] * r],
                                 [0.0, scale, c * (1 - scale) + shift[1] * r]])
        self.mask = BlendMask.draw(s, r, rng, follow=self._affine)
        self.params = {
            "rgb_shift": [float(v) for v in rgb], "hue": float(hue), "saturation": float(sat),
            "brightness": float(bright), "contrast": float(contrast), "sharpen": self._sharpen,
            "downscale": self._downscale, "scale": float(scale), "shift": [float(v) for v in shift],
            "deform_px": self.mask.displacement, "erode_px": self.mask.erode, "blur_px": self.mask.blur,
            "blend_ratio": self.mask.ratio,
        }

    def _source_one(self, crop: np.ndarray) -> np.ndarray:
        r = self.resolution
        out = cv2.transform(crop, self._color)  # the 3×4 colour map, per pixel
        np.clip(out, 0.0, 1.0, out=out)
        if self._sharpen > 0:
            soft = cv2.GaussianBlur(out, (0, 0), max(0.5, r / 256), borderType=cv2.BORDER_REFLECT_101)
            out += self._sharpen * (out - soft)  # unsharp masking
        elif self._downscale < 1:
            small = max(4, int(round(r * self._downscale)))
            sigma = 0.5 * (r / small - 1)
            if sigma > 0.3:  # anti-aliased: a low-resolution look, not a moiré
                out = cv2.GaussianBlur(out, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
            out = cv2.resize(cv2.resize(out, (small, small), interpolation=cv2.INTER_LINEAR), (r, r),
                             interpolation=cv2.INTER_LINEAR)
        out = cv2.warpAffine(out, self._affine, (r, r), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        return np.clip(out, 0.0, 1.0, out=out)

    def source(self, crops: np.ndarray) -> np.ndarray:
        """The pasted copies: the crops colour-jittered, re-sharpened or blurred, rescaled and shifted.

        Args:
            crops: N×R×R×3 float32 RGB in [0, 1].

        Returns:
            N×R×R×3 float32 in [0, 1].
        """
        crops = np.asarray(crops, np.float32)
        return np.stack([self._source_one(c) for c in crops]) if len(crops) else np.zeros_like(crops)

    def _pasted(self, crops: np.ndarray, landmarks: np.ndarray) -> Callable[[int, np.ndarray], np.ndarray]:
        return lambda i, hull: self._source_one(crops[i])


# ------------------------------------------------------------------------------------ xray-blend


def _similarities(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """N×2×3 least-squares similarities (rotation, uniform scale, shift) taking each ``src`` onto ``dst``.

    In complex numbers a similarity is ``z -> a z + b``; the least-squares ``a`` of centred point sets is
    ``sum(conj(s) d) / sum(|s|^2)`` (no reflection can arise), so a whole batch is a few array sums.
    """
    zs = src[..., 0] + 1j * src[..., 1]
    zd = dst[..., 0] + 1j * dst[..., 1]
    ms, md = zs.mean(axis=1, keepdims=True), zd.mean(axis=1, keepdims=True)
    cs, cd = zs - ms, zd - md
    a = (np.conj(cs) * cd).sum(axis=1) / np.maximum((np.abs(cs) ** 2).sum(axis=1), 1e-12)
    b = md[:, 0] - a * ms[:, 0]
    return np.stack([np.stack([a.real, -a.imag, b.real], 1), np.stack([a.imag, a.real, b.imag], 1)], 1)


_YCBCR32 = _YCBCR.astype(np.float32)
_RGB_FROM_YCBCR = np.linalg.inv(_YCBCR)


def _color_correct(src: np.ndarray, ref: np.ndarray, area: np.ndarray) -> np.ndarray:
    """Reinhard-style colour correction: each YCbCr channel of ``src`` gets ``ref``'s mean and standard
    deviation over ``area``.

    YCbCr is a linear map of RGB, so the correction is one affine map of RGB (``T⁻¹ diag(g) T x + o``).

    Args:
        src: R×R×3 float32 RGB to recolour.
        ref: R×R×3 float32 RGB whose colours are taken.
        area: R×R uint8 0/1 region the statistics are taken over.

    Returns:
        ``src`` recoloured, clipped to [0, 1]; ``src`` itself when the area is too small to measure.
    """
    if cv2.countNonZero(area) < 16:
        return src
    mean_s, std_s = (v[:, 0] for v in cv2.meanStdDev(cv2.transform(src, _YCBCR32), mask=area))
    mean_r, std_r = (v[:, 0] for v in cv2.meanStdDev(cv2.transform(ref, _YCBCR32), mask=area))
    # A flat src keeps its spread; the gain is bounded so a tiny or flat area cannot blow colours up.
    gain = np.clip(std_r / np.maximum(std_s, 1e-4), 0.2, 5.0)
    lin = _RGB_FROM_YCBCR @ (gain[:, None] * _YCBCR)
    off = _RGB_FROM_YCBCR @ (mean_r - gain * mean_s)
    out = cv2.transform(src, np.hstack([lin, off[:, None]]).astype(np.float32))
    return np.clip(out, 0.0, 1.0, out=out)


@register_method("xray-blend", version=1, model="none", reads=("source",), settings=XRayBlendSettings,
                 summary="Face X-ray blended images (Li et al., CVPR 2020): the nearest source face in landmarks, "
                         "aligned and colour-corrected, blended into the dst through a deformed hull mask")
class XRayBlend(_Blended):
    """``xray-blend`` for one video: every crop blended with its nearest source face.

    Args:
        settings: ``XRayBlendSettings``.
        resolution: the crop side R.
        face_type: the crops' face type (the source crops must be of the same type).
        seed: the video's seed; the mask parameters are drawn from it here, once.
        sources: the source person's aligned faces; crops of another side are resized to R.

    Attributes:
        params: the drawn parameters, plain numbers.
        mask: the video's ``BlendMask``.

    Raises:
        ValueError: without ``sources``, or with a bad resolution or face type.
    """

    spec: Any  # set by register_method

    def __init__(self, settings: XRayBlendSettings, *, resolution: int, face_type: str, seed: int,
                 sources: SourceFaces | None = None):
        if sources is None:
            raise ValueError("xray-blend takes its faces from the source faceset: pass sources=")
        if resolution < 16:
            raise ValueError(f"resolution must be >= 16, got {resolution}")
        if face_type not in FACE_TYPES:
            raise ValueError(f"face_type must be one of {', '.join(FACE_TYPES)}, got {face_type!r}")
        self.settings, self.resolution, self.face_type = settings, int(resolution), face_type
        r = self.resolution
        crops, lms = np.asarray(sources.crops), np.asarray(sources.landmarks, np.float64)
        if crops.shape[1] != r:
            k = r / crops.shape[1]
            crops = np.stack([cv2.resize(c, (r, r), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_CUBIC)
                              for c in crops])
            lms = (lms + 0.5) * k - 0.5  # pixel centres scale about the image's corner
        self._crops = crops
        self._landmarks = lms
        self._flat = lms.reshape(len(lms), -1)
        self._norms = (self._flat ** 2).sum(axis=1)
        self._picks = StickyPicks(settings.candidates, settings.switch_margin)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed) % 2**64, _XRAY_STREAM]))
        self.mask = BlendMask.draw(settings, r, rng)
        self.params = {"deform_px": self.mask.displacement, "erode_px": self.mask.erode,
                       "blur_px": self.mask.blur, "blend_ratio": self.mask.ratio}

    def nearest(self, landmarks: np.ndarray) -> np.ndarray:
        """Index of the source face nearest to each dst face: the least summed squared distance between
        the 68 landmarks in crop pixels (both are aligned crops of one face type, so this compares pose,
        face shape and expression).

        Args:
            landmarks: N×68×2 dst landmarks, crop pixels.

        Returns:
            N int64 indices into the source faces.
        """
        return np.argmin(self._distances(landmarks), axis=1)

    def _distances(self, landmarks: np.ndarray) -> np.ndarray:
        """``N×M`` root summed squared landmark distances of the dst faces to the source faces."""
        flat = np.asarray(landmarks, np.float64).reshape(len(landmarks), -1)
        d = (flat ** 2).sum(axis=1)[:, None] - 2.0 * flat @ self._flat.T + self._norms[None]
        return np.sqrt(np.maximum(d, 0.0))

    def select(self, landmarks: np.ndarray) -> np.ndarray:
        """The source face of each dst face, in order: the nearest, or a recent pick nearly as near
        (``candidates``, ``switch_margin``); updates the recent picks."""
        return self._picks.select(self._distances(landmarks))

    def _aligned(self, j: int, mat: np.ndarray) -> np.ndarray:
        # The reflected border fills the corners a rotated crop leaves; the mask never reaches them.
        face = self._crops[j]
        face = face.astype(np.float32) * np.float32(1 / 255) if face.dtype == np.uint8 else face.astype(np.float32)
        r = self.resolution
        return cv2.warpAffine(face, mat, (r, r), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    def aligned_sources(self, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The nearest source faces, warped onto the dst faces (before colour correction).

        Args:
            landmarks: N×68×2 dst landmarks, crop pixels.

        Returns:
            (N×R×R×3 float32 RGB in [0, 1], N indices of the source faces used).
        """
        landmarks = np.asarray(landmarks, np.float64)
        idx = self.nearest(landmarks)
        mats = _similarities(self._landmarks[idx], landmarks)
        r = self.resolution
        out = np.empty((len(idx), r, r, 3), np.float32)
        for i, (j, m) in enumerate(zip(idx, mats)):
            out[i] = self._aligned(j, m)
        return out, idx

    def _pasted(self, crops: np.ndarray, landmarks: np.ndarray) -> Callable[[int, np.ndarray], np.ndarray]:
        idx = self.select(landmarks)
        mats = _similarities(self._landmarks[idx], landmarks)

        def one(i: int, hull: np.ndarray) -> np.ndarray:
            pasted = self._aligned(idx[i], mats[i])
            return _color_correct(pasted, crops[i], hull) if self.settings.color_correct == "rct" else pasted

        return one
