"""Explicit registries of detectors and landmarkers, and their input/output contracts.

A detector is a class decorated with ``@register_detector("name")`` whose constructor takes a
``DetectConfig``; it declares its input contract in a frozen ``ModelSpec`` and maps a list of RGB
uint8 frames to one ``Detections`` per frame, in frame pixel coordinates. Registering a name twice is
an error; there are no string-built imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from dflray.config import DetectConfig, LandmarkConfig


@dataclass(frozen=True)
class ModelSpec:
    """The input contract of a model, declared next to it.

    Attributes:
        name: registry name.
        input_size: side the model's input is resized to (None: native frame size).
        colour_order: channel order the network consumes (frames always arrive as RGB).
        dtype: network input dtype.
        mean: per-channel mean subtracted, in ``colour_order``.
        scale: multiplier applied after the mean is subtracted.
        weights: where the weights come from.
        licence: licence of the weights.
    """

    name: str
    input_size: int | None
    colour_order: str
    dtype: str
    mean: tuple[float, float, float]
    scale: float
    weights: str
    licence: str


@dataclass
class Detections:
    """Faces found in one frame.

    Attributes:
        boxes: (N, 4) float32 ``x1, y1, x2, y2`` in frame pixels.
        scores: (N,) float32 confidences.
        points5: (N, 5, 2) float32 eye/nose/mouth points in frame pixels, or None if the detector has none.
    """

    boxes: np.ndarray
    scores: np.ndarray
    points5: np.ndarray | None = None

    @staticmethod
    def empty(with_points: bool = False) -> "Detections":
        return Detections(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, 5, 2), np.float32) if with_points else None,
        )

    def __len__(self) -> int:
        return len(self.scores)


class Detector(Protocol):
    spec: ModelSpec

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        """Detects faces in RGB uint8 frames (each HxWx3, sizes may differ)."""
        ...


class Landmarker(Protocol):
    spec: ModelSpec

    def landmarks(self, frame: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Returns (N, 68, 2) float32 iBUG-68 points in frame pixels for N boxes in one RGB frame."""
        ...


_DETECTORS: dict[str, Callable[[DetectConfig], Detector]] = {}
_LANDMARKERS: dict[str, Callable[[LandmarkConfig], Landmarker]] = {}


def _register(table: dict, kind: str, name: str):
    def deco(factory):
        if name in table:
            raise ValueError(f"{kind} {name!r} is already registered")
        table[name] = factory
        return factory

    return deco


def register_detector(name: str):
    """Class decorator adding a detector under ``name``; a duplicate name raises ValueError."""
    return _register(_DETECTORS, "detector", name)


def register_landmarker(name: str):
    """Class decorator adding a landmarker under ``name``; a duplicate name raises ValueError."""
    return _register(_LANDMARKERS, "landmarker", name)


def detector_names() -> list[str]:
    return sorted(_DETECTORS)


def landmarker_names() -> list[str]:
    return sorted(_LANDMARKERS)


def build_detector(cfg: DetectConfig) -> Detector:
    """Builds the configured detector; ``auto`` takes RetinaFace if it loads, else dlib's HOG detector.

    Raises:
        ValueError: for an unknown detector name.
    """
    if cfg.detector == "auto":
        try:
            return _DETECTORS["retinaface"](cfg)
        except (ImportError, KeyError, OSError, RuntimeError):
            return _DETECTORS["dlib-hog"](cfg)
    if cfg.detector not in _DETECTORS:
        raise ValueError(f"detect.detector: unknown detector {cfg.detector!r} (known: auto, {', '.join(detector_names())})")
    return _DETECTORS[cfg.detector](cfg)


def build_landmarker(cfg: LandmarkConfig) -> Landmarker:
    """Builds the configured landmarker.

    Raises:
        ValueError: for an unknown landmarker name.
    """
    if cfg.landmarker not in _LANDMARKERS:
        raise ValueError(f"landmarks.landmarker: unknown landmarker {cfg.landmarker!r} (known: {', '.join(landmarker_names())})")
    return _LANDMARKERS[cfg.landmarker](cfg)
