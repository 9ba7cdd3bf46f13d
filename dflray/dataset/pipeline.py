"""The dataset job on Ray: a plan of real videos in, a labelled, measured, reported forgery dataset out.

Stages (each resumable: a rerun after a crash or a kill does only what is missing):

1. **extract** every video once (``OUT/_work/faceset``, the extraction job).
2. **plan**: identities (labels, else clustering of dlib embeddings), identity-disjoint splits, pairing
   of source identities with target videos → ``OUT/plan.parquet`` (kept: a rerun uses it unchanged).
3. **train** the models the plan needs, ``models.concurrency`` at a time, each a Ray Train run in its
   own Ray task with its own workers, optionally fine-tuned from one shared base
   (``OUT/_work/models/<key>/``, exported to ``model.ts``).
4. **merge** every planned fake (``OUT/_work/fakes``; losslessly, so that fakes and reals go through the
   same number of lossy encodes), settings drawn per fake from ``merge.vary`` with the fake's seed.
5. **quality**: swap success (the headline), identity, pose, expression, flicker and seam metrics of every
   fake; gates flag or drop.
6. **perturb**: DeeperForensics-1.0 distortions drawn per video, applied to real and fake videos alike,
   then every video written at each FaceForensics++ compression level into the chosen layout.
7. **index**: ``index.parquet`` (schema ``dataset``), ``frames.parquet`` (``dataset_frames``),
   ``metadata.json`` (DFDC format), ``errors.parquet`` and ``report.html``.

Layout of ``OUT``::

    OUT/generate.json       the plan's config and dataset id (a rerun must match)
    OUT/plan.parquet        real videos and planned fakes (schema ``plan``)
    OUT/index.parquet       one row per published video (schema ``dataset``)
    OUT/frames.parquet      per frame of every published fake, with its mask video
    OUT/metadata.json       DFDC format; with --layout dfdc also one per part folder
    OUT/report.html         the self-contained report
    OUT/videos/ | dfdc_*/ | original_sequences/ + manipulated_sequences/   the videos (see layout.py)
    OUT/_work/              faceset, models, lossless fakes, quality and publish records
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray.data import ActorPoolStrategy

import dflray
from dflray.config import (
    MERGE_SETTING_FIELDS,
    QUALITY_METRICS,
    ConfigError,
    GenerateConfig,
    MergeConfig,
    TrainConfig,
    from_dict,
    to_dict,
)
from dflray.dataset import layout as lay
from dflray.faceset import committed_face_files, face_holders, read_videos
from dflray.extract.pipeline import init_ray, run_extract, video_id
from dflray.io import schema
from dflray.io.storage import arrow_filesystem, atomic_write, exists, fs_and_path, join, open_uri
from dflray.merge.pipeline import _check_writable, _publish, _read_dir, _write_table

log = logging.getLogger("dflray.generate")

@dataclass
class GenerateSummary:
    """What a ``dflray generate`` run did."""

    out: str
    videos: int = 0
    identities: int = 0
    fakes_planned: int = 0
    models: int = 0
    models_failed: int = 0
    merged: dict[str, int] = field(default_factory=dict)
    published: dict[str, int] = field(default_factory=dict)
    by_split: dict[str, int] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    # ``quality.success_stats`` of the published fakes (one value per fake, not per compression level).
    swap_success: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        from dflray.quality import format_success

        fmt = lambda d: ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"  # noqa: E731
        lines = [f"generate → {self.out}: {self.videos} real videos, {self.identities} identities "
                 f"(videos per split: {fmt(self.by_split)}), {self.fakes_planned} fakes planned, "
                 f"{self.models} models ({self.models_failed} failed)",
                 f"  merged: {fmt(self.merged)}; published videos: {fmt(self.published)}"]
        if self.swap_success.get("n") or self.swap_success.get("unmeasured"):
            lines.append(f"  published fakes: {format_success(self.swap_success)}")
        lines.append("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.stage_seconds.items())
                     + f"; total {self.seconds:.1f}")
        lines += [f"  failed: {f}" for f in self.failures[:20]]
        if len(self.failures) > 20:
            lines.append(f"  … and {len(self.failures) - 20} more (see errors.parquet)")
        return "\n".join(lines)


# ------------------------------------------------------------------------------ small helpers


def _absolute(uri: str) -> str:
    return uri if "://" in uri or os.path.isabs(uri) else os.path.abspath(uri)


def _model_key(source: str, target: str | None) -> str:
    """A folder-safe, collision-free name of a model (source identity, or source and target)."""
    import re

    raw = source if target is None else f"{source}__{target}"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", raw).strip("._-")[:48] or "model"
    return f"{stem}-{hashlib.sha1(raw.encode()).hexdigest()[:8]}"


def _json_write(uri: str, doc: Any) -> None:
    with atomic_write(uri) as f:
        f.write(json.dumps(doc, indent=1, sort_keys=True, default=str).encode())


def _json_read(uri: str) -> Any:
    with open_uri(uri) as f:
        return json.load(f)


def sweep_temporaries(out: str) -> int:
    """Deletes the ``.tmp-*`` files a killed run left under ``out`` (one job per output at a time)."""
    fs, path = fs_and_path(out)
    if not fs.exists(path):
        return 0
    stale = [p for p in fs.find(path) if p.rsplit("/", 1)[-1].startswith(".tmp-")]
    for p in stale:
        fs.rm(p)
    if stale:
        log.info("removed %d temporary files a killed run left behind", len(stale))
    return len(stale)


def _config_key(cfg: GenerateConfig) -> dict[str, Any]:
    """What shapes the dataset (resources and concurrency excluded): a rerun must match it."""
    d = json.loads(json.dumps(to_dict(cfg), default=str))
    d["models"].pop("concurrency")
    for k in ("num_workers", "use_gpu", "cpus_per_worker", "augment_cpus", "torch_threads", "max_failures"):
        d["models"]["train"].pop(k)
    # merge.quality is the merge job's own measuring (refused here, see _check_plan): it never shapes the dataset.
    for k in ("predict", "workers", "retry_errors", "extract", "quality"):
        d["merge"].pop(k)
    return d


def _check_plan(cfg: GenerateConfig) -> None:
    """Options the dataset job cannot honour, rejected before any work."""
    if not cfg.extract.landmarks.embedding:
        raise ConfigError("extract.landmarks.embedding", "generate needs identity embeddings (identities, "
                          "pairing, quality metrics)")
    if cfg.merge.quality.enabled:
        raise ConfigError("merge.quality", "generate measures every fake in its own quality stage against its "
                          "source identity; set quality.sample_frames and quality.gates instead")
    if cfg.merge.identity.swap == "reference":
        raise ConfigError("merge.identity.swap", "generate swaps each target video's dominant identity; use "
                          "dominant or all")
    if cfg.merge.predict.precision == "fp16" and not cfg.merge.predict.num_gpus:
        raise ConfigError("merge.predict.precision", "fp16 runs on GPUs only (set merge.predict.num_gpus)")
    if cfg.models.base and cfg.models.base != "pretrain":
        from dflray.train.checkpoint import latest_checkpoint

        if latest_checkpoint(cfg.models.base) is None:
            raise ConfigError("models.base", f"{cfg.models.base} is not a training output or checkpoint")


def _pool(n_tasks: int, num_cpus: float) -> int:
    cpus = ray.cluster_resources().get("CPU", 1)
    return max(1, min(n_tasks, int(cpus // num_cpus) or 1))


def _run_rows(stage_cls: type, rows: list[dict[str, Any]], num_cpus: float, kwargs: dict[str, Any],
              num_gpus: float = 0.0) -> list[dict[str, Any]]:
    """Runs a stage actor over JSON task rows on a Ray Data actor pool; returns its result rows."""
    if not rows:
        return []
    items = [{"task": json.dumps(r, default=str)} for r in rows]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        stage_cls, batch_size=1, compute=ActorPoolStrategy(size=_pool(len(items), num_cpus)), num_cpus=num_cpus,
        num_gpus=num_gpus or None, fn_constructor_kwargs=kwargs)
    return [json.loads(r["result"]) for r in ds.iter_rows()]


class _Stage:
    """Base of the stage actors: one JSON task in, one JSON result out, exceptions become results."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for raw in batch["task"]:
            task = json.loads(str(raw))
            try:
                result = self.run(task)
            except Exception as e:  # noqa: BLE001 - one bad item is an error row, never a dead job
                log.warning("%s failed for %s: %s: %s", type(self).__name__, task.get("id"), type(e).__name__, e)
                result = {"id": task.get("id"), "status": "error", "error": f"{type(e).__name__}: {e}"}
            out.append(json.dumps(result, default=str))
        return {"result": np.array(out, dtype=object)}

    def run(self, task: dict[str, Any]) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError


