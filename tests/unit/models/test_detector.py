"""The reference detector: a few steps learn a trivially separable set; weights from elsewhere load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dflray.models.detector import (
    DETECTOR_FORMAT,
    DetectorTrainer,
    adapt_state_dict,
    build_detector,
    detector_loss,
    predict,
    recalibrate_batchnorm,
    to_input,
)
from dflray.quality.detection import auc

SIZE = 32


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-CPU machine two spinning OpenMP threads cost more than they give."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _faces(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise crops; the FAKE half carries a bright square in the middle (a blatant blending artefact)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 120, (n, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.arange(n) % 2
    images[labels == 1, 10:22, 10:22] += 120
    return images, labels.astype(np.float32)


def test_input_is_deepfakebench_normalised():
    x = to_input(torch.tensor([[[[0, 255, 128]]]], dtype=torch.uint8))
    assert x.shape == (1, 3, 1, 1)
    np.testing.assert_allclose(x.flatten().numpy(), [-1.0, 1.0, 128 / 255 * 2 - 1], atol=1e-6)
    with pytest.raises(ValueError, match="N, H, W, 3"):
        to_input(torch.zeros(2, 3, 8, 8))


def test_loss_weights_the_fakes():
    logits, labels = torch.tensor([0.0, 0.0]), torch.tensor([0.0, 1.0])
    plain = detector_loss(logits, labels)
    assert plain.item() == pytest.approx(np.log(2))
    assert detector_loss(logits, labels, pos_weight=3.0).item() == pytest.approx(np.log(2) * (1 + 3) / 2)


def test_a_few_steps_learn_a_separable_set():
    torch.manual_seed(0)
    model = build_detector(SIZE)
    t = DetectorTrainer(model, torch.device("cpu"), lr=3e-3, generator=torch.Generator().manual_seed(0))
    images, labels = _faces(64, seed=1)
    test_images, test_labels = _faces(64, seed=2)
    before = auc(test_labels, predict(model, test_images, torch.device("cpu")))
    losses = []
    for step in range(40):
        i = np.random.default_rng(step).choice(len(images), 16, replace=False)
        losses.append(t.train_step(torch.from_numpy(images[i]), torch.from_numpy(labels[i]))["loss"])
    assert t.steps == 40 and model.training
    batches = [torch.from_numpy(images[i:i + 16]) for i in range(0, 64, 16)]
    assert recalibrate_batchnorm(model, batches, torch.device("cpu")) == 4
    scores = predict(model, test_images, torch.device("cpu"), batch_size=24)
    assert model.training, "predict restores the training mode"
    assert scores.shape == (64,) and ((scores >= 0) & (scores <= 1)).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    assert auc(test_labels, scores) > 0.95, (before, auc(test_labels, scores))


def test_payload_round_trip_and_foreign_weights():
    torch.manual_seed(0)
    a = DetectorTrainer(build_detector(SIZE), torch.device("cpu"))
    images, labels = _faces(8, seed=0)
    a.train_step(torch.from_numpy(images), torch.from_numpy(labels))
    a.epoch = 2
    payload = a.payload({"size": SIZE})
    assert payload["format"] == DETECTOR_FORMAT and payload["epoch"] == 2 and payload["steps"] == 1
    b = DetectorTrainer(build_detector(SIZE), torch.device("cpu"))
    b.load(payload)
    assert (b.epoch, b.steps) == (2, 1)
    np.testing.assert_array_equal(predict(a.model, images, torch.device("cpu")),
                                  predict(b.model, images, torch.device("cpu")))

    # an ImageNet-style B0 state dict: DDP's module. prefix, a 1000-class head the detector does not have
    foreign = {f"module.{k}": v for k, v in build_detector(SIZE).state_dict().items() if not k.startswith("_fc")}
    foreign["module._fc.weight"], foreign["module._fc.bias"] = torch.zeros(1000, 1280), torch.zeros(1000)
    model = build_detector(SIZE)
    fitted, missing = adapt_state_dict(model, foreign)
    assert missing == ["_fc.bias", "_fc.weight"]
    model.load_state_dict(fitted, strict=False)
    assert torch.equal(model.state_dict()["_conv_stem.weight"], foreign["module._conv_stem.weight"])
    with pytest.raises(ValueError, match="fit 0 of"):
        adapt_state_dict(model, {"conv.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match="not a tensor"):
        adapt_state_dict(model, {"_conv_stem.weight": "x"})
    with pytest.raises(ValueError, match="size must be"):
        build_detector(16)


def test_recalibrated_statistics_are_the_data_s():
    torch.manual_seed(0)
    model = build_detector(SIZE)
    images = torch.from_numpy(_faces(12, seed=3)[0])
    bn = model._bn0
    assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert recalibrate_batchnorm(model, [images[:6], images[6:], images[:1]], torch.device("cpu")) == 2
    with torch.no_grad():
        stem = model._conv_stem(to_input(images))
    # the cumulative average of two equal-sized batches' means is the mean over both
    np.testing.assert_allclose(bn.running_mean.numpy(), stem.mean((0, 2, 3)).numpy(), rtol=1e-4, atol=1e-5)
    assert bn.momentum == pytest.approx(0.1), "the training momentum is restored"
    before = bn.running_mean.clone()
    assert recalibrate_batchnorm(model, [images], torch.device("cpu"), max_batches=0) == 0
    assert torch.equal(bn.running_mean, before), "no batch: the statistics stay as they were"
