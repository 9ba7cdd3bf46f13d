"""The mode registries: colour transfer (dflray.face.color), mask modes (dflray.merge.masks) and merge
modes (dflray.merge.blend). Duplicates are errors, every registered mode round-trips through its parser,
and the configs accept exactly the registered names."""

from __future__ import annotations

import typing

import pytest

from dflray.config import (
    MASK_MODES,
    MERGE_CT_CHOICES,
    MERGE_MODES,
    TRAIN_CT_CHOICES,
    XSEG_MASK_MODES,
    AugmentConfig,
    MergeConfig,
    MergeSettings,
    TrainConfig,
    from_dict,
)
from dflray.face import color
from dflray.merge import blend, masks


def _literal(cls, name):
    return typing.get_args(typing.get_type_hints(cls)[name])


# ------------------------------------------------------------------------------------ colour transfer


def test_color_duplicate_and_useless_registrations_raise():
    before = dict(color._COLOR_MODES)
    with pytest.raises(ValueError, match="'rct' is already registered"):
        color.register_color("rct", merge=True)(lambda src, ref, area, rng: src)
    with pytest.raises(ValueError, match="for training, merging or both"):
        color.register_color("nowhere")(lambda src, ref, area, rng: src)
    assert color._COLOR_MODES == before


def test_color_mode_sets_come_from_the_registry():
    modes = color._COLOR_MODES.values()
    assert color.TRAIN_CT_MODES == tuple(m.name for m in modes if m.train) == ("rct", "lct", "mkl", "idt", "sot")
    assert color.MERGE_CT_MODES == tuple(m.name for m in modes if m.merge)
    assert set(color.CT_MODES) == set(color._COLOR_MODES)
    assert color.TRAIN_CT_CHOICES == ("none", *color.TRAIN_CT_MODES) == TRAIN_CT_CHOICES
    assert color.MERGE_CT_CHOICES == ("none", *color.MERGE_CT_MODES) == MERGE_CT_CHOICES
    # The configs validate against exactly these (their Literal types are built from them).
    assert _literal(AugmentConfig, "ct_mode") == TRAIN_CT_CHOICES
    assert _literal(MergeSettings, "color_transfer") == MERGE_CT_CHOICES
    assert {m.name for m in modes if m.masked} == {"rct", "mkl-m", "idt-m", "sot-m", "mix-m"}


def test_configs_reject_the_other_uses_colour_modes():
    with pytest.raises(ValueError, match="augment.ct_mode: must be one of none, rct, lct, mkl, idt, sot, got 'mkl-m'"):
        from_dict(TrainConfig, {"augment": {"ct_mode": "mkl-m"}})
    with pytest.raises(ValueError, match="settings.color_transfer: must be one of none, rct, .* got 'sot'"):
        from_dict(MergeConfig, {"settings": {"color_transfer": "sot"}})
    with pytest.raises(ValueError, match="unknown colour transfer mode 'none'"):
        color.color_mode("none")


# ------------------------------------------------------------------------------------ mask modes


def test_mask_registry_is_the_config_vocabulary():
    assert set(masks._MASK_MODES) == set(MASK_MODES)
    assert _literal(MergeSettings, "mask_mode") == MASK_MODES
    assert XSEG_MASK_MODES == tuple(m for m in MASK_MODES if masks.mask_spec(m).needs_xseg)


@pytest.mark.parametrize("mode", MASK_MODES)
def test_every_mask_mode_round_trips_through_the_parser(mode):
    spec = masks.mask_spec(mode)
    assert spec.mode == mode and masks._parse(mode) == spec
    assert masks.mask_spec(MergeSettings(mask_mode=mode)) is spec and masks.mask_spec(spec) is spec
    assert spec.combine == ("single" if len(spec.sources) == 1 else "add" if "+" in mode else "mul")
    assert spec.needs_xseg == (mode in XSEG_MASK_MODES)
    assert spec.needs_learned == any(s.startswith("learned-") for s in spec.sources)
    assert masks.xseg_needs(mode) == ("XSeg-prd" in spec.sources, "XSeg-dst" in spec.sources)


