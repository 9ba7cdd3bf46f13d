"""DF/LIAE autoencoder and discriminators: shapes, DFL wiring, parameter counts, tracing."""

from __future__ import annotations

import itertools

import pytest
import torch

from dflray.artifacts.export import SwapModule
from dflray.config import LossConfig, ModelConfig
from dflray.models import (
    CodeDiscriminator,
    UNetPatchDiscriminator,
    build_code_discriminator,
    build_model,
    build_patch_discriminator,
    count_parameters,
)
from dflray.models.discriminators import _receptive_field, unet_layers
from dflray.models.layers import Activation, pixel_norm

FLAGS = ["".join(f for f, on in zip("udtc", bits) if on) for bits in itertools.product([0, 1], repeat=4)]
TINY = dict(resolution=64, ae_dims=32, e_dims=16, d_dims=16, d_mask_dims=4)


def _tiny(arch: str, flags: str = "ud") -> ModelConfig:
    return ModelConfig(arch=arch, **{f: f in flags for f in "udtc"}, **TINY)


# Parameter counts written from DFL's layer shapes (DeepFakeArchi), independently of the model code.
def _conv(i: int, o: int, k: int) -> int:
    return k * k * i * o + o


def _dense(i: int, o: int) -> int:
    return i * o + o


def _up(i: int, o: int) -> int:
    return _conv(i, 4 * o, 3)


def _res(c: int) -> int:
    return 2 * _conv(c, c, 3)


