"""The merge job on Ray: a swap model and dst videos in, finished fake videos and their index out.

Layout of a merge output at ``OUT``::

    OUT/merge.json                   model, config and dataset id of this output (reruns must match)
    OUT/model.ts                     the exported model, when --model was a training checkpoint
    OUT/videos/<name>.mp4            merged video: H.264, the dst's frame count, timestamps and audio
    OUT/masks/<name>.mp4             per-frame manipulation mask (luma 0..255, lossless by default)
    OUT/frames/<output_id>.parquet   per-frame table (dflray.io.schema.MERGED_FRAMES)
    OUT/records/<output_id>.parquet  the video's index row: its commit record, written last
    OUT/index.parquet                all records (dflray.io.schema.MERGED), rebuilt at the end of a run
    OUT/errors.parquet               one row per failure (dflray.io.schema.ERRORS)
    OUT/_faceset/                    the dst faceset, when --dst was videos (extracted first)

With ``quality.measure`` (or ``quality.source=FACESET``) each merged video is also measured before it is
committed (``dflray.quality.FaceMeasurer``: ``swap_success``, identity distances, pose and
expression error, flicker, seam) against its dst video, its mask, the dst faceset's boxes and the source
identity (the dominant person of the src faceset, by default the one the model was trained on); the
metrics go into its record, and the summary prints the distribution of ``swap_success``.

How it runs: one Ray Data row per dst video goes to a pool of CPU merge actors
(``MergeConfig.workers``); each decodes its video, crops the faces, and sends the crops of
``batch_frames`` frames at a time to a pool of predictor actors (``MergeConfig.predict``, on GPUs when
given) that every merge actor shares; it pastes, encodes frames in order and uploads the outputs under
temporary names before renaming them. A video is done when its record exists: a rerun skips done
videos, and a killed run leaves no half-written file under a final name.

Each output carries provenance in its container metadata (MP4 user data): ``dflray_synthetic``,
``dflray_dataset_id``, ``dflray_settings_sha256``, ``dflray_model_sha256``, ``dflray_output_id`` and a
human-readable ``comment``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow.parquet as pq
import ray
from ray.data import ActorPoolStrategy

import dflray
from dflray.artifacts.export import ModelContract, resolve_model
from dflray.artifacts.xseg import load_xseg, model_id, resolve_xseg
from dflray.config import FACE_TYPES, QUALITY_METRICS, ExtractConfig, MergeConfig, to_dict
from dflray.faceset import (
    Commit,
    check_writable,
    face_holders,
    new_run_id,
    read_tables,
    read_video_faces,
    read_videos,
    undone_if_failed,
    video_id,
)
from dflray.io import schema
from dflray.io.storage import atomic_write, exists, expand_inputs, join, open_uri
from dflray.io.video import Transcoder, VideoError
from dflray.merge.blend import merge_spec
from dflray.merge.identity import reference_embedding, source_identity
from dflray.merge.predictors import make_predict, start_predict_pool, stop_predict_pool
from dflray.runtime import init_ray, input_blocks

# Turns dst videos into a faceset: ``(videos, faceset URI, extract config, Ray address)``; the entry point
# passes ``dflray.extract.run_extract`` (merge, a sibling stage, does not import extraction).
Extractor = Callable[[list[str], str, ExtractConfig, "str | None"], Any]

log = logging.getLogger("dflray.merge")

_FACE_COLUMNS = ["frame_index", "face_index", "bbox", "landmarks", "embedding"]  # bbox: for quality.measure


class MergeInputError(RuntimeError):
    """A dst video cannot be merged for a reason in its inputs (faceset rows, model contract)."""


@dataclass
class MergeSummary:
    """What a merge run did (printed at the end, returned to callers)."""

    out: str
    videos: int = 0
    skipped: int = 0
    frames: int = 0
    frames_swapped: int = 0
    seconds: float = 0.0
    by_status: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    # ``success_stats`` over every merged fake of the output (with quality.measure; empty otherwise).
    swap_success: dict[str, Any] = field(default_factory=dict)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        status = ", ".join(f"{k} {v}" for k, v in sorted(self.by_status.items()))
        lines = [f"merge → {self.out}: {self.videos} videos ({status or 'none'}; {self.skipped} already done), "
                 f"{self.frames} frames ({self.frames_swapped} with a swapped face), {self.seconds:.1f} s, "
                 f"{self.frames_per_second:.1f} frames/s"]
        if self.swap_success:
            from dflray.quality import format_success

            lines.append(f"  {format_success(self.swap_success)}")
        lines += [f"  failed: {f}" for f in self.failures[:20]]
        if len(self.failures) > 20:
            lines.append(f"  ... and {len(self.failures) - 20} more (see errors.parquet)")
        return "\n".join(lines)


# ------------------------------------------------------------------------------ names and files


def output_name(uri: str, output_id: str) -> str:
    """A file stem for a dst video that is safe on every store and cannot leave the output folder.

    Example:
        >>> output_name("s3://b/clips/../../x y.mp4", "0123456789abcdef")
        'x_y_01234567'
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", uri.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0])
    stem = stem.strip("._-")[:80] or "video"
    return f"{stem}_{output_id[:8]}"


