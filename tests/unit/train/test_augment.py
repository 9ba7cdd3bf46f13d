"""Training-sample augmentation: crop geometry, DFL's warp/transform/flip, masks, colour, yaw sampling."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from skimage import data

from dflray.config import AugmentConfig
from dflray.face.align import get_transform_mat, transform_points, warp_to_crop
from dflray.face.masks import hull_mask
from dflray.train.augment import (
    eyes_mouth_mask,
    gen_warp_params,
    make_batch,
    make_sample,
    random_hsv_shift,
    train_crop_matrix,
    uniform_yaw_weights,
    warp_by_params,
    yaw_bin_index,
)

# dlib's 68 landmarks on skimage's astronaut (dflray's built-in sample portrait), frame pixels.
_ASTRONAUT_LM = np.array([
    [179, 106], [180, 117], [180, 128], [182, 140], [185, 151], [191, 161], [200, 169], [209, 176],
    [220, 179], [232, 177], [243, 171], [253, 163], [260, 154], [265, 143], [268, 132], [270, 120],
    [272, 109], [186, 93], [192, 88], [200, 87], [209, 89], [216, 92], [236, 94], [244, 91], [252, 91],
    [260, 92], [265, 98], [226, 102], [226, 111], [225, 119], [225, 127], [214, 131], [219, 133],
    [224, 134], [229, 133], [234, 132], [195, 101], [200, 98], [207, 98], [212, 104], [206, 104],
    [200, 104], [238, 105], [244, 100], [250, 101], [255, 104], [250, 106], [244, 106], [200, 139],
    [209, 139], [218, 139], [224, 141], [230, 140], [238, 140], [246, 141], [238, 151], [229, 155],
    [222, 156], [216, 155], [207, 150], [203, 140], [218, 143], [223, 144], [229, 143], [243, 142],
    [229, 150], [223, 151], [217, 150]], dtype=np.float64)
STORED_TYPE, STORED_SIZE, RES = "whole_face", 192, 64
PLAIN = AugmentConfig(random_warp=False, rotation=0.0, scale=0.0, shift=0.0, random_dst_flip=False)


def _png(img: np.ndarray) -> bytes:
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    return cv2.imencode(".png", bgr)[1].tobytes()


def _faceset_row(frame: np.ndarray, lm: np.ndarray, face_type: str = STORED_TYPE, size: int = STORED_SIZE) -> dict:
    """A ``faces`` row as dflray extract writes it (PNG crop, hull mask, flat landmarks and matrix)."""
    mat = get_transform_mat(lm, size, face_type)
    crop = warp_to_crop(frame, mat, size)
    mask = hull_mask((size, size), transform_points(lm, mat))
    return {"image": _png(crop), "landmarks": lm.astype(np.float32).ravel(),
            "align_mat": mat.ravel(), "face_type": face_type, "mask": _png(mask * 255)}


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def face(frame) -> dict:
    return _faceset_row(frame, _ASTRONAUT_LM)


def _crop(face: dict) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(face["image"], np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


# ------------------------------------------------------------------------------------ crop geometry


@pytest.mark.parametrize("face_type", ["half", "mid_full", "full", "whole_face"])
def test_train_crop_matrix_round_trip(face, face_type):
    align = face["align_mat"].reshape(2, 3)
    mat = train_crop_matrix(face["landmarks"], face["align_mat"], 96, face_type, stored_face_type=STORED_TYPE)
    assert mat.shape == (2, 3) and mat.dtype == np.float64
    via_crop = transform_points(transform_points(_ASTRONAUT_LM, align), mat)
    direct = transform_points(_ASTRONAUT_LM, get_transform_mat(_ASTRONAUT_LM, 96, face_type))
    assert np.abs(via_crop - direct).max() < 1e-3
    corners = np.array([[0.0, 0.0], [96, 0], [96, 96], [0, 96]])
    frame_corners = transform_points(corners, get_transform_mat(_ASTRONAUT_LM, 96, face_type), invert=True)
    assert np.abs(transform_points(transform_points(frame_corners, align), mat) - corners).max() < 1e-3


def test_same_face_type_is_a_pure_scale(face):
    mat = train_crop_matrix(face["landmarks"], face["align_mat"], 64, STORED_TYPE)
    assert np.allclose(mat, [[64 / STORED_SIZE, 0, 0], [0, 64 / STORED_SIZE, 0]], atol=1e-9)


def test_wider_face_type_raises(frame, face):
    with pytest.raises(ValueError, match="wider"):
        train_crop_matrix(face["landmarks"], face["align_mat"], 64, "head", stored_face_type=STORED_TYPE)
    narrow = _faceset_row(frame, _ASTRONAUT_LM, "full", 128)
    with pytest.raises(ValueError, match="wider"):
        make_sample(narrow, 64, "whole_face", PLAIN, np.random.default_rng(0), flip_allowed=False)
    with pytest.raises(ValueError, match="unknown face type"):
        train_crop_matrix(face["landmarks"], face["align_mat"], 64, "huge", stored_face_type=STORED_TYPE)


def test_plain_sample_is_the_direct_crop(frame, face):
    mat = train_crop_matrix(face["landmarks"], face["align_mat"], RES, "full")
    s = make_sample(face, RES, "full", PLAIN, np.random.default_rng(0), flip_allowed=False)
    expect = cv2.warpAffine(_crop(face).astype(np.float32) / 255, mat, (RES, RES), flags=cv2.INTER_CUBIC,
                            borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(s["target"].transpose(1, 2, 0) - np.clip(expect, 0, 1)).max() < 1e-6
    assert np.array_equal(s["warped"], s["target"])
    stored_mask = cv2.imdecode(np.frombuffer(face["mask"], np.uint8), cv2.IMREAD_UNCHANGED) / np.float32(255)
    expect_mask = cv2.warpAffine(stored_mask, mat, (RES, RES), flags=cv2.INTER_LINEAR)
    assert np.abs(s["target_mask"][0] - expect_mask).max() < 1e-6
    # And it is the frame's own crop at the training face type, up to one more resampling.
    direct = warp_to_crop(frame, get_transform_mat(_ASTRONAUT_LM, RES, "full"), RES) / 255.0
    assert np.abs(s["target"].transpose(1, 2, 0) - direct).mean() < 0.02


def test_hull_fallback_matches_stored_hull(face):
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    aug = AugmentConfig()
    with_mask = make_sample(face, RES, "full", aug, rng_a, flip_allowed=True)
    without = make_sample({**face, "mask": None}, RES, "full", aug, rng_b, flip_allowed=True)
    for key in with_mask:
        assert np.abs(with_mask[key] - without[key]).max() < 1e-6, key


def test_stored_mask_is_used(face):
    size = STORED_SIZE
    small = np.zeros((size, size), np.uint8)
    cv2.circle(small, (size // 2, size // 2), size // 6, 255, -1)  # an XSeg-like mask, smaller than the hull
    s_hull = make_sample(face, RES, "full", PLAIN, np.random.default_rng(0), flip_allowed=False)
    s_xseg = make_sample({**face, "mask": _png(small)}, RES, "full", PLAIN, np.random.default_rng(0),
                         flip_allowed=False)
    assert s_xseg["target_mask"].sum() < 0.6 * s_hull["target_mask"].sum()
    assert np.array_equal(s_xseg["target"], s_hull["target"])
    assert (s_xseg["target_mask_em"][s_xseg["target_mask"] == 0] == 0).all()  # em lies inside the face mask


# ------------------------------------------------------------------------------------ warp params


def test_gen_warp_params_follow_dfl_ranges():
    rng = np.random.default_rng(0)
    draws = [gen_warp_params(128, rng, flip=True, rotation=10, scale=0.15, shift=0.05) for _ in range(400)]
    rot = np.array([p["rotation"] for p in draws])
    zoom = np.array([p["scale"] for p in draws])
    tx = np.array([p["tx"] for p in draws] + [p["ty"] for p in draws])
    assert np.abs(rot).max() <= 10 and np.abs(rot).max() > 9
    assert zoom.min() >= 1 / 1.15 and zoom.max() <= 1.15 and zoom.min() < 0.9 and zoom.max() > 1.12
    assert np.abs(tx).max() <= 0.05
    assert {p["cell_size"] for p in draws} == {64, 32, 16}
    assert 0.3 < np.mean([p["flip"] for p in draws]) < 0.5
    for p in draws[:20]:
        assert np.array_equal(p["mapy"], p["mapx"].T)  # DFL's maps are transposes of each other
        dx = p["mapx"] - np.arange(128)[None, :]
        assert np.abs(dx).max() <= 2 * 0.24 * p["cell_size"] + 1e-3
    assert not any(p["flip"] for p in (gen_warp_params(64, rng, flip=False) for _ in range(50)))


def test_small_resolution_works_at_64():
    p = gen_warp_params(32, np.random.default_rng(1))
    assert p["work_size"] == 64 and p["mapx"].shape == (64, 64)
    img = np.random.default_rng(0).random((32, 32, 1)).astype(np.float32)
    assert warp_by_params(p, img, True, True, True, False).shape == (32, 32, 1)


def test_flip_mirrors():
    p = gen_warp_params(64, np.random.default_rng(2), rotation=10, scale=0.1, shift=0.05)
    img = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    plain = warp_by_params({**p, "flip": False}, img, True, True, True, True)
    flipped = warp_by_params({**p, "flip": True}, img, True, True, True, True)
    assert np.array_equal(flipped, plain[:, ::-1])
    assert np.array_equal(warp_by_params({**p, "flip": True}, img, True, True, False, True), plain)


def test_sample_flips_image_and_masks_together(face):
    base = make_sample(face, RES, "full", PLAIN, np.random.default_rng(0), flip_allowed=False)
    flips = 0
    for seed in range(12):
        s = make_sample(face, RES, "full", PLAIN, np.random.default_rng(seed), flip_allowed=True)
        flipped = np.array_equal(s["target"], base["target"][..., ::-1])
        assert flipped or np.array_equal(s["target"], base["target"])
        for key in ("target_mask", "target_mask_em"):
            assert np.array_equal(s[key], base[key][..., ::-1] if flipped else base[key])
        flips += flipped
    assert 0 < flips < 12


def _centroid(m: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[0:m.shape[0], 0:m.shape[1]]
    return np.array([(xs * m).sum(), (ys * m).sum()]) / m.sum()


def test_same_params_move_image_and_mask(frame):
    # A face whose picture is its own hull mask: the target's pixels must land where the mask lands.
    row = _faceset_row(frame, _ASTRONAUT_LM)
    stored = cv2.imdecode(np.frombuffer(row["mask"], np.uint8), cv2.IMREAD_UNCHANGED)
    row = {**row, "image": _png(np.dstack([stored] * 3))}
    aug = AugmentConfig(random_warp=True, rotation=10, scale=0.15, shift=0.05)
    centroids = []
    for seed in range(8):
        s = make_sample(row, RES, "full", aug, np.random.default_rng(seed), flip_allowed=True)
        img, mask = s["target"][0], s["target_mask"][0]
        assert np.abs(_centroid(img) - _centroid(mask)).max() < 0.5
        inter, union = np.minimum(img > 0.5, mask > 0.5).sum(), np.maximum(img > 0.5, mask > 0.5).sum()
        assert inter / union > 0.95
        centroids.append(_centroid(mask))
    assert np.ptp(np.array(centroids), axis=0).max() > 2  # the transform really moved the face


def test_warp_changes_input_not_target(face):
    on = dataclasses.replace(AugmentConfig(), random_warp=True)
    off = dataclasses.replace(on, random_warp=False)
    a = make_sample(face, RES, "full", on, np.random.default_rng(4), flip_allowed=True)
    b = make_sample(face, RES, "full", off, np.random.default_rng(4), flip_allowed=True)
    for key in ("target", "target_mask", "target_mask_em"):
        assert np.array_equal(a[key], b[key]), key
    assert np.array_equal(b["warped"], b["target"])
    assert np.abs(a["warped"] - a["target"]).mean() > 0.005


# ------------------------------------------------------------------------------------ colour and masks


def test_hsv_shift_keeps_range():
    img = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    for seed, power in enumerate((0.05, 0.1, 0.3)):
        out = random_hsv_shift(img, np.random.default_rng(seed), power)
        assert out.shape == img.shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 1
        assert not np.array_equal(out, img)
    grey = np.full((8, 8, 3), 0.5, np.float32)  # no saturation: hue moves nothing, value moves little
    out = random_hsv_shift(grey, np.random.default_rng(1), 0.1)
    assert np.abs(out - grey).max() <= 0.05 + 0.5 * 0.05 + 1e-6  # value ±0.05, saturation ≤ 0.05 of V


def test_hsv_shift_touches_only_the_input(face):
    aug = AugmentConfig(random_warp=False, random_hsv_power=0.2)
    a = make_sample(face, RES, "full", aug, np.random.default_rng(5), flip_allowed=True)
    b = make_sample(face, RES, "full", dataclasses.replace(aug, random_hsv_power=0.0), np.random.default_rng(5),
                    flip_allowed=True)
    assert np.array_equal(a["target"], b["target"])
    assert not np.array_equal(a["warped"], b["warped"])


def test_colour_transfer_pulls_toward_ref(face):
    ref = np.zeros((RES, RES, 3), np.uint8)
    ref[...] = (40, 90, 200)  # a blue face
    ref = np.clip(ref + np.random.default_rng(0).normal(0, 20, ref.shape), 0, 255).astype(np.uint8)
    plain = make_sample(face, RES, "full", PLAIN, np.random.default_rng(0), flip_allowed=False)
    for mode in ("rct", "lct", "mkl", "idt", "sot"):
        aug = dataclasses.replace(PLAIN, ct_mode=mode)
        s = make_sample(face, RES, "full", aug, np.random.default_rng(0), flip_allowed=False, ct_ref=ref)
        blue_before = plain["target"][2].mean() - plain["target"][0].mean()
        blue_after = s["target"][2].mean() - s["target"][0].mean()
        assert blue_after > blue_before + 0.2, mode
        assert np.array_equal(s["warped"], s["target"])  # one transfer feeds input and target
        assert np.array_equal(s["target_mask"], plain["target_mask"])
    ignored = make_sample(face, RES, "full", PLAIN, np.random.default_rng(0), flip_allowed=False, ct_ref=ref)
    assert np.array_equal(ignored["target"], plain["target"])  # ct_mode none


def test_eyes_mouth_mask_sits_on_eyes_and_mouth(face):
    align = face["align_mat"].reshape(2, 3)
    lm = transform_points(_ASTRONAUT_LM, align)
    m = eyes_mouth_mask((STORED_SIZE, STORED_SIZE), lm)
    assert m.dtype == np.float32 and m.max() == pytest.approx(1.0) and m.min() == 0.0
    for idx in (np.r_[36:42], np.r_[42:48], np.r_[60:68]):
        cx, cy = lm[idx].mean(axis=0).astype(int)
        assert m[cy, cx] > 0.9
    nose_x, nose_y = lm[30].astype(int)
    assert m[nose_y, nose_x] < 0.1
    s = make_sample(face, RES, "full", AugmentConfig(), np.random.default_rng(1), flip_allowed=True)
    assert s["target_mask_em"].max() == pytest.approx(1.0)
    assert 0.02 < s["target_mask_em"].mean() < 0.3


# ------------------------------------------------------------------------------------ batches


def test_make_batch_shapes_and_dtypes(frame):
    rows = [_faceset_row(frame, _ASTRONAUT_LM + d) for d in (0.0, 3.0, -2.0)]
    batch = {
        "image": np.array([r["image"] for r in rows], dtype=object),
        "landmarks": np.stack([r["landmarks"] for r in rows]).astype(np.float32),
        "align_mat": np.stack([r["align_mat"] for r in rows]).astype(np.float64),
        "face_type": np.array([STORED_TYPE] * 3),
        "mask": np.array([rows[0]["mask"], None, rows[2]["mask"]], dtype=object),
    }
    refs = np.random.default_rng(0).integers(0, 255, (4, RES, RES, 3), dtype=np.uint8)
    aug = AugmentConfig(random_hsv_power=0.05, ct_mode="rct")
    out = make_batch(batch, RES, "full", aug, np.random.default_rng(0), True, ct_refs=refs)
    assert set(out) == {"warped", "target", "target_mask", "target_mask_em"}
    for key, c in (("warped", 3), ("target", 3), ("target_mask", 1), ("target_mask_em", 1)):
        assert out[key].shape == (3, c, RES, RES) and out[key].dtype == np.float32, key
        assert out[key].min() >= 0 and out[key].max() <= 1, key
    again = make_batch(batch, RES, "full", aug, np.random.default_rng(0), True, ct_refs=refs)
    assert all(np.array_equal(out[k], again[k]) for k in out)
    decoded = {**{k: v for k, v in batch.items() if k != "image"}, "crop": np.array([_crop(r) for r in rows])}
    via_crop = make_batch(decoded, RES, "full", aug, np.random.default_rng(0), True, ct_refs=refs)
    assert all(np.array_equal(out[k], via_crop[k]) for k in out)
    empty = make_batch({k: v[:0] for k, v in batch.items()}, RES, "full", aug, np.random.default_rng(0), True)
    assert empty["warped"].shape == (0, 3, RES, RES)


def test_determinism_with_seeded_rng(face):
    aug = AugmentConfig(random_warp=True, random_hsv_power=0.1, ct_mode="sot")
    ref = np.random.default_rng(1).integers(0, 255, (RES, RES, 3), dtype=np.uint8)
    a = make_sample(face, RES, "full", aug, np.random.default_rng(7), flip_allowed=True, ct_ref=ref)
    b = make_sample(face, RES, "full", aug, np.random.default_rng(7), flip_allowed=True, ct_ref=ref)
    c = make_sample(face, RES, "full", aug, np.random.default_rng(8), flip_allowed=True, ct_ref=ref)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["warped"], c["warped"])


# ------------------------------------------------------------------------------------ yaw


def test_yaw_bins_follow_dfl():
    # DFL: 128 bin starts over [-1.2, 1.2] rad of the negated yaw; the ends take everything beyond.
    assert yaw_bin_index(np.array([0.0])).item() == 63
    assert yaw_bin_index(np.array([90.0, 200.0])).tolist() == [0, 0]
    assert yaw_bin_index(np.array([-90.0, -68.755])).tolist() == [127, 127]  # -68.755 deg = -1.2 rad
    rad = np.array([0.3, -0.5, 1.0])
    assert np.array_equal(yaw_bin_index(rad, degrees=False), yaw_bin_index(np.rad2deg(rad)))
    with pytest.raises(ValueError, match="finite"):
        yaw_bin_index(np.array([np.nan]))


def test_uniform_yaw_weights_equalise_bins():
    rng = np.random.default_rng(0)
    yaw = np.concatenate([rng.normal(0, 5, 900), rng.normal(40, 2, 60), [-60.0] * 3])  # degrees
    w = uniform_yaw_weights(yaw)
    assert w.shape == yaw.shape and np.isclose(w.sum(), 1.0) and (w > 0).all()
    bins = yaw_bin_index(yaw)
    per_bin = np.bincount(bins, weights=w)
    occupied = per_bin[per_bin > 0]
    assert np.allclose(occupied, 1.0 / len(occupied))
    draws = bins[rng.choice(len(yaw), 20000, p=w)]
    freq = np.bincount(draws, minlength=128)[np.unique(bins)] / 20000
    assert np.abs(freq - 1.0 / len(occupied)).max() < 0.01
    assert uniform_yaw_weights(np.zeros(0)).shape == (0,)
