"""The Ray Train worker loop: ``train_loop_per_worker`` for DF/LIAE on DDP.

Ray Train's canonical shape: dataset shards from ``get_dataset_shard``, the model through
``prepare_model`` (DDP: gradients all-reduced in backward, so every rank applies the same update), a
checkpoint dict ``{model, optimizer, model config, step, run config}`` reported with
``ray.train.report``, and a resume from ``ray.train.get_checkpoint()``.

Collapse guard: after backward (gradients already all-reduced, so every rank sees the same values) a
step whose loss or gradients are not finite is skipped on every rank and counted; more than
``max_bad_steps`` in a row roll the run back to its last checkpoint (kept in memory), also counted.

Test-only fault injection of the collapse guard (not a user option; never set it in production): the
environment variable ``DFLRAY_TEST_INJECT_NAN_STEPS`` lists steps, comma-separated (``"4"``, ``"3,3"``);
one attempt at each listed step gets a NaN loss on rank 0 (list a step twice to fail it twice in a row).
``run_train`` reads it in the driver (``nan_steps_from_env``) and hands the steps to the workers in the
loop config (private key ``_inject_nan_steps``): a Ray cluster started before the variable was set
would not pass it on to its workers.
"""

from __future__ import annotations

import copy
import tempfile
import time
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from dflray.artifacts.checkpoint import load_payload, save_payload
from dflray.config import TrainConfig, from_dict
from dflray.io.storage import atomic_write, join
from dflray.train.data import heldout_samples
from dflray.train.step import SwapTrainer, join_batch, param_checksum, unwrap


def _gather_checksums(module: torch.nn.Module) -> list[str]:
    mine = param_checksum(module)
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [mine]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out


