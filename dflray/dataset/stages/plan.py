"""Stage 2b, plan: identity-disjoint splits and the pairing of source identities with target videos →
one REAL row per video and one FAKE row per planned fake (schema ``plan``).

The plan is kept (``OUT/plan.parquet``, with the identities' embeddings in ``WORK/identities.json``):
a rerun uses it unchanged. The pure planning functions (splits, pairing, seeds) live in
``dflray.dataset.plan``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from dflray.config import GenerateConfig
from dflray.dataset.stages.base import GenerateSummary, TableList, read_json, write_json
from dflray.dataset.stages.identities import Identities
from dflray.io import schema
from dflray.io.storage import atomic_write, exists, join, open_uri

log = logging.getLogger("dflray.generate")

__all__ = ["DatasetPlan", "count_plan", "model_key", "plan_dataset", "read_plan", "write_plan"]


@dataclass(frozen=True)
class DatasetPlan:
    """What a run makes.

    Attributes:
        rows: the plan rows (schema ``plan``): REAL rows first, in manifest order, then the FAKE rows; held
            as the plan's table (``TableList``: each row a dict when it is read), since the driver keeps the
            plan through the whole job.
        identity_embeddings: identity → the mean dlib embedding of its videos' dominant person (the
            quality stage's reference for a fake's source identity).
    """

    rows: TableList
    identity_embeddings: dict[str, list[float]]


def model_key(source: str, target: str | None) -> str:
    """A folder-safe, collision-free name of a model (source identity, or source and target)."""
    raw = source if target is None else f"{source}__{target}"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._-")[:48] or "model"
    return f"{stem}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"


def _model_key_of(cfg: GenerateConfig, method: str, source: str, target: str) -> str:
    """The model a fake's method needs ("" for a method without one). A model method other than the
    plan's own architecture (``models.train.model.arch``) gets models of its own."""
    from dflray.methods import method_spec

    if method and method_spec(method).model == "none":
        return ""
    key = model_key(source, None if cfg.models.per == "source" else target)
    return key if method in ("", cfg.models.train.model.arch) else f"{key}-{method}"


def plan_dataset(cfg: GenerateConfig, people: Identities) -> DatasetPlan:
    """The plan: one REAL row per manifest video and one FAKE row per pairing (schema ``plan``).

    Args:
        cfg: the plan's config (``splits``, ``pairing``, ``models.per``, ``seed``).
        people: ``find_identities``'s identities of the manifest videos.
    """
    from dflray.dataset.plan import assign_splits, pair, plan_seed

    rows = people.videos
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["identity"]] = counts.get(r["identity"], 0) + 1
    splits = assign_splits(counts, cfg.splits, cfg.seed)
    means = people.means
    targets, sources = [], {}
    for r in rows:
        if r["video_id"] in people.usable:
            targets.append({"video_id": r["video_id"], "identity": r["identity"], "split": splits[r["identity"]],
                            "attributes": r["attributes"], "embedding": means.get(r["identity"])})
            s = sources.setdefault(r["identity"], {"split": splits[r["identity"]], "attributes": r["attributes"],
                                                   "embedding": means.get(r["identity"]), "videos": 0})
            s["videos"] += 1
    pairs = pair(targets, sources, cfg.pairing, cfg.seed)
    by_vid = {r["video_id"]: r for r in rows}
    plan = []
    for r in rows:
        plan.append({"item_id": r["video_id"], "kind": "REAL", "video_id": r["video_id"], "uri": r["uri"],
                     "identity": r["identity"], "identity_source": r["identity_source"],
                     "split": splits[r["identity"]], "seed": plan_seed(cfg.seed, r["video_id"]),
                     "attributes": json.dumps(r["attributes"], sort_keys=True)})
    for p, item, method in _fakes(cfg, pairs):
        t = by_vid[p["video_id"]]
        plan.append({"item_id": item, "kind": "FAKE", "video_id": t["video_id"], "uri": t["uri"],
                     "identity": t["identity"], "identity_source": t["identity_source"], "split": p["split"],
                     "source_identity": p["source_identity"], "method": method,
                     "model_key": _model_key_of(cfg, method, p["source_identity"], t["identity"]),
                     "seed": plan_seed(cfg.seed, item), "attributes": json.dumps(t["attributes"], sort_keys=True)})
    wanted = len(targets) * cfg.pairing.fakes_per_video
    if len(pairs) < wanted:
        log.warning("pairing: %d of %d wanted source identities could be paired with videos (too few eligible "
                    "source identities in a split, exclusions or max_per_source)", len(pairs), wanted)
    return DatasetPlan(TableList(schema.table_from_rows("plan", plan)), {k: v.tolist() for k, v in means.items()})


def _fakes(cfg: GenerateConfig, pairs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str, str]]:
    """``(pair, item_id, method)`` of every planned fake.

    Shares (or no mix): one fake per pair, its method drawn by exact shares over a seeded order (""
    without a mix: the plan's model). Per video (``methods[].fakes_per_video``): a video's j-th pair (best
    first) makes one fake with every method whose ``fakes_per_video`` exceeds j, ids then naming the method.
    """
    from dflray.dataset.plan import assign_methods

    def item_of(p: dict[str, Any], method: str | None = None) -> str:
        key = f"{p['video_id']}:{p['source_identity']}" + (f":{method}" if method is not None else "")
        return hashlib.sha1(key.encode()).hexdigest()[:16]

    if cfg.methods_per_video:
        out, rank = [], {}
        for p in pairs:  # pair() orders a video's pairs best first
            j = rank[p["video_id"]] = rank.get(p["video_id"], -1) + 1
            out += [(p, item_of(p, m.name), m.name) for m in cfg.methods if j < m.fakes_per_video]
        return out
    items = [item_of(p) for p in pairs]
    methods = assign_methods(items, cfg.method_shares(), cfg.seed) if cfg.methods else {}
    return [(p, item, methods.get(item, "")) for p, item in zip(pairs, items)]


def read_plan(out: str, work: str) -> DatasetPlan | None:
    """The plan an earlier run of ``out`` kept, or None when there is none (yet)."""
    plan_uri = join(out, "plan.parquet")
    if not (exists(plan_uri) and exists(join(work, "identities.json"))):
        return None
    with open_uri(plan_uri) as f:
        rows = TableList(schema.conform("plan", pq.read_table(f)))
    return DatasetPlan(rows, read_json(join(work, "identities.json")))


def write_plan(plan: DatasetPlan, out: str, work: str) -> None:
    """Keeps ``plan`` for reruns: the identities' embeddings first, then ``plan.parquet`` (the commit)."""
    write_json(join(work, "identities.json"), plan.identity_embeddings)
    with atomic_write(join(out, "plan.parquet")) as f:
        pq.write_table(plan.rows.table, f)


def count_plan(plan: DatasetPlan, summary: GenerateSummary) -> None:
    """Puts the plan's videos, identities, planned fakes and videos per split into ``summary``."""
    people: set[str] = set()
    summary.videos = 0
    for r in plan.rows:
        if r["kind"] == "REAL":
            summary.videos += 1
            people.add(r["identity"])
            summary.by_split[r["split"]] = summary.by_split.get(r["split"], 0) + 1
    summary.identities = len(people)
    summary.fakes_planned = len(plan.rows) - summary.videos
