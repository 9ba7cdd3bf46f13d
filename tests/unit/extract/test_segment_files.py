"""Segment files the fused extraction actors write themselves (``dflray.extract.stages._write_tables``)
and what the driver takes from a chunk's staging folder (``dflray.extract.pipeline._staged_faces``)."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dflray.extract.pipeline import _staged_faces
from dflray.extract.stages import _write_tables


def _t(*ids):
    return pa.table({"video_id": pa.array(list(ids), pa.string()), "frame_index": pa.array(range(len(ids)), pa.int64())})


def test_tables_stream_into_one_file_and_empty_ones_are_skipped(tmp_path):
    uri = str(tmp_path / "faces" / "v-000000.parquet")
    assert _write_tables(uri, iter([_t(), _t("a", "a"), _t(), _t("a")])) == 3
    assert pq.read_table(uri).column("video_id").to_pylist() == ["a", "a", "a"]
    assert [p.name for p in (tmp_path / "faces").iterdir()] == ["v-000000.parquet"]


def test_a_segment_without_faces_writes_no_file(tmp_path):
    uri = str(tmp_path / "faces" / "v-000001.parquet")
    assert _write_tables(uri, iter([_t(), _t()])) == 0
    assert not (tmp_path / "faces").exists() or not list((tmp_path / "faces").iterdir())


def test_a_segment_that_fails_midway_leaves_no_file(tmp_path):
    def tables():
        yield _t("a")
        raise RuntimeError("worker lost")

    uri = str(tmp_path / "faces" / "v-000002.parquet")
    with pytest.raises(RuntimeError, match="worker lost"):
        _write_tables(uri, tables())
    assert list((tmp_path / "faces").iterdir()) == []


def test_staged_faces_leave_out_a_lost_writers_temporary_file(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    _write_tables(str(faces / "v-000000.parquet"), iter([_t("a")]))
    (faces / ".tmp-0123abcd-v-000001.parquet").write_bytes(b"PAR1 half a file")
    assert [p.rsplit("/", 1)[-1] for p in _staged_faces(str(tmp_path))] == ["v-000000.parquet"]
