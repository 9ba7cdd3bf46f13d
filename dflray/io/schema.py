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

SCHEMA_VERSION = 6
# Version history: 1 the first release; 2 adds the XSeg columns of ``faces`` (xseg_polys, xseg_label,
# xseg, xseg_model), ``merged.xseg_sha256`` and ``dataset.xseg_id`` (the XSeg model of an XSeg mask mode);
# 3 adds ``dataset.swap_success`` and the quality metrics of ``merged`` (every name in
# ``config.QUALITY_METRICS``, and ``quality_note``); 4 adds ``detail`` to ``merged`` and ``dataset`` (the
# fake face's detail over the real face's); 5 adds ``videos.fingerprint`` (what makes an input the same
# file on a rerun) and ``videos.nodes`` / ``merged.node`` (the Ray nodes that did the work). New columns
# are null in tables written before. 6 adds ``plan.method`` and ``dataset.method_version`` /
# ``dataset.method_settings`` (the forgery-method axis, ``dflray.methods``).


def _f32(n: int) -> pa.DataType:
    return pa.list_(pa.float32(), n)


FACES = pa.schema([
    ("video_id", pa.string()),
    ("frame_index", pa.int32()),
    ("face_index", pa.int16()),
    ("source_uri", pa.string()),
    ("frame_width", pa.int32()),
    ("frame_height", pa.int32()),
    ("timestamp", pa.float64()),  # presentation time of the frame, seconds from the stream's start
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
    ("xseg_polys", pa.string()),  # user XSeg label polygons, JSON [{type: include|exclude, points}] in crop px
    ("xseg_label", pa.binary()),  # user XSeg label mask (PNG, crop size): polygons rasterised or imported
    ("xseg", pa.binary()),  # the XSeg model's predicted visible-face mask (PNG, crop size)
    ("xseg_model", pa.string()),  # id of the XSeg model that predicted ``xseg``
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
    ("fingerprint", pa.string()),  # size and modification time (or etag) when read: a changed file is new
    ("nodes", pa.list_(pa.string())),  # Ray node ids that decoded its segments
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


# One column per DeepFaceLab merge setting (``dflray.config.MergeSettings``), typed like its field. Written
# out here, not derived from the config class, so that the schema changes only with a new version;
# tests/unit/test_schema.py checks the two agree.
MERGE_SETTING_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("mode", pa.string()),
    ("mask_mode", pa.string()),
    ("erode", pa.int32()),
    ("blur", pa.int32()),
    ("face_scale", pa.int32()),
    ("masked_hist_match", pa.bool_()),
    ("hist_match_threshold", pa.int32()),
    ("color_transfer", pa.string()),
    ("sharpen_mode", pa.string()),
    ("sharpen_amount", pa.int32()),
    ("denoise", pa.int32()),
    ("bicubic_degrade", pa.int32()),
    ("color_degrade", pa.int32()),
    ("motion_blur", pa.int32()),
]


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
    ("xseg_sha256", pa.string()),  # the XSeg model's sha256 when the mask mode is an XSeg one
    ("arch", pa.string()),
    ("face_type", pa.string()),
    ("resolution", pa.int32()),
    *MERGE_SETTING_COLUMNS,
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
    # Quality metrics (merge option quality.measure; null when off or not measurable), as in ``DATASET``.
    ("swap_success", pa.float32()),
    ("id_distance_source", pa.float32()),
    ("id_distance_target", pa.float32()),
    ("pose_error", pa.float32()),
    ("expression_error", pa.float32()),
    ("flicker", pa.float32()),
    ("seam", pa.float32()),
    ("detail", pa.float32()),
    ("quality_note", pa.string()),  # why the metrics are missing, when measuring failed
    ("node", pa.string()),  # the Ray node id that merged it
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


# The generated dataset's plan: one row per real video and per planned fake (``plan.parquet``).
PLAN = pa.schema([
    ("item_id", pa.string()),  # real: the real video's id; fake: a hash of (target video, source identity[, method])
    ("kind", pa.string()),  # REAL | FAKE
    ("video_id", pa.string()),  # the real video (for a fake, its target/destination video)
    ("uri", pa.string()),
    ("identity", pa.string()),  # the real video's person (for a fake: the target identity)
    ("identity_source", pa.string()),  # label | cluster
    ("split", pa.string()),  # train | val | test
    ("source_identity", pa.string()),  # fakes: the person put onto the video
    ("model_key", pa.string()),  # fakes: the model that makes it (source identity, or source__target); "" none
    ("seed", pa.int64()),
    ("attributes", pa.string()),  # JSON of the manifest's attribute columns
    ("method", pa.string()),  # fakes: the plan's forgery method (dflray.methods); "" or null: the plan's model
    ("schema_version", pa.int16()),
])

# The generated dataset's index (``index.parquet``): one row per published video, real and fake, per
# compression level. Paths are relative to the dataset root.
DATASET = pa.schema([
    ("video_id", pa.string()),  # unique over the dataset (the file name's stem in the flat and dfdc layouts)
    ("name", pa.string()),  # the key of metadata.json
    ("path", pa.string()),
    ("mask_path", pa.string()),  # FAKE: manipulation mask video (null for REAL)
    ("label", pa.string()),  # REAL | FAKE
    ("split", pa.string()),
    ("original", pa.string()),  # FAKE: video_id of the REAL row it was made from (same compression)
    ("original_name", pa.string()),  # FAKE: that row's name (metadata.json's "original")
    ("source_uri", pa.string()),  # the real input video (a fake's target video)
    ("source_identity", pa.string()),  # FAKE: the person put onto the video
    ("target_identity", pa.string()),  # the person in the real video
    ("method", pa.string()),  # FAKE: e.g. dflray-liae-ud, dflray-sbi
    ("method_version", pa.int32()),  # FAKE: the method's version (dflray.methods); null for datasets before 6
    ("method_settings", pa.string()),  # FAKE: JSON of the method's own settings (model methods: {})
    ("arch", pa.string()),
    ("model_id", pa.string()),  # sha256 of the model's weights
    ("xseg_id", pa.string()),  # sha256 of the XSeg model when the mask mode is an XSeg one
    ("item_id", pa.string()),  # the plan row
    ("compression", pa.string()),  # c0 | c23 | c40
    ("crf", pa.int32()),  # CRF of the final encode
    ("perturbation", pa.string()),  # e.g. "blur:3+noise:2", or "none"
    ("perturbation_values", pa.string()),  # JSON {kind: parameter value}
    *MERGE_SETTING_COLUMNS,
    ("smooth_window", pa.int32()),
    ("seed", pa.int64()),
    ("settings_sha256", pa.string()),
    # The headline: share of sampled frames whose face, re-detected in the fake, is recognised as the source
    # person (nearer the source identity than the real face it replaced, and < 0.6); no face found = failure.
    ("swap_success", pa.float32()),
    ("id_distance_source", pa.float32()),  # dlib distance of the swapped face to the source identity
    ("id_distance_target", pa.float32()),  # ... to the destination identity (the real face it replaced)
    ("pose_error", pa.float32()),  # mean |yaw|,|pitch|,|roll| difference vs the destination frame, degrees
    ("expression_error", pa.float32()),  # landmark distance after similarity alignment / inter-ocular
    ("flicker", pa.float32()),  # temporal change inside the mask, fake minus real (grey levels)
    ("seam", pa.float32()),  # gradient energy on the mask boundary, fake over real
    ("detail", pa.float32()),  # face-scale detail (Laplacian variance) inside the mask, fake over real
    ("quality_pass", pa.bool_()),
    ("quality_reasons", pa.string()),  # the failed gates, "; "-separated
    ("frames", pa.int32()),
    ("frames_swapped", pa.int32()),
    ("fps", pa.float64()),
    ("duration", pa.float64()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("has_audio", pa.bool_()),
    ("sha256", pa.string()),
    ("mask_sha256", pa.string()),
    ("status", pa.string()),  # ok | dropped (failed a gate with quality.action=drop) | error
    ("error", pa.string()),
    ("dataset_id", pa.string()),
    ("run_id", pa.string()),
    ("schema_version", pa.int16()),
])

# Per frame of each published fake (``frames.parquet``): where it was manipulated.
DATASET_FRAMES = pa.schema([
    ("video_id", pa.string()),
    ("frame_index", pa.int32()),
    ("timestamp", pa.float64()),
    ("faces_swapped", pa.int16()),
    ("bbox", _f32(4)),  # x1, y1, x2, y2 of the manipulation mask (null when untouched)
    ("mask_area", pa.float32()),
    ("mask_path", pa.string()),  # the mask video; its frame at frame_index is this frame's mask
    ("schema_version", pa.int16()),
])

# ``dflray evaluate``'s results (``evaluation.parquet`` in the dataset root): one row per level, slice and
# value; every row also carries how the evaluation was run.
EVALUATION = pa.schema([
    ("level", pa.string()),  # frame | video (a video's score is the mean of its frame scores)
    ("slice", pa.string()),  # all | method | compression | perturbation | quality
    ("value", pa.string()),  # e.g. c23, blur, low; "all" for the whole test set
    ("reals", pa.string()),  # slice: the slice's reals and fakes | all: the slice's fakes against all test reals
    ("auc", pa.float64()),  # NaN when the slice has no real
    ("auc_lo", pa.float64()),  # bootstrap percentile interval (videos resampled)
    ("auc_hi", pa.float64()),
    ("n_real", pa.int64()),  # videos
    ("n_fake", pa.int64()),
    ("n_real_frames", pa.int64()),
    ("n_fake_frames", pa.int64()),
    ("note", pa.string()),
    ("protocol", pa.string()),  # test-split | holdout (a seeded share of the train split: not identity-disjoint)
    ("dataset", pa.string()),  # the dataset tested
    ("train_dataset", pa.string()),  # the dataset the detector was trained on (the same one, or --train-dataset)
    ("detector", pa.string()),  # efficientnet-b0
    ("detector_uri", pa.string()),  # the detector's weights (a checkpoint's detector.pt)
    ("detector_sha256", pa.string()),
    ("init_weights", pa.string()),  # the weights training started from (null: random initialisation)
    ("epochs", pa.int32()),
    ("size", pa.int32()),  # crop side = input size, pixels
    ("frames", pa.int32()),  # crops per video at most
    ("train_videos", pa.int64()),
    ("test_videos", pa.int64()),  # scored
    ("failed_videos", pa.int64()),  # test videos without crops, left out (see the run's summary)
    # identities (target and source) in both the training and the test videos; null across datasets, whose
    # identity labels are not comparable
    ("shared_identities", pa.int64()),
    ("bootstrap", pa.int32()),
    ("confidence", pa.float64()),
    ("seed", pa.int64()),
    ("created", pa.string()),  # ISO 8601, UTC
    ("schema_version", pa.int16()),
])

TABLES: dict[str, pa.Schema] = {"faces": FACES, "videos": VIDEOS, "errors": ERRORS, "merged": MERGED,
                                "merged_frames": MERGED_FRAMES, "plan": PLAN, "dataset": DATASET,
                                "dataset_frames": DATASET_FRAMES, "evaluation": EVALUATION}



def _set_version(table: pa.Table, version: int) -> pa.Table:
    i = table.column_names.index("schema_version")
    return table.set_column(i, "schema_version", pa.array([version] * table.num_rows, pa.int16()))


_QUALITY_COLUMNS = ("swap_success", "id_distance_source", "id_distance_target", "pose_error", "expression_error",
                    "flicker", "seam")
# version -> table -> the columns that version added (null in tables written before it)
_NEW_COLUMNS: dict[int, dict[str, tuple[str, ...]]] = {
    2: {"faces": ("xseg_polys", "xseg_label", "xseg", "xseg_model"), "merged": ("xseg_sha256",),
        "dataset": ("xseg_id",)},
    3: {"merged": (*_QUALITY_COLUMNS, "quality_note"), "dataset": ("swap_success",)},
    4: {"merged": ("detail",), "dataset": ("detail",)},
    5: {"videos": ("fingerprint", "nodes"), "merged": ("node",)},
    6: {"plan": ("method",), "dataset": ("method_version", "method_settings")},
}


def _add_columns(name: str, version: int) -> Callable[[pa.Table], pa.Table]:
    """The migration to ``version``: appends the columns it added as nulls (select orders them later)."""
    def up(table: pa.Table) -> pa.Table:
        for col in _NEW_COLUMNS[version].get(name, ()):
            if col not in table.column_names:
                table = table.append_column(col, pa.nulls(table.num_rows, TABLES[name].field(col).type))
        return _set_version(table, version)
    return up


# table -> {from_version: function upgrading a table by one version}
_MIGRATIONS: dict[str, dict[int, Callable[[pa.Table], pa.Table]]] = {
    name: {v - 1: _add_columns(name, v) for v in _NEW_COLUMNS} for name in TABLES}


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
    if table.num_rows and "schema_version" in table.column_names:
        version = int(table.column("schema_version")[0].as_py())
    else:  # an empty table: the version its writer put in the schema's metadata
        version = int((table.schema.metadata or {}).get(b"dflray.schema_version", str(SCHEMA_VERSION)))
    if version > SCHEMA_VERSION:
        raise ValueError(f"{name} table has schema_version {version}, newer than this dflray ({SCHEMA_VERSION}); upgrade dflray")
    while version < SCHEMA_VERSION:
        table = _MIGRATIONS[name][version](table)
        version += 1
    return table.select([f.name for f in TABLES[name]]).cast(with_version(TABLES[name]))


# Small files (a one-row record per task, one published video's row) are merged _MERGE_EVERY at a time as
# they are read. Held apart, each small table keeps its own buffers and bookkeeping, 55-60 KiB a file
# whatever its rows (bench/read_tables.py: 2,000 published rows +121 MiB apart, +10 MiB merged); the
# dataset job's driver grew ~170 KiB a video from its merge records and published rows (bench/generate.py).
_SMALL_PART = 1 << 20
_MERGE_EVERY = 64


def read_table(name: str, files: list, filesystem=None, columns: list[str] | None = None) -> pa.Table:
    """Reads Parquet files of one table (possibly of older versions) as the current schema, in file order.

    Small files' tables are merged in groups as they are read (their count does not grow the memory the
    result holds); a large file's table is kept as read (merging could pass a binary column's 2 GiB limit).
    """
    if not files:
        empty = with_version(TABLES[name]).empty_table()
        return empty.select(columns) if columns else empty
    parts, small = [], []

    def merge_small():
        if small:
            parts.append(pa.concat_tables(small).combine_chunks())
            small.clear()

    for f in files:
        t = conform(name, pq.read_table(f, filesystem=filesystem))
        t = t.select(columns) if columns else t
        if t.nbytes >= _SMALL_PART:
            merge_small()  # keeps the files' order
            parts.append(t)
            continue
        small.append(t)
        if len(small) == _MERGE_EVERY:
            merge_small()
    merge_small()
    return pa.concat_tables(parts)


def landmarks_of(table: pa.Table) -> np.ndarray:
    """(N, 68, 2) float32 landmarks of a faces table."""
    flat = table.column("landmarks").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(-1, 68, 2).astype(np.float32)


def matrices_of(table: pa.Table) -> np.ndarray:
    """(N, 2, 3) float32 frame→crop matrices of a faces table."""
    flat = table.column("align_mat").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(-1, 2, 3).astype(np.float32)
