"""Extraction end to end on a local Ray: the built-in sample, reruns, recovery, bad input, real clips."""

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dflray.config import ExtractConfig, load_config
from dflray.extract import run_extract
from dflray.extract.preview import contact_sheet
from dflray.extract.stages import decode_image
from dflray.faceset import read_errors, read_faces, read_videos, video_id
from dflray.io import schema
from tests.media import corrupt_middle, shared_media, truncate, write_video

FAST = ["align.size=128", "decode.segment_frames=20"]


def _cfg(*extra):
    return load_config(ExtractConfig, overrides=[*FAST, *extra])


def _landmarks_in_boxes(faces, pad=0.2):
    lms = schema.landmarks_of(faces)
    boxes = np.array(faces.column("bbox").to_pylist(), np.float32)
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    inside = ((lms[..., 0] >= boxes[:, :1] - pad * w) & (lms[..., 0] <= boxes[:, 2:3] + pad * w)
              & (lms[..., 1] >= boxes[:, 1:2] - pad * h) & (lms[..., 1] <= boxes[:, 3:4] + pad * h))
    return inside.mean(axis=1)


@pytest.fixture(scope="module")
def sample_faceset(ray_local, sample_clips, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("fs") / "sample")
    summary = run_extract(sample_clips, out, _cfg())
    return out, summary


def test_sample_every_frame_one_face(sample_faceset, sample_clips):
    out, summary = sample_faceset
    videos = read_videos(out).to_pylist()
    assert sorted(v["uri"] for v in videos) == sorted(sample_clips)
    assert all(v["status"] == "ok" and v["frames_decoded"] == 50 == v["frame_count"] for v in videos)
    assert all(v["faces"] == 50 and v["frames_with_faces"] == 50 for v in videos)
    faces = read_faces(out)
    assert faces.num_rows == 100 and read_errors(out).num_rows == 0
    assert set(faces.column("detector").to_pylist()) == {"retinaface"} and summary.detector == "retinaface"
    assert (summary.frames, summary.faces, summary.errors) == (100, 100, 0)
    assert _landmarks_in_boxes(faces).min() >= 0.95
    assert (np.array(faces.column("det_score").to_pylist()) > 0.9).all()
    img = decode_image(faces.column("image")[0].as_py())
    mask = decode_image(faces.column("mask")[0].as_py())
    assert img.shape == (128, 128, 3) and mask.shape == (128, 128) and set(np.unique(mask)) <= {0, 255}
    assert 0.2 < (mask > 0).mean() < 0.9
    assert Path(out, "faceset.json").is_file()


def test_identity_embeddings_separate_people(sample_faceset):
    faces = read_faces(sample_faceset[0], columns=["video_id", "embedding"])
    emb = np.array(faces.column("embedding").to_pylist(), np.float32)
    vids = np.array(faces.column("video_id").to_pylist())
    a, b = emb[vids == vids[0]], emb[vids != vids[0]]
    assert np.linalg.norm(a - a.mean(0), axis=1).max() < 0.6
    assert np.linalg.norm(a.mean(0) - b.mean(0)) > 0.6


def test_rerun_skips_done_videos_and_duplicates_nothing(sample_faceset, sample_clips):
    out, _ = sample_faceset
    before = read_faces(out, columns=["video_id", "frame_index", "face_index"])
    again = run_extract(sample_clips, out, _cfg())
    assert again.skipped == 2 and again.videos == 0
    after = read_faces(out, columns=["video_id", "frame_index", "face_index"])
    assert after.num_rows == before.num_rows
    keys = set(zip(*(after.column(c).to_pylist() for c in after.column_names)))
    assert len(keys) == after.num_rows


