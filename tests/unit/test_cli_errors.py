"""The README's promise for bad input: one line ``dflray CMD: error: <cause>``, exit status 2, no traceback,
nothing left in ``--out`` — for a malformed or missing config file, an ``--out`` that cannot be the output,
and a file given to ``export`` / ``merge --model`` that is no dflray checkpoint (or is a crafted pickle).

torch's own refusal of such a file advises retrying with ``weights_only=False``, which would run the
file's code: that advice must never reach the user. Everything here fails before Ray would start.
"""

from __future__ import annotations

import os
import pickle
import re

import pytest
import ray
import torch

from dflray import cli

UNSAFE_ADVICE = ("weights_only=False", "set to `False`", "arbitrary code execution")


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch):
    """Unit tests never start Ray: every refusal here must come before it (a regression fails, not starts it)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the CLI started Ray before refusing the input")

    monkeypatch.setattr(ray, "init", refuse)


def _error_line(argv: list[str], capsys) -> str:
    """Runs the CLI in-process and returns its one error line (after checking status 2 and no traceback)."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err
    assert not any(s in err for s in UNSAFE_ADVICE), err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"dflray {argv[0]}: error: "), err
    return lines[0]


# --- config files ------------------------------------------------------------------------------------


def test_malformed_yaml_config_is_one_line_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("align: {face_type: full\n  size: [\n")
    line = _error_line(["extract", "v.mp4", "--out", str(tmp_path / "o"), "--config", str(bad)], capsys)
    assert str(bad) in line and "YAML" in line and "line 2" in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("cmd", [["extract", "v.mp4"], ["train", "--src", "s"]])
def test_missing_config_file_is_one_line_naming_it(tmp_path, capsys, cmd):
    missing = tmp_path / "nope.yaml"
    line = _error_line([*cmd, "--out", str(tmp_path / "o"), "--config", str(missing)], capsys)
    assert "--config" in line and str(missing) in line and "no such file" in line
    assert not (tmp_path / "o").exists()


def test_missing_plan_is_one_line_naming_it(tmp_path, capsys):
    line = _error_line(["generate", str(tmp_path / "plan.yaml"), "--out", str(tmp_path / "o")], capsys)
    assert "PLAN" in line and str(tmp_path / "plan.yaml") in line and "no such file" in line


# --- --out ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cmd", [["extract", "v.mp4"], ["train", "--src", "s"], ["import-dfl", "aligned"],
                                 ["sample", "--seconds", "0.1"]])
def test_out_that_is_an_existing_file_is_refused(tmp_path, capsys, cmd):
    out = tmp_path / "afile"
    out.write_bytes(b"keep me")
    line = _error_line([*cmd, "--out", str(out)], capsys)
    assert "--out" in line and str(out) in line and "not a folder" in line
    assert out.read_bytes() == b"keep me"


def test_out_under_an_existing_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_bytes(b"")
    out = tmp_path / "afile" / "fs"
    line = _error_line(["extract", "v.mp4", "--out", str(out)], capsys)
    assert "--out" in line and str(tmp_path / "afile") in line and "not a folder" in line


def test_file_out_that_is_a_folder_is_refused(tmp_path, capsys):
    line = _error_line(["export", str(tmp_path / "ckpt"), "--out", str(tmp_path)], capsys)
    assert "--out" in line and "is a folder" in line


def test_out_on_a_read_only_location_is_refused(tmp_path, capsys, monkeypatch):
    """A read-only filesystem (or a folder without write permission): os.access says so, even for root."""
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(ro) else real(p, mode, **kw))
    for argv in (["extract", "v.mp4", "--out", str(ro / "fs")], ["export", str(tmp_path / "ck"), "--out",
                                                                   str(ro / "m.ts")]):
        line = _error_line(argv, capsys)
        assert "--out" in line and str(ro) in line and "not writable" in line
    assert list(ro.iterdir()) == []


# --- export / merge --model with a file that is not a checkpoint --------------------------------------


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _bad_files(tmp_path) -> dict[str, str]:
    files = {"junk": tmp_path / "junk.pt", "crafted": tmp_path / "crafted.pt", "raw_pickle": tmp_path / "raw.pt"}
    files["junk"].write_bytes(b"not a checkpoint at all\n" * 8)
    torch.save({"format": "dflray-train-v1", "step": 1, "x": _Evil()}, files["crafted"])
    files["raw_pickle"].write_bytes(pickle.dumps(_Evil()))
    ck = tmp_path / "ckpt"  # a checkpoint folder (meta.json) whose model.pt is junk
    ck.mkdir()
    (ck / "model.pt").write_bytes(b"\x00" * 64)
    (ck / "meta.json").write_text('{"format": "dflray-train-v1", "step": 1}')
    files["folder"] = ck
    partial = tmp_path / "partial.pt"  # the format's marker, no model in it
    torch.save({"format": "dflray-train-v1", "step": 1}, partial)
    files["partial"] = partial
    return {k: str(v) for k, v in files.items()}


@pytest.mark.parametrize("kind", ["junk", "crafted", "raw_pickle", "folder", "partial"])
def test_export_of_a_non_checkpoint_is_one_line_without_unsafe_advice(tmp_path, capsys, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    path = _bad_files(tmp_path)[kind]
    line = _error_line(["export", path, "--out", str(tmp_path / "m.ts")], capsys)
    named = os.path.join(path, "model.pt") if kind == "folder" else path
    assert re.search(r"is not a (complete )?dflray checkpoint", line) and named in line
    if kind == "crafted":
        assert "unsafe" in line and "system" in line  # says what it tried to call
    assert not (tmp_path / "m.ts").exists() and not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("kind", ["junk", "crafted"])
def test_merge_model_that_is_not_a_checkpoint_is_one_line(tmp_path, capsys, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    path = _bad_files(tmp_path)[kind]
    line = _error_line(["merge", "--model", path, "--dst", str(tmp_path / "v.mp4"), "--out",
                        str(tmp_path / "fakes")], capsys)
    assert re.search(r"is not a (complete )?dflray checkpoint", line) and path in line
    assert not (tmp_path / "PWNED").exists()