def test_mask_registration_errors():
    def one(ms):
        return ms[0]

    with pytest.raises(ValueError, match="'dst' is already registered"):
        masks.register_mask_mode("dst", combine="single")(one)
    with pytest.raises(ValueError, match="combines by mul, not single"):
        masks.register_mask_mode("dst*XSeg-dst", combine="single")(one)
    with pytest.raises(ValueError, match="unknown mask 'learned'"):
        masks.register_mask_mode("learned*dst", combine="mul")(one)
    with pytest.raises(ValueError, match="mixes"):
        masks.register_mask_mode("dst*XSeg-dst+learned-prd", combine="mul")(one)
    assert set(masks._MASK_MODES) == set(MASK_MODES)
    with pytest.raises(ValueError, match="mask mode must be one of full, dst, .* got 'XSeg'"):
        masks.mask_spec("XSeg")


def test_mask_vocabulary_check_fails_on_a_mismatch(monkeypatch):
    masks._check_vocabulary()
    monkeypatch.setattr(masks, "MASK_MODES", MASK_MODES[:-1])
    with pytest.raises(RuntimeError, match="differs from dflray.config.MASK_MODES"):
        masks._check_vocabulary()
    monkeypatch.setattr(masks, "MASK_MODES", MASK_MODES)
    monkeypatch.setattr(masks, "XSEG_MASK_MODES", XSEG_MASK_MODES[:1])
    with pytest.raises(RuntimeError, match="XSEG_MASK_MODES"):
        masks._check_vocabulary()


# ------------------------------------------------------------------------------------ merge (blend) modes


def test_blend_registry_is_the_config_vocabulary(monkeypatch):
    assert set(blend._BLEND_MODES) == set(MERGE_MODES)
    assert _literal(MergeSettings, "mode") == MERGE_MODES
    blend._check_vocabulary()
    monkeypatch.setattr(blend, "MERGE_MODES", MERGE_MODES + ("overlay-plus",))
    with pytest.raises(RuntimeError, match="differs from dflray.config.MERGE_MODES"):
        blend._check_vocabulary()


@pytest.mark.parametrize("mode", MERGE_MODES)
def test_every_merge_mode_round_trips_through_the_parser(mode):
    spec = blend._BLEND_MODES[mode][0]
    assert spec.mode == mode and blend._parse(mode) == spec
    assert blend.merge_spec(MergeSettings(mode=mode)).blend == spec


def test_merge_mode_fields():
    b = {m: blend._parse(m) for m in MERGE_MODES}
    assert [m for m in MERGE_MODES if not b[m].swap] == ["original"]
    assert [m for m in MERGE_MODES if b[m].raw] == ["raw-rgb", "raw-predict"]
    assert [m for m in MERGE_MODES if not b[m].to_frame] == ["raw-predict"]
    assert [m for m in MERGE_MODES if b[m].seamless] == ["seamless", "seamless-hist-match"]
    assert [m for m in MERGE_MODES if b[m].hist_match] == ["hist-match", "seamless-hist-match"]


def test_blend_registration_errors():
    with pytest.raises(ValueError, match="'overlay' is already registered"):
        blend.register_blend_mode("overlay")(lambda job: None)
    with pytest.raises(ValueError, match="merge mode 'seamless-overlay' is not"):
        blend.register_blend_mode("seamless-overlay")(lambda job: None)
    assert set(blend._BLEND_MODES) == set(MERGE_MODES)


def test_merge_spec_parses_settings_and_keeps_the_error_messages():
    spec = blend.merge_spec(MergeSettings(mode="seamless-hist-match", mask_mode="XSeg-prd*XSeg-dst",
                                          color_transfer="none"))
    assert spec.blend.seamless and spec.blend.hist_match and spec.mask.needs_xseg and spec.color is None
    assert blend.merge_spec(MergeSettings(color_transfer="mkl-m")).color == "mkl-m"
    with pytest.raises(ValueError, match=r"^mode must be one of original, overlay, .* got 'blend'$"):
        blend.merge_spec(MergeSettings(mode="blend"))
    with pytest.raises(ValueError, match=r"^mask_mode must be one of full, dst, .* got 'hull'$"):
        blend.merge_spec(MergeSettings(mask_mode="hull"))
