"""GPU benchmark: the training step, a few minutes of real training, the predictor and RetinaFace on one
GPU, in a plain PyTorch process where Ray is not even importable.

Made for a bare PyTorch GPU box (Python, torch with CUDA, OpenCV, pyarrow, onnxruntime; no Ray, no
PyAV, no dlib, no package registry), so it reads small facesets extracted beforehand on a CPU machine
and carried along. Three modes:

    python bench/gpu.py --prepare DIR                   # CPU machine, with dflray installed: extract the
                                                        # src/dst facesets (+ the dst clip) into DIR
    python bench/gpu.py --data DIR --out OUT            # GPU box: measure, train, write swaps into OUT
    python bench/gpu.py --judge OUT [--data DIR]        # CPU machine: dlib judges OUT's swaps → swap_success

and ``--quick --device cpu`` (the CI smoke run: every figure, small). What it prints and writes
(``OUT/gpu.json``; the swapped crops in ``OUT/swaps.parquet``):

1. Step time of the default model (liae-ud 128 px, batch 8) on synthetic batches already on the device:
   bf16 autocast and fp32 side by side (ms/step, samples/s, peak GPU memory).
2. Real training on the carried pair for ``--minutes``: ``FacesetSamples`` in DataLoader workers →
   ``SwapTrainer.train_step``; steps/s, data wait, and the held-out src SSIM along the way.
3. The trained model exported (TorchScript, as ``dflray export``) and run by ``Predictor`` on the dst
   faces: faces/s; each swap, blended with its predicted mask into the real crop, goes to swaps.parquet.
4. RetinaFace (the shipped MobileNet-0.25 ONNX weights) frames/s: onnxruntime on the CPU, and the
   same weights converted to torch on the GPU.

Nothing is asserted: this is a benchmark. See bench/README.md.
"""

from __future__ import annotations

import sys

# Ray must not be needed by anything this benchmark runs; make any import of it fail loudly.
# (--prepare and --judge run on a CPU machine with dflray installed and lift the block.)
_RAY_FREE = not any(a in sys.argv for a in ("--prepare", "--judge"))
if _RAY_FREE:
    sys.modules["ray"] = None  # type: ignore[assignment]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SRC_VIDEO = "../shared/media/src_man_a.mp4"
DST_VIDEO = "../shared/media/dst_man_glasses_b.mp4"
SWAPS = "swaps.parquet"
RESULT = "gpu.json"


def say(*a) -> None:
    print(*a, flush=True)


# ------------------------------------------------------------------------------------------------
# --prepare (CPU machine, Ray)


def prepare(data: str, src_video: str, dst_video: str, size: int) -> None:
    """Extracts the src and dst facesets (whole_face at ``size`` px, JPEG) and copies the dst clip."""
    from dflray.config import ExtractConfig, load_config
    from dflray.extract import run_extract
    from dflray.sample import make_sample

    os.makedirs(data, exist_ok=True)
    if not (os.path.exists(src_video) and os.path.exists(dst_video)):
        say(f"{src_video} or {dst_video} is missing: using the built-in sample (astronaut → Grace Hopper)")
        clips = make_sample(os.path.join(data, "sample"), seconds=3.0)
        by = {os.path.splitext(os.path.basename(c))[0]: c for c in clips}
        src_video, dst_video = by["astronaut"], by["grace_hopper"]
    cfg = load_config(ExtractConfig, overrides=[f"align.size={size}"])
    for role, video in (("src", src_video), ("dst", dst_video)):
        out = os.path.join(data, role)
        shutil.rmtree(out, ignore_errors=True)
        s = run_extract([video], out, cfg)
        say(f"{role}: {s.faces} faces from {video}")
    shutil.copy(dst_video, os.path.join(data, "dst.mp4"))
    with open(os.path.join(data, "prepared.json"), "w") as f:
        json.dump({"src_video": src_video, "dst_video": dst_video, "size": size}, f)
    total = sum(os.path.getsize(os.path.join(r, n)) for r, _, ns in os.walk(data) for n in ns)
    say(f"prepared {data}: {total / 2**20:.1f} MiB")