def test_killed_run_leftovers_are_dropped(ray_local, sample_clips, tmp_path):
    out = tmp_path / "fs"
    run_extract(sample_clips[:1], str(out), _cfg())
    # What a job killed mid-chunk leaves behind: staging files and faces without a commit record.
    committed = next((out / "faces").glob("*.parquet"))
    shutil.copy(committed, out / "faces" / "20990101000000deadbeef-orphan.parquet")
    (out / "_staging" / "x" / "faces").mkdir(parents=True)
    shutil.copy(committed, out / "_staging" / "x" / "faces" / "part.parquet")
    s = run_extract(sample_clips, str(out), _cfg())
    assert (s.skipped, s.videos) == (1, 1)
    assert not (out / "_staging").exists() and not list((out / "faces").glob("2099*"))
    faces = read_faces(str(out), columns=["video_id"])
    assert faces.num_rows == 100
    assert set(faces.column("video_id").to_pylist()) == {video_id(u) for u in sample_clips}


def test_one_pipeline_commits_each_chunk(ray_local, sample_clips, tmp_path, monkeypatch):
    """Chunks of one video each (``commit_every=1``) share one streaming pipeline on CPUs, and each is
    committed on its own: a videos record and faces under its own run id, nothing left in staging."""
    import dflray.extract.pipeline as pipeline

    built = []
    build = pipeline._build_dataset
    monkeypatch.setattr(pipeline, "_build_dataset", lambda *a, **k: built.append(1) or build(*a, **k))
    out = tmp_path / "fs"
    s = run_extract(sample_clips[:2], str(out), _cfg("commit_every=1", "landmarks.embedding=false"))
    assert s.by_status == {"ok": 2} and len(built) == 1
    records = sorted((out / "videos").glob("*.parquet"))
    assert len(records) == 2
    runs = {r.stem for r in records}
    faces = read_faces(str(out), columns=["video_id"])
    assert faces.num_rows == s.faces == 100
    by_run = {}
    for f in (out / "faces").glob("*.parquet"):
        by_run.setdefault(next(r for r in runs if f.name.startswith(r)), set()).update(
            pq.read_table(f, columns=["video_id"]).column("video_id").to_pylist())
    assert sorted(len(v) for v in by_run.values()) == [1, 1] and set.union(*by_run.values()) == {
        video_id(u) for u in sample_clips[:2]}
    assert not (out / "_staging").exists()


def test_stride_and_segments_number_frames_correctly(ray_local, sample_clips, tmp_path):
    out = str(tmp_path / "fs")
    run_extract(sample_clips[:1], out, _cfg("decode.every_n=3", "decode.segment_frames=7", "landmarks.embedding=false"))
    idx = read_faces(out, columns=["frame_index"]).column("frame_index").to_pylist()
    assert idx == list(range(0, 50, 3))
    v = read_videos(out).to_pylist()[0]
    assert v["frames_decoded"] == 17 and v["status"] == "ok"


def test_segments_past_the_block_bound_share_blocks(ray_local, sample_clips, tmp_path, monkeypatch):
    """A window with more segments than ``MAX_BLOCKS`` reads them in ``MAX_BLOCKS`` blocks (what the
    driver keeps grows with a pipeline's blocks), and every frame is still extracted once."""
    import ray

    import dflray.extract.pipeline as pipeline

    monkeypatch.setattr(pipeline, "MAX_BLOCKS", 3)
    blocks = []
    from_items = ray.data.from_items
    monkeypatch.setattr(ray.data, "from_items", lambda items, **k: blocks.append((len(items), k)) or from_items(items, **k))
    out = str(tmp_path / "fs")
    s = run_extract(sample_clips[:2], out, _cfg("decode.segment_frames=7", "commit_every=1", "landmarks.embedding=false"))
    assert s.by_status == {"ok": 2}
    assert blocks == [(16, {"override_num_blocks": 3})]  # 2 videos x 8 segments of 7 frames (50 frames)
    t = read_faces(out, columns=["video_id", "frame_index"])
    for vid in {video_id(u) for u in sample_clips[:2]}:
        idx = [f for v, f in zip(t.column("video_id").to_pylist(), t.column("frame_index").to_pylist()) if v == vid]
        assert sorted(idx) == list(range(50))


