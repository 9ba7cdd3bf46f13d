"""Stage 6, perturb and publish: every planned video, real and fake alike, at each FaceForensics++
compression level, with DeeperForensics-1.0 distortions drawn per video, into its place in the layout.

``dataset_rows`` lays out one DATASET row per planned video and compression level (place, labels,
perturbation, merge settings, quality metrics and gate results, or why it is not published);
``publish_videos`` sends each pending row as a ``PublishTask`` to a pool of actors that perturb and encode the
video (and copy a fake's mask) and write its record, ``WORK/published/<video_id>.parquet`` (its
done-marker). The rows are made as they are published, a window of videos per actor pool (``run_tasks``: 2,048
videos per actor), so the driver holds one window of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import dflray
from dflray.config import MERGE_SETTING_FIELDS, GenerateConfig
from dflray.dataset import layout as lay
from dflray.dataset.stages.base import (
    GenerateSummary,
    Task,
    TaskActor,
    TaskResult,
    done_ids,
    record_result,
    run_tasks,
    videos_by_identity,
)
from dflray.faceset import publish_file, write_table
from dflray.io.storage import exists, join, open_uri

log = logging.getLogger("dflray.generate")

__all__ = ["PublishTask", "dataset_rows", "publish_videos"]

@dataclass(frozen=True)
class PublishTask(Task):
    """One video at one compression level to perturb, encode and publish.

    Attributes:
        id: the published ``video_id``.
        row: its DATASET row (schema ``dataset``), status ``pending``; the worker completes it.
        metadata: the container metadata (MP4 user data) of the published video.
        src: the video to perturb: the real video, or the fake's lossless merge.
        mask_src: a fake's mask video (None for a real one).
        perturb_seed: the seed of the per-frame distortions.
    """

    row: dict[str, Any]
    metadata: dict[str, str]
    src: str
    mask_src: str | None
    perturb_seed: int


class _PublishWorker(TaskActor):
    """Perturbs one video at one compression level into its place in the layout; writes its record."""

    task_type = PublishTask

    def __init__(self, out: str, work: str, preset: str):
        self.out, self.work, self.preset = out, work, preset

    def recorded(self, task: PublishTask) -> TaskResult | None:
        return record_result(task.id, join(self.work, "published", f"{task.id}.parquet"))

    def run(self, task: PublishTask) -> TaskResult:
        from dflray.dataset.perturb import parse_spec, perturb_video

        row = dict(task.row)
        t0 = time.perf_counter()
        tmp = tempfile.mkdtemp(prefix="dflray-publish-")
        try:
            local = os.path.join(tmp, "video.mp4")
            info = perturb_video(task.src, local, parse_spec(row["perturbation"]), row["compression"],
                                 int(task.perturb_seed), preset=self.preset, metadata=task.metadata)
            row.update(sha256=publish_file(local, join(self.out, row["path"])), frames=info["frames"], fps=info["fps"],
                       width=info["width"], height=info["height"], has_audio=info["has_audio"], crf=info["crf"],
                       duration=info.get("duration"), status="ok")
            if task.mask_src:
                mask_uri = join(self.out, row["mask_path"])
                if not exists(mask_uri):  # the first compression level of this fake publishes its mask
                    copy = os.path.join(tmp, "mask.mp4")
                    with open_uri(task.mask_src) as src, open(copy, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 22)
                    row["mask_sha256"] = publish_file(copy, mask_uri)
                else:
                    with open_uri(mask_uri) as f:
                        row["mask_sha256"] = hashlib.sha256(f.read()).hexdigest()
        except Exception as e:  # noqa: BLE001
            row.update(status="error", error=f"{type(e).__name__}: {e}")
            log.warning("publish failed for %s: %s", row["path"], row["error"])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        row["seconds"] = time.perf_counter() - t0
        write_table("dataset", [row], join(self.work, "published", f"{row['video_id']}.parquet"))
        return TaskResult(row["video_id"], row["status"], row.get("error") or "")


def dataset_rows(cfg: GenerateConfig, plan: Sequence[dict], merged: Mapping[str, dict], quality: Mapping[str, dict],
                 models: dict, dataset_id: str, run_id: str) -> Iterator[dict[str, Any]]:
    """One DATASET row per planned video and compression level, in plan order, made as they are read
    (the driver never holds the dataset's rows): status ``pending`` when it is to be published, else
    ``dropped`` (quality gates with ``quality.action=drop``) or ``error`` (its model, merge or measuring
    failed), with the reason in ``error``."""
    from dflray.dataset.perturb import distortion_values, draw_distortions, final_crf, spec_string
    from dflray.dataset.plan import plan_seed
    from dflray.quality import apply_gates

    videos_of = videos_by_identity(plan)
    split_of: dict[str, str] = {}  # a real video's split
    fakes_of: dict[str, int] = {}
    for r in plan:
        if r["kind"] == "REAL":
            split_of[r["video_id"]] = r["split"]
        else:
            fakes_of[r["video_id"]] = fakes_of.get(r["video_id"], 0) + 1
    n_fakes = max(fakes_of.values(), default=0)
    del fakes_of
    by_split: dict[str, list[str]] = {}
    for v in sorted(split_of):
        by_split.setdefault(split_of[v], []).append(v)
    del split_of
    parts = lay.dfdc_parts(by_split, 1 + n_fakes, cfg.dfdc_part_size) if cfg.layout == "dfdc" else {}
    numbers = lay.ffpp_numbers(by_split) if cfg.ffpp_numeric_names else {}
    name_of = lambda v: numbers.get(v) or lay.short_id(v)  # noqa: E731 - a real video's FF++ name
    method_cfg = {m.name: m.settings for m in cfg.methods}
    for r in plan:
        fake = r["kind"] == "FAKE"
        dists = draw_distortions(cfg.perturb, plan_seed(cfg.seed, r["item_id"], "perturb"))
        spec = spec_string(dists)
        rec = merged.get(r["item_id"]) if fake else None
        q = quality.get(r["item_id"], {}) if fake else {}
        model = models.get(r.get("model_key") or "", {}) if fake else {}
        how: dict[str, Any] = {}
        if fake:
            model, how = _method_of(r, model, method_cfg)
        for comp in cfg.perturb.compression:
            vid = lay.short_id(r["item_id"], comp)
            arch = (model.get("contract") or {}).get("arch") if fake else None
            # A named method's folder and label (dflray-quick96); DFL's SAEHD models keep their arch string.
            method = lay.method_name(arch if how.get("named") is None else how["named"]) if fake else None
            place = lay.place(cfg.layout, label=r["kind"], split=r["split"], compression=comp, video_id=vid,
                              item_name=lay.short_id(r["item_id"]), part=parts.get(r["video_id"], 0),
                              real_name=name_of(r["video_id"]),
                              source_name=name_of(sorted(videos_of.get(r.get("source_identity") or "", [""]))[0])
                              if fake else "", method=method, ffpp_source=cfg.ffpp_source)
            row: dict[str, Any] = {
                "video_id": vid, **place, "label": r["kind"], "split": r["split"], "source_uri": r["uri"],
                "target_identity": r["identity"], "item_id": r["item_id"], "compression": comp,
                "crf": final_crf(dists, comp), "perturbation": spec,
                "perturbation_values": json.dumps(distortion_values(dists)),
                "seed": r["seed"], "dataset_id": dataset_id, "run_id": run_id, "status": "pending"}
            if fake:
                orig = lay.short_id(r["video_id"], comp)
                orig_place = lay.place(cfg.layout, label="REAL", split=r["split"], compression=comp, video_id=orig,
                                       item_name=lay.short_id(r["video_id"]), real_name=name_of(r["video_id"]),
                                       part=parts.get(r["video_id"], 0), ffpp_source=cfg.ffpp_source)
                row.update(original=orig, original_name=orig_place["name"], source_identity=r["source_identity"],
                           method=method, arch=arch, model_id=model.get("model_sha256"),
                           method_version=how["method_version"], method_settings=how["method_settings"])
                if rec is not None:
                    row.update({k: rec.get(k) for k in ("smooth_window", "settings_sha256", "frames_swapped",
                                                        *MERGE_SETTING_FIELDS)})
                    row.update(model_id=rec.get("model_sha256"), xseg_id=rec.get("xseg_sha256"))
                row.update(q.get("metrics") or {})
                if q:
                    passed, reasons = apply_gates(q["metrics"], cfg.quality.gates,
                                                  method=r.get("method") or cfg.models.train.model.arch)
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
            yield row


def _method_of(r: dict[str, Any], model: dict[str, Any], settings: dict[str, dict]) -> tuple[dict, dict]:
    """A fake's model document (a training-free method stands in for one: its name is the arch, its
    ``method_id`` the checksum) and its ``method_version`` / ``method_settings`` columns."""
    from dflray.merge.methods import full_settings, method_id
    from dflray.methods import method_names, method_spec

    name = r.get("method") or ""
    if name and not r.get("model_key"):
        model = {"ok": True, "contract": {"arch": name}, "model_sha256": method_id(name, settings.get(name, {}))}
        full = full_settings(name, settings.get(name, {}))
        return model, {"method_version": method_spec(name).version, "method_settings": json.dumps(full, sort_keys=True),
                       "named": name}
    family = name or str((model.get("contract") or {}).get("arch") or "").split("-")[0]
    version = method_spec(family).version if family in method_names() else None
    # A method's model (quick96, amp) publishes under its own name; DFL's SAEHD models keep their arch string.
    named = name if name and name not in ("df", "liae") else None
    full = full_settings(name, settings.get(name, {})) if name in method_names() else {}
    return model, {"method_version": version, "method_settings": json.dumps(full, sort_keys=True), "named": named}


def _metadata(row: dict[str, Any]) -> dict[str, str]:
    """The container metadata of a published video: synthetic or not, and its provenance."""
    fake = row["label"] == "FAKE"
    meta = {"comment": (f"SYNTHETIC: face swap made by dflray {dflray.__version__} for deepfake-detection "
                        "research" if fake else f"real video re-encoded by dflray {dflray.__version__}"),
            "dflray_synthetic": "1" if fake else "0", "dflray_dataset_id": row["dataset_id"],
            "dflray_video_id": row["video_id"], "dflray_label": row["label"],
            "dflray_perturbation": row["perturbation"], "dflray_compression": row["compression"]}
    if fake:
        meta.update(dflray_model_sha256=row.get("model_id") or "",
                    dflray_settings_sha256=row.get("settings_sha256") or "", dflray_method=row.get("method") or "",
                    dflray_method_version=str(row.get("method_version") or ""),
                    dflray_method_settings=row.get("method_settings") or "")
    return meta


def publish_videos(cfg: GenerateConfig, rows: Iterable[dict], merged: Mapping[str, dict], out: str, work: str,
                   summary: GenerateSummary, window: int | None = None) -> None:
    """Writes every pending row's video (and a fake's mask) into the layout, with its record; a row not
    pending (dropped or failed upstream) gets its record only, which says why.

    The rows are read as they come and published ``window`` (default: ``run_tasks``') videos at a time,
    one actor pool each (``run_tasks``): the driver holds one window's rows and tasks, however large the
    dataset.
    """
    for res in run_tasks(_PublishWorker, _publish_tasks(cfg, rows, merged, work), 1.0,
                         {"out": out, "work": work, "preset": cfg.perturb.preset}, window=window):
        if res.status != "ok":
            summary.failures.append(f"publish {res.id}: {res.error}")


def _publish_tasks(cfg: GenerateConfig, rows: Iterable[dict], merged: Mapping[str, dict],
                   work: str) -> Iterator[PublishTask]:
    """A task per pending row not yet published, as the rows come; a row not pending gets its record here."""
    from dflray.dataset.plan import plan_seed

    done = done_ids(join(work, "published"), ".parquet")
    fakes_out = join(work, "fakes")
    for row in rows:
        if row["video_id"] in done:
            continue
        if row["status"] != "pending":  # dropped or failed upstream: its record says why
            write_table("dataset", [row], join(work, "published", f"{row['video_id']}.parquet"))
            continue
        fake = row["label"] == "FAKE"
        rec = merged.get(row["item_id"]) if fake else None
        yield PublishTask(id=row["video_id"], row=row, metadata=_metadata(row),
                          src=join(fakes_out, rec["path"]) if fake else row["source_uri"],
                          mask_src=join(fakes_out, rec["mask_path"]) if fake else None,
                          perturb_seed=plan_seed(cfg.seed, row["item_id"], "perturb-frames"))
