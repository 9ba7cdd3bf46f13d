"""DFL's optimizers: AdaBelief/RMSprop update rules, lr dropout, cosine lr, gradient clipping."""

import math

import pytest
import torch

from dflray.config import ConfigError, OptimConfig
from dflray.train.optim import LR_DROPOUT_KEEP, AdaBelief, RMSprop, build_optimizer


def _param(values):
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.float32))


def test_adabelief_matches_dfl_update_rule():
    p = _param([1.0, -2.0, 0.5])
    opt = AdaBelief([p], lr=0.1)
    m = torch.zeros(3)
    s = torch.zeros(3)
    expected = p.detach().clone()
    for g in ([0.3, -0.1, 2.0], [0.2, 0.4, -1.0], [-0.5, 0.1, 0.0]):
        g = torch.tensor(g)
        p.grad = g.clone()
        opt.step()
        m = 0.9 * m + 0.1 * g
        s = 0.999 * s + 0.001 * (g - m) ** 2
        expected -= 0.1 * m / (s.sqrt() + 1e-6)  # DFL: no bias correction
        torch.testing.assert_close(p.detach(), expected)


def test_rmsprop_matches_dfl_update_rule():
    p = _param([1.0, 2.0])
    opt = RMSprop([p], lr=0.01)
    a = torch.zeros(2)
    expected = p.detach().clone()
    for g in ([0.5, -1.0], [0.25, 3.0]):
        g = torch.tensor(g)
        p.grad = g.clone()
        opt.step()
        a = 0.9 * a + 0.1 * g * g
        expected -= 0.01 * g / (a.sqrt() + 1e-6)
        torch.testing.assert_close(p.detach(), expected)


def test_lr_dropout_keeps_a_fraction_of_updates_and_is_reproducible():
    def run(seed):
        p = torch.nn.Parameter(torch.zeros(20000))
        opt = AdaBelief([p], lr=0.1, lr_dropout=LR_DROPOUT_KEEP, generator=torch.Generator().manual_seed(seed))
        p.grad = torch.ones(20000)
        opt.step()
        return p.detach().clone()

    a, b, c = run(1), run(1), run(2)
    moved = (a != 0).float().mean().item()
    assert abs(moved - LR_DROPOUT_KEEP) < 0.02
    assert torch.equal(a, b)  # same generator seed -> same masks: DDP ranks stay identical
    assert not torch.equal(a, c)


def test_clipnorm_scales_the_global_gradient():
    p1, p2 = _param([0.0]), _param([0.0])
    q1, q2 = _param([0.0]), _param([0.0])
    clipped = RMSprop([p1, p2], lr=1.0, clipnorm=1.0)
    manual = RMSprop([q1, q2], lr=1.0)
    p1.grad, p2.grad = torch.tensor([30.0]), torch.tensor([40.0])  # norm 50
    q1.grad, q2.grad = torch.tensor([0.6]), torch.tensor([0.8])  # the same, clipped to norm 1
    clipped.step()
    manual.step()
    torch.testing.assert_close(p1.detach(), q1.detach())
    torch.testing.assert_close(p2.detach(), q2.detach())


def test_cosine_lr_period():
    p = _param([0.0])
    opt = RMSprop([p], lr=1.0, lr_cos=4)
    lrs = []
    for _ in range(5):
        before = p.detach().clone()
        p.grad = torch.tensor([1.0])
        opt.step()
        a = opt.state[p]["a"]
        lrs.append(float((before - p.detach()) * (a.sqrt() + 1e-6)))
    expected = [(math.cos(i * 2 * math.pi / 4) + 1) / 2 for i in range(5)]
    assert lrs == pytest.approx(expected, abs=1e-5)


def test_build_optimizer_and_state_round_trip():
    model = torch.nn.Linear(3, 2)
    for name in ("adabelief", "rmsprop", "adamw"):
        opt = build_optimizer(model.parameters(), OptimConfig(name=name))
        model(torch.ones(1, 3)).sum().backward()
        opt.step()
        state = opt.state_dict()
        again = build_optimizer(model.parameters(), OptimConfig(name=name))
        again.load_state_dict(state)
        assert again.state_dict()["state"].keys() == state["state"].keys()
    with pytest.raises(ConfigError, match="lr_dropout"):
        OptimConfig(name="adamw", lr_dropout=True)
