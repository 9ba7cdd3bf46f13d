"""Training checkpoints: one ``model.pt`` (tensors and plain data only) plus a small ``meta.json``.

The payload is ``{format, model, optimizer, discriminators, model_config, step, run_config, history,
counters}``: state dicts of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(weights_only=True)`` — a checkpoint from someone else can never run code. ``meta.json``
(step, model config) lets the driver check a resume before any worker starts.

Ray Train keeps checkpoints under ``<out>/run/checkpoint_*``; ``latest_checkpoint`` finds the newest
complete one there (or takes a checkpoint directory or ``model.pt`` URI directly).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import torch

from dflray.io.storage import exists, fs_and_path, join, open_uri
from dflray.io.weights import safe_load

FORMAT = "dflray-train-v1"
MODEL_FILE = "model.pt"
META_FILE = "meta.json"
RUN_NAME = "run"


def save_payload(directory: str, payload: dict[str, Any]) -> None:
    """Writes ``model.pt`` and ``meta.json`` into a local directory."""
    torch.save(payload, os.path.join(directory, MODEL_FILE))
    meta = {"format": FORMAT, "step": payload["step"], "model_config": payload["model_config"],
            "run_config": payload["run_config"], "counters": payload.get("counters", {}),
            "rank_checksums": payload.get("rank_checksums", [])}
    ssim = payload.get("ssim_history")
    if ssim is not None and len(ssim):
        # Held-out src reconstruction SSIM (DeepFaceLab paper's measure) at each evaluated step.
        meta["ssim_history"] = [[int(s), round(float(v), 5)] for s, v in ssim.tolist()]
        meta["heldout_ssim"] = meta["ssim_history"][-1][1]
    with open(os.path.join(directory, META_FILE), "w") as f:
        json.dump(meta, f, indent=1)


def load_payload(uri: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Loads a checkpoint (a directory holding ``model.pt``, or the file itself) safely.

    Raises:
        ValueError: when the file is not a dflray training checkpoint.
    """
    path = uri if uri.endswith(".pt") else join(uri, MODEL_FILE)
    with open_uri(path, "rb") as f:
        data = io.BytesIO(f.read())
    payload = safe_load(data, path, f"a dflray checkpoint ({FORMAT})", map_location)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a dflray checkpoint ({FORMAT})")
    return payload


def read_meta(directory: str) -> dict[str, Any] | None:
    """The ``meta.json`` of a checkpoint directory, or None when it has none (incomplete)."""
    path = join(directory, META_FILE)
    if not exists(path):
        return None
    with open_uri(path, "rb") as f:
        return json.load(f)


def latest_checkpoint(out_or_ckpt: str) -> str | None:
    """The newest complete checkpoint directory of a training output (or the checkpoint given).

    Accepts a training ``--out`` URI, its ``run`` folder, a checkpoint directory or a ``model.pt``.
    """
    if out_or_ckpt.endswith(".pt"):
        return out_or_ckpt if exists(out_or_ckpt) else None
    if read_meta(out_or_ckpt) is not None:
        return out_or_ckpt
    best: tuple[int, str] | None = None
    for base in (join(out_or_ckpt, RUN_NAME), out_or_ckpt):
        fs, path = fs_and_path(base)
        fs.invalidate_cache(path)  # object-store listings are cached by fsspec; Ray Train wrote since
        if not fs.exists(path):
            continue
        for info in fs.ls(path, detail=True):
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if info["type"] != "directory" or not name.startswith("checkpoint_"):
                continue
            d = join(base, name)
            meta = read_meta(d)
            if meta is not None and (best is None or meta["step"] > best[0]):
                best = (meta["step"], d)
        if best:
            break
    return best[1] if best else None
