"""Extraction's driver-side checks (``dflray.extract.preflight``), before Ray or any write.

A rerun into an existing faceset with other ``align`` options is refused naming them (one faceset, one
alignment, and ``faceset.json`` describing every row); a ``detect.weights`` file that is missing, crafted
or not a RetinaFace ResNet-50 state dict is refused naming ``detect.weights`` — in the driver, not in
the start-up of every detector worker. Never with torch's advice to load a file with weights_only=False.
"""

from __future__ import annotations

import json
import os
import pickle

import pytest
import ray
import torch

from dflray import cli
from dflray.config import ConfigError, ExtractConfig, load_config, to_dict
from dflray.extract.preflight import preflight

UNSAFE_ADVICE = ("weights_only=False", "set to `False`", "arbitrary code execution")


def _faceset(root, cfg: ExtractConfig | dict, committed: bool = True) -> str:
    """A faceset folder as extraction leaves it: faceset.json, faces of one run, and (committed) its record."""
    root.mkdir(parents=True, exist_ok=True)
    config = to_dict(cfg) if isinstance(cfg, ExtractConfig) else cfg
    (root / "faceset.json").write_text(json.dumps({"kind": "dflray.faceset", "schema_version": 5, "config": config}))
    (root / "faces").mkdir()
    (root / "faces" / "20260101000000abcdef-00000.parquet").write_bytes(b"PAR1")  # listed, never read
    if committed:
        (root / "videos").mkdir()
        (root / "videos" / "20260101000000abcdef.parquet").write_bytes(b"PAR1")
    return str(root)


def _cfg(*overrides: str) -> ExtractConfig:
    return load_config(ExtractConfig, overrides=list(overrides))


# --- align options against the faces already there -----------------------------------------------------


def test_new_or_same_options_pass(tmp_path):
    preflight(str(tmp_path / "new"), _cfg("align.size=256"))
    out = _faceset(tmp_path / "fs", _cfg("align.size=256", "align.face_type=full"))
    preflight(out, _cfg("align.size=256", "align.face_type=full", "decode.every_n=2"))  # other sections may vary


def test_other_face_type_and_size_are_refused_naming_both(tmp_path):
    out = _faceset(tmp_path / "fs", _cfg())  # whole_face 512
    with pytest.raises(ConfigError) as e:
        preflight(out, _cfg("align.face_type=full", "align.size=256"))
    msg = str(e.value)
    assert msg.startswith("align.face_type, align.size: ") and out in msg
    assert "align.face_type=whole_face" in msg and "align.size=512" in msg and "full, 256" in msg
    assert "\n" not in msg


def test_image_format_and_jpeg_quality(tmp_path):
    out = _faceset(tmp_path / "jpg", _cfg())
    with pytest.raises(ConfigError, match=r"^align\.image_format: "):
        preflight(out, _cfg("align.image_format=png"))
    with pytest.raises(ConfigError, match=r"^align\.jpeg_quality: "):
        preflight(out, _cfg("align.jpeg_quality=80"))
    png = _faceset(tmp_path / "png", _cfg("align.image_format=png"))
    preflight(png, _cfg("align.image_format=png", "align.jpeg_quality=80"))  # PNG crops: quality unused


def test_uncommitted_leftovers_do_not_count(tmp_path):
    """A run that crashed before its first commit left faceset.json and faces files, but no rows."""
    out = _faceset(tmp_path / "fs", _cfg(), committed=False)
    preflight(out, _cfg("align.size=256"))


def test_import_dfl_faceset_compares_what_it_records(tmp_path):
    out = _faceset(tmp_path / "imported", {"align": {"face_type": "full", "size": 256}, "decode": {"every_n": 1}})
    preflight(out, _cfg("align.face_type=full", "align.size=256", "align.image_format=png"))
    with pytest.raises(ConfigError, match=r"^align\.size: "):
        preflight(out, _cfg("align.face_type=full"))
    empty = _faceset(tmp_path / "no_faces", {"align": {"face_type": None, "size": None}})
    preflight(empty, _cfg())


