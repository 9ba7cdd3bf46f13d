"""Joining or starting Ray: the one place a job's driver connects to its cluster.

Every Ray job (extract, train, merge, XSeg, generate) calls ``init_ray`` first; nothing else in the
package starts Ray, so a plain script (``bench/gpu.py``) that imports models, losses or facesets never
does.

Example:
    >>> init_ray()  # doctest: +SKIP  (RAY_ADDRESS, or a local cluster)
"""

from __future__ import annotations

import ray

__all__ = ["init_ray"]


def init_ray(address: str | None = None) -> None:
    """Connects to the Ray cluster this job runs in (``RAY_ADDRESS`` or ``address``), else starts a local one."""
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=True)
