"""The dataset job on Ray: a plan of real videos in, a labelled, measured, reported forgery dataset out.

``run_generate`` is the driver; each stage is a module of ``dflray.dataset.stages``. Stages (each
resumable: a rerun after a crash or a kill does only what is missing):

1. **extract** (``stages.extract``) every video once (``WORK/faceset``, the extraction job).
2. **plan** (``stages.identities``, ``stages.plan``): identities (labels, else clustering of dlib
   embeddings), identity-disjoint splits, pairing of source identities with target videos →
   ``OUT/plan.parquet`` (kept: a rerun uses it unchanged).
3. **train** (``stages.train``) the models the plan needs, ``models.concurrency`` at a time, each a Ray
   Train run in its own Ray task with its own workers, optionally fine-tuned from one shared base
   (``WORK/models/<key>/``, exported to ``model.ts``).
4. **merge** (``stages.merge``) every planned fake (``WORK/fakes``; losslessly, so that fakes and
   reals go through the same number of lossy encodes), settings drawn per fake from ``merge.vary`` with
   the fake's seed.
5. **quality** (``stages.quality``): swap success (the headline), identity, pose, expression, flicker and
   seam metrics of every fake; gates flag or drop.
6. **perturb** (``stages.publish``): DeeperForensics-1.0 distortions drawn per video, applied to real and
   fake videos alike, then every video written at each FaceForensics++ compression level into the
   chosen layout.
7. **index** (``stages.index``; ``report``): ``index.parquet`` (schema ``dataset``), ``frames.parquet``
   (``dataset_frames``), ``labels.json`` and the layout's ``metadata.json`` / split files, ``errors.parquet``
   and ``report.html``.

Layout of ``OUT`` (the published root: the layout and the dataset's tables, nothing else)::

    OUT/generate.json       the plan's config, dataset id and work location (a rerun must match)
    OUT/plan.parquet        real videos and planned fakes (schema ``plan``)
    OUT/index.parquet       one row per published video (schema ``dataset``)
    OUT/frames.parquet      per frame of every published fake, with its mask video
    OUT/labels.json         DFDC-format labels of every published video (not named metadata.json: DFDC
                            readers collect those and take their folder's number as the part)
    OUT/report.html         the self-contained report
    OUT/videos/ | dfdc_*/ | original_sequences/ + manipulated_sequences/ + splits/   the layout (layout.py)

and ``WORK`` (``--work``; default ``OUT.work``, beside it): faceset, identities, models, lossless fakes,
quality and publish records.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
import uuid
from typing import Any

import dflray
from dflray.artifacts.checkpoint import latest_checkpoint
from dflray.config import ConfigError, GenerateConfig, ModelConfig, to_dict
from dflray.config.train import ARCHS
from dflray.dataset.stages import (
    GenerateSummary,
    consolidate,
    count_plan,
    dataset_rows,
    extract_faceset,
    find_identities,
    measure_fakes,
    merge_fakes,
    model_jobs,
    plan_dataset,
    publish_videos,
    read_plan,
    subset_faceset,
    train_models,
    video_embeddings,
    write_plan,
)
from dflray.dataset.stages.base import default_work, read_json, stage_clock, write_json
from dflray.dataset.stages.plan import model_key as _model_key  # noqa: F401 - tests import it from here
from dflray.faceset import check_writable, face_holders
from dflray.io import schema
from dflray.io.storage import exists, fs_and_path, join, normalize_uri
from dflray.runtime import init_ray

log = logging.getLogger("dflray.generate")

# The stages' public names stay importable from here, as before the stages were modules.
__all__ = ["GenerateSummary", "consolidate", "measure_fakes", "merge_fakes", "model_jobs", "publish",
           "run_generate", "subset_faceset", "sweep_temporaries", "train_models", "video_embeddings"]
publish = publish_videos


# ------------------------------------------------------------------------------ the output



def sweep_temporaries(out: str) -> int:
    """Deletes the ``.tmp-*`` files a killed run left under ``out`` (one job per output at a time).

    A killed driver's tasks can outlive it by a moment (Ray reaps them once it sees the driver gone), so a
    temporary listed here may be renamed into place or removed before it is deleted: that is not an error."""
    fs, path = fs_and_path(out)
    if not fs.exists(path):
        return 0
    stale = [p for p in fs.find(path) if p.rsplit("/", 1)[-1].startswith(".tmp-")]
    removed = 0
    for p in stale:
        try:
            fs.rm(p)
            removed += 1
        except FileNotFoundError:
            continue
    if removed:
        log.info("removed %d temporary files a killed run left behind", removed)
    return removed


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


def check_methods(cfg: GenerateConfig) -> None:
    """Every method of the plan's mix is registered and its settings are valid, and a quality gate names
    only methods the plan makes (``ConfigError`` naming ``methods[i].name``, ``methods[i].settings.KEY`` or
    ``quality.gates[i].methods``)."""
    from dflray.methods import method_settings, method_spec

    made = [m.name for m in cfg.methods] or [cfg.models.train.model.arch]
    for i, g in enumerate(cfg.quality.gates):
        for name in g.methods:
            method_spec(name, f"quality.gates[{i}].methods")
            if name not in made:
                raise ConfigError(f"quality.gates[{i}].methods", f"the plan makes no {name} fakes (it makes "
                                                                 f"{', '.join(made)})")

    for i, m in enumerate(cfg.methods):
        spec = method_spec(m.name, f"methods[{i}].name")
        method_settings(m.name, m.settings, f"methods[{i}]")
        if spec.assets is not None:  # the files it loads (onnx-swap's models): read and checked once, here
            from dflray.merge.methods import method_assets

            method_assets(m.name, m.settings, f"methods[{i}].settings")
        if spec.model == "none":
            continue
        if m.name not in ARCHS and not spec.model_config:
            raise ConfigError(f"methods[{i}].name", f"{m.name} needs a model dflray cannot train yet")
        fields = dict(spec.model_config) if spec.model_config else {"arch": m.name}
        try:  # the model this method trains: the plan's with its architecture (or its own fixed model)
            ModelConfig(**{**dataclasses.asdict(cfg.models.train.model), **fields})
        except ConfigError as e:
            raise ConfigError(f"methods[{i}].name", f"{m.name} trains models.train.model with {fields}, and "
                                                    f"then {e}") from None


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
    if cfg.merge.predict.morph_factor is not None:
        raise ConfigError("merge.predict.morph_factor", "generate sets an AMP model's morph per method: "
                          "methods: [{name: amp, settings: {morph_factor: ...}}]")
    if cfg.merge.predict.precision == "fp16" and not cfg.merge.predict.num_gpus:
        raise ConfigError("merge.predict.precision", "fp16 runs on GPUs only (set merge.predict.num_gpus)")
    if cfg.models.base and cfg.models.base != "pretrain":
        if latest_checkpoint(cfg.models.base) is None:
            raise ConfigError("models.base", f"{cfg.models.base} is not a training output or checkpoint")
    check_methods(cfg)


def _work_location(out: str, work: str | None, recorded: dict[str, Any] | None) -> str:
    """The run's work location: ``--work``, else the one ``generate.json`` recorded, else beside ``out``.

    Raises:
        ConfigError ``work``: inside ``out`` (readers that walk the published root would find the working
        files), or not the one the dataset was started with.
    """
    if recorded is not None:
        before = recorded.get("work") or join(out, "_work")  # datasets started before the record
        if work and normalize_uri(work).rstrip("/") != before.rstrip("/"):
            raise ConfigError("work", f"{out} was generated with its working files in {before}; give that --work "
                              "(or none) to finish it")
        return before
    chosen = normalize_uri(work) if work else default_work(out)
    root = out.rstrip("/") + "/"
    if chosen.rstrip("/") + "/" == root or chosen.startswith(root) or root.startswith(chosen.rstrip("/") + "/"):
        raise ConfigError("work", f"{chosen} overlaps the published root {out}: the working files must live "
                          "outside it (default: beside it, OUT.work)")
    return chosen


def _open_output(cfg: GenerateConfig, out: str, work: str | None = None
                 ) -> tuple[GenerateConfig, list[dict[str, Any]], str, str]:
    """Checks the plan, reads its manifest and opens ``out`` (``generate.json``: a rerun must match it).

    Returns:
        (the plan with its merge XSeg resolved, the manifest rows with absolute ``uri`` and ``video_id``,
        the dataset id, the work location).
    """
    from dflray.dataset.plan import read_manifest
    from dflray.merge.pipeline import resolve_merge_xseg

    _check_plan(cfg)
    cfg = dataclasses.replace(cfg, merge=resolve_merge_xseg(cfg.merge, "merge.xseg")[0])
    manifest = read_manifest(cfg)
    if cfg.layout == "dfdc" and cfg.dfdc_part_size:
        from dflray.dataset.layout import DFDC_MAX_PARTS, dfdc_reals_per_part

        per_part = dfdc_reals_per_part([len(manifest)], 1 + cfg.fakes_per_real, cfg.dfdc_part_size)
        if -(-len(manifest) // per_part) > DFDC_MAX_PARTS:
            raise ConfigError("dfdc_part_size", f"{cfg.dfdc_part_size} videos per part puts {len(manifest)} real "
                              f"videos and their fakes in more than {DFDC_MAX_PARTS} parts (readers keep the part "
                              "number in 8 bits): use a larger part, or 0 (auto)")
    uri = join(out, "generate.json")
    old = read_json(uri) if exists(uri) else None
    work = _work_location(out, work, old)
    check_writable(out)
    check_writable(work, "--work")
    dataset_id = cfg.dataset_id or hashlib.sha256(out.rstrip("/").encode()).hexdigest()[:12]
    doc = {"kind": "dflray.generate", "schema_version": schema.SCHEMA_VERSION, "dataset_id": dataset_id,
           "config": _config_key(cfg), "dflray": dflray.__version__, "work": work}
    if old is not None:
        if old.get("config") != doc["config"] or old.get("dataset_id") != dataset_id:
            raise ValueError(f"--out {out} holds a dataset generated with another plan; use a new --out (or the "
                             "same plan to finish it)")
    else:
        write_json(uri, doc)
    sweep_temporaries(out)
    sweep_temporaries(work)
    return cfg, manifest, dataset_id, work


# ------------------------------------------------------------------------------ the job


def run_generate(cfg: GenerateConfig, out: str, address: str | None = None, report: bool = True,
                 work: str | None = None) -> GenerateSummary:
    """Runs a dataset plan end to end into ``out`` on the current Ray cluster (resumably).

    Args:
        cfg: the validated plan.
        out: dataset root (any fsspec URL): the published layout and the dataset's tables only.
        work: where the working files go (faceset, models, lossless fakes, records): default beside
            ``out`` (``OUT.work``), never inside it; a rerun finds it in ``generate.json``.
        address: Ray address (None: RAY_ADDRESS, or a local cluster).
        report: also write ``report.html``.

    Raises:
        ConfigError / ValueError: for a bad plan, manifest or output, before any work.

    Example:
        >>> run_generate(load_config(GenerateConfig, "plan.yaml"), "s3://bucket/ds")  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    summary = GenerateSummary(out=out)
    out = normalize_uri(out)
    cfg, manifest, dataset_id, work = _open_output(cfg, out, work)
    run_id = time.strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:8]
    init_ray(address)
    timed = stage_clock(summary.stage_seconds, log)

    with timed("extract"):
        faceset = extract_faceset([m["uri"] for m in manifest], join(work, "faceset"), cfg.extract)
    with timed("plan"):
        holders = face_holders(faceset)
    plan = read_plan(out, work)  # a rerun keeps its plan
    if plan is None:
        with timed("plan"):
            plan = plan_dataset(cfg, find_identities(cfg, manifest, faceset, holders))
        write_plan(plan, out, work)
    del manifest  # the plan holds the videos from here on (a table)
    count_plan(plan, summary)
    with timed("train"):
        models = train_models(cfg, plan.rows, faceset, work, summary)
    with timed("merge"):
        merged = merge_fakes(cfg, plan.rows, models, faceset, holders, work, dataset_id, run_id, summary)
    with timed("quality"):
        quality = measure_fakes(cfg, plan.rows, merged, faceset, holders, work, plan.identity_embeddings)
    rows = dataset_rows(cfg, plan.rows, merged, quality, models, dataset_id, run_id)
    with timed("perturb"):
        publish_videos(cfg, rows, merged, out, work, summary)
    with timed("index"):
        consolidate(cfg, out, work, summary)
    if report:
        from dflray.dataset.report import build_report

        with timed("report"):
            build_report(out, join(out, "report.html"))
    summary.seconds = time.perf_counter() - t0
    log.info("%s", summary)
    return summary
