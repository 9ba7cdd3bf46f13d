"""An exported swap model at merge time: loaded without training code, checked, pasted into a frame."""

import numpy as np
import pytest
import torch
from skimage import data

from dflray.artifacts.checkpoint import FORMAT, save_payload
from dflray.artifacts.export import export_model
from dflray.config import MergeSettings, ModelConfig, TrainConfig, to_dict
from dflray.merge.blend import merge_face
from dflray.merge.predict import Predictor
from dflray.models import build_model
from tests.media import ASTRONAUT_LM


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cfg = ModelConfig(resolution=64, ae_dims=32, e_dims=16, d_dims=16, d_mask_dims=4, face_type="whole_face")
    torch.manual_seed(0)
    model = build_model(cfg)
    ckpt = tmp_path_factory.mktemp("ckpt")
    save_payload(str(ckpt), {"format": FORMAT, "model": model.state_dict(), "optimizer": {}, "discriminators": {},
                             "model_config": to_dict(cfg), "run_config": to_dict(TrainConfig(model=cfg)), "step": 7,
                             "history": torch.zeros(0, 3), "counters": {}})
    path = str(ckpt / "model.ts")
    export_model(str(ckpt), path)
    return model, path


def test_predictor_matches_the_model_and_checks_its_contract(exported):
    model, path = exported
    p = Predictor.load(path, device="cpu")
    assert (p.face_type, p.resolution, p.contract.step) == ("whole_face", 64, 7)
    crops = np.random.default_rng(0).random((3, 64, 64, 3), dtype=np.float32)
    face, face_mask, dst_mask = p(crops)
    assert face.shape == (3, 64, 64, 3) and face_mask.shape == dst_mask.shape == (3, 64, 64)
    with torch.no_grad():
        want = model.eval().swap(torch.from_numpy(crops.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(face, want[0].permute(0, 2, 3, 1).numpy(), atol=1e-5)
    np.testing.assert_allclose(dst_mask, want[2][:, 0].numpy(), atol=1e-5)
    p.check("whole_face", 64)
    with pytest.raises(ValueError, match="takes whole_face crops of 64 px"):
        p.check("full", 64)
    with pytest.raises(ValueError, match="expected N x 64 x 64 x 3"):
        p(crops[:, :32])


def test_exported_model_merges_into_a_frame(exported):
    _, path = exported
    p = Predictor.load(path, device="cpu")
    frame = data.astronaut()

    def predict(crop):
        face, face_mask, dst_mask = p(crop[None])
        return face[0], face_mask[0], dst_mask[0]

    out = merge_face(frame, ASTRONAUT_LM, p.face_type, p.resolution, predict, MergeSettings(mask_mode="full"))
    assert out.frame.shape == frame.shape and out.frame.dtype == np.uint8
    changed = np.any(out.frame != frame, axis=2)
    assert changed.any() and not changed[out.mask == 0].any()


def test_bf16_predictions_stay_within_an_8_bit_step_of_fp32(exported):
    _, path = exported
    r = Predictor.load(path, "cpu").resolution
    crops = np.random.default_rng(0).random((4, r, r, 3), dtype=np.float32)
    fp32 = Predictor.load(path, "cpu")(crops)
    bf16 = Predictor.load(path, "cpu", precision="bf16")(crops)
    for a, b in zip(fp32, bf16):
        assert b.dtype == np.float32 and a.shape == b.shape
        assert np.abs(a - b).max() < 1.5 / 255 and np.abs(a - b).mean() < 0.5 / 255
    with pytest.raises(ValueError, match="fp16 needs a CUDA"):
        Predictor.load(path, "cpu", precision="fp16")


def test_make_predict_runs_the_model_in_process_or_round_robin_over_a_pool(exported):
    from dflray.config import PredictConfig
    from dflray.merge.predictors import make_predict
    from dflray.merge.video import InlinePredict

    _, path = exported
    crops = np.random.default_rng(1).random((2, 64, 64, 3), dtype=np.float32)
    inline = make_predict(PredictConfig(concurrency=0, device="cpu", batch_size=5), path, worker_cpus=1)
    assert isinstance(inline, InlinePredict) and inline.batch_size == 5
    got, want = inline.result(inline.submit(crops)), Predictor.load(path, device="cpu")(crops)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)

    class Actor:  # stands in for a predictor actor handle: ``actor.predict.remote(crops)``
        def __init__(self, name):
            self.name, self.predict = name, self
            self.calls = 0

        def remote(self, crops):
            self.calls += 1
            return self.name

    actors = [Actor("a"), Actor("b")]
    pool = make_predict(PredictConfig(batch_size=7), path, pool=actors)
    assert pool.batch_size == 7 and not isinstance(pool, InlinePredict)
    handles = [pool.submit(crops) for _ in range(4)]  # (ref, crops): the crops are kept to resend
    assert sorted(ref for ref, _ in handles) == ["a", "a", "b", "b"] and [a.calls for a in actors] == [2, 2]
    assert all(kept is crops for _, kept in handles)
