"""The RetinaFace ResNet-50 network in torch, for loading biubug6/Pytorch_Retinaface checkpoints.

Written from the architecture of Deng et al., "RetinaFace: Single-stage Dense Face Localisation in the
Wild" (2019), as trained by biubug6/Pytorch_Retinaface (MIT): a ResNet-50 body whose layer2/3/4 outputs
(strides 8, 16, 32) feed a three-level FPN, one SSH context module per level, and 1x1 class, box and
five-point heads with two anchors per cell. Module names follow that project's so its released state
dict (``Resnet50_Final.pth``, keys prefixed ``module.``) loads key for key; torchvision is not needed,
the body reproduces the parameter names of torchvision's ``resnet50`` (v1.5: stride on the 3x3 conv).

This module is inference-only: ``forward`` returns softmaxed class scores, like biubug6's test phase.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Blocks per stage of ResNet-50 and the anchors per feature-map cell of RetinaFace.
_RESNET50_BLOCKS = (3, 4, 6, 3)
ANCHORS_PER_CELL = 2


def _conv_bn(c_in: int, c_out: int, kernel: int, leaky: float | None) -> nn.Sequential:
    """Conv (no bias) + BatchNorm, then LeakyReLU unless ``leaky`` is None.

    The indices (0: conv, 1: bn) are part of the checkpoint's key names.
    """
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride=1, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if leaky is not None:
        layers.append(nn.LeakyReLU(negative_slope=leaky, inplace=True))
    return nn.Sequential(*layers)


def _leaky_slope(channels: int) -> float:
    # biubug6 uses a 0.1 slope only for the narrow MobileNet heads (<= 64 channels); at 256 channels
    # the activations are plain ReLUs.
    return 0.1 if channels <= 64 else 0.0


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck block (1x1 reduce, 3x3 with the stride, 1x1 expand x4), torchvision names."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int):
        super().__init__()
        c_out = width * self.expansion
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50Body(nn.Module):
    """ResNet-50 without avgpool/fc, returning the layer2, layer3 and layer4 maps (strides 8, 16, 32)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        c_in = 64
        for i, (blocks, width) in enumerate(zip(_RESNET50_BLOCKS, (64, 128, 256, 512))):
            stride = 1 if i == 0 else 2
            layer = []
            for b in range(blocks):
                layer.append(Bottleneck(c_in, width, stride if b == 0 else 1))
                c_in = width * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c3, c4, c5


class FPN(nn.Module):
    """Top-down feature pyramid: 1x1 laterals, nearest upsampling, a 3x3 merge on the two finer levels."""

    def __init__(self, in_channels: tuple[int, int, int], out_channels: int):
        super().__init__()
        leaky = _leaky_slope(out_channels)
        self.output1 = _conv_bn(in_channels[0], out_channels, 1, leaky)
        self.output2 = _conv_bn(in_channels[1], out_channels, 1, leaky)
        self.output3 = _conv_bn(in_channels[2], out_channels, 1, leaky)
        self.merge1 = _conv_bn(out_channels, out_channels, 3, leaky)
        self.merge2 = _conv_bn(out_channels, out_channels, 3, leaky)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        p1, p2, p3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        return [p1, p2, p3]


class SSH(nn.Module):
    """Single Stage Headless context module: 3x3, 5x5 and 7x7 receptive fields (as stacked 3x3 convs).

    Half the output channels come from the 3x3 branch, a quarter from each of the others; the 7x7 branch
    reuses the first conv of the 5x5 branch.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        if c_out % 4:
            raise ValueError(f"SSH output channels must be a multiple of 4, got {c_out}")
        leaky = _leaky_slope(c_out)
        self.conv3X3 = _conv_bn(c_in, c_out // 2, 3, None)
        self.conv5X5_1 = _conv_bn(c_in, c_out // 4, 3, leaky)
        self.conv5X5_2 = _conv_bn(c_out // 4, c_out // 4, 3, None)
        self.conv7X7_2 = _conv_bn(c_out // 4, c_out // 4, 3, leaky)
        # Lower-case "x" as in the released checkpoints' key names.
        self.conv7x7_3 = _conv_bn(c_out // 4, c_out // 4, 3, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.conv3X3(x)
        mid = self.conv5X5_1(x)
        b5 = self.conv5X5_2(mid)
        b7 = self.conv7x7_3(self.conv7X7_2(mid))
        return F.relu(torch.cat([b3, b5, b7], dim=1))


class _Head(nn.Module):
    """A 1x1 conv predicting ``values`` numbers per anchor, flattened to (N, H*W*anchors, values)."""

    def __init__(self, c_in: int, anchors: int, values: int):
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(c_in, anchors * values, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # NHWC before flattening gives the prior order: row, column, anchor (see ``prior_boxes``).
        out = self.conv1x1(x).permute(0, 2, 3, 1)
        return out.reshape(out.shape[0], -1, self.values)


class RetinaFaceR50(nn.Module):
    """RetinaFace with a ResNet-50 body; state-dict keys equal biubug6/Pytorch_Retinaface's (cfg_re50).

    Input: (N, 3, H, W) float32 BGR minus (104, 117, 123), H and W multiples of 32.
    Output: loc (N, P, 4), conf (N, P, 2) softmaxed (column 1 is "face"), landmarks (N, P, 10).
    """

    IN_CHANNEL = 256
    OUT_CHANNEL = 256

    def __init__(self):
        super().__init__()
        self.body = ResNet50Body()
        c = self.IN_CHANNEL
        self.fpn = FPN((c * 2, c * 4, c * 8), self.OUT_CHANNEL)
        self.ssh1 = SSH(self.OUT_CHANNEL, self.OUT_CHANNEL)
        self.ssh2 = SSH(self.OUT_CHANNEL, self.OUT_CHANNEL)
        self.ssh3 = SSH(self.OUT_CHANNEL, self.OUT_CHANNEL)
        self.ClassHead = nn.ModuleList(_Head(self.OUT_CHANNEL, ANCHORS_PER_CELL, 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(self.OUT_CHANNEL, ANCHORS_PER_CELL, 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(self.OUT_CHANNEL, ANCHORS_PER_CELL, 10) for _ in range(3))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.fpn(self.body(x))
        feats = [self.ssh1(p[0]), self.ssh2(p[1]), self.ssh3(p[2])]
        loc = torch.cat([h(f) for h, f in zip(self.BboxHead, feats)], dim=1)
        conf = torch.cat([h(f) for h, f in zip(self.ClassHead, feats)], dim=1)
        landmarks = torch.cat([h(f) for h, f in zip(self.LandmarkHead, feats)], dim=1)
        return loc, F.softmax(conf, dim=-1), landmarks


def load_state_dict(net: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Loads a biubug6-style state dict into ``net``, tolerating a ``module.`` prefix.

    Checkpoints saved before PyTorch 0.4.1 lack BatchNorm ``num_batches_tracked`` buffers, which
    inference never reads, so only those may be missing.

    Raises:
        ValueError: when keys are missing or unexpected (e.g. a MobileNet-0.25 checkpoint).
        RuntimeError: when a tensor's shape differs.
    """
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    result = net.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        hint = ""
        if any(k.startswith("body.stage1") for k in result.unexpected_keys):
            hint = (" This looks like a MobileNet-0.25 checkpoint: leave detect.weights unset to use the "
                    "shipped ONNX export of those weights.")
        raise ValueError(
            f"not a RetinaFace ResNet-50 state dict: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]}).{hint}"
        )
