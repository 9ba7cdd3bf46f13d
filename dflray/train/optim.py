"""Optimizers with DeepFaceLab's semantics: AdaBelief, RMSprop, learning-rate dropout, cosine lr.

DFL's SAEHD trains with AdaBelief (Zhuang et al., 2020) as DFL defines it: no bias correction and
``eps = 1e-6`` (float32's resolution) added to ``sqrt(s)``. Its "learning-rate dropout" keeps each
element of a parameter's update with probability 0.3 (a fresh Bernoulli mask every step; the moment
estimates are updated regardless), and when it is on the learning rate follows a cosine with a period of
500 steps. ``clipgrad`` clips the global gradient norm to 1.0 before the update.

Example:
    >>> import torch
    >>> p = torch.nn.Parameter(torch.ones(3))
    >>> opt = build_optimizer([p], OptimConfig())
    >>> p.grad = torch.ones(3); opt.step()
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from dflray.config import OptimConfig

LR_DROPOUT_KEEP = 0.3  # DFL's keep probability when lr_dropout is on
LR_COS_PERIOD = 500  # DFL's cosine period (steps) that comes with lr_dropout
CLIP_NORM = 1.0  # DFL's clipnorm when clipgrad is on
_EPS = 1e-6  # np.finfo(float32).resolution, DFL's epsilon


class _DFLOptimizer(torch.optim.Optimizer):
    """Shared step: global-norm clipping, cosine lr, lr dropout on the update; subclasses give the rule."""

    def __init__(self, params: Iterable, defaults: dict, generator: torch.Generator | None):
        super().__init__(params, defaults)
        self.generator = generator

    def _update(self, p: torch.Tensor, g: torch.Tensor, state: dict, group: dict, lr: float) -> torch.Tensor:
        raise NotImplementedError

    def _lr_and_clip(self, group: dict) -> tuple[float, float]:
        step = group["step"] = group.get("step", 0) + 1
        lr = group["lr"]
        if group["lr_cos"]:
            lr *= (math.cos((step - 1) * 2 * math.pi / group["lr_cos"]) + 1.0) / 2.0
        scale = 1.0
        if group["clipnorm"] > 0:
            grads = [p.grad for p in group["params"] if p.grad is not None]
            if grads:
                norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
                scale = min(1.0, group["clipnorm"] / max(float(norm), 1e-12))
        return lr, scale

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch's contract
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, scale = self._lr_and_clip(group)
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = self._update(p, p.grad * scale, self.state[p], group, lr)
                if group["lr_dropout"] < 1.0:  # the moments above were updated regardless, as in DFL
                    update = update * torch.empty_like(update).bernoulli_(group["lr_dropout"],
                                                                          generator=self.generator)
                p.add_(update)
        return loss


class AdaBelief(_DFLOptimizer):
    """AdaBelief as DeepFaceLab runs it (no bias correction)."""

    def __init__(self, params: Iterable, lr: float = 5e-5, betas: tuple[float, float] = (0.9, 0.999),
                 lr_dropout: float = 1.0, lr_cos: int = 0, clipnorm: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__(params, dict(lr=lr, betas=betas, lr_dropout=lr_dropout, lr_cos=lr_cos, clipnorm=clipnorm),
                         generator)

    def _update(self, p, g, state, group, lr):
        b1, b2 = group["betas"]
        if not state:
            state["m"] = torch.zeros_like(p)
            state["s"] = torch.zeros_like(p)
        m, s = state["m"], state["s"]
        m.mul_(b1).add_(g, alpha=1 - b1)
        s.mul_(b2).addcmul_(g - m, g - m, value=1 - b2)
        return -lr * m / (s.sqrt() + _EPS)


class RMSprop(_DFLOptimizer):
    """RMSprop as DeepFaceLab runs it (``rho=0.9``, eps added to ``sqrt``)."""

    def __init__(self, params: Iterable, lr: float = 5e-5, rho: float = 0.9, lr_dropout: float = 1.0,
                 lr_cos: int = 0, clipnorm: float = 0.0, generator: torch.Generator | None = None):
        super().__init__(params, dict(lr=lr, rho=rho, lr_dropout=lr_dropout, lr_cos=lr_cos, clipnorm=clipnorm),
                         generator)

    def _update(self, p, g, state, group, lr):
        if not state:
            state["a"] = torch.zeros_like(p)
        a = state["a"]
        a.mul_(group["rho"]).addcmul_(g, g, value=1 - group["rho"])
        return -lr * g / (a.sqrt() + _EPS)


def build_optimizer(params: Iterable, cfg: OptimConfig, generator: torch.Generator | None = None
                    ) -> torch.optim.Optimizer:
    """The optimizer a config asks for.

    ``adamw`` is torch's AdamW (with bias correction); lr dropout and clipgrad are DFL features of the
    other two and are applied by the training loop for AdamW (clipping) or not at all (lr dropout).
    """
    keep = LR_DROPOUT_KEEP if cfg.lr_dropout else 1.0
    cos = LR_COS_PERIOD if cfg.lr_dropout else 0
    clip = CLIP_NORM if cfg.clipgrad else 0.0
    if cfg.name == "adabelief":
        return AdaBelief(params, lr=cfg.lr, lr_dropout=keep, lr_cos=cos, clipnorm=clip, generator=generator)
    if cfg.name == "rmsprop":
        return RMSprop(params, lr=cfg.lr, lr_dropout=keep, lr_cos=cos, clipnorm=clip, generator=generator)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
