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
import yaml

from dflray.cli import main
from dflray.config import GenerateConfig, load_config
from dflray.dataset.perturb import encoded_crf
from dflray.dataset.pipeline import run_generate
from tests.integration.conftest import TINY_GENERATE, generated_plan
from tests.media import shared_media

TINY = TINY_GENERATE


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def clips(generated):
    """The sample's four clips and a broken file (the generated sample's)."""
    return generated.clips


def _plan(clips, *extra) -> GenerateConfig:
    return generated_plan(clips, *extra)


@pytest.fixture(scope="module")
def dataset(ray_local, generated):
    """The generated sample (tests/integration/conftest.py): a first run SIGKILLed once its first fake was
    merged, finished by a rerun."""
    return generated.out, generated.cfg, generated.summary, generated.state


def _index(out):
    return pq.read_table(os.path.join(out, "index.parquet")).to_pylist()


def test_plan_identities_and_splits(dataset, clips):
    out, cfg, summary, _ = dataset
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


def test_killed_run_resumes_without_redoing_work(dataset):
    out, cfg, summary, state = dataset
    assert not state["finished_first"], "the first run ended before it was killed:\n" + state["log"]
    assert not state["index_at_kill"] and 1 <= state["merged_at_kill"] <= 4
    # the rerun reused the faceset, the pretrained base and the two models (their commit files were not
    # rewritten)
    assert len(state["models"]) == 3 and len(state["faceset"]) >= 1
    for p, t in {**state["models"], **state["faceset"]}.items():
        assert p.stat().st_mtime_ns == t, p
    assert summary.merged == {"ok": 4} and summary.published == {"ok": 16, "error": 2}
    rows = _index(out)
    assert len({r["video_id"] for r in rows}) == len(rows) == 18
    assert len(list(Path(f"{out}.work", "fakes", "videos").glob("*.mp4"))) == 4  # no duplicate fakes
    assert json.loads(Path(out, "generate.json").read_text())["work"] == f"{out}.work"
    assert not list(Path(out).rglob(".tmp-*"))  # no temporary file left behind


def test_index_metadata_and_files_agree(dataset):
    out, cfg, summary, _ = dataset
    rows = _index(out)
    meta = json.loads(Path(out, "labels.json").read_text())
    ok = [r for r in rows if r["status"] == "ok"]
    xseg_modes = {}
    assert {r["name"] for r in ok} == set(meta)
    # the published root holds the layout and the tables only: every video is an indexed one or its mask,
    # and the one metadata.json is the videos folder's (Kaggle's DFDC sample folder), keyed by file name
    assert {p.relative_to(out).as_posix() for p in Path(out).rglob("*.mp4")} == \
        {r["path"] for r in ok} | {r["mask_path"] for r in ok if r["mask_path"]}
    assert [p.relative_to(out).as_posix() for p in Path(out).rglob("metadata.json")] == ["videos/metadata.json"]
    assert json.loads(Path(out, "videos", "metadata.json").read_text()) == meta
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
            xseg_modes[r["mask_mode"]] = r["xseg_id"]
        else:
            assert meta[r["name"]]["original"] is None and r["mask_path"] is None
        # the container's CRF is the row's: the compression level, or a compression distortion's
        crf = encoded_crf(str(path))
        assert crf == pytest.approx(r["crf"])
        assert r["crf"] >= {"c0": 0, "c23": 23}[r["compression"]]
    # the XSeg mask mode's fakes name the XSeg model, the others none. Which modes the 4 fakes draw depends
    # on their seeds, which derive from the clips' paths (a new temporary folder each run): all four can
    # draw the same mode (1 run in 8), so only the pairing of mode and model is checked.
    want = {"learned-prd*learned-dst": None, "XSeg-prd*XSeg-dst": _sha(Path(out).parent / "xseg.pt")}
    assert xseg_modes and all(want[mode] == xseg_id for mode, xseg_id in xseg_modes.items()), xseg_modes
    # every video was perturbed (fraction 1.0), and a video's two compression levels share the draw
    assert all(r["perturbation"] != "none" for r in ok)
    by_item = {}
    for r in ok:
        by_item.setdefault(r["item_id"], set()).add(r["perturbation"])
    assert all(len(v) == 1 for v in by_item.values())


