"""Training without Ray: the swap model's samples as a torch ``IterableDataset`` and its loader.

``FacesetSamples`` streams the same augmented samples as the Ray Data pipeline of ``dflray.train.data``
(one faceset, hold-out left out); ``SwapTrainer`` (``dflray.train.step``) takes the steps. Together
they train on one GPU in a plain PyTorch process, where Ray is not installed (``bench/gpu.py``).

Example:
    >>> src = DataLoader(FacesetSamples("fs/a", cfg, "src", holdout=cfg.holdout), batch_size=None,
    ...                  num_workers=4)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from dflray.config import ConfigError, TrainConfig
from dflray.faceset import read_faces
from dflray.train.augment import make_batch, uniform_yaw_weights
from dflray.train.data import KEY_COLUMNS, SAMPLE_COLUMNS, holdout_cuts, is_heldout, training_masks

__all__ = ["FacesetSamples", "loader"]


class FacesetSamples(torch.utils.data.IterableDataset):
    """Endless augmented training batches of one faceset without Ray: a torch ``IterableDataset``.

    The same samples as ``build_dataset`` (``make_batch``: crop, warp, flips, HSV, colour transfer),
    drawn with DeepFaceLab's uniform-yaw weights when ``augment.uniform_yaw`` (else uniformly), the
    hold-out left out. Give it to ``torch.utils.data.DataLoader(ds, batch_size=None, num_workers=N)``:
    each worker draws with its own seed.

    Args:
        uri: the faceset.
        cfg: the effective training config (batch size, model face type and resolution, augmentation).
        role: ``src`` or ``dst`` (flip option; colour transfer toward ``ct_refs`` applies to src).
        ct_refs: dst training crops (``ct_references``) for ``augment.ct_mode``.
        holdout: share of each video held out (``cfg.holdout`` for src).
        seed: base seed of the draws.

    Example:
        >>> loader = torch.utils.data.DataLoader(FacesetSamples("fs/a", cfg, "src"), batch_size=None,
        ...                                      num_workers=4)  # doctest: +SKIP
        >>> next(iter(loader))["warped"].shape  # doctest: +SKIP
        torch.Size([8, 3, 128, 128])
    """

    def __init__(self, uri: str, cfg: TrainConfig, role: str, ct_refs: np.ndarray | None = None,
                 holdout: float = 0.0, seed: int = 0):
        table = read_faces(uri, columns=SAMPLE_COLUMNS + KEY_COLUMNS)
        if table.num_rows == 0:
            raise ConfigError(role, f"{uri} has no faces")
        vids, frames = table.column("video_id").to_pylist(), table.column("frame_index").to_pylist()
        cuts, _ = holdout_cuts(np.asarray(vids, dtype=object), np.asarray(frames), holdout)
        keep = np.flatnonzero([not is_heldout(v, f, cuts) for v, f in zip(vids, frames)])
        table = table.select(SAMPLE_COLUMNS).take(keep)
        self.columns = {k: np.array(table.column(k).to_pylist(), dtype=object) for k in SAMPLE_COLUMNS}
        self.columns["landmarks"] = np.array(table.column("landmarks").to_pylist(), dtype=np.float32)
        self.columns["align_mat"] = np.array(table.column("align_mat").to_pylist(), dtype=np.float64)
        self.columns["mask"] = training_masks(self.columns)
        yaw = np.nan_to_num(np.asarray(self.columns["yaw"], dtype=np.float64))
        if cfg.augment.uniform_yaw:
            self.weights = uniform_yaw_weights(yaw)
        else:
            self.weights = np.full(len(yaw), 1.0 / len(yaw))
        self.cfg, self.role, self.ct_refs, self.seed = cfg, role, ct_refs, seed
        self.flip = cfg.augment.random_src_flip if role == "src" else cfg.augment.random_dst_flip

    def __len__(self) -> int:
        return len(self.weights)

    def batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One augmented batch of ``cfg.batch_size`` samples (numpy, N×C×R×R float32)."""
        idx = rng.choice(len(self.weights), self.cfg.batch_size, p=self.weights)
        rows = {k: v[idx] for k, v in self.columns.items()}
        return make_batch(rows, self.cfg.model.resolution, self.cfg.model.face_type, self.cfg.augment, rng,
                          self.flip, ct_refs=self.ct_refs if self.role == "src" else None)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info is not None else 0])
        while True:
            yield {k: torch.from_numpy(v) for k, v in self.batch(rng).items()}


def loader(samples: FacesetSamples, workers: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of ``samples`` from ``workers`` processes (0: in this one), on ``device``."""
    dl = torch.utils.data.DataLoader(samples, batch_size=None, num_workers=workers,
                                     pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                                     prefetch_factor=4 if workers > 0 else None)
    for batch in dl:
        yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}
