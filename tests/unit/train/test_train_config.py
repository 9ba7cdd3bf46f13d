"""Training config: DFL arch strings, validation naming the field, pretrain's effective options."""

import pytest

from dflray.cli import _expand_arch
from dflray.config import ConfigError, ModelConfig, TrainConfig, load_config


def test_defaults_are_dfl_saehd():
    m = TrainConfig().model
    assert (m.arch_string, m.resolution, m.ae_dims, m.e_dims, m.d_dims, m.d_mask_dims, m.face_type) == \
        ("liae-ud", 128, 256, 64, 64, 22, "full")


@pytest.mark.parametrize("text,fields", [
    ("liae-ud", {"arch": "liae", "u": True, "d": True, "t": False, "c": False}),
    ("df", {"arch": "df", "u": False, "d": False, "t": False, "c": False}),
    ("DF-UDTC", {"arch": "df", "u": True, "d": True, "t": True, "c": True}),
])
def test_parse_arch(text, fields):
    assert ModelConfig.parse_arch(text) == fields
    assert ModelConfig.from_arch_string(text).arch_string == text.lower()


@pytest.mark.parametrize("text", ["dfx", "liae-ux", "sae-ud", ""])
def test_parse_arch_rejects(text):
    with pytest.raises(ConfigError, match=r"^model\.arch"):
        ModelConfig.parse_arch(text)


@pytest.mark.parametrize("override,field", [
    ("model.resolution=100", "model.resolution"),   # not a multiple of 32 with d
    ("model.resolution=32", "model.resolution"),
    ("model.resolution=704", "model.resolution"),
    ("model.face_type=profile", "model.face_type"),
    ("model.ae_dims=8", "model.ae_dims"),
    ("batch_size=0", "batch_size"),
    ("loss.gan_power=9", "loss.gan_power"),
    ("loss.true_face_power=0.1", "loss.true_face_power"),  # liae: DF only
    ("augment.ct_mode=foo", "augment.ct_mode"),
    ("augment.random_hsv_power=0.5", "augment.random_hsv_power"),
    ("optim.name=sgd", "optim.name"),
    ("optim.lr=0", "optim.lr"),
    ("mixed_precision=fp8", "mixed_precision"),
    ("num_workers=0", "num_workers"),
    ("steps=-1", "steps"),
    ("holdout=0.9", "holdout"),
    ("nope=1", "nope"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, overrides=[override])
    assert str(e.value).startswith(field + ":")


def test_resolution_multiple_of_16_without_d():
    assert ModelConfig(d=False, resolution=112).resolution == 112
    with pytest.raises(ConfigError, match="multiple of 32"):
        ModelConfig(d=True, resolution=112)


def test_true_face_power_with_df():
    cfg = load_config(TrainConfig, overrides=_expand_arch(["loss.true_face_power=0.01"], "df-ud"))
    assert cfg.model.arch == "df" and cfg.loss.true_face_power == 0.01


def test_arch_string_in_overrides_is_parsed_at_the_edge():
    cfg = load_config(TrainConfig, overrides=_expand_arch(["model.arch=df-t", "model.resolution=96"], None))
    assert cfg.model.arch_string == "df-t" and cfg.model.resolution == 96
    # a later flag override wins over the arch string
    cfg = load_config(TrainConfig, overrides=_expand_arch(["model.d=false"], "liae-ud"))
    assert cfg.model.arch_string == "liae-u"


def test_pretrain_switches_off_what_dfl_switches_off():
    cfg = load_config(TrainConfig, overrides=_expand_arch(
        ["pretrain=true", "loss.gan_power=0.1", "loss.true_face_power=0.1", "augment.ct_mode=rct",
         "optim.lr_dropout=true", "loss.face_style_power=1"], "df-ud"))
    eff = cfg.effective
    assert eff.loss.gan_power == eff.loss.true_face_power == eff.loss.face_style_power == 0
    assert eff.augment.ct_mode == "none" and not eff.augment.random_warp and eff.augment.uniform_yaw
    assert not eff.optim.lr_dropout
    assert TrainConfig().effective == TrainConfig()


def test_exponent_floats_without_a_dot():
    assert load_config(TrainConfig, overrides=["optim.lr=5e-5"]).optim.lr == 5e-5
    with pytest.raises(ConfigError, match=r"^optim.lr: expected a number"):
        load_config(TrainConfig, overrides=["optim.lr=fast"])


def test_off_is_the_string_not_yaml_false():
    """YAML 1.1 reads a bare ``off`` as false; a Literal field that allows "off" takes it as that string."""
    assert load_config(TrainConfig, overrides=["mixed_precision=off"]).mixed_precision == "off"
    with pytest.raises(ConfigError) as e:
        load_config(TrainConfig, overrides=["mixed_precision=yes"])  # no "on"/"yes" choice: still an error
    assert "mixed_precision" in str(e.value)
