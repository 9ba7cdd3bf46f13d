"""The dataset job end to end on a local Ray (2 CPUs): the built-in sample (two people, two clips each)
plus a broken file → extraction, identity clustering, splits, pairing, two tiny models trained at the
same time, merge, quality metrics, perturbations, index, metadata.json, layouts, report; and reruns.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from dflray.cli import main
from dflray.config import GenerateConfig, load_config
from dflray.dataset.perturb import encoded_crf
from dflray.dataset.pipeline import run_generate

TINY = ["models.train.model.resolution=64", "models.train.model.ae_dims=64", "models.train.model.e_dims=16",
        "models.train.model.d_dims=16", "models.train.model.d_mask_dims=8", "models.train.batch_size=4",
        "models.train.preview_every=0", "models.train.log_every=5", "models.train.steps=6",
        "models.train.checkpoint_every=6", "models.train.cpus_per_worker=0.5", "models.train.augment_cpus=0.5",
        "models.concurrency=2", "extract.align.size=128"]


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from dflray.sample import make_sample

    root = tmp_path_factory.mktemp("gen_clips")
    uris = make_sample(str(root), seconds=1.2, size=256, variants=2)
    broken = root / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    return [*uris, str(broken)]


def _plan(clips, *extra) -> GenerateConfig:
    videos = json.dumps(clips)
    return load_config(GenerateConfig, overrides=[f"videos={videos}", "dataset_id=test-ds",
                                                   "splits={train: 1.0, val: 0.0, test: 0.0}",
                                                   "perturb.preset=ultrafast", "quality.sample_frames=3",
                                                   "merge.vary=[{field: mode, choices: [overlay, seamless]}]",
                                                   *TINY, *extra])


@pytest.fixture(scope="module")
def dataset(ray_local, clips, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("gen") / "ds")
    cfg = _plan(clips, "perturb.compression=[c0, c23]", "perturb.fraction=1.0", "perturb.mix_fraction=0.5",
                "quality.gates=[{metric: seam, max: 1000.0}, {metric: pose_error, max: 0.001}]")
    summary = run_generate(cfg, out)
    return out, cfg, summary


def _index(out):
    return pq.read_table(os.path.join(out, "index.parquet")).to_pylist()


def test_plan_identities_and_splits(dataset, clips):
    out, cfg, summary = dataset
    plan = pq.read_table(os.path.join(out, "plan.parquet")).to_pylist()
    reals = {Path(r["uri"]).stem: r for r in plan if r["kind"] == "REAL"}
    assert set(reals) == {"astronaut", "astronaut_2", "grace_hopper", "grace_hopper_2", "broken"}
    # unlabelled clips of one person cluster into one identity, and the two people differ
    assert reals["astronaut"]["identity"] == reals["astronaut_2"]["identity"]
    assert reals["grace_hopper"]["identity"] == reals["grace_hopper_2"]["identity"]
    assert reals["astronaut"]["identity"] != reals["grace_hopper"]["identity"]
    assert all(r["identity_source"] == "cluster" for r in reals.values())
    fakes = [r for r in plan if r["kind"] == "FAKE"]
    # one fake per usable video, from the other person, in the same split; the broken file gets none
    assert sorted(Path(f["uri"]).stem for f in fakes) == ["astronaut", "astronaut_2", "grace_hopper", "grace_hopper_2"]
    for f in fakes:
        assert f["source_identity"] != f["identity"] and f["split"] == reals[Path(f["uri"]).stem]["split"]
    assert summary.models == 2 and summary.models_failed == 0
    assert len({f["model_key"] for f in fakes}) == 2  # one model per source identity


def test_index_metadata_and_files_agree(dataset):
    out, cfg, summary = dataset
    rows = _index(out)
    meta = json.loads(Path(out, "metadata.json").read_text())
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["name"] for r in ok} == set(meta)
    by_id = {r["video_id"]: r for r in rows}
    assert len(by_id) == len(rows)  # no duplicates
    # 4 good reals + 4 fakes, each at c0 and c23; the broken file is an error row per level
    assert sum(r["label"] == "REAL" and r["status"] == "ok" for r in rows) == 8
    assert sum(r["label"] == "FAKE" and r["status"] == "ok" for r in rows) == 8
    errors = [r for r in rows if r["status"] == "error"]
    assert len(errors) == 2 and all(r["label"] == "REAL" for r in errors)
    for r in ok:
        assert meta[r["name"]]["label"] == r["label"] and meta[r["name"]]["split"] == r["split"]
        path = Path(out, r["path"])
        assert path.is_file() and _sha(path) == r["sha256"]
        with av.open(str(path)) as c:
            md = dict(c.metadata)
        assert md["dflray_synthetic"] == ("1" if r["label"] == "FAKE" else "0")
        assert md["dflray_dataset_id"] == "test-ds"
        if r["label"] == "FAKE":
            orig = by_id[r["original"]]
            assert orig["label"] == "REAL" and orig["status"] == "ok" and orig["compression"] == r["compression"]
            assert meta[r["name"]]["original"] == orig["name"]
            assert orig["source_uri"] == r["source_uri"] and orig["frames"] == r["frames"]
            assert Path(out, r["mask_path"]).is_file() and _sha(Path(out, r["mask_path"])) == r["mask_sha256"]
            assert r["source_identity"] != r["target_identity"] and r["model_id"] and r["method"].startswith("dflray-")
            assert r["mode"] in ("overlay", "seamless") and r["settings_sha256"]
        else:
            assert "original" not in meta[r["name"]] and r["mask_path"] is None
        # the container's CRF is the row's: the compression level, or a compression distortion's
        crf = encoded_crf(str(path))
        assert crf == pytest.approx(r["crf"])
        assert r["crf"] >= {"c0": 0, "c23": 23}[r["compression"]]
    # every video was perturbed (fraction 1.0), and a video's two compression levels share the draw
    assert all(r["perturbation"] != "none" for r in ok)
    by_item = {}
    for r in ok:
        by_item.setdefault(r["item_id"], set()).add(r["perturbation"])
    assert all(len(v) == 1 for v in by_item.values())


def test_quality_metrics_filled_and_gated(dataset):
    out, cfg, summary = dataset
    fakes = [r for r in _index(out) if r["label"] == "FAKE" and r["status"] == "ok"]
    for r in fakes:
        for m in ("id_distance_source", "id_distance_target", "pose_error", "expression_error", "flicker", "seam"):
            assert r[m] is not None and np.isfinite(r[m]), (m, r[m])
        # pose_error <= 0.001 degrees is a gate no real swap passes: every fake is flagged and says why
        assert r["quality_pass"] is False and "pose_error" in r["quality_reasons"]


def test_frames_table_references_masks(dataset):
    out, cfg, summary = dataset
    frames = pq.read_table(os.path.join(out, "frames.parquet")).to_pylist()
    fakes = {r["video_id"]: r for r in _index(out) if r["label"] == "FAKE" and r["status"] == "ok"}
    assert {f["video_id"] for f in frames} == set(fakes)
    for vid, r in fakes.items():
        mine = [f for f in frames if f["video_id"] == vid]
        assert len(mine) == r["frames"] and all(f["mask_path"] == r["mask_path"] for f in mine)
        assert sum(f["faces_swapped"] > 0 for f in mine) == r["frames_swapped"] > 0


def test_report_written(dataset):
    out, _, _ = dataset
    html = Path(out, "report.html").read_text()
    assert "<table" in html and "FAKE" in html


def test_rerun_after_kill_finishes_without_duplicates(dataset, clips):
    out, cfg, _ = dataset
    before = {r["video_id"]: r for r in _index(out)}
    work = Path(out, "_work")
    # The state a kill leaves: a fake's merge record, a quality result and two published records gone,
    # a half-written temporary file beside the videos.
    fake = next(r for r in before.values() if r["label"] == "FAKE" and r["status"] == "ok")
    real = next(r for r in before.values() if r["label"] == "REAL" and r["status"] == "ok")
    (work / "fakes" / "records" / f"{fake['item_id']}.parquet").unlink()
    (work / "quality" / f"{fake['item_id']}.json").unlink()
    for r in (fake, real):
        (work / "published" / f"{r['video_id']}.parquet").unlink()
        Path(out, r["path"]).unlink()
    Path(out, Path(real["path"]).parent, ".tmp-deadbeef-x.mp4").write_bytes(b"partial")
    mtimes = {vid: Path(out, r["path"]).stat().st_mtime_ns for vid, r in before.items()
              if r["status"] == "ok" and vid not in (fake["video_id"], real["video_id"])}
    summary = run_generate(cfg, out)
    after = {r["video_id"]: r for r in _index(out)}
    assert set(after) == set(before) and len(after) == len(_index(out))
    for vid in (fake["video_id"], real["video_id"]):
        assert after[vid]["status"] == "ok" and Path(out, after[vid]["path"]).is_file()
        assert _sha(Path(out, after[vid]["path"])) == after[vid]["sha256"]
    # a real video's re-encode is deterministic: the same bytes as before the kill
    assert after[real["video_id"]]["sha256"] == before[real["video_id"]]["sha256"]
    # nothing finished was redone
    for vid, t in mtimes.items():
        assert Path(out, before[vid]["path"]).stat().st_mtime_ns == t
    assert summary.merged.get("ok") == 4
    # a rerun with another plan is refused before any work
    with pytest.raises(ValueError, match="another plan"):
        run_generate(_plan(clips, "seed=7"), out)


def test_layouts_dfdc_and_ffpp(dataset, clips, tmp_path):
    """The DFDC and FF++ structures, through the CLI. The earlier stages' work (faceset, models, lossless
    fakes, quality results) is copied from the flat dataset, so these runs only plan, perturb, publish and
    index: the layout is a property of those stages alone."""
    src_out = dataset[0]
    for layout, levels in (("dfdc", "[c23]"), ("ffpp", "[c0, c40]")):
        out = tmp_path / layout
        shutil.copytree(Path(src_out, "_work"), out / "_work", ignore=shutil.ignore_patterns("published"))
        plan = tmp_path / f"{layout}.yaml"
        plan.write_text(json.dumps({"videos": clips, "dataset_id": "test-ds",
                                    "splits": {"train": 1.0, "val": 0.0, "test": 0.0}}))
        extra = [f"perturb.compression={levels}", "perturb.fraction=0.0", "dfdc_part_size=4",
                 "quality.sample_frames=3", "perturb.preset=ultrafast",
                 "merge.vary=[{field: mode, choices: [overlay, seamless]}]", *TINY]
        assert main(["generate", str(plan), "--out", str(out), "--layout", layout, "--no-report", *extra]) == 0
        rows = [r for r in _index(str(out)) if r["status"] == "ok"]
        assert sum(r["label"] == "FAKE" for r in rows) == 4 * len(levels.split(","))
        meta = json.loads((out / "metadata.json").read_text())
        assert {r["name"] for r in rows} == set(meta)
        for r in rows:
            assert (out / r["path"]).is_file()
        if layout == "dfdc":
            parts = sorted(p.name for p in out.iterdir() if p.name.startswith("dfdc_"))
            assert len(parts) >= 2 and all(p.startswith("dfdc_train_part_") for p in parts)
            names = []
            for p in parts:
                part_meta = json.loads((out / p / "metadata.json").read_text())
                names += list(part_meta)
                assert set(part_meta) == {f.name for f in (out / p).glob("*.mp4")}
                assert len(part_meta) <= 4  # dfdc_part_size
                for name, e in part_meta.items():
                    if e["label"] == "FAKE":
                        assert e["original"] in part_meta  # a fake lies in its original's part
                    else:
                        assert "original" not in e
            assert len(names) == len(set(names)) == len(rows)  # names unique across the dataset
        else:
            reals = {r["video_id"]: r for r in rows if r["label"] == "REAL"}
            fakes = [r for r in rows if r["label"] == "FAKE"]
            assert all(r["path"].startswith(f"original_sequences/dflray/{r['compression']}/videos/")
                       for r in reals.values())
            for r in fakes:
                assert r["path"].startswith(f"manipulated_sequences/{r['method']}/{r['compression']}/videos/")
                target, source = Path(r["path"]).stem.split("_")
                assert Path(reals[r["original"]]["path"]).stem == target
                assert r["mask_path"] == f"manipulated_sequences/{r['method']}/masks/videos/{target}_{source}.mp4"
                assert (out / r["mask_path"]).is_file()
                # the source name is a video of the source identity
                assert any(Path(x["path"]).stem == source and x["target_identity"] == r["source_identity"]
                           for x in reals.values())
            assert {r["compression"] for r in rows} == {"c0", "c40"}
            c0 = next(r for r in fakes if r["compression"] == "c0")
            assert encoded_crf(str(out / c0["path"])) == 0.0
