"""Driver side of ``dflray train``: check inputs, build the datasets, run a ``TorchTrainer``.

Layout of a training output ``OUT`` (any fsspec URL):

    OUT/train_config.yaml         the effective config of the latest start
    OUT/run/checkpoint_<step>/    Ray Train checkpoints: model.pt (+ meta.json)
    OUT/preview.png, OUT/previews/preview_<step>.png, OUT/loss.png

Re-running with the same ``OUT`` continues from the newest checkpoint (Ray Train restores its run state
from ``OUT/run``); ``resume=True`` insists that one exists.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import yaml

from dflray.artifacts.checkpoint import RUN_NAME, latest_checkpoint, read_meta
from dflray.config import ConfigError, ModelConfig, TrainConfig, to_dict
from dflray.io.storage import arrow_filesystem, atomic_write, join, makedirs, normalize_uri

log = logging.getLogger("dflray.train")


@dataclasses.dataclass
class TrainSummary:
    """What a training run did."""

    out: str
    steps: int = 0
    started_at: int = 0
    checkpoint: str | None = None
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0

    def __str__(self) -> str:
        m = self.metrics
        return (f"train → {self.out}: step {self.started_at} → {self.steps}, "
                f"src loss {m.get('src_loss', float('nan')):.4f}, dst loss {m.get('dst_loss', float('nan')):.4f}, "
                f"{m.get('skipped_steps', 0)} skipped steps, {m.get('rollbacks', 0)} rollbacks, "
                f"{self.seconds:.1f} s; checkpoint {self.checkpoint}")


def _check_resume(out: str, cfg: TrainConfig, resume: bool) -> int:
    """Step the run will start at; rejects a resume whose model differs from the config."""
    ckpt = latest_checkpoint(join(out, RUN_NAME))
    if ckpt is None:
        if resume:
            raise ConfigError("resume", f"no checkpoint to resume from in {out}")
        return 0
    meta = read_meta(ckpt) or {}
    saved = meta.get("model_config")
    if saved is not None and saved != to_dict(cfg.model):
        diff = sorted(k for k in saved if saved.get(k) != to_dict(cfg.model).get(k))
        raise ConfigError("model", f"{out} holds a checkpoint of a different model (differs in {', '.join(diff)}); "
                          "use another --out or the same model options")
    return int(meta.get("step", 0))


def _check_init_from(uri: str, cfg: TrainConfig) -> None:
    meta = read_meta(uri.rsplit("/", 1)[0] if uri.endswith(".pt") else uri)
    if meta is None:
        raise ConfigError("init_from", f"{uri} is not a dflray training checkpoint (no meta.json)")
    if ModelConfig(**meta["model_config"]) != cfg.model:
        raise ConfigError("init_from", f"{uri} was trained with a different model config")



def run_train(src: str, dst: str | None, out: str, cfg: TrainConfig, resume: bool = False,
              address: str | None = None) -> TrainSummary:
    """Trains a DF/LIAE model on a src and a dst faceset with Ray Train.

    Args:
        src: src faceset URI (the identity that is put onto dst).
        dst: dst faceset URI (None in pretrain mode: src is used for both).
        out: training output URI.
        cfg: the training config (``cfg.effective`` is what trains).
        resume: require an existing checkpoint in ``out`` (a rerun continues from one anyway).
        address: Ray address (None: RAY_ADDRESS, or a local cluster).

    Raises:
        ConfigError: on bad inputs, before any worker starts.

    Example:
        >>> run_train("facesets/a", "facesets/b", "runs/ab", TrainConfig(steps=2000))  # doctest: +SKIP
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from dflray.runtime import init_ray
    from dflray.train.data import check_inputs, ct_references, draws_in_worker, inspect_faceset
    from dflray.train.dataset import build_dataset
    from dflray.train.loop import nan_steps_from_env, train_loop_per_worker

    t0 = time.perf_counter()
    src, out = normalize_uri(src), normalize_uri(out)
    dst = normalize_uri(dst) if dst else None
    if dst is None:
        if not cfg.pretrain:
            raise ConfigError("dst", "a dst faceset is required (or pretrain=true)")
        dst = src
    eff = cfg.effective
    # The src hold-out (faces never trained on, for the SSIM check); in pretraining dst is src, so it
    # leaves out the same faces.
    src_info = inspect_faceset(src, "src", eff.holdout)
    dst_info = inspect_faceset(dst, "dst", eff.holdout if dst == src else 0.0)
    check_inputs(eff, src_info, dst_info)
    if cfg.init_from:
        _check_init_from(cfg.init_from, eff)
    started_at = _check_resume(out, eff, resume)
    steps_left = eff.steps - started_at
    in_worker = draws_in_worker(eff, max(src_info.faces, dst_info.faces), steps_left)

    init_ray(address)
    cpus = ray.cluster_resources().get("CPU", 0)
    left = cpus - eff.num_workers * eff.cpus_per_worker
    # Ray Data's file listing and Parquet read tasks take 1 CPU each (none runs when workers draw their own)
    need = 0.0 if in_worker else max(1.0, eff.augment_cpus)
    if left < need:
        raise ConfigError("cpus_per_worker", f"{eff.num_workers} workers x {eff.cpus_per_worker:g} CPUs leave "
                          f"{left:g} of the cluster's {cpus:g} CPUs for the data pipeline, which needs {need:g} "
                          "(its Parquet read tasks take 1 CPU; augmentation tasks augment_cpus)")

    makedirs(out)
    with atomic_write(join(out, "train_config.yaml")) as f:
        f.write(yaml.safe_dump({"src": src, "dst": dst, "config": to_dict(eff)}, sort_keys=False).encode())

    storage_fs, storage_path = arrow_filesystem(out) if "://" in out else (None, out)
    loop_config = {"train": to_dict(eff), "out": out, "src": src, "dst": dst, "init_from": cfg.init_from}
    ct_refs = ct_references(dst_info, eff)
    datasets = None
    if in_worker:  # each worker draws its own batches (dflray.train.loop._seeded_batches, _drawn_batches)
        loop_config.update(ct_refs=ct_refs, holdout={"src": eff.holdout, "dst": eff.holdout if dst == src else 0.0},
                           in_worker=True)
        log.info("train: samples drawn in the workers (%s)", "deterministic" if eff.deterministic else
                 f"data={eff.data}: {steps_left} steps of {eff.batch_size}")
    else:
        # What the steps left take from each faceset: a short run (a fine-tune of a few steps) shuffles
        # no more than that before its first batch, not MIN_EPOCH_SAMPLES.
        needed = max(1, steps_left) * eff.batch_size * eff.num_workers
        datasets = {"src": build_dataset(src_info, eff, "src", ct_refs, needed),
                    "dst": build_dataset(dst_info, eff, "dst", needed=needed)}
    if nan_steps := nan_steps_from_env():  # test-only fault injection (see dflray.train.loop)
        loop_config["_inject_nan_steps"] = nan_steps
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=eff.num_workers, use_gpu=eff.use_gpu,
                                     resources_per_worker={"CPU": eff.cpus_per_worker,
                                                           **({"GPU": 1} if eff.use_gpu else {})}),
        run_config=RunConfig(name=RUN_NAME, storage_path=storage_path, storage_filesystem=storage_fs,
                             failure_config=FailureConfig(max_failures=eff.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=eff.keep_checkpoints)),
        datasets=datasets,
    )
    result = trainer.fit()
    summary = TrainSummary(out=out, started_at=started_at, metrics=dict(result.metrics or {}),
                           seconds=time.perf_counter() - t0)
    summary.checkpoint = latest_checkpoint(join(out, RUN_NAME))
    meta = read_meta(summary.checkpoint) if summary.checkpoint else None
    summary.steps = int(meta["step"]) if meta else started_at
    log.info("%s", summary)
    return summary
