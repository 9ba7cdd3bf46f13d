"""SAEHD losses: DFL's definitions of dssim, blur, style and masks, and the training-loss wiring."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dflray.config import LossConfig, ModelConfig
from dflray.models import build_code_discriminator, build_model, build_patch_discriminator
from dflray.models.losses import (
    apply_blur_out_mask,
    autoencoder_losses,
    blur_out_mask,
    dssim,
    dssim_filter_size,
    face_masks,
    gan_discriminator_loss,
    gan_generator_loss,
    gaussian_blur,
    gaussian_kernel_size,
    style_loss,
    total_variation_mse,
    true_face_discriminator_loss,
    true_face_generator_loss,
)

RES = 64


def _dfl_dssim(a: torch.Tensor, b: torch.Tensor, filter_size: int, sigma: float = 1.5) -> torch.Tensor:
    """DFL's nn.dssim written out: softmax-normalised Gaussian window, no padding, per-sample mean."""
    k = (torch.arange(filter_size, dtype=torch.float64) - (filter_size - 1) / 2) ** 2 * (-0.5 / sigma**2)
    w = torch.softmax((k[None] + k[:, None]).flatten(), 0).reshape(filter_size, filter_size).to(a.dtype)
    c = a.shape[1]
    weight = w.expand(c, 1, filter_size, filter_size)

    def reduce(x):
        return F.conv2d(x, weight, groups=c)

    c1, c2 = 0.01**2, 0.03**2
    m0, m1 = reduce(a), reduce(b)
    num0, den0 = m0 * m1 * 2, m0**2 + m1**2
    luminance = (num0 + c1) / (den0 + c1)
    cs = (reduce(a * b) * 2 - num0 + c2) / (reduce(a * a + b * b) - den0 + c2)
    return ((1 - (luminance * cs).mean((2, 3))) / 2).mean(1)


