"""XSeg model files: saving, loading, finding, and the model's id.

The network is ``dflray.models.xseg.XSeg`` (no I/O there); its file is the weights-only payload of
``xseg_state`` (``{format, config, state_dict}``), read through fsspec and loaded with
``torch.load(weights_only=True)``, so a file from someone else cannot run code. A model's id is the
SHA-256 of its file's bytes: faceset rows (``xseg_model``) and dataset indexes (``xseg_id``) record it.

Example:
    >>> save_xseg(model, "s3://bucket/xseg/xseg.pt")  # doctest: +SKIP
    >>> uri, sha = resolve_xseg("s3://bucket/xseg")  # the folder dflray xseg train wrote  # doctest: +SKIP
    >>> model = load_xseg(uri, "cuda")  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any, Mapping

import torch
from torch import nn

from dflray.artifacts.checkpoint import safe_load
from dflray.io.storage import atomic_write, exists, join, open_uri
from dflray.models.xseg import XSeg, xseg_from_state, xseg_state

__all__ = ["load_xseg", "model_id", "resolve_xseg", "save_xseg"]

XSEG_FILE = "xseg.pt"


def save_xseg(model: nn.Module, uri: str) -> None:
    """Writes ``xseg_state(model)`` to a local path or fsspec URI (atomically where the store allows).

    Example:
        >>> save_xseg(model, "/tmp/xseg.pt")  # doctest: +SKIP
    """
    buf = io.BytesIO()
    torch.save(xseg_state(model), buf)
    with atomic_write(uri, "wb") as f:
        f.write(buf.getvalue())


def load_xseg(path_or_dict: str | Mapping[str, Any], device: str | torch.device = "cpu") -> XSeg:
    """An :class:`XSeg` from a saved file (local path or fsspec URI) or its payload dict, in eval mode.

    Raises:
        ValueError: when it is not a dflray XSeg file or its config is invalid.

    Example:
        >>> load_xseg(xseg_state(XSeg(64, 8, 3))).resolution
        64
    """
    if isinstance(path_or_dict, Mapping):
        return xseg_from_state(path_or_dict).to(device)
    with open_uri(str(path_or_dict), "rb") as f:
        # Read fully: torch.load needs a seekable file, which not every fsspec backend gives.
        payload = safe_load(io.BytesIO(f.read()), str(path_or_dict), "a dflray XSeg file")
    return xseg_from_state(payload, str(path_or_dict)).to(device)


def model_id(uri: str) -> str:
    """The id of an XSeg model file: the SHA-256 of its bytes."""
    h = hashlib.sha256()
    with open_uri(uri) as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_xseg(model: str, field: str = "--model") -> tuple[str, str]:
    """Finds and checks an XSeg model: ``xseg.pt`` or the ``dflray xseg train`` folder holding it.

    Args:
        model: a file or folder, any fsspec URL (local paths are made absolute, for Ray workers).
        field: the option named in errors.

    Returns:
        (URI of the model file, its id ``model_id``).

    Raises:
        ValueError: naming ``field`` when it is missing or not an XSeg model written by dflray.
    """
    model = model if "://" in model else os.path.abspath(model)
    if not model.endswith(".pt") and exists(join(model, XSEG_FILE)):
        model = join(model, XSEG_FILE)
    try:
        load_xseg(model)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"{field}: {model} is not an XSeg model written by dflray xseg train: {e}") from e
    return model, model_id(model)