# ------------------------------------------------------------------------------ facesets


def subset_faceset(faceset: str, video_ids: list[str], out: str) -> str:
    """A faceset at ``out`` holding only ``video_ids`` of ``faceset`` (for one model's training).

    Written faces first, then the videos table (the commit), then ``faceset.json``; an existing
    complete subset is kept.
    """
    if exists(join(out, "faceset.json")):
        return out
    import pyarrow.dataset as pads

    wanted = sorted(set(video_ids))
    fs, _ = arrow_filesystem(faceset)
    files = committed_face_files(faceset)
    parts = []
    for f in files:
        t = pq.read_table(f, filesystem=fs, filters=pads.field("video_id").isin(wanted))
        if t.num_rows:
            parts.append(schema.conform("faces", t))
    faces = pa.concat_tables(parts) if parts else schema.with_version(schema.FACES).empty_table()
    with atomic_write(join(out, "faces", "subset-0.parquet")) as f:
        pq.write_table(faces, f)
    videos = read_videos(faceset)
    videos = videos.filter(pa.compute.is_in(videos.column("video_id"), pa.array(wanted)))
    with atomic_write(join(out, "videos", "subset.parquet")) as f:
        pq.write_table(videos, f)
    with open_uri(join(faceset, "faceset.json")) as f:
        doc = json.load(f)
    doc["subset_of"] = faceset
    _json_write(join(out, "faceset.json"), doc)
    return out


