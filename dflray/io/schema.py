"""The one versioned Arrow schema module: every table dflray writes is defined here.

Each table carries ``schema_version`` as a column and in the Parquet schema metadata. Readers go
through ``read_table``, which upgrades older versions with the registered migrations, so old data
stays readable as the schema evolves.

Geometry columns are fixed-size float lists (plain Parquet, readable by pandas/duckdb/polars without
Ray's tensor extension): ``bbox`` x1,y1,x2,y2; ``landmarks`` 68 (x, y) pairs in frame pixels;
``align_mat`` the 2x3 frame→crop matrix, row-major; ``points5`` the detector's 5 points (NaN when the
detector has none); ``embedding`` dlib's 128-D identity descriptor (null when not computed).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = 1


def _f32(n: int) -> pa.DataType:
    return pa.list_(pa.float32(), n)


FACES = pa.schema([
    ("video_id", pa.string()),
    ("frame_index", pa.int32()),
    ("face_index", pa.int16()),
    ("source_uri", pa.string()),
    ("frame_width", pa.int32()),
    ("frame_height", pa.int32()),
    ("timestamp", pa.float64()),
    ("bbox", _f32(4)),
    ("det_score", pa.float32()),
    ("detector", pa.string()),
    ("points5", _f32(10)),
    ("landmarks", _f32(136)),
    ("landmarker", pa.string()),
    ("face_type", pa.string()),
    ("size", pa.int32()),
    ("align_mat", pa.list_(pa.float64(), 6)),
    ("yaw", pa.float32()),
    ("pitch", pa.float32()),
    ("roll", pa.float32()),
    ("blur", pa.float32()),
    ("image", pa.binary()),
    ("image_format", pa.string()),
    ("mask", pa.binary()),
    ("mask_source", pa.string()),
    ("embedding", _f32(128)),
    ("identity", pa.int32()),
    ("schema_version", pa.int16()),
])

VIDEOS = pa.schema([
    ("video_id", pa.string()),
    ("uri", pa.string()),
    ("fps", pa.float64()),
    ("frame_count", pa.int32()),
    ("frames_decoded", pa.int32()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("duration", pa.float64()),
    ("rotation", pa.int16()),
    ("codec", pa.string()),
    ("has_audio", pa.bool_()),
    ("faces", pa.int32()),
    ("frames_with_faces", pa.int32()),
    ("status", pa.string()),  # ok | no_faces | error | partial
    ("error", pa.string()),
    ("run_id", pa.string()),
    ("schema_version", pa.int16()),
])

ERRORS = pa.schema([
    ("uri", pa.string()),
    ("video_id", pa.string()),
    ("stage", pa.string()),
    ("type", pa.string()),
    ("message", pa.string()),
    ("frame_index", pa.int32()),
    ("run_id", pa.string()),
    ("schema_version", pa.int16()),
])


def _setting_fields() -> list[tuple[str, pa.DataType]]:
    """One column per merge setting (``dflray.config.MergeSettings``), typed like the field."""
    import dataclasses
    import typing

    from dflray.config import MergeSettings

    hints = typing.get_type_hints(MergeSettings)
    kinds = {int: pa.int32(), bool: pa.bool_(), float: pa.float32()}
    return [(f.name, kinds.get(hints[f.name], pa.string())) for f in dataclasses.fields(MergeSettings)]


# The merge job's index: one row per output video (the commit record of that video).
MERGED = pa.schema([
    ("output_id", pa.string()),
    ("path", pa.string()),  # merged video, relative to the merge output root
    ("mask_path", pa.string()),  # manipulation mask video, relative (null when not written)
    ("label", pa.string()),  # FAKE
    ("dst_uri", pa.string()),
    ("dst_video_id", pa.string()),
    ("model", pa.string()),
    ("model_sha256", pa.string()),
    ("arch", pa.string()),
    ("face_type", pa.string()),
    ("resolution", pa.int32()),
    *_setting_fields(),
    ("smooth_window", pa.int32()),
    ("identity_mode", pa.string()),
    ("seed", pa.int64()),
    ("settings_sha256", pa.string()),
    ("dataset_id", pa.string()),
    ("frames", pa.int32()),
    ("frames_swapped", pa.int32()),
    ("faces_swapped", pa.int32()),
    ("fps", pa.float64()),
    ("duration", pa.float64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("has_audio", pa.bool_()),
    ("sha256", pa.string()),
    ("mask_sha256", pa.string()),
    ("status", pa.string()),  # ok | error
    ("error", pa.string()),
    ("seconds", pa.float64()),
    ("run_id", pa.string()),
    ("schema_version", pa.int16()),
])

# Per output frame: whether and where the frame was manipulated.
MERGED_FRAMES = pa.schema([
    ("output_id", pa.string()),
    ("frame_index", pa.int32()),
    ("timestamp", pa.float64()),
    ("faces", pa.int16()),  # faces of the faceset in this frame
    ("faces_swapped", pa.int16()),
    ("bbox", _f32(4)),  # x1, y1, x2, y2 of the manipulation mask (null when untouched)
    ("mask_area", pa.float32()),  # fraction of the frame's pixels the mask covers
    ("schema_version", pa.int16()),
])

TABLES: dict[str, pa.Schema] = {"faces": FACES, "videos": VIDEOS, "errors": ERRORS, "merged": MERGED,
                                "merged_frames": MERGED_FRAMES}

# table -> {from_version: function upgrading a table by one version}
_MIGRATIONS: dict[str, dict[int, Callable[[pa.Table], pa.Table]]] = {name: {} for name in TABLES}


def with_version(schema: pa.Schema) -> pa.Schema:
    """The schema with ``dflray.schema_version`` in its metadata."""
    return schema.with_metadata({b"dflray.schema_version": str(SCHEMA_VERSION).encode()})


def table_from_rows(name: str, rows: list[dict]) -> pa.Table:
    """Builds a table of the current schema from dict rows; missing columns become null."""
    schema = TABLES[name]
    cols = {}
    for f in schema:
        if f.name == "schema_version":
            cols[f.name] = pa.array([SCHEMA_VERSION] * len(rows), f.type)
        else:
            cols[f.name] = pa.array([_plain(r.get(f.name)) for r in rows], f.type)
    return pa.table(cols, schema=with_version(schema))


def _plain(v):
    if isinstance(v, np.ndarray):
        return v.ravel().tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def conform(name: str, table: pa.Table) -> pa.Table:
    """Upgrades a table read from storage to the current schema version (migrations in order)."""
    version = int(table.column("schema_version")[0].as_py()) if table.num_rows and "schema_version" in table.column_names else SCHEMA_VERSION
    if version > SCHEMA_VERSION:
        raise ValueError(f"{name} table has schema_version {version}, newer than this dflray ({SCHEMA_VERSION}); upgrade dflray")
    while version < SCHEMA_VERSION:
        table = _MIGRATIONS[name][version](table)
        version += 1
    return table.select([f.name for f in TABLES[name]]).cast(with_version(TABLES[name]))


def read_table(name: str, files: list, filesystem=None, columns: list[str] | None = None) -> pa.Table:
    """Reads Parquet files of one table (possibly of older versions) as the current schema."""
    if not files:
        empty = with_version(TABLES[name]).empty_table()
        return empty.select(columns) if columns else empty
    parts = []
    for f in files:
        t = pq.read_table(f, filesystem=filesystem)
        parts.append(conform(name, t))
    table = pa.concat_tables(parts)
    return table.select(columns) if columns else table


def landmarks_of(table: pa.Table) -> np.ndarray:
    """(N, 68, 2) float32 landmarks of a faces table."""
    flat = table.column("landmarks").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(-1, 68, 2).astype(np.float32)


def matrices_of(table: pa.Table) -> np.ndarray:
    """(N, 2, 3) float32 frame→crop matrices of a faces table."""
    flat = table.column("align_mat").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(-1, 2, 3).astype(np.float32)
