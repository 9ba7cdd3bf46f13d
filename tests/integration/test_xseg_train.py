"""XSeg end to end on a local Ray (2 CPUs): self-supervised training on the sample's faces with Ray
Train, the held-out IoU against the landmark hull's, and `xseg apply` into the faceset (idempotent).
The same on real people's faces (../shared/media) trains twice as long and is opt-in (DFLRAY_SLOW_TESTS=1)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from dflray.cli import main
from dflray.config import ExtractConfig, XSegApplyConfig, load_config
from dflray.extract import run_extract
from dflray.faceset import read_faces
from tests.media import SHARED_MEDIA

TRAIN = ["resolution=64", "base=16", "depth=4", "batch_size=8", "optimizer=adam", "lr=0.001",
         "checkpoint_every=400", "log_every=100", "data_cpus=0.5",
         "torch_threads=2"]
# Training steps: on the sample's faces alone (CI), and with the media clips' real faces too, which need
# more (bench/xseg_spread.py: at 800 steps the media gain was +0.020, p 0.035, under the bounds below;
# at 1600, +0.087, p 1e-10; see bench/README.md)
STEPS = 800
MEDIA_STEPS = 1600


MEDIA = ("src_man_a.mp4", "dst_man_glasses_b.mp4", "woman_room_audio_e.mp4")
# The held-out occlusions' seeds (sample, media) and the bounds the trained model must meet on them
HELD_OUT_SEEDS = (12345, 999)
MIN_GAIN = 0.02
MAX_P = 1e-3


def _faceset(clips: list[str], out: str, *extra: str) -> str:
    run_extract(clips, out, load_config(ExtractConfig, overrides=["align.size=128", "landmarks.embedding=false", *extra]))
    return out


def _train(facesets: list[str], out: Path, steps: int) -> Path:
    assert main(["xseg", "train", *facesets, "--out", str(out), *TRAIN, f"steps={steps}"]) == 0
    return out


@pytest.fixture(scope="module")
def trained(ray_local, sample_clips, tmp_path_factory):
    """XSeg trained self-supervised on the sample's faces (``STEPS``)."""
    root = tmp_path_factory.mktemp("xseg")
    faceset = _faceset(list(sample_clips), str(root / "faceset"))
    return [faceset], _train([faceset], root / "xseg", STEPS)


@pytest.fixture(scope="module")
def trained_on_real_faces(ray_local, sample_clips, tmp_path_factory):
    """XSeg trained on the sample's faces and real people's (every 10th frame of three ../shared/media
    clips): two facesets, one training run of ``MEDIA_STEPS``. Opt-in (``DFLRAY_SLOW_TESTS=1``): about 9 min
    on 2 CPUs, beyond CI's budget."""
    if not os.environ.get("DFLRAY_SLOW_TESTS"):
        pytest.skip(f"trains {MEDIA_STEPS} steps on real faces, ~9 min on 2 CPUs (CI keeps to 25 min): "
                    "DFLRAY_SLOW_TESTS=1 runs it; bench/xseg_spread.py measures the same recipe")
    media = [SHARED_MEDIA / n for n in MEDIA]
    if not all(m.is_file() for m in media):
        pytest.skip(f"{SHARED_MEDIA} is absent (real test media live in ../shared/media beside the repo)")
    root = tmp_path_factory.mktemp("xseg_media")
    facesets = [_faceset(list(sample_clips), str(root / "faceset")),
                _faceset([str(m) for m in media], str(root / "media_faceset"), "decode.every_n=10")]
    return facesets, _train(facesets, root / "xseg", MEDIA_STEPS)


def _crops_and_hulls(faceset: str, every: int = 1):
    t = read_faces(faceset, columns=["image", "mask"])
    crops = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[..., ::-1] for b in t.column("image").to_pylist()]
    hulls = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE) for b in t.column("mask").to_pylist()]
    return crops[::every], hulls[::every]


