"""Extraction reading and writing s3:// through a local S3-compatible server (moto) on 127.0.0.1."""


import pytest

from dflray.config import ExtractConfig, load_config
from tests.net import local_s3


@pytest.fixture(scope="module")
def s3_server():
    with local_s3() as env:
        yield env


@pytest.fixture(scope="module")
def ray_s3(s3_server):
    import ray

    # Workers get the endpoint and credentials the way a cluster job would: its runtime env.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False, runtime_env={"env_vars": s3_server})
    try:
        yield ray
    finally:
        ray.shutdown()


def test_extract_s3_to_s3(ray_s3, sample_clips):
    import s3fs

    from dflray.extract import run_extract
    from dflray.extract.preview import contact_sheet
    from dflray.faceset import read_faces, read_videos

    fs = s3fs.S3FileSystem()
    fs.mkdir("clips")
    fs.put(sample_clips[0], "clips/raw/a.mp4")
    cfg = load_config(ExtractConfig, overrides=["align.size=96", "landmarks.embedding=false",
                                                "decode.segment_frames=25"])
    s = run_extract(["s3://clips/raw/"], "s3://clips/facesets/a", cfg)
    assert (s.videos, s.faces, s.errors) == (1, 50, 0)
    videos = read_videos("s3://clips/facesets/a").to_pylist()
    assert videos[0]["uri"] == "s3://clips/raw/a.mp4" and videos[0]["status"] == "ok"
    assert read_faces("s3://clips/facesets/a", columns=["frame_index"]).num_rows == 50
    assert fs.exists("clips/facesets/a/faceset.json") and not fs.exists("clips/facesets/a/_staging")
    # a rerun against object storage skips the committed video
    assert run_extract(["s3://clips/raw/"], "s3://clips/facesets/a", cfg).skipped == 1
    contact_sheet("s3://clips/facesets/a", "s3://clips/preview.png", n=4)
    assert fs.size("clips/preview.png") > 1000
    # a missing object is an error row, not a dead job
    s = run_extract(["s3://clips/raw/none.mp4"], "s3://clips/facesets/b", cfg)
    assert read_videos("s3://clips/facesets/b").to_pylist()[0]["status"] == "error"


def test_train_on_s3_checkpoints_previews_resume_export(ray_s3, sample_clips, tmp_path):
    """Facesets, Ray Train checkpoints (storage_path on s3://), previews and export all through S3."""
    import s3fs

    from dflray.artifacts.checkpoint import latest_checkpoint, read_meta
    from dflray.artifacts.export import export_model, load_exported
    from dflray.config import TrainConfig
    from dflray.extract import run_extract
    from dflray.train import run_train

    fs = s3fs.S3FileSystem()
    faceset = "s3://clips/facesets/a"
    if not fs.exists("clips/facesets/a/videos"):
        fs.mkdir("clips")
        fs.put(sample_clips[0], "clips/raw/a.mp4")
        run_extract(["s3://clips/raw/"], faceset, load_config(ExtractConfig, overrides=[
            "align.size=96", "landmarks.embedding=false", "decode.segment_frames=25"]))
    tiny = ["model.resolution=64", "model.ae_dims=64", "model.e_dims=16", "model.d_dims=16",
            "model.d_mask_dims=8", "batch_size=4", "checkpoint_every=2", "preview_every=2", "pretrain=true"]
    out = "s3://clips/runs/a"
    s = run_train(faceset, None, out, load_config(TrainConfig, overrides=[*tiny, "steps=4"]))
    assert s.steps == 4 and s.checkpoint.startswith("s3://clips/runs/a/run/checkpoint_")
    assert fs.exists("clips/runs/a/preview.png") and fs.exists("clips/runs/a/loss.png")
    assert fs.exists("clips/runs/a/train_config.yaml")
    s = run_train(faceset, None, out, load_config(TrainConfig, overrides=[*tiny, "steps=6"]))
    assert (s.started_at, s.steps) == (4, 6) and read_meta(latest_checkpoint(out))["step"] == 6
    lines = export_model(out, str(tmp_path / "a.ts"))
    module, meta = load_exported(str(tmp_path / "a.ts"))
    assert meta.step == 6 and lines[0].startswith("torchscript:")


def test_merge_s3_to_s3(ray_s3, sample_clips, tmp_path):
    """Model (a training output on S3), dst faceset and every merge output through S3."""
    import pyarrow.parquet as pq
    import s3fs

    from dflray.config import MergeConfig, TrainConfig
    from dflray.extract import run_extract
    from dflray.io.video import probe
    from dflray.merge.pipeline import run_merge
    from dflray.train import run_train

    fs = s3fs.S3FileSystem()
    faceset, run = "s3://clips/facesets/a", "s3://clips/runs/a"
    if not fs.exists("clips/facesets/a/videos"):
        fs.mkdir("clips")
        fs.put(sample_clips[0], "clips/raw/a.mp4")
        run_extract(["s3://clips/raw/"], faceset, load_config(ExtractConfig, overrides=[
            "align.size=96", "landmarks.embedding=false", "decode.segment_frames=25"]))
    if not fs.exists("clips/runs/a/run"):
        run_train(faceset, None, run, load_config(TrainConfig, overrides=[
            "model.resolution=64", "model.ae_dims=64", "model.e_dims=16", "model.d_dims=16", "model.d_mask_dims=8",
            "batch_size=4", "checkpoint_every=2", "preview_every=0", "pretrain=true", "steps=2"]))
    out = "s3://clips/fakes/a"
    cfg = load_config(MergeConfig, overrides=["output.preset=ultrafast"])
    s = run_merge(run, [faceset], out, cfg)
    assert s.by_status == {"ok": 1} and s.frames == 50, str(s)
    with fs.open("clips/fakes/a/index.parquet", "rb") as f:
        row = pq.read_table(f).to_pylist()[0]
    assert row["status"] == "ok" and row["dst_uri"] == "s3://clips/raw/a.mp4" and fs.exists("clips/fakes/a/model.ts")
    info = probe(f"{out}/{row['path']}")
    assert info.frame_count == 50 and info.fps == 25
    assert fs.exists(f"clips/fakes/a/{row['mask_path']}") and not fs.glob("clips/fakes/a/videos/.tmp-*")
    assert run_merge(run, [faceset], out, cfg).skipped == 1
