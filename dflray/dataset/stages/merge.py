"""Stage 4, merge: every planned fake whose model trained, into ``WORK/fakes``.

Fakes are merged losslessly (the perturb stage's encode is then the only lossy one, as for the real
videos, so that the number of compression generations is no cue), with masks, and with settings drawn
per fake from ``merge.vary`` with the fake's seed. Each fake is one ``MergeTask`` on a pool of merge
actors that run ``dflray.merge.pipeline.merge_one``; a fake is done when its record
(``fakes/records/<item_id>.parquet``) exists.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import ray

from dflray.artifacts.export import ModelContract
from dflray.config import GenerateConfig, MergeConfig
from dflray.dataset.stages.base import (
    GenerateSummary,
    TableRows,
    Task,
    TaskActor,
    TaskResult,
    record_result,
    run_tasks,
    videos_by_identity,
)
from dflray.faceset import read_tables
from dflray.io.storage import join

__all__ = ["MergeTask", "merge_fakes"]


@dataclass(frozen=True)
class MergeTask(Task):
    """One planned fake: its target video, its faces and the model that swaps in the source identity.

    Attributes:
        id: the fake's ``item_id`` (also its merge ``output_id``).
        dst_uri: the target video.
        dst_video_id: its faceset id.
        faceset: the faceset of every video.
        face_files: the faceset's faces files that hold the target video's rows (``face_holders``).
        seed: the fake's seed (draws its merge settings).
        fill_gaps: frames between detections to fill (``merge.fill_gaps``, else ``every_n - 1``).
        model_source: the model's training output (provenance in the record).
        model_uri: the exported model.
        contract: the model's ``ModelContract`` as a dict.
        model_sha256: the exported model's checksum (a training-free method: ``method_id``).
        method: a training-free method (``dflray.methods``) that makes the fake instead of a model, or "".
        method_settings: its settings.
        source_files: for a method that reads the source faceset: source video id → its faces files.
    """

    dst_uri: str
    dst_video_id: str
    faceset: str
    face_files: list[str]
    seed: int
    fill_gaps: int
    model_source: str
    model_uri: str
    contract: dict[str, Any]
    model_sha256: str
    method: str = ""
    method_settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    source_files: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    morph_factor: float | None = None  # an AMP model's merge-time morph (the amp method's setting)

    def merge_input(self) -> dict[str, Any]:
        """The task row ``dflray.merge.pipeline.merge_one`` reads (its ``face_files`` a JSON list)."""
        return {"output_id": self.id, "dst_uri": self.dst_uri, "dst_video_id": self.dst_video_id,
                "faceset": self.faceset, "face_files": json.dumps(self.face_files), "seed": self.seed,
                "fill_gaps": self.fill_gaps, "model_source": self.model_source, "input_error": ""}


class _MergeWorker(TaskActor):
    """Merges planned fakes; keeps the last two models it used loaded (tasks come grouped by model)."""

    task_type = MergeTask

    def __init__(self, cfg: MergeConfig, out: str, run_id: str, dataset_id: str):
        import torch

        from dflray.merge.pipeline import load_merge_xseg

        self.cfg, self.out, self.run_id, self.dataset_id = cfg, out, run_id, dataset_id
        torch.set_num_threads(max(1, cfg.predict.threads or int(np.ceil(cfg.workers.num_cpus))))
        self._models: dict[str, Any] = {}
        self._sources: dict[str, Any] = {}
        self.xseg = load_merge_xseg(cfg)

    def _predict(self, uri: str, morph_factor: float | None = None):
        from dflray.merge.predictors import make_predict

        key = (uri, morph_factor)
        if key not in self._models:  # one worker merges fakes of many models: keep the last two loaded
            if len(self._models) >= 2:
                self._models.pop(next(iter(self._models)))
            predict = dataclasses.replace(self.cfg.predict, morph_factor=morph_factor)
            self._models[key] = make_predict(predict, uri, worker_cpus=self.cfg.workers.num_cpus)
        return self._models[key]

    def _method(self, task: MergeTask, contract: ModelContract):
        """A training-free method built for this fake (its seed), with its source person's faces."""
        from dflray.merge.methods import load_source_faces, method_predict

        key = json.dumps(task.source_files, sort_keys=True)
        if task.source_files and key not in self._sources:  # fakes come grouped: keep the last two people
            if len(self._sources) >= 2:
                self._sources.pop(next(iter(self._sources)))
            self._sources[key] = load_source_faces(task.faceset, task.source_files)
        sources = self._sources.get(key) if task.source_files else None
        return method_predict(task.method, task.method_settings, contract, seed=task.seed, sources=sources,
                              batch_size=self.cfg.predict.batch_size)

    def recorded(self, task: MergeTask) -> TaskResult | None:
        return record_result(task.id, join(self.out, "records", f"{task.id}.parquet"))

    def run(self, task: MergeTask) -> TaskResult:
        from dflray.merge.pipeline import merge_one

        contract = ModelContract.from_dict(task.contract)
        try:
            predict = self._method(task, contract) if task.method else self._predict(task.model_uri,
                                                                                     task.morph_factor)
        except Exception as e:  # noqa: BLE001 - e.g. a source person without faces: this fake fails, not the job
            return TaskResult(task.id, "error", f"{type(e).__name__}: {e}")
        record, _ = merge_one(task.merge_input(), self.cfg, self.out, predict,
                              contract=contract, model_uri=task.model_uri,
                              model_sha=task.model_sha256, reference=None, run_id=self.run_id,
                              dataset_id=self.dataset_id, xseg=self.xseg,
                              node=ray.get_runtime_context().get_node_id())
        return TaskResult(task.id, record["status"], record.get("error") or "")


