"""The face-crop sampler (dflray.dataset.crops) on a small dataset laid out by hand: no Ray."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from skimage.data import astronaut

from dflray.dataset.crops import VideoCrops, pick_faces, sample_frames, video_crops
from dflray.face import transform_points
from dflray.face.dfb_align import align_face, dfb_template, dfb_transform
from dflray.faceset import video_id, write_table
from dflray.io import schema
from dflray.io.video import Transcoder, decode_range
from tests.media import ASTRONAUT_LM, write_video

N_FRAMES, SIDE = 24, 256
BIG = ASTRONAUT_LM / 2  # the astronaut's face in a 256 px frame
SMALL = BIG * 0.5 + np.array([120.0, 150.0])  # a second, smaller face (landmarks only; its pixels do not matter)
SWAPPED = range(6, 19)  # frames of the fake with a swap


def _box(lm: np.ndarray) -> list[float]:
    return [*lm.min(0).tolist(), *lm.max(0).tolist()]


# ------------------------------------------------------------------------------ pure parts


def test_sample_frames_is_even_deterministic_and_short_when_few():
    assert sample_frames(range(100), 5) == [0, 24, 49, 74, 99]
    assert sample_frames(range(100), 5) == sample_frames(list(range(99, -1, -1)), 5)
    assert sample_frames([9, 3, 3, 7], 32) == [3, 7, 9]
    assert sample_frames(range(32), 32) == list(range(32))
    picked = sample_frames(range(0, 300, 3), 32)
    assert len(picked) == len(set(picked)) == 32 and picked[0] == 0 and picked[-1] == 297
    assert sample_frames([4], 1) == [4] and sample_frames([], 3) == []
    with pytest.raises(ValueError, match="frames"):
        sample_frames(range(10), 0)


def test_pick_faces_real_takes_the_largest_fake_the_swapped():
    frames = np.array([0, 0, 1, 2, 2])
    boxes = np.array([[0, 0, 10, 10], [50, 50, 90, 90], [0, 0, 5, 5], [0, 0, 40, 40], [60, 60, 70, 70]], float)
    lms = np.arange(5)[:, None, None] * np.ones((5, 68, 2))
    real = pick_faces(frames, boxes, lms)
    assert {f: int(v[0, 0]) for f, v in real.items()} == {0: 1, 1: 2, 2: 3}
    fake = pick_faces(frames, boxes, lms, {0: np.array([0, 0, 12, 12.0]), 2: np.array([58, 58, 75, 75.0]),
                                           5: np.array([0, 0, 9, 9.0])})
    assert {f: int(v[0, 0]) for f, v in fake.items()} == {0: 0, 2: 4}  # frame 1: no swap; 5: no face
    assert pick_faces(frames, boxes, lms, {1: np.array([100, 100, 120, 120.0])}) == {}


# ------------------------------------------------------------------------------ a dataset laid out by hand


def _frames() -> list[np.ndarray]:
    """The astronaut at half size, brighter in every frame (so a crop tells which frame it came from)."""
    base = astronaut()[::2, ::2].astype(np.float32)
    return [np.clip(base * (0.45 + 0.02 * i), 0, 255).astype(np.uint8) for i in range(N_FRAMES)]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("crops")
    ds, work = root / "ds", root / "ds.work"
    (ds / "videos").mkdir(parents=True)
    (ds / "masks").mkdir()
    src = write_video(root / "src.mp4", _frames(), fps=24)
    (ds / "generate.json").write_text(json.dumps({"work": str(work)}))
    # the real video is published as it is; the fake is the same frames (the swap's pixels do not matter here)
    # with a mask over the small face on the swapped frames
    real_path = write_video(ds / "videos" / "real.mp4", _frames(), fps=24)
    mask = np.zeros((SIDE, SIDE), np.uint8)
    x0, y0, x1, y1 = np.round(_box(SMALL)).astype(int)
    mask[y0:y1, x0:x1] = 255
    with Transcoder(real_path, str(ds / "videos" / "fake.mp4"), mask_path=str(ds / "masks" / "fake.mp4"),
                    lossless=True) as t:
        for f in t.frames():
            t.write(f, f.rgb, mask if f.index in SWAPPED else np.zeros_like(mask))
    # faceset: both faces on every even frame (extraction with every_n=2)
    vid = video_id(src)
    faces = [{"video_id": vid, "frame_index": f, "face_index": k, "source_uri": src, "frame_width": SIDE,
              "frame_height": SIDE, "bbox": _box(lm), "landmarks": lm.astype(np.float32)}
             for f in range(0, N_FRAMES, 2) for k, lm in enumerate((SMALL, BIG))]
    write_table("faces", faces, str(work / "faceset" / "faces" / "run1-0.parquet"))
    write_table("videos", [{"video_id": vid, "uri": src, "status": "ok"}], str(work / "faceset" / "videos" / "run1.parquet"))
    frames = [{"video_id": "fakevid", "frame_index": f, "bbox": [x0, y0, x1, y1] if f in SWAPPED else None,
               "mask_path": "masks/fake.mp4"} for f in range(N_FRAMES)]
    pq.write_table(schema.table_from_rows("dataset_frames", frames), str(ds / "frames.parquet"))
    rows = {"real": {"video_id": "realvid", "path": "videos/real.mp4", "mask_path": None, "label": "REAL",
                     "source_uri": src},
            "fake": {"video_id": "fakevid", "path": "videos/fake.mp4", "mask_path": "masks/fake.mp4",
                     "label": "FAKE", "source_uri": src}}
    return str(ds), rows


def _check_shapes(c: VideoCrops, n: int, size: int) -> None:
    assert c.frame_indices.dtype == np.int64 and c.frame_indices.shape == (n,)
    assert c.images.shape == (n, size, size, 3) and c.images.dtype == np.uint8
    assert c.masks.shape == (n, size, size) and c.masks.dtype == np.uint8
    assert c.landmarks.shape == (n, 81, 2) and c.landmarks.dtype == np.float32
    assert c.landmarks.min() >= 0 and c.landmarks.max() <= size - 1


def test_real_video_crops(dataset):
    ds, rows = dataset
    c = video_crops(ds, rows["real"], frames=5, size=128)
    _check_shapes(c, 5, 128)
    assert c.video_id == "realvid"
    assert c.frame_indices.tolist() == sample_frames(range(0, N_FRAMES, 2), 5) == [0, 4, 10, 16, 22]
    assert not c.masks.any()
    # each crop is the largest face of its own frame, aligned as DeepfakeBench aligns it
    decoded = dict(decode_range(f"{ds}/videos/real.mp4"))
    for k, f in enumerate(c.frame_indices.tolist()):
        crop, _, lm = align_face(decoded[f], BIG, 128)
        assert np.array_equal(c.images[k], crop) and np.allclose(c.landmarks[k], lm)
    nose = transform_points(BIG[30:31], dfb_transform(BIG, 128))[0]
    assert np.allclose(c.landmarks[0, 30], nose, atol=1e-3)
    assert np.linalg.norm(nose - dfb_template(128)[2]) < 8  # the nose lands near the template's
    brightness = c.images.reshape(5, -1).mean(1)
    assert (np.diff(brightness) > 0).all()  # frames in order, each from its own frame


def test_all_candidates_when_fewer_than_asked(dataset):
    ds, rows = dataset
    c = video_crops(ds, rows["real"], frames=32, size=64)
    _check_shapes(c, N_FRAMES // 2, 64)
    assert c.frame_indices.tolist() == list(range(0, N_FRAMES, 2))


def test_fake_video_crops_take_the_swapped_face_and_its_mask(dataset):
    ds, rows = dataset
    c = video_crops(ds, rows["fake"], frames=4, size=128)
    _check_shapes(c, 4, 128)
    assert c.frame_indices.tolist() == sample_frames([f for f in range(0, N_FRAMES, 2) if f in SWAPPED], 4)
    assert set(c.frame_indices.tolist()) <= set(SWAPPED)
    # the small face was swapped: its mask fills the middle of each crop
    for m in c.masks:
        assert m[54:74, 54:74].min() > 200 and (m > 0).mean() > 0.2
        assert m[:4].max() == 0 or m[:, :4].max() == 0 or m[-4:].max() == 0
    nose = transform_points(SMALL[30:31], dfb_transform(SMALL, 128))[0]
    assert np.allclose(c.landmarks[0, 30], nose, atol=1e-3)


def test_clear_errors(dataset):
    ds, rows = dataset
    with pytest.raises(ValueError, match="no faces"):
        video_crops(ds, {**rows["real"], "source_uri": "/nowhere/else.mp4"})
    with pytest.raises(ValueError, match="no swapped frame"):
        video_crops(ds, {**rows["fake"], "video_id": "not-in-frames-parquet"})
    with pytest.raises(ValueError, match="frames"):
        video_crops(ds, rows["real"], frames=0)
    with pytest.raises(ValueError, match="label"):
        video_crops(ds, {**rows["real"], "label": "fake"})
