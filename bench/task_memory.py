"""Driver memory of ``run_tasks``: how much the driver grows per task of a stage, with the tasks in one block
each or in at most 16 blocks per actor, in one Ray Data pipeline or in windows of pipelines.

``dflray.dataset.stages.base.run_tasks`` (the merge, quality and publish stages of ``dflray generate``, export,
evaluate) sends typed tasks through a Ray Data actor pool, in ``dflray.runtime.input_blocks`` blocks: one task
a block while the tasks are few, at most ``BLOCKS_PER_ACTOR`` (16) blocks per actor beyond. Each case runs N
trivial tasks (the actor only answers ok; each task carries 300 bytes, about a real task's size) on a local
2-CPU Ray (two actors), in a fresh process per case, after a 4-task warm-up, and prints the driver's peak
RSS growth (sampled every 0.1 s) and time. A case's second figure is ``run_tasks``' window (tasks per
pipeline; on two actors it runs 4,096 by default, ``TASKS_PER_ACTOR`` an actor), its third the blocks per
actor; 0 is one block per task (what ``run_tasks`` did before 2026-12-06). The tasks are made as they are
read, as the stages make them.

This is a benchmark, not a test: nothing is asserted. Run ``python bench/task_memory.py --help``.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dflray.dataset.stages.base import Task, TaskActor, TaskResult, run_tasks  # noqa: E402


@dataclass(frozen=True)
class _Task(Task):
    payload: str = ""


class _Answer(TaskActor):
    task_type = _Task

    def run(self, task: _Task) -> TaskResult:
        return TaskResult(task.id, "ok")


def _case(n: int, window: int, per_actor: int) -> None:
    import psutil
    import ray
    import ray.data

    import dflray.runtime

    dflray.runtime.BLOCKS_PER_ACTOR = per_actor or 10**9  # 0: one block per task

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray").setLevel(logging.ERROR)
    run_tasks(_Answer, [_Task(id=f"w{i}") for i in range(4)], 0.5, {})
    me = psutil.Process()
    before = me.memory_info().rss
    peak = [before]
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            time.sleep(0.1)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    t = time.perf_counter()
    tasks = (_Task(id=f"t{i}", payload="x" * 300) for i in range(n))  # made as they are read, as the stages do
    done = len(run_tasks(_Answer, tasks, 0.5, {}, window=window))
    seconds = time.perf_counter() - t
    stop.set()
    th.join()
    growth = (peak[0] - before) / 2**20
    print(f"RESULT {n} {window} {per_actor} {done} {growth:.1f} {seconds:.1f}", flush=True)


# One block per task (before 2026-12-06), 16 blocks per actor in one pipeline, in windows of 500, and 30,000
# tasks in run_tasks' own windows (4,096 on two actors: TASKS_PER_ACTOR each) against one pipeline.
DEFAULT_CASES = "3000:3000:0,3000:3000:16,3000:500:16,30000:4096:16,30000:30000:16"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=DEFAULT_CASES, metavar="N:WINDOW:BLOCKS,...",
                    help="tasks, window (tasks per pipeline: run_tasks' window) and blocks per actor (0: one per "
                         f"task) of each case (default {DEFAULT_CASES}; ~4 min on 2 cores)")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.case:
        n, w, b = (int(v) for v in args.case.split(":"))
        _case(n, w, b)
        return
    print("  tasks  window  blocks/actor  pipelines  growth MiB  KiB/task  seconds")
    for case in args.cases.split(","):
        out = subprocess.run([sys.executable, __file__, "--case", case], capture_output=True, text=True).stdout
        line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"  {case}: failed\n{out[-2000:]}")
            continue
        n, w, b, done, growth, seconds = line.split()[1:]
        pipelines = -(-int(n) // int(w))
        per = "1 per task" if int(b) == 0 else b
        print(f"  {int(n):5d}  {int(w):6d}  {per:>12s}  {pipelines:9d}  {float(growth):10.1f}  "
              f"{float(growth) * 1024 / int(n):8.1f}  {float(seconds):7.1f}"
              + ("" if int(done) == int(n) else f"  ({done} results!)"), flush=True)


if __name__ == "__main__":
    main()
