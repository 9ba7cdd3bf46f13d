"""XSeg: the U-Net, its loss/metric/files, and the self-supervised occlusion data (no Ray, torch on CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dflray.artifacts.xseg import load_xseg, save_xseg
from dflray.config import LandmarkConfig
from dflray.face.align import get_transform_mat, transform_points, warp_to_crop
from dflray.face.masks import hull_mask
from dflray.models.xseg import XSeg, dice_bce_loss, iou, iou_per_sample, predict_mask, xseg_state
from dflray.sample import _PORTRAITS, load_portrait
from dflray.train.occlusion import OCCLUDER_KINDS, make_xseg_batch, occlude, occluder


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # The test machines are small and shared; torch's intra-op threads only contend there.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def faces() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Whole-face 128 px crops of the two sample portraits, dlib landmarks, and their hull masks."""
    pytest.importorskip("dlib")
    from dflray.detect.dlib_models import Dlib68Landmarker

    try:
        landmarker = Dlib68Landmarker(LandmarkConfig())
    except (ImportError, FileNotFoundError) as e:
        pytest.skip(f"dlib landmarks not available: {e}")
    crops, hulls = [], []
    for p in _PORTRAITS:
        img = load_portrait(p.name)
        (cx, cy), half = p.face_center, p.face_size / 2
        lm = landmarker.landmarks(img, np.array([[cx - half, cy - half, cx + half, cy + half]], np.float32))[0]
        mat = get_transform_mat(lm, 128, "whole_face")
        crops.append(warp_to_crop(img, mat, 128))
        hulls.append(hull_mask((128, 128), transform_points(lm, mat)))
    assert all(0.2 < h.mean() < 0.8 for h in hulls), "hull masks should cover a good part of the crops"
    return crops, hulls


# ------------------------------------------------------------------------------------ occluders


@pytest.mark.parametrize("kind", OCCLUDER_KINDS)
@pytest.mark.parametrize("size", [32, 160])
def test_occluder_kinds_have_opaque_soft_alpha(faces, kind, size):
    crops, _ = faces
    for seed in range(5):
        rgba = occluder(np.random.default_rng(seed), size, kind=kind, pool=crops)
        assert rgba.shape == (size, size, 4) and rgba.dtype == np.uint8
        alpha = rgba[..., 3]
        assert (alpha > 127).sum() >= 4, f"{kind} seed {seed}: nothing opaque enough to occlude"
        assert ((alpha > 0) & (alpha < 255)).any(), f"{kind} seed {seed}: hard edges"
        assert (alpha == 0).any(), f"{kind} seed {seed}: fills the whole canvas"


def test_occluder_is_reproducible_and_validates():
    a = occluder(np.random.default_rng(3), 64)
    assert np.array_equal(a, occluder(np.random.default_rng(3), 64))
    assert not np.array_equal(a, occluder(np.random.default_rng(4), 64))
    with pytest.raises(ValueError, match="pool"):
        occluder(np.random.default_rng(0), 64, kind="crop")
    with pytest.raises(ValueError, match="kind"):
        occluder(np.random.default_rng(0), 64, kind="umbrella")
    with pytest.raises(ValueError, match="size"):
        occluder(np.random.default_rng(0), 8)


def test_occlude_removes_exactly_the_occluded_pixels(faces):
    crops, hulls = faces
    placed = 0
    for seed in range(30):
        crop, hull = crops[seed % 2], hulls[seed % 2]
        img, target, alpha = occlude(crop, hull, np.random.default_rng(seed), pool=[crops[1 - seed % 2]],
                                     p_none=0.0, return_alpha=True)
        assert img.dtype == np.uint8 and img.shape == crop.shape
        assert target.dtype == np.float32 and alpha.dtype == np.float32
        np.testing.assert_array_equal(target, hull * (alpha <= 0.5))
        assert not (target > hull).any(), "target gained pixels outside the face mask"
        untouched = alpha == 0
        np.testing.assert_array_equal(img[untouched], crop[untouched])
        if (alpha > 0.5).any():
            placed += 1
            assert (img[alpha > 0.5] != crop[alpha > 0.5]).any()
    assert placed >= 25


