"""Regenerate ``dfl_reference.json``: DeepFaceLab's own outputs on real landmark sets.

The reference numbers are produced by importing ``facelib.LandmarksProcessor`` from a
DeepFaceLab checkout and calling it; nothing of DFL is copied here. Two steps, because
the landmark detector and DFL want different numpy versions:

1. ``landmarks`` (any env with dlib, e.g. the project venv) runs dlib's 68-point predictor
   on the sample photos and on rotated/scaled copies of them, adds a few geometric variants
   and faces projected from a posed 3D model, and writes the inputs into the JSON.
2. ``reference`` (an env like DFL's own: numpy<1.24 because DFL uses ``np.int``, and an
   opencv 4.x) reads those inputs, runs DFL and adds matrices, poses and hull masks.

Example:
    .venv/bin/python tests/unit/data/make_dfl_reference.py landmarks
    /tmp/dfl/venv/bin/python tests/unit/data/make_dfl_reference.py reference /path/to/DeepFaceLab
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import types
from pathlib import Path

import cv2
import numpy as np

_HERE = Path(__file__).resolve().parent
_OUT = _HERE / "dfl_reference.json"
_MEDIA = Path("/work/shared/media")
_IMAGES = ("obama_1.jpg", "biden.jpg", "two_people.jpg")
FACE_TYPES = ("half", "mid_full", "full", "whole_face", "head")
_DFL_TYPE_NAMES = {"half": "HALF", "mid_full": "MID_FULL", "full": "FULL",
                   "whole_face": "WHOLE_FACE", "head": "HEAD"}
SIZES = (256, 512)
# Crops whose hull masks are stored (masks are the bulky part of the file).
MASK_CROPS = (("full", 256), ("whole_face", 256), ("head", 256))


# --------------------------------------------------------------------------- landmarks


def _predictor():
    import importlib.util

    import dlib

    # Locate the package without importing it: its __init__ needs pkg_resources.
    spec = importlib.util.find_spec("face_recognition_models")
    path = Path(spec.origin).parent / "models" / "shape_predictor_68_face_landmarks.dat"
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(path))


def _detect(image_bgr, detector, predictor):
    rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
    faces = []
    for rect in sorted(detector(rgb, 1), key=lambda r: r.left()):
        shape = predictor(rgb, rect)
        faces.append([[float(p.x), float(p.y)] for p in shape.parts()])
    return faces


def _rotate_image(image, degrees, scale=1.0):
    h, w = image.shape[:2]
    mat = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, scale)
    cos, sin = abs(mat[0, 0]), abs(mat[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    mat[:, 2] += (nw / 2 - w / 2, nh / 2 - h / 2)
    return cv2.warpAffine(image, mat, (nw, nh), flags=cv2.INTER_LINEAR)


def _projected_faces():
    """Landmarks of a posed 3D mean face, so the pose reference covers real yaw/pitch."""
    sys.path.insert(0, str(_HERE.parents[2]))
    from dflray.face.pose import _LANDMARKS_68_3D

    out = []
    for yaw, pitch, roll in ((35, 0, 0), (-30, 10, 0), (0, -20, 0), (20, 15, 12), (-45, -10, -8)):
        rvec = np.deg2rad([pitch, yaw, roll]).astype(np.float64)
        cam = np.array([[1000.0, 0, 400], [0, 1000.0, 300], [0, 0, 1]])
        pts, _ = cv2.projectPoints(_LANDMARKS_68_3D.astype(np.float64), rvec,
                                   np.array([0.0, 0.0, 900.0]), cam, np.zeros(4))
        out.append({"name": f"proj_y{yaw}_p{pitch}_r{roll}", "frame_shape": [600, 800],
                    "landmarks": np.round(pts.reshape(68, 2), 3).tolist()})
    return out


def make_landmarks(media: Path = _MEDIA) -> list[dict]:
    detector, predictor = _predictor()
    cases = []
    for name in _IMAGES:
        image = cv2.imread(str(media / name))
        if image is None:
            raise FileNotFoundError(media / name)
        stem = name.rsplit(".", 1)[0]
        variants = {"": image, "_rot20": _rotate_image(image, 20),
                    "_rotm15_s06": _rotate_image(image, -15, 0.6)}
        for tag, img in variants.items():
            for i, lm in enumerate(_detect(img, detector, predictor)):
                cases.append({"name": f"{stem}{tag}_f{i}", "frame_shape": list(img.shape[:2]),
                              "landmarks": lm})
    # Geometric variants dlib would not detect: strong in-plane rotation and a non-uniform
    # squash (a face tilted away), both applied to the landmarks directly.
    base = [c for c in cases if c["name"] in ("obama_1_f0", "biden_f0")]
    for c in base:
        lm = np.asarray(c["landmarks"])
        h, w = c["frame_shape"]
        rot = cv2.getRotationMatrix2D((w / 2, h / 2), 70, 1.0)
        lm_rot = lm @ rot[:, :2].T + rot[:, 2]
        cases.append({"name": c["name"] + "_lmrot70", "frame_shape": [h, w],
                      "landmarks": np.round(lm_rot, 3).tolist()})
        centre = lm.mean(axis=0)
        lm_tilt = (lm - centre) * [0.7, 1.0] + centre
        cases.append({"name": c["name"] + "_lmsquash", "frame_shape": [h, w],
                      "landmarks": np.round(lm_tilt, 3).tolist()})
    return cases + _projected_faces()


# --------------------------------------------------------------------------- reference


def _import_dfl(checkout: Path):
    """Import DFL's LandmarksProcessor without running facelib/__init__ (it loads TF models)."""
    sys.path.insert(0, str(checkout))
    if not hasattr(np, "int"):  # removed in numpy 1.24; DFL still uses it
        np.int = int
    facelib = types.ModuleType("facelib")
    facelib.__path__ = [str(checkout / "facelib")]
    sys.modules["facelib"] = facelib
    facelib.FaceType = importlib.import_module("facelib.FaceType").FaceType
    imagelib = types.ModuleType("core.imagelib")  # only used by functions we do not call
    sys.modules["core.imagelib"] = imagelib
    lp = importlib.import_module("facelib.LandmarksProcessor")
    return lp, facelib.FaceType