def test_quality_metrics_filled_and_gated(dataset):
    out, cfg, summary, _ = dataset
    fakes = [r for r in _index(out) if r["label"] == "FAKE" and r["status"] == "ok"]
    for r in fakes:
        for m in ("id_distance_source", "id_distance_target", "pose_error", "expression_error", "flicker", "seam",
                  "detail"):
            assert r[m] is not None and np.isfinite(r[m]), (m, r[m])
        # pose_error <= 0.001 degrees is a gate no real swap passes: every fake is flagged and says why
        assert r["quality_pass"] is False and "pose_error" in r["quality_reasons"]


def test_frames_table_references_masks(dataset):
    out, cfg, summary, _ = dataset
    frames = pq.read_table(os.path.join(out, "frames.parquet")).to_pylist()
    fakes = {r["video_id"]: r for r in _index(out) if r["label"] == "FAKE" and r["status"] == "ok"}
    assert {f["video_id"] for f in frames} == set(fakes)
    for vid, r in fakes.items():
        mine = [f for f in frames if f["video_id"] == vid]
        assert len(mine) == r["frames"] and all(f["mask_path"] == r["mask_path"] for f in mine)
        assert sum(f["faces_swapped"] > 0 for f in mine) == r["frames_swapped"] > 0


def test_report_written(dataset, tmp_path):
    out, _, _, _ = dataset
    html = Path(out, "report.html").read_text()
    assert "<table" in html and "FAKE" in html
    fakes = [r for r in _index(out) if r["label"] == "FAKE" and r["status"] == "ok"]
    assert all(f'data-video-id="{r["video_id"]}"' in html for r in fakes)
    # and again through the CLI, on the finished dataset
    assert main(["report", out, "--out", str(tmp_path / "r.html"), "--max-rows", "3"]) == 0
    again = (tmp_path / "r.html").read_text()
    assert again.count("data-video-id=") == 3


def test_rerun_after_kill_finishes_without_duplicates(dataset, clips):
    out, cfg, _, _ = dataset
    before = {r["video_id"]: r for r in _index(out)}
    work = Path(f"{out}.work")
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
    assert not list(Path(out).rglob(".tmp-*"))  # the temporary file is swept
    # a real video's re-encode is deterministic: the same bytes as before the kill
    assert after[real["video_id"]]["sha256"] == before[real["video_id"]]["sha256"]
    # nothing finished was redone
    for vid, t in mtimes.items():
        assert Path(out, before[vid]["path"]).stat().st_mtime_ns == t
    assert summary.merged.get("ok") == 4
    # a rerun with another plan is refused before any work
    with pytest.raises(ValueError, match="another plan"):
        run_generate(_plan(clips, "seed=7"), out)


def test_models_fine_tune_from_one_pretrained_base(dataset):
    """models.base=pretrain: one base trained on the train split's faces, and every model starts at step 0
    from exactly its weights (parameter checksums)."""
    import yaml

    from tests.integration.test_train import param_checksum_of

    work = Path(f"{dataset[0]}.work", "models")
    base = json.loads((work / "_base" / "model.json").read_text())
    assert base["ok"] and base["steps"] == 4
    base_sum = param_checksum_of(base["checkpoint"])
    models = [d for d in work.iterdir() if d.name != "_base"]
    assert len(models) == 2
    for d in models:
        trained = yaml.safe_load((d / "train" / "train_config.yaml").read_text())
        doc = json.loads((d / "model.json").read_text())
        assert trained["config"]["init_from"] == base["checkpoint"]
        assert doc["start_checksum"] == base_sum and doc["steps"] == 6


def test_xseg_mask_modes_need_a_usable_xseg_model_before_any_work(clips, tmp_path):
    from dflray.config import ConfigError

    mode = "merge.settings.mask_mode=XSeg-dst"
    with pytest.raises(ConfigError, match="^merge.xseg:"):
        _plan(clips, mode)
    out = tmp_path / "ds"
    with pytest.raises(ValueError, match="^merge.xseg: .*not an XSeg model"):
        run_generate(_plan(clips, mode, f"merge.xseg={tmp_path / 'missing.pt'}"), str(out))
    assert not out.exists()


