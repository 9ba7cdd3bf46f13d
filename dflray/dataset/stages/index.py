"""Stage 7, index: the dataset's tables, rebuilt from the publish records at the end of every run.

``OUT/index.parquet`` (schema ``dataset``), ``OUT/frames.parquet`` (``dataset_frames``: per frame of
every published fake, with its mask video), ``metadata.json`` (DFDC format; with the DFDC layout also
one per part folder) and ``errors.parquet``.
"""

from __future__ import annotations

from typing import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dflray.config import GenerateConfig
from dflray.dataset import layout as lay
from dflray.dataset.stages.base import GenerateSummary, TableList
from dflray.faceset import read_tables, write_table
from dflray.io import schema
from dflray.io.storage import arrow_filesystem, atomic_write, fs_and_path, join

__all__ = ["consolidate"]


def consolidate(cfg: GenerateConfig, out: str, work: str, summary: GenerateSummary) -> pa.Table:
    """Rebuilds index.parquet, frames.parquet, metadata.json and errors.parquet from the records.

    Returns:
        The index (one row per published video and compression level, by ``video_id``).
    """
    index = read_tables("dataset", join(work, "published")).sort_by("video_id")
    with atomic_write(join(out, "index.parquet")) as f:
        pq.write_table(index, f)
    # Read a batch at a time (``TableList``), never as a list of every video's dict.
    rows = TableList(index.select(["video_id", "name", "path", "mask_path", "label", "split", "original_name",
                                   "status", "item_id", "error", "method", "method_version"]))
    for c in index.column("status").value_counts().to_pylist():
        summary.published[c["values"]] = summary.published.get(c["values"], 0) + c["counts"]
    # A fake's metrics are measured once, on its lossless merge, and repeated at each compression level:
    # one value per published fake.
    ok_fakes = index.filter(pc.and_(pc.equal(index.column("label"), "FAKE"), pc.equal(index.column("status"), "ok")))
    per_fake = dict(zip(ok_fakes.column("item_id").to_pylist(), ok_fakes.column("swap_success").to_pylist()))
    from dflray.quality import success_stats

    summary.swap_success = success_stats(per_fake.values())
    for path, doc in lay.metadata_files(cfg.layout, rows).items():
        with atomic_write(join(out, path)) as f:
            f.write(lay.dumps(doc))
    _write_frames(rows, out, work)
    errors = [{"uri": r["path"], "video_id": r["video_id"], "stage": "generate", "type": "error",
               "message": r["error"]} for r in rows if r["status"] == "error"]
    write_table("errors", errors, join(out, "errors.parquet"))
    return index


def _write_frames(rows: Iterable[dict], out: str, work: str) -> None:
    """Per frame of every published fake: the merge's frame table, keyed by the published video; written
    one fake at a time, so the driver never holds the whole table."""
    fs, _ = arrow_filesystem(work)
    target = schema.with_version(schema.DATASET_FRAMES)
    with atomic_write(join(out, "frames.parquet")) as f, pq.ParquetWriter(f, target) as writer:
        for r in rows:
            if r["label"] != "FAKE" or r["status"] != "ok":
                continue
            uri = join(work, "fakes", "frames", f"{r['item_id']}.parquet")
            t = schema.read_table("merged_frames", [fs_and_path(uri)[1]], filesystem=fs)
            n = t.num_rows
            writer.write_table(pa.table({
                "video_id": pa.array([r["video_id"]] * n, pa.string()), "frame_index": t.column("frame_index"),
                "timestamp": t.column("timestamp"), "faces_swapped": t.column("faces_swapped"),
                "bbox": t.column("bbox"), "mask_area": t.column("mask_area"),
                "mask_path": pa.array([r["mask_path"]] * n, pa.string()),
                "schema_version": pa.array([schema.SCHEMA_VERSION] * n, pa.int16())}).cast(target))
