"""Quality benchmark: forgery quality against training compute, on a real pair, in one run.

Trains a swap model with dflray's plain-PyTorch trainer (``SwapTrainer`` fed by ``FacesetSamples`` in
DataLoader workers; no Ray in the training) for a budget of CPU-minutes, and at evenly spaced points of
that budget saves a dflray checkpoint, exports it and merges the dst clip with dflray's merge stage
(``run_merge`` on a local 2-CPU Ray cluster) with quality measuring on. It prints the curve, per recipe:

    CPU-minutes and wall minutes of training, steps, samples seen, src/dst loss, held-out src SSIM
    (DeepFaceLab paper's measure), and the merged video's swap_success, identity distances to the source
    and to the replaced face, pose error and expression error (dlib, ``dflray.quality``).

Several recipes (``--compare``) train with the same budget and are printed side by side in one table.
The curve also goes to ``quality.json`` and ``quality.png`` in ``--out``. The budget counts CPU time
(this process while it trains, plus its loader workers), not wall time: the machine may be shared.

This is a benchmark, not a test: nothing is asserted. Run ``python bench/quality.py --help``; see
bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Ray 2.60 refuses to start a local cluster without an auth mode; token is the secure one (the caller's
# choice wins).
os.environ.setdefault("RAY_AUTH_MODE", "token")

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from extract import quiet_ray, say, table  # noqa: E402  (bench/extract.py: the quiet local cluster, the table)

from dflray.cli import _expand_arch  # noqa: E402
from dflray.config import QUALITY_METRICS, ExtractConfig, MergeConfig, TrainConfig, load_config, to_dict  # noqa: E402
from dflray.models import build_model, count_parameters  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEDIA = os.path.normpath(os.path.join(ROOT, "..", "shared", "media"))
SRC_CLIP, DST_CLIP = "src_man_a.mp4", "dst_man_glasses_b.mp4"
RAY_CPUS = 2
EXTRACT_SIZE = 256  # stored crop size: covers the 128 px full-face model's crops (whole_face ⊃ full)

# Model presets (``--model``): TrainConfig overrides applied before ``--set`` and the recipes'.
MODELS = {
    # SAEHD's default architecture and crop (ModelConfig(): liae-ud, 128 px, full face) at a quarter of its
    # channel widths (21.5 M parameters instead of 82.4 M): about 1.2 CPU-s a step at batch 8 with bf16,
    # so 20 CPU-minutes train ~900 steps (the full widths: 3.8 s a step, ~300 steps).
    "cpu": ["model.ae_dims=128", "model.e_dims=32", "model.d_dims=32", "model.d_mask_dims=16", "batch_size=8"],
    # The model examples/sample_plan.yaml trains for `make demo`: 64 px, the same quarter widths, lr 1e-4.
    "demo": ["model.resolution=64", "model.ae_dims=128", "model.e_dims=32", "model.d_dims=32",
             "model.d_mask_dims=16", "batch_size=8", "optim.lr=1e-4"],
    # SAEHD's defaults as they are (82.4 M parameters).
    "saehd": ["batch_size=8"],
}
# Merge settings of every checkpoint's merge besides MergeConfig's defaults (``--merge-set`` adds to them):
# x264's veryfast preset at the same crf 18 keeps the merges short; the metrics read faces, not bitrate.
MERGE_DEFAULTS = ["output.preset=veryfast"]


# ------------------------------------------------------------------------------------------------
# inputs: the clips, the facesets (extracted once, cached), the dst clip the merges use


@dataclasses.dataclass
class Inputs:
    src: str  # src faceset (identity embeddings on: the source identity of the quality metrics)
    dst: str  # dst faceset of the whole dst clip (training)
    merge_dst: str  # dst faceset the merges use: the whole clip's, or that of its first --merge-frames frames
    src_video: str
    dst_video: str
    merge_frames: int
    note: str = ""


def _extract(video: str, out: str) -> None:
    from dflray.extract import run_extract

    cfg = load_config(ExtractConfig, overrides=[f"align.size={EXTRACT_SIZE}"])
    t = time.perf_counter()
    s = run_extract([video], out, cfg)
    say(f"    {os.path.basename(video)}: {s.faces} faces from {s.frames} frames ({time.perf_counter() - t:.0f} s)")


def _cut(video: str, out: str, frames: int) -> int:
    """The first ``frames`` frames of ``video`` re-encoded (nearly lossless) into ``out``; returns the count."""
    from dflray.io.video import VideoWriter, decode_range, probe

    info = probe(video)
    n = 0
    tmp = out + ".tmp.mp4"
    with VideoWriter(tmp, fps=info.fps, size=(info.width, info.height), crf=12) as w:
        for _, rgb in decode_range(video, 0, frames):
            w.write(rgb)
            n += 1
    os.replace(tmp, out)
    return n


def prepare_inputs(cache_dir: str, quick: bool, sample_seconds: float, merge_frames: int) -> Inputs:
    """The src/dst facesets (``align.size=256``, embeddings on) and the merge's dst, built once and cached.

    The media pair when ``../shared/media`` has it (and not ``quick``), else the built-in sample.
    """
    from dflray.io.video import probe
    from dflray.sample import make_sample

    src_video, dst_video = os.path.join(MEDIA, SRC_CLIP), os.path.join(MEDIA, DST_CLIP)
    note = ""
    if os.path.exists(src_video) and os.path.exists(dst_video) and not quick:
        root = os.path.join(cache_dir, f"quality-media-{EXTRACT_SIZE}")
    else:
        note = (f"{MEDIA}/{SRC_CLIP} or {DST_CLIP} is missing: " if not quick else "--quick: ") + \
            f"using the built-in sample ({sample_seconds:g} s clips, astronaut → Grace Hopper)"
        root = os.path.join(cache_dir, f"quality-sample-{sample_seconds:g}s-{EXTRACT_SIZE}")
        clips = make_sample(os.path.join(root, "clips"), seconds=sample_seconds)
        by = {os.path.splitext(os.path.basename(c))[0]: c for c in clips}
        src_video, dst_video = by["astronaut"], by["grace_hopper"]
    os.makedirs(root, exist_ok=True)
    src, dst = os.path.join(root, "src"), os.path.join(root, "dst")
    for video, out in ((src_video, src), (dst_video, dst)):
        if not os.path.exists(os.path.join(out, "DONE")):
            say(f"  extracting {video} → {out} (once; cached)")
            shutil.rmtree(out, ignore_errors=True)
            _extract(video, out)
            open(os.path.join(out, "DONE"), "w").close()
    total = probe(dst_video).frame_count
    if not merge_frames or merge_frames >= total:
        return Inputs(src, dst, dst, src_video, dst_video, total, note)
    cut_dir = os.path.join(root, f"dst-first{merge_frames}")
    if not os.path.exists(os.path.join(cut_dir, "DONE")):
        shutil.rmtree(cut_dir, ignore_errors=True)
        os.makedirs(cut_dir)
        clip = os.path.join(cut_dir, "clip.mp4")
        n = _cut(dst_video, clip, merge_frames)
        say(f"  cut the dst clip's first {n} frames → {clip}; extracting it (once; cached)")
        _extract(clip, os.path.join(cut_dir, "faceset"))
        open(os.path.join(cut_dir, "DONE"), "w").close()
    return Inputs(src, dst, os.path.join(cut_dir, "faceset"), src_video, dst_video, merge_frames, note)


# ------------------------------------------------------------------------------------------------
# measurements: the references, the blur control, each point's merge


def _median(values) -> float | None:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.median(values)) if values else None


def merge_point(model_ts: str, inputs: Inputs, out: str, mcfg: MergeConfig) -> dict:
    """Merges the merge dst with an exported model, quality measuring on.

    Returns:
        The merged video's metrics (``QUALITY_METRICS`` from its ``index.parquet`` row, ``detail`` included),
        its status, frame counts and path, and the merge's wall time.
    """
    import pyarrow.parquet as pq

    from dflray.merge.pipeline import run_merge

    t = time.perf_counter()
    summary = run_merge(model_ts, [inputs.merge_dst], out, mcfg)
    wall = time.perf_counter() - t
    rows = pq.read_table(os.path.join(out, "index.parquet")).to_pylist()
    row = rows[0] if rows else {}
    got = {m: (None if row.get(m) is None else float(row[m])) for m in QUALITY_METRICS}
    got.update(merge_wall_s=wall, merge_status=row.get("status"), merge_error=row.get("error"),
               quality_note=row.get("quality_note"), frames=row.get("frames"),
               frames_swapped=row.get("frames_swapped"), video=os.path.join(out, row["path"]) if row.get("path") else None,
               merge_record_s=row.get("seconds"), failures=summary.failures)
    return got


def identity_reference(inputs: Inputs, mcfg: MergeConfig, holdout: float) -> dict:
    """What the identity metrics read on real faces, for reference.

    Returns:
        For the held-out src faces (the source person himself: what a perfect swap would score) and the
        merged clip's real dst faces (the person replaced: no swap), their count, the median dlib
        distance to the source identity the merges are judged against, and the share under 0.6.
    """
    from dflray.faceset import read_faces
    from dflray.merge.pipeline import source_identity
    from dflray.quality import identity_distance
    from dflray.train.data import holdout_cuts, is_heldout

    source, _ = source_identity(mcfg, "")  # quality.source is set: the model argument is not read

    def dists(rows) -> list[float]:
        return [identity_distance(np.asarray(e, np.float64), source) for e in rows if e is not None]

    src = read_faces(inputs.src, columns=["embedding", "video_id", "frame_index"]).to_pydict()
    cuts, _ = holdout_cuts(np.asarray(src["video_id"], dtype=object), np.asarray(src["frame_index"]), holdout)
    held = [e for e, v, f in zip(src["embedding"], src["video_id"], src["frame_index"]) if is_heldout(v, f, cuts)]
    dst = read_faces(inputs.merge_dst, columns=["embedding"]).column("embedding").to_pylist()
    out = {}
    for key, d in (("heldout_src", dists(held)), ("real_dst", dists(dst))):
        out[key] = {"faces": len(d), "median": float(np.median(d)) if d else None,
                    "under_0_6": float(np.mean(np.asarray(d) < 0.6)) if d else None}
    return out


def blur_control(inputs: Inputs, mcfg: MergeConfig, strengths: list[float]) -> list[dict]:
    """swap_success of no swap at all: the real dst face, blurred, judged as a merged frame is.

    The merge clip's sampled frames get their own face blurred inside its landmark hull (Gaussian, sigma a
    share of the face's width) and go through ``frame_swapped`` like a merge's: the face re-detected at
    the dst box must be nearer the source than the real face and under 0.6. An undertrained model pastes
    blurry faces too; whatever this control scores is what blur alone earns, not identity transfer.

    Args:
        inputs: the clips and facesets.
        mcfg: the merges' config (``quality.source``, ``quality.sample_frames``).
        strengths: Gaussian sigmas as shares of the face box's width.

    Returns:
        Per strength: swap_success, the median distance to the source, the median ``detail_ratio`` and how
        many blurred faces the detector still found.
    """
    import cv2

    from dflray.face.masks import hull_mask
    from dflray.faceset import read_faces
    from dflray.io.video import decode_range
    from dflray.merge.pipeline import source_identity
    from dflray.quality import FaceMeasurer, frame_swapped, identity_distance
    from dflray.quality.metrics import detail_ratio
    from dflray.train.data import evenly_spaced

    source, _ = source_identity(mcfg, "")
    faces = read_faces(inputs.merge_dst, columns=["frame_index", "face_index", "bbox", "landmarks", "source_uri"])
    rows = [r for r in faces.to_pylist() if r["face_index"] == 0]
    rows.sort(key=lambda r: r["frame_index"])
    picked = {rows[i]["frame_index"]: rows[i] for i in evenly_spaced(len(rows), mcfg.quality.sample_frames)}
    measurer = FaceMeasurer()
    frames = []
    for idx, rgb in decode_range(rows[0]["source_uri"]):
        if idx in picked:
            r = picked[idx]
            box, lm = np.asarray(r["bbox"], np.float64), np.asarray(r["landmarks"], np.float32).reshape(68, 2)
            frames.append((rgb, box, lm, measurer.face_at(rgb, box)[1]))
    out = []
    for frac in strengths:
        hits, unguarded, d_src, detail, found = [], [], [], [], 0
        for rgb, box, lm, real in frames:
            sigma = frac * (box[2] - box[0])
            m = cv2.GaussianBlur(hull_mask(rgb.shape[:2], lm).astype(np.float32), (0, 0), 3)[..., None]
            fake = (rgb * (1 - m) + cv2.GaussianBlur(rgb, (0, 0), sigma) * m).round().astype(np.uint8)
            mask = (m[..., 0] * 255).astype(np.uint8)
            ratio = detail_ratio(fake, rgb, mask)
            detail.append(ratio)
            got = measurer.detect_at(fake, box)
            emb = None if got is None else got[1]
            found += emb is not None
            # judged as FaceMeasurer.measure_fake judges a merged frame: with the blur guard (the real face
            # blurred to the fake's detail is a reference too), and without it, for comparison
            soft = None if emb is None else measurer.soft_reference(rgb, mask, box, ratio)
            hits.append(frame_swapped(emb, real, source, soft_real=soft))
            unguarded.append(frame_swapped(emb, real, source))
            if emb is not None:
                d_src.append(identity_distance(emb, source))
        out.append({"sigma_face_width": frac, "frames": len(frames), "faces_found": found,
                    "swap_success": float(np.mean(hits)) if hits else None,
                    "swap_success_unguarded": float(np.mean(unguarded)) if unguarded else None,
                    "id_distance_source": float(np.median(d_src)) if d_src else None,
                    "detail": _median(detail)})
    return out


# ------------------------------------------------------------------------------------------------
# the CPU clock of training


class TrainClock:
    """CPU and wall seconds of training: this process inside training segments, plus its loader workers.

    The main process is counted only between ``start()`` and ``stop()`` (so evaluations, exports and the
    merges, which the driver waits on, stay out); loader workers do nothing but make training batches,
    so all of their CPU counts, whenever it was spent (they prefetch while a merge runs).
    """

    def __init__(self):
        self.main = self.wall = 0.0
        self.workers: dict[int, psutil.Process] = {}
        self._last: dict[int, float] = {}  # pid -> last CPU seconds read (kept after the worker exits)
        self._t: tuple[float, float] | None = None

    def adopt_workers(self, before: set[int]) -> None:
        """Registers the children started since ``before`` that are forks of this process (loader workers)."""
        me = psutil.Process()
        cmd = me.cmdline()
        for c in me.children(recursive=False):
            try:
                if c.pid not in before and c.cmdline() == cmd:
                    self.workers[c.pid] = c
            except psutil.Error:
                continue

    def start(self) -> None:
        self._t = (time.process_time(), time.perf_counter())

    def stop(self) -> None:
        p, w = self._t
        self.main += time.process_time() - p
        self.wall += time.perf_counter() - w
        self._t = None

    def worker_cpu(self) -> float:
        for pid, proc in self.workers.items():
            try:
                t = proc.cpu_times()
                self._last[pid] = t.user + t.system
            except psutil.Error:  # exited: its last reading stands
                pass
        return sum(self._last.values())

    def cpu(self) -> float:
        """CPU seconds of training so far (a running segment included)."""
        running = time.process_time() - self._t[0] if self._t else 0.0
        return self.main + running + self.worker_cpu()

    def wall_now(self) -> float:
        return self.wall + (time.perf_counter() - self._t[1] if self._t else 0.0)


# ------------------------------------------------------------------------------------------------
# one recipe: train for the budget, measure at each point


def run_recipe(name: str, cfg: TrainConfig, inputs: Inputs, args, out_root: str, mcfg: MergeConfig) -> dict:
    """Trains one recipe for the budget and measures it at each point.

    Point 0 (the untrained model) and every ``args.points``-th of ``args.minutes`` CPU-minutes: held-out
    SSIM, checkpoint, export and a merge with quality measuring.

    Returns:
        The recipe's name, config, curve (one dict per point) and its training-speed figures.
    """
    from dflray.artifacts.checkpoint import save_payload
    from dflray.artifacts.export import export_model
    from dflray.train.data import ct_references, heldout_samples, inspect_faceset
    from dflray.train.local import FacesetSamples, loader
    from dflray.train.step import SwapTrainer, join_batch

    out = os.path.join(out_root, name)
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    t_setup = time.perf_counter()
    refs = ct_references(inspect_faceset(inputs.dst, "dst"), cfg)  # None unless augment.ct_mode is set
    src_ds = FacesetSamples(inputs.src, cfg, "src", ct_refs=refs, holdout=cfg.holdout, seed=cfg.seed)
    dst_ds = FacesetSamples(inputs.dst, cfg, "dst", seed=cfg.seed + 1)
    held = heldout_samples(inputs.src, cfg)
    held_x, held_m = torch.from_numpy(held["target"]), torch.from_numpy(held["target_mask"])
    trainer = SwapTrainer(cfg, device)
    params = count_parameters(trainer.model)["total"]
    setup_s = time.perf_counter() - t_setup
    say(f"\n[{name}] {describe(cfg)}; {params / 1e6:.1f} M parameters")
    say(f"  src {len(src_ds)} training faces ({len(held_x)} held out), dst {len(dst_ds)} faces; "
        f"{args.workers} loader worker(s) per faceset, torch {torch.get_num_threads()} thread(s); "
        f"setup {setup_s:.1f} s (not counted)")

    def measure(k: int, point: dict) -> dict:
        """Held-out SSIM, then checkpoint → export → merge with quality on; none of it is training time."""
        t = time.perf_counter()
        point["heldout_ssim"] = trainer.heldout_ssim(held_x, held_m)
        point["eval_s"] = time.perf_counter() - t
        pdir = os.path.join(out, f"p{k}")
        ckpt, model_ts = os.path.join(pdir, "checkpoint"), os.path.join(pdir, "model.ts")
        os.makedirs(ckpt, exist_ok=True)
        t = time.perf_counter()
        save_payload(ckpt, trainer.payload())
        export_model(ckpt, model_ts)
        point["export_s"] = time.perf_counter() - t
        point.update(merge_point(model_ts, inputs, os.path.join(pdir, "merge"), mcfg))
        if k < args.points and not args.keep_models:  # 250+ MB each (model + optimizer state)
            shutil.rmtree(ckpt, ignore_errors=True)
            os.remove(model_ts)
        say(f"  point {k}/{args.points}: {point['cpu_min']:.2f} CPU-min ({point['wall_min']:.2f} wall), "
            f"step {trainer.step}, loss {fmt(point.get('src_loss'))}/{fmt(point.get('dst_loss'))}, "
            f"SSIM {point['heldout_ssim']:.4f}, swap_success {fmt(point['swap_success'], 3)}, "
            f"id→src {fmt(point['id_distance_source'], 3)}, id→dst {fmt(point['id_distance_target'], 3)}, "
            f"detail {fmt(point['detail'], 2)}; "
            f"merge {point['merge_wall_s']:.0f} s" + (f" [{point['merge_status']}: {point['merge_error']}]"
                                                       if point["merge_status"] != "ok" else "")
            + (f" [{point['quality_note']}]" if point.get("quality_note") else ""))
        return point

    # Point 0, the untrained model, is the floor of every metric: its faces are nearly flat grey and its
    # masks about 0.5, so the merge mostly shows the real dst face.
    curve = [measure(0, {"recipe": name, "point": 0, "cpu_min": 0.0, "wall_min": 0.0, "steps": 0, "samples": 0})]
    clock = TrainClock()
    before = {c.pid for c in psutil.Process().children()}
    src_it, dst_it = loader(src_ds, args.workers, device), loader(dst_ds, args.workers, device)
    budget = args.minutes * 60.0
    marks = [budget * (k + 1) / args.points for k in range(args.points)]
    wait = compute = 0.0
    last_step = 0
    try:
        clock.start()
        batch = join_batch(next(src_it), next(dst_it))  # the workers' start counts: they are training's
        clock.adopt_workers(before)
        wait += clock.wall_now()
        for k, mark in enumerate(marks, 1):
            while clock.cpu() < mark:
                t0 = time.perf_counter()
                trainer.train_step(batch)
                t1 = time.perf_counter()
                batch = join_batch(next(src_it), next(dst_it))
                t2 = time.perf_counter()
                compute, wait = compute + t1 - t0, wait + t2 - t1
            clock.stop()
            h = np.asarray(trainer.history[last_step:], dtype=np.float64).reshape(-1, 3)
            last_step = len(trainer.history)
            curve.append(measure(k, {
                "recipe": name, "point": k, "cpu_min": clock.cpu() / 60, "wall_min": clock.wall / 60,
                "steps": trainer.step, "samples": 2 * cfg.batch_size * trainer.step, "skipped_steps": trainer.skipped,
                "loader_cpu_min": clock.worker_cpu() / 60, "compute_s": compute, "data_wait_s": wait,
                "src_loss": float(h[:, 1].mean()) if len(h) else None,
                "dst_loss": float(h[:, 2].mean()) if len(h) else None}))
            if k < len(marks):
                clock.start()
    finally:
        if clock._t:
            clock.stop()
        src_it.close()
        dst_it.close()  # shuts its DataLoader's workers down
    steps = max(trainer.step, 1)
    last = curve[-1]
    summary = {"name": name, "config": to_dict(cfg), "describe": describe(cfg), "params": params,
               "threads": args.threads, "workers_per_faceset": args.workers, "curve": curve,
               "cpu_s_per_step": last["cpu_min"] * 60 / steps, "compute_ms_per_step": 1e3 * compute / steps,
               "data_wait_ms_per_step": 1e3 * wait / steps,
               "loader_cores": last["loader_cpu_min"] * 60 / max(clock.wall, 1e-9),
               "main_cores": clock.main / max(clock.wall, 1e-9),
               "checkpoint": os.path.join(out, f"p{args.points}", "checkpoint")}
    say(f"  {trainer.step} steps in {last['cpu_min']:.2f} CPU-min / {last['wall_min']:.2f} wall-min: "
        f"{summary['cpu_s_per_step']:.2f} CPU-s per step; wall time per step {summary['compute_ms_per_step']:.0f} ms "
        f"computing, {summary['data_wait_ms_per_step']:.0f} ms waiting for data; loader workers used "
        f"{summary['loader_cores']:.2f} cores, this process {summary['main_cores']:.2f}")
    return summary


# ------------------------------------------------------------------------------------------------
# output


def fmt(v, digits: int = 4) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def describe(cfg: TrainConfig) -> str:
    m = cfg.model
    return (f"{m.arch_string} {m.resolution} px {m.face_type}, ae/e/d/mask dims {m.ae_dims}/{m.e_dims}/{m.d_dims}/"
            f"{m.d_mask_dims}, batch {cfg.batch_size}+{cfg.batch_size}, {cfg.optim.name} lr {cfg.optim.lr:g}, "
            f"precision {cfg.mixed_precision}")


COLUMNS = [("recipe", "recipe", None), ("pt", "point", None), ("CPU-min", "cpu_min", 2), ("wall-min", "wall_min", 2),
           ("steps", "steps", None), ("samples", "samples", None), ("src loss", "src_loss", 4),
           ("dst loss", "dst_loss", 4), ("SSIM", "heldout_ssim", 4), ("swap_success", "swap_success", 3),
           ("id→src", "id_distance_source", 3), ("id→dst", "id_distance_target", 3), ("pose°", "pose_error", 2),
           ("expr", "expression_error", 4), ("flicker", "flicker", 2), ("seam", "seam", 2), ("detail", "detail", 2),
           ("merge s", "merge_wall_s", 0)]


def curve_table(recipes: list[dict]) -> str:
    rows = []
    for r in recipes:
        for p in r["curve"]:
            rows.append([p.get(k) if d is None else fmt(p.get(k), d) for _, k, d in COLUMNS])
    return table([c for c, _, _ in COLUMNS], rows)


def contact_sheet(recipe: dict, inputs: Inputs, path: str, columns: int = 4, size: int = 160) -> None:
    """Writes a PNG: the real dst face over each point's merged face, at ``columns`` evenly spaced frames."""
    import cv2

    from dflray.faceset import read_faces
    from dflray.io.video import decode_range
    from dflray.train.data import evenly_spaced

    faces = [r for r in read_faces(inputs.merge_dst, columns=["frame_index", "face_index", "bbox", "source_uri"]).to_pylist()
             if r["face_index"] == 0]
    faces.sort(key=lambda r: r["frame_index"])
    picked = {faces[i]["frame_index"]: faces[i]["bbox"] for i in evenly_spaced(len(faces), columns)}

    def crops(uri: str) -> list[np.ndarray]:
        out = []
        for i, rgb in decode_range(uri):
            if i in picked:
                x1, y1, x2, y2 = picked[i]
                c, half = ((x1 + x2) / 2, (y1 + y2) / 2), 0.6 * max(x2 - x1, y2 - y1)
                m = np.float32([[size / (2 * half), 0, size / 2 - c[0] * size / (2 * half)],
                                [0, size / (2 * half), size / 2 - c[1] * size / (2 * half)]])
                out.append(cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE))
        return out

    rows = [("real dst", crops(faces[0]["source_uri"]))]
    for p in recipe["curve"]:
        if p.get("video"):
            rows.append((f"p{p['point']} {p['cpu_min']:.1f} CPU-min, step {p['steps']}, success {fmt(p['swap_success'], 2)}",
                         crops(p["video"])))
    strips = []
    for label, imgs in rows:
        strip = np.concatenate(imgs, 1) if imgs else np.zeros((size, size * columns, 3), np.uint8)
        strip = np.ascontiguousarray(strip)
        (w, h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.42, 1)
        cv2.rectangle(strip, (0, 0), (w + 8, h + 8), (0, 0, 0), -1)
        cv2.putText(strip, label, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 0), 1, cv2.LINE_AA)
        strips.append(strip)
    cv2.imwrite(path, cv2.cvtColor(np.concatenate(strips, 0), cv2.COLOR_RGB2BGR))