def _expected_counts(cfg: ModelConfig) -> dict[str, int]:
    e, r, ae, dd, dm = cfg.e_dims, cfg.resolution, cfg.ae_dims, cfg.d_dims, cfg.d_mask_dims
    if cfg.t:
        enc = (_conv(3, e, 5) + _res(e) + _conv(e, 2 * e, 5) + _conv(2 * e, 4 * e, 5) + _conv(4 * e, 8 * e, 5)
               + _conv(8 * e, 8 * e, 5) + _res(8 * e))
        flat = 8 * e * (r // 32) ** 2
    else:
        enc = _conv(3, e, 5) + _conv(e, 2 * e, 5) + _conv(2 * e, 4 * e, 5) + _conv(4 * e, 8 * e, 5)
        flat = 8 * e * (r // 16) ** 2
    low = r // (32 if cfg.d else 16)

    def inter(out_ch: int) -> int:
        return _dense(flat, ae) + _dense(ae, low * low * out_ch) + (0 if cfg.t else _up(out_ch, out_ch))

    def decoder(z: int) -> int:
        if cfg.t:
            face = (_up(z, 8 * dd) + _res(8 * dd) + _up(8 * dd, 8 * dd) + _res(8 * dd) + _up(8 * dd, 4 * dd)
                    + _res(4 * dd) + _up(4 * dd, 2 * dd) + _res(2 * dd))
            mask = _up(z, 8 * dm) + _up(8 * dm, 8 * dm) + _up(8 * dm, 4 * dm) + _up(4 * dm, 2 * dm)
        else:
            face = (_up(z, 8 * dd) + _res(8 * dd) + _up(8 * dd, 4 * dd) + _res(4 * dd) + _up(4 * dd, 2 * dd)
                    + _res(2 * dd))
            mask = _up(z, 8 * dm) + _up(8 * dm, 4 * dm) + _up(4 * dm, 2 * dm)
        face += _conv(2 * dd, 3, 1) + (3 * _conv(2 * dd, 3, 3) if cfg.d else 0)
        mask += _up(2 * dm, dm) + _conv(dm, 1, 1) if cfg.d else _conv(2 * dm, 1, 1)
        return face + mask

    if cfg.arch == "df":
        counts = {"encoder": enc, "inter": inter(ae), "decoder_src": decoder(ae), "decoder_dst": decoder(ae)}
    else:
        counts = {"encoder": enc, "inter_ab": inter(2 * ae), "inter_b": inter(2 * ae), "decoder": decoder(4 * ae)}
    counts["total"] = sum(counts.values())
    return counts


@pytest.mark.parametrize("flags", FLAGS, ids=lambda f: f or "none")
@pytest.mark.parametrize("arch", ["df", "liae"])
def test_every_arch_and_flag_set(arch, flags):
    torch.manual_seed(0)
    cfg = _tiny(arch, flags)
    model = build_model(cfg)
    assert count_parameters(model) == _expected_counts(cfg)
    src, dst = torch.rand(2, 3, 64, 64), torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        out = model(src, dst)
        face, face_mask, dst_mask = model.swap(dst)
    for key, n in [("src_src", 2), ("dst_dst", 3), ("src_dst", 3)]:
        assert out[key].shape == (n, 3, 64, 64)
        assert out[f"{key}_mask"].shape == (n, 1, 64, 64)
        for t in (out[key], out[f"{key}_mask"]):
            assert torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1
    assert out["src_code"].shape == (2, *model.code_shape)
    assert out["dst_code"].shape == (3, *model.code_shape)
    # The batched training graph and the inference path agree.
    torch.testing.assert_close(face, out["src_dst"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(face_mask, out["src_dst_mask"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(dst_mask, out["dst_dst_mask"], atol=1e-5, rtol=1e-4)
    assert any(isinstance(m, Activation) and m.cos for m in model.modules()) == ("c" in flags)


@pytest.mark.parametrize("arch", ["liae-ud", "df-ud"])
def test_default_model_counts_and_forward(arch):
    cfg = ModelConfig.from_arch_string(arch)  # resolution 128, ae 256, e 64, d 64, d_mask 22
    model = build_model(cfg)
    counts = count_parameters(model)
    print(f"{arch} parameters: {counts}")
    assert counts == _expected_counts(cfg)
    # The same totals expanded by hand from DFL's shapes at these defaults (res 128 -> 8x8 encoder, 4x4 dense).
    enc = 25 * (3 * 64 + 64 * 128 + 128 * 256 + 256 * 512) + (64 + 128 + 256 + 512)
    if arch == "liae-ud":
        inter = (32768 * 256 + 256) + (256 * 16 * 512 + 16 * 512) + (9 * 512 * 2048 + 2048)
        face = ((9 * 1024 * 2048 + 2048) + 2 * (9 * 512 * 512 + 512) + (9 * 512 * 1024 + 1024)
                + 2 * (9 * 256 * 256 + 256) + (9 * 256 * 512 + 512) + 2 * (9 * 128 * 128 + 128)
                + (128 * 3 + 3) + 3 * (9 * 128 * 3 + 3))
        mask = (9 * 1024 * 704 + 704) + (9 * 176 * 352 + 352) + (9 * 88 * 176 + 176) + (9 * 44 * 88 + 88) + 23
        assert counts["total"] == enc + 2 * inter + face + mask == 82_376_555
    else:
        inter = (32768 * 256 + 256) + (256 * 16 * 256 + 16 * 256) + (9 * 256 * 1024 + 1024)
        face = ((9 * 256 * 2048 + 2048) + 2 * (9 * 512 * 512 + 512) + (9 * 512 * 1024 + 1024)
                + 2 * (9 * 256 * 256 + 256) + (9 * 256 * 512 + 512) + 2 * (9 * 128 * 128 + 128)
                + (128 * 3 + 3) + 3 * (9 * 128 * 3 + 3))
        mask = (9 * 256 * 704 + 704) + (9 * 176 * 352 + 352) + (9 * 88 * 176 + 176) + (9 * 44 * 88 + 88) + 23
        assert counts["total"] == enc + inter + 2 * (face + mask) == 54_470_998
    with torch.no_grad():
        out = model(torch.rand(1, 3, 128, 128), torch.rand(1, 3, 128, 128))
    assert out["src_dst"].shape == (1, 3, 128, 128) and out["dst_dst_mask"].shape == (1, 1, 128, 128)


def test_liae_swap_goes_through_inter_ab_twice():
    torch.manual_seed(0)
    model = build_model(_tiny("liae", "ud")).eval()
    dst = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        face, face_mask, dst_mask = model.swap(dst)
        feats = model.encoder(dst)
        ab, b = model.inter_ab(feats), model.inter_b(feats)
        ref_face, ref_mask = model.decoder(torch.cat([ab, ab], 1))
        _, ref_dst_mask = model.decoder(torch.cat([b, ab], 1))
        out = model(torch.rand(2, 3, 64, 64), dst)
    torch.testing.assert_close(face, ref_face)
    torch.testing.assert_close(face_mask, ref_mask)
    torch.testing.assert_close(dst_mask, ref_dst_mask)
    torch.testing.assert_close(out["dst_code"], torch.cat([b, ab], 1), atol=1e-5, rtol=1e-4)


def test_df_swap_is_src_decoder_on_dst_code():
    torch.manual_seed(0)
    model = build_model(_tiny("df", "ud")).eval()
    dst = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        face, face_mask, dst_mask = model.swap(dst)
        code = model.inter(model.encoder(dst))
        ref_face, ref_mask = model.decoder_src(code)
        _, ref_dst_mask = model.decoder_dst(code)
    torch.testing.assert_close(face, ref_face)
    torch.testing.assert_close(face_mask, ref_mask)
    torch.testing.assert_close(dst_mask, ref_dst_mask)


def test_pixel_norm_flag_normalises_the_code():
    x = torch.randn(4, 100) * 7
    assert torch.allclose(pixel_norm(x).pow(2).mean(-1), torch.ones(4), atol=1e-4)
    for flags, normed in [("ud", True), ("d", False)]:
        model = build_model(_tiny("df", flags))
        x = torch.rand(3, 3, 64, 64)
        with torch.no_grad():
            code, feats = model.encoder(x), model.encoder.down(x).flatten(1)
        want = feats * torch.rsqrt(feats.pow(2).mean(-1, keepdim=True) + 1e-6) if normed else feats
        torch.testing.assert_close(code, want)


def test_double_resolution_output_takes_one_conv_per_subpixel():
    # With -d, sub-pixel (0, 0) of every 2x2 block comes from out_conv for all colours, (0, 1) from
    # out_conv1, (1, 0) from out_conv2, (1, 1) from out_conv3 (DFL's concat + depth_to_space).
    torch.manual_seed(0)
    dec = build_model(_tiny("df", "ud")).decoder_src
    with torch.no_grad():
        for conv in (dec.out_conv1, dec.out_conv2, dec.out_conv3):
            conv.weight.zero_()
            conv.bias.zero_()
        face = dec.forward_face(torch.randn(1, 32, 4, 4))
    assert face.shape == (1, 3, 64, 64)
    assert torch.all(face[:, :, 0::2, 1::2] == 0.5) and torch.all(face[:, :, 1::2, :] == 0.5)
    assert not torch.any(face[:, :, 0::2, 0::2] == 0.5)


def test_forward_detached_swap_blocks_gradient_to_the_code():
    model = build_model(_tiny("liae", "ud"))
    out = model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64), detached_swap=True)
    torch.testing.assert_close(out["src_dst_detached"], out["src_dst"])
    grads = torch.autograd.grad(out["src_dst_detached"].sum(), list(model.encoder.parameters()) +
                                list(model.decoder.face.parameters()), allow_unused=True)
    n_enc = len(list(model.encoder.parameters()))
    # The decoder runs on a concatenated batch, so the encoder gets exact zeros rather than no gradient.
    assert all(g is None or not g.any() for g in grads[:n_enc])
    assert all(g is not None and g.any() for g in grads[n_enc:])


def test_generator_parameters_freeze_liae_inter_ab_without_random_warp():
    liae = build_model(_tiny("liae", "ud"))
    ab = {id(p) for p in liae.inter_ab.parameters()}
    assert len(liae.generator_parameters(True)) == len(list(liae.parameters()))
    frozen = liae.generator_parameters(False)
    assert not ab & {id(p) for p in frozen}
    assert len(frozen) == len(list(liae.parameters())) - len(ab)
    df = build_model(_tiny("df", "ud"))
    assert len(df.generator_parameters(False)) == len(list(df.parameters()))


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
@pytest.mark.parametrize("arch", ["df", "liae"])
def test_swap_traces_and_matches_eager(arch):
    torch.manual_seed(0)
    model = build_model(_tiny(arch, "udc")).eval()

    dst = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(SwapModule(model), dst)
        other = torch.rand(3, 3, 64, 64)  # a different batch size than traced with
        for got, want in zip(traced(other), model.swap(other)):
            torch.testing.assert_close(got, want)


def test_glorot_init_and_zero_bias():
    model = build_model(_tiny("df", "ud"))
    w = model.encoder.down[0].conv.weight  # 5x5, 3 -> 16
    bound = (6 / (3 * 25 + 16 * 25)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound
    assert all(not m.bias.any() for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def test_unet_layers_receptive_field():
    assert unet_layers(3) == [(3, 2)]
    assert _receptive_field(unet_layers(16)) == 15  # DFL's choice at 128 px (gan_patch_size 16)
    for p in (8, 16, 24, 32, 48, 64, 80):
        assert abs(_receptive_field(unet_layers(p)) - p) <= 2


@pytest.mark.parametrize("resolution,patch", [(64, 8), (128, 16), (96, 12), (160, 40)])
def test_patch_discriminator_shapes(resolution, patch):
    disc = build_patch_discriminator(ModelConfig(resolution=resolution), LossConfig(gan_patch_size=patch, gan_dims=4))
    assert isinstance(disc, UNetPatchDiscriminator)
    stride = 2 ** sum(s == 2 for _, s in unet_layers(patch))
    center, pixels = disc(torch.rand(2, 3, resolution, resolution))
    assert pixels.shape == (2, 1, resolution, resolution)
    assert center.shape == (2, 1, -(-resolution // stride), -(-resolution // stride))


def test_code_discriminator_matches_model_code():
    cfg = _tiny("df", "ud")
    disc = build_code_discriminator(cfg)
    assert isinstance(disc, CodeDiscriminator) and len(disc.convs) == 1 + build_model(cfg).code_shape[1] // 8
    logits = disc(torch.randn(2, *build_model(cfg).code_shape))
    assert logits.shape[:2] == (2, 1) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="df"):
        build_code_discriminator(_tiny("liae", "ud"))


def test_swap_exports_with_a_dynamic_batch():
    # torch.export is the non-deprecated path for merge-time inference graphs.
    torch.manual_seed(0)
    model = build_model(_tiny("liae", "ud")).eval()

    exported = torch.export.export(SwapModule(model), (torch.rand(2, 3, 64, 64),),
                                   dynamic_shapes=({0: torch.export.Dim("batch")},))
    dst = torch.rand(5, 3, 64, 64)
    with torch.no_grad():
        for got, want in zip(exported.module()(dst), model.swap(dst)):
            torch.testing.assert_close(got, want)
