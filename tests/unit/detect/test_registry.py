"""Registries: duplicates are errors, unknown names fail clearly, every plugin meets its contract."""

import numpy as np
import pytest

from dflray.config import DetectConfig, LandmarkConfig
from dflray.detect import (
    Detections,
    build_detector,
    build_landmarker,
    detector_names,
    landmarker_names,
    register_detector,
    register_landmarker,
)
from dflray.sample import load_portrait

# The astronaut's face in skimage.data.astronaut() (dlib HOG box, for reference).
ASTRONAUT_FACE = (175, 76, 266, 167)


def test_duplicate_names_are_errors():
    with pytest.raises(ValueError, match="already registered"):
        register_detector("dlib-hog")(object)
    with pytest.raises(ValueError, match="already registered"):
        register_landmarker("dlib68")(object)


def test_unknown_names():
    with pytest.raises(ValueError, match="detect.detector"):
        build_detector(DetectConfig(detector="nope"))
    with pytest.raises(ValueError, match="landmarks.landmarker"):
        build_landmarker(LandmarkConfig(landmarker="nope"))


def test_expected_plugins_registered():
    assert {"retinaface", "dlib-hog", "dlib-cnn"} <= set(detector_names())
    assert "dlib68" in landmarker_names()


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("name", detector_names())
def test_detector_contract(name):
    if name == "dlib-cnn":
        pytest.importorskip("dlib")
    try:
        det = build_detector(DetectConfig(detector=name, input_size=512))
    except ImportError as e:
        pytest.skip(f"{name} not loadable here: {e}")
    img = load_portrait("astronaut")
    grey = img.mean(axis=2).astype(np.uint8)
    blank = np.full((200, 300, 3), 127, np.uint8)
    out = det.detect([img, blank, grey])
    assert len(out) == 3 and all(isinstance(d, Detections) for d in out)
    for d, frame in zip(out, [img, blank, grey]):
        assert d.boxes.dtype == np.float32 and d.boxes.shape == (len(d), 4)
        assert d.scores.dtype == np.float32 and d.scores.shape == (len(d),)
        assert d.points5 is None or (d.points5.shape == (len(d), 5, 2) and d.points5.dtype == np.float32)
        assert np.all(np.diff(d.scores) <= 0), "sorted by score"
        if len(d):
            assert (d.boxes[:, :2] >= 0).all() and (d.boxes[:, 2] <= frame.shape[1]).all()
            assert (d.boxes[:, 3] <= frame.shape[0]).all() and (d.boxes[:, 2:] > d.boxes[:, :2]).all()
    assert len(out[1]) == 0
    best = max(_iou(b, ASTRONAUT_FACE) for b in out[0].boxes)
    assert best > 0.4, f"{name} missed the astronaut's face"
    assert det.spec.name == name and det.spec.licence


@pytest.mark.parametrize("name", landmarker_names())
def test_landmarker_contract(name):
    lm = build_landmarker(LandmarkConfig(landmarker=name))
    img = load_portrait("astronaut")
    pts = lm.landmarks(img, np.array([ASTRONAUT_FACE], np.float32))
    assert pts.shape == (1, 68, 2) and pts.dtype == np.float32
    x1, y1, x2, y2 = ASTRONAUT_FACE
    pad = 0.15 * (x2 - x1)
    assert (pts[0, :, 0] > x1 - pad).all() and (pts[0, :, 0] < x2 + pad).all()
    assert (pts[0, :, 1] > y1 - pad).all() and (pts[0, :, 1] < y2 + pad).all()
    assert lm.landmarks(img, np.zeros((0, 4), np.float32)).shape == (0, 68, 2)
    assert "non-commercial" in lm.spec.licence or lm.spec.licence
