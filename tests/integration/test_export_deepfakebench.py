"""``dflray export-dataset --format deepfakebench`` on the shared generated sample, checked the way
DeepfakeBench's loader (training/dataset/abstract_dataset.py) reads an export: its JSON, frame paths
relative to its working directory, masks and landmarks found by rewriting the frame path."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from dflray.cli import main
from dflray.config import ConfigError, ExportConfig
from dflray.dataset.crops import sample_frames, video_crops
from dflray.dataset.export import run_export
from dflray.dataset.stages.base import work_of
from dflray.faceset import read_faces, video_id

NAME = "test-ds"  # the fixture's dataset id: the default name


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def export(generated_sample, ray_local, tmp_path_factory):
    """The default export, placed where its default root says (DeepfakeBench's ./datasets/rgb/<name>)."""
    bench = tmp_path_factory.mktemp("DeepfakeBench")  # stands for DeepfakeBench's repository root
    out = bench / "datasets" / "rgb" / NAME
    summary = run_export(ExportConfig(), generated_sample, str(out))
    return generated_sample, bench, out, summary


def _index(dataset: str) -> list[dict]:
    rows = pq.read_table(os.path.join(dataset, "index.parquet")).to_pylist()
    return [r for r in rows if r["status"] == "ok" and r["compression"] == "c23"]


def _candidates(dataset: str) -> dict[str, int]:
    """Per published video, the frames it can give: with a face in the faceset, and for a fake, swapped
    (a mask box in frames.parquet)."""
    faces = read_faces(os.path.join(work_of(dataset), "faceset"), columns=["video_id", "frame_index"]).to_pylist()
    swapped = pq.read_table(os.path.join(dataset, "frames.parquet")).to_pylist()
    out = {}
    for row in _index(dataset):
        vid = video_id(row["source_uri"])
        frames = {f["frame_index"] for f in faces if f["video_id"] == vid}
        if row["label"] == "FAKE":
            frames &= {r["frame_index"] for r in swapped if r["video_id"] == row["video_id"] and r["bbox"] is not None}
        out[row["video_id"]] = len(frames)
    return out


def test_deepfakebench_reads_every_frame_mask_and_landmark(export, monkeypatch):
    dataset, bench, out, summary = export
    rows = {r["video_id"]: r for r in _index(dataset)}
    assert summary.videos == len(rows) >= 8 and summary.exported == len(rows) and not summary.failures, summary
    assert json.loads((out / "errors.json").read_text()) == []

    fragment = yaml.safe_load((out / "deepfakebench.yaml").read_text())
    label_dict = yaml.safe_load((out / "label_dict.yaml").read_text())["label_dict"]
    assert label_dict == {f"{NAME}_real": 0, f"{NAME}_fake": 1} == fragment["label_dict"]
    assert fragment["lmdb"] is False and fragment["train_dataset"] == fragment["test_dataset"] == [NAME]
    assert fragment["frame_num"] == {"train": 32, "test": 32} and fragment["resolution"] == 256
    # DeepfakeBench runs from its repository root and opens dataset_json_folder/<name>.json
    monkeypatch.chdir(bench)
    info = json.loads((Path(fragment["dataset_json_folder"]) / f"{NAME}.json").read_text())
    assert list(info) == [NAME] and set(info[NAME]) == set(label_dict)
    candidates, seen = _candidates(dataset), set()
    for label, by_split in info[NAME].items():
        assert set(by_split) == {"train", "val", "test"}
        for split, videos in by_split.items():
            for vid, entry in videos.items():
                seen.add(vid)
                row = rows[vid]
                assert entry["label"] == label and label in label_dict
                assert label_dict[label] == (row["label"] == "FAKE") and split == row["split"]
                paths = entry["frames"]
                assert all(p.startswith(".") for p in paths)  # opened as they are, not under rgb_dir
                ordered = sorted(paths, key=lambda x: int(x.split("/")[-1].split(".")[0]))
                assert ordered == paths
                assert len(paths) == min(32, candidates[vid]) > 0
                for p in paths:
                    assert p.count("frames") == 1 and p.endswith(".png") and p.count(".png") == 1
                    img = cv2.imread(p, cv2.IMREAD_UNCHANGED)
                    assert img is not None and img.shape == (256, 256, 3) and img.dtype == np.uint8
                    mask = cv2.imread(p.replace("frames", "masks"), cv2.IMREAD_UNCHANGED)
                    assert mask is not None and mask.shape == (256, 256)  # one grey channel
                    assert set(np.unique(mask)) <= {0, 255}
                    if row["label"] == "FAKE":
                        assert mask.any(), f"{p}: a fake's frame with an empty mask"
                    else:
                        assert not mask.any()
                    lm = np.load(p.replace("frames", "landmarks").replace(".png", ".npy"))
                    assert lm.shape == (81, 2) and lm.dtype == np.float32
                    assert lm.min() >= 0 and lm.max() < 256
    assert seen == set(rows)


def test_files_are_the_sampler_s_crops(export):
    dataset, bench, out, _ = export
    rows = _index(dataset)
    for row in (next(r for r in rows if r["label"] == "REAL"), next(r for r in rows if r["label"] == "FAKE")):
        crops = video_crops(dataset, row)
        record = json.loads((out / "records" / f"{row['video_id']}.json").read_text())
        assert record["frame_indices"] == crops.frame_indices.tolist()
        for k, f in enumerate(crops.frame_indices.tolist()):
            png = cv2.imread(str(out / "frames" / row["video_id"] / f"{f:03d}.png"))
            assert np.array_equal(png[..., ::-1], crops.images[k])  # RGB in the PNG, as cv2 writes BGR
            lm = np.load(out / "landmarks" / row["video_id"] / f"{f:03d}.npy")
            assert np.array_equal(lm, crops.landmarks[k])
            mask = cv2.imread(str(out / "masks" / row["video_id"] / f"{f:03d}.png"), cv2.IMREAD_UNCHANGED)
            assert np.array_equal(mask > 0, crops.masks[k] > 1)


def test_rerun_is_a_no_op_with_identical_bytes(export):
    dataset, _, out, _ = export
    before = _hashes(out)
    again = run_export(ExportConfig(), dataset, str(out))
    assert again.exported == 0 and again.skipped == again.videos and not again.failures
    assert _hashes(out) == before


def test_fewer_frames_are_evenly_spaced_over_the_same_candidates(export, tmp_path):
    dataset, bench, out, _ = export
    small = run_export(ExportConfig(frames=5, name="sample5", splits=("train",)), dataset, str(tmp_path / "s5"))
    assert small.exported == small.videos > 0
    info = json.loads((tmp_path / "s5" / "sample5.json").read_text())["sample5"]
    full = {v: json.loads((out / "records" / f"{v}.json").read_text())["frame_indices"]
            for v in (p.stem for p in (out / "records").glob("*.json"))}
    for by_split in info.values():
        for vid, entry in by_split["train"].items():
            assert all(p.startswith("./datasets/rgb/sample5/frames/") for p in entry["frames"])
            got = [int(p.rsplit("/", 1)[1][:-4]) for p in entry["frames"]]
            assert got == sample_frames(full[vid], 5) and len(got) == min(5, len(full[vid]))


def test_bad_options_fail_before_work_naming_the_field(export, tmp_path, capsys):
    dataset = export[0]
    with pytest.raises(ConfigError, match="^compression"):
        run_export(ExportConfig(compression="c40"), dataset, str(tmp_path / "c40"))
    with pytest.raises(ConfigError, match="^name"):
        ExportConfig(name="myframes")
    with pytest.raises(ConfigError, match="^root"):
        ExportConfig(root="/abs/path")
    with pytest.raises(ConfigError, match="^name"):
        ExportConfig(name="FF-DF")
    assert not (tmp_path / "c40").exists()
    with pytest.raises(SystemExit) as e:
        main(["export-dataset", dataset, "--format", "deepfakebench", "--out", str(tmp_path / "cli"), "frames=0"])
    assert e.value.code == 2 and "frames" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()
    # another export's settings into the same folder are refused
    with pytest.raises(ValueError, match="other settings"):
        run_export(ExportConfig(frames=8), dataset, str(export[2]))
