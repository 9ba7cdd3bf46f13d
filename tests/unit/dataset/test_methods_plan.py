"""The method axis of a dataset plan: exact shares, one method per fake kept in the plan, the models the
mix needs, and a bad mix refused before work, naming the field."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from dflray.config import ConfigError, GenerateConfig, load_config
from dflray.dataset.pipeline import check_methods
from dflray.dataset.plan import assign_methods
from dflray.dataset.stages.identities import Identities
from dflray.dataset.stages.plan import plan_dataset
from dflray.dataset.stages.publish import _method_of
from dflray.dataset.stages.train import model_jobs, model_overrides


def _cfg(*overrides: str) -> GenerateConfig:
    return load_config(GenerateConfig, overrides=["videos=[a.mp4]", "splits={train: 1.0, val: 0.0, test: 0.0}",
                                                  *overrides])


def _people(n: int) -> Identities:
    """n videos of n/2 people (two videos each)."""
    videos = [{"video_id": f"v{i:03d}", "uri": f"/data/v{i:03d}.mp4", "identity": f"p{i // 2}",
               "identity_source": "label", "attributes": {}} for i in range(n)]
    rng = np.random.default_rng(0)
    return Identities(videos, {f"p{i}": rng.normal(size=128) for i in range(n // 2)},
                      frozenset(v["video_id"] for v in videos))


def test_methods_get_exact_shares_from_a_seeded_order():
    items = [f"item{i}" for i in range(101)]
    got = assign_methods(items, [("liae", 0.5), ("sbi", 0.3), ("landmark-warp", 0.2)], seed=4)
    counts = {m: list(got.values()).count(m) for m in ("liae", "sbi", "landmark-warp")}
    assert counts == {"liae": 51, "sbi": 30, "landmark-warp": 20} and set(got) == set(items)
    assert got == assign_methods(list(reversed(items)), [("liae", 0.5), ("sbi", 0.3), ("landmark-warp", 0.2)], 4)
    other = assign_methods(items, [("liae", 0.5), ("sbi", 0.3), ("landmark-warp", 0.2)], seed=5)
    assert other != got  # another seed, another draw (same counts)
    assert assign_methods([], [("sbi", 1.0)], 0) == {}


def test_plan_rows_carry_their_method_and_only_model_methods_need_models():
    cfg = _cfg("methods=[{name: liae, share: 0.25}, {name: df, share: 0.25}, {name: sbi, share: 0.25},"
               " {name: landmark-warp, share: 0.25}]", "pairing.fakes_per_video=1")
    plan = plan_dataset(cfg, _people(40)).rows
    fakes = [r for r in plan if r["kind"] == "FAKE"]
    assert len(fakes) == 40 and {m: sum(r["method"] == m for r in fakes) for m in ("liae", "df", "sbi", "landmark-warp")} \
        == {"liae": 10, "df": 10, "sbi": 10, "landmark-warp": 10}
    assert all(r["model_key"] == "" for r in fakes if r["method"] in ("sbi", "landmark-warp"))
    assert all(r["model_key"] and not r["model_key"].endswith("-liae") for r in fakes if r["method"] == "liae")
    assert all(r["model_key"].endswith("-df") for r in fakes if r["method"] == "df")  # not the plan's arch
    jobs = model_jobs(plan)
    assert set(jobs) == {r["model_key"] for r in fakes if r["method"] in ("liae", "df")}
    overrides = model_overrides(plan)
    assert all(overrides[r["model_key"]] == {"arch": "df"} for r in fakes if r["method"] == "df")
    assert all(overrides[r["model_key"]] == {"arch": "liae"} for r in fakes if r["method"] == "liae")
    # Without a mix: the plan of before (no method, one model per source identity).
    plain = plan_dataset(_cfg("pairing.fakes_per_video=1"), _people(40)).rows
    assert [r["item_id"] for r in plain] == [r["item_id"] for r in plan]
    assert all(r["method"] == "" and r["model_key"] for r in plain if r["kind"] == "FAKE")


@pytest.mark.parametrize("override, field, message", [
    ("methods=[{name: faceswap9, share: 1.0}]", "methods[0].name", "unknown method 'faceswap9'"),
    ("methods=[{name: sbi, share: 0.5}, {name: landmark-warp, share: 0.5, settings: {candidates: 0}}]",
     "methods[1].settings.candidates", ""),
    ("methods=[{name: sbi, share: 1.0, settings: {colour: 3}}]", "methods[0].settings.colour", "unknown option"),
])
def test_a_bad_mix_is_refused_naming_the_field(override, field, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(field)}: .*{message}"):
        check_methods(_cfg(override))


def test_shares_that_do_not_sum_to_one_are_refused_when_the_plan_loads():
    with pytest.raises(ConfigError, match=r"^methods: the shares must sum to 1, got 0.9 \(sbi, liae\)"):
        _cfg("methods=[{name: sbi, share: 0.4}, {name: liae, share: 0.5}]")


def test_a_method_fake_is_published_with_its_version_settings_and_id():
    from dflray.merge.methods import method_id

    row = {"kind": "FAKE", "method": "sbi", "model_key": ""}
    model, how = _method_of(row, {}, {"sbi": {}})
    assert model["ok"] and model["contract"]["arch"] == "sbi" and model["model_sha256"] == method_id("sbi", {})
    assert how["method_version"] == 1 and json.loads(how["method_settings"])  # every setting, defaults included
    _, liae = _method_of({"kind": "FAKE", "method": "", "model_key": "k"}, {"contract": {"arch": "liae-ud"}}, {})
    assert liae == {"method_version": 1, "method_settings": "{}", "named": None}
    _, q96 = _method_of({"kind": "FAKE", "method": "quick96", "model_key": "k-quick96"}, {"contract": {"arch": "df-ud"}}, {})
    assert q96 == {"method_version": 1, "method_settings": "{}", "named": "quick96"}  # published as dflray-quick96


def test_quick96_trains_its_own_fixed_model():
    """DeepFaceLab's Quick96 is a fixed df-ud model at 96 px on full faces: its models get that model, not
    the plan's, under keys of their own."""
    from dflray.config import ModelConfig, from_dict

    cfg = _cfg("methods=[{name: liae, share: 0.5}, {name: quick96, share: 0.5}]", "pairing.fakes_per_video=1")
    check_methods(cfg)
    plan = plan_dataset(cfg, _people(8)).rows
    q = [r for r in plan if r["kind"] == "FAKE" and r["method"] == "quick96"]
    assert len(q) == 4 and all(r["model_key"].endswith("-quick96") for r in q)
    model = from_dict(ModelConfig, model_overrides(plan)[q[0]["model_key"]])
    assert (model.arch_string, model.resolution, model.face_type, model.ae_dims, model.e_dims, model.d_dims,
            model.d_mask_dims) == ("df-ud", 96, "full", 128, 64, 64, 16)


