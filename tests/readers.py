"""How existing detector code finds the videos of a dataset on disk, written down as tests' readers.

These follow the conventions of public DFDC- and FaceForensics++-based training code (not its code): a
generated layout is correct when these readers, which take no dflray-specific step, see exactly the
published videos with the right labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def dfdc_read(root: str | Path) -> list[dict]:
    """DFDC training code: every ``metadata.json`` under ``root``, recursively; the part is the number after
    the last ``_`` of its folder's name, kept in 8 bits; each entry's video lies in that folder.

    Raises:
        ValueError: a ``metadata.json`` in a folder whose name does not end in a number (``int('dfdc')``).
    """
    rows = []
    for meta in sorted(Path(root).rglob("metadata.json")):
        part = int(meta.parent.name.rsplit("_", 1)[-1])
        if not 0 <= part < 256:
            raise ValueError(f"part {part} does not fit 8 bits")
        for name, e in json.loads(meta.read_text()).items():
            rows.append({"path": meta.parent / name, "name": name, "label": e["label"], "split": e.get("split"),
                         "original": e["original"], "part": np.uint8(part)})
    return rows


def ffpp_read(root: str | Path, source: str = "youtube") -> dict[str, list[Path]]:
    """FF++ training code: every ``.mp4`` under ``root`` is an original (``original_sequences/<source>/<c>/
    videos``), a fake (``manipulated_sequences/<method>/<c>/videos``) or a mask (``…/masks/videos``); anything
    else is an "other" video that such code would take as a real one."""
    found: dict[str, list[Path]] = {"original": [], "fake": [], "mask": [], "other": []}
    root = Path(root)
    for p in sorted(root.rglob("*.mp4")):
        parts = p.relative_to(root).parts
        if len(parts) == 5 and parts[:2] == ("original_sequences", source) and parts[3] == "videos":
            found["original"].append(p)
        elif len(parts) == 5 and parts[0] == "manipulated_sequences" and parts[2:4] == ("masks", "videos"):
            found["mask"].append(p)
        elif len(parts) == 5 and parts[0] == "manipulated_sequences" and parts[3] == "videos":
            found["fake"].append(p)
        else:
            found["other"].append(p)
    return found
