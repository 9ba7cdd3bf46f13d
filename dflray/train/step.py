"""The plain-PyTorch trainer of the swap model: one optimizer step, no Ray.

``SwapTrainer`` owns a DF/LIAE model, its optimizer, the optional discriminators, the step counter and
the loss history, and runs one training step on a batch of samples (``dflray.train.augment``'s keys).
The Ray Train loop (``dflray.train.loop``) wraps it — DDP through ``wrap``, batches from Ray Data,
checkpoints through ``ray.train.report`` — and so does any plain script on one GPU (``bench/gpu.py``),
which is why this module must never import Ray.

Collective helpers work with and without ``torch.distributed``: with one process they are no-ops, so
the same step runs under DDP and alone.

Example:
    >>> from dflray.config import ModelConfig, TrainConfig
    >>> cfg = TrainConfig(model=ModelConfig(resolution=64, ae_dims=32, e_dims=16, d_dims=16, d_mask_dims=4),
    ...                   batch_size=2)
    >>> t = SwapTrainer(cfg, torch.device("cpu"))
    >>> r = 64
    >>> batch = {k: torch.rand(2, 1 if "m" in k.split("_")[-1] else 3, r, r) for k in BATCH_KEYS}
    >>> sorted(t.train_step(batch))
    ['dst_loss', 'src_loss', 'total']
    >>> t.step
    1
"""

from __future__ import annotations

import hashlib
from contextlib import nullcontext
from typing import Any, Callable

import torch
import torch.distributed as dist

from dflray.artifacts.checkpoint import FORMAT
from dflray.config import TrainConfig, to_dict
from dflray.models.losses import BATCH_KEYS
from dflray.train.optim import build_optimizer

__all__ = ["BATCH_KEYS", "SwapTrainer", "autocast_for", "join_batch", "param_checksum", "unwrap"]



def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP (or any ``.module``) wrapper."""
    return model.module if hasattr(model, "module") else model


def distributed() -> bool:
    """Whether this process is one of several ranks of an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _average_grads(module: torch.nn.Module) -> None:
    """All-reduce a module's gradients by hand (discriminators stay outside DDP: they run twice a step)."""
    if not distributed():
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def _broadcast_params(module: torch.nn.Module) -> None:
    if distributed():
        for p in module.parameters():
            dist.broadcast(p.data, 0)


def param_checksum(module: torch.nn.Module) -> str:
    """SHA-256 of a module's parameters (exact bytes): equal on every rank when DDP keeps them in sync."""
    h = hashlib.sha256()
    for name, p in sorted(unwrap(module).state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().float().numpy().tobytes()
                 if p.dtype == torch.bfloat16 else p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _grads_finite(*modules: torch.nn.Module) -> bool:
    norms = [p.grad.detach().float().norm() for m in modules for p in m.parameters() if p.grad is not None]
    return bool(torch.isfinite(torch.stack(norms)).all()) if norms else True


def _finite_everywhere(loss: torch.Tensor) -> bool:
    """Whether the loss is finite on every rank (ranks must take the same skip decision)."""
    flag = torch.tensor([0.0 if torch.isfinite(loss.detach()).all() else 1.0], device=loss.device)
    if distributed():
        dist.all_reduce(flag)
    return float(flag.item()) == 0.0


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), where bf16 autocast pays off."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def autocast_for(device: torch.device, mode: str) -> tuple[Callable[[], Any], Any]:
    """Autocast context factory and grad scaler for a precision setting (weights stay fp32).

    ``auto``: on CUDA bf16 where supported, else fp16 with a grad scaler; on a CPU bf16 where the CPU
    computes it natively (``cpu_has_bf16``: 1.6x less CPU time per step of the demo's model, the same
    loss curve; ``bench/train.py`` part 0), else full precision. ``bf16`` applies on any CPU; ``fp16``
    only on CUDA.
    """
    if device.type != "cuda" and mode == "auto":
        mode = "bf16" if cpu_has_bf16() else "off"
    if mode == "off" or (device.type != "cuda" and mode == "fp16"):
        return nullcontext, None
    if device.type != "cuda":
        return (lambda: torch.autocast("cpu", dtype=torch.bfloat16)), None
    dtype = torch.bfloat16 if mode == "bf16" or (mode == "auto" and torch.cuda.is_bf16_supported()) else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return (lambda: torch.autocast("cuda", dtype=dtype)), scaler