# ------------------------------------------------------------------------------------------------
# the measurements (Ray-free)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_bench(cfg, device, warmup: int, steps: int, compile_model: bool = False) -> dict:
    """ms/step of ``SwapTrainer.train_step`` on one synthetic batch already on the device (the model
    optionally through ``torch.compile``; its compile time is reported apart)."""
    import torch

    from dflray.models import count_parameters
    from dflray.train.step import SwapTrainer

    r, n = cfg.model.resolution, cfg.batch_size
    g = torch.Generator().manual_seed(0)
    batch = {k: torch.rand(n, 1 if k.endswith(("m", "m_em")) else 3, r, r, generator=g).to(device)
             for k in ("warped_src", "target_src", "target_srcm", "target_srcm_em",
                       "warped_dst", "target_dst", "target_dstm", "target_dstm_em")}
    for k in ("target_srcm", "target_dstm", "target_srcm_em", "target_dstm_em"):
        batch[k] = (batch[k] > 0.5).float()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    wrap = (lambda m: torch.compile(m.to(device))) if compile_model else None
    t = SwapTrainer(cfg, device, wrap=wrap)
    t0 = time.perf_counter()
    for _ in range(warmup):
        t.train_step(batch)
    _sync(device)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        t.train_step(batch)
    _sync(device)
    dt = (time.perf_counter() - t0) / steps
    out = {"precision": cfg.mixed_precision, "compiled": compile_model, "warmup_s": warm_s, "batch": n,
           "ms_per_step": dt * 1e3, "samples_per_s": 2 * n / dt,
           "params_m": count_parameters(t.model)["total"] / 1e6, "steps_timed": steps}
    if device.type == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    del t
    return out


def train_real(cfg, data: str, device, seconds: float, workers: int, evals: int) -> tuple[object, dict]:
    """Trains on the carried pair for ``seconds``; returns the trainer and the figures."""
    import torch

    from dflray.train.data import heldout_samples
    from dflray.train.local import FacesetSamples, loader
    from dflray.train.step import SwapTrainer, join_batch

    src_uri, dst_uri = os.path.join(data, "src"), os.path.join(data, "dst")
    src_ds = FacesetSamples(src_uri, cfg, "src", holdout=cfg.holdout, seed=cfg.seed)
    dst_ds = FacesetSamples(dst_uri, cfg, "dst", seed=cfg.seed + 1)
    held = heldout_samples(src_uri, cfg)
    held_x, held_m = torch.from_numpy(held["target"]), torch.from_numpy(held["target_mask"])
    say(f"  src {len(src_ds)} training faces ({len(held_x)} held out), dst {len(dst_ds)} faces; "
        f"{workers} loader workers per faceset")
    src_it, dst_it = loader(src_ds, workers, device), loader(dst_ds, workers, device)
    t = SwapTrainer(cfg, device)
    t.heldout_ssim(held_x, held_m)
    curve = [{"step": 0, "seconds": 0.0, "ssim": t.ssim_history[-1][1]}]
    batch = join_batch(next(src_it), next(dst_it))  # the workers' start is not training time
    wait = compute = 0.0  # training time = compute + wait; the SSIM evaluations are not counted
    next_eval = seconds / evals
    while True:
        t0 = time.perf_counter()
        t.train_step(batch)
        _sync(device)
        t1 = time.perf_counter()
        batch = join_batch(next(src_it), next(dst_it))
        t2 = time.perf_counter()
        compute, wait = compute + t1 - t0, wait + t2 - t1
        elapsed = compute + wait
        if elapsed >= next_eval or elapsed >= seconds:
            ssim = t.heldout_ssim(held_x, held_m)
            h = np.asarray(t.history[-50:])
            curve.append({"step": t.step, "seconds": round(elapsed, 1), "ssim": ssim,
                          "src_loss": float(h[:, 1].mean()), "dst_loss": float(h[:, 2].mean())})
            say(f"  {elapsed:6.1f} s  step {t.step:6d}  src loss {curve[-1]['src_loss']:.4f}  "
                f"dst loss {curve[-1]['dst_loss']:.4f}  held-out SSIM {ssim:.4f}")
            while next_eval <= elapsed:
                next_eval += seconds / evals
            if elapsed >= seconds:
                break
    total = compute + wait
    return t, {"seconds": total, "steps": t.step, "steps_per_s": t.step / total,
               "ms_per_step_wall": total / max(t.step, 1) * 1e3, "compute_ms_per_step": compute / max(t.step, 1) * 1e3,
               "data_wait_ms_per_step": wait / max(t.step, 1) * 1e3, "samples_per_s": 2 * cfg.batch_size * t.step / total,
               "heldout_faces": int(len(held_x)), "curve": curve, "skipped_steps": t.skipped}