# ------------------------------------------------------------------------------ stage 2: the plan


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


def build_plan(cfg: GenerateConfig, manifest: list[dict[str, Any]], faceset: str,
               holders: dict[str, list[str]]) -> tuple[list[dict], dict]:
    """The plan: one REAL row per manifest video and one FAKE row per pairing (schema ``plan``).

    Returns:
        (plan rows, identity → mean dlib embedding as a list).
    """
    from dflray.dataset.plan import assign_splits, cluster_identities, pair, plan_seed

    status = {r["video_id"]: r["status"] for r in read_videos(faceset).select(["video_id", "status"]).to_pylist()}
    embeddings = video_embeddings(faceset, holders, cfg.merge.identity.threshold)
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
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["identity"]] = counts.get(r["identity"], 0) + 1
    splits = assign_splits(counts, cfg.splits, cfg.seed)
    ident_emb: dict[str, list[np.ndarray]] = {}
    for r in rows:
        if r["video_id"] in embeddings:
            ident_emb.setdefault(r["identity"], []).append(embeddings[r["video_id"]])
    means = {k: np.mean(v, axis=0) for k, v in ident_emb.items()}
    targets, sources = [], {}
    for r in rows:
        usable = status.get(r["video_id"]) in ("ok", "partial") and r["video_id"] in embeddings
        if usable:
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
    for p in pairs:
        t = by_vid[p["video_id"]]
        item = hashlib.sha1(f"{p['video_id']}:{p['source_identity']}".encode()).hexdigest()[:16]
        key = _model_key(p["source_identity"], None if cfg.models.per == "source" else t["identity"])
        plan.append({"item_id": item, "kind": "FAKE", "video_id": t["video_id"], "uri": t["uri"],
                     "identity": t["identity"], "identity_source": t["identity_source"], "split": p["split"],
                     "source_identity": p["source_identity"], "model_key": key,
                     "seed": plan_seed(cfg.seed, item), "attributes": json.dumps(t["attributes"], sort_keys=True)})
    wanted = sum(1 for t in targets) * cfg.pairing.fakes_per_video
    if len(pairs) < wanted:
        log.warning("pairing: %d of %d wanted fakes could be planned (too few eligible source identities in a "
                    "split, exclusions or max_per_source)", len(pairs), wanted)
    return plan, {k: v.tolist() for k, v in means.items()}


# ------------------------------------------------------------------------------ stage 3: models


def model_jobs(plan: list[dict[str, Any]]) -> dict[str, tuple[list[str], list[str]]]:
    """The models a plan needs: model key → (src video ids: every video of the source identity, dst video
    ids: the target videos of the fakes that model makes), both sorted."""
    videos_of: dict[str, set[str]] = {}
    for r in plan:
        if r["kind"] == "REAL":
            videos_of.setdefault(r["identity"], set()).add(r["video_id"])
    jobs: dict[str, tuple[set[str], set[str]]] = {}
    for r in plan:
        if r["kind"] == "FAKE":
            src, dst = jobs.setdefault(r["model_key"], (videos_of.get(r["source_identity"], set()), set()))
            dst.add(r["video_id"])
    return {k: (sorted(src), sorted(dst)) for k, (src, dst) in jobs.items()}