def test_preview_contact_sheet(sample_faceset, tmp_path):
    import cv2

    n = contact_sheet(sample_faceset[0], str(tmp_path / "grid.png"), n=12, cols=4, tile=96)
    img = cv2.imread(str(tmp_path / "grid.png"))
    assert n == 12 and img.shape == (3 * 96, 4 * 96, 3) and img.std() > 10


def test_bad_inputs_become_rows_and_the_rest_completes(ray_local, sample_clips, tmp_path):
    bad = tmp_path / "in"
    bad.mkdir()
    good = shutil.copy(sample_clips[0], bad / "good.mp4")
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "text.mp4").write_text("not a video\n" * 100)
    truncate(good, bad / "truncated.mp4", 0.5)
    corrupt_middle(good, bad / "corrupt.mp4")
    rng = np.random.default_rng(0)
    write_video(bad / "noface.mp4", [rng.integers(0, 60, (120, 160, 3), np.uint8) for _ in range(10)])
    from dflray.sample import animate, load_portrait

    still = load_portrait("astronaut")
    frames = list(animate(still, (220.0, 121.0), 90.0, 8, size=257))
    write_video(bad / "grey.mkv", [f.mean(axis=2).astype(np.uint8) for f in frames], pix_fmt="gray", codec="ffv1")
    write_video(bad / "odd.mkv", frames, pix_fmt="yuv444p")
    missing = str(tmp_path / "nowhere" / "missing.mp4")
    manifest = tmp_path / "list.txt"
    manifest.write_text(missing + "\n")
    out = str(tmp_path / "fs")
    s = run_extract([str(bad), str(manifest)], out, _cfg("landmarks.embedding=false"))
    videos = {Path(v["uri"]).name: v for v in read_videos(out).to_pylist()}
    assert len(videos) == 9 and s.videos == 9
    for name in ("empty.mp4", "text.mp4", "truncated.mp4", "missing.mp4"):
        assert videos[name]["status"] == "error" and videos[name]["error"], name
    assert "empty" in videos["empty.mp4"]["error"]
    assert videos["noface.mp4"]["status"] == "no_faces" and videos["noface.mp4"]["frames_decoded"] == 10
    for name in ("good.mp4", "grey.mkv", "odd.mkv"):
        assert videos[name]["status"] == "ok", (name, videos[name])
    assert videos["good.mp4"]["faces"] == 50
    assert (videos["odd.mkv"]["width"], videos["odd.mkv"]["height"]) == (257, 257)
    assert videos["corrupt.mp4"]["status"] in ("ok", "partial", "error", "no_faces")
    errors = read_errors(out).to_pylist()
    assert {Path(e["uri"]).name for e in errors} >= {"empty.mp4", "text.mp4", "truncated.mp4", "missing.mp4"}
    assert all(e["message"] and e["stage"] in ("probe", "decode") for e in errors)


def test_real_clip_one_face_per_frame(ray_local, tmp_path):
    path = shared_media("src_man_a.mp4")
    out = str(tmp_path / "fs")
    run_extract([path], out, _cfg("landmarks.embedding=false", "decode.segment_frames=60"))
    v = read_videos(out).to_pylist()[0]
    faces = read_faces(out, columns=["frame_index", "face_index", "bbox", "landmarks"])
    assert v["frames_decoded"] == v["frame_count"] == 216
    assert faces.column("frame_index").to_pylist() == list(range(216)), "exactly one face in every frame"
    assert _landmarks_in_boxes(faces).min() >= 0.9


def test_real_multiface_clip(ray_local, tmp_path):
    path = shared_media("multiface_cuts_hamilton.mp4")
    out = str(tmp_path / "fs")
    run_extract([path], out, _cfg("landmarks.embedding=false", "decode.every_n=5", "decode.segment_frames=60"))
    faces = read_faces(out, columns=["frame_index", "face_index", "bbox", "landmarks"])
    idx = np.array(faces.column("frame_index").to_pylist())
    per_frame = np.bincount(idx)
    late = per_frame[len(per_frame) // 2:]
    assert late.max() >= 3, f"expected several faces in later frames, got {late.tolist()}"
    assert np.median(_landmarks_in_boxes(faces)) >= 0.95
