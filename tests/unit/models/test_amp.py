"""DeepFaceLab's AMP model: its layers at DFL's sizes, the training mix, the merge-time morph, what
trains, the export's settable morph, and its config checks."""

from __future__ import annotations

import io

import pytest
import torch

from dflray.artifacts.checkpoint import load_payload, save_payload
from dflray.artifacts.export import SwapModule
from dflray.config import ConfigError, ModelConfig, TrainConfig
from dflray.merge.predict import set_morph
from dflray.models import build_model, count_parameters
from dflray.models.amp import AMPModel, first_channels_mask
from dflray.models.losses import BATCH_KEYS
from dflray.train.step import SwapTrainer, param_checksum

TINY = ModelConfig(arch="amp", resolution=64, ae_dims=32, inter_dims=64, e_dims=16, d_dims=16, d_mask_dims=4)


def _heads(model: AMPModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    code = model.encoder(x)
    return model.inter_src(code), model.inter_dst(code)


def test_dfl_default_layers_have_dfl_sizes():
    # DFL's AMP defaults: 224 px whole face, ae 256, inter 1024, e 64, d 64, d_mask 22.
    cfg = ModelConfig(arch="amp", resolution=224, face_type="whole_face", ae_dims=256, inter_dims=1024,
                      e_dims=64, d_dims=64, d_mask_dims=22)
    model = build_model(cfg)
    assert isinstance(model, AMPModel) and model.code_shape == (1024, 7, 7)
    counts = count_parameters(model)
    dense1 = model.encoder[1]
    assert (dense1.in_features, dense1.out_features) == (64 * 8 * 7 * 7, 256)  # 5 downscales: 224 -> 7
    assert counts["inter_src"] == counts["inter_dst"] == 256 * 7 * 7 * 1024 + 7 * 7 * 1024
    assert model.decoder.face[0].conv.in_channels == 1024 and model.decoder.mask[0].conv.in_channels == 1024
    assert len(model.decoder.mask) == 5 and model.decoder.double  # mask: five upscales; face: 2x depth-to-space
    face, fm, dm = model.swap(torch.rand(1, 3, 224, 224))
    assert face.shape == (1, 3, 224, 224) and fm.shape == dm.shape == (1, 1, 224, 224)


def test_training_src_code_takes_exactly_k_channels_from_the_src_head_per_sample():
    torch.manual_seed(0)
    model = build_model(TINY)
    src, dst = torch.rand(4, 3, 64, 64), torch.rand(3, 3, 64, 64)
    out = model(src, dst)
    # The heads of the batch the forward pass encodes (src and dst together): a matmul over 4 rows need not
    # round exactly as the same rows among 7 do, and the checks below compare bit for bit.
    a, b = (h[:4] for h in _heads(model, torch.cat([src, dst])))
    k = int(TINY.inter_dims * TINY.morph_factor)
    per_channel_a = (out["src_code"] == a).flatten(2).all(2)  # (N, C): channel taken whole from inter_src
    per_channel_b = (out["src_code"] == b).flatten(2).all(2)
    assert bool((per_channel_a ^ per_channel_b).all())  # every channel is one head's, never a blend
    assert per_channel_a.sum(1).tolist() == [k] * 4
    assert len({tuple(r.tolist()) for r in per_channel_a}) > 1  # a fresh subset per sample
    assert torch.equal(out["dst_code"], _heads(model, torch.cat([src, dst]))[1][4:])  # dst reads inter_dst only


def test_swap_morph_slices_the_first_channels_from_the_src_head():
    torch.manual_seed(1)
    model = build_model(TINY).eval()
    x = torch.rand(2, 3, 64, 64)
    a, b = _heads(model, x)
    with torch.no_grad():
        for morph, k in ((1.0, 64), (0.0, 0), (0.5, 32), (0.3, 19)):
            model.set_morph(morph)
            face, fm, dm = model.swap(x)
            code = torch.cat([a[:, :k], b[:, k:]], 1)
            ref_face, ref_fm = model.decoder(code)
            assert torch.allclose(face, ref_face, atol=1e-6) and torch.allclose(fm, ref_fm, atol=1e-6), morph
            assert torch.allclose(dm, model.decoder.forward_mask(b), atol=1e-6)
        # morph 0 is dst's own reconstruction: the training graph's dst_dst on the same crops
        model.set_morph(0.0)
        assert torch.allclose(model.swap(x)[0], model(x, x)["dst_dst"], atol=1e-6)
    with pytest.raises(ValueError, match="morph must be in 0..1"):
        model.set_morph(1.5)
    assert first_channels_mask(10, torch.tensor(0.25), torch.zeros(1)).flatten().tolist() == [1.0, 1.0] + [0.0] * 8


def test_only_encoder_and_decoder_train_as_in_dfl():
    cfg = TrainConfig(model=TINY, batch_size=2)
    t = SwapTrainer(cfg, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    batch = {k: (torch.rand(2, 1 if k.endswith(("m", "m_em")) else 3, 64, 64, generator=g)) for k in BATCH_KEYS}
    heads = {n: p.clone() for n, p in t.model.named_parameters() if n.startswith("inter_")}
    enc, dec = param_checksum(t.model.encoder), param_checksum(t.model.decoder)
    names = {id(p) for p in t.model.generator_parameters()}
    assert names == {id(p) for n, p in t.model.named_parameters() if not n.startswith("inter_")}
    for _ in range(3):
        assert t.train_step(batch) is not None
    assert all(torch.equal(p, heads[n]) for n, p in t.model.named_parameters() if n.startswith("inter_"))
    assert param_checksum(t.model.encoder) != enc and param_checksum(t.model.decoder) != dec


def test_resumed_training_draws_the_same_mixes_as_an_unbroken_run(tmp_path):
    cfg = TrainConfig(model=TINY, batch_size=2)
    g = torch.Generator().manual_seed(3)
    batches = [{k: torch.rand(2, 1 if k.endswith(("m", "m_em")) else 3, 64, 64, generator=g) for k in BATCH_KEYS}
               for _ in range(4)]
    a = SwapTrainer(cfg, torch.device("cpu"))
    for bt in batches[:2]:
        a.train_step(bt)
    save_payload(str(tmp_path), a.payload())
    payload = load_payload(str(tmp_path))
    assert "mix_draws" in payload["model"] and "morph" not in payload["model"]  # morph is the merge's choice
    b = SwapTrainer(cfg, torch.device("cpu"))
    torch.manual_seed(12345)  # another global random state: the mixes must not depend on it
    b.load(payload)
    for bt in batches[2:]:
        a.train_step(bt)
        b.train_step(bt)
    assert param_checksum(a.model) == param_checksum(b.model)


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_exported_model_keeps_a_settable_morph():
    torch.manual_seed(2)
    model = build_model(TINY).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(SwapModule(model), x, check_trace=True)
    buf = io.BytesIO()
    torch.jit.save(traced, buf)
    loaded = torch.jit.load(io.BytesIO(buf.getvalue()))
    with torch.no_grad():
        for morph in (1.0, 0.4, 0.0):
            set_morph(loaded, morph, "amp")
            model.set_morph(morph)
            assert torch.allclose(loaded(x)[0], model.swap(x)[0], atol=1e-6), morph
        assert not torch.allclose(loaded(x)[0], (set_morph(loaded, 1.0), loaded(x)[0])[1], atol=1e-4)
    df = torch.jit.trace(SwapModule(build_model(ModelConfig(arch="df", resolution=64, ae_dims=32, e_dims=16,
                                                                 d_dims=16, d_mask_dims=4)).eval()), x)
    with pytest.raises(ValueError, match="AMP models only; this model is df-ud"):
        set_morph(df, 0.5, "df-ud")


def test_amp_config_is_checked_naming_the_field():
    assert ModelConfig.from_arch_string("amp").arch_string == "amp"
    assert ModelConfig(arch="amp", u=True, d=True).arch_string == "amp"  # flags do not apply
    with pytest.raises(ConfigError, match="^model.arch: amp has DFL's fixed layout"):
        ModelConfig.parse_arch("amp-ud")
    with pytest.raises(ConfigError, match="^resolution: must be a multiple of 32 for amp"):
        ModelConfig(arch="amp", d=False, resolution=80)
    with pytest.raises(ConfigError, match="^morph_factor: must be in 0.1..0.5"):
        ModelConfig(arch="amp", morph_factor=0.6)
    with pytest.raises(ConfigError, match="^inter_dims: must be in 32..2048"):
        ModelConfig(arch="amp", inter_dims=16)
    with pytest.raises(ValueError, match="builds arch amp"):
        AMPModel(ModelConfig(arch="df"))


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_checkpoint_exports_and_the_predictor_sets_its_morph(tmp_path):
    """A trained AMP checkpoint → ``export_model`` → ``Predictor.load(morph_factor=...)``; the merge's
    model check refuses a morph for a model without one, naming the field."""
    import numpy as np

    from dflray.artifacts.export import export_model, load_exported
    from dflray.merge.pipeline import check_model
    from dflray.merge.predict import Predictor

    crops = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    for arch in ("amp", "df"):
        fields = {**TINY.__dict__, "arch": arch}
        t = SwapTrainer(TrainConfig(model=ModelConfig(**fields), batch_size=2), torch.device("cpu"))
        (tmp_path / arch).mkdir()
        save_payload(str(tmp_path / arch), t.payload())
        export_model(str(tmp_path / arch), str(tmp_path / f"{arch}.ts"))
    _, contract = load_exported(str(tmp_path / "amp.ts"))
    assert contract.arch == "amp"
    full = Predictor.load(str(tmp_path / "amp.ts"), "cpu")(crops)[0]
    half = Predictor.load(str(tmp_path / "amp.ts"), "cpu", morph_factor=0.5)(crops)[0]
    again = Predictor.load(str(tmp_path / "amp.ts"), "cpu", morph_factor=1.0)(crops)[0]
    assert np.array_equal(full, again) and np.abs(full - half).max() > 1e-4
    check_model(str(tmp_path / "amp.ts"), contract, 0.5)
    _, df_contract = load_exported(str(tmp_path / "df.ts"))
    with pytest.raises(ValueError, match="^predict.morph_factor: morph_factor applies to AMP models only; this "
                                         "model is df-ud"):
        check_model(str(tmp_path / "df.ts"), df_contract, 0.5)
    with pytest.raises(ConfigError, match="^morph_factor: must be in 0..1"):
        from dflray.config import PredictConfig
        PredictConfig(morph_factor=1.2)
