"""``onnx-swap``: a user-supplied one-shot face swapper (an ONNX swap model and its identity encoder).

One-shot swappers put a source identity, given as an identity vector, onto any target face without
training per pair: InsightFace's ``inswapper_128.onnx`` with its ArcFace encoder is the best known, and
SimSwap's generator works the same way. dflray ships and downloads none of them: the user gives both
ONNX files by path or URL in the method's settings, and the settings declare the models' input contract
(like the detectors' ``ModelSpec``). The defaults are inswapper's, so for it two paths are enough.

How a fake is made, per destination crop:

1. the five ArcFace points (eye centres, nose tip, mouth corners) are taken from the crop's 68
   landmarks and the crop is warped by a least-squares similarity onto ArcFace's template at the swap
   model's size (InsightFace's ``norm_crop`` definition: at a multiple of 112 the template scaled, else
   scaled by size/128 and shifted 8·size/128 px right);
2. the swap model runs on it with the source's identity vector: the mean of the encoder's normalised
   embeddings of up to ``identity_faces`` of the source person's faces (each aligned the same way at the
   encoder's size), normalised, then, with ``latent: emap``, multiplied by the swap model's embedding map
   (its last initializer, as InsightFace reads it) and normalised again;
3. the swapped face is warped back into the crop; the fake's mask is the model's footprint (eroded and
   blurred by ``mask_erode`` and ``mask_blur``, fractions of the crop) within the destination's
   landmark hull, dilated by the same erosion: outside the mask the fake is the destination crop.

The identity vector is computed once per video (once per source person and worker, since the merge
caches the loaded models); nothing is random, so the fake is temporally consistent as far as the model is.

Contract checks (``load_onnx_swap``, run before any work by the dataset job): both files are ONNX
models onnxruntime loads; the swap model has inputs named ``target_input`` (N×3×S×S, S = ``swap_size``)
and ``source_input`` (N×D) and an N×3×S×S first output; the encoder has one N×3×I×I input
(I = ``identity_size``) and an N×E output; with ``latent: emap`` the swap model's last initializer is
E×D (this needs the ``onnx`` package), else E = D. A mismatch is a ``ConfigError`` naming the setting.

Licences are the models' own: InsightFace's pretrained models (inswapper, the ArcFace ``buffalo_l``
encoder ``w600k_r50.onnx``) are for non-commercial research only; check a model's terms before use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Literal

import cv2
import numpy as np

from dflray.config import ConfigError
from dflray.face.align import _umeyama
from dflray.face.masks import hull_mask
from dflray.methods.base import SourceFaces, register_method

__all__ = ["OnnxSwap", "OnnxSwapModels", "OnnxSwapSettings", "arcface_points", "arcface_template", "load_onnx_swap"]

# ArcFace's 112x112 five-point template: left eye, right eye, nose tip, left and right mouth corner.
_ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def arcface_template(size: int) -> np.ndarray:
    """Where the five points go in a ``size``×``size`` aligned face (InsightFace's ``norm_crop``: the template
    scaled by size/112 when 112 divides the size, else by size/128 and moved 8·size/128 px right).

    Example:
        >>> arcface_template(128)[2]
        array([64.0252, 71.7366])
    """
    if size % 112 == 0:
        return _ARCFACE_112 * (size / 112.0)
    return _ARCFACE_112 * (size / 128.0) + np.array([8.0 * size / 128.0, 0.0])


def arcface_points(landmarks: np.ndarray) -> np.ndarray:
    """The five ArcFace points from 68 dlib landmarks: the eyes' centres (36-41, 42-47), the nose tip (30)
    and the mouth corners (48, 54)."""
    lm = np.asarray(landmarks, np.float64)
    return np.stack([lm[36:42].mean(0), lm[42:48].mean(0), lm[30], lm[48], lm[54]])


@dataclass(frozen=True)
class OnnxSwapSettings:
    """Settings of ``onnx-swap``: the two models and their input contract (defaults: InsightFace's
    inswapper_128 with an ArcFace encoder).

    Attributes:
        swap_model: path or URL of the ONNX swap model (required).
        identity_model: path or URL of the ONNX identity encoder (required).
        swap_size: the swap model's aligned face side, px.
        target_input: the swap model's input name for the target face.
        source_input: its input name for the identity vector.
        target_mean: the swap model's input is ``(pixel - target_mean) / target_std``, pixels 0..255 in
            ``channel_order``.
        target_std: see ``target_mean``.
        output_mean: its output is read as pixels ``output * output_std + output_mean`` (0..255).
        output_std: see ``output_mean``.
        channel_order: ``RGB`` or ``BGR``, of the swap model's input and output.
        identity_size: the encoder's aligned face side, px.
        identity_mean: the encoder's input is ``(pixel - identity_mean) / identity_std``.
        identity_std: see ``identity_mean``.
        identity_channel_order: ``RGB`` or ``BGR``, of the encoder's input.
        latent: ``emap`` (the normalised embedding times the swap model's last initializer, normalised:
            inswapper) or ``embedding`` (the normalised embedding as it is).
        identity_faces: the source person's faces averaged into the identity vector, at most.
        mask_erode: the footprint's erosion, a fraction of the crop side.
        mask_blur: its blur, a fraction of the crop side.
    """

    swap_model: str = ""
    identity_model: str = ""
    swap_size: int = 128
    target_input: str = "target"
    source_input: str = "source"
    target_mean: float = 0.0
    target_std: float = 255.0
    output_mean: float = 0.0
    output_std: float = 255.0
    channel_order: Literal["RGB", "BGR"] = "RGB"
    identity_size: int = 112
    identity_mean: float = 127.5
    identity_std: float = 127.5
    identity_channel_order: Literal["RGB", "BGR"] = "RGB"
    latent: Literal["emap", "embedding"] = "emap"
    identity_faces: int = 32
    mask_erode: float = 0.04
    mask_blur: float = 0.05

    def __post_init__(self) -> None:
        for name in ("swap_model", "identity_model"):
            if not getattr(self, name):
                raise ConfigError(name, "give the path or URL of the ONNX model (nothing is downloaded)")
        for name in ("swap_size", "identity_size"):
            if not 16 <= getattr(self, name) <= 1024:
                raise ConfigError(name, f"must be in 16..1024, got {getattr(self, name)}")
        for name in ("target_std", "output_std", "identity_std"):
            if getattr(self, name) == 0:
                raise ConfigError(name, "must not be 0")
        if not 1 <= self.identity_faces <= 1024:
            raise ConfigError("identity_faces", f"must be in 1..1024, got {self.identity_faces}")
        for name in ("mask_erode", "mask_blur"):
            if not 0 <= getattr(self, name) <= 0.3:
                raise ConfigError(name, f"must be in 0..0.3, got {getattr(self, name)}")


def _session(data: bytes, field: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # merge workers run side by side, one CPU each
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # inswapper's embedding map is an initializer no node uses: no warning for it
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for a bad file
        raise ConfigError(field, f"not an ONNX model onnxruntime loads ({type(e).__name__}: "
                                 f"{(str(e).splitlines() or [''])[0][:160]})") from None


def _dim(shape: list, i: int) -> int | None:
    d = shape[i] if i < len(shape) else None
    return d if isinstance(d, int) and d > 0 else None


def _check_image_input(shape: list, size: int, field: str, size_field: str, what: str) -> None:
    if len(shape) != 4:
        raise ConfigError(field, f"{what} must be N x 3 x S x S, the model's is {shape}")
    if _dim(shape, 1) not in (None, 3):
        raise ConfigError(field, f"{what} must have 3 channels first (N x 3 x S x S), the model's is {shape}")
    for i in (2, 3):
        if _dim(shape, i) not in (None, size):
            raise ConfigError(size_field, f"is {size}, but {what} is {shape}")


def _emap(data: bytes, field: str) -> np.ndarray:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ConfigError(field, "emap reads the swap model's last initializer with the onnx package: "
                                 "pip install 'dflray[onnx]' (or onnx)") from None
    graph = onnx.load_model_from_string(data).graph
    if not graph.initializer:
        raise ConfigError(field, "emap: the swap model has no initializers")
    return numpy_helper.to_array(graph.initializer[-1]).astype(np.float32)


@dataclass
class OnnxSwapModels:
    """The loaded, checked models of ``onnx-swap`` (what ``load_onnx_swap`` returns; shared by the videos a
    merge worker makes with the same settings)."""

    settings: OnnxSwapSettings
    swap: Any
    identity: Any
    emap: np.ndarray | None
    batch: bool  # the swap model takes batches (its batch dimension is not fixed to 1)
    checksums: dict[str, str]  # setting → sha256 of the file it names

    def _aligned(self, crop: np.ndarray, landmarks: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        mat = _umeyama(arcface_points(landmarks), arcface_template(size))[:2]
        return cv2.warpAffine(crop, mat, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT), mat

    @staticmethod
    def _blob(faces: np.ndarray, mean: float, std: float, order: str) -> np.ndarray:
        x = faces.astype(np.float32)
        if order == "BGR":
            x = x[..., ::-1]
        return np.ascontiguousarray(((x - mean) / std).transpose(0, 3, 1, 2), np.float32)

    def identity_vector(self, sources: SourceFaces) -> np.ndarray:
        """``1×D``: the source person's identity as the swap model takes it."""
        s = self.settings
        idx = np.unique(np.linspace(0, len(sources.crops) - 1, min(s.identity_faces, len(sources.crops))).round()
                        .astype(int))
        faces = np.stack([self._aligned(sources.crops[i], sources.landmarks[i], s.identity_size)[0] for i in idx])
        name = self.identity.get_inputs()[0].name
        blob = self._blob(faces, s.identity_mean, s.identity_std, s.identity_channel_order)
        emb = np.concatenate([self.identity.run(None, {name: blob[i:i + 1]})[0] for i in range(len(blob))])
        emb = emb.reshape(len(blob), -1).astype(np.float64)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12
        latent = emb.mean(0, keepdims=True)
        latent /= np.linalg.norm(latent) + 1e-12
        if self.emap is not None:
            latent = latent @ self.emap.astype(np.float64)
            latent /= np.linalg.norm(latent) + 1e-12
        return latent.astype(np.float32)

    def swap_faces(self, aligned: np.ndarray, latent: np.ndarray) -> np.ndarray:
        """Swapped faces ``N×S×S×3`` uint8-range float RGB of aligned ``N×S×S×3`` (0..255) faces."""
        s = self.settings
        blob = self._blob(aligned, s.target_mean, s.target_std, s.channel_order)
        step = len(blob) if self.batch else 1
        outs = []
        for i in range(0, len(blob), step):
            n = len(blob[i:i + step])
            outs.append(self.swap.run(None, {s.target_input: blob[i:i + step],
                                             s.source_input: np.repeat(latent, n, axis=0)})[0])
        y = np.concatenate(outs).transpose(0, 2, 3, 1) * s.output_std + s.output_mean
        if s.channel_order == "BGR":
            y = y[..., ::-1]
        return np.clip(y, 0, 255).astype(np.float32)