def test_occlude_coverage_bounds_over_many_seeds(faces):
    crops, hulls = faces
    for lo, hi in [(0.05, 0.45), (0.3, 0.5)]:
        covered = []
        for seed in range(40):
            i = seed % 2
            _, _, alpha = occlude(crops[i], hulls[i], np.random.default_rng(seed), max_occluders=3,
                                  coverage=(lo, hi), p_none=0.0, return_alpha=True)
            face = hulls[i] > 0
            frac = np.count_nonzero(face & (alpha > 0.5)) / face.sum()
            if alpha.any():
                assert lo <= frac <= hi, f"seed {seed}: covered {frac:.3f} outside ({lo}, {hi})"
            else:
                assert frac == 0
            covered.append(frac)
        assert np.mean(np.array(covered) > 0) >= 0.85, "too many crops left unoccluded"


def test_occlude_no_occluder_cases_and_reproducibility(faces):
    crops, hulls = faces
    crop, hull = crops[0], hulls[0]
    for kwargs in ({"p_none": 1.0}, {"max_occluders": 0}):
        img, target = occlude(crop, hull, np.random.default_rng(0), **kwargs)
        np.testing.assert_array_equal(img, crop)
        np.testing.assert_array_equal(target, hull.astype(np.float32))
    img, target = occlude(crop, np.zeros_like(hull), np.random.default_rng(0), p_none=0.0)
    np.testing.assert_array_equal(img, crop)
    assert not target.any()
    # 0/255 uint8 and bool masks mean the same as 0/1.
    a = occlude(crop, hull, np.random.default_rng(7), p_none=0.0)
    b = occlude(crop, hull * 255, np.random.default_rng(7), p_none=0.0)
    c = occlude(crop, hull.astype(bool), np.random.default_rng(7), p_none=0.0)
    for other in (b, c):
        np.testing.assert_array_equal(a[0], other[0])
        np.testing.assert_array_equal(a[1], other[1])
    assert not np.array_equal(a[0], occlude(crop, hull, np.random.default_rng(8), p_none=0.0)[0])


def test_occlude_rejects_bad_inputs(faces):
    crops, hulls = faces
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="face_mask"):
        occlude(crops[0], hulls[0][:64], rng)
    with pytest.raises(ValueError, match="crop_rgb"):
        occlude(crops[0].astype(np.float32), hulls[0], rng)
    with pytest.raises(ValueError, match="coverage"):
        occlude(crops[0], hulls[0], rng, coverage=(0.5, 0.1))
    with pytest.raises(ValueError, match="max_occluders"):
        occlude(crops[0], hulls[0], rng, max_occluders=-1)


def test_make_xseg_batch_shapes_targets_and_seed(faces):
    crops, hulls = faces
    x, y = make_xseg_batch(crops * 2, hulls * 2, np.random.default_rng(0), 64)
    assert x.shape == (4, 3, 64, 64) and y.shape == (4, 1, 64, 64)
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(np.unique(y)) <= {0.0, 1.0} and all(y[i].any() for i in range(4))
    x2, y2 = make_xseg_batch(crops * 2, hulls * 2, np.random.default_rng(0), 64)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)

    # Without augmentation the target is the resized hull minus the occluders: never more.
    import cv2

    x, y = make_xseg_batch(crops * 3, hulls * 3, np.random.default_rng(1), 96, augment=False, p_none=0.0)
    removed = 0
    for i in range(6):
        hull = cv2.resize(hulls[i % 2].astype(np.float32), (96, 96), interpolation=cv2.INTER_LINEAR) > 0.5
        assert not (y[i, 0].astype(bool) & ~hull).any()
        removed += int((hull & ~y[i, 0].astype(bool)).sum() > 0)
    assert removed >= 5
    with pytest.raises(ValueError, match="same length"):
        make_xseg_batch(crops, hulls[:1], np.random.default_rng(0), 64)
    empty_x, empty_y = make_xseg_batch([], [], np.random.default_rng(0), 64)
    assert empty_x.shape == (0, 3, 64, 64) and empty_y.shape == (0, 1, 64, 64)


# ------------------------------------------------------------------------------------ model


