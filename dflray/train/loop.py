"""The Ray Train worker loop: ``train_loop_per_worker`` for DF/LIAE on DDP.

Ray Train's canonical shape: dataset shards from ``get_dataset_shard``, the model through
``prepare_model`` (DDP: gradients all-reduced in backward, so every rank applies the same update), a
checkpoint dict ``{model, optimizer, model config, step, run config}`` reported with
``ray.train.report``, and a resume from ``ray.train.get_checkpoint()``.

Collapse guard: after backward (gradients already all-reduced, so every rank sees the same values) a
step whose loss or gradients are not finite is skipped on every rank and counted; more than
``max_bad_steps`` in a row roll the run back to its last checkpoint (kept in memory), also counted.
"""

from __future__ import annotations

import copy
import tempfile
import time
from contextlib import nullcontext
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist

from dflray.config import TrainConfig, from_dict, to_dict
from dflray.io.storage import atomic_write, join
from dflray.train.checkpoint import FORMAT, load_payload, save_payload
from dflray.train.optim import build_optimizer


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _average_grads(module: torch.nn.Module) -> None:
    """All-reduce a module's gradients by hand (discriminators stay outside DDP: they run twice a step)."""
    if not _distributed():
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def _broadcast_params(module: torch.nn.Module) -> None:
    if _distributed():
        for p in module.parameters():
            dist.broadcast(p.data, 0)


