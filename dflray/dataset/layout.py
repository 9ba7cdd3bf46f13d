"""Where each published video of a generated dataset goes, and the labels files readers look for.

Three layouts, each readable by existing detector code unchanged. The published root holds the layout and
the dataset's own tables only (``index.parquet``, ``frames.parquet``, ``plan.parquet``, ``errors.parquet``,
``generate.json``, ``labels.json``, ``report.html``); the working files live elsewhere (``--work``), so a
reader that walks the root finds no stray ``.mp4`` nor a second ``metadata.json``.

- ``flat``: Kaggle's DFDC sample folder: ``videos/<video_id>.mp4`` with ``videos/metadata.json``
  (keys are the file names); masks in ``masks/<item>.mp4``.
- ``dfdc``: DFDC's released structure: ``dfdc_<split>_part_<n>/<video_id>.mp4``, each part with its own
  ``metadata.json`` (``{"name.mp4": {"label": "FAKE", "split": "train", "original": "other.mp4"}}``,
  ``"original": null`` on REAL entries). Parts are numbered once across the whole dataset, train first,
  as DFDC numbers its 50 parts (readers take the number after the last ``_`` as the part and assign folds by
  it alone); a fake lies in the part of its original, names are unique across the dataset. Masks (DFDC
  released none) go to ``masks/<item>.mp4``.
- ``ffpp``: FaceForensics++'s: ``original_sequences/<source>/<c0|c23|c40>/videos/<id>.mp4`` (``source``
  ``youtube`` by default) and ``manipulated_sequences/<method>/<c..>/videos/<target>_<source>.mp4``, the
  masks in ``manipulated_sequences/<method>/masks/videos/<target>_<source>.mp4`` (one per fake, as FF++
  keeps them, not per compression level), and ``splits/{train,val,test}.json``: FF++'s lists of
  ``[target, source]`` pairs. Ids are letters, or FF++'s numbers (``000``, ``001``, …) with
  ``ffpp_numeric_names``. File names repeat across compression levels, so the ``labels.json`` keys are the
  relative paths.

Every layout gets ``labels.json``: DFDC-format entries over all published videos (keyed by the index's
``name``), under a name that DFDC readers, which collect every ``metadata.json``, do not pick up.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any, Iterable

LAYOUTS = ("flat", "dfdc", "ffpp")
DFDC_PARTS = 50  # DFDC's own count; readers keep the part number in 8 bits
DFDC_MAX_PARTS = 256
SPLIT_ORDER = ("train", "val", "test")
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


def _split_key(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def dfdc_reals_per_part(counts: list[int], videos_per_real: int, part_size: int = 0) -> int:
    """Real videos per DFDC part (each with its fakes).

    Args:
        counts: real videos in each split (a split's parts hold its videos only).
        videos_per_real: published videos per real video (itself and its fakes).
        part_size: videos per part; 0 chooses the smallest part that fits the dataset in DFDC's 50 parts
            (always possible: at worst one part per split). A given size may need more parts: they are
            numbered on (50, 51, …), and ``dfdc_parts`` refuses more than 256.
    """
    if part_size:
        return max(1, part_size // max(1, videos_per_real))
    per_part = max(1, math.ceil(sum(counts) / DFDC_PARTS))
    while sum(math.ceil(n / per_part) for n in counts) > DFDC_PARTS:
        per_part += 1
    return per_part


def dfdc_parts(real_ids_by_split: dict[str, list[str]], videos_per_real: int, part_size: int = 0) -> dict[str, int]:
    """Part number of each real video (its fakes share it), numbered once across the splits, train first.

    Args:
        real_ids_by_split: split → real item ids (ordered as they should fill the parts).
        videos_per_real: published videos per real video (itself and its fakes).
        part_size: videos per part (0: the smallest part that fits the dataset in 50 parts).

    Raises:
        ValueError ``dfdc_part_size``: more than 256 parts (readers keep the part number in 8 bits).

    Example:
        >>> dfdc_parts({"test": ["c"], "train": ["a", "b"]}, 2, part_size=2)
        {'a': 0, 'b': 1, 'c': 2}
    """
    splits = sorted(real_ids_by_split, key=_split_key)
    per_part = dfdc_reals_per_part([len(real_ids_by_split[s]) for s in splits], videos_per_real, part_size)
    parts: dict[str, int] = {}
    first = 0
    for s in splits:
        ids = real_ids_by_split[s]
        for i, rid in enumerate(ids):
            parts[rid] = first + i // per_part
        first += math.ceil(len(ids) / per_part)
    if first > DFDC_MAX_PARTS:
        raise ValueError(f"dfdc_part_size: {part_size} videos per part makes {first} parts; DFDC readers keep the "
                         f"part number in 8 bits (at most {DFDC_MAX_PARTS}): use a larger part, or 0 (auto)")
    return parts


def ffpp_numbers(real_ids_by_split: dict[str, list[str]]) -> dict[str, str]:
    """FF++'s numeric video names (``000``, ``001``, …; more digits past 1000), train first, for
    ``ffpp_numeric_names``.

    Example:
        >>> ffpp_numbers({"val": ["z"], "train": ["b", "a"]})
        {'b': '000', 'a': '001', 'z': '002'}
    """
    ordered = [rid for s in sorted(real_ids_by_split, key=_split_key) for rid in real_ids_by_split[s]]
    width = max(3, len(str(len(ordered) - 1)))
    return {rid: str(i).zfill(width) for i, rid in enumerate(ordered)}


def place(layout: str, *, label: str, split: str, compression: str, video_id: str, item_name: str,
          part: int = 0, real_name: str = "", source_name: str = "", method: str = "",
          ffpp_source: str = "youtube") -> dict[str, Any]:
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
    """A DFDC ``metadata.json`` entry of an index row (``"original": null`` on REAL entries, as DFDC's); a
    fake's entry also names its method (``method``, ``method_version``), which DFDC readers ignore."""
    entry = {"label": row["label"], "split": row["split"],
             "original": row["original_name"] if row["label"] == "FAKE" else None}
    if row["label"] == "FAKE" and row.get("method"):
        entry.update(method=row["method"], method_version=row.get("method_version"))
    return entry


LABELS = "labels.json"


def metadata_files(layout: str, rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The labels documents of the published rows: relative path → document.

    Always ``labels.json`` over everything (keyed by ``name``); ``flat``: ``videos/metadata.json``; ``dfdc``:
    one ``metadata.json`` per part folder, keyed by file name; ``ffpp``: ``splits/<split>.json``, FF++'s
    sorted lists of ``[target, source]`` pairs (empty lists for the standard splits without fakes).
    """
    docs: dict[str, Any] = {LABELS: {}}
    if layout == "ffpp":
        docs.update({f"splits/{s}.json": [] for s in SPLIT_ORDER})
    pairs_seen: set[tuple[str, str, str]] = set()
    for r in rows:  # as they come (the documents' keys are sorted when written)
        if r.get("status") != "ok":
            continue
        entry = docs[LABELS][r["name"]] = metadata_entry(r)
        if layout in ("flat", "dfdc"):
            folder = r["path"].rsplit("/", 1)[0]
            docs.setdefault(f"{folder}/metadata.json", {})[r["name"].rsplit("/", 1)[-1]] = entry
        elif layout == "ffpp" and r["label"] == "FAKE":
            pair = r["path"].rsplit("/", 1)[-1].removesuffix(".mp4").split("_", 1)
            if (r["split"], *pair) not in pairs_seen:  # a set: the split files of 100,000 fakes in linear time
                pairs_seen.add((r["split"], *pair))
                docs.setdefault(f"splits/{r['split']}.json", []).append(pair)
    for key, doc in docs.items():
        if isinstance(doc, list):
            doc.sort()
    return docs


def dumps(doc: Any) -> bytes:
    """JSON bytes of a metadata document (sorted keys: reruns write identical files)."""
    return json.dumps(doc, indent=1, sort_keys=True).encode()