def _dfl_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """DFL's nn.gaussian_blur written out with numpy: kernel size rule, centred Gaussian, zero padding."""
    size = max(3, int(4 * sigma))
    size += 1 - size % 2
    g = np.exp(-((np.arange(size) - np.floor(size / 2)) ** 2) / (2 * sigma**2))
    k = np.outer(g, g)
    k = torch.tensor(k / k.sum(), dtype=x.dtype)
    c = x.shape[1]
    return F.conv2d(F.pad(x, [size // 2] * 4), k.expand(c, 1, size, size), groups=c)


def _square(res: int, lo: int, hi: int, n: int = 2) -> torch.Tensor:
    m = torch.zeros(n, 1, res, res)
    m[:, :, lo:hi, lo:hi] = 1
    return m


def _batch(res: int = RES, n: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    face, em = _square(res, res // 4, 3 * res // 4, n), _square(res, 3 * res // 8, 5 * res // 8, n)
    keys = ("warped_src", "target_src", "warped_dst", "target_dst")
    batch = {k: torch.rand(n, 3, res, res, generator=g) for k in keys}
    batch.update(target_srcm=face, target_srcm_em=em, target_dstm=face.clone(), target_dstm_em=em.clone())
    return batch


def _out(res: int = RES, n: int = 2, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {k: torch.rand(n, 3, res, res, generator=g) for k in ("src_src", "dst_dst", "src_dst")}
    out.update({f"{k}_mask": torch.rand(n, 1, res, res, generator=g) for k in ("src_src", "dst_dst", "src_dst")})
    out["src_dst_detached"] = out["src_dst"]
    return out


def test_dssim_zero_for_identical_positive_otherwise():
    a = torch.rand(2, 3, RES, RES)
    assert float(dssim(a, a, 5).abs().max()) < 1e-6
    b = (a + 0.1 * torch.randn_like(a)).clamp(0, 1)
    d = dssim(a, b, 5)
    assert d.shape == (2,) and (d > 0.01).all() and (d <= 1).all()


@pytest.mark.parametrize("size", [5, 11, 8, 22])
def test_dssim_matches_dfl_definition(size):
    # Odd windows equal DFL's; an even DFL window is rounded up to the next odd one.
    torch.manual_seed(0)
    a = torch.rand(2, 3, RES, RES)
    b = (a + 0.2 * torch.randn_like(a)).clamp(0, 1)
    odd = dssim_filter_size(size)
    assert odd == size + (size % 2 == 0) and odd % 2 == 1
    torch.testing.assert_close(dssim(a, b, size), _dfl_dssim(a, b, odd), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 4.0, 2.5])
def test_gaussian_blur_matches_dfl(sigma):
    x = torch.rand(2, 3, 40, 40)
    torch.testing.assert_close(gaussian_blur(x, sigma), _dfl_blur(x, sigma), atol=1e-5, rtol=1e-4)


def test_gaussian_kernel_size_rule():
    assert [gaussian_kernel_size(s) for s in (0.5, 1, 2, 4, 16)] == [3, 5, 9, 17, 65]


def test_style_loss():
    a = torch.full((1, 3, 16, 16), 0.2)
    b = torch.full((1, 3, 16, 16), 0.7)
    assert float(style_loss(a, a, 0.0, 5.0)) == 0.0
    # Constant images: only the means differ, loss_weight / C * sum_c (0.5)**2.
    torch.testing.assert_close(style_loss(a, b, 0.0, 2.0), torch.tensor([2.0 * 0.25]))
    x = torch.rand(2, 3, 32, 32)
    assert (style_loss(x, x * 0.5, 4.0, 1.0) > 0).all()


def test_total_variation_mse():
    x = torch.zeros(1, 1, 4, 4)
    x[..., 2:] = 1.0  # one vertical edge of height 4
    torch.testing.assert_close(total_variation_mse(x), torch.tensor([4.0]))


def test_face_masks():
    m = _square(RES, 16, 48)
    blur, anti = face_masks(m, RES)
    assert float(blur[..., 24:40, 24:40].min()) == 1.0  # deep inside
    assert float(blur[..., :4, :4].max()) == 0.0  # far outside (sigma 2 -> 9-tap kernel)
    assert 0 < float(blur[0, 0, 32, 14]) < 1  # the edge fades
    torch.testing.assert_close(anti, 1 - blur)


def test_blur_out_mask_keeps_face_and_smooths_background():
    torch.manual_seed(0)
    m = _square(RES, 16, 48, n=1)
    x = torch.rand(1, 3, RES, RES)
    y = blur_out_mask(x, m, RES)
    torch.testing.assert_close(y * m, x * m)
    outside = (1 - m).bool().expand_as(x)
    assert y[outside].var() < 0.5 * x[outside].var()
    # A constant background stays constant away from the image border (zero padding darkens it there).
    flat = blur_out_mask(torch.full_like(x, 0.6) * (1 - m) + x * m, m, RES)
    torch.testing.assert_close(flat[..., 4:12, 4:60], torch.full_like(flat[..., 4:12, 4:60], 0.6))


def test_apply_blur_out_mask_changes_only_the_targets():
    batch = _batch()
    blurred = apply_blur_out_mask(batch, RES)
    for key in batch:
        changed = not torch.equal(blurred[key], batch[key])
        assert changed == (key in ("target_src", "target_dst")), key
    torch.testing.assert_close(blurred["target_dst"], blur_out_mask(batch["target_dst"], batch["target_dstm"], RES))
    # The loss functions do not apply it again: the flag alone changes nothing.
    out = _out()
    torch.testing.assert_close(autoencoder_losses(out, batch, LossConfig(blur_out_mask=True), RES)["total"],
                               autoencoder_losses(out, batch, LossConfig(), RES)["total"])


def test_masked_training_ignores_differences_outside_the_mask():
    cfg = LossConfig(masked_training=True)
    batch, out = _batch(), _out()
    base = autoencoder_losses(out, batch, cfg, RES)
    changed = dict(batch)
    for key in ("target_src", "target_dst"):
        t = batch[key].clone()
        t[..., :6, :] = torch.rand_like(t[..., :6, :])  # mask is [16, 48); its blur reaches 8 px out
        changed[key] = t
    after = autoencoder_losses(out, changed, cfg, RES)
    for key in ("src_loss", "dst_loss", "total"):
        torch.testing.assert_close(after[key], base[key])
    unmasked = dataclasses.replace(cfg, masked_training=False)
    assert (autoencoder_losses(out, changed, unmasked, RES)["src_loss"]
            != autoencoder_losses(out, batch, unmasked, RES)["src_loss"])


def test_eyes_mouth_prio_adds_300_l1_inside_eyes_mouth_mask():
    batch, out = _batch(), _out()
    out_good = dict(out)
    # A prediction that is perfect inside the eyes/mouth mask, and one with the same error moved inside it.
    em = batch["target_srcm_em"]
    out_good["src_src"] = out["src_src"] * (1 - em) + batch["target_src"] * em
    plain, prio = LossConfig(), LossConfig(eyes_mouth_prio=True)
    assert float(autoencoder_losses(out_good, batch, prio, RES)["src_loss"]) == pytest.approx(
        float(autoencoder_losses(out_good, batch, plain, RES)["src_loss"]), abs=1e-5)
    extra = 300 * (batch["target_src"] * em - out["src_src"] * em).abs().mean((1, 2, 3)).mean()
    torch.testing.assert_close(autoencoder_losses(out, batch, prio, RES)["src_loss"],
                               autoencoder_losses(out, batch, plain, RES)["src_loss"] + extra)


def test_from_256_px_two_dssim_scales():
    res = 256
    batch, out = _batch(res, n=1), _out(res, n=1)
    got = autoencoder_losses(out, batch, LossConfig(masked_training=False), res)
    t, p = batch["target_src"], out["src_src"]
    want = (5 * _dfl_dssim(t, p, 23) + 5 * _dfl_dssim(t, p, 11) + 10 * ((t - p) ** 2).mean()
            + 10 * ((batch["target_srcm"] - out["src_src_mask"]) ** 2).mean())
    torch.testing.assert_close(got["src_loss"], want.mean(), atol=1e-5, rtol=1e-5)
    # Below 256 px a single scale: 10 * DSSIM(int(res / 11.6)).
    batch, out = _batch(), _out()
    got = autoencoder_losses(out, batch, LossConfig(masked_training=False), RES)
    t, p = batch["target_dst"], out["dst_dst"]
    want = (10 * _dfl_dssim(t, p, 5) + 10 * ((t - p) ** 2).mean((1, 2, 3))
            + 10 * ((batch["target_dstm"] - out["dst_dst_mask"]) ** 2).mean((1, 2, 3)))
    torch.testing.assert_close(got["dst_loss"], want.mean(), atol=1e-5, rtol=1e-5)


def test_face_style_needs_the_detached_swap():
    out = _out()
    del out["src_dst_detached"]
    with pytest.raises(KeyError, match="detached_swap"):
        autoencoder_losses(out, _batch(), LossConfig(face_style_power=1.0), RES)


def test_style_terms_add_to_src_loss_only():
    batch, out = _batch(), _out()
    base = autoencoder_losses(out, batch, LossConfig(), RES)
    styled = autoencoder_losses(out, batch, LossConfig(face_style_power=10.0, bg_style_power=10.0), RES)
    assert styled["src_loss"] > base["src_loss"]
    torch.testing.assert_close(styled["dst_loss"], base["dst_loss"])
    torch.testing.assert_close(styled["total"], styled["src_loss"] + styled["dst_loss"])


def _all_on(arch: str) -> LossConfig:
    return LossConfig(eyes_mouth_prio=True, blur_out_mask=True, face_style_power=1.0, bg_style_power=1.0,
                      gan_power=0.1, gan_dims=4, true_face_power=0.01 if arch == "df" else 0.0)


@pytest.mark.parametrize("arch", ["df", "liae"])
def test_gradients_reach_every_parameter(arch):
    torch.manual_seed(0)
    mcfg = ModelConfig(arch=arch, resolution=RES, ae_dims=32, e_dims=16, d_dims=16, d_mask_dims=4)
    lcfg = _all_on(arch)
    model, disc = build_model(mcfg), build_patch_discriminator(mcfg, lcfg)
    code_disc = build_code_discriminator(mcfg) if arch == "df" else None
    batch = apply_blur_out_mask(_batch(), RES)
    out = model(batch["warped_src"], batch["warped_dst"], detached_swap=True)
    losses = autoencoder_losses(out, batch, lcfg, RES)
    g = losses["total"] + gan_generator_loss(disc, out, batch, lcfg, RES)
    if code_disc is not None:
        g = g + true_face_generator_loss(code_disc, out, lcfg)
    assert all(torch.isfinite(v) for v in losses.values()) and torch.isfinite(g)
    g.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name

    # Discriminator losses see detached predictions: they train the discriminators, never the model.
    model.zero_grad()
    disc.zero_grad()
    d = gan_discriminator_loss(disc, out, batch, lcfg, RES)
    if code_disc is not None:
        code_disc.zero_grad()
        d = d + true_face_discriminator_loss(code_disc, out)
    assert torch.isfinite(d)
    d.backward()
    discs = [disc] + ([code_disc] if code_disc is not None else [])
    for name, p in [(n, p) for m in discs for n, p in m.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_gan_and_true_face_values():
    torch.manual_seed(0)
    mcfg = ModelConfig(arch="df", resolution=RES, ae_dims=32, e_dims=16, d_dims=16, d_mask_dims=4)
    lcfg = LossConfig(gan_power=1.0, gan_dims=4, true_face_power=0.5, masked_training=False)
    disc, code_disc = build_patch_discriminator(mcfg, lcfg), build_code_discriminator(mcfg)
    for m in (disc, code_disc):  # zero logits everywhere: every BCE is log 2
        for p in m.parameters():
            torch.nn.init.zeros_(p)
    batch, out = _batch(), _out()
    out["src_code"], out["dst_code"] = torch.randn(2, 32, 8, 8), torch.randn(2, 32, 8, 8)
    ln2 = float(np.log(2))
    with torch.no_grad():
        assert float(gan_generator_loss(disc, out, batch, lcfg, RES)) == pytest.approx(2 * ln2, rel=1e-5)
        assert float(gan_discriminator_loss(disc, out, batch, lcfg, RES)) == pytest.approx(2 * ln2, rel=1e-5)
        assert float(true_face_generator_loss(code_disc, out, lcfg)) == pytest.approx(0.5 * ln2, rel=1e-5)
        assert float(true_face_discriminator_loss(code_disc, out)) == pytest.approx(ln2, rel=1e-5)
