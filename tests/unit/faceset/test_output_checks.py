"""Checks before work: ``check_writable`` and ``undone_if_failed`` leave no empty output behind."""

import pytest

from dflray.faceset import check_writable, undone_if_failed


def test_a_refused_run_removes_the_output_it_created(tmp_path):
    out = tmp_path / "new" / "out"
    with pytest.raises(ValueError, match="bad model"), undone_if_failed(str(out)):
        check_writable(str(out))
        assert out.is_dir() and not any(out.iterdir())  # the probe file is gone, the folder is not
        raise ValueError("bad model")
    assert not out.exists()


def test_an_output_that_existed_is_never_removed(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "merged.parquet").write_bytes(b"earlier work")
    with pytest.raises(ValueError, match="bad model"), undone_if_failed(str(out)):
        check_writable(str(out))
        raise ValueError("bad model")
    assert (out / "merged.parquet").read_bytes() == b"earlier work"


def test_a_run_that_passes_its_checks_keeps_its_output(tmp_path):
    out = tmp_path / "out"
    with undone_if_failed(str(out)):
        check_writable(str(out))
    assert out.is_dir()


def test_an_unwritable_output_names_the_option(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="^--work: cannot write to .*/file/out"):
        check_writable(str(blocker / "out"), "--work")
