"""Regenerate ``dfl_color_reference.npz``: DeepFaceLab's own colour-transfer outputs on small images.

The outputs come from importing ``core/imagelib/color_transfer.py`` out of a DeepFaceLab checkout and
calling its functions; nothing of DFL is copied here. Only the closed-form modes are recorded (rct with
and without the merger's mask, lct, mkl, and mkl on masked images as the merger's ``mkl-m``); idt and
sot draw from numpy's global random state, so ``test_color.py`` checks their properties instead.

Every input is either synthetic or cut from a public-domain image that an installed package ships:
scikit-image's ``data.astronaut()`` (NASA portrait of Eileen Collins) and matplotlib's sample
``grace_hopper.jpg`` (US Navy portrait). No other photo may go into this file or the ``.npz``.
Inputs are stored as uint8 (so the test does not depend on the JPEG decoder or cv2's resampling) and
used as float32 ``x / 255``; outputs are stored as uint16 ``round(y * 65535)``. All images are BGR:

- ``face``: 64×64 whole-face crops of the astronaut (src) and Grace Hopper (ref), cut with the DFL
  alignment matrices in ``FACE_CROPS`` (``dflray.face.align.get_transform_mat(landmarks, 256,
  "whole_face")`` on dlib's 68 landmarks of each image, rounded), and an elliptic face mask.
- ``synth``: 32×32 seeded smooth colour fields with noise, and a mask.
- ``sizes``: src 40×48 against a 24×32 ref (DFL allows different sizes without a mask).

``test_color.py`` rebuilds the face crops with ``face_crop`` to check where the stored pixels came from.

Needs numpy, opencv-python-headless, scipy and numexpr (what DFL's module imports) plus scikit-image and
matplotlib (the source images), e.g.::

    python3 -m venv /tmp/dflref
    /tmp/dflref/bin/pip install numpy opencv-python-headless scipy numexpr scikit-image matplotlib
    /tmp/dflref/bin/python tests/unit/data/make_dfl_color_reference.py /path/to/DeepFaceLab
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np

_HERE = Path(__file__).resolve().parent
_OUT = _HERE / "dfl_color_reference.npz"
_FACE_SIZE = 64

# DFL whole_face alignment (256 px crop) of the one face in each public-domain image.
FACE_CROPS = {
    "astronaut": [[1.517121, 0.081167, -223.274587], [-0.081167, 1.517121, -35.336642]],
    "grace_hopper": [[0.778507, -0.032108, -72.958940], [0.032108, 0.778507, -55.452568]],
}


def public_domain_image(name: str) -> np.ndarray:
    """A BGR uint8 public-domain photo shipped by an installed package."""
    if name == "astronaut":
        from skimage import data

        return np.ascontiguousarray(data.astronaut()[..., ::-1])
    if name == "grace_hopper":
        from matplotlib import cbook

        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(path)
        return image
    raise KeyError(name)


def face_crop(name: str) -> np.ndarray:
    """64×64 BGR uint8 whole-face crop: cut at 256 px with the DFL matrix, then area-filtered."""
    mat = np.asarray(FACE_CROPS[name], np.float64)
    crop = cv2.warpAffine(public_domain_image(name), mat, (256, 256), flags=cv2.INTER_CUBIC)
    return cv2.resize(crop, (_FACE_SIZE, _FACE_SIZE), interpolation=cv2.INTER_AREA)


def _import_color_transfer(checkout: Path):
    """Loads DFL's color_transfer module alone (core.imagelib's __init__ pulls in much more)."""
    path = checkout / "core" / "imagelib" / "color_transfer.py"
    spec = importlib.util.spec_from_file_location("dfl_color_transfer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, hashlib.sha256(path.read_bytes()).hexdigest()


def _ellipse_mask(h: int, w: int, fy: float = 0.42, fx: float = 0.34) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, int(h * 0.55)), (int(w * fx), int(h * fy)), 0, 0, 360, 1, -1)
    return mask


def _synth(h: int, w: int, rng: np.random.Generator, tint) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([0.5 + 0.4 * np.sin(3 * xx + 1), 0.5 + 0.3 * np.cos(4 * yy), 0.4 + 0.3 * xx * yy], -1)
    img = base * np.asarray(tint) + rng.normal(0, 0.05, (h, w, 3))
    return np.clip(img * 255, 0, 255).astype(np.uint8)


def make_inputs() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    return {
        "face": {"src": face_crop("astronaut"), "ref": face_crop("grace_hopper"),
                 "mask": _ellipse_mask(_FACE_SIZE, _FACE_SIZE)},
        "synth": {"src": _synth(32, 32, rng, (1.0, 0.8, 0.6)), "ref": _synth(32, 32, rng, (0.5, 0.9, 1.2)),
                  "mask": _ellipse_mask(32, 32, 0.3, 0.3)},
        "sizes": {"src": _synth(40, 48, rng, (0.9, 1.0, 0.7)), "ref": _synth(24, 32, rng, (1.1, 0.6, 0.9))},
    }


def make_reference(checkout: Path) -> dict[str, np.ndarray]:
    ct, ct_sha256 = _import_color_transfer(checkout)
    out: dict[str, np.ndarray] = {}
    for case, arrays in make_inputs().items():
        for name, value in arrays.items():
            out[f"{case}/{name}"] = value
        src = arrays["src"].astype(np.float32) / 255.0
        ref = arrays["ref"].astype(np.float32) / 255.0
        out[f"{case}/rct"] = ct.reinhard_color_transfer(src, ref)
        out[f"{case}/lct"] = ct.linear_color_transfer(src, ref)
        out[f"{case}/mkl"] = ct.color_transfer_mkl(src, ref)
        if "mask" in arrays:
            # The merger's calls (merger/MergeMasked.py): an H×W×1 float mask of 0/1.
            m = arrays["mask"].astype(np.float32)[..., None]
            out[f"{case}/rct_masked"] = ct.reinhard_color_transfer(src, ref, target_mask=m, source_mask=m)
            out[f"{case}/mkl_m"] = ct.color_transfer_mkl(src * m, ref * m)
    for key in [k for k in out if out[k].dtype != np.uint8]:
        # DFL's outputs lie in [0, 1] (cv2's float Lab->BGR clips too); 16 bits keep 8e-6 and halve the file.
        value = np.asarray(out[key], np.float64)
        assert 0.0 <= value.min() and value.max() <= 1.0, key
        out[key] = np.round(value * 65535).astype(np.uint16)
    out["generator"] = np.array(json.dumps({
        "numpy": np.__version__, "opencv": cv2.__version__, "dfl_color_transfer_sha256": ct_sha256,
        "inputs": "skimage.data.astronaut, matplotlib sample grace_hopper.jpg, synthetic"}))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dfl_checkout", type=Path, help="path to a DeepFaceLab checkout")
    args = parser.parse_args()
    data = make_reference(args.dfl_checkout)
    np.savez_compressed(_OUT, **data)
    print(f"wrote {_OUT} ({_OUT.stat().st_size // 1024} KiB, {len(data)} arrays)")


if __name__ == "__main__":
    main()
