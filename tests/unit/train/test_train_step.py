"""The plain-PyTorch trainer (no Ray): steps, the collapse guard, state round trips, the hold-out split,
held-out SSIM, precision settings, and that the GPU path imports without Ray."""

import os
import subprocess
import sys
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from dflray.artifacts.checkpoint import load_payload, read_meta, save_payload
from dflray.config import ModelConfig, TrainConfig
from dflray.models.losses import BATCH_KEYS
from dflray.train.data import holdout_cuts, is_heldout
from dflray.train.preview import loss_curve
from dflray.train.step import SwapTrainer, autocast_for, cpu_has_bf16, param_checksum, ssim

TINY = ModelConfig(resolution=64, ae_dims=32, e_dims=16, d_dims=16, d_mask_dims=4)


def _batch(n=2, r=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k in BATCH_KEYS:
        mask = k.endswith(("m", "m_em"))
        x = torch.rand(n, 1 if mask else 3, r, r, generator=g)
        out[k] = (x > 0.3).float() if mask else x
    return out


def test_steps_learn_and_count():
    t = SwapTrainer(TrainConfig(model=TINY, batch_size=2), torch.device("cpu"))
    batch = _batch()
    first = t.train_step(batch)
    for _ in range(15):
        last = t.train_step(batch)
    assert t.step == 16 and len(t.history) == 16
    assert last["total"] < first["total"]  # one repeated batch: the loss must fall
    assert [h[0] for h in t.history] == list(range(1, 17))


def test_poisoned_step_is_skipped_and_counted():
    t = SwapTrainer(TrainConfig(model=TINY, batch_size=2), torch.device("cpu"))
    before = param_checksum(t.model)
    assert t.train_step(_batch(), poison=True) is None
    assert (t.step, t.skipped, t.bad_run, len(t.history)) == (0, 1, 1, 0)
    assert param_checksum(t.model) == before  # nothing applied
    assert t.train_step(_batch()) is not None and t.bad_run == 0


def test_payload_round_trip_resumes_exactly(tmp_path):
    cfg = TrainConfig(model=TINY, batch_size=2)
    a = SwapTrainer(cfg, torch.device("cpu"))
    for i in range(3):
        a.train_step(_batch(seed=i))
    a.ssim_history.append((3.0, 0.5))
    save_payload(str(tmp_path), a.payload())
    b = SwapTrainer(cfg, torch.device("cpu"))
    b.load(load_payload(str(tmp_path)))
    assert (b.step, b.history, b.ssim_history) == (a.step, a.history, a.ssim_history)
    assert param_checksum(b.model) == param_checksum(a.model)
    # Both take the same next step from the same state.
    a.train_step(_batch(seed=9))
    b.train_step(_batch(seed=9))
    assert param_checksum(a.model) == param_checksum(b.model)
    meta = read_meta(str(tmp_path))
    assert meta["ssim_history"] == [[3, 0.5]] and meta["heldout_ssim"] == 0.5


def test_start_weights_are_loaded_before_wrap():
    cfg = TrainConfig(model=TINY, batch_size=2)
    a = SwapTrainer(cfg, torch.device("cpu"))
    a.train_step(_batch())
    seen = {}

    def wrap(m):
        seen["checksum"] = param_checksum(m)
        return m

    b = SwapTrainer(cfg, torch.device("cpu"), wrap=wrap, weights=a.payload()["model"])
    assert seen["checksum"] == param_checksum(a.model) == param_checksum(b.model)
    assert b.step == 0


def test_heldout_ssim_is_recorded_and_bounded():
    t = SwapTrainer(TrainConfig(model=TINY, batch_size=2), torch.device("cpu"))
    faces = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    masks = torch.ones(3, 1, 64, 64)
    v = t.heldout_ssim(faces, masks)
    assert -1.0 <= v < 0.9 and t.ssim_history == [(0.0, v)]  # an untrained model does not reconstruct


def test_ssim_identity_and_mask():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-5)
    y = x.clone()
    y[..., :, 16:] = 1 - y[..., :, 16:]  # right half ruined
    left = torch.zeros(2, 1, 32, 32)
    left[..., :, :8] = 1  # far from the ruined half (window 11)
    assert ssim(y, x, left) == pytest.approx(1.0, abs=1e-4)
    assert ssim(y, x) < 0.7


def test_holdout_cuts_take_each_videos_tail():
    vids = np.array(["a"] * 10 + ["b"] * 3 + ["c"])
    frames = np.r_[np.arange(10) * 2, [5, 6, 7], [0]]
    cuts, held = holdout_cuts(vids, frames, 0.2)
    assert cuts == {"a": 16, "b": 7} and held == 3  # a: 2 of 10 (frames 16, 18); b: ceil(0.6)=1; c: too short
    assert is_heldout("a", 18, cuts) and not is_heldout("a", 14, cuts) and not is_heldout("c", 0, cuts)
    assert holdout_cuts(vids, frames, 0.0) == ({}, 0)


def test_autocast_settings():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_for(cpu, "off")[0] is nullcontext and autocast_for(cpu, "fp16")[0] is nullcontext
    # auto: bf16 exactly where the CPU has it natively
    assert (autocast_for(cpu, "auto")[0] is nullcontext) == (not cpu_has_bf16())
    ctx, scaler = autocast_for(cpu, "bf16")
    assert scaler is None
    with ctx():
        assert torch.mm(torch.ones(2, 2), torch.ones(2, 2)).dtype == torch.bfloat16
    assert autocast_for(cuda, "off")[0] is nullcontext


def test_bf16_training_on_cpu_follows_fp32():
    """bf16 autocast keeps fp32 master weights: its loss curve tracks fp32's on the same seed."""
    curves = {}
    for mode in ("off", "bf16"):
        t = SwapTrainer(TrainConfig(model=TINY, batch_size=2, mixed_precision=mode), torch.device("cpu"))
        assert all(p.dtype == torch.float32 for p in t.model.parameters())
        curves[mode] = [t.train_step(_batch(seed=i % 2))["total"] for i in range(12)]
    a, b = np.array(curves["off"]), np.array(curves["bf16"])
    assert np.abs(a - b).max() < 0.05 * a.max()
    assert b[-1] < b[0]


def test_loss_curve_draws_ssim():
    hist = np.stack([np.arange(1, 11), np.linspace(2, 1, 10), np.linspace(2.2, 1.1, 10)], 1).astype(np.float32)
    png = loss_curve(hist, np.array([[5, 0.6], [10, 0.7]], np.float32))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > len(loss_curve(hist))  # the SSIM axis and line add to the image


def test_gpu_path_imports_without_ray():
    code = ("import sys; sys.modules['ray'] = None\n"
            "import dflray.train.step, dflray.train.local, dflray.train.data, dflray.artifacts.export\n"
            "import dflray.models.losses, dflray.merge.predict, dflray.detect, dflray.faceset\n"
            "print('ok')")
    root = os.path.join(os.path.dirname(__file__), "..", "..", "..")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]
