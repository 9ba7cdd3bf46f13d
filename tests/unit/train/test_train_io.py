"""Checkpoint files (safe loading), yaw balancing and preview images — no Ray, no training."""

import dataclasses
import os

import cv2
import numpy as np
import pytest
import torch

from dflray.artifacts.checkpoint import FORMAT, latest_checkpoint, load_payload, read_meta, save_payload
from dflray.config import TrainConfig, to_dict
from dflray.train.data import (
    MIN_EPOCH_SAMPLES,
    SHORT_RUN_FACES,
    SHORT_RUN_SAMPLES,
    FacesetInfo,
    draws_in_worker,
    epoch_plan,
    yaw_repeats,
)
from dflray.train.preview import loss_curve, preview_grid


def _payload(step):
    cfg = TrainConfig()
    return {"format": FORMAT, "model": {"w": torch.ones(2, 2) * step}, "optimizer": {"state": {}, "param_groups": []},
            "discriminators": {}, "model_config": to_dict(cfg.model), "run_config": to_dict(cfg), "step": step,
            "history": torch.zeros(0, 3), "counters": {"skipped_steps": 0, "rollbacks": 0}}


def test_checkpoint_round_trip_and_latest(tmp_path):
    run = tmp_path / "out" / "run"
    for step in (5, 10):
        d = run / f"checkpoint_{step:08d}"
        d.mkdir(parents=True)
        save_payload(str(d), _payload(step))
    (run / "checkpoint_00000015").mkdir()  # incomplete (no meta.json): ignored
    latest = latest_checkpoint(str(tmp_path / "out"))
    assert latest.endswith("checkpoint_00000010")
    assert read_meta(latest)["step"] == 10
    payload = load_payload(latest)
    assert torch.equal(payload["model"]["w"], torch.full((2, 2), 10.0))
    assert load_payload(os.path.join(latest, "model.pt"))["step"] == 10
    assert latest_checkpoint(str(tmp_path / "nothing")) is None


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoint_loading_never_unpickles_objects(tmp_path):
    bad = tmp_path / "model.pt"
    torch.save({"format": FORMAT, "model": _Evil()}, bad)
    # Refused before anything in it runs, and the message never passes on torch's weights_only=False advice.
    with pytest.raises(ValueError, match="unsafe to load") as e:
        load_payload(str(bad))
    assert "weights_only" not in str(e.value)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(1)}, other)
    with pytest.raises(ValueError, match=r"not a dflray checkpoint \(dflray-train-v1\)"):
        load_payload(str(other))


def test_yaw_repeats_balance_bins():
    from dflray.train.augment import yaw_bin_index

    rng = np.random.default_rng(0)
    yaw = np.concatenate([rng.normal(0, 3, 900), rng.uniform(35, 40, 30), [-60.0]])  # degrees, as stored
    repeats = yaw_repeats(yaw, bins=16, max_repeat=1000)
    bins = yaw_bin_index(yaw, 16)
    per_bin = np.bincount(bins, weights=repeats[bins], minlength=16)
    nonempty = per_bin[per_bin > 0]
    assert len(nonempty) >= 3 and nonempty.max() / nonempty.min() < 1.5  # populated bins about equally frequent
    capped = yaw_repeats(yaw, bins=16, max_repeat=4)
    assert capped.max() == 4 and capped.min() == 0


def test_a_pass_is_no_longer_than_the_run_needs():
    """A small faceset is repeated up to MIN_EPOCH_SAMPLES a pass, or to what the whole run takes if that is
    fewer (a fine-tune of a few steps shuffles a few batches, not thousands of rows), never under one pass."""
    info = FacesetInfo(uri="mem://fs", faces=50, face_type="whole_face", size=128, yaw=np.zeros(50))
    cfg = TrainConfig()
    cfg = dataclasses.replace(cfg, augment=dataclasses.replace(cfg.augment, uniform_yaw=False))
    times, yaw, per_pass = epoch_plan(info, cfg)
    assert yaw is None and times == -(-MIN_EPOCH_SAMPLES // 50) and per_pass == times * 50 >= MIN_EPOCH_SAMPLES
    assert epoch_plan(info, cfg, needed=24) == (1, None, 50)  # 6 steps of 4: one pass of the faceset
    assert cfg.batch_size == 8 and cfg.num_workers == 1  # one batch of slack: 8
    assert epoch_plan(info, cfg, needed=120) == (3, None, 150)
    assert epoch_plan(info, cfg, needed=142) == (3, None, 150)
    assert epoch_plan(info, cfg, needed=143) == (4, None, 200)
    # held-out rows are dropped from a pass: 40 of the 50 faces train, so 120 (+8) need 4 repeats
    held = dataclasses.replace(info, heldout=10)
    assert epoch_plan(held, cfg, needed=120) == (4, None, 200)
    assert epoch_plan(info, cfg, needed=10**6)[0] == times  # a long run: MIN_EPOCH_SAMPLES a pass, as before


def test_short_runs_on_small_facesets_draw_in_the_worker():
    """data=auto: the workers draw their own samples for a short run on a small faceset, Ray Data streams
    the rest; data=ray / data=worker force it; deterministic always draws in the worker."""
    cfg = TrainConfig(batch_size=4)
    steps = SHORT_RUN_SAMPLES // 4
    assert draws_in_worker(cfg, faces=50, steps_left=steps)
    assert not draws_in_worker(cfg, faces=50, steps_left=steps + 1)
    assert not draws_in_worker(cfg, faces=SHORT_RUN_FACES + 1, steps_left=6)
    assert not draws_in_worker(dataclasses.replace(cfg, data="ray"), faces=50, steps_left=6)
    assert draws_in_worker(dataclasses.replace(cfg, data="worker"), faces=10**6, steps_left=10**6)
    assert draws_in_worker(dataclasses.replace(cfg, deterministic=True, data="ray"), faces=50, steps_left=10**6)


def test_preview_grid_and_loss_curve_are_pngs():
    rng = np.random.default_rng(0)
    arr = {k: rng.random((3, 3, 64, 64), dtype=np.float32) for k in ("src", "src_src", "dst", "dst_dst", "src_dst")}
    arr["src_dst_mask"] = rng.random((3, 1, 64, 64), dtype=np.float32)
    img = cv2.imdecode(np.frombuffer(preview_grid(arr, 123), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (44 + 3 * 64, 6 * 64, 3)
    hist = np.stack([np.arange(1, 201), np.linspace(3, 1, 200), np.linspace(4, 1, 200)], axis=1)
    curve = cv2.imdecode(np.frombuffer(loss_curve(hist), np.uint8), cv2.IMREAD_COLOR)
    assert curve is not None and curve.shape[0] > 100