def join_batch(src: dict[str, torch.Tensor], dst: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One step's batch from a src and a dst sample batch (``make_batch``'s keys)."""
    return {"warped_src": src["warped"], "target_src": src["target"], "target_srcm": src["target_mask"],
            "target_srcm_em": src["target_mask_em"], "warped_dst": dst["warped"], "target_dst": dst["target"],
            "target_dstm": dst["target_mask"], "target_dstm_em": dst["target_mask_em"]}


class SwapTrainer:
    """Model, optimizers, counters and history of one training run on one device (or one DDP rank).

    Args:
        cfg: the effective training config.
        device: where the model trains.
        wrap: applied to the model after it is built and moved (Ray Train's ``prepare_model`` for DDP);
            default: move it to ``device``.
        generator: the random generator of the optimizer's learning-rate dropout (the same seed on
            every rank keeps the masks equal).
        weights: a model state dict loaded before ``wrap`` (a resume or fine-tune start).
    """

    def __init__(self, cfg: TrainConfig, device: torch.device,
                 wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
                 generator: torch.Generator | None = None, weights: dict[str, torch.Tensor] | None = None):
        from dflray.models import build_code_discriminator, build_model, build_patch_discriminator

        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed)  # every rank builds the same initial weights (DDP also broadcasts rank 0's)
        model = build_model(cfg.model)
        if weights is not None:
            model.load_state_dict(weights)
        self.gan = self.code_d = None
        if cfg.loss.gan_power > 0:
            self.gan = build_patch_discriminator(cfg.model, cfg.loss)
        if cfg.loss.true_face_power > 0:
            self.code_d = build_code_discriminator(cfg.model)
        self.model = wrap(model) if wrap is not None else model.to(device)
        self.generator = generator or torch.Generator().manual_seed(cfg.seed)
        # DFL freezes LIAE's inter_ab while random warp is off; the model knows which parameters train.
        self.opt = build_optimizer(unwrap(self.model).generator_parameters(cfg.augment.random_warp), cfg.optim,
                                   generator=self.generator)
        self.d_opts: dict[str, torch.optim.Optimizer] = {}
        for k, m in self.discriminators().items():
            m.to(device)
            _broadcast_params(m)
            self.d_opts[k] = build_optimizer(m.parameters(), cfg.optim)
        self.autocast, self.scaler = autocast_for(device, cfg.mixed_precision)
        self.step, self.skipped, self.rollbacks, self.bad_run = 0, 0, 0, 0
        self.history: list[tuple[float, float, float]] = []
        # step → held-out SSIM (DeepFaceLab paper's reconstruction measure), filled by whoever evaluates.
        self.ssim_history: list[tuple[float, float]] = []

    def discriminators(self) -> dict[str, torch.nn.Module]:
        return {k: m for k, m in (("gan", self.gan), ("code", self.code_d)) if m is not None}

    # -------------------------------------------------------------- state

    def payload(self) -> dict[str, Any]:
        """The checkpoint dict: ``{format, model, optimizer, discriminators, model_config, run_config, step,
        history, ssim_history, counters}`` (tensors and plain data: loads with ``weights_only=True``)."""
        return {
            "format": FORMAT,
            "model": {k: v.detach().cpu() for k, v in unwrap(self.model).state_dict().items()},
            "optimizer": self.opt.state_dict(),
            "discriminators": {k: {"model": m.state_dict(), "optimizer": self.d_opts[k].state_dict()}
                               for k, m in self.discriminators().items()},
            "model_config": to_dict(self.cfg.model),
            "run_config": to_dict(self.cfg),
            "step": self.step,
            "history": torch.tensor(self.history, dtype=torch.float32).reshape(-1, 3),
            "ssim_history": torch.tensor(self.ssim_history, dtype=torch.float32).reshape(-1, 2),
            "counters": {"skipped_steps": self.skipped, "rollbacks": self.rollbacks},
        }

    def load(self, payload: dict[str, Any], weights_only: bool = False) -> None:
        """Restores a ``payload()`` (weights only: a fine-tune start at step 0)."""
        unwrap(self.model).load_state_dict(payload["model"])
        if weights_only:
            return
        self.opt.load_state_dict(payload["optimizer"])
        for k, m in self.discriminators().items():
            if k in payload["discriminators"]:
                m.load_state_dict(payload["discriminators"][k]["model"])
                self.d_opts[k].load_state_dict(payload["discriminators"][k]["optimizer"])
        self.step = int(payload["step"])
        self.history = [tuple(r) for r in payload["history"].tolist()]
        self.ssim_history = [tuple(r) for r in payload.get("ssim_history", torch.zeros(0, 2)).tolist()]
        self.skipped = int(payload["counters"]["skipped_steps"])
        self.rollbacks = int(payload["counters"]["rollbacks"])

    # -------------------------------------------------------------- training

    def train_step(self, batch: dict[str, torch.Tensor], poison: bool = False) -> dict[str, float] | None:
        """One optimizer step of the autoencoder (and the discriminators after it).

        Args:
            batch: ``BATCH_KEYS`` tensors on the trainer's device (float32, N×C×R×R, RGB in [0,1]).
            poison: multiply the loss by NaN (a test hook of the collapse guard).

        Returns:
            ``{src_loss, dst_loss, total}``, or None when the step was skipped because the loss or the
            gradients were not finite (on any rank); the step counter and history advance only on success.
        """
        losses = self._step(batch, poison)
        if losses is None:
            self.skipped += 1
            self.bad_run += 1
            return None
        self.bad_run = 0
        self.step += 1
        self.history.append((float(self.step), losses["src_loss"], losses["dst_loss"]))
        return losses

    def _step(self, batch: dict[str, torch.Tensor], poison: bool) -> dict[str, float] | None:
        from dflray.models import losses as L

        cfg, res = self.cfg, self.cfg.model.resolution
        if cfg.loss.blur_out_mask:
            batch = L.apply_blur_out_mask(batch, res)
        with self.autocast():
            out = self.model(batch["warped_src"], batch["warped_dst"], detached_swap=cfg.loss.face_style_power > 0)
            terms = L.autoencoder_losses(out, batch, cfg.loss, res)  # computes in fp32 whatever the autocast
            total = terms["total"]
            if self.gan is not None:
                total = total + L.gan_generator_loss(self.gan, out, batch, cfg.loss, res)
            if self.code_d is not None:
                total = total + L.true_face_generator_loss(self.code_d, out, cfg.loss)
        if poison:
            total = total * float("nan")
        self.opt.zero_grad(set_to_none=True)
        for m in self.discriminators().values():
            m.zero_grad(set_to_none=True)
        scaler = self.scaler
        (scaler.scale(total) if scaler else total).backward()
        if scaler:
            scaler.unscale_(self.opt)
        # Evaluated on every rank in the same order: _finite_everywhere is a collective. With a grad scaler,
        # overflowing fp16 gradients are the scaler's business (it skips that step and lowers its scale).
        loss_ok = _finite_everywhere(total)
        grads_ok = scaler is not None or _grads_finite(self.model)
        if not (loss_ok and grads_ok):
            self.opt.zero_grad(set_to_none=True)
            if scaler:
                scaler.update()
            return None
        if cfg.optim.clipgrad and cfg.optim.name == "adamw":
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        (scaler.step(self.opt) if scaler else self.opt.step())
        if scaler:
            scaler.update()

        # Discriminators learn from the generator's outputs after its step (detached), as DFL does.
        for k, m in self.discriminators().items():
            m.zero_grad(set_to_none=True)
            with self.autocast():
                d_loss = (L.gan_discriminator_loss(m, out, batch, cfg.loss, res) if k == "gan"
                          else L.true_face_discriminator_loss(m, out))
            d_loss.backward()
            _average_grads(m)
            if _grads_finite(m):
                self.d_opts[k].step()
        return {"src_loss": float(terms["src_loss"].detach()), "dst_loss": float(terms["dst_loss"].detach()),
                "total": float(total.detach())}

    # -------------------------------------------------------------- evaluation

    @torch.no_grad()
    def reconstruct(self, faces: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """The model's src → src reconstruction of un-augmented src faces (N×3×R×R in [0,1])."""
        model = unwrap(self.model)
        was_training = model.training
        model.eval()
        outs = []
        for i in range(0, len(faces), batch_size):
            x = faces[i:i + batch_size].to(self.device)
            with self.autocast():
                out = model(x, x)
            outs.append(out["src_src"].float().clamp(0, 1).cpu())
        model.train(was_training)
        return torch.cat(outs) if outs else faces[:0]

    def heldout_ssim(self, faces: torch.Tensor, masks: torch.Tensor | None = None) -> float:
        """Mean SSIM between held-out src faces and their reconstruction (DeepFaceLab paper's measure).

        Args:
            faces: src faces never trained on, N×3×R×R float in [0,1].
            masks: their face masks N×1×R×R; given, SSIM is averaged inside the mask only.

        Returns:
            The SSIM (1 is a perfect reconstruction), recorded in ``ssim_history`` at the current step.
        """
        value = ssim(self.reconstruct(faces), faces, masks)
        self.ssim_history.append((float(self.step), value))
        return value


def ssim(a: torch.Tensor, b: torch.Tensor, masks: torch.Tensor | None = None, window: int = 11) -> float:
    """Mean SSIM of two image batches (N×3×H×W, [0,1]; Gaussian window 11, σ 1.5, as Wang et al.).

    Example:
        >>> x = torch.rand(2, 3, 32, 32)
        >>> round(ssim(x, x), 4)
        1.0
    """
    import kornia

    if len(a) == 0:
        return float("nan")
    smap = kornia.metrics.ssim(a.float(), b.float(), window).mean(1, keepdim=True)
    if masks is None:
        return float(smap.mean())
    w = (masks.float() > 0.5).float()
    return float((smap * w).sum() / w.sum().clamp(min=1.0))