def test_layouts_dfdc_and_ffpp(dataset, clips, tmp_path):
    """The DFDC and FF++ structures, through the CLI, checked the way detector code reads them
    (tests/readers.py). The earlier stages' work (faceset, models, lossless fakes, quality results) is
    copied from the flat dataset's work location into another one given by --work, so these runs only
    plan, perturb, publish and index: the layout is a property of those stages alone."""
    from tests.readers import dfdc_read, ffpp_read

    src_out = dataset[0]
    # dfdc also drops the fakes whose swap is farther from the source identity than the median
    flat_fakes = {r["item_id"]: r for r in _index(src_out) if r["label"] == "FAKE" and r["status"] == "ok"}
    limit = float(np.median([r["id_distance_source"] for r in flat_fakes.values()]))
    to_drop = {i for i, r in flat_fakes.items() if r["id_distance_source"] > limit}
    assert 0 < len(to_drop) < 4
    gates = {"dfdc": [f"quality.gates=[{{metric: id_distance_source, max: {limit!r}}}]", "quality.action=drop",
                      "dfdc_part_size=4"],
             "ffpp": ["ffpp_numeric_names=true"]}
    for layout, levels in (("dfdc", "[c23]"), ("ffpp", "[c0, c40]")):
        out, work = tmp_path / layout, tmp_path / "work" / layout
        shutil.copytree(f"{src_out}.work", work, ignore=shutil.ignore_patterns("published"))
        plan = tmp_path / f"{layout}.yaml"
        plan.write_text(json.dumps({"videos": clips, "dataset_id": "test-ds",
                                    "splits": {"train": 1.0, "val": 0.0, "test": 0.0}}))
        extra = [f"perturb.compression={levels}", "perturb.fraction=0.0",
                 "quality.sample_frames=3", "perturb.preset=ultrafast",
                 "merge.vary=[{field: mode, choices: [overlay, seamless]}]", *TINY, *gates[layout]]
        assert main(["generate", str(plan), "--out", str(out), "--work", str(work), "--layout", layout,
                     "--no-report", *extra]) == 0
        everything = _index(str(out))
        rows = [r for r in everything if r["status"] == "ok"]
        dropped = [r for r in everything if r["status"] == "dropped"]
        if layout == "dfdc":
            assert {r["item_id"] for r in dropped} == to_drop
            for r in dropped:
                assert not (out / r["path"]).exists() and "id_distance_source" in r["quality_reasons"]
                assert r["quality_pass"] is False and "quality gates" in r["error"]
            assert all(r["quality_pass"] for r in rows if r["label"] == "FAKE")
        else:
            assert not dropped
        assert sum(r["label"] == "FAKE" for r in rows) == (4 - len(dropped)) * len(levels.split(","))
        meta = json.loads((out / "labels.json").read_text())
        assert {r["name"] for r in rows} == set(meta)
        assert not (out / "metadata.json").exists() and not (out / "_work").exists()
        for r in rows:
            assert (out / r["path"]).is_file()
        if layout == "dfdc":
            # a DFDC reader: every metadata.json under the root, the part from its folder's name
            seen = dfdc_read(out)
            assert sorted(str(x["path"].relative_to(out)) for x in seen) == sorted(r["path"] for r in rows)
            assert {x["path"].suffix for x in seen} == {".mp4"} and all(x["path"].is_file() for x in seen)
            parts = sorted({int(x["part"]) for x in seen})
            assert parts == list(range(len(parts))) and len(parts) >= 2  # numbered from 0, no gaps
            folders = {x["path"].parent.name for x in seen}
            assert all(f.startswith("dfdc_train_part_") for f in folders)
            by_name = {x["name"]: x for x in seen}
            assert len(by_name) == len(seen) == len(rows)  # names unique across the dataset
            for x in seen:
                assert sum(y["part"] == x["part"] for y in seen) <= 4  # dfdc_part_size
                if x["label"] == "FAKE":
                    assert by_name[x["original"]]["part"] == x["part"]  # a fake lies in its original's part
                else:
                    assert x["original"] is None
        else:
            seen = ffpp_read(out)
            assert not seen["other"], seen["other"]  # no working copy looks like a real video
            reals = {r["video_id"]: r for r in rows if r["label"] == "REAL"}
            fakes = [r for r in rows if r["label"] == "FAKE"]
            assert sorted(str(p.relative_to(out)) for p in seen["original"]) == sorted(r["path"] for r in reals.values())
            assert sorted(str(p.relative_to(out)) for p in seen["fake"]) == sorted(r["path"] for r in fakes)
            assert sorted(str(p.relative_to(out)) for p in seen["mask"]) == sorted({r["mask_path"] for r in fakes})
            numbers = sorted({Path(r["path"]).stem for r in reals.values()})
            # FF++'s numeric names, one per planned real video (the broken file's number goes unused)
            assert len(numbers) == 4 and set(numbers) <= {f"{i:03d}" for i in range(5)}
            for r in fakes:
                target, source = Path(r["path"]).stem.split("_")
                assert Path(reals[r["original"]]["path"]).stem == target
                assert r["mask_path"] == f"manipulated_sequences/{r['method']}/masks/videos/{target}_{source}.mp4"
                # the source name is a video of the source identity
                assert any(Path(x["path"]).stem == source and x["target_identity"] == r["source_identity"]
                           for x in reals.values())
            # FF++'s split files: [target, source] pairs; each pair is a fake of that split and both names
            # are real videos of it
            for split in ("train", "val", "test"):
                pairs = json.loads((out / "splits" / f"{split}.json").read_text())
                in_split = [r for r in fakes if r["split"] == split]
                assert sorted(map(tuple, pairs)) == sorted({tuple(Path(r["path"]).stem.split("_")) for r in in_split}) and \
                    all(isinstance(p, list) for p in pairs)
                split_reals = {Path(r["path"]).stem for r in reals.values() if r["split"] == split}
                assert {n for p in pairs for n in p} <= split_reals
            assert json.loads((out / "splits" / "train.json").read_text())  # the sample's fakes are all in train
            assert {r["compression"] for r in rows} == {"c0", "c40"}
            c0 = next(r for r in fakes if r["compression"] == "c0")
            assert encoded_crf(str(out / c0["path"])) == 0.0


