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
from dflray.merge.video import MethodPredict
from dflray.methods import SourceFaces, build_method, method_settings, method_spec

__all__ = ["METHOD_MAX_RESOLUTION", "SOURCE_FACES_LIMIT", "full_settings", "load_source_faces", "method_contract", "method_id",
           "method_predict"]

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
    """What stands for a model's weights checksum for a method: sha256 of its name, version and settings."""
    doc = json.dumps({"method": name, "version": method_spec(name).version, "settings": full_settings(name, settings)},
                     sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()


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
    """Method ``name`` built for one video (its seed) as the merge's predictor."""
    method = build_method(name, settings, resolution=contract.resolution, face_type=contract.face_type, seed=seed,
                          sources=sources)
    return MethodPredict(method, batch_size=batch_size)
