"""What an input is, end to end through run_extract (issue 15, defects 3, 4 and 7): a video's identity is
its absolute normalised URI checked against the file's fingerprint; inputs that cannot be reached or
match nothing are rows, and the rest of the job runs."""

import os
import shutil
from pathlib import Path

import pytest

from dflray.config import ExtractConfig, load_config
from dflray.extract import run_extract
from dflray.faceset import read_errors, read_faces, read_videos
from tests.net import closed_port

FAST = ["align.size=96", "decode.segment_frames=25", "landmarks.embedding=false"]


def _cfg():
    return load_config(ExtractConfig, overrides=FAST)



def test_a_video_is_its_absolute_path_and_its_fingerprint(ray_local, sample_clips, tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "sub").mkdir()
    shutil.copy(sample_clips[0], a / "clip.mp4")
    shutil.copy(sample_clips[1], b / "clip.mp4")
    out = str(tmp_path / "fs")

    monkeypatch.chdir(a)
    s = run_extract(["clip.mp4"], out, _cfg())
    assert (s.videos, s.skipped) == (1, 0)
    (row,) = read_videos(out).to_pylist()
    assert row["uri"] == str(a / "clip.mp4")
    st = os.stat(a / "clip.mp4")
    assert row["fingerprint"] == f"{st.st_size}:{st.st_mtime_ns}"
    # the same file typed another way is the same video
    s = run_extract(["sub/../clip.mp4"], out, _cfg())
    assert (s.videos, s.skipped) == (0, 1)

    # another clip.mp4 from another folder is another video: extracted, not skipped as done
    monkeypatch.chdir(b)
    s = run_extract(["clip.mp4"], out, _cfg())
    assert (s.videos, s.skipped) == (1, 0), str(s)
    videos = read_videos(out).to_pylist()
    assert sorted(v["uri"] for v in videos) == [str(a / "clip.mp4"), str(b / "clip.mp4")]
    assert all(Path(u).is_absolute() for u in read_faces(out, columns=["source_uri"]).column(0).to_pylist())
    faces = read_faces(out, columns=["video_id"]).num_rows

    # a.mp4 replaced by another file under the same name: reported, never silently skipped, no duplicates
    shutil.copy(sample_clips[1], a / "clip.mp4")
    os.utime(a / "clip.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    monkeypatch.chdir(a)
    s = run_extract(["clip.mp4"], out, _cfg())
    assert s.skipped == 0 and s.errors == 1, str(s)
    changed = [e for e in read_errors(out).to_pylist() if e["stage"] == "input"]
    assert len(changed) == 1 and changed[0]["type"] == "Changed" and changed[0]["uri"] == str(a / "clip.mp4")
    assert "changed since it was extracted" in changed[0]["message"] and "--out" in changed[0]["message"]
    assert read_faces(out, columns=["video_id"]).num_rows == faces
    assert len(read_videos(out)) == 2


def test_a_missing_file_that_appears_is_extracted_on_rerun(ray_local, sample_clips, tmp_path):
    clip = tmp_path / "late.mp4"
    out = str(tmp_path / "fs")
    s = run_extract([str(clip)], out, _cfg())
    assert s.by_status == {"error": 1}
    shutil.copy(sample_clips[0], clip)
    s = run_extract([str(clip)], out, _cfg())
    assert (s.videos, s.skipped, s.by_status) == (1, 0, {"ok": 1}), str(s)
    (row,) = read_videos(out).to_pylist()  # the latest record of a video replaces its earlier error
    assert row["status"] == "ok" and row["faces"] == 50


def test_unreachable_inputs_are_rows_and_the_rest_runs(ray_local, sample_clips, tmp_path, monkeypatch):
    pytest.importorskip("s3fs")
    import s3fs

    good = shutil.copy(sample_clips[0], tmp_path / "good.mp4")
    http = f"http://127.0.0.1:{closed_port()}/clip.mp4"
    nothing = str(tmp_path / "none" / "*.mp4")
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    # no credentials anywhere for s3://nocreds; s3://down's endpoint is a closed port
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    s3fs.S3FileSystem.clear_instance_cache()
    out = str(tmp_path / "fs")
    inputs = ["s3://nocreds/x.mp4", http, str(good), nothing]
    s = run_extract(inputs, out, _cfg())
    assert s.by_status == {"ok": 1, "error": 2}, str(s)
    videos = {v["uri"]: v for v in read_videos(out).to_pylist()}
    assert videos[str(good)]["status"] == "ok" and videos[str(good)]["faces"] == 50
    assert "no credentials for s3" in videos["s3://nocreds/x.mp4"]["error"]
    assert "connection refused" in videos[http]["error"]
    errors = {e["uri"]: e for e in read_errors(out).to_pylist()}
    assert {u: e["stage"] for u, e in errors.items()} == {"s3://nocreds/x.mp4": "input", http: "input",
                                                          nothing: "input"}
    assert errors[nothing]["type"] == "NoMatch" and nothing not in videos
    assert all("\n" not in e["message"] and len(e["message"]) < 400 for e in errors.values())

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port()}")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        # a rerun tries the unreachable inputs again (they were never read) and skips the done one
        s = run_extract(["s3://down/raw/", "s3://nocreds/x.mp4", str(good)], out, _cfg())
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    assert (s.skipped, s.by_status) == (1, {"error": 2}), str(s)
    videos = {v["uri"]: v for v in read_videos(out).to_pylist()}
    assert "endpoint unreachable" in videos["s3://down/raw/"]["error"]
    assert "endpoint unreachable" in videos["s3://nocreds/x.mp4"]["error"]


def test_inputs_that_are_all_empty_still_fail_before_work(tmp_path):
    with pytest.raises(ValueError, match="no videos found"):
        run_extract([str(tmp_path / "none" / "*.mp4"), str(tmp_path)], str(tmp_path / "fs"), _cfg())
    assert not (tmp_path / "fs").exists()