def _held_out_ious(model, crops, hulls, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per face, the IoU with the true visible face (hull minus occluders) of the model's mask and of the
    hull."""
    from dflray.models.xseg import iou_per_sample, predict_mask
    from dflray.train.occlusion import make_xseg_batch

    rng = np.random.default_rng(seed)  # occlusions the model never saw
    x, y = make_xseg_batch(crops, hulls, rng, model.config()["resolution"], augment=False, p_none=0.0,
                           coverage=(0.15, 0.45))
    images = np.clip(np.rint(x.transpose(0, 2, 3, 1) * 255), 0, 255).astype(np.uint8)
    pred = predict_mask(model, images)
    hull_only = make_xseg_batch(crops, hulls, np.random.default_rng(seed), model.config()["resolution"],
                                augment=False, p_none=1.0)[1]
    xseg = np.asarray(iou_per_sample(pred, y[:, 0]), float)
    return xseg, np.asarray(iou_per_sample(hull_only[:, 0], y[:, 0]), float)


def held_out_gain(model, faceset: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Per face of ``faceset``, XSeg's and the hull's held-out IoU and their difference, and the one-sided
    paired Wilcoxon p that XSeg is better (also what bench/xseg_spread.py measures)."""
    from scipy.stats import wilcoxon

    crops, hulls = _crops_and_hulls(faceset)
    xseg, hull = _held_out_ious(model, crops, hulls, seed=seed)
    gain = xseg - hull
    return xseg, hull, gain, float(wilcoxon(gain, alternative="greater").pvalue)


def _beats_the_hull(trained) -> None:
    from dflray.artifacts.xseg import load_xseg

    facesets, out = trained
    model = load_xseg(str(out / "xseg.pt"))
    for faceset, seed in zip(facesets, HELD_OUT_SEEDS):
        xseg, hull, gain, p = held_out_gain(model, faceset, seed)
        print(f"held-out IoU {Path(faceset).name} ({len(gain)} faces): xseg {xseg.mean():.3f}, hull "
              f"{hull.mean():.3f}, gain {gain.mean():+.3f}, XSeg better on {np.mean(gain > 0):.0%}, p {p:.1e}")
        assert gain.mean() > MIN_GAIN and p < MAX_P, (faceset, xseg.mean(), hull.mean(), p)


def test_trained_xseg_beats_the_hull_on_held_out_occlusions(trained):
    """On occlusions it never saw (another seed) of the sample's faces it trained on, XSeg's mask is closer
    to the true visible face than the landmark hull: face by face (paired Wilcoxon test, one-sided,
    p < 0.001) and on average by more than 0.02 IoU. Training is not repeatable to the bit (Ray Data's
    shuffle, fresh occluders every pass), so the bounds sit where bench/xseg_spread.py's repeated runs of
    this recipe stay clear of them: at 800 steps on the sample alone +0.111 and +0.120 (p ~1e-17), the bound
    ~14 standard deviations below; see bench/README.md."""
    _beats_the_hull(trained)


def test_trained_xseg_beats_the_hull_on_real_faces(trained_on_real_faces):
    """The same on the real people of ../shared/media, trained together with the sample's faces. Real faces
    need more steps: at 800 the media faces gained only +0.020 (p 0.035), at 1600 +0.084 to +0.087 (p 1e-10)
    and the sample +0.119 to +0.126 (bench/xseg_spread.py)."""
    _beats_the_hull(trained_on_real_faces)


def test_apply_fills_the_column_and_is_idempotent(trained):
    from dflray.artifacts.xseg import model_id
    from dflray.extract.xseg_apply import run_xseg_apply

    faceset, out = trained[0][0], trained[1]
    model = str(out / "xseg.pt")
    first = run_xseg_apply(faceset, model, XSegApplyConfig(batch_size=16))
    t = read_faces(faceset, columns=["xseg", "xseg_model", "size"])
    assert first.faces == t.num_rows > 0 and first.skipped == 0
    assert set(t.column("xseg_model").to_pylist()) == {model_id(model)}
    mask = cv2.imdecode(np.frombuffer(t.column("xseg")[0].as_py(), np.uint8), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (128, 128) and mask.max() > 128  # a face was found
    files = {p: p.stat().st_mtime_ns for p in Path(faceset, "faces").glob("*.parquet")}
    assert main(["xseg", "apply", faceset, "--model", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in Path(faceset, "faces").glob("*.parquet")} == files  # untouched
    with pytest.raises(ValueError, match="not an XSeg model"):
        run_xseg_apply(faceset, str(Path(faceset, "faceset.json")), XSegApplyConfig())


def test_xseg_dst_merge_keeps_occluders_the_hull_paints_over(trained, sample_clips):
    """The trained XSeg in the merge: occluders pasted over the sample's faces in the frame (kinds and
    placements it never saw) survive an XSeg-dst merge far more than a merge with the landmark hull."""
    from dflray.artifacts.xseg import load_xseg
    from dflray.config import MergeSettings
    from dflray.face.masks import hull_mask
    from dflray.io import schema
    from dflray.io.video import decode_range
    from dflray.merge.blend import merge_face
    from dflray.train.occlusion import occluder

    facesets, out = trained
    model = load_xseg(str(out / "xseg.pt"))
    t = read_faces(facesets[0], columns=["source_uri", "frame_index", "landmarks"])
    lms = schema.landmarks_of(t)
    rng = np.random.default_rng(2024)
    invert = lambda c: (1.0 - c, np.ones(c.shape[:2], np.float32), np.ones(c.shape[:2], np.float32))  # noqa: E731
    kept = {"XSeg-dst": [], "dst": []}
    rows = list(zip(t.column("source_uri").to_pylist(), t.column("frame_index").to_pylist(), lms))[::7][:12]
    frames = {}
    for uri in {u for u, _, _ in rows}:
        frames[uri] = dict(decode_range(uri))
    for k, (uri, fi, lm) in enumerate(rows):
        frame = frames[uri][fi].copy()
        size = int(np.ptp(lm[:, 0]) * 0.7)
        rgba = occluder(rng, size, kind=("hand", "bar", "shape")[k % 3])
        cx, cy = lm[48:68].mean(0).astype(int)  # over the mouth and chin
        x0, y0 = max(cx - size // 2, 0), max(cy - size // 3, 0)
        patch = rgba[: frame.shape[0] - y0, : frame.shape[1] - x0]
        h, w = patch.shape[:2]
        a = patch[..., 3:].astype(np.float32) / 255
        frame[y0:y0 + h, x0:x0 + w] = np.rint(frame[y0:y0 + h, x0:x0 + w] * (1 - a) + patch[..., :3] * a)
        occ = np.zeros(frame.shape[:2], bool)
        occ[y0:y0 + h, x0:x0 + w] = a[..., 0] > 0.9
        inside = occ & (hull_mask(frame.shape[:2], lm) > 0)  # the occluder where it covers the face
        if inside.sum() < 50:
            continue
        for mode in kept:
            res = merge_face(frame, lm, model.face_type, 128, invert,
                             MergeSettings(mask_mode=mode, color_transfer="none"), xseg=model)
            changed = np.abs(res.frame[inside].astype(int) - frame[inside]).max(axis=1) > 40
            kept[mode].append(1 - changed.mean())
    xseg_kept, hull_kept = np.mean(kept["XSeg-dst"]), np.mean(kept["dst"])
    assert len(kept["dst"]) >= 6
    assert xseg_kept > hull_kept + 0.3, (xseg_kept, hull_kept)
