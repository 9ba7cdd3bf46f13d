"""Dataset layouts (flat, DFDC, FF++), metadata.json, model grouping and the generate config."""

from __future__ import annotations

import json

import pytest

from dflray.config import ConfigError, GenerateConfig, load_config
from dflray.dataset import layout as lay
from dflray.dataset.pipeline import _config_key, _model_key, model_jobs


def test_short_id_is_stable_letters_and_distinct():
    ids = {lay.short_id(f"item{i}", c) for i in range(2000) for c in ("c0", "c23")}
    assert len(ids) == 4000
    a = lay.short_id("x", "c23")
    assert a == lay.short_id("x", "c23") and len(a) == 10 and a.isalpha() and a.islower()


def test_place_flat_and_dfdc():
    f = lay.place("flat", label="FAKE", split="train", compression="c23", video_id="abc", item_name="itm")
    assert f == {"path": "videos/abc.mp4", "mask_path": "masks/itm.mp4", "name": "abc.mp4"}
    r = lay.place("dfdc", label="REAL", split="test", compression="c23", video_id="abc", item_name="itm", part=3)
    assert r == {"path": "dfdc_test_part_3/abc.mp4", "mask_path": None, "name": "abc.mp4"}


def test_place_ffpp():
    kw = dict(split="train", video_id="v", item_name="i", real_name="tgt", source_name="src", method="dflray-liae-ud")
    fake = lay.place("ffpp", label="FAKE", compression="c40", **kw)
    assert fake["path"] == "manipulated_sequences/dflray-liae-ud/c40/videos/tgt_src.mp4"
    assert fake["mask_path"] == "manipulated_sequences/dflray-liae-ud/masks/videos/tgt_src.mp4"
    real = lay.place("ffpp", label="REAL", compression="c0", ffpp_source="youtube", **kw)
    assert real["path"] == "original_sequences/youtube/c0/videos/tgt.mp4" and real["mask_path"] is None
    assert real["name"] == real["path"]  # names repeat across levels: the key is the path
    with pytest.raises(ValueError, match="layout"):
        lay.place("zip", label="REAL", compression="c0", **kw)


def test_dfdc_parts_fill_and_keep_fakes_with_originals():
    parts = lay.dfdc_parts({"train": [f"r{i}" for i in range(7)], "test": ["t0", "t1"]}, videos_per_real=3,
                           part_size=6)
    assert [parts[f"r{i}"] for i in range(7)] == [0, 0, 1, 1, 2, 2, 3]
    assert parts["t0"] == parts["t1"] == 0


def test_metadata_files_dfdc_format():
    rows = [
        {"name": "a.mp4", "path": "dfdc_train_part_0/a.mp4", "label": "REAL", "split": "train", "status": "ok"},
        {"name": "b.mp4", "path": "dfdc_train_part_0/b.mp4", "label": "FAKE", "split": "train", "status": "ok",
         "original_name": "a.mp4"},
        {"name": "c.mp4", "path": "dfdc_val_part_0/c.mp4", "label": "REAL", "split": "val", "status": "ok"},
        {"name": "d.mp4", "path": "dfdc_val_part_0/d.mp4", "label": "FAKE", "split": "val", "status": "dropped",
         "original_name": "c.mp4"},
    ]
    docs = lay.metadata_files("dfdc", rows)
    assert docs["metadata.json"] == {"a.mp4": {"label": "REAL", "split": "train"},
                                     "b.mp4": {"label": "FAKE", "split": "train", "original": "a.mp4"},
                                     "c.mp4": {"label": "REAL", "split": "val"}}
    assert set(docs) == {"metadata.json", "dfdc_train_part_0/metadata.json", "dfdc_val_part_0/metadata.json"}
    assert set(docs["dfdc_val_part_0/metadata.json"]) == {"c.mp4"}
    assert json.loads(lay.dumps(docs["metadata.json"])) == docs["metadata.json"]
    assert set(lay.metadata_files("flat", rows)) == {"metadata.json"}


def test_model_jobs_per_source_and_pair():
    plan = [{"kind": "REAL", "video_id": v, "identity": i} for v, i in
            (("a1", "A"), ("a2", "A"), ("b1", "B"), ("c1", "C"))]
    fakes = [("a1", "A", "B"), ("a2", "A", "B"), ("b1", "B", "A"), ("c1", "C", "A")]
    per_source = plan + [{"kind": "FAKE", "video_id": v, "identity": t, "source_identity": s,
                          "model_key": _model_key(s, None)} for v, t, s in fakes]
    jobs = model_jobs(per_source)
    assert jobs == {_model_key("B", None): (["b1"], ["a1", "a2"]), _model_key("A", None): (["a1", "a2"], ["b1", "c1"])}
    per_pair = plan + [{"kind": "FAKE", "video_id": v, "identity": t, "source_identity": s,
                        "model_key": _model_key(s, t)} for v, t, s in fakes]
    jobs = model_jobs(per_pair)
    assert len(jobs) == 3 and jobs[_model_key("A", "C")] == (["a1", "a2"], ["c1"])
    assert _model_key("a/b", None) != _model_key("a_b", None)  # sanitised names cannot collide


def _cfg(*extra):
    return load_config(GenerateConfig, overrides=["videos=[a.mp4]", *extra])


def test_generate_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="^videos: give either videos or manifest"):
        load_config(GenerateConfig, overrides=[])
    with pytest.raises(ConfigError, match="^layout: dfdc holds one version"):
        _cfg("layout=dfdc", "perturb.compression=[c0, c23]")
    with pytest.raises(ConfigError, match="^splits.train: train \\+ val \\+ test must be 1"):
        _cfg("splits.train=0.5")
    with pytest.raises(ConfigError, match="^pairing.group_by"):
        _cfg("pairing.policy=group")
    with pytest.raises(ConfigError, match="^perturb.compression\\[0\\]"):
        _cfg("perturb.compression=[c10]")
    with pytest.raises(ConfigError, match="^perturb.levels"):
        _cfg("perturb.levels=[0]")
    with pytest.raises(ConfigError, match="^quality.gates\\[0\\].metric"):
        _cfg("quality.gates=[{metric: beauty, max: 1}]")
    with pytest.raises(ConfigError, match="^models.train.init_from"):
        _cfg("models.train.init_from=x")


def test_config_key_ignores_resources_only():
    a = _config_key(_cfg())
    assert a == _config_key(_cfg("models.concurrency=8", "models.train.num_workers=2", "merge.predict.num_gpus=1"))
    assert a != _config_key(_cfg("seed=3"))
    assert a != _config_key(_cfg("merge.settings.erode=5"))
