"""XSeg: a small U-Net that predicts the visible-face mask of an aligned face crop.

DeepFaceLab's XSeg (``core/leras/models/XSeg.py``, ``facelib/XSegNet.py``) segments the face pixels
that are really visible, so that hands, hair, glasses or microphones in front of the face stay out of
the merge mask. This is the same idea in torch, sized for generating datasets rather than for one
hand-labelled faceset:

* **Blocks**: every conv is 3x3 followed by Filter Response Normalisation and a TLU (DFL's
  ``ConvBlock``): normalisation per sample and channel over space, so the model behaves the same at
  batch size 1, under DDP and in eval mode (no running statistics, no SyncBN).
* **Encoder**: ``depth`` levels, each two ConvBlocks then an anti-aliased stride-2 blur pool (DFL's
  ``BlurPool``); channels ``base * min(2**level, 4)`` (DFL: up to 8x; at 4x base 32 is 2.7M parameters).
* **Bottleneck**: two ConvBlocks plus a global-context term (the spatial mean through a 1x1 conv,
  added everywhere). DFL uses a dense ``4x4xC → 512 → 4x4xC`` layer there, which ties the weights to
  256 px; the pooled context gives the same "whole-face" view at any resolution.
* **Decoder**: bilinear x2 upsample, concatenate the skip, two ConvBlocks; a 3x3 conv gives one
  logit channel. DFL uses 3x3 stride-2 transposed convs, which checkerboard; bilinear + conv does not.

Inputs are float RGB in ``[0, 1]``, N×3×R×R (R divisible by ``2**depth``); outputs are N×1×R×R
logits (``torch.sigmoid`` gives the mask). Every op works in ``torch.channels_last``.

Example:
    >>> import torch
    >>> model = XSeg(resolution=64, base=8, depth=4)
    >>> tuple(model(torch.rand(2, 3, 64, 64)).shape)
    (2, 1, 64, 64)
"""

from __future__ import annotations

from typing import Any, Mapping

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dflray.config import FACE_TYPES
from dflray.models.layers import glorot_init_

__all__ = ["FORMAT", "XSeg", "dice_bce_loss", "iou", "iou_per_sample", "predict_mask", "xseg_from_state",
           "xseg_state"]

FORMAT = "dflray-xseg-v1"
_MAX_MULT = 4  # channels stop at base * 4 (DFL: 8); FLOPs barely change, parameters drop 3x


