"""XSeg: learned segmentation of the visible face (``dflray xseg train|apply``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dflray.config._base import Resources, _check


@dataclass(frozen=True)
class XSegTrainConfig:
    """Root config of ``dflray xseg train``.

    Labels: a face with a user label (``xseg_label``: polygons drawn or imported from DeepFaceLab) trains
    on it; a face without one trains self-supervised (``self_supervised``): its landmark hull is the face
    region, synthetic occluders (shapes, other image crops, hands, glasses and microphones, hair) are
    pasted over it, and the target is the hull minus the occluders.

    Attributes:
        resolution: model input side (a multiple of 2**depth); crops are resized to it.
        base: channels of the first level (2.7 M parameters at 32, depth 5).
        depth: U-Net levels.
        batch_size: samples per worker per step.
        steps: train until this many steps (a rerun continues up to it).
        optimizer: ``rmsprop`` (DFL's XSeg) or ``adam``.
        lr: learning rate.
        self_supervised: train faces without labels on synthetic occlusions of their hull.
        max_occluders: occluders pasted per sample at most.
        coverage: fraction of the face an occluder may cover (low, high).
        p_none: probability that a sample gets no occluder.
        augment: flips, small affine warps and colour changes (image and target together).
        num_workers: Ray Train workers (DDP).
        use_gpu: one GPU per worker.
        cpus_per_worker: CPUs per worker.
        data_cpus: CPUs per sample-making task of the data pipeline.
        torch_threads: intra-op threads per CPU worker (0: cpus_per_worker rounded up).
        checkpoint_every: steps between checkpoints.
        log_every: steps between metric reports.
        max_failures: worker-group restarts Ray Train attempts.
        seed: seed of the model's initialisation. The shuffle and the synthetic occlusions are drawn
            fresh every epoch (Ray Data's parallel, streaming order is not reproducible either), so two
            runs are alike in quality, not bit for bit.
    """

    resolution: int = 256
    base: int = 32
    depth: int = 5
    batch_size: int = 8
    steps: int = 5000
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    lr: float = 1e-4
    self_supervised: bool = True
    max_occluders: int = 2
    coverage: tuple[float, float] = (0.05, 0.45)
    p_none: float = 0.15
    augment: bool = True
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    data_cpus: float = 0.5
    torch_threads: int = 0
    checkpoint_every: int = 500
    log_every: int = 50
    max_failures: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        _check(1 <= self.depth <= 8, "depth", "must be in 1..8")
        _check(self.resolution >= 2 ** self.depth and self.resolution % 2 ** self.depth == 0, "resolution",
               f"must be a positive multiple of 2**depth ({2 ** self.depth})")
        _check(4 <= self.base <= 256, "base", "must be in 4..256")
        _check(1 <= self.batch_size <= 512, "batch_size", "must be in 1..512")
        _check(self.steps >= 1, "steps", "must be >= 1")
        _check(self.lr > 0, "lr", "must be > 0")
        _check(self.max_occluders >= 0, "max_occluders", "must be >= 0")
        _check(len(self.coverage) == 2 and 0 < self.coverage[0] <= self.coverage[1] < 1, "coverage",
               "must be (low, high) with 0 < low <= high < 1")
        _check(0 <= self.p_none <= 1, "p_none", "must be in 0..1")
        _check(self.num_workers >= 1, "num_workers", "must be >= 1")
        _check(self.cpus_per_worker > 0 and self.data_cpus > 0, "cpus_per_worker", "must be > 0")
        _check(self.checkpoint_every >= 1 and self.log_every >= 1, "checkpoint_every", "must be >= 1")
        _check(self.torch_threads >= 0, "torch_threads", "must be >= 0")


@dataclass(frozen=True)
class XSegApplyConfig(Resources):
    """Root config of ``dflray xseg apply``.

    Attributes:
        batch_size: crops per model call.
        concurrency: actors applying the model (None: one per free CPU).
        num_cpus: CPUs per actor.
        num_gpus: GPUs per actor.
        threshold: the stored mask is the model's probability as 0..255; 0 keeps it soft, else it is
            binarised at this probability.
    """

    batch_size: int = 32
    concurrency: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    threshold: float = 0.0

    def __post_init__(self) -> None:
        _check(1 <= self.batch_size <= 4096, "batch_size", "must be in 1..4096")
        self._check_resources()