def test_amp_trains_the_plans_model_as_amp_and_merges_at_its_morph():
    """amp: the plan's models.train.model with arch amp under keys of its own; each amp fake's merge task
    carries the method's merge-time morph_factor; it publishes as dflray-amp with its settings."""
    from dflray.config import ModelConfig
    from dflray.dataset.stages.merge import _merge_config, _merge_tasks

    cfg = _cfg("methods=[{name: liae, share: 0.5}, {name: amp, share: 0.5, settings: {morph_factor: 0.75}}]",
               "pairing.fakes_per_video=1")
    check_methods(cfg)
    plan = plan_dataset(cfg, _people(8)).rows
    amp = [r for r in plan if r["kind"] == "FAKE" and r["method"] == "amp"]
    liae = [r for r in plan if r["kind"] == "FAKE" and r["method"] == "liae"]
    assert len(amp) == len(liae) == 4 and all(r["model_key"].endswith("-amp") for r in amp)
    assert not {r["model_key"] for r in amp} & {r["model_key"] for r in liae}
    overrides = model_overrides(plan)
    assert all(overrides[r["model_key"]] == {"arch": "amp"} for r in amp)
    model = ModelConfig(**{**cfg.models.train.model.__dict__, **overrides[amp[0]["model_key"]]})
    assert model.arch_string == "amp" and model.resolution == cfg.models.train.model.resolution
    models = {r["model_key"]: {"ok": True, "source": r["model_key"], "model_uri": f"/m/{r['model_key']}.ts",
                               "contract": {}, "model_sha256": "0" * 64} for r in plan if r["kind"] == "FAKE"}
    tasks = {t.id: t for t in _merge_tasks(cfg, _merge_config(cfg, "d"), plan, models, "/fs", {}, set())}
    assert {tasks[r["item_id"]].morph_factor for r in amp} == {0.75}
    assert {tasks[r["item_id"]].morph_factor for r in liae} == {None}
    _, how = _method_of(amp[0], {"contract": {"arch": "amp"}}, {"amp": {"morph_factor": 0.75}})
    assert how == {"method_version": 1, "method_settings": '{"morph_factor": 0.75}', "named": "amp"}


