"""The Ray Data side of training: one faceset's sample stream as a Ray Data pipeline.

The sample functions themselves (``_repeat_rows``, ``_make_samples``, the epoch plan) are Ray-free and
live in ``dflray.train.data``, so that ``dflray.train.local`` feeds a plain PyTorch script the same
samples without importing Ray.
"""

from __future__ import annotations

import numpy as np
import ray

from dflray.config import TrainConfig
from dflray.faceset import committed_face_files
from dflray.io.storage import arrow_filesystem
from dflray.train.data import KEY_COLUMNS, SAMPLE_COLUMNS, FacesetInfo, _make_samples, _repeat_rows, epoch_plan

__all__ = ["build_dataset"]


def build_dataset(info: FacesetInfo, cfg: TrainConfig, role: str, ct_refs: np.ndarray | None = None,
                  needed: int | None = None):
    """The Ray Data pipeline of one faceset's training samples (re-executed, reshuffled, every epoch).

    Args:
        info: from ``inspect_faceset``.
        cfg: the effective training config.
        role: ``src`` or ``dst`` (picks the flip option; colour transfer applies to src only).
        ct_refs: dst training crops (N×R×R×3 uint8 RGB) that src samples are colour-transferred toward.
        needed: samples the run takes from this faceset (all workers): a short run's pass is no longer
            than that (``epoch_plan``).
    """
    fs, _ = arrow_filesystem(info.uri)
    ds = ray.data.read_parquet(committed_face_files(info.uri), filesystem=fs).select_columns(
        SAMPLE_COLUMNS + KEY_COLUMNS)
    times, yaw, _ = epoch_plan(info, cfg, needed)
    if times > 1 or yaw is not None or info.cuts:
        ds = ds.flat_map(_repeat_rows, fn_kwargs={"times": times, "yaw_repeats": yaw, "cuts": info.cuts},
                         num_cpus=cfg.augment_cpus)
    ds = ds.select_columns(SAMPLE_COLUMNS).random_shuffle()
    flip = cfg.augment.random_src_flip if role == "src" else cfg.augment.random_dst_flip
    return ds.map_batches(
        _make_samples, batch_size=cfg.batch_size, num_cpus=cfg.augment_cpus, batch_format="numpy",
        fn_kwargs={"resolution": cfg.model.resolution, "face_type": cfg.model.face_type, "augment": cfg.augment,
                   "flip": flip, "ct_refs": ct_refs if role == "src" else None})
