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


@pytest.mark.parametrize("cls", [AdaBelief, RMSprop])
def test_multi_tensor_step_equals_one_tensor_at_a_time(cls):
    """The _foreach path computes exactly the per-tensor rule (same lr-dropout draws, same order)."""
    def run(foreach):
        torch.manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s)) for s in ((3, 4), (5,), (2, 2, 2))]
        opt = cls(params, lr=1e-2, lr_dropout=0.3, lr_cos=500, clipnorm=1.0,
                  generator=torch.Generator().manual_seed(1))
        opt.param_groups[0]["foreach"] = foreach
        for step in range(4):
            for i, p in enumerate(params):
                p.grad = torch.full_like(p, 0.5 * (i + 1) * (-1) ** step)
            opt.step()
        return [p.detach().clone() for p in params]

    for a, b in zip(run(True), run(False)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_warmup_ramps_the_learning_rate_linearly():
    """With warmup=4 the first update is a quarter of the full-rate one, the fourth and later full."""
    def first_updates(warmup):
        p = _param([1.0])
        opt = build_optimizer([p], OptimConfig(lr=1e-2, warmup=warmup))
        out = []
        for _ in range(6):
            before = p.detach().clone()
            p.grad = torch.ones(1)
            opt.step()
            out.append(float((p.detach() - before)[0]))
        return out

    plain, warm = first_updates(0), first_updates(4)
    assert [w / p for w, p in zip(warm, plain)] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0], rel=1e-5)
    with pytest.raises(ConfigError) as e:
        OptimConfig(name="adamw", warmup=10)
    assert "warmup" in str(e.value)
