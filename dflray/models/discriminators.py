"""SAEHD's discriminators: the U-Net patch discriminator (``gan_power``) and the code discriminator
(``true_face_power``, DF only), after DFL's ``UNetPatchDiscriminator`` and ``CodeDiscriminator``.

Both output logits; the losses that read them are in :mod:`dflray.models.losses`.

Example:
    >>> import torch
    >>> disc = UNetPatchDiscriminator(patch_size=8, base_ch=4)
    >>> center, pixels = disc(torch.rand(2, 3, 64, 64))
    >>> tuple(pixels.shape)
    (2, 1, 64, 64)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dflray.config import LossConfig, ModelConfig
from dflray.models.df_liae import code_shape
from dflray.models.layers import conv2d, glorot_init_


def _receptive_field(layers: list[tuple[int, int]]) -> int:
    rf, jump = 0, 1
    for i, (kernel, stride) in enumerate(layers):
        rf = kernel if i == 0 else rf + (kernel - 1) * jump
        jump *= stride
    return rf


def unet_layers(patch_size: int, max_layers: int = 9) -> list[tuple[int, int]]:
    """The ``(kernel, stride)`` chain of 3x3 convs whose receptive field is nearest ``patch_size``.

    DFL's ``find_archi``: the first conv has stride 2, each further one stride 1 or 2; for every reachable
    receptive field keep the chain with the fewest layers, then the most downsampling; pick the field
    nearest the target (the smaller one on a tie). Candidates are enumerated in DFL's order, so its ties
    resolve identically.
    """
    best: dict[int, tuple[int, int, list[tuple[int, int]]]] = {}
    for n in range(1, max_layers + 1):
        for bits in range(2 ** (n - 1) - 1, -1, -1):
            layers = [(3, 2)] + [(3, 2 if bits >> i & 1 else 1) for i in range(n - 1)]
            stride_sum = sum(s for _, s in layers)
            rf = _receptive_field(layers)
            kept = best.get(rf)
            if kept is None or n < kept[0] or (n == kept[0] and stride_sum > kept[1]):
                best[rf] = (n, stride_sum, layers)
    nearest = min(sorted(best), key=lambda rf: abs(rf - patch_size))
    return best[nearest][2]


class UNetPatchDiscriminator(nn.Module):
    """U-Net discriminator (Schonfeld et al. 2020) with a patch-sized receptive field at its center.

    A 1x1 input conv, a 3x3 conv chain from :func:`unet_layers` (channels ``base_ch * 2**(i+1)``, at most
    512), a 1x1 logit at the bottleneck ("center"), and transposed convs back up with skip concatenations
    to a per-pixel logit map. Leaky ReLU 0.2 throughout.

    Args:
        patch_size: target receptive field of the center logits, in pixels.
        in_ch: image channels.
        base_ch: channels of the first level (DFL's ``gan_dims``).
    """

    def __init__(self, patch_size: int, in_ch: int = 3, base_ch: int = 16):
        super().__init__()
        layers = unet_layers(patch_size)
        chs = [min(base_ch * 2**i, 512) for i in range(len(layers) + 1)]  # chs[i + 1] is DFL's level i
        self.in_conv = conv2d(in_ch, chs[0], 1)
        self.convs = nn.ModuleList(conv2d(chs[i], chs[i + 1], k, s) for i, (k, s) in enumerate(layers))
        # upconvs[j] runs j-th on the way up, from the deepest level; below the deepest its input is the
        # previous upconv's output concatenated with the skip, hence twice the channels.
        ups = []
        for i, (k, s) in enumerate(layers):
            in_up = chs[i + 1] * (1 if i == len(layers) - 1 else 2)
            ups.insert(0, nn.ConvTranspose2d(in_up, chs[i], k, stride=s, padding=k // 2, output_padding=s - 1))
        self.upconvs = nn.ModuleList(ups)
        self.center_out = conv2d(chs[-1], 1, 1)
        self.center_conv = conv2d(chs[-1], chs[-1], 1)
        self.out_conv = conv2d(chs[0] * 2, 1, 1)
        glorot_init_(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(center_logits, pixel_logits)``; the latter has the input's spatial size."""
        x = F.leaky_relu(self.in_conv(x), 0.2)
        skips = []
        for conv in self.convs:
            skips.insert(0, x)
            x = F.leaky_relu(conv(x), 0.2)
        center = self.center_out(x)
        x = F.leaky_relu(self.center_conv(x), 0.2)
        for upconv, skip in zip(self.upconvs, skips):
            # output_size keeps odd sizes aligned with their skip (DFL assumes sizes divide evenly).
            x = F.leaky_relu(upconv(x, output_size=skip.shape[-2:]), 0.2)
            x = torch.cat([skip, x], 1)
        return center, self.out_conv(x)


class CodeDiscriminator(nn.Module):
    """Tells src codes from dst codes (SAEHD's "true face"): ``1 + code_res // 8`` stride-2 convs
    (4x4 then 3x3, channels ``ch * min(2**i, 8)``, leaky ReLU 0.1) and a 1x1 logit conv.

    Args:
        in_ch: code channels.
        code_res: code spatial size.
        ch: base channels (DFL: 256).
    """

    def __init__(self, in_ch: int, code_res: int, ch: int = 256):
        super().__init__()
        convs, prev = [], in_ch
        for i in range(1 + code_res // 8):
            cur = ch * min(2**i, 8)
            # DFL pads a 4x4 'SAME' conv by 2 on both sides; conv2d does the same (kernel // 2).
            convs.append(conv2d(prev, cur, 4 if i == 0 else 3, stride=2))
            prev = cur
        self.convs = nn.ModuleList(convs)
        self.out_conv = conv2d(prev, 1, 1)
        glorot_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.1)
        return self.out_conv(x)


def build_patch_discriminator(model: ModelConfig, loss: LossConfig) -> UNetPatchDiscriminator:
    """SAEHD's ``D_src`` for ``gan_power``: patch size ``gan_patch_size`` (default resolution // 8)."""
    patch = loss.gan_patch_size if loss.gan_patch_size is not None else model.resolution // 8
    return UNetPatchDiscriminator(patch, in_ch=3, base_ch=loss.gan_dims)


def build_code_discriminator(model: ModelConfig) -> CodeDiscriminator:
    """SAEHD's code discriminator for ``true_face_power`` on DF's inter codes.

    Raises:
        ValueError: for LIAE (DFL offers true face for DF only).
    """
    if model.arch != "df":
        raise ValueError("the true-face code discriminator exists for arch df only (as in DFL)")
    ch, res, _ = code_shape(model)
    return CodeDiscriminator(ch, res)
