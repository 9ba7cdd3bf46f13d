"""bench/gpu.py's CPU smoke run, as CI runs it: prepare facesets (Ray), train/predict/detect with Ray
unimportable, then judge the swaps with dlib. Proves the GPU path's code runs without Ray."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
BENCH = os.path.join(ROOT, "bench", "gpu.py")


def _run(*args: str, timeout: int = 600) -> str:
    proc = subprocess.run([sys.executable, BENCH, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=ROOT, env={**os.environ, "RAY_DATA_DISABLE_PROGRESS_BARS": "1"})
    assert proc.returncode == 0, f"bench/gpu.py {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, sample_clips):
    by = {os.path.splitext(os.path.basename(c))[0]: c for c in sample_clips}
    data = str(tmp_path_factory.mktemp("gpu-data"))
    _run("--prepare", data, "--src-video", by["astronaut"], "--dst-video", by["grace_hopper"], "--size", "128")
    return data


def test_gpu_bench_runs_without_ray_and_is_judged(prepared, tmp_path):
    out = str(tmp_path / "out")
    log = _run("--quick", "--device", "cpu", "--data", prepared, "--out", out, "--minutes", "0.1",
               "--swaps", "16", "--workers", "1")
    assert "Ray not importable" in log
    res = json.load(open(os.path.join(out, "gpu.json")))
    assert res["ray_imported"] is False
    assert [r["precision"] for r in res["step"]] == ["bf16", "off"]
    assert all(r["ms_per_step"] > 0 and r["samples_per_s"] > 0 for r in res["step"])
    train = res["train"]
    assert train["steps"] >= 1 and train["heldout_faces"] >= 1
    ssims = [c["ssim"] for c in train["curve"]]
    assert len(ssims) >= 2 and all(0.0 < s <= 1.0 for s in ssims)
    assert res["predictor"]["faces"] == 16 and res["predictor"]["faces_per_s"] > 0
    assert res["retinaface"]["onnxruntime_cpu"]["faces_found"] >= 1

    swaps = pq.read_table(os.path.join(out, "swaps.parquet")).to_pydict()
    assert len(swaps["fake"]) == 16
    fake = cv2.imdecode(np.frombuffer(swaps["fake"][0], np.uint8), cv2.IMREAD_COLOR)
    real = cv2.imdecode(np.frombuffer(swaps["real"][0], np.uint8), cv2.IMREAD_COLOR)
    assert fake.shape == real.shape == (64, 64, 3)
    assert not np.array_equal(fake, real)  # the swap changed the face

    _run("--judge", out, "--data", prepared)
    judged = json.load(open(os.path.join(out, "judge.json")))
    assert judged["frames"] >= 1
    assert 0.0 <= judged["swap_success"] <= 1.0