# ------------------------------------------------------------------------------ the model


def check_model(uri: str, contract: ModelContract, morph_factor: float | None = None) -> None:
    """Runs the model once on a blank crop of its contract's size; a mismatch fails before any work, as
    does a ``predict.morph_factor`` for a model without one (not AMP)."""
    from dflray.merge.predict import Predictor

    if contract.face_type not in FACE_TYPES:
        raise ValueError(f"--model: unknown face type {contract.face_type!r} in the model's contract")
    try:
        p = Predictor.load(uri, "cpu", morph_factor=morph_factor)
    except ValueError as e:
        if morph_factor is None:
            raise
        raise ValueError(f"predict.morph_factor: {e}") from None
    r = p.resolution
    try:
        faces, fm, dm = p(np.zeros((1, r, r, 3), np.float32))
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"--model: the model does not run on {r} px crops as its contract says: {e}") from e
    if faces.shape != (1, r, r, 3) or fm.shape != (1, r, r) or dm.shape != (1, r, r):
        raise ValueError(f"--model: the model returns {faces.shape}, {fm.shape}, {dm.shape} for 1 crop of {r} px; "
                         f"expected (1, {r}, {r}, 3) and two (1, {r}, {r}) masks")


# ------------------------------------------------------------------------------ XSeg and the workers


def resolve_merge_xseg(cfg: MergeConfig, field: str = "xseg") -> tuple[MergeConfig, str | None]:
    """Checks the XSeg model of a config whose mask modes use it, on the driver, before any work.

    Returns:
        (the config with ``xseg`` made an absolute URI, the model's id), or (cfg, None) when no mask
        mode needs XSeg.

    Raises:
        ValueError: naming ``field`` when the model is missing or is not an XSeg model.
    """
    if not cfg.uses_xseg:
        return cfg, None
    uri, sha = resolve_xseg(cfg.xseg, field)
    return dataclasses.replace(cfg, xseg=uri), sha


def load_merge_xseg(cfg: MergeConfig) -> tuple[Any, str | None]:
    """(XSeg model, its id) for a merge worker, or (None, None) when no mask mode needs it."""
    if not cfg.uses_xseg:
        return None, None
    import torch

    return load_xseg(cfg.xseg, "cuda" if torch.cuda.is_available() else "cpu"), model_id(cfg.xseg)