def test_unreadable_manifest_is_refused_naming_out(tmp_path):
    out = _faceset(tmp_path / "fs", _cfg())
    (tmp_path / "fs" / "faceset.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"^--out: .*faceset\.json cannot be read"):
        preflight(out, _cfg())


# --- detect.weights -----------------------------------------------------------------------------------


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _weights_error(tmp_path, path, **kw) -> str:
    with pytest.raises(ConfigError) as e:
        preflight(str(tmp_path / "out"), _cfg(f"detect.weights={path}", *kw.get("overrides", [])))
    msg = str(e.value)
    assert msg.startswith("detect.weights: ") and str(path) in msg and "\n" not in msg
    assert not any(s in msg for s in UNSAFE_ADVICE)
    assert not (tmp_path / "out").exists()
    return msg


def test_missing_weights(tmp_path):
    assert "no such file" in _weights_error(tmp_path, tmp_path / "nope.pth")


def test_junk_and_crafted_weights_are_refused_unrun(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    junk, crafted, raw = tmp_path / "junk.pth", tmp_path / "crafted.pth", tmp_path / "raw.pth"
    junk.write_bytes(b"not weights\n" * 16)
    torch.save({"body.conv1.weight": _Evil()}, crafted)
    raw.write_bytes(pickle.dumps(_Evil()))
    assert "not a RetinaFace ResNet-50 state dict" in _weights_error(tmp_path, junk)
    msg = _weights_error(tmp_path, crafted)
    assert "system" in msg and "unsafe" in msg
    _weights_error(tmp_path, raw)
    assert not (tmp_path / "PWNED").exists()


def test_state_dict_of_another_network_is_refused(tmp_path):
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(8, 3, 3, 3)}, other)
    assert "missing keys" in _weights_error(tmp_path, other)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    assert "holds a Tensor" in _weights_error(tmp_path, tensor, overrides=["detect.detector=retinaface"])


def test_wrong_shapes_are_refused_and_a_real_state_dict_passes(tmp_path):
    from dflray.detect._retinaface_net import RetinaFaceR50

    state = {k: v.half() for k, v in RetinaFaceR50().state_dict().items()}  # half: a smaller file
    good = tmp_path / "r50.pth"
    torch.save(state, good)
    preflight(str(tmp_path / "out"), _cfg(f"detect.weights={good}"))
    state["body.conv1.weight"] = torch.zeros(64, 3, 3, 3)
    bad = tmp_path / "bad_shape.pth"
    torch.save(state, bad)
    assert "body.conv1.weight" in _weights_error(tmp_path, bad)


def test_weights_are_not_read_by_a_detector_that_ignores_them(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not weights")
    preflight(str(tmp_path / "out"), _cfg(f"detect.weights={junk}", "detect.detector=dlib-hog"))


# --- through the CLI: run_extract calls preflight(out, cfg) before makedirs/init_ray -------------------


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("extraction started Ray before refusing its options")

    monkeypatch.setattr(ray, "init", refuse)


def _cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "Traceback" not in err, err
    assert not any(s in err for s in UNSAFE_ADVICE), err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("dflray extract: error: "), err
    return lines[0]


def test_cli_bad_weights_fail_in_the_driver_leaving_nothing(tmp_path, capsys, no_ray):
    video, junk = tmp_path / "v.mp4", tmp_path / "junk.pth"
    video.write_bytes(b"")
    junk.write_bytes(b"not weights")
    line = _cli_error(["extract", str(video), "--out", str(tmp_path / "fs"), f"detect.weights={junk}"], capsys)
    assert "detect.weights" in line and str(junk) in line
    assert not (tmp_path / "fs").exists()


def test_cli_rerun_with_other_align_options_is_refused(tmp_path, capsys, no_ray):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"")
    out = _faceset(tmp_path / "fs", _cfg())
    before = sorted(p.name for p in (tmp_path / "fs").rglob("*"))
    line = _cli_error(["extract", str(video), "--out", out, "align.size=256"], capsys)
    assert "align.size" in line and out in line
    assert sorted(p.name for p in (tmp_path / "fs").rglob("*")) == before