SEVEN = ("liae", "quick96", "amp", "landmark-warp", "sbi", "xray-blend", "onnx-swap")


def test_a_plan_faking_every_video_with_seven_methods(dataset, clips, tmp_path):
    """Every real video faked once by each of seven methods (``fakes_per_video`` per method, FaceForensics++'s
    design), in the FF++ layout: one manipulated_sequences/<method>/ folder per method; the method, its
    version and settings in the index, labels.json and the files' tags; a by-method table in the report;
    and the DeepfakeBench export's per-method datasets. The flat dataset's faceset and models are reused
    (copied into this run's --work): its liae models serve the liae fakes unchanged; quick96 trains its
    own fixed model (df-ud at 96 px on full faces) and amp the plan's model as AMP (from scratch: the
    pretrained liae base does not fit it), merged at morph_factor 0.75; onnx-swap runs tiny ONNX models
    made here; a quality gate for amp alone flags only the amp fakes."""
    from tests.readers import ffpp_read
    from tests.tiny_swapper import write_tiny_swapper

    src_out = dataset[0]
    out, work = tmp_path / "mixed", tmp_path / "mixed.work"
    shutil.copytree(f"{src_out}.work", work, ignore=shutil.ignore_patterns("published", "fakes", "quality"))
    before = sorted(p.parent.name for p in (work / "models").glob("*/model.json"))
    plan = tmp_path / "mixed.yaml"
    methods = [{"name": n, "fakes_per_video": 1} for n in SEVEN]
    methods[2]["settings"] = {"morph_factor": 0.75}
    methods[6]["settings"] = write_tiny_swapper(str(tmp_path / "swapper"))
    plan.write_text(json.dumps({"videos": clips, "dataset_id": "test-mixed",
                                "splits": {"train": 1.0, "val": 0.0, "test": 0.0}, "methods": methods}))
    extra = ["perturb.compression=[c23]", "perturb.fraction=0.0", "perturb.preset=ultrafast", *TINY,
             "quality.sample_frames=2", "models.base=pretrain", "models.pretrain_steps=4",
             # two Ray Train runs at a time: their few steps draw samples in the workers (data=auto), so
             # no data tasks starve (with Ray Data pipelines two at once took 4.5 min against 1 min alone)
             "models.concurrency=2",
             "models.train.model.inter_dims=64",  # AMP's inter heads at the tiny model's scale (DFL's 1024: 8x more)
             "merge.vary=[{field: mode, choices: [overlay, seamless]}]",
             "quality.gates=[{metric: seam, max: 0.0, methods: [amp]}]"]  # a gate for the amp fakes only
    assert main(["generate", str(plan), "--out", str(out), "--work", str(work), "--layout", "ffpp", *extra]) == 0
    rows = _index(str(out))
    reals = [r for r in rows if r["label"] == "REAL" and r["status"] == "ok"]  # (the broken clip: an error row)
    fakes = [r for r in rows if r["label"] == "FAKE"]
    assert all(r["status"] == "ok" for r in fakes), [(r["method"], r["error"]) for r in fakes]
    assert len(reals) == 4 and len(fakes) == 4 * len(SEVEN)
    published = {f"dflray-{n}" for n in SEVEN} - {"dflray-liae"} | {"dflray-liae-ud"}
    assert {r["method"] for r in fakes} == published
    plan_rows = {r["item_id"]: r for r in pq.read_table(out / "plan.parquet").to_pylist()}
    for r in reals:  # every video once by every method, all from the same source identity
        mine = [f for f in fakes if plan_rows[f["item_id"]]["video_id"] == r["item_id"]]  # a real's item: its video
        assert sorted(f["method"] for f in mine) == sorted(published), r["item_id"]
        assert len({f["source_identity"] for f in mine}) == 1
    labels = json.loads((out / "labels.json").read_text())
    seen = ffpp_read(out)
    assert sorted(str(p.relative_to(out)) for p in seen["fake"]) == sorted(r["path"] for r in fakes)
    for r in fakes:
        name = plan_rows[r["item_id"]]["method"]
        assert r["path"].startswith(f"manipulated_sequences/{r['method']}/c23/videos/")
        assert r["method_version"] == 1 and r["swap_success"] is not None and r["frames_swapped"] > 0
        settings = json.loads(r["method_settings"])
        assert (settings == {}) == (name in ("liae", "quick96"))  # every other method records all its settings
        assert labels[r["name"]]["method"] == r["method"] and labels[r["name"]]["method_version"] == 1
        with av.open(str(out / r["path"])) as c:
            tags = dict(c.metadata)
        assert tags["dflray_method"] == r["method"] and json.loads(tags["dflray_method_settings"]) == settings
        assert len(r["model_id"]) == 64  # a model's checksum, or a method's id (name, version, settings)
        assert r["arch"] == {"quick96": "df-ud", "amp": "amp", "liae": "liae-ud"}.get(name, name)
        if name == "amp":
            assert settings == {"morph_factor": 0.75}
        assert r["quality_pass"] is (name != "amp") and ("seam " in r["quality_reasons"]) is (name == "amp")
    after = sorted(p.parent.name for p in (work / "models").glob("*/model.json"))
    new = sorted(set(after) - set(before))
    assert set(before) <= set(after)  # the liae models are reused; quick96 and amp train their own
    assert sorted(k.rsplit("-", 1)[1] for k in new) == ["amp", "amp", "quick96", "quick96"]
    for k in new:
        trained = json.loads((work / "models" / k / "model.json").read_text())["contract"]
        want = ("df-ud", 96, "full") if k.endswith("-quick96") else ("amp", 64, "full")  # the plan's model as AMP
        assert (trained["arch"], trained["resolution"], trained["face_type"]) == want, k
    report = (out / "report.html").read_text()
    for m in published:
        assert f'data-method="{m}" data-status="ok">4<' in report
    # DeepfakeBench: besides the whole, one dataset per method (the reals and that method's fakes)
    dfb = tmp_path / "dfb"
    assert main(["export-dataset", str(out), "--format", "deepfakebench", "--out", str(dfb), "frames=2", "size=64"]) == 0
    labels = yaml.safe_load((dfb / "label_dict.yaml").read_text())["label_dict"]
    for m in published:
        short = m.removeprefix("dflray-")
        (doc,) = json.loads((dfb / f"test-mixed-{short}.json").read_text()).values()
        assert set(doc) == {"test-mixed_real", f"test-mixed_{short}"} and labels[f"test-mixed_{short}"] == 1
        assert sum(len(v) for v in doc[f"test-mixed_{short}"].values()) == 4
        assert sum(len(v) for v in doc["test-mixed_real"].values()) == len(reals)


