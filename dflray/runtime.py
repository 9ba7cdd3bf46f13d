"""Joining or starting Ray: the one place a job's driver connects to its cluster.

Every Ray job (extract, train, merge, XSeg, generate) calls ``init_ray`` first; nothing else in the
package starts Ray, so a plain script (``bench/gpu.py``) that imports models, losses or facesets never
does. ``input_blocks`` sizes the blocks a job's pipeline reads its work items in. ``limit_malloc_arenas``
(called by ``init_ray``) caps glibc's malloc arenas of the driver.

Example:
    >>> init_ray()  # doctest: +SKIP  (RAY_ADDRESS, or a local cluster)
"""

from __future__ import annotations

import ctypes
import os
import platform

import ray

__all__ = ["BLOCKS_PER_ACTOR", "MALLOC_ARENAS", "init_ray", "input_blocks", "limit_malloc_arenas"]

# glibc gives a process's threads malloc arenas of their own, up to 8 per core, and a Ray driver runs ~30
# threads: memory freed in one arena's pages that still hold a live block stays in the RSS, and
# ``malloc_trim`` cannot hand it back. Capped at two, the driver of an extraction of 192 videos kept 6.4 MiB
# against 9.1 (bench/README.md, "What the driver holds"). Only the driver: its work is light, and capped
# workers' times were not settled.
MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # mallopt's parameter number for the arena cap (glibc's malloc.h)

# Ray keeps about 10 KiB of driver memory per block of a pipeline for as long as the job runs
# (bench/task_memory.py), so one block per video would grow the driver with the videos (~1 GB at 100,000).
# A fixed number of blocks per actor keeps it flat, and still balances the load: a stage's tail is at most
# about one block, 1/16 of an actor's share.
BLOCKS_PER_ACTOR = 16


def init_ray(address: str | None = None) -> None:
    """Connects to the Ray cluster this job runs in (``RAY_ADDRESS`` or ``address``), else starts a local one."""
    if not ray.is_initialized():
        limit_malloc_arenas()
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


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Caps glibc's malloc arenas of this process (the job's driver) at ``arenas`` (``mallopt``; arenas
    made before stay). Processes it starts (a local cluster's workers) keep glibc's default: with the cap
    in every process, the workers' times did not settle (bench/README.md, "What the driver holds").

    A ``MALLOC_ARENA_MAX`` in the environment is the user's choice (glibc has applied it) and is kept.

    Returns:
        Whether the cap was set: False off glibc, or when the user's own value stands.
    """
    if "MALLOC_ARENA_MAX" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(_M_ARENA_MAX, arenas) == 1