def load_onnx_swap(settings: OnnxSwapSettings, read: Callable[[str], bytes], field_path: str = "settings"
                   ) -> OnnxSwapModels:
    """Loads both models through ``read`` (uri → bytes: the caller's storage) and checks their contract.

    Raises:
        ConfigError: naming ``FIELD_PATH.<setting>`` for a file that cannot be read or loaded, or a model
            whose inputs and outputs do not match the settings.
    """
    s = settings

    def f(name: str) -> str:
        return f"{field_path}.{name}"

    data = {}
    for name in ("swap_model", "identity_model"):
        try:
            data[name] = read(getattr(s, name))
        except (OSError, ValueError) as e:
            raise ConfigError(f(name), f"cannot read {getattr(s, name)} ({type(e).__name__}: {e})") from None
    swap, ident = _session(data["swap_model"], f("swap_model")), _session(data["identity_model"], f("identity_model"))
    inputs = {i.name: list(i.shape) for i in swap.get_inputs()}
    for name in ("target_input", "source_input"):
        if getattr(s, name) not in inputs:
            raise ConfigError(f(name), f"the swap model has no input {getattr(s, name)!r} (it has {sorted(inputs)})")
    _check_image_input(inputs[s.target_input], s.swap_size, f("target_input"), f("swap_size"), "the target input")
    _check_image_input(list(swap.get_outputs()[0].shape), s.swap_size, f("swap_model"), f("swap_size"),
                       "the swap model's first output")
    src_shape = inputs[s.source_input]
    if len(src_shape) != 2:
        raise ConfigError(f("source_input"), f"the identity input must be N x D, the model's is {src_shape}")
    id_inputs = ident.get_inputs()
    if len(id_inputs) != 1:
        raise ConfigError(f("identity_model"), f"the encoder must have one input, it has {len(id_inputs)}")
    _check_image_input(list(id_inputs[0].shape), s.identity_size, f("identity_model"), f("identity_size"),
                       "the encoder's input")
    emb_dim = _dim(list(ident.get_outputs()[0].shape), 1)
    want = _dim(src_shape, 1)
    emap = None
    if s.latent == "emap":
        emap = _emap(data["swap_model"], f("latent"))
        if emap.ndim != 2 or (emb_dim and emap.shape[0] != emb_dim) or (want and emap.shape[1] != want):
            raise ConfigError(f("latent"), f"emap: the swap model's last initializer is {emap.shape}, not "
                                           f"{emb_dim or 'E'} x {want or 'D'} (encoder output x identity input)")
    elif emb_dim and want and emb_dim != want:
        raise ConfigError(f("latent"), f"the encoder gives {emb_dim} values and the swap model takes {want}: "
                                       "with an embedding map in the swap model, use latent: emap")
    batch = _dim(inputs[s.target_input], 0) != 1 and _dim(src_shape, 0) != 1
    sums = {k: hashlib.sha256(v).hexdigest() for k, v in data.items()}
    return OnnxSwapModels(s, swap, ident, emap, batch, sums)


