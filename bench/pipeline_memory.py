"""What a Ray Data pipeline leaves in the driver, pipeline after pipeline, by its number of blocks.

Each case runs ``--pipelines`` pipelines one after another in a fresh process (a local 2-CPU Ray, the
driver's malloc arenas capped as ``dflray.runtime.init_ray`` caps a job's): ``from_items`` of B one-row
blocks (each row ~300 bytes, about an extraction segment's row) through a pool of two actors that answer
each row with a small one, consumed with ``iter_batches`` as extraction's driver does. After each pipeline
it prints what the driver holds (``gc.collect`` then ``malloc_trim``: no free pages, no passed peaks) above
what it held after a 4-block warm-up pipeline.

What it shows (bench/README.md, "Windows, and what one pipeline leaves"): the first pipeline of a size
leaves memory in proportion to its blocks, later ones of the same size little more. So a job's driver is
bounded by its largest pipeline (``dflray.extract.pipeline.MAX_BLOCKS``, ``run_tasks``' windows), not by
how many videos it runs.

This is a benchmark, not a test: nothing is asserted. Run ``python bench/pipeline_memory.py --help``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _held() -> int:
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    import psutil

    return psutil.Process().memory_info().rss


class _Answer:
    def __call__(self, batch):
        return {"part": batch["part"], "ok": [True] * len(batch["part"])}


def _pipeline(blocks: int) -> float:
    import ray

    rows = [{"part": i, "uri": f"s3://bucket/videos/{i:08d}.mp4", "payload": "x" * 300} for i in range(blocks)]
    t = time.perf_counter()
    ds = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        _Answer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=2), num_cpus=0.5)
    seen = sum(b.num_rows for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    assert seen == blocks, (seen, blocks)
    return time.perf_counter() - t


def child(blocks: int, pipelines: int) -> None:
    import logging
    import warnings

    import ray

    from dflray.runtime import limit_malloc_arenas

    capped = limit_malloc_arenas()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    _pipeline(4)
    base = _held()
    held, secs = [], []
    for _ in range(pipelines):
        secs.append(_pipeline(blocks))
        held.append(_held() - base)
    print(json.dumps({"blocks": blocks, "capped": capped, "held": held, "seconds": secs}))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", default="64,256,1024,2048", help="blocks per pipeline of each case (default 64,256,1024,2048)")
    ap.add_argument("--pipelines", type=int, default=10, help="pipelines per case (default 10)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.pipelines)
        return
    import platform

    import psutil
    import ray

    print(f"What a Ray Data pipeline leaves in the driver; ray {ray.__version__}, python {platform.python_version()}, "
          f"{psutil.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print("each case: its own process, a local 2-CPU Ray, two actors, one row a block; held (MiB) after each "
          "pipeline above what the driver held after a 4-block warm-up")
    cases = []
    for b in (int(x) for x in args.blocks.split(",")):
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", str(b), "--pipelines",
                              str(args.pipelines)], capture_output=True, text=True)
        line = next((x for x in reversed(out.stdout.splitlines()) if x.startswith("{")), None)
        if out.returncode or line is None:
            raise RuntimeError(f"case {b} blocks failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
        cases.append(json.loads(line))
    w = 34

    def row(label: str, cells) -> None:
        print(f"{label:<{w}}" + "".join(f"{c:>14}" for c in cells))

    row("pipeline (held, MiB)", [f"{c['blocks']:,} blocks" for c in cases])
    for k in range(args.pipelines):
        row(f"  {k + 1}", [f"{c['held'][k] / 2**20:.2f}" for c in cases])
    row("first pipeline, KiB a block", [f"{c['held'][0] / 1024 / c['blocks']:.2f}" for c in cases])
    if args.pipelines > 2:  # from the 2nd pipeline's end to the last's: what repeats add
        row("later pipelines, KiB a block", [
            f"{(c['held'][-1] - c['held'][1]) / 1024 / (c['blocks'] * (args.pipelines - 2)):.3f}" for c in cases])
    row("seconds a pipeline (median)", [f"{sorted(c['seconds'])[len(c['seconds']) // 2]:.2f}" for c in cases])
    print(f"driver arenas capped: {cases[0]['capped']}")


if __name__ == "__main__":
    main()