class FRN(nn.Module):
    """Filter Response Normalisation with a TLU (Singh & Krishnan 2019; DFL's ``FRNorm2D`` + ``TLU``).

    ``y = max(gamma * x / sqrt(mean_hw(x^2) + |eps|) + beta, tau)``, per sample and channel, with a
    learnable ``eps`` as in DFL. The mean of squares is taken in float32 so fp16 autocast cannot
    overflow it.
    """

    def __init__(self, ch: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, ch, 1, 1))
        self.tau = nn.Parameter(torch.zeros(1, ch, 1, 1))
        self.eps = nn.Parameter(torch.full((1,), float(eps)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        nu2 = xf.square().mean(dim=(2, 3), keepdim=True)
        y = (xf * torch.rsqrt(nu2 + self.eps.abs())).to(x.dtype)
        return torch.maximum(y * self.weight + self.bias, self.tau)


class ConvBlock(nn.Sequential):
    """3x3 conv (same padding), FRN, TLU."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__(nn.Conv2d(in_ch, out_ch, 3, padding=1), FRN(out_ch))


class BlurPool(nn.Module):
    """Anti-aliased stride-2 downsampling: a fixed [1, 2, 1]⊗[1, 2, 1] / 16 depthwise blur, stride 2.

    Zhang 2019, "Making Convolutional Networks Shift-Invariant Again"; DFL's ``BlurPool``. Reflect
    padding keeps the crop border from darkening; an even input size halves exactly.
    """

    def __init__(self, ch: int):
        super().__init__()
        a = torch.tensor([1.0, 2.0, 1.0])
        k = (a[:, None] * a[None, :]) / 16.0
        # Not persistent: a constant, so it need not be in (or match) the state dict.
        self.register_buffer("kernel", k.expand(ch, 1, 3, 3).contiguous(), persistent=False)
        self.ch = ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.kernel.to(x.dtype), stride=2, groups=self.ch)


class XSeg(nn.Module):
    """The XSeg U-Net.

    Args:
        resolution: input side in pixels; must be divisible by ``2**depth``.
        base: channels of the first level (DFL: 32).
        depth: number of 2x downsamplings (5: 256 px → an 8×8 bottleneck).
        face_type: the face type of the crops it segments (metadata carried into saved files).

    Raises:
        ValueError: on a resolution not divisible by ``2**depth``, or out-of-range sizes.

    Example:
        >>> model = XSeg(resolution=128, base=8, depth=4)
        >>> tuple(model(torch.rand(1, 3, 128, 128)).shape)
        (1, 1, 128, 128)
    """

    def __init__(self, resolution: int = 256, base: int = 32, depth: int = 5, face_type: str = "whole_face"):
        super().__init__()
        if not 1 <= depth <= 8:
            raise ValueError(f"depth must be in 1..8, got {depth}")
        if base < 1:
            raise ValueError(f"base must be >= 1, got {base}")
        if resolution < 2**depth or resolution % 2**depth:
            raise ValueError(f"resolution must be a positive multiple of 2**depth = {2**depth}, got {resolution}")
        if face_type not in FACE_TYPES:
            raise ValueError(f"face_type must be one of {', '.join(FACE_TYPES)}, got {face_type!r}")
        self.resolution, self.base, self.depth, self.face_type = int(resolution), int(base), int(depth), face_type

        chs = [base * min(2**i, _MAX_MULT) for i in range(depth + 1)]
        self.enc = nn.ModuleList()
        self.pool = nn.ModuleList()
        prev = 3
        for ch in chs[:-1]:
            self.enc.append(nn.Sequential(ConvBlock(prev, ch), ConvBlock(ch, ch)))
            self.pool.append(BlurPool(ch))
            prev = ch
        self.mid = nn.Sequential(ConvBlock(prev, chs[-1]), ConvBlock(chs[-1], chs[-1]))
        self.context = nn.Conv2d(chs[-1], chs[-1], 1)
        self.dec = nn.ModuleList()
        prev = chs[-1]
        for ch in reversed(chs[:-1]):
            self.dec.append(nn.Sequential(ConvBlock(prev + ch, ch), ConvBlock(ch, ch)))
            prev = ch
        self.out_conv = nn.Conv2d(prev, 1, 3, padding=1)
        glorot_init_(self)
        nn.init.zeros_(self.context.weight)  # start as a plain U-Net; the context is learnt on top

    def config(self) -> dict[str, Any]:
        """The constructor arguments, as stored in saved files."""
        return {"resolution": self.resolution, "base": self.base, "depth": self.depth, "face_type": self.face_type}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits N×1×H×W of an N×3×H×W RGB batch in [0, 1] (any H, W divisible by ``2**depth``)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"input must be N×3×H×W, got {tuple(x.shape)}")
        if x.shape[2] % 2**self.depth or x.shape[3] % 2**self.depth:
            raise ValueError(f"input H, W must be divisible by {2**self.depth}, got {tuple(x.shape[2:])}")
        skips = []
        for enc, pool in zip(self.enc, self.pool):
            x = enc(x)
            skips.append(x)
            x = pool(x)
        x = self.mid(x)
        x = x + self.context(x.mean(dim=(2, 3), keepdim=True))
        for dec, skip in zip(self.dec, reversed(skips)):
            x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
            x = dec(torch.cat([x, skip], dim=1))
        return self.out_conv(x)


# ------------------------------------------------------------------------------------ loss and metric


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, *, bce_weight: float = 1.0, dice_weight: float = 1.0,
                  smooth: float = 1.0) -> torch.Tensor:
    """Binary cross-entropy on logits plus soft Dice loss, averaged over the batch.

    DFL trains XSeg with sigmoid cross-entropy alone; the Dice term weighs each sample's mask as a
    whole, so a small face (or a mostly occluded one) is not drowned by the background pixels.

    Args:
        logits: N×1×H×W (or N×H×W) raw model outputs.
        target: the same shape, values in [0, 1].
        bce_weight: weight of the BCE term.
        dice_weight: weight of the Dice term.
        smooth: Dice smoothing, in pixels (keeps an empty target with an empty prediction at loss 0).

    Returns:
        Scalar float32 loss.

    Raises:
        ValueError: if shapes differ.

    Example:
        >>> t = torch.zeros(2, 1, 8, 8); t[:, :, 2:6, 2:6] = 1
        >>> float(dice_bce_loss(20 * (2 * t - 1), t)) < 0.05
        True
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits and target must have the same shape, got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    logits, target = logits.float(), target.float()
    bce = F.binary_cross_entropy_with_logits(logits, target)
    prob = torch.sigmoid(logits).flatten(1)
    tgt = target.flatten(1)
    inter = (prob * tgt).sum(1)
    dice = 1.0 - (2.0 * inter + smooth) / (prob.sum(1) + tgt.sum(1) + smooth)
    return bce_weight * bce + dice_weight * dice.mean()


def _as_bool_batch(mask: Any, threshold: float) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().float().cpu().numpy()
    mask = np.asarray(mask)
    if mask.ndim < 2:
        raise ValueError(f"masks must be H×W or N×…×H×W, got shape {mask.shape}")
    binary = mask if mask.dtype == bool else mask > threshold
    return binary[None] if binary.ndim == 2 else binary


def iou_per_sample(pred_mask: Any, target: Any, threshold: float = 0.5) -> np.ndarray:
    """Intersection over union of binarised masks, one value per sample.

    Args:
        pred_mask: bool, or float masks in [0, 1] (probabilities, not logits): H×W for one sample,
            or N×H×W / N×1×H×W; numpy or torch.
        target: the same shape.
        threshold: float masks count as foreground strictly above this.

    Returns:
        float64 array (N,); a sample whose prediction and target are both empty scores 1.0.

    Raises:
        ValueError: if shapes differ.

    Example:
        >>> a = np.zeros((4, 4)); a[:2] = 1
        >>> b = np.zeros((4, 4)); b[:, :2] = 1
        >>> iou_per_sample(a, b).tolist()  # 4 shared pixels of 12
        [0.3333333333333333]
    """
    p, t = _as_bool_batch(pred_mask, threshold), _as_bool_batch(target, threshold)
    if p.shape != t.shape:
        raise ValueError(f"pred_mask and target must have the same shape, got {p.shape} and {t.shape}")
    p, t = p.reshape(len(p), -1), t.reshape(len(t), -1)
    inter = np.logical_and(p, t).sum(1)
    union = np.logical_or(p, t).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def iou(pred_mask: Any, target: Any, threshold: float = 0.5) -> float:
    """Mean over the batch of :func:`iou_per_sample`.

    Example:
        >>> iou(np.ones((2, 4, 4), bool), np.ones((2, 4, 4), bool))
        1.0
    """
    return float(iou_per_sample(pred_mask, target, threshold).mean())


# ------------------------------------------------------------------------------------ inference


@torch.no_grad()
def predict_mask(model: nn.Module, crops_uint8: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Visible-face masks of RGB uint8 crops, in eval mode, batch by batch.

    Crops of another size are resized to the model's resolution and the masks back to the crop size.

    Args:
        model: an :class:`XSeg` (or a wrapper whose ``module`` / ``_orig_mod`` is one).
        crops_uint8: N×H×W×3 RGB uint8 aligned crops, or one H×W×3 crop.
        batch_size: crops per forward pass (run on the model's device).

    Returns:
        float32 masks in [0, 1]: N×H×W (or H×W for one crop).

    Raises:
        ValueError: on a malformed crop array or batch size.

    Example:
        >>> m = predict_mask(XSeg(64, 8, 3), np.zeros((2, 80, 80, 3), np.uint8))
        >>> m.shape, m.dtype.name
        ((2, 80, 80), 'float32')
    """
    crops = np.asarray(crops_uint8)
    single = crops.ndim == 3
    if single:
        crops = crops[None]
    if crops.ndim != 4 or crops.shape[3] != 3:
        raise ValueError(f"crops_uint8 must be N×H×W×3 (or H×W×3), got {crops.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    net = _unwrap(model)
    res = net.resolution
    h, w = crops.shape[1:3]
    dev = next(net.parameters()).device
    was_training = net.training
    net.eval()
    out = np.empty((len(crops), h, w), np.float32)
    try:
        for start in range(0, len(crops), batch_size):
            chunk = crops[start:start + batch_size]
            if (h, w) != (res, res):
                interp = cv2.INTER_AREA if h > res else cv2.INTER_CUBIC
                chunk = np.stack([cv2.resize(c, (res, res), interpolation=interp) for c in chunk])
            x = torch.from_numpy(np.ascontiguousarray(chunk)).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
            prob = torch.sigmoid(net(x)).float()[:, 0].cpu().numpy()
            if (h, w) != (res, res):
                prob = np.stack([cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in prob])
            out[start:start + len(chunk)] = np.clip(prob, 0.0, 1.0)
    finally:
        net.train(was_training)
    return out[0] if single else out


# ------------------------------------------------------------------------------------ files


def _unwrap(model: nn.Module) -> XSeg:
    # DDP keeps the model in .module, torch.compile in ._orig_mod.
    for _ in range(3):
        if isinstance(model, XSeg):
            return model
        model = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
    if not isinstance(model, XSeg):
        raise ValueError("model must be an XSeg (or a DDP / torch.compile wrapper of one)")
    return model


def xseg_state(model: nn.Module) -> dict[str, Any]:
    """A weights-only payload: ``{format, config, state_dict}`` with CPU tensors.

    ``config`` holds ``resolution``, ``base``, ``depth`` and ``face_type``; the payload loads with
    ``torch.load(weights_only=True)``.

    Example:
        >>> sorted(xseg_state(XSeg(64, 8, 3))["config"])
        ['base', 'depth', 'face_type', 'resolution']
    """
    net = _unwrap(model)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    return {"format": FORMAT, "config": net.config(), "state_dict": state}


def xseg_from_state(payload: Mapping[str, Any], where: str = "payload") -> XSeg:
    """Rebuilds an :class:`XSeg` from :func:`xseg_state`'s payload, on the CPU, in eval mode.

    Files of it are read and written by ``dflray.artifacts.xseg`` (``load_xseg``, ``save_xseg``).

    Args:
        payload: the ``{format, config, state_dict}`` dict.
        where: what to call the payload in errors (its file).

    Raises:
        ValueError: when the payload is not a dflray XSeg payload or its config is invalid.

    Example:
        >>> xseg_from_state(xseg_state(XSeg(64, 8, 3))).resolution
        64
    """
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        raise ValueError(f"{where} is not a {FORMAT} file")
    cfg = payload.get("config")
    if not isinstance(cfg, Mapping) or set(cfg) != {"resolution", "base", "depth", "face_type"}:
        raise ValueError(f"{where}: config must have resolution, base, depth and face_type, got {cfg!r}")
    model = XSeg(int(cfg["resolution"]), int(cfg["base"]), int(cfg["depth"]), str(cfg["face_type"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval()
