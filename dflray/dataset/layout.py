"""Where each published video of a generated dataset goes, and its DFDC-format ``metadata.json``.

Three layouts, each readable by existing detector code unchanged:

- ``flat``: ``videos/<video_id>.mp4``, masks in ``masks/<item>.mp4``; ``metadata.json`` keys are the file
  names.
- ``dfdc``: DFDC's released structure: ``dfdc_<split>_part_<n>/<video_id>.mp4``, each part with its own
  ``metadata.json`` (``{"name.mp4": {"label": "FAKE", "split": "train", "original": "other.mp4"}}``;
  REAL entries carry no ``original``); names are unique across the whole dataset and a fake lies in the
  part of its original. Masks (DFDC released none) go to ``masks/<item>.mp4``.
- ``ffpp``: FaceForensics++'s: ``original_sequences/<source>/<c0|c23|c40>/videos/<id>.mp4`` and
  ``manipulated_sequences/<method>/<c..>/videos/<target>_<source>.mp4`` with the masks in
  ``manipulated_sequences/<method>/masks/videos/<target>_<source>.mp4``. File names repeat across
  compression levels, so the top-level ``metadata.json`` keys are the relative paths.

Every layout also gets the top-level ``metadata.json`` over all published videos, and ``index.parquet``
(the ``name`` column is the metadata key, ``path`` the file).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Iterable

LAYOUTS = ("flat", "dfdc", "ffpp")
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def short_id(*parts: str, length: int = 10) -> str:
    """A stable id of lowercase letters (DFDC-style file names, e.g. ``aaqaifqrwn``) from strings.

    Example:
        >>> short_id("item", "c23") == short_id("item", "c23")
        True
    """
    digest = int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest(), "big")
    out = []
    for _ in range(length):
        digest, r = divmod(digest, 26)
        out.append(_LETTERS[r])
    return "".join(out)


def method_name(arch: str | None) -> str:
    """The manipulation method's name (FF++'s ``manipulated_sequences/<method>``), e.g. ``dflray-liae-ud``."""
    arch = re.sub(r"[^A-Za-z0-9._-]+", "-", arch or "unknown")
    return f"dflray-{arch}"


def dfdc_parts(real_ids_by_split: dict[str, list[str]], videos_per_real: int, part_size: int) -> dict[str, int]:
    """Part number of each real video (its fakes share it), ``part_size`` videos per part at most.

    Args:
        real_ids_by_split: split → real item ids (ordered as they should fill the parts).
        videos_per_real: published videos per real video (itself and its fakes).
        part_size: videos per part.
    """
    per_part = max(1, part_size // max(1, videos_per_real))
    return {rid: i // per_part for ids in real_ids_by_split.values() for i, rid in enumerate(ids)}


def place(layout: str, *, label: str, split: str, compression: str, video_id: str, item_name: str,
          part: int = 0, real_name: str = "", source_name: str = "", method: str = "",
          ffpp_source: str = "dflray") -> dict[str, Any]:
    """The relative paths and metadata key of one published video.

    Args:
        layout: ``flat``, ``dfdc`` or ``ffpp``.
        label: ``REAL`` or ``FAKE``.
        split: the video's split.
        compression: ``c0``, ``c23`` or ``c40``.
        video_id: the published video's id (unique over the dataset).
        item_name: the plan item's short id (names the mask, shared by its compression levels).
        part: DFDC part number.
        real_name: FF++ id of the real video (a fake's target video).
        source_name: FF++ id of the fake's source (a video of the source identity).
        method: FF++ method folder name.
        ffpp_source: FF++ ``original_sequences/<source>`` folder name.

    Returns:
        ``{"path", "mask_path" (None for REAL), "name" (the metadata.json key)}``.
    """
    fake = label == "FAKE"
    if layout == "flat":
        path = f"videos/{video_id}.mp4"
        return {"path": path, "mask_path": f"masks/{item_name}.mp4" if fake else None, "name": f"{video_id}.mp4"}
    if layout == "dfdc":
        path = f"dfdc_{split}_part_{part}/{video_id}.mp4"
        return {"path": path, "mask_path": f"masks/{item_name}.mp4" if fake else None, "name": f"{video_id}.mp4"}
    if layout == "ffpp":
        if fake:
            stem = f"{real_name}_{source_name}"
            path = f"manipulated_sequences/{method}/{compression}/videos/{stem}.mp4"
            return {"path": path, "mask_path": f"manipulated_sequences/{method}/masks/videos/{stem}.mp4",
                    "name": path}
        path = f"original_sequences/{ffpp_source}/{compression}/videos/{real_name}.mp4"
        return {"path": path, "mask_path": None, "name": path}
    raise ValueError(f"layout: must be one of {', '.join(LAYOUTS)}, got {layout!r}")


def metadata_entry(row: dict[str, Any]) -> dict[str, Any]:
    """A DFDC ``metadata.json`` entry of an index row (REAL entries carry no ``original``)."""
    entry: dict[str, Any] = {"label": row["label"], "split": row["split"]}
    if row["label"] == "FAKE":
        entry["original"] = row["original_name"]
    return entry


def metadata_files(layout: str, rows: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The ``metadata.json`` documents of the published rows: relative path → {key: entry}.

    Always ``metadata.json`` over everything; with ``dfdc`` also one per part folder, keyed by file name.
    """
    rows = [r for r in rows if r.get("status") == "ok"]
    docs: dict[str, dict[str, dict[str, Any]]] = {"metadata.json": {}}
    for r in sorted(rows, key=lambda r: r["name"]):
        docs["metadata.json"][r["name"]] = metadata_entry(r)
        if layout == "dfdc":
            folder = r["path"].rsplit("/", 1)[0]
            docs.setdefault(f"{folder}/metadata.json", {})[r["name"]] = metadata_entry(r)
    return docs


def dumps(doc: dict[str, Any]) -> bytes:
    """JSON bytes of a metadata document (sorted keys: reruns write identical files)."""
    return json.dumps(doc, indent=1, sort_keys=True).encode()
