"""How a merge worker gets its swap model: one ``PredictFn`` (``dflray.merge.video``) from ``PredictConfig``.

With ``predict.concurrency`` > 0 the driver starts that many predictor actors (``start_predict_pool``,
on GPUs when ``predict.num_gpus`` asks for them) that every merge worker shares, sending them crops
round robin; with 0 each worker loads the model itself. ``make_predict`` gives a worker either, so the
merge job and the dataset job get their model the same way.

Example:
    >>> pool = start_predict_pool(cfg.predict, model_uri)  # on the driver  # doctest: +SKIP
    >>> predict = make_predict(cfg.predict, model_uri, pool=pool,
    ...                        worker_cpus=cfg.workers.num_cpus)  # in each merge worker  # doctest: +SKIP
    >>> stop_predict_pool(pool)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Sequence

import numpy as np
import ray

from dflray.config import PredictConfig
from dflray.merge.video import InlinePredict, PredictFn

log = logging.getLogger("dflray.merge")

__all__ = ["make_predict", "start_predict_pool", "stop_predict_pool"]


class _PredictActor:
    """Holds the swap model; every merge worker sends it crops (on a GPU when it has one)."""

    def __init__(self, uri: str, device: str, threads: int, precision: str = "fp32",
                 morph_factor: float | None = None):
        import torch

        from dflray.merge.predict import Predictor

        self.predictor = Predictor.load(uri, None if device == "auto" else device, precision, morph_factor)
        # On CPU every core of the node by default (Ray caps actors at OMP_NUM_THREADS=num_cpus): the
        # model is the bottleneck there, and the merge workers' decode/paste/encode interleave with it.
        if not threads:
            threads = 1 if self.predictor.device.type == "cuda" else len(os.sched_getaffinity(0))
        torch.set_num_threads(threads)

    def predict(self, crops: np.ndarray):
        return self.predictor(crops)


class _PoolPredict:
    """``PredictFn`` over the shared predictor actors, round robin from a per-worker offset.

    A predictor lost with its node restarts (``max_restarts=-1``), but calls in flight to it fail with
    ``ActorUnavailableError`` / ``ActorDiedError``. Prediction is a pure function of the crops, so a
    failed call is sent again, to the next actor, until ``retry_seconds`` have passed: losing a node
    costs the merge a wait, not the video.
    """

    def __init__(self, actors: list, batch_size: int, retry_seconds: float = 600.0):
        self.actors = actors
        self.batch_size = batch_size
        self.retry_seconds = retry_seconds
        self.i = int.from_bytes(os.urandom(2), "big")

    def _send(self, crops: np.ndarray):
        actor = self.actors[self.i % len(self.actors)]
        self.i += 1
        return actor.predict.remote(crops)

    def submit(self, crops: np.ndarray):
        return self._send(crops), crops

    def result(self, handle):
        ref, crops = handle
        deadline = time.monotonic() + self.retry_seconds
        wait = 0.5
        while True:
            try:
                return ray.get(ref)
            except ray.exceptions.RayActorError as e:
                if time.monotonic() + wait > deadline:
                    raise
                log.warning("predictor unavailable (%s); sending the batch again in %.1f s",
                            type(e).__name__, wait)
                time.sleep(wait)
                wait = min(wait * 2, 10.0)
                ref = self._send(crops)


def start_predict_pool(cfg: PredictConfig, model_uri: str) -> list[Any]:
    """Starts the shared predictor actors of a merge run (call on the driver, in a Ray session).

    Args:
        cfg: the predictor pool's config: ``concurrency`` actors of ``num_cpus`` / ``num_gpus`` each,
            running the model on ``device`` at ``precision`` with ``threads`` torch threads.
        model_uri: the exported model (``dflray export``), any fsspec URL.

    Returns:
        The actor handles to pass to every worker's ``make_predict``; empty when ``concurrency`` is 0.
    """
    if not cfg.concurrency:
        return []
    actor = ray.remote(_PredictActor).options(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus or None,
                                              max_restarts=-1, max_task_retries=2)
    return [actor.remote(model_uri, cfg.device, cfg.threads, cfg.precision, cfg.morph_factor)
            for _ in range(cfg.concurrency)]


def stop_predict_pool(pool: Sequence[Any]) -> None:
    """Ends the actors ``start_predict_pool`` started."""
    for a in pool:
        ray.kill(a)


def make_predict(cfg: PredictConfig, model_uri: str, *, pool: Sequence[Any] = (),
                 worker_cpus: float = 1.0) -> PredictFn:
    """The swap model of one merge worker.

    Args:
        cfg: the predictor config (``batch_size``, and for an in-process model ``device``, ``precision``
            and ``threads``).
        model_uri: the exported model, any fsspec URL.
        pool: ``start_predict_pool``'s actors; empty runs the model in this process instead.
        worker_cpus: CPUs of this worker: an in-process model's torch threads when ``cfg.threads`` is 0.

    Returns:
        A ``PredictFn``: round robin over ``pool``, or the model loaded here (``InlinePredict``).

    Example:
        >>> predict = make_predict(PredictConfig(concurrency=0), "model.ts")  # doctest: +SKIP
        >>> faces, face_masks, dst_masks = predict.result(predict.submit(crops))  # doctest: +SKIP
    """
    if pool:
        return _PoolPredict(list(pool), cfg.batch_size)
    import torch

    from dflray.merge.predict import Predictor

    torch.set_num_threads(max(1, cfg.threads or int(np.ceil(worker_cpus))))
    device = None if cfg.device == "auto" else cfg.device
    return InlinePredict(Predictor.load(model_uri, device, cfg.precision, cfg.morph_factor), cfg.batch_size)
