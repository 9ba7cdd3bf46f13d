"""Reading torch files that someone else may have made: tensors and plain data only, never their code."""

from __future__ import annotations

import io
import re
import warnings
from typing import Any

__all__ = ["safe_load"]


def safe_load(data: io.BytesIO, path: str, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)`` of the bytes of ``path``; a refusal becomes a ValueError naming it.

    torch's own message for a refused file advises loading it again with ``weights_only=False``: for a
    file from someone else that runs its code, so the message is never passed on. The error says what
    the file is not, and which forbidden callable it names when it names one (a crafted pickle).

    Raises:
        ValueError: ``"{path} is not {what} ..."``.
    """
    import torch

    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses
            warnings.simplefilter("ignore")
            return torch.load(data, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any refusal means the same: not a file of ours
        raise ValueError(f"{path} is not {what}: {_refusal(e)}; nothing in it was run") from None


_FORBIDDEN = re.compile(r"unsupported GLOBAL ([\w.]+)|Unsupported global: GLOBAL ([\w.]+)", re.IGNORECASE)


def _refusal(e: Exception) -> str:
    """Why a weights-only load refused a file, in words of our own (none of torch's advice)."""
    found = _FORBIDDEN.search(str(e))
    if found:
        return f"it would call {found.group(1) or found.group(2)}, unsafe to load (only tensors and plain data are)"
    return f"torch cannot read it as tensors and plain data ({type(e).__name__})"