@pytest.mark.media
def test_shared_media_two_real_people(ray_local, tmp_path):
    """Real footage: two men (../shared/media), a CSV manifest with identity labels and an attribute,
    pairing within the group, every third frame extracted (the merge fills the gaps), audio kept; the two
    fakes made by the training-free methods landmark-warp and xray-blend (no model trained); and
    ``dflray evaluate`` on the result."""
    a, b = shared_media("src_man_a.mp4"), shared_media("dst_man_glasses_b.mp4")
    manifest = tmp_path / "real.csv"
    manifest.write_text(f"uri,identity,gender\n{a},man_a,m\n{b},man_b,m\n")
    cfg = load_config(GenerateConfig, overrides=[
        f"manifest={manifest}", "splits={train: 1.0, val: 0.0, test: 0.0}", "pairing.policy=group",
        "pairing.group_by=gender", "extract.decode.every_n=3", "perturb.compression=[c23]",
        "perturb.fraction=0.0", "perturb.preset=ultrafast", "quality.sample_frames=4",
        "merge.settings.mode=seamless", "methods=[{name: landmark-warp, share: 0.5}, {name: xray-blend, share: 0.5}]",
        *TINY])
    out = tmp_path / "ds"
    summary = run_generate(cfg, str(out), report=False)
    assert summary.models == 0 and summary.models_failed == 0
    rows = _index(str(out))
    assert all(r["status"] == "ok" for r in rows) and len(rows) == 4
    assert sorted(r["method"] for r in rows if r["label"] == "FAKE") == ["dflray-landmark-warp", "dflray-xray-blend"]
    by_id = {r["video_id"]: r for r in rows}
    for r in rows:
        facts = {"frames": 216 if r["source_uri"] == a else 250}
        assert r["frames"] == facts["frames"] and r["has_audio"]
        with av.open(str(out / r["path"])) as c:
            assert c.streams.audio and c.streams.video[0].frames in (0, facts["frames"])
        if r["label"] == "FAKE":
            assert {r["source_identity"], r["target_identity"]} == {"man_a", "man_b"}
            assert by_id[r["original"]]["source_uri"] == r["source_uri"]
            # gaps between extracted frames are filled: (nearly) every frame has its face swapped
            assert r["frames_swapped"] >= 0.9 * r["frames"]
            for m in ("id_distance_source", "id_distance_target", "pose_error", "expression_error", "flicker", "seam",
                      "detail"):
                assert r[m] is not None and np.isfinite(r[m])
            # the swap sits on the destination's face: landmarks re-found in the fake agree in pose
            assert r["pose_error"] < 15
    # dflray evaluate on real footage: the reference detector trained on one man's real and fake video and
    # tested on the other's (a within-split holdout: this dataset has one split)
    from tests.integration.test_evaluate import SMALL, _check_results, _results

    assert main(["evaluate", str(out), *SMALL, "--no-report"]) == 0
    results = _results(str(out))
    _check_results(results)
    assert results[0]["protocol"] == "holdout" and results[0]["test_videos"] == 2
