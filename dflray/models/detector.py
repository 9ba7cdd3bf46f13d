"""The reference deepfake detector of ``dflray evaluate``: EfficientNet-B0 with one logit per face crop.

A standard frame-level detector, as DeepfakeBench builds its EfficientNet one: ``efficientnet_pytorch``'s
network (pure PyTorch, no weights shipped or downloaded: ``from_name`` builds it randomly initialised),
fed aligned RGB face crops scaled to [-1, 1] (mean 0.5, std 0.5 per channel, DeepfakeBench's
normalisation), trained with binary cross-entropy on its logit (1 = FAKE).

BatchNorm statistics are re-estimated over the training crops after training (``recalibrate_batchnorm``):
after a few hundred steps the running averages are still far from the real statistics and the eval-mode
network would score every crop alike.

This module is plain torch: no Ray and no I/O. ``dflray.dataset.evaluate`` wraps ``DetectorTrainer`` in a
Ray Train worker loop and ``predict`` in a Ray Data actor; a script on one GPU runs them as they are.
Weights read from a file by the caller go through ``adapt_state_dict``, which accepts a detector
checkpoint's state dict as well as an EfficientNet-B0 state dict from elsewhere (e.g. an ImageNet release
of ``efficientnet_pytorch``: its 1000-class head is left out and the one-logit head stays initialised).

Example:
    >>> model = build_detector(64)
    >>> t = DetectorTrainer(model, torch.device("cpu"), lr=1e-3)
    >>> images = torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8)
    >>> sorted(t.train_step(images, torch.tensor([0.0, 1.0, 0.0, 1.0])))
    ['accuracy', 'loss']
    >>> recalibrate_batchnorm(model, [images], torch.device("cpu"))
    1
    >>> predict(model, images.numpy(), torch.device("cpu")).shape
    (4,)
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ARCH", "DETECTOR_FORMAT", "DetectorTrainer", "adapt_state_dict", "build_detector", "detector_loss",
           "predict", "recalibrate_batchnorm", "to_input"]

ARCH = "efficientnet-b0"
DETECTOR_FORMAT = "dflray-detector-v1"
MEAN = STD = 0.5  # DeepfakeBench's normalisation of its EfficientNet input: [0, 1] → [-1, 1]
MIN_SIZE = 32  # five stride-2 stages: a smaller crop has no spatial extent left
BN_MOMENTUM = 0.1


def build_detector(size: int = 128) -> nn.Module:
    """A randomly initialised EfficientNet-B0 with a one-logit head, for square crops of ``size`` pixels.

    ``efficientnet_pytorch``'s B0 (width and depth 1.0, dropout 0.2, drop-connect 0.2), its BatchNorm
    momentum set to PyTorch's 0.1.

    Args:
        size: crop side in pixels (``efficientnet_pytorch`` computes its static "same" padding from it).

    Raises:
        ValueError: when ``size`` < 32.
    """
    from efficientnet_pytorch import EfficientNet

    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    # BatchNorm running statistics with PyTorch's usual momentum 0.1 (the package's TF default, 0.01, leaves
    # them near their initial values after the few hundred steps of a small evaluation, and eval-mode
    # predictions then say nothing).
    return EfficientNet.from_name(ARCH, num_classes=1, image_size=size, batch_norm_momentum=1 - BN_MOMENTUM)


def to_input(images: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB crops → (N, 3, H, W) float32 network input in [-1, 1]."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (N, H, W, 3), got {tuple(images.shape)}")
    x = images.permute(0, 3, 1, 2).float() / 255.0
    return ((x - MEAN) / STD).contiguous()


def detector_loss(logits: torch.Tensor, labels: torch.Tensor, pos_weight: float | None = None) -> torch.Tensor:
    """Binary cross-entropy of the logits against labels (1 = FAKE).

    Args:
        logits: (N,) or (N, 1) raw network outputs.
        labels: (N,) 0/1 labels.
        pos_weight: weight of the FAKE class (reals / fakes balances the classes); None: 1.
    """
    pw = None if pos_weight is None else torch.tensor(float(pos_weight), device=logits.device)
    return F.binary_cross_entropy_with_logits(logits.reshape(-1).float(), labels.reshape(-1).float(), pos_weight=pw)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


_PREFIXES = ("module.", "model.", "backbone.", "efficientnet.")


def adapt_state_dict(model: nn.Module, state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The part of a state dict that fits ``model``, and the names of the model's tensors it leaves as they are.

    Prefixes that wrappers add (``module.`` of DDP, DeepfakeBench's ``backbone.efficientnet.``) are
    stripped; tensors whose name or shape the model does not have are left out (an ImageNet checkpoint's
    1000-class ``_fc`` head: the one-logit head keeps its initialisation).

    Args:
        model: the detector (or its DDP wrapper).
        state: a state dict of tensors.

    Returns:
        (the tensors to load with ``load_state_dict(..., strict=False)``, the model's tensor names not in it).

    Raises:
        ValueError: when the state dict is not tensors, or fits fewer than half of the model's tensors (it is
            not an EfficientNet-B0 of this kind).
    """
    own = _unwrap(model).state_dict()
    fitted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"weights: {key!r} is a {type(value).__name__}, not a tensor")
        name = key
        changed = True
        while changed:
            changed = False
            for p in _PREFIXES:
                if name.startswith(p) and name not in own:
                    name, changed = name[len(p):], True
        if name in own and own[name].shape == value.shape:
            fitted[name] = value
    if len(fitted) < len(own) / 2:
        raise ValueError(f"weights fit {len(fitted)} of the {ARCH} detector's {len(own)} tensors: not an "
                         f"{ARCH} state dict")
    return fitted, sorted(set(own) - set(fitted))


