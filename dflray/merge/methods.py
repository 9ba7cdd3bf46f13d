"""Training-free forgery methods (``dflray.methods``) in the merge: their crop, their source faces, their id.

A method runs where a trained model's predictor would (``dflray.merge.video.MethodPredict``), on crops
of the faceset's own face type, at most ``METHOD_MAX_RESOLUTION`` pixels; methods that read the source
person's faces get them from the faceset (aligned crops and landmarks in crop pixels), a bounded,
evenly spaced sample of them.

Example:
    >>> contract = method_contract("sbi", "whole_face", 512)  # doctest: +SKIP
    >>> predict = method_predict("sbi", {}, contract, seed=7, sources=None)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import cv2
import numpy as np

from dflray.artifacts.export import ModelContract
from dflray.face.align import transform_points
from dflray.faceset import read_video_faces
from dflray.io import schema
from dflray.io.storage import open_uri
from dflray.merge.video import MethodPredict
from dflray.methods import SourceFaces, build_method, method_settings, method_spec

__all__ = ["METHOD_MAX_RESOLUTION", "SOURCE_FACES_LIMIT", "full_settings", "load_source_faces", "method_assets",
           "method_contract", "method_id", "method_predict", "read_bytes"]

# Methods work on the faceset's crops, scaled down to this side at most: their cost grows with the
# square of it, and a face pasted back into a video frame rarely needs more.
METHOD_MAX_RESOLUTION = 256
# Source faces a method may choose from: enough poses to pick from, bounded memory per merge worker.
SOURCE_FACES_LIMIT = 256


def method_contract(name: str, face_type: str, faceset_size: int) -> ModelContract:
    """The crop a method works on: the faceset's face type, at the faceset's size or
    ``METHOD_MAX_RESOLUTION``, whichever is smaller (or the method's own, when its spec fixes them)."""
    spec = method_spec(name)
    return ModelContract(arch=name, face_type=spec.face_type or face_type,
                         resolution=spec.resolution or min(int(faceset_size), METHOD_MAX_RESOLUTION))


def full_settings(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Every setting of method ``name``, its defaults filled in (what a fake records)."""
    return dataclasses.asdict(method_settings(name, settings, ""))


def method_id(name: str, settings: dict[str, Any]) -> str:
    """What stands for a model's weights checksum for a method: sha256 of its name, version and settings,
    and of the files it loads (``onnx-swap``'s models: the same path may hold another model)."""
    doc = {"method": name, "version": method_spec(name).version, "settings": full_settings(name, settings)}
    if method_spec(name).assets is not None:
        doc["files"] = method_assets(name, settings).checksums
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def read_bytes(uri: str) -> bytes:
    """A whole file (any fsspec URL): what a method's ``assets`` loader reads its files with."""
    with open_uri(uri) as f:
        return f.read()


_ASSETS: dict[tuple[str, str], Any] = {}  # (method, settings JSON) → loaded assets, the last two


def method_assets(name: str, settings: dict[str, Any], field_path: str = "settings") -> Any:
    """What method ``name`` loads (its spec's ``assets``: e.g. ``onnx-swap``'s checked ONNX sessions), loaded
    once per process and settings (the last two kept); None for a method that loads nothing.

    Raises:
        ConfigError: naming ``FIELD_PATH.<setting>`` for a file that cannot be read or does not fit.
    """
    spec = method_spec(name)
    if spec.assets is None:
        return None
    key = (name, json.dumps(settings, sort_keys=True, default=str))
    if key not in _ASSETS:
        prefix = field_path.removesuffix(".settings") if field_path.endswith(".settings") else ""
        loaded = spec.assets(method_settings(name, settings, prefix), read_bytes, field_path)
        while len(_ASSETS) >= 2:
            _ASSETS.pop(next(iter(_ASSETS)))
        _ASSETS[key] = loaded
    return _ASSETS[key]


def load_source_faces(faceset: str, files_by_video: dict[str, list[str]], limit: int = SOURCE_FACES_LIMIT
                      ) -> SourceFaces | None:
    """The source person's faces from a faceset: aligned crops and landmarks in crop pixels, at most
    ``limit`` of them, evenly spaced over the person's videos in frame order.

    Args:
        faceset: the faceset URI.
        files_by_video: video id → the faces files holding its rows (``face_holders``).
        limit: faces at most.

    Returns:
        The faces, or None when the videos have none.
    """
    tables = [t for vid, files in sorted(files_by_video.items())
              if (t := read_video_faces(faceset, files, vid, ["frame_index", "image", "landmarks", "align_mat"]))
              is not None and t.num_rows]
    if not tables:
        return None
    rows = sum(t.num_rows for t in tables)
    keep = set(np.linspace(0, rows - 1, min(limit, rows)).round().astype(int).tolist())
    crops, marks = [], []
    at = 0
    for t in tables:
        t = t.sort_by("frame_index")
        lms, mats = schema.landmarks_of(t), schema.matrices_of(t)
        images = t.column("image").to_pylist()
        for i in range(t.num_rows):
            if at + i in keep:
                bgr = cv2.imdecode(np.frombuffer(images[i], np.uint8), cv2.IMREAD_COLOR)
                if bgr is not None:
                    crops.append(bgr[..., ::-1])
                    marks.append(transform_points(lms[i], mats[i]).astype(np.float32))
        at += t.num_rows
    if not crops:
        return None
    return SourceFaces(np.stack(crops), np.stack(marks))


def method_predict(name: str, settings: dict[str, Any], contract: ModelContract, *, seed: int,
                   sources: SourceFaces | None, batch_size: int = 32) -> MethodPredict:
    """Method ``name`` built for one video (its seed) as the merge's predictor (with what it loads, once per
    process: ``method_assets``)."""
    method = build_method(name, settings, resolution=contract.resolution, face_type=contract.face_type, seed=seed,
                          sources=sources, assets=method_assets(name, settings))
    return MethodPredict(method, batch_size=batch_size)