@register_method("onnx-swap", version=1, model="none", settings=OnnxSwapSettings, reads=("source",),
                 summary="a user-supplied one-shot swapper: an ONNX swap model and its identity encoder "
                         "(e.g. InsightFace's inswapper_128 with ArcFace), given by path",
                 assets=load_onnx_swap)
class OnnxSwap:
    """``onnx-swap`` built for one video (see the module docstring)."""

    def __init__(self, settings: OnnxSwapSettings, *, resolution: int, face_type: str, seed: int,
                 sources: SourceFaces | None = None, assets: OnnxSwapModels | None = None):
        if sources is None or assets is None:
            raise ValueError("onnx-swap needs the source person's faces and its loaded models (assets=)")
        self.settings, self.resolution, self.models = settings, int(resolution), assets
        self.latent = assets.identity_vector(sources)
        r = self.resolution
        self._erode = max(1, int(round(settings.mask_erode * r)))
        blur = int(round(settings.mask_blur * r))
        self._blur = blur + (blur % 2 == 0) if blur else 0

    def _soft(self, mask: np.ndarray) -> np.ndarray:
        m = mask.astype(np.float32)
        if self._blur:
            m = cv2.GaussianBlur(m, (self._blur, self._blur), 0)
        return m

    def __call__(self, crops: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        crops = np.asarray(crops, np.float32)
        landmarks = np.asarray(landmarks, np.float64)
        n, r = len(crops), self.resolution
        if crops.shape != (n, r, r, 3) or landmarks.shape != (n, 68, 2):
            raise ValueError(f"expected N x {r} x {r} x 3 crops and N x 68 x 2 landmarks, got {crops.shape}, "
                             f"{landmarks.shape}")
        fakes, masks, dst_masks = crops.copy(), np.zeros((n, r, r), np.float32), np.zeros((n, r, r), np.float32)
        if not n:
            return fakes, masks, dst_masks
        size = self.settings.swap_size
        pixels = np.clip(crops * 255.0, 0, 255)
        aligned, mats = zip(*(self.models._aligned(pixels[i], landmarks[i], size) for i in range(n)))
        swapped = self.models.swap_faces(np.stack(aligned), self.latent)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * self._erode + 1, 2 * self._erode + 1))
        for i in range(n):
            inv = cv2.invertAffineTransform(mats[i])
            back = cv2.warpAffine(swapped[i], inv, (r, r), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            footprint = cv2.warpAffine(np.ones((size, size), np.uint8), inv, (r, r), flags=cv2.INTER_NEAREST)
            hull = hull_mask((r, r), landmarks[i])
            dst_masks[i] = hull
            region = cv2.erode(footprint, kernel) & cv2.dilate(hull, kernel)
            m = np.clip(self._soft(region), 0, 1)
            masks[i] = m
            fakes[i] = np.clip(crops[i] + m[..., None] * (back / 255.0 - crops[i]), 0, 1)
        return fakes, masks, dst_masks
