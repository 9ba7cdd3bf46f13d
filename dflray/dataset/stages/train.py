"""Stage 3, train: the models the plan needs (one per source identity, or per source and target).

``models.concurrency`` models train at a time, each a Ray Train run in its own Ray task with its own
workers, optionally fine-tuned from one shared base (``models.base``: a checkpoint, or ``pretrain`` on the
train split's videos). Each model lives in ``WORK/models/<key>/`` (its subset facesets, the training
output, ``model.ts``); ``model.json`` there is its done-marker, and a rerun keeps it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dflray.artifacts.checkpoint import latest_checkpoint
from dflray.artifacts.export import resolve_model
from dflray.config import GenerateConfig, TrainConfig, from_dict, to_dict
from dflray.dataset.stages.base import GenerateSummary, read_json, videos_by_identity, write_json
from dflray.dataset.stages.extract import subset_faceset
from dflray.io.storage import exists, join

log = logging.getLogger("dflray.generate")

__all__ = ["model_jobs", "model_overrides", "train_models"]


def model_jobs(plan: list[dict[str, Any]]) -> dict[str, tuple[list[str], list[str]]]:
    """The models a plan needs: model key → (src video ids: every video of the source identity, dst video
    ids: the target videos of the fakes that model makes), both sorted."""
    videos_of = {k: set(v) for k, v in videos_by_identity(plan).items()}
    jobs: dict[str, tuple[set[str], set[str]]] = {}
    for r in plan:
        if r["kind"] == "FAKE" and r["model_key"]:  # "": a method that needs no model
            src, dst = jobs.setdefault(r["model_key"], (videos_of.get(r["source_identity"], set()), set()))
            dst.add(r["video_id"])
    return {k: (sorted(src), sorted(dst)) for k, (src, dst) in jobs.items()}


def model_overrides(plan: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The ``models.train.model`` fields each model of a model method sets: ``arch`` for ``df``/``liae``,
    the whole fixed model for a method that has one (``quick96``); models of fakes without a method
    (the plan's own model) are absent."""
    from dflray.methods import method_spec

    out: dict[str, dict[str, Any]] = {}
    for r in plan:
        if r["kind"] == "FAKE" and r["model_key"] and r.get("method"):
            spec = method_spec(r["method"])
            out[r["model_key"]] = dict(spec.model_config) if spec.model_config else {"arch": r["method"]}
    return out


def _train_model(key: str, src: list[str], dst: list[str] | None, faceset: str, work: str, train: dict[str, Any],
                 init_from: str | None, pretrain: bool = False) -> dict[str, Any]:
    """One model: subset facesets, a Ray Train run, the export. Runs as a Ray task; never raises."""
    import logging as _logging

    from dflray.merge.pipeline import check_model
    from dflray.train.trainer import run_train

    _logging.basicConfig(level=_logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    mdir = join(work, "models", key)
    done = join(mdir, "model.json")
    if exists(done):
        return read_json(done)
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
            doc = {"key": key, "ok": True, "model_uri": uri, "contract": contract.to_dict(), "model_sha256": sha,
                   "source": source, "steps": summary.steps}
        # The parameters' checksum at step 0: a fine-tuned model's equals its base checkpoint's.
        doc["start_checksum"] = (summary.metrics or {}).get("start_checksum")
        doc["seconds"] = time.perf_counter() - t0
        write_json(done, doc)
        return doc
    except Exception as e:  # noqa: BLE001 - a model that cannot train fails its fakes, not the job
        return {"key": key, "ok": False, "error": f"{type(e).__name__}: {e}", "seconds": time.perf_counter() - t0}


def _base_model(cfg: GenerateConfig, plan: list[dict], faceset: str, work: str, train: dict[str, Any]) -> str | None:
    """The checkpoint every model starts from: the shared base pretrained on the train split's videos
    (``models.base=pretrain``), a given checkpoint, or None (from scratch)."""
    videos_of = videos_by_identity(plan)
    fakes = [r for r in plan if r["kind"] == "FAKE"]
    if cfg.models.base == "pretrain" and fakes:
        train_vids = sorted({r["video_id"] for r in fakes if r["split"] == "train"} |
                            {v for r in fakes if r["split"] == "train" for v in videos_of[r["source_identity"]]})
        base_cfg = {**train, "steps": cfg.models.pretrain_steps}
        res = _result("_base", _model_task().remote(
            "_base", train_vids or sorted({r["video_id"] for r in fakes}), None, faceset, work, base_cfg, None, True))
        if not res["ok"]:
            raise RuntimeError(f"models.base=pretrain: the shared base model failed to train: {res['error']}")
        return res["checkpoint"]
    if cfg.models.base:
        return latest_checkpoint(cfg.models.base)
    return None


def _model_task():
    """The Ray task that trains one model (a Ray Train driver of its own).

    max_calls=1: each model's task runs in a worker process that exits after it, and takes with it the
    actors its Ray Train run created (controller, dataset split coordinators: ~0.4 GB each), which a
    reused worker would keep alive for the rest of the job. It prefers the job driver's node (the head,
    under ``ray job submit``), whose loss ends the job anyway; where it runs on a worker node that is lost,
    Ray runs it again, and the rerun resumes from the model's newest checkpoint (``run_train`` on the same
    output) or finds it done (``model.json``).
    """
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(num_cpus=0, max_retries=3, max_calls=1)(_train_model).options(scheduling_strategy=here)


def _result(key: str, ref) -> dict[str, Any]:
    """The model task's document; a task Ray could not finish (its node lost more often than it retries)
    fails that model, not the job."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        return {"key": key, "ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}"}


def train_models(cfg: GenerateConfig, plan: list[dict], faceset: str, work: str,
                 summary: GenerateSummary) -> dict[str, dict[str, Any]]:
    """Trains every model the plan needs, ``models.concurrency`` at a time.

    Returns:
        model key → its ``model.json`` document (``ok``, and ``model_uri``, ``contract``, ``model_sha256``,
        ``source``, or ``error``).

    Raises:
        RuntimeError: the shared base model (``models.base=pretrain``) failed to train.
    """
    train = to_dict(cfg.models.train)
    for k in ("init_from", "pretrain"):
        train.pop(k)
    init_from = _base_model(cfg, plan, faceset, work, train)
    jobs = model_jobs(plan)
    overrides = model_overrides(plan)
    remote = _model_task()
    results: dict[str, dict[str, Any]] = {}
    pending: dict[Any, str] = {}
    queue = sorted(jobs)
    while queue or pending:
        while queue and len(pending) < cfg.models.concurrency:
            key = queue.pop(0)
            src, dst = jobs[key]
            model = {**train["model"], **overrides.get(key, {})}
            own = {**train, "model": model}
            # A shared base is of the plan's model: a model of another one starts from scratch.
            start = init_from if model == train["model"] else None
            pending[remote.remote(key, src, sorted(dst), faceset, work, own, start)] = key
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            key = pending.pop(ref)
            res = _result(key, ref)
            results[key] = res
            if res["ok"]:
                log.info("model %s: ready (%s steps, %.0f s)", key, res.get("steps"), res.get("seconds", 0))
            else:
                summary.failures.append(f"model {key}: {res['error']}")
                log.warning("model %s failed: %s", key, res["error"])
    summary.models = len(jobs)
    summary.models_failed = sum(not r["ok"] for r in results.values())
    return results
