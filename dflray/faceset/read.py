"""Reading a faceset (committed data only, current schema): the stages' shared reader."""

from __future__ import annotations

import pyarrow as pa

from dflray.io import schema
from dflray.io.storage import arrow_filesystem, fs_and_path, join, list_files


def _read(faceset: str, name: str, columns: list[str] | None = None) -> pa.Table:
    fs, _ = arrow_filesystem(faceset)
    files = [fs_and_path(u)[1] for u in list_files(join(faceset, name), ".parquet")]
    return schema.read_table(name, files, filesystem=fs, columns=columns)


def read_videos(faceset: str) -> pa.Table:
    """The ``videos`` table: one row per input video (status ok | no_faces | partial | error).

    A video tried again by a later run (one that could not be reached, or held no faces, before) has a
    record in each run: the latest one is its row.
    """
    return latest_records(_read(faceset, "videos"))


def latest_records(videos: pa.Table) -> pa.Table:
    """The last row of each ``video_id`` of a ``videos`` table read in run order (files sort by run id)."""
    ids = videos.column("video_id").to_pylist()
    last = {vid: i for i, vid in enumerate(ids)}
    if len(last) == len(ids):
        return videos
    return videos.take(sorted(last.values()))


def read_errors(faceset: str) -> pa.Table:
    """The ``errors`` table: one row per failure (uri, stage, type, message)."""
    return _read(faceset, "errors")


def face_files_by_commit(faceset: str) -> tuple[list[str], list[str]]:
    """The faceset's ``faces`` file URIs split into (of committed runs, of runs without a videos record).

    A run's record is ``videos/RUN_ID.parquet``; its faces files are ``faces/RUN_ID-*.parquet``.
    """
    committed = {u.rsplit("/", 1)[-1].removesuffix(".parquet") for u in list_files(join(faceset, "videos"), ".parquet")}
    files = list_files(join(faceset, "faces"), ".parquet")
    done = [u for u in files if u.rsplit("/", 1)[-1].split("-", 1)[0] in committed]
    return done, [u for u in files if u.rsplit("/", 1)[-1].split("-", 1)[0] not in committed]


def committed_face_files(faceset: str) -> list[str]:
    """Paths (inside the faceset's filesystem) of the ``faces`` files of committed runs only."""
    return [fs_and_path(u)[1] for u in face_files_by_commit(faceset)[0]]


def face_holders(faceset: str) -> dict[str, list[str]]:
    """video_id → the committed faces files (paths inside the faceset's filesystem) that hold it.

    Reads only the ``video_id`` column of each file, so a worker can then open just its video's files.
    """
    import pyarrow.parquet as pq

    fs, _ = arrow_filesystem(faceset)
    holders: dict[str, list[str]] = {}
    for f in committed_face_files(faceset):
        for vid in pq.read_table(f, columns=["video_id"], filesystem=fs).column(0).unique().to_pylist():
            holders.setdefault(vid, []).append(f)
    return holders


def read_faces(faceset: str, columns: list[str] | None = None) -> pa.Table:
    """The ``faces`` table of committed runs, sorted by (video_id, frame_index, face_index).

    Example:
        >>> faces = read_faces("facesets/a", columns=["video_id", "frame_index", "landmarks"])  # doctest: +SKIP
    """
    fs, _ = arrow_filesystem(faceset)
    files = committed_face_files(faceset)
    cols = columns and list(dict.fromkeys(["video_id", "frame_index", "face_index", *columns]))
    table = schema.read_table("faces", files, filesystem=fs, columns=cols)
    table = table.sort_by([("video_id", "ascending"), ("frame_index", "ascending"), ("face_index", "ascending")])
    return table.select(columns) if columns else table


def read_video_faces(faceset: str, files: list[str], video_id: str, columns: list[str] | None = None) -> pa.Table | None:
    """One video's face rows, reading only ``files`` (``face_holders(faceset)[video_id]``).

    Args:
        faceset: the faceset URI (its filesystem resolves ``files``).
        files: the committed faces files holding the video's rows, as ``face_holders`` lists them.
        video_id: the video.
        columns: columns to read (all by default).

    Returns:
        The rows, or None when ``files`` is empty (the video has no faces).
    """
    if not files:
        return None
    import pyarrow.dataset as pads

    fs, _ = arrow_filesystem(faceset)
    ds = pads.dataset(files, filesystem=fs, format="parquet")  # paths inside the faceset's filesystem
    return ds.to_table(columns=columns, filter=pads.field("video_id") == video_id)
