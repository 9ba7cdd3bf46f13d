"""Optimizers with DeepFaceLab's semantics: AdaBelief, RMSprop, learning-rate dropout, cosine lr.

DFL's SAEHD trains with AdaBelief (Zhuang et al., 2020) as DFL defines it: no bias correction and
``eps = 1e-6`` (float32's resolution) added to ``sqrt(s)``. Its "learning-rate dropout" keeps each
element of a parameter's update with probability 0.3 (a fresh Bernoulli mask every step; the moment
estimates are updated regardless), and when it is on the learning rate follows a cosine with a period of
500 steps. ``clipgrad`` clips the global gradient norm to 1.0 before the update. ``warmup`` (ours, not
DFL's) ramps the learning rate up linearly over the first steps.

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
    """Shared step: global-norm clipping, cosine lr, lr dropout on the update; subclasses give the rule.

    The rule runs over all of a group's tensors at once (torch's multi-tensor ``_foreach`` kernels, as
    torch's own optimizers do): per-tensor Python loops made the optimizer a third of a CPU training step
    of a small model. A param group with ``foreach=False`` runs the same rule one tensor at a time.
    """

    def __init__(self, params: Iterable, defaults: dict, generator: torch.Generator | None):
        super().__init__(params, defaults)
        self.generator = generator

    def _updates(self, params: list[torch.Tensor], grads: list[torch.Tensor], states: list[dict], group: dict,
                 lr: float) -> list[torch.Tensor]:
        raise NotImplementedError

    def _lr_and_clip(self, group: dict) -> tuple[float, float]:
        step = group["step"] = group.get("step", 0) + 1
        lr = group["lr"]
        if group.get("warmup", 0) and step <= group["warmup"]:
            lr *= step / group["warmup"]
        if group["lr_cos"]:
            lr *= (math.cos((step - 1) * 2 * math.pi / group["lr_cos"]) + 1.0) / 2.0
        scale = 1.0
        if group["clipnorm"] > 0:
            grads = [p.grad for p in group["params"] if p.grad is not None]
            if grads:
                norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
                scale = min(1.0, group["clipnorm"] / max(float(norm), 1e-12))
        return lr, scale

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102 - torch's contract
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            lr, scale = self._lr_and_clip(group)
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if scale != 1.0:
                grads = torch._foreach_mul(grads, scale)
            states = [self.state[p] for p in params]
            if group.get("foreach", True):
                updates = self._updates(params, grads, states, group, lr)
            else:  # one tensor at a time (the same rule; kept to measure what the multi-tensor kernels save)
                updates = [self._updates([p], [g], [st], group, lr)[0] for p, g, st in zip(params, grads, states)]
            if group["lr_dropout"] < 1.0:  # the moments were updated regardless, as in DFL
                # One mask per tensor, in parameter order: the generator's draws are those of a per-tensor loop.
                masks = [torch.empty_like(u).bernoulli_(group["lr_dropout"], generator=self.generator)
                         for u in updates]
                torch._foreach_mul_(updates, masks)
            torch._foreach_add_(params, updates)
        return loss


def _state(states: list[dict], params: list[torch.Tensor], *names: str) -> list[list[torch.Tensor]]:
    for st, p in zip(states, params):
        for n in names:
            if n not in st:
                st[n] = torch.zeros_like(p)
    return [[st[n] for st in states] for n in names]


class AdaBelief(_DFLOptimizer):
    """AdaBelief as DeepFaceLab runs it (no bias correction): ``m ← b1·m + (1−b1)·g``,
    ``s ← b2·s + (1−b2)·(g−m)²``, update ``−lr·m / (√s + eps)``."""

    def __init__(self, params: Iterable, lr: float = 5e-5, betas: tuple[float, float] = (0.9, 0.999),
                 lr_dropout: float = 1.0, lr_cos: int = 0, clipnorm: float = 0.0,
                 generator: torch.Generator | None = None):
        super().__init__(params, dict(lr=lr, betas=betas, lr_dropout=lr_dropout, lr_cos=lr_cos, clipnorm=clipnorm),
                         generator)

    def _updates(self, params, grads, states, group, lr):
        b1, b2 = group["betas"]
        m, s = _state(states, params, "m", "s")
        torch._foreach_mul_(m, b1)
        torch._foreach_add_(m, grads, alpha=1 - b1)
        diff = torch._foreach_sub(grads, m)
        torch._foreach_mul_(s, b2)
        torch._foreach_addcmul_(s, diff, diff, value=1 - b2)
        denom = torch._foreach_sqrt(s)
        torch._foreach_add_(denom, _EPS)
        updates = torch._foreach_mul(m, -lr)
        torch._foreach_div_(updates, denom)
        return updates


class RMSprop(_DFLOptimizer):
    """RMSprop as DeepFaceLab runs it (``rho=0.9``, eps added to ``sqrt``)."""

    def __init__(self, params: Iterable, lr: float = 5e-5, rho: float = 0.9, lr_dropout: float = 1.0,
                 lr_cos: int = 0, clipnorm: float = 0.0, generator: torch.Generator | None = None):
        super().__init__(params, dict(lr=lr, rho=rho, lr_dropout=lr_dropout, lr_cos=lr_cos, clipnorm=clipnorm),
                         generator)

    def _updates(self, params, grads, states, group, lr):
        (a,) = _state(states, params, "a")
        torch._foreach_mul_(a, group["rho"])
        torch._foreach_addcmul_(a, grads, grads, value=1 - group["rho"])
        denom = torch._foreach_sqrt(a)
        torch._foreach_add_(denom, _EPS)
        updates = torch._foreach_mul(grads, -lr)
        torch._foreach_div_(updates, denom)
        return updates


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
        opt = AdaBelief(params, lr=cfg.lr, lr_dropout=keep, lr_cos=cos, clipnorm=clip, generator=generator)
    elif cfg.name == "rmsprop":
        opt = RMSprop(params, lr=cfg.lr, lr_dropout=keep, lr_cos=cos, clipnorm=clip, generator=generator)
    else:
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    for group in opt.param_groups:
        group["warmup"] = cfg.warmup
    return opt

