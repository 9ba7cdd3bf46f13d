"""Joining or starting Ray: the one place a job's driver connects to its cluster.

Every Ray job (extract, train, merge, XSeg, generate) calls ``init_ray`` first; nothing else in the
package starts Ray, so a plain script (``bench/gpu.py``) that imports models, losses or facesets never
does. ``input_blocks`` sizes the blocks a job's pipeline reads its work items in.

Example:
    >>> init_ray()  # doctest: +SKIP  (RAY_ADDRESS, or a local cluster)
"""

from __future__ import annotations

import ray

__all__ = ["BLOCKS_PER_ACTOR", "init_ray", "input_blocks"]

# Ray keeps about 10 KiB of driver memory per block of a pipeline for as long as the job runs
# (bench/task_memory.py), so one block per video would grow the driver with the videos (~1 GB at 100,000).
# A fixed number of blocks per actor keeps it flat, and still balances the load: a stage's tail is at most
# about one block, 1/16 of an actor's share.
BLOCKS_PER_ACTOR = 16


def init_ray(address: str | None = None) -> None:
    """Connects to the Ray cluster this job runs in (``RAY_ADDRESS`` or ``address``), else starts a local one."""
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=True)


def input_blocks(items: int, actors: int) -> int:
    """How many blocks a pipeline of ``items`` work items (videos, fakes) on ``actors`` actors
    reads them in: one item per block while they are few, at most ``BLOCKS_PER_ACTOR`` blocks per actor
    beyond.

    Example:
        >>> input_blocks(10, 2), input_blocks(100_000, 2)
        (10, 32)
    """
    return max(1, min(items, max(1, actors) * BLOCKS_PER_ACTOR))