def _merge_config(cfg: GenerateConfig, dataset_id: str) -> MergeConfig:
    # Lossless fakes: the perturb stage's encode is then the only lossy one, as for the real videos, so
    # the number of compression generations is no cue.
    out = dataclasses.replace(cfg.merge.output, lossless=True, masks=True)
    return dataclasses.replace(cfg.merge, output=out, dataset_id=dataset_id)


def _merge_tasks(cfg: GenerateConfig, mcfg: MergeConfig, plan: Sequence[dict], models: dict[str, dict], faceset: str,
                 holders: Mapping[str, list[str]], done: set[str]) -> Iterator[MergeTask]:
    """A task per planned fake not yet merged whose model trained, grouped by model, then by target.

    The order is found first from a small key per fake; each task is then made as it is read, so the driver
    holds the keys, not the tasks (which carry face-file lists and the model's contract)."""
    settings = {m.name: m.settings for m in cfg.methods}
    videos_of = videos_by_identity(plan)
    order = []
    for i, r in enumerate(plan):
        if r["kind"] != "FAKE" or r["item_id"] in done:
            continue
        if not r["model_key"]:  # a training-free method: grouped by method, then source person
            order.append(("", r["method"], "None", str(sorted(_source_videos(r, videos_of))), r["uri"], i))
            continue
        m = models.get(r["model_key"], {"ok": False, "error": "not trained"})
        if not m["ok"]:
            continue
        order.append((m["model_uri"], "", str(_morph(r, settings)), "[]", r["uri"], i))
    order.sort()
    for key in order:
        yield _merge_task(cfg, mcfg, plan[key[-1]], models, faceset, holders, videos_of, settings)


def _source_videos(r: dict, videos_of: Mapping[str, list[str]]) -> list[str]:
    """The source person's videos a training-free method's fake reads (none for a method that reads no source)."""
    from dflray.methods import method_spec

    return videos_of.get(r["source_identity"], []) if "source" in method_spec(r["method"]).reads else []


def _morph(r: dict, settings: dict[str, dict]) -> float | None:
    """A model method's merge-time morph (amp's ``morph_factor``) for the planned fake ``r``, else None."""
    from dflray.merge.methods import full_settings

    name = r.get("method") or ""
    return full_settings(name, settings[name]).get("morph_factor") if name in settings else None


def _merge_task(cfg: GenerateConfig, mcfg: MergeConfig, r: dict, models: dict[str, dict], faceset: str,
                holders: Mapping[str, list[str]], videos_of: Mapping[str, list[str]],
                settings: dict[str, dict]) -> MergeTask:
    """The task of the planned fake ``r``."""
    from dflray.merge.methods import method_contract, method_id

    fill = mcfg.fill_gaps if mcfg.fill_gaps is not None else cfg.extract.decode.every_n - 1
    if not r["model_key"]:  # a training-free method
        name = r["method"]
        contract = method_contract(name, cfg.extract.align.face_type, cfg.extract.align.size)
        sources = {v: list(holders.get(v, [])) for v in _source_videos(r, videos_of)}
        return MergeTask(id=r["item_id"], dst_uri=r["uri"], dst_video_id=r["video_id"], faceset=faceset,
                         face_files=list(holders.get(r["video_id"], [])), seed=r["seed"], fill_gaps=fill,
                         model_source=f"method:{name}", model_uri="", contract=contract.to_dict(),
                         model_sha256=method_id(name, settings.get(name, {})), method=name,
                         method_settings=dict(settings.get(name, {})), source_files=sources)
    m = models[r["model_key"]]
    return MergeTask(id=r["item_id"], dst_uri=r["uri"], dst_video_id=r["video_id"], faceset=faceset,
                     face_files=list(holders.get(r["video_id"], [])), seed=r["seed"], fill_gaps=fill,
                     model_source=m["source"], model_uri=m["model_uri"], contract=m["contract"],
                     model_sha256=m["model_sha256"], morph_factor=_morph(r, settings))


def merge_fakes(cfg: GenerateConfig, plan: Sequence[dict], models: dict[str, dict], faceset: str,
                holders: Mapping[str, list[str]], work: str, dataset_id: str, run_id: str,
                summary: GenerateSummary) -> TableRows:
    """Merges every planned fake whose model trained.

    Returns:
        item_id → merge record (schema ``merged``, read as a dict) of every fake merged so far, this run or
        an earlier one; held as the records' table.
    """
    mcfg = _merge_config(cfg, dataset_id)
    fakes_out = join(work, "fakes")
    done = set(read_tables("merged", join(fakes_out, "records"), columns=["output_id"]).column("output_id").to_pylist())
    todo = _merge_tasks(cfg, mcfg, plan, models, faceset, holders, done)
    kwargs = {"cfg": mcfg, "out": fakes_out, "run_id": run_id, "dataset_id": dataset_id}
    for res in run_tasks(_MergeWorker, todo, mcfg.workers.num_cpus, kwargs, num_gpus=mcfg.predict.num_gpus):
        if res.status != "ok":
            summary.failures.append(f"merge {res.id}: {res.error}")
    records = read_tables("merged", join(fakes_out, "records"))
    for status in records.column("status").to_pylist():
        summary.merged[status] = summary.merged.get(status, 0) + 1
    return TableRows(records, "output_id")