def _rle(mask: np.ndarray) -> list[int]:
    """Run lengths of the row-major flattened 0/1 mask, starting with a run of zeros."""
    flat = mask.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return runs if flat[0] == 0 else [0] + runs


def make_reference(checkout: Path, cases: list[dict]) -> list[dict]:
    lp, face_type_enum = _import_dfl(checkout)
    for case in cases:
        lm = np.asarray(case["landmarks"], dtype=np.float32)
        mats, poses = {}, {}
        for ft in FACE_TYPES:
            dfl_type = getattr(face_type_enum, _DFL_TYPE_NAMES[ft])
            for size in SIZES:
                mat = lp.get_transform_mat(lm, size, dfl_type)
                mats[f"{ft}_{size}"] = np.asarray(mat, dtype=np.float64).tolist()
                if size == 256:
                    crop_lm = lp.transform_points(lm, mat)
            poses[ft] = [float(v) for v in lp.estimate_pitch_yaw_roll(crop_lm, size=256)]
        case["mats"] = mats
        case["pitch_yaw_roll_256"] = poses
        frame_mask = lp.get_image_hull_mask(tuple(case["frame_shape"]) + (3,), lm)[..., 0] > 0
        masks = {"frame": {"area": int(frame_mask.sum()), "rle": _rle(frame_mask)}}
        for ft, size in MASK_CROPS:
            crop_lm = lp.transform_points(lm, np.float64(mats[f"{ft}_{size}"]))
            m = lp.get_image_hull_mask((size, size, 3), crop_lm)[..., 0] > 0
            masks[f"{ft}_{size}"] = {"area": int(m.sum()), "rle": _rle(m)}
        case["hull_masks"] = masks
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    lmk = sub.add_parser("landmarks", help="detect landmark sets and write them as inputs")
    lmk.add_argument("--media", type=Path, default=_MEDIA, help="folder with the sample photos")
    ref = sub.add_parser("reference", help="add DFL outputs for the stored inputs")
    ref.add_argument("dfl_checkout", type=Path, help="path to a DeepFaceLab checkout")
    args = parser.parse_args()
    if args.step == "landmarks":
        data = {"cases": make_landmarks(args.media)}
    else:
        data = json.loads(_OUT.read_text())
        data["cases"] = make_reference(args.dfl_checkout, data["cases"])
        data["generator"] = {"numpy": np.__version__, "opencv": cv2.__version__,
                             "face_types": list(FACE_TYPES), "sizes": list(SIZES)}
    _OUT.write_text(json.dumps(data, separators=(",", ":")))
    print(f"wrote {_OUT} ({_OUT.stat().st_size // 1024} KiB, {len(data['cases'])} cases)")


if __name__ == "__main__":
    main()
