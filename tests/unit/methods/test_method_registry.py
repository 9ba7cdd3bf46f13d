"""The method registry and the output contract every training-free method keeps (parametrized over all)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from dflray.config import ConfigError, DetectConfig, LandmarkConfig
from dflray.face import get_transform_mat, transform_points, warp_to_crop
from dflray.methods import SourceFaces, build_method, method_names, method_settings, method_spec, register_method
from dflray.methods.base import register_model_method
from dflray.sample import load_portrait

R = 96
FREE = [n for n in method_names() if method_spec(n).model == "none"]


@pytest.fixture(scope="module")
def faces():
    """Aligned whole-face crops (float32 [0,1]) and crop-pixel landmarks of the two sample portraits."""
    from dflray.detect import build_detector
    from dflray.detect.dlib_models import Dlib68Landmarker

    det, lmk = build_detector(DetectConfig(detector="dlib-hog")), Dlib68Landmarker(LandmarkConfig())
    out = []
    for name in ("astronaut", "grace_hopper"):
        frame = load_portrait(name)
        boxes = det.detect([frame])[0].boxes
        lm = lmk.landmarks(frame, boxes[:1])[0].astype(np.float64)
        mat = get_transform_mat(lm, R, "whole_face")
        out.append((warp_to_crop(frame, mat, R).astype(np.float32) / 255, transform_points(lm, mat)))
    return out


def test_the_built_in_methods_are_registered_with_what_they_need():
    assert {"df", "liae", "landmark-warp", "sbi", "xray-blend"} <= set(method_names())
    assert method_spec("liae").model == "source" and method_spec("sbi").model == "none"
    assert method_spec("landmark-warp").reads == ("source",) and method_spec("sbi").reads == ()
    assert all(method_spec(n).version >= 1 and method_spec(n).summary for n in method_names())


def test_duplicates_unknown_names_and_bad_settings_are_errors_naming_the_field():
    @dataclass(frozen=True)
    class Nothing:
        pass

    with pytest.raises(ValueError, match="'sbi' is already registered"):
        register_method("sbi", version=1, model="none", settings=Nothing, summary="again")(object)
    with pytest.raises(ValueError, match="'liae' is already registered"):
        register_model_method("liae", version=1, model="source", settings=Nothing, summary="again")
    with pytest.raises(ConfigError, match=r"^methods\[2\]\.name: unknown method 'faceswap2' \(known: amp, df, "):
        method_spec("faceswap2", "methods[2].name")
    with pytest.raises(ConfigError, match=r"^methods\[0\]\.settings\.nope: unknown option"):
        method_settings("sbi", {"nope": 1}, "methods[0]")
    with pytest.raises(ValueError, match="trained model"):
        build_method("liae", resolution=R, face_type="whole_face", seed=0)


@pytest.mark.parametrize("name", FREE)
def test_every_training_free_method_keeps_the_output_contract(name, faces, tmp_path):
    (dst, dst_lm), (src, src_lm) = faces
    sources = SourceFaces((np.stack([src]) * 255).astype(np.uint8), np.stack([src_lm]).astype(np.float32))
    settings, assets = None, None
    if method_spec(name).assets is not None:  # a method that loads files (onnx-swap): tiny ones made here
        from dflray.merge.methods import read_bytes
        from tests.tiny_swapper import write_tiny_swapper

        settings = write_tiny_swapper(str(tmp_path))
        assets = method_spec(name).assets(method_settings(name, settings), read_bytes, "settings")
    method = build_method(name, settings, resolution=R, face_type="whole_face", seed=3, sources=sources,
                          assets=assets)
    crops, lms = np.stack([dst, dst]), np.stack([dst_lm, dst_lm]).astype(np.float32)
    fakes, masks, dst_masks = method(crops, lms)
    assert fakes.shape == (2, R, R, 3) and masks.shape == dst_masks.shape == (2, R, R)
    for a in (fakes, masks, dst_masks):
        assert a.dtype == np.float32 and np.isfinite(a).all() and 0 <= a.min() and a.max() <= 1
    assert masks[0].sum() > 0.1 * R * R and dst_masks[0].sum() > 0.1 * R * R
    assert np.abs(fakes[0] - dst)[masks[0] > 0.5].mean() > 0.01  # the face changed where the mask says
    np.testing.assert_array_equal(fakes[0], fakes[1])  # one set of parameters per video: same crop, same fake
