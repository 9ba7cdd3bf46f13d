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
    # numbered once across the splits, train first (DFDC's parts 0-49 are unique over the whole set)
    assert parts["t0"] == parts["t1"] == 4


def test_dfdc_auto_part_size_fits_fifty_parts():
    for n_train, n_val, n_test in ((3, 1, 1), (40, 5, 5), (700, 150, 150), (9999, 1, 1)):
        by_split = {"test": [f"s{i}" for i in range(n_test)], "val": [f"v{i}" for i in range(n_val)],
                    "train": [f"t{i}" for i in range(n_train)]}
        parts = lay.dfdc_parts(by_split, videos_per_real=2)
        used = sorted(set(parts.values()))
        assert used == list(range(len(used))) and len(used) <= 50  # 0..k-1, no gaps, at most 50
        # train first, then val, then test; a part holds one split only
        assert max(parts[f"t{i}"] for i in range(n_train)) < min(parts[f"v{i}"] for i in range(n_val))
        assert max(parts[f"v{i}"] for i in range(n_val)) < min(parts[f"s{i}"] for i in range(n_test))
    small = lay.dfdc_parts({"train": ["a", "b"], "test": ["c"]}, videos_per_real=2)
    assert small == {"a": 0, "b": 1, "c": 2}  # a small plan: one real video (and its fakes) per part
    # a given part size may number past 50, but never past what 8 bits hold
    many = lay.dfdc_parts({"train": [f"r{i}" for i in range(120)]}, videos_per_real=2, part_size=2)
    assert max(many.values()) == 119
    with pytest.raises(ValueError, match="dfdc_part_size"):
        lay.dfdc_parts({"train": [f"r{i}" for i in range(300)]}, videos_per_real=2, part_size=2)


def test_ffpp_numbers_three_digits_then_more():
    assert lay.ffpp_numbers({"test": ["c"], "train": ["b", "a"]}) == {"b": "000", "a": "001", "c": "002"}
    big = lay.ffpp_numbers({"train": [f"r{i}" for i in range(1001)]})
    assert big["r0"] == "0000" and big["r1000"] == "1000"


def test_metadata_files_dfdc_format():
    rows = [
        {"name": "a.mp4", "path": "dfdc_train_part_0/a.mp4", "label": "REAL", "split": "train", "status": "ok"},
        {"name": "b.mp4", "path": "dfdc_train_part_0/b.mp4", "label": "FAKE", "split": "train", "status": "ok",
         "original_name": "a.mp4"},
        {"name": "c.mp4", "path": "dfdc_val_part_1/c.mp4", "label": "REAL", "split": "val", "status": "ok"},
        {"name": "d.mp4", "path": "dfdc_val_part_1/d.mp4", "label": "FAKE", "split": "val", "status": "dropped",
         "original_name": "c.mp4"},
    ]
    docs = lay.metadata_files("dfdc", rows)
    assert docs["labels.json"] == {"a.mp4": {"label": "REAL", "split": "train", "original": None},
                                   "b.mp4": {"label": "FAKE", "split": "train", "original": "a.mp4"},
                                   "c.mp4": {"label": "REAL", "split": "val", "original": None}}
    # no metadata.json at the root: DFDC readers collect every one and parse its folder's number
    assert set(docs) == {"labels.json", "dfdc_train_part_0/metadata.json", "dfdc_val_part_1/metadata.json"}
    assert set(docs["dfdc_val_part_1/metadata.json"]) == {"c.mp4"}
    assert json.loads(lay.dumps(docs["labels.json"])) == docs["labels.json"]
    assert json.loads(lay.dumps(docs["labels.json"]))["a.mp4"]["original"] is None  # JSON null
    flat = [dict(r, path="videos/" + r["name"]) for r in rows]
    assert set(lay.metadata_files("flat", flat)) == {"labels.json", "videos/metadata.json"}


def test_metadata_files_ffpp_splits():
    rows = [{"name": f"original_sequences/youtube/c23/videos/{v}.mp4", "label": "REAL", "split": s, "status": "ok",
             "path": f"original_sequences/youtube/c23/videos/{v}.mp4"} for v, s in
            (("000", "train"), ("001", "train"), ("002", "test"), ("003", "test"))]
    for stem, s in (("000_001", "train"), ("001_000", "train"), ("002_003", "test")):
        for c in ("c23", "c40"):  # one pair per fake, not per compression level
            path = f"manipulated_sequences/dflray-df/{c}/videos/{stem}.mp4"
            rows.append({"name": path, "path": path, "label": "FAKE", "split": s, "status": "ok",
                         "original_name": f"original_sequences/youtube/{c}/videos/{stem[:3]}.mp4"})
    docs = lay.metadata_files("ffpp", rows)
    assert docs["splits/train.json"] == [["000", "001"], ["001", "000"]]
    assert docs["splits/test.json"] == [["002", "003"]] and docs["splits/val.json"] == []
    assert not any(k.endswith("metadata.json") for k in docs)


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


def test_sweep_temporaries_removes_leftovers_and_tolerates_ones_renamed_meanwhile(tmp_path, monkeypatch):
    """A killed driver's last tasks may rename a temporary into place while a rerun sweeps: the sweep lists
    it, finds it gone, and goes on (CI once died of exactly that)."""
    import fsspec

    from dflray.dataset import pipeline

    (tmp_path / "a").mkdir()
    left = tmp_path / "a" / ".tmp-1-x.parquet"
    left.write_bytes(b"x")
    racing = tmp_path / ".tmp-2-y.parquet"
    racing.write_bytes(b"y")
    keep = tmp_path / "y.parquet"
    keep.write_bytes(b"k")
    fs = fsspec.filesystem("file")
    real_find = fs.find

    def find_then_rename(path, *a, **k):
        found = real_find(path, *a, **k)
        racing.rename(tmp_path / "y2.parquet")     # the late task finishes between the listing and the delete
        return found

    monkeypatch.setattr(pipeline, "fs_and_path", lambda uri: (fs, str(tmp_path)))
    monkeypatch.setattr(fs, "find", find_then_rename)
    assert pipeline.sweep_temporaries(str(tmp_path)) == 1
    assert not left.exists() and keep.read_bytes() == b"k" and (tmp_path / "y2.parquet").exists()
