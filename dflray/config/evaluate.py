"""``dflray evaluate DATASET``: a reference detector trained and tested on a generated dataset."""

from __future__ import annotations

from dataclasses import dataclass

from dflray.config._base import _check


@dataclass(frozen=True)
class EvaluateConfig:
    """Root config of ``dflray evaluate``: how hard each slice of a generated dataset is for a reference
    detector (EfficientNet-B0, frame level, trained with Ray Train on the train split's face crops).

    The defaults are sized for the built-in sample on a CPU (a few minutes); a from-scratch B0 on a
    small dataset is a weak reference — give ``weights`` (e.g. an ImageNet EfficientNet-B0 state dict) and
    more ``epochs`` for a stronger one.

    Attributes:
        size: face crop side in pixels (DeepfakeBench's alignment), also the network's input size (>= 32).
        frames: frames per video, evenly spaced, whose face crops train and test the detector.
        epochs: passes over the training crops (0: no training; evaluate ``weights`` as they are).
        batch_size: crops per training step per worker (>= 2: BatchNorm), and per scoring batch.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        weights: start from these weights instead of a random initialisation: a file (``detector.pt`` of an
            earlier evaluation, or a plain EfficientNet-B0 state dict such as an ImageNet release; a head of
            another shape is left out) or a checkpoint folder; any fsspec URL. Never downloaded.
        holdout: when the test split has no REAL or no FAKE video (identity-disjoint splits of a tiny
            dataset), test instead on this seeded share of the train split's real videos, each with its
            fakes (a fake goes with its original); 0 turns this off. The results say ``holdout``: a
            within-split holdout, not identity-disjoint.
        balance: weight the FAKE class by reals / fakes in the loss.
        bootstrap: bootstrap replicates per AUC interval (videos resampled).
        confidence: the intervals' coverage.
        seed: seed of the holdout draw, the initialisation, the flips and the bootstrap. Training batches
            follow Ray Data's streaming order, so two trainings agree in quality, not bit for bit.
        num_workers: Ray Train workers (DDP: gloo on CPU, NCCL on GPUs).
        use_gpu: one GPU per worker (and per scoring actor).
        cpus_per_worker: CPUs per Ray Train worker (and per scoring actor).
        torch_threads: intra-op threads per CPU worker (0: cpus_per_worker rounded up).
        crop_cpus: CPUs per face-crop actor (one video per call).
    """

    size: int = 128
    frames: int = 32
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-5
    weights: str | None = None
    holdout: float = 0.5
    balance: bool = True
    bootstrap: int = 1000
    confidence: float = 0.95
    seed: int = 0
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    torch_threads: int = 0
    crop_cpus: float = 1.0

    def __post_init__(self) -> None:
        _check(32 <= self.size <= 1024, "size", "must be in 32..1024 pixels")
        _check(1 <= self.frames <= 1000, "frames", "must be in 1..1000")
        _check(self.epochs >= 0, "epochs", "must be >= 0")
        _check(self.epochs > 0 or bool(self.weights), "epochs",
               "0 evaluates given weights without training: set weights=PATH (or epochs >= 1)")
        _check(self.batch_size >= 2, "batch_size", "must be >= 2 (BatchNorm needs two crops)")
        _check(self.lr > 0, "lr", "must be > 0")
        _check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _check(self.weights is None or bool(self.weights.strip()), "weights", "must be a path or null")
        _check(0 <= self.holdout < 1, "holdout", "must be in [0, 1) (0: off)")
        _check(10 <= self.bootstrap <= 100_000, "bootstrap", "must be in 10..100000")
        _check(0.5 <= self.confidence < 1, "confidence", "must be in [0.5, 1)")
        _check(self.num_workers >= 1, "num_workers", "must be >= 1")
        _check(self.cpus_per_worker > 0, "cpus_per_worker", "must be > 0")
        _check(self.torch_threads >= 0, "torch_threads", "must be >= 0")
        _check(self.crop_cpus > 0, "crop_cpus", "must be > 0")
