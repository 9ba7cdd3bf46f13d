"""``onnx-swap``: a user-supplied one-shot swapper, run on real faces (the sample portraits) with tiny ONNX
models made here (tests/tiny_swapper.py; nothing downloaded): the fake changes only inside its mask, its
identity vector is the source person's, and every contract mismatch is refused naming the setting."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from dflray.config import ConfigError, DetectConfig, GenerateConfig, LandmarkConfig, load_config
from dflray.dataset.pipeline import check_methods
from dflray.face import get_transform_mat, transform_points, warp_to_crop
from dflray.merge.methods import method_assets, method_id, read_bytes
from dflray.methods import SourceFaces, build_method, method_settings
from dflray.methods.onnx_swap import arcface_points, arcface_template, load_onnx_swap
from dflray.sample import load_portrait
from tests.tiny_swapper import write_tiny_swapper

R = 128


@pytest.fixture(scope="module")
def faces():
    """Aligned whole-face crops (uint8) and crop-pixel landmarks of the two sample portraits."""
    from dflray.detect import build_detector
    from dflray.detect.dlib_models import Dlib68Landmarker

    det, lmk = build_detector(DetectConfig(detector="dlib-hog")), Dlib68Landmarker(LandmarkConfig())
    out = {}
    for name in ("astronaut", "grace_hopper"):
        frame = load_portrait(name)
        lm = lmk.landmarks(frame, det.detect([frame])[0].boxes[:1])[0].astype(np.float64)
        mat = get_transform_mat(lm, R, "whole_face")
        out[name] = (warp_to_crop(frame, mat, R), transform_points(lm, mat).astype(np.float32))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return write_tiny_swapper(str(tmp_path_factory.mktemp("swapper")))


def _sources(faces, name):
    crop, lm = faces[name]
    return SourceFaces(crop[None], lm[None])


def _build(settings, sources):
    assets = load_onnx_swap(method_settings("onnx-swap", settings), read_bytes)
    return build_method("onnx-swap", settings, resolution=R, face_type="whole_face", seed=0, sources=sources,
                        assets=assets), assets


def test_the_fake_changes_the_destination_only_inside_its_mask(faces, models):
    method, _ = _build(models, _sources(faces, "grace_hopper"))
    crop, lm = faces["astronaut"]
    dst = (crop.astype(np.float32) / 255)[None]
    fake, mask, dst_mask = method(dst, lm[None])
    assert fake.shape == (1, R, R, 3) and mask.shape == dst_mask.shape == (1, R, R)
    assert np.array_equal(fake[mask == 0], dst[mask == 0])  # outside the mask: the destination crop
    inside = mask > 0.5
    assert inside.mean() > 0.15 and np.abs(fake - dst).max(-1)[inside].mean() > 0.02
    assert (mask[dst_mask == 0] < 0.5).mean() > 0.8  # the mask stays on the face (its hull, dilated a little)
    again, _, _ = method(dst, lm[None])
    assert np.array_equal(again, fake)  # nothing random: the same crop gives the same fake


def test_the_identity_vector_is_the_source_persons_through_the_embedding_map(faces, models):
    hopper, assets = _build(models, _sources(faces, "grace_hopper"))
    astro, _ = _build(models, _sources(faces, "astronaut"))
    # by hand: align at 112 on ArcFace's template, (x - 127.5) / 127.5, embed, normalise, x emap, normalise
    crop, lm = faces["grace_hopper"]
    import cv2

    from dflray.face.align import _umeyama

    mat = _umeyama(arcface_points(lm), arcface_template(112))[:2]
    aligned = cv2.warpAffine(crop, mat, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    blob = ((aligned.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
    emb = ort.InferenceSession(models["identity_model"]).run(None, {"data": blob})[0][0].astype(np.float64)
    want = (emb / np.linalg.norm(emb)) @ assets.emap
    assert np.allclose(hopper.latent[0], want / np.linalg.norm(want), atol=1e-5)
    assert not np.allclose(hopper.latent, astro.latent, atol=1e-3)
    dst = (faces["astronaut"][0].astype(np.float32) / 255)[None]
    a, _, _ = hopper(dst, faces["astronaut"][1][None])
    b, _, _ = astro(dst, faces["astronaut"][1][None])
    assert np.abs(a - b).max() > 0.02  # another source person, another fake


def test_arcface_template_follows_insightface_norm_crop():
    assert np.allclose(arcface_template(112)[0], [38.2946, 51.6963])
    assert np.allclose(arcface_template(128), arcface_template(112) + [8.0, 0.0])  # size/128, moved 8 px
    assert np.allclose(arcface_template(256), 2 * arcface_template(128))


def test_a_model_with_a_fixed_batch_of_one_runs_face_by_face(faces, models, tmp_path):
    fixed = write_tiny_swapper(str(tmp_path / "fixed"), batch=False)
    method, assets = _build(fixed, _sources(faces, "grace_hopper"))
    crop, lm = faces["astronaut"]
    dst = np.stack([crop, crop[:, ::-1]]).astype(np.float32) / 255
    lms = np.stack([lm, lm])
    lms[1, :, 0] = R - 1 - lms[1, :, 0]
    fake, mask, _ = method(dst, lms)
    assert not assets.batch and fake.shape == (2, R, R, 3) and (mask > 0.5).mean() > 0.1


@pytest.mark.parametrize("change, field, message", [
    ({"target_input": "img"}, "target_input", "the swap model has no input 'img'"),
    ({"swap_size": 256}, "swap_size", "is 256, but the target input is"),
    ({"identity_size": 96}, "identity_size", "is 96, but the encoder's input is"),
    ({"latent": "embedding", "__dim": 256}, "latent", "the encoder gives 512 values and the swap model takes 256"),
    ({"__emap_shape": True}, "latent", "emap: the swap model's last initializer is"),
    ({"swap_model": "__not_onnx"}, "swap_model", "not an ONNX model onnxruntime loads"),
    ({"identity_model": "/nonexistent/identity.onnx"}, "identity_model", "cannot read"),
])
def test_a_model_that_does_not_fit_its_settings_is_refused_naming_the_setting(models, tmp_path, change, field,
                                                                                message):
    settings = dict(models)
    if "__dim" in change:
        settings = write_tiny_swapper(str(tmp_path / "d"), dim=change["__dim"], emap=False)
    elif "__emap_shape" in change:  # an embedding map that maps 512 values onto 128, for a 512-wide source input
        settings = write_tiny_swapper(str(tmp_path / "e"), emb=128)
        settings["identity_model"] = models["identity_model"]
    elif change.get("swap_model") == "__not_onnx":
        (tmp_path / "x.onnx").write_bytes(b"not a model")
        settings["swap_model"] = str(tmp_path / "x.onnx")
    settings.update({k: v for k, v in change.items() if not k.startswith("__") and v != "__not_onnx"})
    with pytest.raises(ConfigError, match=f"^methods\\[0\\].settings.{field}: .*{message}"):
        load_onnx_swap(method_settings("onnx-swap", settings), read_bytes, "methods[0].settings")


def test_a_plan_checks_the_models_before_work_and_ids_follow_the_files(models, tmp_path):
    def plan(settings):
        return load_config(GenerateConfig, overrides=["videos=[a.mp4]", "splits={train: 1.0, val: 0.0, test: 0.0}",
                                                      "methods=" + json.dumps([{"name": "onnx-swap",
                                                                                "settings": settings}])])

    check_methods(plan(models))
    with pytest.raises(ConfigError, match=r"^methods\[0\]\.settings\.swap_model: give the path"):
        check_methods(plan({}))
    with pytest.raises(ConfigError, match=r"^methods\[0\]\.settings\.source_input: the swap model has no input"):
        check_methods(plan({**models, "source_input": "latent"}))
    # the same settings naming other bytes: another method id (the files' checksums are in it)
    first = method_id("onnx-swap", models)
    other = write_tiny_swapper(str(tmp_path / "other"), seed=1)
    moved = {**models, "swap_model": str(tmp_path / "swap.onnx")}
    (tmp_path / "swap.onnx").write_bytes(open(other["swap_model"], "rb").read())
    assert method_id("onnx-swap", moved) != first
    assert method_assets("onnx-swap", models) is method_assets("onnx-swap", models)  # loaded once per process