class MergeStage:
    """Ray Data actor: merges one dst video per row and commits its outputs and record.

    Rows in: one task dict per video (see ``run_merge``). Rows out: a small status row per video.
    """

    def __init__(self, cfg: MergeConfig, out: str, model_uri: str, contract: ModelContract, model_sha: str,
                 predictors: list, reference: np.ndarray | None, run_id: str, dataset_id: str,
                 source: np.ndarray | None = None):
        self.cfg, self.out, self.contract = cfg, out, contract
        self.model_uri, self.model_sha, self.reference = model_uri, model_sha, reference
        self.run_id, self.dataset_id = run_id, dataset_id
        self.predict = make_predict(cfg.predict, model_uri, pool=predictors, worker_cpus=cfg.workers.num_cpus)
        self.xseg = load_merge_xseg(cfg)
        self.node = ray.get_runtime_context().get_node_id()
        self.quality = None
        if source is not None:  # the measuring models load once per worker, like the swap model
            # The measurer lives in the shared quality layer, the same one the dataset job gates with.
            from dflray.quality import FaceMeasurer

            self.quality = QualityProbe(FaceMeasurer(), np.asarray(source, np.float64), cfg.quality.sample_frames)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = [self._one({k: v[i] for k, v in batch.items()}) for i in range(len(batch["output_id"]))]
        return {k: np.array([r[k] for r in rows]) for k in rows[0]}

    def _one(self, task: dict[str, Any]) -> dict[str, Any]:
        task = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in task.items()}
        record = _recorded(self.out, task["output_id"])
        if record is not None:  # its block was sent again after a lost node: this video was done before
            log.info("merge: %s already recorded", task["output_id"])
            return self._status(record)
        record, error = merge_one(task, self.cfg, self.out, self.predict, contract=self.contract,
                                  model_uri=self.model_uri, model_sha=self.model_sha, reference=self.reference,
                                  run_id=self.run_id, dataset_id=self.dataset_id, xseg=self.xseg,
                                  quality=self.quality, node=self.node)
        return self._status(record)

    @staticmethod
    def _status(record: dict[str, Any]) -> dict[str, Any]:
        return {"output_id": record["output_id"], "status": record["status"], "frames": record["frames"] or 0,
                "frames_swapped": record["frames_swapped"] or 0, "error": record.get("error") or "",
                "dst_uri": record["dst_uri"], "seconds": record["seconds"]}


def _recorded(out: str, output_id: str) -> dict[str, Any] | None:
    """The record of ``output_id`` under ``out`` (``records/<output_id>.parquet``), or None."""
    uri = join(out, "records", f"{output_id}.parquet")
    if not exists(uri):
        return None
    with open_uri(uri) as f:
        rows = pq.read_table(f).to_pylist()
    return rows[0] if rows else None


@dataclass(frozen=True)
class QualityProbe:
    """What ``merge_one`` measures each merged video with (``MergeConfig.quality``).

    Attributes:
        measurer: a loaded ``dflray.quality.FaceMeasurer``.
        source: (128,) mean descriptor of the source identity.
        sample_frames: frames per video the identity metrics are measured on.
    """

    measurer: Any
    source: np.ndarray
    sample_frames: int = 8

    def measure(self, fake: str, real: str, mask: str, faces: Any) -> dict[str, Any]:
        """Every metric of ``QUALITY_METRICS`` and a ``quality_note``; never raises (a failure is the note)."""
        try:
            metrics = self.measurer.measure_fake(fake, real, mask, faces, self.source,
                                                 sample_frames=self.sample_frames)
            return {**metrics, "quality_note": None}
        except Exception as e:  # noqa: BLE001 - an unmeasurable video keeps its merge, with null metrics
            log.warning("quality of %s not measured: %s: %s", real, type(e).__name__, e)
            return {**{m: None for m in QUALITY_METRICS}, "quality_note": f"not measured: {type(e).__name__}: {e}"}


def _read_faces(task: dict[str, Any]):
    return read_video_faces(task["faceset"], json.loads(task["face_files"]), task["dst_video_id"], _FACE_COLUMNS)