class DetectorTrainer:
    """Owns the detector, its AdamW optimizer and the epoch counter; runs one training step on a batch.

    The Ray Train loop hands it a DDP-wrapped model (gradients all-reduced in backward, so every rank
    applies the same update); alone it trains a plain module.

    Args:
        model: the detector (possibly wrapped).
        device: where batches go.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        pos_weight: weight of the FAKE class in the loss (None: 1).
        flip: randomly mirror half of each batch horizontally (the usual augmentation of face crops).
        generator: torch generator of the flips (None: torch's global one).
    """

    def __init__(self, model: nn.Module, device: torch.device, *, lr: float = 1e-3, weight_decay: float = 1e-5,
                 pos_weight: float | None = None, flip: bool = True, generator: torch.Generator | None = None):
        self.model = model.to(device)
        self.device = device
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=weight_decay)
        self.pos_weight = pos_weight
        self.flip = flip
        self.generator = generator
        self.epoch = 0
        self.steps = 0

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One optimizer step on (N, H, W, 3) uint8 crops and their (N,) 0/1 labels.

        Returns:
            ``loss`` (the batch's BCE) and ``accuracy`` (share of crops on the right side of 0.5).
        """
        self.model.train()
        x = to_input(images.to(self.device))
        y = labels.to(self.device).float().reshape(-1)
        if self.flip:
            mirror = torch.rand(len(x), generator=self.generator) < 0.5
            x[mirror.to(x.device)] = x[mirror.to(x.device)].flip(-1)
        logits = self.model(x).reshape(-1)
        loss = detector_loss(logits, y, self.pos_weight)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.steps += 1
        with torch.no_grad():
            accuracy = ((logits > 0).float() == y).float().mean()
        return {"loss": float(loss.detach()), "accuracy": float(accuracy)}

    def payload(self, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """The checkpoint: ``{format, arch, model, optimizer, epoch, steps, config}`` (tensors and plain data)."""
        return {"format": DETECTOR_FORMAT, "arch": ARCH, "model": _unwrap(self.model).state_dict(),
                "optimizer": self.optimizer.state_dict(), "epoch": self.epoch, "steps": self.steps,
                "config": dict(config or {})}

    def load(self, payload: Mapping[str, Any]) -> None:
        """Restores a ``payload()`` (weights, optimizer state, epoch and step counters)."""
        _unwrap(self.model).load_state_dict(payload["model"])
        if payload.get("optimizer"):
            self.optimizer.load_state_dict(payload["optimizer"])
        self.epoch = int(payload.get("epoch", 0))
        self.steps = int(payload.get("steps", 0))


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor], device: torch.device,
                          max_batches: int | None = None) -> int:
    """Re-estimates every BatchNorm's running mean and variance over ``batches`` ("precise BN").

    After a short training the running statistics (an exponential average started from mean 0, variance
    1) are far from the activations' real ones, and the eval-mode network they drive collapses to a near
    constant output. This resets them and averages the batch statistics of a pass over training crops
    (forward in train mode, no gradients, no weight change), so that eval-mode scores use what the network
    actually sees.

    Args:
        model: the detector (or its DDP wrapper).
        batches: (N, H, W, 3) uint8 crops, e.g. the training set without augmentation.
        device: where to run.
        max_batches: stop after this many batches (None: all).

    Returns:
        The batches used (0 leaves the statistics as they were).
    """
    bns = [m for m in _unwrap(model).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone())
             for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches seen
    was_training = model.training
    model.train()
    used = 0
    try:
        for images in batches:
            if max_batches is not None and used >= max_batches:
                break
            if len(images) < 2:
                continue
            _unwrap(model)(to_input(images.to(device)))
            used += 1
    finally:
        model.train(was_training)
        for m, (momentum, mean, var, tracked) in zip(bns, saved):
            m.momentum = momentum
            if not used:
                m.running_mean.copy_(mean)
                m.running_var.copy_(var)
                m.num_batches_tracked.copy_(tracked)
    return used


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """The FAKE probability (sigmoid of the logit) of each crop.

    Args:
        model: the detector.
        images: (N, H, W, 3) uint8 RGB crops.
        device: where to run.
        batch_size: crops per forward pass.

    Returns:
        (N,) float64 probabilities in [0, 1].
    """
    model = model.to(device)
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(images), batch_size):
            x = to_input(torch.from_numpy(np.ascontiguousarray(images[i:i + batch_size])).to(device))
            # in float64: float32's sigmoid saturates to exactly 1 above a logit of ~17, turning ranks into ties
            out.append(torch.sigmoid(model(x).reshape(-1).double()).cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float64)
