"""Inference-only export of a trained model: TorchScript, and ONNX when it exports cleanly.

The exported module maps dst faces ``N×3×R×R`` (float32 RGB in [0,1], at the checkpoint's face type and
resolution) to ``(swapped face, swapped face mask, dst mask)`` — what the merge stage needs — and loads
without dflray's training code: ``torch.jit.load(path)`` or ``onnxruntime.InferenceSession(path)``. The
model's contract (face type, resolution, architecture, colour order, value range) travels inside the
file: TorchScript's extra file ``dflray.json``, ONNX's ``metadata_props``.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from typing import Any

import numpy as np
import torch

from dflray.config import ModelConfig
from dflray.io.storage import atomic_write, open_uri
from dflray.train.checkpoint import latest_checkpoint, load_payload

EXTRA_FILE = "dflray.json"


class SwapModule(torch.nn.Module):
    """dst faces → (swapped face, its mask, dst mask)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.swap(dst)


def contract(payload: dict[str, Any]) -> dict[str, Any]:
    """The model's input/output contract as stored beside the weights."""
    cfg = ModelConfig(**payload["model_config"])
    return {"format": "dflray-swap-v1", "arch": cfg.arch_string, "face_type": cfg.face_type,
            "resolution": cfg.resolution, "input": "N x 3 x R x R float32 RGB in [0,1] (dst faces)",
            "outputs": ["swapped face (N x 3 x R x R)", "swapped face mask (N x 1 x R x R)", "dst mask (N x 1 x R x R)"],
            "step": int(payload["step"]), "model_config": payload["model_config"]}


def build_swap_module(payload: dict[str, Any]) -> SwapModule:
    from dflray.models import build_model

    model = build_model(ModelConfig(**payload["model_config"]))
    model.load_state_dict(payload["model"])
    return SwapModule(model).eval()


def export_model(checkpoint: str, out: str, onnx: bool = False) -> list[str]:
    """Writes the TorchScript model to ``out`` (and ONNX beside it as ``.onnx``); returns report lines.

    Args:
        checkpoint: a training output, a checkpoint folder or a ``model.pt`` (any fsspec URL).
        out: the TorchScript file (any fsspec URL).
        onnx: also export ONNX, and check its outputs against TorchScript's with onnxruntime.

    Raises:
        ValueError: when no checkpoint is found.

    Example:
        >>> export_model("runs/ab", "models/ab.ts", onnx=True)  # doctest: +SKIP
    """
    ckpt = latest_checkpoint(checkpoint)
    if ckpt is None:
        raise ValueError(f"no training checkpoint found at {checkpoint}")
    payload = load_payload(ckpt)
    meta = contract(payload)
    module = build_swap_module(payload)
    r = meta["resolution"]
    example = torch.rand(2, 3, r, r, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=True)
        expected = [t.numpy() for t in module(example)]
    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files={EXTRA_FILE: json.dumps(meta)})
    with atomic_write(out) as f:
        f.write(buf.getvalue())
    lines = [f"torchscript: {out} ({meta['arch']}, {meta['face_type']} {r}px, step {meta['step']}, from {ckpt})"]
    if onnx:
        target = os.path.splitext(out)[0] + ".onnx"
        try:
            data = _export_onnx(module, example, meta)
            err = _check_onnx(data, example, expected)
        except Exception as e:  # noqa: BLE001 - ONNX is optional: report why it was skipped
            lines.append(f"onnx: not exported ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
        else:
            with atomic_write(target) as f:
                f.write(data)
            lines.append(f"onnx: {target} (max abs difference to TorchScript {err:.2e})")
    return lines


def _export_onnx(module: torch.nn.Module, example: torch.Tensor, meta: dict[str, Any]) -> bytes:
    import onnx

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.onnx")
        torch.onnx.export(module, (example,), path, input_names=["dst"], output_names=["face", "face_mask", "dst_mask"],
                          dynamic_axes={k: {0: "batch"} for k in ("dst", "face", "face_mask", "dst_mask")},
                          opset_version=17, dynamo=False)
        model = onnx.load(path)
    entry = model.metadata_props.add()
    entry.key, entry.value = EXTRA_FILE, json.dumps(meta)
    return model.SerializeToString()


def _check_onnx(data: bytes, example: torch.Tensor, expected: list[np.ndarray]) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"dst": example.numpy()})
    err = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
    if err > 1e-3:
        raise RuntimeError(f"ONNX outputs differ from TorchScript by {err:.2e}")
    return err


def load_exported(path: str) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """Loads an exported TorchScript model and its contract (no dflray training code involved)."""
    extra = {EXTRA_FILE: ""}
    with open_uri(path, "rb") as f:
        module = torch.jit.load(io.BytesIO(f.read()), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra[EXTRA_FILE])