def param_checksum(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters (exact bytes): equal on every rank when DDP keeps them in sync."""
    import hashlib

    h = hashlib.sha256()
    for name, p in sorted(_unwrap(module).state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _gather_checksums(module: torch.nn.Module) -> list[str]:
    mine = param_checksum(module)
    if not _distributed():
        return [mine]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, mine)
    return out


def _grads_finite(*modules: torch.nn.Module) -> bool:
    norms = [p.grad.detach().float().norm() for m in modules for p in m.parameters() if p.grad is not None]
    return bool(torch.isfinite(torch.stack(norms)).all()) if norms else True


def _autocast(device: torch.device, mode: str):
    """Autocast context and grad scaler for the configured precision (CPU: always full precision)."""
    if device.type != "cuda" or mode == "off":
        return nullcontext, None
    dtype = torch.bfloat16 if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()) else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


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


def _join_batch(src: dict[str, torch.Tensor], dst: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"warped_src": src["warped"], "target_src": src["target"], "target_srcm": src["target_mask"],
            "target_srcm_em": src["target_mask_em"], "warped_dst": dst["warped"], "target_dst": dst["target"],
            "target_dstm": dst["target_mask"], "target_dstm_em": dst["target_mask_em"]}


class _Trainer:
    """State of one worker's run: model, optimizers, counters, history."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        from dflray.models import build_code_discriminator, build_model, build_patch_discriminator

        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed)  # every rank builds the same initial weights (DDP also broadcasts rank 0's)
        self.model = build_model(cfg.model)
        self.gan = self.code_d = None
        if cfg.loss.gan_power > 0:
            self.gan = build_patch_discriminator(cfg.model, cfg.loss)
        if cfg.loss.true_face_power > 0:
            self.code_d = build_code_discriminator(cfg.model)
        self.step, self.skipped, self.rollbacks, self.bad_run = 0, 0, 0, 0
        self.history: list[tuple[float, float, float]] = []

    def discriminators(self) -> dict[str, torch.nn.Module]:
        return {k: m for k, m in (("gan", self.gan), ("code", self.code_d)) if m is not None}

    def payload(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": {k: v.detach().cpu() for k, v in _unwrap(self.model).state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "discriminators": {k: {"model": m.state_dict(), "optimizer": self.d_opts[k].state_dict()}
                               for k, m in self.discriminators().items()},
            "model_config": to_dict(self.cfg.model),
            "run_config": to_dict(self.cfg),
            "step": self.step,
            "history": torch.tensor(self.history, dtype=torch.float32).reshape(-1, 3),
            "counters": {"skipped_steps": self.skipped, "rollbacks": self.rollbacks},
        }

    def load(self, payload: dict[str, Any], weights_only: bool = False) -> None:
        _unwrap(self.model).load_state_dict(payload["model"])
        if weights_only:
            return
        self.opt.load_state_dict(payload["optimizer"])
        for k, m in self.discriminators().items():
            if k in payload["discriminators"]:
                m.load_state_dict(payload["discriminators"][k]["model"])
                self.d_opts[k].load_state_dict(payload["discriminators"][k]["optimizer"])
        self.step = int(payload["step"])
        self.history = [tuple(r) for r in payload["history"].tolist()]
        self.skipped = int(payload["counters"]["skipped_steps"])
        self.rollbacks = int(payload["counters"]["rollbacks"])


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point. ``config``: ``train`` (TrainConfig as a dict, already effective),
    ``out`` (training output URI), ``src``/``dst`` (faceset URIs, for previews), ``init_from``."""
    import ray.train
    import ray.train.torch

    cfg = from_dict(TrainConfig, config["train"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(cfg.torch_threads or max(1, int(np.ceil(cfg.cpus_per_worker))))

    t = _Trainer(cfg, device)
    resumed = ray.train.get_checkpoint()
    start_payload = None
    if resumed is not None:
        with resumed.as_directory() as d:
            start_payload = load_payload(d)
    elif config.get("init_from"):
        start_payload = load_payload(config["init_from"])
    if start_payload is not None:
        _unwrap(t.model).load_state_dict(start_payload["model"])

    t.model = ray.train.torch.prepare_model(t.model)
    gen = torch.Generator().manual_seed(cfg.seed)  # same lr-dropout masks on every rank
    # DFL freezes LIAE's inter_ab while random warp is off; the model knows which parameters train.
    t.opt = build_optimizer(_unwrap(t.model).generator_parameters(cfg.augment.random_warp), cfg.optim, generator=gen)
    t.d_opts = {}
    for k, m in t.discriminators().items():
        m.to(device)
        _broadcast_params(m)
        t.d_opts[k] = build_optimizer(m.parameters(), cfg.optim)
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

    autocast, scaler = _autocast(device, cfg.mixed_precision)
    src_it = _batches("src", cfg.batch_size, device)
    dst_it = _batches("dst", cfg.batch_size, device)
    if t.step < cfg.steps:
        src_it, dst_it = _started_together(src_it, dst_it)
    previews = _PreviewWriter(config, cfg, device) if rank == 0 else None
    res = cfg.model.resolution
    inject = list(cfg.inject_nan_steps)
    window: list[tuple[float, ...]] = []  # per step: src, dst, total loss, compute s, data wait s
    steps0 = t.step
    t_win, steps_win = time.perf_counter(), t.step  # samples/s is measured per report window

    while t.step < cfg.steps:
        t_wait = time.perf_counter()
        batch = _join_batch(next(src_it), next(dst_it))
        t_step = time.perf_counter()
        poison = (t.step + 1) in inject
        if poison:  # each listed occurrence poisons one attempt at that step: [3, 3] fails step 3 twice
            inject.remove(t.step + 1)
        losses = _train_step(t, batch, autocast, scaler, res, poison=poison and rank == 0)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t_done = time.perf_counter()
        if losses is None:
            t.skipped += 1
            t.bad_run += 1
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
        t.bad_run = 0
        t.step += 1
        t.history.append((float(t.step), losses["src_loss"], losses["dst_loss"]))
        window.append((losses["src_loss"], losses["dst_loss"], losses["total"], t_done - t_step, t_step - t_wait))

        at_end = t.step >= cfg.steps
        want_ckpt = at_end or t.step % cfg.checkpoint_every == 0
        want_preview = at_end or (cfg.preview_every and t.step % cfg.preview_every == 0)
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


def _train_step(t: _Trainer, batch: dict[str, torch.Tensor], autocast, scaler, res: int,
                poison: bool) -> dict[str, float] | None:
    """One optimizer step of the autoencoder (and discriminators); None when it was skipped."""
    from dflray.models import losses as L

    cfg = t.cfg
    if cfg.loss.blur_out_mask:
        batch = L.apply_blur_out_mask(batch, res)
    with autocast():
        out = t.model(batch["warped_src"], batch["warped_dst"], detached_swap=cfg.loss.face_style_power > 0)
        terms = L.autoencoder_losses(out, batch, cfg.loss, res)
        total = terms["total"]
        if t.gan is not None:
            total = total + L.gan_generator_loss(t.gan, out, batch, cfg.loss, res)
        if t.code_d is not None:
            total = total + L.true_face_generator_loss(t.code_d, out, cfg.loss)
    if poison:  # test hook (inject_nan_steps): one poisoned step, as a bad batch would give
        total = total * float("nan")
    t.opt.zero_grad(set_to_none=True)
    for m in t.discriminators().values():
        m.zero_grad(set_to_none=True)
    (scaler.scale(total) if scaler else total).backward()
    if scaler:
        scaler.unscale_(t.opt)
    # Evaluated on every rank in the same order: _finite_everywhere is a collective. With a grad scaler,
    # overflowing fp16 gradients are the scaler's business (it skips that step and lowers its scale).
    loss_ok = _finite_everywhere(total)
    grads_ok = scaler is not None or _grads_finite(t.model)
    if not (loss_ok and grads_ok):
        t.opt.zero_grad(set_to_none=True)
        if scaler:
            scaler.update()
        return None
    if cfg.optim.clipgrad and cfg.optim.name == "adamw":
        torch.nn.utils.clip_grad_norm_(t.model.parameters(), 1.0)
    (scaler.step(t.opt) if scaler else t.opt.step())
    if scaler:
        scaler.update()

    # Discriminators learn from the generator's outputs after its step (detached), as DFL does.
    for k, m in t.discriminators().items():
        m.zero_grad(set_to_none=True)
        with autocast():
            d_loss = (L.gan_discriminator_loss(m, out, batch, cfg.loss, res) if k == "gan"
                      else L.true_face_discriminator_loss(m, out))
        d_loss.backward()
        _average_grads(m)
        if _grads_finite(m):
            t.d_opts[k].step()
    return {"src_loss": float(terms["src_loss"].detach()), "dst_loss": float(terms["dst_loss"].detach()),
            "total": float(total.detach())}


def _finite_everywhere(loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every rank (ranks must take the same skip decision)."""
    flag = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0], device=loss.device)
    if _distributed():
        dist.all_reduce(flag)
    return float(flag.item()) == 0.0


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
    def write(self, t: _Trainer) -> None:
        from dflray.train.preview import loss_curve, preview_grid

        model = _unwrap(t.model)
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
            f.write(loss_curve(np.asarray(t.history, dtype=np.float32).reshape(-1, 3)))