def _train_model(key: str, src: list[str], dst: list[str] | None, faceset: str, work: str, train: dict[str, Any],
                 init_from: str | None, pretrain: bool = False) -> dict[str, Any]:
    """One model: subset facesets, a Ray Train run, the export. Runs as a Ray task; never raises."""
    import logging as _logging

    from dflray.merge.pipeline import check_model, resolve_model
    from dflray.train.trainer import run_train

    _logging.basicConfig(level=_logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mdir = join(work, "models", key)
    done = join(mdir, "model.json")
    if exists(done):
        return _json_read(done)
    t0 = time.perf_counter()
    try:
        cfg = from_dict(TrainConfig, {**train, "init_from": init_from, "pretrain": pretrain})
        src_fs = subset_faceset(faceset, src, join(mdir, "src"))
        dst_fs = subset_faceset(faceset, dst, join(mdir, "dst")) if dst else None
        summary = run_train(src_fs, dst_fs, join(mdir, "train"), cfg)
        if pretrain:
            doc = {"key": key, "ok": True, "checkpoint": summary.checkpoint, "steps": summary.steps}
        else:
            uri, contract, sha, source = resolve_model(join(mdir, "train"), mdir)
            check_model(uri, contract)
            doc = {"key": key, "ok": True, "model_uri": uri, "contract": contract, "model_sha256": sha,
                   "source": source, "steps": summary.steps}
        # The parameters' checksum at step 0: a fine-tuned model's equals its base checkpoint's.
        doc["start_checksum"] = (summary.metrics or {}).get("start_checksum")
        doc["seconds"] = time.perf_counter() - t0
        _json_write(done, doc)
        return doc
    except Exception as e:  # noqa: BLE001 - a model that cannot train fails its fakes, not the job
        return {"key": key, "ok": False, "error": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - t0}


def train_models(cfg: GenerateConfig, plan: list[dict], faceset: str, work: str,
                 summary: GenerateSummary) -> dict[str, dict[str, Any]]:
    """Trains every model the plan needs, ``models.concurrency`` at a time; returns key → result."""
    train = to_dict(cfg.models.train)
    for k in ("init_from", "pretrain"):
        train.pop(k)
    videos_of: dict[str, list[str]] = {}
    for r in plan:
        if r["kind"] == "REAL":
            videos_of.setdefault(r["identity"], []).append(r["video_id"])
    fakes = [r for r in plan if r["kind"] == "FAKE"]
    init_from = None
    if cfg.models.base == "pretrain" and fakes:
        train_vids = sorted({r["video_id"] for r in fakes if r["split"] == "train"} |
                            {v for r in fakes if r["split"] == "train" for v in videos_of[r["source_identity"]]})
        base_cfg = {**train, "steps": cfg.models.pretrain_steps}
        res = ray.get(ray.remote(num_cpus=0, max_retries=0, max_calls=1)(_train_model).remote(
            "_base", train_vids or sorted({r["video_id"] for r in fakes}), None, faceset, work, base_cfg, None, True))
        if not res["ok"]:
            raise RuntimeError(f"models.base=pretrain: the shared base model failed to train: {res['error']}")
        init_from = res["checkpoint"]
    elif cfg.models.base:
        from dflray.train.checkpoint import latest_checkpoint

        init_from = latest_checkpoint(cfg.models.base)
    jobs = model_jobs(plan)
    # max_calls=1: each model's task runs in a worker process that exits after it, and takes with it the
    # actors its Ray Train run created (controller, dataset split coordinators: ~0.4 GB each), which a
    # reused worker would keep alive for the rest of the job.
    remote = ray.remote(num_cpus=0, max_retries=0, max_calls=1)(_train_model)
    results: dict[str, dict[str, Any]] = {}
    pending: dict[Any, str] = {}
    queue = sorted(jobs)
    while queue or pending:
        while queue and len(pending) < cfg.models.concurrency:
            key = queue.pop(0)
            src, dst = jobs[key]
            pending[remote.remote(key, src, sorted(dst), faceset, work, train, init_from)] = key
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            key = pending.pop(ref)
            res = ray.get(ref)
            results[key] = res
            if res["ok"]:
                log.info("model %s: ready (%s steps, %.0f s)", key, res.get("steps"), res.get("seconds", 0))
            else:
                summary.failures.append(f"model {key}: {res['error']}")
                log.warning("model %s failed: %s", key, res["error"])
    summary.models = len(jobs)
    summary.models_failed = sum(not r["ok"] for r in results.values())
    return results


# ------------------------------------------------------------------------------ stage 4: merge


class _MergeWorker(_Stage):
    """Merges planned fakes; keeps the last two models it used loaded (rows come grouped by model)."""

    def __init__(self, cfg: MergeConfig, out: str, run_id: str, dataset_id: str):
        import torch

        from dflray.merge.pipeline import load_merge_xseg

        self.cfg, self.out, self.run_id, self.dataset_id = cfg, out, run_id, dataset_id
        torch.set_num_threads(max(1, cfg.predict.threads or int(np.ceil(cfg.workers.num_cpus))))
        self._models: dict[str, Any] = {}
        self.xseg = load_merge_xseg(cfg)

    def _predict(self, uri: str):
        from dflray.merge.predict import Predictor
        from dflray.merge.video import InlinePredict

        if uri not in self._models:
            if len(self._models) >= 2:
                self._models.pop(next(iter(self._models)))
            device = None if self.cfg.predict.device == "auto" else self.cfg.predict.device
            self._models[uri] = InlinePredict(Predictor.load(uri, device, self.cfg.predict.precision),
                                              self.cfg.predict.batch_size)
        return self._models[uri]

    def run(self, task: dict[str, Any]) -> dict[str, Any]:
        from dflray.merge.pipeline import merge_one

        record, _ = merge_one(task, self.cfg, self.out, self._predict(task["model_uri"]), contract=task["contract"],
                              model_uri=task["model_uri"], model_sha=task["model_sha256"], reference=None,
                              run_id=self.run_id, dataset_id=self.dataset_id, xseg=self.xseg)
        return {"id": task["output_id"], "status": record["status"], "error": record.get("error") or ""}


def _merge_config(cfg: GenerateConfig, dataset_id: str) -> MergeConfig:
    # Lossless fakes: the perturb stage's encode is then the only lossy one, as for the real videos, so
    # the number of compression generations is no cue.
    out = dataclasses.replace(cfg.merge.output, lossless=True, masks=True)
    return dataclasses.replace(cfg.merge, output=out, dataset_id=dataset_id)


def merge_fakes(cfg: GenerateConfig, plan: list[dict], models: dict[str, dict], faceset: str,
                holders: dict[str, list[str]], work: str, dataset_id: str, run_id: str,
                summary: GenerateSummary) -> dict[str, dict[str, Any]]:
    """Merges every planned fake whose model trained; returns item_id → merge record (as a dict)."""
    mcfg = _merge_config(cfg, dataset_id)
    fakes_out = join(work, "fakes")
    done = {r["output_id"]: r for r in _read_dir("merged", join(fakes_out, "records")).to_pylist()}
    fill = mcfg.fill_gaps if mcfg.fill_gaps is not None else cfg.extract.decode.every_n - 1
    todo = []
    for r in plan:
        if r["kind"] != "FAKE" or r["item_id"] in done:
            continue
        m = models.get(r["model_key"], {"ok": False, "error": "not trained"})
        if not m["ok"]:
            continue
        todo.append({"id": r["item_id"], "output_id": r["item_id"], "dst_uri": r["uri"], "dst_video_id": r["video_id"],
                     "faceset": faceset, "face_files": json.dumps(holders.get(r["video_id"], [])), "seed": r["seed"],
                     "fill_gaps": fill, "model_source": m["source"], "input_error": "",
                     "model_uri": m["model_uri"], "contract": m["contract"], "model_sha256": m["model_sha256"]})
    todo.sort(key=lambda t: (t["model_uri"], t["dst_uri"]))
    p = mcfg.predict
    for res in _run_rows(_MergeWorker, todo, mcfg.workers.num_cpus, {"cfg": mcfg, "out": fakes_out, "run_id": run_id,
                                                                      "dataset_id": dataset_id}, num_gpus=p.num_gpus):
        if res["status"] != "ok":
            summary.failures.append(f"merge {res['id']}: {res['error']}")
    records = {r["output_id"]: r for r in _read_dir("merged", join(fakes_out, "records")).to_pylist()}
    for r in records.values():
        summary.merged[r["status"]] = summary.merged.get(r["status"], 0) + 1
    return records


# ------------------------------------------------------------------------------ stage 5: quality


class _QualityWorker(_Stage):
    """Measures fakes against their originals; writes ``_work/quality/<item>.json`` (the gates are
    applied when the dataset is published, from the plan's current ``quality``)."""

    def __init__(self, cfg: GenerateConfig, work: str):
        from dflray.quality import FaceMeasurer

        self.cfg, self.work = cfg, work
        self.measurer = FaceMeasurer()

    def run(self, task: dict[str, Any]) -> dict[str, Any]:
        import pyarrow.dataset as pads

        fs, _ = arrow_filesystem(task["faceset"])
        files = json.loads(task["face_files"])
        faces = pads.dataset(files, filesystem=fs, format="parquet").to_table(
            filter=pads.field("video_id") == task["video_id"])
        faces = schema.conform("faces", faces) if faces.num_rows else faces
        try:
            metrics = self.measurer.measure_fake(task["fake_uri"], task["real_uri"], task["mask_uri"], faces,
                                                 np.asarray(task["source_embedding"], np.float64),
                                                 sample_frames=self.cfg.quality.sample_frames)
            note = ""
        except Exception as e:  # noqa: BLE001 - an unmeasurable fake gets null metrics, and says why
            metrics = {m: None for m in QUALITY_METRICS}
            note = f"not measured: {type(e).__name__}: {e}"
        doc = {"id": task["id"], "status": "ok", "metrics": metrics, "note": note}
        _json_write(join(self.work, "quality", f"{task['id']}.json"), doc)
        return doc


def measure_fakes(cfg: GenerateConfig, plan: list[dict], merged: dict[str, dict], faceset: str,
                  holders: dict[str, list[str]], work: str,
                  identity_embeddings: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """Quality metrics and gate results of every merged fake; returns item_id → result."""
    from dflray.io.storage import list_files

    have = {u.rsplit("/", 1)[-1].removesuffix(".json") for u in list_files(join(work, "quality"), ".json")}
    fakes_out = join(work, "fakes")
    todo = []
    for r in plan:
        rec = merged.get(r["item_id"])
        if r["kind"] != "FAKE" or rec is None or rec["status"] != "ok" or r["item_id"] in have:
            continue
        todo.append({"id": r["item_id"], "video_id": r["video_id"], "faceset": faceset,
                     "face_files": json.dumps(holders.get(r["video_id"], [])), "real_uri": r["uri"],
                     "fake_uri": join(fakes_out, rec["path"]), "mask_uri": join(fakes_out, rec["mask_path"]),
                     "source_embedding": identity_embeddings.get(r["source_identity"])})
    _run_rows(_QualityWorker, todo, 1.0, {"cfg": cfg, "work": work})
    out = {}
    for u in list_files(join(work, "quality"), ".json"):
        doc = _json_read(u)
        out[doc["id"]] = doc
    return out


# ------------------------------------------------------------------------------ stage 6: perturb + publish


class _PublishWorker(_Stage):
    """Perturbs one video at one compression level into its place in the layout; writes its record."""

    def __init__(self, out: str, work: str, preset: str):
        self.out, self.work, self.preset = out, work, preset

    def run(self, task: dict[str, Any]) -> dict[str, Any]:
        from dflray.dataset.perturb import parse_spec, perturb_video

        row = task["row"]
        t0 = time.perf_counter()
        tmp = tempfile.mkdtemp(prefix="dflray-publish-")
        try:
            local = os.path.join(tmp, "video.mp4")
            info = perturb_video(task["src"], local, parse_spec(row["perturbation"]), row["compression"],
                                 int(task["perturb_seed"]), preset=self.preset, metadata=task["metadata"])
            row.update(sha256=_publish(local, join(self.out, row["path"])), frames=info["frames"], fps=info["fps"],
                       width=info["width"], height=info["height"], has_audio=info["has_audio"], crf=info["crf"],
                       duration=info.get("duration"), status="ok")
            if task.get("mask_src"):
                mask_uri = join(self.out, row["mask_path"])
                if not exists(mask_uri):  # the first compression level of this fake publishes its mask
                    copy = os.path.join(tmp, "mask.mp4")
                    with open_uri(task["mask_src"]) as src, open(copy, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 22)
                    row["mask_sha256"] = _publish(copy, mask_uri)
                else:
                    with open_uri(mask_uri) as f:
                        row["mask_sha256"] = hashlib.sha256(f.read()).hexdigest()
        except Exception as e:  # noqa: BLE001
            row.update(status="error", error=f"{type(e).__name__}: {e}")
            log.warning("publish failed for %s: %s", row["path"], row["error"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        row["seconds"] = time.perf_counter() - t0
        _write_table("dataset", [row], join(self.work, "published", f"{row['video_id']}.parquet"))
        return {"id": row["video_id"], "status": row["status"], "error": row.get("error") or ""}


def _published_rows(cfg: GenerateConfig, plan: list[dict], merged: dict, quality: dict, models: dict,
                    dataset_id: str, run_id: str) -> list[dict[str, Any]]:
    """One DATASET row (plus how to make it) per planned video and compression level."""
    from dflray.dataset.perturb import distortion_values, draw_distortions, final_crf, spec_string
    from dflray.dataset.plan import plan_seed
    from dflray.quality import apply_gates

    videos_of: dict[str, list[str]] = {}
    for r in plan:
        if r["kind"] == "REAL":
            videos_of.setdefault(r["identity"], []).append(r["video_id"])
    reals = {r["video_id"]: r for r in plan if r["kind"] == "REAL"}
    fakes_of: dict[str, int] = {}
    for f in plan:
        if f["kind"] == "FAKE":
            fakes_of[f["video_id"]] = fakes_of.get(f["video_id"], 0) + 1
    n_fakes = max(fakes_of.values(), default=0)
    by_split: dict[str, list[str]] = {}
    for v in sorted(reals):
        by_split.setdefault(reals[v]["split"], []).append(v)
    parts = lay.dfdc_parts(by_split, 1 + n_fakes, cfg.dfdc_part_size)
    rows = []
    for r in plan:
        fake = r["kind"] == "FAKE"
        dists = draw_distortions(cfg.perturb, plan_seed(cfg.seed, r["item_id"], "perturb"))
        spec = spec_string(dists)
        rec = merged.get(r["item_id"]) if fake else None
        q = quality.get(r["item_id"], {}) if fake else {}
        model = models.get(r.get("model_key") or "", {}) if fake else {}
        for comp in cfg.perturb.compression:
            vid = lay.short_id(r["item_id"], comp)
            arch = (model.get("contract") or {}).get("arch") if fake else None
            place = lay.place(cfg.layout, label=r["kind"], split=r["split"], compression=comp, video_id=vid,
                              item_name=lay.short_id(r["item_id"]), part=parts.get(r["video_id"], 0),
                              real_name=lay.short_id(r["video_id"]),
                              source_name=lay.short_id(sorted(videos_of.get(r.get("source_identity") or "", [""]))[0])
                              if fake else "", method=lay.method_name(arch), ffpp_source=cfg.ffpp_source)
            row: dict[str, Any] = {
                "video_id": vid, **place, "label": r["kind"], "split": r["split"], "source_uri": r["uri"],
                "target_identity": r["identity"], "item_id": r["item_id"], "compression": comp, "crf": final_crf(dists, comp),
                "perturbation": spec, "perturbation_values": json.dumps(distortion_values(dists)),
                "seed": r["seed"], "dataset_id": dataset_id, "run_id": run_id, "status": "pending"}
            if fake:
                orig = lay.short_id(r["video_id"], comp)
                orig_place = lay.place(cfg.layout, label="REAL", split=r["split"], compression=comp, video_id=orig,
                                       item_name=lay.short_id(r["video_id"]), real_name=lay.short_id(r["video_id"]),
                                       part=parts.get(r["video_id"], 0), ffpp_source=cfg.ffpp_source)
                row.update(original=orig, original_name=orig_place["name"], source_identity=r["source_identity"],
                           method=lay.method_name(arch), arch=arch, model_id=model.get("model_sha256"))
                if rec is not None:
                    row.update({k: rec.get(k) for k in ("smooth_window", "settings_sha256", "frames_swapped",
                                                        *MERGE_SETTING_FIELDS)})
                    row.update(model_id=rec.get("model_sha256"), xseg_id=rec.get("xseg_sha256"))
                row.update(q.get("metrics") or {})
                if q:
                    passed, reasons = apply_gates(q["metrics"], cfg.quality.gates)
                    if q.get("note"):
                        reasons = [q["note"], *reasons]
                    q = {**q, "quality_pass": bool(passed), "quality_reasons": "; ".join(reasons)}
                    row.update(quality_pass=q["quality_pass"], quality_reasons=q["quality_reasons"])
                if not model.get("ok", False):
                    row.update(status="error", error=f"model {r['model_key']}: {model.get('error', 'not trained')}")
                elif rec is None:
                    row.update(status="error", error="not merged")
                elif rec["status"] != "ok":
                    row.update(status="error", error=f"merge: {rec.get('error')}")
                elif not q:
                    row.update(status="error", error="quality not measured")
                elif not q["quality_pass"] and cfg.quality.action == "drop":
                    row.update(status="dropped", error=f"quality gates: {q['quality_reasons']}")
            rows.append(row)
    return rows


def publish(cfg: GenerateConfig, rows: list[dict], merged: dict, out: str, work: str, summary: GenerateSummary) -> None:
    """Writes every pending row's video (and a fake's mask) into the layout, with its record."""
    from dflray.io.storage import list_files

    done = {u.rsplit("/", 1)[-1].removesuffix(".parquet") for u in list_files(join(work, "published"), ".parquet")}
    fakes_out = join(work, "fakes")
    todo = []
    for row in rows:
        if row["video_id"] in done:
            continue
        if row["status"] != "pending":  # dropped or failed upstream: its record says why
            _write_table("dataset", [row], join(work, "published", f"{row['video_id']}.parquet"))
            continue
        fake = row["label"] == "FAKE"
        rec = merged.get(row["item_id"]) if fake else None
        meta = {"comment": (f"SYNTHETIC: face swap made by dflray {dflray.__version__} for deepfake-detection "
                            "research" if fake else f"real video re-encoded by dflray {dflray.__version__}"),
                "dflray_synthetic": "1" if fake else "0", "dflray_dataset_id": row["dataset_id"],
                "dflray_video_id": row["video_id"], "dflray_label": row["label"],
                "dflray_perturbation": row["perturbation"], "dflray_compression": row["compression"]}
        if fake:
            meta.update(dflray_model_sha256=row.get("model_id") or "",
                        dflray_settings_sha256=row.get("settings_sha256") or "")
        from dflray.dataset.plan import plan_seed

        todo.append({"id": row["video_id"], "row": row, "metadata": meta,
                     "src": join(fakes_out, rec["path"]) if fake else row["source_uri"],
                     "mask_src": join(fakes_out, rec["mask_path"]) if fake else None,
                     "perturb_seed": plan_seed(cfg.seed, row["item_id"], "perturb-frames")})
    for res in _run_rows(_PublishWorker, todo, 1.0, {"out": out, "work": work, "preset": cfg.perturb.preset}):
        if res["status"] != "ok":
            summary.failures.append(f"publish {res['id']}: {res['error']}")


# ------------------------------------------------------------------------------ stage 7: index


def consolidate(cfg: GenerateConfig, out: str, work: str, summary: GenerateSummary) -> pa.Table:
    """Rebuilds index.parquet, frames.parquet, metadata.json and errors.parquet from the records."""
    index = _read_dir("dataset", join(work, "published")).sort_by("video_id")
    with atomic_write(join(out, "index.parquet")) as f:
        pq.write_table(index, f)
    rows = index.select(["video_id", "name", "path", "mask_path", "label", "split", "original_name", "status",
                         "item_id", "error"]).to_pylist()
    for r in rows:
        summary.published[r["status"]] = summary.published.get(r["status"], 0) + 1
    # A fake's metrics are measured once, on its lossless merge, and repeated at each compression level:
    # one value per published fake.
    per_fake = {r["item_id"]: r["swap_success"] for r in
                index.select(["item_id", "label", "status", "swap_success"]).to_pylist()
                if r["label"] == "FAKE" and r["status"] == "ok"}
    from dflray.quality import success_stats

    summary.swap_success = success_stats(per_fake.values())
    for path, doc in lay.metadata_files(cfg.layout, rows).items():
        with atomic_write(join(out, path)) as f:
            f.write(lay.dumps(doc))
    # Per frame of every published fake: the merge's frame table, keyed by the published video; written
    # one fake at a time, so the driver never holds the whole table.
    fs, _ = arrow_filesystem(work)
    target = schema.with_version(schema.DATASET_FRAMES)
    with atomic_write(join(out, "frames.parquet")) as f, pq.ParquetWriter(f, target) as writer:
        for r in rows:
            if r["label"] != "FAKE" or r["status"] != "ok":
                continue
            uri = join(work, "fakes", "frames", f"{r['item_id']}.parquet")
            t = schema.read_table("merged_frames", [fs_and_path(uri)[1]], filesystem=fs)
            n = t.num_rows
            writer.write_table(pa.table({
                "video_id": pa.array([r["video_id"]] * n, pa.string()), "frame_index": t.column("frame_index"),
                "timestamp": t.column("timestamp"), "faces_swapped": t.column("faces_swapped"),
                "bbox": t.column("bbox"), "mask_area": t.column("mask_area"),
                "mask_path": pa.array([r["mask_path"]] * n, pa.string()),
                "schema_version": pa.array([schema.SCHEMA_VERSION] * n, pa.int16())}).cast(target))
    errors = [{"uri": r["path"], "video_id": r["video_id"], "stage": "generate", "type": "error",
               "message": r["error"]} for r in rows if r["status"] == "error"]
    _write_table("errors", errors, join(out, "errors.parquet"))
    return index


# ------------------------------------------------------------------------------ the job


def run_generate(cfg: GenerateConfig, out: str, address: str | None = None, report: bool = True) -> GenerateSummary:
    """Runs a dataset plan end to end into ``out`` on the current Ray cluster (resumably).

    Args:
        cfg: the validated plan.
        out: dataset root (any fsspec URL).
        address: Ray address (None: RAY_ADDRESS, or a local cluster).
        report: also write ``report.html``.

    Raises:
        ConfigError / ValueError: for a bad plan, manifest or output, before any work.

    Example:
        >>> run_generate(load_config(GenerateConfig, "plan.yaml"), "s3://bucket/ds")  # doctest: +SKIP
    """
    from dflray.dataset.plan import read_manifest

    t0 = time.perf_counter()
    summary = GenerateSummary(out=out)
    out = _absolute(out)
    work = join(out, "_work")
    _check_plan(cfg)
    from dflray.merge.pipeline import resolve_merge_xseg

    cfg = dataclasses.replace(cfg, merge=resolve_merge_xseg(cfg.merge, "merge.xseg")[0])
    manifest = read_manifest(cfg)
    for m in manifest:
        m["uri"] = _absolute(m["uri"])
        m["video_id"] = video_id(m["uri"])
    _check_writable(out)
    dataset_id = cfg.dataset_id or hashlib.sha256(out.rstrip("/").encode()).hexdigest()[:12]
    doc = {"kind": "dflray.generate", "schema_version": schema.SCHEMA_VERSION, "dataset_id": dataset_id,
           "config": _config_key(cfg), "dflray": dflray.__version__}
    uri = join(out, "generate.json")
    if exists(uri):
        old = _json_read(uri)
        if old.get("config") != doc["config"] or old.get("dataset_id") != dataset_id:
            raise ValueError(f"--out {out} holds a dataset generated with another plan; use a new --out (or the "
                             "same plan to finish it)")
    else:
        _json_write(uri, doc)
    sweep_temporaries(out)
    run_id = time.strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:8]
    init_ray(address)

    def timed(name: str, fn, *a, **kw):
        s = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            summary.stage_seconds[name] = summary.stage_seconds.get(name, 0.0) + time.perf_counter() - s
            log.info("stage %s: %.1f s", name, summary.stage_seconds[name])

    faceset = join(work, "faceset")
    timed("extract", run_extract, [m["uri"] for m in manifest], faceset, cfg.extract)
    holders = timed("plan", face_holders, faceset)
    plan_uri = join(out, "plan.parquet")
    if exists(plan_uri) and exists(join(work, "identities.json")):
        with open_uri(plan_uri) as f:
            plan = schema.conform("plan", pq.read_table(f)).to_pylist()
        ident_emb = _json_read(join(work, "identities.json"))
    else:
        plan, ident_emb = timed("plan", build_plan, cfg, manifest, faceset, holders)
        _json_write(join(work, "identities.json"), ident_emb)
        with atomic_write(plan_uri) as f:
            pq.write_table(schema.table_from_rows("plan", plan), f)
    reals = [r for r in plan if r["kind"] == "REAL"]
    summary.videos = len(reals)
    summary.identities = len({r["identity"] for r in reals})
    summary.fakes_planned = len(plan) - len(reals)
    for r in reals:
        summary.by_split[r["split"]] = summary.by_split.get(r["split"], 0) + 1
    models = timed("train", train_models, cfg, plan, faceset, work, summary)
    merged = timed("merge", merge_fakes, cfg, plan, models, faceset, holders, work, dataset_id, run_id, summary)
    quality = timed("quality", measure_fakes, cfg, plan, merged, faceset, holders, work, ident_emb)
    rows = _published_rows(cfg, plan, merged, quality, models, dataset_id, run_id)
    timed("perturb", publish, cfg, rows, merged, out, work, summary)
    timed("index", consolidate, cfg, out, work, summary)
    if report:
        from dflray.dataset.report import build_report

        timed("report", build_report, out, join(out, "report.html"))
    summary.seconds = time.perf_counter() - t0
    log.info("%s", summary)
    return summary
