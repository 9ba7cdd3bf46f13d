"""Face detectors and landmarkers behind explicit registries."""

from dflray.detect import dlib_models as _dlib_models  # noqa: F401  (registers dlib-hog, dlib-cnn, dlib68)
from dflray.detect import retinaface as _retinaface  # noqa: F401  (registers retinaface)
from dflray.detect._registry import (
    Detections,
    Detector,
    Landmarker,
    ModelSpec,
    build_detector,
    build_landmarker,
    detector_names,
    landmarker_names,
    register_detector,
    register_landmarker,
)
from dflray.detect.retinaface import check_weights

__all__ = [
    "Detections",
    "Detector",
    "Landmarker",
    "ModelSpec",
    "build_detector",
    "build_landmarker",
    "check_weights",
    "detector_names",
    "landmarker_names",
    "register_detector",
    "register_landmarker",
]
