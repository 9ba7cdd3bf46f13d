"""The versioned schema module: round trips, version metadata, migrations."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dflray.io import schema


def _face_row(i=0):
    rng = np.random.default_rng(i)
    return {
        "video_id": "v", "frame_index": i, "face_index": 0, "source_uri": "/x.mp4",
        "frame_width": 640, "frame_height": 480, "timestamp": i / 25,
        "bbox": np.array([1, 2, 3, 4], np.float32), "det_score": 0.9, "detector": "retinaface",
        "points5": rng.random(10).astype(np.float32), "landmarks": rng.random((68, 2)).astype(np.float32) * 100,
        "landmarker": "dlib68", "face_type": "whole_face", "size": 256,
        "align_mat": rng.random((2, 3)), "yaw": 1.0, "pitch": 2.0, "roll": 3.0, "blur": 10.0,
        "image": b"\xff\xd8jpeg", "image_format": "jpg", "mask": b"png", "mask_source": "hull",
        "embedding": rng.random(128).astype(np.float32), "identity": None,
    }


def test_faces_round_trip(tmp_path):
    rows = [_face_row(i) for i in range(3)]
    t = schema.table_from_rows("faces", rows)
    assert t.schema.metadata[b"dflray.schema_version"] == str(schema.SCHEMA_VERSION).encode()
    pq.write_table(t, tmp_path / "f.parquet")
    back = schema.read_table("faces", [str(tmp_path / "f.parquet")])
    assert back.num_rows == 3
    np.testing.assert_allclose(schema.landmarks_of(back)[1], rows[1]["landmarks"], rtol=1e-6)
    np.testing.assert_allclose(schema.matrices_of(back)[2], rows[2]["align_mat"], rtol=1e-6)
    assert back.column("align_mat").type.value_type == pa.float64()  # 1e-3 px needs more than float32 on 4K frames
    assert back.column("schema_version").to_pylist() == [schema.SCHEMA_VERSION] * 3
    assert back.column("identity").null_count == 3


def test_missing_columns_become_null_and_every_table_builds():
    for name in schema.TABLES:
        t = schema.table_from_rows(name, [{}])
        assert t.num_rows == 1 and t.schema.equals(schema.with_version(schema.TABLES[name]), check_metadata=True)


def test_empty_read_has_the_schema():
    t = schema.read_table("videos", [])
    assert t.num_rows == 0 and "status" in t.column_names


def test_newer_version_is_refused(tmp_path):
    t = schema.table_from_rows("errors", [{"uri": "a"}])
    t = t.set_column(t.column_names.index("schema_version"), "schema_version",
                     pa.array([schema.SCHEMA_VERSION + 1], pa.int16()))
    pq.write_table(t, tmp_path / "e.parquet")
    with pytest.raises(ValueError, match="newer"):
        schema.read_table("errors", [str(tmp_path / "e.parquet")])


def test_migrations_run_in_order(tmp_path, monkeypatch):
    # Simulate a future version 2 of `errors` that adds a column; old files must still read.
    old = schema.table_from_rows("errors", [{"uri": "a", "message": "m"}])
    pq.write_table(old, tmp_path / "old.parquet")
    new_schema = schema.ERRORS.append(pa.field("host", pa.string()))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
    monkeypatch.setitem(schema.TABLES, "errors", new_schema)
    monkeypatch.setitem(schema._MIGRATIONS, "errors", {
        schema.SCHEMA_VERSION - 1: lambda t: t.append_column("host", pa.array(["?"] * t.num_rows, pa.string()))
        .set_column(t.column_names.index("schema_version"), "schema_version",
                    pa.array([schema.SCHEMA_VERSION] * t.num_rows, pa.int16()))})
    back = schema.read_table("errors", [str(tmp_path / "old.parquet")])
    assert back.column("host").to_pylist() == ["?"] and back.column("uri").to_pylist() == ["a"]


def _as_v1_faces(rows):
    """A faces table as dflray 0.1 (schema version 1) wrote it: no XSeg columns."""
    t = schema.table_from_rows("faces", rows)
    t = t.drop_columns(["xseg_polys", "xseg_label", "xseg", "xseg_model"])
    t = t.set_column(t.column_names.index("schema_version"), "schema_version", pa.array([1] * t.num_rows, pa.int16()))
    return t.replace_schema_metadata({b"dflray.schema_version": b"1"})


def test_faces_v1_files_read_with_null_xseg_columns(tmp_path):
    pq.write_table(_as_v1_faces([{"video_id": "v", "frame_index": 3}]), tmp_path / "old.parquet")
    pq.write_table(_as_v1_faces([]), tmp_path / "empty.parquet")
    back = schema.read_table("faces", [str(tmp_path / "old.parquet"), str(tmp_path / "empty.parquet")])
    assert back.num_rows == 1 and back.column("frame_index").to_pylist() == [3]
    for c in ("xseg_polys", "xseg_label", "xseg", "xseg_model"):
        assert back.column(c).to_pylist() == [None]
    assert back.column("schema_version").to_pylist() == [schema.SCHEMA_VERSION]
    # every other table's old files read too; v2's new columns (the XSeg model of a merge) come back null
    new_in_v2 = {"merged": "xseg_sha256", "dataset": "xseg_id"}
    for name in schema.TABLES:
        if name != "faces":
            t = schema.table_from_rows(name, [{"output_id": "o", "video_id": "v"}])
            if name in new_in_v2:
                t = t.drop_columns([new_in_v2[name]])
            t = t.set_column(t.column_names.index("schema_version"), "schema_version", pa.array([1], pa.int16()))
            back = schema.conform(name, t)
            assert back.column("schema_version").to_pylist() == [schema.SCHEMA_VERSION]
            assert back.schema.names == schema.TABLES[name].names
            if name in new_in_v2:
                assert back.column(new_in_v2[name]).to_pylist() == [None]


def _as_v2(name: str, rows: list[dict]) -> pa.Table:
    """A table as dflray wrote it at schema version 2: without the columns version 3 added."""
    t = schema.table_from_rows(name, rows)
    t = t.drop_columns([c for c in schema._NEW_COLUMNS[3].get(name, ()) if c in t.column_names])
    t = t.set_column(t.column_names.index("schema_version"), "schema_version", pa.array([2] * t.num_rows, pa.int16()))
    return t.replace_schema_metadata({b"dflray.schema_version": b"2"})


def test_swap_success_round_trips_in_the_dataset_and_merge_indexes(tmp_path):
    from dflray.config import QUALITY_METRICS

    assert schema.DATASET.field("swap_success").type == pa.float32()
    for name in ("dataset", "merged"):
        assert all(schema.TABLES[name].field(m).type == pa.float32() for m in QUALITY_METRICS)
        rows = [{"video_id": "a", "output_id": "a", "swap_success": 0.875, "seam": 1.25},
                {"video_id": "b", "output_id": "b", "swap_success": None}]
        pq.write_table(schema.table_from_rows(name, rows), tmp_path / f"{name}.parquet")
        back = schema.read_table(name, [str(tmp_path / f"{name}.parquet")])
        assert back.column("swap_success").to_pylist() == [0.875, None]  # exact in float32
        assert back.column("seam").to_pylist() == [1.25, None]


def test_v2_indexes_read_with_null_swap_success(tmp_path):
    pq.write_table(_as_v2("dataset", [{"video_id": "a", "seam": 1.5, "xseg_id": "x"}]), tmp_path / "d.parquet")
    back = schema.read_table("dataset", [str(tmp_path / "d.parquet")])
    assert back.schema.names == schema.DATASET.names
    assert back.column("swap_success").to_pylist() == [None]
    assert back.column("seam").to_pylist() == [1.5] and back.column("xseg_id").to_pylist() == ["x"]
    assert back.column("schema_version").to_pylist() == [schema.SCHEMA_VERSION]
    old = _as_v2("merged", [{"output_id": "o", "status": "ok"}])
    assert "swap_success" not in old.column_names and "quality_note" not in old.column_names
    back = schema.conform("merged", old)
    assert back.schema.names == schema.MERGED.names
    assert back.column("swap_success").to_pylist() == [None] and back.column("quality_note").to_pylist() == [None]
    # An empty v2 file (its version only in the schema metadata) upgrades too.
    pq.write_table(_as_v2("dataset", []), tmp_path / "empty.parquet")
    assert schema.read_table("dataset", [str(tmp_path / "empty.parquet")]).schema.names == schema.DATASET.names


def test_merge_setting_columns_match_the_merge_settings():
    """The schema writes the merge settings' columns out; they must follow ``MergeSettings`` (a new setting
    needs a column, and a schema version)."""
    import dataclasses
    import typing

    from dflray.config import MergeSettings

    hints = typing.get_type_hints(MergeSettings)
    kinds = {int: pa.int32(), bool: pa.bool_(), float: pa.float32()}
    expected = [(f.name, kinds.get(hints[f.name], pa.string())) for f in dataclasses.fields(MergeSettings)]
    assert schema.MERGE_SETTING_COLUMNS == expected
    for name in ("merged", "dataset"):
        assert all(schema.TABLES[name].field(n).type == t for n, t in expected), name


def test_many_small_files_are_merged_as_read_in_file_order(tmp_path, monkeypatch):
    """One-row files (a record per task) are merged 64 at a time as they are read, so the result holds
    a few chunks, not one table per file (each held apart kept ~50 KiB of a driver's memory; see
    bench/README.md, bench/generate.py); a large file stays as read, and the files' order is kept."""
    monkeypatch.setattr(schema, "_SMALL_PART", 20_000)  # a 3-face file counts as large here
    files = []
    for i in range(140):
        if i == 100:  # a large file in the middle
            t = schema.table_from_rows("faces", [_face_row(i) | {"image": bytes(10_000)} for _ in range(3)])
        else:
            t = schema.table_from_rows("faces", [_face_row(i)])
        pq.write_table(t, tmp_path / f"{i:03d}.parquet")
        files.append(str(tmp_path / f"{i:03d}.parquet"))
    back = schema.read_table("faces", files)
    want = [i for i in range(140) for _ in range(3 if i == 100 else 1)]
    assert back.column("frame_index").to_pylist() == want
    # 0..63 and 64..99 merged, the large file as read, then 101..139 merged: 4 chunks, not 140
    assert back.column("frame_index").num_chunks == 4
    assert schema.read_table("faces", files, columns=["video_id", "frame_index"]).column_names == \
        ["video_id", "frame_index"]