def merge_one(task: dict[str, Any], cfg: MergeConfig, out: str, predict, *, contract: ModelContract, model_uri: str,
              model_sha: str, reference: np.ndarray | None, run_id: str, dataset_id: str,
              xseg: tuple[Any, str | None] = (None, None),
              quality: QualityProbe | None = None, node: str | None = None) -> tuple[dict, dict | None]:
    """Merges one dst video and commits it (``dflray.faceset.Commit``: the video and mask moved in, the
    frames table, then the record); never raises.

    ``xseg`` is ``load_merge_xseg``'s (model, id), used when this video's mask mode is an XSeg one.
    ``quality``, when given, measures a fake (not a ``mode=original`` re-encode) before it is committed;
    its metrics go into the record. ``node`` (the Ray node id doing the work) goes into the record too.

    Returns:
        (record row, error row or None).
    """
    from dflray.merge.video import draw_settings, merge_video, plan_faces, select_faces, settings_sha256

    t0 = time.perf_counter()
    seed = int(task["seed"])
    settings = draw_settings(cfg.settings, cfg.vary, seed)
    spec = merge_spec(settings)  # the mode strings, parsed once for this video (a validated config parses)
    xseg_model, xseg_sha = xseg if spec.mask.needs_xseg else (None, None)
    digest = settings_sha256(settings, smooth_window=cfg.smooth_window, identity=to_dict(cfg.identity),
                             model=model_sha, **({"xseg": xseg_sha} if xseg_sha else {}))
    name = output_name(task["dst_uri"], task["output_id"])
    fake = spec.blend.swap
    record: dict[str, Any] = {
        "output_id": task["output_id"], "label": "FAKE" if fake else "REAL", "dst_uri": task["dst_uri"],
        "dst_video_id": task["dst_video_id"], "model": task["model_source"], "model_sha256": model_sha,
        "xseg_sha256": xseg_sha,
        "arch": contract.arch, "face_type": contract.face_type, "resolution": contract.resolution,
        **to_dict(settings), "smooth_window": cfg.smooth_window, "identity_mode": cfg.identity.swap, "seed": seed,
        "settings_sha256": digest, "dataset_id": dataset_id, "run_id": run_id, "frames": 0, "frames_swapped": 0,
        "faces_swapped": 0, "node": node}
    error = None
    commit = Commit(out, run_id=task["output_id"])
    tmp = tempfile.mkdtemp(prefix="dflray-merge-")  # the video's staging: local files until they move in
    try:
        if task.get("input_error"):
            raise MergeInputError(task["input_error"])
        faces = _read_faces(task)
        if faces is None or faces.num_rows == 0:
            raise MergeInputError("the faceset has no face rows for this video (missing or not extracted)")
        frame_idx = np.asarray(faces.column("frame_index").to_numpy(), np.int64)
        lms = schema.landmarks_of(faces)
        emb_col = faces.column("embedding")
        embeddings = None
        if emb_col.null_count < faces.num_rows:
            flat = emb_col.combine_chunks()
            flat = flat.fill_null([np.nan] * 128) if emb_col.null_count else flat
            embeddings = flat.flatten().to_numpy(zero_copy_only=False).reshape(-1, 128).astype(np.float64)
        selected = select_faces(frame_idx, embeddings, cfg.identity.swap, reference=reference,
                                threshold=cfg.identity.threshold)
        plan = plan_faces(frame_idx, lms, selected, smooth_window=cfg.smooth_window,
                          fill_gaps=int(task["fill_gaps"])) if fake else {}
        counts = dict(zip(*np.unique(frame_idx, return_counts=True)))
        meta = {"comment": (f"SYNTHETIC: face swap made by dflray {dflray.__version__} for deepfake-detection "
                            "research" if fake else f"re-encoded by dflray {dflray.__version__}, not manipulated"),
                "dflray_synthetic": "1" if fake else "0", "dflray_dataset_id": dataset_id,
                "dflray_settings_sha256": digest, "dflray_model_sha256": model_sha,
                "dflray_output_id": task["output_id"]}
        video_local = os.path.join(tmp, name + ".mp4")
        mask_local = os.path.join(tmp, name + "_mask.mp4") if cfg.output.masks else None
        o = cfg.output
        with Transcoder(task["dst_uri"], video_local, mask_path=mask_local, crf=o.crf, preset=o.preset,
                        lossless=o.lossless, mask_crf=o.mask_crf, metadata=meta) as tr:
            rows = merge_video(tr, plan, predict, settings, face_type=contract.face_type,
                               resolution=contract.resolution, seed=seed,
                               batch_frames=cfg.workers.batch_frames, xseg=xseg_model,
                               faces_per_frame={int(k): int(v) for k, v in counts.items()})
            has_audio, fps, size = tr.has_audio, tr.fps, tr.size
        if not rows:
            raise VideoError("the video has no decodable frames")
        if quality is not None and fake and mask_local:
            # On the local files, before they move: reading them back from an object store would cost a
            # second download of both.
            record.update(quality.measure(video_local, task["dst_uri"], mask_local, faces))
        w, h = size
        record.update(path=f"videos/{name}.mp4", sha256=commit.publish(video_local, f"videos/{name}.mp4"))
        if mask_local:
            record.update(mask_path=f"masks/{name}.mp4", mask_sha256=commit.publish(mask_local, f"masks/{name}.mp4"))
        for r in rows:
            r["output_id"] = task["output_id"]
        commit.write("merged_frames", rows, f"frames/{task['output_id']}.parquet")
        record.update(status="ok", frames=len(rows), frames_swapped=sum(r["faces_swapped"] > 0 for r in rows),
                      faces_swapped=sum(r["faces_swapped"] for r in rows), fps=fps, has_audio=has_audio,
                      duration=rows[-1]["timestamp"] - rows[0]["timestamp"] + 1.0 / fps, width=w, height=h)
    except Exception as e:  # noqa: BLE001 - one bad video is an error row, never a dead job
        kind = type(e).__name__
        message = str(e).strip() or repr(e)
        stage = "input" if isinstance(e, (MergeInputError, ValueError)) else \
            "decode" if isinstance(e, VideoError) else "write" if isinstance(e, OSError) else "merge"
        record.update(status="error", error=f"{kind}: {message}")
        error = {"uri": task["dst_uri"], "video_id": task["dst_video_id"], "stage": stage, "type": kind,
                 "message": message, "run_id": run_id}
        log.warning("merge failed for %s: %s: %s", task["dst_uri"], kind, message)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record["seconds"] = time.perf_counter() - t0
    try:
        if error is not None:
            commit.write("errors", [error], f"errors/{task['output_id']}.parquet")
        else:
            commit.remove(f"errors/{task['output_id']}.parquet")
        commit.record("merged", [record], f"records/{task['output_id']}.parquet")
    except Exception as e:  # noqa: BLE001 - the output store itself failed: report, the job goes on
        record.update(status="error", error=f"cannot write the record: {type(e).__name__}: {e}")
    return record, error


