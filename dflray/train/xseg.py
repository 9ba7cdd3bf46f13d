"""``dflray xseg train``: the XSeg segmentation model on Ray Train (the autoencoder's machinery).

Data: the facesets' crops as stored (their face type), a Ray Data pipeline that decodes them and makes
samples in CPU tasks: a face with a user label (``xseg_label``) trains on it, with geometric
augmentation; a face without one trains self-supervised (``dflray.train.occlusion``): synthetic
occluders over its landmark hull, the target being the hull minus the occluders. Workers: a
``TorchTrainer`` (DDP, gloo on CPU, NCCL on GPUs) running dice + BCE; checkpoints every
``checkpoint_every`` steps through ``ray.train.report``, a rerun continues from the newest. The result is
``OUT/xseg.pt`` (``dflray.models.xseg`` format, loaded with ``weights_only=True``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from dflray.config import ConfigError, XSegTrainConfig, from_dict, to_dict
from dflray.io.storage import atomic_write, exists, join, makedirs, open_uri

log = logging.getLogger("dflray.xseg")

RUN_NAME = "run"
MODEL_FILE = "xseg.pt"
_COLUMNS = ["image", "mask", "xseg_label", "face_type"]
MIN_EPOCH_SAMPLES = 1024


@dataclass
class XSegTrainSummary:
    out: str
    faces: int = 0
    labelled: int = 0
    steps: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    seconds: float = 0.0

    def __str__(self) -> str:
        loss = self.metrics.get("loss")
        return (f"xseg train → {self.model}: {self.faces} faces ({self.labelled} labelled, the rest self-supervised), "
                f"{self.steps} steps, loss {loss if loss is None else round(float(loss), 4)}, "
                f"batch IoU {self.metrics.get('iou', float('nan')):.3f}, {self.seconds:.1f} s")


def _decode(data: bytes, flags: int) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if img is None:
        raise ValueError("undecodable image in the faceset")
    return img


def make_samples(batch: dict[str, np.ndarray], *, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """Ray Data batch of faces rows → XSeg samples ``x`` (N×3×R×R) and ``y`` (N×1×R×R), float32."""
    from dflray.train.occlusion import make_xseg_batch

    c = from_dict(XSegTrainConfig, cfg)
    rng = np.random.default_rng()  # fresh entropy per batch: every epoch sees new occlusions
    crops = [np.ascontiguousarray(_decode(b, cv2.IMREAD_COLOR)[..., ::-1]) for b in batch["image"]]
    labels = batch["xseg_label"]
    # Ray Data may hand a null binary as None or as empty bytes
    has = [isinstance(v, (bytes, bytearray, np.bytes_)) and len(v) > 0 for v in labels]
    labelled = [i for i in range(len(crops)) if has[i]]
    plain = [i for i in range(len(crops)) if not has[i]]
    xs, ys = [], []
    common = dict(augment=c.augment, max_occluders=c.max_occluders, coverage=tuple(c.coverage))
    if labelled:  # the user's label already says what is visible: no synthetic occluder
        x, y = make_xseg_batch([crops[i] for i in labelled],
                               [_decode(labels[i], cv2.IMREAD_GRAYSCALE) for i in labelled], rng, c.resolution,
                               pool=crops, p_none=1.0, **common)
        xs.append(x)
        ys.append(y)
    if plain and c.self_supervised:
        x, y = make_xseg_batch([crops[i] for i in plain], [_decode(batch["mask"][i], cv2.IMREAD_GRAYSCALE) for i in plain],
                               rng, c.resolution, pool=crops, p_none=c.p_none, **common)
        xs.append(x)
        ys.append(y)
    if not xs:
        r = c.resolution
        return {"x": np.zeros((0, 3, r, r), np.float32), "y": np.zeros((0, 1, r, r), np.float32)}
    return {"x": np.concatenate(xs), "y": np.concatenate(ys)}


def _count(facesets: list[str]) -> tuple[int, int, str, int]:
    """(faces, labelled faces, face type, crop size) of the facesets; they must agree on the face type."""
    from dflray.faceset import read_faces

    faces = labelled = 0
    types: set[str] = set()
    sizes: set[int] = set()
    for fs in facesets:
        if not exists(join(fs, "faces")):
            raise ConfigError("FACESET", f"{fs} is not a faceset (no faces/ folder)")
        t = read_faces(fs, columns=["face_type", "size", "xseg_label", "mask"])
        faces += t.num_rows
        labelled += t.num_rows - t.column("xseg_label").null_count
        types |= set(t.column("face_type").to_pylist())
        sizes |= set(t.column("size").to_pylist())
    if faces == 0:
        raise ConfigError("FACESET", f"{facesets} hold no faces")
    if len(types) > 1:
        raise ConfigError("FACESET", f"the facesets mix face types {sorted(types)}; XSeg learns one")
    return faces, labelled, types.pop(), max(sizes)


def build_dataset(facesets: list[str], cfg: XSegTrainConfig, faces: int):
    """The Ray Data pipeline of XSeg samples over the facesets (re-executed and reshuffled every epoch)."""
    import ray

    from dflray.faceset import committed_face_files
    from dflray.io.storage import arrow_filesystem

    parts = []
    for f in facesets:
        fs, _ = arrow_filesystem(f)
        parts.append(ray.data.read_parquet(committed_face_files(f), filesystem=fs).select_columns(_COLUMNS))
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    times = max(1, -(-MIN_EPOCH_SAMPLES // faces))
    if times > 1:
        ds = ds.flat_map(lambda row: [row] * times, num_cpus=cfg.data_cpus)
    ds = ds.random_shuffle()
    return ds.map_batches(make_samples, batch_size=cfg.batch_size, num_cpus=cfg.data_cpus, batch_format="numpy",
                          fn_kwargs={"cfg": to_dict(cfg)})


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: ``xseg`` (XSegTrainConfig as a dict), ``face_type``."""
    import ray.train
    import ray.train.torch

    from dflray.models.xseg import XSeg, dice_bce_loss, iou

    cfg = from_dict(XSegTrainConfig, config["xseg"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(cfg.torch_threads or max(1, int(np.ceil(cfg.cpus_per_worker))))
    torch.manual_seed(cfg.seed)
    model = XSeg(cfg.resolution, cfg.base, cfg.depth, config["face_type"]).to(device)
    opt_cls = torch.optim.RMSprop if cfg.optimizer == "rmsprop" else torch.optim.Adam
    step = 0
    resumed = ray.train.get_checkpoint()
    state = None
    if resumed is not None:
        with resumed.as_directory() as d:
            state = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        step = int(state["step"])
    model = ray.train.torch.prepare_model(model)
    opt = opt_cls(model.parameters(), lr=cfg.lr)
    if state is not None:
        opt.load_state_dict(state["optimizer"])
    shard = ray.train.get_dataset_shard("train")
    t0, losses, ious = time.perf_counter(), [], []
    while step < cfg.steps:
        for batch in shard.iter_torch_batches(batch_size=cfg.batch_size, drop_last=True, device=device):
            x, y = batch["x"].float(), batch["y"].float()
            logits = model(x)
            loss = dice_bce_loss(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            ious.append(iou(torch.sigmoid(logits.detach()).cpu(), y.cpu()))
            last = step >= cfg.steps
            if step % cfg.log_every == 0 or step % cfg.checkpoint_every == 0 or last:
                metrics = {"step": step, "loss": float(np.mean(losses)), "iou": float(np.mean(ious)),
                           "samples_per_s": len(losses) * cfg.batch_size / (time.perf_counter() - t0)}
                if rank == 0:
                    print(f"[dflray xseg] step {step}/{cfg.steps} loss {metrics['loss']:.4f} "
                          f"IoU {metrics['iou']:.3f}", flush=True)
                t0, losses, ious = time.perf_counter(), [], []
                if step % cfg.checkpoint_every == 0 or last:
                    _report_checkpoint(metrics, model, opt, step, config["face_type"], rank)
                else:
                    ray.train.report(metrics)
            if last:
                break


def _report_checkpoint(metrics, model, opt, step: int, face_type: str, rank: int) -> None:
    import ray.train

    from dflray.models.xseg import xseg_state

    if rank != 0:
        ray.train.report(metrics)
        return
    inner = model.module if hasattr(model, "module") else model
    with tempfile.TemporaryDirectory(prefix="dflray-xseg-") as d:
        torch.save({"model": inner.state_dict(), "optimizer": opt.state_dict(), "step": step}, os.path.join(d, "state.pt"))
        torch.save(xseg_state(inner), os.path.join(d, MODEL_FILE))
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump({"step": step, "face_type": face_type, **metrics}, f)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                         checkpoint_dir_name=f"checkpoint_{step:08d}")


def latest_xseg_checkpoint(out: str) -> str | None:
    """The newest complete checkpoint folder of an ``xseg train`` output, or None."""
    from dflray.io.storage import fs_and_path

    base = join(out, RUN_NAME)
    fs, path = fs_and_path(base)
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return None
    best = None
    for info in fs.ls(path, detail=True):
        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if info["type"] == "directory" and name.startswith("checkpoint_") and exists(join(base, name, "meta.json")):
            best = max(best or name, name)
    return join(base, best) if best else None


def run_xseg_train(facesets: list[str], out: str, cfg: XSegTrainConfig, address: str | None = None) -> XSegTrainSummary:
    """Trains XSeg on one or more facesets (same face type) with Ray Train; writes ``OUT/xseg.pt``.

    Raises:
        ConfigError: for missing or mixed facesets or too few CPUs, before any worker starts.

    Example:
        >>> run_xseg_train(["facesets/a"], "runs/xseg", XSegTrainConfig(steps=3000))  # doctest: +SKIP
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from dflray.io.storage import arrow_filesystem
    from dflray.runtime import init_ray

    t0 = time.perf_counter()
    facesets = [f if "://" in f else os.path.abspath(f) for f in facesets]
    out = out if "://" in out else os.path.abspath(out)
    faces, labelled, face_type, _ = _count(facesets)
    if labelled == 0 and not cfg.self_supervised:
        raise ConfigError("self_supervised", "no face has an XSeg label: train self-supervised or label faces")
    init_ray(address)
    cpus = ray.cluster_resources().get("CPU", 0)
    if cpus - cfg.num_workers * cfg.cpus_per_worker < max(1.0, cfg.data_cpus):
        raise ConfigError("cpus_per_worker", f"{cfg.num_workers} workers x {cfg.cpus_per_worker:g} CPUs leave too "
                          f"little of the cluster's {cpus:g} CPUs for the data pipeline (at least 1)")
    makedirs(out)
    with atomic_write(join(out, "xseg_config.json")) as f:
        f.write(json.dumps({"facesets": facesets, "face_type": face_type, "config": to_dict(cfg)}, indent=1,
                           default=str).encode())
    storage_fs, storage_path = arrow_filesystem(out) if "://" in out else (None, out)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"xseg": to_dict(cfg), "face_type": face_type},
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                                     resources_per_worker={"CPU": cfg.cpus_per_worker,
                                                           **({"GPU": 1} if cfg.use_gpu else {})}),
        run_config=RunConfig(name=RUN_NAME, storage_path=storage_path, storage_filesystem=storage_fs,
                             failure_config=FailureConfig(max_failures=cfg.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)),
        datasets={"train": build_dataset(facesets, cfg, faces)},
    )
    result = trainer.fit()
    ckpt = latest_xseg_checkpoint(out)
    if ckpt is None:
        raise RuntimeError(f"xseg train: no checkpoint in {out}")
    with open_uri(join(ckpt, MODEL_FILE)) as src, atomic_write(join(out, MODEL_FILE)) as dst:
        dst.write(src.read())
    with open_uri(join(ckpt, "meta.json")) as f:
        meta = json.load(f)
    summary = XSegTrainSummary(out=out, faces=faces, labelled=labelled, steps=int(meta["step"]),
                               metrics=dict(result.metrics or meta), model=join(out, MODEL_FILE),
                               seconds=time.perf_counter() - t0)
    log.info("%s", summary)
    return summary
