"""Stage 1, extract: one faceset of every video of the plan (``WORK/faceset``), and the subsets of
it that each model trains on.

The extraction job (``dflray.extract.run_extract``) is itself resumable: a rerun extracts only the videos
not yet committed.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from dflray.config import ExtractConfig
from dflray.dataset.stages.base import write_json
from dflray.extract import run_extract
from dflray.faceset import committed_face_files, read_videos
from dflray.io import schema
from dflray.io.storage import arrow_filesystem, atomic_write, exists, join, open_uri

__all__ = ["extract_faceset", "subset_faceset"]


def extract_faceset(uris: list[str], faceset: str, cfg: ExtractConfig) -> str:
    """Extracts every video of ``uris`` into the faceset at ``faceset`` (what is committed is kept).

    Returns:
        ``faceset`` (its faces files per video: ``dflray.faceset.face_holders``).
    """
    run_extract(uris, faceset, cfg)
    return faceset


def subset_faceset(faceset: str, video_ids: list[str], out: str) -> str:
    """A faceset at ``out`` holding only ``video_ids`` of ``faceset`` (for one model's training).

    Written faces first, then the videos table (the commit), then ``faceset.json``; an existing
    complete subset is kept.
    """
    if exists(join(out, "faceset.json")):
        return out
    import pyarrow.dataset as pads

    wanted = sorted(set(video_ids))
    fs, _ = arrow_filesystem(faceset)
    files = committed_face_files(faceset)
    parts = []
    for f in files:
        t = pq.read_table(f, filesystem=fs, filters=pads.field("video_id").isin(wanted))
        if t.num_rows:
            parts.append(schema.conform("faces", t))
    faces = pa.concat_tables(parts) if parts else schema.with_version(schema.FACES).empty_table()
    with atomic_write(join(out, "faces", "subset-0.parquet")) as f:
        pq.write_table(faces, f)
    videos = read_videos(faceset)
    videos = videos.filter(pa.compute.is_in(videos.column("video_id"), pa.array(wanted)))
    with atomic_write(join(out, "videos", "subset.parquet")) as f:
        pq.write_table(videos, f)
    with open_uri(join(faceset, "faceset.json")) as f:
        doc = json.load(f)
    doc["subset_of"] = faceset
    write_json(join(out, "faceset.json"), doc)
    return out
