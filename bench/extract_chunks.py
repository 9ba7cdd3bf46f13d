"""Extraction chunk by chunk: does a committed chunk cost more as the faceset grows?

``run_extract`` commits its videos ``commit_every`` at a time (on CPUs, 16 chunks share one streaming
Ray Data pipeline; each chunk is committed when its segments are done). This extracts the first
``--videos`` of ``bench/generate.py``'s clips (made into its cache when missing) with the dataset job's
extract config (``extract.align.size=128``, embedding on) on a local Ray cluster of ``--cpus`` CPUs, and
prints every chunk's seconds from the commit times of ``videos/*.parquet``. Flat seconds per chunk mean
the cost per video does not grow with the faceset. Beside them, what the driver holds after each chunk's
commit (while later chunks run), above what it held after a 4-video warm-up run: its RSS once
``gc.collect()`` and glibc's ``malloc_trim(0)`` have run (no high-water marks, no free pages malloc
keeps), and the growth per video over the second half of the run. Nothing is asserted.

    .venv/bin/python bench/extract_chunks.py --videos 512      # ~8 min on 2 cores
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=512, help="clips to extract (default 512: 8 chunks)")
    ap.add_argument("--commit-every", type=int, default=64, help="videos per chunk (ExtractConfig's default 64)")
    ap.add_argument("--window-chunks", type=int, default=0, metavar="K",
                    help="chunks per streaming pipeline (dflray.extract.pipeline.WINDOW_CHUNKS; default: dflray's own)")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster (default 2)")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "dflray-bench-cache"),
                    help="where bench/generate.py keeps its clips")
    args = ap.parse_args(argv)

    import ray
    from generate import make_clips  # noqa: E402  (bench/generate.py)

    from dflray.config import ExtractConfig, load_config
    from dflray.extract import run_extract
    from dflray.runtime import limit_malloc_arenas

    clips = make_clips(os.path.join(args.cache_dir, "generate-clips-160px-10f"), args.videos, frames=10, size=160)
    cfg = load_config(ExtractConfig, overrides=["align.size=128", f"commit_every={args.commit_every}"])
    import dflray.extract.pipeline as pipeline

    if args.window_chunks:
        pipeline.WINDOW_CHUNKS = args.window_chunks
    import pyarrow as pa

    # (videos committed so far, bytes held, bytes of live Arrow buffers) after each chunk's commit
    held: list[tuple[int, int, int]] = []
    finish = pipeline._finish

    def measured_finish(unit, *a, **k):  # instrumentation only: the chunk commits as in any extraction
        finish(unit, *a, **k)
        held.append(((held[-1][0] if held else 0) + len(unit.videos), _held_rss(), pa.total_allocated_bytes()))

    with tempfile.TemporaryDirectory(prefix="dflray-bench-chunks-") as work:
        limit_malloc_arenas()  # the driver's malloc-arena cap, as dflray.runtime.init_ray sets it in every job
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        run_extract(clips[-4:], os.path.join(work, "warm"), cfg)
        base = _held_rss()
        pipeline._finish = measured_finish
        t0 = time.time()
        s = run_extract(clips, os.path.join(work, "fs"), cfg)
        total = time.time() - t0
        pipeline._finish = finish
        marks = sorted(os.path.getmtime(p) for p in glob.glob(os.path.join(work, "fs", "videos", "*.parquet")))
        ray.shutdown()
    print(f"N={args.videos} commit_every={args.commit_every} window_chunks={pipeline.WINDOW_CHUNKS} "
          f"chunks={len(marks)} total={total:.1f} s "
          f"({total / max(1, args.videos):.2f} s a video) faces={s.faces}")
    prev = t0
    for i, m in enumerate(marks):
        mem = (f"  held {(held[i][1] - base) / 2**20:6.2f} MiB after {held[i][0]} videos (Arrow's pool "
               f"{held[i][2] / 2**20:.2f} MiB)" if i < len(held) else "")
        print(f"  chunk {i}: {m - prev:6.1f} s (ends at {m - t0:7.1f} s){mem}")
        prev = m
    if len(held) >= 4:
        (n0, b0, _), (n1, b1, _) = held[len(held) // 2 - 1], held[-1]
        print(f"  held growth over the second half: {(b1 - b0) / 1024 / max(1, n1 - n0):.1f} KiB a video "
              f"({n0} → {n1} videos)")


def _held_rss() -> int:
    """The driver's RSS after ``gc.collect()`` and glibc's ``malloc_trim(0)``: what it holds."""
    import ctypes
    import gc

    import psutil

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass
    return psutil.Process().memory_info().rss


if __name__ == "__main__":
    main()
