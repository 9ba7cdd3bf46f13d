"""Typed config: defaults, YAML, overrides, and errors that name the field."""

import subprocess
import sys

import pytest
import yaml

from dflray.config import ConfigError, ExtractConfig, apply_overrides, from_dict, load_config, to_dict


def test_defaults_are_valid_and_dfl_like():
    cfg = ExtractConfig()
    assert cfg.align.face_type == "whole_face" and cfg.align.size == 512
    assert cfg.detect.detector == "auto"


def test_overrides_parse_yaml_scalars():
    cfg = load_config(ExtractConfig, overrides=["align.face_type=full", "decode.every_n=3",
                                                "detect.score_threshold=0.6", "landmarks.embedding=false",
                                                "decode.max_frames=null"])
    assert cfg.align.face_type == "full"
    assert cfg.decode.every_n == 3
    assert cfg.detect.score_threshold == pytest.approx(0.6)
    assert cfg.landmarks.embedding is False
    assert cfg.decode.max_frames is None


def test_yaml_file_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"align": {"size": 256, "face_type": "head"}, "commit_every": 4}))
    cfg = load_config(ExtractConfig, str(p), ["align.size=128"])
    assert (cfg.align.size, cfg.align.face_type, cfg.commit_every) == (128, "head", 4)


def test_round_trip_through_dict():
    cfg = load_config(ExtractConfig, overrides=["detect.detector=dlib-hog"])
    assert from_dict(ExtractConfig, to_dict(cfg)) == cfg


def test_frozen():
    with pytest.raises(Exception):
        ExtractConfig().commit_every = 3


@pytest.mark.parametrize("override,field", [
    ("align.face_type=fulll", "align.face_type"),
    ("align.size=7", "align.size"),
    ("decode.every_n=0", "decode.every_n"),
    ("detect.batch_size=0", "detect.batch_size"),
    ("detect.score_threshold=1.5", "detect.score_threshold"),
    ("detect.device=tpu", "detect.device"),
    ("detect.input_size=100", "detect.input_size"),
    ("decode.every_n=two", "decode.every_n"),
    ("landmarks.embedding=maybe", "landmarks.embedding"),
    ("align.colour=red", "align.colour"),
    ("nosuch.x=1", "nosuch"),
    ("commit_every=0", "commit_every"),
])
def test_errors_name_the_field(override, field):
    with pytest.raises(ConfigError) as e:
        load_config(ExtractConfig, overrides=[override])
    assert e.value.path == field
    assert str(e.value).startswith(field + ":")


def test_bad_override_syntax():
    with pytest.raises(ConfigError):
        apply_overrides({}, ["no_equals_sign"])


def test_top_level_yaml_must_be_mapping(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError):
        load_config(ExtractConfig, str(p))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "dflray.cli", *args], capture_output=True, text=True, timeout=120)


def test_cli_bad_value_exits_nonzero_with_one_line_naming_field(tmp_path):
    r = _cli("extract", str(tmp_path), "--out", str(tmp_path / "o"), "align.face_type=fulll")
    assert r.returncode == 2
    lines = [x for x in r.stderr.strip().splitlines() if x]
    assert len(lines) == 1 and "align.face_type" in lines[0], r.stderr
    assert not (tmp_path / "o").exists()  # failed before any work started


def test_cli_unknown_detector_fails_before_work(tmp_path):
    r = _cli("extract", str(tmp_path), "--out", str(tmp_path / "o"), "detect.detector=nope")
    assert r.returncode == 2 and "detect.detector" in r.stderr
    assert not (tmp_path / "o").exists()


def test_cli_unknown_option_and_print_config(tmp_path):
    r = _cli("extract", "x.mp4", "--out", "o", "--bogus")
    assert r.returncode == 2 and "--bogus" in r.stderr
    r = _cli("extract", "x.mp4", "--out", "o", "align.size=256", "--print-config")
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["align"]["size"] == 256


@pytest.mark.parametrize("cmd", [[], ["extract"], ["preview"], ["sample"]])
def test_every_subcommand_has_help(cmd):
    r = _cli(*cmd, "--help")
    assert r.returncode == 0 and "usage: dflray" in r.stdout
