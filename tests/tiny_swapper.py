"""Tiny ONNX one-shot swappers for tests of ``onnx-swap``: an identity encoder and a swap model with
inswapper's contract (inputs ``target`` N×3×S×S RGB in [0, 1] and ``source`` N×D, output N×3×S×S in
[0, 1], an embedding map as the last initializer), made here with torch.onnx.export and fixed seeds.
Nothing is downloaded. The swap adds an identity-dependent colour shift and a learned-looking blur, so
different identities give different fakes."""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn


class _Encoder(nn.Module):
    def __init__(self, emb: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 5, stride=4, padding=2)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.fc = nn.Linear(8 * 16, emb)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


class _Swapper(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.shift = nn.Linear(dim, 3)
        self.smooth = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, target, source):
        t = target.clamp(1e-3, 1 - 1e-3)
        logit = torch.log(t / (1 - t)) + 0.2 * self.smooth(target)
        return torch.sigmoid(logit + 2.0 * torch.tanh(30.0 * self.shift(source))[:, :, None, None])


def write_tiny_swapper(folder: str, *, size: int = 128, id_size: int = 112, emb: int = 512, dim: int = 512,
                       emap: bool = True, batch: bool = True, target: str = "target", source: str = "source",
                       seed: int = 0) -> dict:
    """Writes ``swap.onnx`` and ``identity.onnx`` into ``folder``; returns ``onnx-swap`` settings for them."""
    import onnx
    from onnx import numpy_helper

    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(seed)
    enc, swap = _Encoder(emb).eval(), _Swapper(dim).eval()
    ident_path, swap_path = os.path.join(folder, "identity.onnx"), os.path.join(folder, "swap.onnx")
    dyn = {0: "n"} if batch else None
    torch.onnx.export(enc, (torch.rand(1, 3, id_size, id_size),), ident_path, input_names=["data"],
                      output_names=["embedding"], dynamic_axes={"data": {0: "n"}, "embedding": {0: "n"}},
                      opset_version=17, dynamo=False)
    torch.onnx.export(swap, (torch.rand(1, 3, size, size), torch.rand(1, dim)), swap_path,
                      input_names=[target, source], output_names=["output"],
                      dynamic_axes={target: dyn, source: dyn, "output": dyn} if batch else None,
                      opset_version=17, dynamo=False)
    if emap:  # inswapper keeps its embedding map as the graph's last initializer
        model = onnx.load(swap_path)
        m = np.random.default_rng(seed).normal(size=(emb, dim)).astype(np.float32)
        model.graph.initializer.append(numpy_helper.from_array(m, name="emap"))
        onnx.save(model, swap_path)
    return {"swap_model": swap_path, "identity_model": ident_path, "swap_size": size, "identity_size": id_size,
            "target_input": target, "source_input": source, "latent": "emap" if emap else "embedding"}