@pytest.mark.parametrize("override, field, message", [
    ("models.train.model.resolution=80", "methods[1].name", "amp trains .* resolution: must be a multiple of 32 for amp"),
    ("methods=[{name: liae, share: 0.5}, {name: amp, share: 0.5, settings: {morph_factor: 1.5}}]",
     "methods[1].settings.morph_factor", "must be in 0..1"),
    ("merge.predict.morph_factor=0.5", "merge.predict.morph_factor", "per method"),
])
def test_a_bad_amp_plan_is_refused_naming_the_field(override, field, message):
    from dflray.dataset.pipeline import _check_plan

    base = "methods=[{name: liae, share: 0.5}, {name: amp, share: 0.5}]"
    overrides = [base, "models.train.model.d=false", override] if "resolution" in override else [base, override]
    with pytest.raises(ConfigError, match=f"^{re.escape(field)}: .*{message}"):
        cfg = _cfg(*overrides)
        check_methods(cfg)
        _check_plan(cfg)


@pytest.mark.parametrize("gate, message", [
    ("{metric: swap_success, min: 0.5, methods: [faceswap9]}", "unknown method 'faceswap9'"),
    ("{metric: swap_success, min: 0.5, methods: [quick96]}", "the plan makes no quick96 fakes \\(it makes liae, sbi\\)"),
])
def test_a_gate_naming_a_method_the_plan_does_not_make_is_refused(gate, message):
    cfg = _cfg("methods=[{name: liae, share: 0.5}, {name: sbi, share: 0.5}]", f"quality.gates=[{gate}]")
    with pytest.raises(ConfigError, match=f"^quality.gates\\[0\\].methods: .*{message}"):
        check_methods(cfg)
    check_methods(_cfg("quality.gates=[{metric: seam, max: 2, methods: [liae]}]"))  # no mix: the plan's arch



def test_fakes_per_video_per_method_fakes_every_video_with_every_method_from_the_same_sources():
    """FaceForensics++'s design: each target video faked once by each method, from the same source identity;
    a second source per video serves only the methods asking for two."""
    cfg = _cfg("pairing.fakes_per_video=2", "methods=[{name: liae, fakes_per_video: 2}, {name: sbi, fakes_per_video: 1},"
               " {name: landmark-warp, fakes_per_video: 1}]")
    assert cfg.methods_per_video and cfg.fakes_per_real == 4
    check_methods(cfg)
    plan = plan_dataset(cfg, _people(12)).rows
    reals = [r for r in plan if r["kind"] == "REAL"]
    fakes = [r for r in plan if r["kind"] == "FAKE"]
    assert len(fakes) == 4 * len(reals) and len({r["item_id"] for r in fakes}) == len(fakes)
    for v in reals:
        mine = [r for r in fakes if r["video_id"] == v["video_id"]]
        by = {m: [r["source_identity"] for r in mine if r["method"] == m] for m in ("liae", "sbi", "landmark-warp")}
        assert len(by["liae"]) == 2 and len(set(by["liae"])) == 2  # two sources, one fake each
        assert by["sbi"] == by["landmark-warp"] == by["liae"][:1]  # the best source serves every method
    assert all(r["model_key"] == "" for r in fakes if r["method"] != "liae")
    # The same plan again: the same rows (ids name the method, so one pair's fakes never collide).
    assert list(plan_dataset(cfg, _people(12)).rows) == list(plan)


@pytest.mark.parametrize("overrides, field, message", [
    (["methods=[{name: liae, fakes_per_video: 1}, {name: sbi, share: 0.5}]"], "methods",
     "every method a share, or every method a fakes_per_video"),
    (["methods=[{name: liae, fakes_per_video: 2}]"], "methods[0].fakes_per_video",
     "2 is more than pairing.fakes_per_video \\(1\\)"),
    (["methods=[{name: liae, share: 0.5, fakes_per_video: 1}]"], "methods[0].share", "not both"),
    (["methods=[{name: liae}, {name: sbi, share: 0.5}]"], "methods[0].share", "give a share"),
    (["methods=[{name: sbi, fakes_per_video: 0}]"], "methods[0].fakes_per_video", "must be >= 1"),
])
def test_a_bad_per_video_mix_is_refused_naming_the_field(overrides, field, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(field)}: .*{message}"):
        _cfg(*overrides)


def test_a_lone_method_needs_no_share():
    cfg = _cfg("methods=[{name: sbi}]")
    assert cfg.method_shares() == [("sbi", 1.0)] and not cfg.methods_per_video