def swaps_and_predictor(trainer, cfg, data: str, out: str, device, max_faces: int, precision: str) -> dict:
    """Exports the model, runs ``Predictor`` on the dst faces (timed) and writes swaps.parquet."""
    import cv2
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from dflray.artifacts.export import build_swap_module, contract
    from dflray.faceset import read_faces
    from dflray.merge.predict import Predictor
    from dflray.train.data import SAMPLE_COLUMNS, evenly_spaced, plain_samples

    payload = trainer.payload()
    module = build_swap_module(payload)
    r = cfg.model.resolution
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.rand(2, 3, r, r), check_trace=False)
    pred = Predictor(traced, contract(payload), device=str(device), precision=precision)

    dst_uri = os.path.join(data, "dst")
    table = read_faces(dst_uri, columns=SAMPLE_COLUMNS + ["video_id", "frame_index"])
    idx = evenly_spaced(table.num_rows, max_faces)
    crops = plain_samples(table.select(SAMPLE_COLUMNS), idx, cfg, 0)["target"].transpose(0, 2, 3, 1)
    crops = np.ascontiguousarray(crops, dtype=np.float32)
    bs, reps = 64, 10
    for _ in range(3):  # warm-up at the timed shape: cuDNN autotune, TorchScript's profiling runs
        pred(crops[:bs])
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        for i in range(0, len(crops), bs):
            faces, face_masks, _ = pred(crops[i:i + bs])
    _sync(device)
    fps = reps * len(crops) / (time.perf_counter() - t0)
    faces, face_masks, _ = zip(*(pred(crops[i:i + bs]) for i in range(0, len(crops), bs)))
    faces, face_masks = np.concatenate(faces), np.concatenate(face_masks)
    # The swap in context: blended into the real crop with its own predicted mask, as the merge pastes it.
    m = face_masks[..., None]
    fakes = crops * (1 - m) + faces * m

    def png(rgb: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".png", cv2.cvtColor((rgb * 255).round().clip(0, 255).astype(np.uint8),
                                                    cv2.COLOR_RGB2BGR))
        return buf.tobytes()

    rows = {"video_id": table.column("video_id").take(idx).to_pylist(),
            "frame_index": table.column("frame_index").take(idx).to_pylist(),
            "real": [png(c) for c in crops], "fake": [png(f) for f in fakes]}
    pq.write_table(pa.table(rows), os.path.join(out, SWAPS))
    # A contact sheet to look at: real crops over their swaps, up to 8.
    k = min(8, len(crops))
    sheet = np.concatenate([np.concatenate(list(crops[:k]), 1), np.concatenate(list(fakes[:k]), 1)], 0)
    cv2.imwrite(os.path.join(out, "swaps.jpg"),
                cv2.cvtColor((sheet * 255).round().clip(0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    return {"faces_per_s": fps, "batch": bs, "precision": precision, "faces": int(len(crops))}


def retinaface_bench(data: str, device, frames_n: int, batch: int, input_size: int) -> dict:
    """RetinaFace frames/s on the dst clip's frames: onnxruntime (CPU) vs the torch runtime on ``device``."""
    import cv2

    from dflray.config import DetectConfig
    from dflray.detect import build_detector

    cap = cv2.VideoCapture(os.path.join(data, "dst.mp4"))
    frames = []
    while len(frames) < frames_n:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    if not frames:
        return {"error": "no frames decoded from dst.mp4 (OpenCV without FFmpeg?)"}
    out = {"frames": len(frames), "frame_size": list(frames[0].shape[:2]), "input_size": input_size,
           "batch": batch}
    runs = [("onnxruntime_cpu", {"runtime": "onnxruntime", "device": "cpu"})]
    runs.append(("torch_" + device.type, {"runtime": "torch", "device": device.type}))
    for name, kw in runs:
        try:
            det = build_detector(DetectConfig(detector="retinaface", input_size=input_size, batch_size=batch, **kw))
        except Exception as e:  # noqa: BLE001 - a benchmark reports what it could not run, and goes on
            out[name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        for _ in range(3):  # warm-up at the timed shape (cuDNN autotune, onnxruntime's arena)
            det.detect(frames[:batch])
        _sync(device)
        t0 = time.perf_counter()
        found = 0
        for i in range(0, len(frames), batch):
            found += sum(len(d.boxes) for d in det.detect(frames[i:i + batch]))
        _sync(device)
        out[name] = {"frames_per_s": len(frames) / (time.perf_counter() - t0), "faces_found": found}
    return out


def run(args) -> None:
    import torch

    from dflray.config import ModelConfig, TrainConfig

    assert sys.modules.get("ray") is None, "bench/gpu.py must run without Ray"
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    os.makedirs(args.out, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        gpu = torch.cuda.get_device_name(device)
    else:
        torch.set_num_threads(os.cpu_count() or 1)
        gpu = None
    model = ModelConfig() if not args.quick else ModelConfig(resolution=64, ae_dims=64, e_dims=16, d_dims=16,
                                                             d_mask_dims=8)
    base = TrainConfig(model=model, batch_size=args.batch, mixed_precision="bf16", holdout=0.1, seed=0)
    res = {"device": str(device), "gpu": gpu, "torch": torch.__version__, "python": platform.python_version(),
           "cpus": os.cpu_count(), "quick": args.quick, "model": model.arch_string, "resolution": model.resolution,
           "ray_imported": False}
    say(f"dflray GPU benchmark on {gpu or 'CPU'} (torch {torch.__version__}, {os.cpu_count()} CPUs); "
        f"model {model.arch_string} {model.resolution} px, batch {args.batch}; Ray not importable")

    say("\n[1] training step, synthetic batch on the device")
    warm, steps = (2, 3) if args.quick else (20, 100)
    res["step"] = []
    import dataclasses

    runs = [("bf16", False, args.batch), ("off", False, args.batch)]
    runs += [("bf16", True, args.batch)] if args.compile else []
    runs += [("bf16", False, b) for b in args.step_batches]
    for prec, comp, batch in runs:
        try:
            r = step_bench(dataclasses.replace(base, mixed_precision=prec, batch_size=batch), device, warm, steps,
                           comp)
        except Exception as e:  # noqa: BLE001 - torch.compile may fail on a platform: report, go on
            res["step"].append({"precision": prec, "compiled": comp, "error": f"{type(e).__name__}: {e}"[:500]})
            say(f"  {prec} compiled={comp}: failed: {res['step'][-1]['error']}")
            continue
        res["step"].append(r)
        label = ("bf16 autocast" if prec == "bf16" else "fp32") + (" + compile" if comp else "") + f", batch {batch}"
        say(f"  {label:24s} {r['ms_per_step']:8.1f} ms/step  "
            f"{r['samples_per_s']:8.1f} samples/s" + (f"  peak {r['peak_gpu_mib']:.0f} MiB" if 'peak_gpu_mib' in r else "")
            + f"  ({r['params_m']:.1f} M parameters; warm-up {r['warmup_s']:.1f} s)")
    if len(res["step"]) == 2:
        if all("ms_per_step" in r for r in res["step"][:2]):
            say(f"  bf16 / fp32 step time: {res['step'][0]['ms_per_step'] / res['step'][1]['ms_per_step']:.2f}")

    say(f"\n[2] real training on {args.data} for {args.minutes:g} min")
    workers = args.workers if args.workers >= 0 else max(1, min(8, ((os.cpu_count() or 2) - 2) // 2))
    trainer, res["train"] = train_real(base, args.data, device, args.minutes * 60, workers, args.evals)
    tr = res["train"]
    say(f"  {tr['steps']} steps in {tr['seconds']:.0f} s: {tr['ms_per_step_wall']:.1f} ms/step wall "
        f"({tr['compute_ms_per_step']:.1f} compute, {tr['data_wait_ms_per_step']:.1f} waiting for data), "
        f"{tr['samples_per_s']:.0f} samples/s; held-out SSIM {tr['curve'][0]['ssim']:.3f} → {tr['curve'][-1]['ssim']:.3f}")
    if args.checkpoint:  # a dflray checkpoint (model, optimizer, history): dflray export takes it
        torch.save(trainer.payload(), args.checkpoint)
        say(f"  checkpoint: {args.checkpoint}")

    say("\n[3] predictor (exported TorchScript) on the dst faces; swaps for the judge")
    res["predictor"] = swaps_and_predictor(trainer, base, args.data, args.out, device, args.swaps,
                                           "bf16" if device.type == "cuda" else "fp32")
    say(f"  {res['predictor']['faces_per_s']:.0f} faces/s ({res['predictor']['precision']}, batch "
        f"{res['predictor']['batch']}); {res['predictor']['faces']} swaps → {os.path.join(args.out, SWAPS)}")

    say("\n[4] RetinaFace MobileNet-0.25 (shipped ONNX weights)")
    res["retinaface"] = retinaface_bench(args.data, device, 16 if args.quick else 256, 8 if args.quick else 32,
                                         640)
    for k, v in res["retinaface"].items():
        if isinstance(v, dict):
            say(f"  {k:18s} " + (f"{v['frames_per_s']:8.1f} frames/s ({v['faces_found']} faces)"
                                 if "frames_per_s" in v else v["error"]))
    res["ray_imported"] = sys.modules.get("ray") is not None
    with open(os.path.join(args.out, RESULT), "w") as f:
        json.dump(res, f, indent=1)
    say(f"\nfigures: {os.path.join(args.out, RESULT)}; judge the swaps on a CPU machine: "
        f"python bench/gpu.py --judge {args.out} --data {args.data}")


# ------------------------------------------------------------------------------------------------
# --judge (CPU machine, dlib)


def judge(out: str, data: str) -> dict:
    """swap_success of the swaps in ``out``: dlib re-detects each swapped and real crop and compares
    descriptors with the source identity (mean of the src faceset's descriptors)."""
    import cv2
    import pyarrow.parquet as pq

    from dflray.faceset import read_faces
    from dflray.quality import FaceMeasurer, identity_distance, swap_success

    src = read_faces(os.path.join(data, "src"), columns=["embedding"]).column("embedding").to_pylist()
    src = np.asarray([e for e in src if e is not None], np.float64)
    if not len(src):
        raise SystemExit(f"{data}/src has no identity embeddings (extract with landmarks.embedding=true)")
    source = src.mean(0)
    table = pq.read_table(os.path.join(out, SWAPS)).to_pydict()
    m = FaceMeasurer()

    def embed(png: bytes):
        rgb = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        # Crops are small (the model's resolution): upscale so the detector and dlib's 150 px chip see
        # a face of the size they were made for.
        scale = max(1, int(np.ceil(256 / rgb.shape[0])))
        return m.image_embedding(cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC))

    fakes, reals, d_src, d_dst = [], [], [], []
    for real_png, fake_png in zip(table["real"], table["fake"]):
        er = embed(real_png)
        if er is None:  # no face in the real crop: not a frame the metric can judge
            continue
        ef = embed(fake_png)
        fakes.append(ef)
        reals.append(er)
        if ef is not None:
            d_src.append(identity_distance(ef, source))
            d_dst.append(identity_distance(ef, er))
    result = {"swap_success": swap_success(fakes, reals, source), "frames": len(reals),
              "no_face_in_fake": sum(f is None for f in fakes),
              "id_distance_source": float(np.median(d_src)) if d_src else None,
              "id_distance_target": float(np.median(d_dst)) if d_dst else None}
    gpu = {}
    if os.path.exists(os.path.join(out, RESULT)):
        with open(os.path.join(out, RESULT)) as f:
            gpu = json.load(f)
    say(f"judged {result['frames']} swaps of {out} (trained on {gpu.get('gpu') or gpu.get('device', '?')}): "
        f"swap_success {result['swap_success']}, median distance to source {result['id_distance_source']}, "
        f"to the replaced face {result['id_distance_target']}, no face found in {result['no_face_in_fake']}")
    with open(os.path.join(out, "judge.json"), "w") as f:
        json.dump(result, f, indent=1)
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepare", metavar="DIR", help="extract the facesets into DIR (CPU machine, dflray installed)")
    p.add_argument("--judge", metavar="OUT", help="judge the swaps in OUT with dlib (CPU machine)")
    p.add_argument("--data", default=".gpu/data", help="prepared folder (default .gpu/data)")
    p.add_argument("--out", default="out/gpu", help="where figures, checkpoint and swaps go")
    p.add_argument("--device", choices=["cuda", "cpu"], help="default: cuda when available")
    p.add_argument("--quick", action="store_true", help="smoke run: a small model, seconds of training")
    p.add_argument("--minutes", type=float, help="real-training time (default 3; --quick 0.25)")
    p.add_argument("--batch", type=int, default=8, help="batch size per identity (default 8)")
    p.add_argument("--workers", type=int, default=-1, help="DataLoader workers per faceset (default: from CPUs)")
    p.add_argument("--compile", action="store_true", help="[1] also times the bf16 step with torch.compile")
    p.add_argument("--step-batches", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                   help="[1] also times the bf16 step at these batch sizes (comma-separated)")
    p.add_argument("--checkpoint", metavar="PATH", help="save the trained model's checkpoint (model.pt) here")
    p.add_argument("--evals", type=int, default=6, help="held-out SSIM evaluations during training")
    p.add_argument("--swaps", type=int, default=64, help="dst faces swapped for the judge")
    p.add_argument("--size", type=int, default=256, help="--prepare: stored crop size")
    p.add_argument("--src-video", default=SRC_VIDEO)
    p.add_argument("--dst-video", default=DST_VIDEO)
    args = p.parse_args(argv)
    if args.minutes is None:
        args.minutes = 0.25 if args.quick else 3.0
    if args.prepare:
        prepare(args.prepare, args.src_video, args.dst_video, args.size)
    elif args.judge:
        judge(args.judge, args.data)
    else:
        run(args)


if __name__ == "__main__":
    main()