def plot(recipes: list[dict], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for r in recipes:
        pts = r["curve"]
        for ax, key in zip(axes, ("swap_success", "heldout_ssim", "detail")):
            xy = [(p["cpu_min"], p[key]) for p in pts if p.get(key) is not None]
            ax.plot(*zip(*xy), "o-", label=r["name"]) if xy else None
    axes[0].axhline(0.5, color="grey", ls=":", lw=1)
    axes[0].set(xlabel="training CPU-minutes", ylabel="swap_success", ylim=(-0.03, 1.03),
                title="swap_success (dlib: the swapped face reads as the source)")
    axes[1].axhline(0.73, color="grey", ls=":", lw=1, label="DFL on FF++ (paper): 0.73")
    axes[1].set(xlabel="training CPU-minutes", ylabel="held-out src SSIM", title="held-out src reconstruction SSIM")
    axes[2].set(xlabel="training CPU-minutes", ylabel="detail (fake / real)", ylim=(0, None),
                title="face-scale detail of the merged face (1: as the real)")
    for a in axes:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------
# main


def split_overrides(text: str) -> list[str]:
    """``a=1,b=[2,3],c=x`` → ``["a=1", "b=[2,3]", "c=x"]`` (commas inside brackets stay)."""
    return [p.strip() for p in re.split(r",(?![^\[\]]*\])", text) if p.strip()]


def parse_recipes(args) -> list[tuple[str, list[str]]]:
    base = MODELS[args.model] + list(args.set)
    if not args.compare:
        return [(args.model, base)]
    out = []
    for item in args.compare:
        name, _, rest = item.partition("=")
        if not name or not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise SystemExit(f"--compare {item!r}: give NAME=key=value,key=value (NAME: letters, digits, . _ -)")
        out.append((name, base + split_overrides(rest)))
    if len({n for n, _ in out}) != len(out):
        raise SystemExit("--compare: recipe names must differ")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 3 s sample clips, 1.5 CPU-minutes, 2 points, 25 merged frames")
    ap.add_argument("--minutes", type=float, help="training budget per recipe in CPU-minutes (default 20; --quick 1.5)")
    ap.add_argument("--points", type=int, help="measured checkpoints, evenly spaced in CPU time (default 5; --quick 2)")
    ap.add_argument("--model", choices=sorted(MODELS), default="cpu",
                    help="model preset (default cpu: liae-ud 128 px full face at a quarter of SAEHD's widths; "
                    "demo: the make-demo model, 64 px; saehd: SAEHD's defaults, 82 M parameters)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="TrainConfig override for every recipe (repeatable), e.g. --set model.arch=df-ud")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=KEY=VALUE,...",
                    help="a recipe: its name and TrainConfig overrides, comma-separated (repeatable; each trains "
                    "with the same budget), e.g. --compare lr5e-5=optim.lr=5e-5 --compare lr2e-4=optim.lr=2e-4")
    ap.add_argument("--merge-frames", type=int, help="merge the dst clip's first N frames (default 100; --quick 25; "
                    "0: the whole clip)")
    ap.add_argument("--sample-frames", type=int, help="quality.sample_frames: frames swap_success and the identity, "
                    "pose and expression metrics are measured on (default 20; --quick 6)")
    ap.add_argument("--blur-control", type=lambda v: [float(x) for x in v.split(",") if x], default=[0.02, 0.03, 0.04, 0.05],
                    metavar="S,S,...", help="blur strengths (Gaussian sigma as a share of the face width) of the "
                    "no-swap control (default 0.02,0.03,0.04,0.05; empty: skip it)")
    ap.add_argument("--merge-set", action="append", default=[], metavar="KEY=VALUE",
                    help="MergeConfig override of the checkpoints' merges (repeatable)")
    ap.add_argument("--threads", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                    help="torch intra-op threads of training (default: CPUs - 1, leaving one for the loaders "
                    "and Ray's processes)")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers per faceset (default 1)")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "off"],
                    help="mixed_precision of training (default bf16: AMX/AVX-512 bf16 CPUs step ~2.7x faster)")
    ap.add_argument("--seed", type=int, default=0, help="TrainConfig.seed (default 0)")
    ap.add_argument("--sample-seconds", type=float, help="length of the sample clips (default 8; --quick 3)")
    ap.add_argument("--keep-models", action="store_true", help="keep every point's checkpoint and export "
                    "(default: the last point's only)")
    ap.add_argument("--out", help="where checkpoints, merges, quality.json and quality.png go "
                    "(default <cache-dir>/quality-runs/<time>)")
    ap.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "dflray-bench-cache"),
                    help="where clips and facesets are kept between runs (default $TMPDIR/dflray-bench-cache)")
    args = ap.parse_args(argv)
    q = args.quick
    args.minutes = args.minutes if args.minutes is not None else (1.5 if q else 20.0)
    args.points = args.points if args.points is not None else (2 if q else 5)
    args.merge_frames = args.merge_frames if args.merge_frames is not None else (25 if q else 100)
    args.sample_frames = args.sample_frames if args.sample_frames is not None else (6 if q else 20)
    args.sample_seconds = args.sample_seconds if args.sample_seconds is not None else (3.0 if q else 8.0)
    if args.points < 1 or args.minutes <= 0 or args.threads < 1 or args.workers < 0:
        raise SystemExit("--points, --threads >= 1, --minutes > 0, --workers >= 0")
    args.out = args.out or os.path.join(args.cache_dir, "quality-runs", time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(args.out, exist_ok=True)

    from dflray.train.step import cpu_has_bf16

    recipes = parse_recipes(args)
    common = [f"mixed_precision={args.precision}", f"seed={args.seed}"]
    cfgs = [(n, load_config(TrainConfig, overrides=_expand_arch(common + o, None)).effective) for n, o in recipes]
    say("dflray quality benchmark: forgery quality against training CPU-minutes")
    say(f"  machine: {psutil.cpu_count(logical=True)} logical CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"load average {os.getloadavg()[0]:.2f}; bf16 native: {cpu_has_bf16()}; python {platform.python_version()}, "
        f"torch {torch.__version__}, ray {ray.__version__}")
    say(f"  budget: {args.minutes:g} CPU-minutes of training per recipe (this process while training + its "
        f"loader workers), {args.points} points; torch {args.threads} thread(s), {args.workers} loader worker(s) "
        f"per faceset")
    for n, c in cfgs:
        say(f"  recipe {n}: {describe(c)} ({count_parameters(build_model(c.model))['total'] / 1e6:.1f} M parameters)")

    t_all = time.perf_counter()
    try:
        t = time.perf_counter()
        quiet_ray(RAY_CPUS, "Converting a tensor with requires_grad=True to a scalar")
        say(f"  local Ray cluster: {RAY_CPUS} CPUs (started in {time.perf_counter() - t:.1f} s; merges only)")
        inputs = prepare_inputs(args.cache_dir, q, args.sample_seconds, args.merge_frames)
        if inputs.note:
            say(f"  NOTE: {inputs.note}")
        say(f"  src {inputs.src_video} → dst {inputs.dst_video}; each point merges the dst clip's first "
            f"{inputs.merge_frames} frames ({inputs.merge_dst})")
        precision = "bf16" if cpu_has_bf16() else "fp32"
        mcfg = load_config(MergeConfig, overrides=[
            *MERGE_DEFAULTS, f"predict.precision={precision}", "quality.measure=true", f"quality.source={inputs.src}",
            f"quality.sample_frames={min(args.sample_frames, inputs.merge_frames)}", *args.merge_set])
        s = mcfg.settings
        say(f"  merge: mode {s.mode}, mask {s.mask_mode}, colour {s.color_transfer}, predict {mcfg.predict.precision}, "
            f"x264 {mcfg.output.preset} crf {mcfg.output.crf}; quality on {mcfg.quality.sample_frames} sampled frames")
        ref = identity_reference(inputs, mcfg, cfgs[0][1].holdout)
        say(f"  identity reference (dlib distance to the source identity; same person < 0.6): held-out src "
            f"faces median {fmt(ref['heldout_src']['median'], 3)} ({ref['heldout_src']['faces']} faces), real dst "
            f"faces median {fmt(ref['real_dst']['median'], 3)} ({fmt(ref['real_dst']['under_0_6'], 2)} of "
            f"{ref['real_dst']['faces']} under 0.6)")
        control = []
        if args.blur_control:
            t = time.perf_counter()
            control = blur_control(inputs, mcfg, args.blur_control)
            say(f"  blur control (no swap: the real dst face blurred inside its hull, judged like a merge; "
                f"{time.perf_counter() - t:.0f} s): "
                + "; ".join(f"sigma {c['sigma_face_width']:g} x face width → swap_success {fmt(c['swap_success'], 2)} "
                            f"(without the blur guard {fmt(c['swap_success_unguarded'], 2)}), "
                            f"id→src {fmt(c['id_distance_source'], 3)}, detail {fmt(c['detail'], 2)}, faces found "
                            f"{c['faces_found']}/{c['frames']}"
                            for c in control))
        results = [run_recipe(n, c, inputs, args, args.out, mcfg) for n, c in cfgs]
    finally:
        if ray.is_initialized():
            ray.shutdown()
    total = time.perf_counter() - t_all

    say(f"\nquality against training compute ({inputs.src_video} → {inputs.dst_video}; merged: first "
        f"{inputs.merge_frames} frames, metrics on {mcfg.quality.sample_frames} of them; point 0: the untrained "
        "model)")
    say(curve_table(results))
    say("  CPU-min: training CPU (this process while training + loader workers); wall-min: its wall time; samples: "
        "src + dst faces seen; losses: mean over the steps since the previous point; SSIM: held-out src (the last "
        f"{int(cfgs[0][1].holdout * 100)}% of the src clip; DFL's paper: 0.73 on FF++); id→src/id→dst: median dlib "
        "distance of the swapped face to the source identity / to the face it replaced (same person < 0.6)")
    for r in results:
        hit = next((p for p in r["curve"] if (p.get("swap_success") or 0) >= 0.5), None)
        say(f"  {r['name']}: {r['cpu_s_per_step']:.2f} CPU-s/step; swap_success >= 0.5 "
            + (f"first at {hit['cpu_min']:.1f} CPU-min (step {hit['steps']})" if hit
               else f"not reached in {args.minutes:g} CPU-min"))
    doc = {"settings": {k: v for k, v in vars(args).items()}, "inputs": dataclasses.asdict(inputs),
           "merge_config": to_dict(mcfg), "identity_reference": ref, "blur_control": control,
           "machine": {"cpus": os.cpu_count(), "bf16": cpu_has_bf16(),
                                                      "torch": torch.__version__, "ray": ray.__version__},
           "total_wall_s": total, "recipes": results}
    path_json, path_png = os.path.join(args.out, "quality.json"), os.path.join(args.out, "quality.png")
    with open(path_json, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    plot(results, path_png, f"{os.path.basename(inputs.src_video)} → {os.path.basename(inputs.dst_video)}; "
         + "; ".join(f"{r['name']}: {r['describe']}" for r in results))
    sheets = []
    for r in results:
        sheets.append(os.path.join(args.out, f"{r['name']}_frames.png"))
        contact_sheet(r, inputs, sheets[-1])
    say(f"\n  figures: {path_json}\n  plot: {path_png}\n  frames (real dst over each point's merge): "
        + ", ".join(sheets) + "\n  last checkpoints: "
        + ", ".join(r["checkpoint"] for r in results))
    say(f"\ntotal benchmark time {(time.perf_counter() - t_all) / 60:.1f} min")


if __name__ == "__main__":
    main()