def _batches(name: str, batch_size: int, device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """Endless batches of one dataset shard; each pass over it is a new, reshuffled, re-augmented epoch."""
    import ray.train

    shard = ray.train.get_dataset_shard(name)
    while True:
        seen = 0
        for batch in shard.iter_torch_batches(batch_size=batch_size, drop_last=True, device=device,
                                              dtypes=torch.float32):
            seen += 1
            yield batch
        if not seen:
            raise RuntimeError(f"the {name} shard of this worker yielded no full batch of {batch_size}")


_ROLES = {"src": 0, "dst": 1}


def _worker_samples(config: dict[str, Any], cfg: TrainConfig, role: str):
    """One faceset read whole into this worker, the hold-out left out (``FacesetSamples``), for the batches
    a worker draws itself."""
    from dflray.train.local import FacesetSamples

    return FacesetSamples(config[role], cfg, role, ct_refs=config.get("ct_refs") if role == "src" else None,
                          holdout=config["holdout"][role], seed=cfg.seed)


def _seeded_batches(config: dict[str, Any], cfg: TrainConfig, role: str, rank: int, t: SwapTrainer,
                    device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """``deterministic`` training's batches: the faceset read whole into this worker (hold-out left out),
    each batch drawn when it is needed with a generator seeded by ``(seed, role, rank, step, skipped)``
    of the step about to be taken. So step ``s`` trains on the same samples whether the run got there
    uninterrupted or resumed from a checkpoint (the skip count, in the checkpoint too, gives a step
    retried after a non-finite one other samples)."""
    samples = _worker_samples(config, cfg, role)
    while True:
        rng = np.random.default_rng([cfg.seed, _ROLES[role], rank, t.step + 1, t.skipped])
        yield {k: torch.from_numpy(v).to(device) for k, v in samples.batch(rng).items()}


def _drawn_batches(config: dict[str, Any], cfg: TrainConfig, role: str,
                   device: torch.device) -> Iterator[dict[str, torch.Tensor]]:
    """A short run's batches (``TrainConfig.data``): the faceset read whole into this worker (hold-out left
    out), each batch drawn and augmented when it is needed, with fresh entropy (as Ray Data's augmentation
    tasks draw theirs), so ranks and runs differ."""
    samples = _worker_samples(config, cfg, role)
    rng = np.random.default_rng()
    while True:
        yield {k: torch.from_numpy(v).to(device) for k, v in samples.batch(rng).items()}


def _started_together(*its: Iterator[Any]) -> list[Iterator[Any]]:
    """Pulls the first item of each iterator at the same time, in threads, and gives them back whole.

    Each Ray Data pipeline starts on its first pull (its split coordinator actor, read and augment
    tasks); pulled one after the other, dst's start waited for src's first batch (~8 s of every run on
    2 CPUs). Pulled together, the two start-ups overlap.
    """
    import itertools
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(its)) as pool:
        firsts = list(pool.map(next, its))
    return [itertools.chain([first], it) for first, it in zip(firsts, its)]


INJECT_NAN_ENV = "DFLRAY_TEST_INJECT_NAN_STEPS"


def nan_steps_from_env() -> list[int]:
    """The steps ``DFLRAY_TEST_INJECT_NAN_STEPS`` poisons (test-only, see the module docstring); [] if unset.

    Raises:
        ValueError: when the variable is not a comma-separated list of step numbers.
    """
    import os

    raw = os.environ.get(INJECT_NAN_ENV, "")
    try:
        return [int(s) for s in raw.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"{INJECT_NAN_ENV} must list steps, comma-separated (e.g. 3,3), got {raw!r}") from None


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config``: ``train`` (TrainConfig as a dict, already effective),
    ``out`` (training output URI), ``src``/``dst`` (faceset URIs, for previews), ``init_from``; with
    ``in_worker`` (the workers draw their own samples: ``deterministic`` or ``data``), ``holdout`` (share held
    out per role) and ``ct_refs`` (colour-transfer references or None); in tests only,
    ``_inject_nan_steps`` (see the module docstring)."""
    import ray.train
    import ray.train.torch

    cfg = from_dict(TrainConfig, config["train"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(cfg.torch_threads or max(1, int(np.ceil(cfg.cpus_per_worker))))

    resumed = ray.train.get_checkpoint()
    start_payload = None
    if resumed is not None:
        with resumed.as_directory() as d:
            start_payload = load_payload(d)
    elif config.get("init_from"):
        start_payload = load_payload(config["init_from"])
    gen = torch.Generator().manual_seed(cfg.seed)  # same lr-dropout masks on every rank
    # Start weights go in before prepare_model, so DDP starts every rank from them.
    t = SwapTrainer(cfg, device, wrap=ray.train.torch.prepare_model, generator=gen,
                    weights=start_payload["model"] if start_payload is not None else None)
    if resumed is not None:
        t.load(start_payload)
        gen.manual_seed(cfg.seed + t.step)
        if rank == 0:
            print(f"[dflray train] resumed at step {t.step} from {resumed.path}", flush=True)
    elif start_payload is not None and rank == 0:
        print(f"[dflray train] weights initialised from {config['init_from']}", flush=True)
    last_good = copy.deepcopy(t.payload())
    # What this run started from (fresh init, init_from weights or a resumed checkpoint), for provenance.
    start_checksum = param_checksum(t.model)

    if cfg.deterministic:
        src_it = _seeded_batches(config, cfg, "src", rank, t, device)
        dst_it = _seeded_batches(config, cfg, "dst", rank, t, device)
    elif config.get("in_worker"):
        src_it = _drawn_batches(config, cfg, "src", device)
        dst_it = _drawn_batches(config, cfg, "dst", device)
    else:
        src_it = _batches("src", cfg.batch_size, device)
        dst_it = _batches("dst", cfg.batch_size, device)
    if t.step < cfg.steps:
        src_it, dst_it = _started_together(src_it, dst_it)
    previews = _PreviewWriter(config, cfg, device) if rank == 0 else None
    heldout = heldout_samples(config["src"], cfg) if rank == 0 and cfg.holdout > 0 else None
    inject = list(config.get("_inject_nan_steps", ()))  # test-only fault injection (module docstring)
    window: list[tuple[float, ...]] = []  # per step: src, dst, total loss, compute s, data wait s
    steps0 = t.step
    t_win, steps_win = time.perf_counter(), t.step  # samples/s is measured per report window

    while t.step < cfg.steps:
        t_wait = time.perf_counter()
        batch = join_batch(next(src_it), next(dst_it))
        t_step = time.perf_counter()
        if cfg.deterministic:  # step s's masks come from seed + s, whether the run was resumed or not
            gen.manual_seed(cfg.seed + t.step + 1)
            torch.manual_seed(cfg.seed + t.step + 1)
        poison = (t.step + 1) in inject
        if poison:  # each listed occurrence poisons one attempt at that step: [3, 3] fails step 3 twice
            inject.remove(t.step + 1)
        losses = t.train_step(batch, poison=poison and rank == 0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t_done = time.perf_counter()
        if losses is None:
            if rank == 0:
                print(f"[dflray train] step {t.step + 1}: non-finite loss or gradients, step skipped "
                      f"({t.bad_run} in a row, {t.skipped} in all)", flush=True)
            if t.bad_run > cfg.max_bad_steps:
                t.rollbacks += 1
                skipped, rollbacks = t.skipped, t.rollbacks
                t.load(last_good)
                t.skipped, t.rollbacks, t.bad_run = skipped, rollbacks, 0
                if rank == 0:
                    print(f"[dflray train] rolled back to step {t.step} (rollback {t.rollbacks})", flush=True)
            continue
        window.append((losses["src_loss"], losses["dst_loss"], losses["total"], t_done - t_step, t_step - t_wait))

        at_end = t.step >= cfg.steps
        want_ckpt = at_end or t.step % cfg.checkpoint_every == 0
        want_preview = at_end or (cfg.preview_every and t.step % cfg.preview_every == 0)
        ssim_now = None
        if want_ckpt and heldout is not None and len(heldout["target"]):
            # Reconstruction of src faces never trained on (DeepFaceLab paper's measure), before the
            # preview so that the loss-curve PNG of this step shows it.
            ssim_now = t.heldout_ssim(torch.from_numpy(heldout["target"]), torch.from_numpy(heldout["target_mask"]))
            print(f"[dflray train] step {t.step}: held-out src SSIM {ssim_now:.4f} "
                  f"({len(heldout['target'])} faces)", flush=True)
        if want_preview and previews is not None:
            previews.write(t)
        if want_ckpt or t.step % cfg.log_every == 0:
            elapsed = time.perf_counter() - t_win
            metrics = {
                "step": t.step,
                "src_loss": float(np.mean([w[0] for w in window])),
                "dst_loss": float(np.mean([w[1] for w in window])),
                "loss": float(np.mean([w[2] for w in window])),
                # compute: forward + backward (incl. the DDP all-reduce) + optimizer; wait: next batch
                "step_time_s": float(np.mean([w[3] for w in window])),
                "data_wait_s": float(np.mean([w[4] for w in window])),
                "skipped_steps": t.skipped,
                "rollbacks": t.rollbacks,
                "samples_per_s": (t.step - steps_win) * cfg.batch_size * world * 2 / max(elapsed, 1e-9),
                "resumed_from": steps0 if resumed is not None else None,
                "start_checksum": start_checksum,
                **({"heldout_ssim": ssim_now} if ssim_now is not None else {}),
            }
            window.clear()
            t_win, steps_win = time.perf_counter(), t.step
            if rank == 0:
                print(f"[dflray train] step {t.step}/{cfg.steps} src {metrics['src_loss']:.4f} "
                      f"dst {metrics['dst_loss']:.4f} {metrics['samples_per_s']:.1f} samples/s", flush=True)
            if want_ckpt:
                # Every rank's parameter checksum, gathered: proof (and a check) that DDP kept them equal.
                metrics["rank_checksums"] = _gather_checksums(t.model)
                if len(set(metrics["rank_checksums"])) > 1 and rank == 0:
                    print(f"[dflray train] WARNING: ranks diverged at step {t.step}", flush=True)
                payload = t.payload()
                payload["rank_checksums"] = metrics["rank_checksums"]
                last_good = copy.deepcopy(payload)
                _report_checkpoint(metrics, payload, rank)
            else:
                ray.train.report(metrics)


def _report_checkpoint(metrics: dict[str, Any], payload: dict[str, Any], rank: int) -> None:
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="dflray-ckpt-") as d:
        save_payload(d, payload)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d),
                         checkpoint_dir_name=f"checkpoint_{payload['step']:08d}")


class _PreviewWriter:
    """Rank 0 only: fixed src/dst faces rendered through the model, and the loss curve."""

    COUNT = 4

    def __init__(self, config: dict[str, Any], cfg: TrainConfig, device: torch.device):
        from dflray.train.data import fixed_samples

        self.out, self.device = config["out"], device
        self.src = torch.from_numpy(fixed_samples(config["src"], cfg, self.COUNT)["target"])
        self.dst = torch.from_numpy(fixed_samples(config["dst"], cfg, self.COUNT)["target"])
        n = min(len(self.src), len(self.dst))
        self.src, self.dst = self.src[:n], self.dst[:n]

    @torch.no_grad()
    def write(self, t: SwapTrainer) -> None:
        from dflray.train.preview import loss_curve, preview_grid

        model = unwrap(t.model)
        was_training = model.training
        model.eval()
        out = model(self.src.to(self.device), self.dst.to(self.device))
        model.train(was_training)
        arrays = {"src": self.src.numpy(), "dst": self.dst.numpy(),
                  **{k: out[k].float().cpu().numpy() for k in ("src_src", "dst_dst", "src_dst", "src_dst_mask")}}
        png = preview_grid(arrays, t.step)
        for name in (f"previews/preview_{t.step:08d}.png", "preview.png"):
            with atomic_write(join(self.out, name)) as f:
                f.write(png)
        with atomic_write(join(self.out, "loss.png")) as f:
            f.write(loss_curve(np.asarray(t.history, dtype=np.float32).reshape(-1, 3),
                               np.asarray(t.ssim_history, dtype=np.float32).reshape(-1, 2)))
