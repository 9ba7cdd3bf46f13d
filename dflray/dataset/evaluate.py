"""``dflray evaluate DATASET``: how hard each slice of a generated dataset is for a reference detector.

A standard frame-level detector (EfficientNet-B0, ``dflray.models.detector``) is trained with Ray Train on
the face crops of the train split and scores the test split's crops; ``dflray.quality.detection`` turns the
scores into frame- and video-level AUC with bootstrap intervals, over the whole test set and per method,
compression level, perturbation kind and swap-quality bucket. Stages:

1. **select** (driver, pure: ``select_videos``): the test videos are the test split of ``DATASET``; when it
   has no REAL or no FAKE video (identity-disjoint splits of a tiny dataset), a seeded share
   (``holdout``) of the train split's real videos, each with its fakes, is held out instead and the
   results say ``protocol=holdout`` (a within-split holdout: not identity-disjoint). The training videos
   are the train split of the training dataset (``DATASET``, or ``--train-dataset OTHER`` for a
   cross-dataset evaluation) minus any video made from a real video that is tested.
2. **crops** (one Ray task per video, ``run_tasks``): ``frames`` aligned face crops per video
   (``dflray.dataset.crops.video_crops``, DeepfakeBench's alignment) cached as Parquet in the dataset's
   work location, ``<work>/evaluate/crops-s<size>-f<frames>/<video_id>.parquet`` (PNG crops); a cached
   video is not cropped again. A video whose crops fail is counted and reported, never a dead job.
3. **train** (Ray Train ``TorchTrainer``, DDP): the crops through Ray Data into each worker's shard, one
   checkpoint per epoch under ``<train work>/evaluate/detector-<key>/run/``; the key hashes what shapes the
   detector, so a rerun with the same settings resumes or reuses it.
4. **score** (Ray Data actor pool, batch inference): every test crop's FAKE probability.
5. **results**: ``DATASET/evaluation.parquet`` (schema ``evaluation``; replaced by each run) and the
   Evaluation section of ``DATASET/report.html``.

Nothing is downloaded: the network is built from its definition and trained from scratch, or starts from
weights the user gives by path (``weights``).

Example:
    >>> s = run_evaluate("out/dataset", EvaluateConfig(epochs=5))  # doctest: +SKIP
    >>> print(s)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

import numpy as np

from dflray.config import ConfigError, EvaluateConfig, from_dict, to_dict
from dflray.dataset.crops import VideoCrops, video_crops
from dflray.dataset.report import perturbation_kinds
from dflray.dataset.stages.base import Task, TaskActor, TaskResult, done_ids, run_tasks, stage_clock, work_of
from dflray.faceset import sha256_file
from dflray.io.schema import read_table, table_from_rows
from dflray.io.storage import arrow_filesystem, atomic_write, exists, fs_and_path, join, normalize_uri, open_uri

log = logging.getLogger("dflray.evaluate")

__all__ = ["CropTask", "CropWorker", "EvaluateSummary", "Selection", "crops_table", "decode_crops", "read_weights",
           "run_evaluate", "select_videos"]

DETECTOR_FILE = "detector.pt"
_META_FILE = "detector.json"
_LABELS = {"REAL": 0, "FAKE": 1}
_INDEX_COLUMNS = ["video_id", "path", "mask_path", "label", "split", "original", "source_uri", "source_identity",
                  "target_identity", "method", "compression", "perturbation", "swap_success", "status"]


# ------------------------------------------------------------------------------ the summary


@dataclass
class EvaluateSummary:
    """What a ``dflray evaluate`` run did and found."""

    dataset: str
    train_dataset: str
    protocol: str = ""
    note: str = ""
    train_videos: int = 0
    test_videos: int = 0
    failed: list[str] = field(default_factory=list)
    detector_uri: str = ""
    epochs: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    shared_identities: int | None = None
    out: str = ""
    report: str = ""
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        def ci(r: dict[str, Any] | None) -> str:
            if r is None or not np.isfinite(r["auc"]):
                return "–".ljust(19)
            return f"{r['auc']:.3f} [{r['auc_lo']:.2f}, {r['auc_hi']:.2f}]"

        trained = (f"trained on {self.train_videos} videos of {self.train_dataset} for {self.epochs} epochs"
                   if self.epochs else "not trained (given weights)")
        lines = [f"evaluate → {self.out}: efficientnet-b0 {trained}",
                 f"  test: {self.test_videos} videos scored ({self.protocol}"
                 + (f"; {self.note}" if self.note else "") + f"), {len(self.failed)} videos without crops left out"]
        confidence = self.rows[0].get("confidence", 0.95) if self.rows else 0.95
        lines.append(f"  {'slice':<30} {'frame AUC [' + format(confidence, '.0%') + ' CI]':<22} "
                     f"{'video AUC':<22} videos (real/fake)")
        video = {(r["slice"], r["value"]): r for r in self.rows if r["level"] == "video"}
        for r in self.rows:
            if r["level"] != "frame":
                continue
            name = "all" if r["slice"] == "all" else f"{r['slice']} {r['value']}"
            lines.append(f"  {name[:30]:<30} {ci(r):<22} {ci(video.get((r['slice'], r['value']))):<22} "
                         f"{r['n_real']}/{r['n_fake']}" + ("" if r["reals"] == "slice" else " (all reals)"))
        lines.append("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.stage_seconds.items())
                     + f"; total {self.seconds:.1f}")
        lines += [f"  failed: {f}" for f in self.failed[:20]]
        if len(self.failed) > 20:
            lines.append(f"  … and {len(self.failed) - 20} more")
        return "\n".join(lines)


# ------------------------------------------------------------------------------ which videos


@dataclass(frozen=True)
class Selection:
    """The videos an evaluation trains and tests on.

    Attributes:
        train: index rows the detector trains on.
        test: index rows it is tested on.
        protocol: ``test-split`` or ``holdout`` (see ``select_videos``).
        excluded: training rows left out because a tested video was made from the same real video.
        shared_identities: identities in both sets (None across datasets).
    """

    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    protocol: str
    excluded: int = 0
    shared_identities: int | None = None


def _labels(rows: Iterable[dict[str, Any]]) -> set[str]:
    return {r["label"] for r in rows}


def _root(row: dict[str, Any]) -> str:
    """The real input video a row comes from (a fake's target video): a fake goes with its original."""
    return row.get("source_uri") or row.get("original") or row["video_id"]


def _identities(rows: Iterable[dict[str, Any]]) -> set[str]:
    return {x for r in rows for x in (r.get("target_identity"), r.get("source_identity")) if x}


def select_videos(test_rows: list[dict[str, Any]], train_rows: list[dict[str, Any]], *, holdout: float, seed: int,
                  same_dataset: bool, need_train: bool = True) -> Selection:
    """The training and test videos of an evaluation (published rows only).

    The test set is ``test_rows``' test split. When that has no REAL or no FAKE video and ``holdout`` > 0,
    it is instead a seeded share ``holdout`` of the train split's real input videos (at least one, and
    one with a fake), each with everything made from it (its compression levels and its fakes), and the
    protocol is ``holdout``. Training takes ``train_rows``' train split minus every row made from a real
    input video that is tested.

    Args:
        test_rows: index rows of the dataset tested.
        train_rows: index rows of the dataset trained on (the same rows when ``same_dataset``).
        holdout: the share of the train split's real videos to hold out when the test split cannot be used.
        seed: seed of the holdout draw.
        same_dataset: the two datasets are one (identities are then comparable and counted).
        need_train: the training set must hold both labels (False: the detector is not trained).

    Raises:
        ValueError: when there is nothing to test on, or nothing to train on, saying why.

    Example:
        >>> rows = [{"video_id": v, "label": l, "split": "train", "source_uri": s, "status": "ok"}
        ...         for v, l, s in [("r1", "REAL", "a"), ("f1", "FAKE", "a"), ("r2", "REAL", "b"), ("f2", "FAKE", "b")]]
        >>> sel = select_videos(rows, rows, holdout=0.5, seed=0, same_dataset=True)
        >>> sel.protocol, len(sel.train), len(sel.test)
        ('holdout', 2, 2)
    """
    ok = [r for r in test_rows if r.get("status") == "ok" and r.get("label") in _LABELS]
    test = [r for r in ok if r.get("split") == "test"]
    protocol = "test-split"
    if _labels(test) != set(_LABELS):
        lacking = " and ".join(sorted(set(_LABELS) - _labels(test)))
        if holdout <= 0:
            raise ValueError(f"the test split has no {lacking} video to test on (identity-disjoint splits of a small "
                             "dataset); give holdout=0.5 to hold out a share of the train split instead")
        pool = [r for r in ok if r.get("split") == "train"]
        roots = sorted({_root(r) for r in pool})
        with_fake = {_root(r) for r in pool if r["label"] == "FAKE"}
        if not with_fake or not {_root(r) for r in pool if r["label"] == "REAL"}:
            raise ValueError(f"nothing to test on: the test split has no {lacking} video and the train split has "
                             f"{len(pool)} published videos, not both REAL and FAKE ones to hold out")
        n = min(max(1, int(round(holdout * len(roots)))), max(1, len(roots) - 1) if same_dataset else len(roots))
        order = [roots[i] for i in np.random.default_rng(seed).permutation(len(roots))]
        chosen = order[:n]
        if not with_fake & set(chosen):  # at least one real video with a fake: a test set needs both labels
            chosen[-1] = next(x for x in order if x in with_fake)
        test = [r for r in pool if _root(r) in set(chosen)]
        if _labels(test) != set(_LABELS):
            raise ValueError(f"nothing to test on: the test split has no {lacking} video and the held-out train "
                             f"videos ({len(test)}) do not hold both REAL and FAKE ones; raise holdout")
        protocol = "holdout"
    tested = {_root(r) for r in test}
    train_ok = [r for r in train_rows if r.get("status") == "ok" and r.get("label") in _LABELS
                and r.get("split") == "train"]
    train = [r for r in train_ok if _root(r) not in tested]
    if need_train and _labels(train) != set(_LABELS):
        lacking = " and ".join(sorted(set(_LABELS) - _labels(train)))
        raise ValueError(f"nothing to train on: the training dataset's train split has no {lacking} video "
                         f"left ({len(train_ok)} published train videos, {len(train_ok) - len(train)} of them made "
                         "from tested real videos)")
    shared = len(_identities(train) & _identities(test)) if same_dataset else None
    return Selection(train=train, test=test, protocol=protocol, excluded=len(train_ok) - len(train),
                     shared_identities=shared)


def _index_rows(dataset: str, option: str) -> list[dict[str, Any]]:
    uri = join(dataset, "index.parquet")
    if not exists(uri) or not exists(join(dataset, "generate.json")):
        raise ValueError(f"{option} {dataset} is not a dataset made by dflray generate (no index.parquet or "
                         "generate.json)")
    fs, path = arrow_filesystem(uri)
    return read_table("dataset", [path], filesystem=fs, columns=_INDEX_COLUMNS).to_pylist()


# ------------------------------------------------------------------------------ weights


def _weights_file(uri: str) -> str:
    """A weights file as given, or the ``detector.pt`` of a checkpoint folder."""
    if exists(join(uri, DETECTOR_FILE)):
        return join(uri, DETECTOR_FILE)
    fs, path = fs_and_path(uri)
    if fs.isfile(path):
        return uri
    raise ConfigError("weights", f"{uri} is neither a weights file nor a folder holding {DETECTOR_FILE}")


def read_weights(uri: str) -> dict[str, Any]:
    """The state dict in a weights file, read safely (``torch.load(weights_only=True)``: tensors and plain data).

    Accepts a detector checkpoint (``detector.pt``, its ``model``), a dict holding a ``state_dict`` or
    ``model`` state dict, or a bare state dict (e.g. an EfficientNet-B0 ImageNet release).

    Raises:
        ValueError: when the file holds no state dict.
    """
    from dflray.artifacts.checkpoint import safe_load

    with open_uri(uri, "rb") as f:
        payload = safe_load(io.BytesIO(f.read()), uri, "a weights file (tensors and plain data)")
    if not isinstance(payload, dict):
        raise ValueError(f"{uri} holds a {type(payload).__name__}, not a state dict")
    for key in ("model", "state_dict"):
        if isinstance(payload.get(key), dict):
            return payload[key]
    return payload


def _load_detector(uri: str, size: int, need_head: bool) -> tuple[Any, list[str]]:
    """The detector with the weights of ``uri`` (the model and the names of its tensors the file left as
    initialised)."""
    from dflray.models.detector import adapt_state_dict, build_detector

    model = build_detector(size)
    fitted, missing = adapt_state_dict(model, read_weights(uri))
    if need_head and any(k.startswith("_fc.") for k in missing):
        raise ValueError(f"{uri} has no one-logit detector head (e.g. ImageNet weights): train it (epochs >= 1)")
    model.load_state_dict(fitted, strict=False)
    return model, missing


# ------------------------------------------------------------------------------ crops (one Ray task per video)


def crops_table(crops: VideoCrops, label: int) -> Any:
    """The cache table of one video's crops: ``video_id, frame_index, label`` (1 FAKE) and ``image`` (RGB PNG)."""
    import cv2
    import pyarrow as pa

    images = []
    for img in crops.images:
        ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError("PNG encoding failed")
        images.append(buf.tobytes())
    n = len(images)
    return pa.table({"video_id": pa.array([crops.video_id] * n, pa.string()),
                     "frame_index": pa.array(np.asarray(crops.frame_indices, np.int64), pa.int64()),
                     "label": pa.array([label] * n, pa.int8()),
                     "image": pa.array(images, pa.binary())})


def decode_crops(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A Ray Data batch of cached crops with ``image`` decoded: (N, S, S, 3) uint8 RGB; ``label`` as float32."""
    import cv2

    out = dict(batch)
    out["image"] = np.stack([cv2.cvtColor(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR),
                                          cv2.COLOR_BGR2RGB) for b in batch["image"]])
    if "label" in out:
        out["label"] = np.asarray(out["label"], np.float32)
    return out


@dataclass(frozen=True)
class CropTask(Task):
    """One video to crop into the cache.

    Attributes:
        dataset: its dataset root.
        row: its index row (``video_id``, ``path``, ``mask_path``, ``label``, ``split``, ``source_uri``).
        out: the cache file to write.
    """

    dataset: str = ""
    row: dict[str, Any] = field(default_factory=dict)
    out: str = ""


class CropWorker(TaskActor):
    """Crops one video (``video_crops``) and writes its cache file."""

    task_type = CropTask

    def __init__(self, frames: int, size: int):
        self.frames, self.size = frames, size

    def recorded(self, task: CropTask) -> TaskResult | None:
        return TaskResult(task.id, "ok") if exists(task.out) else None

    def run(self, task: CropTask) -> TaskResult:
        import pyarrow.parquet as pq

        crops = video_crops(task.dataset, task.row, frames=self.frames, size=self.size)
        if not len(crops.frame_indices):
            raise ValueError(f"video {task.id}: no face crop")
        buf = io.BytesIO()
        pq.write_table(crops_table(crops, _LABELS[task.row["label"]]), buf)
        with atomic_write(task.out) as f:
            f.write(buf.getvalue())
        return TaskResult(task.id, "ok")


def _crop_dir(dataset: str, cfg: EvaluateConfig) -> str:
    return join(work_of(dataset), "evaluate", f"crops-s{cfg.size}-f{cfg.frames}")


def _gather_crops(jobs: list[tuple[str, dict[str, Any]]], cfg: EvaluateConfig) -> tuple[dict[str, str], list[str]]:
    """Crops every (dataset, row) not cached yet, one Ray task per video.

    Returns:
        (video key ``dataset|video_id`` → its cache file, for the videos that have one; failures as
        ``"video_id: error"``).
    """
    files, todo = {}, []
    cached: dict[str, set[str]] = {}
    for dataset, row in jobs:
        folder = _crop_dir(dataset, cfg)
        if folder not in cached:
            cached[folder] = done_ids(folder, ".parquet")
        key, out = f"{dataset}|{row['video_id']}", join(folder, f"{row['video_id']}.parquet")
        if row["video_id"] in cached[folder]:
            files[key] = out
        else:
            keep = {k: row.get(k) for k in ("video_id", "path", "mask_path", "label", "split", "source_uri")}
            todo.append((key, CropTask(id=key, dataset=dataset, row=keep, out=out)))
    failed = []
    if todo:
        results = {r.id: r for r in run_tasks(CropWorker, [t for _, t in todo], cfg.crop_cpus,
                                              dict(frames=cfg.frames, size=cfg.size))}
        for key, task in todo:
            res = results.get(key)
            if res is not None and res.status == "ok":
                files[key] = task.out
            else:
                failed.append(f"{task.row['video_id']}: {res.error if res else 'no result'}")
    return files, sorted(failed)


def _count_crops(files: Iterable[str]) -> dict[int, int]:
    """label → crops in the cache files."""
    import pyarrow.parquet as pq

    counts = {0: 0, 1: 0}
    for uri in files:
        fs, path = arrow_filesystem(uri)
        t = pq.read_table(path, filesystem=fs, columns=["label"])
        for label, n in zip(*np.unique(t.column("label").to_numpy(), return_counts=True)):
            counts[int(label)] += int(n)
    return counts


def _read_dataset(files: list[str], columns: list[str]):
    import ray

    fs, _ = arrow_filesystem(files[0])
    return ray.data.read_parquet([fs_and_path(f)[1] for f in files], filesystem=fs).select_columns(columns)


# ------------------------------------------------------------------------------ training (Ray Train)


def _threads(cfg: EvaluateConfig) -> int:
    return cfg.torch_threads or max(1, int(np.ceil(cfg.cpus_per_worker)))


def _save_checkpoint(directory: str, payload: dict[str, Any], metrics: dict[str, Any]) -> None:
    import torch

    torch.save(payload, os.path.join(directory, DETECTOR_FILE))
    with open(os.path.join(directory, _META_FILE), "w") as f:
        json.dump({"epoch": payload["epoch"], "steps": payload["steps"], "arch": payload["arch"],
                   "config": payload["config"], "metrics": metrics}, f, indent=1)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point of the detector: ``config`` holds ``evaluate`` (EvaluateConfig as a dict),
    ``init`` (weights to start from, or None), ``pos_weight`` and ``batch_size`` (per worker)."""
    import ray.train
    import ray.train.torch
    import torch

    from dflray.models.detector import DetectorTrainer, adapt_state_dict, build_detector, recalibrate_batchnorm

    cfg = from_dict(EvaluateConfig, config["evaluate"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(_threads(cfg))
    torch.manual_seed(cfg.seed)  # every rank starts from the same weights (DDP also broadcasts rank 0's)
    model = build_detector(cfg.size)
    resumed = ray.train.get_checkpoint()
    payload = None
    if resumed is not None:
        with resumed.as_directory() as d:
            payload = torch.load(os.path.join(d, DETECTOR_FILE), map_location="cpu", weights_only=True)
    elif config.get("init"):
        fitted, _ = adapt_state_dict(model, read_weights(config["init"]))
        model.load_state_dict(fitted, strict=False)
    model = ray.train.torch.prepare_model(model)
    t = DetectorTrainer(model, device, lr=cfg.lr, weight_decay=cfg.weight_decay, pos_weight=config.get("pos_weight"),
                        generator=torch.Generator().manual_seed(cfg.seed + 1000 * rank))
    if payload is not None:
        t.load(payload)
    shard = ray.train.get_dataset_shard("train")
    batch_size = int(config["batch_size"])
    while t.epoch < cfg.epochs:
        t0 = time.perf_counter()
        losses, accs = [], []
        for batch in shard.iter_torch_batches(batch_size=batch_size, drop_last=True,
                                              local_shuffle_buffer_size=4 * batch_size,
                                              local_shuffle_seed=cfg.seed + t.epoch,
                                              dtypes={"image": torch.uint8, "label": torch.float32}):
            m = t.train_step(batch["image"], batch["label"])
            losses.append(m["loss"])
            accs.append(m["accuracy"])
        if not losses:
            raise RuntimeError(f"rank {rank} got no full batch of {batch_size} crops")
        t.epoch += 1
        metrics = {"epoch": t.epoch, "loss": float(np.mean(losses)), "accuracy": float(np.mean(accs)),
                   "steps": t.steps, "epoch_s": time.perf_counter() - t0}
        if t.epoch == cfg.epochs:
            # The scoring runs in eval mode: its BatchNorm statistics must be the data's (precise BN), not the
            # running averages of a short training. Every rank passes over its shard (the split needs all).
            metrics["bn_batches"] = recalibrate_batchnorm(
                t.model, (b["image"] for b in shard.iter_torch_batches(batch_size=batch_size,
                                                                        dtypes={"image": torch.uint8,
                                                                                "label": torch.float32})), device)
        if rank == 0:
            print(f"[dflray evaluate] epoch {t.epoch}/{cfg.epochs} loss {metrics['loss']:.4f} "
                  f"accuracy {metrics['accuracy']:.3f} ({metrics['epoch_s']:.1f} s)", flush=True)
            with tempfile.TemporaryDirectory(prefix="dflray-detector-") as d:
                _save_checkpoint(d, t.payload(config["evaluate"]), metrics)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                                 checkpoint_dir_name=f"checkpoint_{t.epoch:04d}")
        else:
            ray.train.report(metrics)


def _run_key(cfg: EvaluateConfig, train_dataset: str, videos: list[str]) -> str:
    """What shapes the trained detector: a rerun with the same key resumes or reuses its checkpoints."""
    keep = ("size", "frames", "epochs", "batch_size", "lr", "weight_decay", "weights", "balance", "seed",
            "num_workers")
    doc = {"dataset": train_dataset, "videos": sorted(videos), **{k: getattr(cfg, k) for k in keep}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _finished_checkpoint(run: str, epochs: int) -> str | None:
    """The checkpoint folder of epoch ``epochs`` under a detector run, if it was written completely."""
    d = join(run, "run", f"checkpoint_{epochs:04d}")
    return d if exists(join(d, _META_FILE)) and exists(join(d, DETECTOR_FILE)) else None


def _check_cluster(cfg: EvaluateConfig) -> None:
    """Rejects a worker group the cluster cannot hold beside the data pipeline, before any work."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    if cfg.epochs and cpus - cfg.num_workers * cfg.cpus_per_worker < 1:
        raise ConfigError("cpus_per_worker", f"{cfg.num_workers} workers x {cfg.cpus_per_worker:g} CPUs leave less "
                          f"than the 1 CPU of the cluster's {cpus:g} that the crops' read tasks need")
    gpus = ray.cluster_resources().get("GPU", 0)
    if cfg.use_gpu and gpus < (cfg.num_workers if cfg.epochs else 1):
        raise ConfigError("use_gpu", f"{cfg.num_workers} GPU workers asked for, the cluster has {gpus:g} GPUs")


def _train(cfg: EvaluateConfig, train_dataset: str, files: dict[str, str], init: str | None) -> str:
    """Trains the detector on the cached crops (or reuses a finished run); returns its ``detector.pt``."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    run = join(work_of(train_dataset), "evaluate", f"detector-{_run_key(cfg, train_dataset, sorted(files))}")
    done = _finished_checkpoint(run, cfg.epochs)
    if done is not None:
        log.info("detector already trained: %s", done)
        return join(done, DETECTOR_FILE)
    counts = _count_crops(files.values())
    per_worker = sum(counts.values()) // cfg.num_workers
    batch_size = min(cfg.batch_size, per_worker)
    if batch_size < 2:
        raise ValueError(f"{sum(counts.values())} training crops are too few for {cfg.num_workers} workers")
    pos_weight = counts[0] / counts[1] if cfg.balance and counts[1] else None
    storage_fs, storage_path = arrow_filesystem(run) if "://" in run else (None, run)
    loop_config = {"evaluate": to_dict(cfg), "init": init, "pos_weight": pos_weight, "batch_size": batch_size}
    train_ds = _read_dataset(list(files.values()), ["image", "label"]).map_batches(decode_crops,
                                                                                  batch_format="numpy")
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker,
                                                           **({"GPU": 1} if cfg.use_gpu else {})}),
        run_config=RunConfig(name="run", storage_path=storage_path, storage_filesystem=storage_fs,
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets={"train": train_ds})
    log.info("training the detector: %d real and %d fake crops, batch %d per worker, %d epochs → %s",
             counts[0], counts[1], batch_size, cfg.epochs, run)
    trainer.fit()
    done = _finished_checkpoint(run, cfg.epochs)
    if done is None:
        raise RuntimeError(f"detector training ended without its epoch-{cfg.epochs} checkpoint under {run}")
    return join(done, DETECTOR_FILE)


# ------------------------------------------------------------------------------ scoring (Ray Data)


class _Scorer:
    """Ray Data actor: loads the detector once, scores batches of cached crops."""

    def __init__(self, detector: str, size: int, use_gpu: bool, threads: int):
        import torch

        if not use_gpu:
            torch.set_num_threads(threads)
        self.device = torch.device("cuda" if use_gpu else "cpu")
        self.model, _ = _load_detector(detector, size, need_head=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from dflray.models.detector import predict

        images = decode_crops({"image": batch["image"]})["image"]
        return {"video_id": batch["video_id"], "frame_index": batch["frame_index"],
                "score": predict(self.model, images, self.device, batch_size=len(images))}


def _score(cfg: EvaluateConfig, files: list[str], detector: str) -> dict[str, np.ndarray]:
    """video_id → the FAKE probability of each of its crops (in frame order)."""
    import ray
    from ray.data import ActorPoolStrategy

    cpus = ray.cluster_resources().get("CPU", 1)
    actors = 1 if cfg.use_gpu else max(1, min(len(files), int(cpus // cfg.cpus_per_worker) - 1 or 1))
    ds = _read_dataset(files, ["video_id", "frame_index", "image"]).map_batches(
        _Scorer, batch_size=cfg.batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=actors),
        num_cpus=cfg.cpus_per_worker, num_gpus=1 if cfg.use_gpu else None,
        fn_constructor_kwargs=dict(detector=detector, size=cfg.size, use_gpu=cfg.use_gpu, threads=_threads(cfg)))
    parts: dict[str, list[tuple[int, float]]] = {}
    for b in ds.iter_batches(batch_format="numpy", batch_size=None):
        for v, f, s in zip(b["video_id"].tolist(), b["frame_index"].tolist(), b["score"].tolist()):
            parts.setdefault(str(v), []).append((int(f), float(s)))
    return {v: np.array([s for _, s in sorted(p)], np.float64) for v, p in parts.items()}


# ------------------------------------------------------------------------------ the job



def _results(rows: list[dict[str, Any]], scores: dict[str, np.ndarray], cfg: EvaluateConfig) -> list[dict[str, Any]]:
    from dflray.quality.detection import VideoResult, breakdown

    videos = []
    for r in rows:
        s = scores.get(r["video_id"])
        if s is None or not len(s):
            continue
        ss = r.get("swap_success")
        videos.append(VideoResult(
            video_id=r["video_id"], label=_LABELS[r["label"]], frame_scores=s,
            method=r.get("method") if r["label"] == "FAKE" else None, compression=r.get("compression"),
            perturbations=tuple(perturbation_kinds(r.get("perturbation"))),
            swap_success=None if ss is None or not np.isfinite(ss) else float(ss)))
    return breakdown(videos, n_boot=cfg.bootstrap, confidence=cfg.confidence, seed=cfg.seed)


def run_evaluate(dataset: str, cfg: EvaluateConfig, *, train_dataset: str | None = None, address: str | None = None,
                 report: bool = True) -> EvaluateSummary:
    """Trains the reference detector and reports how hard each slice of ``dataset`` is for it.

    Args:
        dataset: the generated dataset to test on (any fsspec URL); ``evaluation.parquet`` and the report
            section are written into it.
        cfg: the validated options.
        train_dataset: train on this generated dataset's train split instead (cross-dataset evaluation).
        address: Ray address (None: RAY_ADDRESS, or a local cluster).
        report: also rebuild ``dataset/report.html`` with its Evaluation section.

    Raises:
        ConfigError / ValueError: for bad options, unusable weights, or a dataset with nothing to train or
            test on, before any work.

    Example:
        >>> print(run_evaluate("out/dataset", EvaluateConfig(), train_dataset="out/other"))  # doctest: +SKIP
    """
    from dflray.runtime import init_ray

    t0 = time.perf_counter()
    dataset = normalize_uri(dataset)
    train_dataset = normalize_uri(train_dataset) if train_dataset else dataset
    same = train_dataset.rstrip("/") == dataset.rstrip("/")
    test_rows = _index_rows(dataset, "DATASET")
    train_rows = test_rows if same else _index_rows(train_dataset, "--train-dataset")
    sel = select_videos(test_rows, train_rows, holdout=cfg.holdout, seed=cfg.seed, same_dataset=same,
                        need_train=cfg.epochs > 0)
    work_of(dataset), work_of(train_dataset)  # the faceset's location must be readable before any work
    init = None
    if cfg.weights:
        init = _weights_file(cfg.weights)
        try:
            _load_detector(init, cfg.size, need_head=cfg.epochs == 0)
        except Exception as e:  # noqa: BLE001 - whatever the file is, the user's option is at fault
            raise ConfigError("weights", f"{init}: {e}") from e
    summary = EvaluateSummary(dataset=dataset, train_dataset=train_dataset, protocol=sel.protocol,
                              epochs=cfg.epochs, shared_identities=sel.shared_identities,
                              out=join(dataset, "evaluation.parquet"))
    if sel.protocol == "holdout":
        summary.note = (f"the test split lacked REAL or FAKE videos: {len(sel.test)} videos of the train split held "
                        f"out (holdout={cfg.holdout:g}, seed {cfg.seed}), not identity-disjoint")
    if sel.shared_identities:
        summary.note += ("; " if summary.note else "") + f"{sel.shared_identities} identities in train and test"
    if sel.excluded and not same:
        summary.note += (("; " if summary.note else "") + f"{sel.excluded} videos of the training dataset left out: "
                         "made from real videos that are tested")
    timed = stage_clock(summary.stage_seconds, log)

    init_ray(address)
    _check_cluster(cfg)
    with timed("crops"):
        jobs = [(train_dataset, r) for r in sel.train] if cfg.epochs else []
        jobs += [(dataset, r) for r in sel.test]
        files, failed = _gather_crops(jobs, cfg)
    summary.failed = failed
    train_files = {f"{train_dataset}|{r['video_id']}": files[f"{train_dataset}|{r['video_id']}"]
                   for r in sel.train if f"{train_dataset}|{r['video_id']}" in files} if cfg.epochs else {}
    test_ok = [r for r in sel.test if f"{dataset}|{r['video_id']}" in files]
    if _labels(test_ok) != set(_LABELS):
        raise ValueError(f"nothing to test on: of {len(sel.test)} test videos, {len(test_ok)} have face crops and "
                         f"not both REAL and FAKE ones ({'; '.join(failed[:3])})")
    if cfg.epochs:
        train_labels = {r["label"] for r in sel.train if f"{train_dataset}|{r['video_id']}" in train_files}
        if train_labels != set(_LABELS):
            raise ValueError(f"nothing to train on: {len(train_files)} of {len(sel.train)} training videos have "
                             f"face crops and not both REAL and FAKE ones ({'; '.join(failed[:3])})")
    summary.train_videos = len(train_files)

    with timed("train"):
        detector = _train(cfg, train_dataset, train_files, init) if cfg.epochs else init
    summary.detector_uri = detector or ""
    with timed("score"):
        scores = _score(cfg, [files[f"{dataset}|{r['video_id']}"] for r in test_ok], detector)
    with timed("results"):
        rows = _results(test_ok, scores, cfg)
        summary.test_videos = sum(1 for r in test_ok if r["video_id"] in scores)
        run = {"protocol": sel.protocol, "dataset": dataset, "train_dataset": train_dataset,
               "detector": "efficientnet-b0", "detector_uri": detector, "detector_sha256": sha256_file(detector),
               "init_weights": init, "epochs": cfg.epochs, "size": cfg.size, "frames": cfg.frames,
               "train_videos": summary.train_videos, "test_videos": summary.test_videos,
               "failed_videos": len(sel.test) - summary.test_videos, "shared_identities": sel.shared_identities,
               "bootstrap": cfg.bootstrap, "confidence": cfg.confidence, "seed": cfg.seed,
               "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        summary.rows = [{**r, **run} for r in rows]
        _write_parquet(summary.out, table_from_rows("evaluation", summary.rows))
    if report:
        from dflray.dataset.report import build_report

        with timed("report"):
            summary.report = join(dataset, "report.html")
            build_report(dataset, summary.report)
    summary.seconds = time.perf_counter() - t0
    log.info("%s", summary)
    return summary


def _write_parquet(uri: str, table: Any) -> None:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf)
    with atomic_write(uri) as f:
        f.write(buf.getvalue())

