"""Inference-only export of a trained model: TorchScript, and ONNX when it exports cleanly.

The exported module maps dst faces ``N×3×R×R`` (float32 RGB in [0,1], at the checkpoint's face type and
resolution) to ``(swapped face, swapped face mask, dst mask)`` — what the merge stage needs — and loads
without dflray's training code: ``torch.jit.load(path)`` or ``onnxruntime.InferenceSession(path)``. The
model's contract (face type, resolution, architecture, colour order, value range) travels inside the
file: TorchScript's extra file ``dflray.json``, ONNX's ``metadata_props``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dflray.artifacts.checkpoint import MODEL_FILE, latest_checkpoint, load_payload, read_meta
from dflray.config import FACE_TYPES, ModelConfig
from dflray.io.storage import atomic_write, exists, fs_and_path, join, open_uri

EXTRA_FILE = "dflray.json"
CONTRACT_FORMAT = "dflray-swap-v1"


@dataclass(frozen=True)
class ModelContract:
    """What an exported swap model takes and gives, stored inside the file beside its weights.

    Attributes:
        arch: architecture string (``liae-ud``, ``df``, ...).
        face_type: the face type of its crops (one of ``FACE_TYPES``).
        resolution: crop side in pixels.
        step: the training step it was exported at.
        model_config: the ``ModelConfig`` it was built from, as a dict.
        format: the contract's version (``dflray-swap-v1``).
        input: the input, in words.
        outputs: the outputs, in words.

    Example:
        >>> c = ModelContract.from_dict({"arch": "liae-ud", "face_type": "whole_face", "resolution": 64, "step": 7})
        >>> (c.face_type, c.resolution), ModelContract.from_dict(c.to_dict()) == c
        (('whole_face', 64), True)
    """

    arch: str
    face_type: str
    resolution: int
    step: int = 0
    model_config: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    format: str = CONTRACT_FORMAT
    input: str = "N x 3 x R x R float32 RGB in [0,1] (dst faces)"
    outputs: tuple[str, ...] = ("swapped face (N x 3 x R x R)", "swapped face mask (N x 1 x R x R)",
                                "dst mask (N x 1 x R x R)")

    def __post_init__(self) -> None:
        if self.format != CONTRACT_FORMAT:
            raise ValueError(f"model contract format {self.format!r} is not {CONTRACT_FORMAT!r}")
        if self.face_type not in FACE_TYPES:
            raise ValueError(f"unknown face type {self.face_type!r} in the model's contract")
        if int(self.resolution) < 8:
            raise ValueError(f"resolution {self.resolution} in the model's contract is not a crop size")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelContract":
        """The contract from its stored JSON form; unknown keys are ignored, bad values raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        if "outputs" in kw:
            kw["outputs"] = tuple(kw["outputs"])
        try:
            kw["resolution"], kw["step"] = int(kw["resolution"]), int(kw.get("step", 0))
            return cls(**kw)
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a dflray model contract: {e}") from e

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the file (and in a merge output's ``merge.json``)."""
        d = dataclasses.asdict(self)
        d["outputs"] = list(self.outputs)
        return d


class SwapModule(torch.nn.Module):
    """dst faces → (swapped face, its mask, dst mask)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.model.swap(dst)


def contract(payload: dict[str, Any]) -> ModelContract:
    """The input/output contract of a training checkpoint's model."""
    cfg = ModelConfig(**payload["model_config"])
    return ModelContract(arch=cfg.arch_string, face_type=cfg.face_type, resolution=cfg.resolution,
                         step=int(payload["step"]), model_config=payload["model_config"])


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
        ValueError: when no checkpoint is found, or the file found is not a (complete) dflray checkpoint.

    Example:
        >>> export_model("runs/ab", "models/ab.ts", onnx=True)  # doctest: +SKIP
    """
    ckpt = latest_checkpoint(checkpoint)
    if ckpt is None:
        raise ValueError(f"no training checkpoint found at {checkpoint}")
    payload = load_payload(ckpt)
    try:
        meta = contract(payload)
        module = build_swap_module(payload)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # a payload of the format missing parts
        why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"
        raise ValueError(f"{ckpt} is not a complete dflray checkpoint: its model does not load ({why})") from None
    r = meta.resolution
    example = torch.rand(2, 3, r, r, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=True)
        expected = [t.numpy() for t in module(example)]
    buf = io.BytesIO()
    torch.jit.save(traced, buf, _extra_files={EXTRA_FILE: json.dumps(meta.to_dict())})
    with atomic_write(out) as f:
        f.write(buf.getvalue())
    lines = [f"torchscript: {out} ({meta.arch}, {meta.face_type} {r}px, step {meta.step}, from {ckpt})"]
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


def _export_onnx(module: torch.nn.Module, example: torch.Tensor, meta: ModelContract) -> bytes:
    import onnx

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.onnx")
        torch.onnx.export(module, (example,), path, input_names=["dst"], output_names=["face", "face_mask", "dst_mask"],
                          dynamic_axes={k: {0: "batch"} for k in ("dst", "face", "face_mask", "dst_mask")},
                          opset_version=17, dynamo=False)
        model = onnx.load(path)
    entry = model.metadata_props.add()
    entry.key, entry.value = EXTRA_FILE, json.dumps(meta.to_dict())
    return model.SerializeToString()


def _check_onnx(data: bytes, example: torch.Tensor, expected: list[np.ndarray]) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"dst": example.numpy()})
    err = max(float(np.abs(g - e).max()) for g, e in zip(got, expected))
    if err > 1e-3:
        raise RuntimeError(f"ONNX outputs differ from TorchScript by {err:.2e}")
    return err


def load_exported(path: str) -> tuple[torch.jit.ScriptModule, ModelContract]:
    """Loads an exported TorchScript model and its contract (no dflray training code involved).

    Raises:
        ValueError: when the file carries no valid dflray contract.
    """
    extra = {EXTRA_FILE: ""}
    with open_uri(path, "rb") as f:
        module = torch.jit.load(io.BytesIO(f.read()), map_location="cpu", _extra_files=extra)
    return module, ModelContract.from_dict(json.loads(extra[EXTRA_FILE] or "{}"))


def _exported_contract(uri: str) -> ModelContract | None:
    try:
        return load_exported(uri)[1]
    except Exception:  # noqa: BLE001 - not a TorchScript export: maybe a checkpoint
        return None


def resolve_model(model: str, out: str) -> tuple[str, ModelContract, str, str]:
    """The exported model to run: ``model`` itself, or ``OUT/model.ts`` exported from a checkpoint.

    A checkpoint's export is cached beside ``OUT/model.source`` (the checkpoint's sha256) and redone
    only when the checkpoint changes.

    Returns:
        (model URI, contract, sha256 of the model, description of the source). The sha256 of a
        checkpoint's export is that of the checkpoint's ``model.pt``: TorchScript files of one model differ
        from run to run.

    Raises:
        ValueError: when ``model`` is neither an exported model nor a training checkpoint.
    """
    fs, path = fs_and_path(model)
    if fs.isfile(path):
        found = _exported_contract(model)
        if found is not None:
            with open_uri(model) as f:
                return model, found, hashlib.sha256(f.read()).hexdigest(), model
    ckpt = latest_checkpoint(model)
    if ckpt is None:
        raise ValueError(f"--model: {model} is neither an exported model (dflray export) nor a training checkpoint")
    meta = (read_meta(ckpt) if not ckpt.endswith(".pt") else None) or {}
    source = f"{ckpt} (step {meta.get('step', '?')})"
    h = hashlib.sha256()
    with open_uri(ckpt if ckpt.endswith(".pt") else join(ckpt, MODEL_FILE)) as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    target = join(out, "model.ts")
    recorded = join(out, "model.source")
    if not (exists(target) and exists(recorded) and open_uri(recorded).read().decode() == digest):
        export_model(ckpt, target)
        with atomic_write(recorded) as f:
            f.write(digest.encode())
    return target, load_exported(target)[1], digest, source