@pytest.mark.parametrize("res,depth", [(64, 3), (128, 4), (256, 5)])
def test_forward_shapes(res, depth):
    model = XSeg(res, base=4, depth=depth).eval()
    x = torch.rand(2, 3, res, res)
    with torch.no_grad():
        out = model(x)
        out_cl = model(x.to(memory_format=torch.channels_last))
    assert out.shape == (2, 1, res, res) and out.dtype == torch.float32
    torch.testing.assert_close(out, out_cl, rtol=1e-4, atol=1e-4)


def test_parameter_count_and_validation():
    n = sum(p.numel() for p in XSeg(256, 32, 5).parameters())
    assert 1_000_000 < n < 5_000_000, n
    assert sum(p.numel() for p in XSeg(256, 16, 5).parameters()) < n / 3
    with pytest.raises(ValueError, match="resolution"):
        XSeg(100, 8, 3)
    with pytest.raises(ValueError, match="face_type"):
        XSeg(64, 8, 3, face_type="wf")
    with pytest.raises(ValueError, match="divisible"):
        XSeg(64, 4, 3)(torch.rand(1, 3, 60, 60))


def test_overfits_eight_self_supervised_samples(faces):
    crops, hulls = faces
    x, y = make_xseg_batch(crops * 4, hulls * 4, np.random.default_rng(0), 64, p_none=0.0)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    model = XSeg(64, base=8, depth=3)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = dice_bce_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.35 * losses[0], losses[::10]
    pred = predict_mask(model, (x.permute(0, 2, 3, 1).numpy() * 255 + 0.5).astype(np.uint8))
    mean_mask = np.broadcast_to(y.numpy().mean(0, keepdims=True) > 0.5, y.shape)
    fitted = iou(pred, y[:, 0].numpy())
    assert fitted > 0.8 and fitted > iou(mean_mask, y.numpy()) + 0.1


def test_iou_on_hand_made_masks():
    a = np.zeros((4, 4), bool)
    a[:2] = True  # 8 pixels
    b = np.zeros((4, 4), bool)
    b[:, :2] = True  # 8 pixels, 4 shared
    assert iou(a, b) == pytest.approx(4 / 12)
    assert iou(a, a) == 1.0 and iou(a, ~a) == 0.0
    assert iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0  # both empty: perfect
    per = iou_per_sample(np.stack([a, a, np.zeros_like(a)]), np.stack([b, a, a]))
    np.testing.assert_allclose(per, [4 / 12, 1.0, 0.0])
    assert iou(np.stack([a, a, np.zeros_like(a)]), np.stack([b, a, a])) == pytest.approx((4 / 12 + 1) / 3)
    soft = np.where(a, 0.6, 0.4).astype(np.float32)  # floats are thresholded at 0.5
    assert iou(soft, a) == 1.0 and iou(soft, a, threshold=0.7) == 0.0
    t = torch.from_numpy(np.stack([a, b]).astype(np.float32))[:, None]  # N×1×H×W tensors
    assert iou(t, t) == 1.0
    with pytest.raises(ValueError, match="same shape"):
        iou(a, b[:3])


def test_dice_bce_loss_orders_predictions():
    target = torch.zeros(2, 1, 16, 16)
    target[:, :, 4:12, 4:12] = 1
    perfect = dice_bce_loss(30 * (2 * target - 1), target)
    unsure = dice_bce_loss(torch.zeros_like(target), target)
    wrong = dice_bce_loss(-30 * (2 * target - 1), target)
    assert perfect < 0.01 < unsure < wrong
    assert dice_bce_loss(torch.full((1, 1, 8, 8), -30.0), torch.zeros(1, 1, 8, 8)) < 1e-3  # empty vs empty
    with pytest.raises(ValueError, match="same shape"):
        dice_bce_loss(torch.zeros(1, 1, 8, 8), torch.zeros(1, 8, 8))


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    model = XSeg(64, base=8, depth=3, face_type="full")
    with torch.no_grad():  # move away from the init so FRN/TLU parameters are non-trivial too
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        ref = model.eval()(x)
    state = xseg_state(model)
    assert state["config"] == {"resolution": 64, "base": 8, "depth": 3, "face_type": "full"}
    path = str(tmp_path / "xseg.pt")
    save_xseg(model, path)
    for source in (state, path):
        loaded = load_xseg(source)
        assert not loaded.training and loaded.config() == model.config()
        with torch.no_grad():
            assert torch.equal(loaded(x), ref)
    torch.save({"format": "something-else"}, str(tmp_path / "other.pt"))
    with pytest.raises(ValueError, match="dflray-xseg-v1"):
        load_xseg(str(tmp_path / "other.pt"))


