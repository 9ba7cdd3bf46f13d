"""Stage 2a, identities: who is in each video.

Each video's dominant person gets one mean dlib embedding (computed by Ray tasks over chunks of videos,
so that the driver never holds the faces); a video with an identity label keeps it, the others are
clustered into identities (``dflray.dataset.plan.cluster_identities``). The pure functions live in
``dflray.dataset.plan``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

from dflray.config import GenerateConfig
from dflray.faceset import read_videos
from dflray.io.storage import arrow_filesystem

__all__ = ["Identities", "find_identities", "identities_from_embeddings", "video_embeddings"]


@dataclass(frozen=True)
class Identities:
    """The people of a plan's videos.

    Attributes:
        videos: the manifest rows, in manifest order, each with its ``identity`` and ``identity_source``
            (``"label"`` or ``"cluster"``; a video without a usable face is its own ``unknown-…`` person).
        means: identity → the mean dlib embedding of its videos' dominant person.
        usable: the videos that can be a fake's target or source: extracted (``ok`` or ``partial``) and
            with a dominant person.
    """

    videos: list[dict[str, Any]]
    means: dict[str, np.ndarray]
    usable: frozenset[str]


def _dominant_task(faceset: str, videos: list[tuple[str, list[str]]], threshold: float) -> dict[str, list[float]]:
    """Dominant identity embedding of each video (a Ray task over a chunk of videos)."""
    import pyarrow.dataset as pads

    from dflray.dataset.plan import dominant_embedding

    fs, _ = arrow_filesystem(faceset)
    out = {}
    for vid, files in videos:
        if not files:
            continue
        t = pads.dataset(files, filesystem=fs, format="parquet").to_table(
            columns=["frame_index", "embedding"], filter=pads.field("video_id") == vid)
        emb = dominant_embedding({"frame_index": t.column("frame_index").to_numpy(),
                                  "embedding": t.column("embedding").to_pylist()}, threshold)
        if emb is not None:
            out[vid] = emb.tolist()
    return out


def video_embeddings(faceset: str, holders: dict[str, list[str]], threshold: float,
                     chunk: int = 64) -> dict[str, np.ndarray]:
    """video_id → the mean dlib embedding of the video's dominant person, computed by Ray tasks over
    chunks of videos, so the driver never holds the faces (its memory follows videos, not faces)."""
    items = sorted(holders.items())
    task = ray.remote(_dominant_task).options(num_cpus=0.5)
    refs = [task.remote(faceset, items[i:i + chunk], threshold) for i in range(0, len(items), chunk)]
    out: dict[str, np.ndarray] = {}
    for part in ray.get(refs):
        out.update({k: np.asarray(v, np.float64) for k, v in part.items()})
    return out


def find_identities(cfg: GenerateConfig, manifest: list[dict[str, Any]], faceset: str,
                    holders: dict[str, list[str]]) -> Identities:
    """The identity of every manifest video (its label, else its cluster) and each identity's embedding.

    Args:
        cfg: the plan (``merge.identity.threshold`` picks a video's dominant person, ``identity`` clusters).
        manifest: ``dflray.dataset.plan.read_manifest``'s rows, with absolute ``uri`` and ``video_id``.
        faceset: the extracted faceset of every video.
        holders: ``dflray.faceset.face_holders(faceset)``.
    """
    status = {r["video_id"]: r["status"] for r in read_videos(faceset).select(["video_id", "status"]).to_pylist()}
    embeddings = video_embeddings(faceset, holders, cfg.merge.identity.threshold)
    return identities_from_embeddings(cfg, manifest, embeddings, status)


def identities_from_embeddings(cfg: GenerateConfig, manifest: list[dict[str, Any]],
                               embeddings: dict[str, np.ndarray], status: dict[str, str]) -> Identities:
    """``find_identities`` once the videos' embeddings are known (pure: no Ray, no I/O).

    Args:
        cfg: the plan (``identity`` clusters the unlabelled videos).
        manifest: ``dflray.dataset.plan.read_manifest``'s rows.
        embeddings: video_id → the mean embedding of its dominant person (``video_embeddings``).
        status: video_id → its extraction status (``ok``, ``partial``, …).
    """
    from dflray.dataset.plan import cluster_identities

    unlabelled = {m["video_id"]: embeddings[m["video_id"]] for m in manifest
                  if not m["identity"] and m["video_id"] in embeddings}
    clustered = cluster_identities(unlabelled, cfg.identity.threshold, cfg.identity.prefix)
    rows = []
    for m in manifest:
        ident, src = m["identity"], "label"
        if not ident:
            # A video without a usable face is its own (unknown) person: it can be a real video only.
            ident, src = clustered.get(m["video_id"], f"unknown-{m['video_id'][:8]}"), "cluster"
        rows.append({**m, "identity": ident, "identity_source": src})
    ident_emb: dict[str, list[np.ndarray]] = {}
    for r in rows:
        if r["video_id"] in embeddings:
            ident_emb.setdefault(r["identity"], []).append(embeddings[r["video_id"]])
    usable = frozenset(r["video_id"] for r in rows
                       if status.get(r["video_id"]) in ("ok", "partial") and r["video_id"] in embeddings)
    return Identities(videos=rows, means={k: np.mean(v, axis=0) for k, v in ident_emb.items()}, usable=usable)
