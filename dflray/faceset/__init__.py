"""Facesets and the commit protocol, the shared layer every stage reads and writes.

Knows no stage and needs no Ray, so a plain script (``bench/gpu.py``) reads facesets with it too.

Modules:
    read: committed ``faces``, ``videos`` and ``errors`` tables of a faceset.
    commit: the one commit protocol (stage → move in → record) of every output root: facesets
        (extraction, ``import-dfl``), merge outputs and datasets.
    ids: ``video_id``, the id every stage gives a video URI.
"""

from dflray.faceset.commit import (
    Commit,
    check_writable,
    faceset_recover,
    new_run_id,
    publish_file,
    read_tables,
    sha256_file,
    undone_if_failed,
    write_table,
)
from dflray.faceset.ids import video_id
from dflray.faceset.read import (
    committed_face_files,
    face_holders,
    read_errors,
    read_faces,
    read_video_faces,
    read_videos,
)

__all__ = [
    "Commit",
    "check_writable",
    "undone_if_failed",
    "committed_face_files",
    "face_holders",
    "faceset_recover",
    "new_run_id",
    "publish_file",
    "read_errors",
    "read_faces",
    "read_tables",
    "read_video_faces",
    "read_videos",
    "sha256_file",
    "video_id",
    "write_table",
]