def test_predict_mask_batches_and_resizes():
    torch.manual_seed(0)
    model = XSeg(64, base=4, depth=3).train()
    crops = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    whole = predict_mask(model, crops, batch_size=5)
    assert whole.shape == (5, 64, 64) and whole.dtype == np.float32
    assert 0.0 <= whole.min() and whole.max() <= 1.0
    np.testing.assert_allclose(predict_mask(model, crops, batch_size=2), whole, atol=1e-5)
    np.testing.assert_allclose(predict_mask(model, crops[0]), whole[0], atol=1e-5)
    with torch.no_grad():
        direct = torch.sigmoid(model(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255))[:, 0].numpy()
    np.testing.assert_allclose(whole, direct, atol=1e-5)
    assert model.training, "predict_mask must restore the training mode"
    big = np.repeat(np.repeat(crops[:2], 2, axis=1), 2, axis=2)  # 128 px crops for a 64 px model
    assert predict_mask(model, big).shape == (2, 128, 128)
    with pytest.raises(ValueError, match="crops_uint8"):
        predict_mask(model, crops[..., 0])


def test_training_uses_the_xseg_mask_where_a_face_has_one():
    """The autoencoder's masked loss trains on the XSeg mask (what covers the face left out) when a face
    has one, else on the hull (None: rebuilt in the training crop) or another stored learned mask."""
    from dflray.train.data import training_masks

    xseg, hull, learned = b"xseg-png", b"hull-png", b"learned-png"
    batch = {"mask": np.array([hull, hull, learned, hull], dtype=object),
             "mask_source": np.array(["hull", "hull", "xseg-import", "hull"], dtype=object),
             "xseg": np.array([xseg, None, None, b""], dtype=object)}
    assert list(training_masks(batch)) == [xseg, None, learned, None]
    del batch["xseg"]  # a faceset without the column (schema v1 read through Ray Data)
    assert list(training_masks(batch)) == [None, None, learned, None]


def test_occluder_kinds_can_be_restricted(monkeypatch):
    """``kinds`` restricts the occluders drawn (the benchmark's per-kind quality); no kinds is an error."""
    import dflray.train.occlusion as occ

    crop = np.full((64, 64, 3), 128, np.uint8)
    face = np.zeros((64, 64), np.uint8)
    face[12:52, 16:48] = 255
    seen = set()
    original = occ.occluder

    def recording(rng, size, *, kind=None, pool=None):
        seen.add(kind)
        return original(rng, size, kind=kind, pool=pool)

    monkeypatch.setattr(occ, "occluder", recording)
    for s in range(10):
        occ.occlude(crop, face, np.random.default_rng(s), p_none=0.0, kinds=["hand", "bar"])
    occ.make_xseg_batch([crop] * 4, [face] * 4, np.random.default_rng(0), 32, p_none=0.0, kinds=["hair"])
    assert seen == {"hand", "bar", "hair"}
    with pytest.raises(ValueError, match="kinds"):
        occ.occlude(crop, face, np.random.default_rng(0), kinds=[])


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_crafted_xseg_file_and_detector_weights_are_refused_naming_the_file(tmp_path):
    """A pickle that would run code, given as an XSeg model or as evaluate's detector weights: a ValueError
    naming the file, and never torch's advice to retry with weights_only=False."""
    from dflray.dataset.evaluate import read_weights

    bad = tmp_path / "evil.pt"
    torch.save({"state": _Evil()}, bad)
    for load in (load_xseg, read_weights):
        with pytest.raises(ValueError, match="unsafe to load") as e:
            load(str(bad))
        assert str(bad) in str(e.value) and "weights_only" not in str(e.value)