# ------------------------------------------------------------------------------ the driver


def _config_key(cfg: MergeConfig) -> dict[str, Any]:
    """What shapes the outputs (resources and extraction excluded): a rerun must match it."""
    d = to_dict(cfg)
    # quality only adds columns to the records: a rerun that turns it on finishes an output made without.
    for k in ("predict", "workers", "extract", "retry_errors", "quality"):
        d.pop(k)
    if cfg.predict.morph_factor is not None:  # an AMP model's morph changes every fake
        d["morph_factor"] = cfg.predict.morph_factor
    return d


def _check_manifest(out: str, doc: dict[str, Any]) -> None:
    uri = join(out, "merge.json")
    doc = json.loads(json.dumps(doc, default=str))  # as it reads back (tuples become lists)
    if exists(uri):
        with open_uri(uri) as f:
            old = json.load(f)
        for key in ("model_sha256", "config", "dataset_id"):
            if old.get(key) != doc[key]:
                raise ValueError(f"--out {out} holds a merge made with another {key.replace('_sha256', '')}; "
                                 "use a new --out (or the same model and settings to finish it)")
        return
    with atomic_write(uri) as f:
        f.write(json.dumps(doc, indent=2, default=str).encode())


def _is_faceset(dst: list[str]) -> bool:
    return len(dst) == 1 and exists(join(dst[0], "faceset.json"))


def _dst_faceset(dst: list[str], out: str, cfg: MergeConfig, address: str | None, extractor: Extractor | None) -> str:
    """The faceset of the dst videos: ``dst`` itself, or one extracted into ``OUT/_faceset``."""
    if _is_faceset(dst):
        return dst[0]
    target = join(out, "_faceset")
    extractor(dst, target, cfg.extract, address)
    return target


