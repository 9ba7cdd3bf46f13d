"""dlib's models, loaded by path from the ``face_recognition_models`` package (no download).

- ``dlib-hog``: dlib's HOG + linear SVM frontal face detector (built into dlib).
- ``dlib-cnn``: dlib's MMOD CNN face detector (``mmod_human_face_detector.dat``).
- ``dlib68``: dlib's 68-point shape predictor (iBUG 300-W scheme, as DeepFaceLab uses).
- ``IdentityEmbedder``: dlib's ResNet face descriptor (128-D; same person when distance < 0.6).

Licences: the 68-point model is trained on iBUG 300-W, whose licence excludes commercial use; the
detector and descriptor models are released by Davis King under CC0 / Boost terms. dlib ``det_score``
values are the detector's margin (0 = dlib's default decision threshold), not probabilities, so
``detect.score_threshold`` does not apply to them.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Sequence

import cv2
import numpy as np

from dflray.config import DetectConfig, LandmarkConfig
from dflray.detect._registry import Detections, ModelSpec, register_detector, register_landmarker

_MODELS = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "cnn_detector": "mmod_human_face_detector.dat",
    "descriptor": "dlib_face_recognition_resnet_model_v1.dat",
}


def model_path(key: str) -> str:
    """Path of a dlib model file shipped in ``face_recognition_models``.

    The package's own import needs ``pkg_resources``; we only locate its folder, never import it.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("face_recognition_models is not installed (pip install face_recognition_models)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", _MODELS[key])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dlib model missing: {path}")
    return path


def _rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return np.ascontiguousarray(np.repeat(frame[..., None], 3, axis=2))
    if frame.shape[2] == 1:
        return np.ascontiguousarray(np.repeat(frame, 3, axis=2))
    return np.ascontiguousarray(frame[..., :3])


def _rects_to_boxes(rects, scale: float, shape: tuple[int, ...]) -> np.ndarray:
    boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], np.float32).reshape(-1, 4)
    boxes /= scale
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, shape[1])
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, shape[0])
    return boxes


class _DlibDetector:
    spec: ModelSpec

    def __init__(self, cfg: DetectConfig):
        self.cfg = cfg

    def _resize(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        scale = min(1.0, self.cfg.input_size / max(frame.shape[:2]))
        if scale < 1.0:
            frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        return frame, scale

    def _keep(self, boxes: np.ndarray, scores: np.ndarray) -> Detections:
        side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        keep = side >= self.cfg.min_face
        order = np.argsort(-scores[keep], kind="stable")
        return Detections(boxes[keep][order], scores[keep][order].astype(np.float32), None)


@register_detector("dlib-hog")
class DlibHogDetector(_DlibDetector):
    """dlib's HOG frontal face detector; frames are scaled to ``input_size`` (longest side) first."""

    def __init__(self, cfg: DetectConfig):
        import dlib

        super().__init__(cfg)
        self._det = dlib.get_frontal_face_detector()
        self.spec = ModelSpec("dlib-hog", cfg.input_size, "RGB", "uint8", (0.0, 0.0, 0.0), 1.0,
                              "built into dlib", "Boost Software License (dlib)")

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        out = []
        for frame in frames:
            img, scale = self._resize(_rgb(frame))
            rects, scores, _ = self._det.run(img, 1, 0.0)
            out.append(self._keep(_rects_to_boxes(rects, scale, frame.shape), np.asarray(scores, np.float32)))
        return out


@register_detector("dlib-cnn")
class DlibCnnDetector(_DlibDetector):
    """dlib's MMOD CNN face detector (slow on CPU; uses CUDA when dlib was built with it)."""

    def __init__(self, cfg: DetectConfig):
        import dlib

        super().__init__(cfg)
        self._det = dlib.cnn_face_detection_model_v1(model_path("cnn_detector"))
        self.spec = ModelSpec("dlib-cnn", cfg.input_size, "RGB", "uint8", (0.0, 0.0, 0.0), 1.0,
                              "face_recognition_models/mmod_human_face_detector.dat", "CC0 (Davis King)")

    def detect(self, frames: Sequence[np.ndarray]) -> list[Detections]:
        imgs, scales = zip(*(self._resize(_rgb(f)) for f in frames)) if frames else ((), ())
        out = []
        for frame, img, scale in zip(frames, imgs, scales):
            dets = self._det(img, 1)
            rects = [d.rect for d in dets]
            scores = np.array([d.confidence for d in dets], np.float32)
            out.append(self._keep(_rects_to_boxes(rects, scale, frame.shape), scores))
        return out


@register_landmarker("dlib68")
class Dlib68Landmarker:
    """dlib's 68-point shape predictor (iBUG 300-W scheme; non-commercial licence of its training data)."""

    def __init__(self, cfg: LandmarkConfig):
        import dlib

        self._dlib = dlib
        self._pred = dlib.shape_predictor(model_path("landmarks68"))
        self.spec = ModelSpec("dlib68", None, "RGB", "uint8", (0.0, 0.0, 0.0), 1.0,
                              "face_recognition_models/shape_predictor_68_face_landmarks.dat",
                              "trained on iBUG 300-W: non-commercial use only")

    def shapes(self, frame: np.ndarray, boxes: np.ndarray, points5: np.ndarray | None = None):
        """dlib ``full_object_detection`` per box (for the identity embedder)."""
        img = _rgb(frame)
        out = []
        for i, b in enumerate(boxes):
            # Detector boxes are used as they are: squaring/shifting RetinaFace boxes toward dlib's
            # training boxes changed landmark error by only 0.2% of the eye distance on the samples.
            left, top, right, bottom = (int(round(v)) for v in b[:4])
            out.append(self._pred(img, self._dlib.rectangle(left, top, right, bottom)))
        return out

    def landmarks(self, frame: np.ndarray, boxes: np.ndarray, points5: np.ndarray | None = None) -> np.ndarray:
        shapes = self.shapes(frame, boxes, points5)
        return np.array([[(p.x, p.y) for p in s.parts()] for s in shapes], np.float32).reshape(-1, 68, 2)


class IdentityEmbedder:
    """dlib's 128-D face descriptor (ResNet, 99.38% on LFW); same person when distance < 0.6.

    Example:
        >>> emb = IdentityEmbedder()  # doctest: +SKIP
        >>> v = emb.embed(frame_rgb, landmarks68)  # (N, 128) float32
    """

    def __init__(self):
        import dlib

        self._dlib = dlib
        self._net = dlib.face_recognition_model_v1(model_path("descriptor"))

    def embed(self, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """(N, 128) float32 descriptors of the faces given by their (N, 68, 2) frame landmarks."""
        if len(landmarks) == 0:
            return np.zeros((0, 128), np.float32)
        dlib = self._dlib
        img = _rgb(frame)
        shapes = dlib.full_object_detections()
        for lm in landmarks:
            x1, y1 = lm.min(0)
            x2, y2 = lm.max(0)
            rect = dlib.rectangle(int(x1), int(y1), int(x2), int(y2))
            shapes.append(dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in lm]))
        return np.asarray(self._net.compute_face_descriptor(img, shapes), np.float32).reshape(-1, 128)
