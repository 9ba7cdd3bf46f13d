"""The DeepfakeBench export's per-method datasets (as DeepfakeBench splits FaceForensics++ into FF-DF,
FF-F2F…), checked the way its loader reads a dataset JSON: every label key of the dataset in label_dict."""

from __future__ import annotations

import yaml

from dflray.dataset.export import _config_yaml, _label_dict_yaml, dataset_json, method_datasets


def _records():
    recs = [{"video_id": f"r{i}", "label": "ds_real", "split": "train" if i else "test", "frames": [f"./r{i}/0.png"]}
            for i in range(3)]
    recs += [{"video_id": f"f{i}", "label": "ds_fake", "split": "train" if i % 3 else "test",
              "frames": [f"./f{i}/0.png"]} for i in range(6)]
    method_of = {f"f{i}": ("sbi", "liae-ud", "landmark-warp")[i % 3] for i in range(6)}
    return recs, method_of


def test_each_method_gets_every_real_and_only_its_own_fakes():
    recs, method_of = _records()
    docs = method_datasets("ds", recs, method_of)
    assert sorted(docs) == ["ds-landmark-warp", "ds-liae-ud", "ds-sbi"]
    whole = dataset_json("ds", recs)["ds"]
    for stem, doc in docs.items():
        m = stem.removeprefix("ds-")
        (body,) = doc.values()
        assert list(doc) == [stem] and set(body) == {"ds_real", f"ds_{m}"}
        assert body["ds_real"] == whole["ds_real"]  # every real video, in its split
        fakes = {v for split in body[f"ds_{m}"].values() for v in split}
        assert fakes == {v for v, mm in method_of.items() if mm == m}
        for split, videos in body[f"ds_{m}"].items():
            assert all(e["label"] == f"ds_{m}" and whole["ds_fake"][split][v]["frames"] == e["frames"]
                       for v, e in videos.items())
    assert method_datasets("ds", recs, {v: "sbi" for v in method_of}) == {}  # one method: the whole is it


def test_label_dict_and_config_name_every_key_deepfakebench_will_look_up():
    recs, method_of = _records()
    docs = method_datasets("ds", recs, method_of)
    methods = [s.removeprefix("ds-") for s in sorted(docs)]
    labels = yaml.safe_load(_label_dict_yaml("ds", methods))["label_dict"]
    conf = yaml.safe_load(_config_yaml("ds", "./datasets/rgb/ds", "c23", 32, 256, "id", methods))
    assert conf["label_dict"] == labels
    assert conf["test_dataset"] == ["ds", "ds-landmark-warp", "ds-liae-ud", "ds-sbi"]
    for doc in [dataset_json("ds", recs), *docs.values()]:
        for body in doc.values():
            for key in body:
                assert labels[key] == (0 if key == "ds_real" else 1)  # DeepfakeBench: label_dict[label key]
    assert yaml.safe_load(_label_dict_yaml("ds"))["label_dict"] == {"ds_real": 0, "ds_fake": 1}