def _tasks(faceset: str, dst: list[str], cfg: MergeConfig, model_sha: str, model_source: str) -> list[dict[str, Any]]:
    videos = read_videos(faceset)
    only = None
    if not (len(dst) == 1 and dst[0] == faceset):
        only = {video_id(u) for u in expand_inputs(dst)}
    with open_uri(join(faceset, "faceset.json")) as f:
        every_n = int(json.load(f).get("config", {}).get("decode", {}).get("every_n", 1))
    fill = cfg.fill_gaps if cfg.fill_gaps is not None else every_n - 1
    holders = face_holders(faceset)  # read once here: a worker then opens only its own video's files
    tasks: dict[str, dict[str, Any]] = {}
    for row in videos.to_pylist():
        vid = row["video_id"]
        if only is not None and vid not in only:
            continue
        out_id = hashlib.sha1(f"{vid}:{model_sha}".encode()).hexdigest()[:16]
        problem = ""
        if row["status"] == "error":
            problem = f"extraction of this video failed: {row['error']}"
        elif row["status"] == "no_faces":
            problem = "no face was found in this video at extraction"
        tasks[out_id] = {"output_id": out_id, "dst_uri": row["uri"], "dst_video_id": vid, "faceset": faceset,
                         "face_files": json.dumps(holders.get(vid, [])), "seed": 0, "fill_gaps": fill,
                         "model_source": model_source,
                         "width": row["width"] or 0, "height": row["height"] or 0, "input_error": problem}
    return sorted(tasks.values(), key=lambda t: t["dst_uri"])


def run_merge(model: str, dst: list[str], out: str, cfg: MergeConfig, address: str | None = None,
              extractor: Extractor | None = None) -> MergeSummary:
    """Merges every dst video with the model into ``out`` on the current Ray cluster.

    Args:
        model: an exported model (``dflray export``) or a training output/checkpoint (exported into
            ``OUT/model.ts`` first), any fsspec URL.
        dst: a faceset written by ``dflray extract``, or videos (files, folders, globs, manifests),
            which are extracted into ``OUT/_faceset`` first by ``extractor``.
        out: output root (any fsspec URL).
        cfg: the validated merge config.
        address: Ray address (None: RAY_ADDRESS, or a local cluster).
        extractor: what extracts dst videos (``dflray.extract.run_extract``; the CLI passes it); needed
            only when ``dst`` is videos.

    Returns:
        The run's summary.

    Raises:
        ValueError: for a bad model, output or option (``ConfigError`` naming the field, e.g.
            ``quality.source``), before any video is merged.

    Example:
        >>> run_merge("model.ts", ["facesets/dst"], "s3://bucket/fakes", MergeConfig())  # doctest: +SKIP
    """
    from dflray.merge.video import video_seed

    t0 = time.perf_counter()
    if cfg.settings.mode == "raw-predict" or any("raw-predict" in v.choices for v in cfg.vary if v.field == "mode"):
        raise ValueError("settings.mode: raw-predict gives face crops, not frames; the video merge cannot use it")
    if cfg.predict.precision == "fp16" and not cfg.predict.num_gpus:
        raise ValueError("predict.precision: fp16 runs on GPUs only (set predict.num_gpus, or use bf16 on CPU)")
    if extractor is None and not _is_faceset(dst):
        raise ValueError(f"--dst: {dst} is not a faceset (no faceset.json); give one written by dflray extract, "
                         "or pass an extractor (dflray merge on the command line extracts videos itself)")
    with undone_if_failed(out):  # a refused run leaves no empty --out behind
        check_writable(out)
        cfg, xseg_sha = resolve_merge_xseg(cfg)
        identity = source_identity(cfg, model)
        model_uri, contract, model_sha, source = resolve_model(model, out)
        check_model(model_uri, contract, cfg.predict.morph_factor)
        dataset_id = cfg.dataset_id or hashlib.sha256(out.rstrip("/").encode()).hexdigest()[:12]
        reference = reference_embedding(cfg.identity.reference) if cfg.identity.swap == "reference" else None
        _check_manifest(out, {"kind": "dflray.merge", "schema_version": schema.SCHEMA_VERSION, "model": source,
                              "model_sha256": model_sha, "xseg_sha256": xseg_sha, "contract": contract.to_dict(),
                              "config": _config_key(cfg), "quality_source": identity[1] if identity else None,
                              "dataset_id": dataset_id, "dflray": dflray.__version__})
    init_ray(address)
    faceset = _dst_faceset(dst, out, cfg, address, extractor)
    tasks = _tasks(faceset, dst, cfg, model_sha, source)
    if not tasks:
        raise ValueError(f"--dst: no videos found in {dst}")
    for t in tasks:
        t["seed"] = video_seed(cfg.seed, t["dst_video_id"])
    done = {r["output_id"] for r in read_tables("merged", join(out, "records")).to_pylist()
            if r["status"] == "ok" or not cfg.retry_errors}
    todo = [t for t in tasks if t["output_id"] not in done]
    summary = MergeSummary(out=out, videos=len(todo), skipped=len(tasks) - len(todo))
    run_id = new_run_id()
    if todo:
        _run_tasks(todo, cfg, out, model_uri, contract, model_sha, reference, run_id, dataset_id, summary,
                   source=identity[0] if identity else None)
    records = _consolidate(out)
    if identity:
        from dflray.quality import success_stats

        fakes = [r for r in records.select(["label", "status", "swap_success"]).to_pylist()
                 if r["label"] == "FAKE" and r["status"] == "ok"]
        summary.swap_success = success_stats(r["swap_success"] for r in fakes)
    summary.seconds = time.perf_counter() - t0
    log.info("%s", summary)
    return summary


