"""Small building blocks of DeepFaceLab's SAEHD autoencoder (``DeepFakeArchi``), in torch.

Tensors are NCHW. Convolutions use DFL's ``'SAME'`` padding (``kernel_size // 2`` on every side), which
for odd kernels is torch's symmetric padding, so a stride-2 conv halves an even size exactly.

Example:
    >>> import torch
    >>> down = Downscale(3, 8)
    >>> tuple(down(torch.zeros(1, 3, 32, 32)).shape)
    (1, 8, 16, 16)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def xcos(x: torch.Tensor) -> torch.Tensor:
    """DFL's ``-c`` activation, ``x * cos(x)``."""
    return x * torch.cos(x)


def pixel_norm(x: torch.Tensor, dim: int = -1, eps: float = 1e-6) -> torch.Tensor:
    """Scales ``x`` to unit root-mean-square along ``dim`` (DFL's ``nn.pixel_norm``, the ``-u`` flag).

    Computed in float32: under fp16 autocast the mean of squares of a long code can overflow.
    """
    xf = x.float()
    return (xf * torch.rsqrt(torch.mean(xf * xf, dim=dim, keepdim=True) + eps)).to(x.dtype)


class Activation(nn.Module):
    """DFL's ``act``: leaky ReLU, or ``x * cos(x)`` with the ``-c`` flag (which ignores the slope).

    Args:
        cos: use ``x * cos(x)``.
        negative_slope: leaky ReLU slope (DFL: 0.1 in down/up blocks, 0.2 in residual blocks).
    """

    def __init__(self, cos: bool = False, negative_slope: float = 0.1):
        super().__init__()
        self.cos = cos
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cos:
            return xcos(x)
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return "x*cos(x)" if self.cos else f"leaky_relu({self.negative_slope})"


def conv2d(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1) -> nn.Conv2d:
    """A conv with DFL's 'SAME' padding (``kernel_size // 2`` on each side, as DFL pads explicitly)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2)


class Downscale(nn.Module):
    """Stride-2 conv (5x5 by default) and activation: halves the spatial size."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 5, cos_act: bool = False):
        super().__init__()
        self.out_ch = out_ch
        self.conv = conv2d(in_ch, out_ch, kernel_size, stride=2)
        self.act = Activation(cos_act, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class DownscaleBlock(nn.Sequential):
    """``n_downscales`` Downscales with channels ``ch * min(2**i, 8)`` (DFL's encoder without ``-t``)."""

    def __init__(self, in_ch: int, ch: int, n_downscales: int, kernel_size: int = 5, cos_act: bool = False):
        downs, last_ch = [], in_ch
        for i in range(n_downscales):
            downs.append(Downscale(last_ch, ch * min(2**i, 8), kernel_size, cos_act))
            last_ch = downs[-1].out_ch
        super().__init__(*downs)
        self.out_ch = last_ch


class Upscale(nn.Module):
    """3x3 conv to ``4 * out_ch``, activation, then depth-to-space(2): doubles the spatial size.

    torch's pixel shuffle orders the sub-pixel channels differently from TF's ``depth_to_space``; the
    four sub-pixel groups come from one conv with identically initialised weights, so the permutation
    changes nothing but weight compatibility with DFL files (which dflray does not claim).
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, cos_act: bool = False):
        super().__init__()
        self.conv = conv2d(in_ch, out_ch * 4, kernel_size)
        self.act = Activation(cos_act, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.act(self.conv(x)), 2)


class ResidualBlock(nn.Module):
    """conv, act(0.2), conv, act(input + x, 0.2); DFL uses its ``act`` here too, so ``-c`` applies."""

    def __init__(self, ch: int, kernel_size: int = 3, cos_act: bool = False):
        super().__init__()
        self.conv1 = conv2d(ch, ch, kernel_size)
        self.conv2 = conv2d(ch, ch, kernel_size)
        self.act = Activation(cos_act, 0.2)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.act(self.conv1(inp))
        return self.act(inp + self.conv2(x))


def glorot_init_(module: nn.Module) -> None:
    """Initialises like DFL: Glorot/Xavier-uniform kernels, zero biases, for every conv and dense layer.

    DFL's ``Conv2D``/``Dense`` leave ``kernel_initializer`` at None, which is TF1 ``get_variable``'s
    default (``glorot_uniform``) for convs and an explicit ``glorot_uniform`` for dense layers; its CA
    initializer is commented out. torch's fan computation for conv and transposed-conv weights gives
    the same bound as TF's, so ``xavier_uniform_`` matches.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
