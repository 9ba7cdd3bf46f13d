"""The merge job end to end on a local Ray (2 CPUs): a tiny model trained on the built-in sample, real
facesets, real H.264 in and out, the Parquet index; reruns, bad inputs, and ../shared/media clips.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from dflray.artifacts.export import EXTRA_FILE, export_model
from dflray.cli import main
from dflray.config import ExtractConfig, MergeConfig, TrainConfig, load_config
from dflray.extract import run_extract
from dflray.io.video import decode_range, read_masks
from dflray.merge.pipeline import run_merge
from dflray.train import run_train
from tests.media import shared_media, write_video

TINY = ["model.resolution=64", "model.ae_dims=64", "model.e_dims=16", "model.d_dims=16", "model.d_mask_dims=8",
        "model.face_type=whole_face", "batch_size=4", "preview_every=0", "log_every=5", "augment_cpus=0.5",
        "steps=12", "checkpoint_every=12"]
WALL = range(20, 30)  # frames of the dst clip without a face


def _cfg(*extra) -> MergeConfig:
    return load_config(MergeConfig, overrides=list(extra))


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def inputs(ray_local, sample_clips, tmp_path_factory):
    """A trained tiny model and a dst faceset of three videos: the astronaut with ten faceless frames
    (lossless), Grace Hopper, and a file that is not a video."""
    root = tmp_path_factory.mktemp("merge_inputs")
    by_name = {Path(c).stem: c for c in sample_clips}
    frames = [f for _, f in decode_range(by_name["astronaut"])]
    for i in WALL:
        frames[i] = np.full_like(frames[i], 90)
    walled = write_video(root / "astronaut_wall.mp4", frames, fps=25, codec="libx264rgb", pix_fmt="rgb24")
    broken = root / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(3000))
    ecfg = load_config(ExtractConfig, overrides=["align.size=128", "landmarks.embedding=false"])
    src, dst = str(root / "src"), str(root / "dst")
    run_extract([by_name["astronaut"]], src, ecfg)
    # Identity embeddings on, as by default: RetinaFace now and then scores a patch of the astronaut's
    # suit just over its threshold, and the dominant identity leaves such a second "face" alone.
    run_extract([walled, by_name["grace_hopper"], str(broken)], dst,
                load_config(ExtractConfig, overrides=["align.size=128"]))
    run_train(src, dst, str(root / "train"), load_config(TrainConfig, overrides=TINY))
    model = str(root / "model.ts")
    export_model(str(root / "train"), model)
    return {"model": model, "train": str(root / "train"), "dst": dst, "walled": walled,
            "grace": by_name["grace_hopper"], "broken": str(broken), "frames": frames, "root": root}


def _video_facts(path):
    with av.open(path) as c:
        v = c.streams.video[0]
        pts = [f.pts * v.time_base for f in c.decode(v)]
        return {"frames": len(pts), "fps": float(v.average_rate), "times": [float(t) for t in pts],
                "meta": dict(c.metadata), "audio": bool(c.streams.audio)}


@pytest.fixture(scope="module")
def merged(inputs, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("merged") / "out")
    summary = run_merge(inputs["model"], [inputs["dst"]], out, _cfg("output.lossless=true", "smooth_window=5"))
    return out, summary


def test_outputs_match_their_inputs(inputs, merged):
    out, summary = merged
    assert summary.by_status == {"ok": 2, "error": 1} and summary.skipped == 0
    index = pq.read_table(os.path.join(out, "index.parquet")).to_pylist()
    ok = {Path(r["dst_uri"]).stem: r for r in index if r["status"] == "ok"}
    assert set(ok) == {"astronaut_wall", "grace_hopper"}
    for name, src in (("astronaut_wall", inputs["walled"]), ("grace_hopper", inputs["grace"])):
        row = ok[name]
        path = os.path.join(out, row["path"])
        a, b = _video_facts(src), _video_facts(path)
        assert b["frames"] == a["frames"] == row["frames"] == 50
        assert b["fps"] == a["fps"] == row["fps"] == 25
        assert b["times"] == pytest.approx(a["times"], abs=1e-6)
        assert row["sha256"] == _sha(path) and row["mask_sha256"] == _sha(os.path.join(out, row["mask_path"]))
        assert b["meta"]["dflray_synthetic"] == "1" and b["meta"]["dflray_output_id"] == row["output_id"]
        assert b["meta"]["dflray_settings_sha256"] == row["settings_sha256"]
        assert b["meta"]["dflray_dataset_id"] == row["dataset_id"] != ""
        assert row["label"] == "FAKE" and row["face_type"] == "whole_face" and row["resolution"] == 64
        assert row["mode"] == "overlay" and row["smooth_window"] == 5 and row["seed"] > 0
        assert (row["width"], row["height"]) == (320, 320) and row["duration"] == pytest.approx(2.0)


def test_faceless_frames_are_untouched_and_faces_are_swapped(inputs, merged):
    out, _ = merged
    row = next(r for r in pq.read_table(os.path.join(out, "index.parquet")).to_pylist()
               if r["dst_uri"] == inputs["walled"])
    got = dict(decode_range(os.path.join(out, row["path"])))
    masks = dict(read_masks(os.path.join(out, row["mask_path"])))
    frames = pq.read_table(os.path.join(out, "frames", f"{row['output_id']}.parquet")).to_pylist()
    assert [f["frame_index"] for f in frames] == list(range(50))
    source = dict(decode_range(inputs["walled"]))
    for f in frames:
        i = f["frame_index"]
        if i in WALL:
            assert f["faces"] == 0 and f["faces_swapped"] == 0 and f["mask_area"] == 0
            assert np.array_equal(got[i], source[i]) and not masks[i].any()  # lossless: pixel-identical
        else:
            m = masks[i] > 0
            assert f["faces_swapped"] == 1 and f["mask_area"] == pytest.approx(m.mean(), abs=1e-6) and m.mean() > 0.05
            assert np.array_equal(got[i][~m], source[i][~m])
            assert np.abs(got[i][m].astype(int) - source[i][m]).mean() > 1
    assert row["frames_swapped"] == 40


def test_broken_video_is_an_error_row_and_the_rerun_does_nothing(inputs, merged):
    out, _ = merged
    errors = pq.read_table(os.path.join(out, "errors.parquet")).to_pylist()
    assert [e["uri"] for e in errors] == [inputs["broken"]]
    assert "extraction of this video failed" in errors[0]["message"]
    index = pq.read_table(os.path.join(out, "index.parquet")).to_pylist()
    assert next(r for r in index if r["dst_uri"] == inputs["broken"])["status"] == "error"

    stamps = {p: os.stat(p).st_mtime_ns for p in Path(out).rglob("*") if p.is_file() and "index" not in p.name
              and "errors.parquet" not in p.name}
    again = run_merge(inputs["model"], [inputs["dst"]], out, _cfg("output.lossless=true", "smooth_window=5"))
    assert again.videos == 0 and again.skipped == 3 and again.frames == 0
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps  # nothing rewritten
    assert len(pq.read_table(os.path.join(out, "index.parquet"))) == 3


def test_a_resent_block_answers_its_merged_videos_from_their_records(merged):
    """A block sent again after its worker's node was lost may hold videos merged before the loss: the merge
    worker answers those from their records and merges nothing (this one has no model: a merge would fail)."""
    from dflray.merge.pipeline import MergeStage

    out, _ = merged
    index = sorted(pq.read_table(os.path.join(out, "index.parquet")).to_pylist(), key=lambda r: r["output_id"])
    stage = MergeStage.__new__(MergeStage)  # built without __init__: no predictor, no XSeg, no config
    stage.out = out
    got = stage({"output_id": np.array([r["output_id"] for r in index], dtype=object),
                 "dst_uri": np.array([r["dst_uri"] for r in index], dtype=object)})
    assert list(got["output_id"]) == [r["output_id"] for r in index]
    assert list(got["status"]) == [r["status"] for r in index] and sorted(got["status"]) == ["error", "ok", "ok"]
    assert list(got["frames_swapped"]) == [r["frames_swapped"] or 0 for r in index]
    assert list(got["dst_uri"]) == [r["dst_uri"] for r in index]


def test_interrupted_run_finishes_only_what_is_missing(inputs, tmp_path):
    out = str(tmp_path / "out")
    cfg = _cfg("output.masks=false", "output.preset=ultrafast")
    first = run_merge(inputs["model"], [inputs["dst"]], out, cfg)
    assert first.by_status == {"ok": 2, "error": 1}
    index = pq.read_table(os.path.join(out, "index.parquet")).to_pylist()
    lost = next(r for r in index if r["dst_uri"] == inputs["grace"])
    kept = next(r for r in index if r["dst_uri"] == inputs["walled"])
    # What a kill leaves: a half-written temporary file, the video without its record.
    os.remove(os.path.join(out, "records", f"{lost['output_id']}.parquet"))
    Path(out, "videos", f".tmp-dead-{Path(lost['path']).name}").write_bytes(b"partial")
    kept_stamp = os.stat(os.path.join(out, kept["path"])).st_mtime_ns
    second = run_merge(inputs["model"], [inputs["dst"]], out, cfg)
    assert second.videos == 1 and second.skipped == 2 and second.by_status == {"ok": 1}
    index = pq.read_table(os.path.join(out, "index.parquet")).to_pylist()
    assert sorted(r["output_id"] for r in index) == sorted({r["output_id"] for r in index})  # no duplicates
    assert len(index) == 3 and os.stat(os.path.join(out, kept["path"])).st_mtime_ns == kept_stamp
    again = next(r for r in index if r["dst_uri"] == inputs["grace"])
    assert again["sha256"] == _sha(os.path.join(out, again["path"]))
    assert sorted(p.name for p in Path(out, "videos").iterdir() if not p.name.startswith(".tmp-")) == \
        sorted(Path(r["path"]).name for r in index if r["status"] == "ok")


def test_varied_settings_are_drawn_per_video_recorded_and_reproducible(inputs, tmp_path):
    args = ["--model", inputs["train"], "--dst", inputs["dst"], "output.masks=false", "output.preset=ultrafast",
            "seed=11", "color_transfer=mkl-m",
            "vary=[{field: mode, choices: [seamless, hist-match]}, {field: erode, low: -30, high: 30},"
            " {field: sharpen_mode, choices: [box, gaussian]}, {field: sharpen_amount, low: 5, high: 40}]"]
    rows = []
    for name in ("a", "b"):
        assert main(["merge", *args, "--out", str(tmp_path / name)]) == 0
        rows.append({r["dst_uri"]: r for r in pq.read_table(str(tmp_path / name / "index.parquet")).to_pylist()
                     if r["status"] == "ok"})
    keys = ("mode", "erode", "sharpen_mode", "sharpen_amount", "seed", "settings_sha256", "color_transfer")
    for uri, r in rows[0].items():
        assert {k: r[k] for k in keys} == {k: rows[1][uri][k] for k in keys}  # same seed, same draws
        assert r["mode"] in ("seamless", "hist-match") and -30 <= r["erode"] <= 30 and r["color_transfer"] == "mkl-m"
        assert r["model"].startswith(inputs["train"])  # exported from the checkpoint into OUT/model.ts
    assert len({rows[0][u]["seed"] for u in rows[0]}) == 2
    assert (tmp_path / "a" / "model.ts").is_file()


def test_bad_model_and_output_fail_before_work(inputs, tmp_path):
    not_model = tmp_path / "notes.ts"
    not_model.write_text("hello")
    with pytest.raises(ValueError, match="--model"):
        run_merge(str(not_model), [inputs["dst"]], str(tmp_path / "o1"), _cfg())
    # A model whose contract says 96 px while the network takes 64 px crops.
    extra = {EXTRA_FILE: ""}
    module = torch.jit.load(inputs["model"], _extra_files=extra)
    contract = json.loads(extra[EXTRA_FILE])
    contract["resolution"] = 96
    lying = str(tmp_path / "lying.ts")
    torch.jit.save(module, lying, _extra_files={EXTRA_FILE: json.dumps(contract)})
    with pytest.raises(ValueError, match="96 px"):
        run_merge(lying, [inputs["dst"]], str(tmp_path / "o2"), _cfg())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="--out: cannot write"):
        run_merge(inputs["model"], [inputs["dst"]], str(blocker / "out"), _cfg())
    with pytest.raises(ValueError, match="raw-predict"):
        run_merge(inputs["model"], [inputs["dst"]], str(tmp_path / "o3"), _cfg("settings.mode=raw-predict"))
    assert not any((tmp_path / d).exists() for d in ("o1", "o2", "o3"))  # a refused run leaves no --out
    with pytest.raises(SystemExit) as e:
        main(["merge", "--model", inputs["model"], "--dst", inputs["dst"], "--out", str(tmp_path / "o4"), "erode=999"])
    assert e.value.code == 2


def test_one_unwritable_output_fails_alone_and_another_config_is_refused(inputs, tmp_path):
    out = tmp_path / "out"
    first = run_merge(inputs["model"], [inputs["dst"]], str(out), _cfg("output.masks=false", "output.preset=ultrafast"))
    index = pq.read_table(str(out / "index.parquet")).to_pylist()
    grace = next(r for r in index if r["dst_uri"] == inputs["grace"])
    walled = next(r for r in index if r["dst_uri"] == inputs["walled"])
    assert first.by_status["ok"] == 2
    # Block one output path with a folder, forget both videos, rerun: one fails on write, one is redone.
    for r in (grace, walled):
        os.remove(out / "records" / f"{r['output_id']}.parquet")
    os.remove(out / grace["path"])
    os.makedirs(out / grace["path"] / "blocked")
    second = run_merge(inputs["model"], [inputs["dst"]], str(out), _cfg("output.masks=false", "output.preset=ultrafast"))
    assert second.by_status == {"ok": 1, "error": 1}
    errors = pq.read_table(str(out / "errors.parquet")).to_pylist()
    write = [e for e in errors if e["uri"] == inputs["grace"]]
    assert write and write[0]["stage"] == "write"
    with pytest.raises(ValueError, match="another config"):
        run_merge(inputs["model"], [inputs["dst"]], str(out), _cfg("settings.erode=5"))


def test_real_clips_keep_audio_and_swap_the_dominant_identity(ray_local, inputs, tmp_path):
    woman = shared_media("woman_room_audio_e.mp4")
    crowd = shared_media("multiface_cuts_hamilton.mp4")
    out = str(tmp_path / "out")
    cfg = _cfg("extract.decode.every_n=3", "extract.align.size=128", "output.preset=ultrafast", "smooth_window=5")
    with pytest.raises(ValueError, match="--dst: .* is not a faceset"):  # videos need the extraction stage
        run_merge(inputs["model"], [woman, crowd], out, cfg)
    summary = run_merge(inputs["model"], [woman, crowd], out, cfg, extractor=run_extract)
    assert summary.by_status == {"ok": 2}
    index = {Path(r["dst_uri"]).name: r for r in pq.read_table(os.path.join(out, "index.parquet")).to_pylist()}
    for name, src in (("woman_room_audio_e.mp4", woman), ("multiface_cuts_hamilton.mp4", crowd)):
        row = index[name]
        a, b = _video_facts(src), _video_facts(os.path.join(out, row["path"]))
        assert b["frames"] == a["frames"] == row["frames"] and b["fps"] == pytest.approx(a["fps"])
        assert b["times"] == pytest.approx(a["times"], abs=1e-6)
        assert b["audio"] and a["audio"] and row["has_audio"]
        with av.open(src) as c1, av.open(os.path.join(out, row["path"])) as c2:
            n1 = sum(1 for p in c1.demux(c1.streams.audio[0]) if p.dts is not None)
            n2 = sum(1 for p in c2.demux(c2.streams.audio[0]) if p.dts is not None)
        assert n1 == n2  # every audio packet copied
    assert index["woman_room_audio_e.mp4"]["frames_swapped"] > 0.9 * 282
    frames = pq.read_table(os.path.join(out, "frames", f"{index['multiface_cuts_hamilton.mp4']['output_id']}.parquet"))
    multi = [f for f in frames.to_pylist() if f["faces"] > 1]
    assert multi and all(f["faces_swapped"] <= 1 for f in multi)  # one identity, not everyone


def test_missing_faceset_rows_are_an_error_row(inputs, tmp_path):
    """A video the faceset lists as fine but whose face rows are gone fails alone, with the reason."""
    import shutil

    import pyarrow.compute as pc

    from dflray.faceset import video_id

    faceset = tmp_path / "dst"
    shutil.copytree(inputs["dst"], faceset)
    for f in (faceset / "faces").glob("*.parquet"):
        t = pq.read_table(f)
        pq.write_table(t.filter(pc.not_equal(t["video_id"], video_id(inputs["grace"]))), f)
    s = run_merge(inputs["model"], [str(faceset)], str(tmp_path / "out"), _cfg("output.masks=false",
                                                                             "output.preset=ultrafast"))
    assert s.by_status == {"ok": 1, "error": 2}
    errors = {e["uri"]: e for e in pq.read_table(str(tmp_path / "out" / "errors.parquet")).to_pylist()}
    assert "no face rows" in errors[inputs["grace"]]["message"] and errors[inputs["grace"]]["stage"] == "input"


def test_xseg_mask_modes_run_the_xseg_model_in_the_merge_workers(inputs, tmp_path):
    """XSeg modes load the XSeg model in each merge worker and record it. The segmenter here is a real
    XSeg network set to call nothing face, so an XSeg-dst merge must leave every frame as it was."""
    from dflray.artifacts.xseg import save_xseg
    from tests.unit.merge.test_merge_blend import constant_xseg

    xseg_dir = tmp_path / "xseg_none"
    save_xseg(constant_xseg(-30.0), str(xseg_dir / "xseg.pt"))
    with pytest.raises(ValueError, match="^xseg:"):
        run_merge(inputs["model"], [inputs["dst"]], str(tmp_path / "bad"),
                  _cfg("settings.mask_mode=XSeg-dst", f"xseg={tmp_path / 'nope.pt'}"))
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").rglob("*.mp4"))
    out = str(tmp_path / "out")
    run_merge(inputs["model"], [inputs["walled"]], out,
              _cfg("output.lossless=true", f"xseg={xseg_dir}",
                   "vary=[{field: mask_mode, choices: [XSeg-dst]}]"), extractor=run_extract)
    row = pq.read_table(os.path.join(out, "index.parquet")).to_pylist()[0]
    assert row["status"] == "ok" and row["mask_mode"] == "XSeg-dst"
    assert row["xseg_sha256"] == _sha(xseg_dir / "xseg.pt")
    got = dict(decode_range(os.path.join(out, row["path"])))
    masks = dict(read_masks(os.path.join(out, row["mask_path"])))
    source = dict(decode_range(inputs["walled"]))
    assert len(got) == 50 and all(np.array_equal(got[i], source[i]) and not masks[i].any() for i in got)
    # The same video with the model's own masks is swapped, and its record names no XSeg model.
    plain = str(tmp_path / "plain")
    run_merge(inputs["model"], [inputs["walled"]], plain, _cfg("output.lossless=true", f"xseg={xseg_dir}"),
              extractor=run_extract)
    row2 = pq.read_table(os.path.join(plain, "index.parquet")).to_pylist()[0]
    assert row2["xseg_sha256"] is None and row2["settings_sha256"] != row["settings_sha256"]
    assert row2["frames_swapped"] == 40