def _run_tasks(todo, cfg: MergeConfig, out, model_uri, contract, model_sha, reference, run_id, dataset_id,
               summary: MergeSummary, source: np.ndarray | None = None) -> None:
    p = cfg.predict
    predictors = start_predict_pool(p, model_uri)
    workers, cpus = cfg.workers.concurrency, cfg.workers.num_cpus
    if workers is None:
        # At least two workers per predictor, so one has crops waiting while another pastes and encodes
        # (one worker per predictor leaves the model idle between videos); they share the CPUs left.
        free = max(0.5, ray.cluster_resources().get("CPU", 1) - p.num_cpus * p.concurrency)
        workers = max(2 * max(1, p.concurrency), int(free // cpus))
        cpus = min(cpus, free / workers)
    workers = min(workers, len(todo))
    try:
        ds = ray.data.from_items(todo, override_num_blocks=input_blocks(len(todo), workers)).map_batches(
            MergeStage, batch_size=1, compute=ActorPoolStrategy(size=workers), num_cpus=cpus,
            fn_constructor_kwargs={"cfg": cfg, "out": out, "model_uri": model_uri, "contract": contract,
                                   "model_sha": model_sha, "predictors": predictors, "reference": reference,
                                   "run_id": run_id, "dataset_id": dataset_id, "source": source})
        for row in ds.iter_rows():
            status = str(row["status"])
            summary.by_status[status] = summary.by_status.get(status, 0) + 1
            summary.frames += int(row["frames"])
            summary.frames_swapped += int(row["frames_swapped"])
            if status != "ok":
                summary.failures.append(f"{row['dst_uri']}: {row['error']}")
            log.info("merged %s: %s, %d frames, %.1f s", row["dst_uri"], status, int(row["frames"]),
                     float(row["seconds"]))
    finally:
        stop_predict_pool(predictors)


def _consolidate(out: str) -> Any:
    """Rebuilds ``index.parquet`` and ``errors.parquet`` from the per-video records; returns the index."""
    records = read_tables("merged", join(out, "records")).sort_by("output_id")
    with atomic_write(join(out, "index.parquet")) as f:
        pq.write_table(records, f)
    errors = read_tables("errors", join(out, "errors"))
    with atomic_write(join(out, "errors.parquet")) as f:
        pq.write_table(errors, f)
    return records
